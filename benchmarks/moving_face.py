"""A synthetic video of a real face: scikit-image's astronaut photograph, moving smoothly.

``skimage.data.astronaut()`` (512x512, NASA, public domain) shows one frontal face. Each frame is
that photograph under a similarity transform (translation, zoom, a few degrees of rotation) that
varies smoothly with time, warped into a frame of any size with replicated borders. The face's
true geometry is known in every frame (``MovingFace.matrix``, ``MovingFace.mouth``), which lets
tests check a tracker against ground truth as well as against another tracker.

scikit-image is a test and benchmark dependency only: ``lipx.runtime`` never imports this module.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

FACE_IN_ASTRONAUT = (224.0, 114.0)
"""(x, y) of the face's centre in the 512x512 photograph (between the eyes and the mouth)."""
MOUTH_IN_ASTRONAUT = (223.0, 143.0)
"""(x, y) of the mouth's centre in the photograph (where the LRW mouth box of the Haar face
box centres on average, checked by eye)."""


def astronaut() -> np.ndarray:
    """The (512, 512, 3) uint8 RGB photograph (scikit-image's bundled copy)."""
    try:
        from skimage import data
    except ImportError as e:
        raise ImportError("the moving-face video needs: pip install scikit-image") from e
    return np.ascontiguousarray(data.astronaut())


@dataclass(frozen=True)
class MovingFace:
    """Smooth motion of the photograph's face inside a ``size`` frame.

    Attributes:
        size: (width, height) of the frames.
        frames: number of frames of one sweep (the motion's period).
        zoom: (mean, amplitude) of the photograph's scale (1.0 = native pixels).
        shift: (x, y) amplitude in pixels of the face's excursion from the frame centre.
        degrees: amplitude of the rotation.
    """

    size: tuple[int, int] = (640, 480)
    frames: int = 150
    zoom: tuple[float, float] = (1.25, 0.2)
    shift: tuple[float, float] = (110.0, 50.0)
    degrees: float = 6.0

    def pose(self, t: float) -> tuple[float, float, float, float]:
        """(centre x, centre y, scale, radians) of the face at (possibly fractional) frame t."""
        u = 2 * math.pi * t / self.frames
        w, h = self.size
        cx = w / 2 + self.shift[0] * math.sin(u)
        cy = h / 2 + self.shift[1] * math.sin(2 * u + 0.5)
        scale = self.zoom[0] + self.zoom[1] * math.sin(u + 1.0)
        return cx, cy, scale, math.radians(self.degrees) * math.sin(1.5 * u)

    def matrix(self, t: float, offset: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
        """(2, 3) affine map from photograph pixels to frame pixels at frame t (plus ``offset``)."""
        cx, cy, scale, angle = self.pose(t)
        c, s = scale * math.cos(angle), scale * math.sin(angle)
        fx, fy = FACE_IN_ASTRONAUT
        rot = np.array([[c, -s], [s, c]])
        move = np.array([cx + offset[0], cy + offset[1]]) - rot @ np.array([fx, fy])
        return np.hstack([rot, move[:, None]])

    def mouth(self, t: float, offset: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
        """(x, y) of the mouth's centre in frame t (``MOUTH_IN_ASTRONAUT`` mapped)."""
        return self.matrix(t, offset) @ np.array([*MOUTH_IN_ASTRONAUT, 1.0])

    def frame(self, t: float, photo: np.ndarray, offset: tuple[float, float] = (0.0, 0.0)):
        """The (H, W, 3) uint8 RGB frame t; ``offset`` moves the whole picture (a cut)."""
        import cv2

        return cv2.warpAffine(
            photo,
            self.matrix(t, offset),
            self.size,
            flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REPLICATE,
        )

    def video(self, photo: np.ndarray | None = None) -> list[np.ndarray]:
        """All ``frames`` frames of one sweep."""
        photo = astronaut() if photo is None else photo
        return [self.frame(t, photo) for t in range(self.frames)]
