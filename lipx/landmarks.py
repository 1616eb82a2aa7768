"""Facial landmarks: the original's text format, the reference face, and similarity alignment.

The text format (one file per video, as distributed with VCA-GAN's GRID landmarks and as
``lrw_reference_face_98.txt``): ``<path>:`` then the frames separated by ``|``, the points of a
frame separated by ``,``, each point ``x y`` in pixels::

    ABOUT/test/ABOUT_00001.mp4:71 98,71 106,...|71 96,71 104,...

A frame without points (empty between two ``|``) is a frame where no face was found; it parses to
NaN points. GRID frames are aligned to LRW's face geometry by a similarity transform (rotation,
uniform scale, translation) fitted by least squares (Umeyama) on all 98 points to frame 6 of the
packaged LRW reference face, then warped with bilinear interpolation and black borders.

A model's :class:`Framing` says how the faces it was trained on were framed, so that
``--crop auto`` can fit a tracked face the same way: all 98 points to that reference face
(``landmarks``, the GRID alignment above), or the stable points to the synthetic renderer's
average face (``synthetic``, the LRW layout of ``lipx data synth``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import cache, lru_cache
from importlib import resources
from pathlib import Path

import numpy as np

from lipx.errors import InputError

log = logging.getLogger(__name__)

N_POINTS = 98
"""Points per frame in the WFLW layout the original uses."""
REFERENCE_FRAME = 6
"""Frame of the LRW reference clip (ABOUT_00001) the original aligns to."""


def parse_landmarks(text: str) -> tuple[str, np.ndarray]:
    """Parse one landmark line.

    Returns:
        (the path before the colon, or "" if absent; (T, P, 2) float32 points, NaN for frames
        without points).

    Raises:
        InputError: a point is not two numbers, or frames have different point counts.
    """
    text = text.strip()
    head, _, _ = text.partition("|")
    path, colon, _ = head.rpartition(":")
    body = text[len(path) + 1:] if colon else text
    frames = []
    for i, frame in enumerate(body.split("|")):
        points = [p.split() for p in frame.split(",") if p.strip()]
        if any(len(p) != 2 for p in points):
            raise InputError(f"landmark frame {i} of {path or 'the file'}: expected 'x y' points "
                             "separated by ',', got a point without exactly two numbers")
        try:
            frames.append(np.asarray(points, np.float32).reshape(-1, 2))
        except ValueError as e:
            raise InputError(f"landmark frame {i} of {path or 'the file'}: {e}") from e
    counts = {len(f) for f in frames if len(f)}
    if len(counts) > 1:
        raise InputError(f"landmarks of {path or 'the file'} have frames with different point "
                         f"counts {sorted(counts)}; expected the same count in every frame")
    n = counts.pop() if counts else 0
    out = np.full((len(frames), n, 2), np.nan, np.float32)
    for i, f in enumerate(frames):
        if len(f):
            out[i] = f
    return path, out


def read_landmarks(file: str | Path) -> np.ndarray:
    """Read a landmark file. Returns (T, P, 2) float32 (NaN for frames without points).

    Raises:
        InputError: the file is missing, empty or malformed.
    """
    try:
        text = Path(file).read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"cannot read landmark file {file}: {e}") from e
    if not text.strip():
        raise InputError(f"landmark file {file} is empty; expected 'path:x y,x y,...|...'")
    return parse_landmarks(text)[1]


def _number(v: float) -> str:
    return f"{round(float(v), 2):g}"


def format_landmarks(path: str, frames: np.ndarray) -> str:
    """Format landmarks as one line of the original's text format (no trailing newline).

    Args:
        path: the video path written before the colon (informational).
        frames: (T, P, 2) points in pixels; rounded to 2 decimals, integers written without a
            decimal point. A frame of NaN points is written empty (no face found).

    Returns:
        ``"<path>:x y,x y,...|x y,..."``.
    """
    frames = np.asarray(frames, np.float64)
    if frames.ndim != 3 or frames.shape[-1] != 2:
        raise InputError(f"landmarks must have shape (T, P, 2), got {frames.shape}")
    parts = []
    for frame in frames:
        if np.isnan(frame).any():
            parts.append("")
        else:
            parts.append(",".join(f"{_number(x)} {_number(y)}" for x, y in frame))
    return f"{path}:" + "|".join(parts)


def write_landmarks(file: str | Path, path: str, frames: np.ndarray) -> None:
    """Write :func:`format_landmarks` to ``file`` (parent folders created)."""
    file = Path(file)
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_text(format_landmarks(path, frames))


@lru_cache(maxsize=1)
def reference_face() -> np.ndarray:
    """(98, 2) float32: frame 6 of LRW ``ABOUT_00001`` in the 256x256 face frame (read-only)."""
    text = resources.files("lipx").joinpath("assets/lrw_reference_face_98.txt").read_text()
    points = parse_landmarks(text)[1][REFERENCE_FRAME].copy()
    points.flags.writeable = False
    return points


SYNTHETIC_FACE = "assets/synthetic_face_98.txt"
"""The synthetic renderer's average face (:func:`lipx.data.render.average_face`, written by
``scripts/synthetic_face.py``)."""
STABLE_POINTS = np.r_[51:76, 96, 97]
"""WFLW points that move with the head, not with speech or face shape much: the nose (51-59),
the eyes (60-75) and the pupils (96, 97). The jaw and the mouth move with every word, and the
brows with expression."""


@dataclass(frozen=True)
class Framing:
    """How the faces a model was trained on were framed: the 256x256 face frame its mouth box
    is cut from, as a reference face and the points of a face's landmarks fitted onto it.

    ``--crop auto`` fits a tracked face the same way, so the model sees the crop it was
    trained on. Named in :attr:`lipx.video.VideoSpec.framing` (checkpoints and packages).
    """

    name: str
    reference: np.ndarray
    """(98, 2) the reference face in the 256x256 face frame."""
    points: np.ndarray
    """Indices of the fitted points."""

    def fit(self, landmarks: np.ndarray) -> np.ndarray:
        """(2, 3) similarity from a face's (98, 2) landmarks' pixels to the face frame."""
        return similarity_transform(landmarks[self.points], self.reference[self.points])


FRAMINGS = {
    "landmarks": "all 98 landmarks fitted to LRW's reference face (ABOUT_00001, frame 6): how "
                 "`lipx data prepare` aligns a corpus with landmark files, such as GRID",
    "synthetic": "the nose, eyes and pupils fitted to the average face of `lipx data synth`'s "
                 "renderer: how its LRW layout frames a face (which does not follow the jaw "
                 "or the mouth)",
}
"""The framings by name, with what each means."""


@cache
def named_framing(name: str) -> Framing:
    """The framing called ``name`` (one of :data:`FRAMINGS`).

    Raises:
        InputError: an unknown name.
    """
    if name == "landmarks":
        return Framing(name, reference_face(), np.arange(N_POINTS))
    if name == "synthetic":
        text = resources.files("lipx").joinpath(SYNTHETIC_FACE).read_text()
        reference = parse_landmarks(text)[1][0]
        reference.flags.writeable = False
        return Framing(name, reference, STABLE_POINTS)
    raise InputError(f"unknown face framing {name!r}; expected one of {', '.join(FRAMINGS)}")


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity transform mapping ``src`` points onto ``dst`` (Umeyama, 1991).

    Args:
        src, dst: (P, 2) corresponding points, P >= 2, not all equal.

    Returns:
        (2, 3) float64 matrix M with dst ~= M @ [x, y, 1].
    """
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or len(src) < 2:
        raise InputError(f"need two matching (P, 2) point sets, got {src.shape} and {dst.shape}")
    mu_s, mu_d = src.mean(0), dst.mean(0)
    xs, xd = src - mu_s, dst - mu_d
    var_s = float((xs**2).sum(1).mean())
    if var_s < 1e-12:
        raise InputError("landmarks are degenerate (all points equal); cannot fit a transform")
    u, s, vt = np.linalg.svd(xd.T @ xs / len(src))
    d = np.array([1.0, np.sign(np.linalg.det(u) * np.linalg.det(vt)) or 1.0])
    rotation = u @ np.diag(d) @ vt
    scale = float((s * d).sum()) / var_s
    shift = mu_d - scale * rotation @ mu_s
    return np.hstack([scale * rotation, shift[:, None]])


