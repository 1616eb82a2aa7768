"""Our logic around TensorRT that needs no TensorRT: profiles and their overrides, the FP32 rule,
cache and plan keys, flavour choice, build targets and the errors when TensorRT or a GPU is
missing. Real builds (TensorRT-RTX, no GPU needed) are in ``test_trt_build.py``.

The test marked ``trt`` builds a real full-TensorRT plan and runs only where TensorRT and a GPU
exist.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import pytest

from lipx.errors import BackendUnavailableError, InputError
from lipx.export.api import ExportOptions
from lipx.export.precision import Fp32Rule
from lipx.export.trt import (
    BuildSettings,
    apply_overrides,
    build_engine,
    build_target,
    derive_dims,
    parse_dim_range,
    plan_key,
    profile_for,
    timing_cache_file,
)
from lipx.package import GraphInfo, PlanTarget, ShapeRange, TensorInfo
from lipx.runtime.backends import TRT_FLAVOURS, pick_flavour

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
    with pytest.raises(InputError, match="larger than the window"):
        derive_dims("backend", window=10, stride=20, max_batch=1, min_frames=1, max_frames=30)
    with pytest.raises(ValueError, match="inconsistent"):
        derive_dims("backend", window=40, stride=20, max_batch=1, min_frames=1, max_frames=30)


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
    rtx = PlanTarget("1.7.1.116", "", "", "rtx")
    base = plan_key("a" * 64, TARGET, ("8.9",), "fp16", profiles, 2048)
    assert base == plan_key("a" * 64, TARGET, ("8.9",), "fp16", profiles, 2048)
    variants = [
        plan_key("b" * 64, TARGET, ("8.9",), "fp16", profiles, 2048),
        plan_key("a" * 64, PlanTarget("10.3.0", "NVIDIA L4", "9.0"), ("8.9",), "fp16", profiles,
                 2048),
        plan_key("a" * 64, PlanTarget("10.4.0", "NVIDIA L4", "8.9"), ("8.9",), "fp16", profiles,
                 2048),
        plan_key("a" * 64, PlanTarget("10.3.0", "NVIDIA A10", "8.9"), ("8.9",), "fp16", profiles,
                 2048),
        plan_key("a" * 64, rtx, ("8.9",), "fp16", profiles, 2048),
        plan_key("a" * 64, rtx, ("8.9", "12.0"), "fp16", profiles, 2048),
        plan_key("a" * 64, TARGET, ("8.9",), "fp32", profiles, 2048),
        plan_key("a" * 64, TARGET, ("8.9",), "fp16", profiles, 1024),
        plan_key("a" * 64, TARGET, ("8.9",), "fp16", (), 2048),
    ]
    assert base not in variants and len(set(variants)) == len(variants)
    assert timing_cache_file(Path("/c"), TARGET) == Path("/c/timing-trt10.3.0-sm89-nvidia-l4.cache")
    assert rtx.key == "rtx1.7.1.116-portable"


def test_profile_overrides_parse_and_apply_per_role():
    assert parse_dim_range("frames=5:29:87") == ("frames", (5, 29, 87))
    assert parse_dim_range("frontend.batch=1:1:1") == ("frontend.batch", (1, 1, 1))
    for bad, match in (("frames=5:29", "MIN:OPT:MAX"), ("time=1:2:3", "dims are"),
                       ("head.frames=1:2:3", "roles"), ("frames=9:5:10", "min <= opt")):
        with pytest.raises(InputError, match=match):
            parse_dim_range(bad)
    dims = {"batch": (1, 1, 8), "frames": (1, 29, 29)}
    overrides = (("backend.frames", (5, 20, 40)), ("frames", (3, 9, 12)), ("chunk", (5, 5, 9)))
    assert apply_overrides("backend", dims, overrides) == {"batch": (1, 1, 8),
                                                           "frames": (5, 20, 40)}
    assert apply_overrides("model", dims, overrides)["frames"] == (3, 9, 12)


def test_auto_flavour_prefers_full_tensorrt_on_a_gpu(monkeypatch):
    have: list[str] = []
    monkeypatch.setattr("lipx.runtime.backends.installed_flavours", lambda names=(): have)
    assert pick_flavour("auto", gpu=True).name == "tensorrt"  # neither: the import will say so
    have[:] = ["tensorrt", "rtx"]
    assert pick_flavour("auto", gpu=True).name == "tensorrt"
    assert pick_flavour("auto", gpu=False).name == "rtx"
    have[:] = ["rtx"]
    assert pick_flavour("auto", gpu=True).name == "rtx"
    assert pick_flavour("tensorrt", gpu=False).name == "tensorrt"
    with pytest.raises(InputError, match="unknown --trt-flavour 'trx'.*did you mean"):
        pick_flavour("trx", gpu=False)


def test_missing_tensorrt_is_one_clear_error(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    monkeypatch.setitem(sys.modules, "tensorrt_rtx", None)
    missing = r"no TensorRT is installed: pip install 'lipx\[rtx\]' \(TensorRT-RTX: builds without"
    with pytest.raises(BackendUnavailableError, match=missing):
        build_engine(FRONTEND, tmp_path / "f.onnx", tmp_path / "f.plan", (),
                     BuildSettings("fp32"))
    with pytest.raises(BackendUnavailableError, match=r"TensorRT-RTX is not installed: pip "
                                                      r"install 'lipx\[rtx\]'.*RTX GPUs"):
        build_engine(FRONTEND, tmp_path / "f.onnx", tmp_path / "f.plan", (),
                     BuildSettings("fp32", flavour="rtx"))


def test_full_tensorrt_without_a_gpu_says_what_each_flavour_needs():
    trt = types.SimpleNamespace(__version__="10.3.0")
    with pytest.raises(BackendUnavailableError, match="no CUDA GPU found: full TensorRT builds "
                       "a plan on a GPU of the architecture.*TensorRT-RTX builds without one"):
        build_target(TRT_FLAVOURS["tensorrt"], trt, (), None)
    target, targets = build_target(TRT_FLAVOURS["tensorrt"], trt, (), ("NVIDIA L4", "8.9"))
    assert (target, targets) == (TARGET, ("8.9",))
    with pytest.raises(InputError, match="--trt-targets is for --trt-flavour rtx"):
        build_target(TRT_FLAVOURS["tensorrt"], trt, ("12.0",), ("NVIDIA L4", "8.9"))


def test_build_settings_are_validated():
    with pytest.raises(InputError, match="compute capabilities like 8.9"):
        BuildSettings(targets=("sm89",))
    with pytest.raises(InputError, match="unknown --trt-flavour"):
        BuildSettings(flavour="cuda")
    with pytest.raises(InputError, match="strongly typed fp16 plan is built from the fp16 graph"):
        build_engine(FRONTEND, Path("f.onnx"), Path("f.plan"), (), BuildSettings("fp16"))


def test_trt_options_are_validated(tmp_path):
    with pytest.raises(InputError, match="--precision int8 is not available with --engine trt"):
        ExportOptions(output=tmp_path, engine="trt", precision="int8")
    with pytest.raises(InputError, match="GPUs only"):
        ExportOptions(output=tmp_path, engine="trt", format="triton", triton_kind="cpu")
    with pytest.raises(InputError, match="--workspace-mb must be >= 64"):
        ExportOptions(output=tmp_path, engine="trt", workspace_mb=1)
    assert ExportOptions(output=tmp_path, engine="trt").resolved_precision == "fp16"
    with pytest.raises(InputError, match="--trt-flavour, --profile need --engine trt"):
        ExportOptions(output=tmp_path, trt_flavour="rtx", profiles=("frames=1:2:3",))
    with pytest.raises(InputError, match="--profile takes"):
        ExportOptions(output=tmp_path, engine="trt", profiles=("frames",))


@pytest.mark.trt
def test_real_tensorrt_build_of_a_tiny_graph(tmp_path):
    """Builds and checks a real full-TensorRT plan; runs only with TensorRT and a GPU."""
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
                          BuildSettings("fp32", 256, tmp_path / "cache", flavour="tensorrt"))
    assert (tmp_path / "backend.plan").stat().st_size > 0
    assert engine.mismatch(engine.target) is None
    assert np.isfinite(float(engine.compute_capability))
