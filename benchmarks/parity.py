"""Task-level parity of an engine against the float32 reference, on the same inputs.

The error statistics come from :func:`lipx.export.parity.compare` (the exporter's own check), run
on the engine's whole model and on its streaming split (front-end chunk by chunk, then the
backend) against the reference's whole-model outputs. On top of that, per output, a quantile of
the absolute error, and the task's own measures:

* lipreading: top-1 agreement with the reference (ties within tolerance agree, as in
  ``compare``); with ``--data``, word accuracy and its difference from the reference's;
* lip-to-speech: speech by Griffin-Lim from the linear spectrogram, then STOI, ESTOI and
  narrow-band PESQ. With ``--data`` they score against the recorded audio (and mel/linear L1
  against the target spectrograms), with the difference from the reference's scores; with random
  inputs they score against the reference's own speech (and L1 against its spectrograms).

The gate of each precision is the package's (:class:`lipx.tasks.TaskSpec` ``tolerances``,
written into the manifest at export), with the user's overrides: an engine fails when an output's
max abs error exceeds ``atol + rtol x max|ref|``, when its top-1 agreement is below ``min_top1``
(lipreading), or when its STOI drop exceeds ``max_stoi_drop`` (lip-to-speech). The STOI drop is
the reference's STOI minus the engine's (``--data``), or one minus the STOI of the engine's
speech against the reference's (random inputs).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lipx.audio import AudioSpec, spectrogram_to_wav
from lipx.benchmarks.evalset import EvalSet
from lipx.package import Manifest, TensorInfo
from lipx.parity import compare
from lipx.runtime.runner import Runner
from lipx.tasks import Tolerance

log = logging.getLogger(__name__)

QUANTILE = 0.99
"""The absolute-error quantile reported beside max and mean."""
GRIFFIN_LIM_ITERS = 60


@dataclass(frozen=True)
class OutputError:
    """Error of one output of one graph against the reference, over every parity input."""

    graph: str
    """``model`` (the whole graph) or ``split`` (front-end chunks + backend)."""
    name: str
    max_abs: float
    mean_abs: float
    max_rel: float
    """``max_abs`` over the largest reference magnitude."""
    q_abs: float
    """The :data:`QUANTILE` quantile of the absolute error."""
    passed: bool


@dataclass(frozen=True)
class Parity:
    """An engine's parity with the reference, and its task metrics."""

    reference: str
    outputs: tuple[OutputError, ...]
    gate: Tolerance
    top1_agreement: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    """Task metrics of the engine: accuracy, stoi, estoi, pesq, mel_l1, linear_l1."""
    deltas: dict[str, float] = field(default_factory=dict)
    """Engine metric minus reference metric (with --data)."""
    stoi_drop: float | None = None
    problems: tuple[str, ...] = ()

    @property
    def passed(self) -> bool:
        return not self.problems

    @property
    def worst_abs(self) -> float:
        return max((o.max_abs for o in self.outputs), default=0.0)

    @property
    def worst_rel(self) -> float:
        return max((o.max_rel for o in self.outputs), default=0.0)


# --- recording runners ----------------------------------------------------------------------


class Recorder(Runner):
    """Passes calls to ``inner`` and keeps every output, so one run feeds both the error
    statistics and the task metrics."""

    def __init__(self, inner: Runner) -> None:
        super().__init__(inner.name)
        self.inner = inner
        self.outputs: list[dict[str, np.ndarray]] = []
        self._owned = False

    def _activate(self) -> None:
        self._owned = not self.inner.is_active
        if self._owned:
            self.inner.activate()

    def _deactivate(self) -> None:
        if self._owned:
            self.inner.deactivate()

    def _input_metadata(self) -> dict[str, TensorInfo]:
        return self.inner.input_metadata()

    def _output_metadata(self) -> dict[str, TensorInfo]:
        return self.inner.output_metadata()

    def _infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = self.inner.infer(feeds, check=False)
        self.last_latency_s = self.inner.last_latency_s
        self.outputs.append(out)
        return out


