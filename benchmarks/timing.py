"""Latency measurement: warm-up, time-budgeted runs, robust statistics, memory and machine probes.

Timing follows ultralytics' ``ProfileModels`` and trtexec: a few warm-up calls (their times are
kept apart: the first call of a compiled or lazily initialised engine is a build, not a run), then
as many timed calls as fit in a time budget (at least ``min_runs``), each timed with
``time.perf_counter()`` around the runner call and a device synchronisation when the engine runs
asynchronously. Every sample is kept; :class:`~lipx.runtime.stats.LatencyStats` summarises them
with percentiles and a sigma-clipped mean and standard deviation.

Peak host memory is the kernel's resident-set high-water mark (``VmHWM`` in ``/proc/self/status``),
which counts native allocations (onnxruntime, TensorRT) that ``tracemalloc`` cannot see; it is
reset per engine through ``/proc/self/clear_refs`` where Linux allows it. Elsewhere
``resource.getrusage`` gives the process-wide peak, which cannot be reset.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from lipx.runtime.stats import LatencyStats

log = logging.getLogger(__name__)

SIGMA = 2.0
"""Sigma-clipping threshold of the mean and std (as ProfileModels)."""


@dataclass(frozen=True)
class Budget:
    """How long to time one measurement."""

    seconds: float
    """Timed runs continue until this much time is spent (after warm-up)."""
    min_runs: int = 3
    max_runs: int = 2000
    warmup: int = 3
    """Untimed calls first (at least one: the first call of many engines is a build); more while
    calls are still getting faster (:func:`warm_up`)."""
    max_warmup: int = 20


@dataclass
class Timing:
    """The raw samples of one measurement."""

    samples_s: list[float]
    warmup_s: list[float]
    """Times of the warm-up calls (the first one includes lazy initialisation or compilation)."""
    stages_s: dict[str, list[float]] = field(default_factory=dict)
    """Per-stage samples reported by the runner (TensorRT: ``h2d``, ``compute``, ``d2h``)."""

    @property
    def stats(self) -> LatencyStats:
        """The samples' statistics, the mean and std sigma-clipped."""
        return LatencyStats.of(self.samples_s, SIGMA)

    def stage_stats(self) -> dict[str, LatencyStats]:
        return {k: LatencyStats.of(v, SIGMA) for k, v in self.stages_s.items() if v}


def time_calls(
    call: Callable[[], Any], budget: Budget, sync: Callable[[], None] | None = None,
    stages: Callable[[], Mapping[str, float] | None] | None = None,
) -> Timing:
    """Warm up, then time ``call()`` until ``budget`` is spent.

    Args:
        call: one inference (feeds bound), e.g. ``lambda: runner.infer(feeds, check=False)``.
        budget: time budget and run counts.
        sync: waits for the device to finish (CUDA engines that return before the work is done);
            called before the clock starts and before it stops.
        stages: returns the runner's per-stage times of the last call (seconds), or None.
    Returns:
        Samples in seconds.
    """
    done = sync or (lambda: None)

    def timed() -> float:
        done()
        start = time.perf_counter()
        call()
        done()
        return time.perf_counter() - start

    timing = Timing([], warm_up(timed, budget))
    deadline = time.perf_counter() + budget.seconds
    while len(timing.samples_s) < budget.max_runs:
        timing.samples_s.append(timed())
        for name, seconds in ((stages() if stages else None) or {}).items():
            timing.stages_s.setdefault(name, []).append(float(seconds))
        if len(timing.samples_s) >= budget.min_runs and time.perf_counter() >= deadline:
            break
    return timing


WARMING = 1.5
"""A warm-up call this many times faster than the one before means the engine is still warming."""


