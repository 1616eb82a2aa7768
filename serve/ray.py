"""``lipx serve --ray ADDRESS``: the same server as the replicas of a Ray Serve deployment.

    lipx serve pkg --ray auto --replicas 2                  # on a running cluster (ray start)
    lipx serve pkg --ray local --replicas 1 --max-replicas 4 --target-streams 12
    serve run lipx.serve.ray:build packages=pkg replicas=2  # Ray's own CLI, same deployment

Each replica is one process holding a :class:`~lipx.serve.server.Server`: the packages loaded
once, a batcher in front of each, every stream's engine steps batched with the others' of that
replica. Ray's proxy carries HTTP and WebSockets to the replicas through ASGI, so the routes are
Starlette's here (:class:`Replica`) and the stream's logic is the server's own, behind a
:class:`~lipx.serve.socket.Socket`. A WebSocket is one request to Ray: it stays on the replica
that accepted it, and a replica's live streams are its ongoing requests, the number Ray's
autoscaler scales on (``target_ongoing_requests`` = ``--target-streams``). ``/metrics`` and
``/healthz`` answer for the replica the request reached.

When a replica dies its streams' sockets close without an ``end``: the Python client and the
page then reconnect, and the new stream is a new session on a live replica; what the old
session had not yet emitted (the words of the window in flight) is lost.

When ``lipx serve --ray`` stops (SIGINT, SIGTERM) it first tells every replica to end its streams
(a :class:`StopFlag` actor they watch), so each client gets its last results and an ``end``;
then it deletes the deployment. When Ray stops one replica on its own (scaling down) it waits for
that replica's streams, up to ``graceful_shutdown_timeout_s`` (:data:`~lipx.serve.server.SHUTDOWN_S`
+ 5 s), then stops it: the streams still on it are lost, and their clients reconnect to the
others.
"""

import asyncio
import logging
import os
import signal
import socket
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any


def _use_token() -> None:
    """Ray (2.60) turns token authentication on for the clusters ``ray start`` runs when a token
    exists (``~/.ray/auth_token``, ``RAY_AUTH_TOKEN[_PATH]``), but ``ray.init(address=...)``
    then connects without it unless ``RAY_AUTH_MODE=token``, which Ray reads once, when it is
    imported: so set it before (unless the user chose a mode)."""
    if "RAY_AUTH_MODE" in os.environ:
        return
    if (os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH")
            or (Path.home() / ".ray" / "auth_token").is_file()):
        os.environ["RAY_AUTH_MODE"] = "token"


_use_token()

import ray  # noqa: E402
from fastapi import FastAPI, WebSocket  # noqa: E402
from ray import serve  # noqa: E402
from ray.serve import Application  # noqa: E402
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response  # noqa: E402
from starlette.websockets import WebSocketDisconnect, WebSocketState  # noqa: E402

from lipx.errors import InputError  # noqa: E402
from lipx.package import Package  # noqa: E402
from lipx.runtime.options import blas_threads  # noqa: E402
from lipx.serve.metrics import FORMAT_HEADERS  # noqa: E402
from lipx.serve.server import SHUTDOWN_S, STATIC, ServeOptions, Server  # noqa: E402
from lipx.serve.socket import Message, close_reason  # noqa: E402

log = logging.getLogger("lipx.serve")

APP_NAME = "lipx"
NAMESPACE = "lipx"
STOP_FLAG = "lipx-stop"
STOP_POLL_S = 0.5
SERVE_CONTROLLER, SERVE_NAMESPACE = "SERVE_CONTROLLER_ACTOR", "serve"
"""Ray Serve's controller, a named actor: asked where a running Serve's proxy listens."""
HTTP_HEADROOM = 8
"""Requests a replica accepts beyond its streams: the page, /models, /healthz, /metrics."""
MAX_REPLICAS = 1024
AUTOSCALING_PACE = {"look_back_period_s": 10.0, "upscale_delay_s": 10.0,
                    "downscale_delay_s": 300.0}
