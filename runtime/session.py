"""One stream of a pipeline: a source's state, no engine.

    with pipeline.session("clip.mp4", StreamOptions()) as session:
        for event in session.events():    # FrameEvent per frame, then words or audio chunks
            ...
        stats = session.stats()

A :class:`Session` owns what one source carries: the source, the mouth ROI, the feature ring
and window schedule, the task's head, the clocks and the stage timer. Its engine work goes to
the :class:`~lipx.runtime.pipeline.Pipeline` that made it, as a list of one (the pipeline's steps
take many sessions' work at once). It writes nothing; :func:`lipx.runtime.stream.stream` drives
it into sinks. Torch-free.
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
from typing import TYPE_CHECKING

import numpy as np

from lipx.runtime.events import Event, FrameEvent, Result
from lipx.runtime.options import StreamOptions
from lipx.runtime.roi import make_roi
from lipx.runtime.sources import Frame, Source, open_source
from lipx.runtime.stats import STAGES, LatencyStats, StageTimer, StreamRun, StreamStats
from lipx.runtime.window import CachedWindows, FrameWindows, Window
from lipx.video import mouth_crop_frame

if TYPE_CHECKING:
    from lipx.runtime.batcher import Steps
    from lipx.runtime.pipeline import Pipeline

log = logging.getLogger(__name__)

PIPELINE_DEPTH = 2
"""Windows that may wait for the pipelined worker before the loop waits for it."""
WindowHook = Callable[[Window, dict[str, np.ndarray]], None]


class Session:
    """One source streamed through a pipeline; made by :meth:`Pipeline.session`.

    Args:
        pipeline: the opened package.
        source: a source spec (``webcam``, a file, a URL, ``lavfi:...``) or an opened Source
            (closed with the session).
        opts: the stream's options (their engine options must be the pipeline's).
        window_hook: called with each window and the backend's outputs (tests, the evaluator).
        record: the head keeps what a stream evaluation scores (the speech head's magnitudes).
        steps: where its engine work goes: the pipeline (default), or a
            :class:`~lipx.runtime.batcher.Batcher` that batches it with other sessions'.
    Raises:
        InputError: bad options for this package, or a source that cannot be opened.
    """

    def __init__(self, pipeline: Pipeline, source: str | Source, opts: StreamOptions,
                 window_hook: WindowHook | None = None, record: bool = False,
                 steps: Steps | None = None) -> None:
        self.pipeline, self.opts, self.window_hook = pipeline, opts, window_hook
        self.steps: Steps = steps or pipeline
        m = self.manifest = pipeline.manifest
        self.fps = m.video.fps
        self.context = pipeline.context
        self._stack = contextlib.ExitStack()
        try:
            if isinstance(source, str):
                source = open_source(source, self.fps, realtime=opts.realtime,
                                     reconnect=opts.reconnect, max_frames=opts.max_frames)
            self.source = self._stack.enter_context(source)
            sched = pipeline.schedule(opts)
            faces: dict[str, object] = {}  # the tracker's face models: the pipeline's, opened once
            if opts.crop == "auto":
                faces["detector"], faces["mesh"] = pipeline.face_models()
                faces["framing"] = m.video.framing
            self.roi = make_roi(opts.crop, fps=self.fps, **faces)
        except BaseException:
            self._stack.close()
            raise
        self.window, self.stride = sched.window, sched.stride
        self.head_options = opts.head_options(m)
        self.head = pipeline.task.make_head(m, self.head_options, sched, record)
        self.pad = self.head_options.pad
        """Frames repeated before the first frame and after the last (window indices count
        them; the head's do not)."""
        waits = ("decode",) if self.source.info.live else ()
        self.timer = StageTimer(STAGES, self.fps, wait_stages=waits)
        self._pts = array("d")  # stream position -> presentation time (frames may be dropped)
        self._arrival = (0.0, time.perf_counter())  # (source time, wall time) of the last frame
        self._dropped = 0
        self.waits: list[float] = []
        """Seconds each result waited after its end (words) or its start (audio) until it was
        emitted (:attr:`~lipx.runtime.events.WordEvent.wait_s`)."""
        pipelined = opts.pipeline if opts.pipeline is not None else self.source.info.live
        self._worker = (self._stack.enter_context(ThreadPoolExecutor(1, "lipx-backend"))
                        if pipelined else None)
        self.backend_calls = 0
        self.interrupted = False

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the source (idempotent); the pipeline's engines stay open."""
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
                arrived = time.perf_counter() if frame.arrived is None else frame.arrived
                self._arrival = (frame.pts_s + 1 / self.fps, arrived)
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
        return CachedWindows(self._frontend, self.window, self.stride,
                             self.pipeline.feature_dim, self.opts.chunk, self.context)

    def _frontend(self, clip: np.ndarray) -> np.ndarray:
        """(C + 4, H, W) frames -> (C, D) features through the pipeline's front-end."""
        with self.timer.stage("frontend"):
            return self.steps.frontend([clip])[0]

    def _run_window(self, window: Window) -> list[Result]:
        """Backend and head on one window (on the worker when pipelined)."""
        if len(window.data) < self.head.min_window:
            log.warning("stream of %d frames is too short for the %s head (windows of at "
                        "least %d frames); nothing made", window.stop, self.manifest.task,
                        self.head.min_window)
            return []
        with self.timer.stage("backend"):
            outputs = self.steps.backend([window.data])[0]
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
            task=self.manifest.task, engine=self.opts.engine, device=self.pipeline.device,
            cache=self.opts.cache, window=self.window, stride=self.stride, chunk=self.opts.chunk,
            source=self.source.info.spec, backend_calls=self.backend_calls,
            frames_without_face=self.roi.frames_without_face, interrupted=self.interrupted,
            words=self.head.words, audio_s=round(self.head.audio_s, 3),
        )
        stats = self.timer.summary(run, self.stride, self.head.lookahead_frames, self.context)
        return dataclasses.replace(stats, emission=LatencyStats.of(self.waits))
