"""What training asks of a task: the interface of a task's training unit.

    unit = training_task(cfg.task)                     # lipx.train.tasks
    train_set = unit.clips(cfg.data, "train", split, window=cfg.window, augment=True)
    task = unit.create(model, config, cfg, info, labels)   # what the loop runs
    result = unit.evaluate(model, ckpt, loader, total, opts, device, progress)

A task's training unit is the class of its objective (:class:`~lipx.train.lipreading_task.
LipreadingTask`, :class:`~lipx.train.lip2speech_task.Lip2SpeechTask`). An instance is what the
loop runs (:class:`~lipx.train.loop.Task`); the class says what else differs between tasks in
training: the papers' defaults, its clip sets and stream windows, how the training options
change its model's config, what a checkpoint must be to start it, and how ``lipx eval`` scores
it. ``lipx train``, the training config, ``lipx eval`` and the benchmarks ask the unit and never
compare task names; the model's facts are its family's (:class:`~lipx.models.family.Family`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from lipx.errors import InputError

if TYPE_CHECKING:
    import torch
    from torch import nn
    from torch.utils.data import DataLoader, Dataset

    from lipx.models.checkpoint import Checkpoint
    from lipx.train.config import TrainConfig
    from lipx.train.datasets import PreparedDataset
    from lipx.train.distributed import DistInfo
    from lipx.train.evaluate import EvalOptions, EvalResult
    from lipx.train.loop import Task
    from lipx.video import VideoSpec


class TrainTask(ABC):
    """One task's training unit (see the module docstring); its methods are class methods."""

    name: ClassVar[str]
    """The task's name, as in the checkpoint and the model family (``Family.task``)."""
    defaults: ClassVar[dict[str, Any]] = {}
    """The papers' settings of the :class:`~lipx.train.config.TrainConfig` fields a config
    leaves ``None`` (optimizer, learning rate, window, milestones)."""
    validates_streams: ClassVar[bool] = False
    """Whether validation can also score held-out stream windows (``val_streams``)."""
    score_frames: ClassVar[int | None] = None
    """Frames per clip when a model is scored on a corpus (``lipx eval``, ``lipx bench
    --data``); None: the scorer's choice (whole clips, or the package's window)."""

    @classmethod
    @abstractmethod
    def clips(cls, root: str | Path, part: str, protocol: str, *, window: int | None,
              augment: bool = False, **options: Any) -> PreparedDataset:
        """The task's clip set of ``part`` of ``protocol`` in the prepared corpus ``root``.

        Args:
            window: frames per clip (None: each clip's own length).
            augment: the originals' training augmentations.
            **options: the data set's other options (``seed``, ``context``, ``video_spec``,
                ``audio_spec``).
        """

    @classmethod
    @abstractmethod
    def with_streams(cls, cfg: TrainConfig, train: PreparedDataset, val: PreparedDataset,
                     size: int, **windows: Any) -> tuple[Dataset, Dataset]:
        """The clip sets mixed with stream windows (``cfg.streams``, ``cfg.val_streams``).

        Args:
            size: stream windows in the training set.
            **windows: the window sets' shared options (``frames``, ``prepared_margin``,
                ``video_augment``, ``context``).
        """

    @classmethod
    def model_config(cls, cfg: TrainConfig, config: Any, classes: int | None) -> Any:
        """The preset's model ``config`` with the training options that change it applied
        (``classes``: the corpus' word classes, None without)."""
        return config

    @classmethod
    @abstractmethod
    def create(cls, model: nn.Module, config: Any, cfg: TrainConfig, info: DistInfo,
               labels: list[str], video_spec: VideoSpec) -> Task:
        """The objective the loop trains ``model`` (built from ``config``) with, on faces of
        ``video_spec`` (the training set's: its framing goes into the checkpoints)."""

    @classmethod
    def check_init(cls, ckpt: Checkpoint, path: str, labels: list[str]) -> None:
        """Raise InputError when ``ckpt`` cannot start a model of this task (``--set init``):
        it is another task's."""
        if cls.name != ckpt.task:
            raise InputError(f"init checkpoint {path} is a {ckpt.task} model, not {cls.name}")

    @classmethod
    @abstractmethod
    def evaluate(cls, model: nn.Module, ckpt: Checkpoint, loader: DataLoader, total: int,
                 opts: EvalOptions, device: torch.device,
                 progress: Callable[[int, int], None] | None) -> EvalResult:
        """``lipx eval``: score ``model`` on the ``total`` clips of ``loader``, calling
        ``progress(done, total)`` after each batch."""
