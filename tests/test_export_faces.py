"""``lipx export --faces``: a package carries the face models ``--crop auto`` tracks with (graphs
with digests, checked before loading; with ``--engine trt`` real TensorRT-RTX plans of their fixed
shapes), and a stream runs its tracker on them through the stream's engine.

Running a plan needs a GPU: here the TensorRT path runs on the stand-in TensorRT of
``stream_fixtures`` (each plan's ONNX graph on onnxruntime), and ``test_face_plans_track_like_
onnxruntime_on_a_gpu`` runs real plans where a GPU is.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import shutil
from pathlib import Path

import av
import numpy as np
import pytest
from export_toys import ToyLipreading, fake_onnx_stage
from stream_fixtures import install_fake_tensorrt, onnx_plan
from typer.testing import CliRunner

from lipx import cli
from lipx.errors import BackendUnavailableError, InputError
from lipx.export import api
from lipx.export.api import ExportSource
from lipx.export.build import BUILDERS
from lipx.files import file_sha256
from lipx.package import FACE_ROLES, ROLES, EngineInfo, Manifest, Package, ShapeRange
from lipx.runtime.events import FrameEvent
from lipx.runtime.faces import (
    FaceDetector,
    FaceMesh,
    asset_folder,
    face_record,
    package_face_runners,
)
from lipx.runtime.options import EngineOptions, StreamOptions
from lipx.runtime.package_runners import BuildOptions, PackageArtifacts
from lipx.runtime.pipeline import Pipeline
from lipx.runtime.roi import make_roi

cv2 = pytest.importorskip("cv2")
SHAPES = {"face_detector": ((1, 3, 128, 128), ("boxes", "scores")),
          "face_mesh": ((1, 3, 192, 192), ("landmarks", "face"))}


@pytest.fixture(scope="module")
def faces_pkg(packages, tmp_path_factory) -> Path:
    """``lipx export --faces`` through the CLI (its ONNX stage: the tiny lipreading package's)."""
    out = tmp_path_factory.mktemp("faces") / "pkg"
    source = ExportSource(ToyLipreading(), "lipreading", "tiny", "tiny",
                          vocabulary=tuple(f"WORD{i}" for i in range(7)))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(api, "_onnx_package", fake_onnx_stage(packages["lipreading"]))
        mp.setattr(api, "load_source", lambda path: source)
        result = CliRunner().invoke(cli.app, ["export", "x.pt", "-o", str(out), "--faces",
                                              "--no-parity"])
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def astronaut_frames() -> list[np.ndarray]:
    """The astronaut turned 15 degrees in a 640x480 frame, then moving 4 px a frame (6 frames)."""
    photo = pytest.importorskip("skimage.data").astronaut()
    frames = []
    for i in range(6):
        m = cv2.getRotationMatrix2D((256, 256), 15, 0.9)
        m[:, 2] += [64 + 4 * i, -16]
        frames.append(cv2.warpAffine(photo, m, (640, 480), borderMode=cv2.BORDER_REFLECT))
    return frames


def write_mp4(path: Path, frames: list[np.ndarray]) -> Path:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=25, options={"qscale": "2"})
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode(None))
    return path


def track(detector: FaceDetector, mesh: FaceMesh, frames: list[np.ndarray]) -> np.ndarray:
    tracker = make_roi("auto", detector=detector, mesh=mesh)
    results = [tracker(f) for f in frames]
    assert all(r.found for r in results)
    return np.stack([r.corners for r in results])


def test_export_faces_carries_the_face_models_with_their_digests(faces_pkg, astronaut_frames):
    m = Manifest.read(faces_pkg)
    assert sorted(g.role for g in m.graphs[:-2]) == sorted(ROLES) and m.engines == ()
    assert tuple(g.role for g in m.graphs[-2:]) == FACE_ROLES
    for role in FACE_ROLES:
        g = m.graph(role)
        shipped = face_record(role)
        assert g.file == f"faces/{shipped['file']}" and g.precision == "fp32"
        assert g.sha256 == file_sha256(faces_pkg / g.file) == shipped["sha256"]
        shape, outputs = SHAPES[role]
        assert [(t.name, t.shape) for t in g.inputs] == [("image", shape)]
        assert tuple(t.name for t in g.outputs) == outputs and g.opset == 11
    for name in ("LICENSE", "faces.json"):  # the licence travels with the models
        assert (faces_pkg / "faces" / name).read_bytes() == (asset_folder() / name).read_bytes()
    assert cli_info(faces_pkg)["graphs"]["faces/face_mesh.onnx"] == "face_mesh fp32, opset 11"
    # a stream's tracker runs the package's models, which track as the shipped ones do
    with Pipeline(faces_pkg) as pipeline:
        detector, mesh = pipeline.face_models()
        assert pipeline.face_models() == (detector, mesh)  # opened once, shared by sessions
        assert (detector.runner.name, mesh.runner.name) == ("faces/face_detector.onnx",
                                                            "faces/face_mesh.onnx")
        np.testing.assert_array_equal(track(detector, mesh, astronaut_frames),
                                      track(FaceDetector(), FaceMesh(), astronaut_frames))


