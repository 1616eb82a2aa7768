"""``lipx eval``: score a checkpoint on a prepared split, as the papers' test scripts do.

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

import numpy as np
import torch

from lipx import audio as laudio
from lipx.errors import InputError
from lipx.models.checkpoint import build_model, load_checkpoint

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
    data: ds.PreparedDataset | Subset[Any]
    if ckpt.task == "lipreading":
        data = ds.LipreadingDataset(opts.data, opts.part, protocol=split, augment=False,
                                    video_spec=ckpt.video)
    else:
        data = ds.LipToSpeechDataset(opts.data, opts.part, protocol=split, window=None,
                                     augment=False, video_spec=ckpt.video, audio_spec=ckpt.audio)
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
    run = _lipreading if ckpt.task == "lipreading" else _lip2speech
    with torch.no_grad():
        return run(model, ckpt, loader, len(data), opts, device, progress)


def _lipreading(model, ckpt, loader, total, opts, device, progress) -> EvalResult:
    from lipx.train.lipreading_task import confusion_summary
    from lipx.train.metrics import topk_correct

    vocab = ckpt.vocabulary or [str(i) for i in range(ckpt.config.num_classes)]
    logits_all, labels_all = [], []
    for batch in loader:
        video = batch["video"].to(device)
        logits = model(video)
        if opts.tta:
            logits = logits + model(video.flip(-1))
        logits_all.append(logits.float().cpu().numpy())
        labels_all.append(batch["label"].numpy())
        if progress:
            progress(sum(len(x) for x in labels_all), total)
    logits, labels = np.concatenate(logits_all), np.concatenate(labels_all)
    top1 = topk_correct(logits, labels, 1)
    per_word = {vocab[c]: float(top1[labels == c].mean()) for c in np.unique(labels)}
    return EvalResult(
        "lipreading", len(labels),
        {"top1": float(top1.mean()), "top5": float(topk_correct(logits, labels, 5).mean())},
        per_word=dict(sorted(per_word.items())),
        confusions=confusion_summary(labels, logits.argmax(1), vocab))


def _lip2speech(model, ckpt, loader, total, opts, device, progress) -> EvalResult:
    import soundfile as sf

    from lipx.train.lip2speech_task import synthesize
    from lipx.train.metrics import mean_scores, speech_scores

    spec = ckpt.audio
    rows, wavs, done = [], [], 0
    if opts.wav_dir:
        Path(opts.wav_dir).mkdir(parents=True, exist_ok=True)
    for batch in loader:
        lengths = batch["lengths"]
        mel, linear = synthesize(model, batch["video"].to(device), lengths.to(device), opts.tta)
        for i, n_frames in enumerate(lengths.tolist()):
            frames = 4 * n_frames
            lin = np.maximum(linear[i, 0, :, :frames].float().cpu().numpy(), 0.0)
            n = n_frames * spec.samples_per_video_frame()
            wav = laudio.spectrogram_to_wav(lin, spec, opts.griffin_lim_iters, length=n)
            ref = batch["wav"][i, :n].numpy()
            row = speech_scores(ref, wav, spec.sample_rate)
            row["mel_l1"] = float((mel[i, 0, :, :frames] - batch["mel"][i, 0, :, :frames]
                                   .to(device)).abs().mean())
            row["linear_l1"] = float(np.abs(lin - batch["linear"][i, 0, :, :frames].numpy()).mean())
            rows.append(row)
            if opts.wav_dir:
                path = Path(opts.wav_dir) / (str(batch["id"][i]).replace("/", "_") + ".wav")
                sf.write(path, wav, spec.sample_rate)
                wavs.append(str(path))
        done += len(lengths)
        if progress:
            progress(done, total)
    return EvalResult("lip2speech", len(rows), mean_scores(rows), wavs=wavs)
