"""The inputs parity is measured on: a prepared evaluation split, or seeded random clips.

Every engine sees exactly these whole-model feeds, in this order. With a prepared corpus
(``--data``, from ``lipx data prepare`` or ``lipx data synth``) they come with targets: the word
labels (lipreading) or the mel and linear spectrograms and the waveform (lip-to-speech), read
through the training data sets with their evaluation preprocessing. Without one they are random
normal clips of the window length (the scale of normalised frames) and the lip-to-speech noise
input is zero, as in inference.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from lipx.benchmarks.target import Target, random_feeds, zero_inputs_like
from lipx.errors import InputError
from lipx.tasks import Schedule

if TYPE_CHECKING:
    from lipx.train.datasets import LipreadingDataset, PreparedDataset

log = logging.getLogger(__name__)

BATCH = 4
"""Clips per parity call."""
RANDOM_CLIPS = 8
"""Random clips when neither --data nor --max-clips says how many."""


@dataclass
class EvalSet:
    """Whole-model feeds and, with data, what each clip should give."""

    feeds: list[dict[str, np.ndarray]]
    """Batches of whole-model inputs, e.g. ``video`` (B, 1, T, 112, 112) float32."""
    description: str
    labels: list[np.ndarray] | None = None
    """Per batch (B,) int64 class indices in the model's vocabulary (lipreading with data)."""
    targets: list[dict[str, np.ndarray]] | None = None
    """Per batch ``mel`` (B, 80, 4T), ``linear`` (B, 321, 4T), ``wav`` (B, 640 T) (lip-to-speech
    with data)."""
    clip_ids: list[str] = field(default_factory=list)

    @property
    def clips(self) -> int:
        return sum(next(iter(f.values())).shape[0] for f in self.feeds)

    @property
    def has_data(self) -> bool:
        return self.labels is not None or self.targets is not None


def random_set(target: Target, sched: Schedule, clips: int, seed: int = 1234) -> EvalSet:
    """``clips`` random clips of ``sched.window`` frames in batches of :data:`BATCH`."""
    graph = target.manifest.graph("model")
    feeds = []
    for i, first in enumerate(range(0, clips, BATCH)):
        b = min(BATCH, clips - first)
        feeds.append(random_feeds(graph, b, sched.window, seed + i))
    return EvalSet(feeds, f"{clips} random clips of {sched.window} frames (seeded)")


def data_set(target: Target, sched: Schedule, data: Path, split: str, part: str,
             max_clips: int) -> EvalSet:
    """The first ``max_clips`` clips (0: all) of ``part`` of ``split`` in the corpus ``data``."""
    from torch.utils.data import Subset

    from lipx.data.prepare_format import default_split
    from lipx.train.tasks import training_task

    m = target.manifest
    if m.task not in DATA_SETS:
        raise InputError(f"lipx bench --data cannot score {m.task} packages on a corpus; "
                         f"leave --data out")
    protocol = split or default_split(m.task, Path(data))
    unit = training_task(m.task)
    items = unit.clips(data, part, protocol, window=unit.score_frames or sched.window,
                       video_spec=m.video, audio_spec=m.audio)
    chosen = Subset(items, range(min(max_clips, len(items)) if max_clips else len(items)))
    where = f"{len(chosen)} clips of {data} ({protocol}/{part})"
    return DATA_SETS[m.task](target, items, chosen, where)


def _label_map(corpus: list[str], vocabulary: tuple[str, ...] | None) -> np.ndarray:
    """Corpus label index -> model class index (-1 for words the model does not know)."""
    if vocabulary is None or list(vocabulary) == list(corpus):
        return np.arange(len(corpus))
    index = {w: i for i, w in enumerate(vocabulary)}
    mapped = np.array([index.get(w, -1) for w in corpus])
    if (mapped < 0).all():
        raise InputError(f"none of the corpus' {len(corpus)} words are in the model's vocabulary "
                         f"({', '.join(vocabulary[:5])}, ...): benchmark on data of the same "
                         f"vocabulary")
    return mapped


def _batches(items, key: str):
    """Items grouped into batches of equal ``key`` length (at most :data:`BATCH` each)."""
    groups: dict[int, list] = {}
    for item in items:
        group = groups.setdefault(int(item[key]), [])
        group.append(item)
        if len(group) == BATCH:
            yield groups.pop(int(item[key]))
    yield from (g for g in groups.values() if g)


def _lipreading(target: Target, clips: PreparedDataset, items, where: str) -> EvalSet:
    """Word clips with their labels in the model's vocabulary (clips of other words left out)."""
    graph = target.manifest.graph("model")
    labels = _label_map(cast("LipreadingDataset", clips).labels, target.manifest.vocabulary)
    batch_labels: list[np.ndarray] = []
    out = EvalSet([], where, labels=batch_labels)
    unknown = 0
    for batch in _batches(items, "length"):
        keep = [b for b in batch if labels[int(b["label"])] >= 0]
        unknown += len(batch) - len(keep)
        if not keep:
            continue
        video = np.stack([b["video"].numpy() for b in keep])
        out.feeds.append(zero_inputs_like(graph, video))
        batch_labels.append(np.array([labels[int(b["label"])] for b in keep], dtype=np.int64))
        out.clip_ids += [str(b["id"]) for b in keep]
    if unknown:
        log.warning("%d clips with words outside the model's vocabulary were left out", unknown)
    if not out.feeds:
        raise InputError(f"no usable clips in {where}")
    return out


def _lip2speech(target: Target, clips: PreparedDataset, items, where: str) -> EvalSet:
    """Sentence windows with their mel and linear spectrograms and waveform."""
    graph = target.manifest.graph("model")
    targets: list[dict[str, np.ndarray]] = []
    out = EvalSet([], where, targets=targets)
    for batch in _batches(items, "length"):
        video = np.stack([b["video"].numpy() for b in batch])
        out.feeds.append(zero_inputs_like(graph, video))
        targets.append({k: np.stack([b[k].numpy()[0] if k != "wav" else b[k].numpy()
                                     for b in batch]) for k in ("mel", "linear", "wav")})
        out.clip_ids += [str(b["id"]) for b in batch]
    if not out.feeds:
        raise InputError(f"no usable clips in {where}")
    return out


DATA_SETS: dict[str, Callable[[Target, PreparedDataset, Any, str], EvalSet]] = {
    "lipreading": _lipreading, "lip2speech": _lip2speech}
"""Task -> the evaluation set of its clips (``clips``: the task's clip set; ``items``: those
chosen of it; ``where``: their description)."""
