"""The cost of the stream's feature cache: the same stream with and without it.

    result = compare_cache("pkg", "clip.mp4", StreamOptions(max_frames=200, threads=1))
    result["ratio"]  # engine time per frame without the cache over with it

With the cache each frame's features are computed once (the split graphs); without it
(``--no-cache``) every window is recomputed by the whole model. Runs the real runtime
(:func:`lipx.runtime.stream.stream`), so it stays torch-free.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from lipx.runtime.stats import StreamStats
from lipx.runtime.stream import StreamOptions, stream


def compare_cache(package_dir: str | Path, source: str, opts: StreamOptions,
                  repeats: int = 2) -> dict[str, Any]:
    """Per-frame model cost with the feature cache versus recomputing every window.

    Runs the stream with and without the cache, alternating ``repeats`` times (so both see the
    same machine load), on the same source.

    Returns:
        ``{"cache_ms", "no_cache_ms"}``: the best mean engine milliseconds per frame of each mode
        (front-end + backend, or the whole model), their ``ratio`` (no-cache / cache), the best
        per-frame compute p50 of each mode (``*_compute_p50_ms``, including decode and crop),
        and the ``frames`` streamed.
    """
    runs: dict[bool, list[StreamStats]] = {True: [], False: []}
    for _ in range(repeats):
        for cache in (True, False):
            mode = dataclasses.replace(opts, cache=cache, chunk=opts.chunk if cache else 1)
            runs[cache].append(stream(package_dir, source, mode))
    best = {c: min(s.model_ms_per_frame for s in r) for c, r in runs.items()}
    p50 = {c: min(s.compute.p50_ms for s in r) for c, r in runs.items()}
    return {"cache_ms": best[True], "no_cache_ms": best[False],
            "ratio": best[False] / best[True] if best[True] else float("nan"),
            "cache_compute_p50_ms": p50[True], "no_cache_compute_p50_ms": p50[False],
            "frames": runs[True][0].frames_out}
