"""ONNX export checks: refusing fixed dims, renaming outputs, stale shapes, node scopes, and a
failing export reported in one line. (Successful exports of both toy models run in
test_export_package.py.)"""

from __future__ import annotations

import onnx
import pytest
import torch
from onnx import TensorProto, helper
from torch import nn

from lipx.export.onnx_export import (
    ExportFailed,
    OnnxFromTorch,
    check_dynamic,
    finalize_onnx,
    rename_values,
    scope_node_names,
    topological_sort,
)
from lipx.export.spec import GraphSpec, InputSpec
from lipx.package import GraphInfo, TensorInfo

SPEC = GraphSpec("backend", (InputSpec("features", ("batch", "frames", 4)),), ("logits",),
                 lambda m: m, "frames")


def info(shape, out_shape=("batch", 3)):
    return GraphInfo("backend", "backend.onnx", (TensorInfo("features", "float32", shape),),
                     (TensorInfo("logits", "float32", out_shape),), 18, "x")


def test_fixed_time_or_batch_is_refused():
    check_dynamic(info(("batch", "frames", 4)), SPEC)
    fixed = r"'features' axis 1 \(frames\) was fixed to 29.*refusing"
    with pytest.raises(ExportFailed, match=fixed):
        check_dynamic(info(("batch", 29, 4)), SPEC)
    with pytest.raises(ExportFailed, match=r"axis 0 \(batch\) was fixed to 2"):
        check_dynamic(info((2, "frames", 4)), SPEC)
    with pytest.raises(ExportFailed, match="'logits' has a fixed batch of 2"):
        check_dynamic(info(("batch", "frames", 4), (2, 3)), SPEC)


def exported_like(path, stale_value_info=True):
    """A graph shaped like the dynamo exporter's: temp output name, an internal value called like
    the wanted output, stale example shapes in value_info and on the output, scope metadata."""
    x = helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", "frames", 4])
    out = helper.make_tensor_value_info("lipx_output_0", TensorProto.FLOAT, [2, 29, 4])
    relu = helper.make_node("Relu", ["features"], ["logits"], name="node_relu")
    relu.metadata_props.add(key="pkg.torch.onnx.name_scopes", value="['', 'model.gru', 'relu']")
    relu.metadata_props.add(key="pkg.torch.onnx.class_hierarchy",
                            value="['W', 'torch.nn.modules.rnn.GRU', 'aten.relu']")
    neg = helper.make_node("Neg", ["logits"], ["lipx_output_0"], name="node_neg")
    stale = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [2, 29, 4])]
    graph = helper.make_graph([neg, relu], "g", [x], [out],
                              value_info=stale if stale_value_info else [])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)],
                                ir_version=10), str(path))


def test_finalize_renames_outputs_and_drops_stale_shapes(tmp_path):
    path = tmp_path / "backend.onnx"
    exported_like(path)
    got = finalize_onnx(path, SPEC, "test")
    assert got.outputs[0].name == "logits"
    assert got.outputs[0].shape == ("batch", "frames", 4)  # re-inferred, not the example's 29
    model = onnx.load(str(path))
    assert [n.op_type for n in model.graph.node] == ["Relu", "Neg"]  # sorted producers first
    assert model.graph.node[0].name == "model.gru/GRU/node_relu"
    assert model.graph.node[0].output[0] == "logits_0"  # moved aside for the output name
    onnx.checker.check_model(model, full_check=True)


def test_rename_values_moves_colliding_names_aside():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    nodes = [helper.make_node("Relu", ["x"], ["linear"]),
             helper.make_node("Neg", ["linear"], ["y"])]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y]))
    rename_values(model, {"y": "linear"})
    assert [list(n.output) for n in model.graph.node] == [["linear_0"], ["linear"]]
    assert list(model.graph.node[1].input) == ["linear_0"]
    assert model.graph.output[0].name == "linear"


def test_scope_names_are_idempotent_and_skip_internal_nodes(tmp_path):
    exported_like(tmp_path / "m.onnx", stale_value_info=False)
    model = onnx.load(str(tmp_path / "m.onnx"))
    scope_node_names(model)
    scope_node_names(model)
    topological_sort(model.graph)
    assert [n.name for n in model.graph.node] == ["model.gru/GRU/node_relu", "node_neg"]


class DataDependent(nn.Module):
    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if int(features.sum()) > 0:  # data-dependent control flow cannot be exported
            return features.relu()
        return features


@pytest.mark.slow
def test_failed_export_is_one_clear_error(tmp_path):
    loader = OnnxFromTorch(DataDependent(), SPEC, (2, 7), {"batch": 1, "frames": 1})
    with pytest.raises(ExportFailed, match="torch.onnx.export .dynamo, opset 18. failed for "
                                           "backend.onnx: .+"):
        loader(tmp_path / "backend.onnx")
    assert list(tmp_path.iterdir()) == []  # the job folder is cleaned up
    with pytest.raises(ValueError, match="batch >= 2"):
        OnnxFromTorch(DataDependent(), SPEC, (1, 7), {}).start(tmp_path / "x.onnx")
