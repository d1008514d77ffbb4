"""Distillation, baselines, evaluation, export and the budget sweep (METHOD §6-§7)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from conftest import TINY_RUN as TINY
from conftest import randomised_teacher, run_session

from compactkd.baselines import fits_budgets, largest_fitting, pruned_blueprint, uniform_width_spec
from compactkd.blocks.assembly import BlockChoice, Blueprint
from compactkd.blocks.candidates import interface_keeps
from compactkd.blocks.partition import partition_model
from compactkd.costs import count_flops, count_params
from compactkd.datasets import TensorDictDataset
from compactkd.distillation import KDConfig, KDObjective, recalibrate_batchnorm
from compactkd.evaluation import difference_interval
from compactkd.export import export_onnx, max_abs_difference, onnx_session
from compactkd.losses import kd_loss
from compactkd.model_files import load_model, network_from_package, network_package
from compactkd.models import build_model
from compactkd.pipelines.distillation.nodes import _student
from compactkd.search.pool import student_blueprint

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


def test_difference_interval_widens_with_seed_noise() -> None:
    torch.manual_seed(0)
    a = (torch.rand(3, 500) < 0.8).int()
    b = (torch.rand(3, 500) < 0.6).int()
    result = difference_interval(a, b)
    low, high = result["ci95"]
    assert low < result["difference"] < high and low > 0  # 20 points apart: clearly better
    one_seed = difference_interval(a[:1], b[:1])
    assert one_seed["ci95"][1] - one_seed["ci95"][0] > 0


# ------------------------------------------------------------------------------ the pipelines

MODELS = ("teacher", "student", "scratch", "uniform", "pruned")


@pytest.mark.slow
def test_metrics_json_has_every_model_with_the_agreed_keys(finished_run: Path) -> None:
    metrics = json.loads((finished_run / "data/08_reporting/metrics.json").read_text())
    assert list(metrics) == list(MODELS)
    keys = {"top1", "top1_ci95", "top5", "flops", "params", "size_bytes",
            "latency_ms_b1", "latency_ms_b32"}  # fmt: skip
    for name in MODELS:
        assert keys <= set(metrics[name]), name
        low, high = metrics[name]["top1_ci95"]
        assert low <= metrics[name]["top1"] <= high
        assert metrics[name]["top5"] >= metrics[name]["top1"]
        assert metrics[name]["size_bytes"] > 1000 and metrics[name]["latency_ms_b32"] > 0
    for name in MODELS[1:]:
        figures = metrics[name]
        assert figures["flops_reduction"] == pytest.approx(
            metrics["teacher"]["flops"] / figures["flops"]
        )
        assert figures["params_reduction"] >= 5 * 0.999  # the params budget is 0.2
        assert figures["speedup"] > 0 and len(figures) > len(keys)
        assert figures["top1_std"] >= 0  # two seeds
    assert metrics["student"]["onnx_max_abs_diff"] < 1e-4
    assert metrics["student"]["onnx_latency_ms_b1"] > 0
    assert set(metrics["student"]["vs"]) == {"scratch", "uniform", "pruned"}
    assert (finished_run / "data/06_models/student.onnx").stat().st_size > 1000
    comparison = pd.read_csv(finished_run / "data/08_reporting/comparison.csv")
    assert list(comparison["model"]) == list(MODELS)
    evaluation = json.loads((finished_run / "data/08_reporting/evaluation.json").read_text())
    confusion = evaluation["student"]["confusion"]
    assert len(confusion) == 10 and sum(map(sum, confusion)) == 360  # digits' test split


@pytest.mark.slow
def test_assembled_student_costs_what_its_spec_predicts(finished_run: Path) -> None:
    project = finished_run
    spec = json.loads((project / "data/07_model_output/student_spec.json").read_text())
    teacher = load_model(project / "data/06_models/teacher.pt")
    weights = TensorDictDataset(
        filepath=str(project / "data/06_models/candidate_weights.pt")
    ).load()
    table = pd.read_csv(project / "data/07_model_output/candidates.csv")
    blueprint = student_blueprint(teacher.spec, (1, 8, 8), "stage", weights["keeps"], spec, table)
    student = _student(teacher, blueprint, weights["weights"], spec)
    assert count_flops(student, (1, 8, 8)) == spec["predicted"]["flops"]
    assert count_params(student) == spec["predicted"]["params"]
    # The saved student is that network, fine-tuned: same structure, other weights.
    saved = network_from_package(
        TensorDictDataset(filepath=str(project / "data/06_models/student.pt")).load()
    )
    assert count_params(saved) == spec["predicted"]["params"]
    metrics = json.loads((project / "data/08_reporting/metrics.json").read_text())
    assert metrics["student"]["flops"] == spec["predicted"]["flops"]


@pytest.mark.slow
def test_sweep_covers_every_budget_and_history_every_run(finished_run: Path) -> None:
    sweep = pd.read_csv(finished_run / "data/08_reporting/sweep.csv")
    assert sorted(sweep["budget"].unique()) == [1, 2]
    assert set(sweep["model"]) == set(MODELS)
    assert set(sweep["budget_flops"]) == {0.5, 0.3}
    for _, row in sweep[sweep["model"] != "teacher"].iterrows():
        assert row["flops_ratio"] <= row["budget_flops"] + 1e-9
        assert row["params_ratio"] <= row["budget_params"] + 1e-9
    history = pd.read_csv(finished_run / "data/08_reporting/student_history.csv")
    assert set(zip(history["model"], history["seed"], strict=True)) == {
        (m, s) for m in MODELS[1:] for s in (0, 1)
    }


@pytest.mark.slow
def test_rerun_resumes_every_finetune_from_its_checkpoint(finished_run: Path) -> None:
    history = pd.read_csv(finished_run / "data/08_reporting/student_history.csv")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(finished_run)
        run_session(finished_run, ["distillation"], TINY)
    again = pd.read_csv(finished_run / "data/08_reporting/student_history.csv")
    pd.testing.assert_frame_equal(again.drop(columns="seconds"), history.drop(columns="seconds"))
    assert again["seconds"].equals(history["seconds"])  # restored, not retrained


@pytest.mark.slow
def test_bad_distillation_settings_fail_before_training(finished_run: Path) -> None:
    bad = {**TINY, "distillation": {**TINY["distillation"], "baselines": {"random": True}}}
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(finished_run)
        with pytest.raises(Exception, match=r"unknown baseline\(s\) \['random'\]"):
            run_session(finished_run, ["distillation"], bad)
