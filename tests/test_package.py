"""The model package manifest: typed round trip, schema versioning, clear errors."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil

import pytest

from lipx.audio import AudioSpec
from lipx.errors import InputError, ManifestError
from lipx.files import file_sha256
from lipx.package import (
    MANIFEST_NAME,
    SCHEMA_VERSION,
    EngineInfo,
    GraphInfo,
    Manifest,
    OutputParity,
    ParityRecord,
    PlanTarget,
    ShapeRange,
    TensorInfo,
    package_file,
)
from lipx.tasks import Schedule, task_spec
from lipx.video import VideoSpec


def make_manifest(**changes) -> Manifest:
    video = TensorInfo("video", "float32", ("batch", 1, "frames", 112, 112))
    logits = TensorInfo("logits", "float32", ("batch", 500))
    graph = GraphInfo("model", "model.onnx", (video,), (logits,), 18, "torch 2.13 dynamo",
                      sha256="ab" * 32)
    fp16 = dataclasses.replace(graph, file="model.fp16.onnx", precision="fp16")
    engine = EngineInfo(
        role="model", file="model.plan", source="model.onnx", precision="fp16",
        profiles=((ShapeRange("video", (1, 1, 1, 112, 112), (8, 1, 29, 112, 112),
                              (8, 1, 87, 112, 112)),),),
        tensorrt_version="10.3.0", gpu_name="NVIDIA L4", compute_capability="8.9",
        timing_cache="/cache/timing.cache", workspace_mb=2048, fp32_layers=("gru/GRU/x",),
    )
    parity = ParityRecord(
        artifact="model.onnx", reference="torch", engine="onnxruntime CPUExecutionProvider",
        cases=((1, 29), (3, 34)),
        outputs=(OutputParity("logits", 2e-7, 1e-7, 3e-8, 1e-4, 1e-4, True),),
        top1_agreement=1.0, min_top1=None,
    )
    base = dict(
        spec=task_spec("lipreading"), model_name="mvm-gru", preset="tiny", lipx_version="0.1.0",
        checkpoint_sha256="cd" * 32, video=VideoSpec(), audio=AudioSpec.lipreading(),
        vocabulary=("ABOUT", "ABSOLUTELY"), schedule=Schedule(window=29, stride=7),
        graphs=(graph, fp16), engines=(engine,), parity=(parity,), created="2026-01-01",
    )
    return Manifest(**{**base, **changes})


def test_round_trip_through_json(tmp_path):
    m = make_manifest()
    path = m.write(tmp_path)
    assert path == tmp_path / MANIFEST_NAME
    data = json.loads(path.read_text())
    assert data["schema_version"] == SCHEMA_VERSION
    assert data["preprocessing"]["video"]["box"] == [59, 95, 195, 231]
    assert data["engines"][0]["profiles"][0][0]["max"] == [8, 1, 87, 112, 112]
    back = Manifest.read(tmp_path)
    assert back == m
    assert back.graph("model", "fp16").file == "model.fp16.onnx"
    assert back.graph("model").inputs[0].dynamic == {0: "batch", 2: "frames"}
    assert back.engine("model").fp32_layers == ("gru/GRU/x",)
    assert back.video.box == (59, 95, 195, 231) and back.audio == AudioSpec.lipreading()
    assert not [p for p in tmp_path.iterdir() if p.name != MANIFEST_NAME]  # no temp files left


def test_manifest_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        make_manifest().task = "lip2speech"  # type: ignore[misc]


@pytest.mark.parametrize("version, fix",
                         [(4, "upgrade lipx"), (2, "re-export"), (None, "re-export")])
def test_other_schema_versions_are_refused(tmp_path, version, fix):
    data = make_manifest().to_dict()
    data["schema_version"] = version
    (tmp_path / MANIFEST_NAME).write_text(json.dumps(data))
    with pytest.raises(ManifestError, match=fix):
        Manifest.read(tmp_path)


def test_missing_fields_are_named():
    data = make_manifest().to_dict()
    del data["graphs"][0]["opset"]
    with pytest.raises(ManifestError, match=r"graphs\[0\] lacks opset"):
        Manifest.from_dict(data)
    data = make_manifest().to_dict()
    del data["schedule"]
    with pytest.raises(ManifestError, match="lacks schedule"):
        Manifest.from_dict(data)
    data = make_manifest().to_dict()
    del data["task_spec"]["head_output"]
    with pytest.raises(ManifestError, match="task_spec must hold .*head_output"):
        Manifest.from_dict(data)
    data = make_manifest().to_dict()
    data["schedule"] = {"window": 7, "stride": 9}
    with pytest.raises(ManifestError, match="stride 9 is larger than the window"):
        Manifest.from_dict(data)


def test_the_task_spec_travels_in_the_manifest():
    spec = dataclasses.replace(task_spec("lip2speech", min_frames=3), fp32_patterns=("x",))
    m = make_manifest(spec=spec, schedule=Schedule(40, 20))
    back = Manifest.from_dict(json.loads(json.dumps(m.to_dict())))
    assert back.spec == spec and back.task == "lip2speech" and back.spec.min_frames == 3
    assert back.spec.tolerances["int8"].max_stoi_drop == spec.tolerances["int8"].max_stoi_drop
    assert back.spec.schedule(None, None, default=back.schedule) == Schedule(40, 20)
    assert back.spec.schedule(30, None, default=back.schedule) == Schedule(30, 20)
    assert back.spec.schedule(10, None, default=back.schedule) == Schedule(10, 10)
    assert back.spec.schedule(None, None) == Schedule(24, 4)  # the task's defaults
    with pytest.raises(InputError, match="shorter than this lip2speech model's minimum of 3"):
        back.spec.schedule(2, 1)


@pytest.mark.parametrize("window, stride, message", [
    (0, None, r"--window must be in 1..1024 frames, got 0"),
    (None, 0, r"--stride must be in 1..1024 frames, got 0"),
    (10**9, None, r"--window must be in 1..1024 frames, got 1000000000"),
    (8, 9, r"--stride 9 is larger than the window \(8 frames\)"),
])
def test_the_schedule_rule_holds_for_a_window_or_a_stride_alone(window, stride, message):
    """Options give one or both (a package gives the other); a Schedule checks the same rule."""
    with pytest.raises(InputError, match=message):
        Schedule.check(window, stride)
    if window is not None and stride is not None:
        with pytest.raises(InputError, match=message):
            Schedule(window, stride)
    Schedule.check(None, None)
    Schedule.check(8, None)
    Schedule.check(8, 8)


def test_unknown_task_and_bad_files(tmp_path):
    with pytest.raises(ManifestError, match="unknown task 'lipread'.*lipreading"):
        make_manifest(spec=dataclasses.replace(task_spec("lipreading"), task="lipread"))
    with pytest.raises(ManifestError, match="not a lipx model package"):
        Manifest.read(tmp_path)
    (tmp_path / MANIFEST_NAME).write_text("{not json")
    with pytest.raises(ManifestError, match="not valid JSON"):
        Manifest.read(tmp_path / MANIFEST_NAME)


def test_missing_graph_or_engine_lists_what_exists():
    m = make_manifest(engines=())
    with pytest.raises(ManifestError, match="no int8 backend graph.*model/fp32, model/fp16"):
        m.graph("backend", "int8")
    with pytest.raises(ManifestError, match="--engine trt"):
        m.engine("model")


def test_plan_target_key_is_file_safe():
    key = PlanTarget("10.3.0", "NVIDIA GeForce RTX 4090 (24GB)", "8.9").key
    assert key == "trt10.3.0-sm89-nvidia-geforce-rtx-4090-24gb"


def test_engine_mismatch_is_detected_with_a_clear_message(caplog):
    engine = make_manifest().engine("model")
    assert engine.mismatch(PlanTarget("10.3.0", "NVIDIA L4", "8.9")) is None
    other_trt = engine.mismatch(PlanTarget("10.7.0", "NVIDIA L4", "8.9"))
    assert "built for TensorRT 10.3.0, this machine has TensorRT 10.7.0" in other_trt
    assert "--engine trt" in other_trt
    with pytest.raises(InputError, match=r"compute capability 8.9 \(NVIDIA L4\), this one is 9.0"):
        engine.check(PlanTarget("10.3.0", "NVIDIA H100", "9.0"))
    # same architecture, another board: allowed, with a warning
    assert engine.mismatch(PlanTarget("10.3.0", "NVIDIA RTX 4000 Ada", "8.9")) is None
    assert "built on NVIDIA L4" in caplog.text


# -- a package is untrusted input: its files stay inside it and match their digests -------------
@pytest.mark.parametrize("name", ["../../../../etc/passwd", "/etc/passwd", "sub/../../x.onnx",
                                  "C:\\models\\model.onnx", "..\\model.onnx", ""])
def test_a_file_outside_the_package_is_refused_when_read(tmp_path, name):
    data = make_manifest().to_dict()
    data["graphs"][0]["file"] = name
    (tmp_path / MANIFEST_NAME).write_text(json.dumps(data))
    with pytest.raises(ManifestError, match=r"graphs\[0\]\.file"):
        Manifest.read(tmp_path)


def test_files_are_checked_before_they_are_loaded(tmp_path):
    package, outside = tmp_path / "pkg", tmp_path / "outside.onnx"
    package.mkdir()
    outside.write_bytes(b"graph")
    (package / "model.onnx").write_bytes(b"graph")
    graph = make_manifest().graphs[0]
    with pytest.raises(ManifestError, match="model.onnx does not match the sha256"):
        package_file(package, graph)  # recorded "abab...", the file says otherwise
    good = dataclasses.replace(graph, sha256=file_sha256(package / "model.onnx"))
    assert package_file(package, good) == (package / "model.onnx").resolve()
    with pytest.raises(ManifestError, match="records no sha256 for model.onnx"):
        package_file(package, dataclasses.replace(graph, sha256=""))
    (package / "model.onnx").unlink()
    with pytest.raises(ManifestError, match="model.onnx is missing from the package"):
        package_file(package, good)
    os.symlink(outside, package / "model.onnx")  # same bytes, but outside the package
    with pytest.raises(ManifestError, match="outside the package .* symlink"):
        package_file(package, good)


# -- ... and so are its numbers: each is bounded when the manifest is read -----------------------
def _set(data: dict, path: str, value: object) -> None:
    """Set ``data`` at ``path`` (dots and [i] indices)."""
    *parents, last = path.replace("[", ".").replace("]", "").split(".")
    for key in parents:
        data = data[int(key)] if key.isdigit() else data[key]
    data[int(last) if last.isdigit() else last] = value


@pytest.mark.parametrize("path, value, message", [
    ("schedule.window", 10**9, "schedule.window is 1000000000; expected an integer in 1..1024"),
    ("schedule.stride", "4", "schedule.stride is '4'; expected an integer in 1..1024"),
    ("schedule.window", True, "schedule.window is True; expected an integer"),
    ("schedule.window", 10**400, "schedule.window is 1000000000000000000000000000000000000000..."),
    ("schedule.window", 24.5, "schedule.window is 24.5; expected an integer"),
    ("task_spec.context", -1, "task_spec.context is -1; expected an integer in 0..64"),
    ("task_spec.min_frames", None, "task_spec.min_frames is None"),
    ("task_spec.tolerances.fp16.atol", float("nan"), "task_spec.tolerances.fp16.atol is nan"),
    ("task_spec.stream_defaults.agreement", 10**6, "stream_defaults.agreement is 1000000"),
    ("preprocessing.video.fps", float("inf"), "preprocessing.video.fps is inf; expected a number "
     "in 1..1000"),
    ("preprocessing.video.size", 100_000, "preprocessing.video.size is 100000; expected an "
     "integer in 1..1024"),
    ("preprocessing.video.box[2]", -5, r"preprocessing.video.box\[2\] is -5"),
    ("preprocessing.audio.n_mels", 10**7, "preprocessing.audio.n_mels is 10000000"),
    ("preprocessing.audio.n_fft", 0, "preprocessing.audio.n_fft is 0; expected an integer in "
     "2..65536"),
    ("preprocessing.audio.sample_rate", 10**9, "preprocessing.audio.sample_rate is 1000000000"),
    ("graphs[0].inputs[0].shape[3]", 10**9, r"graphs\[0\].inputs\[0\].shape\[3\] is 1000000000"),
    ("graphs[0].inputs[0].shape", ["batch", 1, "frames", 60_000, 60_000], r"the element count "
     r"of graphs\[0\].inputs\[0\].shape is 3600000000; expected an integer in 0..268435456"),
    ("engines[0].profiles[0][0].max[2]", 10**6, r"engines\[0\].profiles\[0\]\[0\].max\[2\] is "),
    ("vocabulary", ["W"] * 200_000, "the length of vocabulary is 200000; expected an integer in "
     "1..100000"),
    ("vocabulary", ["W", 3], "vocabulary must be a list of strings"),
])
def test_numbers_out_of_bounds_are_refused_in_one_line(path, value, message):
    data = json.loads(json.dumps(make_manifest().to_dict()))
    _set(data, path, value)
    with pytest.raises(ManifestError, match=message) as refused:
        Manifest.from_dict(json.loads(json.dumps(data)))  # as read from a file
    assert "\n" not in str(refused.value) and "refusing to load the package" in str(refused.value)


def test_the_bounds_admit_every_package_this_lipx_writes():
    for spec in (task_spec("lipreading", min_frames=5), task_spec("lipreading", no_word=True),
                 task_spec("lip2speech", min_frames=20)):
        m = make_manifest(spec=spec, audio=AudioSpec(), schedule=Schedule(1024, 1024))
        assert Manifest.from_dict(json.loads(json.dumps(m.to_dict()))) == m


def test_a_huge_window_in_a_real_package_is_one_line_from_lipx_stream(packages, face_video,
                                                                    tmp_path, run_cli):
    for exported in packages.values():
        Manifest.read(exported)  # within every bound
    pkg = tmp_path / "pkg"
    shutil.copytree(packages["lip2speech"], pkg)
    data = json.loads((pkg / MANIFEST_NAME).read_text())
    data["schedule"]["window"] = 10**9
    (pkg / MANIFEST_NAME).write_text(json.dumps(data))
    code, out, err = run_cli("stream", face_video, "--model", pkg)
    assert code == 1 and "Traceback" not in err and not out
    assert err.strip() == ("error: manifest: schedule.window is 1000000000; expected an integer "
                           "in 1..1024 (refusing to load the package)")
