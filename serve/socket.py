"""The few things a :class:`~lipx.serve.connection.Connection` asks of its WebSocket.

A stream's logic is written once against :class:`Socket`; each web framework that carries it
adapts its own WebSocket: aiohttp's for ``lipx serve`` (:class:`AiohttpSocket`, here), Starlette's
for the Ray Serve deployment (:mod:`lipx.serve.ray`), whose proxy speaks ASGI.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

from aiohttp import WSMsgType, web

Kind = Literal["text", "binary", "closed", "error"]


@dataclass(frozen=True)
class Message:
    """One received message: ``text`` (str), ``binary`` (bytes), ``closed`` (the peer went
    away or the socket was closed) or ``error`` (str: why it could not be read)."""

    kind: Kind
    data: str | bytes = ""


class Socket(Protocol):
    """A server-side WebSocket, accepted."""

    @property
    def closed(self) -> bool: ...

    async def receive(self, timeout: float) -> Message:
        """The next message; asyncio.TimeoutError after ``timeout`` seconds without one."""
        ...

    async def send_str(self, text: str) -> None:
        """Raises ConnectionError (or RuntimeError) when the peer is gone."""
        ...

    async def send_bytes(self, data: bytes) -> None: ...

    async def close(self, code: int, reason: str = "") -> None: ...


class AiohttpSocket:
    """aiohttp's WebSocketResponse as a :class:`Socket`."""

    def __init__(self, ws: web.WebSocketResponse) -> None:
        self.ws = ws

    @property
    def closed(self) -> bool:
        return self.ws.closed

    async def receive(self, timeout: float) -> Message:
        msg = await self.ws.receive(timeout=timeout)
        if msg.type == WSMsgType.TEXT:
            return Message("text", msg.data)
        if msg.type == WSMsgType.BINARY:
            return Message("binary", msg.data)
        if msg.type == WSMsgType.ERROR:
            return Message("error", str(msg.data))
        return Message("closed")

    async def send_str(self, text: str) -> None:
        await self.ws.send_str(text)

    async def send_bytes(self, data: bytes) -> None:
        await self.ws.send_bytes(data)

    async def close(self, code: int, reason: str = "") -> None:
        await self.ws.close(code=code, message=close_reason(reason))


def close_reason(reason: str) -> bytes:
    """A close frame's reason: at most 123 bytes of UTF-8 (RFC 6455, 5.5), cut on a character."""
    return reason.encode()[:123].decode(errors="ignore").encode()

