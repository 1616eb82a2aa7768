"""Concrete shapes of every tensor of an ONNX graph whose inputs have concrete shapes.

``onnx.shape_inference`` alone stops at the first ``Reshape`` whose target shape is computed
from another tensor's shape (``Shape -> Slice -> Mul -> Concat -> Reshape``, as the PyTorch
exporter writes a ``flatten`` or a GRU's ``(T, D, B, H) -> (T, B, D*H)``): its data propagation
does not carry values through every op. So :func:`infer` alternates the two: infer shapes, fold
the small integer tensors whose values are now known (:data:`FOLD`, evaluated with numpy) into
initialisers, and infer again, until nothing more folds. The folded nodes are shape arithmetic
only, so nothing that :mod:`lipx.benchmarks.flops` counts is removed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

MAX_VALUES = 64
"""Integer tensors up to this many elements are folded (shape values; never activations)."""
MAX_PASSES = 32


def infer(proto: Any) -> Any:
    """``proto`` with every shape inference can reach after folding its shape arithmetic.

    Args:
        proto: an ``onnx.ModelProto`` whose graph inputs have concrete shapes (not modified).
    """
    import onnx

    model = proto
    for _ in range(MAX_PASSES):
        model = onnx.shape_inference.infer_shapes(model, data_prop=True)
        folded = fold(model.graph)
        if not folded:
            return model
        model = _with_initialisers(model, folded)
    return model


def _with_initialisers(model: Any, values: dict[str, np.ndarray]) -> Any:
    """A copy of ``model`` where the nodes computing ``values`` are replaced by initialisers."""
    import onnx
    from onnx import numpy_helper

    out = onnx.ModelProto()
    out.CopyFrom(model)
    keep = [n for n in out.graph.node if not all(o in values for o in n.output)]
    del out.graph.node[:]
    out.graph.node.extend(keep)
    produced = {o for n in keep for o in n.output}
    out.graph.initializer.extend(numpy_helper.from_array(v, name)
                                 for name, v in values.items() if name not in produced)
    return out


def fold(graph: Any) -> dict[str, np.ndarray]:
    """Name -> value of the node outputs that can be computed now (all of a node's outputs)."""
    from onnx import numpy_helper

    values = {t.name: numpy_helper.to_array(t) for t in graph.initializer
              if t.data_type in INTEGER and np.prod(t.dims) <= MAX_VALUES}
    shapes = _input_shapes(graph)
    folded: dict[str, np.ndarray] = {}
    for node in graph.node:
        value = _evaluate(node, values, shapes)
        if value is not None and value.dtype.kind in "iu" and value.size <= MAX_VALUES:
            values[node.output[0]] = folded[node.output[0]] = value
    return folded


INTEGER = (6, 7)
"""ONNX ``INT32`` and ``INT64``."""


def _input_shapes(graph: Any) -> dict[str, tuple[int, ...]]:
    shapes = {}
    for info in (*graph.input, *graph.value_info):
        t = info.type.tensor_type
        if t.HasField("shape") and all(d.HasField("dim_value") for d in t.shape.dim):
            shapes[info.name] = tuple(d.dim_value for d in t.shape.dim)
    return shapes


def _attrs(node: Any) -> dict[str, Any]:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _evaluate(node: Any, values: dict[str, np.ndarray],
              shapes: dict[str, tuple[int, ...]]) -> np.ndarray | None:
    """The single output of ``node`` if it is foldable and its inputs are known, else None."""
    if len(node.output) != 1 or node.output[0] in values:
        return None
    attrs = _attrs(node)
    if node.op_type == "Constant":
        from onnx import numpy_helper

        tensor = attrs.get("value")
        return numpy_helper.to_array(tensor) if tensor is not None else None
    if node.op_type == "Shape":
        shape = shapes.get(node.input[0])
        if shape is None:
            return None
        return np.array(shape[attrs.get("start", 0):attrs.get("end")], dtype=np.int64)
    op = FOLD.get(node.op_type)
    args = [values.get(name) if name else None for name in node.input]
    if op is None or any(a is None for a, name in zip(args, node.input) if name):
        return None
    return np.asarray(op(args, attrs))


def _slice(args: list[Any], attrs: dict[str, Any]) -> np.ndarray:
    data, starts, ends = args[:3]
    axes = args[3] if len(args) > 3 and args[3] is not None else range(len(starts))
    steps = args[4] if len(args) > 4 and args[4] is not None else [1] * len(starts)
    index = [slice(None)] * data.ndim
    for axis, start, end, step in zip(axes, starts, ends, steps):
        index[int(axis)] = slice(int(start), int(end), int(step))
    return data[tuple(index)]


def _reshape(args: list[Any], attrs: dict[str, Any]) -> np.ndarray:
    data, shape = args[0], [int(s) for s in args[1]]
    if not attrs.get("allowzero", 0):
        shape = [data.shape[i] if s == 0 else s for i, s in enumerate(shape)]
    return data.reshape(shape)


def _axes(args: list[Any], attrs: dict[str, Any]) -> tuple[int, ...] | None:
    axes = args[1] if len(args) > 1 and args[1] is not None else attrs.get("axes")
    return None if axes is None else tuple(int(a) for a in axes)


def _unsqueeze(args: list[Any], attrs: dict[str, Any]) -> np.ndarray:
    axes = _axes(args, attrs) or ()
    rank = args[0].ndim + len(axes)
    return np.expand_dims(args[0], tuple(sorted(a % rank for a in axes)))


def _div(args: list[Any], attrs: dict[str, Any]) -> np.ndarray:
    """ONNX integer Div truncates towards zero (numpy's // floors)."""
    a, b = args
    return np.trunc(a / b).astype(a.dtype) if a.dtype.kind in "iu" else a / b


def _cast(args: list[Any], attrs: dict[str, Any]) -> np.ndarray:
    from onnx import helper

    return args[0].astype(helper.tensor_dtype_to_np_dtype(attrs["to"]))


FOLD: dict[str, Callable[[list[Any], dict[str, Any]], Any]] = {
    "Identity": lambda a, _: a[0],
    "Cast": _cast,
    "Concat": lambda a, at: np.concatenate([np.atleast_1d(x) for x in a], axis=at["axis"]),
    "Gather": lambda a, at: np.take(a[0], a[1], axis=at.get("axis", 0)),
    "Slice": _slice,
    "Reshape": _reshape,
    "Squeeze": lambda a, at: np.squeeze(a[0], axis=_axes(a, at)),
    "Unsqueeze": _unsqueeze,
    "Add": lambda a, _: a[0] + a[1],
    "Sub": lambda a, _: a[0] - a[1],
    "Mul": lambda a, _: a[0] * a[1],
    "Div": _div,
}
"""Op type -> numpy evaluation (inputs, attributes) of the shape arithmetic the exporters write."""
