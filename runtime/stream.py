"""The stream loop: source -> mouth ROI -> cached front-end -> window backend -> head -> sinks.

    opts = StreamOptions(engine="onnx", device="cpu")
    stats = stream("pkg", "clip.mp4", opts, [ConsoleWords(), WavSink("out.wav")])

:func:`stream` opens the package as a :class:`~lipx.runtime.pipeline.Pipeline` (or uses one
already open), runs one :class:`~lipx.runtime.session.Session` of ``source`` and drives its
events into sinks, calls a status callback, and returns the :class:`StreamStats`. Every stage is
timed (decode, crop, frontend, backend, head, sinks); the last frame also pays for the
end-of-stream flush. An interruption (KeyboardInterrupt: Ctrl-C, or SIGTERM/SIGHUP through the
CLI) ends :func:`stream` like the end of the source, except that nothing is flushed: every sink
is closed (valid WAV/MP4) and the stats say ``interrupted``.

With ``cache=False`` (``--no-cache``) every window is recomputed by the whole model
(``model.onnx``, zero-padded at the window's edges) instead of the cached split, so the cost of
the cache can be measured on the same stream (:func:`lipx.benchmarks.cache.compare_cache`).
Torch-free.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from lipx.errors import InputError
from lipx.package import Manifest, Package
from lipx.runtime.events import FrameEvent
from lipx.runtime.heads import Head
from lipx.runtime.mp4 import AnnotatedVideoSink
from lipx.runtime.options import EngineOptions, StreamOptions, blas_threads
from lipx.runtime.pipeline import Pipeline, check_stream
from lipx.runtime.roi import CROPS
from lipx.runtime.session import Session, WindowHook
from lipx.runtime.sinks import JsonLines, Sink, SinkGroup, TextOut
from lipx.runtime.sources import Source, open_source
from lipx.runtime.stats import StreamStats
from lipx.runtime.task import OutputRequest
from lipx.runtime.tasks import stream_task, units

log = logging.getLogger(__name__)

__all__ = ["CROPS", "EngineOptions", "Outputs", "Pipeline", "Session", "StreamOptions",
           "make_sinks", "output_delay_s", "stream"]


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
               console: TextOut | None = None) -> list[Sink]:
    """The sinks for ``outputs``; InputError for an output the package's task cannot make.

    Args:
        console: text stream for printed words (default stdout).
    """
    unit = stream_task(manifest.task)
    request = OutputRequest(words=outputs.words, jsonl=outputs.jsonl, srt=outputs.srt,
                            vtt=outputs.vtt, wav=outputs.wav, play=outputs.play)
    wrong = unit.unsupported(request)
    if wrong:
        need = " or ".join(u.name for u in units() if wrong[0] in u.outputs) or "another"
        raise InputError(f"{wrong[0]} needs a {need} model; {manifest.model_name} is a "
                         f"{manifest.task} package")
    audio = bool(unit.video_overlay(manifest)["audio"])
    sinks: list[Sink] = [JsonLines(outputs.jsonl, audio=audio)] if outputs.jsonl else []
    sinks += unit.sinks(manifest, request, console)
    if outputs.save:
        sched = opts.schedule(manifest)
        head = unit.make_head(manifest, opts.head_options(manifest), sched)
        sinks.append(AnnotatedVideoSink(outputs.save, manifest.video.fps,
                                        delay_s=output_delay_s(manifest, opts, head),
                                        **unit.video_overlay(manifest)))
    return sinks


def output_delay_s(manifest: Manifest, opts: StreamOptions, head: Head) -> float:
    """How long after a frame its word or audio can arrive (to delay an annotated video)."""
    context = manifest.spec.context if opts.cache else 0
    return (context + head.delay_frames) / manifest.video.fps


def stream(
    package: str | Path | Package | Pipeline,
    source: str | Source,
    opts: StreamOptions,
    sinks: Sequence[Sink] = (),
    on_status: Callable[[str], None] | None = None,
    window_hook: WindowHook | None = None,
) -> StreamStats:
    """Run a package on ``source`` into ``sinks``; returns the statistics.

    Args:
        package: a model package, or a :class:`Pipeline` already open (reused, left open).
        source: a source spec or an opened Source.
        opts: stream options.
        sinks: where events go (closed at the end, on errors and on interruption).
        on_status: called with a one-line status about every ``opts.status_every_s`` seconds.
        window_hook: called with each window and its backend outputs.
    Raises:
        LipxError: see :class:`Pipeline` and :class:`Session`; a source that breaks mid-stream
            (sinks are closed).
    """
    with contextlib.ExitStack() as stack:
        stack.enter_context(blas_threads(opts.blas_threads))
        if isinstance(package, Pipeline):
            pipeline = package
        else:  # the source first: a camera that cannot be opened fails before the engines load
            package = Package.open(package)
            check_stream(package.manifest, opts)
            if isinstance(source, str):
                source = stack.enter_context(open_source(
                    source, package.manifest.video.fps, realtime=opts.realtime,
                    reconnect=opts.reconnect, max_frames=opts.max_frames))
            pipeline = stack.enter_context(Pipeline(package, opts.engine_options()))
        session = stack.enter_context(pipeline.session(source, opts, window_hook))
        return _drive(session, sinks, on_status, opts.status_every_s)


def _drive(session: Session, sinks: Sequence[Sink], on_status: Callable[[str], None] | None,
           every_s: float) -> StreamStats:
    """The session's events into ``sinks``; its stats (also after an interruption)."""
    events = session.events()
    last = time.perf_counter()
    try:
        with SinkGroup(sinks) as group:
            for event in events:
                with session.timer.stage("sinks"):
                    group.write(event)
                if on_status and isinstance(event, FrameEvent):
                    now = time.perf_counter()
                    if now - last >= every_s:
                        last = now
                        on_status(session.status_line())
    except KeyboardInterrupt:
        session.interrupted = True
        log.info("stream interrupted; outputs closed")
    finally:
        events.close()
    return session.stats()
