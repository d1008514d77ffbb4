"""Block-wise distillation (docs/method.md §3): every candidate learns its block from one pass.

For each batch the frozen teacher runs once and records its interfaces ``x_0 .. x_N``;
each candidate of block ``i`` maps ``x_{i-1}[:, keep_in]`` to ``x_i[:, keep_out]`` under
the normalised MSE. All candidates share one optimiser step per batch; the ``teacher``
candidate is the teacher's own block, exact already, so it is scored but never trained.
After every epoch the candidates that another candidate of the same block and interface
widths beats on FLOPs, parameters and validation NMSE at once are dropped (they can
never be chosen).
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from compactkd import distributed
from compactkd.blocks.candidates import Candidate, Keeps
from compactkd.blocks.partition import Partition, narrow_head
from compactkd.data import BatchLoader, make_loader
from compactkd.evaluation import evaluate
from compactkd.losses import nmse, nmse_terms
from compactkd.training import (
    Checkpoint,
    OptimizerConfig,
    autocast,
    epoch_seed,
    optimizer_with_cosine,
    placed,
    resolve_device,
    run_fingerprint,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BlockTrainConfig(OptimizerConfig):
    """How the candidates are trained (``block_search.training`` in the parameters)."""

    epochs: int = 2
    batch_size: int = 32
    lr: float = 6e-3
    optimizer: str = "adam"
    weight_decay: float = 0.0
    subsample: float = 0.15  # fraction of the training split used for block training
    pareto_pruning: bool = True
    # Train block i on what the best candidates so far of blocks 1..i-1 write, not on the
    # teacher's features (Wang et al. 2018), from the second epoch on.
    progressive: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 < self.subsample <= 1:
            raise ValueError(f"subsample must be in (0, 1], got {self.subsample}")


def train_subset(splits: Mapping[str, Any], fraction: float, seed: int) -> dict[str, Any]:
    """A stratification-free, seeded random subset of the training split."""
    train = splits["train"]
    count = max(1, round(fraction * len(train["labels"])))
    chosen = torch.randperm(len(train["labels"]), generator=torch.Generator().manual_seed(seed))
    chosen = torch.sort(chosen[:count]).values
    return {"images": train["images"][chosen], "labels": train["labels"][chosen]}


def importance_loader(
    splits: Mapping[str, Any], samples: int, seed: int, batch_size: int
) -> BatchLoader:
    """The seeded training sample on which interface channels are ranked."""
    fraction = min(1.0, samples / len(splits["train"]["labels"]))
    sample = train_subset(splits, fraction, seed)
    return BatchLoader(sample, splits["mean"], splits["std"], batch_size)


@torch.inference_mode()
def channel_importance(partition: Partition, loader: BatchLoader) -> list[torch.Tensor]:
    """Mean absolute activation of every channel at every interface, over ``loader``."""
    totals: list[torch.Tensor] | None = None
    for images, _ in loader.batches():
        means = [
            x.abs().mean(dim=(0, 2, 3)).cpu() * len(x) for x in partition.interface_tensors(images)
        ]
        totals = means if totals is None else [t + m for t, m in zip(totals, means, strict=True)]
    assert totals is not None
    return [t / loader.num_samples for t in totals]


class _Inputs:
    """The interfaces of one batch as the candidates read and learn them.

    Targets are always the teacher's (narrowed) interfaces, each gathered once. Inputs
    are the teacher's too, except where ``student`` holds a feature the partly assembled
    student wrote for that interface and width (progressive mode).
    """

    def __init__(self, interfaces: list[torch.Tensor], keeps: Keeps) -> None:
        self.interfaces, self.keeps = interfaces, keeps
        self.targets: dict[tuple[int, float], torch.Tensor] = {}
        self.student: dict[tuple[int, float], torch.Tensor] = {}

    def target(self, index: int, fraction: float) -> torch.Tensor:
        key = (index, fraction)
        if key not in self.targets:
            keep = self.keeps[index][fraction].to(self.interfaces[index].device)
            self.targets[key] = self.interfaces[index][:, keep]
        return self.targets[key]

    def source(self, index: int, fraction: float) -> torch.Tensor:
        student = self.student.get((index, fraction))
        return student if student is not None else self.target(index, fraction)


def _batch_terms(
    candidates: Sequence[Candidate],
    order: Sequence[int],
    scored: Collection[int],
    index_of: Mapping[str, int],
    inputs: _Inputs,
    references: Mapping[tuple[int, float], int],
) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """NMSE terms of the ``scored`` candidates on one batch, blocks in order.

    The output of a reference candidate (the best one so far writing that interface at
    that width) becomes the student's feature that the next block's candidates read.
    """
    terms = {}
    for c in order:
        candidate = candidates[c]
        index = index_of[candidate.block]
        output_key = (index + 1, candidate.out_fraction)
        is_reference = references.get(output_key) == c
        if c not in scored and not is_reference:
            continue
        prediction = candidate.module(inputs.source(index, candidate.in_fraction))
        if is_reference:
            inputs.student[output_key] = prediction.detach()
        if c in scored:
            terms[c] = nmse_terms(prediction, inputs.target(*output_key))
    return terms


def _references(
    candidates: Sequence[Candidate],
    active: Sequence[int],
    nmse: Mapping[int, float],
    index_of: Mapping[str, int],
) -> dict[tuple[int, float], int]:
    """Per written interface and width, the active candidate with the lowest NMSE so far."""
    best: dict[tuple[int, float], int] = {}
    for c in active:
        if c not in nmse:
            continue
        key = (index_of[candidates[c].block] + 1, candidates[c].out_fraction)
        if key not in best or nmse[c] < nmse[best[key]]:
            best[key] = c
    return best


class _CandidateLoss(nn.Module):
    """One batch's summed NMSE over the trained candidates.

    A module holding every candidate, so that DistributedDataParallel can wrap them all.
    """

    def __init__(
        self, candidates: Sequence[Candidate], modules: nn.ModuleList, index_of: Mapping[str, int]
    ) -> None:
        super().__init__()
        self.candidates, self.index_of = candidates, index_of
        self.modules_ = modules  # registered, so its parameters are the wrapper's

    def forward(
        self,
        inputs: _Inputs,
        active: Sequence[int],
        trained: Collection[int],
        references: Mapping[tuple[int, float], int],
    ) -> torch.Tensor:
        terms = _batch_terms(self.candidates, active, trained, self.index_of, inputs, references)
        return sum(nmse(error, spread) for error, spread in terms.values())


def block_index(partition: Partition) -> dict[str, int]:
    return {name: i for i, name in enumerate(partition.block_names)}


@torch.inference_mode()
def validation_nmse(
    partition: Partition,
    candidates: Sequence[Candidate],
    active: Sequence[int],
    keeps: Keeps,
    loader: BatchLoader,
    references: Mapping[tuple[int, float], int] | None = None,
) -> dict[int, float]:
    """Validation NMSE of the active candidates, summed over the whole split."""
    index_of = block_index(partition)
    sums: dict[int, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for c in active:
        candidates[c].module.eval()
    for images, _ in loader.batches():
        inputs = _Inputs(partition.interface_tensors(images), keeps)
        terms = _batch_terms(candidates, active, active, index_of, inputs, references or {})
        for c, (error, spread) in terms.items():
            sums[c][0] += float(error)
            sums[c][1] += float(spread)
    return {c: nmse(error, spread) for c, (error, spread) in sums.items()}


def pareto_survivors(
    candidates: Sequence[Candidate],
    active: Sequence[int],
    nmse: Mapping[int, float],
    costs: Mapping[int, Mapping[str, float]],
    protected: Collection[int] = (),
) -> list[int]:
    """Drop every candidate beaten on all costs and NMSE by one of the same block and widths.

    Costs are FLOPs, parameters and latency where measured, so no budget that was
    reachable stops being so. ``protected`` candidates (those a pin asks for) are only
    compared among themselves, so a pin never loses every candidate it names.
    """

    def key(c: int) -> tuple:
        cand = candidates[c]
        return cand.block, cand.in_fraction, cand.out_fraction, c in protected

    def measures(c: int) -> tuple[float, ...]:
        return (*(costs[c][r] for r in ("flops", "params", "latency") if r in costs[c]), nmse[c])

    survivors = []
    for c in active:
        mine = measures(c)
        dominated = any(
            key(d) == key(c)
            and all(a <= b for a, b in zip(measures(d), mine, strict=True))
            and measures(d) != mine
            for d in active
        )
        if not dominated:
            survivors.append(c)
    return survivors


def train_candidates(
    partition: Partition,
    candidates: Sequence[Candidate],
    keeps: Keeps,
    splits: Mapping[str, Any],
    costs: Mapping[int, Mapping[str, float]],
    config: BlockTrainConfig,
    checkpoint_path: str | Path | None = None,
    protected: Collection[int] = (),
) -> tuple[pd.DataFrame, dict[int, float], list[int]]:
    """Train every candidate against the frozen teacher; resumable after each epoch.

    Returns the per-epoch history, each candidate's last validation NMSE (by position
    in ``candidates``) and the positions of the candidates still active at the end.
    """
    device = resolve_device(config.device)
    teacher_parts = nn.ModuleList([partition.stem, partition.blocks, partition.head])
    # The teacher's forward passes run without gradients.
    placed(teacher_parts, device, config.channels_last).eval()
    modules = placed(nn.ModuleList(c.module for c in candidates), device, config.channels_last)
    frozen = {i for i, c in enumerate(candidates) if c.family == "teacher"}
    for i in frozen:
        candidates[i].module.eval().requires_grad_(False)
    part = train_subset(splits, config.subsample, config.seed)
    loader = BatchLoader(
        part,
        splits["mean"],
        splits["std"],
        config.batch_size,
        splits["augmentation"],
        device,
        distributed.current(),
    )
    # Scoring runs no backward pass: larger batches cost less per image.
    val_loader = make_loader(splits, "val", max(config.batch_size, 256), device)
    optimizer, scheduler = optimizer_with_cosine(
        modules.parameters(), config, config.epochs * len(loader)
    )
    extra = {"keeps": [{f: k.tolist() for f, k in keep.items()} for keep in keeps]}
    extra["candidates"] = [c.name for c in candidates]
    fingerprint = run_fingerprint(modules, splits, config, extra)
    checkpoint = Checkpoint(Path(checkpoint_path), fingerprint) if checkpoint_path else None
    history = checkpoint.restore(modules, optimizer, scheduler) if checkpoint else []
    active = list(history[-1]["active"]) if history else list(range(len(candidates)))
    nmse = dict(history[-1]["nmse"]) if history else {}
    index_of = block_index(partition)
    # Candidates that Pareto pruning dropped get no gradient: DDP must expect that.
    step_loss = distributed.replicate(
        _CandidateLoss(candidates, modules, index_of), device, find_unused=True
    )
    precision = autocast(config.mixed_precision, device)
    try:
        for epoch in range(len(history), config.epochs):
            started = time.perf_counter()
            generator = torch.Generator().manual_seed(epoch_seed(config.seed, epoch))
            trained = [c for c in active if c not in frozen]
            references = (
                _references(candidates, active, nmse, index_of) if config.progressive else {}
            )
            for c in trained:
                candidates[c].module.train()
            progress = tqdm(
                loader.batches(generator),
                total=len(loader),
                desc=f"blocks {epoch + 1}/{config.epochs}",
                leave=False,
                disable=None if distributed.is_main() else True,
            )
            for images, _ in progress if trained else ():  # nothing to train: only score
                with torch.no_grad(), precision:  # one teacher pass feeds every candidate
                    inputs = _Inputs(partition.interface_tensors(images), keeps)
                with precision:
                    loss = step_loss(inputs, active, trained, references)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                progress.set_postfix(mean_nmse=f"{loss.item() / len(trained):.3f}")
            nmse.update(
                validation_nmse(partition, candidates, active, keeps, val_loader, references)
            )
            before = len(active)
            if config.pareto_pruning:
                active = pareto_survivors(candidates, active, nmse, costs, protected)
            history.append(
                {
                    "epoch": epoch + 1,
                    "active_before": before,
                    "active_after": len(active),
                    "mean_val_nmse": sum(nmse[c] for c in active) / len(active),
                    "seconds": time.perf_counter() - started,
                    "active": active,
                    "nmse": dict(nmse),
                }
            )
            logger.info(
                "block epoch %d/%d: %d -> %d candidates, mean val NMSE %.4f (%.1fs)",
                epoch + 1, config.epochs, before, len(active), history[-1]["mean_val_nmse"],
                history[-1]["seconds"],
            )  # fmt: skip
            if checkpoint and distributed.is_main():
                checkpoint.save(modules, optimizer, scheduler, history)
    finally:  # back where and as the caller expects them, even after an interruption
        placed(modules, torch.device("cpu"), False)
        placed(teacher_parts, torch.device("cpu"), False)
    table = pd.DataFrame(history).drop(columns=["active", "nmse"])
    return table, nmse, active


@torch.inference_mode()
def plugin_accuracy(
    partition: Partition,
    index: int,
    candidate: Candidate,
    keeps: Keeps,
    loader: BatchLoader,
) -> float:
    """Validation accuracy of the teacher with only block ``index`` swapped for ``candidate``.

    Channels the candidate does not write are zero, which is what a narrowed interface
    means for the teacher's next block.
    """
    correct = 0
    candidate.module.eval()
    for part in (partition.stem, partition.blocks, partition.head):
        part.eval()  # the frozen teacher, whatever mode a caller left it in
    in_keep = keeps[index][candidate.in_fraction]
    out_keep = keeps[index + 1][candidate.out_fraction]
    for images, labels in loader.batches():
        x = partition.stem(images)
        for i, block in enumerate(partition.blocks):
            if i != index:
                x = block(x)
                continue
            written = candidate.module(x[:, in_keep.to(x.device)])
            x = written.new_zeros(
                written.shape[0], partition.interfaces[i + 1][0], *written.shape[2:]
            )
            x[:, out_keep.to(x.device)] = written
        correct += int((partition.head(x).argmax(dim=1) == labels).sum())
    return 100.0 * correct / loader.num_samples


def plugin_drops(
    partition: Partition,
    candidates: Sequence[Candidate],
    keeps: Keeps,
    active: Sequence[int],
    splits: Mapping[str, Any],
    device: torch.device,
) -> dict[int, float]:
    """Per active candidate: the teacher's validation top-1 minus its top-1 with only that
    candidate's block swapped for it (points; lower is better)."""
    loader = make_loader(splits, "val", 256, device)
    parts = nn.Sequential(partition.stem, *partition.blocks, partition.head)
    parts.to(device).eval()  # eval first, so evaluate() leaves the teacher in eval mode
    teacher_accuracy = evaluate(parts, loader)["top1"]
    index_of = block_index(partition)
    drops = {}
    for c in active:
        candidate = candidates[c]
        candidate.module.to(device)
        swapped = plugin_accuracy(partition, index_of[candidate.block], candidate, keeps, loader)
        drops[c] = teacher_accuracy - swapped
        candidate.module.cpu()
    parts.cpu()
    return drops


