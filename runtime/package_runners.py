"""The engine factory: a model package + an engine name -> runners.

    runners = open_runners(Package.open("pkg"), ("frontend", "backend"), engine="onnx")

The backend table (:data:`~lipx.runtime.backends.BACKENDS`) decides which runner class, devices,
precisions and artifacts exist; this module maps a package's artifacts (ONNX graphs, TensorRT
plans) onto them. :class:`PackageArtifacts` finds the artifact an engine needs in the package
(checked by :meth:`~lipx.package.Package.file` before anything loads it) or, given a work
folder, makes it there with the builder it was handed for the engine (``lipx export`` and ``lipx
bench`` both build through it, with :data:`lipx.export.build.BUILDERS`). Unknown engines, devices
or precisions are InputErrors listing what is available. Torch-free, and it names no builder:
the runtime sits below export.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lipx.errors import InputError, ManifestError, did_you_mean
from lipx.package import EngineInfo, GraphInfo, Manifest, Package
from lipx.runtime.backends import BACKENDS, BackendInfo
from lipx.runtime.runner import Runner

log = logging.getLogger(__name__)

Artifact = GraphInfo | EngineInfo

Builder = Callable[["PackageArtifacts", str, str, Path], Artifact]
"""``builder(artifacts, role, precision, path)`` makes ``role``'s artifact at ``precision`` at
``path`` and returns its manifest entry (:data:`lipx.export.build.BUILDERS`: one per engine)."""


def resolve_backend(engine: str, device: str | None, precision: str | None) -> tuple[
        BackendInfo, str]:
    """The engine's row and the device to use (its first one when ``device`` is None).

    Raises:
        InputError: unknown engine, a device or precision the engine does not offer.
    """
    if engine not in BACKENDS:
        raise InputError(f"unknown --engine {engine!r}{did_you_mean(engine, BACKENDS)}")
    info = BACKENDS[engine]
    device = device or info.devices[0]
    if device not in info.devices:
        raise InputError(f"--engine {engine} cannot run on device {device!r}"
                         f"{did_you_mean(device, info.devices)}")
    if precision is not None and precision not in info.precisions:
        raise InputError(f"--precision {precision} is not available with --engine {engine} "
                         f"(choose from {', '.join(info.precisions)})")
    return info, device


@dataclass(frozen=True)
class BuildOptions:
    """How to make an artifact a package lacks (plan profiles, workspace, caches)."""

    max_batch: int = 8
    """Largest batch the whole-model and front-end artifacts accept."""
    max_frames: int | None = None
    """Longest whole-model clip (None: three windows)."""
    workspace_mb: int = 2048
    """TensorRT builder workspace."""
    cache_dir: Path | None = None
    """TensorRT timing and plan caches (None: the default cache folder)."""
    trt_flavour: str = "auto"
    """``auto``, ``tensorrt`` (full TensorRT) or ``rtx`` (TensorRT-RTX)."""
    trt_targets: tuple[str, ...] = ()
    """TensorRT-RTX compute capabilities to build for (empty: its portable set)."""
    profiles: tuple[tuple[str, tuple[int, int, int]], ...] = ()
    """``([ROLE.]DIM, (min, opt, max))`` overriding the ranges derived from the schedule."""


class PackageArtifacts:
    """A package's artifacts for every engine: its own, or ones made into ``workdir``.

    Args:
        package: the package (or, during an export, the folder being written and its manifest).
        workdir: where missing artifacts are made (None: a missing one is a ManifestError).
        options: how to make them.
        builders: engine -> its :data:`Builder` (export and bench hand in
            :data:`lipx.export.build.BUILDERS`); without one, a missing artifact of that engine
            is a ManifestError.
    """

    def __init__(self, package: Package, workdir: Path | None = None,
                 options: BuildOptions | None = None,
                 builders: Mapping[str, Builder] | None = None) -> None:
        self.package, self.manifest = package, package.manifest
        self.workdir, self.options = workdir, options or BuildOptions()
        self.builders = dict(builders or {})
        self.built: dict[tuple[str, str, str], tuple[Path, Artifact]] = {}
        """(engine, role, precision) -> what was made into the work folder, in build order."""
        self._checked: dict[str, Path] = {}
        """The package's own files that passed :meth:`Package.file`, by name."""

    def find(self, info: BackendInfo, role: str, precision: str | None) -> Artifact | None:
        """The package's own artifact of ``role`` for ``info`` (None when it has none).

        ``precision`` None means float32 graphs, or a plan of any precision.
        """
        if info.plans:
            return next((e for e in self.manifest.engines if e.role == role
                         and precision in (None, e.precision)), None)
        want = precision or "fp32"
        return next((g for g in self.manifest.graphs if g.role == role and g.precision == want),
                    None)

    def get(self, engine: str, role: str, precision: str | None = None) -> tuple[Path, Artifact]:
        """The checked file and manifest entry of ``role``'s artifact for ``engine``.

        Raises:
            ManifestError: the package lacks it and there is no work folder, or a file fails
                its check.
            BackendUnavailableError: making it needs a library that is not installed.
        """
        info = BACKENDS[engine]
        found = self.find(info, role, precision)
        if found is not None:  # each file is checked (hashed) once per PackageArtifacts
            if found.file not in self._checked:
                self._checked[found.file] = self.package.file(found)
            return self._checked[found.file], found
        precision = precision or info.default_precision
        key = (engine, role, precision)
        if key not in self.built:
            build = self.builders.get(engine)
            if self.workdir is None or build is None:
                raise ManifestError(self._missing(info, role, precision))
            info.check_build_needs()
            path = self.workdir / info.artifact_file(role, precision)
            self.built[key] = (path, build(self, role, precision, path))
        return self.built[key]

    def _missing(self, info: BackendInfo, role: str, precision: str) -> str:
        if info.plans:
            have = ", ".join(f"{e.role}/{e.precision}" for e in self.manifest.engines) or "none"
            return (f"package has no {precision} TensorRT plan for {role} (it has: {have}); "
                    f"build them with `lipx export CHECKPOINT -o DIR --engine trt`")
        have = ", ".join(f"{g.role}/{g.precision}" for g in self.manifest.graphs) or "none"
        return (f"package has no {precision} {role} graph (it has: {have}); re-export with the "
                f"precision you need")


