"""ONNX -> TensorRT plans, strongly typed, for either TensorRT flavour.

Building is a chain of loaders, as in Polygraphy::

    plan = PlanFromNetwork(NetworkFromOnnx(trt, path), profiles, "fp16", 2048, targets, cache)()

* The flavour (:data:`~lipx.runtime.backends.TRT_FLAVOURS`): full TensorRT (``tensorrt``) builds
  on a GPU of the architecture the plan is for; TensorRT-RTX (``tensorrt_rtx``) builds without a
  GPU, for the compute capabilities it is told to target (:func:`build_target`). ``auto`` takes
  full TensorRT when a GPU is present and it is installed, else TensorRT-RTX.
* Optimisation profiles come from the streaming schedule (:func:`derive_dims`): the front-end
  sees chunks of ``stride + 4`` frames (up to a whole window at start-up), the backend windows of
  ``window`` frames, the whole model clips up to ``max_frames``; batch 1 .. ``max_batch``.
* Precision is the graph's: the network is strongly typed, and an FP16 plan is built from the
  fp16 ONNX graph, whose :class:`~lipx.export.precision.Fp32Rule` nodes stay float32 (TensorRT
  >= 11 and TensorRT-RTX have no FP16 builder flag; this is the one path for both flavours).
* A persistent timing cache per TensorRT version and GPU (full TensorRT; TensorRT-RTX's timing
  cache is a no-op, its runtime cache belongs to the runner), and a plan cache keyed by the ONNX
  digest, the build settings and the target (:func:`plan_key`), under :func:`default_cache_dir`.
* Plans stay plain TensorRT plans; what they were built for goes into the manifest
  (:class:`~lipx.package.EngineInfo`), and :meth:`EngineInfo.check` refuses a mismatch at load.

The flavour's module is imported only when a plan is built; without it, or without the GPU
full TensorRT needs, the build raises BackendUnavailableError saying what each flavour needs.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lipx.errors import BackendUnavailableError, InputError, LipxError
from lipx.export.artifact import artifact
from lipx.export.precision import Fp32Rule
from lipx.files import atomic_write, file_sha256  # noqa: F401  (file_sha256 re-exported)
from lipx.package import EngineInfo, GraphInfo, PlanTarget, ShapeRange
from lipx.runtime.backends import TrtFlavour, import_trt, pick_flavour
from lipx.tasks import CONTEXT, Schedule

log = logging.getLogger(__name__)

DimRange = tuple[int, int, int]
"""(min, opt, max) of one dynamic dim."""
RTX_PORTABLE = ("8.0", "8.6", "8.9", "12.0", "12.1")
"""TensorRT-RTX's default targets: its portable set (7.5, Turing, only when asked for)."""


def find_gpu() -> tuple[str, str] | None:
    """(name, ``major.minor``) of CUDA device 0, through cuda-python or else torch; None without
    one (or without either library)."""
    if importlib.util.find_spec("cuda") is not None:
        from lipx.runtime.cuda import device_info, import_cudart

        try:
            return device_info(import_cudart())
        except (BackendUnavailableError, ImportError):
            return None
    if importlib.util.find_spec("torch") is None:
        return None
    import torch

    if not torch.cuda.is_available():
        return None
    major, minor = torch.cuda.get_device_capability(0)
    return torch.cuda.get_device_name(0), f"{major}.{minor}"


def rtx_capabilities(trt: Any) -> tuple[str, ...]:
    """The compute capabilities this TensorRT-RTX can target (``SM120`` -> ``12.0``)."""
    names = [n[2:] for n in trt.ComputeCapability.__members__ if n.startswith("SM")]
    return tuple(f"{n[:-1]}.{n[-1]}" for n in names)


