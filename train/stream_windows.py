"""Training windows cut anywhere in continuous streams, labelled as a stream's word head reads them.

A lipreading model trained only on clips with one word centred votes confidently in every window
a stream shows it: between words, in pauses, on a face that does not speak. :class:`StreamWindows`
teaches it what a window should report instead: the vocabulary word whose centre is within
``centre`` frames of the window's centre, or :data:`lipx.tasks.NO_WORD` when every vocabulary
word's centre is more than ``margin`` frames away (context words, pauses, silence, still faces,
and the boundaries between words). Windows in the band between the two are never drawn, so the
targets do not contradict each other a frame apart. Half of the windows are drawn on a word (a
uniform offset within ``centre``), half elsewhere: anywhere, or (a share ``hard`` of them)
centred on a spoken word outside the vocabulary, LRW's context words, which a stream's reader
most often mistakes for a vocabulary word.

Each window comes with the front-end's context frames on each side (``context``), so the model
learns from the features the streaming runtime gives it: its cached front-end sees a window's
neighbours, where the whole model on the window alone would see zero padding (a model trained on
clips only learns to lean on those zero-padded edges, and reads a stream's windows off by half a
word). Clips get zero frames there, which is exactly the whole model's padding.

Windows that reach past either end of a stream are padded by repeating its first or last frame
(and with silent audio), as the runtime pads a stream (``task_spec.stream_defaults.pad``), so the
first and last words of a stream get centred windows too.

:class:`SpeechWindows` does the same for lip-to-speech: windows of the runtime's length drawn
anywhere in GRID streams (sentences and the pauses, silence and still faces between them), the
stream's own speech as the target, the front-end's context around each (zero frames past a
stream's ends, the runtime's zero context there).

The streams come from ``lipx data synth OUT --layout lrw-streams --part train`` (the training
speakers; ``--part val`` gives held-out ones for validation). Each is decoded once, when the set
is made, into the stored mouth region that :class:`~lipx.train.datasets.LipreadingDataset` reads
from a prepared corpus, so both kinds of item go through the same crop, augmentation and audio
features.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch
from torch.utils.data import Dataset

from lipx import audio as aud
from lipx.audio import AudioSpec
from lipx.data.formats import NON_SPEECH, read_segments
from lipx.data.prepare import track_faces
from lipx.errors import InputError
from lipx.landmarks import one_opencv_thread
from lipx.runtime.landmark_tracker import LandmarkTracker
from lipx.runtime.stream_eval import StreamItem, read_stream_set
from lipx.tasks import NO_WORD
from lipx.train import augment as aug
from lipx.train.datasets import model_frames, pad_frames, with_context
from lipx.video import VideoSpec, mouth_region, read_video

log = logging.getLogger(__name__)


def read_stream_sets(folders: str | Path) -> list[StreamItem]:
    """The streams of a ``streams`` setting: one folder, or several separated by commas (e.g.
    aligned streams and their twins in the wild, ``lipx data synth --wild``), in order."""
    names = [f.strip() for f in str(folders).split(",") if f.strip()]
    if not names:
        raise InputError("no streams folder given")
    return [item for name in names for item in read_stream_set(Path(name))]


@dataclass(frozen=True)
class DecodedStream:
    """One stream, ready to cut: mouth regions, audio and its vocabulary words' centres."""

    name: str
    region: np.ndarray
    """(T, S, S) uint8 luma mouth box plus the margin."""
    wav: np.ndarray
    """(640 T,) float32 16 kHz speech."""
    centres: np.ndarray
    """Centres (in frames, fractional) of its vocabulary words, in time order."""
    labels: np.ndarray
    """Class index of each of those words."""
    others: np.ndarray = field(default_factory=lambda: np.zeros(0))
    """Centres (frames) of its spoken words outside the vocabulary (LRW's context words)."""


