"""The model package: a directory of graphs and engines described by ``manifest.json``.

``lipx export`` writes one package per model::

    manifest.json          this file's Manifest, schema-versioned
    model.onnx             the whole model, frames -> outputs (batch use, parity reference)
    frontend.onnx          a chunk of C+4 frames -> C per-frame features (streaming)
    backend.onnx           a window of W features -> logits, or -> mel + linear
    model.fp16.onnx ...    optional converted graphs ({role}.{precision}.onnx)
    frontend.plan ...      optional TensorRT plans (plain plans; their facts live here)
    faces/                 optional (``--faces``): the face models ``--crop auto`` tracks with
                           (face_detector.onnx, face_mesh.onnx, their licence and provenance),
                           graphs of roles face_detector and face_mesh, with plans of their own
    triton/                optional Triton Inference Server model repository

The manifest is read and written only through :class:`Manifest` (frozen, ``from_dict`` /
``to_dict``), so every reader sees the same typed view. This module imports no torch, onnx or
TensorRT: the runtime reads packages on machines that have none of them.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, TypeVar

from lipx.audio import AudioSpec
from lipx.errors import InputError, ManifestError, did_you_mean
from lipx.files import atomic_write, file_sha256
from lipx.landmarks import FRAMINGS
from lipx.tasks import MAX_FRAMES, NO_WORD, SPECS, Schedule, TaskSpec
from lipx.video import VideoSpec

log = logging.getLogger(__name__)

SCHEMA_VERSION = 3
"""2: the task spec (``task_spec``) and the window schedule (``schedule``) replace ``task`` and
``streaming``. 3: engines record their TensorRT flavour, target compute capabilities, whether
they are strongly typed, build time and plan size."""
MANIFEST_NAME = "manifest.json"
ROLES = ("model", "frontend", "backend")
"""Graph roles: the whole model and the two halves of the streaming split."""
FACE_DETECTOR, FACE_MESH = "face_detector", "face_mesh"
FACE_ROLES = (FACE_DETECTOR, FACE_MESH)
"""Roles of the face models a package may carry (``lipx export --faces``), named as in
``lipx/assets/faces/faces.json``: MediaPipe's face detector and face mesh, fixed-shape float32
graphs that ``--crop auto``'s tracker runs on the stream's engine."""
FACES_DIR = "faces"
"""The package folder of the face graphs, their licence and provenance."""

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


# --- bounds on the numbers a manifest gives ------------------------------------------------
# A package is untrusted input: each number is checked against its bound when the manifest is
# read, before anything is sized from it (a window of 10**9 frames would allocate 477 GiB).

MAX_CONTEXT = 64
"""Most frames of front-end context on each side of a chunk (the models use 2)."""
MAX_IMAGE_SIDE = 8192
"""Largest side of the face frame, in pixels (the mouth box lies within it)."""
MAX_CROP_SIDE = 1024
"""Largest side of the mouth crop the model sees (the models use 88 to 112)."""
MAX_SAMPLES = 1 << 16
"""Most samples of an FFT, analysis window or hop."""
MAX_MELS = 1024
"""Most mel bins (the models use 80)."""
MAX_VOCABULARY = 100_000
"""Most classes of a lipreading model (LRW has 500 words)."""
MAX_DIM = 1 << 16
"""Largest fixed size of one tensor axis, in graphs and TensorRT profiles."""
MAX_ELEMENTS = 1 << 28
"""Most elements of one tensor (1 GiB of float32): the fixed axes of a graph's tensor, or a
TensorRT profile's largest shape, which a runner allocates."""
MAX_GL_ITERS = 1000
"""Most Griffin-Lim iterations per window (offline uses 60)."""


@dataclass(frozen=True)
class Bound:
    """The values one number of a manifest may take."""

    low: float
    high: float
    integer: bool = True
    optional: bool = False
    """None is allowed too (an optional number)."""
    named: bool = False
    """A string is allowed too (a tensor axis's symbolic name)."""

    def check(self, value: Any, where: str) -> None:
        """ManifestError naming ``where``, ``value`` and the range unless ``value`` is in it."""
        if value is None and self.optional or isinstance(value, str) and self.named:
            return
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        fits = number and self.low <= value <= self.high  # NaN compares false
        if fits and self.integer:
            fits = float(value).is_integer()
        if not fits:
            kind = "an integer" if self.integer else "a number"
            shown = repr(value) if len(repr(value)) <= 40 else f"{repr(value)[:40]}..."
            raise ManifestError(f"manifest: {where} is {shown}; expected {kind} in "
                                f"{_show(self.low)}..{_show(self.high)} (refusing to load the "
                                f"package)")


