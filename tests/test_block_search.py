"""Candidates, costs, block-wise distillation and the block_search pipeline."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from helpers import TINY_RUN, randomised_teacher, run_session
from torch import nn

from compactkd.baselines import pruned_blueprint, pruned_fractions
from compactkd.blocks.candidates import (
    Candidate,
    block_spaces,
    build_candidates,
    expand_space,
    interface_keeps,
    make_candidate_module,
)
from compactkd.blocks.partition import partition_model
from compactkd.config import config_from_params
from compactkd.costs import count_flops, count_params, module_costs
from compactkd.data import make_loader
from compactkd.datasets import TensorDictDataset
from compactkd.model_files import load_model
from compactkd.models import build_model
from compactkd.search import blockwise
from compactkd.search.blockwise import (
    BlockTrainConfig,
    channel_importance,
    interface_losses,
    pareto_survivors,
    train_candidates,
)
from compactkd.search.config import BlockSearchConfig
from compactkd.search.pool import (
    CandidatePool,
    build_pool,
    candidate_scores,
    end_scores,
    selection_options,
    slots,
    teacher_costs,
)
from compactkd.search.select import resolve_budgets, select

FULL_SPACE = {
    "teacher": {},
    "pruned": {"ratio": [0.5]},
    "mbconv": {"expansion": [2], "depth": [1], "kernel": [3]},
    "dsconv": {"depth": [1], "width": [0.5]},
    "conv": {"depth": [2], "width": [0.5]},
    "skip": {},
}
ARCHITECTURES = [
    "resnet20", "resnet32", "resnet56", "vgg11_bn", "vgg16_bn", "mobilenet_v2",
    "tv:resnet18", "tv:resnet34", "tv:resnet50", "tv:mobilenet_v2",
]  # fmt: skip


def random_keeps(partition, fractions=(1.0, 0.5)) -> list:
    importance = [torch.rand(shape[0]) for shape in partition.interfaces]
    return interface_keeps(importance, fractions)


@pytest.mark.parametrize("name", ARCHITECTURES)
@pytest.mark.parametrize("channels", [1, 3])
def test_every_candidate_maps_its_interfaces(name: str, channels: int) -> None:
    torch.manual_seed(0)
    teacher = build_model({"name": name, "num_classes": 5, "in_channels": channels}).eval()
    partition = partition_model(teacher, (channels, 32, 32))
    keeps = random_keeps(partition)
    spaces = block_spaces(partition.block_names, FULL_SPACE)
    candidates = build_candidates(partition, spaces, keeps)
    assert {c.family for c in candidates} >= {"teacher", "pruned", "mbconv", "dsconv", "conv"}
    with torch.no_grad():
        interfaces = partition.interface_tensors(torch.randn(2, channels, 32, 32))
        for c in candidates:
            i = partition.block_names.index(c.block)
            out = c.module.eval()(interfaces[i][:, keeps[i][c.in_fraction]])
            expected = (2, len(keeps[i + 1][c.out_fraction]), *partition.interfaces[i + 1][1:])
            assert tuple(out.shape) == expected, c.name


@pytest.mark.parametrize("name", ["mobilenet_v2", "tv:mobilenet_v2"])
def test_mobilenet_units_are_blocks_and_the_residual_ones_can_be_skipped(name: str) -> None:
    """At ``granularity: unit`` every inverted residual is a block; ``skip`` (a unit dropped)
    exists exactly where the unit keeps its input's shape (its identity residual)."""
    torch.manual_seed(0)
    teacher = build_model({"name": name, "num_classes": 5}).eval()
    partition = partition_model(teacher, (3, 32, 32), "unit")
    keeps = random_keeps(partition)
    spaces = block_spaces(partition.block_names, {"teacher": {}, "skip": {}})
    candidates = build_candidates(partition, spaces, keeps)
    residual = {
        f"block_{i}"
        for i, block in enumerate(partition.blocks, 1)
        if block[0].use_res_connect  # the unit itself: a one-unit stage
    }
    assert len(residual) == 10  # 17 units, 7 of them start a stage
    assert {c.block for c in candidates if c.family == "skip"} == residual
    for c in candidates:
        if c.family == "skip" and c.in_fraction == c.out_fraction == 1.0:  # the identity
            x = torch.randn(2, *partition.interfaces[partition.block_names.index(c.block)])
            assert torch.equal(c.module(x), x), c.name


