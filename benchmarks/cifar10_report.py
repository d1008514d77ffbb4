"""Write benchmarks/<name>.{json,md} from a finished CIFAR-10 run (`kedro run --env cifar10`).

Usage: python benchmarks/cifar10_report.py [--data data/cifar10] [--name cifar10] [--note "..."]
Reads only what the run wrote under its data root (metrics, evaluation, histories, stage
metrics). `--name cifar10_mobilenetv2 --data data/cifar10_mobilenetv2_cpu` for MobileNetV2.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd
from cifar10_ablation import RESULTS as ABLATION
from cifar10_ablation import table as ablation_table

from compactkd.pipelines.reporting.nodes import provenance_facts


def baselines(metrics: dict) -> list[str]:
    """The baselines the run compared (every model but the teacher and the student)."""
    return [name for name, value in metrics.items()
            if isinstance(value, dict) and "top1_mean" in value
            and name not in ("teacher", "student")]  # fmt: skip


def summary(data: Path) -> dict:
    reporting = data / "08_reporting"
    metrics = json.loads((reporting / "metrics.json").read_text())
    names = baselines(metrics)
    student = metrics["student"]
    result: dict = {"teacher": {"top1": metrics["teacher"]["top1"],
                                "top1_ci95": metrics["teacher"]["top1_ci95"]}}  # fmt: skip
    for name in ("student", *names):
        figures = metrics[name]
        result[name] = {
            key: figures[key]
            for key in ("top1_mean", "top1_std", "flops_reduction", "params_reduction", "speedup")
        }
    evaluation = json.loads((reporting / "evaluation.json").read_text())
    result["seeds"] = len(evaluation["student"]["top1_seeds"])
    search = json.loads((reporting / "block_search_metrics.json").read_text())
    result["search"] = {
        key: search.get(key)
        for key in ("score", "chosen", "assembled_val_top1", "seconds", "overhead_vs_teacher",
                    "predictor_samples", "predictor_kendall_tau", "nmse_kendall_tau")
    }  # fmt: skip
    for name in names:
        result[f"student_minus_{name}_ci95"] = student["vs"][name]["ci95"]
        result[f"student_minus_{name}"] = student["vs"][name]["difference"]
    result["student_minus_teacher"] = student["top1_mean"] - metrics["teacher"]["top1"]
    result["provenance"] = metrics.get("provenance")  # runs since 2026-12-03 record it
    return result


def targets(result: dict) -> list[str]:
    """The seed paper's claims, met or not: >= 2x fewer FLOPs, >= 5x fewer parameters, top-1
    at least the teacher's, above every baseline outside the difference's 95% interval."""
    student = result["student"]

    def verdict(met: bool) -> str:
        return "met" if met else "**not met**"

    rows = [
        f"| FLOPs reduction >= 2x | {student['flops_reduction']:.2f}x | "
        f"{verdict(student['flops_reduction'] >= 2)} |",
        f"| parameter reduction >= 5x | {student['params_reduction']:.2f}x | "
        f"{verdict(student['params_reduction'] >= 5)} |",
        f"| top-1 >= the teacher's | {result['student_minus_teacher']:+.2f} | "
        f"{verdict(result['student_minus_teacher'] >= 0)} |",
    ]
    for name in baselines(result):
        if f"student_minus_{name}_ci95" in result:
            low, high = result[f"student_minus_{name}_ci95"]
            rows.append(f"| above {name} (interval's lower bound > 0) | "
                        f"{result[f'student_minus_{name}']:+.2f} [{low:+.2f}, {high:+.2f}] | "
                        f"{verdict(low > 0)} |")  # fmt: skip
    return ["| target | measured | |", "|---|---|---|", *rows]


def markdown(data: Path, result: dict, note: str, title: str, ablation: bool) -> str:
    reporting = data / "08_reporting"
    names = baselines(json.loads((reporting / "metrics.json").read_text()))
    evaluation = json.loads((reporting / "evaluation.json").read_text())
    teacher = json.loads((reporting / "teacher_metrics.json").read_text())
    search = json.loads((reporting / "block_search_metrics.json").read_text())
    distill = json.loads((reporting / "distillation_summary.json").read_text())
    history = pd.read_csv(reporting / "student_history.csv")
    card = json.loads((reporting / "dataset_card.json").read_text())
    teacher_low, teacher_high = evaluation["teacher"]["top1_ci95"]
    rows = ["| model | top-1 mean ± std (seeds) | top-1 seed 0 [95% CI] | FLOPs | params | "
            "FLOPs red. | params red. | latency b1 / b32 (ms) |",
            "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for name, figures in evaluation.items():
        seeds = ", ".join(f"{t:.2f}" for t in figures["top1_seeds"])
        low, high = figures["top1_ci95"]
        rows.append(
            f"| {name} | {figures['top1_mean']:.2f} ± {figures['top1_std']:.2f} ({seeds}) | "
            f"{figures['top1']:.2f} [{low:.2f}, {high:.2f}] | {figures['flops'] / 1e6:.1f} M | "
            f"{figures['params'] / 1e3:.1f} k | {figures.get('flops_reduction', 1):.2f}x | "
            f"{figures.get('params_reduction', 1):.2f}x | "
            f"{figures['latency_ms_b1']:.2f} / {figures['latency_ms_b32']:.1f} |"
        )
    diffs = []
    for name in names:
        low, high = result[f"student_minus_{name}_ci95"]
        diffs.append(f"| student - {name} | {result[f'student_minus_{name}']:+.2f} | "
                     f"[{low:+.2f}, {high:+.2f}] |")  # fmt: skip
    seconds = history.groupby("model")["seconds"].sum()
    epochs = int(history["epoch"].max())
    times = "\n".join(f"| {m} fine-tunes ({result['seeds']} seeds x {epochs} epochs) | "
                      f"{s:.0f} s |" for m, s in seconds.items())  # fmt: skip
    ablation_text = (
        f"""