class Replay(Runner):
    """The reference's recorded outputs, returned for the same feed objects (no re-run)."""

    def __init__(self, name: str, feeds: list[dict[str, np.ndarray]],
                 outputs: list[dict[str, np.ndarray]]) -> None:
        super().__init__(name)
        self.feeds, self.outputs = feeds, outputs

    def _activate(self) -> None:
        pass

    def _deactivate(self) -> None:
        pass

    def _input_metadata(self) -> dict[str, TensorInfo]:
        return {n: TensorInfo(n, str(a.dtype), tuple("" for _ in a.shape))
                for n, a in self.feeds[0].items()}

    def _output_metadata(self) -> dict[str, TensorInfo]:
        return {n: TensorInfo(n, str(a.dtype), tuple("" for _ in a.shape))
                for n, a in self.outputs[0].items()}

    def _infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        first = next(iter(feeds.values()))
        for i, f in enumerate(self.feeds):
            if next(iter(f.values())) is first:
                return self.outputs[i]
        raise ValueError(f"{self.name}: feeds that were not recorded")


# --- reference ------------------------------------------------------------------------------


@dataclass
class ReferenceRun:
    """The reference engine's outputs on the parity inputs, and its task metrics."""

    key: str
    outputs: list[dict[str, np.ndarray]]
    metrics: dict[str, float]
    speech: list[np.ndarray] | None = None
    """Per batch (B, samples) speech of the reference (lip-to-speech)."""


def run_reference(key: str, model: Runner, evalset: EvalSet, task: str,
                  audio: AudioSpec | None) -> ReferenceRun:
    """Run the reference's whole model on every parity input and score it."""
    outputs = [model.infer(f, check=False) for f in evalset.feeds]
    speech, metrics = task_metrics(task, outputs, evalset, audio, None)
    return ReferenceRun(key, outputs, metrics, speech)


def measure(runners: Mapping[str, Runner], reference: ReferenceRun, evalset: EvalSet,
            stride: int, manifest: Manifest, gate: Tolerance) -> Parity:
    """Parity of an engine's whole model and split pipeline with ``reference``.

    Args:
        runners: the engine's active runners by role (``model``, ``frontend``, ``backend``).
        reference: the reference's recorded run on ``evalset``.
        stride: front-end chunk size of the split pipeline.
        manifest: the package's (task spec: top-1 output, context; audio spec).
        gate: the engine's tolerances.
    """
    from lipx.export.split import SplitPipeline  # numpy only

    spec, task, audio = manifest.spec, manifest.task, manifest.audio
    split = SplitPipeline(runners["frontend"], runners["backend"], chunk=stride,
                          context=spec.context, name="split")
    recorders = {"model": Recorder(runners["model"]), "split": Recorder(split)}
    compared = compare({"reference": Replay(reference.key, evalset.feeds, reference.outputs),
                        **recorders}, evalset.feeds, "reference", gate, spec.top1_output)
    outputs, problems, top1 = [], [], None
    for record in compared.records:
        q = _quantiles(reference.outputs, recorders[record.artifact].outputs)
        outputs += [OutputError(record.artifact, o.name, o.max_abs, o.mean_abs, o.max_rel,
                                q.get(o.name, math.nan), o.passed) for o in record.outputs]
        problems += [f"{record.artifact}: {record.problem}"] if record.problem else []
        if record.artifact == "model":
            top1 = record.top1_agreement
    whole = recorders["model"]
    _, metrics = task_metrics(task, whole.outputs, evalset, audio, reference)
    deltas = ({k: v - reference.metrics[k] for k, v in metrics.items()
               if k in reference.metrics} if evalset.has_data else {})
    drop = _stoi_drop(metrics, reference.metrics, evalset.has_data)
    if drop is not None and gate.max_stoi_drop is not None and not drop <= gate.max_stoi_drop:
        problems.append(f"STOI drop {drop:.3f} above {gate.max_stoi_drop:g}")
    return Parity(reference.key, tuple(outputs), gate, top1, metrics, deltas, drop,
                  tuple(problems))


def _quantiles(reference: list[dict[str, np.ndarray]],
               outputs: list[dict[str, np.ndarray]]) -> dict[str, float]:
    """The :data:`QUANTILE` quantile of |output - reference| per output, over all inputs."""
    out = {}
    for name in reference[0]:
        errs = [np.abs(o[name].astype(np.float64) - r[name]).ravel()
                for r, o in zip(reference, outputs, strict=True)
                if name in o and o[name].shape == r[name].shape]
        if errs:
            out[name] = float(np.quantile(np.concatenate(errs), QUANTILE))
    return out


def _stoi_drop(metrics: dict[str, float], ref: dict[str, float], has_data: bool) -> float | None:
    if "stoi" not in metrics:
        return None
    if has_data:
        return ref["stoi"] - metrics["stoi"] if "stoi" in ref else None
    return 1.0 - metrics["stoi"]


