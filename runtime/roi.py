"""Mouth region of interest: turn any frame into a 256x256 face in LRW geometry.

Models are trained on 256x256 faces where the mouth sits in LRW's fixed box (59, 95, 195, 231);
``lipx.video`` cuts that box out. A ``MouthROI`` produces such a face from a source frame:

- ``FixedLRWBox`` (``--crop lrw``): the input already is an aligned face (LRW, prepared GRID,
  synthetic data): passed through, or resized to 256x256 (whole frame, aspect not kept) when it
  has another size.
- ``LandmarkTracker`` (``--crop auto``, :mod:`lipx.runtime.landmark_tracker`): a face detector
  and a face mesh tracked from frame to frame, a similarity transform (rotation included) from
  stable mesh points to the LRW reference face, causal smoothing, the warp to 256x256: the crop
  ``lipx data prepare`` cuts for training.
"""

from __future__ import annotations

import logging
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from lipx.errors import InputError
from lipx.video import FPS

log = logging.getLogger(__name__)

FACE_SIZE = 256
LRW_MOUTH_BOX = (59, 95, 195, 231)
"""(x1, y1, x2, y2) of the mouth in a 256x256 LRW face (same as ``VideoSpec.box``)."""
Box = tuple[float, float, float, float]
"""(x1, y1, x2, y2) in pixels."""


@dataclass(frozen=True)
class RoiResult:
    """One frame's face in LRW geometry.

    Attributes:
        face256: (256, 256, 3) uint8 RGB face, mouth inside ``LRW_MOUTH_BOX``.
        box: the mouth box mapped back into the source frame (x1, y1, x2, y2), for drawing;
            None when no face is known.
        found: a face transform is known (detected now, or held from a recent detection).
        held: the transform is held from an earlier frame (no face detected in this one).
        corners: (4, 2) float64 corners of the mouth box in the source frame (top-left,
            top-right, bottom-right, bottom-left of ``LRW_MOUTH_BOX``; rotated with the face),
            None when no face is known; ``box`` is their bounding box.
    """

    face256: np.ndarray
    box: Box | None
    found: bool
    held: bool = False
    corners: np.ndarray | None = None


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


def check_frame(frame: np.ndarray) -> None:
    """InputError unless ``frame`` is an (H, W, 3) uint8 RGB image."""
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise InputError(f"expected an (H, W, 3) uint8 RGB frame, got {frame.dtype} {frame.shape}")


def resize_rgb(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Bilinear resize of an (H, W, 3) uint8 RGB image (through PyAV's swscale, no OpenCV)."""
    import av

    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
    return frame.reformat(width=width, height=height, interpolation="BILINEAR").to_ndarray()


def centre_face(frame: np.ndarray) -> np.ndarray:
    """The frame's central square resized to 256x256: what a tracker shows without a face."""
    short = min(frame.shape[:2])
    y0, x0 = (frame.shape[0] - short) // 2, (frame.shape[1] - short) // 2
    return resize_rgb(frame[y0 : y0 + short, x0 : x0 + short], FACE_SIZE, FACE_SIZE)


def box_corners(box: Box) -> np.ndarray:
    """(4, 2) corners of an axis-aligned box: top-left, top-right, bottom-right, bottom-left."""
    x1, y1, x2, y2 = box
    return np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2]], np.float64)


class FixedLRWBox(MouthROI):
    """``--crop lrw``: the frame is an aligned face; frames of another size are resized to 256."""

    def __call__(self, frame: np.ndarray) -> RoiResult:
        check_frame(frame)
        self.frames += 1
        h, w = frame.shape[:2]
        same = (h, w) == (FACE_SIZE, FACE_SIZE)
        face = frame if same else resize_rgb(frame, FACE_SIZE, FACE_SIZE)
        sx, sy = w / FACE_SIZE, h / FACE_SIZE
        x1, y1, x2, y2 = LRW_MOUTH_BOX
        box = (x1 * sx, y1 * sy, x2 * sx, y2 * sy)
        return RoiResult(face, box, True, corners=box_corners(box))


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


CROPS = ("lrw", "auto")
"""The ``--crop`` choices: a fixed box of an aligned face, or the landmark tracker."""


def check_crop(crop: str) -> None:
    """InputError unless ``crop`` is one of :data:`CROPS`."""
    if crop not in CROPS:
        raise InputError(f"unknown --crop {crop!r}; choose from: {', '.join(CROPS)}")


def make_roi(crop: str, fps: float = FPS, **kwargs: object) -> MouthROI:
    """The ROI for a ``--crop`` choice: ``lrw`` (fixed box) or ``auto`` (landmark tracker).

    ``kwargs`` go to :class:`~lipx.runtime.landmark_tracker.LandmarkTracker` (``device``,
    ``hold_frames``, filter settings, or the face models themselves).
    """
    if crop == "lrw":
        return FixedLRWBox()
    if crop == "auto":
        from lipx.runtime.landmark_tracker import LandmarkTracker

        return LandmarkTracker(fps=fps, **kwargs)  # type: ignore[arg-type]
    raise InputError(f"unknown crop mode {crop!r}; choose from: auto, lrw")
