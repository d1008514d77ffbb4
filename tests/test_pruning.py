"""Tests of the `pruned` candidate family (compactkd.blocks.pruning).

Teachers are randomly initialised zoo models in eval mode with randomised BatchNorm statistics,
so that a mis-sliced statistic or a wrong channel shows up in the outputs.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from helpers import randomised_teacher
from torch import nn

from compactkd.blocks.pruning import ChannelMap, PrunedResidual, prune_block
from compactkd.models import PadShortcut, build_model
from compactkd.models.mobilenetv2 import CIFAR_SETTING

MODELS = [
    "resnet20",
    "tv:resnet18",
    "tv:resnet50",
    "vgg11_bn",
    "mobilenet_v2",
    "tv:mobilenet_v2",
]
RATIOS = [1.0, 0.75, 0.5, 0.25]
# Repeats per stage of torchvision's MobileNetV2 (its setting is not exported).
TV_MOBILENET_REPEATS = [1, 2, 3, 4, 3, 3, 1]


def _split_by_repeats(layers: list[nn.Module], repeats: list[int]) -> list[nn.Sequential]:
    stages, start = [], 0
    for n in repeats:
        stages.append(nn.Sequential(*layers[start : start + n]))
        start += n
    return stages


def partitions(name: str) -> dict[str, list[nn.Module]]:
    """The teacher's blocks, in order, per granularity (as the teacher split would cut them)."""
    model = randomised_teacher(name)
    if name.startswith(("resnet", "tv:resnet")):
        stages = [m for n, m in model.named_children() if n.startswith("layer")]
        return {"stage": stages, "unit": [unit for stage in stages for unit in stage]}
    if name.startswith("vgg"):
        layers = list(model.features)
        pools = [i for i, m in enumerate(layers) if isinstance(m, nn.MaxPool2d)]
        # The first convs, then each pool with the convs after it; the last pool is the head's.
        bounds = [0, *pools]
        return {"stage": [nn.Sequential(*layers[a:b]) for a, b in itertools.pairwise(bounds)]}
    units = list(model.features)[1:-1]  # without the stem and the last 1x1 conv (head)
    repeats = (
        [n for _, _, n, _ in CIFAR_SETTING] if name == "mobilenet_v2" else TV_MOBILENET_REPEATS
    )
    return {"stage": _split_by_repeats(units, repeats), "unit": units}


def in_channels(block: nn.Module) -> int:
    return next(m for m in block.modules() if isinstance(m, nn.Conv2d)).in_channels


def out_channels(block: nn.Module) -> int:
    return [m for m in block.modules() if isinstance(m, nn.Conv2d)][-1].out_channels