def cli_info(pkg: Path) -> dict:
    result = CliRunner().invoke(cli.app, ["info", str(pkg), "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_a_tampered_or_foreign_face_model_is_refused(faces_pkg, face_video, tmp_path, run_cli):
    pkg = tmp_path / "pkg"
    shutil.copytree(faces_pkg, pkg)
    data = bytearray((pkg / "faces" / "face_mesh.onnx").read_bytes())
    data[-1] ^= 1
    (pkg / "faces" / "face_mesh.onnx").write_bytes(bytes(data))
    code, _, err = run_cli("stream", face_video, "--model", pkg, "--crop", "auto")
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 1 and len(lines) == 1 and "Traceback" not in err
    assert "faces/face_mesh.onnx does not match the sha256 its manifest records" in lines[0]
    # recorded with its new digest, it is a face model this lipx does not track with
    m = Manifest.read(pkg)
    graphs = tuple(dataclasses.replace(g, sha256=file_sha256(pkg / g.file))
                   if g.role == "face_mesh" else g for g in m.graphs)
    dataclasses.replace(m, graphs=graphs).write(pkg)
    code, _, err = run_cli("stream", face_video, "--model", pkg, "--crop", "auto")
    assert code == 1 and "is not the face model this lipx tracks with" in err
    assert "re-export it with --faces" in err


def test_face_plans_are_real_tensorrt_rtx_plans_of_their_fixed_shapes(faces_pkg, tmp_path,
                                                                      monkeypatch):
    """Built by the engine table's builder, as ``lipx export --engine trt --faces`` builds them
    (~0.2 s each here). Deserialising a plan needs a GPU; what TensorRT parsed is checked."""
    rtx = pytest.importorskip("tensorrt_rtx", reason="TensorRT-RTX is not installed: pip "
                              "install 'lipx[rtx]'")
    from lipx.export import trt as lx_trt

    options = BuildOptions(cache_dir=tmp_path / "cache", trt_flavour="rtx")
    package = Package.open(faces_pkg)
    artifacts = PackageArtifacts(package, tmp_path, options, BUILDERS)
    built = {role: artifacts.get("trt", role, "fp32") for role in FACE_ROLES}
    for role, (path, e) in built.items():
        shape, outputs = SHAPES[role]
        assert isinstance(e, EngineInfo) and e.file == f"{role}.fp32.plan"
        assert e.source == f"faces/{role}.onnx" and e.precision == "fp32"
        assert e.flavour == "rtx" and e.tensorrt_version == rtx.__version__
        assert e.profiles == ((ShapeRange("image", shape, shape, shape),),)
        assert e.plan_bytes == path.stat().st_size > 100_000 and e.sha256 == file_sha256(path)
        _, network, _ = lx_trt.NetworkFromOnnx(rtx, faces_pkg / e.source)()
        inputs = [network.get_input(i) for i in range(network.num_inputs)]
        assert [(t.name, tuple(t.shape)) for t in inputs] == [("image", shape)]
        assert [network.get_output(i).name for i in range(network.num_outputs)] == list(outputs)
    # the same keys, the same plans: a second export takes them from the plan cache
    monkeypatch.setattr(lx_trt.PlanFromNetwork, "__call__", lambda self: pytest.fail("rebuilt"))
    (tmp_path / "again").mkdir()
    again = PackageArtifacts(package, tmp_path / "again", options, BUILDERS)
    for role, (_, e) in built.items():
        assert again.get("trt", role, "fp32")[1].sha256 == e.sha256


def with_fake_plans(pkg: Path, out: Path) -> tuple[Path, dict]:
    """A copy of ``pkg`` with a "plan" per graph (the model's at the profiles ``lipx export``
    derives, the face models' at their fixed shapes) that the stand-in TensorRT runs."""
    from lipx.export.trt import derive_dims, profile_for

    shutil.copytree(pkg, out)
    m = Manifest.read(out)
    w, stride = m.schedule.window, m.schedule.stride
    engines, plans = [], {}
    for graph in m.graphs:
        dims = {} if graph.role in FACE_ROLES else derive_dims(graph.role, w, stride, 8, 1, 3 * w)
        profile = profile_for(graph, dims)
        file = f"{graph.role}.plan"
        data = f"plan of {out / graph.file}".encode()
        (out / file).write_bytes(data)
        plans[data] = onnx_plan(out / graph.file, profile)
        engines.append(EngineInfo(graph.role, file, graph.file, graph.precision, (profile,),
                                  "10.3.0", "NVIDIA L4", "8.9", sha256=file_sha256(out / file)))
    dataclasses.replace(m, engines=tuple(engines)).write(out)
    return out, plans


def test_with_engine_trt_the_tracker_runs_the_package_face_plans(faces_pkg, astronaut_frames,
                                                                 tmp_path, monkeypatch):
    """The stream's TensorRT engine runs the face plans (on the stand-in TensorRT): the same
    mouth boxes as the shipped models on onnxruntime, frame for frame."""
    from lipx.runtime.trt_runner import TrtRunner

    pkg, plans = with_fake_plans(faces_pkg, tmp_path / "pkg")
    trt, cudart = install_fake_tensorrt(monkeypatch, plans)
    video = write_mp4(tmp_path / "astronaut.mp4", astronaut_frames)
    boxes = {}
    for engine in ("onnx", "trt"):
        with Pipeline(pkg, EngineOptions(engine=engine)) as pipeline:
            opts = StreamOptions(engine=engine, crop="auto")
            with pipeline.session(str(video), opts) as session:
                events = [e for e in session.events() if isinstance(e, FrameEvent)]
                tracker = session.roi
            assert (tracker.detector, tracker.mesh) == pipeline.face_models()  # type: ignore
            boxes[engine] = np.stack([e.roi.corners for e in events])
            runners = [m.runner for m in pipeline.face_models()]
        if engine == "trt":
            assert all(isinstance(r, TrtRunner) for r in runners)
            assert [r.name for r in runners] == ["face_detector.plan", "face_mesh.plan"]
    assert len(boxes["trt"]) == len(astronaut_frames) and trt.executed > len(astronaut_frames)
    np.testing.assert_allclose(boxes["trt"], boxes["onnx"], atol=1e-3)
    assert cudart.device == {}  # the face plans' buffers were released with the pipeline
    # without face plans, a TensorRT pipeline tracks with the shipped models on onnxruntime
    m = Manifest.read(pkg)
    dataclasses.replace(m, engines=tuple(e for e in m.engines if e.role not in FACE_ROLES)
                        ).write(pkg)
    assert package_face_runners(Package.open(pkg), "trt") is None


@pytest.mark.gpu
def test_face_plans_track_like_onnxruntime_on_a_gpu(faces_pkg, astronaut_frames, tmp_path):
    """Real plans on a real GPU (full TensorRT, or TensorRT-RTX on an RTX GPU)."""
    pytest.importorskip("cuda", reason="running plans needs cuda-python: pip install 'lipx[gpu]'")
    options = BuildOptions(cache_dir=tmp_path / "cache")
    try:
        artifacts = PackageArtifacts(Package.open(faces_pkg), tmp_path, options, BUILDERS)
        made = [artifacts.get("trt", role, "fp32")[1] for role in FACE_ROLES]
    except BackendUnavailableError as e:
        pytest.skip(str(e))
    pkg = tmp_path / "pkg"
    shutil.copytree(faces_pkg, pkg)
    for e in made:
        shutil.copy(tmp_path / e.file, pkg / e.file)
    m = Manifest.read(pkg)
    dataclasses.replace(m, engines=tuple(made)).write(pkg)
    runners = package_face_runners(Package.open(pkg), "trt")
    assert runners is not None
    with contextlib.ExitStack() as stack:
        try:
            for r in runners.values():
                stack.enter_context(r)
        except (BackendUnavailableError, InputError) as e:  # an RTX plan on a datacenter GPU
            pytest.skip(str(e))
        got = track(FaceDetector(runners["face_detector"]), FaceMesh(runners["face_mesh"]),
                    astronaut_frames)
    want = track(FaceDetector(), FaceMesh(), astronaut_frames)
    assert np.abs(got - want).max() < 0.05, json.dumps((got - want).tolist())
