"""Mouth ROI: fixed LRW box, face tracker geometry, causal smoothing, hold/reset, Haar cascade."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import pytest

from lipx.errors import BackendUnavailableError, InputError
from lipx.runtime.roi import (
    HAAR_FACE_IN_LRW,
    LRW_MOUTH_BOX,
    FaceTracker,
    FixedLRWBox,
    HaarFaceDetector,
    OneEuroFilter,
    make_roi,
    resize_rgb,
)

REFERENCE = Path(__file__).parent / "data" / "reference" / "lrw_reference_face_98.txt"


def smooth_image(h: int = 256, w: int = 256, seed: int = 0) -> np.ndarray:
    """A smooth colourful (h, w, 3) uint8 image (resampling barely changes it)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w] / 256.0
    chans = [np.sin(2 * np.pi * (a * x + b * y) + c) for a, b, c in rng.uniform(0.5, 2, (3, 3))]
    return ((np.stack(chans, -1) + 1) * 127.5).astype(np.uint8)


def canonical_box(scale: float = 1.0, dx: float = 0.0, dy: float = 0.0):
    """Where the detector's box would be on an LRW face scaled by ``scale`` and shifted."""
    cx, cy, side = HAAR_FACE_IN_LRW
    return ((cx - side / 2) * scale + dx, (cy - side / 2) * scale + dy, side * scale, side * scale)


class Scripted:
    """A fake detector returning scripted boxes (None = no face), counting its calls."""

    def __init__(self, boxes):
        self.boxes, self.calls = list(boxes), 0

    def __call__(self, frame):
        box = self.boxes[self.calls] if self.calls < len(self.boxes) else None
        self.calls += 1
        return [] if box is None else [box]


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


# -- tracker geometry and smoothing (fake detector) -----------------------------------------------


def test_tracker_maps_the_face_box_onto_lrw_geometry():
    face = smooth_image()
    scale, dx, dy = 1.5, 100.0, 50.0
    canvas = np.zeros((480, 640, 3), np.uint8)
    canvas[50 : 50 + 384, 100 : 100 + 384] = resize_rgb(face, 384, 384)
    tracker = FaceTracker(Scripted([canonical_box(scale, dx, dy)]))
    result = tracker(canvas)
    assert result.found and not result.held
    assert np.abs(result.face256.astype(int) - face).mean() < 4  # the aligned face comes back
    x1, y1, x2, y2 = LRW_MOUTH_BOX
    assert result.box == pytest.approx(
        (x1 * scale + dx, y1 * scale + dy, x2 * scale + dx, y2 * scale + dy)
    )


def track(boxes, **kw):
    tracker = FaceTracker(Scripted(boxes), **kw)
    frame = np.zeros((240, 320, 3), np.uint8)
    return [tracker(frame) for _ in boxes], tracker


def test_smoothing_is_causal():
    rng = np.random.default_rng(1)
    common = [canonical_box(0.6, 20 + rng.normal(0, 3), 10 + rng.normal(0, 3)) for _ in range(10)]
    a, _ = track(common + [canonical_box(0.6, 60, 10)] * 5)
    b, _ = track(common + [canonical_box(0.7, 0, 30)] * 5)
    assert [r.box for r in a[:10]] == [r.box for r in b[:10]]
    assert all(np.array_equal(x.face256, y.face256) for x, y in zip(a[:10], b[:10], strict=True))
    assert a[10].box != b[10].box


def test_smoothing_reduces_jitter_and_follows_motion():
    rng = np.random.default_rng(2)
    jitter = rng.normal(0, 4, 60)
    results, _ = track([canonical_box(0.6, 40 + j, 20) for j in jitter])
    x_out = np.array([r.box[0] for r in results[10:]])
    assert x_out.std() < 0.5 * jitter[10:].std()  # the box moves 1 px per px of face motion
    moves, _ = track([canonical_box(0.6, 40 + 4 * i, 20) for i in range(40)])
    lag = 59 * 0.6 + 40 + 4 * 39 - moves[-1].box[0]
    assert abs(lag) < 12  # a face moving 100 px/s is followed within 3 frames


def test_lost_face_is_held_then_reset():
    box = canonical_box(0.6, 40, 20)
    results, tracker = track([box] * 5 + [None] * 6 + [canonical_box(0.5, 80, 40)], hold_frames=3)
    assert all(r.found and not r.held for r in results[:5])
    assert all(r.found and r.held and r.box == results[4].box for r in results[5:8])
    assert all(not r.found and r.box is None for r in results[8:11])
    assert all(r.face256.shape == (256, 256, 3) for r in results)
    assert tracker.frames_without_face == 6 and tracker.frames_lost == 3
    # after a reset the filter starts afresh: the new face is used as detected
    assert results[11].found
    assert results[11].box[0] == pytest.approx(59 * 0.5 + 80)


