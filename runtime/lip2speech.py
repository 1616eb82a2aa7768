"""Lip-to-speech as a stream unit: the speech head, its outputs and sinks, and speech scoring.

Speech comes from :class:`~lipx.runtime.heads.SpeechHead`; a stream writes or plays it, and is
scored by STOI, ESTOI and PESQ against the clean speech, beside the offline output (the whole
model on the whole utterance, Griffin-Lim on all of it) and the streamed windows' stitched
magnitudes with offline Griffin-Lim (the windowing without streaming Griffin-Lim). Torch-free.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from lipx.audio import AudioSpec, fit_length, spectrogram_to_wav
from lipx.errors import ManifestError
from lipx.package import Manifest
from lipx.runtime.events import AudioChunk
from lipx.runtime.heads import Head, SpeechHead
from lipx.runtime.metrics import mean_scores, speech_scores
from lipx.runtime.package_runners import engine_feeds
from lipx.runtime.runner import Runner
from lipx.runtime.sinks import LiveAudio, Sink, TextOut, WavSink
from lipx.runtime.task import (
    Capture,
    HeadOptions,
    OutputRequest,
    StreamItem,
    StreamScorer,
    StreamTask,
)
from lipx.tasks import Schedule

if TYPE_CHECKING:
    from lipx.runtime.stats import StreamRun


@dataclass(frozen=True, kw_only=True)
class SpeechOptions(HeadOptions):
    """The speech head's options (defaults: the package's ``task_spec.stream_defaults``)."""

    lookahead: int = 4
    """Frames at each window's end kept only as right context."""
    crossfade: int = 2
    """Frames cross-faded at each join (<= lookahead)."""
    gl_iters: int = 16
    """Griffin-Lim iterations per chunk."""


def audio_spec(manifest: Manifest) -> AudioSpec:
    """The audio parameters of a lip-to-speech package; ManifestError when it has none."""
    if manifest.audio is None:
        raise ManifestError("lip2speech package has no audio spec; re-export it")
    return manifest.audio


def streamed_speech(chunks: list[AudioChunk], samples: int) -> np.ndarray:
    """The stream's audio chunks placed on one track of ``samples`` (gaps silent)."""
    track = np.zeros(samples, np.float32)
    for c in chunks:
        first = round(c.start_s * c.sample_rate)
        piece = c.samples[:max(0, samples - first)]
        track[first:first + len(piece)] = piece
    return track


def offline_speech(manifest: Manifest, crops: list[np.ndarray], model: Runner) -> np.ndarray:
    """The whole model (an active runner) on the whole utterance (zero noise), Griffin-Lim on
    all of it."""
    feeds = engine_feeds(manifest.graph("model"), np.stack(crops)[None, None], len(crops))
    linear = model.infer(feeds)[manifest.spec.head_output][0, 0]
    return spectrogram_to_wav(np.maximum(linear, 0.0), audio_spec(manifest))


def stitched_speech(manifest: Manifest, parts: list[np.ndarray], samples: int) -> np.ndarray:
    """The streamed windows' stitched magnitudes (from the stream's start) with Griffin-Lim on
    the whole of them, as offline: the stream without streaming Griffin-Lim."""
    if not parts:
        return np.zeros(samples, np.float32)
    wav = spectrogram_to_wav(np.concatenate(parts, axis=1), audio_spec(manifest))
    return fit_length(wav.astype(np.float32), samples)


def speech_rows(reference: np.ndarray, **speech: np.ndarray) -> dict[str, float]:
    """STOI/ESTOI/PESQ of each named track against the clean speech (``NAME_stoi``...)."""
    ref = reference.astype(np.float64)
    return {f"{name}_{k}": v for name, track in speech.items()
            for k, v in speech_scores(ref, track[:len(ref)].astype(np.float64)).items()}


class SpeechScorer(StreamScorer):
    """Streamed, stitched and offline speech of each stream against its clean speech."""

    def __init__(self, manifest: Manifest) -> None:
        self.manifest = manifest
        self.rows: list[dict[str, float]] = []
        self._waits: list[float] = []

    def add(self, item: StreamItem, capture: Capture, engines: Mapping[str, Runner]) -> None:
        import soundfile as sf

        reference, _ = sf.read(item.wav, dtype="float32")
        stitched = capture.head.stitched if isinstance(capture.head, SpeechHead) else []
        self.rows.append(speech_rows(
            reference, stream=streamed_speech(capture.audio, len(reference)),
            stitched=stitched_speech(self.manifest, stitched, len(reference)),
            offline=offline_speech(self.manifest, capture.crops, engines["model"])))
        self._waits += [c.wait_s for c in capture.audio if c.wait_s is not None]

    def scores(self) -> dict[str, float]:
        return mean_scores(self.rows)

    def waits(self) -> list[float]:
        return self._waits


class Lip2Speech(StreamTask):
    """Mouth video -> speech."""

    name = "lip2speech"
    options = SpeechOptions
    outputs = ("--wav", "--play")
    eval_roles = ("model",)
    keeps_crops = True
    needs_speech = True
    quality_metric = ("stream_stoi", "stream_stoi")
    latency_name = "audio latency p95"
    emission_label = "audio emitted after its frame"
    bench_metric = "stoi"
    bench_names = ("STOI", "STOI vs reference")

    def check(self, manifest: Manifest) -> None:
        audio_spec(manifest)

    def make_head(self, manifest: Manifest, options: HeadOptions, schedule: Schedule,
                  record: bool = False) -> Head:
        assert isinstance(options, SpeechOptions)
        return SpeechHead(audio_spec(manifest), manifest.video.fps, schedule.window,
                          schedule.stride, options.lookahead, options.crossfade, options.gl_iters,
                          record=record)

    def sinks(self, manifest: Manifest, request: OutputRequest,
              console: TextOut | None = None) -> list[Sink]:
        rate = audio_spec(manifest).sample_rate
        return ([WavSink(request.wav, rate)] if request.wav else []) + (
            [LiveAudio(rate)] if request.play else [])

    def video_overlay(self, manifest: Manifest) -> dict[str, Any]:
        return {"audio": True, "caption": False, "meter": True,
                "sample_rate": audio_spec(manifest).sample_rate}

    def made(self, run: StreamRun) -> str:
        return f"{run.audio_s:.1f} s of speech"

    def scorer(self, manifest: Manifest) -> SpeechScorer:
        return SpeechScorer(manifest)

    def table_rows(self, scores: Mapping[str, float], latency: Mapping[str, float]
                   ) -> list[tuple[str, str]]:
        rows = [(k.upper(), f"streamed {scores.get('stream_' + k, np.nan):.3f}, stitched "
                            f"{scores.get('stitched_' + k, np.nan):.3f}, offline "
                            f"{scores.get('offline_' + k, np.nan):.3f}")
                for k in ("stoi", "estoi", "pesq")]
        return rows + [("audio latency", f"p50 {latency['measured_p50_s']:.2f} s, p95 "
                                         f"{latency['measured_p95_s']:.2f} s")]
