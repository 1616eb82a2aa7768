"""The face models in a package (``lipx export --faces``).

``--crop auto``'s tracker runs MediaPipe's face detector and face mesh, lipx assets
(:mod:`lipx.runtime.faces`). A package exported with ``--faces`` carries them::

    faces/face_detector.onnx     role face_detector: (1, 3, 128, 128) -> boxes, scores
    faces/face_mesh.onnx         role face_mesh: (1, 3, 192, 192) -> landmarks, face
    faces/LICENSE, faces.json    their Apache-2.0 licence and provenance, as shipped
    face_detector.fp32.plan ...  with --engine trt: a TensorRT plan of each

Each graph is a manifest graph of its role with its sha256, checked before anything loads it
like every package file; each plan is built by the engine table's builder
(:data:`lipx.export.build.BUILDERS`) with the model's plans' flavour, targets, caches and keys,
as a float32 plan (:data:`PRECISION`) of the graph's fixed shapes (one profile). The runtime
opens them on the stream's engine (:func:`lipx.runtime.faces.package_face_runners`).
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

from lipx.files import file_sha256
from lipx.package import FACE_ROLES, FACES_DIR, GraphInfo
from lipx.runtime.faces import asset_folder, face_asset, faces_json

PRECISION = "fp32"
"""The face models' only precision, graphs and plans: the tracker's accuracy was measured on
the float32 graphs (within 1e-4 px of MediaPipe's TFLite runtime), and the models are small
(0.4 and 2.4 MB of weights) for a GPU at any precision."""
SIDE_FILES = ("LICENSE", "faces.json")
"""Copied beside the graphs: the licence (Apache-2.0 asks for it) and their provenance."""


def copy_face_graphs(work: Path) -> tuple[GraphInfo, ...]:
    """Copy the shipped face models (each checked against ``faces.json`` first) with their
    licence and provenance into ``work/faces/``; their manifest entries, digests included.

    Raises:
        ManifestError: a shipped face model is missing or fails its digest.
    """
    import onnx

    from lipx.export.onnx_export import graph_info

    meta, source = faces_json(), asset_folder()
    out = work / FACES_DIR
    out.mkdir(exist_ok=True)
    for name in SIDE_FILES:
        shutil.copyfile(source / name, out / name)
    exporter = (f"MediaPipe ({meta['source']['wheel']}) via tflite2onnx "
                f"{meta['tools']['tflite2onnx']} (lipx scripts/face_assets.py)")
    graphs = []
    for role in FACE_ROLES:
        src = face_asset(role)
        path = out / src.name
        shutil.copyfile(src, path)
        info = graph_info(onnx.load(str(path)), role, f"{FACES_DIR}/{src.name}", exporter,
                          PRECISION)
        graphs.append(dataclasses.replace(info, sha256=file_sha256(path)))
    return tuple(graphs)
