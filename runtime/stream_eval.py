"""``lipx eval-stream``: how good a model package is as a stream, on held-out continuous streams.

    report = evaluate_streams(StreamEvalOptions(Path("pkg"), Path("streams")))

Every stream of the set (``lipx data synth OUT --layout lrw-streams|grid-streams``: videos with
``.align`` timings and the clean speech) goes through the real streaming runtime
(a :class:`~lipx.runtime.session.Session` of one :class:`~lipx.runtime.pipeline.Pipeline`
opened once for the whole set and every sweep setting, the same code as ``lipx stream``: cached
front-end, package defaults unless the options say otherwise), and is scored by the task's unit
(:meth:`~lipx.runtime.task.StreamTask.scorer`):

* lipreading: word errors against the vocabulary words said (substitutions, deletions and
  insertions apart), false words per minute of non-speech (an inserted word whose span lies in a
  pause or silence, ``sil``/``sp``, or on a still face, ``still``), and the emission latency of
  each word read right: from the end of the word in the video to the moment the stream emitted
  it (the arrival of the last frame read, plus the compute since);
* lip-to-speech: STOI, ESTOI and PESQ of the streamed speech and, on the same stream, of the
  offline output (the whole model on the whole utterance, Griffin-Lim on all of it), side by
  side, with the algorithmic and measured audio latency;
* exactness, like icefall's "simulated streaming vs chunk-wise": the front-end run once over the
  whole stream, cut into the same windows and run through the backend, against what the cached
  runtime computed. A difference at float rounding proves the cache exact, so any gap to offline
  is the windowing's.

Torch-free: the runtime and onnxruntime only.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lipx.errors import InputError
from lipx.package import Manifest, Package
from lipx.runtime.events import FrameEvent, WordEvent
from lipx.runtime.options import StreamOptions, blas_threads
from lipx.runtime.package_runners import engine_feeds, open_runners
from lipx.runtime.pipeline import Pipeline
from lipx.runtime.runner import Runner
from lipx.runtime.stats import algorithmic_latency_s
from lipx.runtime.task import Capture, StreamItem, StreamTask
from lipx.runtime.tasks import stream_task
from lipx.runtime.window import Window
from lipx.video import mouth_crop_frame

log = logging.getLogger(__name__)

INDEX = "streams.jsonl"
Progress = Callable[[int, int], None]


def read_stream_set(data: Path, max_streams: int = 0) -> list[StreamItem]:
    """The streams listed in ``data/streams.jsonl``, in order.

    Raises:
        InputError: not a stream set, or a listed file is missing.
    """
    index = Path(data) / INDEX
    if not index.is_file():
        raise InputError(f"{data} has no {INDEX}: expected a set of streams (lipx data "
                         f"synth OUT --layout lrw-streams or grid-streams)")
    items = []
    for line in index.read_text().splitlines():
        if not line.strip():
            continue
        record = json.loads(line)
        name = record["name"]
        video, align, wav = (Path(data) / f"{name}{ext}" for ext in (".mp4", ".align", ".wav"))
        for path in (video, align):
            if not path.is_file():
                raise InputError(f"{path} is listed in {index} but missing; make the set again")
        items.append(StreamItem(name, video, align, wav if wav.is_file() else None,
                                record.get("task", "")))
    if not items:
        raise InputError(f"{index} lists no streams")
    return items[:max_streams] if max_streams else items


@dataclass(frozen=True)
class StreamEvalOptions:
    """What ``lipx eval-stream`` runs."""

    package: Path
    data: Path
    stream: StreamOptions = field(default_factory=StreamOptions)
    """The runtime's options (engine, window, stride, threshold, agreement, look-ahead...)."""
    max_streams: int = 0
    """Streams to run (0: all)."""
    exactness: bool = True
    """Also check the cached runtime against the whole front-end (costs one more pass)."""

    def __post_init__(self) -> None:
        if self.max_streams < 0:
            raise InputError(f"--max-clips must be >= 0, got {self.max_streams}")
        if not self.stream.cache:
            raise InputError("lipx eval-stream measures the cached runtime; drop --no-cache")


