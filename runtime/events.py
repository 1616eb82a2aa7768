"""Stream events: what the stream loop yields and every sink receives.

Three kinds: :class:`FrameEvent` (a source frame and its mouth box), :class:`WordEvent` (a
lipread word with its time span) and :class:`AudioChunk` (generated speech, positioned on the
stream clock). Words and audio are the heads' *results*; each can put itself back on the
source's clock after a live source dropped frames (``retime``), so the loop never asks which
kind it holds. Plain numpy.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from lipx.audio import SAMPLE_RATE
from lipx.runtime.roi import RoiResult
from lipx.runtime.sources import Frame

ClockOffset = Callable[[float, bool], float]
"""``offset(t, end)``: seconds the source's clock is ahead of the frames' arrival count at
stream time ``t`` (``end``: ``t`` ends a span, so the frame before it counts)."""


@dataclass(frozen=True)
class FrameEvent:
    """A source frame and what the ROI found in it."""

    frame: Frame
    roi: RoiResult | None = None


@dataclass(frozen=True)
class WordEvent:
    """A word read from the lips, with its span on the stream clock (seconds)."""

    word: str
    start_s: float
    end_s: float
    confidence: float
    emitted_s: float | None = None
    """When the stream emitted it, on the same clock: the arrival of the last frame the loop
    had read, plus the compute time since (None until the loop stamps it)."""

    def to_dict(self) -> dict[str, object]:
        d: dict[str, object] = {
            "type": "word",
            "word": self.word,
            "start_s": round(self.start_s, 3),
            "end_s": round(self.end_s, 3),
            "confidence": round(float(self.confidence), 4),
        }
        if self.emitted_s is not None:
            d["emitted_s"] = round(self.emitted_s, 3)
        return d

    @property
    def wait_s(self) -> float | None:
        """How long after the word's end it was emitted (its emission latency)."""
        return None if self.emitted_s is None else self.emitted_s - self.end_s

    def retime(self, offset: ClockOffset, fps: float) -> list[WordEvent]:
        """This word on the source's clock: its start and end move with their own offsets.

        Args:
            offset: the clock offset at a stream time (see :data:`ClockOffset`).
            fps: the stream's frame rate (unused: a word moves as a whole span).
        """
        return [dataclasses.replace(self, start_s=self.start_s + offset(self.start_s, False),
                                    end_s=self.end_s + offset(self.end_s, True))]


@dataclass(frozen=True)
class AudioChunk:
    """Generated speech: ``samples`` (N,) float32 in [-1, 1] starting at ``start_s``."""

    start_s: float
    samples: np.ndarray
    sample_rate: int = SAMPLE_RATE
    emitted_s: float | None = None
    """When the stream emitted it (see :attr:`WordEvent.emitted_s`)."""

    @property
    def wait_s(self) -> float | None:
        """How long its first sample's frame waited for it (the audio latency of the chunk)."""
        return None if self.emitted_s is None else self.emitted_s - self.start_s

    @property
    def end_s(self) -> float:
        return self.start_s + len(self.samples) / self.sample_rate

    def to_dict(self) -> dict[str, object]:
        x = np.asarray(self.samples, dtype=np.float64)
        rms = float(np.sqrt(np.mean(x * x))) if len(x) else 0.0
        d: dict[str, object] = {
            "type": "audio",
            "start_s": round(self.start_s, 4),
            "end_s": round(self.end_s, 4),
            "samples": len(self.samples),
            "rms": round(rms, 5),
        }
        if self.emitted_s is not None:
            d["emitted_s"] = round(self.emitted_s, 4)
        return d

    def retime(self, offset: ClockOffset, fps: float) -> list[AudioChunk]:
        """This chunk on the source's clock: cut where the offset changes, each piece moved by
        its own (the WAV and MP4 sinks fill the gaps between pieces with silence).

        Args:
            offset: the clock offset at a stream time (see :data:`ClockOffset`).
            fps: the stream's frame rate (the offset can change at each frame).
        """
        rate, per_frame = self.sample_rate, self.sample_rate / fps
        first = round(self.start_s * rate)
        pieces, begin = [], 0
        while begin < len(self.samples):
            frame = int((first + begin) / per_frame + 1e-9)
            shift = offset(frame / fps, False)
            end = begin
            while end < len(self.samples) and offset(frame / fps, False) == shift:
                frame += 1
                end = min(len(self.samples), round(frame * per_frame) - first)
            pieces.append(AudioChunk((first + begin) / rate + shift, self.samples[begin:end],
                                     rate, self.emitted_s))
            begin = end
        return pieces


Result = WordEvent | AudioChunk
"""What a head makes: words (lipreading) or audio (lip-to-speech)."""
Event = FrameEvent | WordEvent | AudioChunk
