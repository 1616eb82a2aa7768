"""Stream heads: turn per-window backend outputs into words and into continuous audio.

:class:`WordHead` (lipreading) takes each window's logits over the vocabulary and emits
:class:`~lipx.runtime.events.WordEvent`; :class:`SpeechHead` (lip-to-speech) takes each window's
linear magnitude spectrogram and emits :class:`~lipx.runtime.events.AudioChunk` that tile the
stream's timeline. Both are fed by the stream loop every ``stride`` frames and flushed once at
the end of the stream; both are plain numpy. The loop sees either only as a :class:`Head`: one
``push``, one ``flush``, the look-ahead its results wait for and what it has made.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
from scipy import signal

from lipx.audio import AudioSpec
from lipx.errors import InputError
from lipx.runtime.events import AudioChunk, Result, WordEvent
from lipx.runtime.griffin_lim import StreamingGriffinLim
from lipx.tasks import NO_WORD, Schedule
from lipx.video import FPS

log = logging.getLogger(__name__)

SPANS = ("intersection", "union")


class Head(Protocol):
    """What the stream loop needs of a task's head (:class:`WordHead`, :class:`SpeechHead`).

    Latencies are in frames, beyond the front-end's temporal context (which the loop adds).
    """

    @property
    def min_window(self) -> int:
        """Fewest frames a window needs to give a result (a shorter stream gives nothing)."""

    @property
    def lookahead_frames(self) -> int:
        """Frames after a frame that its result waits for, beyond the wait for the next window
        (up to ``stride - 1`` frames): the head's share of the algorithmic latency."""

    @property
    def delay_frames(self) -> int:
        """Worst-case frames from a frame's arrival until all of its word or audio has arrived
        (how long an annotated video holds frames back)."""

    @property
    def words(self) -> int:
        """Words emitted so far (0 for a speech head; ``reset`` keeps the count)."""

    @property
    def audio_s(self) -> float:
        """Seconds of audio made so far (0 for a word head; ``reset`` keeps the count)."""

    def push(self, output: np.ndarray, start_frame: int, end_frame: int, /) -> Sequence[Result]:
        """Add one window's backend output (frames ``[start_frame, end_frame)``); return the
        results it made final."""

    def flush(self) -> Sequence[Result]:
        """End of stream: return what is still pending, and reset."""


@dataclass
class _Run:
    """Successive windows whose top word is the same and above the threshold."""

    word: int
    posteriors: list[float] = field(default_factory=list)
    spans: list[tuple[int, int]] = field(default_factory=list)
    emitted: bool = False


@dataclass
class _SpeechRun:
    """Successive windows of a model for streams whose speech posterior is above threshold."""

    sums: np.ndarray
    """Posteriors summed over the run's windows."""
    weights: list[float] = field(default_factory=list)
    """Each window's speech posterior."""
    centres: list[float] = field(default_factory=list)
    """Each window's centre (frames)."""