def run_stream(pipeline: Pipeline, video: Path, opts: StreamOptions,
               inputs: bool = True) -> Capture:
    """Stream ``video`` through a session of ``pipeline`` and keep everything the scores need
    (the crops and the windows' features only with ``inputs``: the exactness check and the
    offline model need them, a replay does not)."""
    cap = Capture()
    head = pipeline.manifest.spec.head_output

    def hook(window: Window, outputs: dict[str, np.ndarray]) -> None:
        data = window.data.copy() if inputs else window.data[:0]
        cap.windows.append((dataclasses.replace(window, data=data), outputs[head][0].copy()))
        cap.stamps.append(session.now_s())

    with pipeline.session(str(video), opts, window_hook=hook, record=True) as session:
        for event in session.events():
            if isinstance(event, FrameEvent):
                if inputs and event.roi is not None:
                    cap.crops.append(mouth_crop_frame(event.roi.face256,
                                                      pipeline.manifest.video))
            elif isinstance(event, WordEvent):
                cap.words.append(event)
            else:
                cap.audio.append(event)
        cap.stats, cap.pad, cap.head = session.stats(), session.pad, session.head
    return cap


def exactness(manifest: Manifest, cap: Capture, runners: Mapping[str, Runner]
              ) -> dict[str, float]:
    """Max abs difference between the cached runtime and the whole front-end, per window.

    The front-end runs once over all of the stream's crops (with the runtime's zero context at
    both ends), the features are cut into the runtime's windows and run through the backend.

    Args:
        runners: active ``frontend`` and ``backend`` runners of the package.
    """
    fr, br = runners["frontend"], runners["backend"]
    c = manifest.spec.context
    frames = np.stack([*cap.crops[:1] * cap.pad, *cap.crops, *cap.crops[-1:] * cap.pad])
    clip = np.concatenate([np.zeros((c, *frames.shape[1:]), np.float32), frames,
                           np.zeros((c, *frames.shape[1:]), np.float32)])
    front, back = manifest.graph("frontend"), manifest.graph("backend")
    whole = next(iter(fr.infer({front.inputs[0].name: clip[None, None]}).values()))[0]
    feature_diff, output_diff = 0.0, 0.0
    for window, output in cap.windows:
        feats = whole[window.start:window.start + len(window.data)]
        feature_diff = max(feature_diff, float(np.abs(feats - window.data).max()))
        out = br.infer(engine_feeds(back, feats[None], len(feats)))[manifest.spec.head_output][0]
        output_diff = max(output_diff, float(np.abs(out - output).max()))
    return {"features_max_abs": feature_diff, "outputs_max_abs": output_diff,
            "windows": float(len(cap.windows))}


# --- the whole set --------------------------------------------------------------------------


@dataclass(frozen=True)
class StreamEvalReport:
    """The scores of one setting over a stream set."""

    task: str
    package: str
    data: str
    streams: int
    settings: dict[str, Any]
    """Window, stride and the head's options the streams ran with."""
    scores: dict[str, float]
    exactness: dict[str, float]
    latency: dict[str, float]
    """Algorithmic latency (mean/max s) and the measured emission or audio latency (p50/p95 s)."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def quality(self) -> tuple[str, float]:
        """The headline: WER (lipreading) or streamed STOI (lip-to-speech): the task's."""
        name, key = stream_task(self.task).quality_metric
        return name, self.scores[key]


def load_set(opts: StreamEvalOptions) -> tuple[Package, list[StreamItem]]:
    """The package and the streams to run, checked (before any work starts)."""
    package = Package.open(opts.package)
    items = read_stream_set(opts.data, opts.max_streams)
    if stream_task(package.task).needs_speech and any(i.wav is None for i in items):
        raise InputError(f"{opts.data}: a {package.task} stream set needs each stream's clean "
                         f"speech (.wav)")
    return package, items


