"""Evaluation metrics: word accuracy, word error rate of a stream (substitutions, deletions,
insertions), and speech intelligibility/quality (STOI, ESTOI, PESQ). Numpy/scipy only."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.signal import resample_poly

from lipx.audio import SAMPLE_RATE

log = logging.getLogger(__name__)


def topk_correct(logits: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """(B,) bool: whether each label is among the k highest logits."""
    k = min(k, logits.shape[1])
    top = np.argpartition(-logits, k - 1, axis=1)[:, :k]
    return (top == labels[:, None]).any(axis=1)


@dataclass(frozen=True)
class WordErrors:
    """A word-level alignment of a hypothesis to a reference (Levenshtein, unit costs)."""

    reference_words: int
    substitutions: int
    deletions: int
    insertions: int
    pairs: tuple[tuple[int | None, int | None], ...]
    """(reference index, hypothesis index) per alignment step: both for a match or a
    substitution, ``(i, None)`` for a deletion, ``(None, j)`` for an insertion."""

    @property
    def errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    @property
    def wer(self) -> float:
        """(S + D + I) / N; an empty reference scores its insertions against 1."""
        return self.errors / max(self.reference_words, 1)


def word_errors(reference: Sequence[str], hypothesis: Sequence[str],
                may_pair: Callable[[int, int], bool] | None = None) -> WordErrors:
    """The minimum-edit alignment of ``hypothesis`` to ``reference``; among equal-cost paths a
    match or substitution is preferred to a deletion, a deletion to an insertion.

    Args:
        may_pair: whether reference word i and hypothesis word j may be aligned (a match or a
            substitution), e.g. only when they overlap in time; otherwise they cost a deletion
            and an insertion. None: any pair may.
    """
    n, m = len(reference), len(hypothesis)
    cost = np.zeros((n + 1, m + 1), dtype=np.int64)
    cost[:, 0], cost[0, :] = np.arange(n + 1), np.arange(m + 1)
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            diagonal = cost[i - 1, j - 1] + _pair_cost(reference, hypothesis, i - 1, j - 1,
                                                        may_pair)
            cost[i, j] = min(diagonal, cost[i - 1, j] + 1, cost[i, j - 1] + 1)
    pairs: list[tuple[int | None, int | None]] = []
    counts = {"S": 0, "D": 0, "I": 0}
    i, j = n, m
    while i or j:
        pair = _pair_cost(reference, hypothesis, i - 1, j - 1, may_pair) if i and j else 2
        if pair < 2 and cost[i, j] == cost[i - 1, j - 1] + pair:
            counts["S"] += reference[i - 1] != hypothesis[j - 1]
            i, j = i - 1, j - 1
            pairs.append((i, j))
        elif i and cost[i, j] == cost[i - 1, j] + 1:
            i -= 1
            counts["D"] += 1
            pairs.append((i, None))
        else:
            j -= 1
            counts["I"] += 1
            pairs.append((None, j))
    return WordErrors(n, counts["S"], counts["D"], counts["I"], tuple(reversed(pairs)))


def _pair_cost(reference: Sequence[str], hypothesis: Sequence[str], i: int, j: int,
               may_pair: Callable[[int, int], bool] | None) -> int:
    """0 for a match, 1 for a substitution, 2 (never better than D + I) for a forbidden pair."""
    if may_pair is not None and not may_pair(i, j):
        return 2
    return int(reference[i] != hypothesis[j])


def align(reference: np.ndarray, estimate: np.ndarray, max_shift: int = 800,
          hop: int = 16) -> np.ndarray:
    """Shift ``estimate`` by the lag (within +-max_shift samples) whose amplitude envelope best
    matches ``reference``'s, then cut or zero-pad it to the reference's length (the audio-video
    alignment done before scoring).

    The lag comes from the envelopes (RMS over ``hop`` samples, 1 ms at 16 kHz), not from the
    waveforms: generated speech has Griffin-Lim's phase, which bears no relation to the real
    phase, so a waveform cross-correlation picks an arbitrary lag (on a lip-to-speech clip it
    cost 0.18 STOI against no alignment at all).
    """
    n = len(reference)
    est = np.pad(estimate, (0, max(0, n - len(estimate))))[:n]
    env_r, env_e = _envelope(reference, hop), _envelope(est, hop)
    env_r, env_e = env_r - env_r.mean(), env_e - env_e.mean()
    m = len(env_r)
    steps = max_shift // hop
    scores = [float(np.dot(env_r[max(0, k):m + min(0, k)], env_e[max(0, -k):m - max(0, k)]))
              for k in range(-steps, steps + 1)]
    lag = (int(np.argmax(scores)) - steps) * hop
    shifted = np.roll(np.pad(est, (max_shift, max_shift)), lag)[max_shift:max_shift + n]
    return np.pad(shifted, (0, n - len(shifted)))


def _envelope(x: np.ndarray, hop: int) -> np.ndarray:
    frames = len(x) // hop
    return np.sqrt((x[:frames * hop].reshape(frames, hop).astype(np.float64) ** 2).mean(1))


def speech_scores(reference: np.ndarray, estimate: np.ndarray, sr: int = SAMPLE_RATE,
                  with_pesq: bool = True) -> dict[str, float]:
    """STOI and ESTOI at ``sr`` (pystoi) and narrow-band PESQ at 8 kHz, as the original.

    PESQ is NaN when the reference holds no detectable speech (it raises on such input).
    """
    from pystoi import stoi

    est = align(reference, estimate)
    scores = {
        "stoi": float(stoi(reference, est, sr, extended=False)),
        "estoi": float(stoi(reference, est, sr, extended=True)),
    }
    if with_pesq:
        scores["pesq"] = pesq_nb(reference, est, sr)
    return scores


def pesq_nb(reference: np.ndarray, estimate: np.ndarray, sr: int = SAMPLE_RATE) -> float:
    """Narrow-band PESQ after resampling both signals to 8 kHz; NaN where PESQ cannot score,
    or when the ``pesq`` package is not installed (it comes with ``lipx[train]``; it compiles
    from source, so the runtime install leaves it out)."""
    try:
        from pesq import pesq
    except ImportError:
        _warn_once("PESQ is not scored: it needs the pesq package (pip install 'lipx[train]')")
        return math.nan

    ref8 = resample_poly(reference, 8000, sr)
    est8 = resample_poly(estimate, 8000, sr)
    try:
        return float(pesq(8000, ref8, est8, "nb"))
    except Exception as e:  # NoUtterancesError and friends
        log.debug("PESQ could not score a clip: %s", e)
        return math.nan


_warned: set[str] = set()


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        log.warning(message)


def mean_scores(rows: list[dict[str, float]]) -> dict[str, float]:
    """Per-key mean over rows, ignoring NaNs (a key that is NaN everywhere stays NaN)."""
    keys = rows[0].keys() if rows else ()
    out = {}
    for k in keys:
        vals = np.array([r[k] for r in rows], dtype=float)
        out[k] = float(np.nanmean(vals)) if np.isfinite(vals).any() else math.nan
    return out
