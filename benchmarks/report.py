"""Bench reports: a terminal table (rich), and with ``--out`` JSON, Markdown and PNG plots.

* ``bench.json``: everything (machine with its load average, versions and SGEMM peak, settings,
  the FLOPs per measurement, every row with its raw samples, GFLOP/s and % peak); the format other
  tools read (:data:`JSON_FORMAT`).
* ``bench.md``: the summary table, latency/throughput/parity details, skipped engines and why.
* the plots (:mod:`lipx.benchmarks.plots`): ``latency.png``, ``accuracy-speed.png``.

matplotlib is needed for the plots only; without it they are left out with a warning.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from lipx.benchmarks.efficiency import step_figures, step_sentence
from lipx.benchmarks.results import BenchReport, EngineRow
from lipx.files import atomic_write
from lipx.runtime.tasks import stream_task

JSON_FORMAT = 3
"""Version of the ``bench.json`` layout.

3 adds, removing and renaming nothing: top-level ``flops`` (a
:class:`~lipx.benchmarks.efficiency.Work`: ``flops`` per call of each measurement, ``by_op``,
``note``, ``rule``, ``graphs``; without onnx only the note), ``machine.gemm_peak``
(:func:`~lipx.benchmarks.peak.gemm_peak`: ``gflop_s`` by thread count, ``threads``,
``peak_gflop_s``, ``kernels``: the BLAS kernels timed, each with its rates ``by_size``), and
per row ``flops``, ``gflop_s`` and ``peak_fraction`` (measurement -> value, for the
measurements ``window``, ``frontend``, ``backend``, ``batchN``, ``tiny``), ``tiny_call`` (the
smallest call's statistics) and ``step`` (:func:`~lipx.benchmarks.efficiency.step_figures`,
null without FLOPs).
2: latency statistics are :class:`~lipx.runtime.stats.LatencyStats` (``count``, ``mean_ms``,
``std_ms``, ``p50_ms`` ... ``clipped``); 1 had ``n``, ``mean``, ``std``, ``p50`` ...
``clipped``, in the same units (ms)."""


# --- cells ----------------------------------------------------------------------------------


def _f(value: float | None, fmt: str = ".1f") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value, fmt)


def metric_name(report: BenchReport) -> str:
    """The task metric shown per engine (its stream unit's
    :meth:`~lipx.runtime.task.StreamTask.bench_name`)."""
    return stream_task(report.task).bench_name(report.has_data)


def metric_value(report: BenchReport, row: EngineRow) -> float | None:
    """An engine's task metric (its stream unit's
    :meth:`~lipx.runtime.task.StreamTask.bench_value`); None without parity."""
    p = row.parity
    if p is None:
        return None
    return stream_task(report.task).bench_value(p.metrics, row.reference, report.has_data,
                                                p.top1_agreement)


def metric_cell(report: BenchReport, row: EngineRow) -> str:
    """The metric, its change from the reference's, and beside a measured metric the top-1
    agreement (classifiers)."""
    value = metric_value(report, row)
    if value is None:
        return "-"
    key = stream_task(report.task).bench_metric
    delta = row.parity.deltas.get(key) if row.parity else None
    extra = f" ({delta:+.3f})" if delta is not None and not row.reference else ""
    top1 = row.parity.top1_agreement if row.parity else None
    if key in (row.parity.metrics if row.parity else {}):
        extra += f", agr {top1:.3f}" if top1 is not None else ""
    return f"{value:.3f}{extra}"


def parity_cell(row: EngineRow) -> str:
    if row.parity is None:
        return "-"
    if row.reference:
        return "reference"
    return f"{row.parity.worst_abs:.1e} ({'ok' if row.parity.passed else 'FAIL'})"


def _latency(row: EngineRow) -> str:
    w = row.window
    return f"{w.p50_ms:.1f} / {w.p95_ms:.1f} / {w.p99_ms:.1f}" if w else "-"


def _setup(row: EngineRow) -> str:
    """Build time (conversion, plan build, torch.compile) when it counts, plus load time."""
    if row.load_s is None:
        return "-"
    if row.build_s is not None and row.build_s >= 0.05:
        return f"{row.build_s:.1f}+{row.load_s:.2f}"
    return f"{row.load_s:.2f}"


def _rss(row: EngineRow) -> str:
    """Peak RSS of the process while the engine ran, and its rise over the RSS before loading."""
    if row.peak_rss_mb is None:
        return "-"
    if row.rss_before_mb is None:
        return f"{row.peak_rss_mb:.0f}"
    return f"{row.peak_rss_mb:.0f} (+{row.peak_rss_mb - row.rss_before_mb:.0f})"


def _throughput(row: EngineRow) -> str:
    t = row.throughput()
    if not t:
        return "-"
    b = max(t)
    return f"{t[b]:.1f} @{b}"


def _gflop_cell(row: EngineRow) -> str:
    rate = row.gflop_s().get("window")
    return f"{rate:.1f}" if rate is not None else "-"


def _peak_cell(report: BenchReport, row: EngineRow) -> str:
    fraction = report.peak_fraction(row).get("window")
    return "-" if fraction is None else f"{100 * fraction:.{0 if fraction >= 0.1 else 1}f}%"


def _step_gain(row: EngineRow) -> str:
    """Recomputing the window over the cached step, and in brackets the FLOPs' limit of it."""
    if row.window is None or not row.step_ms:
        return "-"
    figures = step_figures(row)
    limit = f" ({figures['flop_limit']:.2f}x)" if figures else ""
    return f"{row.window.mean_ms / row.step_ms:.2f}x{limit}"