## Ablation: what the search optimises, and the space it searches

One seed of the student's fine-tune per row, the same teacher (`benchmarks/cifar10_ablation.py`,
`benchmarks/cifar10_ablation.json`); the final settings' row is the run above.

{ablation_table(json.loads(ABLATION.read_text())) if ABLATION.exists() else "(not run)"}
"""
        if ablation
        else ""
    )
    return f"""# {title}

{note}

{provenance_line(result.get("provenance"))}

Data: {card["source"]}; {card["counts"]} images (train/val/test), classes {len(card["classes"])}.
Teacher: {teacher["model"]["name"]}, {teacher["epochs"]} epochs. Block search:
{search["candidates"]} candidates, chose {search["chosen"]} (predicted
{search["predicted_flops_ratio"]:.3f}x FLOPs, {search["predicted_params_ratio"]:.3f}x params;
assembled before fine-tuning {search["assembled_val_top1"]:.2f}% validation, teacher
{search["teacher_val_top1"]:.2f}%). {_recalibration_facts(distill["models"])}
{_baseline_facts(distill["models"])}

## Test accuracy ([{teacher_low:.2f}, {teacher_high:.2f}] is the teacher's 95% interval)

{chr(10).join(rows)}

## Targets

{chr(10).join(targets(result))}

## Differences (percentage points; 95% interval: test sampling + seed-to-seed noise)

| difference | mean | 95% interval |
|---|---|---|
{chr(10).join(diffs)}

## Wall times