def test_teacher_candidate_at_full_width_is_the_teacher_block() -> None:
    torch.manual_seed(0)
    teacher = build_model({"name": "resnet20", "num_classes": 10, "in_channels": 3}).eval()
    partition = partition_model(teacher, (3, 32, 32))
    keeps = random_keeps(partition)
    candidates = build_candidates(partition, block_spaces(partition.block_names, FULL_SPACE), keeps)
    x = partition.interface_tensors(torch.randn(2, 3, 32, 32))
    own = [c for c in candidates if c.family == "teacher" and c.in_fraction == c.out_fraction == 1]
    assert [c.block for c in own] == partition.block_names  # one per block, each checked
    for c in own:
        i = partition.block_names.index(c.block)
        assert torch.allclose(c.module.eval()(x[i]), x[i + 1], atol=1e-5)


def test_flops_of_known_modules_match_hand_counts() -> None:
    conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
    assert count_flops(conv, (3, 8, 8)) == 2 * (8 * 8) * 8 * 3 * 9
    strided = nn.Conv2d(4, 6, 3, stride=2, padding=1, bias=False)
    assert count_flops(strided, (4, 8, 8)) == 2 * (4 * 4) * 6 * 4 * 9
    depthwise = nn.Conv2d(6, 6, 3, padding=1, groups=6, bias=False)
    assert count_flops(depthwise, (6, 5, 5)) == 2 * 25 * 6 * 9
    linear = nn.Sequential(nn.Flatten(), nn.Linear(10, 5))
    assert count_flops(linear, (10,)) == 2 * 10 * 5
    assert count_params(linear) == 55


def test_teacher_cost_is_the_sum_of_its_parts() -> None:
    teacher = build_model({"name": "resnet20", "num_classes": 10, "in_channels": 3}).eval()
    partition = partition_model(teacher, (3, 32, 32))
    keeps = random_keeps(partition, (1.0,))
    candidates = build_candidates(
        partition, block_spaces(partition.block_names, {"teacher": {}}), keeps
    )
    costs = [
        module_costs(c.module, partition.interfaces[i], False) for i, c in enumerate(candidates)
    ]
    stem = module_costs(partition.stem, (3, 32, 32), False)
    head = module_costs(partition.head, partition.interfaces[-1], False)
    pool = CandidatePool(partition, keeps, candidates, costs, {1.0: stem}, {(1.0, 1.0): head})
    totals = teacher_costs(pool)
    assert totals["flops"] == count_flops(teacher, (3, 32, 32))
    assert totals["params"] == count_params(teacher)