def subset(channels: int, generator: torch.Generator) -> torch.Tensor:
    """A random sorted subset of about 60% of the channels."""
    size = max(2, (3 * channels) // 5)
    return torch.randperm(channels, generator=generator)[:size].sort().values


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def zero_others(x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    zeroed = torch.zeros_like(x)
    zeroed[:, keep] = x[:, keep]
    return zeroed


def assert_close(actual: torch.Tensor, expected: torch.Tensor, what: str) -> None:
    """Equal up to float rounding: atol 1e-5 relative to the output's scale (deep stages with
    random BN statistics reach values of 10 and more, and narrowing reorders sums)."""
    assert actual.shape == expected.shape, what
    atol = 1e-5 * max(1.0, expected.abs().max().item())
    assert torch.allclose(actual, expected, atol=atol), (
        f"{what}: max diff {(actual - expected).abs().max()}"
    )


@pytest.mark.parametrize("name", MODELS)
def test_full_keep_at_ratio_one_is_the_teacher(name: str) -> None:
    torch.manual_seed(1)
    for granularity, blocks in partitions(name).items():
        for i, block in enumerate(blocks):
            c_in, c_out = in_channels(block), out_channels(block)
            pruned = prune_block(block, torch.arange(c_in), torch.arange(c_out), 1.0)
            x = torch.randn(2, c_in, 8, 8)
            with torch.no_grad():
                assert_close(pruned(x), block(x), f"{name} {granularity} {i}")


@pytest.mark.parametrize("name", MODELS)
def test_narrowed_input_matches_teacher_on_zeroed_channels(name: str) -> None:
    """Reading ``x[:, in_keep]`` is the teacher on ``x`` with the other channels zeroed.

    A single unit or a VGG block is exact for any ``out_keep`` too; a stage of several units
    only at ``out_keep = all``, because its inner stream is then narrowed.
    """
    torch.manual_seed(2)
    generator = torch.Generator().manual_seed(2)
    for granularity, blocks in partitions(name).items():
        for i, block in enumerate(blocks):
            c_in, c_out = in_channels(block), out_channels(block)
            in_keep = subset(c_in, generator)
            exact_any_out = granularity == "unit" or name.startswith("vgg") or len(block) == 1
            out_keep = subset(c_out, generator) if exact_any_out else torch.arange(c_out)
            pruned = prune_block(block, in_keep, out_keep, 1.0)
            x = torch.randn(2, c_in, 8, 8)
            with torch.no_grad():
                expected = block(zero_others(x, in_keep))[:, out_keep]
                assert_close(pruned(x[:, in_keep]), expected, f"{name} {granularity} {i}")


@pytest.mark.parametrize("name", MODELS)
def test_narrowed_chain_has_teacher_shapes_and_shrinks_with_ratio(name: str) -> None:
    """Pruned blocks with agreeing interfaces chain on 32x32 and 28x28 like the teacher's."""
    generator = torch.Generator().manual_seed(3)
    for granularity, blocks in partitions(name).items():
        keeps = [subset(in_channels(blocks[0]), generator)]
        keeps += [subset(out_channels(block), generator) for block in blocks]
        by_ratio = {
            ratio: [prune_block(b, keeps[i], keeps[i + 1], ratio) for i, b in enumerate(blocks)]
            for ratio in RATIOS
        }
        for i, block in enumerate(blocks):
            sizes = [n_params(by_ratio[ratio][i]) for ratio in RATIOS]
            what = f"{name} {granularity} {i}: {sizes}"
            if sum(isinstance(m, nn.Conv2d) for m in block.modules()) == 1:
                assert len(set(sizes)) == 1, what  # a single conv has no inner channels to cut
            else:
                assert sizes == sorted(set(sizes), reverse=True), what

        for size in (32, 28):
            x = torch.randn(1, in_channels(blocks[0]), size, size)
            with torch.no_grad():
                teacher_shapes = []
                for block in blocks:
                    x = block(x)
                    teacher_shapes.append(x.shape[2:])
                for ratio, pruned_blocks in by_ratio.items():
                    y = torch.randn(1, len(keeps[0]), size, size)
                    for i, pruned in enumerate(pruned_blocks):
                        y = pruned(y)
                        expected = (1, len(keeps[i + 1]), *teacher_shapes[i])
                        assert y.shape == expected, f"{name} {granularity} {i} ratio {ratio}"


def test_resolution_flow_on_28x28() -> None:
    """The stride-2 stages take 28 -> 14 -> 7 -> 4 (odd sizes round up, as in the teacher)."""
    resolutions = []
    generator = torch.Generator().manual_seed(4)
    for name in ("resnet20", "vgg11_bn"):
        blocks = partitions(name)["stage"]
        in_keep = subset(in_channels(blocks[0]), generator)
        x = torch.randn(1, len(in_keep), 28, 28)
        sizes = []
        for block in blocks:
            out_keep = subset(out_channels(block), generator)
            with torch.no_grad():
                x = prune_block(block, in_keep, out_keep, 0.5)(x)
            sizes.append(x.shape[-1])
            in_keep = out_keep
        resolutions.append(sizes)
    assert resolutions == [[28, 14, 7], [28, 14, 7, 4, 2]]


@pytest.mark.parametrize("name", MODELS)
def test_teacher_is_unchanged_and_shares_no_storage(name: str) -> None:
    generator = torch.Generator().manual_seed(5)
    for blocks in partitions(name).values():
        for block in blocks:
            before = {k: v.clone() for k, v in block.state_dict().items()}
            in_keep = subset(in_channels(block), generator)
            out_keep = subset(out_channels(block), generator)
            pruned = prune_block(block, in_keep, out_keep, 0.5)
            after = block.state_dict()
            assert before.keys() == after.keys()
            assert all(torch.equal(before[k], after[k]) for k in before)

            def storages(module: nn.Module) -> set[int]:
                tensors = [*module.parameters(), *module.buffers()]
                return {t.untyped_storage().data_ptr() for t in tensors}

            assert not storages(pruned) & storages(block)
            # Eval like the teacher's layers, even where the test's own Sequential wrapper is
            # flagged as training.
            assert not any(m.training for m in pruned.modules())


def test_mode_follows_the_teachers_layers() -> None:
    block = build_model({"name": "resnet20", "num_classes": 10, "in_channels": 3}).layer1
    for training in (True, False):
        pruned = prune_block(block.train(training), torch.arange(16), torch.arange(16), 0.5)
        assert all(m.training == training for m in pruned.modules())


def test_inner_filters_are_the_largest_l1_ones() -> None:
    unit = randomised_teacher("resnet20").layer2[0]  # 16 -> 32 channels, stride 2, PadShortcut
    in_keep = torch.tensor([0, 3, 4, 7, 9, 10, 15])
    pruned = prune_block(unit, in_keep, torch.arange(32), 0.25)
    assert isinstance(pruned, PrunedResidual)
    conv, bn = pruned.branch[0], pruned.branch[1]

    l1 = unit.conv1.weight.abs().sum(dim=(1, 2, 3))
    kept = l1.topk(8).indices.sort().values  # round(0.25 * 32) = 8
    dropped = torch.ones(32, dtype=torch.bool)
    dropped[kept] = False
    assert l1[kept].min() > l1[dropped].max()
    assert torch.equal(conv.weight, unit.conv1.weight[kept][:, in_keep])
    assert torch.equal(bn.running_mean, unit.bn1.running_mean[kept])
    assert torch.equal(bn.running_var, unit.bn1.running_var[kept])
    assert torch.equal(bn.weight, unit.bn1.weight[kept])
    assert torch.equal(pruned.branch[3].weight, unit.conv2.weight[:, kept])


def test_bottleneck_cuts_both_inner_widths() -> None:
    unit = randomised_teacher("tv:resnet50").layer2[0]  # 256 -> 128 -> 128 -> 512, stride 2
    pruned = prune_block(unit, torch.arange(256), torch.arange(512), 0.25)
    conv1, conv2, conv3 = (m for m in pruned.branch if isinstance(m, nn.Conv2d))
    assert (conv1.out_channels, conv2.out_channels, conv3.in_channels) == (32, 32, 32)
    kept2 = unit.conv2.weight.abs().sum(dim=(1, 2, 3)).topk(32).indices.sort().values
    kept1 = unit.conv1.weight.abs().sum(dim=(1, 2, 3)).topk(32).indices.sort().values
    assert torch.equal(conv2.weight, unit.conv2.weight[kept2][:, kept1])


def test_inverted_residual_without_expansion_cuts_the_kept_inputs() -> None:
    # t = 1: the depthwise conv works straight on the 32 input channels
    unit = randomised_teacher("mobilenet_v2").features[1]
    in_keep = torch.arange(0, 32, 2)
    pruned = prune_block(unit, in_keep, torch.arange(16), 0.5)
    select, depthwise = pruned.branch[0], pruned.branch[1]
    assert isinstance(select, ChannelMap)
    l1 = unit.conv[0][0].weight.abs().sum(dim=(1, 2, 3))[in_keep]
    kept = in_keep[l1.topk(8).indices].sort().values
    assert torch.equal(depthwise.weight, unit.conv[0][0].weight[kept])
    x = torch.randn(1, 16, 4, 4)
    assert torch.equal(select(x), x[:, torch.searchsorted(in_keep, kept)])


def test_first_residual_unit_maps_its_shortcut() -> None:
    """A stride-1, same-width unit fed ``in_keep`` adds its input at the ``out_keep`` positions."""
    unit = randomised_teacher("tv:mobilenet_v2").features[3]  # 24 -> 24, use_res_connect
    assert unit.use_res_connect
    in_keep, out_keep = torch.tensor([1, 2, 5, 8, 20]), torch.tensor([0, 2, 5, 7, 8, 23])
    pruned = prune_block(unit, in_keep, out_keep, 1.0)
    assert isinstance(pruned.shortcut, ChannelMap)
    x = torch.randn(2, 24, 6, 6)
    with torch.no_grad():
        expected = unit(zero_others(x, in_keep))[:, out_keep]
        assert_close(pruned(x[:, in_keep]), expected, "mapped residual")


def test_channel_map_matches_pad_shortcut() -> None:
    in_keep, out_keep = torch.tensor([0, 2, 3]), torch.tensor([1, 2, 5, 6])
    x = torch.randn(2, 4, 5, 5)
    expected = PadShortcut(4, 8, stride=2)(zero_others(x, in_keep))[:, out_keep]
    channel_map = ChannelMap(in_keep, out_keep, stride=2)
    assert torch.equal(channel_map(x[:, in_keep]), expected)
    assert channel_map(x[:, in_keep]).shape == (2, 4, 3, 3)
    # The index travels with the weights: a module built on other channels computes the same
    # once it has loaded them (a rebuilt pruned unit may have chosen other channels).
    other = ChannelMap(torch.tensor([0, 1, 2]), out_keep, stride=2)
    other.load_state_dict(channel_map.state_dict())
    assert torch.equal(other(x[:, in_keep]), expected)


def test_channel_map_follows_an_explicit_source() -> None:
    # Teacher output channels 0, 1, 2 copy input channels 2, none, 0.
    channel_map = ChannelMap([0, 2], [0, 1, 2], source=[2, -1, 0])
    x = torch.randn(1, 2, 3, 3)
    expected = torch.stack([x[:, 1], torch.zeros_like(x[:, 0]), x[:, 0]], dim=1)
    assert torch.equal(channel_map(x), expected)


def test_pruned_block_trains() -> None:
    block = randomised_teacher("resnet20").layer2
    pruned = prune_block(block, torch.arange(0, 16, 2), torch.arange(0, 32, 2), 0.5).train()
    pruned(torch.randn(4, 8, 8, 8)).square().mean().backward()
    assert all(p.grad is not None for p in pruned.parameters())
    assert all(p.grad is None for p in block.parameters())


def test_dtype_follows_the_teacher() -> None:
    block = build_model({"name": "resnet20", "num_classes": 10, "in_channels": 3}).layer2
    block = block.double().eval()
    pruned = prune_block(block, torch.arange(0, 16, 2), torch.arange(32), 1.0)
    assert all(p.dtype == torch.float64 for p in pruned.parameters())
    x = torch.randn(2, 16, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        expected = block(zero_others(x, torch.arange(0, 16, 2)))
        assert torch.allclose(pruned(x[:, ::2]), expected, atol=1e-10)


@pytest.mark.parametrize("ratio", [0.0, -0.5, 1.5, math.nan])
def test_ratio_outside_unit_interval_is_rejected(ratio: float) -> None:
    with pytest.raises(ValueError, match="ratio"):
        stage = randomised_teacher("resnet20").layer1
        prune_block(stage, torch.arange(16), torch.arange(16), ratio)


@pytest.mark.parametrize(
    "block",
    [
        nn.Linear(4, 4),
        nn.Sequential(),
        nn.Sequential(nn.Conv2d(4, 4, 3), nn.GroupNorm(2, 4)),
        nn.Sequential(nn.MaxPool2d(2), nn.ReLU()),
    ],
    ids=["linear", "empty", "groupnorm", "no-conv"],
)
def test_unsupported_blocks_are_rejected(block: nn.Module) -> None:
    with pytest.raises(ValueError, match="supported: .*BasicBlock"):
        prune_block(block, torch.arange(4), torch.arange(4), 0.5)


def test_grouped_conv_is_rejected() -> None:
    block = nn.Sequential(nn.Conv2d(4, 8, 3, groups=2), nn.BatchNorm2d(8))
    with pytest.raises(ValueError, match="grouped"):
        prune_block(block, torch.arange(4), torch.arange(8), 0.5)


@pytest.mark.parametrize(
    ("in_keep", "out_keep"),
    [
        (torch.tensor([0, 16]), torch.arange(16)),  # 16 is not a channel
        (torch.tensor([1, 1]), torch.arange(16)),  # repeated
        (torch.arange(16), torch.tensor([], dtype=torch.long)),  # empty
        (torch.arange(16).reshape(4, 4), torch.arange(16)),  # not 1-D
        (torch.arange(16), torch.ones(16, dtype=torch.bool)),  # a mask, not indices
    ],
)
def test_invalid_channel_indices_are_rejected(
    in_keep: torch.Tensor, out_keep: torch.Tensor
) -> None:
    with pytest.raises(ValueError, match="_keep"):
        prune_block(randomised_teacher("resnet20").layer1, in_keep, out_keep, 0.5)


# --- depth: the first units of a stage ------------------------------------------------------


@pytest.mark.parametrize("name", ["mobilenet_v2", "resnet20"])
def test_a_shallower_stage_is_the_teachers_first_units(name: str) -> None:
    """``pruned`` with ``depth`` keeps the stage's first units (the rest are identity
    residuals, so the interfaces keep their shapes); at ratio 1 it computes what they do."""
    from compactkd.blocks.candidates import make_candidate_module
    from compactkd.blocks.partition import partition_model

    partition = partition_model(randomised_teacher(name), (3, 16, 16))
    stages = [i for i, block in enumerate(partition.blocks) if len(block) > 1]
    assert stages
    for index in stages:
        stage = partition.blocks[index]
        cin, cout = partition.interfaces[index][0], partition.interfaces[index + 1][0]
        full_in, full_out = torch.arange(cin), torch.arange(cout)
        x = torch.randn(2, *partition.interfaces[index])
        for depth in range(1, len(stage)):
            params = {"ratio": 1.0, "depth": depth}
            module = make_candidate_module(partition, index, "pruned", params, full_in, full_out)
            assert len(module) == depth
            torch.testing.assert_close(module.eval()(x), stage[:depth](x))
        too_deep = {"ratio": 0.5, "depth": len(stage)}
        assert (
            make_candidate_module(partition, index, "pruned", too_deep, full_in, full_out) is None
        )


def test_depth_is_refused_where_it_means_nothing() -> None:
    from compactkd.blocks.pruning import first_units

    stage = randomised_teacher("resnet20").layer2
    assert first_units(stage, None) is stage
    for bad in (0, 1.5, True, "1"):
        with pytest.raises(ValueError, match="whole number of units"):
            first_units(stage, bad)
    vgg_block = nn.Sequential(nn.Conv2d(3, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU())
    assert first_units(vgg_block, 1) is None  # layers, not residual units
    assert first_units(stage[0], 1) is None  # a single unit has no depth to drop


def test_a_pruned_mobilenet_saved_and_loaded_computes_the_same() -> None:
    """The channels a pruned unit without expansion reads are chosen by the teacher's weights:
    they travel in the file, so the network rebuilt from its blueprint (on an untrained
    teacher) computes what was saved, not another cut of the same shapes."""
    from compactkd.baselines import pruned_blueprint
    from compactkd.blocks.partition import partition_model
    from compactkd.model_files import network_from_package, network_package

    teacher = randomised_teacher("mobilenet_v2")
    shape = (3, 32, 32)
    importance = [torch.rand(c) for c, _, _ in partition_model(teacher, shape).interfaces]
    budget = {"params": 0.3 * n_params(teacher)}  # absolute, as the resolved budgets are
    blueprint = pruned_blueprint(teacher, shape, "stage", importance, budget)
    network = blueprint.build(teacher).eval()
    assert any(isinstance(m, ChannelMap) for m in network[1].modules())  # block_1, t = 1
    loaded = network_from_package(network_package(network))
    x = torch.randn(2, *shape)
    with torch.no_grad():
        assert torch.equal(loaded(x), network(x))
    # A file from before the index was saved still loads (its index derived again).
    state = {k: v for k, v in network.state_dict().items() if not k.endswith(".index")}
    blueprint.build().load_state_dict(state)
