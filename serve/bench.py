"""``lipx bench-serve``: how many camera-paced streams one ``lipx serve`` holds.

    report = bench_serve(BenchServeOptions("ws://127.0.0.1:8000", Path("talk.mp4"), ramp=True))
    report["sustained"]      # the most streams with no frame dropped and emission p95 <= 1 s

One process, one asyncio loop. The video is decoded once and each frame JPEG-encoded once
(:func:`load_frames`). For each stream count N, N WebSockets send those frames like cameras:
stream i sends frame k at ``t0_i + k / fps``, with that time as its capture time, looping the
video; the N starts are spread over one frame period. After ``seconds`` each stream sends ``end``
and waits for the server's ``end``, whose statistics give the frames it dropped.

Emission latency is measured on the client's clock: a word's receipt minus the time the frame at
its ``end_s`` was due (``t0_i + end_s``); the server's own ``emitted_s - end_s`` is reported
beside it. Results ending in a stream's last :data:`UNTIMED_TAIL_S` are counted but not timed
(the end-of-stream flush emits them). ``/metrics`` is read before and after each count for the
server's CPU time, memory and mean batch size per engine step (:mod:`lipx.serve.scrape`). The
client times its own sends: frames sent over a frame period late (``client_late_frames``) mean
it measured itself too. The rows and the criteria of a sustained count are
:mod:`lipx.serve.bench_results`'.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import aiohttp

from lipx.errors import InputError, did_you_mean
from lipx.files import atomic_write
from lipx.serve.bench_results import (
    MAX_EMISSION_P95_S,
    ServeRun,
    StreamRecord,
    failure,
    format_run,
    summarize,
    sustained,
)
from lipx.serve.client import JPEG_QUALITY, server_urls
from lipx.serve.protocol import AUDIO_MAGIC, PROTOCOL, encode_jpeg, frame_message, parse_audio
from lipx.serve.scrape import Scrape

log = logging.getLogger(__name__)

DEFAULT_STREAMS = 4
DEFAULT_RAMP = (4, 8, 12, 16, 20, 24, 28, 32, 40)
CONNECT_TIMEOUT_S = 10.0
READY_TIMEOUT_S = 60.0
"""Longest wait for a stream's ``ready`` (a loaded server opens many sessions at once)."""
START_DELAY_S = 0.5
"""From the last ``ready`` to the first frame."""
END_TIMEOUT_S = 60.0
"""Longest wait for the server's ``end`` after the client's."""
UNTIMED_TAIL_S = 1.5
"""Results that end this close to the end of a stream are counted, not timed: they wait for
the end-of-stream flush (which the client's ``end`` starts), not for frames, as a camera that
keeps running never makes them wait."""
SETTLE_TIMEOUT_S = 30.0
"""Longest wait for the previous count's streams to close before the next count starts."""
Progress = Callable[[str], None]
"""Takes one line per stream count."""


@dataclass(frozen=True)
class BenchServeOptions:
    """What ``lipx bench-serve`` runs; checked here (InputError)."""

    url: str
    """The server: ``ws://HOST:PORT`` or ``http://HOST:PORT`` (``wss``/``https`` too)."""
    video: Path
    """The video every stream sends (looped when shorter than ``seconds``)."""
    streams: Sequence[int] = ()
    """Stream counts, in order (empty: :data:`DEFAULT_STREAMS`, or :data:`DEFAULT_RAMP`)."""
    seconds: float = 20.0
    """How long each count's streams send frames."""
    ramp: bool = False
    """Stop after the first count that fails; report the largest sustained one."""
    model: str | None = None
    """A model the server serves (None: its only one)."""
    crop: str = "lrw"
    """``lrw`` (the video is aligned faces) or ``auto`` (the server tracks the face)."""
    fps: float | None = None
    """Frames per second per stream (None: the model's, from ``/models``)."""
    max_p95_s: float = MAX_EMISSION_P95_S
    """The most a sustained count's client-side emission p95 may be (seconds)."""
    json_path: Path | None = None
    """Write the report here (after each count, so a stopped ramp keeps its rows)."""

    def __post_init__(self) -> None:
        urls(self.url)
        if not Path(self.video).is_file():
            raise InputError(f"no such video: {self.video}")
        counts = self.schedule()
        if any(type(n) is not int or n < 1 for n in counts):
            raise InputError(f"--streams must be whole numbers >= 1, got {list(counts)}")
        if self.ramp and list(counts) != sorted(set(counts)):
            raise InputError(f"--ramp needs increasing stream counts, got {list(counts)}")
        if not 1 <= self.seconds <= 3600:
            raise InputError(f"--seconds must be in 1..3600, got {self.seconds}")
        if self.crop not in ("lrw", "auto"):
            raise InputError(f"--crop must be lrw or auto, got {self.crop!r}")
        if self.fps is not None and not 1 <= self.fps <= 240:
            raise InputError(f"--fps must be in 1..240, got {self.fps}")
        if not self.max_p95_s > 0:
            raise InputError(f"the emission p95 bound must be > 0 s, got {self.max_p95_s}")
        if self.json_path is not None and not Path(self.json_path).parent.is_dir():
            raise InputError(f"--json {self.json_path}: its folder does not exist")

    def schedule(self) -> tuple[int, ...]:
        """The stream counts to run, in order."""
        if self.streams:
            return tuple(self.streams)
        return DEFAULT_RAMP if self.ramp else (DEFAULT_STREAMS,)


