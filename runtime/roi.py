"""Mouth region of interest: turn any frame into a 256x256 face in LRW geometry.

Models are trained on 256x256 faces where the mouth sits in LRW's fixed box (59, 95, 195, 231);
``lipx.video`` cuts that box out. A ``MouthROI`` produces such a face from a source frame:

- ``FixedLRWBox`` (``--crop lrw``): the input already is an aligned face (LRW, prepared GRID,
  synthetic data): passed through, or resized to 256x256 (whole frame, aspect not kept) when it
  has another size.
- ``FaceTracker`` (``--crop auto``): a face detector (OpenCV's bundled Haar cascade by default)
  gives a face box; a similarity transform (scale + translation, no rotation: the box has none)
  maps that box onto where the same detector puts its box on the LRW reference face, so the
  mouth lands in the LRW box. The transform's parameters are smoothed causally (one-euro filter:
  only past and present detections); a lost face holds the last transform for ``hold_frames``
  frames, then the tracker resets and reports ``found=False``. Between full-frame detections
  (every ``detect_every`` frames; ``make_roi("auto")`` uses ``TRACK_DETECT_EVERY``) the Haar
  detector searches only the windows near the last face (``HaarFaceDetector.near``): the same
  boxes for a fraction of the time, and a full-frame search again when it finds no face there.
  ``make_roi("auto", detect_every=1)`` searches every frame whole, as before.

``HAAR_FACE_IN_LRW`` was measured by running ``haarcascade_frontalface_default.xml`` on a
rendering (filled contour, brows, eyes, nose, lips) of the 98-point LRW reference face
(``tests/data/reference/lrw_reference_face_98.txt``, frame 6): box (43.5, 27.5) side 173 in the
256x256 frame, stable within 3 px over renders at 1-3x scale and other frames. The Haar box of a
real face may sit differently (about 10 % is typical between detectors); pass ``face_in_lrw``
to recalibrate.
"""

from __future__ import annotations

import logging
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from lipx.errors import InputError
from lipx.runtime.haar import HaarFaceDetector, import_cv2
from lipx.video import FPS

log = logging.getLogger(__name__)

FACE_SIZE = 256
LRW_MOUTH_BOX = (59, 95, 195, 231)
"""(x1, y1, x2, y2) of the mouth in a 256x256 LRW face (same as ``VideoSpec.box``)."""
HAAR_FACE_IN_LRW = (130.0, 114.0, 173.0)
"""(centre x, centre y, side) of the frontal-face Haar box on the LRW reference face."""
TRACK_DETECT_EVERY = 50
"""``--crop auto``: frames between two full-frame detections (2 s at 25 fps); the frames in
between search near the last face. Searching near it returns what the full-frame search would
for that face, so this only bounds how long an unusual grouping could differ (``haar``)."""

Box = tuple[float, float, float, float]
"""(x1, y1, x2, y2) in pixels."""
Detector = Callable[[np.ndarray], Sequence[tuple[float, float, float, float]]]
"""(H, W, 3) uint8 RGB frame -> face boxes as (x, y, w, h) in that frame's pixels."""


@dataclass(frozen=True)
class RoiResult:
    """One frame's face in LRW geometry.

    Attributes:
        face256: (256, 256, 3) uint8 RGB face, mouth inside ``LRW_MOUTH_BOX``.
        box: the mouth box mapped back into the source frame (x1, y1, x2, y2), for drawing;
            None when no face is known.
        found: a face transform is known (detected now, or held from a recent detection).
        held: the transform is held from an earlier frame (no face detected in this one).
    """

    face256: np.ndarray
    box: Box | None
    found: bool
    held: bool = False


class MouthROI(ABC):
    """Frame -> ``RoiResult``; counts frames and frames without a detected face."""

    def __init__(self) -> None:
        self.frames = 0
        self.frames_without_face = 0

    @abstractmethod
    def __call__(self, frame: np.ndarray) -> RoiResult:
        """Args: frame: (H, W, 3) uint8 RGB. Returns: the face in LRW geometry."""

    def reset(self) -> None:  # noqa: B027 (stateless ROIs need not override it)
        """Forget any state carried between frames (a new clip or a reconnect)."""


def _check_frame(frame: np.ndarray) -> None:
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise InputError(f"expected an (H, W, 3) uint8 RGB frame, got {frame.dtype} {frame.shape}")


