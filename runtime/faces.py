"""The face models: MediaPipe's face detector and face mesh as lipx assets, on lipx engines.

``lipx/assets/faces/`` holds two ONNX graphs made by ``scripts/face_assets.py`` from MediaPipe's
BlazeFace short-range detector and Face Mesh v1 (Apache-2.0, see the folder's ``LICENSE``) and
``faces.json``, their provenance and sha256 digests. A file whose digest does not match is
refused before it is loaded, like a package file. Nothing is downloaded.

The graphs run through the engine table (:data:`lipx.runtime.backends.BACKENDS`) as the model
graphs do. A package exported with ``--faces`` carries them (its ``faces/`` folder, manifest roles
:data:`~lipx.package.FACE_ROLES`, digests checked before loading), with ``--engine trt`` as
TensorRT plans too: :func:`package_face_runners` opens them on the stream's engine, so a GPU box
tracks faces on the GPU. Without them, the shipped assets run on onnxruntime (the CPU, CUDA or
its TensorRT provider): :func:`shared_face_runner`.

- :class:`FaceDetector`: an RGB frame -> faces (score, box, six keypoints) in frame pixels.
- :class:`FaceMesh`: an RGB frame and a rotated square region -> 468 points in frame pixels and a
  face-presence score.

Torch-free.
"""

from __future__ import annotations

import contextlib
import json
import math
import threading
from contextlib import AbstractContextManager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from lipx.errors import ManifestError
from lipx.files import file_sha256
from lipx.package import FACE_DETECTOR, FACE_MESH, FACE_ROLES, Package
from lipx.runtime.backends import BACKENDS
from lipx.runtime.package_runners import PackageArtifacts, open_runners
from lipx.runtime.runner import Runner

ASSETS = "assets/faces"
DETECTOR_SIZE = 128
MESH_SIZE = 192
MIN_SCORE = 0.5
"""Detections and mesh presence below this probability are no face."""
NMS_IOU = 0.3

_KEYPOINTS = ("right_eye", "left_eye", "nose", "mouth", "right_ear", "left_ear")
"""The detector's keypoints, the subject's right first (so the image's left)."""


def asset_folder() -> Path:
    return Path(str(resources.files("lipx").joinpath(ASSETS)))


def faces_json(folder: Path | None = None) -> dict[str, Any]:
    """The face models' record, ``faces.json``: provenance, tools, and per model its ``file``
    and ``sha256``.

    Raises:
        ManifestError: it is missing or malformed.
    """
    path = (folder or asset_folder()) / "faces.json"
    try:
        meta = json.loads(path.read_text())
        models = meta["models"]
        if not all(isinstance(models[r].get("file"), str) and isinstance(models[r].get("sha256"),
                                                                          str) for r in FACE_ROLES):
            raise ValueError("a model lacks its file or sha256")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise ManifestError(f"face models: cannot read {path} ({e}); reinstall lipx or rerun "
                            "scripts/face_assets.py") from e
    return dict(meta)


def face_record(name: str, folder: Path | None = None) -> dict[str, Any]:
    """``faces.json``'s entry of face model ``name`` (``face_detector``, ``face_mesh``): its
    ``file``, ``sha256`` and provenance.

    Raises:
        ManifestError: ``faces.json`` is missing or malformed, or lacks the model.
    """
    folder = folder or asset_folder()
    models = faces_json(folder)["models"]
    if name not in models:
        raise ManifestError(f"face model {name!r}: cannot read it in {folder / 'faces.json'}, "
                            f"which lists {', '.join(models)}; reinstall lipx or rerun "
                            "scripts/face_assets.py")
    return dict(models[name])


def face_asset(name: str, folder: Path | None = None) -> Path:
    """Path of face model ``name`` (``face_detector``, ``face_mesh``), its digest checked.

    Raises:
        ManifestError: the file or ``faces.json`` is missing, or the digest differs.
    """
    folder = folder or asset_folder()
    entry = face_record(name, folder)
    return checked_asset(folder / entry["file"], entry["sha256"], "face model", "faces.json",
                         "scripts/face_assets.py")


def checked_asset(path: Path, expected: str, what: str, record: str, remake: str) -> Path:
    """``path`` once its sha256 is ``expected`` (as ``record`` says).

    Raises:
        ManifestError: the file cannot be read, or it is corrupt or replaced (rebuilt by
            ``remake``).
    """
    try:
        digest = file_sha256(path)
    except OSError as e:
        raise ManifestError(f"{what} {path} cannot be read ({e}); reinstall lipx or rerun "
                            f"{remake}") from e
    if digest != expected:
        raise ManifestError(f"{what} {path} has sha256 {digest[:12]}..., {record} says "
                            f"{expected[:12]}...; the file is corrupt or was replaced: "
                            f"reinstall lipx or rerun {remake}")
    return path


