"""``lipx eval --stream``: how good a model package is as a stream, on held-out continuous streams.

    report = evaluate_streams(StreamEvalOptions(Path("pkg"), Path("streams")))

Every stream of the set (``lipx data synth OUT --layout lrw-streams|grid-streams``: videos with
``.align`` timings and the clean speech) goes through the real streaming runtime
(:class:`~lipx.runtime.stream.Streamer`, the same code as ``lipx stream``: cached front-end,
package defaults unless the options say otherwise), and is scored:

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
from lipx.package import Manifest
from lipx.runtime.events import AudioChunk, FrameEvent, WordEvent
from lipx.runtime.heads import SpeechHead
from lipx.runtime.package_runners import open_runners
from lipx.runtime.runner import Runner
from lipx.runtime.stats import algorithmic_latency_s
from lipx.runtime.stream import Streamer, StreamOptions, engine_feeds, make_head
from lipx.runtime.window import Window
from lipx.train.metrics import mean_scores, speech_scores, word_errors
from lipx.video import mouth_crop_frame

log = logging.getLogger(__name__)

INDEX = "streams.jsonl"
NON_SPEECH = {"sil": "silence", "sp": "silence", "still": "still face"}
"""Align labels of non-speech, and the kind each is reported as."""
OFFLINE_GL_ITERS = 60
PAIR_SLACK_S = 0.5
"""An emitted word is aligned to a spoken one (right or substituted) only if their spans,
widened by this on each side, overlap; otherwise it is an insertion and the other a deletion."""
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class StreamItem:
    """One stream of a set: its video, word timings and clean speech."""

    name: str
    video: Path
    align: Path
    wav: Path | None
    task: str = ""
    """The task its layout is for (``lipreading``, ``lip2speech``; empty in an older index)."""


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
    """What ``lipx eval --stream`` runs."""

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
            raise InputError("lipx eval --stream measures the cached runtime; drop --no-cache")


@dataclass
class Capture:
    """What one stream's run produced: crops, windows and their outputs, results, stats."""

    crops: list[np.ndarray] = field(default_factory=list)
    windows: list[tuple[Window, np.ndarray]] = field(default_factory=list)
    """Each window (its cached features, unless the run kept none) and the backend output the
    head read."""
    stamps: list[float] = field(default_factory=list)
    """When each window reached the head, on the stream's clock (a replay's emission times)."""
    words: list[WordEvent] = field(default_factory=list)
    audio: list[AudioChunk] = field(default_factory=list)
    stats: Any = None
    pad: int = 0
    """Frames the stream was padded by at each end (window indices count them)."""
    stitched: list[np.ndarray] = field(default_factory=list)
    """Lip-to-speech: the speech head's stitched magnitudes, part by part."""


def run_stream(package: Path, manifest: Manifest, video: Path, opts: StreamOptions,
               inputs: bool = True) -> Capture:
    """Stream ``video`` through the runtime and keep everything the scores need (the crops and
    the windows' features only with ``inputs``: the exactness check and the offline model need
    them, a replay does not)."""
    cap = Capture()
    head = manifest.spec.head_output

    def hook(window: Window, outputs: dict[str, np.ndarray]) -> None:
        data = window.data.copy() if inputs else window.data[:0]
        cap.windows.append((dataclasses.replace(window, data=data), outputs[head][0].copy()))
        cap.stamps.append(streamer.now_s())

    with Streamer(package, str(video), opts, window_hook=hook, manifest=manifest) as streamer:
        if isinstance(streamer.head, SpeechHead):
            streamer.head.record = True
        for event in streamer.events():
            if isinstance(event, FrameEvent):
                if inputs and event.roi is not None:
                    cap.crops.append(mouth_crop_frame(event.roi.face256, manifest.video))
            elif isinstance(event, WordEvent):
                cap.words.append(event)
            else:
                cap.audio.append(event)
        cap.stats = streamer.stats()
        cap.pad = streamer.pad
        if isinstance(streamer.head, SpeechHead):
            cap.stitched = streamer.head.stitched
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


