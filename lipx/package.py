"""The model package: a directory of graphs and engines described by ``manifest.json``.

``lipx export`` writes one package per model::

    manifest.json          this file's Manifest, schema-versioned
    model.onnx             the whole model, frames -> outputs (batch use, parity reference)
    frontend.onnx          a chunk of C+4 frames -> C per-frame features (streaming)
    backend.onnx           a window of W features -> logits, or -> mel + linear
    model.fp16.onnx ...    optional converted graphs ({role}.{precision}.onnx)
    frontend.plan ...      optional TensorRT plans (plain plans; their facts live here)
    triton/                optional Triton Inference Server model repository

The manifest is read and written only through :class:`Manifest` (frozen, ``from_dict`` /
``to_dict``), so every reader sees the same typed view. This module imports no torch, onnx or
TensorRT: the runtime reads packages on machines that have none of them.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, TypeVar

from lipx.audio import AudioSpec
from lipx.errors import InputError, ManifestError, did_you_mean
from lipx.files import atomic_write, file_sha256
from lipx.tasks import NO_WORD, TASKS, Schedule, TaskSpec
from lipx.video import VideoSpec

log = logging.getLogger(__name__)

SCHEMA_VERSION = 3
"""2: the task spec (``task_spec``) and the window schedule (``schedule``) replace ``task`` and
``streaming``. 3: engines record their TensorRT flavour, target compute capabilities, whether
they are strongly typed, build time and plan size."""
MANIFEST_NAME = "manifest.json"
ROLES = ("model", "frontend", "backend")
"""Graph roles: the whole model and the two halves of the streaming split."""

Dim = int | str
"""A tensor dimension: a fixed size, or the name of a symbolic (dynamic) one."""

_T = TypeVar("_T")


def _fields(cls: type[_T], d: Any, where: str) -> dict[str, Any]:
    """The known fields of ``cls`` in ``d``; ManifestError when ``d`` is no dict or misses one."""
    if not isinstance(d, dict):
        raise ManifestError(f"manifest: {where} must be an object, got {type(d).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    required = {
        f.name for f in dataclasses.fields(cls)  # type: ignore[arg-type]
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    }
    missing = sorted(required - d.keys())
    if missing:
        raise ManifestError(f"manifest: {where} lacks {', '.join(missing)}; re-export the package")
    return {k: v for k, v in d.items() if k in names}


def _own_file(name: Any, where: str) -> str:
    """``name`` if it names a file inside the package: relative, without ``..`` (a package is
    untrusted input; ManifestError otherwise, at read time, before anything is loaded)."""
    if not isinstance(name, str) or not name.strip():
        raise ManifestError(f"manifest: {where}.file must be a file name, got {name!r}")
    posix, windows = PurePosixPath(name.replace("\\", "/")), PureWindowsPath(name)
    if posix.is_absolute() or windows.drive or ".." in posix.parts:
        raise ManifestError(f"manifest: {where}.file {name!r} points outside the package; a "
                            f"package may only name its own files (refusing to load it)")
    return name


def package_file(package_dir: str | Path, entry: GraphInfo | EngineInfo) -> Path:
    """The path of a graph or plan the manifest names, checked before anything loads it.

    Raises:
        ManifestError: the file resolves outside the package (a symlink out of it), is missing,
            records no digest, or does not match its recorded sha256.
    """
    root = Path(package_dir).resolve()
    path = (root / _own_file(entry.file, entry.role)).resolve()
    if not path.is_relative_to(root):
        raise ManifestError(f"{entry.file} resolves to {path}, outside the package {root} "
                            f"(a symlink out of it); refusing to load it")
    if not path.is_file():
        raise ManifestError(f"{entry.file} is missing from the package {root}; re-export it")
    if not entry.sha256:
        raise ManifestError(f"the manifest records no sha256 for {entry.file}, so it cannot be "
                            f"checked; re-export the package")
    if file_sha256(path) != entry.sha256:
        raise ManifestError(f"{entry.file} does not match the sha256 its manifest records (changed "
                            f"or damaged); re-export or download the package again")
    return path


@dataclass(frozen=True)
class TensorInfo:
    """One graph input or output."""

    name: str
    dtype: str
    """numpy dtype name: ``float32``, ``float16``, ``int64``."""
    shape: tuple[Dim, ...]
    """Fixed sizes as ints, dynamic ones by name (``batch``, ``frames``, ``chunk``)."""

    @property
    def dynamic(self) -> dict[int, str]:
        """Axis -> symbolic name of the dynamic axes."""
        return {i: d for i, d in enumerate(self.shape) if isinstance(d, str)}

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}

    @classmethod
    def from_dict(cls, d: Any, where: str = "tensor") -> TensorInfo:
        f = _fields(cls, d, where)
        return cls(name=f["name"], dtype=f["dtype"], shape=tuple(f["shape"]))


def _tensors(items: Any, where: str) -> tuple[TensorInfo, ...]:
    return tuple(TensorInfo.from_dict(t, f"{where}[{i}]") for i, t in enumerate(items or ()))


@dataclass(frozen=True)
class GraphInfo:
    """One ONNX file of the package."""

    role: str
    """``model``, ``frontend`` or ``backend``."""
    file: str
    """File name inside the package."""
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    opset: int
    exporter: str
    """What produced it, e.g. ``torch 2.13.0 dynamo``; conversions append ``+ fp16``."""
    precision: str = "fp32"
    """``fp32``, ``fp16`` (weights and compute, fp32 I/O) or ``int8`` (dynamic quantisation)."""
    sha256: str = ""

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["inputs"] = [t.to_dict() for t in self.inputs]
        d["outputs"] = [t.to_dict() for t in self.outputs]
        return d

    @classmethod
    def from_dict(cls, d: Any, where: str = "graph") -> GraphInfo:
        f = _fields(cls, d, where)
        f["file"] = _own_file(f["file"], where)
        f["inputs"] = _tensors(f["inputs"], f"{where}.inputs")
        f["outputs"] = _tensors(f["outputs"], f"{where}.outputs")
        return cls(**f)


@dataclass(frozen=True)
class ShapeRange:
    """The min/opt/max shapes of one input in an optimisation profile."""

    name: str
    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]

    @classmethod
    def from_dict(cls, d: Any, where: str = "shape range") -> ShapeRange:
        f = _fields(cls, d, where)
        return cls(f["name"], tuple(f["min"]), tuple(f["opt"]), tuple(f["max"]))


FLAVOUR_LABELS = {"tensorrt": "TensorRT", "rtx": "TensorRT-RTX"}
"""Manifest ``flavour`` -> its name in messages (the flavours: lipx.runtime.backends)."""


@dataclass(frozen=True)
class PlanTarget:
    """What a TensorRT plan is tied to: the TensorRT flavour and version, and the GPU.

    A TensorRT-RTX build needs no GPU; its target then has no GPU name or compute capability
    (the plan's :attr:`EngineInfo.targets` say where it runs).
    """

    tensorrt_version: str
    gpu_name: str
    compute_capability: str
    """``major.minor``, e.g. ``8.9``; empty for a TensorRT-RTX build without a GPU."""
    flavour: str = "tensorrt"
    """``tensorrt`` (full TensorRT) or ``rtx`` (TensorRT-RTX)."""

    @property
    def label(self) -> str:
        """``TensorRT 10.3.0``, ``TensorRT-RTX 1.7.1.116``."""
        return f"{FLAVOUR_LABELS.get(self.flavour, self.flavour)} {self.tensorrt_version}"

    @property
    def key(self) -> str:
        """A file-name-safe key, e.g. ``trt10.3.0-sm89-nvidia-l4`` or ``rtx1.7.1.116-portable``
        (plan and timing caches)."""
        prefix = "trt" if self.flavour == "tensorrt" else self.flavour
        if not self.gpu_name:
            return f"{prefix}{self.tensorrt_version}-portable"
        gpu = "".join(c if c.isalnum() else "-" for c in self.gpu_name.lower()).strip("-")
        while "--" in gpu:
            gpu = gpu.replace("--", "-")
        sm = self.compute_capability.replace(".", "")
        return f"{prefix}{self.tensorrt_version}-sm{sm}-{gpu}"


@dataclass(frozen=True)
class EngineInfo:
    """One TensorRT plan of the package and the facts it was built under."""

    role: str
    file: str
    source: str
    """The ONNX file it was built from (``{role}.fp16.onnx`` for fp16 plans)."""
    precision: str
    profiles: tuple[tuple[ShapeRange, ...], ...]
    """Optimisation profiles, each a min/opt/max range per dynamic input."""
    tensorrt_version: str
    gpu_name: str
    """The GPU that built it (empty: a TensorRT-RTX build without one)."""
    compute_capability: str
    timing_cache: str = ""
    """Timing cache file used (and updated) by the build (full TensorRT)."""
    workspace_mb: int = 0
    fp32_layers: tuple[str, ...] = ()
    """Layers of an FP16 plan's network that the graph keeps in float32 (the Fp32Rule's)."""
    sha256: str = ""
    flavour: str = "tensorrt"
    """``tensorrt`` (full TensorRT) or ``rtx`` (TensorRT-RTX)."""
    targets: tuple[str, ...] = ()
    """Compute capabilities it runs on: TensorRT-RTX, those the build targeted; full TensorRT,
    the building GPU's."""
    strongly_typed: bool = True
    """Built as a strongly typed network (its precision is the ONNX graph's)."""
    build_s: float = 0.0
    """Seconds the build took (the first one, when the plan came from the plan cache)."""
    plan_bytes: int = 0

    @property
    def target(self) -> PlanTarget:
        return PlanTarget(self.tensorrt_version, self.gpu_name, self.compute_capability,
                          self.flavour)

    def mismatch(self, running: PlanTarget) -> str | None:
        """Why this plan cannot run on ``running`` (None when it can).

        A plan is tied to its TensorRT flavour and version. A full TensorRT plan runs on GPUs of
        the compute capability it was built on (another GPU model of the same capability is
        allowed and logged: TensorRT warns, speed may suffer); a TensorRT-RTX plan on the compute
        capabilities it targets.
        """
        built = self.target
        if (built.flavour, built.tensorrt_version) != (running.flavour, running.tensorrt_version):
            why = f"{built.label}, this machine has {running.label}"
        elif built.flavour == "rtx":
            if running.compute_capability in self.targets:
                return None
            return (f"{self.file} targets compute capabilities {', '.join(self.targets)}; this "
                    f"GPU ({running.gpu_name}) is {running.compute_capability}: rebuild it with "
                    f"`lipx export CHECKPOINT -o DIR --engine trt --trt-targets "
                    f"{running.compute_capability}` if TensorRT-RTX supports that GPU (RTX GPUs "
                    f"only), or --trt-flavour tensorrt on it, or use --engine onnx")
        elif built.compute_capability != running.compute_capability:
            why = (f"a GPU of compute capability {built.compute_capability} ({built.gpu_name}), "
                   f"this one is {running.compute_capability} ({running.gpu_name})")
        else:
            if built.gpu_name != running.gpu_name:
                log.warning("%s was built on %s and runs on %s (same architecture); rebuild it "
                            "on this GPU for best speed", self.file, built.gpu_name,
                            running.gpu_name)
            return None
        fix = ("on this machine" if built.flavour == "tensorrt" and running.flavour == "tensorrt"
               else f"for {running.label}")
        return (f"{self.file} was built for {why}; rebuild it {fix} with "
                f"`lipx export CHECKPOINT -o DIR --engine trt`, or use --engine onnx")

    def check(self, running: PlanTarget) -> None:
        """Raise InputError when this plan cannot run on ``running``."""
        problem = self.mismatch(running)
        if problem:
            raise InputError(problem)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["profiles"] = [[dataclasses.asdict(r) for r in p] for p in self.profiles]
        return d

    @classmethod
    def from_dict(cls, d: Any, where: str = "engine") -> EngineInfo:
        f = _fields(cls, d, where)
        f["file"] = _own_file(f["file"], where)
        f["profiles"] = tuple(
            tuple(ShapeRange.from_dict(r, f"{where}.profiles") for r in p) for p in f["profiles"]
        )
        f["fp32_layers"] = tuple(f.get("fp32_layers", ()))
        f["targets"] = tuple(f.get("targets", ()))
        return cls(**f)


