"""``lipx train``: build the data, model and task from a :class:`TrainConfig` and run it."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

from lipx.data.prepare_format import default_split
from lipx.errors import InputError
from lipx.models.registry import get_family, preset_config
from lipx.tasks import CONTEXT
from lipx.train.config import TrainConfig
from lipx.train.distributed import DistInfo, setup, teardown
from lipx.train.loop import Progress, Trainer
from lipx.train.state import seed_everything
from lipx.train.task import TrainTask
from lipx.train.tasks import training_task
from lipx.video import VideoSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainResult:
    """What a finished (or resumed-and-finished) run reached."""

    out: Path
    steps: int
    best: float | None
    metric: str
    seconds: float
    history: list[dict[str, float]]


def _datasets(cfg: TrainConfig, split: str):
    """The training and validation sets of ``cfg`` on ``split``, and their collate function."""
    from lipx.train import datasets as ds

    unit = training_task(cfg.task)
    kw = {"seed": cfg.seed, "context": CONTEXT if cfg.streams else 0, "window": cfg.window}
    train = unit.clips(cfg.data, "train", split, augment=cfg.augment, **kw)
    val = unit.clips(cfg.data, "val", split, augment=False, **kw)
    if not cfg.erase:
        train.video_augment = dataclasses.replace(train.video_augment, erase_size=0)
    if cfg.streams:
        return (*_with_streams(cfg, unit, train, val), ds.collate)
    return train, val, ds.collate


def _with_streams(cfg: TrainConfig, unit: type[TrainTask], train, val):
    """The clip sets mixed with stream windows (``cfg.streams``, ``cfg.val_streams``): a share
    ``cfg.stream_share`` of the training items, cut as the clips are."""
    share = cfg.stream_share
    size = max(1, round(len(train) * share / (1 - share)))
    return unit.with_streams(cfg, train, val, size, frames=cfg.window,
                             prepared_margin=train.margin, video_augment=train.video_augment,
                             context=CONTEXT)


def _task(cfg: TrainConfig, info: DistInfo, labels: list[str], video_spec: VideoSpec):
    """The objective of ``cfg.task`` on a model of ``cfg.preset`` (from ``cfg.init``'s weights
    when given) for the vocabulary ``labels``, on faces of ``video_spec`` (the corpus' framing,
    :data:`lipx.landmarks.FRAMINGS`)."""
    unit = training_task(cfg.task)
    config = unit.model_config(cfg, preset_config(cfg.task, cfg.preset), len(labels) or None)
    model = get_family(cfg.task).build(config)
    if cfg.init:
        init_from(model, cfg.init, cfg.task, labels)
    return unit.create(model, config, cfg, info, labels, video_spec)


def init_from(model: torch.nn.Module, path: str, task: str, labels: list[str]) -> None:
    """Load a checkpoint's weights into ``model`` (``--set init=CKPT``).

    A lipreading checkpoint without the no-word class may start a model with it: its
    classifiers' rows are copied and the new last row keeps its fresh initialisation.

    Raises:
        InputError: another task, another vocabulary (the task's
            :meth:`~lipx.train.task.TrainTask.check_init`), or weights of other shapes.
    """
    from lipx.models.checkpoint import load_checkpoint

    if not Path(path).is_file():
        raise InputError(f"--set init={path}: no such checkpoint")
    ckpt = load_checkpoint(path)
    training_task(task).check_init(ckpt, path, labels)
    old = list(ckpt.vocabulary or [])
    state = model.state_dict()
    for name, value in ckpt.state_dict.items():
        target = state.get(name)
        value = value.to(target.dtype) if target is not None else value
        if target is None or (target.shape != value.shape and not (
                target.shape[1:] == value.shape[1:] and target.shape[0] == value.shape[0] + 1
                and len(old) == value.shape[0])):
            raise InputError(f"init checkpoint {path}: {name} does not fit this model "
                             f"({tuple(value.shape)} vs "
                             f"{None if target is None else tuple(target.shape)}); use the same "
                             "preset and options")
        if target.shape == value.shape:
            target.copy_(value)
        else:  # the classifier gains the no-word row
            target[:value.shape[0]] = value
    model.load_state_dict(state)
    log.info("started from the weights of %s", path)


def train(cfg: TrainConfig, resume: bool = False,
          on_step: Callable[[int, dict[str, float]], None] | None = None) -> TrainResult:
    """Train ``cfg.task`` on ``cfg.data`` into ``cfg.out``; ``resume`` continues ``last.lipx``.

    Raises:
        InputError: missing data, a run folder that already holds a run (without ``resume``),
            or ``resume`` without a run to continue.
    """
    cfg = cfg.resolved()
    out = Path(cfg.out)
    last = out / "last.lipx"
    if resume and not last.exists():
        raise InputError(f"--resume: {last} does not exist; start a new run without --resume")
    if not resume and last.exists():
        raise InputError(f"{out} already holds a run; pass --resume to continue it or choose "
                         "another --out")
    if not Path(cfg.data).is_dir():
        raise InputError(f"training data {cfg.data} is not a folder; prepare it with "
                         "`lipx data prepare` (or make one with `lipx data synth`)")
    info = setup(cfg.device)
    try:
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        seed_everything(cfg.seed + info.rank)
        split = cfg.split or default_split(cfg.task, Path(cfg.data))
        cfg = dataclasses.replace(cfg, split=split)
        train_set, val_set, collate = _datasets(cfg, split)
        labels = list(getattr(train_set, "labels", []))  # a Mixed set's include NO_WORD
        task = _task(cfg, info, labels, train_set.video_spec)
        if "synth" in train_set.corpus:  # provenance: lets `lipx demo` render held-out speakers
            task.meta["corpus_synth"] = train_set.corpus["synth"]
        if info.is_main:
            out.mkdir(parents=True, exist_ok=True)
            (out / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        trainer = Trainer(task, cfg, train_set, val_set, collate, info)
        if resume:
            trainer.resume(last)
        started = time.perf_counter()
        progress: Progress = trainer.fit(on_step)
        return TrainResult(out, progress.step, progress.best, task.metric,
                           time.perf_counter() - started, progress.history)
    finally:
        teardown()
