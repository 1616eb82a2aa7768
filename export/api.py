"""``lipx export``: a checkpoint -> a model package (graphs, engines, parity, manifest).

    from lipx.export.api import ExportOptions, export_package
    result = export_package("vca.pt", ExportOptions(output=Path("pkg"), engine="trt"))

The package is built in a hidden folder next to the output and renamed into place only when
everything (export, checks, parity, engines, Triton repository) succeeded, so a failed or
interrupted export leaves nothing half-written.

TensorRT: with ``engine="trt"`` the plans are strongly typed, an FP16 plan built from the fp16
ONNX graph, whose parity onnxruntime measures against PyTorch before the plans are built. Either
flavour builds them (``trt_flavour``): TensorRT-RTX without a GPU, full TensorRT on the GPU they
are for. The plans' own parity is measured where they can run (a GPU); elsewhere the export says
so and records none. Without any TensorRT flavour (or full TensorRT without a GPU) the ONNX
package is still written completely (as ``engine="onnx"`` would, without the Triton repository,
which would need the plans), then BackendUnavailableError says the plans were not built and
where the ONNX package is; the CLI prints that line and exits 1.

With ``faces=True`` the package also carries the face models ``--crop auto`` tracks with
(:mod:`lipx.export.faces`), and with ``engine="trt"`` their float32 plans.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from lipx import __version__
from lipx.audio import AudioSpec
from lipx.errors import BackendUnavailableError, InputError, ManifestError, check_tolerances
from lipx.export.build import BUILDERS
from lipx.export.faces import PRECISION as FACE_PRECISION
from lipx.export.faces import copy_face_graphs
from lipx.export.onnx_export import OnnxFromTorch, export_graphs
from lipx.export.parity import check_artifacts
from lipx.export.spec import ExportSpec, export_spec
from lipx.files import file_sha256
from lipx.package import FACE_ROLES, EngineInfo, GraphInfo, Manifest, Package
from lipx.parity import validate_parity
from lipx.runtime.backends import BACKENDS, FORMATS, get_backend
from lipx.runtime.package_runners import BuildOptions, PackageArtifacts, open_runners
from lipx.tasks import Schedule, Tolerance
from lipx.video import VideoSpec

log = logging.getLogger(__name__)

OPSETS = range(18, 24)
"""Opsets the dynamo exporter is used with here (it needs >= 18)."""

Progress = Callable[[str], None]


EXAMPLE_FRAMES = 8
"""Most frames of the whole-model and backend export examples (more for a model whose minimum
is higher: an example must exceed it). The exporter traces recurrent
layers one time step at a time, so its time grows with the example's length (VCA-GAN small
backend: 16.7 s at 40 frames); the graph stays dynamic in time, and parity is then measured at
the window's length and others."""


