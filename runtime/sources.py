"""Frame sources: webcams, files, network streams, lavfi test patterns and image folders (PyAV).

``open_source(spec)`` turns a command-line source into a ``Source`` that yields RGB frames on the
model's clock:

- ``webcam`` / ``webcam:N`` (or ``webcam:/dev/videoN``, ``webcam:NAME`` on Windows): v4l2 on Linux,
  avfoundation on macOS, dshow on Windows;
- a video file; ``rtsp://``, ``rtmp://``, ``http(s)://``, ... URLs;
- ``lavfi:<graph>``, e.g. ``lavfi:testsrc=size=256x256:rate=25``;
- a folder of numbered PNG/JPG images (natural sort: ``2.png`` before ``10.png``).

**Resampling rule** (every kind): output tick ``k`` is at ``k / fps`` seconds after the first
frame and shows the input frame nearest to it in time. It is causal: each input frame is handled
as it arrives; ticks between two input frames go to whichever is nearer (duplicating, when the
source is slower than ``fps``); an input frame whose nearest tick was already emitted is dropped
(the first frame of a tick wins). When a file ends, its last frame also fills the ticks within
its own duration (one native frame period), so N frames at 30 fps (N/30 s) give about N*25/30
ticks at 25 fps. A timestamp jump backwards or of more than ``MAX_GAP_S`` restarts the mapping
at the next tick.

**Live sources** (webcams, URLs, and any source with ``realtime=True``) never fall behind: a
background thread decodes and resamples into a one-slot buffer where the newest frame replaces an
unread one. The consumer therefore always gets the latest frame; ``Frame.dropped_before`` counts
the stale frames replaced since the previous one (so ``Frame.index`` jumps by that many).
``realtime=True`` paces a file (or lavfi graph) at its own speed, as if it came from a camera.
URLs are paced too (a no-op for a true live stream); webcams run on the device's clock.
"""

from __future__ import annotations

import glob
import logging
import math
import os
import re
import sys
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from lipx.errors import InputError

if TYPE_CHECKING:
    import av

log = logging.getLogger(__name__)

MAX_GAP_S = 1.0
"""A timestamp jump larger than this (or backwards) restarts the resampler instead of filling."""
URL_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "udp", "tcp", "srt", "rtp")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
URL_TIMEOUT_S = 10.0
"""Seconds a network stream may stay silent (opening or reading) before it counts as broken."""

RawFrames = Iterable[tuple[float, np.ndarray]]
"""(time in seconds, (H, W, 3) uint8 RGB image) pairs in decode order."""


@dataclass(frozen=True)
class Frame:
    """One frame on the model's clock.

    Attributes:
        index: tick number at the model fps, from 0.
        pts_s: ``index / fps``, seconds since the first frame.
        image: (H, W, 3) uint8 RGB.
        dropped_before: stale frames dropped just before this one (live sources only; the
            index jumps by this many).
    """

    index: int
    pts_s: float
    image: np.ndarray
    dropped_before: int = 0


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


class Resampler:
    """Maps input frame times to output ticks at ``fps`` (nearest frame, causal; see module doc)."""

    def __init__(self, fps: float):
        self.fps = fps
        self.next_tick = 0
        self._t0: float | None = None
        self._t_prev: float | None = None
        self.discontinuities = 0

    def rebase(self) -> None:
        """Map the next input frame to the next tick (after a reconnect or a timestamp jump)."""
        self._t0 = None

    def push(self, t: float) -> tuple[int, int]:
        """Place an input frame at time ``t`` (seconds).

        Returns:
            (n_prev, n_cur): the next ``n_prev`` ticks repeat the previous frame, then the next
            ``n_cur`` ticks show this one; ``(0, 0)`` drops it.
        """
        if self._t0 is not None and self._t_prev is not None:
            jump = t - self._t_prev
            if jump < 0 or jump > MAX_GAP_S:
                self.discontinuities += 1
                self._t0 = None
        if self._t0 is None:
            self._t0 = t - self.next_tick / self.fps
            self._t_prev = None
        slot = math.ceil((t - self._t0) * self.fps - 0.5 - 1e-9)  # nearest tick, ties go down
        if slot < self.next_tick:
            return 0, 0
        n_prev = 0
        if self._t_prev is not None:
            mid_tick = ((self._t_prev + t) / 2 - self._t0) * self.fps
            n_prev = min(
                max(math.floor(mid_tick + 1e-9) + 1 - self.next_tick, 0), slot - self.next_tick
            )
        self._t_prev = t
        n_cur = slot + 1 - self.next_tick - n_prev
        self.next_tick = slot + 1
        return n_prev, n_cur

    def finish(self, t_end: float) -> int:
        """Ticks the last frame still covers when the input ends at ``t_end`` (its end time)."""
        if self._t0 is None:
            return 0
        last = math.ceil((t_end - self._t0) * self.fps - 1e-6) - 1  # ticks before the end
        n = max(last + 1 - self.next_tick, 0)
        self.next_tick += n
        return n


