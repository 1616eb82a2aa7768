"""What makes a source live: newest-frame hand-off, real-time pacing, reconnects.

**Live sources** (webcams, URLs, and any source with ``realtime=True``) never fall behind: a
background thread (:class:`LiveReader`) decodes and resamples into a one-slot buffer
(:class:`LatestSlot`) where the newest frame replaces an unread one. The consumer therefore
always gets the latest frame, with the count of the stale frames replaced since the previous
one. :class:`Pacer` holds tick ``k`` back until ``k / fps`` seconds after the start, so a file
(or lavfi graph) plays at its own speed as if it came from a camera. :class:`Reconnecting`
reopens a network stream or webcam that broke, with backoff. No decoding here: the items are
whatever the source hands in.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Generator, Iterator
from typing import Generic, TypeVar

import numpy as np

from lipx.errors import InputError
from lipx.runtime.decode import av_errors
from lipx.runtime.resample import RawFrames

log = logging.getLogger(__name__)

T = TypeVar("T")

MAX_BACKOFF_S = 8.0
"""Longest wait between two reconnect attempts (the waits double from 0.5 s)."""


class LatestSlot(Generic[T]):
    """One-slot hand-over between a producer thread and the consumer: the newest item wins."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._item: T | None = None
        self._dropped = 0
        self._done = False
        self._error: BaseException | None = None

    def put(self, item: T) -> None:
        with self._cond:
            if self._item is not None:
                self._dropped += 1
            self._item = item
            self._cond.notify()

    def finish(self, error: BaseException | None = None) -> None:
        with self._cond:
            self._done, self._error = True, error
            self._cond.notify()

    def take(self) -> tuple[T, int] | None:
        """Wait for the newest item: ``(item, stale items dropped before it)``; None at the end."""
        with self._cond:
            while self._item is None and not self._done:
                self._cond.wait()
            if self._item is not None:
                item, dropped = self._item, self._dropped
                self._item, self._dropped = None, 0
                return item, dropped
            if self._error is not None:
                raise self._error
            return None


class LiveReader(Generic[T]):
    """Runs a producer in a background thread and hands over only its newest item.

    Args:
        items: called in the thread; its items go through a :class:`LatestSlot` (an error it
            raises is raised again in the consumer), and it is closed when the thread ends.
        stop: set to end the thread at the producer's next item.
        name: the thread's name.
    """

    def __init__(self, items: Callable[[], Generator[T, None, None]], stop: threading.Event,
                 name: str = "lipx-source") -> None:
        self._items, self._stop, self._name = items, stop, name
        self._thread: threading.Thread | None = None

    def __iter__(self) -> Iterator[tuple[T, int]]:
        """Start the thread; yield ``(item, stale items dropped before it)`` until it ends."""
        slot: LatestSlot[T] = LatestSlot()
        self._thread = threading.Thread(target=self._run, args=(slot,), name=self._name,
                                        daemon=True)
        self._thread.start()
        while (got := slot.take()) is not None:
            yield got

    def join(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the thread to end; False if it still runs."""
        thread, self._thread = self._thread, None
        if thread is None:
            return True
        thread.join(timeout=timeout)
        return not thread.is_alive()

    def _run(self, slot: LatestSlot[T]) -> None:
        items = self._items()
        try:
            for item in items:
                if self._stop.is_set():
                    break
                slot.put(item)
        except BaseException as e:  # handed to the consumer, which re-raises it
            slot.finish(e)
        else:
            slot.finish()
        finally:
            items.close()


class Pacer:
    """Hands tick ``k`` over no earlier than ``k / fps`` seconds after the pacer was made.

    Args:
        fps: the ticks' rate.
        stop: set to end a wait early (the source is being closed).
        enabled: False makes :meth:`wait` only check ``stop``.
    """

    def __init__(self, fps: float, stop: threading.Event, enabled: bool = True) -> None:
        self.fps, self.enabled, self._stop = fps, enabled, stop
        self._start = time.perf_counter()

    def wait(self, tick: int) -> bool:
        """Sleep until ``tick`` is due (when enabled); False if ``stop`` is set."""
        if self.enabled:
            ahead = self._start + tick / self.fps - time.perf_counter()
            if ahead > 0 and self._stop.wait(ahead):
                return False
        return not self._stop.is_set()


class Reconnecting:
    """The raw frames of an input that is reopened when it breaks (webcams, network streams).

    Args:
        reopen: opens the input again and returns its raw frames.
        first: raw frames of the input already opened (None: ``reopen`` is called first).
        attempts: reopen attempts in a row before a break is final (0: never reopen); the
            waits between them double from 0.5 s up to :data:`MAX_BACKOFF_S`.
        stop: set to end a wait early (the source is being closed).
        name: the input, for the warnings.
    """

    def __init__(self, reopen: Callable[[], RawFrames], first: RawFrames | None, attempts: int,
                 stop: threading.Event, name: str) -> None:
        self._reopen, self._raw = reopen, first
        self.attempts, self._stop, self.name = attempts, stop, name

    def frames(self, on_reconnect: Callable[[], None]) -> Iterator[tuple[float, np.ndarray]]:
        """The input's frames, across reopens; ends early if ``stop`` is set during a wait.

        Args:
            on_reconnect: called when the input is about to be reopened (the frames after it
                start a new timeline).
        Raises:
            The input's last error (PyAV's, OSError, InputError ...) once the attempts are
            spent.
        """
        failures = 0
        while True:
            try:
                if self._raw is None:
                    self._raw = self._reopen()
                for item in self._raw:
                    failures = 0
                    yield item
                return
            except av_errors(InputError) as e:
                error: Exception = e
            self.close()
            if failures >= self.attempts:
                raise error
            failures += 1
            on_reconnect()
            delay = min(0.5 * 2 ** (failures - 1), MAX_BACKOFF_S)
            log.warning("%s broke (%s); reconnect %d/%d in %.1f s", self.name, error, failures,
                        self.attempts, delay)
            if self._stop.wait(delay):
                return

    def close(self) -> None:
        """Close the current input (idempotent)."""
        raw, self._raw = self._raw, None
        close = getattr(raw, "close", None)
        if close is not None:
            close()
