"""Lipreading as a stream unit: the word head, its outputs and sinks, and word-error scoring.

Words come from :class:`~lipx.runtime.heads.WordHead`; a stream prints them, writes subtitles,
and is scored against the words said (substitutions, deletions and insertions apart), false
words per minute of non-speech and emission latency (:class:`WordTally`). Torch-free.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from lipx.data.formats import SILENCE, STILL, read_segments
from lipx.errors import ManifestError
from lipx.package import Manifest
from lipx.runtime.events import WordEvent
from lipx.runtime.heads import Head, WordHead
from lipx.runtime.metrics import word_errors
from lipx.runtime.runner import Runner
from lipx.runtime.sinks import ConsoleWords, Sink, SubtitleSink, TextOut
from lipx.runtime.task import (
    Capture,
    HeadOptions,
    OutputRequest,
    StreamItem,
    StreamScorer,
    StreamTask,
)
from lipx.tasks import Schedule

if TYPE_CHECKING:
    from lipx.runtime.stats import StreamRun

NON_SPEECH_KINDS = {**dict.fromkeys(SILENCE, "silence"), STILL: "still face"}
"""Each align label of non-speech (:data:`lipx.data.formats.NON_SPEECH`) and the kind it is
reported as."""
PAIR_SLACK_S = 0.5
"""An emitted word is aligned to a spoken one (right or substituted) only if their spans,
widened by this on each side, overlap; otherwise it is an insertion and the other a deletion."""


@dataclass(frozen=True, kw_only=True)
class WordOptions(HeadOptions):
    """The word head's options (defaults: the package's ``task_spec.stream_defaults``)."""

    threshold: float = 0.5
    """Least posterior of a window's top word for it to count."""
    agreement: int = 2
    """Successive windows that must agree before a word is emitted."""
    min_gap: float = 0.0
    """Seconds after a word within which the same word is not emitted again."""


@dataclass
class WordTally(StreamScorer):
    """Lipreading counts over streams."""

    vocabulary: set[str] = field(default_factory=set)
    said: int = 0
    substitutions: int = 0
    deletions: int = 0
    insertions: int = 0
    emitted: int = 0
    false_words: dict[str, int] = field(default_factory=lambda: dict.fromkeys(
        set(NON_SPEECH_KINDS.values()), 0))
    non_speech_s: dict[str, float] = field(default_factory=lambda: dict.fromkeys(
        set(NON_SPEECH_KINDS.values()), 0.0))
    waits_s: list[float] = field(default_factory=list)
    offsets_s: list[float] = field(default_factory=list)
    """For each word read right: the centre of its emitted span minus the centre of the word
    in the video (negative: reported early)."""

    def add(self, item: StreamItem, capture: Capture, engines: Mapping[str, Runner]) -> None:
        self.add_words(read_segments(item.align), capture.words)

    def add_words(self, segments: Sequence[Any], words: list[WordEvent]) -> None:
        """Score one stream: ``segments`` (label, start, end) from its ``.align``."""
        said = [s for s in segments if s.word in self.vocabulary]

        def near(i: int, j: int) -> bool:  # a word read for one said at another moment is no
            return (words[j].start_s < said[i].end + PAIR_SLACK_S  # substitution of it
                    and words[j].end_s > said[i].start - PAIR_SLACK_S)

        e = word_errors([s.word for s in said], [w.word for w in words], near)
        self.said += e.reference_words
        self.substitutions += e.substitutions
        self.deletions += e.deletions
        self.insertions += e.insertions
        self.emitted += len(words)
        quiet = [(NON_SPEECH_KINDS[s.word], s.start, s.end) for s in segments
                 if s.word in NON_SPEECH_KINDS]
        for kind, start, end in quiet:
            self.non_speech_s[kind] += end - start
        for i, j in e.pairs:
            if i is None and j is not None:
                mid = (words[j].start_s + words[j].end_s) / 2
                during = next((k for k, a, b in quiet if a <= mid < b), None)
                if during is not None:
                    self.false_words[during] += 1
            elif i is not None and j is not None and said[i].word == words[j].word:
                self.offsets_s.append((words[j].start_s + words[j].end_s) / 2
                                      - (said[i].start + said[i].end) / 2)
                wait = words[j].emitted_s
                if wait is not None:
                    self.waits_s.append(wait - said[i].end)

    def waits(self) -> list[float]:
        return self.waits_s

    def scores(self) -> dict[str, float]:
        out = {"words_said": float(self.said), "words_emitted": float(self.emitted),
               "substitutions": float(self.substitutions), "deletions": float(self.deletions),
               "insertions": float(self.insertions),
               "wer": (self.substitutions + self.deletions + self.insertions) / max(self.said, 1)}
        minutes = sum(self.non_speech_s.values()) / 60
        out["false_words_per_min"] = (sum(self.false_words.values()) / minutes if minutes
                                      else math.nan)
        for kind in sorted(self.non_speech_s):
            m = self.non_speech_s[kind] / 60
            key = kind.replace(" ", "_")
            out[f"false_words_per_min_{key}"] = self.false_words[kind] / m if m else math.nan
            out[f"{key}_s"] = self.non_speech_s[kind]
        waits = np.asarray(self.waits_s)
        for q in (50, 95):
            out[f"emission_p{q}_s"] = float(np.percentile(waits, q)) if waits.size else math.nan
        offsets = np.asarray(self.offsets_s)
        out["time_offset_median_s"] = float(np.median(offsets)) if offsets.size else math.nan
        return out


