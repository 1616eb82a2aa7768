"""The table of engines lipx exports to and runs on.

One row per backend drives the CLI choices (``--engine``, ``--precision``), option validation,
the artifact a package needs for it (an ONNX graph or a TensorRT plan) and the step that makes
one, the runner that loads it, and the benchmark loop; nothing else branches on backend names
(:mod:`lipx.runtime.package_runners` is the factory built on it). Torch-free: runner classes are
imported only when asked for. The builders that make a backend's artifacts belong to export
(:data:`lipx.export.build.BUILDERS`), which hands them to the factory: the runtime names none.

TensorRT comes in two flavours (:data:`TRT_FLAVOURS`), both behind the ``trt`` row: full TensorRT
(``tensorrt``; datacenter and desktop GPUs; a plan is built on a GPU of the architecture it runs
on) and TensorRT-RTX (``tensorrt_rtx``; RTX GPUs; builds need no GPU, and a plan runs on the
compute capabilities it targets). :func:`pick_flavour` chooses one when asked for ``auto``.
"""

from __future__ import annotations

import importlib
import importlib.util
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
    """Python modules it needs at run time (all of them)."""
    extra: str
    """pip extra that installs them."""
    description: str
    build_needs: tuple[str, ...]
    """Python modules the builder needs (besides :attr:`modules`)."""
    build_extra: str
    """pip extra that installs them."""
    triton_backend: str
    """The Triton Inference Server backend that serves its artifacts."""
    plans: bool = False
    """Its artifacts are the manifest's ``engines`` (TensorRT plans, whose inputs and outputs are
    their source graph's), not its ``graphs``."""
    flavours: tuple[str, ...] = ()
    """:data:`TRT_FLAVOURS` it runs with, any one of which will do (besides :attr:`modules`)."""

    @property
    def default_precision(self) -> str:
        return self.precisions[0]

    def missing_modules(self) -> list[str]:
        """Modules of :attr:`modules` that are not installed (found without importing them); with
        :attr:`flavours`, their modules too when none of them is installed."""
        missing = [m for m in self.modules if importlib.util.find_spec(m) is None]
        if self.flavours and not installed_flavours(self.flavours):
            missing += [TRT_FLAVOURS[f].module for f in self.flavours]
        return missing

    def install_hint(self) -> str:
        """What to ``pip install`` for its runner, e.g. ``'lipx[gpu]' (TensorRT) or 'lipx[rtx]'
        (TensorRT-RTX)``."""
        if not self.flavours:
            return f"pip install 'lipx[{self.extra}]'"
        return "pip install " + " or ".join(f"'lipx[{TRT_FLAVOURS[f].extra}]' "
                                             f"({TRT_FLAVOURS[f].label})" for f in self.flavours)

    def artifact_file(self, role: str, precision: str) -> str:
        """The file name of ``role``'s artifact at ``precision`` (``backend.int8.onnx``)."""
        if not self.plans and precision == "fp32":
            return f"{role}{self.suffix}"
        return f"{role}.{precision}{self.suffix}"

    def check_build_needs(self) -> None:
        """BackendUnavailableError naming the extra when the modules its builder needs are missing
        (the engine's own library is checked by the builder, which says what it needs)."""
        missing = [m for m in self.build_needs if importlib.util.find_spec(m) is None]
        if missing:
            raise BackendUnavailableError(
                f"building {self.name} artifacts needs {', '.join(missing)}: "
                f"pip install 'lipx[{self.build_extra}]'")

    def runner_class(self) -> type[Runner]:
        """The Runner class; BackendUnavailableError when its dependencies are missing."""
        missing = self.missing_modules()
        if missing:
            raise BackendUnavailableError(
                f"engine {self.name!r} needs {' or '.join(missing)}: {self.install_hint()}")
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
            build_needs=("onnx",), build_extra="export", triton_backend="onnxruntime",
        ),
        BackendInfo(
            name="trt", suffix=".plan", needs_gpu=True, precisions=("fp16", "fp32"),
            devices=("cuda",), runner="lipx.runtime.trt_runner:TrtRunner",
            modules=(), extra="gpu",
            description="TensorRT plans (full TensorRT, built on a GPU of the architecture they "
            "run on, or TensorRT-RTX, built anywhere for RTX GPUs), strongly typed",
            build_needs=("onnx",), build_extra="export", triton_backend="tensorrt", plans=True,
            flavours=("tensorrt", "rtx"),
        ),
    )
}