# --- lipreading -----------------------------------------------------------------------------


@dataclass
class WordTally:
    """Lipreading counts over streams."""

    said: int = 0
    substitutions: int = 0
    deletions: int = 0
    insertions: int = 0
    emitted: int = 0
    false_words: dict[str, int] = field(default_factory=lambda: dict.fromkeys(
        set(NON_SPEECH.values()), 0))
    non_speech_s: dict[str, float] = field(default_factory=lambda: dict.fromkeys(
        set(NON_SPEECH.values()), 0.0))
    waits_s: list[float] = field(default_factory=list)
    offsets_s: list[float] = field(default_factory=list)
    """For each word read right: the centre of its emitted span minus the centre of the word
    in the video (negative: reported early)."""

    def add(self, segments: Sequence[Any], vocabulary: set[str], words: list[WordEvent]) -> None:
        """Score one stream: ``segments`` (label, start, end) from its ``.align``."""
        said = [s for s in segments if s.word in vocabulary]

        def near(i: int, j: int) -> bool:  # a word read for one said at another moment is no
            return (words[j].start_s < said[i].end + PAIR_SLACK_S  # substitution of it
                    and words[j].end_s > said[i].start - PAIR_SLACK_S)

        e = word_errors([s.word for s in said], [w.word for w in words], near)
        self.said += e.reference_words
        self.substitutions += e.substitutions
        self.deletions += e.deletions
        self.insertions += e.insertions
        self.emitted += len(words)
        quiet = [(NON_SPEECH[s.word], s.start, s.end) for s in segments if s.word in NON_SPEECH]
        for kind, start, end in quiet:
            self.non_speech_s[kind] += end - start
        for i, j in e.pairs:
            if i is None and j is not None:
                mid = (words[j].start_s + words[j].end_s) / 2
                during = next((k for k, a, b in quiet if a <= mid < b), None)
                if during is not None:
                    self.false_words[during] += 1
            elif i is not None and j is not None and said[i].word == words[j].word:
                self.offsets_s.append((words[j].start_s + words[j].end_s) / 2
                                      - (said[i].start + said[i].end) / 2)
                wait = words[j].emitted_s
                if wait is not None:
                    self.waits_s.append(wait - said[i].end)

    def summary(self) -> dict[str, float]:
        out = {"words_said": float(self.said), "words_emitted": float(self.emitted),
               "substitutions": float(self.substitutions), "deletions": float(self.deletions),
               "insertions": float(self.insertions),
               "wer": (self.substitutions + self.deletions + self.insertions) / max(self.said, 1)}
        minutes = sum(self.non_speech_s.values()) / 60
        out["false_words_per_min"] = (sum(self.false_words.values()) / minutes if minutes
                                      else math.nan)
        for kind in sorted(self.non_speech_s):
            m = self.non_speech_s[kind] / 60
            key = kind.replace(" ", "_")
            out[f"false_words_per_min_{key}"] = self.false_words[kind] / m if m else math.nan
            out[f"{key}_s"] = self.non_speech_s[kind]
        waits = np.asarray(self.waits_s)
        for q in (50, 95):
            out[f"emission_p{q}_s"] = float(np.percentile(waits, q)) if waits.size else math.nan
        offsets = np.asarray(self.offsets_s)
        out["time_offset_median_s"] = float(np.median(offsets)) if offsets.size else math.nan
        return out


# --- lip-to-speech --------------------------------------------------------------------------


def streamed_speech(chunks: list[AudioChunk], samples: int) -> np.ndarray:
    """The stream's audio chunks placed on one track of ``samples`` (gaps silent)."""
    track = np.zeros(samples, np.float32)
    for c in chunks:
        first = round(c.start_s * c.sample_rate)
        piece = c.samples[:max(0, samples - first)]
        track[first:first + len(piece)] = piece
    return track


