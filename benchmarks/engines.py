"""The engine x precision matrix of ``lipx bench``, built from the backend registry.

Rows come from :data:`lipx.runtime.backends.BACKENDS` (each backend's devices x precisions, kept
where the pair makes sense: :data:`DEVICE_PRECISIONS`) plus the PyTorch reference, eager and
``torch.compile``d. Keys read ``{backend}-{device}-{precision}`` (``onnx-cpu-int8``), without the
device for single-device backends (``trt-fp16``).

Each row is first checked for availability (:func:`unavailable`: a reason, or None); an available
one is loaded by :func:`load_engine` into one runner per graph role (``model``, ``frontend``,
``backend``), building what the package lacks (int8/fp16 graphs, TensorRT plans) into the work
folder through the engine factory (:mod:`lipx.runtime.package_runners`). A failed build raises
:class:`~lipx.errors.BuildFailed` (the row's status is ``export-failed``), an engine that proves
unusable while running raises :class:`EngineSkipped`.
"""

from __future__ import annotations

import importlib.util
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lipx.benchmarks.target import Target
from lipx.errors import BackendUnavailableError, InputError, LipxError, did_you_mean
from lipx.package import ROLES, EngineInfo, Package
from lipx.runtime.backends import BACKENDS
from lipx.runtime.package_runners import BuildOptions, open_runners
from lipx.runtime.runner import Runner

log = logging.getLogger(__name__)

DEVICE_PRECISIONS: dict[str, tuple[str, ...]] = {
    "cpu": ("fp32", "int8"),
    "cuda": ("fp32", "fp16"),
    "tensorrt": ("fp32",),
}
"""Precisions benchmarked per device: int8 (dynamic quantisation) is a CPU format, fp16 a GPU one;
the TensorRT execution provider builds its own engine from the fp32 graph (``OrtRunner`` exposes
no provider options to turn on its FP16 mode)."""


@dataclass(frozen=True)
class EngineSpec:
    """One row of the matrix."""

    key: str
    """``--engines`` name, e.g. ``onnx-cpu-int8``."""
    label: str
    backend: str
    """``torch`` or a :data:`BACKENDS` key."""
    device: str
    """torch: ``cpu``/``cuda``; onnx: ``cpu``/``cuda``/``tensorrt``; trt: ``cuda``."""
    precision: str
    compiled: bool = False
    """``torch.compile`` (torch rows only)."""


def engine_matrix(torch_device: str = "cpu") -> dict[str, EngineSpec]:
    """Every engine lipx can benchmark, the PyTorch reference first."""
    rows = [
        EngineSpec("torch", f"PyTorch eager fp32 ({torch_device})", "torch", torch_device, "fp32"),
        EngineSpec("torch-compile", f"PyTorch torch.compile fp32 ({torch_device})", "torch",
                   torch_device, "fp32", compiled=True),
    ]
    for b in BACKENDS.values():
        for device in b.devices:
            for precision in b.precisions:
                if precision not in DEVICE_PRECISIONS.get(device, ()):
                    continue
                key = "-".join([b.name, *([device] if len(b.devices) > 1 else []), precision])
                where = {"cpu": "CPU", "cuda": "CUDA", "tensorrt": "TensorRT EP"}[device]
                label = (f"onnxruntime {where} {precision}" if b.name == "onnx"
                         else f"TensorRT {precision}")
                rows.append(EngineSpec(key, label, b.name, device, precision))
    return {r.key: r for r in rows}


def select(matrix: Mapping[str, EngineSpec], names: tuple[str, ...]) -> list[EngineSpec]:
    """The rows named (all when empty), in matrix order: a row's key, or an engine's name for
    all of its rows (``onnx``, ``trt``, ``torch`` with torch-compile); InputError for an unknown
    name."""
    engines = {s.backend for s in matrix.values()}
    for n in names:
        if n not in matrix and n not in engines:
            raise InputError(f"unknown engine {n!r}{did_you_mean(n, sorted({*engines, *matrix}))}")
    return [s for k, s in matrix.items() if not names or k in names or s.backend in names]


