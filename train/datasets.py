"""PyTorch data sets over a prepared corpus (``lipx data prepare`` / ``lipx data synth``).

- :class:`LipreadingDataset`: whole word clips (29 frames), the label, and the audio branch's
  features (:func:`lipx.audio.lipreading_features`, 4 frames per video frame), with the LRW
  augmentations and SpecAugment in training.
- :class:`LipToSpeechDataset`: random windows (40 frames by default; ``window=None`` gives whole
  clips for evaluation) with the normalised mel (80 x 4W), linear magnitude (321 x 4W) and the raw
  waveform (640 W samples), computed on the whole clip then cut, as the original; GRID
  augmentations in training.

Pixels go through :func:`lipx.video.mouth_crop` and audio through :mod:`lipx.audio`, the same
functions the runtime uses. Items are dicts of tensors; :func:`collate` pads them along time and
adds ``lengths``. Each item's random draws come from ``numpy.random.default_rng((seed, epoch,
index))``, so a run is reproducible for any number of loader workers (call :meth:`set_epoch`).
"""

from __future__ import annotations

import logging
from collections.abc import Sized
from pathlib import Path
from typing import cast

import numpy as np
import torch
from torch.utils.data import Dataset

from lipx import audio as aud
from lipx.audio import AudioSpec
from lipx.data.prepare_format import corpus_framing, read_clip, read_corpus, select
from lipx.errors import InputError
from lipx.train import augment
from lipx.video import VideoSpec, mouth_crop, region_origin

log = logging.getLogger(__name__)


def model_frames(region: np.ndarray, spec: VideoSpec, margin: int, rng: np.random.Generator,
                 video_augment: augment.VideoAugment, train: bool) -> np.ndarray:
    """Stored regions (``margin`` pixels around the mouth box) -> (T, 112, 112) float32 model
    input; with ``train``, one augmentation draw for all of the frames."""
    draw = augment.draw_video(rng, video_augment) if train else None
    x = mouth_crop(region, spec, origin=region_origin(spec, margin),
                   shift=draw.shift if draw else (0, 0))
    return augment.apply_video(x, draw, video_augment.erase_size) if draw else x


def with_context(region: np.ndarray, start: int, length: int,
                 context: int) -> tuple[np.ndarray, tuple[int, int]]:
    """Frames ``start - context .. start + length + context`` of ``region`` that exist, and how
    many zero frames stand in for the missing ones before and after (the whole model's padding,
    and the runtime's zero context at a stream's ends)."""
    first, last = max(start - context, 0), min(start + length + context, len(region))
    return region[first:last], (first - (start - context), start + length + context - last)


def pad_frames(video: np.ndarray, pads: tuple[int, int]) -> np.ndarray:
    """``video`` (T, H, W) with ``pads`` zero frames before and after."""
    return np.pad(video, (pads, (0, 0), (0, 0))) if any(pads) else video