def open_runners(
    package: Package,
    roles: Sequence[str],
    engine: str = "onnx",
    device: str | None = None,
    precision: str | None = None,
    threads: int | None = None,
    cuda_graph: bool = False,
    artifacts: PackageArtifacts | None = None,
) -> dict[str, Runner]:
    """Unopened runners of ``roles`` (``model``, ``frontend``, ``backend``) of a package.

    Args:
        package: the package.
        roles: which graphs to open.
        engine: ``onnx`` or ``trt`` (see ``BACKENDS``).
        device: onnx: ``cpu``, ``cuda`` or ``tensorrt``; trt: ``cuda``.
        precision: onnx: which graphs (``fp32`` default, ``fp16``, ``int8``); trt: which plans
            (any when None).
        threads: onnxruntime intra-op threads.
        cuda_graph: TensorRT: capture CUDA graphs for fixed shapes.
        artifacts: where to find (or make) the artifacts; default: the package's own only.
    Raises:
        InputError: bad engine/device/precision.
        ManifestError: the package lacks the graphs or plans asked for, or one fails its check.
        BackendUnavailableError: the engine's library is not installed.
    """
    info, device = resolve_backend(engine, device, precision)
    runner_class = info.runner_class()
    artifacts = artifacts or PackageArtifacts(package)
    runners: dict[str, Runner] = {}
    for role in roles:
        path, entry = artifacts.get(engine, role, precision)
        runners[role] = runner_class.for_artifact(path, entry, package.manifest, name=entry.file,
                                                  device=device, threads=threads,
                                                  cuda_graph=cuda_graph)
    return runners


def check_profiles(manifest: Manifest, window: int, chunk: int) -> None:
    """For TensorRT: the stream's window and front-end chunk must fit the plans' profiles.

    Raises:
        InputError: naming the option and the range the plans were built for.
    """
    context = manifest.spec.context
    for role, dim, value in (("backend", 1, window), ("frontend", 2, chunk + 2 * context)):
        engine = manifest.engine(role)
        first = engine.profiles[0][0] if engine.profiles and engine.profiles[0] else None
        if first is None:
            continue
        low, high = first.min[dim], first.max[dim]
        if not low <= value <= high:
            what = "--window" if role == "backend" else f"--chunk (+ {2 * context} context frames)"
            raise InputError(f"{what} gives {value} frames but {engine.file} was built for "
                             f"{low}..{high}; use a smaller value or rebuild the plans with "
                             f"`lipx export --engine trt --window/--stride`")


def engine_feeds(graph: GraphInfo, data: np.ndarray, frames: int) -> dict[str, np.ndarray]:
    """Inputs of ``graph``: ``data`` (batch first) as its first input (features or frames), zeros
    for the others at the same batch (the generator's noise, (B, N, rows, ``frames``): zero in
    inference)."""
    batch = len(data)
    feeds = {graph.inputs[0].name: np.ascontiguousarray(data, dtype=np.float32)}
    for t in graph.inputs[1:]:
        shape = tuple(batch if d == "batch" else frames if isinstance(d, str) else d
                      for d in t.shape)
        feeds[t.name] = np.zeros(shape, dtype=t.dtype)
    return feeds
