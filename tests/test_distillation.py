"""Distillation, baselines, evaluation, export and the budget sweep (METHOD §6-§7)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from helpers import TINY_RUN, randomised_teacher, run_session
from scipy import stats as scipy_stats
from torch import nn

import compactkd.comparison as comparison
from compactkd.baselines import fits_budgets, largest_fitting, pruned_blueprint, uniform_width_spec
from compactkd.blocks.assembly import BlockChoice, Blueprint
from compactkd.blocks.candidates import interface_keeps
from compactkd.blocks.partition import partition_model
from compactkd.comparison import EvaluationConfig, compare, sweep_rows, sweep_table
from compactkd.costs import count_flops, count_params
from compactkd.data import BatchLoader
from compactkd.datasets import TensorDictDataset
from compactkd.distillation import (
    MODELS,
    DistillationConfig,
    KDConfig,
    KDObjective,
    recalibrate_batchnorm,
)
from compactkd.evaluation import difference_interval
from compactkd.export import export_checked, export_onnx, max_abs_difference, onnx_session
from compactkd.losses import kd_loss, nmse, nmse_terms
from compactkd.model_files import load_model, network_from_package, network_package
from compactkd.models import build_model
from compactkd.pipelines.distillation.nodes import (
    finetune_uniform,
    gather_histories,
    gather_summaries,
)
from compactkd.pipelines.evaluation.nodes import measure_teacher
from compactkd.search.pool import assemble_student, check_assembled

CIFAR = (3, 32, 32)

# ------------------------------------------------------------------------------ the KD loss


def test_kd_loss_equals_a_hand_computed_value() -> None:
    student = torch.tensor([[2.0, 0.0, -1.0]])
    teacher = torch.tensor([[1.0, 1.0, 0.0]])
    labels = torch.tensor([0])
    alpha, tau = 0.3, 2.0
    p_teacher = [math.exp(t / tau) for t in (1.0, 1.0, 0.0)]
    p_teacher = [p / sum(p_teacher) for p in p_teacher]
    p_student = [math.exp(s / tau) for s in (2.0, 0.0, -1.0)]
    p_student = [p / sum(p_student) for p in p_student]
    kl = sum(t * math.log(t / s) for t, s in zip(p_teacher, p_student, strict=True))
    ce = -math.log(math.exp(2.0) / (math.exp(2.0) + 1 + math.exp(-1.0)))
    expected = alpha * ce + (1 - alpha) * tau**2 * kl
    assert kd_loss(student, teacher, labels, alpha, tau).item() == pytest.approx(expected, 1e-6)


def test_kd_loss_is_cross_entropy_at_alpha_one() -> None:
    torch.manual_seed(0)
    student, teacher = torch.randn(8, 10), torch.randn(8, 10)
    labels = torch.randint(0, 10, (8,))
    assert torch.equal(
        kd_loss(student, teacher, labels, 1.0, 4.0), F.cross_entropy(student, labels)
    )
    assert not torch.equal(
        kd_loss(student, teacher, labels, 0.5, 4.0), F.cross_entropy(student, labels)
    )


def test_kd_settings_are_checked() -> None:
    for bad in ({"alpha": 1.5}, {"tau": 0}, {"beta": -1}):
        with pytest.raises(ValueError, match="KD needs"):
            KDConfig(**bad)


def test_nmse_is_zero_for_a_copy_and_one_for_the_channel_mean() -> None:
    torch.manual_seed(0)
    target = torch.randn(4, 3, 5, 5)
    assert nmse(*nmse_terms(target.clone(), target)).item() == 0.0
    mean = target.mean(dim=(0, 2, 3), keepdim=True).expand_as(target)
    assert nmse(*nmse_terms(mean, target)).item() == pytest.approx(1.0, rel=1e-5)
    error, spread = nmse_terms(torch.zeros_like(target), target)
    assert torch.equal(nmse(error, spread), error / spread)
    # Terms summed over batches (floats) give the same ratio; a constant target divides by ~0.
    assert nmse(float(error), float(spread)) == pytest.approx(float(error / spread))
    flat = torch.ones(2, 3, 4, 4)
    error, spread = nmse_terms(flat + 1, flat)
    assert spread.item() == 0 and nmse(error, spread).item() == pytest.approx(96 / 1e-12)
    assert nmse(2.0, 0.0) == pytest.approx(2e12)


# ------------------------------------------------------------------------------ settings

SHARED_TRAINING = {"epochs": 15, "batch_size": 128, "lr": 0.1, "device": "cpu"}


def test_distillation_settings_override_the_shared_training_block() -> None:
    config = DistillationConfig.from_params(
        {"training": {"epochs": 2}, "kd": {"alpha": 0.3}}, SHARED_TRAINING
    )
    assert (config.training.epochs, config.training.lr, config.training.device) == (2, 0.1, "cpu")
    assert config.kd == KDConfig(alpha=0.3)  # a nested block becomes its dataclass
    assert DistillationConfig.from_params({}, SHARED_TRAINING).training.epochs == 15
    with pytest.raises(ValueError, match=r"unknown distillation.kd setting\(s\) \['temperature'\]"):
        DistillationConfig.from_params({"kd": {"temperature": 2}}, SHARED_TRAINING)
    with pytest.raises(ValueError, match=r"unknown distillation.training setting\(s\) \['epoch'\]"):
        DistillationConfig.from_params({"training": {"epoch": 2}}, SHARED_TRAINING)


def test_unknown_baseline_is_refused_and_switched_off_ones_do_not_run() -> None:
    with pytest.raises(
        ValueError,
        match=r"unknown baseline\(s\) \['random'\]; valid: \['scratch', 'uniform', 'pruned', "
        r"'torch_pruning'\]",
    ):
        DistillationConfig.from_params({"baselines": {"random": True}}, SHARED_TRAINING)
    config = DistillationConfig.from_params(
        {"baselines": {"uniform": False, "pruned": True}}, SHARED_TRAINING
    )
    assert [m for m in MODELS if config.runs(m)] == [
        "student", "scratch", "pruned", "torch_pruning",
    ]  # fmt: skip


# ------------------------------------------------------------------------------ baselines


def budgets_of(teacher: torch.nn.Module, flops: float, params: float) -> dict[str, float]:
    return {
        "flops": flops * count_flops(teacher, CIFAR),
        "params": params * count_params(teacher),
    }


@pytest.mark.parametrize("name", ["resnet20", "vgg11_bn"])
def test_uniform_baseline_is_the_widest_that_fits(name: str) -> None:
    teacher = randomised_teacher(name)
    budgets = budgets_of(teacher, 0.5, 0.2)
    spec = uniform_width_spec(teacher.spec, CIFAR, budgets)
    assert fits_budgets(build_model(spec), CIFAR, budgets)
    wider = {**spec, "width_mult": spec["width_mult"] * 1.02}
    assert not fits_budgets(build_model(wider), CIFAR, budgets)


def test_pruned_baseline_is_the_least_cut_that_fits() -> None:
    teacher = randomised_teacher("resnet20")
    budgets = budgets_of(teacher, 0.5, 0.2)
    torch.manual_seed(0)
    importance = [torch.rand(c) for c, _, _ in partition_model(teacher, CIFAR).interfaces]
    blueprint = pruned_blueprint(teacher, CIFAR, "stage", importance, budgets)
    fraction = blueprint.blocks[0].in_fraction
    assert {b.family for b in blueprint.blocks} == {"pruned"}
    assert fits_budgets(blueprint.build(teacher), CIFAR, budgets)
    less_cut = pruned_blueprint(teacher, CIFAR, "stage", importance, {"flops": 1e18})
    assert less_cut.blocks[0].in_fraction == 1.0  # no budget: nothing is cut
    wider = fraction * 1.02
    keeps = interface_keeps(importance, [1.0, wider])
    choices = [
        BlockChoice(b.block, "pruned", {"ratio": wider}, wider, wider) for b in blueprint.blocks
    ]
    bigger = Blueprint(blueprint.teacher_spec, CIFAR, "stage", keeps, choices)
    assert not fits_budgets(bigger.build(teacher), CIFAR, budgets)


def test_largest_fitting_finds_the_edge_and_refuses_the_impossible() -> None:
    edge = largest_fitting(lambda x: x <= 0.37)
    assert edge <= 0.37 and edge * 1.001 > 0.37
    assert largest_fitting(lambda x: True) == 1.0
    with pytest.raises(ValueError, match="no width fits"):
        largest_fitting(lambda x: False)


# ------------------------------------------------------------------------------ assembled networks


def assembled_network(teacher: torch.nn.Module) -> torch.nn.Sequential:
    """The teacher cut to 0.3x its parameters: an assembled network with narrowed interfaces."""
    torch.manual_seed(0)
    importance = [torch.rand(c) for c, _, _ in partition_model(teacher, CIFAR).interfaces]
    budgets = budgets_of(teacher, 0.5, 0.3)
    return pruned_blueprint(teacher, CIFAR, "stage", importance, budgets).build(teacher)


def test_blueprint_package_round_trip_and_onnx_export_match() -> None:
    teacher = randomised_teacher("resnet20")
    network = assembled_network(teacher)
    images = torch.randn(4, *CIFAR)
    rebuilt = network_from_package(network_package(network))
    with torch.no_grad():
        assert torch.equal(rebuilt(images), network(images))
    session = onnx_session(export_onnx(network, CIFAR))
    assert max_abs_difference(session, network, torch.randn(5, *CIFAR)) < 1e-4
    zoo = network_from_package(network_package(teacher))
    with torch.no_grad():
        assert torch.equal(zoo(images), teacher(images))


def test_an_export_that_differs_from_pytorch_is_refused() -> None:
    torch.manual_seed(0)
    model = build_model({"name": "resnet20", "num_classes": 10, "in_channels": 1}).eval()
    images = torch.randn(4, 1, 8, 8)
    with pytest.raises(ValueError, match="the export is wrong"):
        export_checked(model, images, tolerance=-1.0, repeats=1)  # no difference is below 0


def test_recalibrated_batchnorm_holds_the_statistics_of_the_batches() -> None:
    from compactkd.data import BatchLoader

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4)).eval()
    images = torch.randint(0, 256, (64, 3, 8, 8), dtype=torch.uint8)
    part = {"images": images, "labels": torch.zeros(64, dtype=torch.int64)}
    loader = BatchLoader(part, [0.5] * 3, [0.25] * 3, batch_size=64)
    recalibrate_batchnorm(model, loader, batches=1, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        features = model[0](next(loader.batches())[0])
    assert not model.training
    assert torch.allclose(model[1].running_mean, features.mean(dim=(0, 2, 3)), atol=1e-5)


def test_feature_hints_add_to_the_logit_loss_of_an_assembled_student() -> None:
    teacher = randomised_teacher("resnet20")
    student = assembled_network(teacher)
    images, labels = torch.randn(4, *CIFAR), torch.randint(0, 10, (4,))
    plain, logits = KDObjective(teacher, KDConfig(beta=0.0))(student, images, labels)
    hinted, hinted_logits = KDObjective(teacher, KDConfig(beta=1.0))(student, images, labels)
    assert torch.allclose(logits, hinted_logits)
    assert hinted > plain


def test_fixed_training_images_meet_the_teacher_once() -> None:
    """Without augmentation the teacher's logits are computed once, then looked up: the same
    loss as a teacher pass per step, and no teacher pass on later steps."""
    teacher = randomised_teacher("resnet20")
    student = build_model({"name": "resnet20", "num_classes": 10, "width_mult": 0.5})
    torch.manual_seed(0)
    part = {"images": torch.randint(0, 256, (40, *CIFAR), dtype=torch.uint8),
            "labels": torch.randint(0, 10, (40,))}  # fmt: skip
    fixed = BatchLoader(part, [0.5] * 3, [0.25] * 3, batch_size=16)
    calls = []
    hook = teacher.register_forward_hook(lambda *_: calls.append(1))
    try:
        cached = KDObjective(teacher, KDConfig(), fixed_inputs=fixed)
        generator = torch.Generator().manual_seed(1)
        for step, (images, labels, index) in enumerate(fixed.indexed_batches(generator)):
            fresh, _ = KDObjective(teacher, KDConfig())(student, images, labels)
            looked_up, _ = cached(student, images, labels, index)
            assert torch.allclose(looked_up, fresh, atol=1e-5), step
        assert len(calls) == 3 + len(fixed)  # 3 batches of the cache, then one per fresh step
    finally:
        hook.remove()


def test_difference_interval_uses_welch_degrees_of_freedom() -> None:
    """Two seeds each on four images, worked by hand. Seed-averaged predictions per image:
    a (1, 1, 1/2, 0), b (0, 0, 1/2, 1/2); paired differences (1, 1, 0, -1/2), mean 3/8.
    Variances of the mean difference: paired 0.5625 / 4 = 0.140625; a's seed means
    (3/4, 1/2): 0.03125 / 2 = 0.015625; b's (1/4, 1/4): 0, which drops out.
    Welch-Satterthwaite: 0.15625^2 / (0.140625^2 / 3 + 0.015625^2 / 1) = 3.571..."""
    a = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    b = torch.tensor([[0, 0, 1, 0], [0, 0, 0, 1]])
    result = difference_interval(a, b)
    variance = 0.140625 + 0.015625
    dof = variance**2 / (0.140625**2 / 3 + 0.015625**2 / 1)
    assert dof == pytest.approx(3.5714, abs=1e-4)
    half = 100 * scipy_stats.t.ppf(0.975, dof) * math.sqrt(variance)
    assert result["difference"] == pytest.approx(37.5)
    assert result["ci95"] == pytest.approx([37.5 - half, 37.5 + half])
    assert half > 100 * 1.96 * math.sqrt(variance)  # wider than the normal approximation


def test_difference_interval_widens_with_seed_noise() -> None:
    torch.manual_seed(0)
    a = (torch.rand(3, 500) < 0.8).int()
    b = (torch.rand(3, 500) < 0.6).int()
    result = difference_interval(a, b)
    low, high = result["ci95"]
    assert low < result["difference"] < high and low > 0  # 20 points apart: clearly better
    one_seed = difference_interval(a[:1], b[:1])
    assert one_seed["ci95"][1] - one_seed["ci95"][0] > 0


# ------------------------------------------------------------------------------ evaluation

DIGITS = (1, 8, 8)
FAST = {"latency_rounds": 2, "latency_repeats": 1, "device": "cpu"}


def digits_package(width: float, seed: int) -> dict:
    torch.manual_seed(seed)
    spec = {"name": "resnet20", "num_classes": 10, "in_channels": 1, "width_mult": width}
    return network_package(build_model(spec))


def test_sweep_table_numbers_budgets_from_one() -> None:
    teacher = {"top1": 90.0, "flops": 100.0, "params": 10.0}
    rows = [
        sweep_rows(
            {"teacher": teacher, "student": {"top1": top1, "flops": flops, "params": 2.0}},
            {"budgets": {"flops": budget}, "teacher": {"flops": 100.0, "params": 10.0}},
        )
        for top1, flops, budget in ((85.0, 40.0, 50.0), (80.0, 20.0, 30.0))
    ]
    table = sweep_table(rows)
    assert list(table.columns[:2]) == ["budget", "budget_flops"]
    assert (
        list(table["budget"]) == [1, 1, 2, 2] and list(table["model"]) == ["teacher", "student"] * 2
    )
    assert list(table["budget_flops"]) == [0.5, 0.5, 0.3, 0.3]
    assert list(table["flops_ratio"]) == [1.0, 0.4, 1.0, 0.2]
    assert list(table["top1_std"]) == [0.0] * 4  # one seed: no spread


def test_each_architecture_is_timed_once_interleaved_with_the_teacher(
    digits_splits: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    timed = []

    def fake_rounds(models, input_shape, batch_size=1, *args, **kwargs) -> dict:
        timed.append(sorted(count_params(m) for m in models.values()))
        # Round r slows every model alike (a busy machine): ratios stay exact.
        return {
            key: [batch_size * count_params(m) * (1 + r) for r in range(3)]
            for key, m in models.items()
        }

    monkeypatch.setattr(comparison, "interleaved_latency_ms", fake_rounds)
    teacher = build_model({"name": "resnet20", "num_classes": 10, "in_channels": 1})
    teacher_figures = measure_teacher(teacher, digits_splits, FAST)
    finetuned = [
        {"model": "student", "packages": [digits_package(0.5, 0), digits_package(0.5, 1)]},
        {"model": "scratch", "packages": [digits_package(0.5, 2)]},  # the student's structure
        {"model": "uniform", "packages": [digits_package(0.25, 3)]},
    ]
    spec = {"budgets": {"flops": 1.0}}
    package = network_package(teacher)
    figures = compare(
        teacher_figures, package, finetuned, digits_splits, spec, EvaluationConfig(**FAST)
    )
    architectures = sorted(
        count_params(network_from_package(p))
        for p in (package, *(run["packages"][0] for run in finetuned[::2]))
    )
    assert timed == [architectures, architectures]  # one measurement per batch size, together
    student, scratch = figures["student"], figures["scratch"]
    assert (
        scratch["latency_ms_b32"]
        == student["latency_ms_b32"]
        == 32 * count_params(network_from_package(finetuned[0]["packages"][0])) * 2
    )  # the median round
    assert student["speedup"] == pytest.approx(
        count_params(teacher) / count_params(network_from_package(finetuned[0]["packages"][0]))
    )
    assert student["speedup_iqr"] == pytest.approx(0.0)  # the slow rounds hit both sides
    assert figures["teacher"]["latency_ms_b1"] == 2 * count_params(teacher)
    assert "speedup" not in figures["teacher"]
    assert len(student["top1_seeds"]) == 2 and student["top1_std"] >= 0
    assert student["flops_reduction"] == pytest.approx(teacher_figures["flops"] / student["flops"])
    assert set(student["vs"]) == {"scratch", "uniform"}


def test_interleaved_rounds_time_every_model_in_turn() -> None:
    from compactkd.costs import interleaved_latency_ms

    calls = []

    class Recorder(nn.Module):
        def __init__(self, name: str) -> None:
            super().__init__()
            self.name, self.conv = name, nn.Conv2d(1, 1, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            calls.append(self.name)
            return self.conv(x)

    models = {name: Recorder(name).train() for name in "abc"}
    threads = torch.get_num_threads()
    rounds = interleaved_latency_ms(models, (1, 4, 4), rounds=3, calls=2, warmup=1)
    assert {name: len(r) for name, r in rounds.items()} == dict.fromkeys("abc", 3)
    assert all(ms > 0 for r in rounds.values() for ms in r)
    timed = calls[3:]  # after one warm-up call each
    assert timed == list("aabbcc" + "bbccaa" + "ccaabb")  # the order rotates round by round
    assert all(m.training for m in models.values()) and torch.get_num_threads() == threads


def test_a_switched_off_baseline_yields_no_packages_and_is_not_evaluated(
    digits_splits: dict,
) -> None:
    teacher = build_model({"name": "resnet20", "num_classes": 10, "in_channels": 1})
    params = {"baselines": {"uniform": False}}
    # No spec is needed: a baseline switched off builds and trains nothing.
    finetuned, history, summary = finetune_uniform(
        teacher, digits_splits, {}, params, {"device": "cpu"}, "unused/checkpoints"
    )
    assert finetuned == {"model": "uniform", "packages": []} and history.empty
    assert summary == {"model": "uniform", "skipped": True}
    assert list(gather_summaries({"model": "student", "seconds": 1.0}, summary)["models"]) == [
        "student"
    ]
    student_history = pd.DataFrame({"model": ["student"], "seed": [0]})
    assert gather_histories(student_history, history).equals(student_history)

    student = {"model": "student", "packages": [digits_package(0.5, 0)]}
    teacher_figures = measure_teacher(teacher, digits_splits, FAST)
    spec = {"budgets": {"flops": 1.0}}
    figures = compare(
        teacher_figures,
        network_package(teacher),
        [student, finetuned],
        digits_splits,
        spec,
        EvaluationConfig(**FAST),
    )
    assert list(figures) == ["teacher", "student"] and figures["student"]["vs"] == {}
    table = comparison.comparison_table(figures)
    assert list(table["model"]) == ["teacher", "student"]


# ------------------------------------------------------------------------------ the pipelines

EVERY_MODEL = ("teacher", *MODELS)


@pytest.mark.slow
def test_metrics_json_has_every_model_with_the_agreed_keys(finished_run: Path) -> None:
    metrics = json.loads((finished_run / "data/08_reporting/metrics.json").read_text())
    assert list(metrics) == [*EVERY_MODEL, "provenance"]
    keys = {"top1", "top1_ci95", "top5", "flops", "params", "size_bytes",
            "latency_ms_b1", "latency_ms_b1_iqr", "latency_ms_b32"}  # fmt: skip
    for name in EVERY_MODEL:
        assert keys <= set(metrics[name]), name
        low, high = metrics[name]["top1_ci95"]
        assert low <= metrics[name]["top1"] <= high
        assert metrics[name]["top5"] >= metrics[name]["top1"]
        assert metrics[name]["size_bytes"] > 1000 and metrics[name]["latency_ms_b32"] > 0
    for name in MODELS:
        figures = metrics[name]
        assert figures["flops_reduction"] == pytest.approx(
            metrics["teacher"]["flops"] / figures["flops"]
        )
        assert figures["params_reduction"] >= 5 * 0.999  # the params budget is 0.2
        assert figures["speedup"] > 0 and figures["speedup_iqr"] >= 0 and len(figures) > len(keys)
        assert figures["top1_std"] >= 0  # two seeds
    # scratch has the student's architecture: its latency is the student's, measured once
    for key in ("latency_ms_b1", "latency_ms_b32"):
        assert metrics["scratch"][key] == metrics["student"][key]
    assert metrics["student"]["onnx_max_abs_diff"] < 1e-4
    assert metrics["student"]["onnx_latency_ms_b1"] > 0
    assert set(metrics["student"]["vs"]) == set(MODELS) - {"student"}
    assert (finished_run / "data/06_models/student.onnx").stat().st_size > 1000
    comparison_csv = pd.read_csv(finished_run / "data/08_reporting/comparison.csv")
    assert list(comparison_csv["model"]) == list(EVERY_MODEL)
    evaluation = json.loads((finished_run / "data/08_reporting/evaluation.json").read_text())
    confusion = evaluation["student"]["confusion"]
    assert len(confusion) == 10 and sum(map(sum, confusion)) == 360  # digits' test split
    # The teacher's accuracy is measured once for every budget; its latency is timed with
    # each budget's models, interleaved (what their speed-ups divide).
    teacher = json.loads((finished_run / "data/08_reporting/teacher_evaluation.json").read_text())
    second = finished_run / "data/08_reporting/sweep/budget_2/evaluation.json"
    for figures in (evaluation["teacher"], json.loads(second.read_text())["teacher"]):
        timing = {k for k in figures if k.startswith("latency_ms_")}
        assert timing == {"latency_ms_b1", "latency_ms_b1_iqr", "latency_ms_b32",
                          "latency_ms_b32_iqr"}  # fmt: skip
        assert {k: v for k, v in figures.items() if k not in timing} == teacher


@pytest.mark.slow
def test_every_model_has_its_own_finetuned_file_with_one_package_per_seed(
    finished_run: Path,
) -> None:
    seeds = TINY_RUN["distillation"]["seeds"]
    for folder in ("data/06_models/finetuned", "data/06_models/sweep/budget_2/finetuned"):
        for model in MODELS:
            path = finished_run / folder / f"{model}.pt"
            finetuned = TensorDictDataset(filepath=str(path)).load()
            assert finetuned["model"] == model and len(finetuned["packages"]) == seeds
            first, second = (network_from_package(p) for p in finetuned["packages"])
            assert count_params(first) == count_params(second)  # one architecture, two seeds
    assert not (finished_run / "data/06_models/finetuned.pt").exists()
    student = TensorDictDataset(filepath=str(finished_run / "data/06_models/student.pt")).load()
    finetuned = TensorDictDataset(
        filepath=str(finished_run / "data/06_models/finetuned/student.pt")
    ).load()
    assert all(  # student.pt is the first seed's student
        torch.equal(v, finetuned["packages"][0]["state_dict"][k])
        for k, v in student["state_dict"].items()
    )
    summary = json.loads((finished_run / "data/08_reporting/distillation_summary.json").read_text())
    assert list(summary["models"]) == list(MODELS) and summary["processes"] == 1
    assert 0 < summary["models"]["uniform"]["width_mult"] < 1
    assert 0 < summary["models"]["pruned"]["kept_fraction"] < 1
    assert 0 < summary["models"]["torch_pruning"]["pruning_ratio"] < 1
    assert set(summary["models"]["student"]["recalibration"]) == {
        "val_top1_before",
        "val_top1_after",
    }
    for model in MODELS:
        own = finished_run / f"data/08_reporting/finetune/{model}_summary.json"
        assert json.loads(own.read_text()) == summary["models"][model]


@pytest.mark.slow
def test_assembled_student_costs_what_its_spec_predicts(finished_run: Path) -> None:
    project = finished_run
    spec = json.loads((project / "data/07_model_output/student_spec.json").read_text())
    teacher = load_model(project / "data/06_models/teacher.pt")
    weights = TensorDictDataset(
        filepath=str(project / "data/06_models/candidate_weights.pt")
    ).load()
    table = pd.read_csv(project / "data/07_model_output/candidates.csv")
    student = assemble_student(teacher, DIGITS, spec, table, weights)
    assert count_flops(student, DIGITS) == spec["predicted"]["flops"]
    assert count_params(student) == spec["predicted"]["params"]
    first = weights["weights"][spec["blocks"]["block_1"]["candidate"]]
    assert all(torch.equal(v, student[1].state_dict()[k]) for k, v in first.items())
    # The saved student is that network, fine-tuned: same structure, other weights.
    saved = network_from_package(
        TensorDictDataset(filepath=str(project / "data/06_models/student.pt")).load()
    )
    assert count_params(saved) == spec["predicted"]["params"]
    metrics = json.loads((project / "data/08_reporting/metrics.json").read_text())
    assert metrics["student"]["flops"] == spec["predicted"]["flops"]
    # The block search checks this of every student it chooses, and refuses a miscount.
    splits = TensorDictDataset(filepath=str(project / "data/05_model_input/splits.pt")).load()
    check = check_assembled(teacher, spec, table, weights, splits)
    assert 0 <= check["assembled_val_top1"] <= 100 and check["spec"] == spec
    wrong = {**spec, "predicted": {**spec["predicted"], "params": spec["predicted"]["params"] + 1}}
    with pytest.raises(ValueError, match="a part's cost is miscounted"):
        check_assembled(teacher, wrong, table, weights, splits)


@pytest.mark.slow
def test_sweep_covers_every_budget_and_history_every_run(finished_run: Path) -> None:
    sweep = pd.read_csv(finished_run / "data/08_reporting/sweep.csv")
    assert sorted(sweep["budget"].unique()) == [1, 2]
    assert set(sweep["model"]) == set(EVERY_MODEL)
    assert set(sweep["budget_flops"]) == {b["flops"] for b in TINY_RUN["block_search"]["budgets"]}
    for _, row in sweep[sweep["model"] != "teacher"].iterrows():
        assert row["flops_ratio"] <= row["budget_flops"] + 1e-9
        assert row["params_ratio"] <= row["budget_params"] + 1e-9
    history = pd.read_csv(finished_run / "data/08_reporting/student_history.csv")
    assert set(zip(history["model"], history["seed"], strict=True)) == {
        (m, s) for m in MODELS for s in (0, 1)
    }


@pytest.mark.slow
def test_rerun_resumes_every_finetune_from_its_checkpoint(finished_run: Path) -> None:
    history = pd.read_csv(finished_run / "data/08_reporting/student_history.csv")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(finished_run)
        run_session(finished_run, ["distillation"], TINY_RUN)
    again = pd.read_csv(finished_run / "data/08_reporting/student_history.csv")
    pd.testing.assert_frame_equal(again.drop(columns="seconds"), history.drop(columns="seconds"))
    assert again["seconds"].equals(history["seconds"])  # restored, not retrained


@pytest.mark.slow
def test_bad_distillation_settings_fail_before_training(finished_run: Path) -> None:
    distillation = {**TINY_RUN["distillation"], "baselines": {"random": True}}
    bad = {**TINY_RUN, "distillation": distillation}
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(finished_run)
        with pytest.raises(Exception, match=r"unknown baseline\(s\) \['random'\]"):
            run_session(finished_run, ["distillation"], bad)


@pytest.mark.slow
def test_a_switched_off_baseline_is_left_out_of_a_whole_run(
    finished_run: Path, tmp_path: Path
) -> None:
    project = shutil.copytree(finished_run, tmp_path / "project")  # finished_run stays as is
    distillation = {**TINY_RUN["distillation"], "baselines": {"uniform": False}}
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(project)
        run_session(project, ["distillation", "evaluation", "reporting"],
                    {**TINY_RUN, "distillation": distillation})  # fmt: skip
    uniform = TensorDictDataset(filepath=str(project / "data/06_models/finetuned/uniform.pt"))
    assert uniform.load() == {"model": "uniform", "packages": []}
    metrics = json.loads((project / "data/08_reporting/metrics.json").read_text())
    models = [name for name in metrics if name != "provenance"]
    assert models == ["teacher", "student", "scratch", "pruned", "torch_pruning"]
    assert set(metrics["student"]["vs"]) == {"scratch", "pruned", "torch_pruning"}
    sweep = pd.read_csv(project / "data/08_reporting/sweep.csv")
    assert "uniform" not in set(sweep["model"]) and set(sweep["budget"]) == {1, 2}
    history = pd.read_csv(project / "data/08_reporting/student_history.csv")
    assert set(history["model"]) == {"student", "scratch", "pruned", "torch_pruning"}
    summary = json.loads((project / "data/08_reporting/distillation_summary.json").read_text())
    assert list(summary["models"]) == ["student", "scratch", "pruned", "torch_pruning"]


def test_two_copies_of_one_architecture_time_alike_interleaved() -> None:
    """The figures that two copies of one network get, timed interleaved, agree within 10%
    (timed one after the other they once differed twofold)."""
    from compactkd.costs import interleaved_latency_ms

    copies = {name: randomised_teacher("resnet20") for name in ("a", "b")}
    copies["b"] = build_model({"name": "resnet20", "num_classes": 10})  # other weights
    rounds = interleaved_latency_ms(copies, CIFAR, rounds=20, calls=5)
    a, b = (sorted(rounds[name])[len(rounds[name]) // 2] for name in ("a", "b"))
    assert abs(a - b) / min(a, b) < 0.10, (rounds["a"], rounds["b"])
