"""Bench reports: a terminal table (rich), and with ``--out`` JSON, Markdown and PNG plots.

* ``bench.json``: everything (machine with its load average, versions, settings, every row with
  its raw samples); the format other tools read.
* ``bench.md``: the summary table, latency/throughput/parity details, skipped engines and why.
* the plots (:mod:`lipx.benchmarks.plots`): ``latency.png``, ``accuracy-speed.png``.

matplotlib is needed for the plots only; without it they are left out with a warning.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from lipx.benchmarks.results import BenchReport, EngineRow
from lipx.files import atomic_write

JSON_FORMAT = 2
"""Version of the ``bench.json`` layout. 2: latency statistics are
:class:`~lipx.runtime.stats.LatencyStats` (``count``, ``mean_ms``, ``std_ms``, ``p50_ms`` ...
``clipped``); 1 had ``n``, ``mean``, ``std``, ``p50`` ... ``clipped``, in the same units (ms)."""


# --- cells ----------------------------------------------------------------------------------


def _f(value: float | None, fmt: str = ".1f") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value, fmt)


def metric_name(report: BenchReport) -> str:
    """The task metric shown per engine."""
    if report.task == "lipreading":
        return "accuracy" if report.has_data else "top-1 agreement"
    return "STOI" if report.has_data else "STOI vs reference"


def metric_value(report: BenchReport, row: EngineRow) -> float | None:
    p = row.parity
    if p is None:
        return None
    if report.task == "lipreading":
        if "accuracy" in p.metrics:
            return p.metrics["accuracy"]
        return 1.0 if row.reference else p.top1_agreement
    if "stoi" in p.metrics:
        return p.metrics["stoi"]
    return 1.0 if row.reference and not report.has_data else None


def metric_cell(report: BenchReport, row: EngineRow) -> str:
    value = metric_value(report, row)
    if value is None:
        return "-"
    key = "accuracy" if report.task == "lipreading" else "stoi"
    delta = row.parity.deltas.get(key) if row.parity else None
    extra = f" ({delta:+.3f})" if delta is not None and not row.reference else ""
    top1 = row.parity.top1_agreement if row.parity else None
    if report.task == "lipreading" and "accuracy" in (row.parity.metrics if row.parity else {}):
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


HEADERS = ("engine", "status", "MB", "build+load s", "window p50/p95/p99 ms", "speed-up",
           "step ms", "clips/s", "RTF", "streams", "peak RSS MiB", "parity (max abs)", "metric")


def summary_rows(report: BenchReport) -> list[list[str]]:
    """One list of cells per engine, in :data:`HEADERS` order."""
    rows = []
    for r in report.rows:
        speed = report.speedup(r)
        rows.append([
            r.key, r.status, _f(r.size_mb), _setup(r), _latency(r),
            f"{speed:.2f}x" if speed else "-", _f(r.step_ms), _throughput(r),
            _f(r.rtf_stream, ".3f"), _f(r.streams, "d") if r.streams is not None else "-",
            _rss(r), parity_cell(r), metric_cell(report, r),
        ])
    return rows


# --- terminal -------------------------------------------------------------------------------


def table(report: BenchReport) -> Any:
    """A rich Table of :func:`summary_rows` (import rich lazily: the CLI prints it)."""
    from rich.table import Table

    title = (f"{report.task} {report.model}: window {report.settings['window']}, stride "
             f"{report.settings['stride']} @ {report.settings['fps']:g} fps; parity vs "
             f"{report.reference or 'nothing'} on {report.inputs}")
    t = Table(title=title, title_justify="left")
    for h in HEADERS:
        t.add_column(h.replace("metric", metric_name(report)),
                     justify="left" if h in ("engine", "status") else "right")
    colours = {"ok": "green", "skipped": "dim", "parity-failed": "red", "export-failed": "red",
               "failed": "red"}
    for cells in summary_rows(report):
        cells[1] = f"[{colours[cells[1]]}]{cells[1]}[/{colours[cells[1]]}]"
        t.add_row(*cells)
    return t


def notes(report: BenchReport) -> list[str]:
    """Lines for the engines that did not run cleanly, and the load average."""
    lines = [f"{r.key}: {r.status}: {r.reason}" for r in report.rows if r.status != "ok"]
    load = report.machine.get("load_average")
    if load:
        lines.append(f"load average at start {load}, "
                     f"at end {report.machine.get('load_average_end')}"
                     f" on {report.machine.get('cpu_count')} CPUs")
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
        _md_table([h.replace("metric", metric_name(report)) for h in HEADERS],
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
    parts += ["", *(f"- {line}" for line in notes(report))]
    parts += ["", *(f"![{p}]({p})" for p in plots)]
    return "\n".join(parts) + "\n"


def _latency_rows(report: BenchReport) -> list[list[str]]:
    rows = []
    for r in report.rows:
        named = [("window", r.window), ("frontend chunk", r.frontend_chunk),
                 ("backend window", r.backend_window)]
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