| stage | seconds |
|---|---|
| teacher training | {teacher["train_seconds"]:.0f} s |
| block search (all candidates, every epoch) | {search["seconds"]:.0f} s \
({search["overhead_vs_teacher"]:.2f}x the teacher) |
{times}
{ablation_text}{longer_section(result, evaluation)}"""


def provenance_line(record: dict | None) -> str:
    """The run's record (``provenance`` in the JSON) in one sentence, as the report's run
    table words it."""
    facts = provenance_facts(record)
    return f"Provenance: {'; '.join(facts.values())}." if facts else "Provenance: not recorded."


def longer_finetune(data: Path) -> dict:
    """The figures of a run with longer fine-tunes on the same teacher and search (one seed)."""
    reporting = data / "08_reporting"
    metrics = json.loads((reporting / "metrics.json").read_text())
    history = pd.read_csv(reporting / "student_history.csv")
    return {
        "epochs": int(history["epoch"].max()),
        "top1": {name: metrics[name]["top1"] for name in metrics},
        "student_minus_ci95": {
            name: [vs["difference"], *vs["ci95"]] for name, vs in metrics["student"]["vs"].items()
        },
    }


def longer_section(result: dict, evaluation: dict) -> str:
    longer = result.get("longer_finetune")
    if not longer:
        return ""
    epochs = longer["epochs"]
    rows = [f"| model | seed 0, {result['finetune_epochs']} epochs | seed 0, {epochs} epochs |",
            "|---|---|---|"]  # fmt: skip
    for name, top1 in longer["top1"].items():
        short = evaluation[name]["top1_seeds"][0] if name != "teacher" else top1
        rows.append(f"| {name} | {short:.2f} | {top1:.2f} |")
    diffs = [f"| student - {name} | {d:+.2f} [{low:+.2f}, {high:+.2f}] |"
             for name, (d, low, high) in longer["student_minus_ci95"].items()]  # fmt: skip
    return f"""
## Fine-tune length: {result["finetune_epochs"]} against {epochs} epochs (seed 0)

The same teacher, search and student, fine-tuned {epochs} epochs with the baselines that start
from the teacher's weights (`kedro run --env cifar10 --pipelines distillation,evaluation
--params distillation.seeds=1,distillation.training.epochs={epochs},
distillation.baselines.scratch=false,distillation.baselines.uniform=false`):

{chr(10).join(rows)}

| difference at {epochs} epochs (one seed: test sampling only) | mean [95% interval] |
|---|---|
{chr(10).join(diffs)}
"""


def _recalibration_facts(models: dict) -> str:
    """Validation top-1 before -> after BatchNorm recalibration of each inherited model."""
    effects = [f"{name} {m['recalibration']['val_top1_before']:.2f} -> "
               f"{m['recalibration']['val_top1_after']:.2f}%"
               for name, m in models.items() if "recalibration" in m]  # fmt: skip
    if not effects:
        return "BatchNorm recalibration: off."
    return f"BatchNorm recalibration (validation top-1 before -> after): {', '.join(effects)}."


def _baseline_facts(models: dict) -> str:
    """What each baseline the run fine-tuned kept (a switched-off one is not mentioned)."""
    facts = []
    if "uniform" in models:
        facts.append(f"Uniform baseline width x{models['uniform']['width_mult']:.4f}.")
    if "pruned" in models:
        facts.append(f"The pruned baseline keeps {models['pruned']['kept_fraction']:.4f} of "
                     "every layer's channels.")  # fmt: skip
    if "torch_pruning" in models:
        cut = models["torch_pruning"]
        facts.append(f"torch_pruning removes {cut['pruning_ratio']:.4f} of the channels, ranked "
                     f"globally ({cut['flops_ratio']:.3f}x FLOPs, {cut['params_ratio']:.3f}x "
                     "params).")  # fmt: skip
    return " ".join(facts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=Path("data/cifar10"))
    parser.add_argument("--name", default="cifar10", help="the files' name in --out")
    parser.add_argument("--title", default="CIFAR-10 at CPU scale: the student against the "
                        "teacher and the baselines")  # fmt: skip
    parser.add_argument("--note", default="")
    parser.add_argument("--out", type=Path, default=Path("benchmarks"))
    parser.add_argument("--longer", type=Path, help="data/ of a run with longer fine-tunes")
    args = parser.parse_args()
    result = summary(args.data)
    history = pd.read_csv(args.data / "08_reporting" / "student_history.csv")
    result["finetune_epochs"] = int(history["epoch"].max())
    if args.longer:
        result["longer_finetune"] = longer_finetune(args.longer)
    text = markdown(args.data, result, args.note, args.title, ablation=args.name == "cifar10")
    (args.out / f"{args.name}.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / f"{args.name}.md").write_text(text)


if __name__ == "__main__":
    main()
