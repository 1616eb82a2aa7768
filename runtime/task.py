"""What the runtime asks of a task: the interface of a task's stream unit.

    unit = stream_task(manifest.task)                  # lipx.runtime.tasks
    options = unit.head_options(manifest, threshold=0.7)
    head = unit.make_head(manifest, options, schedule)

A task (lipreading, lip-to-speech, or one a user adds) is one :class:`StreamTask`: its typed
head options, its head, the outputs and sinks it can make, how a stream of it is scored against
the truth (:class:`StreamScorer`) and how its report reads. The stream loop, the stream
evaluator, the CLI and the benchmarks ask the unit and never compare task names. The facts about
a task's graphs (head output, tolerances, window, stride, context) stay in the torch-free
:class:`~lipx.tasks.TaskSpec` that travels in the manifest. Torch-free.
"""

from __future__ import annotations

import dataclasses
import logging
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import numpy as np

from lipx.errors import InputError
from lipx.package import Manifest
from lipx.runtime.events import AudioChunk, WordEvent
from lipx.runtime.heads import Head
from lipx.runtime.runner import Runner
from lipx.runtime.sinks import Sink, TextOut
from lipx.runtime.window import Window
from lipx.tasks import Schedule

if TYPE_CHECKING:
    from lipx.runtime.stats import StreamRun

log = logging.getLogger(__name__)

_O = TypeVar("_O", bound="HeadOptions")


@dataclass(frozen=True, kw_only=True)
class HeadOptions:
    """A stream head's options, typed (whisper's ``DecodingOptions``): each task adds its own.

    Built from the package's stream defaults and the user's choices by
    :meth:`StreamTask.head_options`; a value's type is its field's, converted once here.
    """

    pad: int = 0
    """Frames by which the stream is padded at each end, its first and last frames repeated."""

    @classmethod
    def of(cls: type[_O], values: Mapping[str, float]) -> _O:
        """The options from ``values`` (names of fields; others ignored), each converted to its
        field's type.

        Raises:
            InputError: a value that does not convert, or a negative pad.
        """
        kinds = {"int": int, "float": float, "bool": bool}
        given = {}
        for f in dataclasses.fields(cls):
            if f.name in values:
                kind = kinds.get(str(f.type), float)
                value = values[f.name]
                if kind is int and float(value) != int(value):
                    raise InputError(f"{f.name} must be a whole number, got {value}")
                given[f.name] = kind(value)
        options = cls(**given)
        if options.pad < 0:
            raise InputError(f"pad must be >= 0 frames, got {options.pad}")
        return options


@dataclass(frozen=True)
class OutputRequest:
    """The outputs a stream asks for, as far as a task's sinks see them."""

    words: bool = True
    """Print results as they are read (where the task prints any)."""
    jsonl: str | None = None
    """JSON lines file, or ``-`` for stdout."""
    srt: Path | None = None
    vtt: Path | None = None
    wav: Path | None = None
    play: bool = False

    def given(self) -> dict[str, bool]:
        """Task-specific output options -> whether this request asks for them."""
        return {"--srt": self.srt is not None, "--vtt": self.vtt is not None,
                "--wav": self.wav is not None, "--play": self.play}


@dataclass(frozen=True)
class StreamItem:
    """One stream of a set: its video, word timings and clean speech."""

    name: str
    video: Path
    align: Path
    wav: Path | None
    task: str = ""
    """The task its layout is for (``lipreading``, ``lip2speech``; empty in an older index)."""


@dataclass
class Capture:
    """What one stream's run produced: crops, windows and their outputs, results, stats."""

    crops: list[np.ndarray] = field(default_factory=list)
    windows: list[tuple[Window, np.ndarray]] = field(default_factory=list)
    """Each window (its cached features, unless the run kept none) and the backend output the
    head read."""
    stamps: list[float] = field(default_factory=list)
    """When each window reached the head, on the stream's clock (a replay's emission times)."""
    words: list[WordEvent] = field(default_factory=list)
    audio: list[AudioChunk] = field(default_factory=list)
    stats: Any = None
    pad: int = 0
    """Frames the stream was padded by at each end (window indices count them)."""
    head: Any = None
    """The stream's head after the run (made with ``record``: what its task's scorer reads)."""


class StreamScorer(ABC):
    """Scores a task's streams against their truth, one stream at a time."""

    @abstractmethod
    def add(self, item: StreamItem, capture: Capture, engines: Mapping[str, Runner]) -> None:
        """Score one stream (``engines``: the evaluation's opened :attr:`StreamTask.eval_roles`)."""

    @abstractmethod
    def scores(self) -> dict[str, float]:
        """The scores over the streams added so far."""

    @abstractmethod
    def waits(self) -> list[float]:
        """The measured latency of each result scored (seconds)."""


