"""The server's counters, gauges and histograms, written in Prometheus' text format.

    metrics = Metrics()
    metrics.frames.inc()
    metrics.emission.observe(0.62)
    text = metrics.render(extra=[...])       # GET /metrics

Thread-safe (sessions run on threads). No prometheus_client: the few types needed are small, and
the format is plain text (https://prometheus.io/docs/instrumenting/exposition_formats/).
"""

from __future__ import annotations

import bisect
import os
import resource
import threading
from collections.abc import Iterable, Mapping

FORMAT_HEADERS = {"X-Prometheus-Format": "0.0.4"}
"""Headers of a ``/metrics`` answer (text/plain, UTF-8): the exposition format's version."""
LATENCY_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5,
                   2.0, 5.0)
"""Seconds: engine steps (ms) up to emission latencies (about a second)."""
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


def _labels(labels: Mapping[str, str]) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return "{" + inner + "}"


class Counter:
    """A number that only goes up, per label set."""

    kind = "counter"

    def __init__(self, name: str, help: str) -> None:
        self.name, self.help = name, help
        self._values: dict[tuple[tuple[str, str], ...], float] = {}
        self._lock = threading.Lock()

    def inc(self, n: float = 1, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            self._values[key] = self._values.get(key, 0) + n

    def value(self, **labels: str) -> float:
        return self._values.get(tuple(sorted(labels.items())), 0)

    def samples(self) -> Iterable[str]:
        with self._lock:
            items = list(self._values.items()) or [((), 0.0)]
        for key, v in items:
            yield f"{self.name}{_labels(dict(key))} {v:g}"


class Gauge(Counter):
    """A number that goes up and down."""

    kind = "gauge"

    def set(self, v: float, **labels: str) -> None:
        with self._lock:
            self._values[tuple(sorted(labels.items()))] = v


class Histogram:
    """Observations counted in cumulative buckets, per label set."""

    kind = "histogram"

    def __init__(self, name: str, help: str, buckets: tuple[float, ...]) -> None:
        self.name, self.help, self.buckets = name, help, buckets
        self._data: dict[tuple[tuple[str, str], ...], tuple[list[int], list[float]]] = {}
        self._lock = threading.Lock()

    def observe(self, v: float, n: int = 1, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            counts, total = self._data.setdefault(key, ([0] * (len(self.buckets) + 1), [0.0]))
            counts[bisect.bisect_left(self.buckets, v)] += n
            total[0] += v * n

    def samples(self) -> Iterable[str]:
        with self._lock:
            items = [(k, (list(c), t[0])) for k, (c, t) in self._data.items()]
        for key, (counts, total) in items:
            labels = dict(key)
            running = 0
            for bound, count in zip((*self.buckets, float("inf")), counts):
                running += count
                le = "+Inf" if bound == float("inf") else f"{bound:g}"
                yield f"{self.name}_bucket{_labels({**labels, 'le': le})} {running}"
            yield f"{self.name}_sum{_labels(labels)} {total:g}"
            yield f"{self.name}_count{_labels(labels)} {running}"


class Metrics:
    """Everything ``/metrics`` shows."""

    def __init__(self) -> None:
        self.streams_active = Gauge("lipx_streams_active", "Streams live now.")
        self.streams = Counter("lipx_streams_total", "Streams accepted.")
        self.refused = Counter("lipx_streams_refused_total", "Connections refused, by reason.")
        self.frames = Counter("lipx_frames_received_total", "Frames received.")
        self.dropped = Counter("lipx_frames_dropped_total",
                               "Frames dropped (stale behind newer ones, or never sent).")
        self.skipped = Counter("lipx_frames_skipped_total",
                               "Frames on a model tick already taken (a client too fast).")
        self.words = Counter("lipx_words_total", "Words emitted.")
        self.audio = Counter("lipx_audio_seconds_total", "Seconds of speech emitted.")
        self.emission = Histogram("lipx_emission_seconds", "Emission latency: a word after its "
                                  "end, an audio chunk after its start (stream clock).",
                                  LATENCY_BUCKETS)
        self.step = Histogram("lipx_step_seconds", "One batched engine call, by step.",
                              LATENCY_BUCKETS)
        self.batch = Histogram("lipx_batch_size", "Clips or windows per engine call, by step.",
                               BATCH_BUCKETS)
        self.frame_compute = Histogram("lipx_frame_compute_seconds", "A frame's compute in its "
                                       "session (crop, engines, head), by stage.",
                                       LATENCY_BUCKETS)
        self._all: list[Counter | Histogram] = [
            self.streams_active, self.streams, self.refused, self.frames, self.dropped,
            self.skipped, self.words, self.audio, self.emission, self.step, self.batch,
            self.frame_compute]

    def on_batch(self, step: str, size: int, seconds: float) -> None:
        """A batcher's report of one call."""
        self.batch.observe(size, step=step)
        self.step.observe(seconds, step=step)

    def record_frames(self, samples: dict[str, list[float]]) -> None:
        """A stream's per-frame stage times (its session timer's samples), at its end."""
        for stage, seconds in samples.items():
            for s in seconds:
                self.frame_compute.observe(s, stage=stage)

    def render(self) -> str:
        lines: list[str] = []
        metrics: list[Counter | Histogram] = [*self._all, *_process()]
        for metric in metrics:
            lines += [f"# HELP {metric.name} {metric.help}", f"# TYPE {metric.name} {metric.kind}"]
            lines += metric.samples()
        return "\n".join(lines) + "\n"


def _process() -> list[Counter]:
    """The process' CPU time and memory (the standard names, and lipx_server_rss_bytes)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu = Counter("process_cpu_seconds_total", "User and system CPU time.")
    cpu.inc(usage.ru_utime + usage.ru_stime)
    rss = rss_bytes()
    out: list[Counter] = [cpu]
    for name in ("process_resident_memory_bytes", "lipx_server_rss_bytes"):
        gauge = Gauge(name, "Resident memory of the server.")
        gauge.set(rss)
        out.append(gauge)
    peak = Gauge("lipx_server_peak_rss_bytes", "Peak resident memory of the server.")
    peak.set(usage.ru_maxrss * 1024)
    return [*out, peak]


def rss_bytes() -> int:
    """This process' resident memory now (Linux /proc; else the peak)."""
    try:
        with open(f"/proc/{os.getpid()}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
