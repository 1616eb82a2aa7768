"""Video preprocessing shared by training, streaming and evaluation (numpy only).

Frames become model input in one place: cut the fixed LRW mouth box out of a 256x256 face frame,
resize to 112x112 (bilinear), convert to luma, normalise. Training and the runtime both call this
module, so a model never sees different pixels in deployment than in training.

Order and rounding. The original converts to grayscale after resizing the RGB crop (PIL:
resize, then ``convert("L")``, each rounding to uint8). Here luma comes first, rounded to uint8
exactly as PIL's ``convert("L")`` does, and the resize runs in float32 without rounding. Both steps
are linear, so the two orders agree up to rounding (at most about one grey level). Prepared training
data stores the same uint8 luma, so training and streaming see identical pixels.

Resize. :func:`resize_bilinear` reproduces PIL's (and so torchvision's on PIL images) bilinear
resize: when shrinking, the triangle filter is stretched by the scale factor (antialiasing), so
136 -> 112 averages over about 2.4 input pixels per output pixel. It is computed as two small
matrix products (precomputed weights), in float32; PIL rounds to uint8 after each pass, the
difference is below one grey level.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from lipx.errors import InputError

log = logging.getLogger(__name__)

FPS = 25.0
"""Frame rate of lipx (frames per second): GRID's and LRW's, what the models are trained at and
what sources are resampled to; the default wherever a frame rate is not given."""


@dataclass(frozen=True)
class VideoSpec:
    """How frames are turned into model input; stored in checkpoints and manifests."""

    fps: float = FPS
    """Frame rate the model was trained at."""
    face_size: int = 256
    """Side of the aligned face frame the mouth box is cut from (LRW geometry)."""
    box: tuple[int, int, int, int] = (59, 95, 195, 231)
    """Mouth box (x1, y1, x2, y2) in the face frame (LRW's fixed box, 136x136)."""
    size: int = 112
    """Side of the resized mouth crop."""
    grayscale: bool = True
    """Convert to luma (0.299 R + 0.587 G + 0.114 B)."""
    mean: float = 0.4136
    """Normalisation mean, on [0, 1] pixel values."""
    std: float = 0.1700
    """Normalisation standard deviation."""
    framing: str = "landmarks"
    """How the training faces were framed in the face frame (:data:`lipx.landmarks.FRAMINGS`):
    what ``--crop auto`` fits a tracked face to."""

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> VideoSpec:
        return cls(**{**d, "box": tuple(d["box"])})


# --- decoding -------------------------------------------------------------------------------


def iter_frames(path: str | Path) -> Iterator[tuple[float, np.ndarray]]:
    """Decode the first video stream with PyAV.

    Yields:
        (time in seconds from the first frame, (H, W, 3) uint8 RGB frame).

    Raises:
        InputError: the file is missing, has no video stream, or cannot be decoded (corrupt or
            truncated).
    """
    import av  # lazy: only decoding needs PyAV

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise InputError(f"{path}: no video stream; expected a video file")
            stream = container.streams.video[0]
            rate = float(stream.average_rate or FPS)
            start = None
            for i, frame in enumerate(container.decode(stream)):
                t = frame.time if frame.time is not None else i / rate
                start = t if start is None else start
                yield t - start, frame.to_ndarray(format="rgb24")
    except (av.error.FFmpegError, OSError) as e:
        raise InputError(f"{path}: cannot decode video ({e}); the file may be corrupt or "
                         "truncated") from e


def resample_indices(times: np.ndarray, fps: float) -> np.ndarray:
    """Source frame per output frame when resampling to ``fps``: the frame nearest each tick.

    Output tick k is at k / fps; the clip lasts until the last frame's time plus one median
    source frame interval, and the output has round(duration * fps) frames. A 25 fps source
    maps to itself; faster sources drop frames, slower ones repeat them.

    Args:
        times: (N,) increasing presentation times in seconds, first at 0.

    Returns:
        (M,) int64 indices into ``times``.
    """
    times = np.asarray(times, np.float64)
    if times.size == 0:
        return np.zeros(0, np.int64)
    step = float(np.median(np.diff(times))) if times.size > 1 else 1.0 / fps
    count = max(1, int(round((times[-1] + step) * fps)))
    ticks = np.arange(count) / fps
    right = np.clip(np.searchsorted(times, ticks), 1, max(times.size - 1, 1))
    left = right - 1
    gap_right = np.abs(times[np.minimum(right, times.size - 1)] - ticks)
    nearer_right = gap_right < np.abs(times[left] - ticks) - 1e-6  # ties go to the earlier frame
    return np.where(nearer_right, right, left).clip(0, times.size - 1)


def resample_frames(times: list[float] | np.ndarray, frames: list[np.ndarray],
                    fps: float) -> np.ndarray:
    """Stack decoded frames resampled to ``fps`` by their times (see :func:`resample_indices`).

    Returns:
        (T, ...) array of the frames' dtype.
    """
    times = np.asarray(times, np.float64)
    order = np.argsort(times, kind="stable")
    idx = order[resample_indices(times[order], fps)]
    return np.stack([frames[i] for i in idx])


def read_video(path: str | Path, fps: float = FPS) -> np.ndarray:
    """Decode a whole video to RGB frames resampled to ``fps`` (by timestamps).

    Returns:
        (T, H, W, 3) uint8.

    Raises:
        InputError: missing, corrupt or truncated file, or no frames.
    """
    times, frames = [], []
    for t, frame in iter_frames(path):
        times.append(t)
        frames.append(frame)
    if not frames:
        raise InputError(f"{path}: no video frames could be decoded")
    return resample_frames(times, frames, fps)


# --- per-frame pixels -----------------------------------------------------------------------


def to_luma(rgb: np.ndarray) -> np.ndarray:
    """RGB -> luma 0.299 R + 0.587 G + 0.114 B, rounded as PIL's ``convert("L")``.

    Args:
        rgb: (..., H, W, 3) uint8.

    Returns:
        (..., H, W) uint8. A (..., H, W) input is returned unchanged (already grey).
    """
    if rgb.ndim < 3 or rgb.shape[-1] != 3:
        return rgb
    weights = np.array([19595, 38470, 7471], np.uint32)  # 0.299, 0.587, 0.114 in 16-bit fixed point
    return ((rgb.astype(np.uint32) @ weights + 0x8000) >> 16).astype(np.uint8)


def crop_box(frames: np.ndarray, box: tuple[int, int, int, int], origin: tuple[int, int] = (0, 0),
             shift: tuple[int, int] = (0, 0)) -> np.ndarray:
    """Cut box (x1, y1, x2, y2), moved by ``shift`` (dx, dy), out of frames.

    Args:
        frames: (..., H, W) or (..., H, W, 3) array whose pixel [0, 0] sits at ``origin`` (x, y)
            of the face frame (a stored region of a face frame has a non-zero origin).

    Returns:
        A view of the box (no copy).

    Raises:
        InputError: the box does not fit inside the frames.
    """
    rgb = frames.ndim >= 3 and frames.shape[-1] == 3
    h, w = frames.shape[-3:-1] if rgb else frames.shape[-2:]
    x1, y1 = box[0] + shift[0] - origin[0], box[1] + shift[1] - origin[1]
    x2, y2 = box[2] + shift[0] - origin[0], box[3] + shift[1] - origin[1]
    if x1 < 0 or y1 < 0 or x2 > w or y2 > h:
        raise InputError(f"mouth box {box} shifted by {shift} does not fit a {w}x{h} frame at "
                         f"origin {origin}; expected {box[2]}x{box[3]} or larger face frames")
    return frames[..., y1:y2, x1:x2, :] if rgb else frames[..., y1:y2, x1:x2]


@lru_cache(maxsize=32)
def resize_weights(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) float32 PIL-style bilinear weights (triangle stretched when shrinking)."""
    scale = n_in / n_out
    stretch = max(scale, 1.0)
    centres = (np.arange(n_out) + 0.5) * scale
    lo = np.maximum(np.floor(centres - stretch + 0.5), 0)
    hi = np.minimum(np.floor(centres + stretch + 0.5), n_in)
    x = np.arange(n_in)[None, :]
    w = np.maximum(0.0, 1.0 - np.abs((x - centres[:, None] + 0.5) / stretch))
    w *= (x >= lo[:, None]) & (x < hi[:, None])
    w = (w / w.sum(axis=1, keepdims=True)).astype(np.float32)
    w.flags.writeable = False
    return w


def resize_bilinear(images: np.ndarray, size: int) -> np.ndarray:
    """Resize (..., H, W) grey images to (..., size, size) float32 (PIL bilinear semantics)."""
    rows = resize_weights(images.shape[-2], size)
    cols = resize_weights(images.shape[-1], size)
    return rows @ images.astype(np.float32) @ cols.T


def normalise(pixels: np.ndarray, spec: VideoSpec) -> np.ndarray:
    """Pixel values in [0, 255] -> (x / 255 - mean) / std, float32."""
    return ((np.asarray(pixels, np.float32) / 255.0 - spec.mean) / spec.std).astype(np.float32)


def denormalise(x: np.ndarray, spec: VideoSpec) -> np.ndarray:
    """Model input -> uint8 pixels for visualisation (inverse of :func:`normalise`, clipped)."""
    pixels = (np.asarray(x, np.float32) * spec.std + spec.mean) * 255.0
    return np.clip(np.rint(pixels), 0, 255).astype(np.uint8)


def mouth_crop(frames: np.ndarray, spec: VideoSpec, origin: tuple[int, int] = (0, 0),
               shift: tuple[int, int] = (0, 0)) -> np.ndarray:
    """Face frames -> normalised mouth crops (box, resize, luma, normalise).

    Works on one frame or a clip: (H, W, 3) / (H, W) -> (size, size), and (T, H, W, 3) /
    (T, H, W) -> (T, size, size). Grey (uint8 luma) input skips the luma step.

    Args:
        frames: uint8 RGB or luma face frames (256x256 LRW geometry), or a stored region of
            them whose pixel [0, 0] is at ``origin`` (x, y) of the face frame.
        shift: (dx, dy) moves the box (crop jitter).

    Returns:
        float32, normalised with the spec's mean and std.
    """
    if not spec.grayscale:
        raise InputError("colour mouth crops are not supported; the models take luma "
                         "(grayscale=True)")
    grey = to_luma(crop_box(frames, spec.box, origin, shift))
    return normalise(resize_bilinear(grey, spec.size), spec)


def mouth_crop_frame(frame: np.ndarray, spec: VideoSpec,
                     shift: tuple[int, int] = (0, 0)) -> np.ndarray:
    """One (H, W, 3) or (H, W) uint8 face frame -> (size, size) float32 (streaming, per frame)."""
    if frame.ndim not in (2, 3):
        raise InputError(f"expected one frame (H, W) or (H, W, 3), got shape {frame.shape}")
    return mouth_crop(frame, spec, shift=shift)


def region_origin(spec: VideoSpec, margin: int) -> tuple[int, int]:
    """(x, y) of the top-left of the mouth box grown by ``margin`` on every side."""
    return spec.box[0] - margin, spec.box[1] - margin


def mouth_region(frames: np.ndarray, spec: VideoSpec, margin: int) -> np.ndarray:
    """The uint8 luma mouth box plus ``margin`` px on each side, as prepared data stores it.

    Args:
        frames: (..., H, W, 3) or (..., H, W) uint8 face frames (LRW geometry).

    Returns:
        (..., box_h + 2 margin, box_w + 2 margin) uint8; :func:`mouth_crop` with
        ``origin=region_origin(spec, margin)`` turns it into model input.
    """
    x1, y1, x2, y2 = spec.box
    grown = (x1 - margin, y1 - margin, x2 + margin, y2 + margin)
    return np.ascontiguousarray(to_luma(crop_box(frames, grown)))
