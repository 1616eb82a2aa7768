"""The PNG plots of a bench report (matplotlib, imported lazily; none without it, warned).

* ``latency.png``: latency distributions per engine (whole window, front-end chunk, backend).
* ``accuracy-speed.png``: the task metric against whole-window latency.
* ``efficiency.png``: achieved GFLOP/s per engine and measurement against the machine's SGEMM
  peak (when the FLOPs were counted).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from lipx.benchmarks.report import metric_name, metric_value
from lipx.benchmarks.results import BenchReport, EngineRow

log = logging.getLogger(__name__)


def write_plots(report: BenchReport, out: Path) -> list[Path]:
    """latency.png, accuracy-speed.png and efficiency.png; none without matplotlib (warned)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        log.warning("matplotlib is not installed: no plots (pip install matplotlib)")
        return []
    ran = [r for r in report.rows if r.samples_ms][::-1]  # first row on top
    if not ran:
        return []
    paths = [_latency_plot(report, ran, out / "latency.png"),
             _accuracy_plot(report, ran, out / "accuracy-speed.png")]
    if report.work is not None and report.work.flops:
        paths.append(_efficiency_plot(report, ran, out / "efficiency.png"))
    return paths


def _latency_plot(report: BenchReport, ran: list[EngineRow], path: Path) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

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
    FigureCanvasAgg(fig).print_png(str(path))
    return path


def _accuracy_plot(report: BenchReport, ran: list[EngineRow], path: Path) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

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
    FigureCanvasAgg(fig).print_png(str(path))
    return path


def _efficiency_plot(report: BenchReport, ran: list[EngineRow], path: Path) -> Path:
    """Horizontal bars of GFLOP/s (window, front-end chunk, backend) per engine, peaks as lines."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 1.8 + 0.6 * len(ran)), layout="constrained")
    ax = fig.add_subplot(1, 1, 1)
    parts = {"window": "whole window", "frontend": "front-end chunk", "backend": "backend"}
    height = 0.8 / len(parts)
    for j, (name, label) in enumerate(parts.items()):  # the window on top in each group
        rates = [r.gflop_s().get(name, 0.0) for r in ran]
        ax.barh([i + (1 - j) * height for i in range(len(ran))], rates, height, label=label)
    peak = report.machine.get("gemm_peak") or {}
    for threads, rate in (peak.get("gflop_s") or {}).items():
        ax.axvline(rate, linestyle="--", color="grey")
        ax.text(rate, 0.98, f" SGEMM, {threads} thread{'s' * (threads != '1')}", fontsize=8,
                rotation=90, ha="right", va="top", transform=ax.get_xaxis_transform())
    ax.set_yticks(range(len(ran)), [r.key for r in ran])
    _log_axis(ax.xaxis)
    ax.set_xlabel("achieved GFLOP/s (batch 1; fp32 graphs' FLOPs over the clipped mean)")
    ax.legend(loc="lower right", fontsize=8)
    fig.suptitle(f"{report.task} {report.model}: how close to the machine")
    FigureCanvasAgg(fig).print_png(str(path))
    return path


def _log_axis(axis: Any) -> None:
    """Log scale with plain-number ticks at 1, 2, 5 x 10^k."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    axis.axes.set_xscale("log") if axis.axis_name == "x" else axis.axes.set_yscale("log")
    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())
