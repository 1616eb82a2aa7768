"""``lipx demo``: lipx's whole job on a CPU in a few minutes, with no downloads.

1. Test videos of held-out synthetic speakers, rendered again from the corpus recipe each trained
   checkpoint records (``meta.corpus_synth``): for lipreading, one speaker saying a few
   vocabulary words in a row; for lip-to-speech, one GRID sentence aligned to the 256x256 face
   geometry. Their true words and speech are kept for scoring.
2. Both checkpoints exported to ONNX model packages (TensorRT plans too where TensorRT exists).
3. Each video streamed through its package: words printed as they are read, generated speech
   as a WAV, an annotated MP4 each; then scored (words right, STOI/ESTOI of the speech).
4. A short benchmark of each package against PyTorch.

The checkpoints default to the small ones shipped in ``lipx/assets/checkpoints`` (made by the
commands in the README's "Training results"). Everything goes to one folder; a step whose
outputs exist is reused unless ``fresh``.
"""

from __future__ import annotations

import importlib.util
import io
import json
import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lipx.errors import InputError
from lipx.files import file_sha256

log = logging.getLogger(__name__)

CHECKPOINTS = Path(__file__).parent / "assets" / "checkpoints"
"""The shipped small trained checkpoints: ``lipreading.lipx`` and ``lip2speech.lipx``."""
TASKS = ("lipreading", "lip2speech")


@dataclass(frozen=True)
class DemoOptions:
    """What ``lipx demo`` does."""

    out: Path = Path("lipx-demo")
    """Folder for every output (created)."""
    checkpoints: Path = CHECKPOINTS
    """Folder holding ``lipreading.lipx`` and ``lip2speech.lipx`` (trained on synthetic data)."""
    words: int = 6
    """Words in the lipreading test video."""
    speaker: int = 0
    """Which held-out speaker says them (0: the first held out)."""
    bench_s: float = 2.0
    """Seconds of timed runs per engine in the benchmark (0 skips it)."""
    fresh: bool = False
    """Redo every step instead of reusing what ``out`` holds."""

    def __post_init__(self) -> None:
        if self.words < 1:
            raise InputError(f"--words must be >= 1, got {self.words}")
        if self.speaker < 0:
            raise InputError(f"--speaker must be >= 0, got {self.speaker}")
        if self.bench_s < 0:
            raise InputError(f"--bench-s must be >= 0, got {self.bench_s}")
        missing = [t for t in TASKS if not (self.checkpoints / f"{t}.lipx").is_file()]
        if missing:
            raise InputError(f"{self.checkpoints} has no {missing[0]}.lipx; train one (README, "
                             "'Training results') or pass --checkpoints")


@dataclass
class TestVideo:
    """A held-out speaker's video and what it really says."""

    video: Path
    words: list[str]
    """The words said, in order."""
    speech: Path | None = None
    """The speaker's real speech (lip-to-speech reference), 16 kHz WAV."""


@dataclass
class DemoResult:
    """What the demo measured, per task."""

    out: Path
    scores: dict[str, dict[str, float]] = field(default_factory=dict)
    read: list[str] = field(default_factory=list)
    """Words the stream read, in order."""
    truth: list[str] = field(default_factory=list)
    files: dict[str, Path] = field(default_factory=dict)

    def summary(self) -> str:
        lr, ls = self.scores.get("lipreading", {}), self.scores.get("lip2speech", {})
        return (f"read {lr.get('correct', 0):.0f}/{len(self.truth)} words of a held-out speaker; "
                f"speech STOI {ls.get('stoi', float('nan')):.2f} -> {self.out}")


Say = Callable[[str], None]


