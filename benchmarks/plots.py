"""The PNG plots of a bench report (matplotlib, imported lazily; none without it, warned).

* ``latency.png``: latency distributions per engine (whole window, front-end chunk, backend).
* ``accuracy-speed.png``: the task metric against whole-window latency.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from lipx.benchmarks.report import metric_name, metric_value
from lipx.benchmarks.results import BenchReport

log = logging.getLogger(__name__)


def write_plots(report: BenchReport, out: Path) -> list[Path]:
    """latency.png and accuracy-speed.png; none without matplotlib (warned)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        log.warning("matplotlib is not installed: no plots (pip install matplotlib)")
        return []
    ran = [r for r in report.rows if r.samples_ms][::-1]  # first row on top
    if not ran:
        return []
    fig = Figure(figsize=(12, 1.5 + 0.45 * len(ran)), layout="constrained")
    titles = {"window": "whole model, one window", "frontend": "front-end, one chunk",
              "backend": "backend, one window"}
    for i, (name, title) in enumerate(titles.items()):
        ax = fig.add_subplot(1, 3, i + 1)
        ax.boxplot([r.samples_ms[name] for r in ran], orientation="horizontal",
                   tick_labels=[r.key for r in ran] if i == 0 else [""] * len(ran))
        _log_axis(ax.xaxis)
        ax.set_xlabel("ms (batch 1)")
        ax.set_title(title)
    fig.suptitle(f"{report.task} {report.model}: latency per call")
    FigureCanvasAgg(fig).print_png(str(out / "latency.png"))
    fig = Figure(figsize=(11, 4.5), layout="constrained")
    metric, error = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    for r in ran:
        if r.window is None:
            continue
        colour = "tab:red" if r.status != "ok" else "tab:blue"
        points = [(metric, metric_value(report, r)),
                  (error, r.parity.worst_abs if r.parity and not r.reference else None)]
        for ax, y in points:
            if y is not None and y == y:
                ax.scatter([r.window.p50_ms], [y], color=colour)
                ax.annotate(r.key, (r.window.p50_ms, y), textcoords="offset points",
                            xytext=(4, 4), fontsize=8)
    metric.set_ylabel(metric_name(report))
    error.set_ylabel(f"worst max abs error vs {report.reference}")
    error.set_yscale("log")
    for ax in (metric, error):
        _log_axis(ax.xaxis)
        ax.set_xlabel("whole-window latency p50 (ms, batch 1)")
    fig.suptitle(f"{report.task} {report.model}: accuracy vs speed (red: not ok)")
    FigureCanvasAgg(fig).print_png(str(out / "accuracy-speed.png"))
    return [out / "latency.png", out / "accuracy-speed.png"]


def _log_axis(axis: Any) -> None:
    """Log scale with plain-number ticks at 1, 2, 5 x 10^k."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    axis.axes.set_xscale("log") if axis.axis_name == "x" else axis.axes.set_yscale("log")
    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())
