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
import contextlib
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
RECONNECTS = 5
"""New sessions in a row after lost ones, before the client gives up."""
RECONNECT_WAITS_S = (0.25, 0.5, 1.0, 2.0, 4.0)
"""The wait before each of them (a Ray replica's streams move to the others at once; a
restarted server takes seconds)."""


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
                  model: str | None = None, on_lost: Callable[[str], None] | None = None,
                  on_session: Callable[[dict[str, Any]], None] | None = None) -> StreamStats:
    """Stream ``source`` through the server at ``url``; the server's statistics (of the last
    session, when the stream was lost and reconnected).

    A stream the server loses (its socket closes without an ``end``: the process or Ray replica
    serving it died; or it ends because the server stops while the source still has frames)
    goes on as a new session on a new connection, up to :data:`RECONNECTS` times in a row;
    ``on_lost`` hears why each time. ``on_session`` gets each session's ``ready`` message (its
    ``server`` names the process, under Ray the replica, that runs it). The lost session's
    window in flight is lost: its words, and the frames sent to it that it had not read.

    Raises:
        InputError: the server cannot be reached, refused the stream (its reason), or lost it
            and could not be reached again.
    """
    try:
        return asyncio.run(_Remote(url, source, opts, sinks_for, model, on_lost,
                                   on_session).run())
    except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as e:
        raise InputError(f"server {url}: {str(e) or type(e).__name__}") from None


class Lost(Exception):
    """The server lost a stream that still has frames to send (the reason is the message).

    ``stats``: the session's own, when it ended because the server stops (an ``end`` with a
    reason) rather than vanished; if no new session can start, the stream ends with them.
    """

    def __init__(self, reason: str, stats: StreamStats | None = None) -> None:
        super().__init__(reason)
        self.stats = stats


class _Remote:
    def __init__(self, url: str, source: str, opts: StreamOptions, sinks_for: SinksFor,
                 model: str | None, on_lost: Callable[[str], None] | None,
                 on_session: Callable[[dict[str, Any]], None] | None) -> None:
        self.ws_url, self.http_url = server_urls(url)
        self.spec, self.opts, self.sinks_for, self.model = source, opts, sinks_for, model
        self.url, self.on_lost, self.on_session = url, on_lost, on_session
        self.sinks: SinkGroup | None = None
        self.stack = contextlib.ExitStack()
        """Holds the sinks open across sessions."""
        self.exhausted = False
        """Every frame of the source was read (and sent, or lost with a session)."""
        self.zero = 0.0
        """The source's first frame's time: the stream's zero."""
        self.offset: float | None = None
        """Where the session's clock starts on the stream's (its first frame's time): each
        session counts from its own first frame, so results after a reconnect are moved back
        onto the stream's clock."""

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
                self.zero = first.pts_s
                with self.stack:
                    return await self._sessions(http, source, first, _chain(first, frames))

    async def _sessions(self, http: aiohttp.ClientSession, source: Source, first: Frame,
                        frames: Iterator[Frame]) -> StreamStats:
        """One session per connection, until one ends with the source; a lost one is followed
        by a new one, up to :data:`RECONNECTS` tries in a row (a session that starts resets
        the count)."""
        lost: Lost | None = None
        failed = ""
        tries = 0
        while True:
            if lost is not None:
                if tries == RECONNECTS:
                    raise InputError(f"the server lost the stream ({lost}) and could not be "
                                     f"reached again: {failed}")
                what = ("its results so far came" if lost.stats is not None
                        else "the words of the window in flight are lost")
                self._tell(f"{lost}; {what}; reconnecting as a new session (try {tries + 1} of "
                           f"{RECONNECTS})")
                await asyncio.sleep(RECONNECT_WAITS_S[tries])
                tries += 1
            try:
                async with http.ws_connect(self.ws_url, max_msg_size=0) as ws:
                    await ws.send_str(json.dumps(self._hello(source, first)))
                    ready = _check(await ws.receive_json(timeout=60))
                    tries = 0
                    if self.sinks is None:
                        sinks = SinkGroup(self.sinks_for(Manifest.from_dict(
                            ready["manifest"])))
                        self.stack.enter_context(sinks)
                        self.sinks = sinks
                    if self.on_session is not None:
                        self.on_session(ready)
                    return await self._exchange(ws, self.sinks, source, frames)
            except Lost as e:
                lost = e
            except (aiohttp.ClientError, OSError, asyncio.TimeoutError, InputError) as e:
                if lost is None:
                    raise
                failed = str(e) or type(e).__name__
                if lost.stats is not None:  # the server stopped and no other one took over
                    self._tell(f"the stream ends here: {lost}; then: {failed}")
                    return lost.stats

    @property
    def shift(self) -> float:
        return self.offset or 0.0

    def _tell(self, text: str) -> None:
        if self.on_lost is not None:
            self.on_lost(text)

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
                        source: Source, frames: Iterator[Frame]) -> StreamStats:
        """Frames out (a thread reads and encodes them), results in, until the server's end."""
        loop = asyncio.get_running_loop()
        live = source.info.live
        stop = threading.Event()

        self.offset = None

        async def send(frame: Frame, data: bytes) -> None:
            if self.offset is None:  # the session's clock starts at its first frame
                self.offset = frame.pts_s - self.zero
            await ws.send_bytes(data)
            sinks.write(FrameEvent(frame))

        def read() -> None:
            try:
                for frame in frames:
                    image = encode_jpeg(frame.image, JPEG_QUALITY) if live else (
                        frame.image.tobytes())
                    asyncio.run_coroutine_threadsafe(
                        send(frame, frame_message(frame.pts_s, image)), loop).result()
                    if stop.is_set():
                        return
                self.exhausted = True
                asyncio.run_coroutine_threadsafe(ws.send_str('{"type": "end"}'), loop).result()
            except Exception:  # the socket closed: the receiver says why
                stop.set()

        reader = loop.run_in_executor(None, read)
        going_on = False
        try:
            return await self._receive(ws, sinks)
        except Lost:
            going_on = True  # the next session reads on from the same source
            raise
        finally:
            stop.set()
            if not going_on:
                source.close()  # unblocks a reader waiting on a live source
            await reader

    async def _receive(self, ws: aiohttp.ClientWebSocketResponse,
                       sinks: SinkGroup) -> StreamStats:
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.BINARY:
                if msg.data[:4] == AUDIO_MAGIC:
                    start, emitted, rate, samples = parse_audio(msg.data)
                    sinks.write(AudioChunk(start + self.shift, samples, rate,
                                           emitted + self.shift))
                continue
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            event = _check(parse_json(msg.data))
            if event["type"] == "word":
                said = event.get("emitted_s")
                sinks.write(WordEvent(event["word"], event["start_s"] + self.shift,
                                      event["end_s"] + self.shift, event["confidence"],
                                      None if said is None else said + self.shift))
            elif event["type"] == "end":
                stats = StreamStats.from_dict(event["stats"])
                if event.get("reason") and not self.exhausted:
                    raise Lost(event["reason"], stats)
                return stats
        if self.exhausted:  # nothing is left to send a new session
            raise InputError(f"the server closed the stream ({ws.close_code}) before its end")
        raise Lost(f"the server lost the stream (its socket closed with {ws.close_code} "
                   f"before the end: the process serving it went away)")


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

