"""Latency and throughput of a stream: per-stage timings, percentiles, drops, real-time factor.

The stream loop wraps each stage in ``timer.stage(name)`` and calls ``timer.end_frame()`` once
per frame; the frame's *compute latency* is the sum of its stage times (a frame that triggers a
backend run pays for it). ``timer.summary(run, ...)`` reports a :class:`LatencyStats` (mean,
std, percentiles, min/max) per stage and for the compute latency, frames in/out/dropped, the
real-time factor, the *algorithmic latency* (the wait for future frames that no hardware
removes: the front-end's temporal context, the stride of the window schedule and the head's
look-ahead) and the :class:`StreamRun` (what ran, what it made).

:class:`LatencyStats` is also the benchmarks' summary of timed calls
(:mod:`lipx.benchmarks.timing`), there with sigma clipping of the mean and std.
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
from array import array
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lipx.files import atomic_write
from lipx.tasks import CONTEXT
from lipx.video import FPS

STAGES = ("decode", "crop", "frontend", "backend", "head", "sinks")
ENGINE_STAGES = ("frontend", "backend")
"""The stages that run engines (without the cache the whole model runs as ``backend``)."""
SIGMA_ITERS = 3
"""Rounds of sigma clipping (as ProfileModels)."""


@dataclass(frozen=True)
class LatencyStats:
    """Distribution of one timing in milliseconds: a stream stage's, or a benchmark's calls."""

    count: int
    mean_ms: float
    """Mean (after sigma clipping, when it was asked for)."""
    std_ms: float
    """Standard deviation (after sigma clipping, when it was asked for)."""
    p50_ms: float
    p95_ms: float
    p99_ms: float
    min_ms: float
    max_ms: float
    total_s: float
    """Sum of every sample, in seconds."""
    clipped: int = 0
    """Samples sigma clipping left out of the mean and standard deviation."""

    @classmethod
    def of(cls, seconds: Sequence[float], sigma: float | None = None,
           iters: int = SIGMA_ITERS) -> LatencyStats:
        """Statistics of ``seconds`` (all zero for no samples).

        Args:
            seconds: (N,) samples in seconds.
            sigma: leave samples beyond ``sigma`` standard deviations out of the mean and the
                standard deviation, repeated up to ``iters`` times (like ProfileModels); None
                keeps them all. Percentiles, min and max always see every sample.
        """
        x = np.asarray(seconds, dtype=np.float64)
        ms = x * 1e3
        if ms.size == 0:
            return cls(0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
        kept = ms if sigma is None else sigma_clip(ms, sigma, iters)
        p50, p95, p99 = np.percentile(ms, [50, 95, 99])
        return cls(count=int(ms.size), mean_ms=float(kept.mean()), std_ms=float(kept.std()),
                   p50_ms=float(p50), p95_ms=float(p95), p99_ms=float(p99),
                   min_ms=float(ms.min()), max_ms=float(ms.max()), total_s=float(x.sum()),
                   clipped=int(ms.size - kept.size))


def sigma_clip(values: np.ndarray, sigma: float, iters: int = SIGMA_ITERS) -> np.ndarray:
    """``values`` without those beyond ``sigma`` standard deviations of the mean, repeated."""
    kept = values
    for _ in range(iters):
        mean, std = kept.mean(), kept.std()
        inside = kept[np.abs(kept - mean) <= sigma * std] if std > 0 else kept
        if inside.size == kept.size or inside.size == 0:
            break
        kept = inside
    return kept


def algorithmic_latency_s(
    fps: float, stride: int = 1, lookahead: int = 0, context: int = CONTEXT
) -> dict[str, float]:
    """Latency from waiting for frames, with infinitely fast compute.

    A frame's result needs ``context`` later frames for its features and ``lookahead`` later
    frames for the head to finalise it, and waits up to ``stride - 1`` frames for the next
    backend run.

    Args:
        fps: frame rate.
        stride: frames between backend runs.
        lookahead: frames after a frame before its output is final (head-specific).
        context: future frames the front-end needs.

    Returns:
        ``{"min_s", "mean_s", "max_s"}`` over a frame's position in the stride.
    """
    base = (context + lookahead) / fps
    return {
        "min_s": base,
        "mean_s": base + (stride - 1) / 2 / fps,
        "max_s": base + (stride - 1) / fps,
    }


@dataclass(frozen=True)
class StreamRun:
    """What a stream ran and what it made (the settings and counts beside its timings)."""

    task: str
    """``lipreading`` or ``lip2speech``."""
    engine: str
    """``onnx`` (onnxruntime) or ``trt`` (TensorRT plans)."""
    device: str
    cache: bool
    """Per-frame features cached (the split graphs), or each window recomputed (``model``)."""
    window: int
    """Frames per backend window."""
    stride: int
    """Frames between backend runs."""
    chunk: int
    """New frames per front-end call."""
    source: str
    """The source as given."""
    backend_calls: int = 0
    frames_without_face: int = 0
    interrupted: bool = False
    """Ended by Ctrl-C: nothing was flushed."""
    words: int = 0
    """Words emitted (lipreading)."""
    audio_s: float = 0.0
    """Seconds of speech generated (lip-to-speech)."""


@dataclass
class StreamStats:
    """Summary of a stream run (JSON-ready through ``to_dict``/``to_json``)."""

    stages: dict[str, LatencyStats]
    compute: LatencyStats
    """Per-frame compute latency (sum of a frame's stage times)."""
    algorithmic: dict[str, float]
    frames_in: int
    frames_out: int
    frames_dropped: int
    wall_s: float
    media_s: float
    """Stream time covered: frames_out / fps (plus dropped frames)."""
    rtf: float
    """Real-time factor: compute seconds per second of media (< 1 keeps up)."""
    model_ms_per_frame: float
    """Engine time per frame out (:data:`ENGINE_STAGES`: front-end + backend, or the whole
    model without the cache)."""
    run: StreamRun
    emission: LatencyStats | None = None
    """How long results waited to be emitted: each word after its end (emission latency), each
    audio chunk after its first frame (audio latency); measured, beside ``algorithmic``."""

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StreamStats:
        """Back from ``to_dict`` (a server's stats of a remote stream)."""
        emission = d.get("emission")
        return cls(**{**d, "stages": {k: LatencyStats(**v) for k, v in d["stages"].items()},
                      "compute": LatencyStats(**d["compute"]), "run": StreamRun(**d["run"]),
                      "emission": LatencyStats(**emission) if emission else None})

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write ``to_json()`` atomically (temp file + rename)."""
        path, text = Path(path), self.to_json() + "\n"
        atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"),
                     tmp=path.with_name(path.name + ".partial"))

    def format_table(self) -> str:
        """Plain-text table of the stages (ms), then the totals, for the end-of-run report."""
        rows = [f"{'stage':<10}{'n':>7}{'mean':>9}{'p50':>9}{'p95':>9}{'p99':>9}{'max':>9}"]
        for name, p in [*self.stages.items(), ("compute", self.compute)]:
            rows.append(
                f"{name:<10}{p.count:>7}{p.mean_ms:>9.2f}{p.p50_ms:>9.2f}"
                f"{p.p95_ms:>9.2f}{p.p99_ms:>9.2f}{p.max_ms:>9.2f}"
            )
        alg = self.algorithmic
        rows.append(
            f"frames in {self.frames_in}, out {self.frames_out}, dropped {self.frames_dropped}; "
            f"RTF {self.rtf:.3f}; algorithmic latency {alg['mean_s'] * 1e3:.0f} ms mean "
            f"({alg['min_s'] * 1e3:.0f}-{alg['max_s'] * 1e3:.0f})"
        )
        if self.emission is not None and self.emission.count:
            from lipx.runtime.tasks import stream_task

            what = stream_task(self.run.task).emission_label
            rows.append(f"{what}: p50 {self.emission.p50_ms:.0f} ms, p95 "
                        f"{self.emission.p95_ms:.0f} ms (measured, {self.emission.count})")
        return "\n".join(rows)


class StageTimer:
    """Records how long each stage takes for each frame.

    Args:
        stages: stage names in report order (others may be added on the fly).
        fps: frame rate of the stream (for media time and the real-time factor).
        window: frames in the rolling window behind ``status_line``.
        wait_stages: stages that are reported but are waiting, not computing (e.g. ``decode``
            of a live source, where the time is spent waiting for the camera), so they do not
            count in the compute latency.
    """

    def __init__(
        self,
        stages: Sequence[str] = STAGES,
        fps: float = FPS,
        window: int = 100,
        wait_stages: Sequence[str] = (),
    ):
        self.fps = fps
        self.wait_stages = frozenset(wait_stages)
        self._times: dict[str, array] = {s: array("d") for s in stages}
        self._current: dict[str, float] = {}
        self._frame_totals = array("d")
        self._recent: deque[tuple[float, float]] = deque(maxlen=window)  # (wall end, compute)
        self.frames_in = 0
        self.frames_dropped = 0
        self._t0: float | None = None
        self._lock = threading.Lock()  # a pipelined stream's worker adds its stages too

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time the enclosed block as stage ``name`` of the current frame."""
        start = time.perf_counter()
        if self._t0 is None:
            self._t0 = start
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - start)

    def add(self, name: str, seconds: float) -> None:
        """Add ``seconds`` to stage ``name`` of the current frame."""
        with self._lock:
            if self._t0 is None:
                self._t0 = time.perf_counter() - seconds
            self._current[name] = self._current.get(name, 0.0) + seconds

    def count_in(self, n: int = 1, dropped: int = 0) -> None:
        """Count frames read from the source and stale frames it dropped before them."""
        self.frames_in += n + dropped
        self.frames_dropped += dropped

    def end_frame(self) -> float:
        """Close the current frame's record; returns its compute latency (seconds)."""
        total = 0.0
        with self._lock:
            current, self._current = self._current, {}
        for name, seconds in current.items():
            self._times.setdefault(name, array("d")).append(seconds)
            if name not in self.wait_stages:
                total += seconds
        self._frame_totals.append(total)
        self._recent.append((time.perf_counter(), total))
        return total

    @property
    def frames_out(self) -> int:
        return len(self._frame_totals)

    def samples(self) -> dict[str, list[float]]:
        """Stage -> each closed frame's seconds in it (a server's histograms)."""
        with self._lock:
            return {name: list(times) for name, times in self._times.items()}

    def summary(
        self, run: StreamRun, stride: int = 1, lookahead: int = 0,
        context: int = CONTEXT,
    ) -> StreamStats:
        """Statistics so far of ``run``; ``stride``/``lookahead``/``context`` set the
        algorithmic latency."""
        wall = time.perf_counter() - self._t0 if self._t0 is not None else 0.0
        compute = LatencyStats.of(self._frame_totals)
        media = (self.frames_out + self.frames_dropped) / self.fps
        model_s = sum(sum(self._times[name]) for name in ENGINE_STAGES if name in self._times)
        return StreamStats(
            stages={k: LatencyStats.of(v) for k, v in self._times.items()},
            compute=compute,
            algorithmic=algorithmic_latency_s(self.fps, stride, lookahead, context),
            frames_in=self.frames_in,
            frames_out=self.frames_out,
            frames_dropped=self.frames_dropped,
            wall_s=wall,
            media_s=media,
            rtf=compute.total_s / media if media else math.nan,
            model_ms_per_frame=1e3 * model_s / max(self.frames_out, 1),
            run=run,
        )

    def status_line(self) -> str:
        """One compact line for a live display: rate, recent compute p50/p95, drops, RTF."""
        recent = list(self._recent)
        if len(recent) < 2:
            return f"frame {self.frames_out} | warming up"
        span = recent[-1][0] - recent[0][0]
        rate = (len(recent) - 1) / span if span > 0 else math.inf
        ms = np.asarray([c for _, c in recent]) * 1e3
        rtf = float(np.mean(ms)) / 1e3 * self.fps
        return (
            f"frame {self.frames_out} | {rate:5.1f} fps | compute p50 "
            f"{np.percentile(ms, 50):5.1f} ms p95 {np.percentile(ms, 95):5.1f} ms | "
            f"dropped {self.frames_dropped} | RTF {rtf:.2f}"
        )