def run_demo(opts: DemoOptions, say: Say = print) -> DemoResult:
    """Run the four steps; ``say`` receives the narration (headings, words, scores)."""
    out = opts.out
    if opts.fresh and out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    result = DemoResult(out)
    ckpts = {t: opts.checkpoints / f"{t}.lipx" for t in TASKS}

    say("== 1/4 test videos: held-out synthetic speakers (never seen in training)")
    videos = {"lipreading": lipreading_video(ckpts["lipreading"], out, opts),
              "lip2speech": lip2speech_video(ckpts["lip2speech"], out, opts)}
    say(f"   {videos['lipreading'].video}: says {' '.join(videos['lipreading'].words)}")
    say(f"   {videos['lip2speech'].video}: says {' '.join(videos['lip2speech'].words)}")

    engine = "trt" if importlib.util.find_spec("tensorrt") else "onnx"
    say(f"== 2/4 export both models ({'ONNX + TensorRT' if engine == 'trt' else 'ONNX'}, "
        "parity checked against PyTorch)")
    packages = {t: _export(ckpts[t], out / "packages" / t, engine, say) for t in TASKS}

    say("== 3/4 stream the videos through the packages")
    result.truth = videos["lipreading"].words
    result.read, result.scores["lipreading"] = _stream_words(packages["lipreading"],
                                                             videos["lipreading"], out, say)
    result.scores["lip2speech"] = _stream_speech(packages["lip2speech"], videos["lip2speech"],
                                                 out, say)
    result.files = {name: out / name for name in (
        "words.jsonl", "words.srt", "lipreading.mp4", "speech.wav", "lip2speech.mp4")}

    if opts.bench_s > 0:
        say(f"== 4/4 benchmark ({opts.bench_s:g} s per engine)")
        for task in TASKS:
            _bench(packages[task], ckpts[task], out / "bench" / task, opts.bench_s, say)
    else:
        say("== 4/4 benchmark skipped (--bench-s 0)")
    (out / "demo.json").write_text(json.dumps(
        {"read": result.read, "truth": result.truth, "scores": result.scores}, indent=2) + "\n")
    return result


# --- test videos ---------------------------------------------------------------------------


def _recipe(ckpt_path: Path, layout: str):
    """The SynthOptions of the corpus the checkpoint was trained on."""
    from lipx.data.synth import SynthOptions
    from lipx.models.checkpoint import load_checkpoint

    ckpt = load_checkpoint(ckpt_path)
    options = ckpt.meta.get("corpus_synth")
    if not options or options.get("layout") != layout:
        raise InputError(f"{ckpt_path} was not trained on a synthetic {layout.upper()}-layout "
                         "corpus (no corpus_synth in its metadata); the demo renders held-out "
                         "speakers of that corpus")
    return ckpt, SynthOptions(out=Path("."), **{**options, "image_size": tuple(
        options["image_size"]) if options.get("image_size") else None})


def lipreading_video(ckpt_path: Path, out: Path, opts: DemoOptions) -> TestVideo:
    """``opts.words`` vocabulary words said in a row by a held-out speaker, each with the
    context words of the corpus' LRW clips (one continuous stream, no pauses)."""
    from lipx.data import streams

    truth_file, video = out / "lipreading_truth.json", out / "lipreading_test.mp4"
    key = {"checkpoint": file_sha256(ckpt_path), "words": opts.words, "speaker": opts.speaker}
    if (truth := _made_from(key, truth_file, video)) is not None:
        return TestVideo(video, truth["words"])
    ckpt, recipe = _recipe(ckpt_path, "lrw")
    held = streams.held_out_speakers(recipe)
    speaker = held[opts.speaker % len(held)]
    vocab = list(ckpt.vocabulary)
    rng = np.random.default_rng(opts.speaker)
    words = [vocab[i] for i in rng.permutation(len(vocab))[:opts.words]]
    words += [vocab[int(i)] for i in rng.integers(len(vocab), size=opts.words - len(words))]
    spec = streams.StreamSpec("demo_lipreading", speaker, tuple((w,) for w in words),
                              pauses=False)
    streams.write_stream(streams.render_stream(recipe, streams.script_stream(recipe, spec)),
                         video)
    truth_file.write_text(json.dumps({"words": words, "made_from": key}))
    return TestVideo(video, words)


