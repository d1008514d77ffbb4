"""Every stage's parameters checked when a run starts, before any data is read or model
trained: a typo in the last stage's settings must not cost the first stage's hours.

Each check is the one the stage itself applies (its settings dataclass, the budget forms,
the model and dataset names), run early; the first problem stops the run in one line.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from compactkd.comparison import EvaluationConfig
from compactkd.config import config_from_params
from compactkd.data import DATASETS
from compactkd.distillation import DistillationConfig
from compactkd.models import MODELS, TORCHVISION_PREFIX
from compactkd.search.config import BlockSearchConfig
from compactkd.search.select import resolve_budgets
from compactkd.training import TrainConfig

# Any costs: only the budgets' forms and resources are checked here.
_REFERENCE = {"flops": 1.0, "params": 1.0, "latency": 1.0}


@dataclass(frozen=True)
class DataProcessingConfig:
    """``conf/base/parameters_data_processing.yml``, as the stage reads it."""

    dataset: str
    raw_dir: str = "data/01_raw"
    download: bool = False
    image_folder: Mapping[str, Any] | None = None
    val_fraction: float = 0.1
    test_fraction: float = 0.2
    seed: int = 0
    augmentation: Any = "auto"

    def __post_init__(self) -> None:
        if self.dataset not in DATASETS:
            raise ValueError(f"unknown dataset {self.dataset!r}; choose one of {sorted(DATASETS)}")
        if not (0 <= self.val_fraction < 1 and 0 <= self.test_fraction < 1):
            raise ValueError("data_processing.val_fraction and test_fraction must lie in [0, 1)")


def check_parameters(params: Mapping[str, Any]) -> None:
    """Raise ``ValueError`` naming the first setting of any stage that the stage would refuse."""
    config_from_params(DataProcessingConfig, params["data_processing"], "data_processing")
    training = params["training"]
    teacher = params["teacher"]
    TrainConfig.from_params(training, None, "training")  # the shared block as written
    TrainConfig.from_params(training, teacher.get("training"), "teacher.training")
    _check_model_name(teacher["model"])
    search = config_from_params(BlockSearchConfig, params["block_search"], "block_search")
    for budget in search.budget_list:
        resolve_budgets(budget, _REFERENCE)
    DistillationConfig.from_params(params["distillation"], training)
    config_from_params(EvaluationConfig, params["evaluation"], "evaluation")
    threads = params["runtime"]["threads"]
    whole = isinstance(threads, int) and not isinstance(threads, bool)
    if threads is not None and not (whole and threads >= 1):
        raise ValueError(f"runtime.threads must be a whole number >= 1 or null, got {threads!r}")


def _check_model_name(model: Mapping[str, Any]) -> None:
    name = model.get("name") if isinstance(model, Mapping) else None
    known = name in MODELS or (isinstance(name, str) and name.startswith(TORCHVISION_PREFIX))
    if not known:
        raise ValueError(f"teacher.model.name {name!r} is no model; choose one of "
                         f"{sorted(MODELS)} or '{TORCHVISION_PREFIX}<name>'")  # fmt: skip