@dataclass(frozen=True)
class InterfaceLosses:
    """What narrowing each interface loses, measured on the teacher's validation features.

    ``dropped[j][f]``: the share of interface ``j``'s spread (squared deviation from its
    channel means) that lies in the channels fraction ``f`` drops. ``head_nmse[(f, w)]``:
    the NMSE of the teacher's logits when its head reads only the channels of fraction ``f``
    and keeps the fraction ``w`` of its inner width (1 for a head without one).
    """

    dropped: list[dict[float, float]]
    head_nmse: dict[tuple[float, float], float]

    def full_nmse(self, kept_nmse: float, interface: int, fraction: float) -> float:
        """NMSE against the *whole* interface of a candidate that writes ``fraction`` of it
        with NMSE ``kept_nmse`` on those channels: the channels it does not write count as
        error. ``(E + D) / T = 1 - (1 - E / K)(1 - D / T)`` with ``K = T - D`` kept spread."""
        return 1.0 - (1.0 - kept_nmse) * (1.0 - self.dropped[interface][fraction])


@torch.inference_mode()
def interface_losses(
    partition: Partition,
    keeps: Keeps,
    loader: BatchLoader,
    head_widths: Sequence[float] = (1.0,),
) -> InterfaceLosses:
    """:class:`InterfaceLosses` of the teacher over ``loader`` (batch means, as in NMSE),
    for every kept fraction of the last interface with every one of ``head_widths``."""
    total = [0.0] * len(keeps)
    kept: list[dict[float, float]] = [dict.fromkeys(k, 0.0) for k in keeps]
    heads = {
        (f, w): narrow_head(partition.head, keep, w)
        for f, keep in keeps[-1].items()
        for w in head_widths
    }
    head_terms = {key: [0.0, 0.0] for key in heads}
    for images, _ in loader.batches():
        interfaces = partition.interface_tensors(images)
        for j, x in enumerate(interfaces):
            spread = (x - x.mean(dim=(0, 2, 3), keepdim=True)).pow(2).sum(dim=(0, 2, 3))
            total[j] += float(spread.sum())
            for f, keep in keeps[j].items():
                kept[j][f] += float(spread[keep.to(spread.device)].sum())
        logits, last = partition.head(interfaces[-1]), interfaces[-1]
        for (f, w), head in heads.items():
            error, spread = nmse_terms(head(last[:, keeps[-1][f].to(last.device)]), logits)
            head_terms[f, w][0] += float(error)
            head_terms[f, w][1] += float(spread)
    dropped = [
        {f: max(0.0, 1.0 - k / max(t, 1e-12)) for f, k in fractions.items()}
        for t, fractions in zip(total, kept, strict=True)
    ]
    return InterfaceLosses(dropped, {key: nmse(*terms) for key, terms in head_terms.items()})
