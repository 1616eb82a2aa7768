"""Speech metrics: the alignment done before STOI must not depend on the waveform's phase."""

from __future__ import annotations

import numpy as np

from lipx.runtime.metrics import align


def _bursts(n: int = 16000, seed: int = 0) -> np.ndarray:
    """Noise bursts with a speech-like on/off envelope."""
    rng = np.random.default_rng(seed)
    envelope = np.repeat(rng.random(n // 400) > 0.5, 400).astype(float)
    return envelope * rng.standard_normal(n)


def test_a_delayed_copy_is_shifted_back():
    ref = _bursts()
    for delay in (-480, 0, 320):
        est = np.roll(ref, delay)
        back = align(ref, est)
        inner = slice(800, len(ref) - 800)
        np.testing.assert_array_equal(back[inner], ref[inner])


def test_the_lag_follows_the_envelope_not_the_phase():
    # same envelope, independent noise (as Griffin-Lim speech relates to the real one):
    # a waveform correlation has nothing to lock onto; the envelope does
    ref = _bursts(seed=0)
    other = np.abs(_bursts(seed=0)) > 0  # the same on/off pattern
    est = np.roll(other * np.random.default_rng(7).standard_normal(len(ref)), 240)
    back = align(ref, est)
    on_ref = np.abs(ref[800:-800]) > 0
    on_back = np.abs(back[800:-800]) > 0
    assert (on_ref == on_back).mean() > 0.99


def test_word_errors_count_substitutions_deletions_and_insertions():
    from lipx.runtime.metrics import word_errors

    ref = "place blue at now".split()
    e = word_errors(ref, "place green at at now please".split())
    assert (e.substitutions, e.deletions, e.insertions) == (1, 0, 2)
    assert e.wer == 3 / 4 and e.reference_words == 4
    assert [i for i, _ in e.pairs if i is not None] == [0, 1, 2, 3]  # each reference word once
    assert [j for _, j in e.pairs if j is not None] == [0, 1, 2, 3, 4, 5]  # each emitted word once
    d = word_errors("bin red by".split(), "bin by".split())
    assert (d.substitutions, d.deletions, d.insertions, d.pairs) == (0, 1, 0,
                                                                     ((0, 0), (1, None), (2, 1)))
    assert word_errors(ref, ref).wer == 0.0
    assert word_errors([], ["a", "b"]).insertions == 2
    assert word_errors(["a", "b"], []).deletions == 2


def test_word_errors_pair_only_what_may_pair():
    from lipx.runtime.metrics import word_errors

    # "b" was read long after "b" was said: not a match but a deletion and an insertion
    e = word_errors(["a", "b"], ["a", "b"], may_pair=lambda i, j: i == j == 0)
    assert (e.substitutions, e.deletions, e.insertions) == (0, 1, 1)
    assert set(e.pairs) == {(0, 0), (1, None), (None, 1)}
