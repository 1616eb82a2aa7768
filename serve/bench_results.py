"""The rows of ``lipx bench-serve``: what N streams saw, and whether a server sustained them.

    run = summarize(8, records, before, after, wall_s=21.3)    # one ServeRun per stream count
    run.failed = failure(run)                                   # None, or the failed criteria
    sustained(runs)                                             # the largest count before a failure

A server *sustains* N streams when all N were served to their end, none had a frame dropped (or
lost without a count) and the client-side emission latency's p95 is at most
:data:`MAX_EMISSION_P95_S`. No network code:
:mod:`lipx.serve.bench` fills the :class:`StreamRecord` of each connection.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lipx.serve.scrape import Scrape, batch_means

MAX_EMISSION_P95_S = 1.0
"""The most a sustained count's client-side emission p95 may be (seconds)."""


@dataclass
class StreamRecord:
    """What one connection saw (times on the client's monotonic clock, in seconds)."""

    t0: float = 0.0
    """When its frame 0 was due; frame k was due at ``t0 + k / fps``."""
    ready: bool = False
    sent: int = 0
    late: int = 0
    """Frames sent more than a frame period after they were due."""
    late_max_s: float = 0.0
    timed_until: float = float("inf")
    """Stream time after which results are counted but not timed (the stream's end flushes
    them)."""
    waits: list[float] = field(default_factory=list)
    """Client-side emission latency of each result."""
    server_waits: list[float] = field(default_factory=list)
    """Each result's ``emitted_s - end_s`` (the server's own)."""
    words: int = 0
    audio_s: float = 0.0
    end: dict[str, Any] | None = None
    """The server's statistics from its ``end`` (``frames_in``, ``frames_dropped``, ...)."""
    error: str | None = None
    """Why it was refused or broken: the server's error code, or what the client saw."""


@dataclass
class ServeRun:
    """One stream count's results: a row of the report's ``runs``."""

    streams: int
    frames: int = 0
    """Frames sent, all streams together."""
    dropped: int = 0
    """Frames the server dropped (the sum of its ``end`` statistics' ``frames_dropped``)."""
    dropped_pct: float = 0.0
    unaccounted: int = 0
    """Frames sent that the server's statistics neither read nor dropped (``sent - frames_in``
    of each ended stream): lost without a count."""
    emission_p50_s: float | None = None
    """Client-side: a word's receipt after the time its end frame was due."""
    emission_p95_s: float | None = None
    server_emission_p50_s: float | None = None
    """Server-side: the words' ``emitted_s - end_s``."""
    server_emission_p95_s: float | None = None
    words: int = 0
    audio_s: float = 0.0
    """Seconds of speech received (lip-to-speech; a chunk's latency counts from its start)."""
    server_rss_mb: float | None = None
    server_peak_rss_mb: float | None = None
    server_cpu_s: float | None = None
    cpu_util: float | None = None
    """Server CPU seconds per wall second (up to its cores)."""
    batch_mean: dict[str, float] = field(default_factory=dict)
    """Mean clips or windows per engine call during the run, by step."""
    client_late_frames: int = 0
    """Frames this client sent over a frame period late: then it measured itself too."""
    client_late_max_s: float = 0.0
    refused: int = 0
    """Streams that got no ``ready``."""
    errors: dict[str, int] = field(default_factory=dict)
    """Error codes of refused or broken streams, and how many had each."""
    wall_s: float = 0.0
    failed: str | None = None
    """The criteria that failed (None: sustained)."""


