"""``lipx train``: build the data, model and task from a :class:`TrainConfig` and run it."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, cast

import torch
import yaml

from lipx.audio import AudioSpec
from lipx.data.prepare_format import default_split
from lipx.errors import InputError
from lipx.models.registry import get_family, preset_config
from lipx.tasks import CONTEXT, NO_WORD
from lipx.train.config import TrainConfig
from lipx.train.distributed import DistInfo, setup, teardown
from lipx.train.loop import Progress, Trainer
from lipx.train.state import seed_everything
from lipx.video import VideoSpec

if TYPE_CHECKING:
    from lipx.models.lip2speech import Lip2SpeechModel
    from lipx.models.lipreading import LipreadingModel

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
    from lipx.train import datasets as ds

    kw = {"protocol": split, "seed": cfg.seed, "context": CONTEXT if cfg.streams else 0}
    if cfg.task == "lipreading":
        kw["frames"] = cfg.window
        train = ds.LipreadingDataset(cfg.data, "train", augment=cfg.augment, **kw)
        val = ds.LipreadingDataset(cfg.data, "val", augment=False, **kw)
    else:
        train = ds.LipToSpeechDataset(cfg.data, "train", augment=cfg.augment, window=cfg.window,
                                      **kw)
        val = ds.LipToSpeechDataset(cfg.data, "val", augment=False, window=cfg.window, **kw)
    if not cfg.erase:
        train.video_augment = dataclasses.replace(train.video_augment, erase_size=0)
    if cfg.streams:
        return (*_with_streams(cfg, train, val), ds.collate)
    return train, val, ds.collate


def _with_streams(cfg: TrainConfig, train, val):
    """The clip sets mixed with stream windows (``cfg.streams``, ``cfg.val_streams``)."""
    from lipx.train.datasets import Mixed
    from lipx.train.stream_windows import SpeechWindows, StreamWindows

    share = cfg.stream_share
    size = max(1, round(len(train) * share / (1 - share)))
    common = {"frames": cfg.window, "prepared_margin": train.margin,
              "video_augment": train.video_augment, "context": CONTEXT}
    if cfg.task == "lip2speech":
        speech = SpeechWindows(cfg.streams, size, augment=cfg.augment, seed=cfg.seed, **common)
        return Mixed(train, speech, []), val
    labels = [*train.labels, NO_WORD]
    windows = {**common, "centre": cfg.stream_centre, "margin": cfg.stream_margin,
               "hard": cfg.stream_hard}
    train_windows = StreamWindows(cfg.streams, labels, size, augment=cfg.augment,
                                  seed=cfg.seed, **windows)
    mixed_train = Mixed(train, train_windows, labels)
    if not cfg.val_streams:
        return mixed_train, Mixed(val, None, labels)
    val_windows = StreamWindows(cfg.val_streams, labels, max(len(val), 200), augment=False,
                                seed=cfg.seed + 1, **windows)
    return mixed_train, Mixed(val, val_windows, labels)


def _model_config(cfg: TrainConfig, num_classes: int | None):
    config = preset_config(cfg.task, cfg.preset)
    if cfg.task == "lipreading":
        changes = {"num_classes": num_classes}
        if cfg.backend:
            changes["backend"] = cfg.backend
        if cfg.slots:
            changes["memory_slots"] = cfg.slots
        if cfg.radius:
            changes["memory_radius"] = cfg.radius
        config = dataclasses.replace(config, **changes)
    return config


def _task(cfg: TrainConfig, info: DistInfo, labels: list[str]):
    family = get_family(cfg.task)
    config = _model_config(cfg, len(labels) or None)
    model = family.build(config)
    if cfg.init:
        init_from(model, cfg.init, cfg.task, labels)
    if cfg.task == "lipreading":
        from lipx.train.lipreading_task import LipreadingTask

        return LipreadingTask(cast("LipreadingModel", model), cfg, info, cfg.preset, labels,
                              VideoSpec())
    from lipx.train.lip2speech_task import Lip2SpeechTask

    aux = family.build_aux(config)["discriminators"]
    return Lip2SpeechTask(cast("Lip2SpeechModel", model), aux, cfg, info, cfg.preset,
                          VideoSpec(), AudioSpec())


def init_from(model: torch.nn.Module, path: str, task: str, labels: list[str]) -> None:
    """Load a checkpoint's weights into ``model`` (``--set init=CKPT``).

    A lipreading checkpoint without the no-word class may start a model with it: its
    classifiers' rows are copied and the new last row keeps its fresh initialisation.

    Raises:
        InputError: another task, another vocabulary, or weights of other shapes.
    """
    from lipx.models.checkpoint import load_checkpoint

    if not Path(path).is_file():
        raise InputError(f"--set init={path}: no such checkpoint")
    ckpt = load_checkpoint(path)
    if ckpt.task != task:
        raise InputError(f"init checkpoint {path} is a {ckpt.task} model, not {task}")
    old = list(ckpt.vocabulary or [])
    gains_no_word = labels[-1:] == [NO_WORD] and old == labels[:-1]
    if task == "lipreading" and old != labels and not gains_no_word:
        raise InputError(f"init checkpoint {path} reads other words ({', '.join(old[:4])}, ...) "
                         f"than this corpus ({', '.join(labels[:4])}, ...)")
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
        task = _task(cfg, info, labels)
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
