"""OpenCV's frontal-face Haar cascade: a full-frame search, and a cheap one near a known face.

``HaarFaceDetector(frame)`` is ``detectMultiScale`` on a grey, shrunk (at most ``max_side``
pixels), histogram-equalised copy of the frame: 15-20 ms for a 640x480 frame on a 2-core AMD
EPYC VM, most of it spent on windows nowhere near the face.

``HaarFaceDetector.near(frame, box)`` finds the same faces near ``box`` in 3-4 ms
(``benchmarks/results/roi-cpu-2026-12-01``). It
evaluates the cascade only on the windows a detection near ``box`` can be grouped from: those
whose corners lie within ``reach`` face sides of ``box``'s corners. It reproduces OpenCV's own
image pyramid exactly, so those windows see the very pixels, on the very grid, that a
full-frame call evaluates, and the grouping (``cv2.groupRectangles``, as ``detectMultiScale``
uses it) returns the same box:

- scale factors ``scale_factor ** k`` as float32, the levels OpenCV keeps for the minimum size
  (``min_face``) and the frame, each level resized with ``INTER_LINEAR_EXACT`` to
  ``round(size / factor)``;
- windows on a grid of step 2 below a factor of 2, of step 1 from 2 up, rows and columns counted
  from the level's origin; a rectangle at grid point p is ``(round(p * factor), round(24 *
  factor))``.

A level is evaluated by ``detectMultiScale`` on a crop of it, at one scale: as it is (factor 1,
step 2), or for step 1 doubled by pixel repetition and searched at factor 2 (OpenCV halves it
back exactly). Inside a crop, OpenCV skips the window after one rejected by the cascade's
first stage, counting from the crop's left edge rather than the level's, so a window at the
crop's edge can be evaluated in one call and skipped in the other; over the test videos
(``tests/test_tracking.py``) this never changed a detection. Checked against OpenCV 4.14
(``tests/test_tracking.py`` compares the raw windows of both searches).
"""

from __future__ import annotations

import math
import types
from collections.abc import Iterator

import numpy as np

from lipx.errors import BackendUnavailableError

OPENCV_PIN = "opencv-python-headless>=4.8,<5"
WINDOW = 24
"""Side of the frontal-face cascade's window (``haarcascade_frontalface_default.xml``)."""
GROUP_EPS = 0.2
"""``detectMultiScale``'s grouping tolerance."""

Rect = tuple[float, float, float, float]
"""(x, y, w, h) in pixels."""


def import_cv2() -> types.ModuleType:
    try:
        import cv2
    except ImportError as e:
        raise BackendUnavailableError(
            f"--crop auto needs OpenCV: pip install '{OPENCV_PIN}' (or use --crop lrw)"
        ) from e
    return cv2


def pyramid(
    width: int, height: int, scale_factor: float, min_size: int
) -> Iterator[tuple[np.float32, int, int, int]]:
    """OpenCV's pyramid levels for a (width, height) image: (factor, level w, level h, window).

    Same factors, rounding and limits as ``CascadeClassifier.detectMultiScale`` without a
    maximum size: windows from ``min_size`` up to the image's short side.
    """
    factor = 1.0
    while True:
        window = round(WINDOW * factor)
        if window > width or window > height:
            return
        if window >= min_size:
            f32 = np.float32(factor)
            w = int(np.rint(np.float32(width) / f32))
            h = int(np.rint(np.float32(height) / f32))
            yield f32, w, h, int(np.rint(np.float32(WINDOW) * f32))
        factor *= scale_factor


def _grid_span(lo: float, hi: float, factor: float, step: int, limit: int) -> tuple[int, int]:
    """Grid points p (multiples of ``step`` in [0, limit]) with ``p * factor`` in [lo, hi]."""
    first = max(0, math.floor(lo / factor) - 1) // step * step
    last = min(limit, math.ceil(hi / factor) + 1)
    return first, last