def open_pipeline(opts: StreamEvalOptions, package: Package) -> Pipeline:
    """The pipeline every stream and every setting of an evaluation runs through."""
    return Pipeline(package, opts.stream.engine_options())


def evaluate_streams(opts: StreamEvalOptions, progress: Progress | None = None,
                     loaded: tuple[Package, list[StreamItem]] | None = None,
                     keep: list[Capture] | None = None,
                     pipeline: Pipeline | None = None) -> StreamEvalReport:
    """Run and score every stream of ``opts.data`` (see the module docstring).

    Args:
        loaded: :func:`load_set` of ``opts`` when the caller has it (read here otherwise).
        keep: a list to which each stream's :class:`Capture` is appended (for :func:`replay`).
        pipeline: the package opened (with ``opts.stream``'s engine options) when the caller
            has it; opened here for the whole set otherwise.
    """
    package, items = loaded or load_set(opts)
    with contextlib.ExitStack() as stack:
        stack.enter_context(blas_threads(opts.stream.blas_threads))
        if pipeline is None:
            pipeline = stack.enter_context(open_pipeline(opts, package))
        unit = pipeline.task
        extra = [r for r in unit.eval_roles if r not in pipeline.runners]
        s = opts.stream
        engines = {**pipeline.runners, **{  # the checks' other engines, once for every stream
            role: stack.enter_context(r) for role, r in open_runners(
                package, extra, s.engine, s.device, s.precision, s.threads).items()}}
        return _evaluate(opts, pipeline, unit, items, engines, progress, keep)


def _evaluate(opts: StreamEvalOptions, pipeline: Pipeline, unit: StreamTask,
              items: list[StreamItem], engines: Mapping[str, Runner],
              progress: Progress | None, keep: list[Capture] | None = None) -> StreamEvalReport:
    manifest = pipeline.manifest
    scorer = unit.scorer(manifest)
    exact, alg, stats = [], [], []
    for n, item in enumerate(items):
        cap = run_stream(pipeline, item.video, opts.stream, opts.exactness or unit.keeps_crops)
        if keep is not None:
            keep.append(cap)
        scorer.add(item, cap, engines)
        if opts.exactness and cap.windows:
            exact.append(exactness(manifest, cap, engines))
        alg.append(cap.stats.algorithmic)
        stats.append(cap.stats)
        if progress:
            progress(n + 1, len(items))
    return StreamEvalReport(
        task=manifest.task, package=str(opts.package), data=str(opts.data), streams=len(items),
        settings=_settings(manifest, opts.stream), scores=scorer.scores(),
        exactness=({k: (sum if k == "windows" else max)(e[k] for e in exact) for k in exact[0]}
                   if exact else {}),
        latency={**_latency(alg, scorer.waits()), **_compute(stats)})


def replay(opts: StreamEvalOptions, package: Package, items: list[StreamItem],
           captures: list[Capture]) -> StreamEvalReport:
    """The report of ``opts`` without running the streams again: ``captures`` are the same
    streams run with options that differ only in the task's replay options (the windows and
    the backend's outputs are then the same). Each stream's windows go through a head with
    ``opts``' options; a result is stamped with the time its last window reached the head in
    the real run (the head's own compute, microseconds, is left out), so the emission latency is
    the real run's to within that. Settings carry ``replayed: True``."""
    manifest, unit = package.manifest, stream_task(package.task)
    if not unit.replayable:
        raise InputError(f"a {package.task} head cannot be replayed")
    sched = opts.stream.schedule(manifest)
    scorer = unit.scorer(manifest)
    for item, cap in zip(items, captures, strict=True):
        scorer.add(item, dataclasses.replace(cap, words=replay_words(manifest, opts.stream, cap)),
                   {})
    head = unit.make_head(manifest, opts.stream.head_options(manifest), sched)
    alg = algorithmic_latency_s(manifest.video.fps, sched.stride, head.lookahead_frames,
                                manifest.spec.context)
    stats = [c.stats for c in captures]
    return StreamEvalReport(
        task=manifest.task, package=str(opts.package), data=str(opts.data), streams=len(items),
        settings={**_settings(manifest, opts.stream), "replayed": True},
        scores=scorer.scores(), exactness={},
        latency={**_latency([alg], scorer.waits()), **_compute(stats)})