"""Ray's defaults (30 s, 30 s, 600 s) are paced for short requests; a stream is one request
that lasts minutes, a replica loads in about 10 s, and a scale-down waits for the streams of
the replica it stops (or loses them): so up sooner, down later."""
STATIC_FILES = frozenset(p.name for p in STATIC.iterdir()) if STATIC.is_dir() else frozenset()

api = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)


@dataclass(frozen=True)
class RayOptions:
    """How the deployment runs on Ray (``lipx serve --ray`` options); checked here."""

    address: str = "auto"
    """``auto``: the cluster ``ray start`` runs on this machine; ``local``: start one in this
    process (it ends with it); or a cluster's address (``ray://host:10001``, ``host:6379``)."""
    replicas: int = 1
    """Replicas to start with (and the fewest, when autoscaling)."""
    max_replicas: int | None = None
    """Autoscale up to this many replicas (None: ``replicas``, fixed)."""
    target_streams: int | None = None
    """Live streams per replica the autoscaler aims at (None: three quarters of
    ``--max-streams``)."""
    cpus_per_replica: float = 1.0
    """Ray CPUs each replica reserves; also its front-end workers, unless ``--workers``."""
    gpus_per_replica: float | None = None
    """GPUs each replica reserves (None: one where the cluster has GPUs and the engines are
    not on the CPU, else none). Ray then shows each replica only its own GPU."""

    def __post_init__(self) -> None:
        if not 1 <= self.replicas <= MAX_REPLICAS:
            raise InputError(f"--replicas must be in 1..{MAX_REPLICAS}, got {self.replicas}")
        if self.max_replicas is not None and not (self.replicas <= self.max_replicas
                                                  <= MAX_REPLICAS):
            raise InputError(f"--max-replicas must be in {self.replicas}..{MAX_REPLICAS} "
                             f"(at least --replicas), got {self.max_replicas}")
        if self.target_streams is not None and self.target_streams < 1:
            raise InputError(f"--target-streams must be at least 1, got {self.target_streams}")
        if not 0.1 <= self.cpus_per_replica <= 256:
            raise InputError(f"--cpus-per-replica must be in 0.1..256, "
                             f"got {self.cpus_per_replica:g}")
        if self.gpus_per_replica is not None and not 0 <= self.gpus_per_replica <= 16:
            raise InputError(f"--gpus-per-replica must be in 0..16, "
                             f"got {self.gpus_per_replica:g}")

    def deployment_options(self, opts: ServeOptions, gpus: float) -> dict[str, Any]:
        """``Deployment.options(...)``: replicas or autoscaling, resources, limits."""
        if self.target_streams is not None and self.target_streams > opts.max_streams:
            raise InputError(f"--target-streams ({self.target_streams}) cannot exceed "
                             f"--max-streams ({opts.max_streams})")
        scale: dict[str, Any] = {"num_replicas": self.replicas}
        if self.max_replicas is not None and self.max_replicas > self.replicas:
            target = self.target_streams or max(1, opts.max_streams * 3 // 4)
            scale = {"autoscaling_config": {
                "min_replicas": self.replicas, "initial_replicas": self.replicas,
                "max_replicas": self.max_replicas, "target_ongoing_requests": target,
                **AUTOSCALING_PACE}}
        actor: dict[str, Any] = {"num_cpus": self.cpus_per_replica}
        if gpus:
            actor["num_gpus"] = gpus
        return {**scale, "ray_actor_options": actor,
                "max_ongoing_requests": opts.max_streams + HTTP_HEADROOM,
                "graceful_shutdown_timeout_s": SHUTDOWN_S + 5.0,
                "health_check_period_s": 2.0, "health_check_timeout_s": 30.0}


class StarletteSocket:
    """Starlette's WebSocket (accepted) as a :class:`~lipx.serve.socket.Socket`; messages over
    ``max_bytes`` read as errors, as aiohttp's ``max_msg_size`` makes them."""

    def __init__(self, ws: WebSocket, max_bytes: int) -> None:
        self.ws, self.max_bytes = ws, max_bytes
        self.gone = False

    @property
    def closed(self) -> bool:
        return self.gone or WebSocketState.DISCONNECTED in (self.ws.client_state,
                                                              self.ws.application_state)

    async def receive(self, timeout: float) -> Message:
        if self.closed:
            return Message("closed")
        msg = await asyncio.wait_for(self.ws.receive(), timeout)
        if msg["type"] == "websocket.disconnect":
            self.gone = True
            return Message("closed")
        data = msg.get("bytes")
        if data is None:
            data = msg.get("text") or ""
        if len(data) > self.max_bytes:
            return Message("error", f"a message of {len(data)} bytes (at most "
                                    f"{self.max_bytes})")
        return Message("binary" if isinstance(data, bytes) else "text", data)

    async def send_str(self, text: str) -> None:
        await self._send(self.ws.send_text(text))

    async def send_bytes(self, data: bytes) -> None:
        await self._send(self.ws.send_bytes(data))

    async def _send(self, sending: Any) -> None:
        try:
            await sending
        except (WebSocketDisconnect, RuntimeError, OSError) as e:
            self.gone = True
            raise ConnectionError(str(e) or type(e).__name__) from None

    async def close(self, code: int, reason: str = "") -> None:
        if self.closed:
            return
        self.gone = True
        try:
            await self.ws.close(code, reason=close_reason(reason).decode())
        except (RuntimeError, OSError):
            pass


@ray.remote(num_cpus=0)
class StopFlag:
    """Set once ``lipx serve --ray`` stops; every replica watches it (a broadcast Ray Serve has
    no public call for: a new deployment would start new replicas and wait for the old ones'
    streams to end on their own)."""

    def __init__(self) -> None:
        self.stopping = False

    def set(self) -> None:
        self.stopping = True

    def is_set(self) -> bool:
        return self.stopping


@serve.deployment(name="LipxServer")
@serve.ingress(api)
class Replica:
    """One replica: a :class:`~lipx.serve.server.Server` behind Ray's proxy."""

    def __init__(self, packages: Sequence[str], opts: ServeOptions) -> None:
        logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
        blas_threads(1)  # for the replica's life, as lipx serve: tiny per-frame matrices
        self.server = Server(packages, opts)
        self.watch: asyncio.Task[None] | None = None

    async def watch_for_stop(self) -> None:
        """End this replica's streams once ``lipx serve --ray`` stops (its :class:`StopFlag`,
        asked twice a second; a deployment without one, as ``serve run`` makes, is never
        told)."""
        try:
            flag = ray.get_actor(STOP_FLAG, namespace=NAMESPACE)
        except ValueError:
            return
        while not await flag.is_set.remote():
            await asyncio.sleep(STOP_POLL_S)
        await self.server.drain()

    @api.get("/")
    async def page(self) -> Response:
        return FileResponse(STATIC / "index.html")

    @api.get("/static/{name}")
    async def static(self, name: str) -> Response:
        if name not in STATIC_FILES:
            return PlainTextResponse("no such file\n", status_code=404)
        return FileResponse(STATIC / name)

    @api.get("/models")
    async def models(self) -> Response:
        return JSONResponse(self.server.describe())

    @api.get("/healthz")
    async def healthz(self) -> Response:
        status, text = self.server.health()
        return PlainTextResponse(text, status_code=status)

    @api.get("/metrics")
    async def metrics(self) -> Response:
        return PlainTextResponse(self.server.metrics_page(), headers=FORMAT_HEADERS)

    @api.websocket("/ws")
    async def ws(self, websocket: WebSocket) -> None:
        if self.watch is None:
            self.watch = asyncio.create_task(self.watch_for_stop())
        await websocket.accept()
        peer = websocket.client.host if websocket.client else "?"
        await self.server.stream(StarletteSocket(websocket, self.server.opts.max_message_bytes),
                                 peer)

    async def __del__(self) -> None:
        """Ray stops this replica: its streams end with their last results."""
        await self.server.drain()
        self.server.close()


def package_paths(packages: Sequence[str | Path]) -> list[str]:
    """The packages, each opened here first (a bad one is refused before any replica starts),
    as absolute paths: every node of the cluster must see them there."""
    for path in packages:
        Package.open(path)
    return [str(Path(path).resolve()) for path in packages]


def application(paths: Sequence[str], opts: ServeOptions, ray_opts: RayOptions,
                gpus: float = 0.0) -> Application:
    """The deployment of the packages at ``paths`` (:func:`package_paths`), bound:
    ``serve.run`` starts it."""
    workers = opts.workers or max(1, round(ray_opts.cpus_per_replica))
    replica_opts = replace(opts, workers=workers, certfile=None, keyfile=None)
    deployment = Replica.options(  # type: ignore[attr-defined]
        **ray_opts.deployment_options(opts, gpus))
    return deployment.bind(paths, replica_opts)


def build(args: dict[str, str]) -> Application:
    """``serve run lipx.serve.ray:build packages=a,b [replicas=2] [max_streams=32] ...``:
    every :class:`RayOptions` and :class:`~lipx.serve.server.ServeOptions` field by name."""
    args = dict(args)
    packages = [p for p in args.pop("packages", "").split(",") if p]
    if not packages:
        raise InputError("give packages=PKG[,PKG...]")
    ray_fields = {f.name: f for f in fields(RayOptions)}
    serve_fields = {f.name: f for f in fields(ServeOptions)}
    ray_kw: dict[str, Any] = {}
    serve_kw: dict[str, Any] = {}
    for key, text in args.items():
        if key in ray_fields and key != "address":
            ray_kw[key] = _typed(key, text)
        elif key in serve_fields and key not in ("host", "port", "certfile", "keyfile"):
            serve_kw[key] = _typed(key, text)
        else:
            raise InputError(f"unknown argument {key}= (see lipx.serve.ray.build)")
    opts, ray_opts = ServeOptions(**serve_kw), RayOptions(**ray_kw)
    return application(package_paths(packages), opts, ray_opts,
                       ray_opts.gpus_per_replica or 0.0)


def _typed(key: str, text: str) -> Any:
    """A ``key=value`` argument as its field's type (ints, floats, or text)."""
    if key in ("engine", "device", "precision"):
        return text
    try:
        number = float(text)
    except ValueError:
        raise InputError(f"{key}= must be a number, got {text!r}") from None
    return int(number) if number.is_integer() and key != "cpus_per_replica" else number


def serve_on_ray(packages: Sequence[str | Path], opts: ServeOptions, ray_opts: RayOptions,
                 on_ready: Callable[[str], None] | None = None) -> None:
    """Deploy on the cluster at ``ray_opts.address``; serve until SIGINT or SIGTERM, then
    delete the deployment (its replicas end their streams first). Ray Serve, when started here,
    is shut down too (its proxy's port is free again); the cluster keeps running (a ``local``
    one ends with this process). Where Ray Serve already runs, its proxy's address is used.

    Raises:
        InputError: the cluster cannot be reached, lacks the resources asked for, or the
            deployment fails to start (a replica's error is in Ray's logs).
    """
    local = ray_opts.address == "local"
    paths = package_paths(packages)  # refused before any cluster is reached
    _check_reachable(ray_opts.address)
    try:
        ray.init(address=None if local else ray_opts.address, include_dashboard=False,
                 logging_level=logging.WARNING, log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise InputError(f"cannot reach a Ray cluster at {ray_opts.address!r}: "
                         f"{str(e).splitlines()[0] if str(e) else type(e).__name__} "
                         f"(start one with `ray start --head`, or use --ray local)") from None
    try:
        gpus = _gpus(opts, ray_opts)
        _check_resources(ray_opts, gpus)
        running = _running_http()
        if running is not None:  # Ray Serve runs already: its proxy listens where it listens
            host, port = running
            if opts.port and (host, port) != (opts.host, opts.port):
                raise InputError(f"Ray Serve already runs on this cluster, at {host}:{port}; "
                                 f"serve there (--host {host} --port {port}) or stop it "
                                 f"(`serve shutdown`)")
        else:
            host, port = opts.host, opts.port or _free_port(opts.host)
        http: dict[str, Any] = {"host": host, "port": port}
        if opts.certfile is not None and opts.keyfile is not None:
            opts.ssl_context()  # the files load (or a clear error)
            http.update(ssl_certfile=str(opts.certfile), ssl_keyfile=str(opts.keyfile))
        try:
            flag = StopFlag.options(  # type: ignore[attr-defined]
                name=STOP_FLAG, namespace=NAMESPACE).remote()
        except ValueError:
            raise InputError("another lipx serve --ray already serves on this cluster (one "
                             "deployment per cluster: stop it first)") from None
        serve.start(http_options=http)
        app = application(paths, opts, ray_opts, gpus)
        try:
            serve.run(app, name=APP_NAME, route_prefix="/")
        except RuntimeError as e:
            raise InputError(f"the deployment failed to start: {str(e).splitlines()[0]} "
                             f"(Ray's logs have the replica's error)") from None
        if on_ready is not None:
            scheme = "https" if opts.certfile else "http"
            on_ready(f"{scheme}://{host}:{port}")
        _wait_for_signal()
        log.info("stopping: the replicas end their streams, then the deployment is deleted")
        ray.get(flag.set.remote())  # the replicas end their streams: Ray then waits for them
        serve.delete(APP_NAME)
        if running is None:  # Serve was started here: its proxy goes too (the port is free)
            serve.shutdown()
    finally:
        ray.shutdown()


def _check_reachable(address: str) -> None:
    """A ``host:port`` (GCS) or ``ray://host:port`` address that takes no TCP connection is
    refused at once (``ray.init`` would retry it for minutes)."""
    if address in ("auto", "local"):
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise InputError(f"--ray must be auto, local, HOST:PORT or ray://HOST:PORT, "
                         f"got {address!r}")
    try:
        socket.create_connection((host, int(port)), timeout=5.0).close()
    except OSError as e:
        raise InputError(f"cannot reach a Ray cluster at {address!r}: {e.strerror or e} "
                         f"(start one with `ray start --head`, or use --ray local)") from None


def _running_http() -> tuple[str, int] | None:
    """Where a Ray Serve already running on the cluster listens (None: it does not run)."""
    try:
        controller = ray.get_actor(SERVE_CONTROLLER, namespace=SERVE_NAMESPACE)
    except ValueError:
        return None
    config: Any = ray.get(controller.get_http_config.remote())
    return str(config.host), int(config.port)


def _gpus(opts: ServeOptions, ray_opts: RayOptions) -> float:
    if ray_opts.gpus_per_replica is not None:
        return ray_opts.gpus_per_replica
    has = ray.cluster_resources().get("GPU", 0.0)
    return 1.0 if has and opts.device != "cpu" else 0.0


def _check_resources(ray_opts: RayOptions, gpus: float) -> None:
    """Refuse clearly what Ray would otherwise wait for forever."""
    have = ray.cluster_resources()
    n = ray_opts.replicas
    for name, each in (("CPU", ray_opts.cpus_per_replica), ("GPU", gpus)):
        if each and have.get(name, 0.0) < each * n:
            flag = f"--{name.lower()}s-per-replica"
            raise InputError(f"the cluster has {have.get(name, 0.0):g} {name}s; {n} replicas "
                             f"at {flag} {each:g} need {each * n:g}")


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _wait_for_signal() -> None:
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set())
                for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        while not stop.wait(0.5):
            pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


__all__ = ["RayOptions", "Replica", "StarletteSocket", "application", "build",
           "package_paths", "serve_on_ray"]
