"""Face Mesh points -> the 98 WFLW points ``lipx data prepare`` aligns with.

``lipx data prepare`` fits a similarity transform on a face's 98 WFLW landmarks; the tracker
sees 468 Face Mesh points, and no mesh point sits exactly on a WFLW one (on lipx's drawn faces
the nearest ones are 1-3.5 px off, differently for each face shape). :class:`WflwMap` estimates
the 98 points from the whole mesh, so the tracker makes prepare's own fit:

1. the mesh is brought into a canonical frame by the similarity that best maps it onto a mean
   mesh (least squares over all 468 points, which averages the points' noise away);
2. its shape there is described by its first ``k`` principal components (of the training
   meshes), and the 98 points are a linear function of those ``k`` numbers (ridge regression);
3. the points are mapped back by the inverse similarity.

Every step commutes with rotating, scaling and moving the face. The map is fitted by
``scripts/face_calibration.py`` on training speakers' renders (``k`` and the ridge chosen on
validation speakers) and shipped as ``lipx/assets/faces/mesh_to_wflw.npz``, its provenance and
sha256 in ``mesh_to_wflw.json``; the digest is checked before loading. Torch-free (numpy).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from lipx.errors import ManifestError
from lipx.landmarks import N_POINTS, similarity_transform
from lipx.runtime.faces import apply, asset_folder, checked_asset, invert

MAP_FILE = "mesh_to_wflw.npz"
MAP_META = "mesh_to_wflw.json"


@dataclass(frozen=True)
class WflwMap:
    """Mesh (N, 2) -> WFLW (98, 2), equivariant to similarity transforms.

    Attributes:
        mean: (N, 2) mean mesh in the canonical frame (the LRW face's pixels).
        modes: (k, 2N) principal components of canonical meshes (orthonormal rows).
        weights: (k, 196) regression from component scores to the WFLW points' offsets.
        offset: (196,) the WFLW points (x0, y0, x1, ...) at the mean mesh.
    """

    mean: np.ndarray
    modes: np.ndarray
    weights: np.ndarray
    offset: np.ndarray

    def __call__(self, mesh: np.ndarray) -> np.ndarray:
        """(N, 2) mesh points in source pixels -> (98, 2) float64 WFLW points, same pixels."""
        to_canon = similarity_transform(mesh[:, :2], self.mean)
        shape = apply(to_canon, mesh[:, :2]) - self.mean
        scores = self.modes @ shape.ravel()
        points = (self.offset + scores @ self.weights).reshape(N_POINTS, 2)
        return apply(invert(to_canon), points)

    def save(self, path: Path) -> None:
        np.savez(path, mean=self.mean, modes=self.modes, weights=self.weights, offset=self.offset)

    @classmethod
    def load(cls, path: Path) -> WflwMap:
        with np.load(path) as z:
            return cls(*(np.asarray(z[k], np.float64) for k in ("mean", "modes", "weights",
                                                                  "offset")))


def procrustes_mean(meshes: np.ndarray, start: np.ndarray, rounds: int = 3) -> np.ndarray:
    """(N, 2) mean of (T, N, 2) meshes, each similarity-aligned to the running mean."""
    mean = start
    for _ in range(rounds):
        mean = np.mean([apply(similarity_transform(m, mean), m) for m in meshes], axis=0)
    return mean


def fit_wflw_map(meshes: np.ndarray, wflw: np.ndarray, start: np.ndarray, k: int,
                 ridge: float) -> WflwMap:
    """Fit a :class:`WflwMap` on frames where both the mesh and the true points are known.

    Args:
        meshes: (T, N, 2) mesh points in source pixels.
        wflw: (T, 98, 2) the true WFLW points of the same frames, same pixels.
        start: (N, 2) a first guess of the mean mesh in the LRW face (sets the canonical frame).
        k: principal components kept (0: the WFLW points are fixed in the canonical frame).
        ridge: ridge penalty per component, relative to the component's variance.
    """
    mean = procrustes_mean(meshes, start)
    to_canon = [similarity_transform(m, mean) for m in meshes]
    shapes = np.stack([apply(t, m) for t, m in zip(to_canon, meshes, strict=True)]) - mean
    targets = np.stack([apply(t, p) for t, p in zip(to_canon, wflw, strict=True)])
    flat = shapes.reshape(len(shapes), -1)
    modes = np.linalg.svd(flat, full_matrices=False)[2][:k]
    scores = flat @ modes.T
    y = targets.reshape(len(targets), -1)
    offset = y.mean(0)
    penalty = ridge * len(scores) * np.diag(scores.var(0))
    weights = np.linalg.solve(scores.T @ scores + penalty, scores.T @ (y - offset))
    return WflwMap(mean, modes, weights, offset)


@lru_cache(maxsize=1)
def shipped_map() -> WflwMap:
    """The shipped map (:func:`load_map` of the asset folder), loaded once."""
    return load_map(asset_folder())


def load_map(folder: Path) -> WflwMap:
    """The map in ``folder``, its sha256 checked against ``mesh_to_wflw.json``.

    Raises:
        ManifestError: a file is missing or unreadable, or the digest differs.
    """
    path = folder / MAP_FILE
    try:
        expected = json.loads((folder / MAP_META).read_text())["sha256"]
    except (OSError, ValueError, KeyError) as e:
        raise ManifestError(f"cannot read the face calibration's {folder / MAP_META} ({e}); "
                            "reinstall lipx or rerun scripts/face_calibration.py") from e
    return WflwMap.load(checked_asset(path, expected, "face calibration", MAP_META,
                                      "scripts/face_calibration.py"))
