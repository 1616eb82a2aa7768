"""Continuous test streams: a held-out synthetic speaker talking on and off, in one piece.

A stream is rendered from one articulation trajectory (:func:`lipx.data.lexicon.articulate`), so
coarticulation, head motion, blinks and the voice run on across everything in it. It is made of
*phrases* joined by *gaps*:

* phrases, ``lrw``: a vocabulary word with the 0-2 context words before and after it that the
  corpus' LRW clips put around their word (:func:`lipx.data.synth.lrw_utterance`, long words
  compressed the same way); ``grid``: a six-word GRID sentence
  (:func:`lipx.data.synth.grid_utterance`);
* gaps, with ``pauses``: nothing (the next phrase follows at once), a pause (0.1-0.8 s), a
  stretch of silence (1-3 s: no speech, the face alive at rest, head motion and blinks going on)
  or a still face (1-2.5 s of frozen, identical frames between two short silences); every stream
  of three or more phrases has at least one silence and one still face. Without ``pauses`` the
  phrases follow one another directly (words in a row). Every stream starts and ends with
  0.5-1 s of silence.

Frames are 25 fps in LRW's face geometry: ``lrw`` at the recipe's size (256x256 by default),
``grid`` rendered as the GRID corpus is (camera placement, 360x288) and aligned to 256x256 with
:func:`lipx.landmarks.align_face`, as ``lipx demo`` and ``lipx stream --crop lrw`` expect. The
audio is the speaker's voice at 16 kHz (the corpus' noise floor included); it is silent wherever
no word is spoken.

Everything is deterministic in the recipe's seed and the stream's name. Making a stream takes
three steps: :func:`script_stream` (what is said when, no pixels), :func:`render_stream` (frames
and audio), :func:`write_stream` (MP4 with the speech as its audio track, high-passed WAV, GRID
``.align`` with ``sil`` and ``still`` segments: :func:`lipx.data.formats.read_segments`).
"""

from __future__ import annotations

import logging
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lipx.audio import SAMPLE_RATE, highpass
from lipx.data import formats, lexicon, synth
from lipx.data.formats import FPS, STILL, TimedWord
from lipx.data.prepare_format import speaker_parts
from lipx.data.render import Placement, render_frames
from lipx.data.synth import SynthOptions, make_speaker
from lipx.data.voice import synthesize
from lipx.errors import InputError
from lipx.landmarks import align_face

log = logging.getLogger(__name__)

SAMPLES_PER_FRAME = SAMPLE_RATE // FPS
_EDGE_S = (0.5, 1.0)
"""Silence before the first phrase and after the last (seconds, uniform)."""
_PAUSE_S = (0.1, 0.8)
_SILENCE_S = (1.0, 3.0)
_STILL_S = (1.0, 2.5)
_STILL_MARGIN_S = (0.2, 0.5)
"""Silence on each side of a still face, so the frozen frame shows the mouth at rest."""
_GAP_KINDS = ("none", "pause", "silence", "still")
_GAP_P = (0.3, 0.4, 0.15, 0.15)


@dataclass(frozen=True)
class StreamSpec:
    """One stream to make: who says what."""

    name: str
    """File stem; with the recipe's seed it seeds everything random in the stream."""
    speaker: int
    """Speaker index (0-based) in the recipe."""
    phrases: tuple[tuple[str, ...], ...]
    """LRW: one vocabulary word each; GRID: one six-word sentence each."""
    pauses: bool = True
    """Pauses, silence and still faces between phrases; False: phrases in a row."""


@dataclass(frozen=True)
class Gap:
    """Non-speech before a phrase (or after the last): silence, then optionally a still face
    and more silence."""

    sil: float
    """Seconds of silence with a live face."""
    still: float = 0.0
    """Seconds of still face (rounded to whole frames)."""
    after: float = 0.0
    """Seconds of silence after the still face."""


@dataclass(frozen=True)
class StreamScript:
    """What a stream says and when (seconds from its first frame), before any pixel."""

    spec: StreamSpec
    utterance: lexicon.Utterance
    """All of the stream's speech on one timeline, silence phones in every gap."""
    segments: tuple[TimedWord, ...]
    """Every stretch in time order, covering the stream: spoken words (LRW: vocabulary words
    upper case, context words lower case), ``sil`` (silence, live face) and ``still``."""
    still: tuple[tuple[int, int], ...]
    """Frame ranges ``[first, end)`` of the still face."""
    n_frames: int

    @property
    def duration(self) -> float:
        """Seconds."""
        return self.n_frames / FPS

    @property
    def words(self) -> tuple[str, ...]:
        """The phrases' words in order: LRW the vocabulary words, GRID the sentences'."""
        return tuple(w for phrase in self.spec.phrases for w in phrase)


@dataclass
class RenderedStream:
    """A stream's frames and audio, before encoding."""

    script: StreamScript
    frames: np.ndarray
    """(T, S, S, 3) uint8 RGB, 25 fps, LRW face geometry (S = 256 unless the recipe says)."""
    audio: np.ndarray
    """(T * 640,) float32 at 16 kHz."""
    landmarks: np.ndarray | None = None
    """(T, 98, 2) true landmarks of the drawn face in frame pixels (LRW layout; None for GRID,
    whose frames are aligned after drawing)."""


