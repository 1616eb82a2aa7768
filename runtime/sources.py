"""Frame sources: webcams, files, network streams, lavfi test patterns and image folders (PyAV).

``open_source(spec)`` turns a command-line source into a ``Source`` that yields RGB frames on the
model's clock:

- ``webcam`` / ``webcam:N`` (or ``webcam:/dev/videoN``, ``webcam:NAME`` on Windows): v4l2 on Linux,
  avfoundation on macOS, dshow on Windows;
- a video file; ``rtsp://``, ``rtmp://``, ``http(s)://``, ... URLs;
- ``lavfi:<graph>``, e.g. ``lavfi:testsrc=size=256x256:rate=25``;
- a folder of numbered PNG/JPG images (natural sort: ``2.png`` before ``10.png``).

A :class:`ResampledSource` puts the pieces together: the input is opened and decoded by
:mod:`~lipx.runtime.decode` (per-OS webcam devices included), its frame times are mapped onto
the model's ticks by :class:`~lipx.runtime.resample.Resampler` (nearest frame, causal; the rule
is in that module), and :mod:`~lipx.runtime.live` makes it live where it should be.

**Live sources** (webcams, URLs, and any source with ``realtime=True``) never fall behind: frames
are decoded in a background thread and the consumer always gets the newest; ``Frame.dropped_before``
counts the stale frames replaced since the previous one (so ``Frame.index`` jumps by that many).
``realtime=True`` paces a file (or lavfi graph) at its own speed, as if it came from a camera.
URLs are paced too (a no-op for a true live stream); webcams run on the device's clock. Broken
webcams and network streams can be reopened (``reconnect``); files never are.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lipx.errors import InputError
from lipx.runtime.decode import (
    AVFrames,
    av_errors,
    av_target,
    error_reason,
    open_container,
    read_image,
)
from lipx.runtime.live import LiveReader, Pacer, Reconnecting
from lipx.runtime.resample import RawFrames, Resampler
from lipx.video import FPS

log = logging.getLogger(__name__)

URL_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "udp", "tcp", "srt", "rtp")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
LIVE_KINDS = ("webcam", "url")
"""Kinds that are live by nature: read in a background thread, reopened after a break when asked
(files never are), and without an end that their last frame would last until."""


@dataclass(frozen=True)
class Frame:
    """One frame on the model's clock.

    Attributes:
        index: tick number at the model fps, from 0.
        pts_s: ``index / fps``, seconds since the first frame.
        image: (H, W, 3) uint8 RGB.
        dropped_before: stale frames dropped just before this one (live sources only; the
            index jumps by this many).
        arrived: when it arrived (``time.perf_counter()``), for a source that queues frames
            before they are read (a server's connection); None: when it is read.
    """

    index: int
    pts_s: float
    image: np.ndarray
    dropped_before: int = 0
    arrived: float | None = None


@dataclass(frozen=True)
class SourceInfo:
    """What a source is, as found when it was opened."""

    spec: str
    """The source as given by the user."""
    kind: str
    """One of ``webcam``, ``file``, ``url``, ``lavfi``, ``images``."""
    native_fps: float | None
    """The source's own frame rate, when it declares one."""
    width: int
    height: int
    has_audio: bool
    live: bool
    """True when frames are read in a background thread and stale ones dropped."""
    duration_s: float | None = None


@dataclass
class SourceStats:
    """Counters, updated while the source runs."""

    decoded: int = 0
    """Input frames decoded."""
    emitted: int = 0
    """Frames handed to the consumer."""
    dropped_stale: int = 0
    """Frames a slow consumer never saw (live sources)."""
    resample_dropped: int = 0
    """Input frames dropped by the resampler (source faster than the model fps)."""
    duplicated: int = 0
    """Extra ticks filled by repeating a frame (source slower than the model fps)."""
    reconnects: int = 0
    discontinuities: int = 0


class Source(ABC):
    """Frames of one input on the model's clock; iterate once, then close (or use ``with``).

    Attributes:
        info: what the source is (kind, native fps and size, audio presence, live or not).
        fps: the output frame rate (the model's).
        stats: counters (decoded, emitted, dropped, duplicated, reconnects).
    """

    info: SourceInfo
    fps: float
    stats: SourceStats

    @abstractmethod
    def __iter__(self) -> Iterator[Frame]:
        """Yield frames until the source ends; raises ``InputError`` if it breaks."""

    @abstractmethod
    def close(self) -> None:
        """Release the input (idempotent)."""

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ResampledSource(Source):
    """A ``Source`` over any raw frame reader: resampling, live hand-over, pacing, reconnects.

    Args:
        info: the source's description (``info.live`` selects the background-thread mode).
        fps: output frame rate.
        reopen: opens the input again and returns its raw frames (used first when ``first`` is
            None, and for each reconnect).
        first: raw frames of the already opened input.
        pace: sleep so that tick ``k`` is not handed over before ``k / fps`` s after the start.
        reconnect: consecutive reopen attempts after a break (webcams and URLs only).
        max_frames: stop after this many frames.
    """

    def __init__(
        self,
        info: SourceInfo,
        fps: float,
        reopen: Callable[[], RawFrames],
        first: RawFrames | None = None,
        *,
        pace: bool = False,
        reconnect: int = 0,
        max_frames: int | None = None,
    ):
        self.info, self.fps = info, fps
        self.stats = SourceStats()
        self._pace, self._reconnect, self._max_frames = pace, reconnect, max_frames
        self._stop = threading.Event()
        attempts = reconnect if info.kind in LIVE_KINDS else 0
        self._input = Reconnecting(reopen, first, attempts, self._stop, info.spec)
        self._reader: LiveReader[tuple[int, np.ndarray]] | None = None
        self._started = False

    def close(self) -> None:
        """Stop the reader thread and release the input (idempotent)."""
        self._stop.set()
        reader, self._reader = self._reader, None
        if reader is not None and not reader.join(timeout=2.0):
            # stuck in a blocking read: the thread closes the input itself
            log.warning("source reader thread did not stop within 2 s; leaving it")
            return
        self._input.close()

    def __iter__(self) -> Iterator[Frame]:
        if self._started:
            raise InputError(f"source {self.info.spec!r} was already read; open it again")
        self._started = True
        frames = self._live_frames() if self.info.live else self._direct_frames()
        try:
            for frame in frames:
                yield frame
                self.stats.emitted += 1
                if self._max_frames is not None and self.stats.emitted >= self._max_frames:
                    break
        finally:
            frames.close()

    # -- internals ---------------------------------------------------------------------------

    def _direct_frames(self) -> Generator[Frame, None, None]:
        try:
            for tick, image in self._ticks():
                yield Frame(tick, tick / self.fps, image, 0)
        finally:
            self._input.close()

    def _live_frames(self) -> Generator[Frame, None, None]:
        self._reader = LiveReader(self._closing_ticks, self._stop)
        try:
            for (tick, image), dropped in self._reader:
                self.stats.dropped_stale += dropped
                yield Frame(tick, tick / self.fps, image, dropped)
        finally:
            self.close()

    def _closing_ticks(self) -> Generator[tuple[int, np.ndarray], None, None]:
        """:meth:`_ticks`, then the input closed (the reader thread's work)."""
        try:
            yield from self._ticks()
        finally:
            self._input.close()

    def _ticks(self) -> Iterator[tuple[int, np.ndarray]]:
        """Decoded frames placed on output ticks, paced when asked; reconnects on breaks."""
        resampler, pacer = Resampler(self.fps), Pacer(self.fps, self._stop, self._pace)
        prev: np.ndarray | None = None
        t = 0.0
        for t, image in self._raw(resampler):
            self.stats.decoded += 1
            n_prev, n_cur = resampler.push(t)
            self.stats.discontinuities = resampler.discontinuities
            if n_prev + n_cur == 0:
                self.stats.resample_dropped += 1
                continue
            self.stats.duplicated += n_prev + n_cur - 1
            first = resampler.next_tick - n_prev - n_cur
            for k in range(n_prev + n_cur):
                if not pacer.wait(first + k):
                    return
                yield first + k, (prev if k < n_prev and prev is not None else image)
            prev = image
        period = 1 / self.info.native_fps if self.info.native_fps else None
        if prev is None or period is None or self.info.kind in LIVE_KINDS:
            return
        n_end = resampler.finish(t + period)  # the last frame lasts one native period
        self.stats.duplicated += n_end
        for tick in range(resampler.next_tick - n_end, resampler.next_tick):
            if not pacer.wait(tick):
                return
            yield tick, prev

    def _raw(self, resampler: Resampler) -> Iterator[tuple[float, np.ndarray]]:
        """The input's raw frames across reconnects; a final break is one InputError."""

        def reconnecting() -> None:
            self.stats.reconnects += 1
            resampler.rebase()

        try:
            yield from self._input.frames(reconnecting)
        except av_errors(InputError) as e:
            broken = _broken(self.info, self.stats.decoded, e, self._reconnect)
            if broken is e:
                raise
            raise broken from e


def _broken(info: SourceInfo, decoded: int, error: Exception, reconnect: int) -> InputError:
    if isinstance(error, InputError) and info.kind not in LIVE_KINDS:
        return error  # already says what is wrong (a bad image in a folder, ...)
    hint = (
        "the file is truncated or corrupt"
        if info.kind in ("file", "images")
        else f"gave up after {reconnect} reconnect(s); pass a larger reconnect count"
        if reconnect
        else "pass a reconnect count (e.g. --reconnect 3) to retry"
    )
    reason = error_reason(error)
    return InputError(f"{info.spec}: stream broke after {decoded} frames ({reason}); {hint}")


# -- opening -----------------------------------------------------------------------------------


def open_source(
    spec: str,
    fps: float = FPS,
    realtime: bool = False,
    reconnect: int = 0,
    *,
    max_frames: int | None = None,
    image_fps: float | None = None,
    options: dict[str, str] | None = None,
) -> Source:
    """Open a source from its command-line spec (see the module docstring for the forms).

    Args:
        spec: ``webcam[:N]``, a file path, a URL, ``lavfi:<graph>`` or an image folder.
        fps: the model's frame rate; frames are resampled to it.
        realtime: pace a file or lavfi graph at its own speed and drop stale frames, as if live.
        reconnect: how many times in a row a broken network stream or webcam is reopened
            (with backoff 0.5, 1, 2 ... 8 s) before giving up; files are never reopened.
        max_frames: stop after this many frames (None: until the source ends).
        image_fps: frame rate of an image folder (default: ``fps``, one image per tick).
        options: extra FFmpeg options for the demuxer/device (e.g. ``{"video_size": "640x480"}``).

    Returns:
        An unread ``Source``; iterate it for ``Frame``s.

    Raises:
        InputError: the source is missing, cannot be opened, or is not a readable video.
    """
    if not fps > 0:
        raise InputError(f"fps must be > 0, got {fps}")
    if reconnect < 0:
        raise InputError(f"reconnect must be >= 0, got {reconnect}")
    kind = source_kind(spec)
    if kind == "images":
        return _open_images(spec, fps, realtime, max_frames, image_fps or fps)
    url, fmt, opts = av_target(spec, kind)
    opts = {**opts, **(options or {})}

    def reopen() -> RawFrames:
        return AVFrames(open_container(spec, kind, url, fmt, opts))

    first = AVFrames(open_container(spec, kind, url, fmt, opts))
    live = realtime or kind in LIVE_KINDS
    info = SourceInfo(
        spec, kind, first.fps, first.width, first.height, first.has_audio, live, first.duration_s
    )
    pace = live and kind != "webcam"
    return ResampledSource(
        info, fps, reopen, first, pace=pace, reconnect=reconnect, max_frames=max_frames
    )


def source_kind(spec: str) -> str:
    """``webcam``, ``lavfi``, ``url``, ``images`` or ``file`` for a source spec."""
    if spec == "webcam" or spec.startswith("webcam:"):
        return "webcam"
    if spec.startswith("lavfi:"):
        return "lavfi"
    scheme = spec.split("://", 1)[0].lower() if "://" in spec else ""
    if scheme in URL_SCHEMES:
        return "url"
    if os.path.isdir(spec):
        return "images"
    return "file"


# -- image folders -----------------------------------------------------------------------------


def _natural_key(path: Path) -> list[object]:
    return [int(p) if p.isdigit() else p.lower() for p in re.split(r"(\d+)", path.name)]


def _open_images(
    folder: str, fps: float, realtime: bool, max_frames: int | None, image_fps: float
) -> Source:
    files = sorted(
        (p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES), key=_natural_key
    )
    if not files:
        raise InputError(f"image folder {folder} has no {'/'.join(IMAGE_SUFFIXES)} files")
    first = read_image(files[0])
    height, width = first.shape[:2]

    def reopen() -> RawFrames:
        for i, path in enumerate(files):
            image = first if i == 0 else read_image(path)
            if image.shape[:2] != (height, width):
                raise InputError(
                    f"{path}: image is {image.shape[1]}x{image.shape[0]}, expected "
                    f"{width}x{height} like {files[0].name}; resize the folder"
                )
            yield i / image_fps, image

    info = SourceInfo(
        folder, "images", image_fps, width, height, False, realtime, len(files) / image_fps
    )
    return ResampledSource(info, fps, reopen, pace=realtime, max_frames=max_frames)