def align_face(image: np.ndarray, points: np.ndarray, reference: np.ndarray | None = None,
               size: int = 256, origin: tuple[int, int] = (0, 0),
               out_size: int | None = None) -> np.ndarray:
    """Warp a frame so its landmarks land on the reference face (LRW's 256x256 geometry).

    Args:
        image: (H, W) or (H, W, 3) uint8 frame.
        points: (P, 2) landmarks of this frame, in its pixels.
        reference: (P, 2) target points; default :func:`reference_face`.
        size: side of the aligned face frame.
        origin, out_size: return only the square of side ``out_size`` whose top-left is at
            ``origin`` (x, y) of the aligned face (e.g. the mouth region), warping only that.

    Returns:
        (out_size or size, same) uint8, with the channels of ``image``.
    """
    import cv2  # lazy: only alignment needs OpenCV

    reference = reference_face() if reference is None else reference
    matrix = similarity_transform(points, reference)
    matrix[:, 2] -= origin
    side = size if out_size is None else out_size
    return cv2.warpAffine(image, matrix, (side, side), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def one_opencv_thread() -> None:
    """Limit OpenCV to one thread: the initializer of worker processes that each render or warp
    frames (``lipx data synth``, decoding training streams), where its pool would only fight the
    other workers for the cores."""
    import cv2

    cv2.setNumThreads(1)


def warp_face(image: np.ndarray, matrix: np.ndarray,
              size: int | tuple[int, int] = 256) -> np.ndarray:
    """Warp a frame by a (2, 3) matrix into the ``size`` face frame (or a (width, height) one).

    The warp of ``--crop auto`` (:mod:`lipx.runtime.landmark_tracker`), of ``lipx data
    prepare``'s clips without landmark files and of ``--wild`` streams (the face placed in a
    larger frame): bilinear, borders replicated (a face near the frame's edge gets no black band
    the model never saw in training).

    Returns:
        (height, width[, 3]) uint8, with the channels of ``image``.
    """
    import cv2  # lazy: only alignment needs OpenCV

    shape = (size, size) if isinstance(size, int) else size
    return cv2.warpAffine(image, matrix, shape, flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)
