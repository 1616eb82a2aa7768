"""The training loop shared by both tasks: steps, validation, checkpoints, resume, logging.

A :class:`Task` owns its models, optimisers and the body of one step (the GAN alternates its
discriminator and generator updates inside ``train_step``); this loop owns everything around it:
the resumable data order, learning-rate schedules, mixed precision, periodic validation, ``last``
and ``best`` checkpoints (atomic), TensorBoard, progress, and saving on Ctrl-C.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator, Sized
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, cast

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from lipx.models.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from lipx.train.config import TrainConfig
from lipx.train.distributed import DistInfo, mean_across
from lipx.train.state import rng_state, set_rng_state

log = logging.getLogger(__name__)


class Task(Protocol):
    """What the loop needs from a task (see ``lipreading_task.py``, ``lip2speech_task.py``)."""

    metric: str
    """Validation metric that picks ``best`` (e.g. ``accuracy``, ``stoi``)."""
    modules: dict[str, nn.Module]
    """Every trained module by name (``model`` first; aux modules after)."""
    optimizers: dict[str, torch.optim.Optimizer]

    def train_step(self, batch: dict[str, Any], autocast: Callable) -> dict[str, float]: ...

    def validate(self, batches: Iterator[dict[str, Any]]) -> dict[str, float]: ...

    def checkpoint(self) -> Checkpoint: ...

    def log_media(self, writer: Any, step: int) -> None: ...


class ResumableSampler(Sampler[int]):
    """A seeded shuffle per epoch, sharded over ranks, that can resume mid-epoch.

    The order of epoch ``e`` depends only on (seed, e), so ``(epoch, offset)`` pins the position.
    """

    def __init__(self, n: int, seed: int, rank: int = 0, world: int = 1) -> None:
        self.n, self.seed, self.rank, self.world = n, seed, rank, world
        self.epoch, self.offset = 0, 0

    def __len__(self) -> int:
        return math.ceil(self.n / self.world) - self.offset

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        order = torch.randperm(self.n, generator=g).tolist()
        order += order[: (-len(order)) % self.world]  # pad so every rank gets as many
        mine = order[self.rank :: self.world]
        return iter(mine[self.offset :])


@dataclass
class Progress:
    """Where the run is; saved in checkpoints."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    best: float | None = None
    history: list[dict[str, float]] = field(default_factory=list)


