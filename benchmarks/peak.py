"""This machine's GEMM peak: what a float32 matrix product reaches here, the yardstick of the
bench's GFLOP/s.

numpy's ``matmul`` of large square float32 matrices calls the BLAS it was built with (OpenBLAS in
the wheels), the best-tuned dense kernel most machines have; its best rate over a few sizes and
repeats is taken as the peak an engine could reach on this CPU. It is measured on one thread and
on the bench's thread count (``--threads``, else every core the process may use, as onnxruntime and
PyTorch use by default), with the BLAS pool limited through threadpoolctl. On a shared machine the
best of the repeats is what the CPU gives when it is least disturbed.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

SIZES = (512, 1024, 2048)
"""Square matrix sizes (n x n times n x n: 2 n^3 FLOPs)."""
SECONDS = 0.25
"""Timed products per size and thread count go on until this long is spent (after one untimed),
at least :data:`MIN_REPEATS` and at most :data:`MAX_REPEATS` of them: the whole probe takes about
2-3 s on two threads."""
MIN_REPEATS, MAX_REPEATS = 3, 50


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


def gemm_peak(threads: int | None, sizes: tuple[int, ...] = SIZES,
              seconds: float = SECONDS) -> dict[str, Any]:
    """The measured SGEMM peak on 1 thread and on the bench's threads.

    Returns:
        ``{"gflop_s": {"1": ..., "N": ...}, "threads": N, "peak_gflop_s": p, "by_size": {"1":
        {"512": ...}, ...}, "sizes": [...], "seconds_per_size": t, "seconds": s}``. ``p``, what
        the rows' fraction of peak is taken against, is the best of the 1- and N-thread rates
        (N threads can always do what one does; on a loaded machine they measure lower).
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # a base dependency; without it the BLAS keeps its own thread count
        threadpool_limits = None
    started = time.perf_counter()
    n_threads = bench_threads(threads)
    by_size: dict[str, dict[str, float]] = {}
    for count in sorted({1, n_threads}):
        if threadpool_limits is None and count != n_threads:
            continue
        limit = threadpool_limits(limits=count, user_api="blas") if threadpool_limits else None
        try:
            by_size[str(count)] = {str(n): round(sgemm_gflop_s(n, seconds), 2) for n in sizes}
        finally:
            if limit is not None:
                limit.restore_original_limits()
    peak = {k: max(v.values()) for k, v in by_size.items()}
    log.info("SGEMM peak: %s GFLOP/s (threads: value)", peak)
    return {"gflop_s": peak, "threads": n_threads, "peak_gflop_s": max(peak.values()),
            "by_size": by_size, "sizes": list(sizes),
            "seconds_per_size": seconds, "seconds": round(time.perf_counter() - started, 2)}
