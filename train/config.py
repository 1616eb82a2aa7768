"""Training configuration: one frozen dataclass, from a YAML/TOML file plus command-line overrides.

Defaults are the papers' (SGD with Nesterov for lipreading, Adam with amsgrad 1e-4 for VCA-GAN);
``None`` fields take the task's default in :func:`task_defaults`. Precedence: defaults < file <
``--set key=value`` overrides < explicit CLI options. What differs between tasks is asked of the
task's training unit (:mod:`lipx.train.tasks`) and model family (:mod:`lipx.models.registry`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from lipx.errors import InputError, did_you_mean
from lipx.models.registry import get_family
from lipx.train.tasks import trainers, training_task


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run needs; saved into every checkpoint it writes."""

    task: str
    """``lipreading`` or ``lip2speech``."""
    data: str
    """A prepared corpus (``lipx data prepare``) folder."""
    out: str
    """Run folder: ``last.lipx``, ``best.lipx``, ``config.yaml``, TensorBoard logs."""
    preset: str = "small"
    """Model preset (``original``, ``original-mstcn``, ``small``, ``tiny``)."""
    split: str = ""
    """Split of the prepared corpus (GRID: ``overlap|unseen|four|sN``; LRW and synthetic LRW:
    ``lrw``). Empty: the corpus's default."""
    steps: int = 2000
    """Optimiser steps (generator steps for lip2speech)."""
    batch_size: int = 16
    """Clips per step per process."""
    lr: float | None = None
    """Learning rate (lipreading 0.1 SGD as the original; lip2speech 1e-4 Adam)."""
    optimizer: str | None = None
    """``sgd`` (Nesterov, momentum 0.9), ``adam`` (amsgrad) or ``adamw``."""
    weight_decay: float = 1e-5
    lr_milestones: tuple[int, ...] | None = None
    """Steps at which the learning rate is multiplied by ``lr_gamma``."""
    lr_gamma: float = 0.1
    warmup_steps: int = 0
    """Linear learning-rate warm-up from 0 (0: none, as the originals)."""
    window: int | None = None
    """Frames per training clip (lipreading 29, lip2speech 40)."""
    backend: str | None = None
    """Lipreading backend override: ``gru`` or ``mstcn``."""
    slots: int | None = None
    """Lipreading memory slot count override."""
    radius: float | None = None
    """Lipreading memory addressing radius override."""
    loss_weights: dict[str, float] = field(default_factory=dict)
    """Overrides of the task's loss weights (see ``lipx train TASK --help``)."""
    minutes: float = 0.0
    """Stop after this many minutes of training in this process (0: no limit), validating and
    saving first: a fixed time budget, as the small presets' recipes use."""
    val_every: int = 200
    """Validate (and save ``best``) every N steps; 0 disables."""
    val_batches: int = 0
    """Batches per validation (0: the whole validation split)."""
    log_every: int = 20
    save_every: int = 200
    """Write ``last.lipx`` every N steps (and on Ctrl-C and at the end)."""
    seed: int = 1
    workers: int = 0
    """DataLoader worker processes."""
    device: str = "auto"
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N``."""
    amp: str = "none"
    """Mixed precision on CUDA: ``none``, ``bf16`` or ``fp16``."""
    grad_clip: float = 5.0
    """Gradient-norm clip (0 disables)."""
    augment: bool = True
    """The originals' augmentations (flip, erasing, crop jitter, SpecAugment)."""
    erase: bool = True
    """Random erasing of a 56x56 square per clip (part of ``augment``, the originals'). The small
    presets' recipes turn it off: on the synthetic faces the square hides the whole mouth in
    about 40 % of clips, which slows a short CPU run down more than it regularises it."""
    threads: int = 0
    """torch CPU threads (0: torch's default)."""
    init: str = ""
    """Start from this checkpoint's weights (fine-tuning; empty: from scratch). Its vocabulary
    must be the corpus'; a classifier that lacks the no-word class (``streams``) gains it."""
    streams: str = ""
    """Training for streams: a folder of training streams (``lipx data synth OUT --layout
    lrw-streams|grid-streams --like CORPUS --part train``), or several separated by commas;
    streams in the wild (``--wild``) are aligned by ``--crop auto``'s face tracker, the crop they
    get at run time. Training then also draws windows anywhere in them
    (``train/stream_windows.py``), and every item carries the front-end's context frames, as the
    streaming runtime's cached front-end sees them. Lipreading: the model
    gains a last class, no-word, for windows not centred on a vocabulary word. Lip-to-speech:
    windows of ``window`` frames (set it to the stream window the package will run, 24 by
    default) with the stream's speech as the target, pauses, silence and still faces
    included. Empty: the paper's objective on clips only."""
    val_streams: str = ""
    """Held-out streams (``--part val``; several folders separated by commas) whose windows
    validation also scores; ``best`` is then picked by the mean of clip accuracy and window
    accuracy (``score``)."""
    stream_share: float = 0.5
    """Share of the training items that are stream windows (with ``streams``)."""
    stream_centre: int = 2
    """A window is labelled with a word when its centre is at most this many frames from the
    word's centre."""
    stream_margin: int = 6
    """... and no-word when it is more than this many frames from every word's centre (windows in
    between are not drawn)."""
    stream_hard: float = 0.0
    """Share of the no-word windows centred on a spoken word outside the vocabulary (LRW's
    context words, the hardest negatives); the others are drawn anywhere."""

    def __post_init__(self) -> None:
        unit = training_task(self.task)
        if self.minutes < 0:
            raise InputError(f"minutes must be >= 0, got {self.minutes}")
        for name in ("steps", "batch_size"):
            if getattr(self, name) < 1:
                raise InputError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.amp not in ("none", "bf16", "fp16"):
            raise InputError(f"amp must be none, bf16 or fp16, got {self.amp!r}")
        if self.optimizer not in (None, "sgd", "adam", "adamw"):
            raise InputError(f"optimizer must be sgd, adam or adamw, got {self.optimizer!r}")
        if self.backend is not None:
            _check_backend(self.task, self.backend)
        if self.val_streams and not unit.validates_streams:
            streaming = " and ".join(n for n, u in trainers().items() if u.validates_streams)
            raise InputError(f"val_streams applies to {streaming} only ({self.task} validates "
                             f"on the corpus' clips; score its streams with lipx eval-stream)")
        if self.val_streams and not self.streams:
            raise InputError("val_streams needs streams (a model trained with the no-word class)")
        if not 0.0 < self.stream_share < 1.0:
            raise InputError(f"stream_share must be in (0, 1), got {self.stream_share}")
        if not 0.0 <= self.stream_hard <= 1.0:
            raise InputError(f"stream_hard must be in [0, 1], got {self.stream_hard}")
        if not 0 <= self.stream_centre < self.stream_margin:
            raise InputError(f"need 0 <= stream_centre < stream_margin, got {self.stream_centre} "
                             f"and {self.stream_margin}")
        if self.window is not None and self.window < 1:
            raise InputError(f"window must be >= 1, got {self.window}")
        family = get_family(self.task)
        if self.window is not None and self.window < family.min_window:
            raise InputError(f"{self.task} windows need >= {family.min_window} frames "
                             f"({family.min_window_reason}), got {self.window}")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        if d["lr_milestones"] is not None:
            d["lr_milestones"] = list(d["lr_milestones"])
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise InputError(
                f"unknown training option {unknown[0]!r}{did_you_mean(unknown[0], known)}"
            )
        if d.get("lr_milestones") is not None:
            d = {**d, "lr_milestones": tuple(int(x) for x in d["lr_milestones"])}
        try:
            return cls(**d)
        except TypeError as e:
            raise InputError(f"training config: {e}") from e

    def resolved(self) -> TrainConfig:
        """This config with the task's defaults filled in for every ``None`` field."""
        defaults = task_defaults(self.task)
        return dataclasses.replace(
            self, **{k: v for k, v in defaults.items() if getattr(self, k) is None}
        )