def warm_up(timed: Callable[[], float], budget: Budget) -> list[float]:
    """Call ``timed`` at least ``budget.warmup`` times, and on while calls keep getting faster.

    Engines warm up over several calls, not one: onnxruntime and oneDNN create and cache kernels
    lazily, torch.compile compiles on the first call per shape, and we saw PyTorch eager take
    100x its steady time for the first three calls of a small random-weight model. A fixed single
    warm-up call would time that transient.

    Returns:
        The warm-up calls' times (seconds).
    """
    times = [timed() for _ in range(max(1, budget.warmup))]
    while 2 <= len(times) < budget.max_warmup and times[-1] * WARMING < times[-2]:
        times.append(timed())
    return times


# --- memory ---------------------------------------------------------------------------------


def _proc_status() -> dict[str, float]:
    """``VmRSS``/``VmHWM`` of this process in MiB (empty where /proc is absent)."""
    try:
        text = open("/proc/self/status").read()  # noqa: SIM115 (tiny pseudo-file)
    except OSError:
        return {}
    out = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = float(value.split()[0]) / 1024.0
    return out


def reset_peak_rss() -> bool:
    """Reset the resident-set high-water mark (Linux ``clear_refs``); False where not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def rss_mb() -> tuple[float | None, float | None]:
    """(current, peak) resident set size of this process in MiB; None where unknown."""
    status = _proc_status()
    if status:
        return status.get("VmRSS"), status.get("VmHWM")
    try:
        import resource
    except ImportError:
        return None, None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return None, peak / (1024.0 * 1024.0 if sys.platform == "darwin" else 1024.0)


def gpu_used_mb() -> float | None:
    """Memory in use on GPU 0 in MiB (device-wide), or None without a visible NVIDIA GPU.

    Read through torch when it is already imported and sees CUDA, else ``nvidia-smi``; it counts
    every process on the GPU, so engines are compared by the change while each is loaded.
    """
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        free, total = torch.cuda.mem_get_info(0)
        return (total - free) / 2**20
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used",
                              "--format=csv,noheader,nounits", "-i", "0"],
                             capture_output=True, text=True, timeout=10, check=True)
        return float(out.stdout.strip().splitlines()[0])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


# --- machine --------------------------------------------------------------------------------

VERSIONED = ("lipx", "numpy", "torch", "onnx", "onnxruntime", "onnxruntime-gpu", "tensorrt",
             "cuda-python", "pystoi", "pesq")


def versions() -> dict[str, str]:
    """Installed versions of the packages that shape the numbers."""
    out = {"python": platform.python_version()}
    for name in VERSIONED:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


ISA_FLAGS = ("avx2", "fma", "f16c", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16",
             "amx_int8")
"""CPU features that pick onnxruntime's and PyTorch's kernels (int8 dot products, fp16/bf16):
the same graph can give other numbers with and without VNNI, so results record them."""


def _cpuinfo_field(name: str) -> str | None:
    try:
        for line in open("/proc/cpuinfo"):  # noqa: SIM115
            if line.split(":", 1)[0].strip() == name:
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_name() -> str:
    return _cpuinfo_field("model name") or platform.processor() or platform.machine()


def cpu_flags() -> set[str] | None:
    """Every feature flag of the CPU (None where /proc/cpuinfo is not readable)."""
    flags = _cpuinfo_field("flags")
    return None if flags is None else set(flags.split())


def cpu_features() -> list[str] | None:
    """Which of :data:`ISA_FLAGS` the CPU has (None where /proc/cpuinfo is not readable)."""
    present = cpu_flags()
    if present is None:
        return None
    return [f for f in ISA_FLAGS if f in present]


def load_average() -> list[float] | None:
    """1/5/15-minute load averages (other processes sharing the CPU), None where unknown."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    info: dict[str, Any] = {
        "platform": platform.platform(), "cpu": cpu_name(), "cpu_features": cpu_features(),
        "cpu_count": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "load_average": load_average(), "versions": versions(),
    }
    try:
        pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        info["memory_gib"] = round(pages * size / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        pass
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["cuda"] = torch.version.cuda
    return info