# --- availability ---------------------------------------------------------------------------


def _cuda_available() -> bool:
    if importlib.util.find_spec("torch") is None:
        return False
    import torch

    return bool(torch.cuda.is_available())


def unavailable(spec: EngineSpec, target: Target, compile_limit_s: float) -> str | None:
    """Why ``spec`` cannot run here (None when it can): missing library, device or checkpoint."""
    if spec.backend == "torch":
        if target.model is None:
            return ("no checkpoint: pass --checkpoint (the manifest records its sha256) for the "
                    "PyTorch reference")
        if spec.device.startswith("cuda") and not _cuda_available():
            return "no CUDA GPU visible to PyTorch"
        if spec.compiled and compile_limit_s <= 0:
            return "torch.compile disabled (--compile-timeout-s 0)"
        return None
    backend = BACKENDS[spec.backend]
    missing = backend.missing_modules()
    if missing:
        return f"needs {', '.join(missing)}: pip install 'lipx[{backend.extra}]'"
    if spec.backend == "onnx":
        from lipx.runtime.ort_runner import import_onnxruntime, providers_for

        try:
            providers_for(spec.device, import_onnxruntime().get_available_providers())
        except BackendUnavailableError as e:
            return str(e)
        return None
    try:
        backend.runner_class()
        from lipx.runtime.cuda import device_info, import_cudart  # torch-free, unlike torch.cuda

        device_info(import_cudart())
    except BackendUnavailableError as e:
        return f"running {backend.name} plans needs an NVIDIA GPU: {e}{_built_here(spec, target)}"
    return None


def _built_here(spec: EngineSpec, target: Target) -> str:
    """What building ``spec``'s plans here cost (a flavour like TensorRT-RTX builds without a
    GPU), for the reason of a row that cannot run; empty when they cannot be built either."""
    try:
        artifacts = target.artifacts(BuildOptions())
        made = [artifacts.get(spec.backend, role, spec.precision)[1] for role in ROLES]
    except LipxError as e:
        log.info("%s: plans not built here: %s", spec.key, e)
        return ""
    plans = [p for p in made if isinstance(p, EngineInfo)]
    if not plans:
        return ""
    size_mb = sum(p.plan_bytes for p in plans) / 1e6
    return (f" (built here with {plans[0].target.label}: {len(plans)} plans, {size_mb:.1f} MB, "
            f"{sum(p.build_s for p in plans):.1f} s of building)")


# --- loading --------------------------------------------------------------------------------


class EngineSkipped(LipxError):
    """An engine gave up while running (e.g. torch.compile over its time limit)."""


@dataclass
class LoadedEngine:
    """An engine's runners, one per graph role, and what building them cost."""

    spec: EngineSpec
    runners: dict[str, Runner]
    files: list[Path] = field(default_factory=list)
    """Artifacts the runners load."""
    size_mb: float = 0.0
    """Size of the artifacts (or of the PyTorch weights) in MB."""
    build_s: float = 0.0
    """Seconds spent building artifacts (conversion, plan build) before loading."""
    sync: Callable[[], None] | None = None
    """Device synchronisation for timing (asynchronous engines)."""
    clock: CompileClock | None = None

    @classmethod
    def of_files(cls, spec: EngineSpec, runners: dict[str, Runner],
                 files: list[Path]) -> LoadedEngine:
        size = sum(p.stat().st_size for p in files if p.is_file()) / 1e6
        return cls(spec, runners, files, size_mb=size)


