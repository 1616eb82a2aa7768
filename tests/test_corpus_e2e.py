"""`lipx data synth` -> `lipx data prepare`, both layouts: prepared clips decode to the expected
shapes and ranges, and a synthetic clip's spectrogram survives a Griffin-Lim round trip."""

from __future__ import annotations

import numpy as np
import pytest

from lipx import audio
from lipx.data.prepare_format import read_clip, read_corpus
from lipx.train.datasets import LipreadingDataset, LipToSpeechDataset


@pytest.mark.parametrize("corpus,frames", [("lrw_corpus", 29), ("grid_corpus", 75)])
def test_prepared_clips_have_expected_shapes_and_ranges(corpus, frames, request):
    root = request.getfixturevalue(corpus)
    info, records = read_corpus(root)
    assert records and all(r["frames"] == frames for r in records)
    video, wav, meta = read_clip(root / records[0]["path"])
    side = 136 + 2 * info["margin"]
    assert video.shape == (frames, side, side) and video.dtype == np.uint8
    assert 20 < video.mean() < 235 and video.std() > 5  # a face, not a blank frame
    assert wav.shape == (frames * 640,) and np.abs(wav).max() <= 1.0 and wav.std() > 1e-3


def test_datasets_over_synthetic_corpora(lrw_corpus, grid_corpus):
    item = LipreadingDataset(lrw_corpus, "test")[0]
    assert item["video"].shape == (1, 29, 112, 112) and item["audio"].shape == (1, 80, 116)
    assert abs(float(item["video"].mean())) < 3  # normalised
    item = LipToSpeechDataset(grid_corpus, "train", protocol="unseen", window=40)[0]
    assert item["mel"].shape == (1, 80, 160) and item["linear"].shape == (1, 321, 160)
    assert -1.0 <= float(item["mel"].min()) and float(item["mel"].max()) <= 1.0


def test_griffin_lim_round_trip_of_a_synthetic_clip(grid_corpus):
    _, records = read_corpus(grid_corpus)
    _, wav, _ = read_clip(grid_corpus / records[0]["path"])
    spec = audio.AudioSpec()
    linear = audio.linear_spectrogram(audio.condition_waveform(wav, spec), spec, 75)
    rebuilt = audio.griffin_lim(linear, spec, n_iter=60, seed=0)
    again = audio.linear_spectrogram(rebuilt, spec, 75)
    # measured 0.09-0.14 on synthetic GRID sentences; 1 iteration gives about 0.38
    assert audio.spectral_convergence(linear, again) < 0.2
    noisy = audio.linear_spectrogram(audio.griffin_lim(linear, spec, n_iter=1, seed=0), spec, 75)
    assert audio.spectral_convergence(linear, noisy) > audio.spectral_convergence(linear, again)
