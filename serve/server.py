"""``lipx serve``: many live streams from packages loaded once, batched across streams.

    server = Server(["pkg"], ServeOptions(port=8000, max_batch=16))
    asyncio.run(server.serve_forever())          # until SIGINT/SIGTERM; then a graceful stop

Each package is a :class:`~lipx.runtime.pipeline.Pipeline`, opened once, with a
:class:`~lipx.runtime.batcher.Batcher` in front of it: every stream's front-end chunks and due
windows are gathered into one engine call per step (up to ``max_batch``, waiting at most
``max_wait_ms``), on the batcher's threads, off the event loop. Each WebSocket is a
:class:`~lipx.serve.connection.Connection` with its own session. HTTP: the page (``/``),
``/models``, ``/healthz``, ``/metrics`` (Prometheus). aiohttp: a mature asyncio server whose
WebSocket, static files and HTTP routes are one dependency (Starlette needs uvicorn and more to
do the same), with a client the Python client and ``lipx bench-serve`` share.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import ssl
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from lipx.errors import InputError
from lipx.package import Manifest, Package
from lipx.runtime.batcher import MAX_BATCH_LIMIT, MAX_WORKERS, Batcher
from lipx.runtime.options import EngineOptions
from lipx.runtime.pipeline import Pipeline
from lipx.serve.connection import Connection
from lipx.serve.metrics import FORMAT_HEADERS, Metrics
from lipx.serve.protocol import PROTOCOL, ProtocolError
from lipx.serve.socket import AiohttpSocket, Socket
from lipx.tasks import MAX_FRAMES

log = logging.getLogger("lipx.serve")

STATIC = Path(__file__).parent / "static"
"""The page and its script."""
SHUTDOWN_S = 30.0
"""Longest wait for the streams to end at a graceful stop."""
MAX_STREAMS_LIMIT = 4096


@dataclass(frozen=True)
class ServeOptions:
    """How ``lipx serve`` runs (the command's options); checked here."""

    host: str = "127.0.0.1"
    port: int = 8000
    """0: any free port (the address is printed)."""
    engine: str = "onnx"
    device: str | None = None
    precision: str | None = None
    threads: int | None = None
    """onnxruntime intra-op threads per call (None: the pipeline's default, 1 on the CPU: the
    front-end calls run side by side, a core each; more threads per call wait on each other
    while the sessions' threads take their cores)."""
    chunk: int = 2
    """New frames per front-end call for streams that do not set their own: a stream then adds
    two frames to each batched call, so a call may last two frame periods (chosen on a
    validation stream: 1, 2 and 4 all held 20 streams; 2 waits less than 4 and drops far fewer
    frames than 1 beyond that; benchmarks/results/serve-cpu-2026-12-07)."""
    workers: int | None = None
    """Front-end calls that may run at once (None: one per core on the CPU, else 1); the
    backend's calls are cheaper and run one at a time."""
    max_streams: int = 32
    max_batch: int = 16
    max_wait_ms: float = 2.0
    idle_timeout_s: float = 10.0
    max_message_bytes: int = 4 << 20
    certfile: Path | None = None
    keyfile: Path | None = None
    triton: str | None = None
    """A Triton server that makes the engine calls (see ``EngineOptions.triton``)."""

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise InputError(f"--port must be in 0..65535, got {self.port}")
        if not 1 <= self.max_streams <= MAX_STREAMS_LIMIT:
            raise InputError(f"--max-streams must be in 1..{MAX_STREAMS_LIMIT}, "
                             f"got {self.max_streams}")
        if not 1 <= self.chunk <= MAX_FRAMES:
            raise InputError(f"--chunk must be in 1..{MAX_FRAMES}, got {self.chunk}")
        if self.workers is not None and not 1 <= self.workers <= MAX_WORKERS:
            raise InputError(f"--workers must be in 1..{MAX_WORKERS}, got {self.workers}")
        if not 1 <= self.max_batch <= MAX_BATCH_LIMIT:
            raise InputError(f"--max-batch must be in 1..{MAX_BATCH_LIMIT}, got {self.max_batch}")
        if not 0.1 <= self.idle_timeout_s <= 3600:
            raise InputError(f"--idle-timeout must be in 0.1..3600 s, got {self.idle_timeout_s}")
        if not 1024 <= self.max_message_bytes <= 1 << 30:
            raise InputError(f"--max-message-bytes must be in 1024..{1 << 30}, "
                             f"got {self.max_message_bytes}")
        if (self.certfile is None) != (self.keyfile is None):
            raise InputError("--certfile and --keyfile go together")
        for path in (self.certfile, self.keyfile):
            if path is not None and not path.is_file():
                raise InputError(f"no such file: {path}")

    def engine_options(self) -> EngineOptions:
        """The pipelines' engines (threads: the pipeline's default, 1 on the CPU)."""
        return EngineOptions(engine=self.engine, device=self.device, precision=self.precision,
                             threads=self.threads, triton=self.triton)

    def step_workers(self, device: str) -> dict[str, int]:
        """Calls of each step that may run at once on a pipeline's (resolved) ``device``."""
        frontend = self.workers or ((os.cpu_count() or 1) if device == "cpu" else 1)
        return {"frontend": frontend, "backend": 1}

    def ssl_context(self) -> ssl.SSLContext | None:
        if self.certfile is None or self.keyfile is None:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            context.load_cert_chain(self.certfile, self.keyfile)
        except (ssl.SSLError, OSError) as e:
            raise InputError(f"cannot load --certfile/--keyfile: {e}") from None
        return context


@dataclass
class Model:
    """A served package: its pipeline, loaded once, and the batcher in front of it."""

    name: str
    pipeline: Pipeline
    batcher: Batcher

    @property
    def manifest(self) -> Manifest:
        return self.pipeline.manifest

    def describe(self, default: bool) -> dict[str, Any]:
        m = self.manifest
        return {"name": self.name, "task": m.task, "fps": m.video.fps, "size": m.video.size,
                "default": default}


class Server:
    """The packages, loaded; the HTTP and WebSocket routes; a graceful stop.

    Args:
        packages: model packages (``lipx export``); each is served under its model name.
        opts: the server's options.
    Raises:
        LipxError: a package that cannot be opened, or two of the same name.
    """

    def __init__(self, packages: Sequence[str | Path], opts: ServeOptions) -> None:
        if not packages:
            raise InputError("give at least one model package to serve")
        self.opts = opts
        self.metrics = Metrics()
        self.models: dict[str, Model] = {}
        self.connections: set[Connection] = set()
        self.draining = False
        self._tasks: set[asyncio.Task[None]] = set()
        try:
            for path in packages:
                self._load(path)
        except BaseException:
            self.close()
            raise

    def _load(self, path: str | Path) -> None:
        package = Package.open(path)
        name = package.manifest.model_name
        if name in self.models:
            raise InputError(f"two packages are named {name!r} ({path}); serve one of them")
        pipeline = Pipeline(package, self.opts.engine_options())
        batcher = Batcher(pipeline, self.opts.max_batch, self.opts.max_wait_ms,
                          on_batch=self.metrics.on_batch,
                          workers=self.opts.step_workers(pipeline.device))
        self.models[name] = Model(name, pipeline, batcher)
        log.info("loaded %s (%s) from %s", name, package.manifest.task, path)

    def close(self) -> None:
        """Stop the batchers and close the engines (idempotent)."""
        for model in self.models.values():
            model.batcher.close()
            model.pipeline.close()

    @property
    def active(self) -> int:
        return len(self.connections)

    # -- HTTP ---------------------------------------------------------------------------------
    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.opts.max_message_bytes)
        app.add_routes([web.get("/", self._page), web.get("/ws", self._ws),
                        web.get("/models", self._models), web.get("/healthz", self._health),
                        web.get("/metrics", self._metrics)])
        if STATIC.is_dir():
            app.router.add_static("/static", STATIC)
        return app

    async def _page(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC / "index.html")

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response(self.describe())

    async def _health(self, request: web.Request) -> web.Response:
        status, text = self.health()
        return web.Response(status=status, text=text)

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(text=self.metrics_page(), content_type="text/plain",
                            charset="utf-8", headers=FORMAT_HEADERS)

    def describe(self) -> dict[str, Any]:
        """``/models``: the protocol and the models served (the first is the default)."""
        models = [m.describe(i == 0) for i, m in enumerate(self.models.values())]
        return {"protocol": PROTOCOL, "models": models}

    def health(self) -> tuple[int, str]:
        """``/healthz``: 200 while serving, 503 once stopping."""
        return (503, "shutting down\n") if self.draining else (200, "ok\n")

    def metrics_page(self) -> str:
        """``/metrics``: the Prometheus text page."""
        self.metrics.streams_active.set(self.active)
        return self.metrics.render()

    async def _ws(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=self.opts.max_message_bytes)
        await ws.prepare(request)
        await self.stream(AiohttpSocket(ws), request.remote or "?")
        return ws

    async def stream(self, socket: Socket, peer: str) -> None:
        """One accepted WebSocket's stream, start to end (refused when full or stopping)."""
        conn = Connection(self, socket, peer, uuid.uuid4().hex[:8])
        if self.draining:
            await conn.refuse(ProtocolError("shutdown", "the server is shutting down"))
        elif self.active >= self.opts.max_streams:
            await conn.refuse(ProtocolError("full", f"the server is full "
                                                    f"({self.opts.max_streams} streams); try "
                                                    f"again later"))
        else:
            await self._serve(conn)
        _log_line(conn)

    async def _serve(self, conn: Connection) -> None:
        self.connections.add(conn)
        self.metrics.streams.inc()
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await conn.serve()
        finally:
            self.connections.discard(conn)
            self._tasks.discard(task)

    # -- running ------------------------------------------------------------------------------
    async def serve_forever(self, on_ready: Callable[[str], None] | None = None) -> None:
        """Serve until SIGINT or SIGTERM, then stop gracefully: no new streams, every stream
        flushed and ended with its last results, the engines closed."""
        runner = web.AppRunner(self.app(), access_log=None, handle_signals=False,
                               shutdown_timeout=2.0)
        await runner.setup()
        site = web.TCPSite(runner, self.opts.host, self.opts.port,
                           ssl_context=self.opts.ssl_context())
        try:
            await site.start()
        except OSError as e:
            await runner.cleanup()
            raise InputError(f"cannot listen on {self.opts.host}:{self.opts.port}: "
                             f"{e.strerror or e}") from None
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        if on_ready is not None:
            on_ready(self.url(site))
        try:
            await stop.wait()
            log.info("stopping: ending %d streams", self.active)
            await self.drain()
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
            await runner.cleanup()
            self.close()

    async def drain(self) -> None:
        """Refuse new streams and end the live ones, each with its final results."""
        self.draining = True
        for conn in list(self.connections):
            conn.shut_down()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=SHUTDOWN_S)

    def url(self, site: web.TCPSite) -> str:
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        port = sockets[0].getsockname()[1] if sockets else self.opts.port
        scheme = "https" if self.opts.certfile else "http"
        return f"{scheme}://{self.opts.host}:{port}"


def _log_line(conn: Connection) -> None:
    """One line per connection."""
    seconds = time.perf_counter() - conn.started
    session = conn.session
    made = ""
    if session is not None:
        t = session.timer
        made = (f" frames {t.frames_out} dropped {t.frames_dropped} words {session.head.words}"
                f" audio {session.head.audio_s:.1f}s")
    model = conn.hello.model if conn.hello else "-"
    reason = f" ({conn.ending.reason})" if conn.ending.reason else ""
    log.info("stream %s %s model %s%s %.1fs %s%s", conn.id, conn.peer, model, made, seconds,
             conn.ending.how, reason)
