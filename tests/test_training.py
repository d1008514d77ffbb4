"""The trainer: it learns, it resumes exactly, it refuses bad settings."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import compactkd.training as training
from compactkd.models import build_model
from compactkd.training import TrainConfig, config_from_params, train

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
        ({"learning_rate": 0.1}, "unknown training parameter"),
        ({"mixed_precision": "fp16"}, "mixed_precision"),
    ],
)
def test_bad_training_parameters_are_refused(params: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        config_from_params(TrainConfig, params)


def test_mixed_precision_is_bf16_only_where_asked_or_supported() -> None:
    layer, x = torch.nn.Linear(4, 2), torch.randn(3, 4)
    cpu = torch.device("cpu")
    with training.autocast("bf16", cpu):
        assert layer(x).dtype == torch.bfloat16
    for precision in ("auto", "off"):  # auto means bf16 on CUDA only
        with training.autocast(precision, cpu):
            assert layer(x).dtype == torch.float32