@dataclass(frozen=True)
class OutputParity:
    """Error statistics of one output of an artifact against the reference, over all cases."""

    name: str
    max_abs: float
    max_rel: float
    """``max_abs`` divided by the largest reference magnitude (scale-free)."""
    mean_abs: float
    atol: float
    rtol: float
    passed: bool
    """``max_abs <= atol + rtol * max|reference|``."""


@dataclass(frozen=True)
class ParityRecord:
    """Parity of one artifact (a graph, a plan, the split pipeline) against a reference."""

    artifact: str
    reference: str
    engine: str
    """What ran the artifact, e.g. ``onnxruntime CPUExecutionProvider``."""
    cases: tuple[tuple[int, int], ...]
    """(batch, frames) of each input set."""
    outputs: tuple[OutputParity, ...]
    top1_agreement: float | None = None
    """Share of rows whose arg-max agrees with the reference's (classes whose reference scores
    are within the output tolerance count as tied, i.e. agreeing)."""
    min_top1: float | None = None
    passed: bool = True
    problem: str = ""
    """Why it failed (shape mismatch, tolerance), empty when it passed."""

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["cases"] = [list(c) for c in self.cases]
        return d

    @classmethod
    def from_dict(cls, d: Any, where: str = "parity") -> ParityRecord:
        f = _fields(cls, d, where)
        f["cases"] = tuple(tuple(c) for c in f["cases"])
        f["outputs"] = tuple(OutputParity(**_fields(OutputParity, o, where)) for o in f["outputs"])
        return cls(**f)


