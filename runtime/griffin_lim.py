"""Streaming Griffin-Lim: phase reconstruction block by block, continuous across blocks.

Magnitude frames arrive in blocks (one per window push). Each block is refined with Griffin-Lim
(optionally the fast variant with momentum, Perraudin et al. 2013) while the last frames of the
previous block stay fixed: they are *committed* (their phase no longer changes, their audio is
partly out), so the new frames' phases are pulled into agreement with them and the overlap-add
across the join stays consistent. New frames start from the previous estimate advanced by each
bin's instantaneous frequency (measured on the last two committed frames), not from random
phase, and the window's look-ahead frames, when given, are iterated along as right context
without being committed.

Frame bookkeeping (centred STFT of :mod:`lipx.audio`): frame ``j`` is centred on sample
``hop * j`` and spans ``n_fft`` samples, so a sample is final only once every frame overlapping
it is committed. After committing frames ``0 .. E-1`` the audio is final up to sample
``hop * E - n_fft // 2``; the remaining ``n_fft // 2`` samples come out with the next block
(:attr:`StreamingGriffinLim.delay_samples`), and :meth:`StreamingGriffinLim.finish` ends the
stream like :func:`lipx.audio.spectrogram_to_wav` (``hop * E`` samples in all, the last hop
zero).

The transforms are :func:`lipx.audio.stft` and :func:`lipx.audio.istft` on a short segment: the
committed history (``ceil(n_fft / hop) - 1`` frames, all that overlap the new ones) followed by
the new and look-ahead frames. Samples whose frames all lie inside the segment get exactly the
least-squares overlap-add of whole-clip Griffin-Lim.
"""

from __future__ import annotations

import logging

import numpy as np

from lipx.audio import AudioSpec, istft, stft
from lipx.errors import InputError

log = logging.getLogger(__name__)

_EPS = 1e-12


