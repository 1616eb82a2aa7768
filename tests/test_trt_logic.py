"""Our logic around TensorRT, tested without TensorRT: profiles, FP32 rule, cache and plan keys,
the builder calls (against a recording stand-in of the ``tensorrt`` module), manifest fields,
plan-mismatch detection and the errors when TensorRT or a GPU is missing.

The test marked ``trt`` builds a real plan and runs only where TensorRT and a GPU exist.
"""

from __future__ import annotations

import sys
import types
from enum import Enum, IntEnum
from pathlib import Path

import numpy as np
import pytest

from lipx.errors import BackendUnavailableError, InputError
from lipx.export import trt as lx_trt
from lipx.export.api import ExportOptions
from lipx.export.precision import Fp32Rule
from lipx.export.trt import (
    BuildSettings,
    NetworkFromOnnx,
    PlanFromNetwork,
    build_engine,
    derive_dims,
    plan_key,
    profile_for,
    timing_cache_file,
)
from lipx.package import GraphInfo, PlanTarget, ShapeRange, TensorInfo

VIDEO = TensorInfo("video", "float32", ("batch", 1, "chunk", 112, 112))
FEATURES = TensorInfo("features", "float32", ("batch", "frames", 512))
NOISE = TensorInfo("noise", "float32", ("batch", 128, 20, "frames"))
FRONTEND = GraphInfo("frontend", "frontend.onnx", (VIDEO,), (FEATURES,), 18, "x")
BACKEND = GraphInfo("backend", "backend.onnx", (FEATURES, NOISE), (), 18, "x")
TARGET = PlanTarget("10.3.0", "NVIDIA L4", "8.9")


def test_profiles_follow_the_streaming_schedule():
    front = derive_dims("frontend", window=29, stride=7, max_batch=8, min_frames=1, max_frames=87)
    assert front == {"batch": (1, 1, 8), "chunk": (5, 11, 33)}
    back = derive_dims("backend", window=40, stride=20, max_batch=4, min_frames=1, max_frames=120)
    assert back == {"batch": (1, 1, 4), "frames": (1, 40, 40)}
    whole = derive_dims("model", window=29, stride=7, max_batch=8, min_frames=3, max_frames=87)
    assert whole == {"batch": (1, 8, 8), "frames": (3, 29, 87)}
    with pytest.raises(ValueError, match="inconsistent"):
        derive_dims("backend", window=10, stride=20, max_batch=1, min_frames=1, max_frames=30)


def test_profile_shapes_substitute_symbolic_dims_and_keep_fixed_ones():
    dims = derive_dims("backend", window=40, stride=20, max_batch=4, min_frames=1, max_frames=120)
    features, noise = profile_for(BACKEND, dims)
    assert features == ShapeRange("features", (1, 1, 512), (1, 40, 512), (4, 40, 512))
    assert noise == ShapeRange("noise", (1, 128, 20, 1), (1, 128, 20, 40), (4, 128, 20, 40))
    with pytest.raises(ValueError, match="no profile range for dim 'chunk'"):
        profile_for(FRONTEND, dims)


@pytest.mark.parametrize("kind, name, keep", [
    ("SOFTMAX", "model.memory/_Memory/node_softmax", True),
    ("NORMALIZATION", "layer_norm", True),
    ("LOOP", "model.backend.gru/GRU/node_gru__1", True),
    ("MATRIX_MULTIPLY", "model.backend.gru/GRU/node_gru__1_gates", True),
    ("MATRIX_MULTIPLY", "model.memory/Memory/node_matmul", True),   # lipreading pattern
    ("CONVOLUTION", "model.frontend.stem/Conv3d/node_conv3d", False),
    ("SCALE", "model.frontend.stem.1/BatchNorm3d/node_batch_norm", False),  # folded into conv
    ("ELEMENTWISE", "model.decoder.att/AVAttention/node_mul", True),  # lip2speech pattern
])
def test_fp32_rule(kind, name, keep):
    rule = Fp32Rule.with_patterns(("memory", "attention"))
    assert rule.keep_layer(kind, name) is keep


def test_fp32_rule_on_onnx_nodes():
    rule = Fp32Rule()
    assert rule.keep_node("GRU", "node_gru__1") and rule.keep_node("Softmax", "x")
    assert rule.keep_node("Div", "model.memory/_Memory/node_linalg_vector_norm")
    assert not rule.keep_node("Conv", "model.front/Conv3d/node_conv")