def replay_words(manifest: Manifest, opts: StreamOptions, cap: Capture) -> list[WordEvent]:
    """The words a head with ``opts``' options reads from one stream's recorded windows."""
    sched = opts.schedule(manifest)
    head = stream_task(manifest.task).make_head(manifest, opts.head_options(manifest), sched)
    words: list[WordEvent] = []
    for (window, output), stamp in zip(cap.windows, cap.stamps, strict=True):
        words += [dataclasses.replace(w, emitted_s=stamp) for w in
                  head.push(output, window.start - cap.pad, window.stop - cap.pad)
                  if isinstance(w, WordEvent)]
    last = cap.stamps[-1] if cap.stamps else None
    return words + [dataclasses.replace(w, emitted_s=last) for w in head.flush()
                    if isinstance(w, WordEvent)]


def _settings(manifest: Manifest, opts: StreamOptions) -> dict[str, Any]:
    sched = opts.schedule(manifest)
    return {"engine": opts.engine, "window": sched.window, "stride": sched.stride,
            **dataclasses.asdict(opts.head_options(manifest))}


def _compute(stats: list[Any]) -> dict[str, float]:
    """Compute cost over the streams: ms per frame (all stages) and the real-time factor."""
    frames = sum(s.frames_out for s in stats)
    total_ms = sum(s.compute.mean_ms * s.compute.count for s in stats)
    media_s = sum(s.media_s for s in stats)
    return {"compute_ms_per_frame": total_ms / max(frames, 1),
            "rtf": total_ms / 1e3 / media_s if media_s else math.nan}


def _latency(algorithmic: list[dict[str, float]], waits: list[float]) -> dict[str, float]:
    w = np.asarray(waits, dtype=np.float64)
    out = {"algorithmic_mean_s": float(np.mean([a["mean_s"] for a in algorithmic])),
           "algorithmic_max_s": float(np.max([a["max_s"] for a in algorithmic]))}
    for q in (50, 95):
        out[f"measured_p{q}_s"] = float(np.percentile(w, q)) if w.size else math.nan
    return out


# --- sweeps -----------------------------------------------------------------------------------

SWEEPABLE: dict[str, type] = {"window": int, "stride": int, "lookahead": int, "crossfade": int,
                              "gl_iters": int, "threshold": float, "agreement": int,
                              "min_gap": float, "pad": int}
"""Stream options a sweep may vary, and their types."""
def parse_sweep(specs: Sequence[str]) -> dict[str, list[Any]]:
    """``["stride=1,4,7", "threshold=0.5,0.9"]`` -> ``{"stride": [1, 4, 7], ...}``.

    Raises:
        InputError: not ``name=v1,v2``, an unknown name or a value of the wrong type.
    """
    grid: dict[str, list[Any]] = {}
    for spec in specs:
        name, sep, values = spec.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or name not in SWEEPABLE:
            raise InputError(f"--sweep takes NAME=V1,V2,... with NAME one of "
                             f"{', '.join(SWEEPABLE)}; got {spec!r}")
        try:
            grid[name] = [SWEEPABLE[name](v) for v in values.split(",") if v.strip()]
        except ValueError:
            raise InputError(f"--sweep {spec!r}: {name} takes {SWEEPABLE[name].__name__} "
                             f"values") from None
        if not grid[name]:
            raise InputError(f"--sweep {spec!r} lists no values")
    return grid