HEADERS = ("engine", "status", "MB", "build+load s", "window p50/p95/p99 ms", "speed-up",
           "GFLOP/s", "% peak", "step ms", "step gain (FLOPs)", "clips/s", "RTF", "streams",
           "peak RSS MiB", "parity (max abs)", "metric")
FLOP_HEADERS = ("GFLOP/s", "% peak")
"""Columns left out when nothing was counted (no onnx) or no peak was measured."""
TERMINAL_OMITS = ("step gain (FLOPs)",)
"""Columns of bench.md the printed table leaves to the notes under it (one line per engine), so
that it fits 200 characters."""


def headers(report: BenchReport, terminal: bool = False) -> list[str]:
    """The columns of this report: :data:`HEADERS`, less the FLOP ones it has no numbers for
    (and :data:`TERMINAL_OMITS` in the terminal)."""
    drop: set[str] = set(TERMINAL_OMITS) if terminal else set()
    if not (report.work and report.work.flops):
        drop.update(FLOP_HEADERS)
    elif report.peak_gflop_s() is None:
        drop.add("% peak")
    return [h for h in HEADERS if h not in drop]


def summary_rows(report: BenchReport, terminal: bool = False) -> list[list[str]]:
    """One list of cells per engine, in :func:`headers` order."""
    rows = []
    for r in report.rows:
        speed = report.speedup(r)
        cells = dict(zip(HEADERS, [
            r.key, r.status, _f(r.size_mb), _setup(r), _latency(r),
            f"{speed:.2f}x" if speed else "-", _gflop_cell(r), _peak_cell(report, r),
            _f(r.step_ms), _step_gain(r), _throughput(r),
            _f(r.rtf_stream, ".3f"), _f(r.streams, "d") if r.streams is not None else "-",
            _rss(r), parity_cell(r), metric_cell(report, r),
        ]))
        rows.append([cells[h] for h in headers(report, terminal)])
    return rows


# --- terminal -------------------------------------------------------------------------------


def table(report: BenchReport) -> Any:
    """A rich Table of :func:`summary_rows` (import rich lazily: the CLI prints it)."""
    from rich.table import Table

    title = (f"{report.task} {report.model}: window {report.settings['window']}, stride "
             f"{report.settings['stride']} @ {report.settings['fps']:g} fps; parity vs "
             f"{report.reference or 'nothing'} on {report.inputs}")
    t = Table(title=title, title_justify="left")
    for h in headers(report, terminal=True):
        t.add_column(h.replace("metric", metric_name(report)),
                     justify="left" if h in ("engine", "status") else "right")
    colours = {"ok": "green", "skipped": "dim", "parity-failed": "red", "export-failed": "red",
               "failed": "red"}
    for cells in summary_rows(report, terminal=True):
        cells[1] = f"[{colours[cells[1]]}]{cells[1]}[/{colours[cells[1]]}]"
        t.add_row(*cells)
    return t


