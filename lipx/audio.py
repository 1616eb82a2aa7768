"""Audio analysis and synthesis shared by training, streaming and evaluation (numpy only).

The mel/linear spectrograms the lip-to-speech model predicts, and their inverse (Griffin-Lim), are
defined here once, around :class:`AudioSpec`:

- lip-to-speech targets (VCA-GAN, the default spec): peak-normalise to 0.9, pre-emphasis 0.97,
  clamp; centred STFT (n_fft 640, hop 160, periodic Hann, reflect padding); linear magnitude
  (321 bins); 80 Slaney mel bins 55-7500 Hz with Slaney area normalisation; ln(max(x, 1e-5))
  scaled to [-1, 1]. Inverse: denormalise, exp, pseudo-inverse mel, Griffin-Lim, de-emphasis, clip.
- the lipreading model's audio branch (:meth:`AudioSpec.lipreading`): centred STFT (n_fft 400),
  power divided by the window energy (torchaudio ``normalized=True``), 80 HTK mel bins 0-8 kHz
  without normalisation, 10 log10(max(x, 1e-10)), per-utterance CMVN over time.

Both produce 4 spectrogram frames per video frame (``crop_frames`` cuts a centred STFT's
4T + 1 frames to 4T). Every function takes one waveform ``(N,)`` or a batch ``(..., N)``.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from scipy import signal

from lipx.errors import InputError

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
"""Audio rate of lipx (Hz): what audio is loaded and resampled to, what lip-to-speech generates."""
LOG_FLOOR = 1e-5
"""Magnitude floor of the ln-mel; ln(1e-5) maps to -1 (silence) after normalisation."""
_LN_FLOOR = float(np.log(LOG_FLOOR))
PEAK = 0.9
"""Peak level of the lip-to-speech waveform before pre-emphasis."""
GL_ITERS = 60
"""Griffin-Lim iterations of offline (whole-utterance) synthesis: the original's 60."""


@dataclass(frozen=True)
class AudioSpec:
    """Audio analysis parameters; stored in checkpoints and manifests.

    Defaults are VCA-GAN's (GRID). :meth:`lipreading` gives the lipreading model's audio branch.
    """

    sample_rate: int = SAMPLE_RATE
    n_fft: int = 640
    hop: int = 160
    win: int = 640
    window: str = "hann"
    """Periodic Hann window."""
    n_mels: int = 80
    fmin: float = 55.0
    fmax: float = 7500.0
    mel_scale: str = "slaney"
    """``slaney`` (with Slaney area normalisation) or ``htk`` (no normalisation)."""
    preemphasis: float = 0.97
    """Pre-emphasis coefficient (0 disables it)."""
    log: str = "ln_clamp"
    """``ln_clamp``: ln(max(x, 1e-5)) then scaled to [-1, 1]; ``db_cmvn``: power dB + CMVN."""
    mel_frames_per_video_frame: int = 4

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> AudioSpec:
        return cls(**d)

    @classmethod
    def lipreading(cls) -> AudioSpec:
        """The lipreading model's audio branch: n_fft 400, HTK mel 0-8 kHz, power dB + CMVN."""
        return cls(n_fft=400, win=400, fmin=0.0, fmax=8000.0, mel_scale="htk",
                   preemphasis=0.0, log="db_cmvn")

    @property
    def n_freqs(self) -> int:
        """Bins of the one-sided spectrum (321 for n_fft 640)."""
        return self.n_fft // 2 + 1

    def samples_per_video_frame(self) -> int:
        """Waveform samples per video frame (640 at 16 kHz, hop 160, 4 frames per video frame)."""
        return self.hop * self.mel_frames_per_video_frame


# --- loading and waveform filters -----------------------------------------------------------


class NoAudioError(InputError):
    """A media file has no audio stream."""