def _show(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


_FRAMES = Bound(1, MAX_FRAMES)
_SOME_FRAMES = Bound(0, MAX_FRAMES)
_SHARE = Bound(0, 1, integer=False)
_AXIS = Bound(1, MAX_DIM, named=True)
_DIM = Bound(1, MAX_DIM)
BOUNDS: dict[str, Bound] = {
    "schedule.window": _FRAMES,
    "schedule.stride": _FRAMES,
    "task_spec.default_window": _FRAMES,
    "task_spec.stride_fraction": _FRAMES,
    "task_spec.min_frames": _FRAMES,
    "task_spec.context": Bound(0, MAX_CONTEXT),
    "task_spec.tolerances.*.atol": Bound(0, 1e6, integer=False),
    "task_spec.tolerances.*.rtol": Bound(0, 1e6, integer=False),
    "task_spec.tolerances.*.min_top1": Bound(0, 1, integer=False, optional=True),
    "task_spec.tolerances.*.max_stoi_drop": Bound(0, 2, integer=False, optional=True),
    "task_spec.stream_defaults.threshold": _SHARE,
    "task_spec.stream_defaults.agreement": _FRAMES,
    "task_spec.stream_defaults.min_gap": Bound(0, 60, integer=False),
    "task_spec.stream_defaults.pad": _SOME_FRAMES,
    "task_spec.stream_defaults.lookahead": _SOME_FRAMES,
    "task_spec.stream_defaults.crossfade": _SOME_FRAMES,
    "task_spec.stream_defaults.gl_iters": Bound(0, MAX_GL_ITERS),
    "preprocessing.video.fps": Bound(1, 1000, integer=False),
    "preprocessing.video.face_size": Bound(1, MAX_IMAGE_SIDE),
    "preprocessing.video.box[]": Bound(0, MAX_IMAGE_SIDE),
    "preprocessing.video.size": Bound(1, MAX_CROP_SIDE),
    "preprocessing.video.mean": _SHARE,
    "preprocessing.video.std": Bound(1e-6, 1e3, integer=False),
    "preprocessing.audio.sample_rate": Bound(1000, 384_000),
    "preprocessing.audio.n_fft": Bound(2, MAX_SAMPLES),
    "preprocessing.audio.hop": Bound(1, MAX_SAMPLES),
    "preprocessing.audio.win": Bound(1, MAX_SAMPLES),
    "preprocessing.audio.n_mels": Bound(1, MAX_MELS),
    "preprocessing.audio.fmin": Bound(0, 192_000, integer=False),
    "preprocessing.audio.fmax": Bound(0, 192_000, integer=False),
    "preprocessing.audio.preemphasis": _SHARE,
    "preprocessing.audio.mel_frames_per_video_frame": Bound(1, 64),
    "graphs[].opset": Bound(1, 1000),
    "graphs[].inputs[].shape[]": _AXIS,
    "graphs[].outputs[].shape[]": _AXIS,
    "engines[].profiles[][].min[]": _DIM,
    "engines[].profiles[][].opt[]": _DIM,
    "engines[].profiles[][].max[]": _DIM,
    "engines[].workspace_mb": Bound(0, 1 << 20),
    "engines[].build_s": Bound(0, 1e7, integer=False),
    "engines[].plan_bytes": Bound(0, 1 << 40),
}
"""Manifest path -> the bound of the numbers there (``[]``: each item of a list, ``*``: each
value of an object). The parity records are reports, read by nothing that sizes or runs."""


def _find(node: Any, path: str, where: str = "") -> Iterator[tuple[str, Any]]:
    """(location, value) of each value at ``path`` (a :data:`BOUNDS` key) in ``node``; parts
    that are absent or of another type are skipped (the parsers report those)."""
    if not path:
        yield where, node
        return
    head, _, rest = path.partition(".")
    key, brackets = head.split("[", 1)[0], head.count("[]")
    if key == "*":
        items = node.items() if isinstance(node, dict) else ()
        for k, v in items:
            yield from _find(v, rest, f"{where}.{k}")
        return
    if key:
        if not isinstance(node, dict) or key not in node:
            return
        node, where = node[key], f"{where}.{key}" if where else key
    yield from _items(node, brackets, rest, where)


def _items(node: Any, brackets: int, rest: str, where: str) -> Iterator[tuple[str, Any]]:
    if not brackets:
        yield from _find(node, rest, where)
    elif isinstance(node, list):
        for i, item in enumerate(node):
            yield from _items(item, brackets - 1, rest, f"{where}[{i}]")


def _check_numbers(d: dict[str, Any]) -> None:
    """ManifestError for the first number of ``d`` outside its :data:`BOUNDS`, a vocabulary
    longer than :data:`MAX_VOCABULARY`, or a tensor over :data:`MAX_ELEMENTS`."""
    for path, bound in BOUNDS.items():
        for where, value in _find(d, path):
            bound.check(value, where)
    vocabulary = d.get("vocabulary")
    if isinstance(vocabulary, list):
        Bound(1, MAX_VOCABULARY).check(len(vocabulary), "the length of vocabulary")
        if not all(isinstance(w, str) for w in vocabulary):
            raise ManifestError("manifest: vocabulary must be a list of strings (refusing to "
                                "load the package)")
    shapes = [*_find(d, "graphs[].inputs[].shape"), *_find(d, "graphs[].outputs[].shape"),
              *_find(d, "engines[].profiles[][].max")]
    for where, shape in shapes:
        if isinstance(shape, list):
            fixed = [n for n in shape if not isinstance(n, str)]
            Bound(0, MAX_ELEMENTS).check(math.prod(fixed), f"the element count of {where}")


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
        if self.spec.task not in SPECS:
            raise ManifestError(
                f"manifest: unknown task {self.spec.task!r}{did_you_mean(self.spec.task, SPECS)}")

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
        _check_numbers(d)
        f = _fields(cls, {**d, "video": None, "audio": None, "spec": None},  # nested below
                    "manifest")
        pre = d.get("preprocessing")
        if not isinstance(pre, dict) or not isinstance(pre.get("video"), dict):
            raise ManifestError("manifest: preprocessing.video is missing; re-export the package")
        try:
            video = VideoSpec.from_dict(pre["video"])
            audio = AudioSpec.from_dict(pre["audio"]) if pre.get("audio") else None
        except (TypeError, KeyError) as e:
            raise ManifestError(f"manifest: malformed preprocessing ({e})") from e
        if video.framing not in FRAMINGS:
            raise ManifestError(f"manifest: unknown preprocessing.video.framing "
                                f"{video.framing!r}; this lipx knows {', '.join(FRAMINGS)}")
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


@dataclass(frozen=True)
class Package:
    """A model package: its folder and its manifest, read and checked once.

        package = Package.open("pkg")          # a folder, or its manifest.json
        path = package.file(package.manifest.graph("frontend"))   # checked (sha256) first

    Every part of lipx that reads a package takes this one value, never a (folder, manifest)
    pair that could disagree.
    """

    dir: Path
    """The package folder."""
    manifest: Manifest

    @classmethod
    def open(cls, path: str | Path | Package) -> Package:
        """The package at ``path`` (a folder or its manifest.json; a Package is returned as is).

        Raises:
            ManifestError: not a package, or its manifest is malformed.
        """
        if isinstance(path, Package):
            return path
        path = Path(path)
        root = path.parent if path.name == MANIFEST_NAME and path.is_file() else path
        return cls(root, Manifest.read(root))

    @property
    def task(self) -> str:
        return self.manifest.task

    def file(self, entry: GraphInfo | EngineInfo) -> Path:
        """The checked path of a graph or plan the manifest names (see :func:`package_file`)."""
        return package_file(self.dir, entry)


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
        "face framing": m.video.framing,
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
    "FACES_DIR", "FACE_DETECTOR", "FACE_MESH", "FACE_ROLES", "FLAVOUR_LABELS", "MANIFEST_NAME",
    "ROLES", "SCHEMA_VERSION", "EngineInfo", "GraphInfo",
    "Manifest", "OutputParity", "Package", "ParityRecord", "PlanTarget", "ShapeRange", "TensorInfo",
    "package_file", "replace", "summarize",
]