class Lipreading(StreamTask):
    """Mouth video -> words."""

    name = "lipreading"
    options = WordOptions
    outputs = ("--srt", "--vtt")
    replayable = True
    replay_options = ("threshold", "agreement", "min_gap")
    quality_metric = ("wer", "wer")
    latency_name = "emission p95"
    emission_label = "words emitted after their end"
    bench_metric = "accuracy"
    bench_names = ("accuracy", "top-1 agreement")

    def check(self, manifest: Manifest) -> None:
        if not manifest.vocabulary:
            raise ManifestError("lipreading package has no vocabulary; re-export it from a "
                                "checkpoint with one")

    def make_head(self, manifest: Manifest, options: HeadOptions, schedule: Schedule,
                  record: bool = False) -> Head:
        self.check(manifest)
        assert isinstance(options, WordOptions)
        return WordHead(list(manifest.vocabulary or ()), manifest.video.fps, options.threshold,
                        options.agreement, options.min_gap, window=schedule.window,
                        stride=schedule.stride)

    def sinks(self, manifest: Manifest, request: OutputRequest,
              console: TextOut | None = None) -> list[Sink]:
        sinks: list[Sink] = []
        if request.words and request.jsonl != "-":
            sinks.append(ConsoleWords(console))
        return sinks + [SubtitleSink(p) for p in (request.srt, request.vtt) if p]

    def made(self, run: StreamRun) -> str:
        return f"{run.words} word{'s' * (run.words != 1)}"

    def scorer(self, manifest: Manifest) -> WordTally:
        return WordTally(vocabulary=set(manifest.vocabulary or ()))

    def bench_value(self, metrics: Mapping[str, float], reference: bool, has_data: bool,
                    top1_agreement: float | None) -> float | None:
        """Accuracy with data, else the top-1 agreement with the reference (1 for itself)."""
        if self.bench_metric in metrics:
            return metrics[self.bench_metric]
        return 1.0 if reference else top1_agreement

    def table_rows(self, scores: Mapping[str, float], latency: Mapping[str, float]
                   ) -> list[tuple[str, str]]:
        s, lat = scores, latency
        return [("WER", f"{s['wer']:.1%} of {s['words_said']:.0f} words said "
                        f"(S {s['substitutions']:.0f}, D {s['deletions']:.0f}, "
                        f"I {s['insertions']:.0f}); {s['words_emitted']:.0f} emitted"),
                ("false words / min", f"{s['false_words_per_min']:.2f} (silence "
                 f"{s['false_words_per_min_silence']:.2f}, still face "
                 f"{s['false_words_per_min_still_face']:.2f})"),
                ("emission latency", f"p50 {lat['measured_p50_s']:.2f} s, p95 "
                 f"{lat['measured_p95_s']:.2f} s after the word's end"),
                ("word times", f"{s['time_offset_median_s']:+.2f} s (median centre of a word "
                 f"read right, minus its centre in the video)")]
