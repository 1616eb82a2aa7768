"""The wire protocol of ``lipx serve`` (docs/protocol.md), with no network code.

    hello = parse_hello(text, models=["lipreading-small"])   # ProtocolError for anything else
    t, payload = parse_frame(data)                            # a binary frame message
    image = decode_image(payload, hello)                      # (H, W, 3) uint8 RGB

Parsing is strict and total: every input either parses or raises :class:`ProtocolError` with a
code and a one-line reason (the parser is fuzzed in ``tests/test_serve_protocol.py``). The
encoders are what clients send (:func:`frame_message`) and what the server sends
(:func:`audio_message`). Torch-free; numpy and OpenCV (JPEG) only.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np

PROTOCOL = 1
"""The protocol version this code speaks."""
FRAME_MAGIC = b"LXF1"
AUDIO_MAGIC = b"LXA1"
_FRAME_HEAD = struct.Struct("<4sd")
_AUDIO_HEAD = struct.Struct("<4sddI")
FORMATS = ("jpeg", "gray", "rgb")
CHANNELS = {"gray": 1, "rgb": 3}
MIN_SIDE, MAX_SIDE = 16, 4096
"""Frame sides a client may declare (pixels)."""
OPTION_TYPES: dict[str, type] = {
    "window": int, "stride": int, "chunk": int, "agreement": int, "pad": int,
    "lookahead": int, "crossfade": int, "gl_iters": int,
    "threshold": float, "min_gap": float,
}
"""The stream options a client may set (``lipx stream``'s), with their types."""
CLOSE_CODES = {"full": 1013, "bad_message": 1008, "unknown_model": 1008,
               "unsupported_protocol": 1008, "bad_options": 1008, "too_big": 1009,
               "idle": 1008, "shutdown": 1001, "internal": 1011}
"""Error code -> WebSocket close code."""


class ProtocolError(Exception):
    """A message the protocol does not allow: ``code`` (see ``CLOSE_CODES``) and a reason."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code, self.reason = code, reason

    @property
    def close_code(self) -> int:
        return CLOSE_CODES[self.code]

    def message(self) -> str:
        """The ``error`` message that tells the client."""
        return json.dumps({"type": "error", "code": self.code, "reason": self.reason})


@dataclass(frozen=True)
class Hello:
    """A client's first message, checked."""

    model: str
    format: str
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    crop: str = "auto"
    live: bool = True
    boxes: bool = False
    options: dict[str, int | float] = field(default_factory=dict)

    def raw_bytes(self) -> int | None:
        """Bytes of one raw frame (None for JPEG)."""
        if self.format == "jpeg":
            return None
        assert self.width is not None and self.height is not None
        return self.width * self.height * CHANNELS[self.format]


def parse_json(text: str | bytes) -> dict[str, Any]:
    """A text message as a JSON object with a string ``type``."""
    try:
        msg = json.loads(text)
    except (ValueError, RecursionError) as e:
        raise ProtocolError("bad_message", f"not JSON: {str(e)[:80]}") from None
    if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
        raise ProtocolError("bad_message", 'a text message must be a JSON object with a "type"')
    return msg


def parse_hello(text: str | bytes, models: list[str], crops: tuple[str, ...] = ("lrw", "auto"),
                ) -> Hello:
    """The first message; ``models``: the names served (the first is the default)."""
    msg = parse_json(text)
    if msg["type"] != "hello":
        raise ProtocolError("bad_message", f'the first message must be "hello", got '
                                           f'{msg["type"][:40]!r}')
    version = msg.get("protocol")
    if type(version) is not int or version != PROTOCOL:
        raise ProtocolError("unsupported_protocol",
                            f"protocol {str(version)[:20]!r} is not spoken here; this server "
                            f"speaks protocol {PROTOCOL}")
    model = msg.get("model")
    if model is None:
        if len(models) > 1:
            raise ProtocolError("unknown_model", f'several models are served; say which in '
                                                 f'"model": {", ".join(models)}')
        model = models[0]
    if not isinstance(model, str) or model not in models:
        raise ProtocolError("unknown_model", f"no model {str(model)[:60]!r} is served; "
                                             f"served: {', '.join(models)}")
    fmt = msg.get("format")
    if fmt not in FORMATS:
        raise ProtocolError("bad_message", f'"format" must be one of {", ".join(FORMATS)}, '
                                           f"got {str(fmt)[:20]!r}")
    width, height = msg.get("width"), msg.get("height")
    if fmt != "jpeg" or width is not None or height is not None:
        for name, side in (("width", width), ("height", height)):
            if type(side) is not int or not MIN_SIDE <= side <= MAX_SIDE:
                raise ProtocolError("bad_message", f'"{name}" must be an integer in '
                                                   f"{MIN_SIDE}..{MAX_SIDE} for {fmt} frames")
    fps = msg.get("fps")
    if fps is not None and (not _number(fps) or not 1 <= fps <= 240):
        raise ProtocolError("bad_message", '"fps" must be a number in 1..240')
    crop = msg.get("crop", "auto")
    if crop not in crops:
        raise ProtocolError("bad_message", f'"crop" must be one of {", ".join(crops)}')
    flags = {name: msg.get(name, default) for name, default in (("live", True), ("boxes", False))}
    for name, value in flags.items():
        if not isinstance(value, bool):
            raise ProtocolError("bad_message", f'"{name}" must be true or false')
    return Hello(model=model, format=fmt, width=width, height=height,
                 fps=float(fps) if fps is not None else None, crop=crop, live=flags["live"],
                 boxes=flags["boxes"], options=_options(msg.get("options", {})))


def _number(x: Any) -> bool:
    return type(x) in (int, float) and math.isfinite(x)


def _options(options: Any) -> dict[str, int | float]:
    if not isinstance(options, dict):
        raise ProtocolError("bad_options", '"options" must be an object')
    out: dict[str, int | float] = {}
    for name, value in options.items():
        kind = OPTION_TYPES.get(name)
        if kind is None:
            raise ProtocolError("bad_options", f"unknown option {str(name)[:40]!r}; known: "
                                               f"{', '.join(OPTION_TYPES)}")
        if value is None:
            continue
        if not _number(value) or (kind is int and type(value) is not int):
            raise ProtocolError("bad_options", f"option {name} must be "
                                               f"{'an integer' if kind is int else 'a number'}")
        out[name] = value
    return out


def parse_control(text: str | bytes) -> str:
    """A text message after the hello: only ``end`` is defined; returns its type."""
    msg = parse_json(text)
    if msg["type"] != "end":
        raise ProtocolError("bad_message", f'after "hello" a client sends frames and "end", '
                                           f'not {msg["type"][:40]!r}')
    return "end"


def parse_frame(data: bytes) -> tuple[float, memoryview]:
    """A binary frame message: ``(capture time, image bytes)``."""
    if len(data) <= _FRAME_HEAD.size:
        raise ProtocolError("bad_message", f"a frame message is {_FRAME_HEAD.size} header "
                                           f"bytes and an image; got {len(data)} bytes")
    magic, t = _FRAME_HEAD.unpack_from(data)
    if magic != FRAME_MAGIC:
        raise ProtocolError("bad_message", f"a frame message starts with {FRAME_MAGIC!r}")
    if not math.isfinite(t):
        raise ProtocolError("bad_message", "a frame's capture time must be finite")
    return t, memoryview(data)[_FRAME_HEAD.size:]


def decode_image(payload: bytes | memoryview, hello: Hello) -> np.ndarray:
    """A frame's image as (H, W, 3) uint8 RGB."""
    raw = hello.raw_bytes()
    if raw is None:
        return _decode_jpeg(payload)
    if len(payload) != raw:
        raise ProtocolError("bad_message", f"a {hello.format} frame of {hello.width}x"
                                           f"{hello.height} is {raw} bytes, got {len(payload)}")
    assert hello.width is not None and hello.height is not None
    image = np.frombuffer(payload, np.uint8).reshape(hello.height, hello.width, -1)
    return np.repeat(image, 3, axis=2) if image.shape[2] == 1 else image.copy()


def _decode_jpeg(payload: bytes | memoryview) -> np.ndarray:
    import cv2

    buf = np.frombuffer(payload, np.uint8)
    if buf[:2].tobytes() != b"\xff\xd8":
        raise ProtocolError("bad_message", "a jpeg frame must be a JPEG file (FF D8 ...)")
    try:
        bgr = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    except cv2.error:
        bgr = None
    if bgr is None:
        raise ProtocolError("bad_message", "a jpeg frame could not be decoded")
    h, w = bgr.shape[:2]
    if not (MIN_SIDE <= h <= MAX_SIDE and MIN_SIDE <= w <= MAX_SIDE):
        raise ProtocolError("bad_message", f"a {w}x{h} frame; sides must be in "
                                           f"{MIN_SIDE}..{MAX_SIDE}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def encode_jpeg(rgb: np.ndarray, quality: int = 90) -> bytes:
    """An RGB image as a JPEG file (what clients send)."""
    import cv2

    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                           [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return buf.tobytes()


def frame_message(t: float, image: bytes) -> bytes:
    """A binary frame message: capture time ``t`` and the image's bytes."""
    return _FRAME_HEAD.pack(FRAME_MAGIC, t) + image


def audio_message(start_s: float, emitted_s: float, sample_rate: int,
                  samples: np.ndarray) -> bytes:
    """A binary audio message: float32 samples starting at ``start_s``."""
    return (_AUDIO_HEAD.pack(AUDIO_MAGIC, start_s, emitted_s, sample_rate)
            + np.asarray(samples, "<f4").tobytes())


def parse_audio(data: bytes) -> tuple[float, float, int, np.ndarray]:
    """An audio message: ``(start_s, emitted_s, sample_rate, samples)``."""
    if len(data) < _AUDIO_HEAD.size or (len(data) - _AUDIO_HEAD.size) % 4:
        raise ProtocolError("bad_message", f"an audio message is {_AUDIO_HEAD.size} header "
                                           f"bytes and float32 samples; got {len(data)} bytes")
    magic, start, emitted, rate = _AUDIO_HEAD.unpack_from(data)
    if magic != AUDIO_MAGIC:
        raise ProtocolError("bad_message", f"an audio message starts with {AUDIO_MAGIC!r}")
    return start, emitted, rate, np.frombuffer(data, "<f4", offset=_AUDIO_HEAD.size)
