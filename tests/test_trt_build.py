"""Real TensorRT plans, built with the TensorRT-RTX wheels (``pip install 'lipx[rtx]'``), which
need no GPU to build: a toy graph, then the ``tiny`` presets of both tasks, fp32 and fp16, the
whole model and the streaming split, through export's builders (BUILDERS). What the
manifest records of each plan, the plan cache, the profile overrides, and the checks that refuse
a plan for another flavour, version or GPU before it loads.

Running a plan needs a GPU; those paths are tested against stand-ins (``test_trt_runner.py``).
"""

from __future__ import annotations

import sys

import pytest

from lipx.errors import BackendUnavailableError, InputError
from lipx.export import trt as lx_trt
from lipx.export.build import BUILDERS
from lipx.export.trt import RTX_PORTABLE, BuildSettings, build_engine, profile_for
from lipx.package import ROLES, GraphInfo, Manifest, Package, PlanTarget, TensorInfo
from lipx.runtime.package_runners import BuildOptions, PackageArtifacts

rtx = pytest.importorskip("tensorrt_rtx", reason="TensorRT-RTX is not installed: "
                          "pip install 'lipx[rtx]' to build real plans")

FEATURES = TensorInfo("features", "float32", ("batch", "frames", 4))


def softmax_graph(path) -> GraphInfo:
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", "frames", 4])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", "frames", 4])
    graph = helper.make_graph([helper.make_node("Softmax", ["features"], ["logits"], axis=-1)],
                              "g", [x], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)],
                                ir_version=10), str(path))
    return GraphInfo("backend", path.name, (FEATURES,), (), 18, "x")


def test_a_toy_plan_records_flavour_targets_time_and_size(tmp_path, monkeypatch):
    info = softmax_graph(tmp_path / "backend.onnx")
    profiles = (profile_for(info, {"batch": (1, 1, 2), "frames": (1, 8, 8)}),)
    settings = BuildSettings("fp32", 256, tmp_path / "cache", flavour="rtx")
    engine = build_engine(info, tmp_path / "backend.onnx", tmp_path / "backend.plan", profiles,
                          settings)
    plan = tmp_path / "backend.plan"
    assert engine.flavour == "rtx" and engine.tensorrt_version == rtx.__version__
    assert engine.targets == RTX_PORTABLE and engine.gpu_name == "" and engine.strongly_typed
    assert engine.plan_bytes == plan.stat().st_size > 0 and engine.build_s > 0
    assert engine.timing_cache == ""  # TensorRT-RTX has none (its runtime cache is the runner's)
    builds = []
    monkeypatch.setattr(lx_trt.PlanFromNetwork, "__call__",
                        lambda self: builds.append(1) or b"")  # type: ignore[func-returns-value]
    again = build_engine(info, tmp_path / "backend.onnx", tmp_path / "again.plan", profiles,
                         settings)
    assert builds == [] and again.sha256 == engine.sha256 and again.build_s == engine.build_s
    with pytest.raises(InputError, match="cannot target compute capability 9.0"):
        build_engine(info, tmp_path / "backend.onnx", tmp_path / "x.plan", profiles,
                     BuildSettings("fp32", 256, tmp_path / "cache", flavour="rtx",
                                   targets=("9.0",)))


def test_rtx_plans_are_refused_for_another_flavour_version_or_gpu(tmp_path):
    info = softmax_graph(tmp_path / "backend.onnx")
    profiles = (profile_for(info, {"batch": (1, 1, 2), "frames": (1, 8, 8)}),)
    engine = build_engine(info, tmp_path / "backend.onnx", tmp_path / "backend.plan", profiles,
                          BuildSettings("fp32", 256, tmp_path / "cache", flavour="rtx",
                                        targets=("8.9",)))
    version = rtx.__version__
    assert engine.targets == ("8.9",)
    assert engine.mismatch(PlanTarget(version, "NVIDIA GeForce RTX 4090", "8.9", "rtx")) is None
    other = engine.mismatch(PlanTarget("10.3.0", "NVIDIA L4", "8.9", "tensorrt"))
    assert f"built for TensorRT-RTX {version}, this machine has TensorRT 10.3.0" in other
    assert "built for TensorRT-RTX" in engine.mismatch(PlanTarget("1.8.0", "x", "8.9", "rtx"))
    h200 = engine.mismatch(PlanTarget(version, "NVIDIA H200", "9.0", "rtx"))
    assert "targets compute capabilities 8.9; this GPU (NVIDIA H200) is 9.0" in h200
    assert "--trt-flavour tensorrt" in h200 and "\n" not in h200


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("task", ["lipreading", "lip2speech"])
@pytest.mark.slow
def test_tiny_presets_build_real_plans(packages, tmp_path, task, precision):
    """Whole model, front-end and backend of the tiny preset, through the engine factory."""
    pkg = packages[task]
    manifest = Manifest.read(pkg)
    low = max(5, manifest.spec.min_frames)
    options = BuildOptions(max_batch=2, cache_dir=tmp_path / "cache", trt_flavour="rtx",
                           profiles=(("model.frames", (low, 9, 24)),))
    artifacts = PackageArtifacts(Package(pkg, manifest), tmp_path, options, BUILDERS)
    engines = {role: artifacts.get("trt", role, precision) for role in ROLES}
    for role, (path, e) in engines.items():
        suffix = ".fp16.onnx" if precision == "fp16" else ".onnx"
        assert e.source == f"{role}{suffix}" and e.precision == precision
        assert path.stat().st_size == e.plan_bytes > 0 and e.flavour == "rtx"
        assert e.profiles[0][0].max[0] == 2  # max batch
    video = engines["model"][1].profiles[0][0]
    frames = manifest.graph("model").inputs[0].shape.index("frames")
    assert (video.min[frames], video.opt[frames], video.max[frames]) == (low, 9, 24)
    if precision == "fp16":  # the Fp32Rule layers stay float32 in the strongly typed network
        assert any(e.fp32_layers for _, e in engines.values())


def test_a_plan_for_a_flavour_that_is_not_installed_is_refused(tmp_path, monkeypatch):
    from lipx.runtime.trt_runner import TrtRunner

    info = softmax_graph(tmp_path / "backend.onnx")
    profiles = (profile_for(info, {"batch": (1, 1, 2), "frames": (1, 8, 8)}),)
    engine = build_engine(info, tmp_path / "backend.onnx", tmp_path / "backend.plan", profiles,
                          BuildSettings("fp32", 256, tmp_path / "cache", flavour="rtx"))
    monkeypatch.setitem(sys.modules, "tensorrt_rtx", None)
    with pytest.raises(BackendUnavailableError, match=r"TensorRT-RTX is not installed: pip "
                                                      r"install 'lipx\[rtx\]'"):
        TrtRunner(tmp_path / "backend.plan", engine=engine).activate()