class WordHead:
    """Per-window word posteriors -> emitted words with time spans and confidence.

    Each window's logits go through a softmax; the window votes for its top word when that
    word's posterior is at least ``threshold``, and for nothing otherwise. A word is emitted once
    it has the vote of ``agreement`` successive windows, and not again while the run of windows
    voting for it goes on; a window voting for another word or for nothing ends the run, after
    which the word can be emitted again (subject to ``min_gap_s``).

    A model for streams has a last class :data:`~lipx.tasks.NO_WORD` (a window not centred on a
    word). Then the windows whose posterior of speech, one minus no-word's, is at least
    ``threshold`` form a *speech run*, whatever their top word; a run of at least ``agreement``
    windows is one word, emitted when the run ends (or once it has lasted ``max_run_s``): the
    word with the most posterior summed over the run, at the run's speech-weighted centre
    (``span`` does not apply). A model for streams is sure only near a word's centre, so a run
    is one spoken word; the word at its edges may flicker, the sum does not. No-word is never
    emitted.

    Args:
        vocabulary: the class labels, in logit order.
        fps: video frame rate, to turn frame indices into seconds.
        threshold: minimum softmax posterior of a window's top word for the window to vote.
        agreement: successive voting windows needed to emit a word (1 emits on the first).
        min_gap_s: after emitting a word, the same word is only emitted again if its new span
            starts at least this many seconds after the previous one's end (0 disables; it
            suppresses repeats across a one-window dip in confidence).
        span: the emitted time span: ``intersection`` (the frames every agreeing window saw,
            the tightest span that contains the word if each window does) or ``union`` (all
            frames any agreeing window saw).
        max_run_s: a model for streams' speech run longer than this is emitted then, and a new
            run starts (bounds the wait for a word; runs are about 0.2-0.5 s).
        ignore: labels never emitted (e.g. a silence or filler class); they still vote, so
            they end runs.
        emit_partial_on_flush: at the end of the stream, emit a word whose run had not yet
            reached ``agreement`` because the stream ended (a stream shorter than ``agreement``
            windows would otherwise never produce a word).
        window: frames per window of the stream's schedule, and
        stride: frames between its windows (a :class:`~lipx.tasks.Schedule`); both for the
            latency the head reports (:attr:`lookahead_frames`, :attr:`delay_frames`) and the
            longest speech run.
    """

    min_window = 1
    """Any window of one frame or more votes."""
    audio_s = 0.0
    """A word head makes no audio."""

    def __init__(self, vocabulary: list[str], fps: float = FPS, threshold: float = 0.5,
                 agreement: int = 2, min_gap_s: float = 0.0, span: str = "intersection",
                 ignore: tuple[str, ...] = (), emit_partial_on_flush: bool = True, *,
                 window: int, stride: int, max_run_s: float = 0.8) -> None:
        if not vocabulary:
            raise InputError("WordHead needs a non-empty vocabulary (the model's class labels)")
        if fps <= 0:
            raise InputError(f"fps must be positive, got {fps}")
        if not 0.0 <= threshold <= 1.0:
            raise InputError(f"word threshold must be a posterior in [0, 1], got {threshold}")
        if agreement < 1:
            raise InputError(f"word agreement must be >= 1 window, got {agreement}")
        if min_gap_s < 0:
            raise InputError(f"min_gap_s must be >= 0 seconds, got {min_gap_s}")
        if max_run_s <= 0:
            raise InputError(f"max_run_s must be > 0 seconds, got {max_run_s}")
        Schedule(window, stride)
        self.no_word = vocabulary.index(NO_WORD) if NO_WORD in vocabulary else None
        if span not in SPANS:
            raise InputError(f"unknown word span {span!r}; choose from: {', '.join(SPANS)}")
        unknown = sorted(set(ignore) - set(vocabulary))
        if unknown:
            raise InputError(f"ignored labels {unknown} are not in the vocabulary")
        self.vocabulary = list(vocabulary)
        self.fps = fps
        self.threshold = threshold
        self.agreement = agreement
        self.min_gap_s = min_gap_s
        self.span = span
        self.emit_partial_on_flush = emit_partial_on_flush
        self.window, self.stride = window, stride
        self.max_run = max(1, int(max_run_s * fps / stride))
        """Windows in the longest speech run (no-word models)."""
        self._ignored = {self.vocabulary.index(w) for w in ignore}
        if self.no_word is not None:
            self._ignored.add(self.no_word)
        self.words = 0
        """Words emitted so far (``reset`` keeps the count)."""
        self.reset()

    @property
    def lookahead_frames(self) -> int:
        """The ``agreement - 1`` windows after the first vote that a word waits for (a model for
        streams: the rest of its speech run, at most ``max_run_s``, and the window ending it)."""
        if self.no_word is not None:
            return self.max_run * self.stride
        return (self.agreement - 1) * self.stride

    @property
    def delay_frames(self) -> int:
        """A word's first frame waits for its whole window, the ``agreement - 1`` agreeing
        windows after it, and up to one stride for the next window run."""
        return self.window + self.lookahead_frames + self.stride

    def reset(self) -> None:
        """Forget the stream."""
        self._run: _Run | None = None
        self._speech: _SpeechRun | None = None
        self._last_end: dict[int, float] = {}  # word -> end_s of its last emission

    def push(self, logits: np.ndarray, start_frame: int, end_frame: int) -> list[WordEvent]:
        """Add one window's logits; return the words this window completes.

        Args:
            logits: (K,) float logits (or (1, K)) of the window covering frames
                [start_frame, end_frame), K = len(vocabulary).
            start_frame: first frame of the window (stream frame index; negative in the
                padding before a padded stream).
            end_frame: one past the window's last frame.

        Returns:
            Zero or one :class:`WordEvent`.
        """
        logits = np.asarray(logits, np.float64).reshape(-1)
        if logits.size != len(self.vocabulary):
            raise InputError(f"expected {len(self.vocabulary)} logits (one per vocabulary word), "
                             f"got {logits.size}; does the model match the vocabulary?")
        if end_frame <= start_frame:
            raise InputError(f"empty window [{start_frame}, {end_frame})")
        posteriors = np.exp(logits - logits.max())
        posteriors /= posteriors.sum()
        if self.no_word is not None:
            return self._push_speech(posteriors, start_frame, end_frame)
        top = int(np.argmax(posteriors))
        if posteriors[top] < self.threshold:
            self._run = None
            return []
        if self._run is None or self._run.word != top:
            self._run = _Run(top)
        self._run.posteriors.append(float(posteriors[top]))
        self._run.spans.append((start_frame, end_frame))
        if self._run.emitted or len(self._run.posteriors) < self.agreement:
            return []
        return self._emit(self._run)

    def flush(self) -> list[WordEvent]:
        """End of stream: emit a pending word short of agreement (if enabled), then reset."""
        run = self._run
        events = self._emit(run) if (run is not None and not run.emitted
                                     and self.emit_partial_on_flush) else []
        if self._speech is not None:
            events += self._end_speech(partial=self.emit_partial_on_flush)
        self.reset()
        return events

    def _push_speech(self, posteriors: np.ndarray, start: int, end: int) -> list[WordEvent]:
        """A model for streams: grow, or end, the speech run."""
        speech = 1.0 - float(posteriors[self.no_word])
        if speech < self.threshold:
            return self._end_speech() if self._speech is not None else []
        if self._speech is None:
            self._speech = _SpeechRun(np.zeros(posteriors.size))
        run = self._speech
        run.sums += posteriors
        run.weights.append(speech)
        run.centres.append((start + end) / 2)
        return self._end_speech() if len(run.weights) >= self.max_run else []

    def _end_speech(self, partial: bool = False) -> list[WordEvent]:
        run, self._speech = self._speech, None
        if run is None or (len(run.weights) < self.agreement and not partial):
            return []
        sums = run.sums.copy()
        sums[self.no_word] = -1.0
        word = int(np.argmax(sums))
        weights = np.asarray(run.weights)
        centre = float(np.average(run.centres, weights=weights))
        half = (max(run.centres) - min(run.centres) + self.stride) / 2
        return self._word(word, centre - half, centre + half, float(run.sums[word] / len(weights)))

    def _emit(self, run: _Run) -> list[WordEvent]:
        run.emitted = True
        spans = run.spans[-self.agreement:]
        starts, ends = [a for a, _ in spans], [b for _, b in spans]
        if self.span == "intersection" and max(starts) < min(ends):
            first, last = max(starts), min(ends)
        else:
            first, last = min(starts), max(ends)
        return self._word(run.word, first, last, float(np.mean(run.posteriors[-self.agreement:])))

    def _word(self, word: int, first: float, last: float, confidence: float) -> list[WordEvent]:
        """The word over frames ``[first, last)`` (clamped to the stream's start), unless it is
        ignored or repeats itself within ``min_gap_s``."""
        start_s, end_s = max(first, 0) / self.fps, max(last, 0) / self.fps
        previous = self._last_end.get(word)
        if word in self._ignored or (self.min_gap_s > 0 and previous is not None
                                     and start_s - previous < self.min_gap_s):
            return []
        self._last_end[word] = end_s
        self.words += 1
        return [WordEvent(self.vocabulary[word], start_s, end_s, confidence)]


