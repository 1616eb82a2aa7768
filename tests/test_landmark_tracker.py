"""``--crop auto``: the shipped face models; the tracker's geometry, smoothing, hold and reset."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from lipx.errors import ManifestError
from lipx.landmarks import reference_face, similarity_transform
from lipx.runtime.faces import Face, FaceDetector, apply, asset_folder, face_asset, invert
from lipx.runtime.landmark_tracker import LandmarkTracker, lrw_corners
from lipx.runtime.roi import make_roi, resize_rgb
from lipx.runtime.wflw_map import WflwMap

cv2 = pytest.importorskip("cv2")
pytest.importorskip("onnxruntime")


def similarity(scale: float, degrees: float, dx: float, dy: float) -> np.ndarray:
    """(2, 3) LRW face -> source pixels: scale and rotate about the face centre, then shift."""
    a = np.deg2rad(degrees)
    rot = scale * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    centre = np.array([128.0, 128.0])
    return np.concatenate([rot, (centre + [dx, dy] - rot @ centre)[:, None]], 1)


class Scene:
    """Scripted face models: each frame's face is the reference face under a known transform."""

    def __init__(self, transforms: list[np.ndarray | None]):
        self.transforms, self.index = transforms, 0
        self.detector_calls = self.mesh_calls = 0
        rng = np.random.default_rng(0)
        self.canonical = rng.uniform(50, 206, (468, 2))  # the mesh's other points, in the face
        # the mesh -> WFLW map of this face: the reference face's points, wherever the mesh is
        self.wflw = WflwMap(self.canonical, np.zeros((0, 936)), np.zeros((0, 196)),
                            reference_face().astype(np.float64).ravel())

    @property
    def now(self) -> np.ndarray | None:
        return self.transforms[min(self.index, len(self.transforms) - 1)]

    def detector(self, frame: np.ndarray) -> list[Face]:
        self.detector_calls += 1
        if self.now is None:
            return []
        corners = apply(self.now, np.array([[40.0, 40], [216, 216]]))
        eyes = apply(self.now, reference_face()[[96, 97]])
        keypoints = np.concatenate([eyes, np.zeros((4, 2))])
        return [Face(0.9, (*corners.min(0), *corners.max(0)), keypoints)]  # type: ignore[arg-type]

    def mesh(self, frame: np.ndarray, roi: np.ndarray) -> tuple[np.ndarray, float]:
        self.mesh_calls += 1
        if self.now is None:
            return np.zeros((468, 2)), 0.0
        return apply(self.now, self.canonical), 1.0

    def run(self, tracker: LandmarkTracker, frame: np.ndarray | None = None) -> list:
        frame = np.zeros((240, 320, 3), np.uint8) if frame is None else frame
        out = []
        for i in range(len(self.transforms)):
            self.index = i
            out.append(tracker(frame))
        return out


def tracker_for(scene: Scene, **kw: object) -> LandmarkTracker:
    return LandmarkTracker(scene.detector, scene.mesh, wflw=scene.wflw,  # type: ignore[arg-type]
                           **kw)


def smooth_image(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:256, 0:256] / 256.0
    chans = [np.sin(2 * np.pi * (a * x + b * y) + c) for a, b, c in rng.uniform(0.5, 2, (3, 3))]
    return ((np.stack(chans, -1) + 1) * 127.5).astype(np.uint8)


# -- geometry, smoothing, hold and reset (scripted models) --------------------------------------


def test_tracker_undoes_a_rotated_scaled_shifted_face():
    m = similarity(1.4, 15.0, 150.0, 90.0)
    face = smooth_image()
    canvas = cv2.warpAffine(face, m, (640, 480), borderMode=cv2.BORDER_REFLECT)
    scene = Scene([m])
    result = scene.run(tracker_for(scene), canvas)[0]
    assert result.found and not result.held
    np.testing.assert_allclose(result.corners, apply(m, lrw_corners()), atol=1e-6)
    inner = (slice(20, 236), slice(20, 236))
    assert np.abs(result.face256[inner].astype(int) - face[inner]).mean() < 3


def test_tracks_without_detecting_again_and_smooths_causally():
    rng = np.random.default_rng(1)
    common = [similarity(1.0, 0, 20 + rng.normal(0, 3), 10) for _ in range(10)]
    a_scene = Scene(common + [similarity(1.0, 0, 60, 10)] * 5)
    b_scene = Scene(common + [similarity(1.2, 10, 0, 30)] * 5)
    a, b = a_scene.run(tracker_for(a_scene)), b_scene.run(tracker_for(b_scene))
    assert all(np.array_equal(x.corners, y.corners) for x, y in zip(a[:10], b[:10], strict=True))
    assert not np.allclose(a[10].corners, b[10].corners)
    assert a_scene.detector_calls == 1  # found once, then tracked by the mesh alone


def test_smoothing_reduces_jitter_and_follows_motion():
    rng = np.random.default_rng(2)
    jitter = rng.normal(0, 0.2, 60)  # a still face's mesh noise, in px of the frame
    scene = Scene([similarity(1.0, 0, 40 + j, 20) for j in jitter])
    x = np.array([r.corners[0, 0] for r in scene.run(tracker_for(scene))[10:]])
    assert x.std() < 0.5 * jitter[10:].std()
    scene = Scene([similarity(1.0, 0, 4 * i, 20) for i in range(40)])
    last = scene.run(tracker_for(scene))[-1]
    lag = apply(scene.transforms[-1], lrw_corners())[0, 0] - last.corners[0, 0]
    assert 0 <= lag < 1  # a face moving 100 px/s is followed within a quarter of a frame


