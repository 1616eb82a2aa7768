"""lipx.audio: filterbanks, STFT, normalisation and Griffin-Lim against references."""

from __future__ import annotations

import numpy as np
import pytest

from lipx import audio as A
from lipx.audio import AudioSpec
from lipx.errors import InputError

librosa = pytest.importorskip("librosa")

SPEC = AudioSpec()
LIP = AudioSpec.lipreading()


def harmonic(seconds: float = 2.0, sr: int = 16000) -> np.ndarray:
    """A voiced-speech-like test signal: 20 harmonics of a gliding 100-160 Hz pitch, AM at 3 Hz."""
    t = np.arange(int(seconds * sr)) / sr
    f0 = 130 + 30 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / sr
    wav = sum(np.sin(k * phase) / k for k in range(1, 21))
    return (0.3 * wav * (0.4 + 0.6 * np.sin(2 * np.pi * 3 * t) ** 2)).astype(np.float32)


def test_slaney_filterbank_matches_librosa():
    ours = A.mel_filterbank(SPEC)
    ref = librosa.filters.mel(sr=16000, n_fft=640, n_mels=80, fmin=55.0, fmax=7500.0)
    assert ours.shape == (80, 321)
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-7)


def test_htk_filterbank_matches_librosa_unnormalised():
    ours = A.mel_filterbank(LIP)
    ref = librosa.filters.mel(sr=16000, n_fft=400, n_mels=80, fmin=0.0, fmax=8000.0, htk=True,
                              norm=None)
    assert ours.shape == (80, 201)
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("spec", [SPEC, LIP], ids=["n_fft640", "n_fft400"])
def test_stft_matches_librosa(spec):
    wav = np.random.default_rng(0).standard_normal(8000).astype(np.float32) * 0.1
    ours = A.stft(wav, spec)
    ref = librosa.stft(wav, n_fft=spec.n_fft, hop_length=spec.hop, win_length=spec.win,
                       window="hann", center=True, pad_mode="reflect")
    assert ours.shape == ref.shape == (spec.n_fft // 2 + 1, 1 + 8000 // spec.hop)
    np.testing.assert_allclose(ours, ref, atol=2e-5 * np.abs(ref).max())


def test_istft_inverts_stft_and_matches_librosa():
    wav = np.random.default_rng(1).standard_normal(6400).astype(np.float32)
    spec_matrix = A.stft(wav, SPEC)
    ours = A.istft(spec_matrix, SPEC, length=wav.size)
    np.testing.assert_allclose(ours, wav, atol=1e-5)
    ref = librosa.istft(spec_matrix, hop_length=160, win_length=640, n_fft=640, length=wav.size)
    np.testing.assert_allclose(ours, ref, atol=1e-5)


def test_batched_stft_equals_per_item():
    wavs = np.random.default_rng(2).standard_normal((3, 4000)).astype(np.float32)
    batched = A.stft(wavs, SPEC)
    for i in range(3):
        np.testing.assert_allclose(batched[i], A.stft(wavs[i], SPEC), atol=1e-5)


def test_mel_normalisation_round_trip_and_anchors():
    x = np.linspace(np.log(1e-5), 0.5, 50, dtype=np.float32)
    np.testing.assert_allclose(A.denormalise_log_mel(A.normalise_log_mel(x)), x, atol=1e-5)
    assert A.normalise_log_mel(np.log(np.float32(1e-5))) == pytest.approx(-1.0)
    assert A.normalise_log_mel(np.float32(0.0)) == pytest.approx(1.0)


def test_spectrograms_shapes_ranges_and_four_frames_per_video_frame():
    wav = harmonic(3.0)
    mel, linear = A.spectrograms(wav, SPEC, video_frames=75)
    assert mel.shape == (80, 300) and linear.shape == (321, 300)
    assert mel.dtype == linear.dtype == np.float32
    assert -1.0 <= mel.min() and mel.max() <= 1.0 and linear.min() >= 0
    silent_mel, silent_linear = A.spectrograms(np.zeros(48000, np.float32), SPEC, 75)
    assert np.all(silent_mel == -1.0) and np.all(silent_linear == 0)
    short_mel, _ = A.spectrograms(wav[:16000], SPEC, video_frames=75)  # audio shorter than video
    assert short_mel.shape == (80, 300) and np.all(short_mel[:, 101:] == -1.0)


def test_condition_waveform_peak_and_preemphasis():
    wav = harmonic(1.0) * 0.1
    out = A.condition_waveform(wav, SPEC)
    peak = 0.9 / np.abs(wav).max()
    np.testing.assert_allclose(out[1:], peak * (wav[1:] - 0.97 * wav[:-1]), atol=1e-5)
    np.testing.assert_allclose(A.deemphasis(A.preemphasis(wav, 0.97), 0.97), wav, atol=1e-5)


def test_griffin_lim_spectral_convergence():
    """60 iterations reach a spectral convergence of about 0.12 on a harmonic signal."""
    _, linear = A.spectrograms(harmonic(2.0), SPEC, video_frames=50)
    wav = A.griffin_lim(linear, SPEC, n_iter=60, seed=0)
    assert wav.shape == (160 * 199,)
    sc = A.spectral_convergence(linear, np.abs(A.stft(wav, SPEC)))
    assert sc < 0.15
    sc_few = A.spectral_convergence(linear, np.abs(A.stft(A.griffin_lim(linear, SPEC, 2, 0), SPEC)))
    assert sc < sc_few  # the iterations do the work
    again = A.griffin_lim(linear, SPEC, n_iter=60, seed=0)
    np.testing.assert_array_equal(wav, again)


def test_spectrogram_to_wav_and_mel_path():
    mel, linear = A.spectrograms(harmonic(1.0), SPEC, video_frames=25)
    wav = A.spectrogram_to_wav(linear, SPEC, n_iter=10)
    assert wav.shape == (16000,) and np.abs(wav).max() <= 1.0 and np.abs(wav).max() > 0.05
    approx = A.mel_to_linear(mel, SPEC)
    assert approx.shape == (321, 100) and approx.min() >= 0
    # the pseudo-inverse keeps the level: its mel is close to the original mel
    assert np.abs(A.mel_from_linear(approx, SPEC) - mel).mean() < 0.05
    assert A.mel_to_wav(mel, SPEC, n_iter=5).shape == (16000,)


def test_lipreading_features_match_torch_reference_and_cmvn():
    torch = pytest.importorskip("torch")
    noise = np.random.default_rng(3).standard_normal(18560).astype(np.float32)
    wav = harmonic(1.16)[:18560] + 1e-2 * noise  # no near-empty bins, where float32 noise rules
    feats = A.lipreading_features(wav, LIP, video_frames=29)
    assert feats.shape == (80, 116)
    # independent reference: torch.stft + window-energy normalisation + librosa HTK filters
    w = torch.hann_window(400, periodic=True)
    x = torch.stft(torch.from_numpy(wav), 400, 160, 400, w, center=True, pad_mode="reflect",
                   return_complex=True).abs() ** 2 / (w**2).sum()
    fb = torch.from_numpy(librosa.filters.mel(sr=16000, n_fft=400, n_mels=80, fmin=0, fmax=8000,
                                              htk=True, norm=None))
    db = 10 * torch.log10(torch.clamp(fb @ x, min=1e-10))
    ref = ((db - db.mean(1, keepdim=True)) / (1e-10 + db.std(1, keepdim=True)))[:, :116]
    np.testing.assert_allclose(feats, ref.numpy(), atol=2e-3)
    full = A.lipreading_features(wav, LIP)
    assert full.shape == (80, 117)
    np.testing.assert_allclose(full.mean(axis=1), 0, atol=1e-4)
    np.testing.assert_allclose(full.std(axis=1, ddof=1), 1, atol=1e-3)
    np.testing.assert_array_equal(A.mel_spectrogram(wav, LIP, 29), feats)


def test_highpass_removes_low_frequencies():
    t = np.arange(32000) / 16000
    wav = (np.sin(2 * np.pi * 25 * t) + np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    out = A.highpass(wav, 16000)
    spectrum = np.abs(np.fft.rfft(out * np.hanning(out.size)))
    freqs = np.fft.rfftfreq(out.size, 1 / 16000)
    low, high = spectrum[np.argmin(np.abs(freqs - 25))], spectrum[np.argmin(np.abs(freqs - 440))]
    assert 20 * np.log10(high / low) > 60


def test_fit_length_pads_and_crops():
    x = np.arange(10, dtype=np.float32)
    assert A.fit_length(x, 6).tolist() == [0, 1, 2, 3, 4, 5]
    assert A.fit_length(x, 6, centre=True).tolist() == [2, 3, 4, 5, 6, 7]
    assert A.fit_length(x, 12, centre=True).tolist() == [0, *range(10), 0]


def test_bad_inputs_raise_input_error(tmp_path):
    with pytest.raises(InputError, match="too short"):
        A.stft(np.zeros(100, np.float32), SPEC)
    with pytest.raises(InputError, match="cannot decode"):
        A.load_audio(tmp_path / "missing.wav")
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF not really a wav file")
    with pytest.raises(InputError):
        A.load_audio(bad)


def test_load_audio_resamples_to_16k(tmp_path):
    sf = pytest.importorskip("soundfile")
    t = np.arange(44100) / 44100
    sf.write(tmp_path / "a.wav", (0.5 * np.sin(2 * np.pi * 300 * t)).astype(np.float32), 44100)
    wav = A.load_audio(tmp_path / "a.wav")
    assert wav.dtype == np.float32 and abs(wav.size - 16000) < 200
    spectrum = np.abs(np.fft.rfft(wav))
    assert abs(np.argmax(spectrum) * 16000 / wav.size - 300) < 3