def offline_speech(manifest: Manifest, crops: list[np.ndarray], model: Runner) -> np.ndarray:
    """The whole model (an active runner) on the whole utterance (zero noise), Griffin-Lim on
    all of it."""
    from lipx.audio import spectrogram_to_wav

    if manifest.audio is None:
        raise InputError("the lip2speech package has no audio spec; re-export it")
    feeds = engine_feeds(manifest.graph("model"), np.stack(crops)[None, None], len(crops))
    linear = model.infer(feeds)[manifest.spec.head_output][0, 0]
    return spectrogram_to_wav(np.maximum(linear, 0.0), manifest.audio, OFFLINE_GL_ITERS)


def stitched_speech(manifest: Manifest, parts: list[np.ndarray], samples: int) -> np.ndarray:
    """The streamed windows' stitched magnitudes (from the stream's start) with Griffin-Lim on
    the whole of them, as offline: the stream without streaming Griffin-Lim."""
    from lipx.audio import fit_length, spectrogram_to_wav

    if manifest.audio is None or not parts:
        return np.zeros(samples, np.float32)
    wav = spectrogram_to_wav(np.concatenate(parts, axis=1), manifest.audio, OFFLINE_GL_ITERS)
    return fit_length(wav.astype(np.float32), samples)


def speech_rows(reference: np.ndarray, **speech: np.ndarray) -> dict[str, float]:
    """STOI/ESTOI/PESQ of each named track against the clean speech (``NAME_stoi``...)."""
    ref = reference.astype(np.float64)
    return {f"{name}_{k}": v for name, track in speech.items()
            for k, v in speech_scores(ref, track[:len(ref)].astype(np.float64)).items()}


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
        """The headline: WER (lipreading) or streamed STOI (lip-to-speech)."""
        if self.task == "lipreading":
            return "wer", self.scores["wer"]
        return "stream_stoi", self.scores["stream_stoi"]


def load_set(opts: StreamEvalOptions) -> tuple[Manifest, list[StreamItem]]:
    """The package's manifest and the streams to run, checked (before any work starts)."""
    manifest = Manifest.read(opts.package)
    items = read_stream_set(opts.data, opts.max_streams)
    if manifest.task == "lip2speech" and any(i.wav is None for i in items):
        raise InputError(f"{opts.data}: lip-to-speech needs each stream's clean speech (.wav)")
    return manifest, items


def evaluate_streams(opts: StreamEvalOptions, progress: Progress | None = None,
                     loaded: tuple[Manifest, list[StreamItem]] | None = None,
                     keep: list[Capture] | None = None) -> StreamEvalReport:
    """Run and score every stream of ``opts.data`` (see the module docstring).

    Args:
        loaded: :func:`load_set` of ``opts`` when the caller has it (read here otherwise).
        keep: a list to which each stream's :class:`Capture` is appended (for :func:`replay`).
    """
    manifest, items = loaded or load_set(opts)
    roles = (("frontend", "backend") if opts.exactness else ()) + (
        ("model",) if manifest.task == "lip2speech" else ())
    s = opts.stream
    with contextlib.ExitStack() as stack:  # the checks' engines, opened once for every stream
        engines = {role: stack.enter_context(r) for role, r in open_runners(
            opts.package, manifest, roles, s.engine, s.device, s.precision, s.threads).items()}
        return _evaluate(opts, manifest, items, engines, progress, keep)


