"""What lipx knows about each task, in one torch-free place: the task spec.

    spec = task_spec("lipreading")
    spec.head_output, spec.top1_output          # "logits", "logits"
    spec.tolerance("fp16", atol=1e-2)           # the parity gate, with an override
    spec.schedule(window=None, stride=None)     # Schedule(window=29, stride=7)

A :class:`TaskSpec` holds the facts about a task's graphs that export, runtime and bench all
need: which output the stream head reads and which one is the classifier's top-1, the layers
kept in float32 in reduced-precision builds, the parity tolerances per precision, the default
window and stride, the fewest frames a window may have, and the front-end's temporal context.
``lipx export`` writes the spec of the exported model into the manifest (``task_spec``), and
every reader takes it from there, so a package carries the facts it was exported under and no
reader needs the model to learn them.

:class:`Schedule` is the sliding-window schedule (window, stride); every part of lipx uses this
one type and checks it in one place.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from lipx.errors import InputError, ManifestError, did_you_mean

CONTEXT = 2
"""Frames of context on each side of a front-end chunk: the 3D convolution's temporal kernel of
5 makes output frame t see frames t-2 .. t+2."""
MAX_FRAMES = 1024
"""Most frames of a window, stride, minimum window, padding, look-ahead or cross-fade, whether a
package or a user gives them: 41 s at 25 fps (the models use 9 to 75)."""
PRECISIONS = ("fp32", "fp16", "int8")
NO_WORD = "<no-word>"
"""The last class of a lipreading model trained for streams (``lipx train --set streams=DIR``):
a window not centred on a vocabulary word. The stream head never emits it; a model without it
(the paper's, a converted LRW checkpoint) is read as before."""


@dataclass(frozen=True)
class Tolerance:
    """A parity gate against the float32 reference.

    An output passes when ``max_abs <= atol + rtol * max|reference|``; classifiers must also
    agree on the top-1 class in at least ``min_top1`` of the rows, and speech generators lose at
    most ``max_stoi_drop`` STOI (``lipx bench``).
    """

    atol: float
    rtol: float
    min_top1: float | None = None
    max_stoi_drop: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Any, where: str) -> Tolerance:
        if not isinstance(d, dict) or not {"atol", "rtol"} <= d.keys():
            raise ManifestError(f"manifest: {where} must hold atol and rtol; re-export the package")
        return cls(float(d["atol"]), float(d["rtol"]), d.get("min_top1"), d.get("max_stoi_drop"))


@dataclass(frozen=True)
class Schedule:
    """The sliding-window schedule: a backend window of ``window`` frames every ``stride``.

    Raises:
        InputError: a size below 1, or a stride larger than the window (frames would be skipped).
    """

    window: int
    """Frames per backend window (W)."""
    stride: int
    """Frames between successive backend runs (and per front-end chunk when exporting)."""

    def __post_init__(self) -> None:
        self.check(self.window, self.stride)

    @staticmethod
    def check(window: int | None, stride: int | None) -> None:
        """The schedule's rule, also on a window or a stride alone (a command's options, where a
        package gives the other): each is at least 1, and the stride at most the window.

        Raises:
            InputError: a size below 1, or a stride larger than the window.
        """
        for name, value in (("window", window), ("stride", stride)):
            if value is not None and not 1 <= value <= MAX_FRAMES:
                raise InputError(f"--{name} must be in 1..{MAX_FRAMES} frames, got {value}")
        if window is not None and stride is not None and stride > window:
            raise InputError(f"--stride {stride} is larger than the window ({window} frames): "
                             f"frames would be skipped; use a stride <= the window")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Any, where: str = "schedule") -> Schedule:
        if not isinstance(d, dict) or not {"window", "stride"} <= d.keys():
            raise ManifestError(f"manifest: {where} must hold window and stride; re-export the "
                                f"package")
        try:
            return cls(int(d["window"]), int(d["stride"]))
        except InputError as e:
            raise ManifestError(f"manifest: {where}: {e}") from e


