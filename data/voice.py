"""Speech for the synthetic corpus: a source-filter formant synthesiser at 16 kHz (numpy).

Two sources, a glottal pulse train (Rosenberg pulse, differentiated; F0 from the speaker, the
trajectory's pitch contour, jitter and shimmer) and white noise, are filtered frame by frame in the
STFT domain by spectral envelopes built from the same articulation trajectory that moves the lips
(:class:`lipx.data.lexicon.Tracks`):

* voicing and aspiration go through the vocal-tract envelope: a cascade of five formant
  resonances (F1-F3 from the trajectory, F4-F5 fixed), scaled by the speaker's formant scale and
  blended towards a nasal murmur by the ``nasal`` channel;
* frication and plosive bursts go through a log-Gaussian band (centre ``fc``, width ``fbw``).

Each frame is filtered with a zero-phase envelope on a zero-padded FFT and overlap-added, which is
a time-varying linear filter; everything is vectorised, so a 3 s sentence takes milliseconds.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from lipx.audio import SAMPLE_RATE
from lipx.data.lexicon import CH, Tracks

log = logging.getLogger(__name__)

_HOP = 64
_WIN = 256
_NFFT = 1024
_PAD = _WIN
_FRICATION_GAIN = 12.0
_ASPIRATION_GAIN = 0.3
_BANDWIDTHS = (70.0, 90.0, 130.0, 200.0, 250.0)


@dataclass(frozen=True)
class Voice:
    """A speaker's voice."""

    f0: float
    """Mean speaking pitch (Hz)."""
    formant_scale: float
    """Vocal-tract scale applied to all formants (1 = adult male)."""
    jitter: float
    """Relative cycle-to-cycle F0 perturbation (standard deviation)."""
    shimmer: float
    """Relative amplitude perturbation (standard deviation)."""
    breath: float
    """Breathiness: noise mixed into the glottal source during the open phase."""
    level: float
    """Peak level of the clean speech (0-1)."""
    snr_db: float
    """Signal-to-noise ratio of the added background noise (dB)."""

    @classmethod
    def random(cls, rng: np.random.Generator) -> Voice:
        """A moderate random voice: half low (95-140 Hz), half high (175-235 Hz) pitched."""
        high = bool(rng.random() < 0.5)
        return cls(
            f0=float(rng.uniform(175, 235) if high else rng.uniform(95, 140)),
            formant_scale=float(rng.uniform(1.1, 1.2) if high else rng.uniform(0.95, 1.05)),
            jitter=float(rng.uniform(0.005, 0.015)),
            shimmer=float(rng.uniform(0.02, 0.06)),
            breath=float(rng.uniform(0.02, 0.12)),
            level=float(rng.uniform(0.5, 0.8)),
            snr_db=float(rng.uniform(30, 45)),
        )


def synthesize(tracks: Tracks, voice: Voice, t0: float, n_samples: int,
               rng: np.random.Generator) -> np.ndarray:
    """Speech for ``n_samples`` samples at 16 kHz starting at time ``t0`` of the trajectory.

    Args:
        tracks: the articulation trajectory (it must cover [t0, t0 + n_samples / SAMPLE_RATE]).
        voice: the speaker's voice.
        t0: start time (seconds).
        n_samples: output length.
        rng: randomness (utterance pitch offset, jitter, noise); the same state gives the same
            samples.

    Returns:
        (n_samples,) float32 waveform in [-1, 1].
    """
    n = n_samples + 2 * _PAD
    times = t0 + (np.arange(n) - _PAD) / SAMPLE_RATE
    voiced, noise = _sources(tracks, voice, times, rng)
    n_frames = (n - _WIN) // _HOP + 1
    centres = t0 + (np.arange(n_frames) * _HOP + _WIN / 2 - _PAD) / SAMPLE_RATE
    ctrl = tracks.sample(centres)
    tract, band = _envelopes(ctrl, voice.formant_scale)
    spec_v = _stft(voiced, n_frames)
    spec_n = _stft(noise, n_frames)
    fric = (ctrl[:, CH["fric"]] + ctrl[:, CH["burst"]])[:, None]
    out = spec_v * (ctrl[:, CH["voice"], None] * tract) \
        + spec_n * (_ASPIRATION_GAIN * ctrl[:, CH["asp"], None] * tract
                    + _FRICATION_GAIN * fric * band)
    speech = _overlap_add(np.fft.irfft(out, n=_NFFT, axis=1), n)[_PAD:_PAD + n_samples]
    peak = float(np.max(np.abs(speech))) or 1.0
    speech *= voice.level / peak
    active = speech[np.abs(speech) > 0.05 * voice.level]
    rms = float(np.sqrt(np.mean(active ** 2))) if active.size else voice.level * 0.1
    speech += rms * 10 ** (-voice.snr_db / 20) * rng.standard_normal(n_samples)
    return np.clip(speech, -1.0, 1.0).astype(np.float32)


