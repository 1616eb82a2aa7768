"""What to export per task: graphs, their inputs and axes, example inputs, tolerances.

Each task has one :class:`ExportSpec`, built from the model (its sizes come from
``model.config``). The generic exporter, parity check, TensorRT builder and Triton writer read
only this spec; nothing else knows which task it handles.

The model contract (both tasks)::

    model.frame_features(video (B, 1, T, 112, 112)) -> (B, T, D)
    model.frame_features_chunk(video (B, 1, C+4, 112, 112)) -> (B, C, D)
    lipreading: model.window(features (B, T, D)) -> logits (B, K); model(video) -> logits
    lip2speech: model.window(features, noise (B, noise_dim, 20, T)) -> (mel (B, 1, 80, 4T),
                linear (B, 1, 321, 4T)); model(video, noise) -> (mel, linear)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, cast

import numpy as np
import torch
from torch import nn

from lipx.errors import InputError, did_you_mean

CONTEXT = 2
"""Frames of context on each side of a front-end chunk (the 3D conv's temporal kernel of 5)."""
ROI = 112
"""Side of the mouth crop the models take."""
NOISE_ROWS = 20
"""Rows of the lip-to-speech generator's noise input (B, noise_dim, 20, T) when the config does
not say (``config.rows``: n_mels / 4)."""


@dataclass(frozen=True)
class InputSpec:
    """One graph input: a name and a shape whose dynamic dims are named."""

    name: str
    shape: tuple[int | str, ...]
    """e.g. ``("batch", 1, "frames", 112, 112)``; names: ``batch``, ``frames``, ``chunk``."""

    @property
    def axes(self) -> dict[int, str]:
        """Dynamic axis -> dim name."""
        return {i: d for i, d in enumerate(self.shape) if isinstance(d, str)}

    def resolve(self, dims: dict[str, int]) -> tuple[int, ...]:
        """The concrete shape for dim sizes ``dims``."""
        return tuple(dims[d] if isinstance(d, str) else d for d in self.shape)


@dataclass(frozen=True)
class GraphSpec:
    """One exported graph: its role, inputs, output names and the module that computes it."""

    role: str
    """``model``, ``frontend`` or ``backend``."""
    inputs: tuple[InputSpec, ...]
    outputs: tuple[str, ...]
    wrap: Callable[[nn.Module], nn.Module]
    """Model -> the module whose ``forward(*inputs)`` is this graph."""
    time_dim: str
    """The dim that counts frames (``frames`` or ``chunk``)."""

    @property
    def file(self) -> str:
        return f"{self.role}.onnx"

    def feeds(self, batch: int, frames: int, seed: int = 0) -> dict[str, np.ndarray]:
        """Random float32 inputs of ``batch`` x ``frames`` (the graph's time dim), seeded."""
        rng = np.random.default_rng(seed)
        dims = {"batch": batch, self.time_dim: frames}
        return {i.name: rng.standard_normal(i.resolve(dims), dtype=np.float32) for i in self.inputs}


@dataclass(frozen=True)
class Tolerance:
    """Parity tolerance: an output passes when ``max_abs <= atol + rtol * max|reference|``."""

    atol: float
    rtol: float
    min_top1: float | None = None
    """Least top-1 agreement with the reference (classifiers only)."""


@dataclass(frozen=True)
class ExportSpec:
    """Everything the exporter needs to know about one task's model."""

    task: str
    graphs: dict[str, GraphSpec]
    """Role -> graph, in export order."""
    default_window: int
    min_frames: int
    """Fewest frames a window may have."""
    top1_output: str | None
    """Output whose arg-max is the prediction (classifiers), else None."""
    tolerances: dict[str, Tolerance]
    """Precision (``fp32``, ``fp16``, ``int8``) -> tolerance against the float32 reference."""
    fp32_patterns: tuple[str, ...] = ()
    """Layer-name fragments kept in FP32 in FP16 builds (besides the default rule)."""
    opset: int = 18

    def default_stride(self, window: int) -> int:
        """Frames between backend runs when not given: a quarter window for classifiers (a
        decision about 4 times a window), half a window for generators (50% overlap, cross-faded).
        """
        return max(1, window // 4 if self.top1_output else window // 2)

    def dim_min(self) -> dict[str, int]:
        """Least size of each dynamic dim (for the exporter's range checks)."""
        return {"batch": 1, "frames": self.min_frames, "chunk": 2 * CONTEXT + 1}


class _TaskModel(Protocol):
    """The model contract of the module docstring, for the type checker (``nn.Module`` hides
    its submodules and methods behind ``__getattr__``)."""

    config: Any

    def frame_features_chunk(self, video: torch.Tensor) -> torch.Tensor: ...

    def window(self, features: torch.Tensor, *args: torch.Tensor) -> Any: ...

    def __call__(self, video: torch.Tensor, *args: torch.Tensor) -> Any: ...


class FrontendGraph(nn.Module):
    """``video (B, 1, C+4, 112, 112) -> features (B, C, D)``: the streaming front-end."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = cast(_TaskModel, model)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        return self.model.frame_features_chunk(video)


class ClassifierWindow(nn.Module):
    """``features (B, W, D) -> logits (B, K)``: the lipreading window backend."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = cast(_TaskModel, model)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.model.window(features)


class ClassifierModel(nn.Module):
    """``video (B, 1, T, 112, 112) -> logits (B, K)``: the whole lipreading model."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = cast(_TaskModel, model)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        return self.model(video)


class GeneratorWindow(nn.Module):
    """``features (B, W, D), noise (B, N, 20, W) -> mel (B, 1, 80, 4W), linear (B, 1, 321, 4W)``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = cast(_TaskModel, model)

    def forward(self, features: torch.Tensor, noise: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.model.window(features, noise))


class GeneratorModel(nn.Module):
    """``video (B, 1, T, 112, 112), noise (B, N, 20, T) -> mel, linear``: the whole model."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = cast(_TaskModel, model)

    def forward(self, video: torch.Tensor, noise: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.model(video, noise))


def _video(time_dim: str) -> InputSpec:
    return InputSpec("video", ("batch", 1, time_dim, ROI, ROI))


def lipreading_spec(model: nn.Module) -> ExportSpec:
    """Lipreading: per-frame front-end + memory, and a window classifier."""
    cfg = cast(_TaskModel, model).config
    features = InputSpec("features", ("batch", "frames", cfg.feature_dim))
    return ExportSpec(
        task="lipreading",
        graphs={
            "model": GraphSpec("model", (_video("frames"),), ("logits",), ClassifierModel,
                               "frames"),
            "frontend": GraphSpec("frontend", (_video("chunk"),), ("features",), FrontendGraph,
                                  "chunk"),
            "backend": GraphSpec("backend", (features,), ("logits",), ClassifierWindow, "frames"),
        },
        default_window=29,
        min_frames=getattr(cfg, "min_frames", 1),
        top1_output="logits",
        tolerances={
            "fp32": Tolerance(1e-4, 1e-4),
            "fp16": Tolerance(1e-3, 2e-2, min_top1=0.95),
            "int8": Tolerance(1e-2, 0.2, min_top1=0.8),
        },
        fp32_patterns=("memory", "address"),
    )


def lip2speech_spec(model: nn.Module) -> ExportSpec:
    """Lip-to-speech: per-frame front-end, and a window generator fed explicit noise."""
    cfg = cast(_TaskModel, model).config
    features = InputSpec("features", ("batch", "frames", cfg.feature_dim))
    noise = InputSpec("noise", ("batch", cfg.noise_dim, getattr(cfg, "rows", NOISE_ROWS), "frames"))
    outputs = ("mel", "linear")
    return ExportSpec(
        task="lip2speech",
        graphs={
            "model": GraphSpec("model", (_video("frames"), noise), outputs, GeneratorModel,
                               "frames"),
            "frontend": GraphSpec("frontend", (_video("chunk"),), ("features",), FrontendGraph,
                                  "chunk"),
            "backend": GraphSpec("backend", (features, noise), outputs, GeneratorWindow, "frames"),
        },
        default_window=40,
        min_frames=getattr(cfg, "min_frames", 1),
        top1_output=None,
        tolerances={
            "fp32": Tolerance(1e-4, 1e-4),
            "fp16": Tolerance(1e-3, 2e-2),
            "int8": Tolerance(1e-2, 0.2),
        },
        fp32_patterns=("attention", "att"),
    )


SPECS: dict[str, Callable[[nn.Module], ExportSpec]] = {
    "lipreading": lipreading_spec,
    "lip2speech": lip2speech_spec,
}


def export_spec(task: str, model: nn.Module) -> ExportSpec:
    """The spec of ``task`` for ``model``; InputError for a task lipx cannot export."""
    if task not in SPECS:
        raise InputError(f"cannot export task {task!r}{did_you_mean(task, SPECS)}")
    return SPECS[task](model)
