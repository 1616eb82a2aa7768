"""``--crop auto``: a landmark face tracker that cuts the crop ``lipx data prepare`` cuts.

Per frame, causally (no future frame is used):

1. **Track**: Face Mesh v1 (:class:`~lipx.runtime.faces.FaceMesh`) runs on the square region
   around the previous frame's mesh (rotated with the eyes, 1.5 times the points' extent, as
   MediaPipe does). When its presence score drops below 0.5, or no face is known yet, the
   detector (:class:`~lipx.runtime.faces.FaceDetector`) searches the whole frame and the mesh runs
   on the region of its best face.
2. **Fit**: the 98 WFLW points are estimated from the whole mesh
   (:class:`~lipx.runtime.wflw_map.WflwMap`, calibrated on training speakers' renders), then
   fitted by a least-squares similarity transform (rotation, uniform scale, translation) the
   way the model's training faces were framed (:class:`lipx.landmarks.Framing`, from the
   package's ``video.framing``): all 98 points to LRW's reference face as ``lipx data prepare``
   aligns GRID (``landmarks``), or the nose, eyes and pupils to the synthetic renderer's
   average face (``synthetic``).
3. **Smooth**: the mouth box's four corners in source pixels go through a one-euro filter (a
   low-pass whose cut-off rises with speed: still faces are steady, moving ones are followed
   with little lag); the transform is refitted to the smoothed corners.
4. **Warp**: the frame is warped to the 256x256 LRW face (the mouth lands in
   ``LRW_MOUTH_BOX``; ``lipx.video`` cuts it like every other crop).

A frame without a face holds the last transform for ``hold_frames`` frames (``held=True``), then
the tracker resets and reports ``found=False``. Torch-free.
"""

from __future__ import annotations

import math

import numpy as np

from lipx.landmarks import named_framing, similarity_transform, warp_face
from lipx.runtime.faces import (
    MESH_SIZE,
    MIN_SCORE,
    Face,
    FaceDetector,
    FaceMesh,
    apply,
    invert,
    square_roi,
)
from lipx.runtime.roi import (
    FACE_SIZE,
    LRW_MOUTH_BOX,
    MouthROI,
    OneEuroFilter,
    RoiResult,
    centre_face,
    check_frame,
)
from lipx.runtime.wflw_map import WflwMap, shipped_map
from lipx.video import FPS

MESH_EYES = (33, 263)
"""The outer eye corners (image left, image right), for the mesh region's rotation."""
ROI_SCALE = 1.5
"""Side of the mesh region per extent of the face (MediaPipe's)."""


def lrw_corners() -> np.ndarray:
    """(4, 2) corners of ``LRW_MOUTH_BOX``: top-left, top-right, bottom-right, bottom-left."""
    x1, y1, x2, y2 = LRW_MOUTH_BOX
    return np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2]], np.float64)


def region_of_points(points: np.ndarray) -> np.ndarray:
    """The mesh region (a :func:`square_roi` matrix) around a face's mesh points."""
    a, b = points[MESH_EYES[0]], points[MESH_EYES[1]]
    angle = math.atan2(b[1] - a[1], b[0] - a[0])
    c, s = math.cos(angle), math.sin(angle)
    upright = points @ np.array([[c, -s], [s, c]])  # rotated by -angle
    low, high = upright.min(0), upright.max(0)
    centre = np.array([[c, -s], [s, c]]) @ ((low + high) / 2)
    return square_roi(centre, ROI_SCALE * float((high - low).max()), angle, MESH_SIZE)


def region_of_detection(face: Face) -> np.ndarray:
    """The mesh region around a detected face (rotated with its eye keypoints)."""
    right_eye, left_eye = face.keypoints[0], face.keypoints[1]
    angle = math.atan2(left_eye[1] - right_eye[1], left_eye[0] - right_eye[0])
    x1, y1, x2, y2 = face.box
    centre = np.array([(x1 + x2) / 2, (y1 + y2) / 2])
    return square_roi(centre, ROI_SCALE * max(x2 - x1, y2 - y1), angle, MESH_SIZE)


