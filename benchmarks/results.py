"""What ``lipx bench`` returns: one :class:`EngineRow` per engine in a :class:`BenchReport`.

Derived figures (all from the timed samples):

* ``speedup``: the reference's whole-window p50 over the engine's;
* ``throughput``: clips of one window per second at each batch size, from the clipped mean;
* ``rtf_window``: whole-window p50 latency over the window's duration (below 1: faster than
  real time);
* ``rtf_stream``: one streaming step (front-end on a chunk of ``stride`` frames, then the backend
  on a window; clipped means) over the duration of ``stride`` frames: the share of real time one
  stream uses;
* ``streams``: how many simultaneous streams at the model's frame rate one engine instance keeps
  up with when it serves them one after another (``floor(1 / rtf_stream)``; batching streams
  together would give more);
* ``gflop_s``: per measurement, its FLOPs per call (``flops``, counted on the fp32 graphs: see
  :mod:`lipx.benchmarks.efficiency`) over the clipped mean;
* ``peak_fraction`` (report): ``gflop_s`` over the machine's measured SGEMM peak at the bench's
  thread count (``machine.gemm_peak``), for the rows that run on the CPU;
* ``step``: the cached stream step against recomputing the window, measured and its FLOP limit
  (:func:`~lipx.benchmarks.efficiency.step_figures`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from lipx.benchmarks.efficiency import Work, step_figures
from lipx.benchmarks.parity import Parity
from lipx.benchmarks.parity import to_dict as parity_dict
from lipx.errors import ParityError
from lipx.runtime.stats import LatencyStats
from lipx.video import FPS

STATUSES = ("ok", "skipped", "export-failed", "parity-failed", "failed")
"""``export-failed``: its artifact could not be built or loaded; ``parity-failed``: it ran but is
outside tolerance; ``failed``: it broke while running; ``skipped``: not available here (reason)."""
GATED = ("export-failed", "parity-failed", "failed")
"""Statuses that make ``--gate`` fail (skipped engines do not)."""


@dataclass(frozen=True)
class EngineRow:
    """The measurements of one engine."""

    key: str
    label: str
    backend: str
    device: str
    precision: str
    status: str
    reason: str = ""
    """Why it was skipped or failed, or what went wrong with parity."""
    reference: bool = False
    size_mb: float | None = None
    build_s: float | None = None
    """Building its artifacts (conversion, TensorRT plan) or torch.compile's compiling."""
    load_s: float | None = None
    """Activating its runners (session creation, plan deserialisation)."""
    window: LatencyStats | None = None
    """Whole model, batch 1, one window."""
    frontend_chunk: LatencyStats | None = None
    """Front-end on one chunk of ``stride`` frames (plus context), batch 1."""
    backend_window: LatencyStats | None = None
    """Backend on one window of features, batch 1."""
    batches: dict[int, LatencyStats] = field(default_factory=dict)
    """Whole model at each batch size."""
    stages: dict[str, dict[str, LatencyStats]] = field(default_factory=dict)
    """Per measurement, the runner's own stage times (TensorRT ``h2d``/``compute``/``d2h``)."""
    peak_rss_mb: float | None = None
    rss_before_mb: float | None = None
    gpu_mb: float | None = None
    """Change of GPU memory in use while the engine was loaded."""
    parity: Parity | None = None
    samples_ms: dict[str, list[float]] = field(default_factory=dict)
    """Raw samples per measurement (``window``, ``frontend``, ``backend``, ``batch4`` ...)."""
    warmup_ms: dict[str, list[float]] = field(default_factory=dict)
    window_frames: int = 0
    stride_frames: int = 0
    fps: float = FPS
    tiny_call: LatencyStats | None = None
    """The smallest call: the backend on its fewest frames, batch 1 (per-call overhead)."""
    flops: dict[str, int] = field(default_factory=dict)
    """FLOPs of one call of each measurement (empty where not counted, e.g. without onnx)."""

    @property
    def ran(self) -> bool:
        return self.window is not None

    def measured(self) -> dict[str, LatencyStats]:
        """Measurement name (as in ``samples_ms``) -> its statistics."""
        named = {"window": self.window, "frontend": self.frontend_chunk,
                 "backend": self.backend_window, "tiny": self.tiny_call}
        named.update({f"batch{b}": s for b, s in self.batches.items() if b != 1})
        return {k: s for k, s in named.items() if s is not None}

    def gflop_s(self) -> dict[str, float]:
        """Measurement -> achieved GFLOP/s (FLOPs per call over the clipped mean)."""
        return {k: self.flops[k] / (s.mean_ms * 1e6) for k, s in self.measured().items()
                if k in self.flops and s.mean_ms > 0}

    def throughput(self) -> dict[int, float]:
        """Batch size -> clips (of one window) per second."""
        out = {b: b / (s.mean_ms / 1e3) for b, s in self.batches.items() if s.mean_ms > 0}
        return dict(sorted(out.items()))

    @property
    def rtf_window(self) -> float | None:
        if self.window is None or not self.window_frames:
            return None
        return self.window.p50_ms / 1e3 / (self.window_frames / self.fps)

    @property
    def step_ms(self) -> float | None:
        """One streaming step: front-end chunk + backend window (clipped means)."""
        if self.frontend_chunk is None or self.backend_window is None:
            return None
        return self.frontend_chunk.mean_ms + self.backend_window.mean_ms

    @property
    def rtf_stream(self) -> float | None:
        if self.step_ms is None or not self.stride_frames:
            return None
        return self.step_ms / 1e3 / (self.stride_frames / self.fps)

    @property
    def streams(self) -> int | None:
        rtf = self.rtf_stream
        return int(math.floor(1.0 / rtf)) if rtf else None

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        for name in ("window", "frontend_chunk", "backend_window"):
            d[name] = dataclasses.asdict(d[name]) if d[name] else None
        d["batches"] = {str(b): dataclasses.asdict(s) for b, s in self.batches.items()}
        d["stages"] = {m: {k: dataclasses.asdict(s) for k, s in st.items()}
                       for m, st in self.stages.items()}
        d["parity"] = parity_dict(self.parity) if self.parity else None
        d["tiny_call"] = dataclasses.asdict(self.tiny_call) if self.tiny_call else None
        d.update(throughput_clips_per_s={str(b): v for b, v in self.throughput().items()},
                 rtf_window=self.rtf_window, step_ms=self.step_ms, rtf_stream=self.rtf_stream,
                 streams=self.streams, gflop_s=self.gflop_s(), step=step_figures(self))
        return d