def bench_serve(opts: BenchServeOptions, progress: Progress | None = None) -> dict[str, Any]:
    """Run ``opts``' stream counts against a server; the report (JSON-ready, see the module).

    Args:
        opts: the server, the video and the counts.
        progress: called with one line per count as it finishes.
    Returns:
        ``{"url", "video", "model", "seconds", "fps", "video_frames", "max_emission_p95_s",
        "runs": [ServeRun as a dict, ...], "sustained": N or None (ramp only)}``.
    Raises:
        InputError: the server cannot be reached, is not ``lipx serve``, or has no such model;
            the video cannot be read.
    """
    return asyncio.run(_bench(opts, progress))


async def _bench(opts: BenchServeOptions, progress: Progress | None) -> dict[str, Any]:
    ws_url, http_url = urls(opts.url)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT_S)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as http:
        model, fps = await _model(http, http_url, opts.model)
        fps = opts.fps or fps
        frames = await asyncio.to_thread(load_frames, opts.video, fps, round(opts.seconds * fps))
        hello = {"type": "hello", "protocol": PROTOCOL, "format": "jpeg", "crop": opts.crop,
                 "live": True, **({"model": opts.model} if opts.model else {}),
                 **({"fps": opts.fps} if opts.fps else {})}
        report: dict[str, Any] = {
            "url": opts.url, "video": str(opts.video), "model": model, "seconds": opts.seconds,
            "fps": fps, "video_frames": len(frames), "max_emission_p95_s": opts.max_p95_s,
            "runs": [], "sustained": None}
        runs: list[ServeRun] = []
        for n in opts.schedule():
            await _settle(http, http_url)
            run = await _run(http, ws_url, http_url, json.dumps(hello), frames, fps, n,
                             opts.seconds)
            run.failed = failure(run, opts.max_p95_s)
            runs.append(run)
            report["runs"] = [asdict(r) for r in runs]
            report["sustained"] = sustained(runs) if opts.ramp else None
            if opts.json_path is not None:
                write_report(report, opts.json_path)
            if progress is not None:
                progress(format_run(run))
            if opts.ramp and run.failed:
                break
    return report


def write_report(report: dict[str, Any], path: Path) -> None:
    """The report as JSON at ``path``, atomically."""
    text = json.dumps(report, indent=1) + "\n"
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def urls(url: str) -> tuple[str, str]:
    """``ws://`` or ``http://`` HOST:PORT -> (the WebSocket URL, the HTTP base)."""
    try:
        return server_urls(url)
    except InputError:
        raise InputError(f"the server's URL must be ws://HOST:PORT or http://HOST:PORT "
                         f"(or wss://, https://), got {url!r}") from None


async def _model(http: aiohttp.ClientSession, base: str, name: str | None) -> tuple[str, float]:
    """The model streamed (its name and fps), from ``/models``."""
    try:
        async with http.get(base + "/models") as response:
            listing = await response.json() if response.status == 200 else {}
    except (aiohttp.ClientError, OSError, asyncio.TimeoutError, ValueError) as e:
        raise InputError(f"cannot reach lipx serve at {base}: {str(e) or type(e).__name__}"
                         ) from None
    models = {m["name"]: m for m in listing.get("models", [])}
    if not models:
        raise InputError(f"{base}/models lists no models (status {response.status}); is it "
                         f"lipx serve?")
    if name is None and len(models) > 1:
        raise InputError(f"the server serves several models; choose one with --model: "
                         f"{', '.join(models)}")
    chosen = models.get(name or next(iter(models), ""))
    if chosen is None:
        raise InputError(f"the server has no model {name!r}{did_you_mean(name or '', models)}")
    return chosen["name"], float(chosen["fps"])


def load_frames(video: Path, fps: float, max_frames: int) -> list[bytes]:
    """The video's first ``max_frames`` frames on the ``fps`` clock, each a JPEG file."""
    from lipx.runtime.sources import open_source

    with open_source(str(video), fps, max_frames=max_frames) as source:
        frames = [encode_jpeg(frame.image, JPEG_QUALITY) for frame in source]
    if not frames:
        raise InputError(f"{video}: no frames")
    return frames


