"""``lipx data synth OUT --layout lrw-streams|grid-streams``: a folder of continuous streams.

The streams (:mod:`lipx.data.streams`) are spoken by the held-out speakers of a corpus recipe
(:class:`lipx.data.synth.SynthOptions`: seed, speakers, held-out speakers, vocabulary) or, with
``--part``, by one half of them (``val`` to tune on, ``test`` to report on) or by its training
speakers (``train``: streams to train on), so they use the speakers and words of the training
corpus made with the same options; ``--like`` takes the recipe from a checkpoint
(``meta.corpus_synth``), a corpus folder or its ``synth.json``.

``OUT`` holds, per stream, ``NAME.mp4`` (256x256, 25 fps, speech as its audio track),
``NAME.wav`` (16 kHz, high-passed) and ``NAME.align`` (words, ``sil``, ``still``), and:

* ``streams.jsonl``, one object per stream: ``name``, ``layout`` (``lrw-streams`` or
  ``grid-streams``), ``task`` (``lipreading`` or ``lip2speech``), ``speaker``, ``words`` (LRW:
  the vocabulary words in order; GRID: the sentences' words), ``spoken`` (every word spoken, LRW
  context words included), ``frames``, ``duration_s``, ``speech_s``, ``silence_s``, ``still_s``
  (seconds of words, of ``sil`` and of ``still`` segments, as the ``.align`` file rounds them)
  and the three file names;
* ``synth.json``, the recipe as ``lipx data synth`` writes it for the corpus (``options``,
  ``vocabulary``, ``speakers``, ``held_out``) with ``layout`` the streams layout and a
  ``streams`` block (count, phrases per stream, pauses, the speakers used).

Streams whose three files exist are skipped, so an interrupted run resumes.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lipx.data import formats
from lipx.data.formats import NON_SPEECH, SILENCE, STILL
from lipx.data.streams import (
    PARTS,
    RenderedStream,
    StreamScript,
    StreamSpec,
    render_stream,
    script_stream,
    stream_speakers,
    write_stream,
)
from lipx.data.synth import (
    LAYOUTS,
    SynthOptions,
    claim_folder,
    corpus_manifest,
    make_speaker,
    plan_clips,
    write_text,
)
from lipx.data.wild import place_in_wild, wild_motion, write_truth
from lipx.errors import InputError

log = logging.getLogger(__name__)

STREAM_LAYOUTS = {"lrw-streams": "lrw", "grid-streams": "grid"}
"""Streams layout -> the corpus layout of its recipe."""
TASKS = {"lrw": "lipreading", "grid": "lip2speech"}
"""The task each layout's streams test."""
_PER_STREAM = {"lrw": (8, 50), "grid": (3, 20)}
"""Default and largest phrases per stream (LRW words, GRID sentences)."""
_MAX_STREAMS = 10_000