class HaarFaceDetector:
    """OpenCV's bundled frontal-face Haar cascade (shipped in opencv-python-headless 4.x).

    Args:
        cascade: file name inside ``cv2.data.haarcascades``.
        max_side: frames are shrunk to at most this many pixels on their long side for speed.
        min_face: smallest face to look for, as a fraction of the frame's short side.
        scale_factor, min_neighbors: ``detectMultiScale`` settings.
        reach: ``near`` evaluates the windows whose corners lie within this many face sides of
            the given box's corners. A Haar face box is the mean of raw windows up to about
            0.33 sides from it; a face that moves further between two frames loses its
            outermost windows first (a box off by a pixel or two), then is not found near.
            On the moving-astronaut videos (``lipx.benchmarks.moving_face``, faces moving up to
            30 px a frame at 640x480 and 512x512) 0.35 reproduces every full-frame box, 0.3
            each within 2 px, 0.2 within 7 px.
    """

    def __init__(
        self,
        cascade: str = "haarcascade_frontalface_default.xml",
        max_side: int = 320,
        min_face: float = 0.15,
        scale_factor: float = 1.1,
        min_neighbors: int = 4,
        reach: float = 0.35,
    ):
        cv2 = import_cv2()
        folder = getattr(getattr(cv2, "data", None), "haarcascades", None)
        if folder is None:
            raise BackendUnavailableError(
                f"OpenCV {cv2.__version__} ships no Haar cascades (5.x dropped them); "
                f"pip install '{OPENCV_PIN}'"
            )
        self._cv2 = cv2
        self._cascade = cv2.CascadeClassifier(folder + cascade)
        if self._cascade.empty():
            raise BackendUnavailableError(
                f"cannot load Haar cascade {folder + cascade}; reinstall '{OPENCV_PIN}'"
            )
        self.max_side, self.min_face = max_side, min_face
        self.scale_factor, self.min_neighbors, self.reach = scale_factor, min_neighbors, reach

    def prepare(self, frame: np.ndarray) -> tuple[np.ndarray, float]:
        """The grey, shrunk, equalised image the cascade runs on, and its scale to ``frame``."""
        cv2 = self._cv2
        h, w = frame.shape[:2]
        scale = min(1.0, self.max_side / max(h, w))
        gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
        if scale < 1.0:
            size = (max(1, round(w * scale)), max(1, round(h * scale)))
            gray = cv2.resize(gray, size, interpolation=cv2.INTER_AREA)
        return cv2.equalizeHist(gray), scale

    def _min_size(self, gray: np.ndarray) -> int:
        return max(12, int(self.min_face * min(gray.shape)))

    def __call__(self, frame: np.ndarray) -> list[Rect]:
        """Face boxes (x, y, w, h) in ``frame`` pixels, for an (H, W, 3) uint8 RGB frame."""
        gray, scale = self.prepare(frame)
        side = self._min_size(gray)
        found = self._cascade.detectMultiScale(
            gray,
            scaleFactor=self.scale_factor,
            minNeighbors=self.min_neighbors,
            minSize=(side, side),
        )
        return _scaled(found, scale)

    def near(self, frame: np.ndarray, box: Rect) -> list[Rect]:
        """The faces ``self(frame)`` finds near ``box`` (x, y, w, h in ``frame`` pixels).

        Returns the boxes (x, y, w, h, in ``frame`` pixels) grouped from the windows whose
        corners lie within ``reach`` face sides of ``box``'s corners; [] if there are none.
        """
        gray, scale = self.prepare(frame)
        x, y, w, h = box
        raw = self.raw_windows(gray, (x * scale, y * scale, w * scale, h * scale))
        if not raw:
            return []
        grouped, _ = self._cv2.groupRectangles(raw, self.min_neighbors, GROUP_EPS)
        return _scaled(grouped, scale)

    def raw_windows(self, gray: np.ndarray, box: Rect) -> list[list[int]]:
        """Ungrouped cascade hits (x, y, w, h) in ``gray`` whose corners are near ``box``'s."""
        cv2 = self._cv2
        x, y, w, h = box
        side = (w + h) / 2
        reach = self.reach * side
        rows, cols = gray.shape
        hits: list[list[int]] = []
        for factor, lw, lh, win in pyramid(cols, rows, self.scale_factor, self._min_size(gray)):
            # a window's left edge within reach of the box's left edge, its right of the right
            x_lo, x_hi = max(x, x + w - win) - reach, min(x, x + w - win) + reach
            y_lo, y_hi = max(y, y + h - win) - reach, min(y, y + h - win) + reach
            if x_lo > x_hi or y_lo > y_hi:
                continue
            step = 1 if factor >= 2 else 2
            x0, x1 = _grid_span(x_lo, x_hi, float(factor), step, lw - WINDOW)
            y0, y1 = _grid_span(y_lo, y_hi, float(factor), step, lh - WINDOW)
            if x1 < x0 or y1 < y0:
                continue
            level = cv2.resize(gray, (lw, lh), interpolation=cv2.INTER_LINEAR_EXACT)
            crop = level[y0 : y1 + WINDOW, x0 : x1 + WINDOW]
            for px, py in self._scan(crop, step):
                gx = int(np.rint(np.float32(px + x0) * factor))
                gy = int(np.rint(np.float32(py + y0) * factor))
                hits.append([gx, gy, win, win])
        return hits

    def _scan(self, crop: np.ndarray, step: int) -> list[tuple[int, int]]:
        """Grid points (in ``crop``) where the cascade accepts a window, on a grid of ``step``."""
        if step == 2:  # at factor 1 OpenCV's own step is 2
            image, factor = crop, 1
        else:  # doubled and searched at factor 2: step 1 on the very same pixels
            image, factor = np.repeat(np.repeat(crop, 2, axis=0), 2, axis=1), 2
        win = (factor * WINDOW, factor * WINDOW)
        found = self._cascade.detectMultiScale(
            image, scaleFactor=2.0, minNeighbors=0, minSize=win, maxSize=win
        )
        return [(int(a) // factor, int(b) // factor) for a, b, _, _ in _rows(found)]


def _rows(found: object) -> np.ndarray:
    """``detectMultiScale``/``groupRectangles`` output (a tuple when empty) as an (N, 4) array."""
    return np.asarray(found).reshape(-1, 4)


def _scaled(boxes: object, scale: float) -> list[Rect]:
    """(N, 4) boxes in the shrunk image -> (x, y, w, h) tuples in frame pixels."""
    return [(x / scale, y / scale, w / scale, h / scale) for x, y, w, h in _rows(boxes).tolist()]