def decode_stream(video: Path, align: Path, wav: Path | None, vocabulary: list[str],
                  spec: VideoSpec, margin: int, audio_spec: AudioSpec) -> DecodedStream:
    """Read one stream of a set into a :class:`DecodedStream`.

    A stream of aligned faces (``face_size`` square frames) is cut at the fixed mouth box, as
    ``--crop lrw`` cuts it; any other (a stream in the wild, ``lipx data synth --wild``) is
    aligned frame by frame by ``--crop auto``'s face tracker first, the crop a stream of it gets
    at run time.
    """
    frames = read_video(video, spec.fps)
    if frames.shape[1:3] != (spec.face_size, spec.face_size):
        tracker = LandmarkTracker(fps=spec.fps, framing=spec.framing)
        faces = track_faces(frames, tracker, spec.face_size)
        if faces is None:
            raise InputError(f"{video}: the face tracker found no face in any frame")
        frames = faces
    region = mouth_region(frames, spec, margin)
    per = audio_spec.samples_per_video_frame()
    if wav is not None:
        samples, rate = sf.read(wav, dtype="float32")
        if rate != audio_spec.sample_rate:
            raise InputError(f"{wav}: {rate} Hz, expected {audio_spec.sample_rate}")
    else:
        samples = np.zeros(0, np.float32)
    index = {w: i for i, w in enumerate(vocabulary)}
    segments = read_segments(align)
    words = [s for s in segments if s.word in index]

    def centres(of: list) -> np.ndarray:
        return np.array([(s.start + s.end) / 2 * spec.fps for s in of], np.float64)

    others = [s for s in segments if s.word not in index and s.word not in NON_SPEECH]
    return DecodedStream(video.stem, region, aud.fit_length(samples, len(region) * per),
                         centres(words), np.array([index[s.word] for s in words], np.int64),
                         centres(others))


POOL_FROM = 8
"""Streams in a set from which :func:`decode_streams` decodes them in parallel by default."""


def decode_streams(items: list[StreamItem], vocabulary: list[str], spec: VideoSpec, margin: int,
                   audio_spec: AudioSpec, workers: int = 0) -> list[DecodedStream]:
    """:func:`decode_stream` of every stream of a set, in order, by ``workers`` processes (0: one
    per CPU core for a set of :data:`POOL_FROM` streams or more, else this one: starting a
    process costs seconds). A stream in the wild costs a face tracking pass (about 5 ms a
    640x480 frame on one core), minutes for a training set, so the cores share it."""
    job = partial(_decode_item, vocabulary=vocabulary, spec=spec, margin=margin,
                  audio_spec=audio_spec)
    if not workers:
        workers = os.cpu_count() or 1 if len(items) >= POOL_FROM else 1
    workers = min(workers, len(items))
    if workers <= 1:
        return [job(item) for item in items]
    context = multiprocessing.get_context("spawn")  # safe when torch threads exist in the parent
    with ProcessPoolExecutor(max_workers=workers, mp_context=context,
                             initializer=one_opencv_thread) as pool:
        return list(pool.map(job, items))


def _decode_item(item: StreamItem, **kwargs: Any) -> DecodedStream:
    return decode_stream(item.video, item.align, item.wav, **kwargs)


