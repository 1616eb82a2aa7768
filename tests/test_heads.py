"""lipx.runtime.heads: words from window posteriors, continuous speech from window spectrograms."""

from __future__ import annotations

import numpy as np
import pytest
from test_streaming_gl import FRAMES, speech_linear

from lipx import audio as A
from lipx.audio import AudioSpec
from lipx.errors import InputError
from lipx.runtime.heads import Head, SpeechHead, WordHead
from lipx.tasks import NO_WORD
from lipx.video import FPS

SPEC = AudioSpec()
W, STRIDE, LOOKAHEAD = 40, 8, 4
PER_FRAME = SPEC.samples_per_video_frame()
WORDS_SCHEDULE = {"window": 29, "stride": 4}
"""The schedule the word-head tests' windows follow (:func:`feed`'s)."""


def speech_head(**kwargs) -> SpeechHead:
    """A speech head at 25 fps on the schedule of :func:`windows` (``W``, ``STRIDE``)."""
    return SpeechHead(SPEC, **{"fps": FPS, "window": W, "stride": STRIDE, **kwargs})


@pytest.fixture(scope="module")
def linear() -> np.ndarray:
    return speech_linear()


def windows(linear: np.ndarray, start: int = 0, window: int = W,
            stride: int = STRIDE) -> list[tuple[int, np.ndarray]]:
    """Cut a whole-clip spectrogram into windows exactly as the stream loop schedules them."""
    frames = start + linear.shape[1] // 4
    return [(s, linear[:, 4 * (s - start):4 * (s - start + window)])
            for s in range(start, frames - window + 1, stride)]


def run(head: SpeechHead, wins: list[tuple[int, np.ndarray]]) -> list:
    chunks = []
    for s, w in wins:
        chunks += head.push(w, s)
    return chunks + head.flush()


def audio(chunks: list) -> np.ndarray:
    return np.concatenate([c.samples for c in chunks])


