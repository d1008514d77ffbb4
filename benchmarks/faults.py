"""Kill the tiny default pipeline at points across every stage, run it again, and compare
with an uninterrupted run: -> benchmarks/reliability.md (and .json).

    python benchmarks/faults.py            # every point (about 15 minutes on 2 CPU cores)
    python benchmarks/faults.py --points 3 # the first three

Each point kills one run (SIGKILL to the whole process group) when a line of its log appears,
checks that every file under data/ still reads whole, then lets the next point kill the next
run; one final uninterrupted run must end with the reference's figures, bit for bit (test
accuracies, FLOPs, parameters, the chosen blocks, the teacher's and student's weights).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from bench_common import project_params  # noqa: E402
from fault_injection import (  # noqa: E402
    KillPoint,
    configure,
    figures,
    kedro_run,
    temporaries,
    unsound_outputs,
)
from helpers import TINY_RUN, copy_project  # noqa: E402

from compactkd.provenance import run_provenance  # noqa: E402

NODE = r"Running node: {}[:(]"
POINTS = [
    KillPoint("reading the data", NODE.format("load_dataset"), 0.2),
    KillPoint("teacher, mid-epoch", r"teacher epoch 1/2", 0.3),
    KillPoint("saving the teacher", r"Saving data to teacher_model", 0.0),
    KillPoint("ranking interface channels", NODE.format("rank_interface_channels"), 0.2),
    KillPoint("block search, mid-candidate training", NODE.format("train_block_candidates"), 1.5),
    KillPoint("accuracy predictor", NODE.format("fit_accuracy_predictor"), 0.5),
    KillPoint("saving the candidates' weights", r"Saving data to candidate_weights", 0.0),
    KillPoint("student fine-tune, mid-epoch", NODE.format("finetune_student"), 1.5),
    KillPoint("between two seeds", r"student \(seed 0\) epoch 1/1", 0.0),
    KillPoint("pruned fine-tune", NODE.format("finetune_pruned"), 1.0),
    KillPoint("torch_pruning fine-tune", NODE.format("finetune_torch_pruning"), 1.0),
    KillPoint("evaluation", NODE.format("evaluate_models"), 0.5),
    KillPoint("saving metrics.json", r"Saving data to metrics ", 0.0),
    KillPoint("the report", NODE.format("build_report"), 0.5),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=len(POINTS))
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "reliability")
    args = parser.parse_args()
    points = POINTS[: args.points]
    with tempfile.TemporaryDirectory() as folder:
        reference = copy_project(Path(folder) / "reference")
        configure(reference, TINY_RUN)
        started = time.perf_counter()
        kedro_run(reference)
        reference_seconds = time.perf_counter() - started
        expected = figures(reference)

        project = copy_project(Path(folder) / "killed")
        configure(project, TINY_RUN)
        rows = []
        for point in points:
            killed = kedro_run(project, kill=point)
            row = {"point": point.name, "killed": killed, "unsound_files": unsound_outputs(project),
                   "temporaries": temporaries(project)}  # fmt: skip
            rows.append(row)
            print(f"{point.name}: {'killed' if killed else 'ended first'}, "
                  f"{len(row['unsound_files'])} unsound file(s)", flush=True)  # fmt: skip
        kedro_run(project)
        result = {
            "date": time.strftime("%Y-%m-%d"),
            "reference_run_seconds": round(reference_seconds, 1),
            "kills": rows,
            "kills_injected": sum(r["killed"] for r in rows),
            "files_unsound": sum(len(r["unsound_files"]) for r in rows)
            + len(unsound_outputs(project)),
            "temporaries_after_last_run": temporaries(project),
            "results_equal": figures(project) == expected,
            "reference": expected,
            "after_kills": figures(project),
            "provenance": run_provenance(ROOT, None, project_params(ROOT, None, TINY_RUN)),
        }
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(_markdown(result))
    print(_markdown(result))
    sound = result["files_unsound"] == 0 and not result["temporaries_after_last_run"]
    sys.exit(0 if result["results_equal"] and sound else 1)


def _markdown(result: dict) -> str:
    lines = [
        "# Reliability: kill anywhere, lose nothing",
        "",
        f"Measured {result['date']} by `python benchmarks/faults.py` on the tiny default pipeline "
        "(digits, `TINY_RUN` of tests/helpers.py, one thread): every point SIGKILLs one "
        "`kedro run` of the whole pipeline when its log line appears; the next point kills "
        "the next run of the same project; a last run completes. "
        f"An uninterrupted run took {result['reference_run_seconds']} s.",
        "",
        "| kill point | killed | outputs unreadable or half-written | temporary files the "
        "kill left (the next run removes them) |",
        "|---|---|---|---|",
        *(
            f"| {r['point']} | {'yes' if r['killed'] else 'no (the run ended first)'} | "
            f"{'; '.join(r['unsound_files']) or 0} | "
            f"{', '.join(r['temporaries']) or 'none'} |"
            for r in result["kills"]
        ),
        "",
        f"- kills injected: **{result['kills_injected']}**; each killed run was taken up by "
        "the next `kedro run` (resuming from the last checkpoints), the last ran to the end",
        f"- results equal to the uninterrupted run (test top-1 of every model, FLOPs, "
        f"parameters, chosen blocks, teacher and student weights bit for bit): "
        f"**{'yes' if result['results_equal'] else 'NO'}**",
        f"- files lost or corrupt: **{result['files_unsound']}**; temporary files left after "
        f"the last run: **{len(result['temporaries_after_last_run'])}**",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
