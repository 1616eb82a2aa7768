"""This machine's GEMM peak: what a float32 matrix product reaches here, the yardstick of the
bench's GFLOP/s.

numpy's ``matmul`` of large square float32 matrices calls the BLAS it was built with (OpenBLAS in
the wheels), the best-tuned dense kernel most machines have; its best rate over a few sizes and
repeats is taken as the peak an engine could reach on this CPU. It is measured on one thread and
on the bench's thread count (``--threads``, else every core the process may use, as onnxruntime and
PyTorch use by default), with the BLAS pool limited through threadpoolctl. On a shared machine the
best of the repeats is what the CPU gives when it is least disturbed.

OpenBLAS picks its kernel from the CPU model it recognises, and falls back to an older one for
models it does not know: on a Zen 5 (AVX-512) it ran its ``Haswell`` AVX2 kernel, about half of
what its ``SkylakeX`` AVX-512 kernel reaches there, and onnxruntime's own AVX-512 kernels beat
that "peak". So when the CPU has AVX-512 and OpenBLAS chose a kernel without it, the product is
timed again in a subprocess with ``OPENBLAS_CORETYPE=SkylakeX``, and the peak is the better of the
two; ``kernels`` records both.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from typing import Any

import numpy as np

from lipx.benchmarks.timing import cpu_flags

log = logging.getLogger(__name__)

SIZES = (512, 1024, 2048)
"""Square matrix sizes (n x n times n x n: 2 n^3 FLOPs)."""
SECONDS = 0.15
"""Timed products per size and thread count go on until this long is spent (after one untimed),
at least :data:`MIN_REPEATS` and at most :data:`MAX_REPEATS` of them: one kernel's probe takes
1-2 s on two threads."""
MIN_REPEATS, MAX_REPEATS = 2, 50
AVX512_KERNELS = ("SkylakeX", "Cooperlake", "SapphireRapids")
"""OpenBLAS kernels that use AVX-512."""
AVX512_FLAGS = {"avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"}
"""What OpenBLAS's SkylakeX kernel needs."""


def bench_threads(threads: int | None) -> int:
    """The bench's intra-op threads: ``threads``, else every core this process may run on."""
    if threads is not None:
        return threads
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def sgemm_gflop_s(n: int, seconds: float = SECONDS, seed: int = 0) -> float:
    """Best GFLOP/s of float32 products of two n x n matrices over ``seconds`` of repeats."""
    rng = np.random.default_rng(seed)
    a, b = (rng.standard_normal((n, n), dtype=np.float32) for _ in range(2))
    out = np.empty((n, n), np.float32)
    np.matmul(a, b, out=out)  # untimed: the pool's threads start, pages are touched
    times: list[float] = []
    deadline = time.perf_counter() + seconds
    while len(times) < MAX_REPEATS and (len(times) < MIN_REPEATS
                                        or time.perf_counter() < deadline):
        start = time.perf_counter()
        np.matmul(a, b, out=out)
        times.append(time.perf_counter() - start)
    return 2.0 * n**3 / min(times) / 1e9


def measure(counts: list[int], sizes: tuple[int, ...], seconds: float) -> dict[str, Any]:
    """The BLAS's kernel, and its best GFLOP/s per thread count (``by_size``: per size too)."""
    try:
        from threadpoolctl import threadpool_info, threadpool_limits
    except ImportError:  # a base dependency; without it the BLAS keeps its own thread count
        return {"blas": "unknown (no threadpoolctl: its default threads)", "kernel": None,
                "by_size": {str(max(counts)): {str(n): round(sgemm_gflop_s(n, seconds), 2)
                                               for n in sizes}}}
    found = [i for i in threadpool_info() if i.get("user_api") == "blas"]  # OpenCV and scipy
    blas: dict[str, Any] = next((i for i in found if "numpy" in str(i.get("filepath"))),  # bring
                                found[0] if found else {})  # their own: numpy's is the one timed
    by_size = {}
    for count in counts:
        with threadpool_limits(limits=count, user_api="blas"):
            by_size[str(count)] = {str(n): round(sgemm_gflop_s(n, seconds), 2) for n in sizes}
    return {"blas": f"{blas.get('internal_api', '?')} {blas.get('version', '')}".strip(),
            "kernel": blas.get("architecture"), "by_size": by_size}


def gemm_peak(threads: int | None, sizes: tuple[int, ...] = SIZES,
              seconds: float = SECONDS) -> dict[str, Any]:
    """The measured SGEMM peak on 1 thread and on the bench's threads.

    Returns:
        ``{"gflop_s": {"1": ..., "N": ...}, "threads": N, "peak_gflop_s": p, "kernels":
        {kernel: {"blas", "kernel", "by_size"}}, "sizes": [...], "seconds_per_size": t,
        "seconds": s}``: per thread count the best over sizes and kernels. ``p``, what the rows'
        fraction of peak is taken against, is the best of the 1- and N-thread rates (N threads
        can do what one does; on a loaded machine they can measure lower).
    """
    started = time.perf_counter()
    n_threads = bench_threads(threads)
    counts = sorted({1, n_threads})
    found = measure(counts, sizes, seconds)
    kernels = {str(found["kernel"]): found}
    if _avx512_unused(found):
        other = _measure_elsewhere(counts, sizes, seconds, coretype="SkylakeX")
        if other is not None:
            kernels[str(other["kernel"])] = other
    peak: dict[str, float] = {}
    for k in kernels.values():
        for count, rates in k["by_size"].items():
            peak[count] = max(peak.get(count, 0.0), *rates.values())
    log.info("SGEMM peak: %s GFLOP/s (threads: value)", peak)
    return {"gflop_s": peak, "threads": n_threads, "peak_gflop_s": max(peak.values()),
            "kernels": kernels, "sizes": list(sizes), "seconds_per_size": seconds,
            "seconds": round(time.perf_counter() - started, 2)}


def _avx512_unused(found: dict[str, Any]) -> bool:
    """OpenBLAS runs a kernel without AVX-512 on a CPU that has it."""
    flags = cpu_flags() or set()
    return (found["blas"].startswith("openblas") and found["kernel"] not in AVX512_KERNELS
            and AVX512_FLAGS <= flags)


def _measure_elsewhere(counts: list[int], sizes: tuple[int, ...], seconds: float,
                       coretype: str) -> dict[str, Any] | None:
    """:func:`measure` in a fresh interpreter with ``OPENBLAS_CORETYPE=coretype`` (the kernel is
    chosen when the library loads); None if it fails."""
    code = ("import json, sys; from lipx.benchmarks.peak import measure; "
            "print(json.dumps(measure(*json.loads(sys.argv[1]))))")
    args = json.dumps([counts, list(sizes), seconds])
    try:
        out = subprocess.run([sys.executable, "-c", code, args], capture_output=True, text=True,
                             env={**os.environ, "OPENBLAS_CORETYPE": coretype}, timeout=120,
                             check=True)
        return dict(json.loads(out.stdout.strip().splitlines()[-1]))
    except (OSError, subprocess.SubprocessError, ValueError, IndexError) as e:
        log.warning("timing OpenBLAS's %s kernel failed: %s", coretype, e)
        return None