@dataclass(frozen=True)
class ExportOptions:
    """Options of one export; checked once, here. Incompatible combinations are errors."""

    output: Path
    """Package directory to write (its parent must exist and be writable)."""
    engine: str = "onnx"
    """``onnx`` (graphs for onnxruntime) or ``trt`` (plus TensorRT plans)."""
    precision: str | None = None
    """Per engine: onnx fp32 (default) / fp16 / int8; trt fp16 (default) / fp32."""
    format: str = "package"
    """``package``, or ``triton`` to add a Triton model repository in ``triton/``."""
    window: int | None = None
    """Frames per backend window (None: the task spec's default, ``lipx.tasks.SPECS``)."""
    stride: int | None = None
    """Frames between backend runs (None: the task spec's, window / ``stride_fraction``)."""
    max_batch: int = 8
    """Largest batch the TensorRT profiles and Triton accept."""
    max_frames: int | None = None
    """Longest clip for the whole-model TensorRT profile (None: 3 x window)."""
    opset: int = 18
    workspace_mb: int = 2048
    """TensorRT builder workspace limit."""
    parity: bool = True
    """Measure parity against PyTorch (an out-of-tolerance artifact fails the export)."""
    atol: float | None = None
    """Absolute parity tolerance of the ``precision`` artifacts (None: the task's default)."""
    rtol: float | None = None
    """Their tolerance relative to max|reference| (None: the task's default)."""
    min_top1: float | None = None
    """Their least top-1 agreement, lipreading (None: the task's default)."""
    force: bool = False
    """Replace an existing non-empty output directory."""
    cache_dir: Path | None = None
    """TensorRT timing/plan caches (None: ``~/.cache/lipx/tensorrt``)."""
    trt_flavour: str = "auto"
    """``auto`` (full TensorRT where it and a GPU are, else TensorRT-RTX), ``tensorrt`` or
    ``rtx``."""
    trt_targets: tuple[str, ...] = ()
    """TensorRT-RTX compute capabilities to build for, e.g. ``("8.9",)`` (empty: its portable
    set 8.0, 8.6, 8.9, 12.0, 12.1)."""
    profiles: tuple[str, ...] = ()
    """``[ROLE.]DIM=MIN:OPT:MAX`` ranges overriding the TensorRT profiles derived from the
    window, stride and max batch (``frames=5:29:87``, ``frontend.batch=1:1:1``)."""
    triton_instances: int = 1
    """Instances of each Triton model."""
    triton_kind: str | None = None
    """Triton instance kind ``gpu``/``cpu`` (None: cpu for int8, else gpu)."""
    jobs: int | None = None
    """Exporter processes run at once (None: every graph at once). An export process spends
    most of its time tracing in one thread, so even on 2 cores three at once beat two (small
    VCA-GAN: 16.5 s against 23.8 s)."""
    faces: bool = False
    """Carry the face models ``--crop auto`` tracks with (:mod:`lipx.export.faces`), with
    ``engine="trt"`` as float32 TensorRT plans too, so a GPU box tracks faces on its GPU."""

    def __post_init__(self) -> None:
        backend = get_backend(self.engine)
        if self.precision is not None and self.precision not in backend.precisions:
            raise InputError(f"--precision {self.precision} is not available with --engine "
                             f"{self.engine} (choose from {', '.join(backend.precisions)})")
        if self.format not in FORMATS:
            raise InputError(f"unknown --format {self.format!r} (choose from {', '.join(FORMATS)})")
        self._check_numbers()
        self._check_tolerances()
        self._check_triton()
        self._check_trt()

    def _check_trt(self) -> None:
        given = [n for n, v in (("--trt-flavour", self.trt_flavour != "auto"),
                                ("--trt-targets", self.trt_targets), ("--profile", self.profiles))
                 if v]
        if given and not BACKENDS[self.engine].plans:
            raise InputError(f"{', '.join(given)} need --engine trt")
        from lipx.export.trt import BuildSettings, parse_dim_range

        BuildSettings(flavour=self.trt_flavour, targets=self.trt_targets)  # validates both
        for text in self.profiles:
            parse_dim_range(text)

    @property
    def profile_ranges(self) -> tuple[tuple[str, tuple[int, int, int]], ...]:
        """:attr:`profiles` parsed."""
        from lipx.export.trt import parse_dim_range

        return tuple(parse_dim_range(p) for p in self.profiles)

    def _check_numbers(self) -> None:
        def positive(name: str, value: int | None, least: int = 1) -> None:
            if value is not None and value < least:
                raise InputError(f"--{name.replace('_', '-')} must be >= {least}, got {value}")

        Schedule.check(self.window, self.stride)  # fail before loading the checkpoint
        positive("max_batch", self.max_batch)
        positive("max_frames", self.max_frames)
        positive("workspace_mb", self.workspace_mb, 64)
        positive("jobs", self.jobs)
        if self.window and self.max_frames and self.max_frames < self.window:
            raise InputError(f"max_frames {self.max_frames} is below --window {self.window}")
        if self.opset not in OPSETS:
            raise InputError(f"--opset {self.opset} is not supported (use {OPSETS.start}.."
                             f"{OPSETS.stop - 1}; the dynamo exporter needs >= 18)")

    def _overrides(self) -> dict[str, float]:
        """The tolerance fields given (not None), by Tolerance field name."""
        given = {"atol": self.atol, "rtol": self.rtol, "min_top1": self.min_top1}
        return {k: v for k, v in given.items() if v is not None}

    def _check_tolerances(self) -> None:
        given = self._overrides()
        if given and not self.parity:
            names = " --".join(k.replace("_", "-") for k in given)
            raise InputError(f"--{names} has no meaning with --no-parity")
        check_tolerances(self.min_top1, atol=self.atol, rtol=self.rtol)

    def tolerance(self, spec: ExportSpec, precision: str) -> Tolerance:
        """The parity gate of ``precision``'s artifacts: the task's, with this export's overrides
        applied to the artifacts of the exported precision only (an int8 export still checks
        its float32 graphs at float32 tolerance)."""
        overrides = self._overrides() if precision == self.resolved_precision else {}
        return spec.task_spec.tolerance(precision, **overrides)

    def _check_triton(self) -> None:
        if self.format != "triton":
            if self.triton_instances != 1 or self.triton_kind is not None:
                raise InputError("Triton options need --format triton")
            return
        if self.triton_kind not in (None, "gpu", "cpu"):
            raise InputError(f"triton_kind must be 'gpu' or 'cpu', got {self.triton_kind!r}")
        positive = self.triton_instances >= 1
        if not positive:
            raise InputError(f"triton_instances must be >= 1, got {self.triton_instances}")
        if BACKENDS[self.engine].needs_gpu and self.triton_kind == "cpu":
            raise InputError("TensorRT plans run on GPUs only: "
                             "use triton_kind 'gpu' or --engine onnx")
        if self.precision == "int8" and self.triton_kind == "gpu":
            raise InputError("int8 dynamic quantisation runs on CPUs: use triton_kind 'cpu' or "
                             "--precision fp16 for GPUs")

    @property
    def resolved_precision(self) -> str:
        """The precision, or the engine's default."""
        return self.precision or BACKENDS[self.engine].default_precision