def test_plan_key_changes_with_everything_the_plan_depends_on():
    profiles = (profile_for(FRONTEND, {"batch": (1, 1, 8), "chunk": (5, 11, 33)}),)
    rule = Fp32Rule()
    base = plan_key("a" * 64, TARGET, "fp16", profiles, 2048, rule)
    assert base == plan_key("a" * 64, TARGET, "fp16", profiles, 2048, rule)
    variants = [
        plan_key("b" * 64, TARGET, "fp16", profiles, 2048, rule),
        plan_key("a" * 64, PlanTarget("10.3.0", "NVIDIA L4", "9.0"), "fp16", profiles, 2048, rule),
        plan_key("a" * 64, PlanTarget("10.4.0", "NVIDIA L4", "8.9"), "fp16", profiles, 2048, rule),
        plan_key("a" * 64, PlanTarget("10.3.0", "NVIDIA A10", "8.9"), "fp16", profiles, 2048, rule),
        plan_key("a" * 64, TARGET, "fp32", profiles, 2048, rule),
        plan_key("a" * 64, TARGET, "fp16", profiles, 1024, rule),
        plan_key("a" * 64, TARGET, "fp16", (), 2048, rule),
        plan_key("a" * 64, TARGET, "fp16", profiles, 2048, Fp32Rule.with_patterns(("x",))),
    ]
    assert base not in variants and len(set(variants)) == len(variants)
    assert timing_cache_file(Path("/c"), TARGET) == Path("/c/timing-trt10.3.0-sm89-nvidia-l4.cache")


