"""Cross-stream batching: the engine steps of sessions on many threads, gathered into one call.

    with Batcher(pipeline, max_batch=16, max_wait_ms=2.0) as steps:
        sessions = [pipeline.session(src, opts, steps=steps) for src in sources]
        ...   # each session's events() on its own thread (a server's connections)

A :class:`Batcher` stands between sessions and their :class:`~lipx.runtime.pipeline.Pipeline`
and has the same two steps. A session's call waits while the batcher's worker for that step
gathers what other sessions asked for meanwhile: it takes the first request as soon as it comes,
then up to ``max_wait_ms`` more for others, at most ``max_batch`` in all, and runs them as one
list (the pipeline batches equal shapes into one engine call). Each step (front-end, backend)
has its own worker, so a session's backend window and another's front-end chunk run side by
side, as a pipelined stream's do. Batching changes no result beyond float rounding: each row of a
batched call is its own clip or window. Like the dynamic batchers of Triton and sherpa-onnx's
server (a queue of ready streams, a maximum batch, a maximum wait). Torch-free.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from lipx.errors import InputError

if TYPE_CHECKING:
    from lipx.runtime.pipeline import Pipeline

log = logging.getLogger(__name__)

MAX_BATCH_LIMIT = 256
"""Largest ``max_batch`` a batcher accepts."""
MAX_WORKERS = 64
"""Most calls of one step that may run at once."""
BatchReport = Callable[[str, int, float], None]
"""``on_batch(step, size, seconds)``: told of each call a batcher made (a server's metrics)."""


class Steps(Protocol):
    """What a session needs of the engines: a pipeline, or a batcher in front of one."""

    def frontend(self, clips: Sequence[np.ndarray]) -> list[np.ndarray]: ...

    def backend(self, windows: Sequence[np.ndarray]) -> list[dict[str, np.ndarray]]: ...


class _Step:
    """One step's queue and worker thread."""

    def __init__(self, name: str, run: Callable[[list[Any]], list[Any]], max_batch: int,
                 max_wait_s: float, on_batch: BatchReport | None, workers: int = 1) -> None:
        self.name, self.run, self.on_batch = name, run, on_batch
        self.max_batch, self.max_wait_s = max_batch, max_wait_s
        self.sizes: Counter[int] = Counter()
        """Batch size -> how many calls ran with it."""
        self._queue: deque[tuple[Any, Future[Any]]] = deque()
        self._ready = threading.Condition()
        self._closed = False
        self._gathering = False
        self._threads = [threading.Thread(target=self._loop, name=f"lipx-batch-{name}-{i}",
                                          daemon=True) for i in range(workers)]
        for thread in self._threads:
            thread.start()

    def submit(self, item: Any) -> Future[Any]:
        future: Future[Any] = Future()
        with self._ready:
            if self._closed:
                raise RuntimeError(f"the {self.name} batcher is closed")
            self._queue.append((item, future))
            self._ready.notify_all()
        return future

    def close(self) -> None:
        """Finish the queued work and stop the worker (idempotent)."""
        with self._ready:
            self._closed = True
            self._ready.notify_all()
        for thread in self._threads:
            thread.join()

    def _take(self) -> list[tuple[Any, Future[Any]]]:
        """The next batch: waits for a first request, then up to ``max_wait_s`` for more (one
        worker gathers at a time; the others are running theirs, or wait their turn)."""
        with self._ready:
            self._ready.wait_for(lambda: (self._queue and not self._gathering) or self._closed)
            self._gathering = True
            deadline = time.monotonic() + self.max_wait_s
            while len(self._queue) < self.max_batch and not self._closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._ready.wait(left)
            n = min(len(self._queue), self.max_batch)
            self._gathering = False
            self._ready.notify_all()
            return [self._queue.popleft() for _ in range(n)]

    def _loop(self) -> None:
        while True:
            batch = self._take()
            if not batch:
                return  # closed and drained
            items = [item for item, _ in batch]
            start = time.perf_counter()
            try:
                results = self.run(items)
            except BaseException as e:  # every waiting session gets the error
                for _, future in batch:
                    future.set_exception(e)
                continue
            with self._ready:
                self.sizes[len(batch)] += 1
            if self.on_batch is not None:
                self.on_batch(self.name, len(batch), time.perf_counter() - start)
            for (_, future), result in zip(batch, results, strict=True):
                future.set_result(result)


class Batcher:
    """Gathers the steps of sessions on other threads into batched pipeline calls.

    Args:
        pipeline: the opened package.
        max_batch: most clips or windows in one call.
        max_wait_ms: how long a step waits for other sessions' work after the first request.
        on_batch: told of each call (its step, size and seconds), on the step's worker.
        workers: per step, calls that may run at once (each on its own thread, taking the next
            batch while the others run: on a CPU, single-threaded engine calls side by side use
            the cores without waiting on each other).
    Raises:
        InputError: a size or a wait out of range.
    """

    def __init__(self, pipeline: Pipeline, max_batch: int = 16, max_wait_ms: float = 2.0,
                 on_batch: BatchReport | None = None,
                 workers: dict[str, int] | None = None) -> None:
        if not 1 <= max_batch <= MAX_BATCH_LIMIT:
            raise InputError(f"--max-batch must be in 1..{MAX_BATCH_LIMIT}, got {max_batch}")
        if not 0 <= max_wait_ms <= 1000:
            raise InputError(f"--max-wait-ms must be in 0..1000, got {max_wait_ms}")
        self.pipeline = pipeline
        wait = max_wait_ms / 1e3
        workers = workers or {}
        for name, n in workers.items():
            if name not in ("frontend", "backend") or not 1 <= n <= MAX_WORKERS:
                raise InputError(f"workers: the frontend and backend steps take 1..{MAX_WORKERS}"
                                 f" each, got {name}={n}")
        self._steps = {name: _Step(name, getattr(pipeline, name), max_batch, wait, on_batch,
                                   workers.get(name, 1))
                       for name in ("frontend", "backend")}

    def frontend(self, clips: Sequence[np.ndarray]) -> list[np.ndarray]:
        """The pipeline's front-end step, batched with other sessions' (waits for its turn)."""
        futures = [self._steps["frontend"].submit(c) for c in clips]
        return [f.result() for f in futures]

    def backend(self, windows: Sequence[np.ndarray]) -> list[dict[str, np.ndarray]]:
        """The pipeline's backend step, batched with other sessions' (waits for its turn)."""
        futures = [self._steps["backend"].submit(w) for w in windows]
        return [f.result() for f in futures]

    def batch_sizes(self) -> dict[str, dict[int, int]]:
        """Per step: batch size -> calls made with it."""
        return {name: dict(sorted(step.sizes.items())) for name, step in self._steps.items()}

    def close(self) -> None:
        """Finish the queued work and stop the workers (idempotent)."""
        for step in self._steps.values():
            step.close()

    def __enter__(self) -> Batcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