PARTS = ("held-out", "val", "test", "train")
"""Whose streams ``lipx data synth --part`` makes: the held-out speakers (all of them, or the
first half, ``val``, to tune on, and the rest, ``test``, to report on), or the training
speakers (``train``: streams to train a model for streams on; GRID: those the ``unseen``
protocol trains on, not its validation speakers)."""


def held_out_speakers(recipe: SynthOptions) -> list[int]:
    """Speakers a model trained on the recipe's corpus has not seen: LRW the held-out ones
    (they say only the val and test clips); GRID those the ``unseen`` protocol keeps for testing
    only (:func:`lipx.data.prepare_format.speaker_parts`, as ``lipx demo`` uses)."""
    if recipe.layout == "lrw":
        return list(range(recipe.speakers - recipe.n_held_out, recipe.speakers))
    names = [f"s{i + 1}" for i in range(recipe.speakers)]
    parts = speaker_parts(names)
    return [i for i, name in enumerate(names) if parts.get(name) == ["test"]]


def stream_speakers(recipe: SynthOptions, part: str = "held-out") -> list[int]:
    """The speakers (0-based indices) of a :data:`PARTS` part; ``val`` and ``test`` split the
    held-out speakers in two (``val`` the first half, rounded down, and at least one)."""
    if part not in PARTS:
        raise InputError(f"unknown --part {part!r}; choose from: {', '.join(PARTS)}")
    held = held_out_speakers(recipe)
    if part == "train":
        if recipe.layout == "lrw":
            return [i for i in range(recipe.speakers) if i not in held]
        names = [f"s{i + 1}" for i in range(recipe.speakers)]  # not the protocol's val speakers
        parts = speaker_parts(names)
        return [i for i, name in enumerate(names) if parts.get(name) == ["train"]]
    if part == "held-out":
        return held
    if len(held) < 2:
        raise InputError(f"--part {part} splits the held-out speakers in two; the recipe holds "
                         f"out {len(held)}")
    half = len(held) // 2
    return held[:half] if part == "val" else held[half:]


def _rngs(recipe: SynthOptions, name: str) -> list[np.random.Generator]:
    """Plan, voice and render randomness of a stream."""
    ss = np.random.SeedSequence([recipe.seed, 0x5354, zlib.crc32(name.encode())])
    return [np.random.default_rng(s) for s in ss.spawn(3)]


# --- the script ----------------------------------------------------------------------------

def _gap_kinds(n: int, pauses: bool, rng: np.random.Generator) -> list[str]:
    """Kinds of the ``n`` gaps between phrases; with pauses at least one silence and one still
    face where there are two gaps or more."""
    if not pauses:
        return ["none"] * n
    kinds = [str(k) for k in rng.choice(_GAP_KINDS, size=n, p=_GAP_P)]
    for kind in ("silence", "still"):
        if kind not in kinds:
            free = [i for i, k in enumerate(kinds) if k in ("none", "pause") or kinds.count(k) > 1]
            if free:
                kinds[free[int(rng.integers(len(free)))]] = kind
    return kinds


def plan_gaps(n_phrases: int, pauses: bool, rng: np.random.Generator) -> list[Gap]:
    """The ``n_phrases + 1`` gaps of a stream: before each phrase, and after the last."""
    def u(span: tuple[float, float]) -> float:
        return float(rng.uniform(*span))

    between = []
    for kind in _gap_kinds(n_phrases - 1, pauses, rng):
        if kind == "still":
            between.append(Gap(u(_STILL_MARGIN_S), u(_STILL_S), u(_STILL_MARGIN_S)))
        else:
            between.append(Gap({"none": 0.0, "pause": u(_PAUSE_S),
                                "silence": u(_SILENCE_S)}[kind]))
    return [Gap(u(_EDGE_S)), *between, Gap(u(_EDGE_S))]


def _advance(t: float, gap: Gap, stills: list[tuple[int, int]]) -> float:
    """The time after ``gap`` from ``t``; a still face starts on a frame and lasts whole
    frames (appended to ``stills``)."""
    t += gap.sil
    if gap.still > 0:
        first = int(np.ceil(t * FPS - 1e-9))
        end = first + max(1, int(round(gap.still * FPS)))
        stills.append((first, end))
        t = end / FPS + gap.after
    return t


def _phrase(layout: str, phrase: tuple[str, ...], rate: float,
            rng: np.random.Generator) -> lexicon.Utterance:
    """A phrase timed as the corpus times its clips (speech start anywhere)."""
    if layout == "lrw":
        return synth.lrw_utterance(phrase[0], rate, rng, synth.LRW_FRAMES / FPS)[0]
    return synth.grid_utterance(phrase, rate, rng, synth.GRID_FRAMES / FPS)


