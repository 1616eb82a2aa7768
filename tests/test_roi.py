"""Mouth ROI: the fixed LRW box, one-euro filter, crop modes (tracker: test_landmark_tracker)"""

from __future__ import annotations

import numpy as np
import pytest

from lipx.errors import InputError
from lipx.runtime.roi import LRW_MOUTH_BOX, FixedLRWBox, OneEuroFilter, make_roi, resize_rgb


def smooth_image(h: int = 256, w: int = 256, seed: int = 0) -> np.ndarray:
    """A smooth colourful (h, w, 3) uint8 image (resampling barely changes it)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w] / 256.0
    chans = [np.sin(2 * np.pi * (a * x + b * y) + c) for a, b, c in rng.uniform(0.5, 2, (3, 3))]
    return ((np.stack(chans, -1) + 1) * 127.5).astype(np.uint8)


# -- fixed box -----------------------------------------------------------------------------------


def test_fixed_box_passes_aligned_faces_through():
    face = smooth_image()
    result = FixedLRWBox()(face)
    assert result.face256 is face and result.found and result.box == LRW_MOUTH_BOX


def test_fixed_box_resizes_other_sizes_to_256():
    big = resize_rgb(smooth_image(), 512, 384)
    result = FixedLRWBox()(big)
    assert result.face256.shape == (256, 256, 3)
    assert np.abs(result.face256.astype(int) - smooth_image()).mean() < 3
    assert result.box == pytest.approx((59 * 2, 95 * 1.5, 195 * 2, 231 * 1.5))
    with pytest.raises(InputError, match="uint8 RGB"):
        FixedLRWBox()(np.zeros((10, 10), np.uint8))


def test_one_euro_filter():
    f = OneEuroFilter(min_cutoff=1.0, beta=0.0)
    assert np.allclose([f(np.array([5.0, 1.0]), 0.04) for _ in range(5)], [5.0, 1.0])
    out = [f(np.array([10.0, 1.0]), 0.04)[0] for _ in range(100)]
    assert 5.0 < out[0] < 10.0 and np.all(np.diff(out) > 0)
    assert out[-1] == pytest.approx(10, abs=0.01)


def test_bad_options():
    with pytest.raises(InputError, match="unknown crop mode 'box'"):
        make_roi("box")
    assert isinstance(make_roi("lrw"), FixedLRWBox)