@dataclass(frozen=True)
class TrtFlavour:
    """One TensorRT flavour: its module, its extra, and what building and running need."""

    name: str
    """``--trt-flavour`` value and the manifest's ``flavour``."""
    module: str
    label: str
    """Its name in messages, e.g. ``TensorRT-RTX``."""
    extra: str
    """pip extra that installs it."""
    build_needs_gpu: bool
    """Whether a build needs a GPU (the one the plan is for)."""
    runs_on: str
    """The GPUs its plans run on, for messages."""


TRT_FLAVOURS: dict[str, TrtFlavour] = {
    f.name: f
    for f in (
        TrtFlavour("tensorrt", "tensorrt", "TensorRT", "gpu", build_needs_gpu=True,
                   runs_on="NVIDIA GPUs of the compute capability of the GPU that built them "
                   "(built on the GPU they run on, or one of its architecture)"),
        TrtFlavour("rtx", "tensorrt_rtx", "TensorRT-RTX", "rtx", build_needs_gpu=False,
                   runs_on="RTX GPUs of the compute capabilities the build targets (7.5 when "
                   "asked for, 8.0, 8.6, 8.9, 12.0, 12.1; not 9.0 or 10.x datacenter GPUs); "
                   "built on any machine, with or without a GPU"),
    )
}
"""The TensorRT flavours, preferred first (``auto`` takes full TensorRT where a GPU is)."""


def installed_flavours(names: tuple[str, ...] = tuple(TRT_FLAVOURS)) -> list[str]:
    """Those of ``names`` whose module is installed (found without importing it)."""
    return [n for n in names if importlib.util.find_spec(TRT_FLAVOURS[n].module) is not None]


def pick_flavour(requested: str, gpu: bool) -> TrtFlavour:
    """The flavour ``requested`` (``auto``, ``tensorrt`` or ``rtx``) means here.

    ``auto`` takes full TensorRT when it is installed and ``gpu`` (a CUDA GPU is present), else
    TensorRT-RTX when installed, else full TensorRT (whose import then says what to install).

    Raises:
        InputError: an unknown flavour.
    """
    if requested != "auto":
        if requested not in TRT_FLAVOURS:
            raise InputError(f"unknown --trt-flavour {requested!r}"
                             f"{did_you_mean(requested, ['auto', *TRT_FLAVOURS])}")
        return TRT_FLAVOURS[requested]
    have = installed_flavours()
    if "tensorrt" in have and (gpu or "rtx" not in have):
        return TRT_FLAVOURS["tensorrt"]
    return TRT_FLAVOURS["rtx" if "rtx" in have else "tensorrt"]


def import_trt(requested: str, gpu: bool) -> tuple[TrtFlavour, Any]:
    """The flavour ``requested`` means here (:func:`pick_flavour`) and its module.

    Raises:
        BackendUnavailableError: it is not installed (for ``auto``: neither is), naming what to
            install and what each flavour needs.
    """
    if requested == "auto" and not installed_flavours():
        raise BackendUnavailableError(
            "no TensorRT is installed: pip install 'lipx[rtx]' (TensorRT-RTX: builds without a "
            "GPU; plans for RTX GPUs) or 'lipx[gpu]' (full TensorRT: plans built on a GPU of the "
            "architecture they run on), or use --engine onnx")
    flavour = pick_flavour(requested, gpu)
    return flavour, import_flavour(flavour)


def import_flavour(flavour: TrtFlavour) -> Any:
    """``import`` the flavour's module, or BackendUnavailableError naming its extra."""
    try:
        return importlib.import_module(flavour.module)
    except ImportError as e:
        raise BackendUnavailableError(
            f"{flavour.label} is not installed: pip install 'lipx[{flavour.extra}]' (its plans run "
            f"on {flavour.runs_on}), or use --engine onnx") from e


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