def spectral_convergence(linear: np.ndarray, wav: np.ndarray) -> float:
    """Of the output's spectrogram (re-emphasised, as the targets are) against ``linear``."""
    est = A.linear_spectrogram(A.preemphasis(wav, SPEC.preemphasis), SPEC, linear.shape[1] // 4)
    return A.spectral_convergence(linear, est)


# --- SpeechHead -------------------------------------------------------------------------------


@pytest.mark.parametrize("start", [0, 5])
def test_chunks_tile_the_timeline(linear, start):
    chunks = run(speech_head(), windows(linear, start))
    assert len(chunks) == len(windows(linear, start)) + 1  # one per push, one at flush
    assert chunks[0].start_s == pytest.approx(start / 25.0)
    for a, b in zip(chunks[:-1], chunks[1:], strict=True):
        assert round(a.end_s * 16000) == round(b.start_s * 16000)  # no gap, no overlap
    assert chunks[-1].end_s == pytest.approx((start + FRAMES) / 25.0)
    wav = audio(chunks)
    assert wav.dtype == np.float32 and np.abs(wav).max() <= 1.0


def test_stitched_spectrogram_matches_whole_clip(linear):
    """Tolerance: whole-clip Griffin-Lim at the same iteration count, plus a 10 % margin."""
    whole = spectral_convergence(linear, A.spectrogram_to_wav(linear, SPEC, n_iter=16))
    plain = spectral_convergence(linear, audio(run(speech_head(gl_momentum=0.0),
                                                   windows(linear))))
    fast = spectral_convergence(linear, audio(run(speech_head(), windows(linear))))
    # measured: whole clip 0.199; stitched 0.194 (plain GL), 0.122 (default, fast GL);
    # over 5 voices x 2 seeds the plain/whole ratio was 0.89-1.00 and fast/whole 0.57-0.67
    assert plain < 1.1 * whole
    assert fast < 0.8 * whole


def join_jumps(chunks: list) -> tuple[float, float, float]:
    """Sample-to-sample jumps: (largest near the joins, largest elsewhere, worst local ratio).

    Near a join: from 8 samples before a chunk boundary to n_fft / 2 + 8 after it (the boundary
    is n_fft / 2 before the frame join, so this spans both). Local ratio: the jump across each
    boundary (+-8 samples) over the largest jump in the 20 ms either side.
    """
    wav = audio(chunks)
    jumps = np.abs(np.diff(wav))
    bounds = np.cumsum([len(c.samples) for c in chunks])[:-1]
    near = np.zeros(jumps.size, bool)
    ratios = []
    for b in bounds:
        near[b - 8:b + SPEC.n_fft // 2 + 8] = True
        context = np.r_[jumps[b - 320:b - 8], jumps[b + 8:b + 320]]
        ratios.append(jumps[b - 8:b + 8].max() / context.max())
    return float(jumps[near].max()), float(jumps[~near].max()), max(ratios)


def test_no_click_at_the_joins(linear, monkeypatch):
    near, elsewhere, local = join_jumps(run(speech_head(), windows(linear)))
    # measured: 0.15 near the joins, 0.58 elsewhere; local ratio 0.69 (<= 0.96 over 10 runs)
    assert near <= elsewhere
    assert local < 1.5

    # the criterion has teeth: restarting de-emphasis at every chunk clicks (measured 3.3)
    chunk = SpeechHead._chunk

    def restart_filter(self: SpeechHead, wav: np.ndarray) -> list:
        self._zi = np.zeros(1)
        return chunk(self, wav)

    monkeypatch.setattr(SpeechHead, "_chunk", restart_filter)
    assert join_jumps(run(speech_head(), windows(linear)))[2] > 1.5


def test_crossfade_blends_disagreeing_windows(monkeypatch):
    """Window k predicts gain g_k everywhere: the stitched magnitude ramps from g_{k-1} to g_k."""
    gains = [1.0, 3.0, 2.0]
    head = speech_head(crossfade=2, record=True)
    fed: list[np.ndarray] = []
    process = head._gl.process
    monkeypatch.setattr(head._gl, "process", lambda m, future=None: (fed.append(m.copy()),
                                                                      process(m, future))[1])
    for k, g in enumerate(gains):
        head.push(np.full((321, 4 * W), g, np.float32), STRIDE * k)
    head.flush()
    stitched = np.concatenate(fed, axis=1)[0]
    assert stitched.size == 4 * (STRIDE * (len(gains) - 1) + W)  # every frame once
    n = 4 * 2
    fade = 0.5 - 0.5 * np.cos(np.pi * (np.arange(n) + 0.5) / n)
    for k in (1, 2):
        join = 4 * (STRIDE * k + W - LOOKAHEAD - STRIDE)
        np.testing.assert_allclose(stitched[join - 1], gains[k - 1])
        np.testing.assert_allclose(stitched[join:join + n],
                                   gains[k - 1] + fade * (gains[k] - gains[k - 1]), rtol=1e-6)
        np.testing.assert_allclose(stitched[join + n], gains[k])
    np.testing.assert_allclose(stitched[-4 * LOOKAHEAD:], gains[-1])  # flush: last look-ahead
    # what ``record`` keeps (lipx eval-stream's "stitched" speech) is exactly what GL got
    np.testing.assert_array_equal(np.concatenate(head.stitched, axis=1),
                                  np.concatenate(fed, axis=1))


def test_algorithmic_latency_is_the_worst_emission_delay(linear):
    head = speech_head()
    emitted_at = {}  # video frame -> the frame whose arrival triggered the push covering it
    end = 0
    for s, w in windows(linear):
        end += sum(len(c.samples) for c in head.push(w, s))
        for f in range(end // PER_FRAME):
            emitted_at.setdefault(f, s + W - 1)
    delays = [t - f for f, t in emitted_at.items() if f >= W]  # steady state
    assert max(delays) == head.algorithmic_latency_frames == STRIDE - 1 + LOOKAHEAD + 1


def test_negative_magnitudes_are_clamped(linear):
    noisy = [(s, w - 0.05 * (w < 0.01)) for s, w in windows(linear)]  # postnet-like negatives
    clamped = [(s, np.maximum(w, 0.0)) for s, w in noisy]
    np.testing.assert_array_equal(audio(run(speech_head(), noisy)),
                                  audio(run(speech_head(), clamped)))


def test_flush_resets_and_a_new_stream_starts_afresh(linear):
    head = speech_head()
    assert head.flush() == []
    first = audio(run(head, windows(linear)))
    second = run(head, windows(linear))
    assert second[0].start_s == 0.0
    np.testing.assert_array_equal(first, audio(second))


def test_windows_further_apart_leave_no_hole_in_the_timeline(linear, caplog):
    wins = windows(linear)
    chunks = run(speech_head(), [wins[0], wins[5]])  # frames 36-39 fall in no new part
    assert "fall between windows" in caplog.text
    for a, b in zip(chunks[:-1], chunks[1:], strict=True):
        assert round(a.end_s * 16000) == round(b.start_s * 16000)
    assert chunks[-1].end_s == pytest.approx((wins[5][0] + W) / 25.0)


@pytest.mark.parametrize("kwargs, message", [
    ({"stride": 37}, "stride"), ({"lookahead": 40}, "lookahead"),
    ({"crossfade": 5}, "crossfade"), ({"fps": 30.0}, "fps"),
    ({"stride": 41}, r"--stride 41 is larger than the window \(40 frames\)"),
])
def test_bad_configuration_is_refused(kwargs, message):
    with pytest.raises(InputError, match=message):
        speech_head(**kwargs)


def test_bad_window_shape_is_refused():
    head = speech_head()
    with pytest.raises(InputError, match=r"\(321, 4\*W\)"):
        head.push(np.ones((80, 160)), 0)
    with pytest.raises(InputError, match="lookahead"):
        head.push(np.ones((321, 16)), 0)
    assert head.push(np.ones((1, 321, 160)), 0)  # a batch of one is accepted


# --- WordHead ---------------------------------------------------------------------------------

VOCAB = ["bin", "lay", "place", "set"]


def logits_for(word: str, posterior: float) -> np.ndarray:
    """Logits whose softmax gives ``word`` the posterior and shares the rest equally."""
    p = np.full(len(VOCAB), (1.0 - posterior) / (len(VOCAB) - 1))
    p[VOCAB.index(word)] = posterior
    return np.log(p).astype(np.float32)


def feed(head: WordHead, sequence: list[tuple[str, float]], window: int = 29,
         stride: int = 4) -> list:
    events = []
    for i, (word, posterior) in enumerate(sequence):
        events += head.push(logits_for(word, posterior), i * stride, i * stride + window)
    return events


def test_agreement_threshold_and_no_repeat_while_the_word_persists():
    head = WordHead(VOCAB, threshold=0.5, agreement=2, **WORDS_SCHEDULE)
    events = feed(head, [("bin", 0.9), ("bin", 0.4), ("bin", 0.8), ("bin", 0.7), ("bin", 0.9),
                         ("bin", 0.95)])
    assert [e.word for e in events] == ["bin"]  # window 1 is below threshold: agreement restarts
    e = events[0]
    assert e.confidence == pytest.approx(0.75)  # mean over the two agreeing windows
    assert (e.start_s, e.end_s) == pytest.approx((12 / 25, 37 / 25))  # windows 2 and 3 overlap


def test_reemitted_after_a_different_word_or_a_low_confidence_gap():
    head = WordHead(VOCAB, agreement=2, **WORDS_SCHEDULE)
    seq = [("bin", 0.9)] * 3 + [("lay", 0.9)] * 2 + [("bin", 0.9)] * 2 + [("bin", 0.2)] \
        + [("bin", 0.9)] * 2
    assert [e.word for e in feed(head, seq)] == ["bin", "lay", "bin", "bin"]


def test_agreement_one_and_union_spans():
    head = WordHead(VOCAB, agreement=1, span="union", fps=10.0, window=10, stride=5)
    events = feed(head, [("set", 0.6), ("place", 0.7)], window=10, stride=5)
    assert [(e.word, e.start_s, e.end_s) for e in events] == [("set", 0.0, 1.0),
                                                             ("place", 0.5, 1.5)]
    head = WordHead(VOCAB, agreement=3, span="union", **WORDS_SCHEDULE)
    (e,) = feed(head, [("lay", 0.9)] * 3)
    assert (e.start_s, e.end_s) == pytest.approx((0.0, 37 / 25))


def test_flush_emits_a_word_cut_short_by_the_end_of_the_stream():
    head = WordHead(VOCAB, agreement=3, **WORDS_SCHEDULE)
    assert feed(head, [("place", 0.8), ("place", 0.6)]) == []
    (e,) = head.flush()
    assert e.word == "place" and e.confidence == pytest.approx(0.7)
    assert head.flush() == []  # nothing pending twice
    strict = WordHead(VOCAB, agreement=3, emit_partial_on_flush=False, **WORDS_SCHEDULE)
    feed(strict, [("place", 0.8)])
    assert strict.flush() == []
    done = WordHead(VOCAB, agreement=1, **WORDS_SCHEDULE)
    feed(done, [("place", 0.8)])
    assert done.flush() == []  # already emitted


def test_min_gap_and_ignored_labels():
    seq = [("bin", 0.9)] * 2 + [("bin", 0.3)] + [("bin", 0.9)] * 2
    assert len(feed(WordHead(VOCAB, min_gap_s=0.0, **WORDS_SCHEDULE), seq)) == 2
    # the dip does not re-emit:
    assert len(feed(WordHead(VOCAB, min_gap_s=0.5, **WORDS_SCHEDULE), seq)) == 1
    head = WordHead(VOCAB, agreement=1, ignore=("set",), **WORDS_SCHEDULE)
    assert [e.word for e in feed(head, [("set", 0.9), ("bin", 0.9), ("set", 0.9),
                                         ("bin", 0.9)])] == ["bin", "bin"]


def test_word_head_refuses_bad_input():
    head = WordHead(VOCAB, **WORDS_SCHEDULE)
    with pytest.raises(InputError, match="expected 4 logits"):
        head.push(np.zeros(5), 0, 29)
    with pytest.raises(InputError, match="empty window"):
        head.push(np.zeros(4), 5, 5)
    for kwargs in ({"threshold": 1.5}, {"agreement": 0}, {"span": "middle"},
                   {"ignore": ("sil",)}, {"min_gap_s": -1.0}):
        with pytest.raises(InputError):
            WordHead(VOCAB, **kwargs, **WORDS_SCHEDULE)
    assert head.push(logits_for("bin", 0.9)[None], 0, 29) == []  # (1, K) accepted


# --- both, as the stream loop sees them -------------------------------------------------------


def test_both_heads_are_one_head_to_the_loop(linear):
    """One push signature, the latency each reports, and what each has made."""
    speech: Head = speech_head()
    words: Head = WordHead(VOCAB, agreement=2, window=29, stride=4)
    assert (speech.min_window, words.min_window) == (LOOKAHEAD + 1, 1)
    assert speech.lookahead_frames == LOOKAHEAD + 1  # look-ahead + the overlap-add tail
    assert speech.delay_frames == STRIDE + LOOKAHEAD + 1
    assert (words.lookahead_frames, words.delay_frames) == (4, 29 + 2 * 4)
    made = [c for s, w in windows(linear) for c in speech.push(w, s, s + W)]
    made += speech.flush()
    assert speech.audio_s == pytest.approx(FRAMES / 25.0) and speech.words == 0
    assert speech.audio_s == pytest.approx(sum(len(c.samples) for c in made) / 16000)
    for i in range(3):
        words.push(logits_for("bin", 0.9), 4 * i, 4 * i + 29)
    words.flush()
    assert (words.words, words.audio_s) == (1, 0.0)
    with pytest.raises(InputError, match="has 39 frames but its spectrogram 40"):
        speech_head().push(windows(linear)[0][1], 0, W - 1)



# --- WordHead with a no-word class (a model for streams) ----------------------------------------

NW_VOCAB = ["ALPHA", "BRAVO", NO_WORD]


def nw_logits(word: str | None, speech: float = 0.9) -> np.ndarray:
    """Logits whose softmax gives ``word`` most of ``speech`` (None: a no-word window)."""
    p = np.full(3, 1e-3)
    if word is None:
        p[2] = 0.95
        p[0] = 0.05
    else:
        p[NW_VOCAB.index(word)] = speech
        p[2] = 1 - speech
    return np.log(p)


def mixed_logits(alpha: float, bravo: float) -> np.ndarray:
    """Logits of a window with these posteriors of ALPHA and BRAVO (the rest no-word)."""
    return np.log(np.array([alpha, bravo, 1.0 - alpha - bravo]) + 1e-9)


def push_all(head: WordHead, logits: list[np.ndarray], stride: int = 2, first: int = -14,
             window: int = 29) -> list[list]:
    """Push windows every ``stride`` frames; the words each push returned."""
    return [head.push(x, first + stride * i, first + stride * i + window)
            for i, x in enumerate(logits)]


def test_no_word_head_reads_one_word_per_speech_run_when_it_ends():
    head = WordHead(NW_VOCAB, threshold=0.5, agreement=2, window=29, stride=2)
    # a run of speech whose top word flickers at its edge (BRAVO first), then no-word
    run = [mixed_logits(0.1, 0.5), mixed_logits(0.6, 0.3), mixed_logits(0.9, 0.05),
           mixed_logits(0.6, 0.1)]
    out = push_all(head, [nw_logits(None), *run, nw_logits(None), nw_logits(None)])
    assert [len(o) for o in out] == [0, 0, 0, 0, 0, 1, 0]  # emitted by the window ending it
    word = out[5][0]
    assert word.word == "ALPHA" and NO_WORD not in [w.word for w in head.flush()]
    # at the run's speech-weighted centre: windows centred at frames 2.5 .. 8.5
    centres, weights = np.array([2.5, 4.5, 6.5, 8.5]), np.array([0.6, 0.9, 0.95, 0.7])
    want = float(np.average(centres, weights=weights))
    assert (word.start_s + word.end_s) / 2 * 25 == pytest.approx(want, abs=1e-6)
    assert (word.end_s - word.start_s) * 25 == pytest.approx(8.5 - 2.5 + 2)


def test_no_word_head_threshold_agreement_flush_and_padded_times():
    head = WordHead(NW_VOCAB, threshold=0.8, agreement=2, window=29, stride=2)
    out = push_all(head, [nw_logits("ALPHA", 0.7), nw_logits("BRAVO", 0.9), nw_logits(None),
                          nw_logits("BRAVO", 0.9), nw_logits("BRAVO", 0.9)], first=-16)
    assert not any(out)  # 0.7 < threshold; a one-window run is short of agreement
    words = head.flush()  # the stream ends inside a run: it is read
    assert [w.word for w in words] == ["BRAVO"]
    head = WordHead(NW_VOCAB, threshold=0.5, agreement=1, window=29, stride=2)
    out = push_all(head, [nw_logits("ALPHA"), nw_logits(None)], first=-16)
    assert out[1][0].start_s == 0.0  # centred before the stream's start: clamped to 0


def test_min_gap_and_max_run_of_a_no_word_head():
    head = WordHead(NW_VOCAB, threshold=0.5, agreement=1, min_gap_s=0.3, window=29, stride=2)
    seq = ["ALPHA", None, "ALPHA", None, None, None, None, None, "ALPHA", None]
    words = [w for o in push_all(head, [nw_logits(w) for w in seq], first=0) for w in o]
    # the echo after a one-window dip is dropped; the word said again 0.64 s later is read
    assert [w.start_s * 25 for w in words] == pytest.approx([14.5 - 1, 30.5 - 1])
    head = WordHead(NW_VOCAB, threshold=0.5, agreement=1, window=29, stride=2, max_run_s=0.4)
    assert head.max_run == 5 and head.lookahead_frames == 10
    out = push_all(head, [nw_logits("ALPHA")] * 5)
    assert [len(o) for o in out] == [0, 0, 0, 0, 1]  # a long run does not wait for its end
