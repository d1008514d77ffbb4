"""What the benchmark modules share: the project root, its parameters, spreads of repeats."""

from __future__ import annotations

import statistics
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

# --quick: the test suite's tiny run (scikit-learn's digits, one epoch per stage).
QUICK_PARAMS: dict[str, Any] = {
    "data_processing": {"dataset": "digits"},
    "teacher": {"training": {"epochs": 1}},
    "block_search": {"training": {"epochs": 1}, "importance_samples": 256},
    "distillation": {"training": {"epochs": 1}, "recalibration_batches": 2},
    "evaluation": {"latency_repeats": 3},
}


def log(message: str) -> None:
    """Progress on stderr, so a long benchmark shows where it is."""
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def _config_loader(root: Path, env: str | None, overrides: Mapping[str, Any] | None = None) -> Any:
    """The configuration ``kedro run [--env env] --params overrides`` would see."""
    from kedro.config import OmegaConfigLoader

    from compactkd.settings import CONFIG_LOADER_ARGS

    runtime = dict(overrides or {})
    return OmegaConfigLoader(conf_source=str(root / "conf"), env=env, runtime_params=runtime,
                             **CONFIG_LOADER_ARGS)  # fmt: skip


def project_params(
    root: Path = ROOT, env: str | None = None, overrides: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The parameters ``kedro run [--env env] --params overrides`` would see."""
    return _config_loader(root, env, overrides)["parameters"]


def data_root(root: Path = ROOT, env: str | None = None) -> Path:
    """Where ``kedro run [--env env]`` writes its outputs (``data_root`` in globals.yml)."""
    return root / _config_loader(root, env)["globals"]["data_root"]


def dotlist(params: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Nested parameters as ``kedro run --params`` items: ``a.b=1``."""
    items = []
    for key, value in params.items():
        if isinstance(value, Mapping):
            items += dotlist(value, f"{prefix}{key}.")
        else:
            items.append(f"{prefix}{key}={value}")
    return items


@dataclass(frozen=True)
class Spread:
    """Repeated measurements of one quantity: the median, with min and max to show the noise."""

    values: tuple[float, ...]

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        if not values:
            raise ValueError("a spread needs at least one value")
        return cls(tuple(float(v) for v in values))

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    def text(self, digits: int = 1) -> str:
        """``median [min, max] (n)``, or the single value."""
        if len(self.values) == 1:
            return f"{self.values[0]:.{digits}f} (1 run)"
        low, high = min(self.values), max(self.values)
        return f"{self.median:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}] ({len(self)} runs)"

    def __len__(self) -> int:
        return len(self.values)

    def to_dict(self) -> dict[str, Any]:
        return {
            "median": self.median,
            "min": min(self.values),
            "max": max(self.values),
            "values": list(self.values),
        }
