"""Which layers stay in FP32 when a graph runs in reduced precision.

One rule serves the TensorRT FP16 build (layer types and names of the parsed network) and the
ONNX fp16 / int8 conversions (op types and node names of the graph), so every reduced-precision
artifact protects the same parts: normalisations, softmax, the GRU (its gates drift in FP16; the
ONNX parser turns it into a loop of many layers), the lipreading memory addressing (a softmax over
cosine similarities scaled by 16) and the lip-to-speech attention.

Node names carry their module (``model.memory/_Memory/node_softmax``, see
:func:`lipx.export.onnx_export.scope_node_names`) and TensorRT names layers after them, so
module-name fragments select whole blocks.
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx

TRT_LAYER_TYPES = frozenset({
    "NORMALIZATION", "SOFTMAX", "REDUCE",
    "LOOP", "RECURRENCE", "ITERATOR", "LOOP_OUTPUT", "TRIP_LIMIT",  # how GRUs are parsed
})
"""TensorRT ``LayerType`` names kept in FP32."""
ONNX_OPS = frozenset({
    "GRU", "LSTM", "RNN", "Softmax", "LogSoftmax", "LayerNormalization",
    "InstanceNormalization", "GroupNormalization", "LpNormalization", "ReduceL2",
    "ReduceSumSquare",
})
"""ONNX op types kept in FP32."""
NAME_PATTERNS = ("/gru/", "/lstm/", "softmax", "layernorm", "groupnorm", "instancenorm",
                 "normalize", "vector_norm")
"""Lower-case fragments of node/layer names kept in FP32."""


@dataclass(frozen=True)
class Fp32Rule:
    """Selects the layers or nodes to keep in FP32 (case-insensitive name fragments)."""

    layer_types: frozenset[str] = TRT_LAYER_TYPES
    onnx_ops: frozenset[str] = ONNX_OPS
    name_patterns: tuple[str, ...] = NAME_PATTERNS

    @classmethod
    def with_patterns(cls, extra: tuple[str, ...]) -> Fp32Rule:
        """The default rule plus model-specific name fragments (``ExportSpec.fp32_patterns``)."""
        return cls(name_patterns=NAME_PATTERNS + tuple(p.lower() for p in extra))

    def matches_name(self, name: str) -> bool:
        low = name.lower()
        return any(p in low for p in self.name_patterns)

    def keep_layer(self, layer_type: str, name: str) -> bool:
        """Whether a TensorRT layer (``LayerType`` name, layer name) stays FP32."""
        return layer_type.upper() in self.layer_types or self.matches_name(name)

    def keep_node(self, op_type: str, name: str) -> bool:
        """Whether an ONNX node stays FP32."""
        return op_type in self.onnx_ops or self.matches_name(name)

    def onnx_nodes(self, model: onnx.ModelProto) -> list[str]:
        """Names of the graph's nodes that stay FP32 (top-level graph)."""
        return [n.name for n in model.graph.node if self.keep_node(n.op_type, n.name)]
