"""One engine, start to finish: check, build, load, time, compare, unload -> an EngineRow.

Latency is measured on the shapes the runtime uses (the :class:`~lipx.tasks.Schedule`):
the whole model on one window at batch 1 and at each batch size, the front-end on one chunk of
``stride`` frames plus context, the backend on one window of features, and the smallest call the
package allows (the backend on its fewest frames: the per-call overhead, plus a few FLOPs). The
engine's share of ``budget_s`` is split over these measurements (:data:`SHARES`).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from lipx.benchmarks import parity as par
from lipx.benchmarks.engines import (
    EngineSkipped,
    EngineSpec,
    LoadedEngine,
    load_engine,
    unavailable,
)
from lipx.benchmarks.evalset import EvalSet
from lipx.benchmarks.results import EngineRow
from lipx.benchmarks.target import Target, random_feeds
from lipx.benchmarks.timing import Budget, Timing, gpu_used_mb, reset_peak_rss, rss_mb, time_calls
from lipx.errors import BackendUnavailableError, BuildFailed, first_line
from lipx.package import Manifest
from lipx.tasks import Schedule, Tolerance

log = logging.getLogger(__name__)

SHARES = {"window": 0.3, "frontend": 0.2, "backend": 0.2, "batches": 0.25, "tiny": 0.05}
"""Share of an engine's time budget per measurement (``batches`` split over the batch sizes)."""


@dataclass(frozen=True)
class Measurement:
    """One timed call shape."""

    name: str
    """``window``, ``frontend``, ``backend``, ``batch4`` ..., ``tiny``."""
    role: str
    """The graph it calls: ``model``, ``frontend`` or ``backend``."""
    batch: int
    frames: int
    share: float
    """Its share of the engine's time budget."""
    optional: bool = False
    """If it fails, the row goes on without it (``tiny``)."""


def measurements(manifest: Manifest, sched: Schedule,
                 batch_sizes: tuple[int, ...]) -> list[Measurement]:
    """What :func:`time_engine` times, in order (the FLOPs are counted on the same shapes)."""
    batches = [b for b in batch_sizes if b != 1]
    spec = manifest.spec
    plan = [Measurement("window", "model", 1, sched.window, SHARES["window"]),
            Measurement("frontend", "frontend", 1, sched.stride + 2 * spec.context,
                        SHARES["frontend"]),
            Measurement("backend", "backend", 1, sched.window, SHARES["backend"])]
    plan += [Measurement(f"batch{b}", "model", b, sched.window, SHARES["batches"] / len(batches))
             for b in batches]
    plan.append(Measurement("tiny", "backend", 1, spec.min_frames, SHARES["tiny"], optional=True))
    return plan


@dataclass(frozen=True)
class Settings:
    """What :func:`run_engine` needs from the bench options."""

    budget_s: float
    batch_sizes: tuple[int, ...]
    warmup: int
    min_runs: int
    compile_limit_s: float
    gate_overrides: tuple[float | None, float | None, float | None, float | None] = (
        None, None, None, None)
    """atol, rtol, min_top1, max_stoi_drop given by the user (None: the default)."""
    threads: int | None = None
    """onnxruntime intra-op threads (None: its default)."""
    flops: dict[str, int] = dataclasses.field(default_factory=dict)
    """FLOPs per call of each measurement (:func:`lipx.benchmarks.efficiency.count_work`)."""


@dataclass
class Outcome:
    """An engine's row, and its parity run when it is the reference."""

    row: EngineRow
    reference: par.ReferenceRun | None = None


def run_engine(spec: EngineSpec, target: Target, sched: Schedule, evalset: EvalSet,
               settings: Settings, reference: par.ReferenceRun | None,
               is_reference: bool, say: Callable[[str], None]) -> Outcome:
    """Measure one engine; never raises for the engine's own failures (they become its status)."""
    row = EngineRow(spec.key, spec.label, spec.backend, spec.device, spec.precision, "ok",
                    reference=is_reference, window_frames=sched.window,
                    stride_frames=sched.stride, fps=target.manifest.video.fps,
                    flops=dict(settings.flops))
    reason = unavailable(spec, target, settings.compile_limit_s)
    if reason:
        return Outcome(dataclasses.replace(row, status="skipped", reason=reason))
    reset_peak_rss()
    rss_before, gpu_before = rss_mb()[0], gpu_used_mb()
    say(f"{spec.key}: building" if spec.backend != "torch" else f"{spec.key}: loading")
    max_frames = max(sched.window, *(next(iter(f.values())).shape[2] for f in evalset.feeds))
    try:
        engine = load_engine(spec, target, settings.compile_limit_s, max(settings.batch_sizes),
                             max_frames, settings.threads)
    except BuildFailed as e:
        return Outcome(dataclasses.replace(row, status="export-failed", reason=str(e)))
    except BackendUnavailableError as e:
        return Outcome(dataclasses.replace(row, status="skipped", reason=str(e)))
    row = dataclasses.replace(row, size_mb=engine.size_mb, build_s=engine.build_s,
                              rss_before_mb=rss_before)
    started = time.perf_counter()
    try:
        for r in engine.runners.values():
            r.activate()
    except BackendUnavailableError as e:  # e.g. cuda-python missing beside tensorrt
        _deactivate(engine)
        return Outcome(dataclasses.replace(row, status="skipped", reason=str(e)))
    except Exception as e:  # noqa: BLE001  (any load error is this engine's, reported in its row)
        _deactivate(engine)
        return Outcome(dataclasses.replace(row, status="export-failed",
                                           reason=f"cannot load: {first_line(e)}"))
    row = dataclasses.replace(row, load_s=time.perf_counter() - started)
    try:
        return _measure(engine, row, target, sched, evalset, settings, reference, is_reference,
                        gpu_before, say)
    finally:
        _deactivate(engine)


