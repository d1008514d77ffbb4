"""The trainer: it learns, it resumes exactly, it refuses bad settings."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

import compactkd.training as training
from compactkd.config import config_from_params
from compactkd.models import build_model
from compactkd.training import TrainConfig, optimizer_with_cosine, train

SMALL = TrainConfig(epochs=3, batch_size=64, lr=0.05, seed=1, device="cpu")


def fresh_model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model({"name": "resnet20", "num_classes": 10, "in_channels": 1})


def test_short_training_lowers_the_loss(digits_splits: dict) -> None:
    _, history = train(fresh_model(), digits_splits, SMALL)
    assert list(history["epoch"]) == [1, 2, 3]
    assert history["train_loss"].iloc[-1] < 0.6 * history["train_loss"].iloc[0]
    assert history["val_accuracy"].iloc[-1] > 50  # chance is 10%
    assert history["lr"].iloc[0] == SMALL.lr > history["lr"].iloc[-1]  # cosine decay


def test_interrupted_run_resumes_to_the_same_weights(
    digits_splits: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reference, reference_history = train(fresh_model(), digits_splits, SMALL)

    one_epoch = training._train_one_epoch
    calls = []

    def interrupt_in_second_epoch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return one_epoch(*args, **kwargs)

    checkpoint = tmp_path / "run.ckpt"
    monkeypatch.setattr(training, "_train_one_epoch", interrupt_in_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        train(fresh_model(), digits_splits, SMALL, checkpoint_path=checkpoint)
    assert checkpoint.is_file() and not list(tmp_path.glob(".*tmp"))

    epochs_run = []

    def count_epochs(*args, **kwargs):
        epochs_run.append(1)
        return one_epoch(*args, **kwargs)

    monkeypatch.setattr(training, "_train_one_epoch", count_epochs)
    resumed, history = train(fresh_model(), digits_splits, SMALL, checkpoint_path=checkpoint)
    assert len(epochs_run) == 2  # epochs 2 and 3 ran; epoch 1 came from the checkpoint
    for key, value in reference.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key
    columns = ["epoch", "train_loss", "val_accuracy", "lr"]
    assert history[columns].equals(reference_history[columns])


def test_checkpoint_of_another_run_is_not_resumed(digits_splits: dict, tmp_path: Path) -> None:
    checkpoint = tmp_path / "run.ckpt"
    one_epoch = TrainConfig(epochs=1, batch_size=64, lr=0.05, device="cpu")
    train(fresh_model(), digits_splits, one_epoch, checkpoint_path=checkpoint)
    other = TrainConfig(epochs=2, batch_size=64, lr=0.02, device="cpu")
    _, history = train(fresh_model(), digits_splits, other, checkpoint_path=checkpoint)
    assert list(history["epoch"]) == [1, 2]  # started afresh: both epochs ran now
    assert history["lr"].iloc[0] == 0.02


def test_a_finished_run_is_not_trained_again(
    digits_splits: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    checkpoint = tmp_path / "run.ckpt"
    config = TrainConfig(epochs=1, batch_size=64, device="cpu")
    first, _ = train(fresh_model(), digits_splits, config, checkpoint_path=checkpoint)

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run trained again")

    monkeypatch.setattr(training, "_train_one_epoch", no_training)
    second, history = train(fresh_model(), digits_splits, config, checkpoint_path=checkpoint)
    assert len(history) == 1
    assert all(torch.equal(v, second.state_dict()[k]) for k, v in first.state_dict().items())


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"epochs": 0}, "positive"),
        ({"lr": -1.0}, "lr"),
        ({"label_smoothing": 1.0}, "label_smoothing"),
        ({"learning_rate": 0.1}, r"unknown training setting\(s\) \['learning_rate'\]"),
        ({"mixed_precision": "fp16"}, "mixed_precision"),
        ({"optimizer": "lion"}, "optimizer must be one of"),
    ],
)
def test_bad_training_parameters_are_refused(params: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        config_from_params(TrainConfig, params, "training")


def conf_block(stage: str) -> dict:
    conf = Path(__file__).parents[1] / "conf" / "base" / f"parameters_{stage}.yml"
    return yaml.safe_load(conf.read_text())[stage]


def test_a_stage_overrides_keys_of_the_shared_training_block() -> None:
    shared = conf_block("training")
    teacher = TrainConfig.from_params(shared, conf_block("teacher")["training"], "teacher.training")
    assert teacher.epochs == 15 and teacher.lr == shared["lr"] == 0.1
    finetune = TrainConfig.from_params(
        shared, conf_block("distillation")["training"], "distillation.training"
    )
    assert finetune.epochs == 8  # its own
    assert (finetune.batch_size, finetune.optimizer, finetune.device) == (128, "sgd", "auto")
    assert TrainConfig.from_params({"epochs": 3}, None, "teacher.training").epochs == 3
    override = TrainConfig.from_params(shared, {"lr": 0.05, "optimizer": "adam"}, "t.training")
    assert (override.lr, override.optimizer, override.epochs) == (0.05, "adam", 15)
    with pytest.raises(ValueError, match=r"unknown teacher.training setting\(s\) \['epoch'\]"):
        TrainConfig.from_params(shared, {"epoch": 3}, "teacher.training")


def test_optimizer_with_cosine_builds_the_optimiser_named() -> None:
    model = torch.nn.Linear(3, 2)
    sgd, schedule = optimizer_with_cosine(model.parameters(), SMALL, steps=4)
    assert isinstance(sgd, torch.optim.SGD)
    assert sgd.defaults["nesterov"] and sgd.defaults["momentum"] == SMALL.momentum
    for _ in range(4):
        sgd.step()
        schedule.step()
    assert schedule.get_last_lr()[0] == pytest.approx(0.0, abs=1e-12)  # cosine down to zero
    plain = TrainConfig(momentum=0.0, nesterov=True)  # Nesterov needs momentum
    assert not optimizer_with_cosine(model.parameters(), plain, 1)[0].defaults["nesterov"]
    adam_config = TrainConfig(optimizer="adam", lr=0.01, weight_decay=0.0)
    adam, _ = optimizer_with_cosine(model.parameters(), adam_config, steps=4)
    assert isinstance(adam, torch.optim.Adam) and adam.defaults["lr"] == 0.01


def test_mixed_precision_is_bf16_only_where_asked_or_supported() -> None:
    layer, x = torch.nn.Linear(4, 2), torch.randn(3, 4)
    cpu = torch.device("cpu")
    with training.autocast("bf16", cpu):
        assert layer(x).dtype == torch.bfloat16
    for precision in ("auto", "off"):  # auto means bf16 on CUDA only
        with training.autocast(precision, cpu):
            assert layer(x).dtype == torch.float32


def test_channels_last_trains_the_same_network_and_hands_it_back_in_the_default_layout(
    digits_splits: dict,
) -> None:
    """The layout is a speed setting: the same steps give the same weights up to rounding,
    and the trained model comes back with ordinary (NCHW-contiguous) weights either way."""
    one_epoch = {**SMALL.__dict__, "epochs": 1}
    seen_layouts = []

    def objective(model, images, labels, index):  # noqa: ANN001, ANN202
        # A 3x3 conv with many inputs: one whose two layouts differ.
        conv = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)][-2]
        seen_layouts.append(not conv.weight.is_contiguous())
        return training.cross_entropy_objective()(model, images, labels, index)

    results = {}
    for channels_last in (True, False):
        config = TrainConfig(**{**one_epoch, "channels_last": channels_last})
        model, _ = train(fresh_model(), digits_splits, config, objective)
        assert all(p.is_contiguous() for p in model.parameters())
        results[channels_last] = model.state_dict()
        assert seen_layouts[-1] is channels_last
    for name, value in results[True].items():
        torch.testing.assert_close(value, results[False][name], rtol=1e-3, atol=1e-3)