@pytest.mark.parametrize(
    ("space", "message"),
    [
        ({"tiny": {}}, "unknown candidate family 'tiny'"),
        ({"pruned": {"ratios": [0.5]}}, r"takes \['ratio'\] and optionally \['depth'\]"),
        ({"pruned": {}}, "missing"),
        ({"conv": {"depth": 1, "width": 1, "ratio": 0.5}}, r"unknown \['ratio'\]"),
    ],
)
def test_misnamed_design_space_is_refused(space: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        expand_space(space)


def test_an_optional_setting_names_only_the_candidates_that_set_it() -> None:
    variants = expand_space({"pruned": {"ratio": [0.5], "depth": [None, 1]}})
    assert variants == [
        ("pruned", {"ratio": 0.5, "depth": None}),
        ("pruned", {"ratio": 0.5, "depth": 1}),
    ]
    assert expand_space({"pruned": {"ratio": 0.5}}) == [("pruned", {"ratio": 0.5})]
    module = nn.Identity()
    names = [Candidate("block_1", f, p, 1.0, 0.5, module).name for f, p in variants]
    assert names == ["block_1:pruned_r0.5@1-0.5", "block_1:pruned_r0.5_d1@1-0.5"]


def test_misnamed_block_override_is_refused() -> None:
    with pytest.raises(ValueError, match=r"unknown block\(s\) \['block_9'\].*block_1"):
        block_spaces(["block_1", "block_2"], {"teacher": {}}, {"block_9": {}})
    with pytest.raises(ValueError, match="not in its design space"):
        block_spaces(["block_1"], {"teacher": {}}, {"block_1": {"families": ["conv"]}})


def test_pareto_pruning_keeps_only_undominated_candidates_of_a_group() -> None:
    class C:
        def __init__(self, block, fin, fout):
            self.block, self.in_fraction, self.out_fraction = block, fin, fout

    candidates = [C("b1", 1.0, 1.0), C("b1", 1.0, 1.0), C("b1", 1.0, 1.0), C("b1", 1.0, 0.5)]
    costs = {0: {"flops": 10, "params": 5}, 1: {"flops": 5, "params": 3},
             2: {"flops": 4, "params": 3}, 3: {"flops": 100, "params": 100}}  # fmt: skip
    nmse = {0: 0.1, 1: 0.2, 2: 0.3, 3: 0.9}
    assert pareto_survivors(candidates, [0, 1, 2, 3], nmse, costs) == [0, 1, 2, 3]
    nmse[1] = 0.35  # now 2 is cheaper and better than 1; 3 has other widths, so it stays
    assert pareto_survivors(candidates, [0, 1, 2, 3], nmse, costs) == [0, 2, 3]
    # a pinned candidate is only compared with other pinned ones
    assert pareto_survivors(candidates, [0, 1, 2, 3], nmse, costs, protected={1}) == [0, 1, 2, 3]
    # a measured latency counts as a cost: 1 is now faster than 2, so 2 no longer beats it
    timed = {c: {**cost, "latency": 5.0 - c} for c, cost in costs.items()}
    timed[1]["latency"] = 0.5
    assert pareto_survivors(candidates, [0, 1, 2, 3], nmse, timed) == [0, 1, 2, 3]


def test_block_training_uses_one_teacher_pass_per_batch_and_lowers_nmse(
    digits_splits: dict, tmp_path: Path
) -> None:
    torch.manual_seed(0)
    teacher = build_model({"name": "resnet20", "num_classes": 10, "in_channels": 1}).eval()
    partition = partition_model(teacher, (1, 8, 8))
    keeps = random_keeps(partition)
    space = {"pruned": {"ratio": [0.5]}, "conv": {"depth": [1], "width": [0.5]}}

    def fresh_candidates() -> list:
        torch.manual_seed(1)  # random-init families: the same start in both runs
        return build_candidates(partition, block_spaces(partition.block_names, space), keeps)

    candidates = fresh_candidates()
    config = BlockTrainConfig(
        epochs=2, batch_size=128, lr=3e-3, subsample=1.0, pareto_pruning=False, device="cpu"
    )
    val_loader = make_loader(digits_splits, "val", 256)
    everyone = list(range(len(candidates)))
    before = blockwise.validation_nmse(partition, candidates, everyone, keeps, val_loader)

    before_weights = {k: v.clone() for k, v in teacher.state_dict().items()}
    stem_calls = []
    hook = partition.stem.register_forward_hook(lambda *_: stem_calls.append(1))
    costs = dict.fromkeys(everyone, {"flops": 1.0, "params": 1.0})
    history, after, active = train_candidates(
        partition, candidates, keeps, digits_splits, costs, config, tmp_path / "blocks.ckpt"
    )
    hook.remove()
    batches = len(make_loader(digits_splits, "train", config.batch_size))
    assert len(stem_calls) == config.epochs * (batches + len(val_loader))
    assert active == everyone and list(history["epoch"]) == [1, 2]
    assert sum(after.values()) < sum(before[c] for c in everyone)
    after_weights = teacher.state_dict()
    assert all(torch.equal(before_weights[k], after_weights[k]) for k in before_weights)
    assert all(p.requires_grad for p in teacher.parameters())  # the caller's teacher, untouched

    # A rerun of the finished run resumes from its checkpoint: no further training.
    stem_calls.clear()
    hook = partition.stem.register_forward_hook(lambda *_: stem_calls.append(1))
    rerun_history, rerun_nmse, _ = train_candidates(
        partition, fresh_candidates(), keeps, digits_splits, costs, config, tmp_path / "blocks.ckpt"
    )
    hook.remove()
    assert stem_calls == [] and rerun_nmse == after and len(rerun_history) == 2


# ---------------------------------------------------------------- the pipeline


def rebuilt_candidate(partition, keeps, row: dict) -> nn.Module:
    """The module of a row of the candidate table, untrained (weights to be loaded)."""
    index = partition.block_names.index(row["block"])
    return make_candidate_module(
        partition,
        index,
        row["family"],
        json.loads(row["params_json"]),
        keeps[index][row["in_fraction"]],
        keeps[index + 1][row["out_fraction"]],
    )


@pytest.mark.slow
def test_block_search_pipeline_writes_table_and_spec_within_budget(
    project_copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(project_copy)
    run_session(project_copy, ["data_processing", "teacher", "block_search"], TINY_RUN)
    table = pd.read_csv(project_copy / "data/07_model_output/candidates.csv")
    assert {"block", "family", "flops", "params", "nmse", "in_fraction", "out_fraction"} <= set(
        table.columns
    )
    # 3 stages x (the teacher's own block + 4 width pairs x (2 pruned ratios + conv))
    assert len(table) == 3 * (1 + 4 * 3)
    assert set(table["family"]) == {"teacher", "pruned", "conv"}
    importance = TensorDictDataset(filepath="data/06_models/interface_importance.pt").load()
    assert [len(i) for i in importance] == [16, 16, 32, 64]  # x_0..x_3 of ResNet-20
    budgets = TINY_RUN["block_search"]["budgets"]
    specs = [
        json.loads((project_copy / "data/07_model_output" / path).read_text())
        for path in ("student_spec.json", "sweep/budget_2/student_spec.json")
    ]
    names = ["stem", "block_1", "block_2", "block_3", "head"]
    for spec, budget in zip(specs, budgets, strict=True):
        assert spec["ratios"]["flops"] <= budget["flops"]
        assert spec["ratios"]["params"] <= budget["params"]
        assert spec["granularity"] == "stage" and spec["score_kind"] == "nmse"
        chosen = spec["blocks"]
        assert list(chosen) == names
        for left, right in zip(names, names[1:], strict=False):
            assert chosen[left]["out_fraction"] == chosen[right]["in_fraction"]
    metrics = json.loads((project_copy / "data/08_reporting/block_search_metrics.json").read_text())
    assert metrics["candidates"] == 39 and metrics["blocks"] == 3
    assert metrics["overhead_vs_teacher"] > 0 and metrics["seconds"] > 0
    assert metrics["budgets"] == pytest.approx(budgets[0])
    assert metrics["chosen"] == {slot: c["candidate"] for slot, c in specs[0]["blocks"].items()}
    (second,) = metrics["sweep"]  # each further budget's choice, assembled and checked
    assert second["budgets"] == pytest.approx(budgets[1])
    for choice in (metrics, second):
        assert 0 <= choice["assembled_val_top1"] <= 100

    # A rerun of the same settings resumes from the last checkpoint: nothing is retrained.
    history = pd.read_csv("data/08_reporting/block_search_history.csv")
    run_session(project_copy, ["block_search"], TINY_RUN)
    assert pd.read_csv("data/08_reporting/block_search_history.csv").equals(history)

    # score: predicted_accuracy measures drawn structures and fits their accuracy; the
    # candidates are not retrained (same pool and training settings), and the predictor's
    # time counts in the search's.
    search = TINY_RUN["block_search"]
    predicted = {
        **TINY_RUN,
        "block_search": {**search, "score": "predicted_accuracy", "predictor": {"samples": 6}},
    }
    run_session(project_copy, ["block_search"], predicted)
    assert pd.read_csv("data/08_reporting/block_search_history.csv").equals(history)
    fit = json.loads(Path("data/07_model_output/accuracy_predictor.json").read_text())
    metrics = json.loads(Path("data/08_reporting/block_search_metrics.json").read_text())
    assert fit["fitted"] and metrics["score"] == "predicted_accuracy"
    assert metrics["predictor_samples"] == len(fit["samples"]) == 6
    assert len({tuple(s["chosen"].values()) for s in fit["samples"]}) == 6
    assert all(0 <= s["val_top1"] <= 100 for s in fit["samples"])
    assert -1 <= metrics["predictor_kendall_tau"] <= 1
    trained = float(history["seconds"].sum())
    assert metrics["seconds"] == pytest.approx(trained + metrics["predictor_seconds"])
    assert metrics["predictor_seconds"] > 0

    # The saved weights rebuild every candidate, and they are the block-wise trained ones.
    saved = TensorDictDataset(filepath="data/06_models/candidate_weights.pt").load()
    teacher = load_model("data/06_models/teacher.pt")
    partition = partition_model(teacher, (1, 8, 8))
    table = pd.read_csv("data/07_model_output/candidates.csv")
    for row in table.to_dict("records"):
        module = rebuilt_candidate(partition, saved["keeps"], row)
        module.load_state_dict(saved["weights"][row["candidate"]])  # strict: same structure
    trained = table[table["family"] == "pruned"].iloc[0].to_dict()
    start = rebuilt_candidate(partition, saved["keeps"], trained).state_dict()
    weights = saved["weights"][trained["candidate"]]
    assert any(not torch.equal(start[key], weights[key]) for key in start)

    # An impossible budget fails before any training, naming the smallest reachable cost.
    (project_copy / "data/07_model_output/candidates.csv").unlink()
    impossible = {**TINY_RUN, "block_search": {**search, "budgets": [{"params": 0.01}]}}
    with pytest.raises(Exception, match="params budget .* below the smallest reachable"):
        run_session(project_copy, ["block_search"], impossible)
    assert not (project_copy / "data/07_model_output/candidates.csv").exists()

    misnamed = {**TINY_RUN, "block_search": {**search, "pin": {"block_7": "teacher"}}}
    with pytest.raises(Exception, match=r"unknown block\(s\) \['block_7'\]"):
        run_session(project_copy, ["block_search"], misnamed)
    assert not (project_copy / "data/07_model_output/candidates.csv").exists()


def small_pool_parts(space: dict) -> tuple:
    torch.manual_seed(0)
    teacher = build_model({"name": "resnet20", "num_classes": 10, "in_channels": 1}).eval()
    partition = partition_model(teacher, (1, 8, 8))
    keeps = random_keeps(partition)
    candidates = build_candidates(partition, block_spaces(partition.block_names, space), keeps)
    return partition, keeps, candidates


def test_progressive_inputs_come_from_the_reference_candidates() -> None:
    partition, keeps, candidates = small_pool_parts({"pruned": {"ratio": [0.5]}})
    index_of = {name: i for i, name in enumerate(partition.block_names)}
    first = next(c for c, cand in enumerate(candidates) if cand.block == "block_1")
    second = next(
        c
        for c, cand in enumerate(candidates)
        if cand.block == "block_2" and cand.in_fraction == candidates[first].out_fraction
    )
    seen = {}
    candidates[second].module.register_forward_pre_hook(lambda m, a: seen.update(x=a[0]))
    with torch.no_grad():
        x = partition.interface_tensors(torch.randn(4, 1, 8, 8))
        order = list(range(len(candidates)))
        teacher_inputs = blockwise._Inputs(x, keeps)
        blockwise._batch_terms(candidates, order, order, index_of, teacher_inputs, {})
        assert torch.equal(seen["x"], teacher_inputs.target(1, candidates[second].in_fraction))
        references = {(1, candidates[first].out_fraction): first}
        student_inputs = blockwise._Inputs(x, keeps)
        blockwise._batch_terms(candidates, order, order, index_of, student_inputs, references)
        written = candidates[first].module(student_inputs.target(0, candidates[first].in_fraction))
        assert torch.equal(seen["x"], written)


def test_plugin_accuracy_of_the_teacher_block_is_the_teachers(digits_splits: dict) -> None:
    from compactkd.training import TrainConfig, train

    torch.manual_seed(0)  # a trained teacher: an untrained one's near-tied logits flip on rounding
    teacher = build_model({"name": "resnet20", "num_classes": 10, "in_channels": 1})
    teacher, _ = train(teacher, digits_splits, TrainConfig(epochs=1, batch_size=64, device="cpu"))
    partition = partition_model(teacher.eval(), (1, 8, 8))
    keeps = random_keeps(partition)
    space = {"teacher": {}, "pruned": {"ratio": [0.25]}}
    candidates = build_candidates(partition, block_spaces(partition.block_names, space), keeps)
    loader = make_loader(digits_splits, "val", 256)
    teacher = nn.Sequential(partition.stem, *partition.blocks, partition.head).eval()
    from compactkd.evaluation import evaluate

    reference = evaluate(teacher, loader)["top1"]
    own = next(c for c in candidates if c.family == "teacher" and c.block == "block_2")
    assert blockwise.plugin_accuracy(partition, 1, own, keeps, loader) == reference
    # The drop is the teacher's accuracy minus that: none for the teacher's own block.
    position = candidates.index(own)
    drops = blockwise.plugin_drops(
        partition, candidates, keeps, [position], digits_splits, torch.device("cpu")
    )
    assert drops == {position: 0.0}


def test_latency_is_measured_in_milliseconds() -> None:
    from compactkd.costs import measure_latency_ms

    threads = torch.get_num_threads()
    latency = measure_latency_ms(nn.Conv2d(3, 8, 3), (3, 16, 16), warmup=1, repeats=3)
    assert 0 < latency < 1000 and torch.get_num_threads() == threads


def default_search_params() -> dict:
    conf = Path(__file__).parents[1] / "conf/base/parameters_block_search.yml"
    return yaml.safe_load(conf.read_text())["block_search"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"granularty": "unit"}, r"unknown block_search setting\(s\) \['granularty'\]"),
        ({"score": "accuracy"}, "score must be one of"),
        ({"importance_samples": 0}, "importance_samples must be at least 1"),
        ({"budgets": {"latency": 0.5}}, "latency budget needs block_search.latency: true"),
        ({"budgets": []}, "budgets must be a mapping"),
        ({"training": {"epoch": 3}}, r"unknown block_search.training setting\(s\) \['epoch'\]"),
        ({"training": {"optimizer": "lion"}}, "optimizer must be one of"),
    ],
)
def test_misnamed_block_search_settings_are_refused(change: dict, message: str) -> None:
    params = default_search_params() | change
    with pytest.raises(ValueError, match=message):
        config_from_params(BlockSearchConfig, params, "block_search")


