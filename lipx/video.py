"""Video preprocessing shared by training, streaming and evaluation (numpy only).

Frames become model input in one place: cut the fixed LRW mouth box out of a 256x256 face frame,
resize to 112x112 (bilinear), convert to luma, normalise. Training and the runtime both call this
module, so a model never sees different pixels in deployment than in training.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class VideoSpec:
    """How frames are turned into model input; stored in checkpoints and manifests."""

    fps: float = 25.0
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

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> VideoSpec:
        return cls(**{**d, "box": tuple(d["box"])})