def build_target(flavour: TrtFlavour, trt: Any, targets: tuple[str, ...] = (),
                 gpu: tuple[str, str] | None = None) -> tuple[PlanTarget, tuple[str, ...]]:
    """What a build with ``trt`` makes plans for: its target and the compute capabilities.

    Args:
        flavour: the flavour of ``trt``.
        trt: its module.
        targets: TensorRT-RTX compute capabilities (empty: :data:`RTX_PORTABLE`).
        gpu: this machine's GPU (:func:`find_gpu`).
    Raises:
        BackendUnavailableError: full TensorRT without a GPU.
        InputError: targets full TensorRT cannot take, or TensorRT-RTX does not know.
    """
    version = str(trt.__version__)
    if flavour.name == "tensorrt":
        if gpu is None:
            raise BackendUnavailableError(
                "no CUDA GPU found: full TensorRT builds a plan on a GPU of the architecture it "
                "will run on; TensorRT-RTX builds without one (pip install 'lipx[rtx]', "
                "--trt-flavour rtx; RTX GPUs only), or use --engine onnx")
        if targets and targets != (gpu[1],):
            raise InputError(f"full TensorRT builds for this GPU ({gpu[0]}, compute capability "
                             f"{gpu[1]}) only; --trt-targets is for --trt-flavour rtx")
        return PlanTarget(version, gpu[0], gpu[1], "tensorrt"), (gpu[1],)
    known = rtx_capabilities(trt)
    unknown = [t for t in targets if t not in known]
    if unknown:
        raise InputError(f"TensorRT-RTX {version} cannot target compute capability "
                         f"{', '.join(unknown)} (it targets {', '.join(known)})")
    chosen = targets or tuple(t for t in RTX_PORTABLE if t in known)
    return PlanTarget(version, "", "", "rtx"), chosen


def default_cache_dir() -> Path:
    """``$LIPX_CACHE_DIR/tensorrt``, else ``$XDG_CACHE_HOME/lipx/tensorrt`` (``~/.cache``)."""
    if os.environ.get("LIPX_CACHE_DIR"):
        return Path(os.environ["LIPX_CACHE_DIR"]) / "tensorrt"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "lipx" / "tensorrt"


def derive_dims(role: str, window: int, stride: int, max_batch: int, min_frames: int,
                max_frames: int, context: int = CONTEXT) -> dict[str, DimRange]:
    """(min, opt, max) of each dynamic dim of a graph, from the streaming schedule.

    * frontend ``chunk``: 1 .. ``window`` frames plus context, optimal at ``stride`` (steady
      state); batch optimal at 1 (one stream).
    * backend ``frames``: ``min_frames`` .. ``window``, optimal at ``window``; batch optimal at 1.
    * model ``frames``: ``min_frames`` .. ``max_frames``, optimal at ``window``; batch optimal at
      ``max_batch`` (batch use).

    Raises:
        InputError: the window and stride break the :class:`~lipx.tasks.Schedule` rule.
        ValueError: the window is outside ``min_frames .. max_frames``, or no batch.
    """
    Schedule.check(window, stride)
    if window > max_frames or min_frames > window or max_batch < 1:
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


PROFILE_DIMS = ("batch", "frames", "chunk")
"""The dynamic dims of lipx graphs (``chunk``: the front-end's frames with context)."""


def parse_dim_range(text: str) -> tuple[str, DimRange]:
    """``[ROLE.]DIM=MIN:OPT:MAX`` (``frames=5:29:87``, ``frontend.batch=1:1:4``) -> its parts.

    Raises:
        InputError: another form, an unknown role or dim, or not ``1 <= min <= opt <= max``.
    """
    from lipx.package import ROLES

    name, eq, numbers = text.partition("=")
    role, _, dim = name.rpartition(".")
    parts = numbers.split(":")
    if not eq or len(parts) != 3 or not all(x.strip().isdigit() for x in parts):
        raise InputError(f"--profile takes [ROLE.]DIM=MIN:OPT:MAX (e.g. frames=5:29:87), got "
                         f"{text!r}")
    if dim not in PROFILE_DIMS or (role and role not in ROLES):
        raise InputError(f"--profile {text!r}: dims are {', '.join(PROFILE_DIMS)}, roles "
                         f"{', '.join(ROLES)}")
    lo, opt, hi = (int(x) for x in parts)
    if not 1 <= lo <= opt <= hi:
        raise InputError(f"--profile {text!r}: needs 1 <= min <= opt <= max")
    return name, (lo, opt, hi)


