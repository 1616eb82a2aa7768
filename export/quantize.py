"""Reduced-precision ONNX graphs: fp16 for onnxruntime on GPUs, int8 for CPUs.

* fp16 (``{role}.fp16.onnx``): weights and compute in float16, inputs and outputs in float32,
  the :class:`~lipx.export.precision.Fp32Rule` nodes kept in float32.
* int8 (``{role}.int8.onnx``): dynamic quantisation (int8 weights, activations quantised per
  call) of Conv, MatMul and Gemm with onnxruntime.quantization; the FP32-rule nodes (memory
  addressing, attention) are left alone and the GRU is not quantised. Weights use 7 bits
  (``reduce_range``): onnxruntime's uint8 x int8 kernels for AVX2 CPUs without VNNI (Zen 3,
  Haswell..Skylake) add pairs of products in int16, which saturates with full-range weights, so
  the same graph gave other numbers there than on AVX-512 VNNI CPUs (a random-weight toy: max
  abs error 0.069 against 0.002). With 7-bit weights a pair cannot overflow and every x86 kernel
  computes the same result (checked under qemu's EPYC-Milan model: identical parity).

The exporter measures each converted graph's parity against PyTorch and records it in the
manifest; a conversion outside its tolerance fails the export.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
from collections.abc import Callable
from pathlib import Path

import onnx

from lipx.errors import BackendUnavailableError
from lipx.export.artifact import artifact
from lipx.export.onnx_export import graph_info, topological_sort
from lipx.export.precision import Fp32Rule
from lipx.package import GraphInfo

log = logging.getLogger(__name__)

INT8_OPS = ("Conv", "MatMul", "Gemm")


@artifact("ONNX fp16 graph")
def convert_fp16(graph: GraphInfo, src: Path, path: Path, rule: Fp32Rule) -> GraphInfo:
    """Convert the float32 graph ``src`` to float16 at ``path`` (float32 I/O).

    Args:
        graph: manifest entry of ``src``.
        src: float32 ONNX file.
        path: output file.
        rule: nodes kept in float32.
    Returns:
        The manifest entry of the new graph.
    """
    try:
        from onnxruntime.transformers.float16 import (
            DEFAULT_OP_BLOCK_LIST,
            convert_float_to_float16,
        )
    except ImportError as e:
        raise BackendUnavailableError("fp16 conversion needs onnxruntime: "
                                      "pip install 'lipx[cpu]'") from e
    model = onnx.load(str(src))
    keep = rule.onnx_nodes(model)
    log.debug("%s: %d nodes kept in float32", path.name, len(keep))
    model = convert_float_to_float16(
        model, keep_io_types=True, op_block_list=sorted({*DEFAULT_OP_BLOCK_LIST, *rule.onnx_ops}),
        node_block_list=keep,
    )
    _drop_duplicate_nodes(model.graph)  # the converter may insert one Cast per consumer
    topological_sort(model.graph)  # and appends its input casts at the end
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return _converted(model, graph, path, "fp16")


@artifact("ONNX int8 graph")
def quantize_int8(graph: GraphInfo, src: Path, path: Path, rule: Fp32Rule) -> GraphInfo:
    """Dynamically quantise the float32 graph ``src`` to int8 weights at ``path``.

    Args:
        graph: manifest entry of ``src``.
        src: float32 ONNX file.
        path: output file.
        rule: nodes left in float32.
    Returns:
        The manifest entry of the new graph.
    """
    try:
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError as e:
        raise BackendUnavailableError("int8 quantisation needs onnxruntime: "
                                      "pip install 'lipx[cpu]'") from e
    keep = rule.onnx_nodes(onnx.load(str(src)))
    with tempfile.TemporaryDirectory(prefix=".int8.", dir=path.parent) as tmp:
        # quantize_dynamic writes helper files next to its output: keep them out of the package
        out = Path(tmp) / path.name
        quantize_dynamic(src, out, op_types_to_quantize=list(INT8_OPS), reduce_range=True,
                         weight_type=QuantType.QInt8, nodes_to_exclude=keep)
        model = onnx.load(str(out))
    onnx.save(model, str(path))
    return _converted(model, graph, path, "int8")


def _drop_duplicate_nodes(graph: onnx.GraphProto) -> None:
    """Remove exact duplicates of a node (same op, inputs, outputs, attributes), keeping one."""
    seen: set[bytes] = set()
    unique = []
    for node in graph.node:
        key = onnx.NodeProto(op_type=node.op_type, input=node.input, output=node.output,
                             attribute=node.attribute, domain=node.domain).SerializeToString()
        if key not in seen:
            seen.add(key)
            unique.append(node)
    if len(unique) < len(graph.node):
        graph.ClearField("node")
        graph.node.extend(unique)


def _converted(model: onnx.ModelProto, graph: GraphInfo, path: Path, precision: str) -> GraphInfo:
    info = graph_info(model, graph.role, path.name, f"{graph.exporter} + {precision}", precision)
    # converters keep the interface; report the source's symbolic names, not re-inferred ones
    return dataclasses.replace(info, inputs=graph.inputs, outputs=graph.outputs)


CONVERTERS: dict[str, Callable[[GraphInfo, Path, Path, Fp32Rule], GraphInfo]] = {
    "fp16": convert_fp16,
    "int8": quantize_int8,
}
"""Precision -> converter of a float32 graph."""