# --- task metrics ---------------------------------------------------------------------------


def _speech(outputs: list[dict[str, np.ndarray]], audio: AudioSpec | None) -> list[np.ndarray]:
    """Griffin-Lim speech of every clip: per batch (B, 640 T) from ``linear`` (B, 1, 321, 4T)."""
    spec = audio or AudioSpec()
    per_frame = spec.samples_per_video_frame()
    out = []
    for o in outputs:
        linear = np.maximum(o["linear"][:, 0], 0.0)
        n = linear.shape[-1] // spec.mel_frames_per_video_frame * per_frame
        out.append(np.stack([spectrogram_to_wav(x, spec, GRIFFIN_LIM_ITERS, length=n)
                             for x in linear]))
    return out


def task_metrics(task: str, outputs: list[dict[str, np.ndarray]], evalset: EvalSet,
                 audio: AudioSpec | None, reference: ReferenceRun | None
                 ) -> tuple[list[np.ndarray] | None, dict[str, float]]:
    """The task's own measures of ``outputs`` (:data:`MEASURES`; none for a task not there).

    Returns:
        The speech of every clip where the task speaks (else None), and the task's metrics.
    """
    measures = MEASURES.get(task, NO_MEASURES)
    speech = _speech(outputs, audio) if measures.speaks else None
    return speech, measures.score(outputs, evalset, speech, reference)


def _accuracy(outputs: list[dict[str, np.ndarray]], evalset: EvalSet,
              speech: list[np.ndarray] | None, reference: ReferenceRun | None
              ) -> dict[str, float]:
    """Word accuracy, with data."""
    if evalset.labels is None:
        return {}
    hits = [o[next(iter(o))].argmax(-1) == y
            for o, y in zip(outputs, evalset.labels, strict=True)]
    return {"accuracy": float(np.concatenate(hits).mean())}


def _speech_scores(outputs: list[dict[str, np.ndarray]], evalset: EvalSet,
                   speech: list[np.ndarray] | None, reference: ReferenceRun | None
                   ) -> dict[str, float]:
    """L1 and speech scores against the data's targets, or against ``reference``'s outputs and
    speech with random inputs (and none for the reference itself then)."""
    if evalset.targets is not None:
        targets = evalset.targets
        clean = [t["wav"] for t in targets]
    elif reference is not None and reference.speech is not None:
        targets = [{"mel": r["mel"][:, 0], "linear": np.maximum(r["linear"][:, 0], 0.0)}
                   for r in reference.outputs]
        clean = reference.speech
    else:
        return {}
    return _speech_metrics(outputs, targets, speech or [], clean, evalset)


def _speech_metrics(outputs: list[dict[str, np.ndarray]], targets: list[dict[str, np.ndarray]],
                    speech: list[np.ndarray], clean: list[np.ndarray], evalset: EvalSet
                    ) -> dict[str, float]:
    from lipx.runtime.metrics import mean_scores, speech_scores

    rows: list[dict[str, float]] = []
    for out, tgt, wavs, refs in zip(outputs, targets, speech, clean, strict=True):
        for i in range(wavs.shape[0]):
            row = speech_scores(refs[i].astype(np.float64), wavs[i].astype(np.float64))
            row["mel_l1"] = float(np.abs(out["mel"][i, 0] - tgt["mel"][i]).mean())
            row["linear_l1"] = float(np.abs(np.maximum(out["linear"][i, 0], 0.0)
                                            - tgt["linear"][i]).mean())
            rows.append(row)
    return mean_scores(rows)


@dataclass(frozen=True)
class TaskMeasures:
    """A task's own parity measures, beyond the error statistics of its outputs."""

    score: Callable[[list[dict[str, np.ndarray]], EvalSet, list[np.ndarray] | None,
                     ReferenceRun | None], dict[str, float]]
    """(outputs, evalset, speech, reference) -> metrics."""
    speaks: bool = False
    """Whether the outputs are rendered to speech first (Griffin-Lim from ``linear``)."""


MEASURES = {"lipreading": TaskMeasures(_accuracy),
            "lip2speech": TaskMeasures(_speech_scores, speaks=True)}
"""Task -> its parity measures."""
NO_MEASURES = TaskMeasures(lambda *_: {})
"""The measures of a task not in :data:`MEASURES`: none."""


def to_dict(p: Parity) -> dict[str, Any]:
    """JSON-ready form of a :class:`Parity`."""
    d = dataclasses.asdict(p)
    d["passed"] = p.passed
    return d
