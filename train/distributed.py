"""Process-group setup for single-process and ``torchrun`` (DDP) training.

The same command runs on one CPU, one GPU, or under ``torchrun`` on many GPUs and machines:
``torchrun`` sets ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` and the rendezvous; we join it with NCCL on
GPUs and gloo on CPUs. Only rank 0 logs and saves.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from lipx.errors import InputError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` -> the local CUDA device if there is one, else CPU; errors name what exists."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise InputError("--device cuda: no CUDA device is available here; use --device cpu")
        return torch.device("cuda", local_rank if name == "cuda" else int(name.split(":")[1]))
    if name != "cpu":
        raise InputError(f"unknown device {name!r}; choose auto, cpu, cuda or cuda:N")
    return torch.device("cpu")


def setup(device: str = "auto") -> DistInfo:
    """Join the ``torchrun`` process group if there is one; return this process's place in it."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank)
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group(backend=backend)
        log.info("rank %d/%d joined the %s process group", rank, world, backend)
    return DistInfo(rank, world, local_rank, dev)


def teardown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def mean_across(values: dict[str, float], info: DistInfo) -> dict[str, float]:
    """Average scalars over all ranks (identity when not distributed)."""
    if not info.distributed or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=info.device)
    dist.all_reduce(t)
    return {k: float(v) / info.world_size for k, v in zip(keys, t.tolist())}


def average_gradients(params: list[torch.nn.Parameter], info: DistInfo) -> None:
    """All-reduce and average ``.grad`` of ``params`` over ranks (for modules not under DDP)."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= info.world_size
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()
