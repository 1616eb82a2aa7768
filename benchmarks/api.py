"""``lipx bench``: every available engine x precision on the same inputs, in one table.

    from lipx.benchmarks.api import BenchOptions, bench
    from lipx.benchmarks.report import write_report

    report = bench("lip.pt", BenchOptions(engines=("torch", "onnx-cpu-fp32", "onnx-cpu-int8")))
    write_report(report, Path("results"))
    report.check_gate()  # ParityError when an engine is outside tolerance

The reference engine (float32 PyTorch, or onnxruntime CPU fp32 for a package given without its
checkpoint) always runs first, whatever ``engines`` says: parity and speed-ups are relative to it.
Nothing is written unless ``out`` is given; with a checkpoint the exported package is kept in
``out/package`` (a temporary folder otherwise), converted graphs and plans in ``out/artifacts``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lipx.benchmarks import evalset as es
from lipx.benchmarks.efficiency import Work, count_work
from lipx.benchmarks.engines import EngineSpec, engine_matrix, select, unavailable
from lipx.benchmarks.measure import Settings, measurements, run_engine
from lipx.benchmarks.peak import gemm_peak
from lipx.benchmarks.results import BenchReport, EngineRow
from lipx.benchmarks.target import Target, open_target
from lipx.benchmarks.timing import load_average, machine
from lipx.errors import InputError, check_tolerances
from lipx.tasks import Schedule

log = logging.getLogger(__name__)

Progress = Callable[[str], None]
REFERENCES = ("torch", "onnx-cpu-fp32")
"""Reference engines in order of preference."""
PARTS = ("train", "val", "test")


@dataclass(frozen=True)
class BenchOptions:
    """Options of one bench run; checked once, here."""

    engines: tuple[str, ...] = ()
    """Engine keys to run (empty: all; see :func:`engine_matrix`); the reference always runs."""
    batch_sizes: tuple[int, ...] = (1, 4, 8)
    """Whole-model batch sizes for throughput."""
    budget_s: float = 5.0
    """Seconds of timed runs per engine, split over its measurements (each gets at least
    ``min_runs`` runs, so slow models take longer)."""
    window: int | None = None
    """Frames per window (None: the package's; with a checkpoint, the export default)."""
    stride: int | None = None
    """Frames per front-end chunk and between backend runs (None: the package's)."""
    checkpoint: Path | None = None
    """The checkpoint of a package, for the PyTorch reference."""
    data: Path | None = None
    """A prepared corpus for parity on real clips (None: random inputs)."""
    split: str = ""
    """Split protocol of ``data`` (empty: the corpus default)."""
    part: str = "test"
    max_clips: int = 0
    """Clips of ``data`` to use (0: all), or random clips without data (0: 8)."""
    atol: float | None = None
    """Override of every precision's absolute tolerance (see lipx.benchmarks.parity)."""
    rtol: float | None = None
    min_top1: float | None = None
    max_stoi_drop: float | None = None
    out: Path | None = None
    """Folder for the package, artifacts and reports (created; its parent must exist)."""
    device: str = "auto"
    """Device of the PyTorch rows: auto (cuda when visible), cpu, cuda, cuda:N."""
    threads: int | None = None
    """Intra-op threads of PyTorch and onnxruntime (None: their defaults, one per core)."""
    compile_timeout_s: float = 120.0
    """Most seconds torch.compile may spend compiling before its row is skipped (0: skip)."""
    warmup: int = 3
    """Warm-up calls per measurement (more while calls keep getting faster)."""
    min_runs: int = 3
    seed: int = 0

    def __post_init__(self) -> None:
        select(engine_matrix(), self.engines)  # InputError for an unknown name
        if not self.batch_sizes or any(b < 1 for b in self.batch_sizes):
            raise InputError(f"--batch-sizes must be positive integers, got {self.batch_sizes}")
        if len(set(self.batch_sizes)) != len(self.batch_sizes):
            raise InputError(f"--batch-sizes has duplicates: {self.batch_sizes}")
        if not self.budget_s > 0:
            raise InputError(f"--budget-s must be > 0, got {self.budget_s}")
        self._check_schedule()
        self._check_data()
        self._check_tolerances()
        if self.device != "auto" and self.device != "cpu" and not self.device.startswith("cuda"):
            raise InputError(f"--device must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        if self.threads is not None and self.threads < 1:
            raise InputError(f"--threads must be >= 1, got {self.threads}")
        if self.compile_timeout_s < 0 or self.warmup < 0 or self.min_runs < 1:
            raise InputError("compile timeout and warm-up must be >= 0, min runs >= 1")

    def _check_schedule(self) -> None:
        Schedule.check(self.window, self.stride)

    def _check_data(self) -> None:
        if self.data is None and self.split:
            raise InputError("--split needs --data (a prepared corpus)")
        if self.data is not None and not Path(self.data).is_dir():
            raise InputError(f"--data {self.data} is not a folder: expected a prepared corpus "
                             f"(lipx data prepare / lipx data synth)")
        if self.part not in PARTS:
            raise InputError(f"part must be one of {', '.join(PARTS)}, got {self.part!r}")
        if self.max_clips < 0:
            raise InputError(f"--max-clips must be >= 0, got {self.max_clips}")

    def _check_tolerances(self) -> None:
        check_tolerances(self.min_top1, atol=self.atol, rtol=self.rtol,
                         max_stoi_drop=self.max_stoi_drop)

    def to_dict(self) -> dict[str, Any]:
        return {k: (str(v) if isinstance(v, Path) else v)
                for k, v in dataclasses.asdict(self).items()}


def bench(target: str | Path, opts: BenchOptions, progress: Progress | None = None) -> BenchReport:
    """Benchmark a package or checkpoint over every selected engine.

    Args:
        target: a model package folder, or a lipx checkpoint (exported first).
        opts: what to run and how.
        progress: called with a short message at each step.
    Returns:
        The report; failures of single engines are rows with their status, not exceptions.
    Raises:
        InputError / CheckpointError / ManifestError: the target, checkpoint or data is unusable.
    """
    say = progress or (lambda message: None)
    started = time.perf_counter()
    info = machine()
    with _workspace(opts.out) as (workdir, package_dir):
        tgt = open_target(Path(target), opts.checkpoint, opts.window, opts.stride,
                          max(opts.batch_sizes), workdir, package_dir, say)
        sched = tgt.schedule(opts.window, opts.stride)
        evalset = _evalset(tgt, opts)
        say(f"parity inputs: {evalset.description}")
        specs, ref_key = _plan(tgt, opts)
        work = count_work(tgt, measurements(tgt.manifest, sched, opts.batch_sizes))
        if work.flops:  # else its note is among the report's
            say(f"FLOPs per call: {_gflop(work)}")
        settings = Settings(opts.budget_s, opts.batch_sizes, opts.warmup, opts.min_runs,
                            opts.compile_timeout_s,
                            (opts.atol, opts.rtol, opts.min_top1, opts.max_stoi_drop),
                            opts.threads, work.flops)
        rows: list[EngineRow] = []
        reference = None
        with _torch_threads(opts.threads if tgt.model is not None else None):
            for spec in specs:
                outcome = run_engine(spec, tgt, sched, evalset, settings, reference,
                                     spec.key == ref_key, say)
                rows.append(outcome.row)
                if outcome.reference is not None:
                    reference = outcome.reference
                say(f"{spec.key}: {outcome.row.status}")
        say("measuring this machine's SGEMM peak (numpy float32 matmul)")
        info["gemm_peak"] = gemm_peak(opts.threads)  # after the engines: its threads idle then
        info["load_average_end"] = load_average()
        package = str(tgt.package) if opts.out or tgt.export_s is None else "(temporary)"
        settings_out = {**opts.to_dict(), "window": sched.window, "stride": sched.stride,
                        "context": tgt.manifest.spec.context, "fps": tgt.manifest.video.fps}
        return BenchReport(
            target=str(target), package=package, task=tgt.task, model=_model_name(tgt),
            reference=ref_key if reference is not None else None, inputs=evalset.description,
            has_data=evalset.has_data,
            settings=settings_out, machine=info, rows=tuple(rows),
            seconds=time.perf_counter() - started, export_s=tgt.export_s, work=work,
        )


def _gflop(work: Work) -> str:
    return ", ".join(f"{k} {v / 1e9:.3g} G" for k, v in work.flops.items())


def _evalset(tgt: Target, opts: BenchOptions) -> es.EvalSet:
    sched = tgt.schedule(opts.window, opts.stride)
    if opts.data is not None:
        return es.data_set(tgt, sched, Path(opts.data), opts.split, opts.part, opts.max_clips)
    return es.random_set(tgt, sched, opts.max_clips or es.RANDOM_CLIPS, seed=1234 + opts.seed)


def _plan(tgt: Target, opts: BenchOptions) -> tuple[list[EngineSpec], str | None]:
    """The engines to run, the reference first, and the reference's key (None if none runs)."""
    matrix = engine_matrix(_torch_device(opts.device) if tgt.model is not None else "cpu")
    chosen = select(matrix, opts.engines)
    ref = next((k for k in REFERENCES
                if unavailable(matrix[k], tgt, opts.compile_timeout_s) is None), None)
    if ref is None:
        log.warning("no reference engine can run here: parity is not measured")
        return chosen, None
    return [matrix[ref], *(s for s in chosen if s.key != ref)], ref


def _torch_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _model_name(tgt: Target) -> str:
    m = tgt.manifest
    return f"{m.model_name} ({m.preset})" if m.preset else m.model_name


@contextlib.contextmanager
def _torch_threads(threads: int | None) -> Iterator[None]:
    """PyTorch's intra-op thread count set to ``threads`` for the run, then restored."""
    if threads is None:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def _workspace(out: Path | None) -> Iterator[tuple[Path, Path]]:
    """(work folder, package folder): inside ``out``, or temporary ones removed afterwards."""
    if out is not None:
        out = Path(out).expanduser().absolute()
        if not out.parent.is_dir():
            raise InputError(f"cannot write {out}: folder {out.parent} does not exist")
        if out.exists() and not out.is_dir():
            raise InputError(f"--out {out} exists and is not a folder")
        shutil.rmtree(out / "artifacts", ignore_errors=True)  # no stale graphs from a past run
        (out / "artifacts").mkdir(parents=True)
        yield out / "artifacts", out / "package"
        return
    tmp = Path(tempfile.mkdtemp(prefix="lipx-bench-"))
    try:
        (tmp / "artifacts").mkdir()
        yield tmp / "artifacts", tmp / "package"
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
