"""The block search's settings (``conf/base/parameters_block_search.yml``) as one dataclass."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from compactkd.search.blockwise import BlockTrainConfig
from compactkd.search.select import budget_list

SCORES = ("nmse", "kept_nmse", "weighted_nmse", "plugin_drop", "predicted_accuracy")


@dataclass(frozen=True)
class PredictorConfig:
    """How ``score: predicted_accuracy`` learns what accuracy a structure reaches
    (:mod:`compactkd.search.predictor`)."""

    samples: int = 24  # budget-feasible structures assembled and measured
    noise: float = 1.0  # spread (log scale) of the score perturbation that draws them
    ridge: float = 1.0  # L2 penalty of the linear fit, on standardised features
    recalibration_batches: int = 10  # BatchNorm re-estimation before measuring
    finetune_batches: int = 0  # KD steps before measuring (0: BatchNorm recalibration only)
    batch_size: int = 128
    seed: int = 0

    def __post_init__(self) -> None:
        if self.samples < 4:
            raise ValueError("block_search.predictor.samples must be at least 4 (a fit and "
                             "a ranking held out from it need them)")  # fmt: skip
        if self.noise < 0 or self.ridge <= 0 or self.finetune_batches < 0:
            raise ValueError("block_search.predictor: noise and finetune_batches must be >= 0, "
                             "ridge > 0")  # fmt: skip
        if self.recalibration_batches < 1 or self.batch_size < 1:
            raise ValueError("block_search.predictor: recalibration_batches and batch_size "
                             "must be at least 1")  # fmt: skip


@dataclass(frozen=True)
class BlockSearchConfig:
    """What the search may choose from, how candidates train, and what the choice minimises."""

    budgets: Any  # one budget mapping, or a list of them (a sweep; the first is the student's)
    training: BlockTrainConfig = field(default_factory=BlockTrainConfig)
    granularity: str = "stage"  # ResNets: one block per stage, or per residual "unit"
    interface_fractions: Sequence[float] = (1.0,)
    # Kept fractions of the head's inner width (MobileNetV2's last 1x1 conv outputs).
    head_widths: Sequence[float] = (1.0,)
    space: Mapping[str, Any] = field(default_factory=lambda: {"teacher": {}})
    blocks: Mapping[str, Any] = field(default_factory=dict)  # per-block spaces or families
    pin: Mapping[str, str] = field(default_factory=dict)
    score: str = "nmse"
    predictor: PredictorConfig = field(default_factory=PredictorConfig)
    block_weights: Mapping[str, float] = field(default_factory=dict)
    plugin_drop: bool = False  # measure plug-in drops even when they are not the score
    latency: bool = False  # measure every candidate's latency (needed for a latency budget)
    # Add each budget's uniform cut (the `pruned` baseline's structure) to the space.
    uniform_cuts: bool = False
    importance_samples: int = 1024

    def __post_init__(self) -> None:
        if self.score not in SCORES:
            raise ValueError(f"block_search.score must be one of {SCORES}, got {self.score!r}")
        if 1.0 not in self.head_widths or not all(0 < w <= 1 for w in self.head_widths):
            raise ValueError("block_search.head_widths must be fractions in (0, 1] and hold "
                             f"1.0 (the teacher's head), got {list(self.head_widths)}")  # fmt: skip
        if self.importance_samples < 1:
            raise ValueError("block_search.importance_samples must be at least 1")
        if any("latency" in b for b in self.budget_list) and not self.latency:
            raise ValueError("a latency budget needs block_search.latency: true (to measure it)")

    @property
    def budget_list(self) -> list[dict[str, Any]]:
        return budget_list(self.budgets)

    @property
    def wants_plugin_drop(self) -> bool:
        return self.plugin_drop or self.score == "plugin_drop"