def task_defaults(task: str) -> dict[str, Any]:
    """The papers' settings where the config leaves a field ``None`` (the task's training
    unit's :attr:`~lipx.train.task.TrainTask.defaults`)."""
    return dict(training_task(task).defaults)


def _check_backend(task: str, backend: str) -> None:
    """Raise InputError unless ``backend`` is one of the backends ``task``'s model family
    offers (naming every family's choices, or the tasks that have one)."""
    offered = {name: get_family(name).backends for name in trainers()}
    choices = list(dict.fromkeys(b for backends in offered.values() for b in backends))
    if backend not in choices:
        raise InputError(f"backend must be {' or '.join(choices)}, got {backend!r}")
    if backend not in offered[task]:
        having = " and ".join(name for name, backends in offered.items() if backends)
        raise InputError(f"--backend applies to {having} only")


def read_config_file(path: str | Path) -> dict[str, Any]:
    """A YAML (``.yaml``/``.yml``) or TOML (``.toml``) mapping of TrainConfig fields."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"config file {path} does not exist")
    text = path.read_text()
    try:
        if path.suffix == ".toml":
            import tomllib

            data = tomllib.loads(text)
        else:
            data = yaml.safe_load(text) or {}
    except Exception as e:
        raise InputError(f"config file {path} is not valid {path.suffix[1:].upper()}: {e}") from e
    if not isinstance(data, dict):
        raise InputError(f"config file {path} must hold a mapping of options")
    return data


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["steps=100", "loss_weights.recon=10"]`` -> a nested dict, values parsed as YAML."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise InputError(f"--set expects key=value, got {item!r}")
        key, raw = item.split("=", 1)
        value = yaml.safe_load(raw) if raw else ""
        node = out
        *parents, leaf = key.strip().split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """Recursive dict merge; ``extra`` wins."""
    out = dict(base)
    for k, v in extra.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out
