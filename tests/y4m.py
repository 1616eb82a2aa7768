"""A YUV4MPEG2 (Y4M) writer: the file format Chromium's fake camera plays.

    write_y4m(tmp / "face.y4m", frames, fps=25)   # frames: (H, W, 3) uint8 RGB, sides even

Chromium's ``--use-file-for-fake-video-capture=FILE.y4m`` loops such a file as its camera, which
is how the page's test shows a real browser a known video. Frames are written 4:2:0 (``C420jpeg``):
after the header, each frame is ``FRAME\\n`` then its Y, U and V planes.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np


def write_y4m(path: Path, frames_rgb: Iterable[np.ndarray], fps: int = 25) -> Path:
    """Write ``frames_rgb`` to the Y4M file ``path``.

    Args:
        path: the file to write.
        frames_rgb: (H, W, 3) uint8 RGB frames, all of one size, H and W even.
        fps: frames per second, written to the header as ``F{fps}:1``.
    Returns:
        ``path``.
    Raises:
        ValueError: no frames, a frame of another size or dtype, or an odd side.
    """
    import cv2

    size = None
    with open(path, "wb") as f:
        for rgb in frames_rgb:
            if size is None:
                size = _check_first(rgb)
                f.write(f"YUV4MPEG2 W{size[1]} H{size[0]} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
            elif rgb.shape != (*size, 3) or rgb.dtype != np.uint8:
                raise ValueError(f"every frame must be {size[1]}x{size[0]} uint8 RGB like the "
                                 f"first; got {rgb.shape} {rgb.dtype}")
            f.write(b"FRAME\n")
            # (H * 3 / 2, W) uint8: the Y plane, then U and V, each (H / 2) x (W / 2), flat
            f.write(cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2YUV_I420).tobytes())
    if size is None:
        raise ValueError(f"no frames to write to {path}")
    return path


def _check_first(rgb: np.ndarray) -> tuple[int, int]:
    """The (H, W) of the first frame, once it is known to be writable."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"frames must be (H, W, 3) uint8 RGB; got {rgb.shape} {rgb.dtype}")
    h, w = rgb.shape[:2]
    if h % 2 or w % 2:
        raise ValueError(f"4:2:0 needs even sides; got {w}x{h}")
    return h, w
