"""``lipx data synth``: a deterministic, learnable synthetic audio-visual speech corpus.

Every clip is spoken by a synthetic speaker (face, voice, speaking rate from the seed and the
speaker number): words -> timed phonemes -> one articulation trajectory -> mouth shapes rendered at
25 fps *and* a formant voice at 16 kHz, so the lips determine the words and the sound. It is
written in the real on-disk layouts:

* ``grid``: ``sN/video/<id>.mpg`` (MPEG-1 video 360x288, 25 fps, MP2 audio track),
  ``sN/audio/<id>.wav`` (16 kHz), ``sN/align/<id>.align`` (GRID word timings, 1000 units per
  frame) and ``sN/landmark/<id>.txt`` (98 landmarks per frame, ``path:x y,x y,...|...``), 75 frames
  (3 s) of GRID grammar per clip, the face *not* aligned (``lipx data prepare grid`` aligns it).
* ``lrw``: ``WORD/{train,val,test}/WORD_00001.mp4`` (29 frames, 256x256 face in LRW geometry,
  H.264 + AAC) and ``WORD_00001.txt`` (``Text:``, ``Conf:``, ``Duration: 0.42 seconds``), the
  word centred in the 1.16 s clip among context words.

The GRID ``.align`` and LRW ``.txt`` files are written through :mod:`lipx.data.formats` and
the landmark files through :mod:`lipx.landmarks`, the modules ``lipx data prepare`` reads them
with.

``OUT/synth.json`` records the options, the vocabulary, the speakers and which are held out
(GRID: the last ones; LRW: val and test clips are spoken by held-out speakers only).

Continuous test streams of a corpus' held-out speakers (``--layout lrw-streams|grid-streams``)
are :mod:`lipx.data.streams` and :mod:`lipx.data.stream_corpus`.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import time
import zlib
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, cast

import numpy as np

from lipx.audio import SAMPLE_RATE
from lipx.data import formats, lexicon
from lipx.data.formats import FPS
from lipx.data.render import Appearance, Placement, render_frames
from lipx.data.voice import Voice, synthesize
from lipx.errors import InputError
from lipx.files import atomic_write
from lipx.landmarks import format_landmarks, one_opencv_thread

if TYPE_CHECKING:
    from av.audio.stream import AudioStream
    from av.video.stream import VideoStream

log = logging.getLogger(__name__)

GRID_FRAMES = 75
LRW_FRAMES = 29
LAYOUTS = ("grid", "lrw")
SPLITS = ("train", "val", "test")
_MAX_SPEAKERS = 1000


@dataclass(frozen=True)
class SynthOptions:
    """What ``lipx data synth`` makes. ``None`` fields take the layout's default."""

    out: Path
    """Output folder (created)."""
    layout: str = "grid"
    """``grid`` or ``lrw``."""
    speakers: int = 8
    """Number of synthetic speakers."""
    held_out: int | None = None
    """Speakers kept for testing (the last ones); default max(1, speakers // 5), 0 for one."""
    utterances: int = 50
    """GRID: sentences per speaker."""
    words: int | None = None
    """Vocabulary size: GRID 6-51 (default 51), LRW 2-323 (default 20)."""
    clips_per_word: int = 50
    """LRW: training clips per word."""
    val_per_word: int = 5
    """LRW: validation clips per word."""
    test_per_word: int = 5
    """LRW: test clips per word."""
    seed: int = 0
    image_size: tuple[int, int] | None = None
    """(width, height); GRID default (360, 288), LRW default (256, 256) (square only)."""
    workers: int = 1
    """Processes; 1 runs in this process."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "out", Path(self.out))
        if self.layout not in LAYOUTS:
            raise InputError(f"unknown layout {self.layout!r}; choose grid or lrw")
        for name in ("speakers", "utterances", "clips_per_word", "workers"):
            _check_int(name, getattr(self, name), 1)
        for name in ("val_per_word", "test_per_word", "seed"):
            _check_int(name, getattr(self, name), 0)
        if self.speakers > _MAX_SPEAKERS:
            raise InputError(f"speakers must be <= {_MAX_SPEAKERS}, got {self.speakers}")
        if self.held_out is not None:
            _check_int("held_out", self.held_out, 0)
            if self.held_out >= self.speakers and self.speakers > 1:
                raise InputError(f"held_out must leave a training speaker: got {self.held_out} "
                                 f"of {self.speakers} speakers")
        if self.words is not None:
            _check_int("words", self.words, 1)
        self.vocabulary()  # raises on a bad size
        w, h = self.size
        if w < 64 or h < 64 or w % 2 or h % 2:
            raise InputError(f"image_size must be even and >= 64 on each side, got {w}x{h}")
        if self.layout == "lrw" and w != h:
            raise InputError(f"the LRW layout needs a square image_size, got {w}x{h}")
        if self.layout == "grid" and self.utterances > _n_sentences(self.vocabulary()):
            raise InputError(f"{self.utterances} utterances per speaker exceed the "
                             f"{_n_sentences(self.vocabulary())} distinct sentences of a "
                             f"{self.words}-word vocabulary; use fewer or more words")

    @property
    def size(self) -> tuple[int, int]:
        """Canvas (width, height)."""
        if self.image_size is not None:
            return (int(self.image_size[0]), int(self.image_size[1]))
        return (360, 288) if self.layout == "grid" else (256, 256)

    @property
    def n_held_out(self) -> int:
        if self.held_out is not None:
            return self.held_out
        return 0 if self.speakers == 1 else max(1, self.speakers // 5)

    def vocabulary(self) -> tuple[tuple[str, ...], ...]:
        """GRID: the six slots; LRW: one tuple of target words."""
        if self.layout == "grid":
            return lexicon.grid_vocabulary(self.words or len(lexicon.GRID_WORDS))
        return (lexicon.lrw_vocabulary(self.words or 20),)


def _check_int(name: str, value: object, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise InputError(f"{name} must be an integer >= {low}, got {value!r}")


def _n_sentences(slots: tuple[tuple[str, ...], ...]) -> int:
    return int(np.prod([len(s) for s in slots]))


@dataclass(frozen=True)
class SynthReport:
    """What a run did."""

    out: Path
    layout: str
    clips: int
    """Clips in the corpus."""
    written: int
    """Clips written by this run."""
    skipped: int
    """Clips already complete (a resumed run)."""
    speakers: tuple[str, ...]
    held_out: tuple[str, ...]
    vocabulary: tuple[str, ...]
    seconds: float


@dataclass(frozen=True)
class ClipSpec:
    """One clip to make."""

    key: str
    """Path stem relative to OUT: ``s3/bbaf2n`` (GRID) or ``ABOUT/train/ABOUT_00001`` (LRW)."""
    speaker: int
    """Speaker index (0-based)."""
    words: tuple[str, ...]
    """GRID: the six words; LRW: the target word."""


@dataclass(frozen=True)
class Speaker:
    """A synthetic speaker."""

    name: str
    appearance: Appearance
    voice: Voice
    rate: float
    """Speaking rate (1 = the lexicon's durations)."""
    placement_seed: int


@lru_cache(maxsize=4096)
def make_speaker(seed: int, index: int, layout: str) -> Speaker:
    """The speaker ``index`` of a corpus seed (deterministic)."""
    app_ss, voice_ss, misc_ss = np.random.SeedSequence([seed, 0x5350, index]).spawn(3)
    misc = np.random.default_rng(misc_ss)
    name = f"s{index + 1}" if layout == "grid" else f"spk{index + 1:03d}"
    return Speaker(name, Appearance.random(np.random.default_rng(app_ss)),
                   Voice.random(np.random.default_rng(voice_ss)),
                   float(misc.uniform(0.85, 1.15)), int(misc.integers(2**31)))


def plan_clips(opts: SynthOptions) -> list[ClipSpec]:
    """Every clip of the corpus, in a fixed order."""
    if opts.layout == "grid":
        return _plan_grid(opts)
    return _plan_lrw(opts)


def _plan_grid(opts: SynthOptions) -> list[ClipSpec]:
    slots = opts.vocabulary()
    clips = []
    for s in range(opts.speakers):
        rng = np.random.default_rng([opts.seed, 0x4752, s])
        seen: set[str] = set()
        while len(seen) < opts.utterances:
            words = lexicon.grid_sentence(slots, rng)
            gid = lexicon.grid_id(words)
            if gid not in seen:
                seen.add(gid)
                clips.append(ClipSpec(f"s{s + 1}/{gid}", s, words))
    return clips


def _plan_lrw(opts: SynthOptions) -> list[ClipSpec]:
    held = list(range(opts.speakers - opts.n_held_out, opts.speakers))
    train = [s for s in range(opts.speakers) if s not in held]
    counts = {"train": opts.clips_per_word, "val": opts.val_per_word, "test": opts.test_per_word}
    clips = []
    for word in opts.vocabulary()[0]:
        rng = np.random.default_rng([opts.seed, 0x4C52, zlib.crc32(word.encode())])
        for split in SPLITS:
            pool = train if split == "train" or not held else held
            for i in range(counts[split]):
                speaker = int(pool[int(rng.integers(len(pool)))])
                clips.append(ClipSpec(f"{word}/{split}/{word}_{i + 1:05d}", speaker, (word,)))
    return clips


# --- one clip ------------------------------------------------------------------------------

@dataclass
class SynthClip:
    """A synthesised clip, before encoding."""

    spec: ClipSpec
    frames: np.ndarray
    """(T, H, W, 3) uint8 RGB, 25 fps."""
    audio: np.ndarray
    """(T * 640,) float32 at 16 kHz."""
    landmarks: np.ndarray
    """(T, 98, 2) float64 canvas pixels."""
    words: tuple[tuple[str, float, float], ...]
    """(word, start, end) seconds from the clip start; LRW: the target word only."""


def _rngs(opts: SynthOptions, spec: ClipSpec) -> list[np.random.Generator]:
    ss = np.random.SeedSequence([opts.seed, zlib.crc32(spec.key.encode())])
    return [np.random.default_rng(s) for s in ss.spawn(3)]


def synthesize_clip(opts: SynthOptions, spec: ClipSpec) -> SynthClip:
    """Make one clip's frames, audio and landmarks (deterministic in ``opts.seed`` and the key)."""
    spk = make_speaker(opts.seed, spec.speaker, opts.layout)
    plan_rng, voice_rng, render_rng = _rngs(opts, spec)
    if opts.layout == "grid":
        n_frames = GRID_FRAMES
        utt = grid_utterance(spec.words, spk.rate, plan_rng, n_frames / FPS)
        words = utt.words
        place = Placement.grid(np.random.default_rng(spk.placement_seed), *opts.size)
    else:
        n_frames = LRW_FRAMES
        utt, target = lrw_utterance(spec.words[0], spk.rate, plan_rng, n_frames / FPS)
        words = (utt.words[target],)
        place = jittered(Placement.lrw(opts.size[0]), render_rng)
    duration = n_frames / FPS
    tracks = lexicon.articulate(utt, -0.1, duration + 0.1)
    frame_times = (np.arange(n_frames) + 0.5) / FPS
    visemes = tracks.sample(frame_times)[:, :len(lexicon.VISEME)]
    frames, landmarks = render_frames(spk.appearance, place, visemes, render_rng)
    audio = synthesize(tracks, spk.voice, 0.0, int(round(duration * SAMPLE_RATE)), voice_rng)
    return SynthClip(spec, frames, audio, landmarks, words)


def grid_utterance(words: tuple[str, ...], rate: float, rng: np.random.Generator,
                   duration: float) -> lexicon.Utterance:
    """A GRID sentence placed in the clip with at least 0.25 s of silence on each side."""
    utt = lexicon.speak(words, rate, rng, pause_prob=0.1)
    length = utt.end - utt.start
    room = duration - 0.5
    scale = min(1.0, room / length)
    lead = 0.25 + float(rng.uniform(0.0, max(room - length * scale, 0.0)))
    return utt.retimed(lead, scale)


def lrw_utterance(word: str, rate: float, rng: np.random.Generator,
                  duration: float) -> tuple[lexicon.Utterance, int]:
    """The target word centred in the clip, 0-2 context words before and after; also the
    target's index in the utterance's words."""
    ctx = lexicon.CONTEXT_WORDS
    before = tuple(ctx[int(i)] for i in rng.integers(len(ctx), size=int(rng.integers(3))))
    after = tuple(ctx[int(i)] for i in rng.integers(len(ctx), size=int(rng.integers(3))))
    utt = lexicon.speak(before + (word,) + after, rate, rng, pause_prob=0.3)
    _, a, b = utt.words[len(before)]
    scale = min(1.0, 0.9 * duration / (b - a))
    centre = 0.5 * (a + b)
    start = 0.5 * duration - (centre - utt.start) * scale
    return utt.retimed(start, scale), len(before)


def jittered(place: Placement, rng: np.random.Generator) -> Placement:
    """LRW face tracks are not perfectly aligned: a small random shift and scale per clip."""
    s = 1.0 + float(rng.uniform(-0.03, 0.03))
    shift = rng.uniform(-3.0, 3.0, 2) * place.width / 256
    m = place.matrix.copy()
    m[:, :2] *= s
    m[:, 2] += shift + (1.0 - s) * np.array([place.width, place.height]) * 0.5
    return Placement(place.width, place.height, m)


# --- files ---------------------------------------------------------------------------------

_MP2_DELAY = 481
"""Samples an MP2 decoder adds in front; the GRID track is advanced by it so that the decoded
audio lines up with the video."""


def clip_files(opts: SynthOptions, key: str) -> dict[str, Path]:
    """The files of one clip, by kind."""
    if opts.layout == "grid":
        speaker, gid = key.split("/")
        return formats.grid_paths(opts.out, speaker, gid)
    return {"text": opts.out / f"{key}.txt", "video": opts.out / f"{key}.mp4"}


def _atomic(path: Path, write: Callable[[Path], object]) -> None:
    """Write through ``<name>.part`` in the same folder, then rename over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, write, tmp=path.with_name(path.name + ".part"))


def write_text(path: Path, text: str) -> None:
    """Write UTF-8 text atomically (through ``<name>.part``, parents created)."""
    _atomic(path, lambda p: p.write_text(text, encoding="utf-8"))


def write_video(path: Path, frames: np.ndarray, audio: np.ndarray, container: str) -> None:
    """Encode frames (T, H, W, 3) uint8 RGB at 25 fps with a mono 16 kHz audio track."""
    import av

    mpeg = container == "mpeg"
    vcodec, acodec = ("mpeg1video", "mp2") if mpeg else ("libx264", "aac")
    pcm = np.round(np.clip(audio, -1, 1) * 32767).astype(np.int16)
    if mpeg:
        pcm = np.concatenate([pcm[_MP2_DELAY:], np.zeros(_MP2_DELAY, np.int16)])

    def write(tmp: Path) -> None:
        with av.open(str(tmp), "w", format=container) as out:
            # codecs chosen at run time: the stubs cannot tell a video one from an audio one
            vs = cast("VideoStream", out.add_stream(vcodec, rate=FPS))
            vs.width, vs.height, vs.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
            if mpeg:
                vs.bit_rate = 4_000_000
            else:
                vs.options = {"crf": "17", "preset": "veryfast", "threads": "1"}
            aus = cast("AudioStream", out.add_stream(acodec, rate=SAMPLE_RATE, layout="mono"))
            aus.bit_rate = 64_000
            for frame in frames:
                out.mux(vs.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
            out.mux(vs.encode())
            samples = av.AudioFrame.from_ndarray(pcm[None], format="s16", layout="mono")
            samples.sample_rate, samples.pts = SAMPLE_RATE, 0
            out.mux(aus.encode(samples))
            out.mux(aus.encode())
    _atomic(path, write)


def write_wav(path: Path, audio: np.ndarray) -> None:
    import soundfile as sf

    _atomic(path, lambda p: sf.write(str(p), audio, SAMPLE_RATE, subtype="PCM_16",
                                     format="WAV"))


def landmark_text(name: str, landmarks: np.ndarray) -> str:
    """A clip's landmark line (:func:`lipx.landmarks.format_landmarks`) in whole pixels, as the
    original's files are."""
    return format_landmarks(name, np.round(landmarks) + 0.0)  # + 0.0 writes -0.0 as 0


def write_clip(opts: SynthOptions, clip: SynthClip) -> None:
    """Write one clip's files (each atomically; the video last)."""
    files = clip_files(opts, clip.spec.key)
    if opts.layout == "grid":
        write_wav(files["audio"], clip.audio)
        formats.write_align(files["align"], clip.words, len(clip.frames))
        rel = files["video"].relative_to(opts.out).as_posix()
        write_text(files["landmark"], landmark_text(rel, clip.landmarks))
        write_video(files["video"], clip.frames, clip.audio, "mpeg")
    else:
        word, a, b = clip.words[0]
        formats.write_lrw_info(files["text"], word, b - a)
        write_video(files["video"], clip.frames, clip.audio, "mp4")


def _make(opts: SynthOptions, spec: ClipSpec) -> str:
    write_clip(opts, synthesize_clip(opts, spec))
    return spec.key


# --- the corpus ----------------------------------------------------------------------------

def corpus_manifest(opts: SynthOptions) -> dict:
    """The content of ``synth.json``: the options (the recipe), vocabulary and speakers."""
    held = opts.n_held_out
    speakers = [make_speaker(opts.seed, i, opts.layout) for i in range(opts.speakers)]
    options = {k: v for k, v in asdict(opts).items() if k not in ("out", "workers")}
    options["image_size"] = list(opts.size)
    return {
        "format": "lipx-synth", "version": 1, "layout": opts.layout, "seed": opts.seed,
        "options": options, "fps": FPS, "sample_rate": SAMPLE_RATE,
        "frames_per_clip": GRID_FRAMES if opts.layout == "grid" else LRW_FRAMES,
        "vocabulary": [w for slot in opts.vocabulary() for w in slot],
        "speakers": [{"name": s.name, "held_out": i >= opts.speakers - held,
                      "f0": round(s.voice.f0, 1),
                      "formant_scale": round(s.voice.formant_scale, 3),
                      "rate": round(s.rate, 3)} for i, s in enumerate(speakers)],
        "held_out": [s.name for s in speakers[opts.speakers - held:]] if held else [],
        "note": ("GRID: the held-out speakers are meant for unseen-speaker testing"
                 if opts.layout == "grid" else
                 "LRW: train clips use the other speakers, val and test the held-out ones"),
    }


def claim_folder(out: Path, manifest: dict, keys: tuple[str, ...] = ("layout", "options")
                 ) -> None:
    """Write ``out/synth.json``, or check that an existing one agrees on ``keys`` (the same
    corpus or streams, resumed); InputError otherwise."""
    path = out / "synth.json"
    if path.exists():
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise InputError(f"{path} is unreadable ({e}); remove it or use another folder") from e
        if not isinstance(old, dict) or any(old.get(k) != manifest.get(k) for k in keys):
            raise InputError(f"{out} holds data made with other options ({path}); use a new "
                             f"folder or the same options to resume")
        return
    out.mkdir(parents=True, exist_ok=True)
    write_text(path, json.dumps(manifest, indent=2) + "\n")


def synthesize_corpus(opts: SynthOptions,
                      progress: Callable[[int, int], None] | None = None) -> SynthReport:
    """Make (or complete) the corpus described by ``opts``.

    Clips whose files all exist are skipped, so an interrupted run can be resumed.

    Args:
        opts: the corpus options.
        progress: called as ``progress(done, total)`` after each clip (skipped ones included).

    Raises:
        InputError: ``opts.out`` is a file, or holds a corpus made with other options.
    """
    started = time.perf_counter()
    if opts.out.exists() and not opts.out.is_dir():
        raise InputError(f"output {opts.out} exists and is not a folder")
    manifest = corpus_manifest(opts)
    claim_folder(opts.out, manifest)
    clips = plan_clips(opts)
    todo = [c for c in clips if not all(p.exists() for p in clip_files(opts, c.key).values())]
    done = len(clips) - len(todo)
    if progress:
        progress(done, len(clips))
    if opts.workers == 1 or len(todo) <= 1:
        for spec in todo:
            _make(opts, spec)
            done += 1
            if progress:
                progress(done, len(clips))
    else:
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(opts.workers, mp_context=ctx,
                                 initializer=one_opencv_thread) as pool:
            for future in as_completed([pool.submit(_make, opts, spec) for spec in todo]):
                future.result()
                done += 1
                if progress:
                    progress(done, len(clips))
    seconds = time.perf_counter() - started
    log.info("synth %s: %d clips written, %d already there, %.1f s", opts.out, len(todo),
             len(clips) - len(todo), seconds)
    return SynthReport(opts.out, opts.layout, len(clips), len(todo), len(clips) - len(todo),
                       tuple(s["name"] for s in manifest["speakers"]),
                       tuple(manifest["held_out"]), tuple(manifest["vocabulary"]), seconds)