def apply_overrides(role: str, dims: dict[str, DimRange],
                    overrides: tuple[tuple[str, DimRange], ...]) -> dict[str, DimRange]:
    """``dims`` with the ``--profile`` ranges that apply to ``role`` (``DIM`` to every graph
    with that dim, ``ROLE.DIM`` to one; the more specific wins)."""
    out = dict(dims)
    for name, r in sorted(overrides, key=lambda o: "." in o[0]):
        owner, _, dim = name.rpartition(".")
        if dim in out and owner in ("", role):
            out[dim] = r
    return out


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


def plan_key(onnx_sha256: str, target: PlanTarget, targets: tuple[str, ...], precision: str,
             profiles: tuple[tuple[ShapeRange, ...], ...], workspace_mb: int) -> str:
    """Digest of everything a plan depends on: same key, same plan (the plan cache key). The
    FP32 rule is in the (fp16) graph, so in its digest."""
    facts = {
        "onnx": onnx_sha256, "target": target.key, "targets": list(targets),
        "precision": precision, "strongly_typed": True,
        "profiles": [[[r.name, r.min, r.opt, r.max] for r in p] for p in profiles],
        "workspace_mb": workspace_mb,
    }
    return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:24]


def timing_cache_file(cache_dir: Path, target: PlanTarget) -> Path:
    """The persistent timing cache of one TensorRT version + GPU."""
    return cache_dir / f"timing-{target.key}.cache"


@dataclass
class NetworkFromOnnx:
    """Loader: parse an ONNX file into a strongly typed network of ``trt`` (a flavour's module).
    Returns (builder, network, parser)."""

    trt: Any
    path: Path

    def __call__(self) -> tuple[Any, Any, Any]:
        trt = self.trt
        logger = trt.Logger(trt.Logger.WARNING)
        builder = trt.Builder(logger)
        network = builder.create_network(
            1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
        parser = trt.OnnxParser(network, logger)
        if not parser.parse_from_file(str(self.path)):
            errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
            raise LipxError(f"TensorRT cannot parse {self.path.name}: "
                            f"{'; '.join(errors) or 'unknown error'}")
        return builder, network, parser


def fp32_layers(trt: Any, network: Any, rule: Fp32Rule) -> list[str]:
    """The layers ``rule`` selects whose float outputs are float32 in ``network`` (in an fp16
    graph: those the conversion kept in float32). Shape and index computations are left out."""
    floats = (trt.float32, trt.float16)
    kept = []
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        outputs = [layer.get_output(j) for j in range(layer.num_outputs)]
        if not outputs or any(o.dtype not in floats for o in outputs):
            continue
        if rule.keep_layer(layer.type.name, layer.name) and all(
                o.dtype == trt.float32 for o in outputs):
            kept.append(layer.name)
    return kept


@dataclass
class PlanFromNetwork:
    """Loader: build a serialized plan from a network loader (returns the plan bytes).

    After a call, ``fp32_layers`` lists the rule's layers that are float32 in the network and
    ``build_s`` the seconds the build took.
    """

    network: NetworkFromOnnx
    profiles: tuple[tuple[ShapeRange, ...], ...]
    precision: str = "fp16"
    workspace_mb: int = 2048
    targets: tuple[str, ...] = ()
    """TensorRT-RTX compute capabilities (empty: its default)."""
    timing_cache: Path | None = None
    """Full TensorRT's timing cache file (read and updated)."""
    rule: Fp32Rule = field(default_factory=Fp32Rule)
    fp32_layers: list[str] = field(default_factory=list)
    build_s: float = 0.0

    def __call__(self) -> bytes:
        trt = self.network.trt
        builder, network, _parser = self.network()
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, self.workspace_mb << 20)
        if self.precision == "fp32" and hasattr(trt.BuilderFlag, "TF32"):
            config.clear_flag(trt.BuilderFlag.TF32)  # TF32 would break float32 parity
        if self.targets:
            config.num_compute_capabilities = len(self.targets)
            for i, cc in enumerate(self.targets):
                config.set_compute_capability(
                    getattr(trt.ComputeCapability, "SM" + cc.replace(".", "")), i)
        for ranges in self.profiles:
            profile = builder.create_optimization_profile()
            for r in ranges:
                profile.set_shape(r.name, r.min, r.opt, r.max)
            config.add_optimization_profile(profile)
        cache = self._load_cache(config)
        self.fp32_layers = fp32_layers(trt, network, self.rule)
        started = time.perf_counter()
        plan = builder.build_serialized_network(network, config)
        self.build_s = time.perf_counter() - started
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
    """The layers an fp16 graph keeps in float32 (recorded, and used by its conversion)."""
    flavour: str = "auto"
    """``auto``, ``tensorrt`` or ``rtx`` (:func:`~lipx.runtime.backends.pick_flavour`)."""
    targets: tuple[str, ...] = ()
    """TensorRT-RTX compute capabilities (empty: :data:`RTX_PORTABLE`)."""

    def __post_init__(self) -> None:
        if self.flavour != "auto":
            pick_flavour(self.flavour, gpu=False)  # InputError for an unknown one
        bad = [t for t in self.targets if not _is_capability(t)]
        if bad:
            raise InputError(f"--trt-targets takes compute capabilities like 8.9 or 12.0, got "
                             f"{', '.join(bad)}")