class StreamTask(ABC):
    """One task's stream unit (see the module docstring)."""

    name: ClassVar[str]
    """The task's name, as in the manifest (``TaskSpec.task``)."""
    options: ClassVar[type[HeadOptions]] = HeadOptions
    """The head's option type."""
    outputs: ClassVar[tuple[str, ...]] = ()
    """The task-specific output options it can make (``--srt``, ``--wav`` ...)."""
    eval_roles: ClassVar[tuple[str, ...]] = ()
    """Graphs the stream evaluator opens for this task's scoring (e.g. the whole model)."""
    keeps_crops: ClassVar[bool] = False
    """Whether scoring needs each stream's crops (e.g. to run the offline model on them)."""
    needs_speech: ClassVar[bool] = False
    """Whether a stream set must hold each stream's clean speech (``.wav``)."""
    replayable: ClassVar[bool] = False
    """Whether a run's windows can be replayed through other head options (a sweep)."""
    replay_options: ClassVar[tuple[str, ...]] = ()
    """The head options a replay may vary (they change only how the same windows are read)."""
    quality_metric: ClassVar[tuple[str, str]] = ("", "")
    """(name, scores key) of the headline of a stream evaluation."""
    latency_name: ClassVar[str] = "latency p95"
    """What the measured latency of a stream evaluation is (the sweep plot's axis)."""
    emission_label: ClassVar[str] = "results emitted after their end"
    """What a stream's measured emission latency is (its stats table)."""
    bench_metric: ClassVar[str] = ""
    """The key of the headline among an engine's parity metrics in ``lipx bench`` (empty:
    none)."""
    bench_names: ClassVar[tuple[str, str]] = ("metric", "metric vs reference")
    """How ``lipx bench`` names its metric column: with ``--data``, and without (measured
    against the reference engine)."""

    def head_options(self, manifest: Manifest, **given: float | None) -> HeadOptions:
        """The head's options: each given (not None) value, else the package's default."""
        return self.options.of(manifest.spec.head_options(**given))

    def check(self, manifest: Manifest) -> None:  # noqa: B027 (optional: most heads need nothing)
        """Raise ManifestError when ``manifest`` lacks what this task's head needs."""

    @abstractmethod
    def make_head(self, manifest: Manifest, options: HeadOptions, schedule: Schedule,
                  record: bool = False) -> Head:
        """A fresh head for one stream (``record``: keep what the evaluator scores)."""

    def unsupported(self, request: OutputRequest) -> list[str]:
        """The output options in ``request`` that this task cannot make."""
        return [name for name, given in request.given().items()
                if given and name not in self.outputs]

    def sinks(self, manifest: Manifest, request: OutputRequest,
              console: TextOut | None = None) -> list[Sink]:
        """The task's own sinks for ``request`` (JSON lines and the annotated video are shared)."""
        return []

    def video_overlay(self, manifest: Manifest) -> dict[str, Any]:
        """Keyword arguments of the annotated video sink (captions, level meter, audio track)."""
        return {"audio": False, "caption": True, "meter": False}

    def made(self, run: StreamRun) -> str:
        """What a stream made, in words (``3 words``, ``2.4 s of speech``)."""
        return f"{run.backend_calls} windows"

    @abstractmethod
    def scorer(self, manifest: Manifest) -> StreamScorer:
        """A fresh scorer for a stream set."""

    def table_rows(self, scores: Mapping[str, float], latency: Mapping[str, float]
                   ) -> list[tuple[str, str]]:
        """The rows of a stream evaluation's printed table that are this task's."""
        return [(k, f"{v:.4g}") for k, v in scores.items()]

    def bench_name(self, has_data: bool) -> str:
        """The name of ``lipx bench``'s metric column (:attr:`bench_names`)."""
        return self.bench_names[0] if has_data else self.bench_names[1]

    def bench_value(self, metrics: Mapping[str, float], reference: bool, has_data: bool,
                    top1_agreement: float | None) -> float | None:
        """An engine's value in ``lipx bench``'s metric column.

        Args:
            metrics: its parity metrics.
            reference: whether it is the reference engine.
            has_data: whether parity ran on a corpus (``--data``) rather than random inputs.
            top1_agreement: its top-1 agreement with the reference (classifiers).

        Returns:
            The :attr:`bench_metric` where measured, else 1 for the reference without data
            (measured against itself), else None.
        """
        if self.bench_metric in metrics:
            return metrics[self.bench_metric]
        return 1.0 if reference and not has_data else None