def open_face_runner(name: str, device: str = "cpu", threads: int | None = 1) -> Runner:
    """An activated runner of face model ``name`` from the engine table's ONNX row."""
    runner_class: Any = BACKENDS["onnx"].runner_class()  # OrtRunner: (model, device, threads)
    runner: Runner = runner_class(face_asset(name), device=device, threads=threads,
                                  name=f"{name}.onnx")
    runner.activate()
    return runner


def package_face_runners(package: Package, engine: str, device: str | None = None,
                         cuda_graph: bool = False) -> dict[str, Runner] | None:
    """Unopened runners of the face models ``package`` carries for ``engine`` (role -> runner):
    its face graphs on onnxruntime, or its face plans on TensorRT; None when it carries none
    for that engine (then the shipped assets serve: :func:`shared_face_runner`).

    Args:
        package: the model package (``lipx export --faces``).
        engine, device: the stream's (:data:`~lipx.runtime.backends.BACKENDS`); a plan of any
            precision will do, a graph is float32 (the face models have no other).
        cuda_graph: TensorRT: replay CUDA graphs (the face models have one shape each).
    Raises:
        ManifestError: the package carries one face model without the other, one that is not
            the model this lipx tracks with (another lipx's, whose outputs it would misread),
            or a file that fails its check.
        BackendUnavailableError: the engine's library is missing.
    """
    info = BACKENDS[engine]
    artifacts = PackageArtifacts(package)
    carried = [r for r in FACE_ROLES if artifacts.find(info, r, None) is not None]
    if not carried:
        return None
    if len(carried) < len(FACE_ROLES):
        missing = ", ".join(r for r in FACE_ROLES if r not in carried)
        raise ManifestError(f"{package.dir} carries {', '.join(carried)} but not {missing} for "
                            f"--engine {engine}; re-export it with --faces")
    for role in FACE_ROLES:
        graph, shipped = package.manifest.graph(role), face_record(role)["sha256"]
        if graph.sha256 != shipped:
            raise ManifestError(f"{package.dir}: its {role} ({graph.file}, sha256 "
                                f"{graph.sha256[:12]}...) is not the face model this lipx tracks "
                                f"with (sha256 {shipped[:12]}...); re-export it with --faces")
    threads = 1 if device in (None, "cpu") and not info.plans else None
    return open_runners(package, FACE_ROLES, engine, device, threads=threads,
                        cuda_graph=cuda_graph, artifacts=artifacts)


_OPEN: dict[tuple[str, str, int | None], Runner] = {}
_OPEN_LOCK = threading.Lock()


def shared_face_runner(name: str, device: str = "cpu", threads: int | None = 1) -> Runner:
    """:func:`open_face_runner`, opened once per process and shared (sessions are cheap)."""
    key = (name, device, threads)
    with _OPEN_LOCK:
        if key not in _OPEN:
            _OPEN[key] = open_face_runner(name, device, threads)
        return _OPEN[key]


def _turns(runner: Runner) -> AbstractContextManager[object]:
    """What callers hold around ``runner.infer``: a lock unless the runner takes concurrent
    calls (a TensorRT plan has one context and one set of buffers; sessions on many threads
    share a pipeline's face models)."""
    return contextlib.nullcontext() if runner.concurrent else threading.Lock()


def _anchors() -> np.ndarray:
    """(896, 2) anchor centres in [0, 1] of the short-range detector (SSD anchors: strides 8
    with 2 anchors per cell, then 16 with 6)."""
    out = []
    for stride, per_cell in ((8, 2), (16, 6)):
        n = DETECTOR_SIZE // stride
        ys, xs = np.mgrid[0:n, 0:n]
        centres = np.stack([(xs + 0.5) / n, (ys + 0.5) / n], -1).reshape(-1, 1, 2)
        out.append(np.repeat(centres, per_cell, axis=1).reshape(-1, 2))
    return np.concatenate(out).astype(np.float32)


ANCHORS = _anchors()


@dataclass(frozen=True)
class Face:
    """One detected face, in source pixels."""

    score: float
    box: tuple[float, float, float, float]
    """(x1, y1, x2, y2)."""
    keypoints: np.ndarray
    """(6, 2): right eye, left eye, nose tip, mouth centre, right ear, left ear (subject's)."""


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -80.0, 80.0)))


def letterbox(width: int, height: int, size: int) -> np.ndarray:
    """(2, 3) matrix mapping source pixels into a ``size`` square, aspect kept, centred."""
    k = size / max(width, height)
    return np.array([[k, 0.0, (size - k * width) / 2], [0.0, k, (size - k * height) / 2]])


def invert(m: np.ndarray) -> np.ndarray:
    """Inverse of a (2, 3) affine matrix."""
    a = np.linalg.inv(m[:, :2])
    return np.concatenate([a, -a @ m[:, 2:]], 1)