def test_detect_every_k_frames_reuses_the_last_detection():
    detector = Scripted([canonical_box(0.6, 40, 20)] * 10)
    tracker = FaceTracker(detector, detect_every=3)
    frame = np.zeros((240, 320, 3), np.uint8)
    results = [tracker(frame) for _ in range(10)]
    assert detector.calls == 4 and all(r.found for r in results)


def test_picks_the_face_that_continues_the_track():
    near, far_big = canonical_box(0.5, 20, 20), canonical_box(0.8, 150, 0)
    tracker = FaceTracker(lambda frame: [far_big, near] if tracker.frames > 1 else [near])
    frame = np.zeros((300, 400, 3), np.uint8)
    first, second = tracker(frame), tracker(frame)
    assert second.box == pytest.approx(first.box)


def test_one_euro_filter():
    f = OneEuroFilter(min_cutoff=1.0, beta=0.0)
    assert np.allclose([f(np.array([5.0, 1.0]), 0.04) for _ in range(5)], [5.0, 1.0])
    out = [f(np.array([10.0, 1.0]), 0.04)[0] for _ in range(100)]
    assert 5.0 < out[0] < 10.0 and np.all(np.diff(out) > 0)
    assert out[-1] == pytest.approx(10, abs=0.01)


def test_bad_options():
    with pytest.raises(InputError, match="unknown crop mode 'box'"):
        make_roi("box")
    with pytest.raises(InputError, match="detect_every"):
        FaceTracker(Scripted([]), detect_every=0)
    assert isinstance(make_roi("lrw"), FixedLRWBox)


# -- the real OpenCV path --------------------------------------------------------------------------


def reference_landmarks(frame: int = 6) -> np.ndarray:
    """(98, 2) landmarks of the LRW reference face (WFLW order) for one frame."""
    text = REFERENCE.read_text().strip().split(":", 1)[1]
    points = text.split("|")[frame].split(",")
    return np.array([[float(v) for v in p.split()] for p in points])


def render_face(points: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Draw a face from 98 landmarks: skin, forehead, brows, eyes, nose, lips (grey, RGB)."""
    cv2 = pytest.importorskip("cv2")
    img = np.full((size[1], size[0]), 70, np.uint8)
    q = points.round().astype(np.int32)
    top, chin = q[33:51, 1].min(), q[:33, 1].max()
    centre = (int(q[0, 0] + q[32, 0]) // 2, int(q[0, 1]))
    axes = (int(q[32, 0] - q[0, 0]) // 2, int(q[0, 1] - top + 0.35 * (chin - top)))
    cv2.ellipse(img, centre, axes, 0, 180, 360, 185, -1)
    cv2.fillPoly(img, [q[:33]], 185)
    for part, shade in (
        (q[33:42], 80),
        (q[42:51], 80),
        (q[60:68], 50),
        (q[68:76], 50),
        (q[76:88], 90),
        (q[88:96], 40),
    ):
        cv2.fillPoly(img, [part], shade)
    cv2.polylines(img, [q[51:55]], False, 150, 4)
    img = cv2.GaussianBlur(img, (0, 0), 2.5)
    return np.repeat(img[:, :, None], 3, axis=2)


def test_haar_cascade_loads_and_finds_nothing_on_a_blank_frame():
    pytest.importorskip("cv2")
    tracker = FaceTracker()
    result = tracker(np.full((240, 320, 3), 128, np.uint8))
    assert not result.found and result.box is None and tracker.frames_without_face == 1


def test_haar_tracker_puts_the_mouth_of_a_rendered_reference_face_in_the_lrw_box():
    pytest.importorskip("cv2")
    scale, dx, dy = 1.6, 90.0, 30.0
    points = reference_landmarks(6) * scale + [dx, dy]
    frame = render_face(points, (640, 480))
    assert HaarFaceDetector()(frame), "the cascade should fire on the rendered face"
    tracker = FaceTracker()
    result = tracker(frame)
    assert result.found
    m = tracker.transform()
    mouth = points[76:88].mean(0)
    mouth_lrw = m[:, :2] @ mouth + m[:, 2]
    reference_mouth = reference_landmarks(6)[76:88].mean(0)
    assert np.abs(mouth_lrw - reference_mouth).max() < 8  # pixels of the 256x256 face
    x1, y1, x2, y2 = result.box
    assert x1 < points[76:88, 0].min() and points[76:88, 0].max() < x2
    assert y1 < points[76:88, 1].min() and points[76:88, 1].max() < y2


def test_missing_or_caskless_opencv_is_reported(monkeypatch):
    monkeypatch.setitem(sys.modules, "cv2", None)
    with pytest.raises(BackendUnavailableError, match="opencv-python-headless>=4.8,<5"):
        FaceTracker()
    monkeypatch.setitem(sys.modules, "cv2", types.SimpleNamespace(__version__="5.0.0"))
    with pytest.raises(BackendUnavailableError, match="5.x dropped them"):
        HaarFaceDetector()
