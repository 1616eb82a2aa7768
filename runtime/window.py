"""Sliding windows over a stream: a ring buffer of per-frame items and the window schedule.

The streaming split (``frontend.onnx`` + ``backend.onnx``) lets each frame's features be computed
once and reused by every window that covers it. :class:`CachedWindows` does that:

* The front-end runs on chunks of ``chunk`` new frames plus ``context`` frames on each side
  (the 3D convolution's temporal kernel of 5), so the features of frame ``t`` are ready once frame
  ``t + context`` has arrived. At stream start the chunk is padded with ``context`` zero frames,
  and :meth:`~CachedWindows.flush` appends ``context`` zero frames at the end: exactly the whole
  model's zero padding of the clip (frames are normalised, so zero is the padding value).
  Streaming a clip therefore gives the same per-frame features as the whole model on that clip.
* The backend runs every ``stride`` frames over the last ``window`` features
  (:class:`WindowPlan`): windows end at ``window``, ``window + stride``, ... and, when the stream
  ends, a final window covers a tail that no window reached (shorter than ``window`` when the
  whole stream is).

:class:`FrameWindows` has the same interface and yields windows of *frames* on the same schedule
(for ``--no-cache``: the whole model recomputes every window). Both keep their items in a
:class:`FeatureRing`. Numpy only; the front-end is any callable, so this module knows no engine.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from lipx.errors import InputError
from lipx.tasks import CONTEXT, Schedule

log = logging.getLogger(__name__)

FrontendFn = Callable[[np.ndarray], np.ndarray]
"""(C + 2 context, H, W) float32 frames -> (C, D) float32 features of the C middle frames."""


class FeatureRing:
    """The most recent ``capacity`` items of a stream, addressed by absolute index.

    Args:
        capacity: items kept (at least the window).
        item_shape: shape of one item, e.g. ``(512,)`` for features, ``(112, 112)`` for frames.
        dtype: item dtype.
    """

    def __init__(self, capacity: int, item_shape: tuple[int, ...], dtype: str = "float32"):
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self.item_shape = tuple(item_shape)
        self._data = np.zeros((capacity, *self.item_shape), dtype=dtype)
        self.end = 0
        """Absolute index one past the newest item (items appended so far)."""

    @property
    def start(self) -> int:
        """Absolute index of the oldest item still held."""
        return max(0, self.end - self.capacity)

    def __len__(self) -> int:
        return self.end - self.start

    def append(self, items: np.ndarray) -> None:
        """Append ``items`` (n, *item_shape), indices ``end`` .. ``end + n - 1``."""
        items = np.asarray(items)
        if items.shape[1:] != self.item_shape:
            raise ValueError(f"items of shape {items.shape[1:]}, ring holds {self.item_shape}")
        skipped = max(0, len(items) - self.capacity)  # only the newest `capacity` are kept
        self.end += skipped
        for row in items[skipped:]:
            self._data[self.end % self.capacity] = row
            self.end += 1

    def window(self, start: int, stop: int) -> np.ndarray:
        """A copy of items ``start`` .. ``stop - 1`` as (stop - start, *item_shape).

        Raises:
            IndexError: some of them were already overwritten or have not arrived.
        """
        if not self.start <= start <= stop <= self.end:
            raise IndexError(
                f"items {start}..{stop} requested, ring holds {self.start}..{self.end}")
        return self._data[np.arange(start, stop) % self.capacity]


class WindowPlan:
    """When the backend runs: every ``stride`` items once ``window`` are there, and at the end.

    Args:
        window: items per window (W).
        stride: items between successive windows.
    """

    def __init__(self, window: int, stride: int):
        Schedule.check(window, stride)
        self.window, self.stride = window, stride
        self.last_end: int | None = None
        """End of the last window handed out (None before the first)."""

    def ends(self, old: int, new: int) -> list[int]:
        """Window ends due when the item count grows from ``old`` to ``new``."""
        due = [n for n in range(old + 1, new + 1)
               if n >= self.window and (n - self.window) % self.stride == 0]
        if due:
            self.last_end = due[-1]
        return due

    def final_end(self, count: int) -> int | None:
        """The end of a final window at stream end, or None when the tail is covered."""
        if count == 0 or self.last_end == count:
            return None
        self.last_end = count
        return count

    def bounds(self, end: int) -> tuple[int, int]:
        """(start, end) of the window ending at ``end``."""
        return max(0, end - self.window), end


@dataclass(frozen=True)
class Window:
    """One backend input: items ``start`` .. ``stop - 1`` of the stream.

    Attributes:
        start: first frame index covered.
        stop: one past the last frame index covered.
        data: (stop - start, D) float32 features, or (stop - start, H, W) frames.
        final: the window made at stream end to cover the tail.
    """

    start: int
    stop: int
    data: np.ndarray
    final: bool = False


class CachedWindows:
    """Frames in, cached per-frame features, backend windows out.

    Args:
        frontend: runs the front-end on (C + 2 context, H, W) frames -> (C, D) features.
        window: frames per backend window.
        stride: frames between backend runs.
        feature_dim: D.
        chunk: new frames per front-end call (C; 1 = per frame, larger for throughput).
        context: frames of context each side (2 for a temporal kernel of 5).
    """

    def __init__(self, frontend: FrontendFn, window: int, stride: int, feature_dim: int,
                 chunk: int = 1, context: int = CONTEXT):
        if chunk < 1 or context < 0:
            raise InputError(f"need chunk >= 1 and context >= 0, got {chunk}, {context}")
        self.frontend, self.chunk, self.context = frontend, chunk, context
        self.plan = WindowPlan(window, stride)
        self.features = FeatureRing(window + chunk, (feature_dim,))
        self._frames: deque[np.ndarray] = deque()
        self.frames_in = 0
        self.frontend_calls = 0
        self._flushed = False

    @property
    def lookahead(self) -> int:
        """Frames after a frame that must arrive before its features exist."""
        return self.context

    def push(self, frame: np.ndarray) -> list[Window]:
        """Add one (H, W) float32 normalised frame; returns the windows it completes."""
        if self._flushed:
            raise RuntimeError("push after flush")
        if not self._frames:
            self._frames.extend(np.zeros_like(frame) for _ in range(self.context))
        self._frames.append(frame)
        self.frames_in += 1
        if len(self._frames) < self.chunk + 2 * self.context:
            return []
        return self._run(self.chunk)

    def flush(self) -> list[Window]:
        """End of stream: pad with ``context`` zero frames, finish the features, final window."""
        if self._flushed:
            return []
        self._flushed = True
        out: list[Window] = []
        if self._frames:
            self._frames.extend(np.zeros_like(self._frames[0]) for _ in range(self.context))
            while len(self._frames) > 2 * self.context:
                out += self._run(min(self.chunk, len(self._frames) - 2 * self.context))
        end = self.plan.final_end(self.features.end)
        if end is not None:
            out.append(self._window(end, final=True))
        return out

    def _run(self, n: int) -> list[Window]:
        """Front-end on the next ``n`` frames (plus context); the windows that completes."""
        clip = np.stack([self._frames[i] for i in range(n + 2 * self.context)])
        features = np.asarray(self.frontend(clip), dtype=np.float32)
        if features.shape[0] != n:
            raise ValueError(f"front-end returned {features.shape[0]} features for {n} frames")
        self.frontend_calls += 1
        for _ in range(n):
            self._frames.popleft()
        old = self.features.end
        self.features.append(features)
        return [self._window(e) for e in self.plan.ends(old, self.features.end)]

    def _window(self, end: int, final: bool = False) -> Window:
        start, stop = self.plan.bounds(end)
        return Window(start, stop, self.features.window(start, stop), final)


class FrameWindows:
    """Frames in, windows of frames out, on the same schedule (``--no-cache``).

    Args:
        window: frames per window.
        stride: frames between windows.
        frame_shape: (H, W) of a frame.
    """

    def __init__(self, window: int, stride: int, frame_shape: tuple[int, int]):
        self.plan = WindowPlan(window, stride)
        self.frames = FeatureRing(window, frame_shape)
        self.frames_in = 0
        self._flushed = False

    @property
    def lookahead(self) -> int:
        """The whole model pads each window itself: no frame waits for later ones."""
        return 0

    def push(self, frame: np.ndarray) -> list[Window]:
        """Add one (H, W) float32 normalised frame; returns the windows it completes."""
        if self._flushed:
            raise RuntimeError("push after flush")
        old = self.frames.end
        self.frames.append(frame[None])
        self.frames_in += 1
        return [self._window(e) for e in self.plan.ends(old, self.frames.end)]

    def flush(self) -> list[Window]:
        """End of stream: a final window over the tail, if no window covered it."""
        if self._flushed:
            return []
        self._flushed = True
        end = self.plan.final_end(self.frames.end)
        return [self._window(end, final=True)] if end is not None else []

    def _window(self, end: int, final: bool = False) -> Window:
        start, stop = self.plan.bounds(end)
        return Window(start, stop, self.frames.window(start, stop), final)
