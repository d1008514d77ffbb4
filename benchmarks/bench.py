"""Benchmarks of compactkd, measured side by side in one run: `make bench`.

Writes benchmarks/results.md (and results.json, accuracy_vs_flops.png) with the machine,
the date, the commands and, as medians of repeated runs with min and max:

1. training throughput of compactkd's trainer against a bare PyTorch loop (goal >= 0.95);
2. block-wise search cost against teacher training cost (goal <= 0.25, default settings);
3. the student's latency speedup against its FLOPs reduction, PyTorch and onnxruntime;
4. accuracy against FLOPs of the budget sweep, default dataset (and CIFAR-10 with --cifar10);
5. the peak memory and wall time of every pipeline stage.

Usage: python benchmarks/bench.py [--quick] [--repeats 5] [--search-repeats 3] [--cifar10] ...
--quick (digits, one epoch per stage, few repeats) is for development: it writes to a
temporary folder unless --output says elsewhere, never to benchmarks/results.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from bench_common import QUICK_PARAMS, ROOT, Spread, data_root, log, project_params
from bench_latency import BATCHES, RUNTIMES, Latency, measure_latency
from bench_pipeline import (
    CIFAR10_RAW,
    STAGES,
    StageRun,
    copy_project,
    link_cifar10,
    run_pipeline,
    sweep_png,
    sweep_table,
)
from bench_throughput import Throughput, measure_throughput

from compactkd.provenance import run_provenance
from compactkd.serialization import atomic_write

DEFAULT_OUTPUT = ROOT / "benchmarks/results.md"
THROUGHPUT_GOAL, SEARCH_GOAL = 0.95, 0.25


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="tiny settings (digits, 1 epoch, 2 repeats): a smoke check",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="rounds of the micro-benchmarks, items 1 and 3 (default 5)",
    )
    parser.add_argument(
        "--search-repeats",
        type=int,
        default=None,
        help="runs of the teacher and block_search stages (default 3)",
    )
    parser.add_argument(
        "--pipeline-repeats",
        type=int,
        default=1,
        help="runs of the whole pipeline, each in a fresh copy (default 1)",
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads for item 1 (default: torch's own)"
    )
    parser.add_argument(
        "--latency-threads",
        type=int,
        default=None,
        help="threads for item 3 (default: evaluation.latency_threads)",
    )
    parser.add_argument(
        "--latency-calls",
        type=int,
        default=None,
        help="timed calls per latency measurement (default: latency_repeats)",
    )
    parser.add_argument(
        "--skip-pipeline",
        action="store_true",
        help="no pipeline run (items 2, 5 skipped); items 3, 4 read data/",
    )
    parser.add_argument(
        "--cifar10",
        action="store_true",
        help=f"also run `kedro run --env cifar10` (needs {CIFAR10_RAW}; ~2 h on 2 CPU cores)",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        help=f"the Markdown results (default {DEFAULT_OUTPUT.relative_to(ROOT)})",
    )
    parser.add_argument(
        "--keep-work",
        action="store_true",
        help="keep the temporary project copies and their stage logs",
    )
    args = parser.parse_args(argv)  # fmt: skip
    args.repeats = args.repeats or (2 if args.quick else 5)
    args.search_repeats = args.search_repeats or (2 if args.quick else 3)
    if args.output is None:
        quick_dir = Path(tempfile.gettempdir()) / "compactkd-bench-quick"
        args.output = quick_dir / "results.md" if args.quick else DEFAULT_OUTPUT
    args.output = args.output.resolve()
    if min(args.repeats, args.search_repeats, args.pipeline_repeats) < 1:
        parser.error("--repeats, --search-repeats and --pipeline-repeats must be at least 1")
    if args.quick and args.output == DEFAULT_OUTPUT:
        parser.error(f"--quick results must not replace {DEFAULT_OUTPUT}: pass another --output")
    return args


# ---------------------------------------------------------------- the machine


def _first_line(path: str, prefix: str) -> str | None:
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        return None
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith(prefix)), None)


def _git(*args: str) -> str:
    done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else "unknown"


def machine() -> dict[str, Any]:
    """Where the numbers come from: platform, CPU, memory, GPU, library versions."""
    import kedro
    import onnxruntime

    memory = _first_line("/proc/meminfo", "MemTotal")
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": _first_line("/proc/cpuinfo", "model name") or platform.processor(),
        "logical_cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "memory_gib": round(int(memory.split()[0]) / 2**20, 1) if memory else None,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "onnxruntime": onnxruntime.__version__,
        "kedro": kedro.__version__,
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "git": _git("rev-parse", "--short", "HEAD")
        + (" + uncommitted changes" if _git("status", "--porcelain") else ""),
    }


# ---------------------------------------------------------------- the run


def run_pipelines(
    args: argparse.Namespace, overrides: dict[str, Any], work: Path
) -> tuple[list[StageRun], Path | None]:
    """Items 2, 4, 5: the default pipeline (and CIFAR-10's); returns the last default run's data."""
    runs: list[StageRun] = []
    data = None
    for repeat in range(args.pipeline_repeats):
        project = copy_project(work / f"default-{repeat + 1}")
        log(f"default pipeline {repeat + 1}/{args.pipeline_repeats} in {project}")
        runs += run_pipeline(project, "default", None, overrides, args.search_repeats)
        data = project / "data"
    if args.cifar10 and (ROOT / CIFAR10_RAW).exists():
        project = copy_project(work / "cifar10")
        link_cifar10(project)
        cifar_overrides = {k: v for k, v in overrides.items() if k != "data_processing"}
        log(f"CIFAR-10 pipeline in {project}")
        runs += run_pipeline(project, "cifar10", "cifar10", cifar_overrides, 1)
    return runs, data


def write_file(path: Path, content: bytes | str) -> None:
    """Written whole or not at all: a temporary sibling, then a rename."""
    data = content.encode() if isinstance(content, str) else content
    atomic_write(lambda file: file.write(data), path)


@dataclass
class Measured:
    """Items 2 to 5, and the bench process's own peak memory (items 1 and 3 run in it)."""

    runs: list[StageRun]
    latency: Latency
    sweeps: dict[str, pd.DataFrame]
    figures: dict[str, str]  # sweep name -> PNG file name
    own_peak_mib: dict[str, float]


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def measure_runs(
    args: argparse.Namespace, params: dict[str, Any], overrides: dict[str, Any], work: Path
) -> Measured:
    """The pipeline (items 2, 4, 5), then latency of its student (item 3)."""
    own_peak = {"item 1": _peak_mib()}
    runs, data = ([], None) if args.skip_pipeline else run_pipelines(args, overrides, work)
    data = data or ROOT / "data"
    log(f"item 3: latency from {data}")
    latency = measure_latency(
        data,
        threads=args.latency_threads or params["evaluation"]["latency_threads"],
        rounds=args.repeats,
        inner=args.latency_calls or params["evaluation"]["latency_repeats"],
    )
    own_peak["items 1 and 3"] = _peak_mib()
    label = "default" if runs else "data/ (an earlier run)"
    sweeps, figures = {label: sweep_table(data)}, {label: "accuracy_vs_flops.png"}
    if any(run.run == "cifar10" for run in runs):
        sweeps["cifar10"] = sweep_table(data_root(work / "cifar10", "cifar10"))
        figures["cifar10"] = "accuracy_vs_flops_cifar10.png"
    return Measured(runs, latency, sweeps, figures, own_peak)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    os.chdir(ROOT)  # the parameters' relative paths (data/01_raw) are the project's
    started, date = time.perf_counter(), datetime.datetime.now().astimezone()
    overrides = QUICK_PARAMS if args.quick else {}
    params = project_params(overrides=overrides)
    if args.threads:
        torch.set_num_threads(args.threads)
    results: dict[str, Any] = {
        "date": date.isoformat(timespec="seconds"),
        "machine": machine(),
        "command": shlex.join(["python", "benchmarks/bench.py", *sys.argv[1:]]),
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
    }
    log(f"item 1: training throughput, {args.repeats} rounds")
    throughput = measure_throughput(params, args.repeats)
    work = Path(tempfile.mkdtemp(prefix="compactkd-bench-"))
    try:
        measured = measure_runs(args, params, overrides, work)
    except BaseException:
        log(f"stopped: the project copies and stage logs stay in {work}")
        raise
    if args.keep_work:
        log(f"kept the project copies and stage logs in {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    for name, sweep in measured.sweeps.items():
        write_file(args.output.parent / measured.figures[name], sweep_png(sweep))
    results |= {
        "throughput": throughput.to_dict(),
        "stages": [vars(run) for run in measured.runs],
        "latency": measured.latency.to_dict(),
        "latency_source": "the default run above" if measured.runs else "the run in `data/`",
        "sweep": {k: sweep.to_dict(orient="records") for k, sweep in measured.sweeps.items()},
        "bench_process_peak_rss_mib": measured.own_peak_mib,
        "seconds": time.perf_counter() - started,
        "provenance": run_provenance(ROOT, None, params),  # this code, the default settings
    }
    write_file(args.output.with_suffix(".json"), json.dumps(results, indent=2, default=str) + "\n")
    write_file(args.output, markdown(args, results, throughput, measured))
    log(f"wrote {args.output} in {results['seconds'] / 60:.1f} min")


# ---------------------------------------------------------------- results.md


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _verdict(met: bool) -> str:
    return "**met**" if met else "**not met**"


def section_throughput(result: Throughput) -> str:
    s = result.setting
    rows = [
        ["`compactkd.training.train`", result.trainer.text(0)],
        ["bare PyTorch loop", result.bare.text(0)],
    ]
    return f"""## 1. Training throughput: the trainer against a bare loop

{s["model"]["name"]} on {s["dataset"]} ({s["train_images"]} training images, then a
validation pass over {s["val_images"]}), batch {s["batch_size"]}, {s["epochs_per_run"]} epoch per
run, device {s["device"]}, {s["torch_threads"]} torch threads. Both loops start from the same
weights, use the same SGD (Nesterov, cosine schedule), mixed-precision setting and seeded batches
of `compactkd.data.make_loader` (augmented as the dataset says); the bare loop is zero_grad /
forward / cross-entropy / backward / step / scheduler step, then an `inference_mode` validation
pass. Rounds alternate which loop goes
first, after one untimed warm-up epoch. Largest difference between the two loops' final
weights: {result.max_weight_difference:.1e} (0 = the same work, bit for bit).

{_table(["loop", "images/s: median [min, max]"], rows)}

Ratio of medians (trainer / bare): **{result.ratio:.3f}**; goal >= {THROUGHPUT_GOAL}:
{_verdict(result.ratio >= THROUGHPUT_GOAL)}.
"""


def _pairs(runs: Sequence[StageRun], run: str) -> list[tuple[StageRun, StageRun]]:
    teachers = [r for r in runs if r.run == run and r.stage == "teacher"]
    searches = [r for r in runs if r.run == run and r.stage == "block_search"]
    return list(zip(teachers, searches, strict=True))


def section_search(runs: Sequence[StageRun], quick: bool) -> str:
    if not runs:
        return "## 2. Block-wise search cost against teacher training\n\nskipped: --skip-pipeline\n"
    rows = []
    for run in dict.fromkeys(r.run for r in runs):
        pairs = _pairs(runs, run)
        wall = Spread.of([s.seconds / t.seconds for t, s in pairs])
        metrics = [s.search_metrics or {} for _, s in pairs]
        own = Spread.of([m["overhead_vs_teacher"] for m in metrics])
        judged = run == "default" and not quick
        for label, ratio, teacher, search in (
            ("stage wall time (`kedro run --pipelines ...`, start-up and loading included)", wall,
             Spread.of([t.seconds for t, _ in pairs]), Spread.of([s.seconds for _, s in pairs])),
            ("the stages' own seconds (`block_search_metrics.json`: `overhead_vs_teacher`)", own,
             Spread.of([m["teacher_train_seconds"] for m in metrics]),
             Spread.of([m["search_seconds"] for m in metrics])),
        ):  # fmt: skip
            goal = _verdict(ratio.median <= SEARCH_GOAL) if judged else "not judged"
            rows.append([run, label, teacher.text(), search.text(), ratio.text(3), goal])
    note = " (not judged here: --quick settings)" if quick else ""
    return f"""## 2. Block-wise search cost against teacher training

The `teacher` and `block_search` stages, rerun from scratch (checkpoints deleted) one after
the other. The goal, <= {SEARCH_GOAL} at the default settings{note}, is judged on the median ratio.

{_table(["run", "measure", "teacher s", "block search s", "ratio", "goal"], rows)}
"""


def section_latency(result: Latency, source: str) -> str:
    s = result.setting
    rows = [
        [
            runtime,
            batch,
            result.ms[runtime, batch, "teacher"].text(3),
            result.ms[runtime, batch, "student"].text(3),
            f"{result.speedup(runtime, batch):.2f}x",
            f"{result.flops_reduction:.2f}x",
            f"**{result.realised(runtime, batch):.2f}**",
        ]
        for runtime in RUNTIMES
        for batch in BATCHES
    ]
    flops = ", ".join(f"{name} {count / 1e6:.1f} M" for name, count in result.flops.items())
    errors = ", ".join(f"{k} {v:.1e}" for k, v in s["onnx_max_abs_diff"].items())
    return f"""## 3. Student latency speedup against its FLOPs reduction

Teacher and student of {source} (input {s["input_shape"]}; FLOPs per image
{flops}), {s["threads"]} thread(s), on the CPU. Each latency is the median of
{s["calls_per_round"]} calls after 5 warm-ups (`compactkd.costs.measure_latency_ms`,
`compactkd.export.onnx_latency_ms`); the table gives the median [min, max] of {s["rounds"]}
such rounds, teacher and student alternating. Speedup = teacher / student latency (medians);
realised = speedup / FLOPs reduction, 1.0 when the clock follows the FLOPs. ONNX against
PyTorch, largest logit difference: {errors}.

{_table(["runtime", "batch", "teacher ms", "student ms", "speedup", "FLOPs reduction",
         "realised"], rows)}
"""  # fmt: skip


def _sweep_rows(sweep: pd.DataFrame) -> list[list[Any]]:
    return [
        [
            row.budget,
            row.model,
            f"{row.flops / 1e6:.2f}",
            f"{row.flops_ratio:.3f}",
            f"{row.params_ratio:.3f}",
            f"{row.top1_mean:.2f} ± {row.top1_std:.2f}",
        ]
        for row in sweep.itertuples()
    ]


def section_accuracy(
    sweeps: dict[str, pd.DataFrame], figures: dict[str, str], cifar10: bool
) -> str:
    parts = ["## 4. Accuracy against FLOPs: the student sweep and the baselines\n"]
    header = ["budget", "model", "MFLOPs", "FLOPs ratio", "params ratio", "top-1 mean ± std"]
    for name, sweep in sweeps.items():
        parts.append(f"### {name}\n\nThe run's `data/08_reporting/sweep.csv`: top-1 on the "
                     "test split, mean ± std over seeds.\n\n"
                     f"{_table(header, _sweep_rows(sweep))}\n\n![accuracy against FLOPs, {name}]"
                     f"({figures[name]})\n")  # fmt: skip
    if "cifar10" not in sweeps:
        if not (ROOT / CIFAR10_RAW).exists():
            reason = f"{CIFAR10_RAW} not found"
        elif not cifar10:
            reason = (f"{CIFAR10_RAW} found, but the run takes about 2 h on 2 CPU cores: "
                      "`python benchmarks/bench.py --cifar10` runs it")  # fmt: skip
        else:
            reason = "--skip-pipeline"
        parts.append(f"### cifar10\n\nskipped: {reason}\n")
    return "\n".join(parts)


def section_memory(runs: Sequence[StageRun], own_peak: dict[str, float]) -> str:
    rows = []
    for run, stage in dict.fromkeys((r.run, r.stage) for r in runs):
        chosen = [r for r in runs if (r.run, r.stage) == (run, stage)]
        rows.append([run, f"`{stage}`", Spread.of([r.seconds for r in chosen]).text(),
                     Spread.of([r.peak_rss_mib for r in chosen]).text(0)])  # fmt: skip
    rows += [["bench process", f"{what} (in-process)", "", f"{mib:.0f}"]
             for what, mib in own_peak.items()]  # fmt: skip
    order = ", ".join(f"`{stage}`" for stage in STAGES)
    skipped = "" if runs else "The pipeline's stages were skipped (--skip-pipeline).\n"
    return f"""## 5. Peak memory and wall time of each stage

Each stage is its own `kedro run --pipelines <stage>` child process, in DAG order ({order});
peak memory is the stage's peak resident set size (`ru_maxrss`, seen from a small parent,
`peak_memory.py`: started straight from the bench, a stage inherits the bench's own peak).
GPU memory is not measured. The bench's own process runs items 1 and 3; its peak only grows.
{skipped}
{_table(["run", "stage", "wall s", "peak RSS MiB"], rows)}
"""


def markdown(
    args: argparse.Namespace, results: dict[str, Any], throughput: Throughput, measured: Measured
) -> str:
    m, runs = results["machine"], measured.runs
    commands = list(dict.fromkeys(run.command for run in runs))
    minutes = {
        run: sum(r.seconds for r in runs if r.run == run) / 60
        for run in dict.fromkeys(r.run for r in runs)
    }
    pipeline = (
        f"Pipeline: {args.pipeline_repeats} run(s) of the default pipeline, `teacher` and "
        f"`block_search` {args.search_repeats} times in each; stages took "
        + ", ".join(f"{total:.1f} min ({run})" for run, total in minutes.items())
        + " in all. Every stage runs in a fresh copy of the project (`git ls-files`: an empty "
        "`data/`) under a temporary folder, one command per stage:\n\n```bash\n"
        + "\n".join(commands)
        + "\n```"
        if runs
        else "Pipeline: not run (--skip-pipeline); items 3 and 4 read the run in `data/`."
    )
    quick = (
        "\n> **--quick**: tiny settings (digits, one epoch per stage) for a smoke check; "
        "these numbers measure nothing.\n"
        if args.quick
        else ""
    )
    return f"""# compactkd benchmarks
{quick}
Measured {results["date"]} in {results["seconds"] / 60:.1f} min, at commit {m["git"]}.

| machine | |
|---|---|
| platform | {m["platform"]}, Python {m["python"]} |
| CPU | {m["cpu"]}: {m["logical_cores"]} logical cores, {m["usable_cores"]} usable |
| memory | {m["memory_gib"]} GiB |
| GPU | {m["gpu"]} |
| libraries | torch {m["torch"]} ({m["torch_threads"]} threads), onnxruntime {m["onnxruntime"]}, kedro {m["kedro"]} |
| load average at start | {", ".join(map(str, m["load_average_at_start"]))} |

```bash
make bench    # = {results["command"]}
```

Micro-benchmarks (items 1 and 3): {args.repeats} rounds. {pipeline}

Every figure is the median [min, max] of its runs; one run has no spread.

{section_throughput(throughput)}
{section_search(runs, args.quick)}
{section_latency(measured.latency, results["latency_source"])}
{section_accuracy(measured.sweeps, measured.figures, args.cifar10)}
{section_memory(runs, measured.own_peak_mib)}"""  # noqa: E501


if __name__ == "__main__":
    main()
