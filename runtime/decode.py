"""Decoding with PyAV: files, network streams, lavfi graphs, webcams on each OS, single images.

Every input is opened here and only here, and every failure to open or read one becomes a
one-line :class:`~lipx.errors.InputError` naming the input and what to try. Webcams are FFmpeg
devices: ``webcam:N`` is ``/dev/videoN`` through v4l2 on Linux, avfoundation device N on macOS,
and DirectShow device N on Windows (looked up by name). PyAV is imported lazily.
"""

from __future__ import annotations

import glob
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from lipx.errors import InputError
from lipx.video import FPS

if TYPE_CHECKING:
    import av

URL_TIMEOUT_S = 10.0
"""Seconds a network stream may stay silent (opening or reading) before it counts as broken."""


class AVFrames:
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
                t = self._n / (self.fps or FPS)
            self._n += 1
            yield float(t), frame.to_ndarray(format="rgb24")

    def close(self) -> None:
        self.container.close()


def open_container(
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
    except av_errors() as e:
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


def av_target(spec: str, kind: str) -> tuple[str, str | None, dict[str, str]]:
    """(url, FFmpeg format or None, options) for a non-image source."""
    if kind == "webcam":
        return _webcam_target(spec.partition(":")[2] or "0")
    if kind == "lavfi":
        return spec[len("lavfi:") :], "lavfi", {}
    return spec, None, {}  # a file or URL


# -- webcams ---------------------------------------------------------------------------------------


def _webcam_target(device: str) -> tuple[str, str | None, dict[str, str]]:
    """(device URL, FFmpeg device format, options) of webcam ``device`` on this OS."""
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


def _camera_hint(fmt: str | None) -> str:
    """How to list the cameras with FFmpeg device format ``fmt``."""
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


# -- errors ----------------------------------------------------------------------------------------


def av_errors(*extra: type[Exception]) -> tuple[type[Exception], ...]:
    """``extra`` and the exceptions PyAV raises for unreadable or broken input (imported
    lazily)."""
    import av

    # ValueError: PyAV raises UnicodeDecodeError on some corrupt inputs.
    return (*extra, av.error.FFmpegError, OSError, ValueError, EOFError)


def error_reason(e: Exception) -> str:
    """What went wrong, in a few lower-case words (for a one-line message)."""
    import av

    if isinstance(e, (FileNotFoundError, av.error.FileNotFoundError)):
        return "no such device or file"
    if isinstance(e, (PermissionError, av.error.PermissionError)):
        return "permission denied"
    if isinstance(e, InputError):
        return str(e)
    strerror = getattr(e, "strerror", None)
    return (strerror or str(e) or type(e).__name__).strip().rstrip(".").lower()


def _open_error(spec: str, kind: str, url: str, fmt: str | None, e: Exception) -> InputError:
    reason = error_reason(e)
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


# -- images ----------------------------------------------------------------------------------------


def read_image(path: Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB of one image file."""
    import av

    try:
        with av.open(str(path)) as container:
            frame = next(container.decode(video=0))
            return frame.to_ndarray(format="rgb24")
    except av_errors(StopIteration) as e:
        raise InputError(
            f"cannot read image {path}: {error_reason(e)} (corrupt or unsupported)"
        ) from e
