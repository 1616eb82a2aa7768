"""A stream's frames as they arrive over the network: a :class:`~lipx.runtime.sources.Source`.

    source = NetworkSource(hello, fps=25.0)
    source.put(t, payload)      # the event loop: each frame message (never blocks)
    source.finish()             # the client's "end" (or its disconnect)
    for frame in source: ...    # the session's thread: decoded, on the model's ticks

The event loop only queues bytes; decoding runs in the session's thread. Frames are placed on
the model's ticks by their capture time (``round((t - t0) * fps)``): a frame on a tick already
taken is skipped, and a jump of several ticks counts the missing ones as dropped, as a live
camera's stale frames are (``Frame.dropped_before``). Each frame keeps when it arrived, so its
results' emission latency includes the time it waited here. At most ``capacity`` frames wait: a live
stream drops the oldest (the newest frames win, as :mod:`lipx.runtime.live` does for a camera);
a recording's sender waits until :meth:`NetworkSource.has_room` (no frame is lost).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterator

from lipx.runtime.sources import Frame, Source, SourceInfo, SourceStats
from lipx.serve.protocol import Hello, decode_image

QUEUE_FRAMES = 16
"""Frames that may wait for the model per stream."""


class NetworkSource(Source):
    """Frames handed in by a connection (see the module docstring).

    Args:
        hello: the client's hello (frame format and size, live or not).
        fps: the model's frame rate.
        spec: how the source is named in logs and stats.
        capacity: frames that may wait.
    """

    def __init__(self, hello: Hello, fps: float, spec: str = "network",
                 capacity: int = QUEUE_FRAMES) -> None:
        self.hello, self.fps, self.capacity = hello, fps, capacity
        self.info = SourceInfo(spec=spec, kind="network", native_fps=hello.fps,
                               width=hello.width or 0, height=hello.height or 0,
                               has_audio=False, live=hello.live)
        self.stats = SourceStats()
        self.skipped = 0
        """Frames on a tick already taken (a client faster than the model)."""
        self._queue: deque[tuple[int, float, bytes]] = deque()
        self._t0: float | None = None
        self._cond = threading.Condition()
        self._done = False
        self._started = False

    def put(self, t: float, payload: bytes) -> None:
        """Queue a frame's bytes (the caller of a recording first waits for room).

        The first frame put is the stream's zero; a later frame's tick is counted from it, so
        frames dropped here (even before the first is read) show as a jump of the ticks.
        """
        with self._cond:
            if self._done:
                return
            if self._t0 is None:
                self._t0 = t
            if len(self._queue) >= self.capacity:  # live: the oldest gives way
                self._queue.popleft()
                self.stats.dropped_stale += 1
            self._queue.append((round((t - self._t0) * self.fps), time.perf_counter(), payload))
            self.stats.decoded += 1
            self._cond.notify()

    def has_room(self) -> bool:
        return len(self._queue) < self.capacity

    def queued(self) -> int:
        return len(self._queue)

    def finish(self) -> None:
        """No more frames: the session finishes those queued, then flushes (idempotent)."""
        with self._cond:
            self._done = True
            self._cond.notify()

    def close(self) -> None:
        """Drop what waits and end the iteration (idempotent)."""
        with self._cond:
            self._queue.clear()
            self._done = True
            self._cond.notify()

    def _take(self) -> tuple[int, float, bytes] | None:
        with self._cond:
            self._cond.wait_for(lambda: self._queue or self._done)
            return self._queue.popleft() if self._queue else None

    def __iter__(self) -> Iterator[Frame]:
        if self._started:
            raise RuntimeError("a network source is read once")
        self._started = True
        last = -1
        while (item := self._take()) is not None:
            tick, arrived, payload = item
            if tick <= last:
                self.skipped += 1
                continue
            image = decode_image(payload, self.hello)
            frame = Frame(tick, tick / self.fps, image, dropped_before=tick - last - 1,
                          arrived=arrived)
            last = tick
            self.stats.emitted += 1
            yield frame
