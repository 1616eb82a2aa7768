"""Face tracking for ``--crop auto``: the search near the last face against full-frame detection.

The real-face checks run on scikit-image's astronaut photograph moved, zoomed and rotated
smoothly (``lipx.benchmarks.moving_face``); the reference is the detect-every-frame tracker
(``make_roi("auto", detect_every=1)``, the behaviour before tracking).
"""

from __future__ import annotations

import numpy as np
import pytest

from lipx.runtime.roi import TRACK_DETECT_EVERY, FaceTracker, make_roi

cv2 = pytest.importorskip("cv2")
pytest.importorskip("skimage")

from lipx.benchmarks.moving_face import MovingFace, astronaut  # noqa: E402 (needs skimage)
from lipx.runtime.haar import HaarFaceDetector  # noqa: E402

TOLERANCE_PX = 3.0


def boxes(tracker, frames) -> np.ndarray:
    """(N, 4) mouth boxes of the frames, NaN where none is known."""
    return np.array([r.box if r.box is not None else [np.nan] * 4 for r in map(tracker, frames)])


def deviation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-frame largest corner difference of two mouth-box sequences (pixels)."""
    return np.abs(a - b).max(axis=1)


@pytest.fixture(scope="module")
def photo():
    return astronaut()


@pytest.fixture(scope="module", params=[(640, 480), (512, 512)], ids=["640x480", "512x512"])
def sweep(request, photo):
    """A moving-astronaut video and its detect-every-frame mouth boxes."""
    motion = MovingFace(size=request.param, frames=150)
    frames = motion.video(photo)
    return motion, frames, boxes(make_roi("auto", detect_every=1), frames)


def test_near_search_scans_the_windows_of_a_full_frame_search(photo):
    """With an unbounded reach the near search sees every window of ``detectMultiScale``."""
    detector = HaarFaceDetector(reach=100.0)
    for t in (0, 40, 77):
        gray, _ = detector.prepare(MovingFace().frame(t, photo))
        side = detector._min_size(gray)
        full = detector._cascade.detectMultiScale(
            gray, scaleFactor=1.1, minNeighbors=0, minSize=(side, side)
        )
        near = detector.raw_windows(gray, (100.0, 80.0, 80.0, 80.0))
        assert sorted(map(tuple, np.asarray(full).reshape(-1, 4).tolist())) == sorted(
            map(tuple, near)
        )


def test_near_search_finds_the_full_frame_face(photo):
    detector = HaarFaceDetector()
    motion = MovingFace()
    face = max(detector(motion.frame(0, photo)), key=lambda b: b[2] * b[3])
    for t in (1, 2, 3):
        frame = motion.frame(t, photo)
        full, near = detector(frame), detector.near(frame, face)
        assert len(near) == 1 and near[0] in full
        face = near[0]
    assert detector.near(np.full((480, 640, 3), 128, np.uint8), face) == []


@pytest.mark.slow
def test_tracked_mouth_box_stays_within_3_px_of_detection_on_every_frame(sweep):
    motion, frames, reference = sweep
    tracker = make_roi("auto")
    tracked = boxes(tracker, frames)
    assert not np.isnan(reference).any() and not np.isnan(tracked).any()
    assert deviation(tracked, reference)[1:].max() <= TOLERANCE_PX
    assert tracker.frames_without_face == 0
    # it did track: one full-frame search per TRACK_DETECT_EVERY frames, the rest near the face
    assert tracker.full_detections == -(-len(frames) // TRACK_DETECT_EVERY)
    # and both follow the real mouth
    centres = (tracked[:, :2] + tracked[:, 2:]) / 2
    truth = np.array([motion.mouth(t) for t in range(len(frames))])
    side = tracked[:, 2] - tracked[:, 0]
    assert (np.linalg.norm(centres - truth, axis=1) < 0.1 * side).all()


def cut_video(photo, cut: int = 40, offset=(-170.0, 60.0), n: int = 70):
    """The 640x480 sweep whose picture jumps by ``offset`` at frame ``cut`` (a cut)."""
    motion = MovingFace()
    shift = [(0.0, 0.0) if t < cut else offset for t in range(n)]
    return motion, shift, [motion.frame(t, photo, shift[t]) for t in range(n)]


def test_tracker_recovers_after_the_face_jumps(photo):
    cut = 40
    motion, shift, frames = cut_video(photo, cut)
    tracker = make_roi("auto")
    tracked = boxes(tracker, frames)
    reference = boxes(make_roi("auto", detect_every=1), frames)
    assert tracker.frames_without_face == 0 and tracker.full_detections >= 2  # re-detected
    recovered = cut + 3
    assert deviation(tracked, reference)[recovered:].max() <= TOLERANCE_PX
    centres = (tracked[recovered:, :2] + tracked[recovered:, 2:]) / 2
    truth = np.array([motion.mouth(t, shift[t]) for t in range(recovered, len(frames))])
    assert (np.linalg.norm(centres - truth, axis=1) < 20).all()


def test_a_frame_without_a_face_is_counted_and_the_face_found_again(photo):
    motion = MovingFace()
    frames = [motion.frame(t, photo) for t in range(12)]
    frames[6] = np.full_like(frames[6], 128)
    tracker, reference = make_roi("auto"), make_roi("auto", detect_every=1)
    results = [tracker(f) for f in frames]
    ref = boxes(reference, frames)
    assert tracker.frames_without_face == reference.frames_without_face == 1
    assert results[6].held and results[6].found and not results[7].held
    assert deviation(np.array([r.box for r in results]), ref)[1:].max() <= TOLERANCE_PX


def test_tracking_is_causal(photo):
    """A frame's box and face depend on that frame and earlier ones only."""
    _, _, frames = cut_video(photo, cut=30, n=40)
    smooth = MovingFace().video(photo)[:40]
    assert all(np.array_equal(a, b) for a, b in zip(frames[:30], smooth[:30]))
    tracker_a, tracker_b = make_roi("auto"), make_roi("auto")
    a = [tracker_a(f) for f in frames]
    b = [tracker_b(f) for f in smooth]
    assert [r.box for r in a[:30]] == [r.box for r in b[:30]]
    assert all(np.array_equal(x.face256, y.face256) for x, y in zip(a[:30], b[:30]))
    assert a[30].box != b[30].box