def test_block_search_settings_read_nested_training_and_defaults() -> None:
    config = config_from_params(BlockSearchConfig, default_search_params(), "block_search")
    assert isinstance(config.training, BlockTrainConfig) and config.training.optimizer == "adam"
    assert [b["flops"] for b in config.budget_list] == [0.5, 0.25]
    assert not config.wants_plugin_drop
    scored = config_from_params(
        BlockSearchConfig, {"budgets": {"flops": 0.5}, "score": "plugin_drop"}, "block_search"
    )
    assert scored.wants_plugin_drop and scored.training == BlockTrainConfig()
    assert scored.budget_list == [{"flops": 0.5}]


def test_candidate_scores_follow_the_score_setting() -> None:
    table = pd.DataFrame(
        {
            "block": ["block_1", "block_1", "block_2"],
            "nmse": [0.2, 0.4, 0.1],
            "nmse_kept": [0.1, 0.4, 0.05],
            "plugin_drop": [1.5, 3.0, 0.5],
            "active": [True, False, True],  # an inactive candidate has no score
        }
    )

    def scores(**settings) -> dict[int, float]:
        config = config_from_params(BlockSearchConfig, {"budgets": {}, **settings}, "search")
        return candidate_scores(table, config)

    assert scores() == {0: 0.2, 2: 0.1}
    assert scores(score="nmse", block_weights={"block_2": 10.0}) == {0: 0.2, 2: 0.1}
    assert scores(score="weighted_nmse", block_weights={"block_2": 10.0}) == {0: 0.2, 2: 1.0}
    assert scores(score="plugin_drop") == {0: 1.5, 2: 0.5}
    assert scores(score="kept_nmse") == {0: 0.1, 2: 0.05}


