"""Streams "in the wild": an aligned 256x256 face stream placed in a larger frame, moving.

``lipx data synth --layout lrw-streams --wild`` renders each stream as usual (a face in LRW
geometry, the mouth in the LRW box), then warps every frame into a 640x480 frame by a similarity
transform that changes smoothly over time: the face wanders over the frame, grows and shrinks
(0.85-1.35 times, a face about 130-210 px wide) and turns in the image plane by up to +-20
degrees. The borders are replicated (no black frame edge for a detector to latch onto). The true
transform of every frame is written beside the video (``NAME.wild.json``), so a tracker's mouth
box can be checked against the truth, and the same stream without ``--wild`` is its aligned twin
(``--crop lrw``): the same words, the same face, the same pixels before the warp.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from lipx.files import atomic_write
from lipx.landmarks import warp_face
from lipx.video import FPS

WILD_SIZE = (640, 480)
MAX_DEGREES = 20.0
SCALES = (0.85, 1.35)


def _wave(rng: np.random.Generator, t: np.ndarray) -> np.ndarray:
    """A smooth signal in [-1, 1]: the mean of two slow sinusoids with random phases."""
    f = rng.uniform(0.05, 0.3, 2)
    ph = rng.uniform(0, 2 * np.pi, 2)
    return 0.5 * (np.sin(2 * np.pi * f[0] * t + ph[0]) + np.sin(2 * np.pi * f[1] * t + ph[1]))


def wild_motion(rng: np.random.Generator, n_frames: int, size: tuple[int, int] = WILD_SIZE,
                face: int = 256, fps: float = FPS) -> np.ndarray:
    """(T, 2, 3) float64 matrices mapping the ``face``-px aligned frame into a ``size`` frame.

    Rotation about the face's centre within +-``MAX_DEGREES``, scale within ``SCALES``, the
    centre kept far enough from the edges that the face (not the whole square) stays inside.
    """
    t = np.arange(n_frames) / fps
    w, h = size
    angle = np.deg2rad(MAX_DEGREES) * np.clip(1.15 * _wave(rng, t), -1, 1)
    lo, hi = SCALES
    scale = (lo + hi) / 2 + (hi - lo) / 2 * _wave(rng, t)
    reach_x, reach_y = w / 2 - 0.35 * face * hi, h / 2 - 0.4 * face * hi
    cx = w / 2 + reach_x * _wave(rng, t)
    cy = h / 2 + reach_y * _wave(rng, t)
    out = np.empty((n_frames, 2, 3))
    centre = np.array([face / 2, face / 2])
    for i in range(n_frames):
        c, s = scale[i] * math.cos(angle[i]), scale[i] * math.sin(angle[i])
        rot = np.array([[c, -s], [s, c]])
        out[i] = np.concatenate([rot, (np.array([cx[i], cy[i]]) - rot @ centre)[:, None]], 1)
    return out


def place_in_wild(frames: np.ndarray, matrices: np.ndarray,
                  size: tuple[int, int] = WILD_SIZE) -> np.ndarray:
    """Warp each (H, W, 3) frame by its matrix into a ``size`` frame (bilinear, borders
    replicated). Returns (T, size[1], size[0], 3) uint8."""
    out = np.empty((len(frames), size[1], size[0], 3), np.uint8)
    for i, (frame, m) in enumerate(zip(frames, matrices, strict=True)):
        out[i] = warp_face(frame, m, size)
    return out


def write_truth(path: Path, matrices: np.ndarray, landmarks: np.ndarray | None = None,
                size: tuple[int, int] = WILD_SIZE) -> None:
    """Write the per-frame transforms as JSON (atomically).

    ``matrices`` map the stream's 256x256 frame into the wild frame (where ``--crop lrw`` of
    the aligned twin puts the mouth box). With the drawn face's true ``landmarks`` (in the
    256 frame), ``landmarks`` holds them in wild-frame pixels ((T, 98, 2), 2 decimals) and
    ``aligned``, per frame, the similarity from wild-frame pixels to the LRW face fitted on all
    98 of them (the alignment ``lipx data prepare`` does with landmarks).
    """
    from lipx.landmarks import named_framing

    doc: dict = {"size": list(size), "maps": "aligned 256x256 LRW face pixels -> frame pixels",
                 "matrices": [[round(float(v), 6) for v in m.ravel()] for m in matrices]}
    if landmarks is not None:
        fit = named_framing("landmarks").fit
        placed = [p @ m[:, :2].T + m[:, 2] for p, m in zip(landmarks, matrices, strict=True)]
        fits = [fit(p) for p in placed]
        doc["aligned"] = [[round(float(v), 6) for v in fit.ravel()] for fit in fits]
        doc["landmarks"] = [[round(float(v), 2) for v in p.ravel()] for p in placed]
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(doc) + "\n"))


def read_truth(path: Path, key: str = "matrices") -> np.ndarray:
    """(T, 2, 3) ``matrices`` (or ``aligned``), or (T, 98, 2) ``landmarks``, of a
    ``NAME.wild.json``."""
    values = np.asarray(json.loads(Path(path).read_text())[key], np.float64)
    return values.reshape(len(values), -1, 2) if key == "landmarks" else values.reshape(-1, 2, 3)