def _sources(tracks: Tracks, voice: Voice, times: np.ndarray,
             rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Glottal source and white noise at the sample times, each (N,) float64, unit RMS."""
    n = len(times)
    pitch = _smooth_noise(rng, n, 200.0, voice.jitter) + 1.0
    pitch *= 1.0 + float(rng.uniform(-0.05, 0.05)) + _smooth_noise(rng, n, 3.0, 0.02)
    pitch *= np.interp(times, tracks.t0 + np.arange(len(tracks.values)) / tracks.rate,
                       tracks.values[:, CH["pitch"]])
    f0 = voice.f0 * pitch
    phase = np.cumsum(f0 / SAMPLE_RATE) % 1.0
    flow = _rosenberg(phase)
    source = np.diff(flow, prepend=flow[0]) * (SAMPLE_RATE / f0)
    source *= 1.0 + _smooth_noise(rng, n, 200.0, voice.shimmer)
    source += voice.breath * flow * rng.standard_normal(n)
    source /= np.sqrt(np.mean(source ** 2)) + 1e-12
    return source, rng.standard_normal(n)


def _rosenberg(phase: np.ndarray, open_: float = 0.45, close: float = 0.1) -> np.ndarray:
    """Rosenberg glottal flow pulse over one period, ``phase`` in [0, 1) -> flow in [0, 1]."""
    rising = 0.5 * (1.0 - np.cos(np.pi * phase / open_))
    falling = np.cos(0.5 * np.pi * np.clip((phase - open_) / close, 0.0, 1.0))
    return np.where(phase < open_, rising, np.where(phase < open_ + close, falling, 0.0))


def _smooth_noise(rng: np.random.Generator, n: int, rate_hz: float, std: float) -> np.ndarray:
    """Gaussian noise of standard deviation ``std`` at ``rate_hz``, linearly upsampled to n."""
    step = SAMPLE_RATE / rate_hz
    knots = rng.standard_normal(int(n / step) + 2) * std
    return np.interp(np.arange(n) / step, np.arange(len(knots)), knots)


def _resonance(f: np.ndarray, centre: np.ndarray, bandwidth: float | np.ndarray) -> np.ndarray:
    """Magnitude response of a two-pole resonator, 1 at DC: (F,) x (M, 1) -> (M, F)."""
    half = 0.5 * bandwidth
    num = centre ** 2 + half ** 2
    return num / np.sqrt(((f - centre) ** 2 + half ** 2) * ((f + centre) ** 2 + half ** 2))


def _envelopes(ctrl: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Vocal-tract and frication envelopes, each (M, NFFT // 2 + 1), from (M, C) controls."""
    f = np.fft.rfftfreq(_NFFT, 1.0 / SAMPLE_RATE)
    formants = [ctrl[:, CH[k], None] * scale for k in ("f1", "f2", "f3")]
    formants += [np.full((len(ctrl), 1), min(3500.0 * scale, 7000.0)),
                 np.full((len(ctrl), 1), min(4500.0 * scale, 7600.0))]
    oral = np.ones((len(ctrl), len(f)))
    for centre, bw in zip(formants, _BANDWIDTHS, strict=True):
        oral *= _resonance(f, centre, bw * (0.5 + 0.5 * scale))
    nasal_murmur = 1.5 * _resonance(f, np.array([[260.0]]), 100.0) * np.sqrt(oral) * 0.3
    nas = np.clip(ctrl[:, CH["nasal"], None], 0.0, 1.0)
    tract = (1.0 - nas) * oral + nas * nasal_murmur
    fc = np.maximum(ctrl[:, CH["fc"], None] * (0.8 + 0.2 * scale), 200.0)
    octaves = np.log2(np.maximum(f, 1.0) / fc)
    band = np.exp(-0.5 * (octaves / np.maximum(ctrl[:, CH["fbw"], None], 0.1)) ** 2)
    band[:, 0] = 0.0
    return tract, band


def _stft(x: np.ndarray, n_frames: int) -> np.ndarray:
    """Hann-windowed frames (WIN, hop HOP) centred in zero-padded NFFT buffers -> (M, NFFT/2+1)."""
    idx = np.arange(n_frames)[:, None] * _HOP + np.arange(_WIN)[None, :]
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(_WIN) / _WIN)
    buf = np.zeros((n_frames, _NFFT))
    offset = (_NFFT - _WIN) // 2
    buf[:, offset:offset + _WIN] = x[idx] * window
    return np.fft.rfft(buf, axis=1)


def _overlap_add(frames: np.ndarray, n: int) -> np.ndarray:
    """Overlap-add (M, NFFT) filtered frames back to n samples (Hann at 75 % overlap sums to 2)."""
    offset = (_NFFT - _WIN) // 2
    out = np.zeros(len(frames) * _HOP + _NFFT)
    per = _NFFT // _HOP
    for r in range(per):
        flat = frames[r::per].reshape(-1)
        start = r * _HOP
        out[start:start + flat.size] += flat
    return out[offset:offset + n] / 2.0
