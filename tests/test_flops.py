"""The FLOP counter of `lipx bench` on small hand-built ONNX graphs whose counts are known by hand
(multiply-add = 2 FLOPs), with symbolic input dims made concrete, and the shape folding that lets
shape inference through exporter-style `Shape -> ... -> Reshape` chains."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from lipx.benchmarks.flops import FlopError, count_flops

F = TensorProto.FLOAT


def model(nodes, inputs, output, weights):
    """A model of ``nodes``: inputs name -> symbolic/concrete shape, weights name -> shape."""
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info(n, F, s) for n, s in inputs.items()],
        [helper.make_tensor_value_info(output, F, None)],
        [numpy_helper.from_array(np.zeros(s, np.float32), n) for n, s in weights.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def test_conv2d_counts_each_output_as_a_dot_product_of_its_receptive_field():
    m = model([helper.make_node("Conv", ["x", "w", "b"], ["y"], pads=[1, 1, 1, 1],
                                strides=[2, 2])],
              {"x": ["batch", 3, "h", "w"]}, "y", {"w": (8, 3, 3, 3), "b": (8,)})
    # y: (2, 8, 16, 16); each output 3*3*3 multiply-adds; the bias is not counted
    assert count_flops(m, {"x": (2, 3, 32, 32)}).total == 2 * (2 * 8 * 16 * 16) * 27


def test_grouped_conv3d():
    m = model([helper.make_node("Conv", ["x", "w"], ["y"], group=2, pads=[2, 3, 3] * 2,
                                strides=[1, 2, 2])],
              {"x": [1, 4, "frames", 56, 56]}, "y", {"w": (6, 2, 5, 7, 7)})
    # y: (1, 6, 10, 28, 28); each output sees C_in/group=2 x 5x7x7
    count = count_flops(m, {"x": (1, 4, 10, 56, 56)})
    assert count.total == 2 * (6 * 10 * 28 * 28) * (2 * 5 * 7 * 7)
    assert count.by_op == {"Conv": count.total}


def test_conv_transpose_scatters_each_input_element():
    m = model([helper.make_node("ConvTranspose", ["x", "w"], ["y"], strides=[2])],
              {"x": [1, 4, "t"]}, "y", {"w": (4, 3, 5)})
    assert count_flops(m, {"x": (1, 4, 20)}).total == 2 * (4 * 20) * (3 * 5)


def test_batched_broadcast_matmul_and_gemm():
    m = model([helper.make_node("MatMul", ["a", "b"], ["ab"]),
               helper.make_node("Gemm", ["c", "w"], ["y"], transA=1, transB=1)],
              {"a": ["batch", 4, 5, 6], "b": [6, 7], "c": [9, "m"]}, "y", {"w": (11, 9)})
    count = count_flops(m, {"a": (2, 4, 5, 6), "b": (6, 7), "c": (9, 3)})
    assert count.by_op == {"MatMul": 2 * (2 * 4 * 5 * 7) * 6, "Gemm": 2 * (3 * 11) * 9}
    assert count.total == sum(count.by_op.values())


def test_attention_matmuls_count_both_products():
    q, k, v = (helper.make_tensor_value_info(n, F, [1, 2, "t", 8]) for n in "qkv")
    nodes = [helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 1, 3, 2]),
             helper.make_node("MatMul", ["q", "kt"], ["s"]),
             helper.make_node("Softmax", ["s"], ["p"], axis=-1),
             helper.make_node("MatMul", ["p", "v"], ["o"])]
    graph = helper.make_graph(nodes, "attn", [q, k, v],
                              [helper.make_tensor_value_info("o", F, None)])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    t = 10  # scores 2 x t x t, each 8 terms; outputs 2 x t x 8, each t terms
    shapes = {n: (1, 2, t, 8) for n in "qkv"}
    assert count_flops(m, shapes).total == 2 * (2 * t * t * 8) + 2 * (2 * t * 8 * t)


@pytest.mark.parametrize("op, gates, layout", [("GRU", 3, 0), ("LSTM", 4, 1), ("RNN", 1, 0)])
def test_recurrent_layers_count_input_and_recurrent_matmuls_every_step(op, gates, layout):
    hidden, features, steps, batch = 16, 12, 29, 3
    x_shape = ["batch", "frames", features] if layout else ["frames", "batch", features]
    m = model([helper.make_node(op, ["x", "w", "r"], ["y"], hidden_size=hidden,
                                direction="bidirectional", layout=layout)],
              {"x": x_shape}, "y",
              {"w": (2, gates * hidden, features), "r": (2, gates * hidden, hidden)})
    shape = (batch, steps, features) if layout else (steps, batch, features)
    per_step = 2 * gates * hidden * (features + hidden)  # both directions
    assert count_flops(m, {"x": shape}).total == 2 * steps * batch * per_step


def test_elementwise_and_pooling_are_not_counted():
    m = model([helper.make_node("Relu", ["x"], ["r"]),
               helper.make_node("MaxPool", ["r"], ["y"], kernel_shape=[2, 2])],
              {"x": [1, 3, "h", "h"]}, "y", {})
    count = count_flops(m, {"x": (1, 3, 8, 8)})
    assert count.total == 0 and count.by_op == {} and count.uncounted == ()


def test_heavy_ops_without_a_rule_are_listed_not_guessed():
    m = model([helper.make_node("Einsum", ["a", "b"], ["y"], equation="ij,jk->ik")],
              {"a": [3, 4], "b": [4, 5]}, "y", {})
    count = count_flops(m, {"a": (3, 4), "b": (4, 5)})
    assert count.total == 0 and count.uncounted == ("Einsum",)


def exporter_style_flatten():
    """``x (B, T, C, H) -> Reshape(x, [Shape(x)[0], Shape(x)[1], Shape(x)[2] * Shape(x)[3]])
    -> MatMul w (C*H, 5)``, the target shape computed as the PyTorch exporter writes it."""
    i = {n: numpy_helper.from_array(np.array(v, np.int64), n)
         for n, v in {"s0": [0], "s2": [2], "s3": [3], "s4": [4]}.items()}
    nodes = [helper.make_node("Shape", ["x"], ["shape"]),
             helper.make_node("Slice", ["shape", "s0", "s2"], ["bt"]),
             helper.make_node("Slice", ["shape", "s2", "s3"], ["c"]),
             helper.make_node("Slice", ["shape", "s3", "s4"], ["h"]),
             helper.make_node("Mul", ["c", "h"], ["ch"]),
             helper.make_node("Concat", ["bt", "ch"], ["target"], axis=0),
             helper.make_node("Reshape", ["x", "target"], ["flat"]),
             helper.make_node("MatMul", ["flat", "w"], ["y"])]
    graph = helper.make_graph(
        nodes, "flatten", [helper.make_tensor_value_info("x", F, ["batch", "frames", 4, 6])],
        [helper.make_tensor_value_info("y", F, None)],
        [*i.values(), numpy_helper.from_array(np.zeros((24, 5), np.float32), "w")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def test_computed_reshapes_are_folded_so_the_matmul_after_them_is_counted():
    m = exporter_style_flatten()
    inferred = onnx.shape_inference.infer_shapes(m, data_prop=True)  # alone it stops here
    assert not any(v.name == "y" and v.type.tensor_type.shape.dim
                   for v in (*inferred.graph.value_info, *inferred.graph.output)
                   if all(d.HasField("dim_value") for d in v.type.tensor_type.shape.dim))
    assert count_flops(m, {"x": (2, 7, 4, 6)}).total == 2 * (2 * 7 * 5) * 24


def test_inputs_must_match_the_graph():
    m = exporter_style_flatten()
    with pytest.raises(FlopError, match="shapes given for"):
        count_flops(m, {"video": (2, 7, 4, 6)})
    with pytest.raises(FlopError, match=r"is \(batch, frames, 4, 6\), got \(2, 7, 24\)"):
        count_flops(m, {"x": (2, 7, 24)})
    with pytest.raises(FlopError, match=r"is \(batch, frames, 4, 6\)"):
        count_flops(m, {"x": (2, 7, 5, 6)})


def test_a_shape_that_cannot_be_inferred_is_an_error_not_a_guess():
    m = model([helper.make_node("Conv", ["x", "w"], ["y"])], {"x": [1, 3, 8, 8]}, "y",
              {"w": (4, 3, 3, 3)})
    m.graph.node[0].input[0] = "nowhere"  # an input no one produces
    with pytest.raises(FlopError, match="Conv node .*could not be inferred"):
        count_flops(m, {"x": (1, 3, 8, 8)})


def test_a_file_is_counted_like_the_model(tmp_path):
    m = exporter_style_flatten()
    onnx.save(m, tmp_path / "m.onnx")
    assert (count_flops(tmp_path / "m.onnx", {"x": (1, 1, 4, 6)}).total
            == count_flops(m, {"x": (1, 1, 4, 6)}).total == 2 * 5 * 24)
