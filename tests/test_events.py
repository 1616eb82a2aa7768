"""Stream events: words and audio put themselves back on the source's clock after drops."""

from __future__ import annotations

import numpy as np
import pytest

from lipx.runtime.events import AudioChunk, WordEvent

FPS = 25


def offset_after_drop(t: float, end: bool) -> float:
    """5 frames dropped after frame 20: positions from frame 21 on are 0.2 s later."""
    frame = int(t * FPS - (1 - 1e-6 if end else -1e-6))
    return 5 / FPS if frame >= 21 else 0.0


def test_a_word_moves_with_its_start_and_end():
    before = WordEvent("BIN", 10 / FPS, 21 / FPS, 0.9)  # ends with frame 20: not moved
    assert before.retime(offset_after_drop, FPS) == [before]
    (across,) = WordEvent("BIN", 15 / FPS, 30 / FPS, 0.9).retime(offset_after_drop, FPS)
    assert (across.start_s, across.end_s) == pytest.approx((15 / FPS, 35 / FPS))
    assert across.word == "BIN" and across.confidence == 0.9


def test_audio_is_cut_where_the_clock_jumps():
    rate, per_frame = 16000, 640
    chunk = AudioChunk(18 / FPS, np.arange(6 * per_frame, dtype=np.float32), rate)  # 18-23
    first, second = chunk.retime(offset_after_drop, FPS)
    assert (first.start_s, first.end_s) == pytest.approx((18 / FPS, 21 / FPS))
    assert (second.start_s, second.end_s) == pytest.approx((26 / FPS, 29 / FPS))
    np.testing.assert_array_equal(np.concatenate([first.samples, second.samples]),
                                  chunk.samples)
    (same,) = chunk.retime(lambda t, end: 0.0, FPS)  # no drop: one piece, where it was
    assert same.start_s == chunk.start_s and np.array_equal(same.samples, chunk.samples)
