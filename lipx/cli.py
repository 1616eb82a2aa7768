"""The ``lipx`` command line: a thin typer layer over the library.

Each command parses its options, calls one library function (imported inside the command so that
``lipx --help`` stays fast and torch-free), and prints the result. ``LipxError`` becomes one red
line and exit code 1; a traceback only with ``--debug``.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from lipx import __version__
from lipx.errors import InputError, LipxError
from lipx.extras import require
from lipx.runtime.backends import BACKENDS, FORMATS, all_precisions  # stdlib only
from lipx.tasks import SPECS  # stdlib only

app = typer.Typer(
    name="lipx",
    help="Visual-speech models (lipreading, lip-to-speech) from PyTorch training to real-time "
    "ONNX/TensorRT streaming.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Make or prepare audio-visual corpora (synthetic, GRID, LRW).",
                       no_args_is_help=True)
app.add_typer(data_app, name="data")

console = Console(stderr=True, highlight=False, soft_wrap=True)
_state = {"debug": False}


# --- options shared by commands: each defined once, spelled and typed the same everywhere ------

Engine = Enum("Engine", {n: n for n in BACKENDS}, type=str)  # type: ignore[misc]
Precision = Enum("Precision", {p: p for p in all_precisions()}, type=str)  # type: ignore[misc]
Format = Enum("Format", {f: f for f in FORMATS}, type=str)  # type: ignore[misc]
_ENGINES = "; ".join(f"{b.name}: {b.description}" for b in BACKENDS.values())
_PRECISIONS = "; ".join(f"{b.name}: {', '.join(b.precisions)} (default {b.default_precision})"
                        for b in BACKENDS.values())
_DEFAULT_WINDOWS = ", ".join(f"{t.default_window} {t.task}" for t in SPECS.values())
_DEFAULT_STRIDES = ", ".join(f"window/{t.stride_fraction} {t.task}" for t in SPECS.values())

EngineOption = Annotated[Engine, typer.Option(help=f"Engine. {_ENGINES}.")]
PrecisionOption = Annotated[Optional[Precision], typer.Option(
    help=f"Numeric precision, per engine: {_PRECISIONS}.")]
EngineDeviceOption = Annotated[Optional[str], typer.Option(
    help="Device of the engine: onnx cpu, cuda or tensorrt; trt cuda. "
    "(default: cpu for onnx, cuda for trt)")]
TorchDeviceOption = Annotated[Optional[str], typer.Option(
    help="PyTorch device: auto, cpu, cuda, cuda:N. (default: auto)")]
WindowOption = Annotated[Optional[int], typer.Option(
    help=f"Frames per backend window. (default: the package's; export: the task's, "
    f"{_DEFAULT_WINDOWS})")]
StrideOption = Annotated[Optional[int], typer.Option(
    help="Frames between backend runs (and per front-end chunk when timing). (default: the "
    f"package's; export: the task's, {_DEFAULT_STRIDES})")]
ThresholdOption = Annotated[Optional[float], typer.Option(
    help="Lipreading: least posterior of a window's top word (a model for streams: of speech, "
    "1 - no-word). (default: the package's)")]
AgreementOption = Annotated[Optional[int], typer.Option(
    help="Lipreading: successive windows that must agree on a word. (default: the package's)")]
LookaheadOption = Annotated[Optional[int], typer.Option(
    help="Lip-to-speech: frames at each window's end kept as right context only. "
    "(default: the package's)")]
AtolOption = Annotated[Optional[float], typer.Option(
    help="Absolute parity tolerance against the reference. (default: the task's, per "
    "precision)")]
RtolOption = Annotated[Optional[float], typer.Option(
    help="Parity tolerance relative to max|reference|. (default: the task's, per precision)")]
MinTop1Option = Annotated[Optional[float], typer.Option(
    help="Lipreading: least top-1 agreement with the reference. (default: the task's, per "
    "precision)")]
MaxStoiDropOption = Annotated[Optional[float], typer.Option(
    help="Lip-to-speech: largest STOI loss against the reference. (default: the task's, per "
    "precision)")]
SplitOption = Annotated[Optional[str], typer.Option(
    help="Split protocol: lrw; GRID overlap, unseen, four, sN. (default: the corpus')")]
PartOption = Annotated[str, typer.Option(help="Part of the corpus: train, val or test.")]
MaxClipsOption = Annotated[int, typer.Option(help="Score at most N clips (0: all).")]
CropOption = Annotated[str, typer.Option(
    help="lrw: frames are aligned 256x256 faces; auto: track the face in any video.")]
ThreadsOption = Annotated[Optional[int], typer.Option(
    help="Intra-op threads per engine call, PyTorch's and onnxruntime's (default: theirs; "
    "serve: 1 on the CPU, where its front-end and backend calls run side by side).")]
MaxFramesOption = Annotated[Optional[int], typer.Option(help="Stop after N frames.")]
TritonOption = Annotated[Optional[str], typer.Option(
    help="Make the engine calls on the Triton Inference Server at http://HOST:PORT that serves "
    "this package's repository (lipx export --format triton); the streams' state stays here.")]
ChunkOption = Annotated[int, typer.Option(
    help="New frames per front-end call (1: lowest latency; more: larger engine calls, up to "
    "chunk/fps more latency).")]
JsonOption = Annotated[Optional[Path], typer.Option(
    "--json", help="Write the results as JSON to this file.")]
WorkersOption = Annotated[int, typer.Option(help="Parallel worker processes.")]
CorpusArgument = Annotated[Path, typer.Argument(help="A prepared corpus (lipx data prepare).")]


def _gates() -> str:
    """The default parity gates of every task, for --gate's help."""
    def gate(p: str, g) -> str:
        top1 = f" top-1>={g.min_top1:g}" if g.min_top1 else ""
        stoi = f" STOI drop<={g.max_stoi_drop:g}" if g.max_stoi_drop else ""
        return f"{p} {g.atol:g}+{g.rtol:g}|ref|{top1}{stoi}"

    return "; ".join(f"{t.task} " + ", ".join(gate(p, g) for p, g in t.tolerances.items())
                     for t in SPECS.values())


def _version(value: bool) -> None:
    if value:
        print(f"lipx {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log progress details.")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks and debug logs.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """lipx: lipreading and lip-to-speech, from training to real-time streaming."""
    _state["debug"] = debug
    level = logging.DEBUG if debug else logging.INFO if verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


def done(message: str, started: float) -> None:
    """The one summary line every command ends with."""
    console.print(f"[green]PASSED[/green] | {message} | {time.perf_counter() - started:.1f} s")


