"""Triton model repository: configs written from the manifest and checked back against it."""

from __future__ import annotations

import dataclasses
import hashlib

import pytest

from lipx.export.triton import (
    TritonSettings,
    ensemble_config,
    graph_config,
    parse_pbtxt,
    validate_repository,
    write_repository,
)
from lipx.package import EngineInfo, GraphInfo, Manifest, TensorInfo
from lipx.runtime.triton_runner import triton_model_name
from lipx.tasks import Schedule, task_spec
from lipx.video import VideoSpec

MODEL_BYTES = b"model bytes"
MODEL_SHA = hashlib.sha256(MODEL_BYTES).hexdigest()

def lip2speech_manifest(precisions=("fp32",)) -> Manifest:
    video = TensorInfo("video", "float32", ("batch", 1, "frames", 112, 112))
    chunk = TensorInfo("video", "float32", ("batch", 1, "chunk", 112, 112))
    features = TensorInfo("features", "float32", ("batch", "frames", 512))
    noise = TensorInfo("noise", "float32", ("batch", 128, 20, "frames"))
    mel = TensorInfo("mel", "float32", ("batch", 1, 80, "unk__1"))
    linear = TensorInfo("linear", "float32", ("batch", 1, 321, "unk__2"))
    base = [
        GraphInfo("model", "model.onnx", (video, noise), (mel, linear), 18, "x"),
        GraphInfo("frontend", "frontend.onnx", (chunk,), (features,), 18, "x"),
        GraphInfo("backend", "backend.onnx", (features, noise), (mel, linear), 18, "x"),
    ]
    graphs = [dataclasses.replace(g, precision=p, file=g.file if p == "fp32" else
                                  f"{g.role}.{p}.onnx", sha256=MODEL_SHA)
              for p in precisions for g in base]
    engines = [EngineInfo(g.role, f"{g.role}.plan", g.file, "fp16", (), "10.3.0", "L4", "8.9",
                          sha256=MODEL_SHA) for g in base]
    return Manifest(task_spec("lip2speech"), "vca-gan small", "small", "0.1.0", "", VideoSpec(),
                    None, None, Schedule(40, 20), tuple(graphs), tuple(engines))


def package(tmp_path, manifest):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    for f in [*(g.file for g in manifest.graphs), *(e.file for e in manifest.engines)]:
        (pkg / f).write_bytes(MODEL_BYTES)
    return pkg


def test_onnx_gpu_repository_round_trip(tmp_path):
    m = lip2speech_manifest(("fp32", "fp16"))
    settings = TritonSettings("onnx", "fp16", max_batch=4, instances=2, kind="gpu")
    names = write_repository(m, package(tmp_path, m), tmp_path / "triton", settings)
    assert names == ["vca_gan_small_frontend", "vca_gan_small_backend", "vca_gan_small_model",
                     "vca_gan_small"]
    assert validate_repository(tmp_path / "triton", m, settings) == []
    cfg = parse_pbtxt((tmp_path / "triton/vca_gan_small_backend/config.pbtxt").read_text())
    assert cfg["backend"] == ["onnxruntime"] and cfg["max_batch_size"] == [4]
    assert [(t["name"][0], t["dims"][0]) for t in cfg["input"]] == [
        ("features", [-1, 512]), ("noise", [128, 20, -1])]
    assert cfg["instance_group"][0] == {"count": [2], "kind": ["KIND_GPU"]}
    assert cfg["dynamic_batching"][0]["max_queue_delay_microseconds"] == [100]
    accel = cfg["optimization"][0]["execution_accelerators"][0]["gpu_execution_accelerator"][0]
    assert accel["name"] == ["tensorrt"]
    assert {"key": ["precision_mode"], "value": ["FP16"]} in accel["parameters"]
    # the fp16 graph is what is served
    assert (tmp_path / "triton/vca_gan_small_model/1/model.onnx").is_file()


def test_ensemble_chains_frontend_and_backend(tmp_path):
    m = lip2speech_manifest()
    cfg = parse_pbtxt(ensemble_config(m, TritonSettings()))
    assert cfg["platform"] == ["ensemble"]
    assert [t["name"][0] for t in cfg["input"]] == ["video", "noise"]
    steps = cfg["ensemble_scheduling"][0]["step"]
    assert [s["model_name"][0] for s in steps] == ["vca_gan_small_frontend",
                                                    "vca_gan_small_backend"]
    assert {x["key"][0] for x in steps[1]["input_map"]} == {"features", "noise"}


def test_cpu_and_plan_repositories(tmp_path):
    m = lip2speech_manifest()
    cpu = graph_config(m, "model", TritonSettings(kind="cpu"))
    assert "KIND_CPU" in cpu and "gpu_execution_accelerator" not in cpu
    settings = TritonSettings(engine="trt", precision="fp16")
    write_repository(m, package(tmp_path, m), tmp_path / "triton", settings)
    assert (tmp_path / "triton/vca_gan_small_frontend/1/model.plan").is_file()
    config = (tmp_path / "triton/vca_gan_small_frontend/config.pbtxt").read_text()
    assert 'backend: "tensorrt"' in config
    assert validate_repository(tmp_path / "triton", m, settings) == []


def test_validation_finds_drift_from_the_manifest(tmp_path):
    m = lip2speech_manifest()
    settings = TritonSettings()
    repo = tmp_path / "triton"
    write_repository(m, package(tmp_path, m), repo, settings)
    cfg = repo / "vca_gan_small_backend/config.pbtxt"
    cfg.write_text(cfg.read_text().replace("dims: [ -1, 512 ]", "dims: [ -1, 256 ]"))
    (repo / "vca_gan_small_model/1/model.onnx").unlink()
    problems = validate_repository(repo, m, settings)
    assert any("vca_gan_small_model: missing 1/model.onnx" in p for p in problems)
    assert any("vca_gan_small_backend: inputs" in p and "256" in p for p in problems)


def test_names_and_parser():
    assert triton_model_name(lip2speech_manifest(), "backend") == "vca_gan_small_backend"
    assert parse_pbtxt('a: 1 b { c: "x" d: [1, 2] } b { c: "y" } # note\ne: 1.5') == {
        "a": [1], "b": [{"c": ["x"], "d": [[1, 2]]}, {"c": ["y"]}], "e": [1.5]}
    with pytest.raises(Exception, match="cannot parse"):
        parse_pbtxt("a: @")
