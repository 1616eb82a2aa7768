"""An aiohttp application served in a thread, for the tests' stand-in servers."""

from __future__ import annotations

import asyncio
import threading

from aiohttp import web


class BackgroundApp:
    """``routes`` served on 127.0.0.1 (a free port) by an event loop of its own thread, until
    :meth:`stop`. ``port`` and ``url`` say where."""

    def __init__(self, routes: list[web.RouteDef], client_max_size: int = 1 << 20) -> None:
        self.routes, self.client_max_size = routes, client_max_size
        self.loop = asyncio.new_event_loop()
        self.started = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        assert self.started.wait(10)
        self.url = f"http://127.0.0.1:{self.port}"

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        app = web.Application(client_max_size=self.client_max_size)
        app.add_routes(self.routes)
        self.runner = web.AppRunner(app)
        self.loop.run_until_complete(self.runner.setup())
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        self.loop.run_until_complete(site.start())
        self.port = self.runner.addresses[0][1]
        self.started.set()
        self.loop.run_forever()

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
