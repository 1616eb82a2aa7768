"""Parity: run runners on the same feeds and compare every output with a reference.

:func:`compare` sits on the Runner interface (like Polygraphy's Comparator) and returns a
:class:`Comparison` of :class:`~lipx.package.ParityRecord` rows that go straight into the
manifest; :func:`validate_parity` turns a failed comparison into ``ShapeMismatch`` or
``ToleranceExceeded``. The exporter (:func:`lipx.export.parity.check_artifacts`) and ``lipx
bench`` both use it. Numpy only: a bench of a package runs without torch. It is part of the
ground, below the runtime: it asks of an engine only what :class:`ParityRunner` says, which
:class:`lipx.runtime.runner.Runner` (and the PyTorch reference runner) provide.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Protocol

import numpy as np

from lipx.errors import ShapeMismatch, ToleranceExceeded
from lipx.package import OutputParity, ParityRecord
from lipx.tasks import Tolerance


class ParityRunner(Protocol):
    """What :func:`compare` needs of an engine (a :class:`lipx.runtime.runner.Runner` is one):
    a context manager that activates it, and inference on a dict of arrays."""

    @property
    def is_active(self) -> bool: ...

    def __enter__(self) -> Any: ...

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None, /) -> None: ...

    def infer(self, feeds: Mapping[str, np.ndarray], /) -> dict[str, np.ndarray]: ...


@dataclass(frozen=True)
class Comparison:
    """The parity records of one :func:`compare` call."""

    records: tuple[ParityRecord, ...]

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.records)

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "records": [r.to_dict() for r in self.records]}

    def report(self) -> str:
        """One line per output: artifact, output, max abs, max rel, verdict."""
        lines = []
        for r in self.records:
            top1 = f" top-1 {r.top1_agreement:.3f}" if r.top1_agreement is not None else ""
            for o in r.outputs:
                verdict = "ok" if o.passed else "FAIL"
                lines.append(f"{r.artifact} vs {r.reference} {o.name}: max abs {o.max_abs:.2e} "
                             f"max rel {o.max_rel:.2e} {verdict}{top1}")
            if r.problem:
                lines.append(f"{r.artifact}: {r.problem}")
        return "\n".join(lines)


@dataclass
class _Stats:
    max_abs: float = 0.0
    max_ref: float = 0.0
    sum_abs: float = 0.0
    count: int = 0
    passed: bool = True


@dataclass
class _Tally:
    outputs: dict[str, _Stats] = field(default_factory=dict)
    agree: int = 0
    rows: int = 0
    problems: list[str] = field(default_factory=list)


def compare(
    runners: Mapping[str, ParityRunner], feeds: Sequence[Mapping[str, np.ndarray]], reference: str,
    tolerance: Tolerance, top1_output: str | None = None,
) -> Comparison:
    """Run every runner on every feed and compare each with ``runners[reference]``.

    Args:
        runners: name -> runner; inactive ones are activated for the call and deactivated after.
        feeds: input sets, e.g. ``{"video": (B, 1, T, 112, 112) float32}``.
        reference: key of the reference runner (usually the float32 PyTorch model).
        tolerance: an output passes when ``max_abs <= atol + rtol * max|reference|`` in every
            case (and top-1 agreement >= ``min_top1`` when set).
        top1_output: output whose arg-max over the last axis is compared (classifiers); see
            :func:`top1_agreements` for ties.
    Returns:
        One ParityRecord per non-reference runner, statistics over all feeds.
    """
    tallies = {name: _Tally() for name in runners if name != reference}
    cases: list[tuple[int, int]] = []
    with contextlib.ExitStack() as stack:
        for r in runners.values():
            if not r.is_active:
                stack.enter_context(r)
        for feed in feeds:
            cases.append(_case(feed))
            expected = runners[reference].infer(feed)
            for name, tally in tallies.items():
                _tally(tally, expected, runners[name].infer(feed), tolerance, top1_output,
                       cases[-1])
        engines = {name: _engine(r) for name, r in runners.items()}
    records = tuple(
        _record(name, reference, engines[name], cases, tally, tolerance)
        for name, tally in tallies.items()
    )
    return Comparison(records)


def validate_parity(comparison: Comparison) -> None:
    """Raise ShapeMismatch (shapes or names differ) or ToleranceExceeded (values) on failure."""
    failed = [r for r in comparison.records if not r.passed]
    if not failed:
        return
    message = "parity check failed: " + "; ".join(f"{r.artifact}: {r.problem}" for r in failed)
    if any("shape" in r.problem or "missing output" in r.problem for r in failed):
        raise ShapeMismatch(message)
    raise ToleranceExceeded(message)


def _tally(tally: _Tally, expected: dict[str, np.ndarray], got: dict[str, np.ndarray],
           tol: Tolerance, top1_output: str | None, case: tuple[int, int]) -> None:
    for name, ref in expected.items():
        if name not in got:
            tally.problems.append(f"missing output {name!r}")
            continue
        out = got[name]
        if out.shape != ref.shape:
            tally.problems.append(f"output {name!r} has shape {out.shape}, reference "
                                  f"{ref.shape} at (batch, frames) {case}")
            continue
        err = np.abs(out.astype(np.float64) - ref.astype(np.float64))
        s = tally.outputs.setdefault(name, _Stats())
        max_abs, max_ref = float(err.max(initial=0.0)), float(np.abs(ref).max(initial=0.0))
        s.max_abs, s.max_ref = max(s.max_abs, max_abs), max(s.max_ref, max_ref)
        s.sum_abs, s.count = s.sum_abs + float(err.sum()), s.count + err.size
        s.passed &= bool(np.isfinite(max_abs)) and max_abs <= tol.atol + tol.rtol * max_ref
        if name == top1_output:
            tally.agree += top1_agreements(ref, out, tol.atol + tol.rtol * max_ref)
            tally.rows += int(np.prod(ref.shape[:-1]))


def top1_agreements(ref: np.ndarray, out: np.ndarray, tie: float) -> int:
    """Rows whose arg-max (last axis) agrees with the reference's.

    A different pick counts as agreeing when the reference scores it within ``tie`` of its own
    top score: the two classes are tied at the output's tolerance (untrained or uncertain rows),
    and calling that a disagreement would make the check a coin toss.
    """
    picked = np.take_along_axis(ref, out.argmax(-1)[..., None], axis=-1)[..., 0]
    return int((picked >= ref.max(-1) - tie).sum())


def _record(name: str, reference: str, engine: str, cases: list[tuple[int, int]], t: _Tally,
            tol: Tolerance) -> ParityRecord:
    outputs = tuple(
        OutputParity(name=o, max_abs=s.max_abs, max_rel=s.max_abs / s.max_ref if s.max_ref else
                     s.max_abs, mean_abs=s.sum_abs / max(s.count, 1), atol=tol.atol,
                     rtol=tol.rtol, passed=s.passed)
        for o, s in t.outputs.items()
    )
    top1 = t.agree / t.rows if t.rows else None
    problems = list(dict.fromkeys(t.problems))
    for o in outputs:
        if not o.passed:
            problems.append(f"output {o.name!r} max abs error {o.max_abs:.3g} exceeds "
                            f"{tol.atol:g} + {tol.rtol:g} x max|ref| (max rel {o.max_rel:.3g})")
    if top1 is not None and tol.min_top1 is not None and top1 < tol.min_top1:
        problems.append(f"top-1 agreement {top1:.3f} below {tol.min_top1:g}")
    return ParityRecord(
        artifact=name, reference=reference, engine=engine, cases=tuple(cases), outputs=outputs,
        top1_agreement=top1, min_top1=tol.min_top1 if top1 is not None else None,
        passed=not problems, problem="; ".join(problems),
    )


def _case(feed: Mapping[str, np.ndarray]) -> tuple[int, int]:
    """(batch, frames) of a feed: the first input's batch and time axis (2 for video, else 1)."""
    first = next(iter(feed.values()))
    time_axis = 2 if first.ndim == 5 else 1
    return int(first.shape[0]), int(first.shape[time_axis]) if first.ndim > time_axis else 0


def _engine(runner: ParityRunner) -> str:
    providers = getattr(runner, "providers", None)
    if providers:
        return f"onnxruntime {providers[0]}"
    return type(runner).__name__
