"""What to export per task: graphs, their inputs and axes, and the modules that compute them.

Each task has one :class:`ExportSpec`, built from the model (its sizes come from
``model.config``): the task's torch-free facts (:class:`lipx.tasks.TaskSpec`: tolerances, fp32
layers, default schedule, minimum frames, context) and the graphs. The generic exporter, parity
check, TensorRT builder and Triton writer read only this spec; nothing else knows which task it
handles.

The model contract (both tasks)::

    model.frame_features(video (B, 1, T, 112, 112)) -> (B, T, D)
    model.frame_features_chunk(video (B, 1, C+4, 112, 112)) -> (B, C, D)
    lipreading: model.window(features (B, T, D)) -> logits (B, K); model(video) -> logits
    lip2speech: model.window(features, noise (B, noise_dim, 20, T)) -> (mel (B, 1, 80, 4T),
                linear (B, 1, 321, 4T)); model(video, noise) -> (mel, linear)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, cast

import numpy as np
import torch
from torch import nn

from lipx.errors import InputError, did_you_mean
from lipx.tasks import NO_WORD, TaskSpec, task_spec

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
class ExportSpec:
    """Everything the exporter needs to know about one model: its task's facts and its graphs."""

    task_spec: TaskSpec
    """The task's facts (tolerances, fp32 layers, default schedule, min frames), with this
    model's minimum frames; written into the manifest."""
    graphs: dict[str, GraphSpec]
    """Role -> graph, in export order."""
    opset: int = 18

    @property
    def task(self) -> str:
        return self.task_spec.task

    def dim_min(self) -> dict[str, int]:
        """Least size of each dynamic dim (for the exporter's range checks)."""
        return {"batch": 1, "frames": self.task_spec.min_frames,
                "chunk": 2 * self.task_spec.context + 1}


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


def lipreading_spec(model: nn.Module, vocabulary: Sequence[str] | None = None) -> ExportSpec:
    """Lipreading: per-frame front-end + memory, and a window classifier (whose stream
    defaults are a model for streams' when the vocabulary ends in :data:`NO_WORD`)."""
    cfg = cast(_TaskModel, model).config
    features = InputSpec("features", ("batch", "frames", cfg.feature_dim))
    no_word = NO_WORD in (vocabulary or ())[-1:]
    facts = task_spec("lipreading", getattr(cfg, "min_frames", 1), no_word=no_word)
    (logits,) = facts.outputs
    return ExportSpec(
        task_spec=facts,
        graphs={
            "model": GraphSpec("model", (_video("frames"),), (logits,), ClassifierModel,
                               "frames"),
            "frontend": GraphSpec("frontend", (_video("chunk"),), ("features",), FrontendGraph,
                                  "chunk"),
            "backend": GraphSpec("backend", (features,), (logits,), ClassifierWindow, "frames"),
        },
    )


def lip2speech_spec(model: nn.Module, vocabulary: Sequence[str] | None = None) -> ExportSpec:
    """Lip-to-speech: per-frame front-end, and a window generator fed explicit noise."""
    cfg = cast(_TaskModel, model).config
    features = InputSpec("features", ("batch", "frames", cfg.feature_dim))
    noise = InputSpec("noise", ("batch", cfg.noise_dim, getattr(cfg, "rows", NOISE_ROWS), "frames"))
    facts = task_spec("lip2speech", getattr(cfg, "min_frames", 1))
    outputs = facts.outputs
    return ExportSpec(
        task_spec=facts,
        graphs={
            "model": GraphSpec("model", (_video("frames"), noise), outputs, GeneratorModel,
                               "frames"),
            "frontend": GraphSpec("frontend", (_video("chunk"),), ("features",), FrontendGraph,
                                  "chunk"),
            "backend": GraphSpec("backend", (features, noise), outputs, GeneratorWindow, "frames"),
        },
    )


SPECS: dict[str, Callable[[nn.Module, Sequence[str] | None], ExportSpec]] = {
    "lipreading": lipreading_spec,
    "lip2speech": lip2speech_spec,
}


def export_spec(task: str, model: nn.Module,
                vocabulary: Sequence[str] | None = None) -> ExportSpec:
    """The spec of ``task`` for ``model`` (a classifier's with its class labels); InputError
    for a task lipx cannot export."""
    if task not in SPECS:
        raise InputError(f"cannot export task {task!r}{did_you_mean(task, SPECS)}")
    return SPECS[task](model, vocabulary)