def lip2speech_video(ckpt_path: Path, out: Path, opts: DemoOptions) -> TestVideo:
    """A GRID sentence of a held-out (``unseen`` test) speaker, faces aligned to 256x256."""
    from lipx.data import streams, synth

    truth_file, video = out / "lip2speech_truth.json", out / "lip2speech_test.mp4"
    speech = out / "lip2speech_real.wav"
    key = {"checkpoint": file_sha256(ckpt_path), "speaker": opts.speaker}
    if (truth := _made_from(key, truth_file, video, speech)) is not None:
        return TestVideo(video, truth["words"], speech=speech)
    _, recipe = _recipe(ckpt_path, "grid")
    held = streams.held_out_speakers(recipe)
    if not held:
        raise InputError(f"{ckpt_path}: its corpus has no held-out test speakers")
    speaker = held[opts.speaker % len(held)]
    clip = next(c for c in synth.plan_clips(recipe) if c.speaker == speaker)
    spec = streams.StreamSpec("demo_lip2speech", speaker, (clip.words,), pauses=False)
    streams.write_stream(streams.render_stream(recipe, streams.script_stream(recipe, spec)),
                         video, wav=speech)
    truth_file.write_text(json.dumps({"words": list(clip.words), "made_from": key}))
    return TestVideo(video, list(clip.words), speech=speech)


def _made_from(key: dict, truth_file: Path, *outputs: Path) -> dict | None:
    """The stored truth when ``outputs`` exist and were made from ``key`` (checkpoint digest and
    options), else None: what another checkpoint or other options made is made again."""
    if not (truth_file.is_file() and all(p.is_file() for p in outputs)):
        return None
    truth = json.loads(truth_file.read_text())
    return truth if truth.get("made_from") == key else None


# --- export, stream, bench -----------------------------------------------------------------


def _export(ckpt: Path, package: Path, engine: str, say: Say) -> Path:
    from lipx.export.api import ExportOptions, export_package
    from lipx.package import Manifest

    if (package / "manifest.json").is_file():
        manifest = Manifest.read(package)
        if manifest.checkpoint_sha256 == file_sha256(ckpt):
            say(f"   {package}: reused ({manifest.model_name})")
            return package
    package.parent.mkdir(parents=True, exist_ok=True)
    result = export_package(ckpt, ExportOptions(output=package, engine=engine, force=True),
                            progress=lambda m: say(f"     {m}"))
    say(f"   {result.summary()}")
    return package


def _stream(package: Path, video: TestVideo, outputs, say: Say, **options):
    from lipx.package import Package
    from lipx.runtime.stream import StreamOptions, make_sinks, stream

    opts = StreamOptions(**options)
    opened = Package.open(package)
    sinks = make_sinks(opened.manifest, opts, outputs, console=_Indented(say))
    stats = stream(opened, str(video.video), opts, sinks)
    say(f"   compute p50 {stats.compute.p50_ms:.1f} ms per frame, real-time factor "
        f"{stats.rtf:.2f} (< 1 keeps up with the camera)")
    return stats


def _stream_words(package: Path, video: TestVideo, out: Path, say: Say
                  ) -> tuple[list[str], dict[str, float]]:
    from lipx.runtime.stream import Outputs

    say(f"   lipreading {video.video.name} (truth: {' '.join(video.words)}):")
    jsonl = out / "words.jsonl"
    _stream(package, video, Outputs(jsonl=str(jsonl), srt=out / "words.srt",
                                    save=out / "lipreading.mp4"), say)
    events = [json.loads(line) for line in jsonl.read_text().splitlines()]
    read = [e["word"] for e in events if e["type"] == "word"]
    scores = score_words(read, video.words)
    say(f"   read {scores['correct']:.0f} of {len(video.words)} words right, in order "
        f"({scores['extra']:.0f} extra)")
    return read, scores


