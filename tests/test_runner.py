"""Runner lifecycle and feed validation, the onnxruntime runner, the backend table; torch-free."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from lipx.errors import BackendUnavailableError, InputError
from lipx.package import TensorInfo
from lipx.runtime import ort_runner
from lipx.runtime.backends import BACKENDS, FORMATS, all_precisions, get_backend
from lipx.runtime.ort_runner import OrtRunner, check_no_fallback, providers_for
from lipx.runtime.runner import Runner, RunnerStateError


class Doubler(Runner):
    """x (batch, frames, 4) float32, y (batch, 3) -> 2x."""

    def __init__(self) -> None:
        super().__init__("doubler")
        self.events: list[str] = []

    def _activate(self) -> None:
        self.events.append("activate")

    def _deactivate(self) -> None:
        self.events.append("deactivate")

    def _input_metadata(self):
        return {"x": TensorInfo("x", "float32", ("batch", "frames", 4)),
                "y": TensorInfo("y", "float32", ("batch", 3))}

    def _output_metadata(self):
        return {"out": TensorInfo("out", "float32", ("batch", "frames", 4))}

    def _infer(self, feeds):
        self.last_latency_s = 0.001
        return {"out": feeds["x"] * 2}


def feeds(b=2, t=5):
    return {"x": np.ones((b, t, 4), np.float32), "y": np.zeros((b, 3), np.float32)}


def test_lifecycle_and_context_manager():
    r = Doubler()
    with pytest.raises(RunnerStateError, match="activate"):
        r.infer(feeds())
    with r:
        assert r.is_active
        out = r.infer(feeds())
        np.testing.assert_array_equal(out["out"], 2 * feeds()["x"])
        assert r.last_latency_s == 0.001
        with pytest.raises(RunnerStateError, match="already active"):
            r.activate()
    assert not r.is_active and r.events == ["activate", "deactivate"]
    with pytest.raises(RunnerStateError):
        r.deactivate()


@pytest.mark.parametrize("bad, message", [
    ({"x": np.ones((2, 5, 4), np.float32)}, "missing input 'y'"),
    ({**feeds(), "z": np.ones(1, np.float32)}, "unexpected input 'z'"),
    ({**feeds(), "x": np.ones((2, 5, 4), np.float64)}, "must be float32, got float64"),
    ({**feeds(), "x": np.ones((2, 5), np.float32)}, "must have 3 dims"),
    ({**feeds(), "x": np.ones((2, 5, 3), np.float32)}, "size 4 on axis 2"),
    ({**feeds(), "y": np.ones((3, 3), np.float32)}, "'batch' is 3 but input 'x' has 2"),
    ({**feeds(), "x": [[1.0]]}, "must be a numpy array"),
])
def test_feed_validation(bad, message):
    with Doubler() as r, pytest.raises(InputError, match=message):
        r.infer(bad)


def tiny_onnx(path):
    """out = x * 2 + 1 with x (batch, frames, 4), and the frame count as a second output."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "frames", 4])
    out = helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", "frames", 4])
    nodes = [
        helper.make_node("Mul", ["x", "two"], ["m"]),
        helper.make_node("Add", ["m", "one"], ["out"]),
    ]
    inits = [helper.make_tensor("two", TensorProto.FLOAT, [], [2.0]),
             helper.make_tensor("one", TensorProto.FLOAT, [], [1.0])]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [out], inits),
                              opset_imports=[helper.make_opsetid("", 18)], ir_version=10)
    onnx.save(model, str(path))
    return path


def test_ort_runner_runs_and_describes_the_graph(tmp_path):
    path = tiny_onnx(tmp_path / "tiny.onnx")
    with OrtRunner(path) as r:
        assert r.name == "tiny.onnx" and r.providers == ["CPUExecutionProvider"]
        assert r.input_metadata()["x"] == TensorInfo("x", "float32", ("batch", "frames", 4))
        x = np.arange(2 * 7 * 4, dtype=np.float32).reshape(2, 7, 4)
        np.testing.assert_array_equal(r.infer({"x": x})["out"], x * 2 + 1)
        assert r.last_latency_s is not None and r.last_latency_s >= 0
        with pytest.raises(InputError, match="size 4 on axis 2"):
            r.infer({"x": np.ones((1, 3, 5), np.float32)})
    # a loader (callable returning bytes) works too
    with OrtRunner(lambda: path.read_bytes(), name="bytes") as r:
        assert r.infer({"x": np.zeros((1, 1, 4), np.float32)})["out"].tolist() == [[[1.0] * 4]]