def _measure(engine: LoadedEngine, row: EngineRow, target: Target, sched: Schedule,
             evalset: EvalSet, settings: Settings, reference: par.ReferenceRun | None,
             is_reference: bool, gpu_before: float | None, say: Callable[[str], None]) -> Outcome:
    spec = engine.spec
    try:
        say(f"{spec.key}: timing")
        timings = time_engine(engine, target, sched, settings)
        row = _with_timings(row, timings)
        if engine.clock is not None:
            row = dataclasses.replace(row, build_s=(row.build_s or 0.0) + engine.clock.spent_s)
        gpu_now = gpu_used_mb()
        row = dataclasses.replace(row, peak_rss_mb=rss_mb()[1], gpu_mb=(
            gpu_now - gpu_before if gpu_now is not None and gpu_before is not None else None))
        say(f"{spec.key}: parity")
        ref_run, parity = None, None
        if is_reference:
            ref_run = par.run_reference(spec.key, engine.runners["model"], evalset, target.task,
                                        target.manifest.audio)
            row = dataclasses.replace(row, parity=par.Parity(
                spec.key, (), gate_of(target, spec.precision, settings), metrics=ref_run.metrics))
        elif reference is not None:
            parity = par.measure(engine.runners, reference, evalset, sched.stride, target.manifest,
                                 gate_of(target, spec.precision, settings))
            row = dataclasses.replace(row, parity=parity)
        if parity is not None and not parity.passed:
            row = dataclasses.replace(row, status="parity-failed",
                                      reason="; ".join(parity.problems))
        return Outcome(row, ref_run)
    except EngineSkipped as e:
        return Outcome(dataclasses.replace(row, status="skipped", reason=str(e)))
    except Exception as e:  # noqa: BLE001  (this engine broke; the others go on)
        log.debug("%s failed", spec.key, exc_info=True)
        return Outcome(dataclasses.replace(row, status="failed",
                                           reason=f"{type(e).__name__}: {first_line(e)}"))


def gate_of(target: Target, precision: str, settings: Settings) -> Tolerance:
    """The package's parity gate of ``precision`` with the user's overrides."""
    atol, rtol, min_top1, max_drop = settings.gate_overrides
    return target.manifest.spec.tolerance(precision, atol=atol, rtol=rtol, min_top1=min_top1,
                                          max_stoi_drop=max_drop)


def time_engine(engine: LoadedEngine, target: Target, sched: Schedule,
                settings: Settings) -> dict[str, Timing]:
    """Time every :func:`measurements` shape; an optional one that fails is left out."""
    m = target.manifest
    out = {}
    for i, item in enumerate(measurements(m, sched, settings.batch_sizes)):
        runner = engine.runners[item.role]
        feeds = random_feeds(m.graph(item.role), item.batch, item.frames, seed=100 + i)
        budget = Budget(settings.budget_s * item.share, settings.min_runs, warmup=settings.warmup)
        try:
            runner.validate_feeds(feeds)
            out[item.name] = time_calls(partial(runner.infer, feeds, check=False), budget,
                                        engine.sync, partial(stage_seconds, runner))
        except Exception:
            if not item.optional:
                raise
            log.debug("%s: %s not timed", engine.spec.key, item.name, exc_info=True)
    return out


def stage_seconds(runner: object) -> dict[str, float]:
    """The runner's per-stage times of its last call in seconds (TrtRunner's ``last_timings``:
    ``h2d_ms``, ``compute_ms``, ``d2h_ms``), or nothing for runners that do not report them."""
    timings = getattr(runner, "last_timings", None) or {}
    return {k.removesuffix("_ms"): v / 1e3 if k.endswith("_ms") else v
            for k, v in timings.items()}


def _with_timings(row: EngineRow, timings: dict[str, Timing]) -> EngineRow:
    batches = {1: timings["window"].stats}
    batches.update({int(k[5:]): t.stats for k, t in timings.items() if k.startswith("batch")})
    stages = {k: t.stage_stats() for k, t in timings.items() if t.stages_s}
    tiny = timings.get("tiny")
    return dataclasses.replace(
        row, window=timings["window"].stats, frontend_chunk=timings["frontend"].stats,
        backend_window=timings["backend"].stats, batches=dict(sorted(batches.items())),
        tiny_call=tiny.stats if tiny else None,
        stages=stages,
        samples_ms={k: [s * 1e3 for s in t.samples_s] for k, t in timings.items()},
        warmup_ms={k: [s * 1e3 for s in t.warmup_s] for k, t in timings.items()},
    )


def _deactivate(engine: LoadedEngine) -> None:
    for r in engine.runners.values():
        if r.is_active:
            try:
                r.deactivate()
            except Exception:  # noqa: BLE001  (closing must not hide the measurement)
                log.debug("deactivating %s failed", r.name, exc_info=True)