def load_audio(path: str | Path, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Decode the first audio stream of any file PyAV reads (wav, flac, mp4, mpg) to mono.

    Resampling and the down-mix to mono are ffmpeg's (libswresample defaults).

    Args:
        path: audio or video file.
        sample_rate: output rate in Hz.

    Returns:
        (N,) float32 in [-1, 1].

    Raises:
        InputError: the file is missing, cannot be decoded or has no audio stream.
    """
    import av  # lazy: only the I/O needs PyAV

    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise NoAudioError(f"{path}: no audio stream; expected a file with an audio track")
            stream = container.streams.audio[0]
            resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
            chunks = []
            for frame in container.decode(stream):
                chunks += [f.to_ndarray().reshape(-1) for f in resampler.resample(frame)]
            chunks += [f.to_ndarray().reshape(-1) for f in resampler.resample(None)]
    except (av.error.FFmpegError, OSError) as e:
        raise InputError(f"{path}: cannot decode audio ({e}); is the file complete?") from e
    if not chunks:
        return np.zeros(0, np.float32)
    return np.concatenate(chunks).astype(np.float32, copy=False)


def fit_length(wav: np.ndarray, n: int, centre: bool = False) -> np.ndarray:
    """Zero-pad or crop the last axis to ``n`` samples, at the end or symmetrically (``centre``)."""
    extra = wav.shape[-1] - n
    if extra == 0:
        return wav
    start = extra // 2 if centre else 0
    if extra > 0:
        return wav[..., start:start + n]
    pad = [(0, 0)] * (wav.ndim - 1) + [(-start, n - wav.shape[-1] + start)]
    return np.pad(wav, pad)


def highpass(wav: np.ndarray, sample_rate: int, cutoff: float = 55.0, order: int = 7) -> np.ndarray:
    """Zero-phase Butterworth high-pass (forward-backward), GRID's 55 Hz 7th-order filter.

    Uses second-order sections (``sosfiltfilt``), which are numerically safer than the original's
    transfer-function ``filtfilt`` at this low cutoff; the two agree except near the ends.

    Returns:
        float32, same shape as ``wav``.
    """
    sos = signal.butter(order, cutoff, "highpass", fs=sample_rate, output="sos")
    return signal.sosfiltfilt(sos, wav, axis=-1).astype(np.float32)


def preemphasis(wav: np.ndarray, coef: float) -> np.ndarray:
    """y[n] = x[n] - coef x[n-1] (y[0] = x[0])."""
    out = np.array(wav, dtype=np.float32, copy=True)
    out[..., 1:] -= coef * wav[..., :-1]
    return out


def deemphasis(wav: np.ndarray, coef: float) -> np.ndarray:
    """The inverse of :func:`preemphasis`: y[n] = x[n] + coef y[n-1]."""
    return signal.lfilter([1.0], [1.0, -coef], wav, axis=-1).astype(np.float32)


def condition_waveform(wav: np.ndarray, spec: AudioSpec) -> np.ndarray:
    """Lip-to-speech target waveform: peak-normalise to 0.9, pre-emphasis, clamp to [-1, 1].

    A silent input stays silent (no division by zero).
    """
    peak = np.max(np.abs(wav), axis=-1, keepdims=True)
    wav = wav * (PEAK / np.where(peak > 0, peak, 1.0))
    if spec.preemphasis:
        wav = preemphasis(wav, spec.preemphasis)
    return np.clip(wav, -1.0, 1.0).astype(np.float32)


# --- STFT -----------------------------------------------------------------------------------


@lru_cache(maxsize=16)
def window(spec: AudioSpec) -> np.ndarray:
    """(n_fft,) float32 periodic window of length ``win``, zero-padded to n_fft (centred)."""
    w = signal.get_window(spec.window, spec.win, fftbins=True)
    left = (spec.n_fft - spec.win) // 2
    w = np.pad(w, (left, spec.n_fft - spec.win - left)).astype(np.float32)
    w.flags.writeable = False
    return w


def stft(wav: np.ndarray, spec: AudioSpec) -> np.ndarray:
    """Centred STFT with reflect padding of n_fft // 2 on both sides.

    Args:
        wav: (..., N) float waveform, N > n_fft // 2.

    Returns:
        (..., n_fft // 2 + 1, 1 + N // hop) complex64.
    """
    half = spec.n_fft // 2
    if wav.shape[-1] <= half:
        raise InputError(f"audio of {wav.shape[-1]} samples is too short for an STFT with "
                         f"n_fft {spec.n_fft}; need more than {half} samples")
    pad = [(0, 0)] * (wav.ndim - 1) + [(half, half)]
    padded = np.pad(np.asarray(wav, np.float32), pad, mode="reflect")
    windows = np.lib.stride_tricks.sliding_window_view(padded, spec.n_fft, axis=-1)
    frames = windows[..., ::spec.hop, :]
    return np.swapaxes(np.fft.rfft(frames * window(spec), axis=-1), -1, -2)


def _overlap_add(frames: np.ndarray, hop: int) -> np.ndarray:
    """Overlap-add (..., n, F) frames at a hop; returns (..., n + hop (F - 1))."""
    n, count = frames.shape[-2:]
    chunks = -(-n // hop)
    padded = np.zeros(frames.shape[:-2] + (count, chunks * hop), frames.dtype)
    padded[..., :n] = np.swapaxes(frames, -1, -2)
    padded = padded.reshape(frames.shape[:-2] + (count, chunks, hop))
    out = np.zeros(frames.shape[:-2] + (count + chunks - 1, hop), frames.dtype)
    for j in range(chunks):
        out[..., j:j + count, :] += padded[..., :, j, :]
    return out.reshape(frames.shape[:-2] + (-1,))[..., :n + hop * (count - 1)]


@lru_cache(maxsize=16)
def _window_sumsquare(spec: AudioSpec, count: int) -> np.ndarray:
    w2 = np.repeat((window(spec) ** 2)[:, None], count, axis=1)
    wss = _overlap_add(w2, spec.hop)
    wss.flags.writeable = False
    return wss


def istft(stft_matrix: np.ndarray, spec: AudioSpec, length: int | None = None) -> np.ndarray:
    """Least-squares inverse of :func:`stft`: overlap-add of windowed frames / window-sum-square.

    Where the window-sum-square is below float32's smallest normal number the division is
    skipped (as in Griffin & Lim's and the original's iSTFT).

    Args:
        stft_matrix: (..., n_fft // 2 + 1, F) complex.
        length: output samples; default hop * (F - 1), the length :func:`stft` maps back to F
            frames. Shorter is cropped, longer zero-padded at the end.

    Returns:
        (..., length) float32.
    """
    count = stft_matrix.shape[-1]
    frames = np.fft.irfft(stft_matrix, n=spec.n_fft, axis=-2).astype(np.float32)
    y = _overlap_add(frames * window(spec)[:, None], spec.hop)
    wss = _window_sumsquare(spec, count)
    tiny = np.finfo(np.float32).tiny
    y = y / np.where(wss > tiny, wss, 1.0).astype(np.float32)
    half = spec.n_fft // 2
    y = y[..., half:y.shape[-1] - half]
    return fit_length(y, hop_length(spec, count) if length is None else length)


def hop_length(spec: AudioSpec, frames: int) -> int:
    """Samples a centred STFT of ``frames`` frames covers: hop * (frames - 1)."""
    return spec.hop * (frames - 1)


def crop_frames(x: np.ndarray, video_frames: int | None, spec: AudioSpec,
                fill: float = 0.0) -> np.ndarray:
    """Crop or pad the last (time) axis to mel_frames_per_video_frame * video_frames.

    ``None`` leaves ``x`` unchanged. Padding (audio shorter than the video) uses ``fill``.
    """
    if video_frames is None:
        return x
    n = spec.mel_frames_per_video_frame * video_frames
    if x.shape[-1] >= n:
        return x[..., :n]
    pad = [(0, 0)] * (x.ndim - 1) + [(0, n - x.shape[-1])]
    return np.pad(x, pad, constant_values=fill)


# --- mel filterbanks ------------------------------------------------------------------------

_SLANEY_F_SP = 200.0 / 3
_SLANEY_LOG_HZ = 1000.0
_SLANEY_LOG_MEL = _SLANEY_LOG_HZ / _SLANEY_F_SP
_SLANEY_LOG_STEP = np.log(6.4) / 27.0


def hz_to_mel(hz: np.ndarray | float, scale: str) -> np.ndarray:
    """Hz to mel: ``htk`` 2595 log10(1 + f/700), or ``slaney`` (linear below 1 kHz, log above)."""
    hz = np.asarray(hz, np.float64)
    if scale == "htk":
        return 2595.0 * np.log10(1.0 + hz / 700.0)
    octaves = np.log(np.maximum(hz, _SLANEY_LOG_HZ) / _SLANEY_LOG_HZ)
    log_part = _SLANEY_LOG_MEL + octaves / _SLANEY_LOG_STEP
    return np.where(hz >= _SLANEY_LOG_HZ, log_part, hz / _SLANEY_F_SP)


def mel_to_hz(mel: np.ndarray, scale: str) -> np.ndarray:
    """The inverse of :func:`hz_to_mel`."""
    mel = np.asarray(mel, np.float64)
    if scale == "htk":
        return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)
    above = np.maximum(mel, _SLANEY_LOG_MEL) - _SLANEY_LOG_MEL
    log_part = _SLANEY_LOG_HZ * np.exp(_SLANEY_LOG_STEP * above)
    return np.where(mel >= _SLANEY_LOG_MEL, log_part, mel * _SLANEY_F_SP)


@lru_cache(maxsize=16)
def mel_filterbank(spec: AudioSpec) -> np.ndarray:
    """Triangular mel filters on the one-sided FFT bins.

    ``slaney``: Slaney mel scale, each filter scaled to unit area (2 / bandwidth in Hz), as
    ``librosa.filters.mel`` defaults. ``htk``: HTK mel scale, peak 1, as torchaudio's ``MelScale``.

    Returns:
        (n_mels, n_fft // 2 + 1) float32, read-only.
    """
    if spec.mel_scale not in ("slaney", "htk"):
        raise InputError(f"unknown mel scale {spec.mel_scale!r}; choose from: htk, slaney")
    freqs = np.linspace(0.0, spec.sample_rate / 2, spec.n_freqs)
    mels = np.linspace(hz_to_mel(spec.fmin, spec.mel_scale), hz_to_mel(spec.fmax, spec.mel_scale),
                       spec.n_mels + 2)
    edges = mel_to_hz(mels, spec.mel_scale)
    widths = np.diff(edges)
    ramps = edges[:, None] - freqs[None, :]
    rising = -ramps[:-2] / widths[:-1, None]
    falling = ramps[2:] / widths[1:, None]
    fb = np.maximum(0.0, np.minimum(rising, falling))
    if spec.mel_scale == "slaney":
        fb *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
    fb = fb.astype(np.float32)
    fb.flags.writeable = False
    return fb


@lru_cache(maxsize=16)
def _mel_pinv(spec: AudioSpec) -> np.ndarray:
    inv = np.linalg.pinv(mel_filterbank(spec).astype(np.float64)).astype(np.float32)
    inv.flags.writeable = False
    return inv


# --- spectrograms (analysis) ----------------------------------------------------------------


def linear_spectrogram(wav: np.ndarray, spec: AudioSpec,
                       video_frames: int | None = None) -> np.ndarray:
    """Linear magnitude |STFT| of an (already conditioned) waveform.

    Args:
        wav: (..., N) float32, e.g. from :func:`condition_waveform`.
        video_frames: crop/pad to 4 * video_frames frames; None keeps 1 + N // hop.

    Returns:
        (..., n_fft // 2 + 1, F) float32 (321 bins by default).
    """
    return crop_frames(np.abs(stft(wav, spec)).astype(np.float32), video_frames, spec)


def normalise_log_mel(log_mel: np.ndarray) -> np.ndarray:
    """ln-mel -> [-1, 1]: (x - ln 1e-5) / (-ln 1e-5 / 2) - 1. Silence -> -1, magnitude 1 -> +1."""
    return ((log_mel - _LN_FLOOR) / (-_LN_FLOOR / 2) - 1.0).astype(np.float32)


def denormalise_log_mel(mel: np.ndarray) -> np.ndarray:
    """The inverse of :func:`normalise_log_mel`: [-1, 1] -> ln-mel."""
    return ((mel + 1.0) * (-_LN_FLOOR / 2) + _LN_FLOOR).astype(np.float32)


def mel_from_linear(linear: np.ndarray, spec: AudioSpec) -> np.ndarray:
    """(..., n_freqs, F) linear magnitude -> (..., n_mels, F) normalised ln-mel in [-1, 1]."""
    mel = np.matmul(mel_filterbank(spec), linear)
    return normalise_log_mel(np.log(np.maximum(mel, LOG_FLOOR)))


def spectrograms(wav: np.ndarray, spec: AudioSpec,
                 video_frames: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Lip-to-speech targets from a raw waveform: condition, one STFT, mel and linear.

    Args:
        wav: (..., N) float32 raw 16 kHz audio.
        video_frames: crop/pad to 4 * video_frames frames (the linear part pads with 0, so the
            mel pads with -1, silence).

    Returns:
        mel (..., n_mels, F) in [-1, 1] and linear (..., n_freqs, F), both float32.
    """
    linear = linear_spectrogram(condition_waveform(wav, spec), spec, video_frames)
    return mel_from_linear(linear, spec), linear


def mel_spectrogram(wav: np.ndarray, spec: AudioSpec,
                    video_frames: int | None = None) -> np.ndarray:
    """The mel features ``spec`` defines, from a raw waveform.

    ``ln_clamp`` (lip-to-speech): the normalised ln-mel of :func:`spectrograms`.
    ``db_cmvn`` (lipreading audio branch): :func:`lipreading_features`.

    Returns:
        (..., n_mels, F) float32.
    """
    if spec.log == "db_cmvn":
        return lipreading_features(wav, spec, video_frames)
    if spec.log != "ln_clamp":
        raise InputError(f"unknown audio log type {spec.log!r}; choose from: db_cmvn, ln_clamp")
    return spectrograms(wav, spec, video_frames)[0]


def lipreading_features(wav: np.ndarray, spec: AudioSpec | None = None,
                        video_frames: int | None = None) -> np.ndarray:
    """The lipreading model's audio branch: power mel in dB with per-utterance CMVN.

    Power |X|^2 divided by the window energy (torchaudio ``normalized=True``), HTK mel (no
    normalisation), 10 log10(max(x, 1e-10)), then per bin (x - mean_t) / (std_t + 1e-10) with the
    unbiased std (torch's default), computed over the whole utterance before the crop to 4T
    (padding, if the audio is short, is 0).

    Returns:
        (..., n_mels, F) float32.
    """
    spec = spec or AudioSpec.lipreading()
    power = np.abs(stft(wav, spec)) ** 2 / float(np.sum(window(spec).astype(np.float64) ** 2))
    db = 10.0 * np.log10(np.maximum(np.matmul(mel_filterbank(spec), power), 1e-10))
    ddof = 1 if db.shape[-1] > 1 else 0
    std = np.std(db, axis=-1, keepdims=True, ddof=ddof)
    feats = (db - db.mean(axis=-1, keepdims=True)) / (std + 1e-10)
    return crop_frames(feats.astype(np.float32), video_frames, spec)


# --- synthesis (inverse) --------------------------------------------------------------------


def mel_to_linear(mel: np.ndarray, spec: AudioSpec) -> np.ndarray:
    """Normalised ln-mel (..., n_mels, F) -> approximate linear magnitude (..., n_freqs, F).

    Denormalise, exp, then the filterbank's pseudo-inverse, clipped at 0. (The original used the
    transposed filterbank times 1000, a cruder approximation; the pseudo-inverse keeps the level.)
    """
    magnitude = np.exp(denormalise_log_mel(mel))
    return np.maximum(np.matmul(_mel_pinv(spec), magnitude), 0.0).astype(np.float32)


def griffin_lim(magnitude: np.ndarray, spec: AudioSpec, n_iter: int = GL_ITERS,
                seed: int | None = 0) -> np.ndarray:
    """Griffin-Lim phase reconstruction from a linear magnitude spectrogram.

    Starts from uniformly random phase (``seed``; None draws a fresh one), then alternates
    :func:`istft` and :func:`stft`, keeping the given magnitude and the estimated phase.

    Args:
        magnitude: (..., n_fft // 2 + 1, F) float, non-negative.
        n_iter: refinement iterations (the original uses 60).

    Returns:
        (..., hop * (F - 1)) float32 waveform (still pre-emphasised, if the targets were).
    """
    magnitude = np.maximum(np.asarray(magnitude, np.float32), 0.0)
    rng = np.random.default_rng(seed)
    phase = np.exp(2j * np.pi * rng.random(magnitude.shape)).astype(np.complex64)
    wav = istft(magnitude * phase, spec)
    for _ in range(n_iter):
        estimate = stft(wav, spec)
        phase = estimate / np.maximum(np.abs(estimate), 1e-12)
        wav = istft(magnitude * phase, spec)
    return wav


def spectrogram_to_wav(linear: np.ndarray, spec: AudioSpec, n_iter: int = GL_ITERS,
                       seed: int | None = 0,
                       length: int | None = None) -> np.ndarray:
    """Linear magnitude -> waveform: Griffin-Lim, de-emphasis, clip to [-1, 1].

    Args:
        linear: (..., n_fft // 2 + 1, F) linear magnitude (e.g. the postnet's output).
        length: output samples; default hop * F (F / 4 video frames at 640 samples each).

    Returns:
        (..., length) float32.
    """
    wav = griffin_lim(linear, spec, n_iter, seed)
    if spec.preemphasis:
        wav = deemphasis(wav, spec.preemphasis)
    wav = fit_length(wav, spec.hop * linear.shape[-1] if length is None else length)
    return np.clip(wav, -1.0, 1.0).astype(np.float32)


def mel_to_wav(mel: np.ndarray, spec: AudioSpec, n_iter: int = GL_ITERS, seed: int | None = 0,
               length: int | None = None) -> np.ndarray:
    """Normalised ln-mel (..., n_mels, F) -> waveform via :func:`mel_to_linear` and Griffin-Lim."""
    return spectrogram_to_wav(mel_to_linear(mel, spec), spec, n_iter, seed, length)


def spectral_convergence(reference: np.ndarray, estimate: np.ndarray) -> float:
    """||reference - estimate||_F / ||reference||_F for two magnitude spectrograms."""
    n = min(reference.shape[-1], estimate.shape[-1])
    ref, est = reference[..., :n], estimate[..., :n]
    return float(np.linalg.norm(ref - est) / max(float(np.linalg.norm(ref)), 1e-12))
