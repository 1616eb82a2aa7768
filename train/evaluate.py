"""``lipx eval``: score a checkpoint on a prepared split, as the papers' test scripts do.

The scoring is the task's, its training unit's ``evaluate`` (:mod:`lipx.train.tasks`).
Lipreading: top-1/top-5 and per-word accuracy and the most frequent confusions, with the
original's flip test-time augmentation (logits of the clip and its mirror image summed).
Lip-to-speech: whole clips, flip TTA (mels averaged before the postnet), Griffin-Lim from the
postnet's linear spectrogram, alignment to the reference audio, then STOI, ESTOI, narrow-band PESQ
and mel/linear L1; optionally the generated WAVs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from lipx.errors import InputError
from lipx.models.checkpoint import build_model, load_checkpoint
from lipx.train.tasks import training_task

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvalOptions:
    """What to evaluate and how."""

    checkpoint: Path
    data: Path
    """A prepared corpus."""
    split: str = ""
    """Split protocol (empty: ``lrw`` for lipreading, else ``unseen``/``overlap``/``four``)."""
    part: str = "test"
    """``train``, ``val`` or ``test``."""
    tta: bool = True
    """The original's horizontal-flip test-time augmentation."""
    batch_size: int = 8
    max_clips: int = 0
    """Score at most this many clips (0: all)."""
    griffin_lim_iters: int = 60
    wav_dir: Path | None = None
    """Write each generated waveform here (lip-to-speech)."""
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.part not in ("train", "val", "test"):
            raise InputError(f"part must be train, val or test, got {self.part!r}")
        if self.batch_size < 1 or self.max_clips < 0 or self.griffin_lim_iters < 1:
            raise InputError("batch size and Griffin-Lim iterations must be >= 1, max clips >= 0")


@dataclass
class EvalResult:
    """Metrics of one evaluation (JSON-friendly via ``to_dict``)."""

    task: str
    clips: int
    metrics: dict[str, float]
    per_word: dict[str, float] = field(default_factory=dict)
    confusions: list[tuple[str, str, int]] = field(default_factory=list)
    wavs: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"task": self.task, "clips": self.clips, "metrics": self.metrics,
                "per_word": self.per_word,
                "confusions": [{"true": a, "predicted": b, "count": c}
                               for a, b, c in self.confusions],
                "wavs": self.wavs}


def _loader(ckpt, opts: EvalOptions):
    from torch.utils.data import DataLoader, Subset

    from lipx.data.prepare_format import default_split
    from lipx.train import datasets as ds

    split = opts.split or default_split(ckpt.task, Path(opts.data))
    unit = training_task(ckpt.task)
    data: ds.PreparedDataset | Subset[Any] = unit.clips(
        opts.data, opts.part, split, window=unit.score_frames, video_spec=ckpt.video,
        audio_spec=ckpt.audio)
    if opts.max_clips:
        data = Subset(data, range(min(opts.max_clips, len(data))))
    return data, DataLoader(data, opts.batch_size, collate_fn=ds.collate)


def evaluate(opts: EvalOptions, progress: Callable[[int, int], None] | None = None) -> EvalResult:
    """Score ``opts.checkpoint`` on ``opts.data``; ``progress(done, total)`` after each batch."""
    from lipx.train.distributed import resolve_device

    ckpt = load_checkpoint(opts.checkpoint)
    device = resolve_device(opts.device)
    model = build_model(ckpt).to(device)
    data, loader = _loader(ckpt, opts)
    with torch.no_grad():
        return training_task(ckpt.task).evaluate(model, ckpt, loader, len(data), opts, device,
                                                 progress)

