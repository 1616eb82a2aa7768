"""FLOPs of an ONNX graph at concrete input shapes: the work ``lipx bench`` divides by time.

A multiply-add counts 2 FLOPs. Counted, from the node's own shapes:

* ``Conv`` (1-D, 2-D, 3-D; grouped): ``2 x |Y| x |W| / C_out``, i.e. each output element is a dot
  product of ``C_in / group x prod(kernel)`` terms;
* ``ConvTranspose``: ``2 x |X| x |W| / C_in`` (each input element scatters into
  ``C_out / group x prod(kernel)`` outputs);
* ``MatMul`` (batched and broadcast; attention's ``Q K^T`` and ``A V`` are MatMuls) and ``Gemm``:
  ``2 x |Y| x K``;
* ``GRU``, ``LSTM``, ``RNN`` (either direction or both): the input and the recurrent matmuls of
  every step, ``2 x T x B x (|W| + |R|)`` (W: ``num_directions x gates*H x I``, R:
  ``num_directions x gates*H x H``);
* their integer forms (``ConvInteger``, ``MatMulInteger``, ``QLinearConv``, ``QLinearMatMul``)
  alike, as operations.

Everything else is **not counted**: biases, activations, normalisations, the gates' elementwise
arithmetic, pooling, softmax, resizing (all O(elements), a few % of a convolutional model's
multiply-adds). Nodes that would do heavy work but have no rule (``Einsum``, control flow, contrib
attention) are listed in :attr:`FlopCount.uncounted` rather than guessed.

Intermediate shapes come from ``onnx.shape_inference`` after the graph's inputs are fixed to the
given shapes, with the exporter's shape arithmetic folded in (:mod:`lipx.benchmarks.shapes`); a
counted node whose shapes are still unknown raises :class:`FlopError`. onnx is
imported lazily (the ``[export]`` extra): the runtime install has none, and
:func:`onnx_missing` says so in one line.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lipx.benchmarks.shapes import infer
from lipx.errors import LipxError

NEEDS_ONNX = "needs onnx: pip install 'lipx[export]'"
UNRULED = frozenset({"Einsum", "Attention", "MultiHeadAttention", "Loop", "Scan", "If"})
"""Ops that may do heavy work but are not counted (listed in :attr:`FlopCount.uncounted`)."""

Shapes = dict[str, tuple[int, ...]]


class FlopError(LipxError):
    """The graph's FLOPs cannot be counted exactly (an unknown shape, a mismatched input)."""


@dataclass(frozen=True)
class FlopCount:
    """FLOPs of one call of a graph."""

    total: int
    by_op: dict[str, int] = field(default_factory=dict)
    """Op type -> FLOPs (only the op types that count)."""
    uncounted: tuple[str, ...] = ()
    """Op types present that may do heavy work but have no rule (see :data:`UNRULED`)."""


def onnx_missing() -> str | None:
    """The one-line note when onnx is not installed, else None."""
    return NEEDS_ONNX if importlib.util.find_spec("onnx") is None else None


def count_flops(model: str | Path | Any, inputs: Mapping[str, Sequence[int]]) -> FlopCount:
    """Count the FLOPs of one call of ``model`` on inputs of the given shapes.

    Args:
        model: an ONNX file or a loaded ``onnx.ModelProto``.
        inputs: graph input name -> concrete shape (every input; symbolic dims become these).
    Raises:
        FlopError: an input is missing, unknown or of another rank or fixed size, or a counted
            node's shapes cannot be inferred.
    """
    import onnx

    proto = onnx.load(str(model)) if isinstance(model, (str, Path)) else model
    fixed = _fix_inputs(proto, inputs)
    inferred = infer(fixed)
    shapes = known_shapes(inferred.graph)
    by_op: dict[str, int] = {}
    for node in inferred.graph.node:
        rule = RULES.get(node.op_type)
        if rule is not None:
            by_op[node.op_type] = by_op.get(node.op_type, 0) + rule(node, shapes)
    uncounted = sorted({n.op_type for n in inferred.graph.node} & UNRULED)
    return FlopCount(sum(by_op.values()), dict(sorted(by_op.items())), tuple(uncounted))


