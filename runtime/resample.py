"""The source clock: input frame times mapped onto output ticks at the model's frame rate.

**Resampling rule** (every kind of source): output tick ``k`` is at ``k / fps`` seconds after the
first frame and shows the input frame nearest to it in time. It is causal: each input frame is
handled as it arrives; ticks between two input frames go to whichever is nearer (duplicating,
when the source is slower than ``fps``); an input frame whose nearest tick was already emitted is
dropped (the first frame of a tick wins). When a file ends, its last frame also fills the ticks
within its own duration (one native frame period), so N frames at 30 fps (N/30 s) give about
N*25/30 ticks at 25 fps. A timestamp jump backwards or of more than ``MAX_GAP_S`` restarts the
mapping at the next tick. Pure arithmetic: no decoding, no threads.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

MAX_GAP_S = 1.0
"""A timestamp jump larger than this (or backwards) restarts the resampler instead of filling."""

RawFrames = Iterable[tuple[float, np.ndarray]]
"""(time in seconds, (H, W, 3) uint8 RGB image) pairs in decode order."""


class Resampler:
    """Maps input frame times to output ticks at ``fps`` (nearest frame, causal; see module doc)."""

    def __init__(self, fps: float):
        self.fps = fps
        self.next_tick = 0
        self._t0: float | None = None
        self._t_prev: float | None = None
        self.discontinuities = 0

    def rebase(self) -> None:
        """Map the next input frame to the next tick (after a reconnect or a timestamp jump)."""
        self._t0 = None

    def push(self, t: float) -> tuple[int, int]:
        """Place an input frame at time ``t`` (seconds).

        Returns:
            (n_prev, n_cur): the next ``n_prev`` ticks repeat the previous frame, then the next
            ``n_cur`` ticks show this one; ``(0, 0)`` drops it.
        """
        if self._t0 is not None and self._t_prev is not None:
            jump = t - self._t_prev
            if jump < 0 or jump > MAX_GAP_S:
                self.discontinuities += 1
                self._t0 = None
        if self._t0 is None:
            self._t0 = t - self.next_tick / self.fps
            self._t_prev = None
        slot = math.ceil((t - self._t0) * self.fps - 0.5 - 1e-9)  # nearest tick, ties go down
        if slot < self.next_tick:
            return 0, 0
        n_prev = 0
        if self._t_prev is not None:
            mid_tick = ((self._t_prev + t) / 2 - self._t0) * self.fps
            n_prev = min(
                max(math.floor(mid_tick + 1e-9) + 1 - self.next_tick, 0), slot - self.next_tick
            )
        self._t_prev = t
        n_cur = slot + 1 - self.next_tick - n_prev
        self.next_tick = slot + 1
        return n_prev, n_cur

    def finish(self, t_end: float) -> int:
        """Ticks the last frame still covers when the input ends at ``t_end`` (its end time)."""
        if self._t0 is None:
            return 0
        last = math.ceil((t_end - self._t0) * self.fps - 1e-6) - 1  # ticks before the end
        n = max(last + 1 - self.next_tick, 0)
        self.next_tick += n
        return n
