"""The feature ring and the window schedule: cached features equal the whole clip's, windows come
when their frames (plus the front-end's look-ahead) have arrived, and the tail is covered."""

from __future__ import annotations

import numpy as np
import pytest

from lipx.errors import InputError
from lipx.runtime.window import CachedWindows, FeatureRing, FrameWindows, WindowPlan

H = W = 4
CONTEXT = 2


def frames(n: int) -> list[np.ndarray]:
    """Frame t is constant t + 1 (so zero padding is distinguishable from every frame)."""
    return [np.full((H, W), t + 1.0, np.float32) for t in range(n)]


def toy_frontend(clip: np.ndarray) -> np.ndarray:
    """(C + 4, H, W) -> (C, 5): each output frame's 5-frame neighbourhood, like a kernel-5 conv."""
    values = clip.mean(axis=(1, 2))
    return np.stack([values[i:i + 5] for i in range(len(values) - 4)]).astype(np.float32)


def whole_clip_features(n: int) -> np.ndarray:
    """The reference: the toy front-end over the whole clip zero-padded by 2 on each side."""
    clip = np.concatenate([np.zeros((2, H, W), np.float32), np.stack(frames(n)),
                           np.zeros((2, H, W), np.float32)])
    return toy_frontend(clip)


def run(windows, n: int) -> list[tuple[int, int, int, bool]]:
    """Push n frames then flush; (frame index pushed, start, stop, final) of each window."""
    out = []
    for t, frame in enumerate(frames(n)):
        out += [(t, w.start, w.stop, w.final) for w in windows.push(frame)]
    out += [(n, w.start, w.stop, w.final) for w in windows.flush()]
    return out


def test_ring_keeps_the_newest_items_by_absolute_index():
    ring = FeatureRing(4, (2,))
    ring.append(np.arange(6, dtype=np.float32).reshape(3, 2))
    assert (ring.start, ring.end, len(ring)) == (0, 3, 3)
    ring.append(np.array([[6, 7], [8, 9]], np.float32))
    assert (ring.start, ring.end) == (1, 5)
    np.testing.assert_array_equal(ring.window(2, 5), [[4, 5], [6, 7], [8, 9]])
    with pytest.raises(IndexError, match="ring holds 1..5"):
        ring.window(0, 3)
    with pytest.raises(IndexError):
        ring.window(4, 6)
    ring.append(np.arange(12, dtype=np.float32).reshape(6, 2))  # more than the capacity at once
    assert (ring.start, ring.end) == (7, 11)
    np.testing.assert_array_equal(ring.window(7, 11), np.arange(4, 12).reshape(4, 2))


def test_plan_runs_every_stride_once_the_window_is_full_and_covers_the_tail():
    plan = WindowPlan(window=9, stride=3)
    assert plan.ends(0, 8) == [] and plan.ends(8, 13) == [9, 12]
    assert plan.final_end(13) == 13 and plan.bounds(13) == (4, 13)
    covered = WindowPlan(9, 3)
    covered.ends(0, 12)
    assert covered.final_end(12) is None
    assert WindowPlan(9, 3).final_end(0) is None
    short = WindowPlan(9, 3)
    assert short.ends(0, 5) == [] and short.final_end(5) == 5 and short.bounds(5) == (0, 5)
    with pytest.raises(InputError, match="larger than the window"):
        WindowPlan(4, 5)


@pytest.mark.parametrize("chunk", [1, 2, 3, 4])
def test_cached_features_equal_the_whole_clip_for_any_chunk(chunk):
    n = 20
    reference = whole_clip_features(n)
    windows = CachedWindows(toy_frontend, window=9, stride=3, feature_dim=5, chunk=chunk)
    got = []
    for frame in frames(n):
        got += windows.push(frame)
    got += windows.flush()
    assert [(w.start, w.stop, w.final) for w in got] == [
        (0, 9, False), (3, 12, False), (6, 15, False), (9, 18, False), (11, 20, True)]
    for w in got:
        np.testing.assert_array_equal(w.data, reference[w.start:w.stop])
    assert windows.frontend_calls == -(-n // chunk)  # every frame once, C at a time


def test_features_are_ready_two_frames_later_and_windows_come_then():
    windows = CachedWindows(toy_frontend, window=9, stride=3, feature_dim=5)
    events = run(windows, 15)
    # the window over frames 0..8 needs the features of frame 8, i.e. frame 10; the one over
    # 6..14 is on the schedule but its last features need the end-of-stream padding
    assert events == [(10, 0, 9, False), (13, 3, 12, False), (15, 6, 15, False)]
    assert windows.lookahead == CONTEXT and windows.frontend_calls == 15


def test_a_stream_ending_on_the_schedule_gets_no_extra_window():
    events = run(CachedWindows(toy_frontend, 9, 3, 5), 12)
    assert [(s, e, f) for _, s, e, f in events] == [(0, 9, False), (3, 12, False)]


def test_a_stream_shorter_than_the_window_gets_one_window_of_all_frames():
    windows = CachedWindows(toy_frontend, 9, 3, 5, chunk=2)
    got = [w for f in frames(4) for w in windows.push(f)] + windows.flush()
    assert [(w.start, w.stop, w.final) for w in got] == [(0, 4, True)]
    np.testing.assert_array_equal(got[0].data, whole_clip_features(4))
    assert windows.flush() == []
    with pytest.raises(RuntimeError, match="push after flush"):
        windows.push(frames(1)[0])


def test_an_empty_stream_makes_no_window():
    assert CachedWindows(toy_frontend, 9, 3, 5).flush() == []
    assert FrameWindows(9, 3, (H, W)).flush() == []


def test_front_end_must_return_one_feature_per_new_frame():
    windows = CachedWindows(lambda clip: np.zeros((2, 5), np.float32), 9, 3, 5)
    for frame in frames(2):
        windows.push(frame)
    with pytest.raises(ValueError, match="returned 2 features for 1 frames"):
        windows.push(frames(1)[0])


def test_frame_windows_follow_the_same_schedule_without_look_ahead():
    windows = FrameWindows(9, 3, (H, W))
    events = run(windows, 15)
    assert events == [(8, 0, 9, False), (11, 3, 12, False), (14, 6, 15, False)]
    windows = FrameWindows(9, 3, (H, W))
    got = [w for f in frames(13) for w in windows.push(f)] + windows.flush()
    assert [(w.start, w.stop, w.final) for w in got] == [(0, 9, False), (3, 12, False),
                                                       (4, 13, True)]
    np.testing.assert_array_equal(got[-1].data[:, 0, 0], np.arange(5, 14))
    assert windows.lookahead == 0


def test_bad_chunk_is_an_input_error():
    with pytest.raises(InputError, match="chunk >= 1"):
        CachedWindows(toy_frontend, 9, 3, 5, chunk=0)