def script_stream(recipe: SynthOptions, spec: StreamSpec) -> StreamScript:
    """Time a stream: its phrases and gaps on one timeline (deterministic).

    Raises:
        InputError: no phrases, or phrases that do not fit the layout (LRW one word, GRID six).
    """
    size = 1 if recipe.layout == "lrw" else len(lexicon.GRID_SLOTS)
    if not spec.phrases or any(len(p) != size for p in spec.phrases):
        raise InputError(f"stream {spec.name}: {recipe.layout.upper()} phrases have {size} "
                         f"word(s) each, got {[len(p) for p in spec.phrases]}")
    rate = make_speaker(recipe.seed, spec.speaker, recipe.layout).rate
    rng = _rngs(recipe, spec.name)[0]
    gaps = plan_gaps(len(spec.phrases), spec.pauses, rng)
    phones: list[lexicon.Phone] = []
    words: list[tuple[str, float, float]] = []
    stills: list[tuple[int, int]] = []
    t = 0.0
    for phrase, gap in zip(spec.phrases, gaps, strict=False):
        t = _advance(t, gap, stills)
        utt = _phrase(recipe.layout, phrase, rate, rng).retimed(t)
        if phones and utt.start > phones[-1].end:
            phones.append(lexicon.Phone("SIL", phones[-1].end, utt.start))
        phones += utt.phones[1:-1]  # without the padding silences
        words += utt.words
        t = utt.end
    n_frames = int(np.ceil(_advance(t, gaps[-1], stills) * FPS - 1e-9))
    phones = [lexicon.Phone("SIL", phones[0].start - 1.0, phones[0].start), *phones,
              lexicon.Phone("SIL", phones[-1].end, n_frames / FPS + 1.0)]
    return StreamScript(spec, lexicon.Utterance(tuple(phones), tuple(words)),
                        _segments(words, stills, n_frames), tuple(stills), n_frames)


def _segments(words: list[tuple[str, float, float]], stills: list[tuple[int, int]],
              n_frames: int) -> tuple[TimedWord, ...]:
    """Words, and ``sil`` / ``still`` between them, covering ``[0, n_frames / FPS]``."""
    out: list[TimedWord] = []

    def sil(a: float, b: float) -> None:
        if b > a:
            out.append(TimedWord("sil", a, b))

    spans = [(a / FPS, b / FPS) for a, b in stills]
    t = 0.0
    for word, a, b in [*words, ("", n_frames / FPS, n_frames / FPS)]:
        for sa, sb in spans:
            if t <= sa and sb <= a:
                sil(t, sa)
                out.append(TimedWord(STILL, sa, sb))
                t = sb
        sil(t, a)
        if word:
            out.append(TimedWord(word, a, b))
        t = b
    return tuple(out)


# --- frames, audio, files ------------------------------------------------------------------

def render_stream(recipe: SynthOptions, script: StreamScript) -> RenderedStream:
    """Render a stream's frames and audio (deterministic in the recipe's seed and the name).

    A still face repeats the frame it starts on; the head motion and blinks resume where they
    stopped after it.
    """
    spk = make_speaker(recipe.seed, script.spec.speaker, recipe.layout)
    _, voice_rng, render_rng = _rngs(recipe, script.spec.name)
    n = script.n_frames
    tracks = lexicon.articulate(script.utterance, -0.1, n / FPS + 0.1)
    shown = np.arange(n)
    for first, end in script.still:
        shown[first:end] = first
    live = np.unique(shown)
    visemes = tracks.sample((live + 0.5) / FPS)[:, :len(lexicon.VISEME)]
    if recipe.layout == "lrw":
        place = synth.jittered(Placement.lrw(recipe.size[0]), render_rng)
    else:
        place = Placement.grid(np.random.default_rng(spk.placement_seed), *recipe.size)
    frames, landmarks = render_frames(spk.appearance, place, visemes, render_rng)
    if recipe.layout == "grid":
        frames = np.stack([align_face(f, p) for f, p in zip(frames, landmarks, strict=True)])
    audio = synthesize(tracks, spk.voice, 0.0, n * SAMPLES_PER_FRAME, voice_rng)
    index = np.searchsorted(live, shown)
    true = landmarks[index] if recipe.layout == "lrw" else None
    return RenderedStream(script, frames[index], audio, true)


def write_stream(stream: RenderedStream, video: Path, wav: Path | None = None,
                 align: Path | None = None) -> None:
    """Write a stream's files, each atomically, the video last.

    Args:
        stream: the rendered stream.
        video: MP4 (H.264, 25 fps) with the speech as its AAC audio track.
        wav: 16 kHz 16-bit speech, high-passed (55 Hz, as ``lipx data prepare`` filters the
            corpus audio): the reference for lip-to-speech scoring.
        align: GRID ``.align`` of :attr:`StreamScript.segments`.
    """
    if wav is not None:
        synth.write_wav(wav, highpass(stream.audio, SAMPLE_RATE))
    if align is not None:
        formats.write_align(align, stream.script.segments, stream.script.n_frames)
    synth.write_video(video, stream.frames, stream.audio, "mp4")