def test_missing_tensorrt_is_one_clear_error(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    missing = r"TensorRT is not installed: pip install 'lipx\[gpu\]'"
    with pytest.raises(BackendUnavailableError, match=missing):
        build_engine(FRONTEND, tmp_path / "f.onnx", tmp_path / "f.plan", (), BuildSettings())


def test_no_gpu_is_one_clear_error(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "tensorrt", FakeTrt())
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    with pytest.raises(BackendUnavailableError, match="no CUDA GPU found.*--engine onnx"):
        build_engine(FRONTEND, tmp_path / "f.onnx", tmp_path / "f.plan", (), BuildSettings())


def test_trt_options_are_validated(tmp_path):
    with pytest.raises(InputError, match="--precision int8 is not available with --engine trt"):
        ExportOptions(output=tmp_path, engine="trt", precision="int8")
    with pytest.raises(InputError, match="GPUs only"):
        ExportOptions(output=tmp_path, engine="trt", format="triton", triton_kind="cpu")
    with pytest.raises(InputError, match="--workspace-mb must be >= 64"):
        ExportOptions(output=tmp_path, engine="trt", workspace_mb=1)
    assert ExportOptions(output=tmp_path, engine="trt").resolved_precision == "fp16"


# -- a recording stand-in for the tensorrt module ----------------------------------------------
class FakeLayer:
    def __init__(self, kind, name, dtype="float"):
        self.type, self.name = kind, name
        self.num_outputs = 1
        self._out = types.SimpleNamespace(dtype=dtype)
        self.precision = None
        self.output_types = {}

    def get_output(self, i):
        return self._out

    def set_output_type(self, i, dtype):
        self.output_types[i] = dtype


class FakeTrt(types.ModuleType):
    """Just enough of the tensorrt API to record what our builder code asks for."""

    LayerType = Enum("LayerType", "CONVOLUTION SOFTMAX SHAPE LOOP MATRIX_MULTIPLY")

    def __init__(self, fp16_flag=True):
        super().__init__("tensorrt")
        self.__version__ = "10.3.0"
        self.float32, self.float16, self.int32 = "float", "half", "int32"
        flags = "FP16 OBEY_PRECISION_CONSTRAINTS TF32" if fp16_flag else "TF32"
        self.BuilderFlag = Enum("BuilderFlag", flags)
        self.MemoryPoolType = Enum("MemoryPoolType", "WORKSPACE")
        self.NetworkDefinitionCreationFlag = IntEnum("NetworkDefinitionCreationFlag",
                                                  {"STRONGLY_TYPED": 5})
        self.Logger = type("Logger", (), {"WARNING": 2, "__init__": lambda s, level: None})
        self.calls = []
        L = self.LayerType
        self.layers = [
            FakeLayer(L.CONVOLUTION, "model.front/Conv3d/node_conv"),
            FakeLayer(L.SOFTMAX, "model.memory/_Memory/node_softmax"),
            FakeLayer(L.SHAPE, "node_Shape_0", dtype="int32"),
            FakeLayer(L.LOOP, "model.gru/GRU/node_gru__1"),
            FakeLayer(L.MATRIX_MULTIPLY, "model.memory/_Memory/node_matmul"),
        ]
        fake = self

        class Network:
            num_layers = len(self.layers)

            def get_layer(self, i):
                return fake.layers[i]

        class Parser:
            @property
            def num_errors(self):
                return 0 if fake.parse_ok else 1

            def __init__(self, network, logger):
                pass

            def parse_from_file(self, path):
                fake.calls.append(("parse", Path(path).name))
                return fake.parse_ok

            def get_error(self, i):
                return "unsupported operator RandomNormalLike"

        class Config:
            def set_memory_pool_limit(self, pool, size):
                fake.calls.append(("workspace", size))

            def set_flag(self, flag):
                fake.calls.append(("flag", flag.name))

            def clear_flag(self, flag):
                fake.calls.append(("clear", flag.name))

            def add_optimization_profile(self, profile):
                fake.calls.append(("profile", profile.shapes))

            def create_timing_cache(self, data):
                fake.calls.append(("cache-in", bytes(data)))
                return types.SimpleNamespace(serialize=lambda: bytes(data) + b"+timed")

            def set_timing_cache(self, cache, ignore_mismatch):
                self.cache = cache
                return True

            def get_timing_cache(self):
                return self.cache

        class Builder:
            def __init__(self, logger):
                pass

            def create_network(self, flags):
                fake.calls.append(("network", flags))
                return Network()

            def create_builder_config(self):
                return Config()

            def create_optimization_profile(self):
                profile = types.SimpleNamespace(shapes=[])
                profile.set_shape = lambda *a: profile.shapes.append(a)
                return profile

            def build_serialized_network(self, network, config):
                fake.calls.append(("build",))
                return b"PLAN" if fake.build_ok else None

        self.Builder, self.OnnxParser = Builder, Parser
        self.parse_ok = self.build_ok = True


def test_plan_from_network_sets_fp16_constraints_profiles_and_caches(monkeypatch, tmp_path):
    fake = FakeTrt()
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    profiles = (profile_for(FRONTEND, {"batch": (1, 1, 8), "chunk": (5, 11, 33)}),)
    cache = tmp_path / "timing.cache"
    cache.write_bytes(b"old")
    loader = PlanFromNetwork(NetworkFromOnnx(tmp_path / "frontend.onnx"), profiles, "fp16", 512,
                             cache, Fp32Rule.with_patterns(("memory",)))
    assert loader() == b"PLAN"
    assert ("workspace", 512 << 20) in fake.calls
    assert ("flag", "FP16") in fake.calls and ("flag", "OBEY_PRECISION_CONSTRAINTS") in fake.calls
    assert ("profile", [("video", (1, 1, 5, 112, 112), (1, 1, 11, 112, 112),
                         (8, 1, 33, 112, 112))]) in fake.calls
    assert ("cache-in", b"old") in fake.calls and cache.read_bytes() == b"old+timed"
    conv, softmax, shape, loop, matmul = fake.layers
    assert loader.fp32_layers == [softmax.name, loop.name, matmul.name]
    assert softmax.precision == fake.float32 and softmax.output_types == {0: fake.float32}
    assert conv.precision is None and shape.precision is None  # shape tensors are left alone


def test_fp32_plans_disable_tf32_and_mark_nothing(monkeypatch, tmp_path):
    fake = FakeTrt()
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    loader = PlanFromNetwork(NetworkFromOnnx(tmp_path / "m.onnx"), (), "fp32", 512, None)
    loader()
    assert ("clear", "TF32") in fake.calls and ("flag", "FP16") not in fake.calls
    assert loader.fp32_layers == []


def test_parse_and_build_failures_are_reported(monkeypatch, tmp_path):
    fake = FakeTrt()
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    fake.parse_ok = False
    with pytest.raises(Exception, match="cannot parse m.onnx: unsupported operator"):
        NetworkFromOnnx(tmp_path / "m.onnx")()
    fake.parse_ok, fake.build_ok = True, False
    with pytest.raises(Exception, match="failed to build the plan.*--workspace-mb"):
        PlanFromNetwork(NetworkFromOnnx(tmp_path / "m.onnx"), (), "fp16", 512, None)()


def test_build_engine_records_the_target_and_reuses_the_plan_cache(monkeypatch, tmp_path):
    fake = FakeTrt()
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    monkeypatch.setattr(lx_trt, "running_target", lambda trt: TARGET)
    (tmp_path / "frontend.onnx").write_bytes(b"onnx bytes")
    profiles = (profile_for(FRONTEND, {"batch": (1, 1, 8), "chunk": (5, 11, 33)}),)
    settings = BuildSettings("fp16", 1024, tmp_path / "cache", Fp32Rule())
    info = build_engine(FRONTEND, tmp_path / "frontend.onnx", tmp_path / "frontend.plan",
                        profiles, settings)
    assert (tmp_path / "frontend.plan").read_bytes() == b"PLAN"
    assert (info.tensorrt_version, info.gpu_name, info.compute_capability) == ("10.3.0",
                                                                              "NVIDIA L4", "8.9")
    assert info.profiles == profiles and info.workspace_mb == 1024 and info.precision == "fp16"
    assert info.timing_cache.endswith("timing-trt10.3.0-sm89-nvidia-l4.cache")
    assert "model.gru/GRU/node_gru__1" in info.fp32_layers and info.source == "frontend.onnx"
    assert info.mismatch(TARGET) is None
    builds = fake.calls.count(("build",))
    again = build_engine(FRONTEND, tmp_path / "frontend.onnx", tmp_path / "again.plan",
                         profiles, settings)
    assert fake.calls.count(("build",)) == builds  # same key: taken from the plan cache
    assert again.fp32_layers == info.fp32_layers and again.sha256 == info.sha256
    (tmp_path / "frontend.onnx").write_bytes(b"other onnx")
    build_engine(FRONTEND, tmp_path / "frontend.onnx", tmp_path / "third.plan", profiles, settings)
    assert fake.calls.count(("build",)) == builds + 1  # new graph: rebuilt


def test_tensorrt_without_fp16_flag_builds_strongly_typed_from_fp16_graph(monkeypatch, tmp_path):
    fake = FakeTrt(fp16_flag=False)  # TensorRT >= 11
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    monkeypatch.setattr(lx_trt, "running_target", lambda trt: TARGET)
    (tmp_path / "frontend.onnx").write_bytes(b"onnx")
    settings = BuildSettings("fp16", 1024, tmp_path / "cache")
    with pytest.raises(BackendUnavailableError, match="only from an fp16 graph"):
        build_engine(FRONTEND, tmp_path / "frontend.onnx", tmp_path / "f.plan", (), settings)
    build_engine(FRONTEND, tmp_path / "frontend.onnx", tmp_path / "f.plan", (), settings,
                 fp16_src=lambda: tmp_path / "frontend.fp16.onnx")
    assert ("parse", "frontend.fp16.onnx") in fake.calls and ("network", 1 << 5) in fake.calls


@pytest.mark.trt
def test_real_tensorrt_build_of_a_tiny_graph(tmp_path):
    """Builds and checks a real FP16 plan; runs only with TensorRT and a GPU."""
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", "frames", 4])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", "frames", 4])
    graph = helper.make_graph([helper.make_node("Softmax", ["features"], ["logits"], axis=-1)],
                              "g", [x], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)],
                                ir_version=10), str(tmp_path / "backend.onnx"))
    info = GraphInfo("backend", "backend.onnx", (TensorInfo("features", "float32",
                                                            ("batch", "frames", 4)),), (), 18, "x")
    profiles = (profile_for(info, {"batch": (1, 1, 2), "frames": (1, 8, 8)}),)
    engine = build_engine(info, tmp_path / "backend.onnx", tmp_path / "backend.plan", profiles,
                          BuildSettings("fp16", 256, tmp_path / "cache"))
    assert (tmp_path / "backend.plan").stat().st_size > 0
    assert engine.mismatch(engine.target) is None
    assert np.isfinite(float(engine.compute_capability))