def _fix_inputs(proto: Any, inputs: Mapping[str, Sequence[int]]) -> Any:
    """A copy of ``proto`` whose graph inputs have the given shapes and no stale value_info."""
    import onnx

    fixed = onnx.ModelProto()
    fixed.CopyFrom(proto)
    del fixed.graph.value_info[:]  # symbolic shapes of an export: inferred again, concretely
    initialisers = {t.name for t in fixed.graph.initializer}
    names = [i.name for i in fixed.graph.input if i.name not in initialisers]
    if set(names) != set(inputs):
        raise FlopError(f"graph inputs are {names}, shapes given for {sorted(inputs)}")
    for graph_input in fixed.graph.input:
        if graph_input.name not in inputs:
            continue
        dims, shape = graph_input.type.tensor_type.shape.dim, tuple(inputs[graph_input.name])
        if len(dims) != len(shape) or any(d.HasField("dim_value") and d.dim_value != size
                                          for d, size in zip(dims, shape)):
            raise FlopError(f"input {graph_input.name!r} is {_dims(dims)}, got {shape}")
        for dim, size in zip(dims, shape):
            dim.Clear()
            dim.dim_value = int(size)
    return fixed


def _dims(dims: Any) -> str:
    return "(" + ", ".join(d.dim_param or str(d.dim_value) for d in dims) + ")"


def known_shapes(graph: Any) -> Shapes:
    """Name -> shape of every tensor whose shape is fully known (inputs, value_info, outputs,
    initialisers, Constant nodes)."""
    shapes: Shapes = {}
    for info in (*graph.input, *graph.value_info, *graph.output):
        t = info.type.tensor_type
        if t.HasField("shape") and all(d.HasField("dim_value") for d in t.shape.dim):
            shapes[info.name] = tuple(d.dim_value for d in t.shape.dim)
    for tensor in graph.initializer:
        shapes[tensor.name] = tuple(tensor.dims)
    for node in graph.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    shapes[node.output[0]] = tuple(a.t.dims)
    return shapes


# --- rules ----------------------------------------------------------------------------------


def _shape(node: Any, shapes: Shapes, name: str) -> tuple[int, ...]:
    if name not in shapes:
        raise FlopError(f"{node.op_type} node {node.name or '(unnamed)'}: the shape of {name!r} "
                        f"could not be inferred")
    return shapes[name]


def _conv(weight: int) -> Callable[[Any, Shapes], int]:
    """Conv-like: 2 x |Y| x (C_in / group x prod(kernel)); W is input ``weight``."""
    def rule(node: Any, shapes: Shapes) -> int:
        w = _shape(node, shapes, node.input[weight])
        return 2 * math.prod(_shape(node, shapes, node.output[0])) * math.prod(w[1:])
    return rule


def _conv_transpose(node: Any, shapes: Shapes) -> int:
    w = _shape(node, shapes, node.input[1])  # (C_in, C_out / group, *kernel)
    return 2 * math.prod(_shape(node, shapes, node.input[0])) * math.prod(w[1:])


def _matmul(node: Any, shapes: Shapes) -> int:
    """MatMul-like: 2 x |Y| x K, K the contracted size (the last dim of A, input 0)."""
    a = _shape(node, shapes, node.input[0])
    return 2 * math.prod(_shape(node, shapes, node.output[0])) * a[-1]


def _gemm(node: Any, shapes: Shapes) -> int:
    a = _shape(node, shapes, node.input[0])
    trans_a = any(at.name == "transA" and at.i for at in node.attribute)
    return 2 * math.prod(_shape(node, shapes, node.output[0])) * (a[0] if trans_a else a[1])


def _recurrent(node: Any, shapes: Shapes) -> int:
    """GRU/LSTM/RNN: every step's input and recurrent matmuls, 2 x T x B x (|W| + |R|)."""
    x = _shape(node, shapes, node.input[0])
    batch_first = any(at.name == "layout" and at.i for at in node.attribute)
    steps, batch = (x[1], x[0]) if batch_first else (x[0], x[1])
    w, r = _shape(node, shapes, node.input[1]), _shape(node, shapes, node.input[2])
    return 2 * steps * batch * (math.prod(w) + math.prod(r))


RULES: dict[str, Callable[[Any, Shapes], int]] = {
    "Conv": _conv(1), "ConvInteger": _conv(1), "QLinearConv": _conv(3),
    "ConvTranspose": _conv_transpose,
    "MatMul": _matmul, "MatMulInteger": _matmul, "QLinearMatMul": _matmul,
    "Gemm": _gemm,
    "GRU": _recurrent, "LSTM": _recurrent, "RNN": _recurrent,
}
"""Op type -> FLOPs of one node (see the module docstring)."""