class StreamWindows(Dataset):
    """Windows of ``frames`` frames drawn from a set of streams (see the module docstring).

    Items are those of :class:`~lipx.train.datasets.LipreadingDataset` (``video``, ``audio``,
    ``label``, ``length``, ``id``), the label :data:`NO_WORD`'s index (the last) for no-word
    windows, plus ``stream`` True.

    Args:
        root: a streams folder (``streams.jsonl``), or several separated by commas; aligned
            faces, or streams in the wild (aligned by the face tracker, :func:`decode_stream`).
        vocabulary: the class labels, the corpus' words then :data:`NO_WORD`.
        size: items per epoch (each draws its own window; ``set_epoch`` changes the draws).
        frames: window length (the clips').
        centre: a word's window has its centre at most this many frames from the word's.
        margin: a no-word window has its centre more than this many frames from every word's.
        hard: share of the no-word windows centred (within ``centre``) on a spoken word outside
            the vocabulary, the hardest negatives (LRW's context words, said right next to
            the vocabulary words); the others are drawn anywhere.
        augment: the clips' training augmentations (flip, crop jitter, SpecAugment).
        seed: base of every item's random generator.
        video_augment: the augmentation settings (the clip set's, so both match).
        prepared_margin: pixels stored around the mouth box (at least the crop jitter).
        context: frames added to ``video`` on each side, the window's neighbours in the stream:
            what the runtime's cached front-end sees (its features at the window's edges are
            not the zero-padded ones of the whole model on the window alone).
        workers: processes decoding the streams (0: one per CPU core; :func:`decode_streams`).
    """

    def __init__(self, root: str | Path, vocabulary: list[str], size: int, frames: int = 29,
                 centre: int = 2, margin: int = 6, hard: float = 0.0, augment: bool = True,
                 seed: int = 0,
                 video_augment: aug.VideoAugment | None = None, prepared_margin: int = 8,
                 video_spec: VideoSpec | None = None,
                 audio_spec: AudioSpec | None = None, context: int = 0, workers: int = 0) -> None:
        if not vocabulary or vocabulary[-1] != NO_WORD:
            raise InputError(f"stream windows need a vocabulary ending in {NO_WORD!r}")
        if size < 1 or frames < 1:
            raise InputError(f"need size >= 1 and frames >= 1, got {size} and {frames}")
        if not 0 <= centre < margin:
            raise InputError(f"need 0 <= centre < margin frames, got {centre} and {margin}")
        self.root = str(root)
        self.vocabulary, self.size, self.num_frames = list(vocabulary), size, frames
        if not 0.0 <= hard <= 1.0:
            raise InputError(f"hard must be a share in [0, 1], got {hard}")
        self.centre, self.margin, self.hard = centre, margin, hard
        self.augment, self.seed, self.epoch = augment, seed, 0
        self.video_augment = video_augment or aug.VideoAugment.lrw()
        self.video_spec = video_spec or VideoSpec()
        self.audio_spec = audio_spec or AudioSpec.lipreading()
        self.prepared_margin = prepared_margin
        self.context = context
        if self.augment and self.video_augment.jitter > prepared_margin:
            raise InputError(f"crop jitter {self.video_augment.jitter} px needs a margin of at "
                             f"least that, got {prepared_margin}")
        items = read_stream_sets(root)
        log.info("decoding %d training streams in %s", len(items), self.root)
        words = vocabulary[:-1]
        self.streams = decode_streams(items, words, self.video_spec, prepared_margin,
                                      self.audio_spec, workers)
        if not any(len(s.centres) for s in self.streams):
            raise InputError(f"the streams in {self.root} say no word of the vocabulary "
                             f"({', '.join(words[:5])}, ...); make them with --like the "
                             "training corpus")

    def __len__(self) -> int:
        return self.size

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def draw(self, rng: np.random.Generator) -> tuple[DecodedStream, int, int]:
        """(stream, first frame, label) of one window: a word's or a no-word one."""
        on_word = rng.random() < 0.5
        for _ in range(100):
            stream = self.streams[int(rng.integers(len(self.streams)))]
            n = len(stream.region)
            if on_word:
                if not len(stream.centres):
                    continue
                k = int(rng.integers(len(stream.centres)))
                centre = stream.centres[k] + rng.uniform(-self.centre, self.centre)
                label = int(stream.labels[k])
            else:
                if len(stream.others) and rng.random() < self.hard:
                    k = int(rng.integers(len(stream.others)))
                    centre = stream.others[k] + rng.uniform(-self.centre, self.centre)
                else:
                    centre = rng.uniform(0, n)
                if len(stream.centres) and np.abs(stream.centres - centre).min() <= self.margin:
                    continue
                label = len(self.vocabulary) - 1
            return stream, int(round(centre - self.num_frames / 2)), label
        raise InputError(f"could not draw a {'word' if on_word else 'no-word'} window from "
                         f"{self.root}: the streams are too short or too full of words")

    def window(self, stream: DecodedStream, first: int) -> tuple[np.ndarray, np.ndarray]:
        """Frames ``first .. first + frames`` of a stream with ``context`` more on each side (the
        frames the runtime's cached front-end sees around the window; edge frames repeated past
        the stream's ends) and the audio of the window's own frames (silence past the ends)."""
        n, t, c = len(stream.region), self.num_frames, self.context
        index = np.clip(np.arange(first - c, first + t + c), 0, n - 1)
        per = self.audio_spec.samples_per_video_frame()
        wav = np.zeros(t * per, np.float32)
        a, b = max(first, 0), min(first + t, n)
        if b > a:
            wav[(a - first) * per:(b - first) * per] = stream.wav[a * per:b * per]
        return stream.region[index], wav

    def __getitem__(self, index: int) -> dict:
        rng = np.random.default_rng((self.seed, 0x57, self.epoch, index))
        stream, first, label = self.draw(rng)
        region, wav = self.window(stream, first)
        video = model_frames(region, self.video_spec, self.prepared_margin, rng,
                             self.video_augment, self.augment)
        feats = aud.lipreading_features(wav, self.audio_spec, self.num_frames)
        if self.augment:
            feats = aug.spec_augment(feats, rng)
        return {"video": torch.from_numpy(video)[None], "audio": torch.from_numpy(feats)[None],
                "label": torch.tensor(label, dtype=torch.long), "length": self.num_frames,
                "id": f"{stream.name}@{first}", "stream": True}