def apply(m: np.ndarray, points: np.ndarray) -> np.ndarray:
    """(2, 3) affine applied to (..., 2) points."""
    return points @ m[:, :2].T + m[:, 2]


def _nms(boxes: np.ndarray, scores: np.ndarray, keys: np.ndarray) -> list[Face]:
    """Weighted non-maximum suppression (MediaPipe's): overlapping detections are averaged."""
    order = np.argsort(-scores)
    faces = []
    while len(order):
        best = boxes[order[0]]
        x1 = np.maximum(best[0], boxes[order, 0])
        y1 = np.maximum(best[1], boxes[order, 1])
        x2 = np.minimum(best[2], boxes[order, 2])
        y2 = np.minimum(best[3], boxes[order, 3])
        inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
        area = (boxes[order, 2] - boxes[order, 0]) * (boxes[order, 3] - boxes[order, 1])
        iou = inter / (area[0] + area - inter + 1e-9)
        group, order = order[iou > NMS_IOU], order[iou <= NMS_IOU]
        w = scores[group][:, None]
        box = (boxes[group] * w).sum(0) / w.sum()
        kp = (keys[group] * w[:, :, None]).sum(0) / w.sum()
        faces.append(Face(float(scores[group[0]]), tuple(float(v) for v in box), kp))  # type: ignore[arg-type]
    return faces


class FaceDetector:
    """BlazeFace short range: faces in an RGB frame (best suited to faces within ~2 m).

    Args:
        runner: an active runner of ``face_detector`` (default: the shared CPU one).
    """

    def __init__(self, runner: Runner | None = None, device: str = "cpu"):
        self.runner = runner or shared_face_runner(FACE_DETECTOR, device)
        self._turn = _turns(self.runner)

    def __call__(self, frame: np.ndarray) -> list[Face]:
        """Faces in ``frame`` ((H, W, 3) uint8 RGB), best first."""
        import cv2

        h, w = frame.shape[:2]
        m = letterbox(w, h, DETECTOR_SIZE)
        small = cv2.warpAffine(frame, m, (DETECTOR_SIZE, DETECTOR_SIZE), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
        x = (small.astype(np.float32) * (2 / 255.0) - 1.0).transpose(2, 0, 1)[None]
        with self._turn:
            out = self.runner.infer({"image": np.ascontiguousarray(x)}, check=False)
        scores = sigmoid(out["scores"][0, :, 0])
        keep = scores > MIN_SCORE
        if not keep.any():
            return []
        reg = out["boxes"][0][keep] / DETECTOR_SIZE
        anchors = ANCHORS[keep]
        centre = anchors + reg[:, :2]
        half = reg[:, 2:4] / 2
        boxes = np.concatenate([centre - half, centre + half], 1) * DETECTOR_SIZE
        keys = (anchors[:, None] + reg[:, 4:16].reshape(-1, 6, 2)) * DETECTOR_SIZE
        back = invert(m)
        boxes = np.concatenate([apply(back, boxes[:, :2]), apply(back, boxes[:, 2:])], 1)
        return _nms(boxes, scores[keep], apply(back, keys))


def square_roi(centre: np.ndarray, side: float, angle: float, size: int) -> np.ndarray:
    """(2, 3) matrix mapping source pixels into a ``size`` square: the square of ``side`` px
    centred on ``centre`` and rotated by ``angle`` (radians, image coordinates) lands upright."""
    k = size / side
    c, s = math.cos(angle) * k, math.sin(angle) * k
    rot = np.array([[c, s], [-s, c]])
    return np.concatenate([rot, (size / 2 - rot @ centre)[:, None]], 1)


class FaceMesh:
    """Face Mesh v1: 468 points of the face inside a rotated square region.

    Args:
        runner: an active runner of ``face_mesh`` (default: the shared CPU one).
    """

    def __init__(self, runner: Runner | None = None, device: str = "cpu"):
        self.runner = runner or shared_face_runner(FACE_MESH, device)
        self._turn = _turns(self.runner)

    def __call__(self, frame: np.ndarray, roi: np.ndarray) -> tuple[np.ndarray, float]:
        """Mesh points in ``frame`` within ``roi`` (a :func:`square_roi` matrix to 192 px).

        Returns:
            (468, 2) float64 points in frame pixels, and the face-presence probability.
        """
        import cv2

        crop = cv2.warpAffine(frame, roi, (MESH_SIZE, MESH_SIZE), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_REPLICATE)
        x = (crop.astype(np.float32) * (1 / 255.0)).transpose(2, 0, 1)[None]
        with self._turn:
            out = self.runner.infer({"image": np.ascontiguousarray(x)}, check=False)
        points = out["landmarks"].reshape(468, 3)[:, :2].astype(np.float64)
        return apply(invert(roi), points), float(sigmoid(out["face"].reshape(())))