@dataclass(frozen=True)
class TaskSpec:
    """The facts about one task's graphs (see the module docstring)."""

    task: str
    """``lipreading`` or ``lip2speech``."""
    outputs: tuple[str, ...]
    """Outputs of the whole model and of the backend, in order."""
    head_output: str
    """The backend output the stream head reads."""
    top1_output: str | None
    """The output whose arg-max is the prediction (classifiers), else None."""
    fp32_patterns: tuple[str, ...]
    """Layer-name fragments kept float32 in fp16 builds, besides the default rule."""
    tolerances: dict[str, Tolerance]
    """Precision -> parity gate against the float32 reference."""
    default_window: int
    stride_fraction: int
    """The default stride is the window over this (4: a decision about 4 times a window for a
    classifier; 6 for the generator: window 24, stride 4, chosen on validation streams for an
    algorithmic audio latency of 0.40 s at the STOI of offline, benchmarks/results/
    stream-eval-cpu-2026-12-01)."""
    min_frames: int = 1
    """Fewest frames a window may have (the exported model's; 1 unless its backend says)."""
    context: int = CONTEXT
    """Frames of look-back and look-ahead each front-end chunk needs."""
    stream_defaults: dict[str, float] = dataclasses.field(default_factory=dict)
    """The stream's options when a stream does not set them: lipreading ``threshold``,
    ``agreement``, ``min_gap`` (seconds) and ``pad`` (frames repeated at each end of the
    stream); lip-to-speech ``lookahead``, ``crossfade``, ``gl_iters``."""

    def head_options(self, **given: float | None) -> dict[str, float]:
        """The head's options: each given (not None) value, else this spec's default, else the
        default of this lipx's spec of the task (a package exported before one was chosen)."""
        base = {**SPECS[self.task].stream_defaults, **self.stream_defaults} if (
            self.task in SPECS) else dict(self.stream_defaults)
        return {**base, **{k: v for k, v in given.items() if v is not None and k in base}}

    def default_stride(self, window: int) -> int:
        return max(1, window // self.stride_fraction)

    def schedule(self, window: int | None = None, stride: int | None = None,
                 default: Schedule | None = None) -> Schedule:
        """The schedule of ``window`` and ``stride`` where given, else ``default``'s (a
        package's), else the task's defaults; a default stride never exceeds the window.

        Raises:
            InputError: the stride exceeds the window, or the window is below ``min_frames``.
        """
        w = window or (default.window if default else self.default_window)
        if stride is None:
            stride = min(default.stride, w) if default else self.default_stride(w)
        if w < self.min_frames:
            raise InputError(f"--window {w} is shorter than this {self.task} model's minimum of "
                             f"{self.min_frames} frames")
        return Schedule(w, stride)

    def tolerance(self, precision: str, **overrides: float | None) -> Tolerance:
        """The gate of ``precision`` with each given (not None) override replacing its value."""
        if precision not in self.tolerances:
            raise InputError(f"no parity tolerance for precision {precision!r}"
                             f"{did_you_mean(precision, self.tolerances)}")
        given = {k: v for k, v in overrides.items() if v is not None}
        return dataclasses.replace(self.tolerances[precision], **given)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["outputs"], d["fp32_patterns"] = list(self.outputs), list(self.fp32_patterns)
        return d

    OPTIONAL = ("stream_defaults",)
    """Fields a manifest may lack (added after schema 2 without changing its meaning)."""

    @classmethod
    def from_dict(cls, d: Any) -> TaskSpec:
        """Parse a manifest's ``task_spec``; ManifestError when it is malformed."""
        names = [f.name for f in dataclasses.fields(cls) if f.name not in cls.OPTIONAL]
        if not isinstance(d, dict) or not set(names) <= d.keys():
            have = sorted(d) if isinstance(d, dict) else type(d).__name__
            raise ManifestError(f"manifest: task_spec must hold {', '.join(names)} (has {have}); "
                                f"re-export the package")
        tols = d["tolerances"]
        if not isinstance(tols, dict):
            raise ManifestError("manifest: task_spec.tolerances must be an object")
        return cls(**{
            **{k: d[k] for k in names},
            "outputs": tuple(d["outputs"]), "fp32_patterns": tuple(d["fp32_patterns"]),
            "tolerances": {p: Tolerance.from_dict(t, f"task_spec.tolerances.{p}")
                           for p, t in tols.items()},
            "stream_defaults": dict(d.get("stream_defaults") or {}),
        })


SPECS: dict[str, TaskSpec] = {
    s.task: s
    for s in (
        TaskSpec(
            task="lipreading", outputs=("logits",), head_output="logits", top1_output="logits",
            fp32_patterns=("memory", "address"),
            tolerances={
                "fp32": Tolerance(1e-4, 1e-4, min_top1=0.99),
                "fp16": Tolerance(1e-3, 2e-2, min_top1=0.95),
                "int8": Tolerance(1e-2, 0.2, min_top1=0.8),
            },
            default_window=29, stride_fraction=4,
            stream_defaults={"threshold": 0.5, "agreement": 2, "min_gap": 0.0, "pad": 0},
        ),
        TaskSpec(
            task="lip2speech", outputs=("mel", "linear"), head_output="linear", top1_output=None,
            fp32_patterns=("attention", "att"),
            tolerances={
                "fp32": Tolerance(1e-4, 1e-4, max_stoi_drop=0.01),
                "fp16": Tolerance(1e-3, 2e-2, max_stoi_drop=0.02),
                "int8": Tolerance(1e-2, 0.2, max_stoi_drop=0.05),
            },
            default_window=24, stride_fraction=6,
            stream_defaults={"lookahead": 4, "crossfade": 2, "gl_iters": 16},
        ),
    )
}
"""The spec of each task (``min_frames`` 1: an exported model's own replaces it)."""
TASKS = tuple(SPECS)
"""The tasks lipx ships (a task registered later is in :data:`SPECS`)."""


def register_spec(spec: TaskSpec) -> TaskSpec:
    """Add (or replace) the spec of ``spec.task``: a new task's facts, beside its stream unit
    (:func:`lipx.runtime.tasks.register`). Returns it."""
    SPECS[spec.task] = spec
    return spec


NO_WORD_STRIDE_FRACTION = 14
NO_WORD_STREAM_DEFAULTS = {"threshold": 0.5, "agreement": 2, "min_gap": 0.3, "pad": 14}
"""A lipreading model with the :data:`NO_WORD` class reads streams on its own schedule and head
options: a window only votes when it is centred on a word, so windows come often (the default
stride is the window over :data:`NO_WORD_STRIDE_FRACTION`), and the stream is padded by ``pad``
frames at each end (its first and last frames repeated, as the training windows were) so that
its first and last words get centred windows. Threshold and agreement were chosen on validation
streams (held-out speakers, ``--part val``, 48 streams) for the shipped small model: WER 4.2 %
there, the lowest of the sweep; ties went to fewer false words, then to more agreement
(benchmarks/results/stream-training-v2-cpu-2026-12-01/lipreading-sweep-val.json)."""


def task_spec(task: str, min_frames: int = 1, no_word: bool = False) -> TaskSpec:
    """The spec of ``task`` for a model whose windows need at least ``min_frames`` frames (and,
    for lipreading, whose last class is :data:`NO_WORD`).

    Raises:
        InputError: a task lipx does not know, or ``no_word`` for a task without classes.
    """
    if task not in SPECS:
        raise InputError(f"unknown task {task!r}{did_you_mean(task, SPECS)}")
    spec = dataclasses.replace(SPECS[task], min_frames=min_frames)
    if no_word:
        if SPECS[task].top1_output is None:
            raise InputError(f"only classifiers have a no-word class, not {task} models")
        spec = dataclasses.replace(spec, stride_fraction=NO_WORD_STRIDE_FRACTION,
                                   stream_defaults={**spec.stream_defaults,
                                                    **NO_WORD_STREAM_DEFAULTS})
    return spec