def test_lost_face_is_held_then_reset_and_found_again():
    m, later = similarity(1.0, 0, 40, 20), similarity(0.8, -10, 80, 40)
    scene = Scene([m] * 5 + [None] * 6 + [later])
    tracker = tracker_for(scene, hold_frames=3)
    results = scene.run(tracker)
    assert all(r.found and not r.held for r in results[:5])
    assert all(r.held and np.array_equal(r.corners, results[4].corners) for r in results[5:8])
    assert all(not r.found and r.corners is None and r.box is None for r in results[8:11])
    assert all(r.face256.shape == (256, 256, 3) for r in results)
    assert tracker.frames_without_face == 6 and tracker.frames_lost == 3
    np.testing.assert_allclose(results[11].corners, apply(later, lrw_corners()), atol=1e-6)
    assert scene.detector_calls == 1 + 6 + 1


# -- the shipped models -------------------------------------------------------------------------


def test_face_models_are_checked_before_loading(tmp_path):
    assert face_asset("face_mesh").is_file() and face_asset("face_detector").is_file()
    copy = tmp_path / "faces"
    shutil.copytree(asset_folder(), copy)
    data = bytearray((copy / "face_mesh.onnx").read_bytes())
    data[-1] ^= 1
    (copy / "face_mesh.onnx").write_bytes(bytes(data))
    with pytest.raises(ManifestError, match="corrupt or was replaced"):
        face_asset("face_mesh", copy)
    with pytest.raises(ManifestError, match="cannot read"):
        face_asset("face_nose", copy)


def astronaut() -> np.ndarray:
    return pytest.importorskip("skimage.data").astronaut()


def settle(tracker: LandmarkTracker, frame: np.ndarray, n: int = 5):
    return [tracker(frame) for _ in range(n)][-1]


def test_astronaut_moved_scaled_rotated_warps_to_the_same_face():
    image = astronaut()
    upright = settle(make_roi("auto"), image)  # type: ignore[arg-type]
    assert upright.found
    for scale, degrees in ((1.0, 20.0), (0.8, -20.0), (1.3, 10.0)):
        m = cv2.getRotationMatrix2D((256, 256), degrees, scale)
        m[:, 2] += [64, -16]
        frame = cv2.warpAffine(image, m, (640, 480), borderMode=cv2.BORDER_REFLECT)
        result = settle(make_roi("auto"), frame)  # type: ignore[arg-type]
        truth = apply(m, upright.corners)
        # corner error in pixels of the 256 face (the mouth box is 136 px wide there)
        err = np.linalg.norm(result.corners - truth, axis=1) * 136 / np.linalg.norm(
            truth[1] - truth[0])
        assert err.max() < 2.0, (scale, degrees, err)


def test_no_face_is_found_on_frames_without_one():
    rng = np.random.default_rng(3)
    tracker = make_roi("auto")
    frames = [np.full((480, 640, 3), 128, np.uint8),
              rng.integers(0, 256, (480, 640, 3), dtype=np.uint8),
              resize_rgb(smooth_image(4), 640, 480),
              np.ascontiguousarray(astronaut()[300:, :])]  # the suit, no face
    assert not any(tracker(f).found for f in frames)
    assert tracker.frames_without_face == len(frames)
    assert FaceDetector()(frames[0]) == []


def test_rendered_synthetic_face_is_aligned_like_its_true_landmarks():
    from lipx.data.render import Appearance, Placement, render_frames

    rng = np.random.default_rng(5)
    frames, landmarks = render_frames(Appearance.random(rng), Placement.grid(rng, 360, 288),
                                      np.zeros((8, 6)), rng)
    tracker = make_roi("auto")
    result = [tracker(f) for f in frames][-1]
    truth = apply(invert(similarity_transform(landmarks[-1], reference_face())), lrw_corners())
    m_true = similarity_transform(landmarks[-1], reference_face())
    err = np.linalg.norm(apply(m_true, result.corners) - apply(m_true, truth), axis=1)
    assert err.max() < 4.0, err  # pixels of the 256 face


def test_the_wflw_map_commutes_with_moving_the_face_and_is_checked_before_loading(tmp_path):
    from lipx.runtime import wflw_map

    shipped = wflw_map.shipped_map()
    mesh = apply(similarity(1.1, 5, 10, -5), shipped.mean)
    m = similarity(1.3, -17, 120, 40)
    np.testing.assert_allclose(shipped(apply(m, mesh)), apply(m, shipped(mesh)), atol=1e-6)
    at_mean = shipped(shipped.mean).ravel()  # the mean mesh gives the fitted mean points
    np.testing.assert_allclose(at_mean, shipped.offset, atol=1e-6)
    copy = tmp_path / "faces"
    shutil.copytree(asset_folder(), copy)
    (copy / wflw_map.MAP_FILE).write_bytes(b"not a map")
    with pytest.raises(ManifestError, match="corrupt or was replaced"):
        wflw_map.load_map(copy)