@dataclass(frozen=True)
class BenchReport:
    """Every engine's row and what they were measured on."""

    target: str
    package: str
    task: str
    model: str
    reference: str | None
    """Key of the engine parity is measured against."""
    inputs: str
    """What parity ran on."""
    has_data: bool
    """Whether parity ran on a prepared corpus (else on random clips)."""
    settings: dict[str, Any]
    machine: dict[str, Any]
    rows: tuple[EngineRow, ...]
    seconds: float
    export_s: float | None = None
    work: Work | None = None
    """FLOPs per measurement (the same for every row), or why they were not counted."""

    def row(self, key: str) -> EngineRow:
        for r in self.rows:
            if r.key == key:
                return r
        raise KeyError(key)

    def speedup(self, row: EngineRow) -> float | None:
        """Reference whole-window p50 over ``row``'s."""
        if self.reference is None or row.window is None:
            return None
        ref = self.row(self.reference).window
        return ref.p50_ms / row.window.p50_ms if ref and row.window.p50_ms > 0 else None

    def peak_gflop_s(self) -> float | None:
        """The measured SGEMM peak at up to the bench's thread count (None if not measured)."""
        return (self.machine.get("gemm_peak") or {}).get("peak_gflop_s")

    def peak_fraction(self, row: EngineRow) -> dict[str, float]:
        """Measurement -> ``row``'s GFLOP/s over the CPU's GEMM peak (CPU rows only)."""
        peak = self.peak_gflop_s()
        if row.device != "cpu" or not peak:
            return {}
        return {k: v / peak for k, v in row.gflop_s().items()}

    def failures(self) -> list[str]:
        """One line per engine whose status fails the gate."""
        return [f"{r.key}: {r.status} ({r.reason})" for r in self.rows if r.status in GATED]

    def check_gate(self) -> None:
        """Raise ParityError naming every engine outside tolerance, or failed."""
        failed = self.failures()
        if failed:
            raise ParityError(f"bench gate failed for {len(failed)} engine(s): "
                              + "; ".join(failed))

    def summary(self) -> str:
        counts = {s: sum(r.status == s for r in self.rows) for s in STATUSES}
        parts = [f"{n} {s}" for s, n in counts.items() if n]
        timed = [(r, r.window) for r in self.rows if r.window]
        fastest = min(timed, key=lambda row_window: row_window[1].p50_ms, default=None)
        best = (f"; fastest {fastest[0].key} {fastest[1].p50_ms:.1f} ms/window"
                if fastest is not None else "")
        return f"{self.task} {self.model}: {len(self.rows)} engines ({', '.join(parts)}){best}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target, "package": self.package, "task": self.task,
            "model": self.model, "reference": self.reference, "inputs": self.inputs,
            "has_data": self.has_data,
            "settings": self.settings, "machine": self.machine, "seconds": self.seconds,
            "export_s": self.export_s, "flops": self.work.to_dict() if self.work else None,
            "rows": [{**r.to_dict(), "speedup": self.speedup(r),
                      "peak_fraction": self.peak_fraction(r)} for r in self.rows],
        }
