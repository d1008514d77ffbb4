"""Which score and which space choose the better student (issue 12's ablation table).

Every row reruns the block search with one setting changed and fine-tunes the student it
chooses with one seed, on the teacher a finished ``kedro run --env cifar10`` trained (the
teacher stage is not rerun). Rows that share a candidate pool share its training: the block
search resumes from its checkpoint and only the selection (and the predictor) reruns.

    python benchmarks/cifar10_ablation.py                  # every row not yet measured
    python benchmarks/cifar10_ablation.py --rows nmse,predicted_accuracy --env cifar10
    python benchmarks/cifar10_ablation.py --table          # print the markdown table

Each row is written to ``benchmarks/cifar10_ablation.json`` as soon as it is measured, so an
interrupted run resumes at the next row. The final run's own figures (3 seeds, every
baseline) come from ``benchmarks/cifar10_report.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from bench_common import data_root

PROJECT = Path(__file__).resolve().parents[1]
RESULTS = PROJECT / "benchmarks" / "cifar10_ablation.json"

# Rows without uniform cuts first: they share one candidate pool (and its training).
ROWS: dict[str, dict[str, Any]] = {
    "kept_nmse": {"block_search.score": "kept_nmse"},
    "nmse": {"block_search.score": "nmse"},
    "predicted_accuracy": {"block_search.score": "predicted_accuracy"},
    "nmse+uniform_cuts": {"block_search.score": "nmse", "block_search.uniform_cuts": True},
    "predicted_accuracy+uniform_cuts": {
        "block_search.score": "predicted_accuracy",
        "block_search.uniform_cuts": True,
    },
}


def student_only() -> dict[str, Any]:
    """One seed of the student's fine-tune, every baseline switched off."""
    base = yaml.safe_load((PROJECT / "conf/base/parameters_distillation.yml").read_text())
    baselines = {
        f"distillation.baselines.{name}": False for name in base["distillation"]["baselines"]
    }
    return {"distillation.seeds": 1, **baselines}


def run_row(name: str, env: str, threads: int | None) -> dict[str, Any]:
    """Search, fine-tune and evaluate with the row's settings; its figures."""
    settings = {**student_only(), "block_search.uniform_cuts": False, **ROWS[name]}
    if threads:
        settings["runtime.threads"] = threads
    params = ",".join(
        f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in settings.items()
    )
    command = ["kedro", "run", "--env", env, "--pipelines", "block_search,distillation,evaluation"]
    start = time.perf_counter()
    subprocess.run([*command, "--params", params], cwd=PROJECT, check=True)
    reporting = data_root(PROJECT, env) / "08_reporting"
    search = json.loads((reporting / "block_search_metrics.json").read_text())
    student = json.loads((reporting / "metrics.json").read_text())["student"]
    return {
        "settings": ROWS[name],
        "student_top1": student["top1"],
        "flops_reduction": student["flops_reduction"],
        "params_reduction": student["params_reduction"],
        "assembled_val_top1": search["assembled_val_top1"],
        "chosen": search["chosen"],
        "search_seconds": search["seconds"],
        "overhead_vs_teacher": search["overhead_vs_teacher"],
        "predictor_kendall_tau": search.get("predictor_kendall_tau"),
        "nmse_kendall_tau": search.get("nmse_kendall_tau"),
        "wall_seconds": time.perf_counter() - start,
        "provenance": json.loads((reporting / "metrics.json").read_text()).get("provenance"),
    }


def save(results: dict[str, Any]) -> None:
    """The rows so far; the file's provenance is its last row's run (each row keeps its own)."""
    last = list(results["rows"].values())[-1] if results["rows"] else {}
    results["provenance"] = last.get("provenance")
    temporary = RESULTS.with_suffix(".json.tmp")
    temporary.write_text(json.dumps(results, indent=2) + "\n")
    os.replace(temporary, RESULTS)


def table(results: dict[str, Any]) -> str:
    lines = [
        "| row | student top-1 (seed 0) | FLOPs red. | params red. | assembled val top-1 "
        "| search s (x teacher) | predictor tau (NMSE tau) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, row in results.get("rows", {}).items():
        tau = row["predictor_kendall_tau"]
        taus = "-" if tau is None else f"{tau:.2f} ({row['nmse_kendall_tau']:.2f})"
        lines.append(
            f"| {name} | {row['student_top1']:.2f} | {row['flops_reduction']:.2f}x "
            f"| {row['params_reduction']:.2f}x | {row['assembled_val_top1']:.2f} "
            f"| {row['search_seconds']:.0f} ({row['overhead_vs_teacher']:.2f}x) | {taus} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="cifar10")
    parser.add_argument("--rows", default=",".join(ROWS), help="comma-separated row names")
    parser.add_argument("--table", action="store_true", help="print the table and stop")
    parser.add_argument("--threads", type=int, help="torch threads (default: the run's)")
    args = parser.parse_args()
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {"rows": {}}
    if args.table:
        print(table(results))
        return
    unknown = set(args.rows.split(",")) - set(ROWS)
    if unknown:
        sys.exit(f"unknown row(s) {sorted(unknown)}; rows are {list(ROWS)}")
    for name in args.rows.split(","):
        if name in results["rows"]:
            continue
        results["rows"][name] = run_row(name, args.env, args.threads)
        save(results)
        print(table(results), flush=True)


if __name__ == "__main__":
    main()