async def _run(http: aiohttp.ClientSession, ws_url: str, http_url: str, hello: str,
               frames: list[bytes], fps: float, n: int, seconds: float) -> ServeRun:
    """``n`` streams for ``seconds``: open them all, start them together, end them all."""
    before = await scrape(http, http_url)
    started = time.perf_counter()
    streams = [StreamRecord() for _ in range(n)]
    async with AsyncExitStack() as stack:
        sockets = await asyncio.gather(*(_open(http, stack, ws_url, hello, s) for s in streams))
        start = asyncio.get_running_loop().time() + START_DELAY_S
        count = max(1, round(seconds * fps))
        await asyncio.gather(*(_drive(ws, s, frames, fps, start + i / (n * fps), count)
                               for i, (ws, s) in enumerate(zip(sockets, streams))
                               if ws is not None))
    wall = time.perf_counter() - started
    return summarize(n, streams, before, await scrape(http, http_url), wall)


async def _open(http: aiohttp.ClientSession, stack: AsyncExitStack, url: str, hello: str,
                stream: StreamRecord) -> aiohttp.ClientWebSocketResponse | None:
    """A stream's socket once the server said ``ready`` (None: refused, the code kept)."""
    try:
        ws = await stack.enter_async_context(http.ws_connect(url, max_msg_size=0))
        await ws.send_str(hello)
        msg = await ws.receive(timeout=READY_TIMEOUT_S)
    except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as e:
        stream.error = f"connect ({type(e).__name__})"
        return None
    reply = json.loads(msg.data) if msg.type == aiohttp.WSMsgType.TEXT else {}
    stream.ready = reply.get("type") == "ready"
    if not stream.ready:
        stream.error = str(reply.get("code") or f"closed ({ws.close_code})")
        return None
    return ws


async def _drive(ws: aiohttp.ClientWebSocketResponse, stream: StreamRecord, frames: list[bytes],
                 fps: float, t0: float, count: int) -> None:
    """Send ``count`` frames from ``t0``, then ``end``; receive until the server's end."""
    stream.t0 = t0
    stream.timed_until = count / fps - UNTIMED_TAIL_S
    receiver = asyncio.create_task(_receive(ws, stream))
    loop = asyncio.get_running_loop()
    try:
        for k in range(count):
            due = t0 + k / fps
            if (ahead := due - loop.time()) > 0:
                await asyncio.sleep(ahead)
            late = loop.time() - due
            stream.late_max_s = max(stream.late_max_s, late)
            stream.late += int(late > 1 / fps)
            await ws.send_bytes(frame_message(due, frames[k % len(frames)]))
            stream.sent += 1
        await ws.send_str(json.dumps({"type": "end"}))
    except (aiohttp.ClientError, ConnectionError):
        pass  # the server closed the stream; the receiver has its reason
    try:
        await asyncio.wait_for(receiver, END_TIMEOUT_S)
    except asyncio.TimeoutError:
        stream.error = stream.error or "no end"


async def _receive(ws: aiohttp.ClientWebSocketResponse, stream: StreamRecord) -> None:
    """Results until the server's ``end`` (or an ``error``, or a close)."""
    loop = asyncio.get_running_loop()
    async for msg in ws:
        now = loop.time()
        if msg.type == aiohttp.WSMsgType.BINARY:
            if msg.data[:4] == AUDIO_MAGIC:
                start, emitted, rate, samples = parse_audio(msg.data)
                stream.audio_s += len(samples) / rate
                if start <= stream.timed_until:
                    stream.waits.append(now - (stream.t0 + start))
                    stream.server_waits += [emitted - start] if emitted else []
            continue
        if msg.type != aiohttp.WSMsgType.TEXT:
            break
        event = json.loads(msg.data)
        kind = event.get("type")
        if kind == "word":
            stream.words += 1
            if event["end_s"] > stream.timed_until:
                continue
            stream.waits.append(now - (stream.t0 + event["end_s"]))
            if event.get("emitted_s") is not None:
                stream.server_waits.append(event["emitted_s"] - event["end_s"])
        elif kind == "end":
            stream.end = event.get("stats") or {}
            return
        elif kind == "error":
            stream.error = str(event.get("code"))
            return
    stream.error = stream.error or f"closed ({ws.close_code}) before its end"


async def scrape(http: aiohttp.ClientSession, base: str) -> Scrape:
    """``GET /metrics`` (an empty page when it fails: the metrics are extras)."""
    try:
        async with http.get(base + "/metrics") as response:
            if response.status == 200:
                return Scrape.parse(await response.text())
            log.warning("%s/metrics answered %d", base, response.status)
    except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as e:
        log.warning("%s/metrics: %s", base, str(e) or type(e).__name__)
    return Scrape()


async def _settle(http: aiohttp.ClientSession, base: str) -> None:
    """Wait until the server has no live stream (the previous count's have closed)."""
    deadline, active = time.monotonic() + SETTLE_TIMEOUT_S, None
    while time.monotonic() < deadline:
        active = (await scrape(http, base)).total("lipx_streams_active")
        if not active:
            return
        await asyncio.sleep(0.2)
    log.warning("%s streams are still live on the server", active)