class StreamingGriffinLim:
    """Block-wise Griffin-Lim that keeps phase continuity across blocks.

    Args:
        spec: STFT parameters (n_fft, hop, window).
        n_iter: Griffin-Lim iterations per block.
        momentum: fast Griffin-Lim momentum (0 is plain Griffin-Lim; 0.99 converges in far fewer
            iterations).
        continuity: keep phase continuity (committed history fixed during the iterations, new
            frames initialised by phase advance). False inverts every block on its own from
            random phase (a baseline for comparison; audible at the joins).
        seed: seed of the random phase of the first block (and of every block when
            ``continuity`` is False).
    """

    def __init__(self, spec: AudioSpec, n_iter: int = 16, momentum: float = 0.99,
                 continuity: bool = True, seed: int | None = 0) -> None:
        if n_iter < 0:
            raise InputError(f"Griffin-Lim iterations must be >= 0, got {n_iter}")
        if not 0.0 <= momentum < 1.0:
            raise InputError(f"Griffin-Lim momentum must be in [0, 1), got {momentum}")
        self.spec = spec
        self.n_iter = n_iter
        self.momentum = momentum
        self.continuity = continuity
        self.seed = seed
        # committed frames that overlap the next one (and cover the held-back samples)
        self._context = max(-(-spec.n_fft // spec.hop) - 1, -(-(spec.n_fft // 2) // spec.hop))
        omega = 2 * np.pi * spec.hop * np.arange(spec.n_freqs) / spec.n_fft
        self._omega = omega.astype(np.float32)
        self.reset()

    def reset(self) -> None:
        """Forget the stream (the next block starts a new one at sample 0, seeded afresh)."""
        self._rng = np.random.default_rng(self.seed)
        self._history = np.zeros((self.spec.n_freqs, 0), np.complex64)
        self._pending = np.zeros((self.spec.n_freqs, 0), np.complex64)  # refined future phase
        self._frames = 0  # frames committed so far
        self._emitted = 0  # samples returned so far

    @property
    def delay_samples(self) -> int:
        """Samples of committed frames held back until the next block: n_fft // 2."""
        return self.spec.n_fft // 2

    @property
    def frames_committed(self) -> int:
        """Magnitude frames committed since the start (or the last reset)."""
        return self._frames

    def process(self, magnitude: np.ndarray, future: np.ndarray | None = None) -> np.ndarray:
        """Commit a block of magnitude frames; return the audio that became final.

        Args:
            magnitude: (n_freqs, n) float, non-negative; the next n frames of the stream.
            future: (n_freqs, m) float or None; provisional frames that follow (a window's
                look-ahead), iterated as right context but not committed.

        Returns:
            (k,) float32 waveform continuing the previous output (k is ``hop * n`` in the steady
            state; the first block returns ``n_fft // 2`` samples fewer).
        """
        magnitude = self._check(magnitude, "magnitude")
        future = (self._check(future, "future") if future is not None
                  else np.zeros((self.spec.n_freqs, 0), np.float32))
        if magnitude.shape[1] == 0:
            return np.zeros(0, np.float32)
        history = self._history if self.continuity else self._history[:, :0]
        n = magnitude.shape[1]
        frames = self._refine(history, np.concatenate([magnitude, future], axis=1))
        self._pending = frames[:, n:] / np.maximum(np.abs(frames[:, n:]), _EPS)
        return self._commit(frames[:, :n])

    def finish(self) -> np.ndarray:
        """End the stream: return the held-back samples and reset.

        Returns:
            (k,) float32: the output totals ``hop * frames_committed`` samples, like
            :func:`lipx.audio.spectrogram_to_wav` (the last hop is zero).
        """
        if self._frames == 0:
            return np.zeros(0, np.float32)
        start = self._frames - self._history.shape[1]
        wav = istft(self._history, self.spec) if self._history.shape[1] > 1 else np.zeros(0)
        wav = wav[self._emitted - self.spec.hop * start:]
        tail = self.spec.hop * self._frames - self._emitted - wav.size
        out = np.concatenate([wav, np.zeros(tail, np.float32)]).astype(np.float32)
        self.reset()
        return out

    # --- internals -----------------------------------------------------------------------

    def _check(self, x: np.ndarray, name: str) -> np.ndarray:
        x = np.asarray(x, np.float32)
        if x.ndim != 2 or x.shape[0] != self.spec.n_freqs:
            raise InputError(f"{name} must be ({self.spec.n_freqs}, frames), got {x.shape}")
        return np.maximum(x, 0.0)

    def _initial_phase(self, history: np.ndarray, count: int) -> np.ndarray:
        """(n_freqs, count) unit phasors for new frames.

        Random without history; otherwise the previous block's refined look-ahead phase where
        it covers these frames, then each bin's instantaneous-frequency advance.
        """
        if history.shape[1] == 0:
            phase = 2 * np.pi * self._rng.random((self.spec.n_freqs, count))
            return np.exp(1j * phase).astype(np.complex64)
        known = self._pending[:, :count]
        if known.shape[1]:
            history = np.concatenate([history, known], axis=1)
        count -= known.shape[1]
        if count == 0:
            return known
        last = np.angle(history[:, -1])
        advance = self._omega
        if history.shape[1] > 1:
            deviation = last - np.angle(history[:, -2]) - self._omega
            advance = self._omega + np.angle(np.exp(1j * deviation))
        steps = np.arange(1, count + 1, dtype=np.float32)
        extrapolated = np.exp(1j * (last[:, None] + advance[:, None] * steps))
        return np.concatenate([known, extrapolated.astype(np.complex64)], axis=1)

    def _refine(self, history: np.ndarray, magnitude: np.ndarray) -> np.ndarray:
        """Griffin-Lim on [history | new]; history stays fixed. Returns the new frames."""
        h = history.shape[1]
        projected = magnitude * self._initial_phase(history, magnitude.shape[1])
        if self.spec.hop * (h + magnitude.shape[1] - 1) <= self.spec.n_fft // 2:
            return projected  # too short to analyse: keep the initial phase
        step, previous = projected, None
        for _ in range(self.n_iter):
            frames = np.concatenate([history, step], axis=1)
            estimate = stft(istft(frames, self.spec), self.spec)[:, h:]
            projected = magnitude * estimate / np.maximum(np.abs(estimate), _EPS)
            step = projected
            if self.momentum and previous is not None:  # fast Griffin-Lim
                step = projected + self.momentum * (projected - previous)
            previous = projected
        return projected

    def _commit(self, new: np.ndarray) -> np.ndarray:
        """Append committed frames; return the samples that no later frame can change."""
        segment = np.concatenate([self._history, new.astype(np.complex64)], axis=1)
        start = self._frames - self._history.shape[1]  # stream index of segment[:, 0]
        self._frames += new.shape[1]
        self._history = segment[:, -self._context:]
        end = self.spec.hop * self._frames - self.delay_samples
        if end <= self._emitted:
            return np.zeros(0, np.float32)
        wav = istft(segment, self.spec) if segment.shape[1] > 1 else np.zeros(0, np.float32)
        offset = self.spec.hop * start
        out = wav[self._emitted - offset:end - offset]
        self._emitted += out.size
        return out.astype(np.float32, copy=False)
