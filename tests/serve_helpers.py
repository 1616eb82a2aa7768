"""A ``lipx serve`` in a subprocess, and a bare protocol client, for the serving tests."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
from cli_process import Lipx

from lipx.runtime.events import AudioChunk, WordEvent
from lipx.runtime.sinks import Sink
from lipx.runtime.stream import StreamOptions, stream
from lipx.serve.client import stream_remote


class Served(Lipx):
    """``lipx serve ARGS --port 0`` running until :meth:`stop`; ``url`` is where it listens (it
    prints the address once its packages are loaded)."""

    def __init__(self, *args: object) -> None:
        super().__init__("serve", "--port", "0", *args)
        self.wait_until(lambda: self._url() is not None)
        self.url = self._url() or ""
        self.ws = self.url.replace("http", "ws", 1) + "/ws"

    def _url(self) -> str | None:
        found = re.search(r" at (https?://[\d.]+:\d+) ", self.stderr)
        return found.group(1) if found else None

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=10) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def metric(self, name: str) -> float:
        """The sum of a metric's samples in /metrics."""
        _, text = self.get("/metrics")
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if re.match(rf"{name}(\{{| )", line))

    def stop(self, signum: int = signal.SIGTERM) -> int:
        """SIGTERM (by default); the exit code."""
        return super().stop(signum)


def hello(**fields: Any) -> str:
    return json.dumps({"type": "hello", "protocol": 1, "format": "jpeg", "crop": "lrw",
                       **fields})


async def exchange(url: str, messages: list[str | bytes], wait_close: bool = True,
                   timeout: float = 30.0) -> tuple[list[Any], int | None]:
    """Send ``messages`` in order, then read until the server closes: (what came, close code)."""
    got: list[Any] = []
    async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:
        for m in messages:
            if ws.closed:
                break
            if isinstance(m, bytes):
                await ws.send_bytes(m)
            else:
                await ws.send_str(m)
        if wait_close:
            async with asyncio.timeout(timeout):
                async for msg in ws:
                    got.append(json.loads(msg.data) if msg.type == aiohttp.WSMsgType.TEXT
                               else msg.data)
        return got, ws.close_code


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def frames_of(video: Path) -> list[Any]:
    """A video's RGB frames at the model's fps."""
    from lipx.runtime.sources import open_source

    with open_source(str(video)) as source:
        return [f.image for f in source]


class Recorder(Sink):
    """Keeps the words and audio a stream makes."""

    def __init__(self) -> None:
        super().__init__()
        self.words: list[tuple[str, float, float]] = []
        self.audio: list[AudioChunk] = []

    def on_word(self, event: WordEvent) -> None:
        self.words.append((event.word, round(event.start_s, 3), round(event.end_s, 3)))

    def on_audio(self, event: AudioChunk) -> None:
        self.audio.append(event)


def stream_alone(package: Path, video: Path, opts: StreamOptions) -> Recorder:
    rec = Recorder()
    stream(package, str(video), opts, [rec])
    return rec


def stream_served(server: Served, video: Path, model: str, opts: StreamOptions,
            delay_s: float = 0.0) -> Recorder:
    time.sleep(delay_s)
    rec = Recorder()
    stream_remote(server.ws, str(video), opts, lambda manifest: [rec], model=model)
    return rec


def in_threads(*calls) -> list:
    results: list = [None] * len(calls)
    errors: list[BaseException] = []

    def run_one(i, fn, args):
        try:
            results[i] = fn(*args)
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=run_one, args=(i, fn, args))
               for i, (fn, args) in enumerate(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not errors, errors
    return results
