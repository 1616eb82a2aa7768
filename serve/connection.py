"""One WebSocket connection of ``lipx serve``: one stream, one session.

The event loop receives (:meth:`Connection.receive`): the hello, then frames into the stream's
:class:`~lipx.serve.source.NetworkSource` (bytes only; nothing is decoded on the loop), then
``end``. The session runs on its own thread (:meth:`Connection.run_session`), its engine steps
batched with the other streams' by the model's batcher; what it makes (ready, words, audio,
boxes, stats, end, or an error) is posted back to the loop, where :meth:`Connection.send` writes
it. Network I/O never waits on a model, and a model never waits on a client: a client that
stops reading its messages is dropped once :data:`MAX_UNSENT` of them wait.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from lipx.errors import LipxError
from lipx.runtime.events import AudioChunk, Event, FrameEvent, WordEvent
from lipx.runtime.options import StreamOptions
from lipx.runtime.pipeline import check_stream
from lipx.runtime.session import Session
from lipx.serve.protocol import (
    PROTOCOL,
    Hello,
    ProtocolError,
    audio_message,
    parse_control,
    parse_frame,
    parse_hello,
)
from lipx.serve.socket import Message, Socket
from lipx.serve.source import NetworkSource

if TYPE_CHECKING:
    from lipx.serve.server import Model, Server

log = logging.getLogger("lipx.serve")

SERVER_NAME = f"{socket.gethostname()}:{os.getpid()}"
"""This process, as ``ready`` names it (under Ray: the replica)."""
MAX_UNSENT = 2000
"""Messages that may wait for a client that does not read them before it is dropped."""
ROOM_POLL_S = 0.002
"""How often a recording's receiver looks for room in its stream's queue."""
Outgoing = str | bytes | ProtocolError | None
"""What the session thread posts: a text or binary message, an error, or None (the end)."""


@dataclass
class Ending:
    """How a stream ended, for the log line and the metrics."""

    how: str = "end"
    """``end`` (the client's), ``disconnect``, ``shutdown`` or an error code."""
    reason: str = ""


class Connection:
    """One stream of a client (see the module docstring)."""

    def __init__(self, server: Server, ws: Socket, peer: str, sid: str) -> None:
        self.server, self.ws, self.peer, self.id = server, ws, peer, sid
        self.loop = asyncio.get_running_loop()
        self.out: asyncio.Queue[Outgoing] = asyncio.Queue()
        self.ending = Ending()
        self.source: NetworkSource | None = None
        self.hello: Hello | None = None
        self.session: Session | None = None
        self.cancelled = threading.Event()
        self.started = time.perf_counter()

    # -- the event loop's side ----------------------------------------------------------------
    async def refuse(self, error: ProtocolError) -> None:
        """Tell the client why, and close."""
        self.server.metrics.refused.inc(reason=error.code)
        self.ending = Ending(error.code, error.reason)
        await self._close_with(error)

    def shut_down(self) -> None:
        """The server stops: a stream is flushed and ended (its client gets its last words)."""
        if self.source is None:
            self.loop.create_task(self.refuse(ProtocolError("shutdown",
                                                            "the server is shutting down")))
            return
        self.ending = Ending("shutdown")
        self.source.finish()

    async def serve(self) -> None:
        """The whole stream: hello, session, frames, end; every error told to the client."""
        try:
            model, opts = await self._start()
        except ProtocolError as e:
            await self.refuse(e)
            return
        assert self.source is not None
        thread = threading.Thread(target=self.run_session, args=(model, opts),
                                  name=f"lipx-session-{self.id}", daemon=True)
        thread.start()
        sender = asyncio.create_task(self.send())
        try:
            await self.receive()
        except ProtocolError as e:
            self.ending = Ending(e.code, e.reason)
            self.cancel()
            self.out.put_nowait(e)
        finally:
            self.source.finish()
        await sender
        await asyncio.to_thread(thread.join)

    async def _start(self) -> tuple[Model, StreamOptions]:
        """The hello, checked against the models served; the stream's source and options."""
        server = self.server
        msg = await self._next(server.opts.idle_timeout_s)
        if msg.kind != "text":
            raise ProtocolError("bad_message", 'the first message must be a text "hello"')
        hello = self.hello = parse_hello(msg.data, list(server.models))
        model = server.models[hello.model]
        try:
            options = {"chunk": server.opts.chunk, **hello.options}
            opts = StreamOptions(crop=hello.crop, pipeline=True,
                                 **dataclasses.asdict(model.pipeline.options),
                                 **options)  # type: ignore[arg-type]
            check_stream(model.manifest, opts)
        except LipxError as e:
            raise ProtocolError("bad_options", str(e)) from None
        self.source = NetworkSource(hello, model.manifest.video.fps,
                                    spec=f"ws:{self.peer}/{self.id}")
        return model, opts

    async def _next(self, timeout: float) -> Message:
        try:
            return await self.ws.receive(timeout=timeout)
        except asyncio.TimeoutError:
            raise ProtocolError("idle", f"no message for {timeout:g} s") from None

    async def receive(self) -> None:
        """Frames into the source until ``end``, a disconnect or an error (ProtocolError)."""
        assert self.source is not None and self.hello is not None
        source, live, idle = self.source, self.hello.live, self.server.opts.idle_timeout_s
        metrics = self.server.metrics
        while not self.cancelled.is_set():
            msg = await self._next(idle)
            if msg.kind == "binary":
                t, payload = parse_frame(msg.data)  # type: ignore[arg-type]
                while not live and not source.has_room() and not self.cancelled.is_set():
                    await asyncio.sleep(ROOM_POLL_S)  # a recording: no frame is dropped
                source.put(t, payload)  # type: ignore[arg-type]
                metrics.frames.inc()
            elif msg.kind == "text":
                parse_control(msg.data)  # type: ignore[arg-type]
                return
            elif msg.kind == "error":
                raise ProtocolError("too_big", str(msg.data)[:200])
            else:  # closing or closed: the client went away (or the server ended the stream)
                if self.ending.how == "end":
                    self.ending = Ending("disconnect")
                self.cancel()
                return

    async def send(self) -> None:
        """Write what the session posts until its end (None); an error closes the socket."""
        while (item := await self.out.get()) is not None:
            if isinstance(item, ProtocolError):
                await self._close_with(item)
                continue
            if self.ws.closed:
                continue
            try:
                if isinstance(item, bytes):
                    await self.ws.send_bytes(item)
                else:
                    await self.ws.send_str(item)
            except (ConnectionError, RuntimeError):
                self.cancel()
        if not self.ws.closed:
            await self.ws.close(1001 if self.ending.how == "shutdown" else 1000)

    async def _close_with(self, error: ProtocolError) -> None:
        if self.ws.closed:
            return
        try:
            await self.ws.send_str(error.message())
        except (ConnectionError, RuntimeError):
            pass
        await self.ws.close(error.close_code, error.reason)

    def cancel(self) -> None:
        """Stop the session soon (the client is gone or broke the protocol)."""
        self.cancelled.set()
        if self.source is not None:
            self.source.close()

    # -- the session's thread -----------------------------------------------------------------
    def post(self, item: Outgoing) -> None:
        """Hand a message to the loop (from the session's thread)."""
        if self.out.qsize() > MAX_UNSENT and item is not None:
            if not self.cancelled.is_set():
                self.cancel()
                item = ProtocolError("bad_message", "the client does not read its messages")
            else:
                return
        try:
            self.loop.call_soon_threadsafe(self.out.put_nowait, item)
        except RuntimeError:  # the loop is closed: the server is gone
            self.cancel()

    def run_session(self, model: Model, opts: StreamOptions) -> None:
        """The session: the source's frames through the model; its messages to the loop."""
        assert self.source is not None
        try:
            with model.pipeline.session(self.source, opts, steps=model.batcher) as session:
                self.session = session
                self.post(json.dumps(self._ready(model)))
                self._run(session)
                stats = session.stats()
                self.server.metrics.record_frames(session.timer.samples())
                self.server.metrics.skipped.inc(self.source.skipped)
                end: dict[str, Any] = {"type": "end", "stats": stats.to_dict()}
                if self.ending.how == "shutdown":
                    end["reason"] = "the server is shutting down"
                self.post(json.dumps(end))
        except ProtocolError as e:  # a frame that does not decode
            self.ending = Ending(e.code, e.reason)
            self.post(e)
        except LipxError as e:
            self.ending = Ending("bad_options", str(e))
            self.post(ProtocolError("bad_options", str(e)))
        except Exception as e:  # a bug: the client is told, the log has the traceback
            log.exception("stream %s failed", self.id)
            self.ending = Ending("internal", type(e).__name__)
            self.post(ProtocolError("internal", "the server failed on this stream; its log "
                                                "has the details"))
        finally:
            self.post(None)

    def _run(self, session: Session) -> None:
        assert self.source is not None and self.hello is not None
        every = max(1, round(session.fps))  # a stats message about once a second
        metrics, boxes = self.server.metrics, self.hello.boxes
        frames = 0
        for event in session.events():
            if self.cancelled.is_set():
                session.interrupted = True
                break
            if isinstance(event, FrameEvent):
                frames += 1
                metrics.dropped.inc(event.frame.dropped_before)
                if boxes:
                    self.post(_box(event))
                if frames % every == 0:
                    self.post(json.dumps(self._stats(session)))
            else:
                self.post(self._result(event))

    def _result(self, event: Event) -> str | bytes:
        metrics = self.server.metrics
        wait = getattr(event, "wait_s", None)
        if wait is not None:
            metrics.emission.observe(wait)
        if isinstance(event, AudioChunk):
            metrics.audio.inc(len(event.samples) / event.sample_rate)
            return audio_message(event.start_s, event.emitted_s or 0.0, event.sample_rate,
                                 event.samples)
        assert isinstance(event, WordEvent)
        metrics.words.inc()
        return json.dumps(event.to_dict())

    def _ready(self, model: Model) -> dict[str, Any]:
        m = model.manifest
        return {"type": "ready", "protocol": PROTOCOL, "session": self.id, "model": model.name,
                "task": m.task, "fps": m.video.fps,
                "max_message_bytes": self.server.opts.max_message_bytes,
                "server": SERVER_NAME, "manifest": m.to_dict()}

    def _stats(self, session: Session) -> dict[str, Any]:
        assert self.source is not None
        waits = session.waits[-200:]
        p50, p95 = (np.percentile(waits, [50, 95]).round(3).tolist() if waits
                    else (None, None))
        return {"type": "stats", "frames": session.timer.frames_out,
                "dropped": session.timer.frames_dropped, "skipped": self.source.skipped,
                "queued": self.source.queued(), "emission_p50_s": p50, "emission_p95_s": p95}


def _box(event: FrameEvent) -> str:
    roi = event.roi
    box = None if roi is None or roi.box is None else [round(float(v), 1) for v in roi.box]
    return json.dumps({"type": "box", "t": round(event.frame.pts_s, 3), "box": box,
                       "found": bool(roi is not None and roi.found)})