class _LatestSlot:
    """One-slot hand-over between a producer thread and the consumer: the newest item wins."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._item: tuple[int, np.ndarray] | None = None
        self._dropped = 0
        self._done = False
        self._error: BaseException | None = None

    def put(self, item: tuple[int, np.ndarray]) -> None:
        with self._cond:
            if self._item is not None:
                self._dropped += 1
            self._item = item
            self._cond.notify()

    def finish(self, error: BaseException | None = None) -> None:
        with self._cond:
            self._done, self._error = True, error
            self._cond.notify()

    def take(self) -> tuple[tuple[int, np.ndarray], int] | None:
        """Wait for the newest item: ``(item, stale items dropped before it)``; None at the end."""
        with self._cond:
            while self._item is None and not self._done:
                self._cond.wait()
            if self._item is not None:
                item, dropped = self._item, self._dropped
                self._item, self._dropped = None, 0
                return item, dropped
            if self._error is not None:
                raise self._error
            return None


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
        self._reopen, self._raw = reopen, first
        self._pace, self._reconnect, self._max_frames = pace, reconnect, max_frames
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started = False

    def close(self) -> None:
        """Stop the reader thread and release the input (idempotent)."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout=2.0)
            if thread.is_alive():  # stuck in a blocking read: it closes the input itself
                log.warning("source reader thread did not stop within 2 s; leaving it")
                return
        self._close_raw()

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
            self._close_raw()

    def _live_frames(self) -> Generator[Frame, None, None]:
        slot = _LatestSlot()
        self._thread = threading.Thread(
            target=self._produce, args=(slot,), name="lipx-source", daemon=True
        )
        self._thread.start()
        try:
            while (got := slot.take()) is not None:
                (tick, image), dropped = got
                self.stats.dropped_stale += dropped
                yield Frame(tick, tick / self.fps, image, dropped)
        finally:
            self.close()

    def _produce(self, slot: _LatestSlot) -> None:
        try:
            for item in self._ticks():
                if self._stop.is_set():
                    break
                slot.put(item)
        except BaseException as e:  # handed to the consumer, which re-raises it
            slot.finish(e)
        else:
            slot.finish()
        finally:
            self._close_raw()

    def _ticks(self) -> Iterator[tuple[int, np.ndarray]]:
        """Decoded frames placed on output ticks, paced when asked; reconnects on breaks."""
        resampler = Resampler(self.fps)
        wall0 = time.perf_counter()
        prev: np.ndarray | None = None
        t = 0.0
        for t, image in self._raw_with_reconnect(resampler):
            self.stats.decoded += 1
            n_prev, n_cur = resampler.push(t)
            self.stats.discontinuities = resampler.discontinuities
            if n_prev + n_cur == 0:
                self.stats.resample_dropped += 1
                continue
            self.stats.duplicated += n_prev + n_cur - 1
            first = resampler.next_tick - n_prev - n_cur
            for k in range(n_prev + n_cur):
                if not self._wait_for(first + k, wall0):
                    return
                yield first + k, (prev if k < n_prev and prev is not None else image)
            prev = image
        period = 1 / self.info.native_fps if self.info.native_fps else None
        if prev is None or period is None or self.info.kind in ("webcam", "url"):
            return
        n_end = resampler.finish(t + period)  # the last frame lasts one native period
        self.stats.duplicated += n_end
        for tick in range(resampler.next_tick - n_end, resampler.next_tick):
            if not self._wait_for(tick, wall0):
                return
            yield tick, prev

    def _wait_for(self, tick: int, wall0: float) -> bool:
        """When pacing, sleep until ``tick`` is due; False if the source was closed meanwhile."""
        if self._pace:
            ahead = wall0 + tick / self.fps - time.perf_counter()
            if ahead > 0 and self._stop.wait(ahead):
                return False
        return not self._stop.is_set()

    def _raw_with_reconnect(self, resampler: Resampler) -> Iterator[tuple[float, np.ndarray]]:
        failures = 0
        while True:
            try:
                if self._raw is None:
                    self._raw = self._reopen()
                for item in self._raw:
                    failures = 0
                    yield item
                return
            except _av_errors(InputError) as e:
                error: Exception = e
            self._close_raw()
            if self.info.kind in ("file", "images", "lavfi") or failures >= self._reconnect:
                raise _broken(self.info, self.stats.decoded, error, self._reconnect) from error
            failures += 1
            self.stats.reconnects += 1
            delay = min(0.5 * 2 ** (failures - 1), 8.0)
            log.warning(
                "%s broke (%s); reconnect %d/%d in %.1f s",
                self.info.spec,
                error,
                failures,
                self._reconnect,
                delay,
            )
            if self._stop.wait(delay):
                return
            resampler.rebase()

    def _close_raw(self) -> None:
        raw, self._raw = self._raw, None
        close = getattr(raw, "close", None)
        if close is not None:
            close()


