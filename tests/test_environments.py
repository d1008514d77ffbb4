"""Every shipped Kedro environment is a valid configuration whose budgets the space can meet:
a misspelt key or an unreachable budget shows here, not an hour into a CIFAR-10 run."""

from __future__ import annotations

import pytest
import torch
from helpers import PROJECT_ROOT
from kedro.config import OmegaConfigLoader

from compactkd import settings
from compactkd.baselines import pruned_fractions
from compactkd.blocks.partition import partition_model
from compactkd.config import config_from_params
from compactkd.distillation import DistillationConfig
from compactkd.models import build_model
from compactkd.search.config import BlockSearchConfig
from compactkd.search.pool import build_pool, feasible_budgets
from compactkd.training import TrainConfig

ENVIRONMENTS = sorted(
    path.name
    for path in (PROJECT_ROOT / "conf").iterdir()
    if path.is_dir() and path.name not in ("base", "local")
)


def test_the_environments_are_the_documented_ones() -> None:
    assert ENVIRONMENTS == ["cifar10", "cifar10_mobilenetv2", "cifar10_mobilenetv2_cpu"]


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_an_environment_configures_every_stage_and_its_budgets_are_reachable(env: str) -> None:
    loader = OmegaConfigLoader(
        str(PROJECT_ROOT / "conf"), **{**settings.CONFIG_LOADER_ARGS, "default_run_env": env}
    )
    params = loader["parameters"]
    assert params["data_processing"]["dataset"] == "image_folder"
    TrainConfig.from_params(params["training"], params["teacher"].get("training"), "teacher")
    DistillationConfig.from_params(params["distillation"], params["training"])
    search = config_from_params(BlockSearchConfig, params["block_search"], "block_search")

    torch.manual_seed(0)
    teacher = build_model({**params["teacher"]["model"], "num_classes": 10}).eval()
    size = params["data_processing"]["image_folder"]["image_size"]
    shape = (3, size, size)
    importance = [torch.rand(c) for c, _, _ in partition_model(teacher, shape).interfaces]
    cuts = pruned_fractions(teacher, shape, importance, search)
    assert len(cuts) == len(search.budget_list)  # both environments add the uniform cuts
    pool = build_pool(teacher, shape, importance, search, cuts)
    assert len(feasible_budgets(pool, search)) == len(search.budget_list)
