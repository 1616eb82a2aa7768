"""The original training augmentations, on numpy arrays with an explicit random generator.

Video (both models): one horizontal-flip coin per clip (p = 0.5); one 56x56 square erased (set to
0 after normalisation, i.e. to the mean grey) at the same place in every frame, its top-left corner
drawn uniformly from [-10, 66] (GRID) or [-20, 66] (LRW) on each axis and clipped to the image;
LRW also shifts the mouth box by integers in [-5, 5] (the same shift for the whole clip). Audio
branch of lipreading: one frequency mask of width < 10 bins and one time mask of width < 20 frames
(torchaudio's FrequencyMasking / TimeMasking: width uniform in [0, max), start uniform over the
rest), set to 0 (the CMVN mean).

Every draw comes from the generator passed in, so a data set that seeds one generator per item
(seed, epoch, index) is deterministic whatever the worker layout.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class VideoAugment:
    """Which video augmentations to draw, with the original's settings."""

    flip_p: float = 0.5
    """Probability of flipping the whole clip left-right."""
    erase_size: int = 56
    """Side of the erased square (0 disables erasing)."""
    erase_low: int = -10
    """Lowest corner coordinate of the square (GRID -10, LRW -20)."""
    erase_high: int = 66
    """Highest corner coordinate (inclusive)."""
    jitter: int = 0
    """Largest crop shift in pixels (LRW 5, GRID 0)."""

    @classmethod
    def grid(cls) -> VideoAugment:
        """VCA-GAN's GRID augmentation: flip and erasing from [-10, 66], no jitter."""
        return cls()

    @classmethod
    def lrw(cls) -> VideoAugment:
        """The lipreading model's LRW augmentation: flip, erasing from [-20, 66], +-5 px jitter."""
        return cls(erase_low=-20, jitter=5)


@dataclass(frozen=True)
class VideoDraw:
    """One clip's random choices."""

    flip: bool
    corner: tuple[int, int] | None
    """(x, y) of the erased square's top-left, or None."""
    shift: tuple[int, int]
    """(dx, dy) crop jitter."""


def draw_video(rng: np.random.Generator, aug: VideoAugment) -> VideoDraw:
    """Draw one clip's flip, erase corner and crop shift."""
    shift = tuple(int(v) for v in rng.integers(-aug.jitter, aug.jitter + 1, size=2))
    flip = bool(rng.random() < aug.flip_p)
    corner = None
    if aug.erase_size > 0:
        corner = tuple(int(v) for v in rng.integers(aug.erase_low, aug.erase_high + 1, size=2))
    return VideoDraw(flip=flip, corner=corner, shift=shift)  # type: ignore[arg-type]


def flip_clip(frames: np.ndarray) -> np.ndarray:
    """Mirror (..., H, W) frames left-right (a copy)."""
    return np.ascontiguousarray(frames[..., ::-1])


def erase(frames: np.ndarray, corner: tuple[int, int], size: int, value: float = 0.0) -> np.ndarray:
    """Set the square [y, y + size) x [x, x + size), clipped to the image, in every frame (a copy).

    Args:
        frames: (..., H, W) float32, normalised.
        corner: (x, y) top-left, may be negative.
    """
    out = np.array(frames, copy=True)
    x, y = corner
    h, w = out.shape[-2:]
    out[..., max(0, y):min(h, y + size), max(0, x):min(w, x + size)] = value
    return out


def apply_video(frames: np.ndarray, draw: VideoDraw, size: int) -> np.ndarray:
    """Flip and erase (T, H, W) normalised frames as drawn (the shift is applied when cropping)."""
    if draw.flip:
        frames = flip_clip(frames)
    if draw.corner is not None:
        frames = erase(frames, draw.corner, size)
    return frames


def _mask(x: np.ndarray, rng: np.random.Generator, max_width: int, axis: int) -> np.ndarray:
    length = x.shape[axis]
    width = rng.uniform(0.0, max_width)
    start = rng.uniform(0.0, max(length - width, 0.0))
    lo, hi = int(start), int(start + width)
    index = [slice(None)] * x.ndim
    index[axis] = slice(lo, hi)
    x[tuple(index)] = 0.0
    return x


def spec_augment(features: np.ndarray, rng: np.random.Generator, max_freq: int = 10,
                 max_time: int = 20) -> np.ndarray:
    """One frequency mask and one time mask on (..., n_mels, F) features (a copy)."""
    out = np.array(features, np.float32, copy=True)
    _mask(out, rng, max_freq, axis=-2)
    return _mask(out, rng, max_time, axis=-1)