class SpeechWindows(Dataset):
    """Lip-to-speech windows of ``frames`` frames, each starting anywhere in a set of streams
    (``lipx data synth OUT --layout grid-streams --part train``), as the runtime slides them.

    Items are those of :class:`~lipx.train.datasets.LipToSpeechDataset` (``video`` with
    ``context`` frames on each side, ``mel``, ``linear``, ``wav``, ``length``, ``start``,
    ``id``): the context frames are the window's neighbours in the stream, zero frames past its
    ends. The spectrograms are computed once per stream, on all of its speech, as a clip's are.

    Args:
        root: a streams folder (``streams.jsonl``), or several separated by commas, each stream
            with its ``.wav``.
        size: items per epoch (each draws its own window; ``set_epoch`` changes the draws).
        frames: window length.
        augment, seed, video_augment, prepared_margin, video_spec, context, workers: as
            :class:`StreamWindows`.
        audio_spec: the model's audio parameters (the targets' STFT and mel).
    """

    def __init__(self, root: str | Path, size: int, frames: int = 24, augment: bool = True,
                 seed: int = 0, video_augment: aug.VideoAugment | None = None,
                 prepared_margin: int = 8, video_spec: VideoSpec | None = None,
                 audio_spec: AudioSpec | None = None, context: int = 0, workers: int = 0) -> None:
        if size < 1 or frames < 5:
            raise InputError(f"need size >= 1 and frames >= 5, got {size} and {frames}")
        self.root = str(root)
        self.size, self.num_frames, self.context = size, frames, context
        self.augment, self.seed, self.epoch = augment, seed, 0
        self.video_augment = video_augment or aug.VideoAugment.grid()
        self.video_spec = video_spec or VideoSpec()
        self.audio_spec = audio_spec or AudioSpec()
        self.prepared_margin = prepared_margin
        items = read_stream_sets(root)
        if items[0].task not in ("", "lip2speech"):
            raise InputError(f"{self.root} holds {items[0].task} streams; lip-to-speech trains "
                             "on GRID sentences: lipx data synth DIR --layout grid-streams "
                             "--like CORPUS --part train")
        missing = [i.name for i in items if i.wav is None]
        if missing:
            raise InputError(f"{self.root}: stream {missing[0]} has no .wav; lip-to-speech "
                             "trains on each stream's speech")
        log.info("decoding %d training streams in %s", len(items), self.root)
        self.streams = decode_streams(items, [], self.video_spec, prepared_margin,
                                      self.audio_spec, workers)
        self.streams = [s for s in self.streams if len(s.region) >= frames]
        if not self.streams:
            raise InputError(f"every stream in {self.root} is shorter than a {frames}-frame "
                             "window")
        self.spectrograms = [aud.spectrograms(s.wav, self.audio_spec, len(s.region))
                             for s in self.streams]

    def __len__(self) -> int:
        return self.size

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __getitem__(self, index: int) -> dict:
        rng = np.random.default_rng((self.seed, 0x53, self.epoch, index))
        k = int(rng.integers(len(self.streams)))
        stream, (mel, linear) = self.streams[k], self.spectrograms[k]
        t = self.num_frames
        start = int(rng.integers(0, len(stream.region) - t + 1))
        frames, pads = with_context(stream.region, start, t, self.context)
        video = pad_frames(model_frames(frames, self.video_spec, self.prepared_margin, rng,
                                        self.video_augment, self.augment), pads)
        spec = self.audio_spec
        m, per = spec.mel_frames_per_video_frame, spec.samples_per_video_frame()
        return {"video": torch.from_numpy(video)[None],
                "mel": torch.from_numpy(mel[:, start * m:(start + t) * m])[None],
                "linear": torch.from_numpy(linear[:, start * m:(start + t) * m])[None],
                "wav": torch.from_numpy(stream.wav[start * per:(start + t) * per].copy()),
                "length": t, "start": start, "id": f"{stream.name}@{start}"}
