"""ONNX export of a trained network, checked against PyTorch and timed with onnxruntime."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import onnxruntime
import torch
from torch import nn

from compactkd.costs import median_milliseconds

INPUT_NAME, OUTPUT_NAME = "images", "logits"


def export_onnx(model: nn.Module, input_shape: Sequence[int]) -> bytes:
    """The model as a serialised ONNX graph with a dynamic batch dimension."""
    model = model.cpu().eval()
    example = torch.zeros(2, *input_shape)
    batch = torch.export.Dim("batch", min=1)
    program = torch.onnx.export(
        model,
        (example,),
        input_names=[INPUT_NAME],
        output_names=[OUTPUT_NAME],
        dynamic_shapes=({0: batch},),
        dynamo=True,
        verbose=False,
    )
    return program.model_proto.SerializeToString()


def onnx_session(onnx_model: bytes, threads: int = 1) -> onnxruntime.InferenceSession:
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(onnx_model, options, providers=["CPUExecutionProvider"])


def max_abs_difference(
    session: onnxruntime.InferenceSession, model: nn.Module, images: torch.Tensor
) -> float:
    """Largest absolute difference between onnxruntime's and PyTorch's logits on ``images``."""
    with torch.inference_mode():
        expected = model.cpu().eval()(images.cpu()).numpy()
    (actual,) = session.run([OUTPUT_NAME], {INPUT_NAME: images.cpu().numpy()})
    return float(np.abs(actual - expected).max())


def onnx_latency_ms(
    session: onnxruntime.InferenceSession,
    input_shape: Sequence[int],
    batch_size: int = 1,
    warmup: int = 5,
    repeats: int = 20,
) -> float:
    """Median wall time of one onnxruntime run, in milliseconds (as ``measure_latency_ms``)."""
    images = np.random.default_rng(0).standard_normal((batch_size, *input_shape), np.float32)
    return median_milliseconds(
        lambda: session.run([OUTPUT_NAME], {INPUT_NAME: images}), warmup, repeats
    )


def export_checked(
    model: nn.Module,
    images: torch.Tensor,
    tolerance: float,
    threads: int = 1,
    repeats: int = 20,
) -> tuple[bytes, dict[str, Any]]:
    """``model`` as ONNX, refused when onnxruntime's logits on ``images`` differ from
    PyTorch's by more than ``tolerance``; with its size and onnxruntime latency."""
    shape = tuple(images.shape[1:])
    onnx_model = export_onnx(model, shape)
    session = onnx_session(onnx_model, threads)
    difference = max_abs_difference(session, model, images)
    if difference > tolerance:
        raise ValueError(
            f"the ONNX student's logits differ from PyTorch's by {difference:.2e} "
            f"(tolerance {tolerance:.0e}): the export is wrong"
        )
    latency = {
        f"onnx_latency_ms_b{batch}": onnx_latency_ms(session, shape, batch, repeats=repeats)
        for batch in (1, 32)
    }
    return onnx_model, {
        "onnx_max_abs_diff": difference,
        "onnx_size_bytes": len(onnx_model),
    } | latency