@dataclass(frozen=True)
class ExportSource:
    """A model to export and the facts the manifest needs about it."""

    model: nn.Module
    task: str
    model_name: str
    preset: str | None = None
    checkpoint_sha256: str = ""
    video: VideoSpec = dataclasses.field(default_factory=VideoSpec)
    audio: AudioSpec | None = None
    vocabulary: tuple[str, ...] | None = None


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_package` wrote."""

    path: Path
    manifest: Manifest
    seconds: float

    def summary(self) -> str:
        m = self.manifest
        parity = "parity not checked"
        if m.parity:
            worst = max((o.max_abs for r in m.parity for o in r.outputs), default=0.0)
            parity = f"parity passed on {len(m.parity)} checks (worst max abs {worst:.1e})"
        return (f"{m.task} package {self.path}: {len(m.graphs)} graphs, {len(m.engines)} "
                f"plans; {parity}")


@dataclass(frozen=True)
class _Plan:
    """What this export makes: the schedule, the longest clip, the precision."""

    schedule: Schedule
    max_frames: int
    precision: str

    @property
    def window(self) -> int:
        return self.schedule.window

    @property
    def stride(self) -> int:
        return self.schedule.stride


def export_package(checkpoint: str | Path, opts: ExportOptions,
                   progress: Progress | None = None) -> ExportResult:
    """Export a lipx checkpoint to the package ``opts.output``.

    Raises:
        InputError: unwritable or occupied output, bad options for this model, bad checkpoint.
        ParityError: an artifact differs from PyTorch beyond tolerance (nothing is written).
        BackendUnavailableError: ``--engine trt`` without TensorRT or a GPU (after writing the
            ONNX package).
    """
    check_output(Path(opts.output), opts.force)
    return export_model(load_source(checkpoint), opts, progress)


def load_source(checkpoint: str | Path) -> ExportSource:
    """Read a checkpoint into an :class:`ExportSource` (model in eval mode)."""
    from lipx.models.checkpoint import load_checkpoint, model_from_checkpoint

    ckpt = load_checkpoint(checkpoint)
    return ExportSource(
        model=model_from_checkpoint(ckpt), task=ckpt.task,
        model_name=str(ckpt.meta.get("model_name") or Path(checkpoint).stem),
        preset=ckpt.preset, checkpoint_sha256=file_sha256(Path(checkpoint)), video=ckpt.video,
        audio=ckpt.audio, vocabulary=tuple(ckpt.vocabulary) if ckpt.vocabulary else None,
    )


def export_model(source: ExportSource, opts: ExportOptions,
                 progress: Progress | None = None) -> ExportResult:
    """Export ``source.model`` (see :func:`export_package`)."""
    started = time.perf_counter()
    say = progress or (lambda message: None)
    spec = export_spec(source.task, source.model, source.vocabulary)
    sched = resolve_schedule(spec, opts)
    out = check_output(Path(opts.output), opts.force)
    try:
        work = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    except OSError as e:
        raise InputError(f"cannot write into {out.parent}: {e.strerror}") from e
    missing_trt: BackendUnavailableError | None = None
    try:
        manifest = _onnx_package(source, spec, sched, opts, work, say)
        if opts.faces:
            say(f"adding the face models {', '.join(FACE_ROLES)} (--crop auto)")
            manifest = dataclasses.replace(
                manifest, graphs=(*manifest.graphs, *copy_face_graphs(work)))
        if BACKENDS[opts.engine].plans:
            try:
                manifest = _add_engines(manifest, source, spec, sched, opts, work, say)
            except BackendUnavailableError as e:
                missing_trt = e
        if opts.format == "triton" and missing_trt is None:
            _add_triton(manifest, sched, opts, work, say)
        manifest.write(work)
        _move_into_place(work, out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    if missing_trt is not None:
        raise BackendUnavailableError(f"TensorRT plans not built: {missing_trt}. The ONNX "
                                      f"package was written to {out}")
    return ExportResult(out, manifest, time.perf_counter() - started)


def resolve_schedule(spec: ExportSpec, opts: ExportOptions) -> _Plan:
    """Window, stride, longest clip and precision for this model.

    Raises InputError when they do not fit.
    """
    schedule = spec.task_spec.schedule(opts.window, opts.stride)
    max_frames = opts.max_frames or 3 * schedule.window
    if max_frames < schedule.window:
        raise InputError(f"max_frames {max_frames} is below the window ({schedule.window} frames)")
    return _Plan(schedule, max_frames, opts.resolved_precision)


def check_output(out: Path, force: bool) -> Path:
    """The absolute output path; InputError when it cannot be (re)written."""
    out = out.expanduser().absolute()
    if not out.parent.is_dir():
        raise InputError(f"cannot write {out}: folder {out.parent} does not exist "
                         f"(or is not a folder); create it first")
    if not os.access(out.parent, os.W_OK | os.X_OK):
        raise InputError(f"cannot write {out}: folder {out.parent} is not writable")
    if out.exists():
        if not out.is_dir():
            raise InputError(f"{out} exists and is not a folder; choose another -o")
        if any(out.iterdir()) and not force:
            raise InputError(f"{out} exists and is not empty; choose another -o or pass --force "
                             f"to replace it")
    return out


def _onnx_package(source: ExportSource, spec: ExportSpec, sched: _Plan,
                  opts: ExportOptions, work: Path, say: Progress) -> Manifest:
    """Export, check and convert the graphs; the manifest without engines."""
    say(f"exporting {len(spec.graphs)} ONNX graphs (one process each)")
    graphs = _export_graphs(source.model, spec, sched, opts, work)
    manifest = Manifest(
        spec=spec.task_spec, model_name=source.model_name, preset=source.preset,
        lipx_version=__version__, checkpoint_sha256=source.checkpoint_sha256,
        video=source.video, audio=source.audio, vocabulary=source.vocabulary,
        schedule=sched.schedule, graphs=tuple(graphs.values()),
        created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    )
    if opts.parity:
        say("checking ONNX parity against PyTorch")
        manifest = _checked(manifest, source, spec, "onnx", "fp32", sched, opts, work)
    if not BACKENDS[opts.engine].plans and sched.precision != "fp32":
        say(f"converting graphs to {sched.precision}")
        manifest = _build(manifest, "onnx", sched.precision, spec.graphs, opts, work)
        if opts.parity:
            manifest = _checked(manifest, source, spec, "onnx", sched.precision, sched, opts,
                                work)
    return manifest


def _build(manifest: Manifest, engine: str, precision: str, roles: Iterable[str],
           opts: ExportOptions, work: Path) -> Manifest:
    """``manifest`` with ``engine``'s artifacts of the ``roles`` graphs at ``precision`` made in
    ``work`` (and the fp16 graphs a strongly typed TensorRT build made on the way)."""
    options = BuildOptions(opts.max_batch, opts.max_frames, opts.workspace_mb, opts.cache_dir,
                           opts.trt_flavour, opts.trt_targets, opts.profile_ranges)
    artifacts = PackageArtifacts(Package(work, manifest), work, options, BUILDERS)
    for role in roles:
        artifacts.get(engine, role, precision)
    made = [entry for _, entry in artifacts.built.values()]
    return dataclasses.replace(
        manifest, graphs=(*manifest.graphs, *(e for e in made if isinstance(e, GraphInfo))),
        engines=(*manifest.engines, *(e for e in made if isinstance(e, EngineInfo))))


def _export_graphs(model: nn.Module, spec: ExportSpec, sched: _Plan, opts: ExportOptions,
                   work: Path) -> dict[str, GraphInfo]:
    context = spec.task_spec.context

    def example(role: str) -> tuple[int, int]:
        # the example must exceed the declared minimum (5 frames), or the exporter fixes the dim
        frames = (max(sched.stride, 2) + 2 * context if role == "frontend"
                  else min(sched.window, max(EXAMPLE_FRAMES, spec.task_spec.min_frames + 1)))
        return (3 if frames == 2 else 2, frames)  # batch >= 2, and unlike the time dim

    loaders = {work / g.file: OnnxFromTorch(model, g, example(role), spec.dim_min(), opts.opset)
               for role, g in spec.graphs.items()}
    jobs = opts.jobs or len(loaders)
    done = export_graphs(loaders, jobs)
    return {role: dataclasses.replace(done[work / g.file], sha256=file_sha256(work / g.file))
            for role, g in spec.graphs.items()}


def _checked(manifest: Manifest, source: ExportSource, spec: ExportSpec, engine: str,
             precision: str, sched: _Plan, opts: ExportOptions, work: Path) -> Manifest:
    """``manifest`` with the parity of ``engine``'s ``precision`` artifacts against PyTorch
    (onnxruntime CPU for graphs); raises ParityError when out of tolerance."""
    roles = tuple(spec.graphs)
    runners = open_runners(Package(work, manifest), roles, engine, precision=precision)
    reference = {g.role: g for g in manifest.graphs if g.precision == "fp32"}
    result = check_artifacts(source.model, spec, reference, runners,
                             opts.tolerance(spec, precision), sched.window, sched.stride,
                             opts.max_batch)
    validate_parity(result)
    return dataclasses.replace(manifest, parity=(*manifest.parity, *result.records))


def _add_engines(manifest: Manifest, source: ExportSource, spec: ExportSpec, sched: _Plan,
                 opts: ExportOptions, work: Path, say: Progress) -> Manifest:
    """Build a TensorRT plan per graph (an fp16 one from the fp16 graph, whose onnxruntime parity
    is checked first), check the plans' parity where they can run, add all to the manifest."""
    if sched.precision != "fp32":
        say(f"converting graphs to {sched.precision} for the strongly typed plans")
        manifest = _build(manifest, "onnx", sched.precision, spec.graphs, opts, work)
        if opts.parity:
            say(f"checking the {sched.precision} ONNX graphs' parity against PyTorch")
            manifest = _checked(manifest, source, spec, "onnx", sched.precision, sched, opts,
                                work)
    say(f"building the TensorRT {sched.precision} plans of {', '.join(spec.graphs)}")
    manifest = _build(manifest, "trt", sched.precision, spec.graphs, opts, work)
    if opts.faces:
        say(f"building the TensorRT {FACE_PRECISION} plans of {', '.join(FACE_ROLES)}")
        manifest = _build(manifest, "trt", FACE_PRECISION, FACE_ROLES, opts, work)
    for e in manifest.engines:
        say(f"{e.file}: {e.target.label}, sm {', '.join(e.targets)}, "
            f"{e.plan_bytes / 1e6:.1f} MB, built in {e.build_s:.1f} s")
    if opts.parity:
        say("checking TensorRT parity against PyTorch")
        try:
            manifest = _checked(manifest, source, spec, "trt", sched.precision, sched, opts, work)
        except BackendUnavailableError as e:
            log.warning("TensorRT parity not measured (the plans cannot run here): %s", e)
    return manifest


def _add_triton(manifest: Manifest, sched: _Plan, opts: ExportOptions, work: Path,
                say: Progress) -> None:
    from lipx.export.triton import TritonSettings, validate_repository, write_repository

    say("writing the Triton model repository")
    kind = opts.triton_kind or ("cpu" if sched.precision == "int8" else "gpu")
    settings = TritonSettings(engine=opts.engine, precision=sched.precision,
                              max_batch=opts.max_batch, instances=opts.triton_instances,
                              kind=kind, workspace_mb=opts.workspace_mb)
    write_repository(manifest, work, work / "triton", settings)
    problems = validate_repository(work / "triton", manifest, settings)
    if problems:
        raise ManifestError(f"Triton repository does not match the manifest: {problems[0]}")


def _move_into_place(work: Path, out: Path) -> None:
    """Rename the finished package to ``out`` (replacing it; check_output allowed that)."""
    work.chmod(0o755)
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
        os.replace(work, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(work, out)