def notes(report: BenchReport) -> list[str]:
    """Lines for the engines that did not run cleanly, the load average, and
    :func:`efficiency_notes`."""
    lines = [f"{r.key}: {r.status}: {r.reason}" for r in report.rows if r.status != "ok"]
    load = report.machine.get("load_average")
    if load:
        lines.append(f"load average at start {load}, "
                     f"at end {report.machine.get('load_average_end')}"
                     f" on {report.machine.get('cpu_count')} CPUs")
    return lines + efficiency_notes(report)


MEASUREMENTS = {"window": "window", "frontend": "front-end chunk", "backend": "backend",
                "tiny": "smallest call"}
"""How the measurements are named in reports (batches: ``batch N``)."""


def efficiency_notes(report: BenchReport) -> list[str]:
    """The GEMM peak, the FLOPs per call (or why none), and each row's cached step."""
    lines = []
    peak = report.machine.get("gemm_peak")
    if peak:
        rates = ", ".join(f"{t} thread{'s' * (t != '1')} {v:.0f}" for t, v in
                          peak["gflop_s"].items())
        kernels = " and ".join(str(k["kernel"]) for k in peak["kernels"].values())
        blas = next(iter(peak["kernels"].values()))["blas"]
        lines.append(f"SGEMM peak (numpy float32 matmul, n = {', '.join(map(str, peak['sizes']))}"
                     f"; best of repeats and of {blas}'s {kernels} kernels): {rates} GFLOP/s; "
                     f"% peak is against "
                     f"{peak['peak_gflop_s']:.0f}, the best on up to {peak['threads']} "
                     f"thread{'s' * (peak['threads'] != 1)}")
    work = report.work
    if work is not None and work.flops:
        counts = ", ".join(f"{MEASUREMENTS[k]} {v / 1e9:.3g}" for k, v in work.flops.items()
                           if k in MEASUREMENTS)
        lines.append(f"GFLOP per call (fp32 graphs; multiply-add = 2, elementwise not counted): "
                     f"{counts}")
    if work is not None and work.note:
        lines.append(work.note)
    for r in report.rows:
        figures = step_figures(r) if r.status == "ok" else None
        if figures:
            lines.append(step_sentence(r.key, figures))
    return lines


# --- files ----------------------------------------------------------------------------------


