"""Training lip-to-speech for streams: windows of the runtime's length drawn anywhere in GRID
streams, the front-end's context around every item, and a fine-tune that runs end to end."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lipx import audio as aud
from lipx.data.prepare_format import read_corpus
from lipx.data.stream_corpus import StreamsOptions, synthesize_streams
from lipx.data.synth import SynthOptions
from lipx.errors import InputError
from lipx.models.checkpoint import load_checkpoint
from lipx.train.config import TrainConfig
from lipx.train.datasets import LipToSpeechDataset
from lipx.train.run import train
from lipx.train.stream_windows import SpeechWindows
from lipx.video import mouth_crop, region_origin


@pytest.fixture(scope="module")
def grid_streams(grid_corpus, tmp_path_factory):
    """One stream of the fixture corpus' training speaker: two sentences with pauses."""
    options = read_corpus(grid_corpus)[0]["synth"]
    fields = {"layout", "speakers", "held_out", "utterances", "seed"}
    recipe = SynthOptions(out=grid_corpus, **{k: v for k, v in options.items() if k in fields})
    out = tmp_path_factory.mktemp("grid-streams") / "train"
    synthesize_streams(StreamsOptions(out, recipe, streams=1, per_stream=2, part="train"))
    return out


def test_speech_windows_carry_context_and_the_streams_own_targets(grid_streams):
    windows = SpeechWindows(grid_streams, size=40, frames=24, augment=False, context=2)
    stream = windows.streams[0]
    mel, linear = aud.spectrograms(stream.wav, windows.audio_spec, len(stream.region))
    starts = set()
    for i in range(len(windows)):
        item = windows[i]
        s = item["start"]
        starts.add(s)
        assert item["video"].shape == (1, 28, 112, 112) and item["length"] == 24
        np.testing.assert_array_equal(item["mel"][0].numpy(), mel[:, 4 * s:4 * (s + 24)])
        np.testing.assert_array_equal(item["linear"][0].numpy(), linear[:, 4 * s:4 * (s + 24)])
        np.testing.assert_array_equal(item["wav"].numpy(), stream.wav[640 * s:640 * (s + 24)])
        first = max(s - 2, 0)
        want = mouth_crop(stream.region[first:s + 26], windows.video_spec,
                          origin=region_origin(windows.video_spec, 8))
        got = item["video"][0].numpy()
        np.testing.assert_array_equal(got[first - (s - 2):], want)
        assert not got[:first - (s - 2)].any()  # zero context before the stream's start
    assert len(starts) > 20  # windows start anywhere, not on sentence boundaries


def test_clip_windows_get_their_neighbours_as_context(grid_corpus):
    plain = LipToSpeechDataset(grid_corpus, "train", protocol="unseen", window=24, augment=False)
    ctx = LipToSpeechDataset(grid_corpus, "train", protocol="unseen", window=24, augment=False,
                             context=2)
    for i in range(len(plain)):
        a, b = plain[i], ctx[i]
        assert a["start"] == b["start"] and b["video"].shape[1] == a["video"].shape[1] + 4
        np.testing.assert_array_equal(b["video"][0, 2:-2], a["video"][0])
        np.testing.assert_array_equal(b["mel"], a["mel"])
        region = plain.load(i)[0]
        s = a["start"]
        if s >= 2:  # real neighbour frames, not zeros
            want = mouth_crop(region[s - 2:s], plain.video_spec,
                              origin=region_origin(plain.video_spec, plain.margin))
            np.testing.assert_array_equal(b["video"][0, :2].numpy(), want)
        else:
            assert not b["video"][0, :2 - s].any()


def _cfg(data, out, **kw) -> TrainConfig:
    base = {"preset": "tiny", "batch_size": 2, "val_every": 2, "val_batches": 1, "save_every": 0,
            "log_every": 1, "threads": 1, "window": 20, "loss_weights": {"adv": 0.0}}
    return TrainConfig(task="lip2speech", data=str(data), out=str(out), **{**base, **kw})


@pytest.mark.slow
def test_fine_tuning_lip2speech_for_streams_runs_end_to_end(grid_corpus, grid_streams, tmp_path):
    train(_cfg(grid_corpus, tmp_path / "clips", steps=1, val_every=0))
    base = load_checkpoint(tmp_path / "clips" / "last.lipx")
    result = train(_cfg(grid_corpus, tmp_path / "streams", steps=2, streams=str(grid_streams),
                        init=str(tmp_path / "clips" / "last.lipx")))
    tuned = load_checkpoint(tmp_path / "streams" / "best.lipx")
    assert result.steps == 2 and np.isfinite(result.history[-1]["stoi"])
    assert tuned.meta["trained_with"]["streams"] == str(grid_streams)
    changed = [k for k, v in base.state_dict.items()
               if not torch.equal(v, tuned.state_dict[k])]
    assert changed  # it trained from the clip checkpoint's weights


def test_lip2speech_streams_options_are_checked(grid_corpus, lrw_corpus, tmp_path):
    options = read_corpus(lrw_corpus)[0]["synth"]
    fields = {"layout", "speakers", "held_out", "words", "clips_per_word", "seed"}
    recipe = SynthOptions(out=lrw_corpus, **{k: v for k, v in options.items() if k in fields})
    words = tmp_path / "lrw-streams"
    synthesize_streams(StreamsOptions(words, recipe, streams=1, per_stream=2, part="train"))
    with pytest.raises(InputError, match="holds lipreading streams"):
        SpeechWindows(words, size=4)
    with pytest.raises(InputError, match="val_streams applies to lipreading only"):
        _cfg(grid_corpus, tmp_path / "x", streams="s", val_streams="v")
    with pytest.raises(InputError, match="has no streams.jsonl"):
        train(_cfg(grid_corpus, tmp_path / "y", steps=1, streams=str(tmp_path)))


def test_context_on_zero_frames_is_the_whole_lip2speech_models_padding():
    from lipx.models.registry import get_family, preset_config
    from lipx.train.lip2speech_task import synthesize

    torch.manual_seed(0)
    model = get_family("lip2speech").build(preset_config("lip2speech", "tiny")).eval()
    video = torch.randn(2, 1, 20, 112, 112)
    padded = torch.nn.functional.pad(video, (0, 0, 0, 0, 2, 2))
    with torch.no_grad():
        plain = synthesize(model, video)
        chunked = synthesize(model, padded, context=True)
    for a, b in zip(plain, chunked, strict=True):
        torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-5)
