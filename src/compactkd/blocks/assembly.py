"""Networks assembled from a teacher's parts: the student, and the pruned-teacher baseline.

An assembled network is ``narrowed stem -> one module per block -> narrowed head``. Its
:class:`Blueprint` is plain data (the teacher's spec, the kept interface channels and one
:class:`BlockChoice` per block), so it can be saved beside the weights and rebuilt anywhere,
with or without the trained teacher at hand.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from compactkd.blocks.candidates import make_candidate_module
from compactkd.blocks.partition import narrow_head, narrow_stem, partition_model
from compactkd.models import build_model


@dataclass(frozen=True)
class BlockChoice:
    """The module chosen for one block: a candidate family, its settings, its interface widths."""

    block: str
    family: str
    params: Mapping[str, Any]
    in_fraction: float
    out_fraction: float


@dataclass
class Blueprint:
    """Everything that defines an assembled network except its weights."""

    teacher_spec: dict[str, Any]
    input_shape: tuple[int, int, int]
    granularity: str
    keeps: list[dict[float, torch.Tensor]]  # per interface: kept channel indices by fraction
    blocks: list[BlockChoice]
    head_width: float = 1.0  # kept fraction of the head's inner conv outputs (MobileNetV2)

    def build(self, teacher: nn.Module | None = None) -> nn.Sequential:
        """The network, with the teacher's weights where a part inherits them.

        Without ``teacher`` an untrained one of the same spec is used: right when the
        weights are loaded afterwards. The teacher is left as it was.
        """
        teacher = teacher if teacher is not None else build_model(self.teacher_spec)
        was_training = teacher.training
        partition = partition_model(teacher.eval(), self.input_shape, self.granularity)
        if [choice.block for choice in self.blocks] != partition.block_names:
            raise ValueError(f"a blueprint needs one choice per block, in order: "
                             f"{partition.block_names}")  # fmt: skip
        stem = narrow_stem(partition.stem, self.keeps[0][self.blocks[0].in_fraction])
        blocks = [
            make_candidate_module(
                partition,
                index,
                choice.family,
                choice.params,
                self.keeps[index][choice.in_fraction],
                self.keeps[index + 1][choice.out_fraction],
            )
            for index, choice in enumerate(self.blocks)
        ]
        head = narrow_head(
            partition.head, self.keeps[-1][self.blocks[-1].out_fraction], self.head_width
        )
        teacher.train(was_training)
        network = copy.deepcopy(nn.Sequential(stem, *blocks, head)).requires_grad_(True)
        network.blueprint = self
        return network.eval()

    def to_dict(self) -> dict[str, Any]:
        return {
            "teacher_spec": dict(self.teacher_spec),
            "input_shape": list(self.input_shape),
            "granularity": self.granularity,
            "keeps": [dict(k) for k in self.keeps],
            "blocks": [
                asdict(choice) | {"params": json.dumps(choice.params)} for choice in self.blocks
            ],
            "head_width": self.head_width,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Blueprint:
        return cls(
            teacher_spec=dict(data["teacher_spec"]),
            input_shape=tuple(data["input_shape"]),
            granularity=data["granularity"],
            keeps=[dict(k) for k in data["keeps"]],
            blocks=[
                BlockChoice(**{**choice, "params": json.loads(choice["params"])})
                for choice in data["blocks"]
            ],
            head_width=float(data.get("head_width", 1.0)),  # files from before head widths
        )