# -- the tracker's schedule, with a fake detector ----------------------------------------------


class NearScripted:
    """A fake detector with a near search: one fixed face; ``near`` can be told to miss."""

    def __init__(self, box=(40.0, 30.0, 60.0, 60.0)):
        self.box, self.full, self.near_calls, self.miss_near = box, 0, 0, set()

    def __call__(self, frame):
        self.full += 1
        return [self.box]

    def near(self, frame, box):
        self.near_calls += 1
        return [] if self.near_calls in self.miss_near else [self.box]


def test_full_detection_every_k_frames_and_on_a_miss_near_the_face():
    detector = NearScripted()
    detector.miss_near = {3}
    tracker = FaceTracker(detector, detect_every=5)
    frame = np.zeros((120, 160, 3), np.uint8)
    results = [tracker(frame) for _ in range(11)]
    assert all(r.found and not r.held for r in results)
    # frames 1, 6, 11 are scheduled; the near miss on frame 4 re-detects the whole frame
    assert detector.full == 4 and detector.near_calls == 8
    assert tracker.full_detections == 4 and tracker.frames_without_face == 0


def test_without_tracking_frames_in_between_reuse_the_last_detection():
    detector = NearScripted()
    tracker = FaceTracker(detector, detect_every=5, track=False)
    frame = np.zeros((120, 160, 3), np.uint8)
    [tracker(frame) for _ in range(6)]
    assert detector.full == 2 and detector.near_calls == 0


def test_make_roi_auto_tracks_and_detect_every_1_searches_every_frame():
    tracking, every = make_roi("auto"), make_roi("auto", detect_every=1, fps=30.0)
    assert isinstance(tracking, FaceTracker) and tracking.detect_every == TRACK_DETECT_EVERY
    assert isinstance(every, FaceTracker) and every.detect_every == 1 and every.fps == 30.0
    # a detector that cannot search near a face still runs on every frame
    plain = make_roi("auto", detector=lambda frame: [])
    assert isinstance(plain, FaceTracker) and plain.detect_every == 1
    assert make_roi("auto", detector=NearScripted()).detect_every == TRACK_DETECT_EVERY


def test_roi_bench_runs_and_writes_its_rows(tmp_path):
    import json

    from lipx.benchmarks.roi_bench import main

    rows = main(["--frames", "6", "--repeats", "1", "--out", str(tmp_path)])
    assert [(r.size, r.mode) for r in rows] == [
        (size, mode)
        for size in ("640x480", "512x512")
        for mode in ("detect-every-frame", "tracking")
    ]
    report = json.loads((tmp_path / "roi_bench.json").read_text())
    assert len(report["rows"]) == 4 and report["machine"]["cpu_count"] >= 1
    assert all(len(r["samples_ms"]) == 1 and len(r["samples_ms"][0]) == 6 for r in report["rows"])