class SpeechHead:
    """Per-window linear spectrograms -> continuous speech, chunk by chunk.

    From each window (video frames ``[s, s + W)``, spectrogram frames ``4s .. 4(s + W)``) only
    the new part is kept: from the first frame not yet committed up to ``lookahead`` frames
    before the window's end, so every kept frame had at least ``lookahead`` frames of right
    context (the first window is kept from its start). The first ``crossfade`` frames of each
    part are blended with the previous window's prediction of the same frames (its look-ahead
    region) by a raised-cosine fade, which removes the step where two windows disagree.
    The stitched magnitudes go through :class:`StreamingGriffinLim` (with the window's
    look-ahead as provisional right context), then de-emphasis whose filter state runs across
    chunks, and a clip to [-1, 1].

    Timeline: chunks tile the stream from the first window's start with no gap or overlap.
    Each push returns the audio up to ``n_fft // 2`` samples (20 ms) before the end of its new
    part (the last samples wait for the next frames' overlap-add); :meth:`flush` commits the
    last window's look-ahead frames and returns the rest, ending at that window's end.

    Args:
        spec: the model's audio parameters (sample rate, STFT, pre-emphasis).
        fps: video frame rate; ``spec.sample_rate / fps`` must equal ``spec.hop *
            spec.mel_frames_per_video_frame``.
        window: video frames per backend window (W), and
        stride: video frames between windows: the stream's :class:`~lipx.tasks.Schedule`
            (the task's default is in :data:`lipx.tasks.SPECS`).
        lookahead: frames at the end of each window kept only as right context (and crossfade
            source); must leave room for the stride: ``stride <= window - lookahead``.
        crossfade: frames blended at each join, ``<= lookahead`` (0 disables).
        gl_iters: Griffin-Lim iterations per chunk.
        gl_momentum: fast Griffin-Lim momentum (0: plain Griffin-Lim).
        seed: seed of the first chunk's random initial phase.
        record: keep the stitched magnitudes in :attr:`stitched` (``lipx eval-stream``
            scores them with Griffin-Lim on the whole stream, to tell the windowing's loss from
            streaming Griffin-Lim's).
    """

    words = 0
    """A speech head makes no words."""

    def __init__(self, spec: AudioSpec, fps: float, window: int, stride: int, lookahead: int = 4,
                 crossfade: int = 2, gl_iters: int = 16, gl_momentum: float = 0.99,
                 seed: int | None = 0, record: bool = False) -> None:
        per_frame = spec.samples_per_video_frame()
        if abs(spec.sample_rate / fps - per_frame) > 1e-6:
            raise InputError(f"{spec.sample_rate} Hz at {fps} fps is not {per_frame} samples per "
                             "frame (hop x spectrogram frames per video frame); check the fps")
        Schedule(window, stride)
        if not 0 <= lookahead < window:
            raise InputError(f"lookahead must be in [0, window={window}), got {lookahead}")
        if stride > window - lookahead:
            raise InputError(f"stride must be in [1, window - lookahead = {window - lookahead}] "
                             f"so consecutive windows' new parts meet, got {stride}")
        if not 0 <= crossfade <= lookahead:
            raise InputError(f"crossfade must be in [0, lookahead={lookahead}] frames (it blends "
                             f"into the previous window's look-ahead), got {crossfade}")
        self.spec = spec
        self.fps = fps
        self.window = window
        self.stride = stride
        self.lookahead = lookahead
        self.crossfade = crossfade
        self._m = spec.mel_frames_per_video_frame
        self._gl = StreamingGriffinLim(spec, gl_iters, gl_momentum, seed=seed)
        self._made = 0  # samples returned so far (not reset)
        self.record = record
        self.stitched: list[np.ndarray] = []
        """With ``record``: each committed part of the stitched magnitudes, in order (they tile
        the stream from the first window's start; not reset)."""
        self.reset()

    def reset(self) -> None:
        """Forget the stream."""
        self._gl.reset()
        self._next: int | None = None  # first video frame not yet committed
        self._tail = np.zeros((self.spec.n_freqs, 0), np.float32)  # frames [next, ...)
        self._sample = 0  # stream sample index of the next output sample
        self._zi = np.zeros(1)

    @property
    def algorithmic_latency_frames(self) -> int:
        """Worst-case frames from a video frame's arrival to the push that emits all its audio.

        ``stride - 1`` (waiting for the next window) + ``lookahead`` + the Griffin-Lim
        overlap-add tail (``n_fft // 2`` samples) rounded up to whole frames.
        """
        tail = -(-(self.spec.n_fft // 2) // self.spec.samples_per_video_frame())
        return self.stride - 1 + self.lookahead + tail

    @property
    def lookahead_frames(self) -> int:
        """The algorithmic latency without the wait for the next window (``stride - 1``)."""
        return self.algorithmic_latency_frames - (self.stride - 1)

    @property
    def delay_frames(self) -> int:
        """The algorithmic latency, plus the frame itself."""
        return self.algorithmic_latency_frames + 1

    @property
    def min_window(self) -> int:
        """A window must be longer than the look-ahead (its new part would be empty)."""
        return self.lookahead + 1

    @property
    def audio_s(self) -> float:
        """Seconds of audio returned so far (``reset`` keeps the count)."""
        return self._made / self.spec.sample_rate

    def push(self, linear: np.ndarray, start_frame: int,
             end_frame: int | None = None) -> list[AudioChunk]:
        """Add one window's linear spectrogram; return the audio that became final.

        Args:
            linear: (n_freqs, 4 W) float linear magnitude (or (1, n_freqs, 4 W)) of the window
                whose first video frame is ``start_frame``; negatives (postnet) are clamped to 0.
            start_frame: stream index of the window's first video frame.
            end_frame: one past its last frame (None: from the spectrogram's length); checked
                against the spectrogram.

        Returns:
            Zero or one :class:`AudioChunk`.
        """
        linear = self._check(linear)
        frames = linear.shape[1] // self._m
        if end_frame is not None and end_frame - start_frame != frames:
            raise InputError(f"window [{start_frame}, {end_frame}) has {end_frame - start_frame} "
                             f"frames but its spectrogram {frames}")
        end = start_frame + frames - self.lookahead  # end of the new part
        first = self._next if self._next is not None else start_frame
        if self._next is None:
            self._sample = start_frame * self.spec.samples_per_video_frame()
        if end <= first:
            return []
        part = self._new_part(linear, start_frame, first, end)
        if self.record:
            self.stitched.append(part)
        self._next = end
        self._tail = linear[:, self._m * (end - start_frame):]
        return self._chunk(self._gl.process(part, self._tail))

    def flush(self) -> list[AudioChunk]:
        """End of stream: commit the last look-ahead frames, return the rest, and reset."""
        if self._next is None:
            return []
        if self.record:
            self.stitched.append(self._tail)
        wav = np.concatenate([self._gl.process(self._tail), self._gl.finish()])
        chunks = self._chunk(wav)
        self.reset()
        return chunks

    # --- internals -----------------------------------------------------------------------

    def _check(self, linear: np.ndarray) -> np.ndarray:
        linear = np.asarray(linear, np.float32)
        if linear.ndim == 3 and linear.shape[0] == 1:
            linear = linear[0]
        n = linear.shape[-1] if linear.ndim else 0
        if (linear.ndim != 2 or linear.shape[0] != self.spec.n_freqs or n % self._m
                or n // self._m <= self.lookahead):
            raise InputError(f"expected a linear spectrogram ({self.spec.n_freqs}, {self._m}*W) "
                             f"with W > lookahead={self.lookahead}, got {linear.shape}")
        return np.maximum(linear, 0.0)

    def _new_part(self, linear: np.ndarray, start: int, first: int, end: int) -> np.ndarray:
        """(n_freqs, 4 (end - first)) magnitudes of frames [first, end), crossfaded."""
        m = self._m
        if first < start:  # windows further apart than window - lookahead: fill the hole
            log.warning("speech head: frames %d-%d fall between windows; filling them from the "
                        "previous look-ahead and silence", first, start - 1)
            gap = np.zeros((self.spec.n_freqs, m * (start - first)), np.float32)
            held = self._tail[:, :gap.shape[1]]
            gap[:, :held.shape[1]] = held
            return np.concatenate([gap, linear[:, :m * (end - start)]], axis=1)
        part = linear[:, m * (first - start):m * (end - start)].copy()
        n = min(m * self.crossfade, self._tail.shape[1], part.shape[1])
        if n:
            fade_in = 0.5 - 0.5 * np.cos(np.pi * (np.arange(n) + 0.5) / n)
            part[:, :n] = fade_in * part[:, :n] + (1.0 - fade_in) * self._tail[:, :n]
        return part

    def _chunk(self, wav: np.ndarray) -> list[AudioChunk]:
        if wav.size == 0:
            return []
        if self.spec.preemphasis:  # y[n] = x[n] + coef y[n-1], state carried across chunks
            wav, self._zi = signal.lfilter([1.0], [1.0, -self.spec.preemphasis], wav,
                                           zi=self._zi)
        wav = np.clip(wav, -1.0, 1.0).astype(np.float32)
        chunk = AudioChunk(self._sample / self.spec.sample_rate, wav, self.spec.sample_rate)
        self._sample += wav.size
        self._made += wav.size
        return [chunk]
