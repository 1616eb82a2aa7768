"""Streams "in the wild": the motion's bounds, and a --wild stream tracked against its truth."""

from __future__ import annotations

import numpy as np
import pytest

from lipx.data.wild import MAX_DEGREES, SCALES, WILD_SIZE, read_truth, wild_motion


def test_wild_motion_stays_within_its_bounds_and_moves_smoothly():
    m = wild_motion(np.random.default_rng(0), 2000)
    scale = np.sqrt(np.abs(np.linalg.det(m[:, :, :2])))
    degrees = np.degrees(np.arctan2(m[:, 1, 0], m[:, 0, 0]))
    assert SCALES[0] - 1e-9 <= scale.min() and scale.max() <= SCALES[1] + 1e-9
    assert np.abs(degrees).max() <= MAX_DEGREES + 1e-9 and np.abs(degrees).max() > 10
    centre = m[:, :, :2] @ np.array([128.0, 128.0]) + m[:, :, 2]
    assert (centre > 0).all() and (centre < WILD_SIZE).all()
    assert np.abs(np.diff(centre, axis=0)).max() < 2 * np.pi * 0.3 * 200 / 25  # <= 0.3 Hz


@pytest.mark.slow
def test_a_wild_stream_is_tracked_close_to_its_true_alignment(tmp_path, run_cli):
    from lipx.benchmarks.faces_bench import wild_streams

    out = tmp_path / "wild"
    code, _, err = run_cli("data", "synth", str(out), "--layout", "lrw-streams", "--speakers",
                           "2", "--held-out", "1", "--words", "4", "--streams", "1",
                           "--per-stream", "2", "--wild")
    assert code == 0, err
    video = next(out.glob("*.mp4"))
    assert read_truth(video.with_suffix(".wild.json")).shape[1:] == (2, 3)
    report = wild_streams(out)
    assert report["streams"][0]["frames_without_face"] == 0
    assert report["corners_px"]["p50"] < 8  # px of the 256 face, against the true landmarks