def score_words(read: list[str], truth: list[str]) -> dict[str, float]:
    """Words read against the words said, in order (as word error rates count them).

    Returns ``correct`` (the longest common subsequence: words read right, in the right order),
    ``extra`` (words read beyond those) and ``accuracy`` (correct / words said).
    """
    lcs = [[0] * (len(truth) + 1) for _ in range(len(read) + 1)]
    for i, r in enumerate(read):
        for j, t in enumerate(truth):
            lcs[i + 1][j + 1] = lcs[i][j] + 1 if r == t else max(lcs[i][j + 1], lcs[i + 1][j])
    correct = lcs[-1][-1]
    return {"correct": float(correct), "extra": float(len(read) - correct),
            "accuracy": correct / max(len(truth), 1)}


def _stream_speech(package: Path, video: TestVideo, out: Path, say: Say) -> dict[str, float]:
    from lipx.audio import SAMPLE_RATE, load_audio
    from lipx.runtime.metrics import speech_scores
    from lipx.runtime.stream import Outputs

    say(f"   lip-to-speech {video.video.name} (says: {' '.join(video.words)}):")
    wav = out / "speech.wav"
    _stream(package, video, Outputs(wav=wav, save=out / "lip2speech.mp4"), say)
    generated, sr = load_audio(wav), SAMPLE_RATE
    if video.speech is None:
        raise InputError(f"{video.video}: no reference speech to score the generated speech")
    reference = load_audio(video.speech)
    n = min(len(generated), len(reference))
    scores = speech_scores(reference[:n], generated[:n], sr, with_pesq=True)
    say("   generated speech vs the speaker's real voice: " + ", ".join(
        f"{k.upper()} {v:.2f}" for k, v in scores.items()))
    return scores


def _bench(package: Path, ckpt: Path, out: Path, budget_s: float, say: Say) -> None:
    from rich.console import Console

    from lipx.benchmarks.api import BenchOptions, bench
    from lipx.benchmarks.report import table, write_report

    out.mkdir(parents=True, exist_ok=True)
    report = bench(package, BenchOptions(
        engines=("onnx-cpu-fp32",), batch_sizes=(1,), budget_s=budget_s, checkpoint=ckpt,
        compile_timeout_s=0, max_clips=2, out=out))
    write_report(report, out)
    text = io.StringIO()
    Console(file=text, width=190, force_terminal=False).print(table(report))
    for line in text.getvalue().rstrip().splitlines():
        say(f"   {line}")
    say(f"   full report: {out / 'bench.md'}")


class _Indented:
    """A text stream for the printed words that indents them under the demo's headings."""

    def __init__(self, say: Say) -> None:
        self.say, self.buffer = say, ""

    def write(self, text: str) -> None:
        self.buffer += text
        *lines, self.buffer = self.buffer.split("\n")
        for line in lines:
            self.say(f"     {line}")

    def flush(self) -> None:
        pass


def _shown(path: Path) -> Path:
    """``path`` relative to the working folder when it is inside it (shorter to copy)."""
    try:
        return path.relative_to(Path.cwd())
    except ValueError:
        return path


def next_commands(result: DemoResult) -> list[str]:
    """What to try after the demo."""
    pkg = result.out / "packages"
    return [
        f"lipx stream webcam --model {pkg}/lipreading --crop auto   # the demo's model knows "
        "20 words and only drawn faces: on your own face expect few words right",
        "lipx convert LRW_CHECKPOINT.pth --vocab lrw500.txt -o lrw.lipx && lipx export lrw.lipx "
        "-o lrw-pkg && lipx stream webcam --model lrw-pkg --crop auto   # real faces: the "
        "released LRW model (500 words; its head has no no-word class, so pauses can make words)",
        f"lipx stream {result.out}/lip2speech_test.mp4 --model {pkg}/lip2speech --wav out.wav",
        f"lipx bench {pkg}/lipreading --out bench/   # every engine x precision",
        f"lipx export {_shown(CHECKPOINTS / 'lipreading.lipx')} -o pkg-trt --engine trt   "
        "# TensorRT FP16 plans (TensorRT-RTX builds them without a GPU; they run on an RTX GPU)",
        "lipx data prepare lrw /data/lrw -o lrw-prep && lipx train lipreading lrw-prep -o run "
        "--preset original   # train on real LRW (GRID: lipx data prepare grid ...)",
    ]


