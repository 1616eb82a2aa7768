"""``lipx stream SOURCE --server ws://HOST:PORT``: a local source read by a remote server.

    stats = stream_remote("ws://gpu-box:8000", "webcam", StreamOptions(), sinks_for, model=None)

The source is opened here (a webcam, a file, a URL: anything ``lipx stream`` reads) at the
model's fps (asked of ``/models`` first), and its frames go to the server: JPEG for a live
source, raw RGB for a recording, which the server then reads without dropping any (``live:
false``), so its words and speech are those of ``lipx stream`` of the same file on the server's
machine. What comes back is written to the same sinks a local stream writes (``sinks_for`` makes
them from the package's manifest, which the server's ``ready`` carries). Frames are read and
encoded on a thread; sending and receiving run on an asyncio loop. Torch-free.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from lipx.errors import InputError
from lipx.package import Manifest
from lipx.runtime.events import AudioChunk, FrameEvent, WordEvent
from lipx.runtime.options import HEAD_FIELDS, StreamOptions
from lipx.runtime.sinks import Sink, SinkGroup
from lipx.runtime.sources import Frame, Source, open_source
from lipx.runtime.stats import StreamStats
from lipx.serve.protocol import (
    AUDIO_MAGIC,
    OPTION_TYPES,
    PROTOCOL,
    encode_jpeg,
    frame_message,
    parse_audio,
    parse_json,
)

SinksFor = Callable[[Manifest], Sequence[Sink]]
"""Makes a stream's sinks once the server said which package it runs."""
JPEG_QUALITY = 95
CONNECT_TIMEOUT_S = 10.0


def server_urls(url: str) -> tuple[str, str]:
    """``ws[s]://`` or ``http[s]://`` HOST:PORT -> (the WebSocket URL, the HTTP base)."""
    parts = urlsplit(url)
    secure = {"ws": False, "http": False, "wss": True, "https": True}.get(parts.scheme)
    if secure is None or not parts.netloc:
        raise InputError(f"--server must be ws://HOST:PORT (or wss://, http://), got {url!r}")
    ws = urlunsplit(("wss" if secure else "ws", parts.netloc, "/ws", "", ""))
    http = urlunsplit(("https" if secure else "http", parts.netloc, "", "", ""))
    return ws, http


def stream_remote(url: str, source: str, opts: StreamOptions, sinks_for: SinksFor,
                  model: str | None = None) -> StreamStats:
    """Stream ``source`` through the server at ``url``; the server's statistics.

    Raises:
        InputError: the server cannot be reached, or refused the stream (its reason).
    """
    try:
        return asyncio.run(_Remote(url, source, opts, sinks_for, model).run())
    except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as e:
        raise InputError(f"server {url}: {str(e) or type(e).__name__}") from None


class _Remote:
    def __init__(self, url: str, source: str, opts: StreamOptions, sinks_for: SinksFor,
                 model: str | None) -> None:
        self.ws_url, self.http_url = server_urls(url)
        self.spec, self.opts, self.sinks_for, self.model = source, opts, sinks_for, model
        self.url = url

    async def run(self) -> StreamStats:
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT_S)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            fps = await self._model_fps(http)
            with open_source(self.spec, fps, realtime=self.opts.realtime,
                             reconnect=self.opts.reconnect,
                             max_frames=self.opts.max_frames) as source:
                frames = iter(source)
                first = next(frames, None)
                if first is None:
                    raise InputError(f"{self.spec}: no frames")
                async with http.ws_connect(self.ws_url, max_msg_size=0) as ws:
                    await ws.send_str(json.dumps(self._hello(source, first)))
                    ready = _check(await ws.receive_json(timeout=60))
                    manifest = Manifest.from_dict(ready["manifest"])
                    sinks = SinkGroup(self.sinks_for(manifest))
                    with sinks:
                        return await self._exchange(ws, sinks, source, first, frames)

    async def _model_fps(self, http: aiohttp.ClientSession) -> float:
        async with http.get(self.http_url + "/models") as response:
            if response.status != 200:
                raise InputError(f"{self.url} answered /models with {response.status}; is it "
                                 f"lipx serve?")
            models = (await response.json())["models"]
        names = [m["name"] for m in models]
        chosen = [m for m in models if m["name"] == (self.model or names[0])]
        if not chosen:
            raise InputError(f"the server has no model {self.model!r}; it serves: "
                             f"{', '.join(names)}")
        if self.model is None and len(models) > 1:
            raise InputError(f"the server serves several models; choose one with --model: "
                             f"{', '.join(names)}")
        self.model = chosen[0]["name"]
        return float(chosen[0]["fps"])

    def _hello(self, source: Source, first: Frame) -> dict[str, Any]:
        live = source.info.live
        h, w = first.image.shape[:2]
        options = {name: getattr(self.opts, name) for name in OPTION_TYPES
                   if name in HEAD_FIELDS or name in ("window", "stride")}
        if self.opts.chunk != 1:  # 1 is the default: the server's choice then
            options["chunk"] = self.opts.chunk
        return {"type": "hello", "protocol": PROTOCOL, "model": self.model,
                "format": "jpeg" if live else "rgb", "width": w, "height": h,
                "crop": self.opts.crop, "live": live,
                "options": {k: v for k, v in options.items() if v is not None}}

    async def _exchange(self, ws: aiohttp.ClientWebSocketResponse, sinks: SinkGroup,
                        source: Source, first: Frame, frames: Iterator[Frame]) -> StreamStats:
        """Frames out (a thread reads and encodes them), results in, until the server's end."""
        loop = asyncio.get_running_loop()
        live = source.info.live
        stop = threading.Event()

        async def send(frame: Frame, data: bytes) -> None:
            sinks.write(FrameEvent(frame))
            await ws.send_bytes(data)

        def read() -> None:
            try:
                for frame in _chain(first, frames):
                    if stop.is_set():
                        return
                    image = encode_jpeg(frame.image, JPEG_QUALITY) if live else (
                        frame.image.tobytes())
                    asyncio.run_coroutine_threadsafe(
                        send(frame, frame_message(frame.pts_s, image)), loop).result()
                asyncio.run_coroutine_threadsafe(ws.send_str('{"type": "end"}'), loop).result()
            except Exception:  # the socket closed: the receiver says why
                stop.set()

        reader = loop.run_in_executor(None, read)
        try:
            return await self._receive(ws, sinks)
        finally:
            stop.set()
            source.close()
            await reader

    async def _receive(self, ws: aiohttp.ClientWebSocketResponse,
                       sinks: SinkGroup) -> StreamStats:
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.BINARY:
                if msg.data[:4] == AUDIO_MAGIC:
                    start, emitted, rate, samples = parse_audio(msg.data)
                    sinks.write(AudioChunk(start, samples, rate, emitted))
                continue
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            event = _check(parse_json(msg.data))
            if event["type"] == "word":
                sinks.write(WordEvent(event["word"], event["start_s"], event["end_s"],
                                      event["confidence"], event.get("emitted_s")))
            elif event["type"] == "end":
                return StreamStats.from_dict(event["stats"])
        raise InputError(f"the server closed the stream ({ws.close_code}) before its end")


def _check(message: Any) -> dict[str, Any]:
    """A server message; InputError with the server's reason for an ``error``."""
    if not isinstance(message, dict):
        raise InputError("the server sent something that is not lipx's protocol")
    if message.get("type") == "error":
        raise InputError(f"the server refused the stream: {message.get('reason')} "
                         f"({message.get('code')})")
    return message


def _chain(first: Frame, rest: Iterator[Frame]) -> Iterator[Frame]:
    yield first
    yield from rest

