"""The block search's choice under each score, from one finished search (no retraining).

Rebuilds the candidate pool from a run's teacher, interface importance, candidate table and
interface scores, selects under every budget with the whole-interface ``nmse`` and the
older ``kept_nmse``, and prints each choice with its share of the teacher's parameters per
part, beside the ``pruned`` baseline's. The first rows of the score ablation
(docs/method.md §4), before any fine-tuning:

    kedro run --env cifar10 --pipelines data_processing,teacher,block_search
    python benchmarks/score_ablation.py --env cifar10
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from bench_common import data_root
from kedro.config import OmegaConfigLoader

from compactkd.baselines import pruned_blueprint
from compactkd.config import config_from_params
from compactkd.data import input_shape
from compactkd.model_files import load_model
from compactkd.search.config import BlockSearchConfig
from compactkd.search.pool import (
    build_pool,
    candidate_scores,
    end_scores,
    selection_options,
    slots,
    teacher_costs,
)
from compactkd.search.select import resolve_budgets, select
from compactkd.serialization import safe_load

SCORES = ("nmse", "kept_nmse")


def _shares(parts: list[torch.nn.Module], total: float) -> list[float]:
    return [round(sum(p.numel() for p in part.parameters()) / total, 4) for part in parts]


def compare(run: dict[str, Any], params: dict[str, Any]) -> None:
    """One line per score and budget: the chosen parts, the cost ratios, params per part;
    then the ``pruned`` baseline at each budget."""
    for score in SCORES:
        config = config_from_params(BlockSearchConfig, {**params, "score": score}, "search")
        pool = build_pool(run["teacher"], run["shape"], run["importance"], config)
        if [c.name for c in pool.candidates] != list(run["table"]["candidate"]):
            raise SystemExit("the candidate table was made with other search settings")
        scores = candidate_scores(run["table"], config)
        options = selection_options(pool, scores, config.pin, end_scores(run["ends"], config))
        reference = teacher_costs(pool)
        for budget in config.budget_list:
            chosen = select(options, slots(pool), resolve_budgets(budget, reference), reference)
            parts = chosen.chosen.values()
            ratios = {k: round(chosen.totals[k] / reference[k], 4) for k in ("flops", "params")}
            share = [round(o.costs["params"] / reference["params"], 4) for o in parts]
            print(score, budget, " -> ".join(o.name for o in parts), ratios, "params", share)
    for budget in config.budget_list:
        absolute = resolve_budgets(budget, reference)
        cut = pruned_blueprint(
            run["teacher"], run["shape"], config.granularity, run["importance"], absolute
        )
        share = _shares(list(cut.build(run["teacher"])), reference["params"])
        print("pruned baseline", budget, cut.blocks[0].in_fraction, "params", share)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="local", help="the Kedro environment of the run")
    parser.add_argument("--project", type=Path, default=Path("."))
    args = parser.parse_args()
    data = data_root(args.project.resolve(), args.env)
    loader = OmegaConfigLoader(
        str(args.project / "conf"), base_env="base", default_run_env=args.env,
        merge_strategy={"parameters": "soft"},
    )  # fmt: skip
    run = {
        "teacher": load_model(data / "06_models/teacher.pt").eval(),
        "shape": input_shape(safe_load(data / "05_model_input/splits.pt")),
        "importance": safe_load(data / "06_models/interface_importance.pt"),
        "table": pd.read_csv(data / "07_model_output/candidates.csv"),
        "ends": json.loads((data / "07_model_output/interface_scores.json").read_text()),
    }
    print("interface scores:", run["ends"])
    compare(run, loader["parameters"]["block_search"])


if __name__ == "__main__":
    main()
