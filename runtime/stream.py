"""The stream loop: source -> mouth ROI -> cached front-end -> window backend -> head -> events.

    opts = StreamOptions(engine="onnx", device="cpu")
    stats = stream("pkg", "clip.mp4", opts, [ConsoleWords(), WavSink("out.wav")])

:class:`Streamer` is the generator side (STYLE point 13): ``Streamer.events()`` yields a
:class:`~lipx.runtime.events.FrameEvent` per frame and the head's results (words or audio) as
they become final; it writes nothing, and it sees the task's head only as a
:class:`~lipx.runtime.heads.Head`. :func:`stream` drives it into sinks, calls a status
callback, and returns the :class:`StreamStats`. Every stage is timed (decode, crop, frontend,
backend, head, sinks); the last frame also pays for the end-of-stream flush. Ctrl-C
(KeyboardInterrupt) ends :func:`stream` like the end of the source, except that nothing is
flushed: every sink is closed (valid WAV/MP4) and the stats say ``interrupted``.

With ``cache=False`` (``--no-cache``) every window is recomputed by the whole model
(``model.onnx``, zero-padded at the window's edges) instead of the cached split, so the cost of
the cache can be measured on the same stream (:func:`lipx.benchmarks.cache.compare_cache`).
Torch-free.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from array import array
from collections import deque
from collections.abc import Callable, Generator, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lipx.errors import InputError, ManifestError
from lipx.package import GraphInfo, Manifest
from lipx.runtime.backends import BACKENDS
from lipx.runtime.events import Event, FrameEvent, Result
from lipx.runtime.heads import Head, SpeechHead, WordHead
from lipx.runtime.mp4 import AnnotatedVideoSink
from lipx.runtime.package_runners import check_profiles, open_runners, resolve_backend
from lipx.runtime.roi import make_roi
from lipx.runtime.sinks import (
    ConsoleWords,
    JsonLines,
    LiveAudio,
    Sink,
    SinkGroup,
    SubtitleSink,
    WavSink,
)
from lipx.runtime.sources import Frame, Source, open_source
from lipx.runtime.stats import STAGES, LatencyStats, StageTimer, StreamRun, StreamStats
from lipx.runtime.window import CachedWindows, FrameWindows, Window
from lipx.tasks import Schedule
from lipx.video import mouth_crop_frame

log = logging.getLogger(__name__)

CROPS = ("lrw", "auto")
PIPELINE_DEPTH = 2
"""Windows that may wait for the pipelined worker before the loop waits for it."""
WindowHook = Callable[[Window, dict[str, np.ndarray]], None]


@dataclass(frozen=True)
class StreamOptions:
    """How to run a package on a stream; checked once, here (incompatible choices are errors)."""

    engine: str = "onnx"
    """``onnx`` (onnxruntime) or ``trt`` (TensorRT plans of the package); see ``BACKENDS``."""
    device: str | None = None
    """onnx: ``cpu`` (default), ``cuda`` or ``tensorrt`` (execution providers); trt: ``cuda``."""
    precision: str | None = None
    """onnx: which exported graphs to run (``fp32`` default, ``fp16``, ``int8``)."""
    crop: str = "lrw"
    """``lrw``: frames are aligned 256x256 faces; ``auto``: track the face in any video."""
    window: int | None = None
    """Frames per backend window (None: the package's)."""
    stride: int | None = None
    """Frames between backend runs (None: the package's)."""
    chunk: int = 1
    """New frames per front-end call (1: per frame, lowest latency; larger: throughput)."""
    threshold: float | None = None
    """Lipreading: least posterior of a window's top word for it to count (None, as for every
    head option: the package's, ``task_spec.stream_defaults``)."""
    agreement: int | None = None
    """Lipreading: successive windows that must agree before a word is emitted."""
    min_gap: float | None = None
    """Lipreading: seconds after a word within which the same word is not emitted again."""
    pad: int | None = None
    """Frames by which the stream is padded at each end, its first and last frames repeated (a
    model for streams was trained so; its first and last words then get centred windows)."""
    lookahead: int | None = None
    """Lip-to-speech: frames at each window's end kept only as right context."""
    crossfade: int | None = None
    """Lip-to-speech: frames cross-faded at each join (<= lookahead)."""
    gl_iters: int | None = None
    """Lip-to-speech: Griffin-Lim iterations per chunk."""
    cache: bool = True
    """Cache per-frame features (split graphs); False recomputes each window with model.onnx."""
    realtime: bool = False
    """Pace a file at its own speed and drop stale frames, as if it were a camera."""
    reconnect: int = 0
    """Reopen a broken network stream or webcam up to this many times in a row."""
    max_frames: int | None = None
    """Stop after this many frames (None: at the end of the source)."""
    threads: int | None = None
    """onnxruntime intra-op threads (None: 1 on the CPU, where one frame at a time gains little
    from a thread pool whose spinning threads slow every other stage; the default elsewhere)."""
    blas_threads: int | None = 1
    """numpy's BLAS threads during :func:`stream` (needs threadpoolctl; None leaves them): the
    per-frame matrices are tiny, and threads make them slower, not faster."""
    cuda_graph: bool = False
    """TensorRT: capture CUDA graphs for the fixed chunk and window shapes."""
    pipeline: bool | None = None
    """Run the backend and the head on a worker thread while the loop reads, crops and runs the
    front-end on the next frames, so a live source drops no frame while the total compute keeps
    up (None: on for live and ``realtime`` sources, off for files read as fast as possible)."""
    status_every_s: float = 0.5
    """Seconds between status callbacks."""

    def __post_init__(self) -> None:
        resolve_backend(self.engine, self.device, self.precision)
        if self.crop not in CROPS:
            raise InputError(f"unknown --crop {self.crop!r}; choose from: {', '.join(CROPS)}")
        for name in ("window", "stride", "chunk", "agreement", "gl_iters", "max_frames",
                     "threads", "blas_threads"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise InputError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
        for name in ("lookahead", "crossfade", "reconnect", "pad", "min_gap"):
            if (getattr(self, name) or 0) < 0:
                raise InputError(f"--{name} must be >= 0, got {getattr(self, name)}")
        if self.threshold is not None and not 0.0 <= self.threshold <= 1.0:
            raise InputError(f"--threshold must be in [0, 1], got {self.threshold}")
        if self.window and self.stride:
            Schedule(self.window, self.stride)
        if self.window and self.chunk > self.window:
            raise InputError(f"--chunk {self.chunk} is larger than --window {self.window}")
        if not self.cache and self.chunk != 1:
            raise InputError("--chunk sets the cached front-end's chunk; it has no meaning with "
                             "--no-cache")
        if self.cuda_graph and not BACKENDS[self.engine].plans:
            raise InputError("CUDA graphs are for TensorRT plans (--engine trt)")

    def schedule(self, manifest: Manifest) -> Schedule:
        """The options' window and stride, else the package's; InputError when they clash."""
        schedule = manifest.spec.schedule(self.window, self.stride, default=manifest.schedule)
        if self.chunk > schedule.window:
            raise InputError(f"--chunk {self.chunk} is larger than the window "
                             f"({schedule.window} frames)")
        return schedule

    def head_options(self, manifest: Manifest) -> dict[str, Any]:
        """The head's options: these options' where given, else the package's defaults."""
        return manifest.spec.head_options(
            threshold=self.threshold, agreement=self.agreement, min_gap=self.min_gap,
            pad=self.pad, lookahead=self.lookahead, crossfade=self.crossfade,
            gl_iters=self.gl_iters)


def engine_feeds(graph: GraphInfo, data: np.ndarray, frames: int) -> dict[str, np.ndarray]:
    """Inputs of ``graph`` at batch 1: ``data`` as its first input (features or frames), zeros
    for the others (the generator's noise, (1, N, rows, ``frames``): zero in inference)."""
    feeds = {graph.inputs[0].name: np.ascontiguousarray(data, dtype=np.float32)}
    for t in graph.inputs[1:]:
        shape = tuple(1 if d == "batch" else frames if isinstance(d, str) else d for d in t.shape)
        feeds[t.name] = np.zeros(shape, dtype=t.dtype)
    return feeds


def make_head(manifest: Manifest, opts: StreamOptions, window: int, stride: int) -> Head:
    """The task's head: words from logits, or speech from linear spectrograms."""
    fps, o = manifest.video.fps, opts.head_options(manifest)
    if manifest.task == "lipreading":
        if not manifest.vocabulary:
            raise ManifestError("lipreading package has no vocabulary; re-export it from a "
                                "checkpoint with one")
        return WordHead(list(manifest.vocabulary), fps, float(o["threshold"]),
                        int(o["agreement"]), float(o.get("min_gap", 0.0)), window=window,
                        stride=stride)
    if manifest.audio is None:
        raise ManifestError("lip2speech package has no audio spec; re-export it")
    return SpeechHead(manifest.audio, fps, window, stride, int(o["lookahead"]),
                      int(o["crossfade"]), int(o["gl_iters"]))


@dataclass(frozen=True)
class Outputs:
    """Where a stream's results go (the CLI's output options)."""

    words: bool = True
    """Print words as they are read (lipreading)."""
    jsonl: str | None = None
    """JSON lines file, or ``-`` for stdout (words; audio chunks for lip-to-speech)."""
    wav: Path | None = None
    """Generated speech as a WAV file (lip-to-speech)."""
    srt: Path | None = None
    """Subtitles, one cue per word (lipreading)."""
    vtt: Path | None = None
    """WebVTT subtitles (lipreading)."""
    save: Path | None = None
    """Annotated MP4: mouth box, current word or level meter, generated speech as audio."""
    play: bool = False
    """Play the generated speech live (needs sounddevice)."""


def make_sinks(manifest: Manifest, opts: StreamOptions, outputs: Outputs,
               console: Any = None) -> list[Sink]:
    """The sinks for ``outputs``; InputError for an output the package's task cannot make.

    Args:
        console: text stream for printed words (default stdout).
    """
    speech = manifest.task == "lip2speech"
    wrong = [name for name, given, ok in (
        ("--wav", outputs.wav, speech), ("--play", outputs.play, speech),
        ("--srt", outputs.srt, not speech), ("--vtt", outputs.vtt, not speech)) if given and not ok]
    if wrong:
        need = "lip2speech" if wrong[0] in ("--wav", "--play") else "lipreading"
        raise InputError(f"{wrong[0]} needs a {need} model; {manifest.model_name} is a "
                         f"{manifest.task} package")
    sinks: list[Sink] = []
    if outputs.words and not speech and outputs.jsonl != "-":
        sinks.append(ConsoleWords(console))
    if outputs.jsonl:
        sinks.append(JsonLines(outputs.jsonl, audio=speech))
    sinks += [SubtitleSink(p) for p in (outputs.srt, outputs.vtt) if p]
    if outputs.wav:
        sinks.append(WavSink(outputs.wav, _sample_rate(manifest)))
    if outputs.save:
        sched = opts.schedule(manifest)
        delay = output_delay_s(manifest, opts, make_head(manifest, opts, sched.window,
                                                             sched.stride))
        audio = {"sample_rate": _sample_rate(manifest)} if speech else {}
        sinks.append(AnnotatedVideoSink(outputs.save, manifest.video.fps, audio=speech,
                                        caption=not speech, meter=speech, delay_s=delay, **audio))
    if outputs.play:
        sinks.append(LiveAudio(_sample_rate(manifest)))
    return sinks


def _sample_rate(manifest: Manifest) -> int:
    """The audio rate of a lip-to-speech package."""
    if manifest.audio is None:
        raise ManifestError("lip2speech package has no audio spec; re-export it")
    return manifest.audio.sample_rate


def output_delay_s(manifest: Manifest, opts: StreamOptions, head: Head) -> float:
    """How long after a frame its word or audio can arrive (to delay an annotated video)."""
    context = manifest.spec.context if opts.cache else 0
    return (context + head.delay_frames) / manifest.video.fps


class Streamer:
    """An opened package, source and ROI; :meth:`events` runs the stream.

    Args:
        package_dir: a model package (``lipx export``).
        source: a source spec (``webcam``, a file, a URL, ``lavfi:...``) or an opened Source.
        opts: the options.
        window_hook: called with each window and the backend's outputs (tests, benchmarks).
        manifest: the package's manifest when the caller has read it (read here otherwise).
    Raises:
        ManifestError: not a package, or it lacks the graphs/plans needed.
        InputError: bad options for this package, or a source that cannot be opened.
        BackendUnavailableError: the backend's library or device is missing.
    """

    def __init__(self, package_dir: str | Path, source: str | Source, opts: StreamOptions,
                 window_hook: WindowHook | None = None, manifest: Manifest | None = None) -> None:
        self.opts, self.window_hook = opts, window_hook
        self.manifest = m = manifest or Manifest.read(package_dir)
        sched = opts.schedule(m)
        self.window, self.stride = sched.window, sched.stride
        self.fps = m.video.fps
        self.context = m.spec.context if opts.cache else 0
        info, self.device = resolve_backend(opts.engine, opts.device, opts.precision)
        if info.plans and opts.cache:
            check_profiles(m, self.window, opts.chunk)
        self.head = make_head(m, opts, self.window, self.stride)
        self.pad = int(opts.head_options(m).get("pad", 0))
        """Frames repeated before the first frame and after the last (window indices count
        them; the head's do not)."""
        self.roi = make_roi(opts.crop, fps=self.fps)
        roles = ("frontend", "backend") if opts.cache else ("model",)
        threads = opts.threads or (1 if self.device == "cpu" else None)
        runners = open_runners(package_dir, m, roles, opts.engine, self.device, opts.precision,
                               threads, opts.cuda_graph)
        self._stack = contextlib.ExitStack()
        try:  # the source first: a camera that cannot be opened fails before the engines load
            if isinstance(source, str):
                source = open_source(source, self.fps, realtime=opts.realtime,
                                     reconnect=opts.reconnect, max_frames=opts.max_frames)
            self.source = self._stack.enter_context(source)
            self.runners = {role: self._stack.enter_context(r) for role, r in runners.items()}
        except BaseException:
            self._stack.close()
            raise
        self._warm_up()
        waits = ("decode",) if self.source.info.live else ()
        self.timer = StageTimer(STAGES, self.fps, wait_stages=waits)
        self._pts = array("d")  # stream position -> presentation time (frames may be dropped)
        self._arrival = (0.0, time.perf_counter())  # (source time, wall time) of the last frame
        self._dropped = 0
        self.waits: list[float] = []
        """Seconds each result waited after its end (words) or its start (audio) until it was
        emitted (:attr:`~lipx.runtime.events.WordEvent.wait_s`)."""
        pipeline = opts.pipeline if opts.pipeline is not None else self.source.info.live
        self._worker = (self._stack.enter_context(ThreadPoolExecutor(1, "lipx-backend"))
                        if pipeline else None)
        self.backend_calls = 0
        self.interrupted = False

    def _warm_up(self) -> None:
        """One call of each engine at the stream's shapes before the source starts, so that
        first-call costs (allocation, kernel choice) do not land on the first frames (where a
        live source would drop frames for them)."""
        self.timer = StageTimer(STAGES, self.fps)  # replaced after: not the stream's cost
        size = self.manifest.video.size
        if self.opts.cache:
            clip = np.zeros((self.opts.chunk + 2 * self.context, size, size), np.float32)
            dim = self._frontend(clip).shape[-1]
            data = np.zeros((self.window, dim), np.float32)
            role = "backend"
        else:
            data, role = np.zeros((self.window, size, size), np.float32), "model"
        self.runners[role].infer(self._feeds(role, Window(0, self.window, data)))

    def __enter__(self) -> Streamer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the source and release the engines (idempotent)."""
        self._stack.close()

    # -- the loop -------------------------------------------------------------------------------
    def events(self) -> Generator[Event, None, None]:
        """Run the stream: a FrameEvent per frame, then the words or audio it made final.

        Pipelined (:attr:`StreamOptions.pipeline`), the backend and head of each window run on
        the worker in order, and their results are yielded after the frame during which they
        became ready (at most :data:`PIPELINE_DEPTH` windows wait; beyond that the loop waits,
        and a live source drops frames, keeping its timeline).
        """
        windows = self._windows()
        frames = iter(self.source)
        queued: deque[Future[list[Result]]] = deque()
        pending = False  # the previous frame's record is closed once its events were consumed
        last: np.ndarray | None = None  # the last frame's crop (padding repeats it)
        try:
            while (frame := self._next_frame(frames, pending)) is not None:
                pending = True
                self.timer.count_in(1, frame.dropped_before)
                with self.timer.stage("crop"):
                    roi = self.roi(frame.image)
                    crop = mouth_crop_frame(roi.face256, self.manifest.video)
                self._pts.append(frame.pts_s)
                self._arrival = (frame.pts_s + 1 / self.fps, time.perf_counter())
                self._dropped += frame.dropped_before
                yield FrameEvent(frame, roi)
                yield from self._push(windows, crop, 1 + (self.pad if last is None else 0),
                                      queued)
                last = crop
                yield from self._ready(queued, wait=len(queued) > PIPELINE_DEPTH)
            if last is not None:
                yield from self._push(windows, last, self.pad, queued)
            for window in windows.flush():
                yield from self._schedule(window, queued)
            yield from self._ready(queued, wait=True)
            with self.timer.stage("head"):
                tail = self.head.flush()
            yield from self._emit(tail)
        finally:
            for future in queued:
                future.cancel()
            close = getattr(frames, "close", None)
            if close is not None:
                close()
        if pending:
            self.timer.end_frame()

    def _push(self, windows: CachedWindows | FrameWindows, crop: np.ndarray, times: int,
              queued: deque[Future[list[Result]]]) -> Iterator[Result]:
        """Push ``crop`` ``times`` times (more than once: padding) and schedule the windows."""
        for _ in range(times):
            for window in windows.push(crop):
                yield from self._schedule(window, queued)

    def _schedule(self, window: Window,
                  queued: deque[Future[list[Result]]]) -> Iterator[Result]:
        """Run ``window`` now (yielding its results), or queue it on the worker."""
        if self._worker is None:
            yield from self._emit(self._run_window(window))
        else:
            queued.append(self._worker.submit(self._run_window, window))

    def _ready(self, queued: deque[Future[list[Result]]], wait: bool) -> Iterator[Result]:
        """The results of the queued windows that are done, in order (all of them with
        ``wait``: at the end, or when too many wait)."""
        while queued and (wait or queued[0].done()):
            yield from self._emit(queued.popleft().result())

    def _next_frame(self, frames: Iterator[Frame], pending: bool) -> Frame | None:
        """The next frame; closes the previous frame's record first (not at the end of the
        stream: the last frame also pays for the flush)."""
        start = time.perf_counter()
        frame = next(frames, None)
        seconds = time.perf_counter() - start
        if frame is not None and pending:
            self.timer.end_frame()
        self.timer.add("decode", seconds)
        return frame

    def _windows(self) -> CachedWindows | FrameWindows:
        size = self.manifest.video.size
        if not self.opts.cache:
            return FrameWindows(self.window, self.stride, (size, size))
        graph = self.manifest.graph("backend")  # its features input has the fixed size D
        dim = graph.inputs[0].shape[-1]
        if not isinstance(dim, int):
            raise ManifestError(f"{graph.file}: feature size is not fixed ({dim!r}); re-export")
        return CachedWindows(self._frontend, self.window, self.stride, dim, self.opts.chunk,
                             self.manifest.spec.context)

    def _frontend(self, clip: np.ndarray) -> np.ndarray:
        """(C + 4, H, W) frames -> (C, D) features through the front-end engine."""
        runner = self.runners["frontend"]
        name = self.manifest.graph("frontend").inputs[0].name
        with self.timer.stage("frontend"):
            out = runner.infer({name: clip[None, None]})
        return next(iter(out.values()))[0]

    def _run_window(self, window: Window) -> list[Result]:
        """Backend and head on one window (on the worker when pipelined)."""
        if len(window.data) < self.head.min_window:
            log.warning("stream of %d frames is too short for the %s head (windows of at "
                        "least %d frames); nothing made", window.stop, self.manifest.task,
                        self.head.min_window)
            return []
        role = "backend" if self.opts.cache else "model"
        runner = self.runners[role]
        with self.timer.stage("backend"):
            outputs = runner.infer(self._feeds(role, window))
        self.backend_calls += 1
        if self.window_hook is not None:
            self.window_hook(window, outputs)
        result = outputs[self.manifest.spec.head_output][0]
        with self.timer.stage("head"):
            return list(self.head.push(result, window.start - self.pad, window.stop - self.pad))

    def now_s(self) -> float:
        """Now on the stream's clock: the arrival of the last frame read, plus the time since."""
        source_s, wall_s = self._arrival
        return source_s + (time.perf_counter() - wall_s)

    def _emit(self, results: Sequence[Result]) -> Iterator[Result]:
        """Results on the source's clock, stamped with the time they are emitted."""
        now = self.now_s()
        for result in results:
            for moved in self._on_source_clock(result):
                stamped = dataclasses.replace(moved, emitted_s=now)
                if stamped.wait_s is not None:
                    self.waits.append(stamped.wait_s)
                yield stamped

    def _feeds(self, role: str, window: Window) -> dict[str, np.ndarray]:
        """The engine inputs for one window: features or frames, and zero noise (lip2speech)."""
        data = window.data[None] if self.opts.cache else window.data[None, None]
        return engine_feeds(self.manifest.graph(role), data, len(window.data))

    def _on_source_clock(self, result: Result) -> list[Result]:
        """Put a result on the source's clock.

        The head counts frames as they arrived; a live source may have dropped frames in
        between, so positions after a drop are later on the clock (each result moves itself:
        ``retime``). Without drops this changes nothing.
        """
        if not self._dropped:
            return [result]
        return list(result.retime(self._offset, self.fps))

    def _offset(self, t: float, end: bool = False) -> float:
        """Seconds the source's clock is ahead of the arrival count at stream time ``t``."""
        k = int(t * self.fps - (1 - 1e-6 if end else -1e-6))  # the frame t starts (or ends)
        k = min(max(k, 0), len(self._pts) - 1)
        return self._pts[k] - k / self.fps

    # -- reporting ------------------------------------------------------------------------------
    def status_line(self) -> str:
        line = self.timer.status_line()
        missing = self.roi.frames_without_face
        return f"{line} | no face {missing}" if missing else line

    def stats(self) -> StreamStats:
        """The run's statistics (also valid after an interruption)."""
        run = StreamRun(
            task=self.manifest.task, engine=self.opts.engine, device=self.device,
            cache=self.opts.cache, window=self.window, stride=self.stride, chunk=self.opts.chunk,
            source=self.source.info.spec, backend_calls=self.backend_calls,
            frames_without_face=self.roi.frames_without_face, interrupted=self.interrupted,
            words=self.head.words, audio_s=round(self.head.audio_s, 3),
        )
        stats = self.timer.summary(run, self.stride, self.head.lookahead_frames, self.context)
        return dataclasses.replace(stats, emission=LatencyStats.of(self.waits))


def stream(
    package_dir: str | Path,
    source: str | Source,
    opts: StreamOptions,
    sinks: Sequence[Sink] = (),
    on_status: Callable[[str], None] | None = None,
    window_hook: WindowHook | None = None,
    manifest: Manifest | None = None,
) -> StreamStats:
    """Run ``package_dir`` on ``source`` into ``sinks``; returns the statistics.

    Args:
        package_dir: a model package.
        source: a source spec or an opened Source.
        opts: stream options.
        sinks: where events go (closed at the end, on errors and on Ctrl-C).
        on_status: called with a one-line status about every ``opts.status_every_s`` seconds.
        window_hook: called with each window and its backend outputs.
        manifest: the package's manifest, when the caller has read it already.
    Raises:
        LipxError: see :class:`Streamer`; a source that breaks mid-stream (sinks are closed).
    """
    with _blas_threads(opts.blas_threads), Streamer(package_dir, source, opts, window_hook,
                                                    manifest) as streamer:
        events = streamer.events()
        last = time.perf_counter()
        try:
            with SinkGroup(sinks) as group:
                for event in events:
                    with streamer.timer.stage("sinks"):
                        group.write(event)
                    if on_status and isinstance(event, FrameEvent):
                        now = time.perf_counter()
                        if now - last >= opts.status_every_s:
                            last = now
                            on_status(streamer.status_line())
        except KeyboardInterrupt:
            streamer.interrupted = True
            log.info("stream interrupted; outputs closed")
        finally:
            events.close()
        return streamer.stats()


def _blas_threads(limit: int | None) -> contextlib.AbstractContextManager[object]:
    """Limit numpy's BLAS thread pool (threadpoolctl, when installed)."""
    if limit is None:
        return contextlib.nullcontext()
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        log.debug("threadpoolctl is not installed; BLAS threads left as they are")
        return contextlib.nullcontext()
    return threadpool_limits(limits=limit, user_api="blas")