def test_narrowing_an_interface_never_scores_better(digits_splits: dict) -> None:
    """All else equal, a candidate that writes fewer channels of the teacher's interface
    never scores better than one that writes more, and the whole interface costs nothing."""
    teacher = randomised_teacher("resnet20", in_channels=1)
    partition = partition_model(teacher, (1, 8, 8))
    loader = make_loader(digits_splits, "val", 64)
    importance = channel_importance(partition, loader)
    keeps = interface_keeps(importance, [1.0, 0.75, 0.5, 0.25])
    losses = interface_losses(partition, keeps, loader)
    for j, dropped in enumerate(losses.dropped):
        fractions = sorted(dropped)  # narrowest first
        assert dropped[1.0] == pytest.approx(0.0, abs=1e-9)
        assert all(dropped[a] >= dropped[b] > -1e-9 for a, b in itertools.pairwise(fractions))
        assert dropped[0.25] > 0.05  # a quarter of the channels cannot hold all the spread
        for kept in (0.0, 0.3, 1.0):
            full = [losses.full_nmse(kept, j, f) for f in fractions]
            assert full == sorted(full, reverse=True) and full[-1] == pytest.approx(kept)
    heads = [losses.head_nmse[key] for key in sorted(losses.head_nmse)]
    assert heads == sorted(heads, reverse=True) and heads[-1] == pytest.approx(0.0, abs=1e-9)