# --- checkpoints: convert, info -------------------------------------------------------------


@app.command()
def convert(
    src: Annotated[Path, typer.Argument(help="The original checkpoint (.pth/.ckpt/.pt).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Where to write the lipx checkpoint.")],
    from_: Annotated[
        Optional[str],
        typer.Option("--from", help="Original layout: lipreading-original or vca-gan-original "
                     "(detected from the checkpoint's groups when omitted)."),
    ] = None,
    vocab: Annotated[
        Optional[Path],
        typer.Option(help="Text file with one class label per line, in output order "
                     "(lipreading; LRW: the 500 words sorted)."),
    ] = None,
) -> None:
    """Convert a released original checkpoint into a lipx checkpoint."""
    require("export", "lipx convert")
    from lipx.models.checkpoint import save_checkpoint
    from lipx.models.convert import convert_original

    started = time.perf_counter()
    words = _read_vocab(vocab) if vocab else None
    ckpt = convert_original(src, from_, vocabulary=words)
    save_checkpoint(ckpt, out)
    done(f"{ckpt.task} ({ckpt.preset or 'custom'}, {ckpt.num_parameters():,} parameters) -> {out}",
         started)


@app.command("slim")
def slim_(
    src: Annotated[Path, typer.Argument(help="A lipx checkpoint (a training run's best.lipx).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Where to write the slim checkpoint.")],
    half: Annotated[bool, typer.Option(
        "--half", help="Store weights as float16 (about half the size; "
        "loaded back as float32).")] = False,
) -> None:
    """Keep only what inference and export need: drop the optimiser state (--resume) and the
    training-only discriminators."""
    require("export", "lipx slim")
    from lipx.models.checkpoint import load_checkpoint, save_checkpoint, slim

    started = time.perf_counter()
    before = src.stat().st_size if src.is_file() else 0
    save_checkpoint(slim(load_checkpoint(src), half=half), out)
    done(f"{before / 1e6:.1f} MB -> {out} {out.stat().st_size / 1e6:.1f} MB", started)


def _read_vocab(path: Path) -> list[str]:
    from lipx.errors import InputError

    if not path.is_file():
        raise InputError(f"vocabulary file {path} does not exist")
    words = [w.strip() for w in path.read_text().splitlines() if w.strip()]
    if not words:
        raise InputError(f"vocabulary file {path} is empty")
    return words