def summarize(n: int, records: Sequence[StreamRecord], before: Scrape, after: Scrape,
              wall_s: float) -> ServeRun:
    """The streams' records and the server's ``/metrics`` around them, as one row."""
    frames = sum(r.sent for r in records)
    dropped = sum(int((r.end or {}).get("frames_dropped", 0)) for r in records)
    p50, p95 = p50_p95([w for r in records for w in r.waits])
    server_p50, server_p95 = p50_p95([w for r in records for w in r.server_waits])
    cpu = after.delta(before, "process_cpu_seconds_total")
    rss, peak = after.total("lipx_server_rss_bytes"), after.total("lipx_server_peak_rss_bytes")
    return ServeRun(
        streams=n, frames=frames, dropped=dropped,
        dropped_pct=round(100 * dropped / max(frames, 1), 2),
        unaccounted=sum(max(0, r.sent - int(r.end.get("frames_in", r.sent)))
                        for r in records if r.end is not None),
        emission_p50_s=p50, emission_p95_s=p95, server_emission_p50_s=server_p50,
        server_emission_p95_s=server_p95, words=sum(r.words for r in records),
        audio_s=round(sum(r.audio_s for r in records), 2),
        server_rss_mb=_mb(rss), server_peak_rss_mb=_mb(peak),
        server_cpu_s=None if cpu is None else round(cpu, 2),
        cpu_util=None if cpu is None or wall_s <= 0 else round(cpu / wall_s, 2),
        batch_mean=batch_means(before, after),
        client_late_frames=sum(r.late for r in records),
        client_late_max_s=round(max((r.late_max_s for r in records), default=0.0), 3),
        refused=sum(not r.ready for r in records),
        errors=dict(Counter(r.error for r in records if r.error)), wall_s=round(wall_s, 2))


def _mb(n_bytes: float | None) -> float | None:
    return None if n_bytes is None else round(n_bytes / 1e6, 1)


def p50_p95(values: Sequence[float]) -> tuple[float | None, float | None]:
    """The median and 95th percentile (linear interpolation, to the ms); Nones for none."""
    if not values:
        return None, None
    p50, p95 = np.percentile(np.asarray(values, dtype=np.float64), [50, 95])
    return round(float(p50), 3), round(float(p95), 3)


def failure(run: ServeRun, max_p95_s: float = MAX_EMISSION_P95_S) -> str | None:
    """Why ``run`` is not sustained (every failed criterion, ``; ``-joined), or None."""
    why = []
    if run.errors:
        codes = ", ".join(f"{code} x{k}" for code, k in sorted(run.errors.items()))
        why.append(f"streams refused or broken: {codes}")
    if run.dropped:
        why.append(f"dropped {run.dropped} frames")
    if run.unaccounted:
        why.append(f"{run.unaccounted} frames sent but not counted by the server")
    if run.emission_p95_s is None:
        why.append("no words to time")
    elif run.emission_p95_s > max_p95_s:
        why.append(f"emission p95 {run.emission_p95_s:.2f} s > {max_p95_s:g} s")
    return "; ".join(why) or None


def sustained(runs: Sequence[ServeRun]) -> int | None:
    """The largest stream count before the first failed run (None: the first one failed)."""
    best: int | None = None
    for run in runs:
        if run.failed:
            break
        best = run.streams if best is None else max(best, run.streams)
    return best


def format_run(run: ServeRun) -> str:
    """One progress line for a stream count."""
    def s(x: float | None) -> str:
        return "-" if x is None else f"{x:.2f}"

    batch = " ".join(f"{k} {v:.1f}" for k, v in run.batch_mean.items()) or "-"
    rss = "-" if run.server_rss_mb is None else f"{run.server_rss_mb:.0f} MB"
    late = f"; CLIENT LATE: {run.client_late_frames} frames" if run.client_late_frames else ""
    verdict = f"FAILED: {run.failed}" if run.failed else "ok"
    lost = f" + {run.unaccounted} uncounted" if run.unaccounted else ""
    return (f"{run.streams} streams: {run.frames} frames, dropped {run.dropped}{lost} "
            f"({run.dropped_pct:g}%), emission p50 {s(run.emission_p50_s)} p95 "
            f"{s(run.emission_p95_s)} s (server {s(run.server_emission_p50_s)}/"
            f"{s(run.server_emission_p95_s)}), {run.words} words; batch {batch}; server cpu "
            f"{s(run.cpu_util)}x, rss {rss}{late} | {verdict}")