def sweep(opts: StreamEvalOptions, grid: dict[str, list[Any]],
          progress: Callable[[int, int, dict[str, Any]], None] | None = None,
          loaded: tuple[Package, list[StreamItem]] | None = None
          ) -> tuple[list[StreamEvalReport], list[str]]:
    """One report per combination of the grid's values (the other options as given), and the
    combinations skipped because the package cannot run them (e.g. a stride beyond the window's
    new part), each with why. Every setting runs through one pipeline (the engines are opened
    once). A task whose head can be replayed (lipreading) runs the streams once per setting of
    the options other than its replay options and replays the recorded windows for the rest
    (:func:`replay`: the same words as a run, seconds instead of minutes).

    Raises:
        InputError: no combination can run.
    """
    import itertools

    combos = [dict(zip(grid, values, strict=True)) for values in itertools.product(*grid.values())]
    loaded = loaded or load_set(opts)
    unit = stream_task(loaded[0].task)
    runs: dict[tuple, list[Capture]] = {}  # the streams run once per non-replay setting
    reports, skipped = [], []
    with open_pipeline(opts, loaded[0]) as pipeline:
        for n, combo in enumerate(combos):
            if progress:
                progress(n, len(combos), combo)
            try:
                point = dataclasses.replace(
                    opts, stream=dataclasses.replace(opts.stream, **combo), exactness=False)
                key = tuple((k, v) for k, v in combo.items() if k not in unit.replay_options)
                if key in runs:
                    reports.append(replay(point, *loaded, runs[key]))
                    continue
                keep: list[Capture] | None = [] if unit.replayable else None
                reports.append(evaluate_streams(point, loaded=loaded, keep=keep,
                                                pipeline=pipeline))
                if keep is not None:
                    runs[key] = keep
            except InputError as e:
                log.warning("sweep: skipping %s: %s", combo, e)
                skipped.append(f"{combo}: {e}")
    if not reports:
        raise InputError(f"--sweep: no setting can run ({skipped[0]})")
    return reports, skipped


def latency_of(report: StreamEvalReport) -> tuple[str, float]:
    """The latency a user waits, for the curve: words' emission p95, or the audio's."""
    return stream_task(report.task).latency_name, report.latency["measured_p95_s"]


def write_sweep(reports: list[StreamEvalReport], out: Path) -> list[Path]:
    """``sweep.json`` (every report) and ``sweep.png`` (quality against latency) in ``out``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from lipx.files import atomic_write

    out.mkdir(parents=True, exist_ok=True)
    text = json.dumps([r.to_dict() for r in reports], indent=2) + "\n"
    atomic_write(out / "sweep.json", lambda tmp: tmp.write_text(text, encoding="utf-8"))
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.add_subplot(1, 1, 1)
    varied = [k for k in SWEEPABLE if len({r.settings.get(k) for r in reports}) > 1]
    for r in reports:
        (qname, q), (lname, lat) = r.quality(), latency_of(r)
        ax.scatter([lat], [q], color="tab:blue")
        ax.annotate(" ".join(f"{k}={r.settings[k]}" for k in varied), (lat, q),
                    textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.set_xlabel(f"{lname} (s)")
    ax.set_ylabel(qname)
    ax.set_title(f"{reports[0].task}: quality against latency ({reports[0].streams} streams)")
    atomic_write(out / "sweep.png", lambda tmp: FigureCanvasAgg(fig).print_png(str(tmp)))
    return [out / "sweep.json", out / "sweep.png"]


def table_rows(report: StreamEvalReport) -> list[tuple[str, str]]:
    """(name, value) rows for the printed table."""
    s, lat = report.scores, report.latency
    rows = [("streams", str(report.streams)),
            ("settings", ", ".join(f"{k} {v}" for k, v in report.settings.items()))]
    rows += stream_task(report.task).table_rows(s, lat)
    rows.append(("algorithmic latency", f"mean {lat['algorithmic_mean_s']:.2f} s, max "
                                        f"{lat['algorithmic_max_s']:.2f} s"))
    rows.append(("compute", f"{lat['compute_ms_per_frame']:.1f} ms per frame, RTF "
                            f"{lat['rtf']:.2f}"))
    if report.exactness:
        e = report.exactness
        rows.append(("cache vs whole front-end", f"features {e['features_max_abs']:.1e}, "
                     f"outputs {e['outputs_max_abs']:.1e} max abs ({e['windows']:.0f} windows)"))
    return rows