def _evaluate(opts: StreamEvalOptions, manifest: Manifest, items: list[StreamItem],
              engines: Mapping[str, Runner], progress: Progress | None,
              keep: list[Capture] | None = None) -> StreamEvalReport:
    from lipx.data.formats import read_segments

    vocabulary = set(manifest.vocabulary or ())
    tally, rows, exact, waits, alg, stats = WordTally(), [], [], [], [], []
    for n, item in enumerate(items):
        cap = run_stream(opts.package, manifest, item.video, opts.stream,
                         opts.exactness or manifest.task == "lip2speech")
        if keep is not None:
            keep.append(cap)
        if manifest.task == "lipreading":
            tally.add(read_segments(item.align), vocabulary, cap.words)
        else:
            import soundfile as sf

            reference, _ = sf.read(item.wav, dtype="float32")
            offline = offline_speech(manifest, cap.crops, engines["model"])
            rows.append(speech_rows(
                reference, stream=streamed_speech(cap.audio, len(reference)),
                stitched=stitched_speech(manifest, cap.stitched, len(reference)),
                offline=offline))
            waits += [c.wait_s for c in cap.audio if c.wait_s is not None]
        if opts.exactness and cap.windows:
            exact.append(exactness(manifest, cap, engines))
        alg.append(cap.stats.algorithmic)
        stats.append(cap.stats)
        if progress:
            progress(n + 1, len(items))
    scores = tally.summary() if manifest.task == "lipreading" else mean_scores(rows)
    return StreamEvalReport(
        task=manifest.task, package=str(opts.package), data=str(opts.data), streams=len(items),
        settings=_settings(manifest, opts.stream), scores=scores,
        exactness=({k: (sum if k == "windows" else max)(e[k] for e in exact) for k in exact[0]}
                   if exact else {}),
        latency={**_latency(alg, tally.waits_s if manifest.task == "lipreading" else waits),
                 **_compute(stats)})


def replay(opts: StreamEvalOptions, manifest: Manifest, items: list[StreamItem],
           captures: list[Capture]) -> StreamEvalReport:
    """The lipreading report of ``opts`` without running the streams again: ``captures`` are
    the same streams run with options that differ only in :data:`HEAD_ONLY` ones (the windows
    and the backend's outputs are then the same). Each stream's windows go through a head with
    ``opts``' options; a word is stamped with the time its last window reached the head in the
    real run (the head's own compute, microseconds, is left out), so the emission latency is the
    real run's to within that. Settings carry ``replayed: True``."""
    from lipx.data.formats import read_segments

    if manifest.task != "lipreading":
        raise InputError("only a lipreading head can be replayed")
    vocabulary = set(manifest.vocabulary or ())
    sched = opts.stream.schedule(manifest)
    tally = WordTally()
    for item, cap in zip(items, captures, strict=True):
        tally.add(read_segments(item.align), vocabulary, replay_words(manifest, opts.stream, cap))
    head = make_head(manifest, opts.stream, sched.window, sched.stride)
    alg = algorithmic_latency_s(manifest.video.fps, sched.stride, head.lookahead_frames,
                                manifest.spec.context)
    stats = [c.stats for c in captures]
    return StreamEvalReport(
        task=manifest.task, package=str(opts.package), data=str(opts.data), streams=len(items),
        settings={**_settings(manifest, opts.stream), "replayed": True},
        scores=tally.summary(), exactness={},
        latency={**_latency([alg], tally.waits_s), **_compute(stats)})


def replay_words(manifest: Manifest, opts: StreamOptions, cap: Capture) -> list[WordEvent]:
    """The words a head with ``opts``' options reads from one stream's recorded windows."""
    sched = opts.schedule(manifest)
    head = make_head(manifest, opts, sched.window, sched.stride)
    words: list[WordEvent] = []
    for (window, output), stamp in zip(cap.windows, cap.stamps, strict=True):
        words += [dataclasses.replace(w, emitted_s=stamp) for w in
                  head.push(output, window.start - cap.pad, window.stop - cap.pad)]
    last = cap.stamps[-1] if cap.stamps else None
    return words + [dataclasses.replace(w, emitted_s=last) for w in head.flush()]