@dataclass(frozen=True)
class Manifest:
    """Everything the runtime needs to know about a model package."""

    spec: TaskSpec
    """The task and the facts about its graphs (head output, tolerances, context, ...)."""
    model_name: str
    preset: str | None
    lipx_version: str
    checkpoint_sha256: str
    video: VideoSpec
    audio: AudioSpec | None
    vocabulary: tuple[str, ...] | None
    schedule: Schedule
    """The window and stride the split graphs and plans were built for (the stream's default)."""
    graphs: tuple[GraphInfo, ...]
    engines: tuple[EngineInfo, ...] = ()
    parity: tuple[ParityRecord, ...] = ()
    created: str = ""
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        if self.spec.task not in TASKS:
            raise ManifestError(
                f"manifest: unknown task {self.spec.task!r}{did_you_mean(self.spec.task, TASKS)}")

    @property
    def task(self) -> str:
        """``lipreading`` or ``lip2speech``."""
        return self.spec.task

    def graph(self, role: str, precision: str = "fp32") -> GraphInfo:
        """The graph of ``role`` at ``precision``; ManifestError listing what the package has."""
        for g in self.graphs:
            if g.role == role and g.precision == precision:
                return g
        have = ", ".join(f"{g.role}/{g.precision}" for g in self.graphs) or "none"
        raise ManifestError(f"package has no {precision} {role} graph (it has: {have}); "
                            f"re-export with the precision you need")

    def engine(self, role: str) -> EngineInfo:
        """The TensorRT plan of ``role``; ManifestError when the package has none."""
        for e in self.engines:
            if e.role == role:
                return e
        raise ManifestError(f"package has no TensorRT plan for {role}; build one with "
                            f"`lipx export CHECKPOINT -o DIR --engine trt`")

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version,
            "task_spec": self.spec.to_dict(),
            "model_name": self.model_name,
            "preset": self.preset,
            "lipx_version": self.lipx_version,
            "checkpoint_sha256": self.checkpoint_sha256,
            "created": self.created,
            "preprocessing": {
                "video": self.video.to_dict(),
                "audio": self.audio.to_dict() if self.audio else None,
            },
            "vocabulary": list(self.vocabulary) if self.vocabulary is not None else None,
            "schedule": self.schedule.to_dict(),
            "graphs": [g.to_dict() for g in self.graphs],
            "engines": [e.to_dict() for e in self.engines],
            "parity": [p.to_dict() for p in self.parity],
        }

    @classmethod
    def from_dict(cls, d: Any) -> Manifest:
        """Parse a manifest dict; ManifestError for another schema version or a malformed one."""
        if not isinstance(d, dict):
            raise ManifestError("manifest: expected a JSON object at the top level")
        version = d.get("schema_version")
        if version != SCHEMA_VERSION:
            newer = isinstance(version, int) and version > SCHEMA_VERSION
            fix = "upgrade lipx" if newer else "re-export the package with this lipx"
            raise ManifestError(f"manifest schema version {version!r} is not supported "
                                f"(this lipx reads {SCHEMA_VERSION}); {fix}")
        f = _fields(cls, {**d, "video": None, "audio": None, "spec": None},  # nested below
                    "manifest")
        pre = d.get("preprocessing")
        if not isinstance(pre, dict) or not isinstance(pre.get("video"), dict):
            raise ManifestError("manifest: preprocessing.video is missing; re-export the package")
        try:
            video = VideoSpec.from_dict(pre["video"])
            audio = AudioSpec.from_dict(pre["audio"]) if pre.get("audio") else None
        except TypeError as e:
            raise ManifestError(f"manifest: malformed preprocessing ({e})") from e
        vocab = f.get("vocabulary")
        return cls(
            **{**f, "video": video, "audio": audio, "spec": TaskSpec.from_dict(d.get("task_spec")),
               "schedule": Schedule.from_dict(f["schedule"]),
               "vocabulary": tuple(vocab) if vocab is not None else None,
               "graphs": tuple(GraphInfo.from_dict(g, f"graphs[{i}]")
                               for i, g in enumerate(f["graphs"])),
               "engines": tuple(EngineInfo.from_dict(e, f"engines[{i}]")
                                for i, e in enumerate(f.get("engines", ()))),
               "parity": tuple(ParityRecord.from_dict(p, f"parity[{i}]")
                               for i, p in enumerate(f.get("parity", ())))},
        )

    @classmethod
    def read(cls, path: str | Path) -> Manifest:
        """Read ``path`` (a package directory or its manifest.json)."""
        path = Path(path)
        file = path / MANIFEST_NAME if path.is_dir() else path
        if not file.is_file():
            raise ManifestError(f"{file} not found: {path} is not a lipx model package "
                                f"(make one with `lipx export CHECKPOINT -o DIR`)")
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ManifestError(f"{file} is not valid JSON ({e}); re-export the package") from e
        return cls.from_dict(data)

    def write(self, directory: str | Path) -> Path:
        """Write ``manifest.json`` into ``directory`` atomically. Returns its path."""
        directory = Path(directory)
        text = json.dumps(self.to_dict(), indent=2) + "\n"
        return atomic_write(directory / MANIFEST_NAME,
                            lambda tmp: tmp.write_text(text, encoding="utf-8"))


