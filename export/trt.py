"""ONNX -> TensorRT plans (FP16 by default), written against the TensorRT Python API.

Building is a chain of loaders, as in Polygraphy::

    plan = PlanFromNetwork(NetworkFromOnnx(path), profiles, "fp16", 2048, cache, rule)()

* Optimisation profiles come from the streaming schedule (:func:`derive_dims`): the front-end
  sees chunks of ``stride + 4`` frames (up to a whole window at start-up), the backend windows of
  ``window`` frames, the whole model clips up to ``max_frames``; batch 1 .. ``max_batch``.
* FP16 with the :class:`~lipx.export.precision.Fp32Rule` layers constrained to FP32
  (``OBEY_PRECISION_CONSTRAINTS``). TensorRT >= 11 dropped the FP16 builder flag; there the plan is
  built strongly typed from the fp16 ONNX graph (converted with the same rule).
* A persistent timing cache per TensorRT version and GPU, and a plan cache keyed by the ONNX
  digest, the build settings and the target (:func:`plan_key`), under :func:`default_cache_dir`.
* Plans stay plain TensorRT plans; what they were built for goes into the manifest
  (:class:`~lipx.package.EngineInfo`), and :meth:`EngineInfo.check` refuses a mismatch at load.

``tensorrt`` is imported only when a plan is built; without it, or without a CUDA GPU, the build
raises BackendUnavailableError. This path has not run on real TensorRT in CI (see README).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lipx.errors import BackendUnavailableError, LipxError
from lipx.export.artifact import artifact
from lipx.export.precision import Fp32Rule
from lipx.files import atomic_write, file_sha256  # noqa: F401  (file_sha256 re-exported)
from lipx.package import EngineInfo, GraphInfo, PlanTarget, ShapeRange

log = logging.getLogger(__name__)

DimRange = tuple[int, int, int]
"""(min, opt, max) of one dynamic dim."""


def import_tensorrt() -> Any:
    """``import tensorrt``, or BackendUnavailableError naming the pip extra."""
    try:
        import tensorrt
    except ImportError as e:
        raise BackendUnavailableError(
            "TensorRT is not installed: pip install 'lipx[gpu]' on a machine with an NVIDIA GPU "
            "(plans are built on the GPU they will run on)") from e
    return tensorrt


def running_target(trt: Any) -> PlanTarget:
    """The TensorRT version and GPU of this machine; BackendUnavailableError without a GPU."""
    import torch

    if not torch.cuda.is_available():
        raise BackendUnavailableError("no CUDA GPU found: TensorRT plans are built on the GPU "
                                      "they will run on; use --engine onnx here")
    major, minor = torch.cuda.get_device_capability(0)
    return PlanTarget(trt.__version__, torch.cuda.get_device_name(0), f"{major}.{minor}")


def default_cache_dir() -> Path:
    """``$LIPX_CACHE_DIR/tensorrt``, else ``$XDG_CACHE_HOME/lipx/tensorrt`` (``~/.cache``)."""
    if os.environ.get("LIPX_CACHE_DIR"):
        return Path(os.environ["LIPX_CACHE_DIR"]) / "tensorrt"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "lipx" / "tensorrt"


def derive_dims(role: str, window: int, stride: int, max_batch: int, min_frames: int,
                max_frames: int, context: int = 2) -> dict[str, DimRange]:
    """(min, opt, max) of each dynamic dim of a graph, from the streaming schedule.

    * frontend ``chunk``: 1 .. ``window`` frames plus context, optimal at ``stride`` (steady
      state); batch optimal at 1 (one stream).
    * backend ``frames``: ``min_frames`` .. ``window``, optimal at ``window``; batch optimal at 1.
    * model ``frames``: ``min_frames`` .. ``max_frames``, optimal at ``window``; batch optimal at
      ``max_batch`` (batch use).
    """
    if not 1 <= stride <= window <= max_frames or min_frames > window or max_batch < 1:
        raise ValueError(f"inconsistent schedule: window {window}, stride {stride}, "
                         f"min {min_frames}, max {max_frames}, batch {max_batch}")
    c2 = 2 * context
    if role == "frontend":
        return {"batch": (1, 1, max_batch), "chunk": (1 + c2, stride + c2, window + c2)}
    if role == "backend":
        return {"batch": (1, 1, max_batch), "frames": (min_frames, window, window)}
    if role == "model":
        return {"batch": (1, max_batch, max_batch), "frames": (min_frames, window, max_frames)}
    raise ValueError(f"unknown graph role {role!r}")


def profile_for(graph: GraphInfo, dims: dict[str, DimRange]) -> tuple[ShapeRange, ...]:
    """One optimisation profile for ``graph``: min/opt/max shapes of each input.

    Raises:
        ValueError: an input has a symbolic dim that ``dims`` does not cover.
    """
    ranges = []
    for t in graph.inputs:
        shapes: list[list[int]] = [[], [], []]
        for d in t.shape:
            if isinstance(d, str):
                if d not in dims:
                    raise ValueError(f"{graph.file}: no profile range for dim {d!r} of {t.name!r}")
                for i in range(3):
                    shapes[i].append(dims[d][i])
            else:
                for s in shapes:
                    s.append(d)
        ranges.append(ShapeRange(t.name, *(tuple(s) for s in shapes)))
    return tuple(ranges)


def plan_key(onnx_sha256: str, target: PlanTarget, precision: str,
             profiles: tuple[tuple[ShapeRange, ...], ...], workspace_mb: int,
             rule: Fp32Rule) -> str:
    """Digest of everything a plan depends on: same key, same plan (the plan cache key)."""
    facts = {
        "onnx": onnx_sha256, "target": target.key, "precision": precision,
        "profiles": [[[r.name, r.min, r.opt, r.max] for r in p] for p in profiles],
        "workspace_mb": workspace_mb,
        "rule": [sorted(rule.layer_types), list(rule.name_patterns)],
    }
    return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:24]


def timing_cache_file(cache_dir: Path, target: PlanTarget) -> Path:
    """The persistent timing cache of one TensorRT version + GPU."""
    return cache_dir / f"timing-{target.key}.cache"


@dataclass
class NetworkFromOnnx:
    """Loader: parse an ONNX file into a TensorRT network. Returns (builder, network, parser)."""

    path: Path
    strongly_typed: bool = False

    def __call__(self) -> tuple[Any, Any, Any]:
        trt = import_tensorrt()
        logger = trt.Logger(trt.Logger.WARNING)
        builder = trt.Builder(logger)
        flags = 0
        if self.strongly_typed:
            flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
        network = builder.create_network(flags)
        parser = trt.OnnxParser(network, logger)
        if not parser.parse_from_file(str(self.path)):
            errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
            raise LipxError(f"TensorRT cannot parse {self.path.name}: "
                            f"{'; '.join(errors) or 'unknown error'}")
        return builder, network, parser


def mark_fp32_layers(trt: Any, network: Any, rule: Fp32Rule) -> list[str]:
    """Constrain the layers ``rule`` selects to FP32 (precision and float outputs).

    Returns their names.
    """
    floats = (trt.float32, trt.float16)
    marked = []
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        outputs = [layer.get_output(j) for j in range(layer.num_outputs)]
        if not outputs or any(o.dtype not in floats for o in outputs):
            continue  # shape and index computations have no precision to choose
        if rule.keep_layer(layer.type.name, layer.name):
            layer.precision = trt.float32
            for j in range(layer.num_outputs):
                layer.set_output_type(j, trt.float32)
            marked.append(layer.name)
    return marked


@dataclass
class PlanFromNetwork:
    """Loader: build a serialized plan from a network loader (returns the plan bytes).

    After a call, ``fp32_layers`` lists the layers constrained to FP32.
    """

    network: Callable[[], tuple[Any, Any, Any]]
    profiles: tuple[tuple[ShapeRange, ...], ...]
    precision: str = "fp16"
    workspace_mb: int = 2048
    timing_cache: Path | None = None
    rule: Fp32Rule = field(default_factory=Fp32Rule)
    fp32_layers: list[str] = field(default_factory=list)

    def __call__(self) -> bytes:
        trt = import_tensorrt()
        builder, network, _parser = self.network()
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, self.workspace_mb << 20)
        if self.precision == "fp16" and hasattr(trt.BuilderFlag, "FP16"):
            config.set_flag(trt.BuilderFlag.FP16)
            config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
            self.fp32_layers = mark_fp32_layers(trt, network, self.rule)
        elif self.precision == "fp32" and hasattr(trt.BuilderFlag, "TF32"):
            config.clear_flag(trt.BuilderFlag.TF32)  # TF32 would break float32 parity
        for ranges in self.profiles:
            profile = builder.create_optimization_profile()
            for r in ranges:
                profile.set_shape(r.name, r.min, r.opt, r.max)
            config.add_optimization_profile(profile)
        cache = self._load_cache(config)
        plan = builder.build_serialized_network(network, config)
        if plan is None:
            raise LipxError("TensorRT failed to build the plan (see the TensorRT log above); "
                            "try a larger --workspace-mb or --engine onnx")
        if cache is not None and self.timing_cache is not None:
            serialized = config.get_timing_cache().serialize()
            _write_atomic(self.timing_cache, bytes(memoryview(serialized)))
        return bytes(memoryview(plan))

    def _load_cache(self, config: Any) -> Any:
        if self.timing_cache is None:
            return None
        data = self.timing_cache.read_bytes() if self.timing_cache.is_file() else b""
        cache = config.create_timing_cache(data)
        if not config.set_timing_cache(cache, ignore_mismatch=False):
            log.warning("timing cache %s does not match this TensorRT/GPU; starting a new one",
                        self.timing_cache)
            cache = config.create_timing_cache(b"")
            config.set_timing_cache(cache, ignore_mismatch=False)
        return cache


@dataclass(frozen=True)
class BuildSettings:
    """Options of a plan build shared by all graphs of a package."""

    precision: str = "fp16"
    workspace_mb: int = 2048
    cache_dir: Path | None = None
    """Timing and plan caches (None: :func:`default_cache_dir`)."""
    rule: Fp32Rule = field(default_factory=Fp32Rule)


@artifact("TensorRT plan")
def build_engine(graph: GraphInfo, src: Path, path: Path,
                 profiles: tuple[tuple[ShapeRange, ...], ...], settings: BuildSettings,
                 fp16_src: Callable[[], Path] | None = None) -> EngineInfo:
    """Build (or take from the plan cache) the plan of ``graph`` and write it to ``path``.

    Args:
        graph: manifest entry of the float32 ONNX graph ``src``.
        src: the ONNX file.
        path: the plan file to write.
        profiles: optimisation profiles (:func:`profile_for`).
        settings: precision, workspace, caches, FP32 rule.
        fp16_src: makes the fp16 ONNX graph, needed when this TensorRT has no FP16 builder flag
            (>= 11: strongly typed networks).
    Returns:
        The manifest entry of the plan.
    """
    trt = import_tensorrt()
    target = running_target(trt)
    cache_dir = settings.cache_dir or default_cache_dir()
    onnx_sha = file_sha256(src)
    key = plan_key(onnx_sha, target, settings.precision, profiles, settings.workspace_mb,
                   settings.rule)
    cached = cache_dir / "plans" / f"{graph.role}-{key}.plan"
    layers: list[str] = []
    if cached.is_file():
        log.info("%s: reusing cached plan %s", path.name, cached)
    else:
        typed = settings.precision == "fp16" and not hasattr(trt.BuilderFlag, "FP16")
        onnx_src = src
        if typed:
            if fp16_src is None:
                raise BackendUnavailableError(f"TensorRT {trt.__version__} builds FP16 only from "
                                              f"an fp16 graph; none was given for {graph.file}")
            onnx_src = fp16_src()
        network = NetworkFromOnnx(onnx_src, strongly_typed=typed)
        timing = timing_cache_file(cache_dir, target)
        loader = PlanFromNetwork(network, profiles, settings.precision, settings.workspace_mb,
                                 timing, settings.rule)
        cache_dir.joinpath("plans").mkdir(parents=True, exist_ok=True)
        _write_atomic(cached, loader())
        _write_atomic(cached.with_suffix(".layers.json"), json.dumps(loader.fp32_layers).encode())
        layers = loader.fp32_layers
    if not layers and cached.with_suffix(".layers.json").is_file():
        layers = json.loads(cached.with_suffix(".layers.json").read_text())
    shutil.copyfile(cached, path)
    return EngineInfo(
        role=graph.role, file=path.name, source=graph.file, precision=settings.precision,
        profiles=profiles, tensorrt_version=target.tensorrt_version, gpu_name=target.gpu_name,
        compute_capability=target.compute_capability,
        timing_cache=str(timing_cache_file(cache_dir, target)),
        workspace_mb=settings.workspace_mb, fp32_layers=tuple(layers), sha256=file_sha256(path),
    )


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: tmp.write_bytes(data))