class LandmarkTracker(MouthROI):
    """``--crop auto``: detect, track the mesh, fit to the model's framing, smooth, warp.

    Args:
        detector, mesh: the face models (default: the shipped ones on ``device``).
        wflw: the mesh -> WFLW map (default: the shipped calibration).
        framing: how the model's training faces were framed (a name of
            :data:`lipx.landmarks.FRAMINGS`).
        device: onnxruntime device of the default models (``cpu``, ``cuda``, ``tensorrt``).
        fps: frame rate (the filter's time step).
        hold_frames: frames a lost face's transform is held before the tracker resets.
        min_cutoff, beta: one-euro filter settings (Hz at rest; Hz per mouth-box width per
            second). Chosen on the validation speakers' in-the-wild streams: beta 3 (the old
            tracker's) trails a moving face by 0.65 frames and put the box p95 6.8 px from the
            truth there, beta 100 trails by 0.04 frames (p95 3.9 px, 3.9 unsmoothed) and
            lets a still face jitter by 0.16 px std instead of 0.10.
    """

    def __init__(self, detector: FaceDetector | None = None, mesh: FaceMesh | None = None, *,
                 wflw: WflwMap | None = None, framing: str = "landmarks",
                 device: str = "cpu", fps: float = FPS,
                 hold_frames: int = 12, min_cutoff: float = 1.0, beta: float = 100.0):
        super().__init__()
        self.detector = detector or FaceDetector(device=device)
        self.mesh = mesh or FaceMesh(device=device)
        self.wflw = wflw or shipped_map()
        self.framing = named_framing(framing)
        self.fps, self.hold_frames = fps, hold_frames
        self.filter = OneEuroFilter(min_cutoff=min_cutoff, beta=beta)
        self.detections = 0
        """Frames the detector searched (the rest were tracked from the previous frame)."""
        self.frames_lost = 0
        self.points: np.ndarray | None = None
        """This frame's (468, 2) mesh points in source pixels, None when not found."""
        self.wflw_points: np.ndarray | None = None
        """This frame's estimated (98, 2) WFLW points in source pixels, None when not found."""
        self.reset()

    def reset(self) -> None:
        self.filter.reset()
        self._region: np.ndarray | None = None
        self._matrix: np.ndarray | None = None
        self._misses = 0
        self._since_update = 0
        self.points = self.wflw_points = None

    def __call__(self, frame: np.ndarray) -> RoiResult:
        check_frame(frame)
        self.frames += 1
        self._since_update += 1
        self.points = self._track(frame)
        self.wflw_points = None if self.points is None else self.wflw(self.points)
        if self.wflw_points is not None:
            raw = apply(invert(self.framing.fit(self.wflw_points)), lrw_corners())
            side = float(np.linalg.norm(raw[1] - raw[0]))
            smooth = self.filter(raw.ravel(), self._since_update / self.fps, unit=side)
            self._matrix = similarity_transform(smooth.reshape(4, 2), lrw_corners())
            self._misses, self._since_update = 0, 0
            return self._result(frame, held=False)
        self.frames_without_face += 1
        self._misses += 1
        if self._matrix is not None and self._misses <= self.hold_frames:
            return self._result(frame, held=True)
        self.reset()
        self.frames_lost += 1
        return RoiResult(centre_face(frame), None, False)

    def _track(self, frame: np.ndarray) -> np.ndarray | None:
        """This frame's mesh points: from the last region, else from a detection; or None."""
        if self._region is not None:
            points, presence = self.mesh(frame, self._region)
            if presence >= MIN_SCORE:
                self._region = region_of_points(points)
                return points
            self._region = None
        self.detections += 1
        faces = self.detector(frame)
        if not faces:
            return None
        face = max(faces, key=lambda f: (f.box[2] - f.box[0]) * (f.box[3] - f.box[1]))
        points, presence = self.mesh(frame, region_of_detection(face))
        if presence < MIN_SCORE:
            return None
        # the detector's box is loose: once more on the region of the mesh's own points
        points, presence = self.mesh(frame, region_of_points(points))
        if presence < MIN_SCORE:
            return None
        self._region = region_of_points(points)
        return points

    def transform(self) -> np.ndarray | None:
        """(2, 3) float64 matrix mapping source pixels to LRW face pixels, if known."""
        return None if self._matrix is None else self._matrix.copy()

    def _result(self, frame: np.ndarray, held: bool) -> RoiResult:
        m = self._matrix
        assert m is not None  # internal invariant: called only with a transform
        face = warp_face(frame, m, FACE_SIZE)
        corners = apply(invert(m), lrw_corners())
        box = (*corners.min(0), *corners.max(0))
        return RoiResult(face, box, True, held, corners=corners)  # type: ignore[arg-type]