def summarize(manifest: Manifest) -> dict[str, Any]:
    """What ``lipx info`` shows about a package: one entry per row of its table."""
    spec, m = manifest.spec, manifest
    parity = {f"{r.artifact} vs {r.reference}": ("passed" if r.passed else f"FAILED: {r.problem}")
              for r in m.parity}
    return {
        "task": m.task, "model": m.model_name, "preset": m.preset or "custom",
        "lipx version": m.lipx_version, "schema version": m.schema_version, "created": m.created,
        "schedule": {"window": m.schedule.window, "stride": m.schedule.stride,
                     "context": spec.context, "min frames": spec.min_frames},
        "head output": spec.head_output,
        "tolerances": {p: ", ".join(f"{k} {v:g}" for k, v in t.to_dict().items() if v is not None)
                       for p, t in spec.tolerances.items()},
        "stream defaults": ", ".join(f"{k} {v:g}" for k, v in spec.head_options().items()),
        "vocabulary": (f"{len(m.vocabulary)} classes" + (
            f" (the last, {NO_WORD}: a model for streams)" if m.vocabulary[-1] == NO_WORD
            else "") if m.vocabulary else "none"),
        "graphs": {g.file: f"{g.role} {g.precision}, opset {g.opset}" for g in m.graphs},
        "plans": {e.file: _plan_summary(e) for e in m.engines},
        "parity": parity,
    }


def _plan_summary(e: EngineInfo) -> str:
    where = (f"{e.gpu_name} (sm {e.compute_capability})" if e.gpu_name
             else f"sm {', '.join(e.targets)}")
    return (f"{e.role} {e.precision}, {e.target.label}, {where}, {e.plan_bytes / 1e6:.1f} MB, "
            f"built in {e.build_s:.1f} s")


def replace(manifest: Manifest, **changes: Any) -> Manifest:
    """A copy of ``manifest`` with ``changes`` (``dataclasses.replace``, for readability)."""
    return dataclasses.replace(manifest, **changes)


__all__ = [
    "FLAVOUR_LABELS", "MANIFEST_NAME", "ROLES", "SCHEMA_VERSION", "EngineInfo", "GraphInfo",
    "Manifest", "OutputParity", "ParityRecord", "PlanTarget", "ShapeRange", "TensorInfo",
    "package_file", "replace", "summarize",
]
