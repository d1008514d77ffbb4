"""Data-parallel training on ``torch.distributed``, when ``torchrun`` started the process.

``torchrun --nproc_per_node N -m kedro run ...`` starts N copies of the run; each joins
the process group (``gloo`` on the CPU, ``nccl`` on GPUs), trains a
``DistributedDataParallel`` replica on its shard of every epoch (``DistributedSampler``)
and computes everything else in full. Only rank 0 writes files. Launched any other
way, nothing here changes anything: one process, world size 1.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler


@dataclass(frozen=True)
class Shard:
    """This process's place among the training processes."""

    rank: int = 0
    world_size: int = 1

    def order(self, count: int, seed: int) -> torch.Tensor:
        """This rank's part of an epoch over ``count`` samples shuffled by ``seed``."""
        sampler = DistributedSampler(
            range(count), num_replicas=self.world_size, rank=self.rank, shuffle=True, seed=seed
        )
        return torch.tensor(list(sampler))

    def batch_size(self, total: int) -> int:
        """Each rank's share of a batch, so the effective batch and the schedule are unchanged."""
        return -(-total // self.world_size)


def launched() -> bool:
    """True in a process that ``torchrun`` started with more than one worker."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def start() -> None:
    """Join the process group torchrun describes in the environment (idempotent)."""
    if not launched() or dist.is_initialized():
        return
    if torch.cuda.is_available():
        torch.cuda.set_device(local_device_index())
    dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")


def stop() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def current() -> Shard:
    if not dist.is_initialized():
        return Shard()
    return Shard(dist.get_rank(), dist.get_world_size())


def is_main() -> bool:
    """Whether this process writes files: rank 0, or the only process."""
    return current().rank == 0


def run_facts() -> dict[str, int]:
    """What a stage's metrics record of how it ran: CPU threads per process, processes."""
    return {"threads": torch.get_num_threads(), "processes": current().world_size}


def default_threads() -> int:
    """The machine's cores shared among this node's training processes."""
    return max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))


def local_device_index() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def replicate(model: nn.Module, device: torch.device, find_unused: bool = False) -> nn.Module:
    """``model`` as a DDP replica when distributed, else ``model`` itself."""
    if current().world_size == 1:
        return model
    device_ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids, find_unused_parameters=find_unused)


def sum_over_ranks(*values: float) -> list[float]:
    """Each value summed over every rank (the values themselves when alone)."""
    if current().world_size == 1:
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64)
    if dist.get_backend() == "nccl":
        tensor = tensor.cuda()
    dist.all_reduce(tensor)
    return tensor.cpu().tolist()