def test_stem_and_head_options_carry_their_scores_under_the_full_interface_nmse() -> None:
    ends = {"stem": {"1.0": 0.0, "0.5": 0.4}, "head": {"head@1": 0.0, "head@0.5": 0.2}}  # JSON

    def scored(score: str) -> dict[str, dict[float, float]]:
        config = config_from_params(BlockSearchConfig, {"budgets": {}, "score": score}, "s")
        return end_scores(ends, config)

    heads = {"head@1": 0.0, "head@0.5": 0.2}
    assert scored("nmse") == {"stem": {1.0: 0.0, 0.5: 0.4}, "head": heads}
    assert scored("kept_nmse") == {"stem": {1.0: 0.0, 0.5: 0.0}, "head": dict.fromkeys(heads, 0.0)}


def test_the_pruned_baselines_structure_is_a_feasible_selection(digits_splits: dict) -> None:
    """With ``uniform_cuts`` the search can return the uniform cut itself: pinned to it, the
    selection is feasible at the default budget and predicts exactly its measured cost."""
    teacher = randomised_teacher("resnet20", in_channels=1)
    shape = (1, 8, 8)
    importance = channel_importance(
        partition_model(teacher, shape), make_loader(digits_splits, "train", 64)
    )
    budget = {"flops": 0.5, "params": 0.2}
    config = config_from_params(
        BlockSearchConfig,
        {"budgets": budget, "uniform_cuts": True, "interface_fractions": [1.0, 0.5]},
        "block_search",
    )
    (fraction,) = pruned_fractions(teacher, shape, importance, config)
    assert 0.3 < fraction < 0.6 and fraction not in (0.5, 0.25)  # outside the configured grid
    pool = build_pool(teacher, shape, importance, config, [fraction])
    name = f"pruned_r{fraction}@{fraction:g}-{fraction:g}"
    pins = dict.fromkeys(pool.partition.block_names, name)
    reference = teacher_costs(pool)
    unscored = dict.fromkeys(range(len(pool.candidates)), 0.0)
    options = selection_options(pool, unscored, pins)  # the stem and head follow the blocks
    selection = select(options, slots(pool), resolve_budgets(budget, reference), reference)
    assert selection.chosen["stem"].out_fraction == selection.chosen["head"].in_fraction == fraction
    cut = pruned_blueprint(teacher, shape, "stage", importance, resolve_budgets(budget, reference))
    measured = module_costs(cut.build(teacher), shape)
    assert {k: selection.totals[k] for k in measured} == measured
    without = config_from_params(
        BlockSearchConfig, {"budgets": budget, "interface_fractions": [1.0, 0.5]}, "block_search"
    )
    assert pruned_fractions(teacher, shape, importance, without) == []
