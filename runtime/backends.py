"""The table of engines lipx exports to and runs on.

One row per backend drives the CLI choices (``--engine``, ``--precision``), option validation,
the artifact a package needs for it (an ONNX graph or a TensorRT plan) and the step that makes
one, the runner that loads it, and the benchmark loop; nothing else branches on backend names
(:mod:`lipx.runtime.package_runners` is the factory built on it). Torch-free: runner classes and
builders are imported only when asked for.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lipx.errors import BackendUnavailableError, InputError, did_you_mean

if TYPE_CHECKING:  # importing runners pulls numpy; the CLI reads this table for its choices
    from lipx.runtime.runner import Runner


@dataclass(frozen=True)
class BackendInfo:
    """One engine lipx can export to and run on."""

    name: str
    """``--engine`` value."""
    suffix: str
    """File suffix of its artifacts (``.onnx``, ``.plan``)."""
    needs_gpu: bool
    """Whether it can only run (and, for TensorRT, only be built) on an NVIDIA GPU."""
    precisions: tuple[str, ...]
    """``--precision`` values it accepts; the first is the default."""
    devices: tuple[str, ...]
    """Devices its runner takes (``cpu``, ``cuda``, ``tensorrt``)."""
    runner: str
    """``module:Class`` of its Runner, imported on demand."""
    modules: tuple[str, ...]
    """Python modules it needs at run time."""
    extra: str
    """pip extra that installs them."""
    description: str
    builder: str
    """``module:function`` that makes this backend's artifact of a graph
    (:mod:`lipx.export.build`), imported on demand."""
    build_needs: tuple[str, ...]
    """Python modules the builder needs (besides :attr:`modules`)."""
    build_extra: str
    """pip extra that installs them."""
    triton_backend: str
    """The Triton Inference Server backend that serves its artifacts."""
    plans: bool = False
    """Its artifacts are the manifest's ``engines`` (TensorRT plans, whose inputs and outputs are
    their source graph's), not its ``graphs``."""

    @property
    def default_precision(self) -> str:
        return self.precisions[0]

    def missing_modules(self) -> list[str]:
        """Modules of :attr:`modules` that are not installed (found without importing them)."""
        return [m for m in self.modules if importlib.util.find_spec(m) is None]

    def artifact_file(self, role: str, precision: str) -> str:
        """The file name of ``role``'s artifact at ``precision`` (``backend.int8.onnx``)."""
        if not self.plans and precision == "fp32":
            return f"{role}{self.suffix}"
        return f"{role}.{precision}{self.suffix}"

    def builder_function(self) -> Callable[..., Any]:
        """The builder; BackendUnavailableError naming the extra when its modules are missing
        (the engine's own library is checked by the builder, which says what it needs)."""
        missing = [m for m in self.build_needs if importlib.util.find_spec(m) is None]
        if missing:
            raise BackendUnavailableError(
                f"building {self.name} artifacts needs {', '.join(missing)}: "
                f"pip install 'lipx[{self.build_extra}]'")
        module, _, function = self.builder.partition(":")
        return getattr(importlib.import_module(module), function)  # type: ignore[no-any-return]

    def runner_class(self) -> type[Runner]:
        """The Runner class; BackendUnavailableError when its dependencies are missing."""
        missing = self.missing_modules()
        if missing:
            raise BackendUnavailableError(
                f"engine {self.name!r} needs {', '.join(missing)}: pip install 'lipx[{self.extra}]'"
            )
        module, _, cls = self.runner.partition(":")
        try:
            return getattr(importlib.import_module(module), cls)
        except (ImportError, AttributeError) as e:
            raise BackendUnavailableError(
                f"engine {self.name!r}: cannot load {self.runner} ({e})") from e


BACKENDS: dict[str, BackendInfo] = {
    b.name: b
    for b in (
        BackendInfo(
            name="onnx", suffix=".onnx", needs_gpu=False, precisions=("fp32", "fp16", "int8"),
            devices=("cpu", "cuda", "tensorrt"), runner="lipx.runtime.ort_runner:OrtRunner",
            modules=("onnxruntime",), extra="cpu",
            description="ONNX graphs run by onnxruntime (CPU, CUDA or TensorRT provider); fp16 "
            "is for GPUs, int8 (dynamic quantisation) for CPUs",
            builder="lipx.export.build:onnx_graph", build_needs=("onnx",), build_extra="export",
            triton_backend="onnxruntime",
        ),
        BackendInfo(
            name="trt", suffix=".plan", needs_gpu=True, precisions=("fp16", "fp32"),
            devices=("cuda",), runner="lipx.runtime.trt_runner:TrtRunner",
            modules=("tensorrt",), extra="gpu",
            description="TensorRT plans built on (and for) the target GPU",
            builder="lipx.export.build:tensorrt_plan", build_needs=("onnx",),
            build_extra="export", triton_backend="tensorrt", plans=True,
        ),
    )
}


FORMATS: dict[str, str] = {
    "package": "the model package (manifest, ONNX graphs, plans)",
    "triton": "the package plus a Triton Inference Server model repository in triton/",
}
"""What ``lipx export`` writes (``--format``)."""


def get_backend(name: str) -> BackendInfo:
    """The row of ``name``; InputError listing the known engines."""
    if name not in BACKENDS:
        raise InputError(f"unknown engine {name!r}{did_you_mean(name, BACKENDS)}")
    return BACKENDS[name]


def all_precisions() -> tuple[str, ...]:
    """Every precision some backend accepts, in table order (for CLI choices)."""
    seen: dict[str, None] = {}
    for b in BACKENDS.values():
        seen.update(dict.fromkeys(b.precisions))
    return tuple(seen)
