"""Speech metrics: the alignment done before STOI must not depend on the waveform's phase."""

from __future__ import annotations

import numpy as np

from lipx.train.metrics import align


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
