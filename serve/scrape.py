"""A Prometheus text page read back: what ``lipx bench-serve`` learns from a server's ``/metrics``.

    before, after = Scrape.parse(text0), Scrape.parse(text1)
    after.delta(before, "process_cpu_seconds_total")        # CPU seconds between the two
    batch_means(before, after)                              # {"frontend": 3.2, "backend": 1.9}

Tolerant by design: every ``name{labels} value [timestamp]`` line is kept, comments and anything
else are skipped, and a metric a server does not have reads as None, never as an error
(https://prometheus.io/docs/instrumenting/exposition_formats/).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_SAMPLE = re.compile(r"([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+-?\d+)?")
_LABEL = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"')
Samples = dict[str, list[tuple[dict[str, str], float]]]
"""Metric name -> its samples: (labels, value)."""


@dataclass(frozen=True)
class Scrape:
    """One page's samples."""

    samples: Samples = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> Scrape:
        """Every sample line of ``text`` (a histogram's ``_bucket``/``_sum``/``_count`` lines are
        samples of those names)."""
        samples: Samples = {}
        for line in text.splitlines():
            found = _SAMPLE.fullmatch(line.strip())
            if found is None:
                continue
            name, labels, value = found.groups()
            try:
                number = float(value)
            except ValueError:
                continue
            samples.setdefault(name, []).append((dict(_LABEL.findall(labels or "")), number))
        return cls(samples)

    def total(self, name: str, **labels: str) -> float | None:
        """The sum of ``name``'s samples that carry ``labels`` (None: there are none)."""
        values = [value for have, value in self.samples.get(name, ())
                  if all(have.get(k) == want for k, want in labels.items())]
        return sum(values) if values else None

    def delta(self, before: Scrape, name: str, **labels: str) -> float | None:
        """How much ``name`` grew since ``before`` (None: not on this page)."""
        now = self.total(name, **labels)
        return None if now is None else now - (before.total(name, **labels) or 0.0)

    def label_values(self, name: str, label: str) -> list[str]:
        """The values ``label`` takes on ``name``'s samples, sorted."""
        return sorted({have[label] for have, _ in self.samples.get(name, ()) if label in have})


def batch_means(before: Scrape, after: Scrape, name: str = "lipx_batch_size"
                ) -> dict[str, float]:
    """Mean batch size per ``step`` between two pages, from the histogram's sum and count
    (steps without calls in between are left out)."""
    means = {}
    for step in after.label_values(f"{name}_count", "step"):
        calls = after.delta(before, f"{name}_count", step=step)
        total = after.delta(before, f"{name}_sum", step=step)
        if calls and total is not None:
            means[step] = round(total / calls, 2)
    return means
