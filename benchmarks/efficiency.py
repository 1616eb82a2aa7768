"""How close to the machine each engine runs: FLOPs per measurement, achieved GFLOP/s, and the
cached stream step against the FLOP limit of its gain.

:func:`count_work` counts, once per bench, the FLOPs of one call of each timed measurement on the
package's float32 graphs at the timed shapes (:mod:`lipx.benchmarks.flops`; the same count for
every engine: int8 and fp16 engines do the same multiply-adds at another precision, the PyTorch
rows the same model). Without onnx (the runtime install) nothing is counted and the work carries
the one-line note instead.

:func:`step_figures` explains one row's streaming step. Recomputing the whole model on a window
every ``stride`` frames costs ``T_window``; the cached step costs ``T_chunk + T_backend`` (front-end
on ``stride`` new frames plus context, backend on the window). Their ratio, the measured gain,
would equal the FLOP ratio if every part ran at one rate. The figures split the difference in
two: the front-end chunk's rate against the front-end's inside the whole window (smaller GEMMs,
the per-call overhead; the in-window rate is estimated as ``(F_window - F_backend) / (T_window -
T_backend)``), and the backend's rate against the front-end's: the backend runs once in either
case but is a larger share of the step, so a backend slower per FLOP than the front-end lowers
the gain below the FLOP ratio, a faster one lifts it above.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lipx.benchmarks import flops as fl
from lipx.errors import first_line

if TYPE_CHECKING:
    from lipx.benchmarks.measure import Measurement
    from lipx.benchmarks.results import EngineRow
    from lipx.benchmarks.target import Target

log = logging.getLogger(__name__)

RULE = ("multiply-add = 2 FLOPs; Conv/ConvTranspose, MatMul/Gemm and GRU/LSTM/RNN (input and "
        "recurrent matmuls) counted; elementwise, pooling, softmax, normalisation not counted")


@dataclass(frozen=True)
class Work:
    """FLOPs per call of each measurement, or why there are none."""

    flops: dict[str, int] = field(default_factory=dict)
    """Measurement (``window``, ``frontend``, ``backend``, ``batch4``, ``tiny``) -> FLOPs."""
    by_op: dict[str, dict[str, int]] = field(default_factory=dict)
    """Measurement -> op type -> FLOPs."""
    note: str = ""
    """Why nothing (or not everything) was counted; empty when all was."""
    rule: str = RULE
    graphs: str = "the package's fp32 graphs at the timed input shapes"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def count_work(target: Target, plan: Sequence[Measurement]) -> Work:
    """Count the FLOPs of every measurement of ``plan``; never raises (a failure is the note)."""
    missing = fl.onnx_missing()
    if missing:
        return Work(note=f"FLOPs not counted: {missing}")
    from lipx.benchmarks.target import feed_shapes

    flops: dict[str, int] = {}
    by_op: dict[str, dict[str, int]] = {}
    uncounted: set[str] = set()
    counted: dict[tuple[str, int, int], fl.FlopCount] = {}
    for m in plan:
        key = (m.role, m.batch, m.frames)
        try:
            if key not in counted:
                graph = target.manifest.graph(m.role)
                counted[key] = fl.count_flops(target.package / graph.file,
                                              feed_shapes(graph, m.batch, m.frames))
        except Exception as e:  # noqa: BLE001  (a count that fails leaves the bench as it was)
            log.debug("counting the FLOPs of %s failed", m.name, exc_info=True)
            return Work(note=f"FLOPs not counted: {m.role} graph: {first_line(e)}")
        flops[m.name], by_op[m.name] = counted[key].total, counted[key].by_op
        uncounted.update(counted[key].uncounted)
    note = (f"not counted (no rule): {', '.join(sorted(uncounted))}" if uncounted else "")
    return Work(flops, by_op, note)


def step_figures(row: EngineRow) -> dict[str, float] | None:
    """The cached step of ``row`` against recomputing the window (see the module docstring).

    Returns:
        None without timings or FLOPs, else ``gain`` (``T_window / T_step``, clipped means),
        ``flop_limit`` (``F_window / F_step``), ``gain_at_window_rate`` (the gain if the chunk
        ran at the front-end's in-window rate), the GFLOP/s of ``frontend_window`` (estimated),
        ``frontend_chunk`` and ``backend``, and ``tiny_ms`` (the smallest call: per-call
        overhead plus its few FLOPs) when timed.
    """
    need = ("window", "frontend", "backend")
    chunk, backend = row.frontend_chunk, row.backend_window
    if row.window is None or chunk is None or backend is None or not all(
            k in row.flops for k in need):
        return None
    t_w, t_c, t_b = row.window.mean_ms, chunk.mean_ms, backend.mean_ms
    f_w, f_c, f_b = (row.flops[k] for k in need)
    if min(t_w, t_c, t_b) <= 0 or f_c + f_b <= 0:
        return None
    out = {"gain": t_w / (t_c + t_b), "flop_limit": f_w / (f_c + f_b),
           "frontend_chunk_gflop_s": f_c / t_c / 1e6, "backend_gflop_s": f_b / t_b / 1e6}
    if t_w > t_b and f_w > f_b:
        rate = (f_w - f_b) / (t_w - t_b)  # FLOPs per ms of the front-end inside the window
        out["frontend_window_gflop_s"] = rate / 1e6
        out["gain_at_window_rate"] = t_w / (f_c / rate + t_b)
    if row.tiny_call is not None:
        out["tiny_ms"] = row.tiny_call.mean_ms
    return out


def step_sentence(key: str, s: dict[str, float]) -> str:
    """One line: the measured gain, its FLOP limit, and the rates that make the difference."""
    line = (f"{key}: cached step {s['gain']:.2f}x cheaper than recomputing the window (FLOPs "
            f"allow {s['flop_limit']:.2f}x); front-end chunk {s['frontend_chunk_gflop_s']:.1f} "
            f"GFLOP/s")
    if "gain_at_window_rate" in s:
        line += (f" vs {s['frontend_window_gflop_s']:.1f} inside the window (at that rate: "
                 f"{s['gain_at_window_rate']:.2f}x)")
    line += f", backend {s['backend_gflop_s']:.2f} GFLOP/s"
    if "tiny_ms" in s:
        line += f"; smallest call {s['tiny_ms']:.3f} ms"
    return line