def load_engine(spec: EngineSpec, target: Target, compile_limit_s: float,
                max_batch: int, max_frames: int, threads: int | None = None) -> LoadedEngine:
    """Build (if needed) and construct the runners of ``spec``; not yet activated.

    Raises:
        BuildFailed: a conversion or plan build failed.
        BackendUnavailableError: a library the engine or its build needs is missing.
    """
    started = time.perf_counter()
    if spec.backend == "torch":
        engine = _torch_engine(spec, target, compile_limit_s)
    else:
        engine = _package_engine(spec, target, threads, max_batch, max_frames)
    engine.build_s = time.perf_counter() - started
    return engine


def _torch_engine(spec: EngineSpec, target: Target, compile_limit_s: float) -> LoadedEngine:
    import torch

    from lipx.export.spec import export_spec
    from lipx.export.torch_runner import TorchRunner

    model = target.model
    if model is None:  # unavailable() says so before any engine is loaded
        raise InputError(f"{spec.key}: no checkpoint for the PyTorch reference (--checkpoint)")
    graphs = export_spec(target.task, model).graphs
    runners: dict[str, Runner] = {}
    clock = CompileClock(compile_limit_s) if spec.compiled else None
    for role in ROLES:
        module = graphs[role].wrap(model).eval()
        runner = TorchRunner(torch.compile(module) if clock is not None else module,
                             target.manifest.graph(role), spec.device, f"{spec.key} {role}")
        runners[role] = CompileTimed(runner, clock) if clock is not None else runner
    weights = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    sync = torch.cuda.synchronize if spec.device.startswith("cuda") else None
    return LoadedEngine(spec, runners, size_mb=weights / 1e6, sync=sync, clock=clock)


def _package_engine(spec: EngineSpec, target: Target, threads: int | None, max_batch: int,
                    max_frames: int) -> LoadedEngine:
    """The runners of a backend row through the engine factory; artifacts the package lacks
    (int8/fp16 graphs, TensorRT plans) are made into the work folder."""
    artifacts = target.artifacts(BuildOptions(max_batch=max_batch, max_frames=max_frames))
    runners = open_runners(Package(target.package, target.manifest), ROLES, spec.backend,
                           spec.device, spec.precision, threads, artifacts=artifacts)
    files = [artifacts.get(spec.backend, role, spec.precision)[0] for role in ROLES]
    return LoadedEngine.of_files(spec, runners, files)


# --- torch.compile --------------------------------------------------------------------------


@dataclass
class CompileClock:
    """Seconds torch.compile spent on first calls, shared by an engine's runners."""

    limit_s: float
    spent_s: float = 0.0

    def add(self, seconds: float) -> None:
        self.spent_s += seconds
        if self.spent_s > self.limit_s:
            raise EngineSkipped(f"torch.compile spent {self.spent_s:.0f} s compiling, over the "
                                f"{self.limit_s:.0f} s limit (raise --compile-timeout-s)")


class CompileTimed(Runner):
    """Wraps the runner of a ``torch.compile``d module: a call with new shapes is a compile.

    The time of each such call (a compile or recompile) is charged to the engine's
    :class:`CompileClock`, which raises :class:`EngineSkipped` past its limit (a compile cannot
    be interrupted, so the limit is checked after each one).
    """

    def __init__(self, inner: Runner, clock: CompileClock) -> None:
        super().__init__(inner.name)
        self.inner, self.clock = inner, clock
        self.seen: set[tuple[Any, ...]] = set()

    def _activate(self) -> None:
        self.inner.activate()

    def _deactivate(self) -> None:
        self.inner.deactivate()

    def _input_metadata(self) -> dict[str, Any]:
        return self.inner.input_metadata()

    def _output_metadata(self) -> dict[str, Any]:
        return self.inner.output_metadata()

    def _infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        key = tuple((k, v.shape) for k, v in feeds.items())
        start = time.perf_counter()
        out = self.inner.infer(feeds, check=False)
        self.last_latency_s = self.inner.last_latency_s
        if key not in self.seen:
            self.seen.add(key)
            self.clock.add(time.perf_counter() - start)
        return out