def _is_capability(text: str) -> bool:
    major, dot, minor = text.partition(".")
    return bool(dot) and major.isdigit() and minor.isdigit() and len(minor) == 1


@artifact("TensorRT plan")
def build_engine(graph: GraphInfo, src: Path, path: Path,
                 profiles: tuple[tuple[ShapeRange, ...], ...],
                 settings: BuildSettings) -> EngineInfo:
    """Build (or take from the plan cache) the strongly typed plan of ``src`` at ``path``.

    Args:
        graph: manifest entry of the ONNX graph ``src``, whose precision the plan's is (the fp16
            graph for an FP16 plan).
        src: the ONNX file.
        path: the plan file to write.
        profiles: optimisation profiles (:func:`profile_for`).
        settings: flavour, targets, workspace, caches, FP32 rule.
    Returns:
        The manifest entry of the plan.
    Raises:
        BackendUnavailableError: the flavour is not installed, or full TensorRT has no GPU.
    """
    if graph.precision != settings.precision:
        raise InputError(f"a strongly typed {settings.precision} plan is built from the "
                         f"{settings.precision} graph; {graph.file} is {graph.precision}")
    gpu = find_gpu()
    flavour, trt = import_trt(settings.flavour, gpu is not None)
    target, targets = build_target(flavour, trt, settings.targets, gpu)
    cache_dir = settings.cache_dir or default_cache_dir()
    key = plan_key(file_sha256(src), target, targets, settings.precision, profiles,
                   settings.workspace_mb)
    cached = cache_dir / "plans" / f"{graph.role}-{key}.plan"
    facts = cached.with_suffix(".json")
    timing = timing_cache_file(cache_dir, target) if flavour.name == "tensorrt" else None
    if cached.is_file() and facts.is_file():
        log.info("%s: reusing cached plan %s", path.name, cached)
    else:
        loader = PlanFromNetwork(NetworkFromOnnx(trt, src), profiles, settings.precision,
                                 settings.workspace_mb, targets if flavour.name == "rtx" else (),
                                 timing, settings.rule)
        _write_atomic(cached, loader())
        _write_atomic(facts, json.dumps({"fp32_layers": loader.fp32_layers,
                                         "build_s": round(loader.build_s, 3)}).encode())
    built = json.loads(facts.read_text())
    shutil.copyfile(cached, path)
    return EngineInfo(
        role=graph.role, file=path.name, source=graph.file, precision=settings.precision,
        profiles=profiles, tensorrt_version=target.tensorrt_version, gpu_name=target.gpu_name,
        compute_capability=target.compute_capability,
        timing_cache=str(timing) if timing else "", workspace_mb=settings.workspace_mb,
        fp32_layers=tuple(built["fp32_layers"]), sha256=file_sha256(path),
        flavour=flavour.name, targets=targets, strongly_typed=True,
        build_s=float(built["build_s"]), plan_bytes=path.stat().st_size,
    )


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: tmp.write_bytes(data))