class PreparedDataset(Dataset):
    """Clips of one split of a prepared corpus; the base of the two model-specific sets.

    Args:
        root: prepared corpus folder.
        protocol: split protocol (``lrw``; GRID ``overlap``, ``unseen``, ``four``, ``sN``).
        part: ``train``, ``val`` or ``test``.
        augment: apply the training augmentations; None means ``part == "train"``.
        seed: base of every item's random generator.
        video_spec: preprocessing of the frames (the model's).
    """

    video_augment = augment.VideoAugment.grid()

    def __init__(self, root: str | Path, protocol: str, part: str, augment: bool | None = None,
                 seed: int = 0, video_spec: VideoSpec | None = None) -> None:
        self.root = Path(root)
        self.corpus, records = read_corpus(self.root)
        self.records = select(records, protocol, part)
        if not self.records:
            raise InputError(f"split {protocol}/{part} of {self.root} has no clips")
        self.augment = part == "train" if augment is None else augment
        self.seed, self.epoch = seed, 0
        self.video_spec = video_spec or VideoSpec(framing=corpus_framing(self.corpus))
        self.margin = int(self.corpus["margin"])
        if self.augment and self.video_augment.jitter > self.margin:
            raise InputError(f"crop jitter {self.video_augment.jitter} px needs a prepared "
                             f"margin of at least that; this corpus has {self.margin} px")

    def __len__(self) -> int:
        return len(self.records)

    def set_epoch(self, epoch: int) -> None:
        """Change the random draws for a new epoch (deterministic per seed, epoch and index)."""
        self.epoch = epoch

    def rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng((self.seed, self.epoch, index))

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray, dict]:
        """(T, S, S) uint8 region, (640 T,) float32 audio, record."""
        record = self.records[index]
        video, wav, _ = read_clip(self.root / record["path"])
        return video, wav, record

    def frames(self, region: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Stored regions -> (T, 112, 112) float32 model input, augmented when training."""
        return model_frames(region, self.video_spec, self.margin, rng, self.video_augment,
                            self.augment)


class LipreadingDataset(PreparedDataset):
    """Word clips for lipreading.

    Items: ``video`` (1, T, 112, 112) float32, ``audio`` (1, 80, 4T) float32 (the audio branch's
    CMVN log-mel), ``label`` int64, ``length`` T, ``id``. T = ``frames`` (clips are centre-cut or
    zero-padded to it; None keeps each clip's length).
    """

    video_augment = augment.VideoAugment.lrw()

    def __init__(self, root: str | Path, part: str = "train", protocol: str = "lrw",
                 augment: bool | None = None, seed: int = 0, frames: int | None = 29,
                 video_spec: VideoSpec | None = None, audio_spec: AudioSpec | None = None,
                 context: int = 0) -> None:
        super().__init__(root, protocol, part, augment, seed, video_spec)
        self.audio_spec = audio_spec or AudioSpec.lipreading()
        self.num_frames = frames
        self.context = context
        """Zero frames added to each side of ``video`` (training for streams, where every item
        carries the front-end's context: for a clip, the zeros the whole model pads with)."""
        if any(r.get("label") is None for r in self.records):
            raise InputError(f"{self.root} has clips without word labels; lipreading needs an "
                             "LRW-layout corpus (lipx data prepare lrw, or lipx data synth "
                             "--layout lrw)")

    @property
    def labels(self) -> list[str]:
        return list(self.corpus.get("labels", []))

    def _cut(self, region: np.ndarray, wav: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
        t = self.num_frames
        if t is None or len(region) == t:
            return region, wav, len(region)
        per = self.audio_spec.samples_per_video_frame()
        start = max(0, (len(region) - t) // 2)
        region, wav = region[start:start + t], wav[start * per:(start + t) * per]
        return region, wav, len(region)

    def __getitem__(self, index: int) -> dict:
        region, wav, record = self.load(index)
        region, wav, length = self._cut(region, wav)
        rng = self.rng(index)
        video = self.frames(region, rng)
        feats = aud.lipreading_features(wav, self.audio_spec, length)
        if self.augment:
            feats = augment.spec_augment(feats, rng)
        if self.num_frames is not None and length < self.num_frames:
            video = np.pad(video, ((0, self.num_frames - length), (0, 0), (0, 0)))
            feats = aud.crop_frames(feats, self.num_frames, self.audio_spec)
        video = pad_frames(video, (self.context, self.context))
        return {"video": torch.from_numpy(video)[None], "audio": torch.from_numpy(feats)[None],
                "label": torch.tensor(record["label"], dtype=torch.long), "length": length,
                "id": record["id"], "stream": False}


class LipToSpeechDataset(PreparedDataset):
    """Windows of sentences for lip-to-speech.

    Items: ``video`` (1, W, 112, 112), ``mel`` (1, 80, 4W) in [-1, 1], ``linear`` (1, 321, 4W),
    ``wav`` (640 W,) raw audio (the reference for STOI/PESQ), ``length`` W, ``start`` (first frame
    in the clip), ``id``. W = ``window`` (a random start per item), or the whole clip when the clip
    is shorter or ``window`` is None. With ``context``, ``video`` has that many more frames on
    each side: the window's neighbours in the clip, zero frames past its ends (the whole model's
    padding), as the streaming runtime's cached front-end sees a window.
    """

    video_augment = augment.VideoAugment.grid()

    def __init__(self, root: str | Path, part: str = "train", protocol: str = "overlap",
                 window: int | None = 40, augment: bool | None = None, seed: int = 0,
                 video_spec: VideoSpec | None = None, audio_spec: AudioSpec | None = None,
                 context: int = 0) -> None:
        super().__init__(root, protocol, part, augment, seed, video_spec)
        if window is not None and window < 5:
            raise InputError(f"window must be >= 5 frames (the 3D convolution spans 5), "
                             f"got {window}")
        self.window = window
        self.audio_spec = audio_spec or AudioSpec()
        self.context = context

    def __getitem__(self, index: int) -> dict:
        region, wav, record = self.load(index)
        rng = self.rng(index)
        total = len(region)
        mel, linear = aud.spectrograms(wav, self.audio_spec, total)
        length = total if self.window is None else min(self.window, total)
        start = int(rng.integers(0, total - length + 1))
        k = self.audio_spec.mel_frames_per_video_frame
        per = self.audio_spec.samples_per_video_frame()
        frames, pads = with_context(region, start, length, self.context)
        video = pad_frames(self.frames(frames, rng), pads)
        return {"video": torch.from_numpy(video)[None],
                "mel": torch.from_numpy(mel[:, start * k:(start + length) * k])[None],
                "linear": torch.from_numpy(linear[:, start * k:(start + length) * k])[None],
                "wav": torch.from_numpy(aud.fit_length(wav[start * per:], length * per)),
                "length": length, "start": start, "id": record["id"]}


class Mixed(Dataset):
    """Clips of a prepared corpus, then stream windows (:mod:`lipx.train.stream_windows`), as one
    set (lipreading: whose vocabulary, ``labels``, ends in the no-word class); without windows,
    the clips alone relabelled to that vocabulary (a validation set without held-out
    streams)."""

    def __init__(self, clips: PreparedDataset, windows: Dataset | None,
                 labels: list[str]) -> None:
        self.clips, self.windows, self.labels = clips, windows, labels
        self.corpus, self.video_spec = clips.corpus, clips.video_spec

    def __len__(self) -> int:
        return len(self.clips) + (len(cast(Sized, self.windows)) if self.windows is not None
                                  else 0)

    def set_epoch(self, epoch: int) -> None:
        for part in (self.clips, self.windows):
            if part is not None and hasattr(part, "set_epoch"):
                part.set_epoch(epoch)

    def __getitem__(self, index: int) -> dict:
        n = len(self.clips)
        if index < n:
            return self.clips[index]
        assert self.windows is not None, "index past the clips of a set without windows"
        return self.windows[index - n]


def _pad_time(tensors: list[torch.Tensor], axis: int) -> torch.Tensor:
    size = max(t.shape[axis] for t in tensors)
    out = []
    for t in tensors:
        pad = [0, 0] * (t.dim() - 1 - axis % t.dim()) + [0, size - t.shape[axis]]
        out.append(torch.nn.functional.pad(t, pad))
    return torch.stack(out)


_TIME_AXIS = {"video": 1, "audio": -1, "mel": -1, "linear": -1, "wav": -1}
"""The time axis of each item entry (video is (1, T, H, W))."""


def collate(batch: list[dict]) -> dict:
    """Stack items, zero-padding time to the longest (as the original), with ``lengths``.

    Returns:
        The same keys, batched: tensors get a leading batch axis; ``length`` becomes ``lengths``
        (B,) int64; ``label`` (B,) int64; ``id`` a list; other values lists.
    """
    out: dict = {"lengths": torch.tensor([b["length"] for b in batch], dtype=torch.long)}
    for key in batch[0]:
        values = [b[key] for b in batch]
        if key in _TIME_AXIS:
            out[key] = _pad_time(values, _TIME_AXIS[key])
        elif key == "label":
            out[key] = torch.stack(values)
        elif key != "length":
            out[key] = values
    return out