def resize_rgb(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Bilinear resize of an (H, W, 3) uint8 RGB image (through PyAV's swscale, no OpenCV)."""
    import av

    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
    return frame.reformat(width=width, height=height, interpolation="BILINEAR").to_ndarray()


class FixedLRWBox(MouthROI):
    """``--crop lrw``: the frame is an aligned face; frames of another size are resized to 256."""

    def __call__(self, frame: np.ndarray) -> RoiResult:
        _check_frame(frame)
        self.frames += 1
        h, w = frame.shape[:2]
        same = (h, w) == (FACE_SIZE, FACE_SIZE)
        face = frame if same else resize_rgb(frame, FACE_SIZE, FACE_SIZE)
        sx, sy = w / FACE_SIZE, h / FACE_SIZE
        x1, y1, x2, y2 = LRW_MOUTH_BOX
        return RoiResult(face, (x1 * sx, y1 * sy, x2 * sx, y2 * sy), True)


class OneEuroFilter:
    """Causal one-euro filter (Casiez et al. 2012) over a parameter vector.

    A low-pass filter whose cut-off rises with the signal's speed: still faces get heavy
    smoothing (no jitter), moving faces little (no lag).

    Args:
        min_cutoff: cut-off frequency (Hz) at zero speed.
        beta: cut-off increase per unit of speed (speed in ``unit``s per second).
        d_cutoff: cut-off frequency (Hz) of the speed estimate.
    """

    def __init__(self, min_cutoff: float = 1.0, beta: float = 3.0, d_cutoff: float = 1.0):
        self.min_cutoff, self.beta, self.d_cutoff = min_cutoff, beta, d_cutoff
        self.reset()

    def reset(self) -> None:
        self._x: np.ndarray | None = None
        self._dx: np.ndarray | None = None

    @staticmethod
    def _alpha(cutoff: np.ndarray | float, dt: float) -> np.ndarray:
        tau = 1.0 / (2 * math.pi * np.asarray(cutoff, dtype=np.float64))
        return 1.0 / (1.0 + tau / dt)

    def __call__(self, x: np.ndarray, dt: float, unit: float = 1.0) -> np.ndarray:
        """Filter one sample.

        Args:
            x: (P,) float parameters at this time.
            dt: seconds since the previous sample.
            unit: scale dividing the speed before ``beta`` applies (e.g. the face size).

        Returns:
            (P,) float64 smoothed parameters.
        """
        x = np.asarray(x, dtype=np.float64)
        if self._x is None or self._dx is None:
            self._x, self._dx = x.copy(), np.zeros_like(x)
            return x.copy()
        dx = (x - self._x) / dt
        self._dx = self._dx + self._alpha(self.d_cutoff, dt) * (dx - self._dx)
        cutoff = self.min_cutoff + self.beta * np.abs(self._dx) / unit
        self._x = self._x + self._alpha(cutoff, dt) * (x - self._x)
        return self._x.copy()


def _iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    iw = max(0.0, min(ax + aw, bx + bw) - max(ax, bx))
    ih = max(0.0, min(ay + ah, by + bh) - max(ay, by))
    inter = iw * ih
    return inter / (aw * ah + bw * bh - inter) if inter > 0 else 0.0


class FaceTracker(MouthROI):
    """``--crop auto``: detect the face, map it onto the LRW geometry, smooth, hold when lost.

    Args:
        detector: frame -> face boxes (x, y, w, h); default ``HaarFaceDetector()``.
        fps: frame rate of the frames (sets the filter's time step).
        detect_every: run the detector on the whole frame on every k-th frame. In between, a
            detector that can search near a known face (a ``near(frame, box)`` method, as
            ``HaarFaceDetector`` has) is asked about the last face's neighbourhood only, and the
            whole frame is searched again when that finds nothing; for other detectors (or
            with ``track=False``) the last detection is reused. The filter runs on every frame.
        track: search near the last face between full-frame detections (see above).
        hold_frames: frames a lost face's transform is held before the tracker resets.
        min_cutoff, beta: one-euro filter settings (Hz; per face size per second).
        face_in_lrw: (centre x, centre y, side) of the detector's face box on the LRW
            reference face; defaults to the Haar calibration ``HAAR_FACE_IN_LRW``.
    """

    def __init__(
        self,
        detector: Detector | None = None,
        *,
        fps: float = FPS,
        detect_every: int = 1,
        track: bool = True,
        hold_frames: int = 12,
        min_cutoff: float = 1.0,
        beta: float = 3.0,
        face_in_lrw: tuple[float, float, float] = HAAR_FACE_IN_LRW,
    ):
        super().__init__()
        if detect_every < 1 or hold_frames < 0 or not fps > 0:
            raise InputError(
                f"FaceTracker needs detect_every >= 1, hold_frames >= 0, fps > 0; got "
                f"{detect_every}, {hold_frames}, {fps}"
            )
        self._cv2 = import_cv2()
        self.detector = detector if detector is not None else HaarFaceDetector()
        self.fps, self.detect_every, self.hold_frames = fps, detect_every, hold_frames
        self.track = track
        self.face_in_lrw = face_in_lrw
        self.filter = OneEuroFilter(min_cutoff=min_cutoff, beta=beta)
        self.frames_lost = 0
        """Frames reported with ``found=False``."""
        self.full_detections = 0
        """Frames the detector searched whole (the rest were searched near the last face)."""
        self.reset()

    def reset(self) -> None:
        self.filter.reset()
        self._params: np.ndarray | None = None  # smoothed (cx, cy, side) in source pixels
        self._last_box: tuple[float, ...] | None = None
        self._misses = 0
        self._since_update = 0

    def __call__(self, frame: np.ndarray) -> RoiResult:
        _check_frame(frame)
        self.frames += 1
        self._since_update += 1
        self._last_box = self._detect(frame)
        if self._last_box is not None:
            x, y, w, h = self._last_box
            side = (w + h) / 2
            raw = np.array([x + w / 2, y + h / 2, side])
            self._params = self.filter(raw, self._since_update / self.fps, unit=side)
            self._misses, self._since_update = 0, 0
            return self._result(frame, held=False)
        self.frames_without_face += 1
        self._misses += 1
        if self._params is not None and self._misses <= self.hold_frames:
            return self._result(frame, held=True)
        if self._params is not None:
            log.debug("face lost for %d frames: tracker reset", self._misses)
        self.filter.reset()
        self._params = None
        self.frames_lost += 1
        short = min(frame.shape[:2])
        y0, x0 = (frame.shape[0] - short) // 2, (frame.shape[1] - short) // 2
        face = resize_rgb(frame[y0 : y0 + short, x0 : x0 + short], FACE_SIZE, FACE_SIZE)
        return RoiResult(face, None, False)

    def _detect(self, frame: np.ndarray) -> tuple[float, ...] | None:
        """This frame's face box (x, y, w, h), or None (see ``detect_every``; causal)."""
        if (self.frames - 1) % self.detect_every != 0:
            near = getattr(self.detector, "near", None) if self.track else None
            if near is None:
                return self._last_box
            if self._last_box is not None:
                box = self._overlapping(near(frame, self._last_box))
                if box is not None:
                    return box
        self.full_detections += 1
        return self._pick(self.detector(frame))

    def _overlapping(self, boxes: Sequence[tuple[float, ...]]) -> tuple[float, ...] | None:
        """The detection overlapping the previous one most; None if none overlaps it."""
        last = self._last_box
        if last is None or not boxes:
            return None
        best = tuple(float(v) for v in max(boxes, key=lambda b: _iou(tuple(b), last)))
        return best if _iou(best, last) > 0 else None

    def _pick(self, boxes: Sequence[tuple[float, ...]]) -> tuple[float, ...] | None:
        """The detection overlapping the previous one most, else the largest; None if none."""
        boxes = [tuple(float(v) for v in b) for b in boxes]
        if not boxes:
            return None
        return self._overlapping(boxes) or max(boxes, key=lambda b: b[2] * b[3])

    def transform(self) -> np.ndarray | None:
        """(2, 3) float64 affine matrix mapping source pixels to LRW face pixels, if known."""
        if self._params is None:
            return None
        cx, cy, side = self._params
        ref_x, ref_y, ref_side = self.face_in_lrw
        k = ref_side / side
        return np.array([[k, 0.0, ref_x - k * cx], [0.0, k, ref_y - k * cy]])

    def _result(self, frame: np.ndarray, held: bool) -> RoiResult:
        cv2 = self._cv2
        m = self.transform()
        assert m is not None  # internal invariant: called only with a transform
        face = cv2.warpAffine(
            frame,
            m,
            (FACE_SIZE, FACE_SIZE),
            flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REPLICATE,
        )
        k, tx, ty = m[0, 0], m[0, 2], m[1, 2]
        x1, y1, x2, y2 = LRW_MOUTH_BOX
        box = ((x1 - tx) / k, (y1 - ty) / k, (x2 - tx) / k, (y2 - ty) / k)
        return RoiResult(face, box, True, held)


def make_roi(crop: str, fps: float = FPS, **kwargs: object) -> MouthROI:
    """The ROI for a ``--crop`` choice: ``lrw`` (fixed box) or ``auto`` (face tracker).

    ``auto`` tracks: a full-frame detection every ``TRACK_DETECT_EVERY`` frames (and whenever
    the face is lost), searches near the face in between. ``kwargs`` go to ``FaceTracker``;
    ``detect_every=1`` searches every frame whole (the slower behaviour before tracking), and
    is the default for a ``detector`` that cannot search near a face.
    """
    if crop == "lrw":
        return FixedLRWBox()
    if crop == "auto":
        detector = kwargs.get("detector")
        if detector is None or callable(getattr(detector, "near", None)):
            kwargs.setdefault("detect_every", TRACK_DETECT_EVERY)
        return FaceTracker(fps=fps, **kwargs)  # type: ignore[arg-type]
    raise InputError(f"unknown crop mode {crop!r}; choose from: auto, lrw")