def _settings(manifest: Manifest, opts: StreamOptions) -> dict[str, Any]:
    sched = opts.schedule(manifest)
    return {"engine": opts.engine, "window": sched.window, "stride": sched.stride,
            **opts.head_options(manifest)}


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
HEAD_ONLY = ("threshold", "agreement", "min_gap")
"""Options that change only how a lipreading head reads the same windows: a sweep runs the
streams once for each setting of the others and :func:`replay` s the rest."""


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
          loaded: tuple[Manifest, list[StreamItem]] | None = None
          ) -> tuple[list[StreamEvalReport], list[str]]:
    """One report per combination of the grid's values (the other options as given), and the
    combinations skipped because the package cannot run them (e.g. a stride beyond the window's
    new part), each with why. A lipreading sweep runs the streams once per setting of the
    options other than :data:`HEAD_ONLY` and replays the recorded windows for the rest
    (:func:`replay`: the same words as a run, seconds instead of minutes).

    Raises:
        InputError: no combination can run.
    """
    import itertools

    combos = [dict(zip(grid, values, strict=True)) for values in itertools.product(*grid.values())]
    loaded = loaded or load_set(opts)
    runs: dict[tuple, list[Capture]] = {}  # lipreading: the streams run once per non-head setting
    reports, skipped = [], []
    for n, combo in enumerate(combos):
        if progress:
            progress(n, len(combos), combo)
        try:
            point = dataclasses.replace(opts, stream=dataclasses.replace(opts.stream, **combo),
                                        exactness=False)
            key = tuple((k, v) for k, v in combo.items() if k not in HEAD_ONLY)
            if key in runs:
                reports.append(replay(point, *loaded, runs[key]))
                continue
            keep: list[Capture] | None = [] if loaded[0].task == "lipreading" else None
            reports.append(evaluate_streams(point, loaded=loaded, keep=keep))
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
    name = "emission p95" if report.task == "lipreading" else "audio latency p95"
    return name, report.latency["measured_p95_s"]


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
    if report.task == "lipreading":
        rows += [("WER", f"{s['wer']:.1%} of {s['words_said']:.0f} words said "
                         f"(S {s['substitutions']:.0f}, D {s['deletions']:.0f}, "
                         f"I {s['insertions']:.0f}); {s['words_emitted']:.0f} emitted"),
                 ("false words / min", f"{s['false_words_per_min']:.2f} (silence "
                  f"{s['false_words_per_min_silence']:.2f}, still face "
                  f"{s['false_words_per_min_still_face']:.2f})"),
                 ("emission latency", f"p50 {lat['measured_p50_s']:.2f} s, p95 "
                  f"{lat['measured_p95_s']:.2f} s after the word's end"),
                 ("word times", f"{s['time_offset_median_s']:+.2f} s (median centre of a word "
                  f"read right, minus its centre in the video)")]
    else:
        for k in ("stoi", "estoi", "pesq"):
            rows.append((k.upper(), f"streamed {s.get('stream_' + k, math.nan):.3f}, stitched "
                                    f"{s.get('stitched_' + k, math.nan):.3f}, offline "
                                    f"{s.get('offline_' + k, math.nan):.3f}"))
        rows.append(("audio latency", f"p50 {lat['measured_p50_s']:.2f} s, p95 "
                                      f"{lat['measured_p95_s']:.2f} s"))
    rows.append(("algorithmic latency", f"mean {lat['algorithmic_mean_s']:.2f} s, max "
                                        f"{lat['algorithmic_max_s']:.2f} s"))
    rows.append(("compute", f"{lat['compute_ms_per_frame']:.1f} ms per frame, RTF "
                            f"{lat['rtf']:.2f}"))
    if report.exactness:
        e = report.exactness
        rows.append(("cache vs whole front-end", f"features {e['features_max_abs']:.1e}, "
                     f"outputs {e['outputs_max_abs']:.1e} max abs ({e['windows']:.0f} windows)"))
    return rows
