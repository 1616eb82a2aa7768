"""TrtRunner's logic without TensorRT or a GPU: stand-ins for the ``tensorrt`` module and for
cuda-python's runtime (device memory as host bytes; ``stream_fixtures``) check the plan/target
check, the buffers and copies, per-call shapes within the profile, CUDA graph capture and replay,
timings, clean-up and the errors. The test marked ``trt`` runs a real plan where TensorRT and a
GPU exist."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from stream_fixtures import FakePlan, install_fake_tensorrt

from lipx.errors import BackendUnavailableError, InputError
from lipx.package import EngineInfo, GraphInfo, ShapeRange, TensorInfo
from lipx.runtime.cuda import CudaError
from lipx.runtime.trt_runner import TrtRunner

PLAN = b"FAKEPLAN"
D = 4
PROFILE = {"features": ((1, 1, D), (1, 6, D), (2, 8, D)), "bias": ((1, D), (1, D), (2, D))}
GRAPH = GraphInfo("backend", "backend.onnx",
                  (TensorInfo("features", "float32", ("batch", "frames", D)),
                   TensorInfo("bias", "float32", ("batch", D))),
                  (TensorInfo("out", "float32", ("batch", "frames", D)),
                   TensorInfo("pooled", "float32", ("batch", D))), 18, "x")


def engine_info(capability: str = "8.9", version: str = "10.3.0") -> EngineInfo:
    ranges = tuple(ShapeRange(n, *r) for n, r in PROFILE.items())
    return EngineInfo("backend", "backend.plan", "backend.onnx", "fp16", (ranges,), version,
                      "NVIDIA L4", capability)


def reference(features: np.ndarray, bias: np.ndarray) -> dict[str, np.ndarray]:
    return {"out": features * 2 + bias[:, None, :], "pooled": features.sum(axis=1)}


TOY = FakePlan(
    inputs={"features": ((-1, -1, D), PROFILE["features"]), "bias": ((-1, D), PROFILE["bias"])},
    outputs={"out": (-1, -1, D), "pooled": (-1, D)},
    shapes=lambda given: {"out": given["features"], "pooled": (given["features"][0], D)},
    run=lambda x: reference(x["features"], x["bias"]),
)
"""The fake plan ``PLAN``: out = 2 features + bias, pooled = sum over frames."""


@pytest.fixture
def fakes(monkeypatch):
    return install_fake_tensorrt(monkeypatch, {PLAN: TOY})


def feeds(batch: int = 1, frames: int = 6, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"features": rng.standard_normal((batch, frames, D), dtype=np.float32),
            "bias": rng.standard_normal((batch, D), dtype=np.float32)}


def test_runs_a_plan_with_per_call_shapes_and_separate_timings(fakes, tmp_path):
    trt, cudart = fakes
    (tmp_path / "backend.plan").write_bytes(PLAN)
    with TrtRunner(tmp_path / "backend.plan", engine=engine_info(), graph=GRAPH) as runner:
        assert runner.name == "backend.plan" and runner.target.compute_capability == "8.9"
        meta = runner.input_metadata()
        assert meta["features"].shape == ("batch", "frames", D) and meta["bias"].dtype == "float32"
        assert list(runner.output_metadata()) == ["out", "pooled"]
        for batch, frames in ((1, 6), (2, 8), (1, 1), (1, 6)):
            x = feeds(batch, frames, seed=frames)
            out = runner.infer(x)
            for name, want in reference(**x).items():
                np.testing.assert_allclose(out[name], want, rtol=1e-6)
                assert out[name].shape == want.shape
        assert set(runner.last_timings) == {"h2d_ms", "compute_ms", "d2h_ms"}
        assert all(v > 0 for v in runner.last_timings.values())
        assert runner.last_latency_s > 0
        assert cudart.copies[-4:] == ["cudaMemcpyHostToDevice"] * 2 + ["cudaMemcpyDeviceToHost"] * 2
    assert cudart.device == {} and cudart.host == {} and cudart.streams == {}  # all released


def test_a_shape_outside_the_profile_names_the_range(fakes, tmp_path):
    with TrtRunner(PLAN, name="backend.plan", graph=GRAPH) as runner:
        with pytest.raises(InputError, match=r"\(1, 9, 4\) is outside the plan's optimisation "
                                             r"profile \(1, 1, 4\) \.\. \(2, 8, 4\)"):
            runner.infer(feeds(1, 9))
        with pytest.raises(InputError, match="'batch' is 2 but input 'features' has 1"):
            runner.infer({"features": feeds(1, 6)["features"], "bias": feeds(2, 6)["bias"]})


def test_cuda_graphs_are_captured_once_per_shape_and_replayed(fakes):
    trt, cudart = fakes
    with TrtRunner(PLAN, cuda_graph=True) as runner:
        for seed in range(3):
            x = feeds(1, 6, seed)
            np.testing.assert_allclose(runner.infer(x)["out"], reference(**x)["out"], rtol=1e-6)
        assert (trt.executed, cudart.launches) == (3, 2)  # one direct run, then two replays
        x = feeds(2, 3)
        np.testing.assert_allclose(runner.infer(x)["pooled"], reference(**x)["pooled"], rtol=1e-6)
        assert (trt.executed, cudart.launches, len(runner._graphs)) == (4, 2, 2)


def test_a_plan_for_another_gpu_or_tensorrt_is_refused_before_loading(fakes):
    trt, _ = fakes
    with pytest.raises(InputError, match=r"built for a GPU of compute capability 9.0.*rebuild"):
        TrtRunner(PLAN, engine=engine_info(capability="9.0")).activate()
    with pytest.raises(InputError,
                       match="built for TensorRT 10.0.1, this machine has TensorRT 10.3.0"):
        TrtRunner(PLAN, engine=engine_info(version="10.0.1")).activate()
    assert trt.deserialized == 0


def test_bad_plans_are_input_errors_and_release_everything(fakes, tmp_path):
    _, cudart = fakes
    with pytest.raises(InputError, match="does not exist"):
        TrtRunner(tmp_path / "missing.plan").activate()
    with pytest.raises(InputError, match="cannot load junk.plan"):
        TrtRunner(b"junk", name="junk.plan").activate()
    assert cudart.device == {} and cudart.host == {} and cudart.streams == {}


def test_missing_tensorrt_cuda_python_or_gpu_name_the_fix(fakes, monkeypatch):
    _, cudart = fakes
    cudart.devices = 0
    with pytest.raises(BackendUnavailableError, match="no usable CUDA GPU.*cudaErrorNoDevice"):
        TrtRunner(PLAN).activate()
    for name in ("cuda", "cuda.bindings", "cuda.bindings.runtime", "cuda.cudart"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(BackendUnavailableError,
                       match=r"cuda-python.*pip install cuda-python \(in 'lipx\[gpu\]'\)"):
        TrtRunner(PLAN).activate()
    monkeypatch.setitem(sys.modules, "tensorrt_rtx", None)
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(BackendUnavailableError, match=r"no TensorRT is installed: pip install "
                                                      r"'lipx\[rtx\]'.*or 'lipx\[gpu\]'"):
        TrtRunner(PLAN).activate()
    with pytest.raises(BackendUnavailableError, match=r"TensorRT is not installed: pip install "
                                                      r"'lipx\[gpu\]'"):
        TrtRunner(PLAN, engine=engine_info()).activate()


def test_cuda_failures_name_the_call(fakes):
    _, cudart = fakes
    cudart.cudaMalloc = lambda n: (cudart.cudaError_t.cudaErrorMemoryAllocation, 0)
    with pytest.raises(CudaError, match="CUDA cudaMalloc failed: cudaErrorMemoryAllocation"):
        TrtRunner(PLAN).activate()
    assert cudart.host == {} and cudart.streams == {}


@pytest.mark.trt
@pytest.mark.parametrize("cuda_graph", [False, True])
def test_real_plan_runs_and_matches_numpy(tmp_path, cuda_graph):
    """Builds a tiny FP32 plan with lipx.export.trt and runs it; needs TensorRT and a GPU."""
    import onnx
    from onnx import TensorProto, helper

    from lipx.export.trt import BuildSettings, build_engine, profile_for

    x = helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", "frames", D])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", "frames", D])
    graph = helper.make_graph([helper.make_node("Softmax", ["features"], ["logits"], axis=-1)],
                              "g", [x], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)],
                                ir_version=10), str(tmp_path / "backend.onnx"))
    info = GraphInfo("backend", "backend.onnx",
                     (TensorInfo("features", "float32", ("batch", "frames", D)),), (), 18, "x")
    profiles = (profile_for(info, {"batch": (1, 1, 2), "frames": (1, 8, 8)}),)
    engine = build_engine(info, tmp_path / "backend.onnx", tmp_path / "backend.plan", profiles,
                          BuildSettings("fp32", 256, tmp_path / "cache"))
    with TrtRunner(tmp_path / "backend.plan", engine=engine, graph=info,
                   cuda_graph=cuda_graph) as runner:
        for frames in (8, 8, 3):
            features = np.random.default_rng(frames).standard_normal((1, frames, D)).astype(
                np.float32)
            want = np.exp(features) / np.exp(features).sum(-1, keepdims=True)
            np.testing.assert_allclose(runner.infer({"features": features})["logits"], want,
                                       atol=1e-5)
        assert runner.last_timings["compute_ms"] > 0
        with pytest.raises(InputError, match="outside the plan's optimisation profile"):
            runner.infer({"features": np.zeros((1, 9, D), np.float32)})
