"""What a model costs: FLOPs per image, parameters and latency, measured on the real module.

One cost function serves the teacher, the block search, evaluation and the report.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_flops(model: nn.Module, input_shape: Sequence[int]) -> int:
    """FLOPs of one forward pass on one image of ``input_shape`` (C, H, W).

    ``torch.utils.flop_counter`` counts a multiply-add as 2 FLOPs and covers
    convolutions, matmuls and their relatives; elementwise ops are not counted.
    """
    was_training = model.training
    model.eval()
    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(torch.zeros(1, *input_shape, device=device))
    finally:
        model.train(was_training)
    return int(counter.get_total_flops())


def count_params(model: nn.Module) -> int:
    """Number of trainable and frozen parameters (buffers such as BN statistics excluded)."""
    return sum(p.numel() for p in model.parameters())


def module_costs(
    module: nn.Module, input_shape: Sequence[int], latency: bool = False
) -> dict[str, float]:
    """FLOPs and parameters of a part (and its batch-1 latency when asked)."""
    costs = {
        "flops": float(count_flops(module, input_shape)),
        "params": float(count_params(module)),
    }
    if latency:
        costs["latency"] = measure_latency_ms(module, input_shape)
    return costs


def measure_latency_ms(
    model: nn.Module,
    input_shape: Sequence[int],
    batch_size: int = 1,
    threads: int = 1,
    warmup: int = 5,
    repeats: int = 20,
) -> float:
    """Median wall time of one forward pass on this machine, in milliseconds.

    The thread count is fixed for the measurement (and restored after), so figures
    compare across models; the median of ``repeats`` timed runs after ``warmup``
    untimed ones keeps one slow run from moving the result.
    """
    # One model, one round: the interleaved measurement reduced to a plain one.
    rounds = interleaved_latency_ms({"model": model}, input_shape, batch_size, threads, 1,
                                    repeats, warmup)  # fmt: skip
    return rounds["model"][0]


def interleaved_latency_ms(
    models: Mapping[str, nn.Module],
    input_shape: Sequence[int],
    batch_size: int = 1,
    threads: int = 1,
    rounds: int = 10,
    calls: int = 5,
    warmup: int = 3,
) -> dict[str, list[float]]:
    """Each model's median milliseconds per forward pass, one figure per round.

    A round times every model in turn (``calls`` passes each, the order rotated from round
    to round), so whatever else the machine does meanwhile falls on all models alike:
    timed one after the other, two copies of one network measured 2.67 and 1.35 ms.
    """
    names = list(models)
    forwards = {name: _forward(models[name], input_shape, batch_size) for name in names}
    previous_threads = torch.get_num_threads()
    modes = {name: models[name].training for name in names}
    torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            for name in names:
                models[name].eval()
                for _ in range(warmup):
                    forwards[name]()
            per_round: dict[str, list[float]] = {name: [] for name in names}
            for round_index in range(rounds):
                shift = round_index % len(names)
                for name in names[shift:] + names[:shift]:
                    per_round[name].append(median_milliseconds(forwards[name], 0, calls))
            return per_round
    finally:
        torch.set_num_threads(previous_threads)
        for name, training in modes.items():
            models[name].train(training)


def _forward(model: nn.Module, input_shape: Sequence[int], batch_size: int) -> Callable[[], None]:
    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    images = torch.randn(batch_size, *input_shape, device=device)

    def forward() -> None:
        model(images)
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    return forward


def median_milliseconds(run: Callable[[], object], warmup: int = 5, repeats: int = 20) -> float:
    """Median wall time of ``run()`` over ``repeats`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        run()
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        timings.append(time.perf_counter() - started)
    return 1000.0 * statistics.median(timings)