def make_schedule(
    opt: torch.optim.Optimizer, cfg: TrainConfig
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up, then ``lr_gamma`` at each milestone step."""
    milestones = sorted(cfg.lr_milestones or ())

    def factor(step: int) -> float:
        warm = min(1.0, (step + 1) / cfg.warmup_steps) if cfg.warmup_steps else 1.0
        return warm * cfg.lr_gamma ** sum(step >= m for m in milestones)

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def autocast_for(cfg: TrainConfig, device: torch.device) -> Callable:
    """A zero-argument context factory for the configured mixed precision (CUDA only)."""
    if cfg.amp == "none" or device.type != "cuda":
        return nullcontext
    dtype = torch.bfloat16 if cfg.amp == "bf16" else torch.float16
    return lambda: torch.autocast("cuda", dtype=dtype)


class Trainer:
    """Runs a :class:`Task` for ``cfg.steps`` steps, resumably."""

    def __init__(self, task: Task, cfg: TrainConfig, train_set: Dataset, val_set: Dataset | None,
                 collate: Callable, info: DistInfo) -> None:
        self.task, self.cfg, self.info = task, cfg, info
        self.out = Path(cfg.out)
        # a map-style dataset (it has a length)
        self.sampler = ResumableSampler(len(cast(Sized, train_set)), cfg.seed, info.rank,
                                        info.world_size)
        self.train_set, self.val_set, self.collate = train_set, val_set, collate
        self.schedules = {k: make_schedule(o, cfg) for k, o in task.optimizers.items()}
        self.progress = Progress()
        self._started = time.perf_counter()
        self.writer = None
        if info.is_main:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.out / "tensorboard"))

    # -- checkpoints ------------------------------------------------------------------------
    def _save(self, name: str) -> Path | None:
        if not self.info.is_main:
            return None
        ckpt = self.task.checkpoint()
        ckpt.training = {
            "config": self.cfg.to_dict(),
            "progress": vars(self.progress).copy(),
            "optimizers": {k: o.state_dict() for k, o in self.task.optimizers.items()},
            "schedules": {k: s.state_dict() for k, s in self.schedules.items()},
            "rng": rng_state(),
            "task": self.task.training_state() if hasattr(self.task, "training_state") else {},
        }
        return save_checkpoint(ckpt, self.out / f"{name}.lipx")

    def resume(self, path: Path) -> None:
        """Restore modules, optimisers, schedules, progress, RNG and data position."""
        ckpt = load_checkpoint(path)
        state = ckpt.training
        if state is None:
            from lipx.errors import CheckpointError

            raise CheckpointError(f"{path} holds no training state; it cannot be resumed")
        self.task.modules["model"].load_state_dict(ckpt.state_dict)
        for name, sd in ckpt.aux.items():
            self.task.modules[name].load_state_dict(sd)
        for k, o in self.task.optimizers.items():
            o.load_state_dict(state["optimizers"][k])
        for k, s in self.schedules.items():
            s.load_state_dict(state["schedules"][k])
        self.progress = Progress(**state["progress"])
        set_rng_state(state["rng"])
        if hasattr(self.task, "load_training_state"):
            self.task.load_training_state(state["task"])
        log.info("resumed from %s at step %d", path, self.progress.step)

    # -- the loop ---------------------------------------------------------------------------
    def _batches(self) -> Iterator[dict[str, Any]]:
        while True:
            self.sampler.epoch, self.sampler.offset = self.progress.epoch, (
                self.progress.batch_in_epoch * self.cfg.batch_size)
            if hasattr(self.train_set, "set_epoch"):
                self.train_set.set_epoch(self.progress.epoch)
            loader = DataLoader(self.train_set, self.cfg.batch_size, sampler=self.sampler,
                                collate_fn=self.collate, num_workers=self.cfg.workers,
                                drop_last=True, generator=torch.Generator().manual_seed(0))
            # (its own generator: creating an iterator must not draw from the global RNG, which a
            # resumed run restores exactly)
            yield from loader
            self.progress.epoch += 1
            self.progress.batch_in_epoch = 0

    def validate(self) -> dict[str, float]:
        if self.val_set is None:
            return {}
        loader = DataLoader(self.val_set, self.cfg.batch_size, collate_fn=self.collate,
                            num_workers=self.cfg.workers, generator=torch.Generator())
        limit = self.cfg.val_batches or len(loader)
        batches = (b for i, b in zip(range(limit), loader))
        for m in self.task.modules.values():
            m.eval()
        with torch.no_grad():
            metrics = mean_across(self.task.validate(batches), self.info)
        for m in self.task.modules.values():
            m.train()
        return metrics

    def fit(self, on_step: Callable[[int, dict[str, float]], None] | None = None) -> Progress:
        """Train to ``cfg.steps``; saves ``last`` on Ctrl-C (then re-raises) and at the end."""
        autocast = autocast_for(self.cfg, self.info.device)
        batches = self._batches()
        self._started, seen = time.perf_counter(), 0
        for m in self.task.modules.values():
            m.train()
        try:
            while self.progress.step < self.cfg.steps:
                if (self.cfg.minutes
                        and time.perf_counter() - self._started > 60 * self.cfg.minutes):
                    log.info("time budget of %g min reached at step %d", self.cfg.minutes,
                             self.progress.step)
                    if self.cfg.val_every and self.progress.step % self.cfg.val_every:
                        self._record(self.validate(), self.progress.step)
                    break
                batch = next(batches)
                self.progress.batch_in_epoch += 1
                losses = self.task.train_step(batch, autocast)
                for s in self.schedules.values():
                    s.step()
                self.progress.step += 1
                seen += self.cfg.batch_size * self.info.world_size
                losses["clips_per_s"] = seen / (time.perf_counter() - self._started)
                self._after_step(losses, on_step)
        except KeyboardInterrupt:
            path = self._save("last")
            log.warning("interrupted at step %d; saved %s", self.progress.step, path)
            raise
        self._save("last")
        return self.progress

    def _after_step(self, losses: dict[str, float],
                    on_step: Callable[[int, dict[str, float]], None] | None) -> None:
        step, cfg = self.progress.step, self.cfg
        if self.writer is not None and (step % cfg.log_every == 0 or step == 1):
            for k, v in losses.items():
                self.writer.add_scalar(f"train/{k}", v, step)
            for k, o in self.task.optimizers.items():
                self.writer.add_scalar(f"lr/{k}", o.param_groups[0]["lr"], step)
        if cfg.val_every and (step % cfg.val_every == 0 or step == cfg.steps):
            metrics = self.validate()
            self._record(metrics, step)
            losses = {**losses, **{f"val_{k}": v for k, v in metrics.items()}}
        elif cfg.save_every and step % cfg.save_every == 0:
            self._save("last")
        if on_step is not None:
            on_step(step, losses)

    def _record(self, metrics: dict[str, float], step: int) -> None:
        if not metrics:
            return
        minutes = (time.perf_counter() - self._started) / 60
        self.progress.history.append({"step": step, "minutes": round(minutes, 2), **metrics})
        if self.writer is not None:
            for k, v in metrics.items():
                self.writer.add_scalar(f"val/{k}", v, step)
            self.task.log_media(self.writer, step)
        value = metrics[self.task.metric]
        if self.progress.best is None or value > self.progress.best:
            self.progress.best = value
            self._save("best")
        self._save("last")