def write_report(report: BenchReport, out: Path) -> list[Path]:
    """Write bench.json, bench.md and the plots into ``out`` (created). Returns the paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    payload = {"format": JSON_FORMAT, **report.to_dict()}
    paths = [_write(out / "bench.json", json.dumps(payload, indent=1, default=_json_default))]
    from lipx.benchmarks.plots import write_plots  # it reads this module's metric helpers

    plots = write_plots(report, out)
    paths.append(_write(out / "bench.md", markdown(report, [p.name for p in plots])))
    return paths + plots


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _write(path: Path, text: str) -> Path:
    """Write atomically: readers never see half a report."""
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def _md_table(headers: list[str] | tuple[str, ...], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(c.replace("|", "/") for c in row) + " |" for row in rows]
    return "\n".join(lines)


def markdown(report: BenchReport, plots: list[str]) -> str:
    """The Markdown report."""
    m, s = report.machine, report.settings
    versions = ", ".join(f"{k} {v}" for k, v in m.get("versions", {}).items())
    parts = [
        f"# lipx bench: {report.task} {report.model}",
        "",
        f"- target: `{report.target}`; reference: `{report.reference}`; parity inputs: "
        f"{report.inputs}",
        f"- window {s['window']} frames, stride {s['stride']}, {s['fps']:g} fps; batch sizes "
        f"{s['batch_sizes']}; budget {s['budget_s']} s per engine; {report.seconds:.0f} s in all"
        + (f" (export {report.export_s:.0f} s)" if report.export_s else ""),
        f"- machine: {m.get('cpu')} ({m.get('cpu_count')} CPUs; "
        f"{' '.join(m.get('cpu_features') or ['features unknown'])}), {m.get('gpu', 'no GPU')}; "
        f"load average {m.get('load_average')} at start, {m.get('load_average_end')} at end",
        f"- {versions}",
        "",
        _md_table([h.replace("metric", metric_name(report)) for h in headers(report)],
                  summary_rows(report)),
        "",
        "Latency in ms (p50 / p95 / p99, mean ± std after 2-sigma clipping, runs): whole model on "
        "one window at batch 1; front-end on one chunk of `stride` frames; backend on one window. "
        "`step ms` = front-end + backend (means); RTF = step / stride duration; streams = "
        "floor(1 / RTF), served one after another. Peak RSS: the process' resident-set high-water "
        "mark while the engine was loaded and run (reset per engine), and in brackets its rise "
        "over the RSS before the engine was loaded.",
        "",
        _md_table(["engine", "measurement", "p50", "p95", "p99", "mean ± std", "runs"],
                  _latency_rows(report)),
        "",
        _md_table(["engine", "output", "max abs", "mean abs", "p99 abs", "max rel", "ok"],
                  _parity_rows(report)),
    ]
    parts += _efficiency_md(report)
    parts += ["", *(f"- {line}" for line in notes(report))]
    parts += ["", *(f"![{p}]({p})" for p in plots)]
    return "\n".join(parts) + "\n"


def _efficiency_md(report: BenchReport) -> list[str]:
    """The GFLOP/s of every measurement, when the FLOPs were counted."""
    if report.work is None or not report.work.flops:
        return []
    peak = report.machine.get("gemm_peak") or {}
    rows = []
    for r in report.rows:
        fractions = report.peak_fraction(r)
        for name, rate in r.gflop_s().items():
            stats = r.measured()[name]
            fraction = fractions.get(name)
            rows.append([r.key, MEASUREMENTS.get(name, name.replace("batch", "batch ")),
                         f"{r.flops[name] / 1e9:.4g}", f"{stats.mean_ms:.3f}", f"{rate:.2f}",
                         f"{100 * fraction:.2f}%" if fraction is not None else "-"])
    return [
        "", f"GFLOP/s: FLOPs per call over the clipped mean, the FLOPs counted on "
        f"{report.work.graphs} ({report.work.rule}); int8 and fp16 rows do the same "
        f"multiply-adds at their precision. % peak: against this machine's SGEMM peak on up "
        f"to {peak.get('threads', '?')} thread(s), {report.peak_gflop_s() or 0:.0f} GFLOP/s (CPU "
        f"rows). `step gain (FLOPs)`: the whole window's mean over the cached step's (front-end "
        f"chunk + backend), and in brackets the same ratio of their FLOPs, its limit.",
        "", _md_table(["engine", "measurement", "GFLOP per call", "mean ms", "GFLOP/s",
                       "% peak"], rows)]


def _latency_rows(report: BenchReport) -> list[list[str]]:
    rows = []
    for r in report.rows:
        named = [("window", r.window), ("frontend chunk", r.frontend_chunk),
                 ("backend window", r.backend_window), ("smallest call", r.tiny_call)]
        named += [(f"batch {b}", st) for b, st in r.batches.items() if b != 1]
        named += [(f"{m} {k}", st) for m, stages in r.stages.items() for k, st in stages.items()]
        rows += [[r.key, name, f"{st.p50_ms:.2f}", f"{st.p95_ms:.2f}", f"{st.p99_ms:.2f}",
                  f"{st.mean_ms:.2f} ± {st.std_ms:.2f}", str(st.count)] for name, st in named if st]
    return rows


def _parity_rows(report: BenchReport) -> list[list[str]]:
    rows = []
    for r in report.rows:
        if r.parity is None or r.reference:
            continue
        rows += [[r.key, f"{o.graph}/{o.name}", f"{o.max_abs:.2e}", f"{o.mean_abs:.2e}",
                  f"{o.q_abs:.2e}", f"{o.max_rel:.2e}", "yes" if o.passed else "NO"]
                 for o in r.parity.outputs]
        extra = {**r.parity.metrics, **{f"{k} delta": v for k, v in r.parity.deltas.items()}}
        if r.parity.top1_agreement is not None:
            extra["top-1 agreement"] = r.parity.top1_agreement
        if extra:
            rows.append([r.key, "task", ", ".join(f"{k} {v:.4g}" for k, v in extra.items()),
                         "", "", "", "yes" if r.parity.passed else "NO"])
    return rows