@dataclass(frozen=True)
class StreamsOptions:
    """What ``lipx data synth --layout lrw-streams|grid-streams`` makes."""

    out: Path
    """Output folder (created)."""
    recipe: SynthOptions
    """The corpus recipe: speakers, held-out speakers, vocabulary, seed (its ``out`` unused)."""
    streams: int = 10
    """Number of streams; they take the held-out speakers in turn."""
    per_stream: int | None = None
    """Phrases per stream: LRW vocabulary words (default 8, at most 50), GRID sentences (default
    3, at most 20)."""
    pauses: bool = True
    """Pauses, silence and still faces between phrases; False: phrases in a row."""
    part: str = "held-out"
    """Whose streams (:data:`lipx.data.streams.PARTS`): the held-out speakers (``val`` and
    ``test`` halve them), or ``train``, the training speakers."""
    wild: bool = False
    """Place each (LRW) stream's face in a 640x480 frame, moving, scaling and rotating
    (:mod:`lipx.data.wild`), with the true transforms in ``NAME.wild.json``."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "out", Path(self.out))
        if not isinstance(self.streams, int) or not 1 <= self.streams <= _MAX_STREAMS:
            raise InputError(f"--streams must be in [1, {_MAX_STREAMS}], got {self.streams!r}")
        most = _PER_STREAM[self.recipe.layout][1]
        if self.per_stream is not None and not (isinstance(self.per_stream, int)
                                                and 1 <= self.per_stream <= most):
            what = "words" if self.recipe.layout == "lrw" else "sentences"
            raise InputError(f"--per-stream ({what} per stream) must be in [1, {most}], "
                             f"got {self.per_stream!r}")
        if self.wild and self.recipe.layout != "lrw":
            raise InputError("--wild places LRW-geometry faces in a larger frame; use it with "
                             "--layout lrw-streams")
        if not stream_speakers(self.recipe, self.part):
            raise InputError(f"the recipe's {self.recipe.speakers} speakers include no "
                             f"{self.part} one to speak the streams; use more speakers (or "
                             "--held-out >= 1)")

    @property
    def layout(self) -> str:
        """``lrw-streams`` or ``grid-streams``."""
        return f"{self.recipe.layout}-streams"

    @property
    def n_per_stream(self) -> int:
        return self.per_stream or _PER_STREAM[self.recipe.layout][0]


@dataclass(frozen=True)
class StreamsReport:
    """What a run did."""

    out: Path
    layout: str
    streams: int
    written: int
    """Streams written by this run."""
    skipped: int
    """Streams already complete (a resumed run)."""
    speakers: tuple[str, ...]
    """The speakers who speak them."""
    seconds_of_video: float
    seconds: float

    def summary(self) -> str:
        return (f"{self.written} streams written, {self.skipped} already there, "
                f"{self.seconds_of_video:.0f} s of video, speakers "
                f"{', '.join(self.speakers)} -> {self.out}")


def synth_options(out: Path, layout: str, recipe: dict, workers: int = 1,
                  streams: int | None = None, per_stream: int | None = None,
                  pauses: bool | None = None, like: Path | None = None,
                  part: str | None = None, wild: bool = False) -> SynthOptions | StreamsOptions:
    """The options of ``lipx data synth``: a corpus (``grid``, ``lrw``) or streams.

    Args:
        recipe: the corpus options given (SynthOptions fields; None or absent: the default).
        streams, per_stream, pauses, like, part: the streams layouts' options (None: not
            given).

    Raises:
        InputError: streams options with a corpus layout, ``like`` with recipe options, or
            ``like``'s recipe of the other layout.
    """
    recipe = {k: v for k, v in recipe.items() if v is not None}
    if layout not in (*LAYOUTS, *STREAM_LAYOUTS):
        raise InputError(f"unknown layout {layout!r}; choose {', '.join(LAYOUTS)} (a corpus) or "
                         f"{' or '.join(STREAM_LAYOUTS)}")
    if layout not in STREAM_LAYOUTS:
        given = [n for n, v in (("--streams", streams), ("--per-stream", per_stream),
                                ("--pauses", pauses), ("--like", like), ("--part", part),
                                ("--wild", wild or None))
                 if v is not None]
        if given:
            raise InputError(f"{given[0]} goes with --layout lrw-streams or grid-streams, "
                             f"not {layout}")
        return SynthOptions(out=out, layout=layout, workers=workers, **recipe)
    if workers != 1:
        raise InputError("--workers is for the corpus layouts; streams are made one at a time")
    base = STREAM_LAYOUTS[layout]
    if like is None:
        corpus = SynthOptions(out=out, layout=base, **recipe)
    elif recipe:
        raise InputError(f"--like takes the corpus recipe from {like}; drop "
                         f"--{next(iter(recipe)).replace('_', '-')}")
    elif (corpus := recipe_like(like, out)).layout != base:
        raise InputError(f"{like} holds a {corpus.layout.upper()}-layout recipe; use "
                         f"--layout {corpus.layout}-streams")
    extra = {"streams": streams} if streams is not None else {}
    return StreamsOptions(out, corpus, per_stream=per_stream,
                          pauses=True if pauses is None else pauses,
                          part=part or "held-out", wild=wild, **extra)


def recipe_like(path: Path, out: Path) -> SynthOptions:
    """The corpus recipe recorded in a checkpoint (``meta.corpus_synth``; reading it needs
    torch), in a folder ``lipx data synth`` made, or in its ``synth.json``.

    Raises:
        InputError: no such file, not a checkpoint or synth.json, or no recipe recorded.
    """
    path = Path(path)
    path = path / "synth.json" if path.is_dir() else path
    if not path.is_file():
        raise InputError(f"--like {path}: no such file; pass a checkpoint (.lipx), a folder made "
                         "by `lipx data synth` or its synth.json")
    if path.suffix == ".json":
        try:
            options = json.loads(path.read_text(encoding="utf-8"))["options"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise InputError(f"{path} is not a synth.json of `lipx data synth` ({e})") from e
    else:
        options = _checkpoint_recipe(path)
    fields = {f.name for f in dataclasses.fields(SynthOptions)} - {"out", "workers"}
    kwargs = {k: v for k, v in dict(options).items() if k in fields}
    if kwargs.get("image_size"):
        kwargs["image_size"] = tuple(kwargs["image_size"])
    return SynthOptions(out=out, **kwargs)


def _checkpoint_recipe(path: Path) -> dict:
    try:
        from lipx.models.checkpoint import load_checkpoint  # torch: only for --like CHECKPOINT
    except ImportError as e:
        raise InputError(f"reading the checkpoint {path} needs torch (pip install "
                         "'lipx[export]'); or pass --like the corpus folder or its synth.json"
                         ) from e
    options = load_checkpoint(path).meta.get("corpus_synth")
    if not isinstance(options, dict):
        raise InputError(f"{path} records no synthetic corpus recipe (meta.corpus_synth): it "
                         "was not trained on a `lipx data synth` corpus")
    return options


# --- the streams ---------------------------------------------------------------------------

def _draw_words(vocab: tuple[str, ...], n: int, rng: np.random.Generator) -> list[str]:
    """``n`` words: the vocabulary in random orders one after another, never a word twice in
    a row."""
    words: list[str] = []
    while len(words) < n:
        order = [vocab[int(i)] for i in rng.permutation(len(vocab))]
        if words and order[0] == words[-1]:
            order[0], order[-1] = order[-1], order[0]
        words += order
    return words[:n]


def plan_streams(opts: StreamsOptions) -> list[StreamSpec]:
    """Every stream, in a fixed order: stream i is spoken by the part's speaker i mod their
    number; LRW words drawn from the vocabulary (the ``held-out`` part's draws as they have
    always been, each other part's its own), GRID the speaker's own corpus sentences in turn."""
    recipe, n = opts.recipe, opts.n_per_stream
    held = stream_speakers(recipe, opts.part)
    salt = [] if opts.part == "held-out" else [PARTS.index(opts.part)]
    sentences: dict[int, list[tuple[str, ...]]] = {s: [] for s in held}
    if recipe.layout == "grid":
        for clip in plan_clips(recipe):
            if clip.speaker in sentences:
                sentences[clip.speaker].append(clip.words)
    specs = []
    for i in range(opts.streams):
        speaker = held[i % len(held)]
        phrases: tuple[tuple[str, ...], ...]
        if recipe.layout == "lrw":
            rng = np.random.default_rng([recipe.seed, 0x5357, i, *salt])
            phrases = tuple((w,) for w in _draw_words(recipe.vocabulary()[0], n, rng))
        else:
            own, first = sentences[speaker], (i // len(held)) * n
            phrases = tuple(own[(first + j) % len(own)] for j in range(n))
        name = f"stream{i + 1:04d}_{make_speaker(recipe.seed, speaker, recipe.layout).name}"
        specs.append(StreamSpec(name, speaker, phrases, opts.pauses))
    return specs


def stream_files(out: Path, name: str, wild: bool = False) -> dict[str, Path]:
    """The files of one stream, by kind: ``video``, ``wav``, ``align`` (and ``wild``, the true
    transforms of a ``--wild`` stream)."""
    files = {"video": out / f"{name}.mp4", "wav": out / f"{name}.wav",
             "align": out / f"{name}.align"}
    return {**files, "wild": out / f"{name}.wild.json"} if wild else files


def index_record(opts: StreamsOptions, script: StreamScript) -> dict:
    """A stream's line of ``streams.jsonl``; durations as its ``.align`` file rounds them."""
    segments = formats.parse_segments(formats.format_align(script.segments, script.n_frames))

    def seconds(labels: Callable[[str], bool]) -> float:
        return round(float(sum(s.end - s.start for s in segments if labels(s.word))), 3)

    name = script.spec.name
    return {
        "name": name, "layout": opts.layout, "task": TASKS[opts.recipe.layout],
        "speaker": make_speaker(opts.recipe.seed, script.spec.speaker, opts.recipe.layout).name,
        "words": list(script.words),
        "spoken": [s.word for s in segments if s.word not in NON_SPEECH],
        "frames": script.n_frames, "duration_s": round(script.duration, 3),
        "speech_s": seconds(lambda w: w not in NON_SPEECH),
        "silence_s": seconds(lambda w: w in SILENCE), "still_s": seconds(lambda w: w == STILL),
        **{kind: path.name for kind, path in stream_files(opts.out, name, opts.wild).items()},
    }


def streams_manifest(opts: StreamsOptions, specs: list[StreamSpec]) -> dict:
    """The content of ``synth.json``: the recipe's corpus manifest and a ``streams`` block."""
    manifest = corpus_manifest(opts.recipe)
    manifest.pop("frames_per_clip", None)
    speakers = {s.speaker: None for s in specs}
    held = ("its held-out speakers" if opts.recipe.layout == "lrw" else
            "the speakers its GRID 'unseen' protocol keeps for testing only")
    who = {"held-out": held, "val": f"the first half of {held} (to tune on)",
           "test": f"the second half of {held} (to report on)",
           "train": "its training speakers (to train on)"}[opts.part]
    manifest.update(layout=opts.layout, note=(
        "continuous streams of the corpus made with these options (lipx.data.streams), "
        f"spoken by {who}"))
    manifest["streams"] = {
        "count": opts.streams, "per_stream": opts.n_per_stream, "pauses": opts.pauses,
        "part": opts.part, "wild": opts.wild,
        "speakers": [make_speaker(opts.recipe.seed, s, opts.recipe.layout).name
                     for s in speakers],
        "index": "streams.jsonl",
    }
    return manifest


def _in_the_wild(opts: StreamsOptions, stream: RenderedStream, truth: Path) -> RenderedStream:
    """The stream's frames placed in a 640x480 frame by :func:`lipx.data.wild.wild_motion`
    (seeded by the recipe's seed and the stream's name); the transforms written to ``truth``."""
    rng = np.random.default_rng([opts.recipe.seed, zlib.crc32(stream.script.spec.name.encode())])
    matrices = wild_motion(rng, len(stream.frames), face=stream.frames.shape[2])
    write_truth(truth, matrices, stream.landmarks)
    return dataclasses.replace(stream, frames=place_in_wild(stream.frames, matrices))


def synthesize_streams(opts: StreamsOptions,
                       progress: Callable[[int, int], None] | None = None) -> StreamsReport:
    """Make (or complete) the streams described by ``opts``, then their index.

    Args:
        opts: the streams options.
        progress: called as ``progress(done, total)`` after each stream (skipped ones included).

    Raises:
        InputError: ``opts.out`` is a file, or holds data made with other options.
    """
    started = time.perf_counter()
    if opts.out.exists() and not opts.out.is_dir():
        raise InputError(f"output {opts.out} exists and is not a folder")
    specs = plan_streams(opts)
    manifest = streams_manifest(opts, specs)
    claim_folder(opts.out, manifest, ("layout", "options", "streams"))
    todo = {s.name for s in specs
            if not all(p.exists() for p in stream_files(opts.out, s.name, opts.wild).values())}
    done = len(specs) - len(todo)
    if progress:
        progress(done, len(specs))
    records = []
    for spec in specs:
        script = script_stream(opts.recipe, spec)
        if spec.name in todo:
            files = stream_files(opts.out, spec.name, opts.wild)
            stream = render_stream(opts.recipe, script)
            if opts.wild:
                stream = _in_the_wild(opts, stream, files["wild"])
            write_stream(stream, files["video"], files["wav"], files["align"])
            done += 1
            if progress:
                progress(done, len(specs))
        records.append(index_record(opts, script))
    write_text(opts.out / "streams.jsonl", "".join(json.dumps(r) + "\n" for r in records))
    seconds = time.perf_counter() - started
    log.info("streams %s: %d written, %d already there, %.1f s", opts.out, len(todo),
             len(specs) - len(todo), seconds)
    return StreamsReport(opts.out, opts.layout, len(specs), len(todo), len(specs) - len(todo),
                         tuple(manifest["streams"]["speakers"]),
                         sum(r["duration_s"] for r in records), seconds)