def _av_errors(*extra: type[Exception]) -> tuple[type[Exception], ...]:
    """``extra`` and the exceptions PyAV raises for unreadable or broken input (imported
    lazily)."""
    import av

    # ValueError: PyAV raises UnicodeDecodeError on some corrupt inputs.
    return (*extra, av.error.FFmpegError, OSError, ValueError, EOFError)


def _broken(info: SourceInfo, decoded: int, error: Exception, reconnect: int) -> InputError:
    if isinstance(error, InputError) and info.kind not in ("webcam", "url"):
        return error  # already says what is wrong (a bad image in a folder, ...)
    hint = (
        "the file is truncated or corrupt"
        if info.kind in ("file", "images")
        else f"gave up after {reconnect} reconnect(s); pass a larger reconnect count"
        if reconnect
        else "pass a reconnect count (e.g. --reconnect 3) to retry"
    )
    reason = _reason(error)
    return InputError(f"{info.spec}: stream broke after {decoded} frames ({reason}); {hint}")


# -- opening -----------------------------------------------------------------------------------


def open_source(
    spec: str,
    fps: float = 25.0,
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
    url, fmt, opts = _av_target(spec, kind)
    opts = {**opts, **(options or {})}

    def reopen() -> RawFrames:
        return _AVFrames(_open_container(spec, kind, url, fmt, opts))

    first = _AVFrames(_open_container(spec, kind, url, fmt, opts))
    live = realtime or kind in ("webcam", "url")
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


class _AVFrames:
    """Iterates an open container's first video stream as (seconds, RGB array) pairs."""

    def __init__(self, container: av.container.InputContainer):
        self.container = container
        stream = container.streams.video[0]
        self.stream = stream
        rate = stream.average_rate or stream.guessed_rate
        self.fps = float(rate) if rate else None
        self.width, self.height = stream.codec_context.width, stream.codec_context.height
        self.has_audio = len(container.streams.audio) > 0
        self.duration_s = container.duration / 1e6 if container.duration else None
        self._n = 0

    def __iter__(self) -> Iterator[tuple[float, np.ndarray]]:
        for frame in self.container.decode(self.stream):
            t = frame.time
            if t is None:  # no timestamps: count frames at the declared rate
                t = self._n / (self.fps or 25.0)
            self._n += 1
            yield float(t), frame.to_ndarray(format="rgb24")

    def close(self) -> None:
        self.container.close()


def _av_target(spec: str, kind: str) -> tuple[str, str | None, dict[str, str]]:
    """(url, FFmpeg format or None, options) for a non-image source."""
    if kind == "webcam":
        return _webcam_target(spec.partition(":")[2] or "0")
    if kind == "lavfi":
        return spec[len("lavfi:") :], "lavfi", {}
    return spec, None, {}  # a file or URL


def _webcam_target(device: str) -> tuple[str, str | None, dict[str, str]]:
    if sys.platform.startswith("linux"):
        return (f"/dev/video{device}" if device.isdigit() else device), "v4l2", {}
    if sys.platform == "darwin":
        return f"{device}:none", "avfoundation", {"framerate": "30"}
    if sys.platform == "win32":
        name = device if not device.isdigit() else _dshow_name(int(device))
        return f"video={name}", "dshow", {}
    raise InputError(f"webcams are not supported on {sys.platform}; pass a video file or URL")


def _dshow_name(index: int) -> str:
    """The name of DirectShow video device ``index`` (dshow opens devices by name)."""
    import av

    with av.logging.Capture() as logs:
        try:
            av.open("dummy", format="dshow", options={"list_devices": "true"})
        except av.error.FFmpegError:
            pass  # listing always "fails" after printing the devices
    names = re.findall(r'"([^"]+)"\s*\(video\)', "\n".join(str(m[2]) for m in logs))
    if index >= len(names):
        found = ", ".join(names) or "none"
        raise InputError(
            f"cannot open webcam {index}: no such device (found: {found}); "
            "pass webcam:N with an index from that list, or a video file"
        )
    return names[index]


def _open_container(
    spec: str, kind: str, url: str, fmt: str | None, options: dict[str, str]
) -> av.container.InputContainer:
    """Open ``url`` with PyAV; every failure becomes a one-line ``InputError``."""
    import av

    if kind == "file" and not os.path.exists(url):
        raise InputError(
            f"video file not found: {url}; check the path (or use webcam, a URL or lavfi:<graph>)"
        )
    timeout = URL_TIMEOUT_S if kind == "url" else None
    try:
        container = av.open(url, format=fmt, options=options, timeout=timeout)
    except _av_errors() as e:
        raise _open_error(spec, kind, url, fmt, e) from e
    if not container.streams.video:
        container.close()
        raise InputError(
            f"{spec}: has no video stream (streams: "
            f"{', '.join(s.type for s in container.streams) or 'none'})"
        )
    if kind in ("file", "lavfi"):
        container.streams.video[0].thread_type = "AUTO"
    return container


def _open_error(spec: str, kind: str, url: str, fmt: str | None, e: Exception) -> InputError:
    reason = _reason(e)
    if kind == "webcam":
        reason = "no such device" if reason == "no such device or file" else reason
        return InputError(
            f"cannot open webcam {spec.partition(':')[2] or '0'} ({url}): {reason}; "
            f"{_camera_hint(fmt)}"
        )
    if kind == "url":
        return InputError(
            f"cannot open stream {url}: {reason}; check the URL and that the server is reachable"
        )
    if kind == "lavfi":
        return InputError(
            f"bad lavfi graph {url!r}: {reason}; e.g. lavfi:testsrc=size=256x256:rate=25"
        )
    return InputError(f"cannot read video {url}: {reason} (corrupt or unsupported format)")


def _reason(e: Exception) -> str:
    import av

    if isinstance(e, (FileNotFoundError, av.error.FileNotFoundError)):
        return "no such device or file"
    if isinstance(e, (PermissionError, av.error.PermissionError)):
        return "permission denied"
    if isinstance(e, InputError):
        return str(e)
    strerror = getattr(e, "strerror", None)
    return (strerror or str(e) or type(e).__name__).strip().rstrip(".").lower()


def _camera_hint(fmt: str | None) -> str:
    if fmt == "v4l2":
        found = sorted(glob.glob("/dev/video*"))
        seen = f"found: {', '.join(found)}" if found else "no /dev/video* devices found"
        return (
            f"{seen}; list cameras with `v4l2-ctl --list-devices`, pick one with "
            "webcam:N, or pass a video file"
        )
    if fmt == "avfoundation":
        return (
            'list cameras with `ffmpeg -f avfoundation -list_devices true -i ""` and allow '
            "camera access for the terminal, or pass a video file"
        )
    return (
        "list cameras with `ffmpeg -list_devices true -f dshow -i dummy` and pass "
        "webcam:NAME, or pass a video file"
    )


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
    first = _read_image(files[0])
    height, width = first.shape[:2]

    def reopen() -> RawFrames:
        for i, path in enumerate(files):
            image = first if i == 0 else _read_image(path)
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


def _read_image(path: Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB of one image file."""
    import av

    try:
        with av.open(str(path)) as container:
            frame = next(container.decode(video=0))
            return frame.to_ndarray(format="rgb24")
    except _av_errors(StopIteration) as e:
        raise InputError(f"cannot read image {path}: {_reason(e)} (corrupt or unsupported)") from e