def test_ort_runner_errors(tmp_path):
    with pytest.raises(InputError, match="unknown onnxruntime device 'gpu'.*cuda"):
        OrtRunner(tmp_path / "x.onnx", device="gpu")
    with pytest.raises(InputError, match="does not exist"), OrtRunner(tmp_path / "x.onnx"):
        pass
    (tmp_path / "bad.onnx").write_bytes(b"not a model")
    with pytest.raises(InputError, match="onnxruntime cannot load bad.onnx"), OrtRunner(
            tmp_path / "bad.onnx"):
        pass


def test_missing_provider_lists_the_available_ones():
    assert providers_for("cuda", ["CUDAExecutionProvider", "CPUExecutionProvider"]) == [
        "CUDAExecutionProvider", "CPUExecutionProvider"]
    with pytest.raises(BackendUnavailableError,
                       match="no CUDAExecutionProvider.*available providers: CPUExecutionProvider"):
        providers_for("cuda", ["CPUExecutionProvider"])
    with pytest.raises(BackendUnavailableError, match="TensorrtExecutionProvider"):
        providers_for("tensorrt", ["CUDAExecutionProvider", "CPUExecutionProvider"])


def test_silent_cpu_fallback_is_refused(tmp_path, monkeypatch):
    check_no_fallback("cuda", ["CUDAExecutionProvider", "CPUExecutionProvider"])
    with pytest.raises(BackendUnavailableError, match="fell back to CPUExecutionProvider"):
        check_no_fallback("cuda", ["CPUExecutionProvider"])

    # onnxruntime-gpu whose CUDA libraries fail to load: the session exists, on the CPU only
    import onnxruntime

    real = onnxruntime.InferenceSession
    monkeypatch.setattr(onnxruntime, "get_available_providers",
                        lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(onnxruntime, "InferenceSession",
                        lambda model, options, providers: real(model, options,
                                                               providers=["CPUExecutionProvider"]))
    runner = OrtRunner(tiny_onnx(tmp_path / "t.onnx"), device="cuda")
    with pytest.raises(BackendUnavailableError, match="CUDA/cuDNN"):
        runner.activate()
    assert not runner.is_active


def test_missing_onnxruntime_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(BackendUnavailableError, match=r"lipx\[cpu\]"):
        ort_runner.import_onnxruntime()


def test_backend_table_drives_choices():
    assert set(BACKENDS) == {"onnx", "trt"} and set(FORMATS) == {"package", "triton"}
    assert get_backend("trt").needs_gpu and get_backend("trt").default_precision == "fp16"
    assert get_backend("onnx").default_precision == "fp32"
    assert all_precisions() == ("fp32", "fp16", "int8")
    with pytest.raises(InputError, match="unknown engine 'tensorrt'.*choose from: onnx, trt"):
        get_backend("tensorrt")
    assert get_backend("onnx").runner_class() is OrtRunner


def test_backend_with_missing_module_is_unavailable(monkeypatch):
    trt = get_backend("trt")
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    with pytest.raises(BackendUnavailableError, match=r"needs tensorrt or tensorrt_rtx: pip "
                       r"install 'lipx\[gpu\]' \(TensorRT\) or 'lipx\[rtx\]'"):
        trt.runner_class()


def test_runtime_never_imports_torch(tmp_path):
    path = tiny_onnx(tmp_path / "tiny.onnx")
    code = textwrap.dedent(f"""
        import sys
        import numpy as np
        import lipx.package, lipx.runtime.backends, lipx.runtime.ort_runner, lipx.runtime.runner
        from lipx.runtime.ort_runner import OrtRunner
        with OrtRunner({str(path)!r}) as r:
            r.infer({{"x": np.zeros((1, 2, 4), np.float32)}})
        heavy = sorted(m for m in ("torch", "tensorrt") if m in sys.modules)
        print("loaded:", heavy)
        sys.exit(1 if heavy else 0)
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "loaded: []" in result.stdout