@app.command()
def info(
    path: Annotated[Path, typer.Argument(help="A lipx checkpoint, or a model package folder.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Show what a checkpoint or a package holds: a checkpoint's task, preset, parameters per
    module and preprocessing; a package's task spec, schedule, graphs, plans and parity."""
    import json

    from rich.table import Table

    from lipx.benchmarks.target import is_package

    if is_package(path):
        from lipx.package import Manifest, summarize

        summary = summarize(Manifest.read(path.parent if path.is_file() else path))
    else:
        require("export", "lipx info of a checkpoint")
        from lipx.models.checkpoint import load_checkpoint
        from lipx.models.summary import summarize as summarize_checkpoint

        summary = summarize_checkpoint(load_checkpoint(path))
    if as_json:
        print(json.dumps(summary, indent=2))
        return
    table = Table(title=str(path), show_header=False)
    for key, value in summary.items():
        if isinstance(value, dict):
            value = "\n".join(f"{k}: {v:,}" if isinstance(v, int) else f"{k}: {v}"
                              for k, v in value.items()) or "none"
        elif isinstance(value, int) and not isinstance(value, bool):
            value = f"{value:,}"
        table.add_row(key, str(value))
    Console().print(table)


# --- data: synth ----------------------------------------------------------------------------


def _image_size(text: Optional[str]) -> Optional[tuple[int, int]]:
    """``256`` -> (256, 256); ``360x288`` -> (360, 288)."""
    if text is None:
        return None
    try:
        parts = [int(p) for p in text.lower().split("x")]
    except ValueError:
        parts = []
    if len(parts) not in (1, 2):
        raise typer.BadParameter(f"expected N or WxH, got {text!r}", param_hint="--image-size")
    return (parts[0], parts[-1])


@data_app.command("synth")
def data_synth(
    out: Annotated[Path, typer.Argument(help="Output folder of the corpus or the streams.")],
    layout: Annotated[str, typer.Option(
        help="On-disk layout: grid or lrw (a corpus), lrw-streams or grid-streams (held-out "
        "test streams of that corpus: OUT/NAME.mp4 + .wav + .align, OUT/streams.jsonl).")
    ] = "grid",
    speakers: Annotated[Optional[int], typer.Option(help="Synthetic speakers [8].")] = None,
    held_out: Annotated[Optional[int], typer.Option(
        help="Speakers kept for testing (default: one in five).")] = None,
    utterances: Annotated[Optional[int], typer.Option(
        help="GRID: sentences per speaker [50].")] = None,
    words: Annotated[Optional[int], typer.Option(
        help="Vocabulary size [GRID 51, LRW 20].")] = None,
    clips_per_word: Annotated[Optional[int], typer.Option(
        help="LRW: training clips per word [50].")] = None,
    val_per_word: Annotated[Optional[int], typer.Option(
        help="LRW: val clips per word [5].")] = None,
    test_per_word: Annotated[Optional[int], typer.Option(
        help="LRW: test clips per word [5].")] = None,
    seed: Annotated[Optional[int], typer.Option(
        help="Random seed: same seed, same corpus [0].")] = None,
    image_size: Annotated[Optional[str], typer.Option(
        help="Frame size N or WxH [GRID 360x288, LRW 256].")] = None,
    workers: WorkersOption = 1,
    streams: Annotated[Optional[int], typer.Option(
        help="Streams layouts: number of streams [10].")] = None,
    per_stream: Annotated[Optional[int], typer.Option(
        help="Streams layouts: LRW words / GRID sentences per stream [8 / 3].")] = None,
    pauses: Annotated[Optional[bool], typer.Option(
        "--pauses/--no-pauses", help="Streams layouts: pauses, silence and still faces between "
        "words [--pauses]; --no-pauses: words in a row.")] = None,
    like: Annotated[Optional[Path], typer.Option(
        help="Streams layouts: the corpus recipe of a checkpoint (meta.corpus_synth; needs "
        "torch), a corpus folder or its synth.json, instead of the recipe options.")] = None,
    part: Annotated[Optional[str], typer.Option(
        help="Streams layouts: whose streams: held-out (the held-out speakers), val or test "
        "(the first or second half of them: tune on val, report on test) or train (the "
        "training speakers, for `lipx train --set streams=DIR`) [held-out].")] = None,
    wild: Annotated[bool, typer.Option(
        help="lrw-streams: place the face in a 640x480 frame, moving, scaling and rotating up "
        "to +-20 degrees, the true transform of each frame in NAME.wild.json (tests --crop "
        "auto against the truth).")] = False,
) -> None:
    """Write a deterministic synthetic audio-visual corpus, or continuous streams of its speakers:
    GRID's or LRW's layout, or (--layout lrw-streams|grid-streams) held-out speakers' test
    streams of one."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from lipx.data.stream_corpus import StreamsOptions, synth_options, synthesize_streams
    from lipx.data.synth import synthesize_corpus

    started = time.perf_counter()
    given = dict(speakers=speakers, held_out=held_out, utterances=utterances, words=words,
                 clips_per_word=clips_per_word, val_per_word=val_per_word,
                 test_per_word=test_per_word, image_size=_image_size(image_size), seed=seed)
    opts = synth_options(out, layout.lower(), given, workers=workers, streams=streams,
                         per_stream=per_stream, pauses=pauses, like=like, part=part,
                         wild=wild)
    columns = ("{task.description}", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task(f"synth {opts.layout}", total=None)

        def advance(n: int, total: int) -> None:
            bar.update(task, completed=n, total=total)

        if isinstance(opts, StreamsOptions):
            line = synthesize_streams(opts, progress=advance).summary()
        else:
            report = synthesize_corpus(opts, progress=advance)
            line = (f"{report.written} clips written, {report.skipped} already there, "
                    f"{len(report.speakers)} speakers ({len(report.held_out)} held out), "
                    f"{len(report.vocabulary)} words -> {report.out}")
    done(line, started)


# --- data: prepare --------------------------------------------------------------------------


@data_app.command("prepare")
def data_prepare(
    layout: Annotated[str, typer.Argument(help="Source layout: grid or lrw.")],
    src: Annotated[Path, typer.Argument(help="Root of the corpus (GRID: sN/video/*.mpg; LRW: "
                                        "WORD/{train,val,test}/*.mp4).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder of the prepared corpus.")],
    workers: WorkersOption = 1,
    splits: Annotated[Optional[Path], typer.Option(
        help="GRID: folder with split lists (overlap_train.txt, train_4.txt, unseen_splits.txt, "
        "...); without it the documented rules are used.")] = None,
    overwrite: Annotated[bool, typer.Option(help="Redo clips that are already prepared.")] = False,
    min_frames: Annotated[Optional[int], typer.Option(
        help="Shortest usable clip in frames (default: GRID 25, LRW 29).")] = None,
) -> None:
    """Prepare GRID or LRW for training: aligned mouth regions, 16 kHz audio, index, splits.
    GRID videos without a landmark file are aligned by the face tracker of --crop auto."""
    from functools import partial

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from lipx.data.prepare import PrepareOptions, prepare_corpus
    from lipx.runtime.roi import make_roi

    started = time.perf_counter()
    opts = PrepareOptions(layout=layout.lower(), src=src, out=out, workers=workers, splits=splits,
                          overwrite=overwrite, min_frames=min_frames,
                          tracker=partial(make_roi, "auto"))  # type: ignore[arg-type]
    columns = ("{task.description}", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task(f"prepare {opts.layout}", total=None)
        report = prepare_corpus(
            opts, progress=lambda n, total: bar.update(task, completed=n, total=total))
    for failure in report.failed[:10]:
        console.print(f"[yellow]skipped[/yellow] {failure.source}: {failure.reason} "
                      f"({failure.detail})")
    if len(report.failed) > 10:
        console.print(f"[yellow]... and {len(report.failed) - 10} more[/yellow] in {report.report}")
    if report.clips == 0:
        raise LipxError(f"no clip of {src} could be prepared ({len(report.failed)} failed); "
                        f"see {report.report}")
    done(f"{report.prepared} prepared, {report.skipped} already done, {len(report.failed)} failed "
         f"-> {report.index} (report: {report.report})", started)


# --- train, eval ---------------------------------------------------------------------------


@app.command()
def train(
    task: Annotated[str, typer.Argument(help="lipreading or lip2speech.")],
    data: CorpusArgument,
    out: Annotated[Path, typer.Option("--out", "-o", help="Run folder: last/best checkpoints, "
                                      "config.yaml, TensorBoard logs.")],
    config: Annotated[Optional[Path], typer.Option(
        help="YAML/TOML file of training options.")] = None,
    preset: Annotated[Optional[str], typer.Option(
        help="Model preset: original, original-mstcn (lipreading), small, tiny. "
        "[default: small]")] = None,
    steps: Annotated[Optional[int], typer.Option(help="Optimiser steps. [default: 2000]")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="Clips per step per process.")] = None,
    split: SplitOption = None,
    device: TorchDeviceOption = None,
    amp: Annotated[Optional[str], typer.Option(
        help="Mixed precision on CUDA: none, bf16, fp16.")] = None,
    resume: Annotated[bool, typer.Option(help="Continue the run in --out from last.lipx.")] = False,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="Override any option: "
                    "key=value (e.g. lr=0.01, loss_weights.recon=10); repeatable.")] = None,
) -> None:
    """Train a model (single process, or DDP under torchrun); Ctrl-C, SIGTERM or SIGHUP saves
    last.lipx. For streams: --set streams=DIR (training streams: lipx data synth DIR --layout
    lrw-streams|grid-streams --like CORPUS --part train) mixes in windows cut anywhere in them,
    every item with the front-end's context frames as the streaming runtime gives them;
    lipreading also gains a no-word class, and --set val_streams=DIR (--part val) picks best by
    clip and window accuracy; --set init=CKPT fine-tunes a clip-trained model
    (configs/*-small-streams.yaml)."""
    require("train", "lipx train")
    from lipx.train.config import TrainConfig, merge, parse_overrides, read_config_file
    from lipx.train.run import train as run_train

    started = time.perf_counter()
    options = read_config_file(config) if config else {}
    options = merge(options, parse_overrides(set_ or []))
    explicit = {"preset": preset, "steps": steps, "batch_size": batch_size, "split": split,
                "device": device, "amp": amp}
    options.update({k: v for k, v in explicit.items() if v is not None})
    cfg = TrainConfig.from_dict({**options, "task": task, "data": str(data), "out": str(out)})
    with _progress(f"train {task}", cfg.steps) as advance:
        def on_step(step: int, logs: dict) -> None:
            advance(step, logs)
            val = {k: v for k, v in logs.items() if k.startswith("val_")}
            if val:
                console.print(f"step {step} ({(time.perf_counter() - started) / 60:.1f} min): "
                              + " ".join(f"{k}={v:.4f}" for k, v in val.items())
                              + f" loss={logs.get('loss', logs.get('loss_g', float('nan'))):.4f}")

        result = run_train(cfg, resume=resume, on_step=on_step)
    if result.best is None:
        done(f"{result.steps} steps, no validation -> {out}/last.lipx", started)
    else:
        done(f"{result.steps} steps, best {result.metric} {result.best:.3f} -> {out}/best.lipx, "
             f"{out}/last.lipx", started)


@app.command("eval")
def eval_(
    checkpoint: Annotated[Path, typer.Argument(help="A lipx checkpoint.")],
    data: CorpusArgument,
    split: SplitOption = None,
    part: PartOption = "test",
    tta: Annotated[bool, typer.Option(help="Horizontal-flip test-time augmentation.")] = True,
    max_clips: MaxClipsOption = 0,
    wav_dir: Annotated[Optional[Path], typer.Option(help="Write generated speech here.")] = None,
    json_out: JsonOption = None,
    device: TorchDeviceOption = None,
) -> None:
    """Evaluate a checkpoint on a prepared corpus: word accuracy, or STOI/ESTOI/PESQ and
    spectrogram L1 (lipx eval-stream scores a package as a stream)."""
    require("train", "lipx eval")
    import json

    from lipx.train.evaluate import EvalOptions, evaluate

    started = time.perf_counter()
    opts = EvalOptions(checkpoint, data, split=split or "", part=part, tta=tta,
                       max_clips=max_clips, wav_dir=wav_dir, device=device or "auto")
    with _progress("eval", None) as advance:
        result = evaluate(opts, progress=lambda n, total: advance(n, {}, total))
    _print_eval(result)
    if json_out:
        json_out.write_text(json.dumps(result.to_dict(), indent=2))
    done(f"{result.task}, {result.clips} clips", started)


@app.command("eval-stream")
def eval_stream(
    package: Annotated[Path, typer.Argument(help="A model package (lipx export).")],
    streams: Annotated[Path, typer.Argument(
        help="A set of continuous test streams (lipx data synth OUT --layout "
        "lrw-streams|grid-streams).")],
    engine: EngineOption = Engine.onnx,  # type: ignore[attr-defined]
    device: EngineDeviceOption = None,
    precision: PrecisionOption = None,
    window: WindowOption = None,
    stride: StrideOption = None,
    threshold: ThresholdOption = None,
    agreement: AgreementOption = None,
    lookahead: LookaheadOption = None,
    crop: CropOption = "lrw",
    max_streams: Annotated[int, typer.Option(help="Score at most N streams (0: all).")] = 0,
    exactness: Annotated[bool, typer.Option(
        "--exactness/--no-exactness", help="Also check the cached runtime against the whole "
        "front-end on every window (costs several times the streams' own compute: --no-exactness "
        "to score a large set quickly).")] = True,
    json_out: JsonOption = None,
    sweep: Annotated[Optional[list[str]], typer.Option(
        help="Vary an option, NAME=V1,V2 (window, stride, lookahead, threshold, agreement, "
        "min_gap, pad, crossfade, gl_iters); repeatable (all combinations). Writes sweep.json "
        "and sweep.png (quality against latency) to --out. Lipreading replays the recorded "
        "windows for threshold, agreement and min_gap: seconds per setting.")] = None,
    out: Annotated[Optional[Path], typer.Option(
        "--out", "-o", help="--sweep: folder for sweep.json and sweep.png.")] = None,
) -> None:
    """Run the streaming runtime over continuous streams and score it: WER (S/D/I), false words
    per minute of non-speech, emission latency; or streamed against offline STOI/ESTOI/PESQ;
    plus the cache's exactness. One setting is printed, a --sweep written."""
    import json

    from lipx.errors import InputError
    from lipx.runtime import stream_eval as se
    from lipx.runtime.stream import StreamOptions

    started = time.perf_counter()
    grid = se.parse_sweep(sweep or [])
    if grid and out is None:
        raise InputError("--sweep needs --out DIR for sweep.json and sweep.png")
    stream = StreamOptions(engine=engine.value, device=device,
                           precision=precision.value if precision else None, window=window,
                           stride=stride, threshold=threshold, agreement=agreement,
                           lookahead=lookahead, crop=crop)
    opts = se.StreamEvalOptions(package, streams, stream, max_streams=max_streams,
                                exactness=exactness)
    loaded = se.load_set(opts)  # bad input fails before any progress bar
    if grid:
        assert out is not None
        done(_sweep_streams(opts, grid, loaded, out), started)
        return
    with _progress("eval-stream", None) as advance:
        report = se.evaluate_streams(opts, lambda n, total: advance(n, {}, total), loaded)
    _print_rows(f"{report.task} streams: {package}", se.table_rows(report))
    if json_out:
        json_out.write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    name, value = report.quality()
    done(f"{report.task}, {report.streams} streams, {name} {value:.3f}", started)


def _sweep_streams(opts, grid, loaded, out: Path) -> str:
    """``eval-stream --sweep``: every setting run and printed, the sweep written to ``out``;
    returns the summary line."""
    from lipx.runtime import stream_eval as se

    with _progress("sweep", None) as advance:
        reports, skipped = se.sweep(opts, grid, lambda n, total, combo: advance(n, {}, total),
                                    loaded)
    files = se.write_sweep(reports, out)
    for line in skipped:
        console.print(f"[yellow]skipped {line}[/yellow]")
    for r in reports:
        print(f"{r.settings}: {r.quality()[0]} {r.quality()[1]:.3f}, "
              f"{se.latency_of(r)[0]} {se.latency_of(r)[1]:.2f} s")
    return f"{len(reports)} settings -> {', '.join(map(str, files))}"


def _print_rows(title: str, rows) -> None:
    from rich.table import Table

    table = Table(title=title, show_header=False)
    for name, value in rows:
        table.add_row(name, value)
    Console().print(table)


def _print_eval(result) -> None:
    from rich.table import Table

    table = Table(title=f"{result.task}: {result.clips} clips")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in result.metrics.items():
        table.add_row(key, f"{value:.4f}")
    Console().print(table)
    if result.confusions:
        print("most frequent confusions: " + ", ".join(
            f"{a}->{b} ({c})" for a, b, c in result.confusions[:5]))


def _progress(description: str, total: int | None):
    """A rich progress bar; yields advance(completed, logs, total=None)."""
    from contextlib import contextmanager

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    @contextmanager
    def bar():
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), TextColumn("{task.fields[info]}"), console=console,
                      transient=False) as p:
            job = p.add_task(description, total=total, info="")

            def advance(completed: int, logs: dict, new_total: int | None = None) -> None:
                shown = {k: v for k, v in logs.items() if isinstance(v, float)}
                info = " ".join(f"{k}={v:.3g}" for k, v in list(shown.items())[:4])
                p.update(job, completed=completed, info=info,
                         **({"total": new_total} if new_total else {}))

            yield advance

    return bar()


# --- crop -----------------------------------------------------------------------------------

SourceArgument = Annotated[str, typer.Argument(
    help="webcam, webcam:N, a video file, an rtsp/http URL, lavfi:GRAPH or a folder of images.")]


@app.command()
def crop(
    source: SourceArgument,
    out: Annotated[Optional[Path], typer.Option(
        "--out", "-o", help="Write the model's-eye view: the frame with the mouth box and the "
        "tracked points beside the crop the model receives (MP4).")] = None,
    crop: CropOption = "auto",
    jsonl: Annotated[Optional[Path], typer.Option(
        help="Write per-frame mouth box corners in source pixels as JSON lines: frame, t, "
        "found, held, corners (null without a face).")] = None,
    framing: Annotated[str, typer.Option(
        help="How the model's training faces were framed, which --crop auto fits a face to "
        "(`lipx info PKG` shows a package's): landmarks (all 98 points to LRW's reference "
        "face, as `lipx data prepare` aligns GRID) or synthetic (nose and eyes to the average "
        "face of `lipx data synth`, the framing of the shipped lipreading model).")
    ] = "landmarks",
    device: EngineDeviceOption = None,
    max_frames: MaxFramesOption = None,
) -> None:
    """Show what the model sees of a face: the mouth crop of every frame (--crop auto tracks
    the face as lipx stream does, its face models on --device) and the mouth box corners."""
    from lipx.runtime.crop_view import CropOptions, crop_video

    started = time.perf_counter()
    opts = CropOptions(crop=crop, framing=framing, device=device or "cpu",
                       max_frames=max_frames)
    with _progress(f"crop {crop}", None) as advance:
        report = crop_video(source, opts, video=out, jsonl=jsonl,
                            progress=lambda n, total: advance(n, {}, total))
    written = " and ".join(str(p) for p in (out, jsonl) if p is not None)
    done(f"{report.summary()} -> {written}", started)


# --- stream ---------------------------------------------------------------------------------


class _ClearingLines:
    """A text stream that first clears the live status line (words on a terminal)."""

    def __init__(self, out) -> None:
        self.out, self.clear = out, "\r\x1b[K" if console.is_terminal else ""

    def write(self, text: str) -> None:
        self.out.write(self.clear + text)

    def flush(self) -> None:
        self.out.flush()


def _status(line: str) -> None:
    console.file.write(f"\r\x1b[K{line}")
    console.file.flush()


@app.command()
def stream(
    source: SourceArgument,
    model: Annotated[Optional[str], typer.Option(
        "--model", "-m", help="Model package (lipx export); with --server, the name of one "
        "the server serves (default: its only one).")] = None,
    server: Annotated[Optional[str], typer.Option(
        help="Stream through a lipx serve at ws://HOST:PORT instead of running the model here "
        "(the outputs are written here).")] = None,
    engine: EngineOption = Engine.onnx,  # type: ignore[attr-defined]
    device: EngineDeviceOption = None,
    precision: PrecisionOption = None,
    crop: CropOption = "lrw",
    window: WindowOption = None,
    stride: StrideOption = None,
    chunk: ChunkOption = 1,
    threshold: ThresholdOption = None,
    agreement: AgreementOption = None,
    lookahead: LookaheadOption = None,
    jsonl: Annotated[Optional[str], typer.Option(
        help="Write results as JSON lines to FILE, or - for stdout.")] = None,
    wav: Annotated[Optional[Path], typer.Option(
        help="Lip-to-speech: write the generated speech to this WAV file.")] = None,
    srt: Annotated[Optional[Path], typer.Option(help="Lipreading: write subtitles (SRT).")] = None,
    vtt: Annotated[Optional[Path], typer.Option(
        help="Lipreading: write subtitles (WebVTT).")] = None,
    save: Annotated[Optional[Path], typer.Option(
        help="Write an annotated MP4 (mouth box, word or level meter, speech as audio).")] = None,
    play: Annotated[bool, typer.Option(
        "--play", help="Lip-to-speech: play the speech live (needs sounddevice).")] = False,
    realtime: Annotated[bool, typer.Option(
        "--realtime", help="Pace a file at its own speed, dropping frames when behind, "
        "as a camera would.")] = False,
    reconnect: Annotated[int, typer.Option(
        help="Reopen a broken network stream or webcam up to N times in a row.")] = 0,
    stats: Annotated[Optional[Path], typer.Option(
        "--stats", help="Write the latency statistics as JSON.")] = None,
    no_cache: Annotated[bool, typer.Option(
        "--no-cache", help="Recompute every window with model.onnx instead of caching per-frame "
        "features (to measure the cache).")] = False,
    max_frames: MaxFramesOption = None,
    pipeline: Annotated[Optional[bool], typer.Option(
        "--pipeline/--no-pipeline", help="Run the backend and head on a worker thread while "
        "the next frames are read (default: on for live and --realtime sources).")] = None,
    triton: TritonOption = None,
) -> None:
    """Run a model package on a camera, file or network stream: words as they are read
    (lipreading) or generated speech (lip-to-speech), with per-stage latency at the end."""
    from lipx.package import Package
    from lipx.runtime.stream import Outputs, StreamOptions, make_sinks
    from lipx.runtime.stream import stream as run_stream
    from lipx.runtime.tasks import stream_task

    started = time.perf_counter()
    opts = StreamOptions(engine=engine.value, device=device,
                         precision=precision.value if precision else None, crop=crop,
                         window=window, stride=stride, chunk=chunk, threshold=threshold,
                         agreement=agreement, lookahead=lookahead, cache=not no_cache,
                         realtime=realtime, reconnect=reconnect, max_frames=max_frames,
                         pipeline=pipeline, triton=triton)
    outputs = Outputs(jsonl=jsonl, wav=wav, srt=srt, vtt=vtt, save=save, play=play)
    if server is not None:
        from lipx.serve.client import stream_remote

        result = stream_remote(server, source, opts, lambda m: make_sinks(
            m, opts, outputs, console=_ClearingLines(sys.stdout)), model=model,
            on_lost=lambda why: console.print(f"[yellow]{why}[/]"))
    elif model is None:
        raise InputError("give the model package with --model (or a server with --server)")
    else:
        package = Package.open(model)  # once: the sinks and the stream share it
        sinks = make_sinks(package.manifest, opts, outputs, console=_ClearingLines(sys.stdout))
        result = run_stream(package, source, opts, sinks,
                            on_status=_status if console.is_terminal else None)
        if console.is_terminal:
            _status("")
    console.print(result.format_table())
    run = result.run
    if run.frames_without_face:
        console.print(f"frames without a face: {run.frames_without_face}")
    if stats:
        result.save(stats)
    made = stream_task(run.task).made(run)
    stopped = "interrupted, " if run.interrupted else ""
    done(f"{stopped}{run.task} on {run.engine}/{run.device}: "
         f"{result.frames_out} frames, {made}; compute p50 {result.compute.p50_ms:.1f} ms, "
         f"RTF {result.rtf:.2f}", started)


@app.command()
def serve(
    packages: Annotated[list[Path], typer.Argument(
        help="Model packages (lipx export) to serve, each under its model name.")],
    host: Annotated[str, typer.Option(
        help="Address to listen on (0.0.0.0: every interface).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port (0: any free one; the address is printed).")
                    ] = 8000,
    engine: EngineOption = Engine.onnx,  # type: ignore[attr-defined]
    device: EngineDeviceOption = None,
    precision: PrecisionOption = None,
    threads: ThreadsOption = None,
    workers: Annotated[Optional[int], typer.Option(
        help="Front-end calls that may run at once (default: one per core on the CPU).")
    ] = None,
    chunk: ChunkOption = 2,
    max_streams: Annotated[int, typer.Option(
        help="Live streams at most; one more is refused (the server is full).")] = 32,
    max_batch: Annotated[int, typer.Option(
        help="Streams' front-end chunks or windows per engine call at most (1: no batching).")
    ] = 16,
    max_wait_ms: Annotated[float, typer.Option(
        help="How long an engine call waits for other streams' work after the first.")] = 2.0,
    idle_timeout: Annotated[float, typer.Option(
        help="Seconds without a message after which a stream is ended.")] = 10.0,
    max_message_bytes: Annotated[int, typer.Option(
        help="Largest WebSocket message accepted (a frame).")] = 4 << 20,
    certfile: Annotated[Optional[Path], typer.Option(
        help="TLS certificate (PEM) for https/wss; browsers need it off localhost.")] = None,
    keyfile: Annotated[Optional[Path], typer.Option(help="TLS private key (PEM).")] = None,
    triton: TritonOption = None,
    ray: Annotated[Optional[str], typer.Option(
        "--ray", rich_help_panel="Ray Serve",
        help="Serve as replicas of a Ray Serve deployment on this cluster: 'auto' (the one "
             "`ray start --head` runs here), 'local' (started for this command), or an "
             "address. Every node must see the packages at the same path.")] = None,
    replicas: Annotated[int, typer.Option(
        rich_help_panel="Ray Serve",
        help="Replicas (each one process: the packages loaded once, streams batched "
             "within it); the fewest when autoscaling.")] = 1,
    max_replicas: Annotated[Optional[int], typer.Option(
        rich_help_panel="Ray Serve",
        help="Autoscale on live streams per replica, up to this many replicas.")] = None,
    target_streams: Annotated[Optional[int], typer.Option(
        rich_help_panel="Ray Serve",
        help="Live streams per replica the autoscaler aims at (default: 3/4 of "
             "--max-streams, which is per replica under Ray).")] = None,
    cpus_per_replica: Annotated[float, typer.Option(
        rich_help_panel="Ray Serve",
        help="CPUs each replica reserves (and its front-end workers, unless --workers).")
    ] = 1.0,
    gpus_per_replica: Annotated[Optional[float], typer.Option(
        rich_help_panel="Ray Serve",
        help="GPUs each replica reserves (default: 1 where the cluster has GPUs and the "
             "engines are not on the CPU).")] = None,
) -> None:
    """Serve packages to many live streams at once: WebSocket streams (docs/protocol.md),
    batched across streams, a page at / for the browser's camera, /metrics and /healthz.
    With --ray, the same server runs as replicas of a Ray Serve deployment."""
    require("serve", "lipx serve")
    import asyncio

    from lipx.serve.server import ServeOptions, Server

    opts = ServeOptions(host=host, port=port, engine=engine.value, device=device,
                        precision=precision.value if precision else None, threads=threads,
                        chunk=chunk, workers=workers, max_streams=max_streams,
                        max_batch=max_batch,
                        max_wait_ms=max_wait_ms, idle_timeout_s=idle_timeout,
                        max_message_bytes=max_message_bytes, certfile=certfile, keyfile=keyfile,
                        triton=triton)
    if not _state["debug"]:
        logging.getLogger("lipx.serve").setLevel(logging.INFO)
    started = time.perf_counter()
    if ray is not None:
        _serve_on_ray(packages, opts, ray, replicas, max_replicas, target_streams,
                      cpus_per_replica, gpus_per_replica)
        done("deployment deleted", started)
        return
    server = Server([str(p) for p in packages], opts)

    def ready(url: str) -> None:
        names = ", ".join(server.models)
        console.print(f"serving {names} at {url} (page: {url}/, protocol: ws{url[4:]}/ws); "
                      f"Ctrl-C stops")

    from lipx.runtime.options import blas_threads

    with blas_threads(1):  # tiny per-frame matrices, as lipx stream
        asyncio.run(server.serve_forever(ready))
    done("server stopped", started)


def _serve_on_ray(packages: list[Path], opts, address: str, replicas: int,
                  max_replicas: int | None, target_streams: int | None, cpus: float,
                  gpus: float | None) -> None:
    require("ray", "lipx serve --ray")
    from lipx.serve.ray import RayOptions, serve_on_ray

    ray_opts = RayOptions(address=address, replicas=replicas, max_replicas=max_replicas,
                          target_streams=target_streams, cpus_per_replica=cpus,
                          gpus_per_replica=gpus)

    def ready(url: str) -> None:
        scale = (f"{replicas}-{max_replicas} replicas (autoscaled)" if max_replicas
                 else f"{replicas} replica{'s' * (replicas > 1)}")
        console.print(f"serving on Ray ({scale}) at {url} (page: {url}/, protocol: "
                      f"ws{url[4:]}/ws); Ctrl-C deletes the deployment")

    serve_on_ray([str(p) for p in packages], opts, ray_opts, ready)


@app.command("bench-serve")
def bench_serve(
    url: Annotated[str, typer.Argument(help="The server: ws://HOST:PORT (or http://).")],
    video: Annotated[Path, typer.Option(
        help="The video every stream sends, paced like a camera (looped).")],
    streams: Annotated[Optional[str], typer.Option(
        help="Stream counts to run, comma-separated (default 4; with --ramp "
        "4,8,12,16,20,24,28,32,40).")] = None,
    ramp: Annotated[bool, typer.Option(
        "--ramp", help="Stop after the first count that drops a frame or misses the emission "
        "p95; report the largest sustained.")] = False,
    seconds: Annotated[float, typer.Option(help="Seconds each count streams.")] = 20.0,
    model: Annotated[Optional[str], typer.Option(
        help="The model to ask for, when the server serves several.")] = None,
    crop: CropOption = "lrw",
    json_out: JsonOption = None,
) -> None:
    """Load a lipx serve with camera-paced streams: frames dropped, emission latency, batch
    sizes, server CPU and memory per stream count."""
    require("serve", "lipx bench-serve")
    from lipx.serve.bench import BenchServeOptions
    from lipx.serve.bench import bench_serve as run_bench

    started = time.perf_counter()
    counts = [_int_item(s, "--streams") for s in streams.split(",")] if streams else []
    opts = BenchServeOptions(url=url, video=video, streams=counts, seconds=seconds, ramp=ramp,
                             model=model, crop=crop, json_path=json_out)
    report = run_bench(opts, progress=lambda line: console.print(line, markup=False))
    if ramp:
        done(f"sustained {report['sustained'] or 0} streams (0 dropped, emission p95 <= "
             f"{opts.max_p95_s:g} s)", started)
    else:
        done(f"{len(report['runs'])} stream counts measured", started)


def _int_item(text: str, option: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise InputError(f"{option} takes comma-separated integers, got {text!r}") from None


# --- export ---------------------------------------------------------------------------------


@app.command()
def export(
    checkpoint: Annotated[Path, typer.Argument(
        help="lipx checkpoint to export (lipx convert makes one from an original).")],
    out: Annotated[Path, typer.Option(
        "--out", "-o", help="Package directory to write; its parent must exist. "
        "Written atomically.")],
    engine: EngineOption = Engine.onnx,  # type: ignore[attr-defined]
    precision: PrecisionOption = None,
    format: Annotated[Format, typer.Option(
        "--format", help="package, or triton to add a Triton model repository (triton/)."
    )] = Format.package,  # type: ignore[attr-defined]
    window: WindowOption = None,
    stride: StrideOption = None,
    max_batch: Annotated[int, typer.Option(
        help="Largest batch of the TensorRT profiles and Triton.")] = 8,
    opset: Annotated[int, typer.Option(help="ONNX opset (dynamo exporter, >= 18).")] = 18,
    workspace_mb: Annotated[int, typer.Option(
        help="TensorRT builder workspace (memory pool) limit in MiB.")] = 2048,
    trt_flavour: Annotated[str, typer.Option(
        help="--engine trt: auto (full TensorRT where it and a GPU are, else TensorRT-RTX), "
        "tensorrt (built on a GPU of the architecture it runs on) or rtx (TensorRT-RTX: "
        "builds without a GPU, for RTX GPUs).")] = "auto",
    trt_targets: Annotated[str, typer.Option(
        help="TensorRT-RTX: comma-separated compute capabilities to build for, e.g. 8.9,12.0 "
        "(default: 8.0,8.6,8.9,12.0,12.1; 7.5 only when named).")] = "",
    profile: Annotated[Optional[list[str]], typer.Option(
        help="TensorRT profile range [ROLE.]DIM=MIN:OPT:MAX, repeatable (dims batch, frames, "
        "chunk; e.g. frames=5:29:87, frontend.batch=1:1:1); default: from the window, stride "
        "and max batch.")] = None,
    trt_cache_dir: Annotated[Optional[Path], typer.Option(
        help="TensorRT plan and timing caches, reused across builds "
        "(default: ~/.cache/lipx/tensorrt).")] = None,
    parity: Annotated[bool, typer.Option(
        "--parity/--no-parity", help="Check every artifact against PyTorch; "
        "out of tolerance fails the export.")] = True,
    atol: AtolOption = None,
    rtol: RtolOption = None,
    min_top1: MinTop1Option = None,
    force: Annotated[bool, typer.Option(
        "--force", help="Replace an existing non-empty output directory.")] = False,
    faces: Annotated[bool, typer.Option(
        "--faces", help="Also carry the face models --crop auto tracks with (MediaPipe face "
        "detector and mesh, 2.9 MB, Apache-2.0) in faces/; with --engine trt their TensorRT "
        "plans too, so `lipx stream --engine trt --crop auto` tracks faces on the GPU.")] = False,
) -> None:
    """Export a checkpoint to a model package: ONNX graphs (whole model, streaming front-end and
    backend), optional TensorRT plans (strongly typed; TensorRT-RTX builds them without a GPU),
    parity report and manifest.json. The tolerance options replace those of the --precision
    artifacts; the ones used are recorded in the manifest."""
    require("export", "lipx export")
    from lipx.export.api import ExportOptions, export_package

    started = time.perf_counter()
    opts = ExportOptions(
        output=out, engine=engine.value, precision=precision.value if precision else None,
        format=format.value, window=window, stride=stride, max_batch=max_batch, opset=opset,
        workspace_mb=workspace_mb, parity=parity, atol=atol, rtol=rtol, min_top1=min_top1,
        force=force, trt_flavour=trt_flavour, profiles=tuple(profile or ()),
        trt_targets=tuple(t.strip() for t in trt_targets.split(",") if t.strip()),
        cache_dir=trt_cache_dir, faces=faces,
    )
    result = export_package(checkpoint, opts, progress=lambda m: console.print(f"[dim]{m}[/dim]"))
    done(result.summary(), started)




# --- bench ----------------------------------------------------------------------------------


def _ints(text: str, option: str) -> tuple[int, ...]:
    from lipx.errors import InputError

    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise InputError(f"{option} takes comma-separated integers, got {text!r}") from None


def _names(values: list[str], option: str) -> tuple[str, ...]:
    """A repeatable option's values; a comma inside one is refused with the way to say it."""
    from lipx.errors import InputError

    for value in values:
        if "," in value:
            again = " ".join(f"{option} {v.strip()}" for v in value.split(",") if v.strip())
            raise InputError(f"{option} takes one name per use, got {value!r}; repeat it: {again}")
    return tuple(values)


@app.command()
def bench(
    target: Annotated[Path, typer.Argument(
        help="A model package (lipx export) or a lipx checkpoint (exported first).")],
    engine: Annotated[Optional[list[str]], typer.Option(
        help="An engine (torch, onnx, trt: all its rows) or one row: torch, torch-compile, "
        "onnx-cpu-fp32, onnx-cpu-int8, onnx-cuda-fp32, onnx-cuda-fp16, onnx-tensorrt-fp32, "
        "trt-fp16, trt-fp32; repeatable. (default: all; absent ones are listed as skipped)")
    ] = None,
    batch_sizes: Annotated[str, typer.Option(
        help="Whole-model batch sizes for throughput.")] = "1,4,8",
    budget_s: Annotated[float, typer.Option(help="Seconds of timed runs per engine.")] = 5.0,
    window: WindowOption = None,
    stride: StrideOption = None,
    checkpoint: Annotated[Optional[Path], typer.Option(
        help="The package's checkpoint, for the PyTorch reference "
        "(without it parity is against onnxruntime CPU fp32).")] = None,
    data: Annotated[Optional[Path], typer.Option(
        help="Prepared corpus for parity and accuracy (default: random inputs).")] = None,
    split: SplitOption = None,
    part: PartOption = "test",
    max_clips: MaxClipsOption = 0,
    gate: Annotated[bool, typer.Option(
        "--gate", help="Exit 1 when an engine is outside tolerance or failed (the package's "
        f"tolerances per precision, from its task spec: {_gates()}).")] = False,
    atol: AtolOption = None,
    rtol: RtolOption = None,
    min_top1: MinTop1Option = None,
    max_stoi_drop: MaxStoiDropOption = None,
    compile_timeout_s: Annotated[float, typer.Option(
        help="Seconds torch.compile may spend compiling (0: skip it).")] = 120.0,
    threads: ThreadsOption = None,
    out: Annotated[Optional[Path], typer.Option(
        "--out", "-o", help="Write bench.json, bench.md and plots here "
        "(and the exported package).")] = None,
    device: TorchDeviceOption = None,
) -> None:
    """Benchmark every available engine x precision: latency, throughput, streams, parity.
    --data and the tolerance options apply to every engine (--max-clips: clips of --data, or
    of random inputs, 8 when 0); --device is the PyTorch rows'."""
    from lipx.benchmarks.api import BenchOptions
    from lipx.benchmarks.api import bench as run_bench
    from lipx.benchmarks.report import notes, table, write_report

    started = time.perf_counter()
    opts = BenchOptions(
        engines=_names(engine or [], "--engine"),
        batch_sizes=_ints(batch_sizes, "--batch-sizes"), budget_s=budget_s, window=window,
        stride=stride, checkpoint=checkpoint, data=data, split=split or "", part=part,
        max_clips=max_clips,
        atol=atol, rtol=rtol, min_top1=min_top1, max_stoi_drop=max_stoi_drop, out=out,
        device=device or "auto", compile_timeout_s=compile_timeout_s, threads=threads,
    )
    report = run_bench(target, opts, progress=lambda m: console.print(f"[dim]{m}[/dim]"))
    Console(width=200).print(table(report))
    for line in notes(report):
        print(line)
    if out:
        print("wrote " + ", ".join(str(p) for p in write_report(report, out)))
    if gate:
        report.check_gate()
    done(report.summary(), started)


# --- demo -----------------------------------------------------------------------------------


@app.command()
def demo(
    out: Annotated[Path, typer.Argument(
        help="Folder for everything the demo makes.")] = Path("lipx-demo"),
    checkpoints: Annotated[Optional[Path], typer.Option(
        help="Folder with lipreading.lipx and lip2speech.lipx trained on synthetic corpora. "
        "(default: the small checkpoints shipped with lipx)")] = None,
    words: Annotated[int, typer.Option(
        help="Words the held-out speaker says in the lipreading test video.")] = 6,
    speaker: Annotated[int, typer.Option(
        help="Which held-out speaker to render (0: the first).")] = 0,
    bench_s: Annotated[float, typer.Option(
        help="Seconds of timed runs per engine in the closing benchmark (0 skips it).")] = 2.0,
    fresh: Annotated[bool, typer.Option(
        "--fresh", help="Redo every step instead of reusing what OUT holds.")] = False,
) -> None:
    """The whole job in a few minutes on a CPU: render held-out synthetic speakers, export both
    trained models, stream the videos (words read, speech generated, annotated MP4s), score them
    and benchmark the packages."""
    require("train", "lipx demo")
    from lipx.demo import CHECKPOINTS, DemoOptions, next_commands, run_demo

    started = time.perf_counter()
    opts = DemoOptions(out=out, checkpoints=checkpoints or CHECKPOINTS, words=words,
                       speaker=speaker, bench_s=bench_s, fresh=fresh)
    result = run_demo(opts, say=lambda line: print(line, flush=True))
    print("\nOutputs: " + ", ".join(str(p) for p in result.files.values() if p.exists()))
    print("Next:\n" + "\n".join(f"  {c}" for c in next_commands(result)))
    done(result.summary(), started)


def _short_helps(group: typer.Typer) -> None:
    """Each command's line in its group's ``--help``: the first clause of its docstring (the
    whole docstring is the command's own ``--help``)."""
    for info in group.registered_commands:
        doc = info.help or (info.callback.__doc__ if info.callback else None)
        if info.short_help is None and doc:
            first = re.split(r"(?<=[.;:])\s", " ".join(doc.split()), maxsplit=1)[0]
            info.short_help = first.rstrip(".;:")


_short_helps(app)
_short_helps(data_app)


def main() -> None:
    """Console entry point: run the app, turning LipxError into one line and exit code 1.

    typer's standalone mode already handles usage errors (exit 2) and turns Ctrl-C into exit
    130; SIGTERM and SIGHUP are handled as Ctrl-C is (:mod:`lipx.signals`).
    """
    from lipx.signals import stop_signals_interrupt

    try:
        with stop_signals_interrupt():
            app()
    except LipxError as e:
        if _state["debug"]:
            console.print_exception()
        from rich.markup import escape

        console.print(f"[red]error:[/red] {escape(str(e))}")
        sys.exit(1)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/yellow]")
        sys.exit(130)


if __name__ == "__main__":
    main()
