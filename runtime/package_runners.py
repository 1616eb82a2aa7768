"""Open the runners of a model package for one backend and device.

    manifest = Manifest.read("pkg")
    runners = open_runners("pkg", manifest, ("frontend", "backend"), backend="onnx", device="cpu")

The backend table (:data:`~lipx.runtime.backends.BACKENDS`) decides which runner class, devices
and precisions exist; this module only maps a package's graphs (ONNX) or plans (TensorRT) onto
them. Unknown backends, devices or precisions are InputErrors listing what is available.
Torch-free.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from lipx.errors import InputError, ManifestError, did_you_mean
from lipx.package import Manifest, package_file
from lipx.runtime.backends import BACKENDS, BackendInfo
from lipx.runtime.runner import Runner

log = logging.getLogger(__name__)


def resolve_backend(backend: str, device: str | None, precision: str | None) -> tuple[
        BackendInfo, str]:
    """The backend's row and the device to use (its first one when ``device`` is None).

    Raises:
        InputError: unknown backend, a device or precision the backend does not offer.
    """
    if backend not in BACKENDS:
        raise InputError(f"unknown --backend {backend!r}{did_you_mean(backend, BACKENDS)}")
    info = BACKENDS[backend]
    device = device or info.devices[0]
    if device not in info.devices:
        raise InputError(f"--backend {backend} cannot run on device {device!r}"
                         f"{did_you_mean(device, info.devices)}")
    if precision is not None and precision not in info.precisions:
        raise InputError(f"--precision {precision} is not available with --backend {backend} "
                         f"(choose from {', '.join(info.precisions)})")
    return info, device


def open_runners(
    package_dir: str | Path,
    manifest: Manifest,
    roles: Sequence[str],
    backend: str = "onnx",
    device: str | None = None,
    precision: str | None = None,
    threads: int | None = None,
    cuda_graph: bool = False,
) -> dict[str, Runner]:
    """Unopened runners of ``roles`` (``model``, ``frontend``, ``backend``) of a package.

    Args:
        package_dir: the package directory.
        manifest: its manifest.
        roles: which graphs to open.
        backend: ``onnx`` or ``trt`` (see ``BACKENDS``).
        device: onnx: ``cpu``, ``cuda`` or ``tensorrt``; trt: ``cuda``.
        precision: onnx: which graphs (``fp32`` default, ``fp16``, ``int8``, as exported);
            trt: checked against the plans' precision when given.
        threads: onnxruntime intra-op threads.
        cuda_graph: TensorRT: capture CUDA graphs for fixed shapes.
    Raises:
        InputError: bad backend/device/precision.
        ManifestError: the package lacks the graphs or plans asked for.
        BackendUnavailableError: the backend's library is not installed.
    """
    info, device = resolve_backend(backend, device, precision)
    runner_class = info.runner_class()
    root = Path(package_dir)
    runners: dict[str, Runner] = {}
    for role in roles:
        if info.name == "trt":
            engine = manifest.engine(role)
            if precision is not None and engine.precision != precision:
                raise ManifestError(f"{engine.file} is a {engine.precision} plan, not "
                                    f"{precision}; rebuild with `lipx export --engine trt "
                                    f"--precision {precision}` or drop --precision")
            runners[role] = runner_class(package_file(root, engine), name=engine.file,  # type: ignore[call-arg]
                                         engine=engine, graph=manifest.graph(engine.role),
                                         cuda_graph=cuda_graph)
        else:
            graph = manifest.graph(role, precision or "fp32")
            runners[role] = runner_class(package_file(root, graph), device=device,  # type: ignore[call-arg]
                                         threads=threads, name=graph.file)
    return runners


def check_profiles(manifest: Manifest, window: int, chunk: int, context: int) -> None:
    """For TensorRT: the stream's window and front-end chunk must fit the plans' profiles.

    Raises:
        InputError: naming the option and the range the plans were built for.
    """
    for role, dim, value in (("backend", 1, window), ("frontend", 2, chunk + 2 * context)):
        engine = manifest.engine(role)
        first = engine.profiles[0][0] if engine.profiles and engine.profiles[0] else None
        if first is None:
            continue
        low, high = first.min[dim], first.max[dim]
        if not low <= value <= high:
            what = "--window" if role == "backend" else "--chunk (+ 4 context frames)"
            raise InputError(f"{what} gives {value} frames but {engine.file} was built for "
                             f"{low}..{high}; use a smaller value or rebuild the plans with "
                             f"`lipx export --engine trt --window/--stride`")
