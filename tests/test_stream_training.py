"""Training lipreading for streams: windows cut anywhere in training streams, the no-word class,
fine-tuning from a clip-trained checkpoint, and validation on held-out streams."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lipx.data.prepare_format import read_corpus
from lipx.data.stream_corpus import StreamsOptions, synthesize_streams
from lipx.data.synth import SynthOptions
from lipx.errors import InputError
from lipx.models.checkpoint import load_checkpoint
from lipx.tasks import NO_WORD
from lipx.train.config import TrainConfig
from lipx.train.run import train
from lipx.train.stream_windows import StreamWindows


def _recipe(corpus) -> SynthOptions:
    """The recipe of the ``lrw_corpus`` fixture (its synth options)."""
    options = read_corpus(corpus)[0]["synth"]
    fields = {"layout", "speakers", "held_out", "words", "clips_per_word", "val_per_word",
              "test_per_word", "seed"}
    return SynthOptions(out=corpus, **{k: v for k, v in options.items() if k in fields})


@pytest.fixture(scope="module")
def streams(lrw_corpus, tmp_path_factory):
    """Two training-speaker streams and one held-out one (to validate on) of the fixture's
    recipe."""
    root = tmp_path_factory.mktemp("streams")
    recipe = _recipe(lrw_corpus)
    for part, n in (("train", 2), ("held-out", 1)):
        synthesize_streams(StreamsOptions(root / part, recipe, streams=n, per_stream=4,
                                          part=part))
    return root


def _labels(corpus) -> list[str]:
    return [*read_corpus(corpus)[0]["labels"], NO_WORD]


def test_windows_are_labelled_by_the_word_centred_in_them(lrw_corpus, streams):
    labels = _labels(lrw_corpus)
    windows = StreamWindows(streams / "train", labels, size=200, centre=2, margin=6,
                            augment=False)
    word_windows = 0
    for i in range(len(windows)):
        stream, first, label = windows.draw(np.random.default_rng((0, 0x57, 0, i)))
        centre = first + 29 / 2
        distance = np.abs(stream.centres - centre)
        if label == len(labels) - 1:
            assert distance.min() > 6 - 0.5  # (the first frame is rounded)
        else:
            word_windows += 1
            k = int(np.argmin(distance))
            assert distance[k] <= 2 + 0.5 and stream.labels[k] == label
    assert 60 < word_windows < 140  # about half on words
    item = windows[0]
    assert item["video"].shape == (1, 29, 112, 112) and item["stream"] is True
    assert item["audio"].shape[-1] == 4 * 29


def test_hard_no_word_windows_centre_on_the_context_words(lrw_corpus, streams):
    labels = _labels(lrw_corpus)
    windows = StreamWindows(streams / "train", labels, size=300, centre=2, margin=6, hard=1.0,
                            augment=False)
    on_context = no_word = 0
    for i in range(len(windows)):
        stream, first, label = windows.draw(np.random.default_rng((0, 0x57, 0, i)))
        if label != len(labels) - 1:
            continue
        no_word += 1
        centre = first + 29 / 2
        assert len(stream.others) and np.abs(stream.centres - centre).min() > 6 - 0.5
        on_context += np.abs(stream.others - centre).min() <= 2 + 0.5
    assert no_word > 50 and on_context == no_word
    with pytest.raises(InputError, match="hard"):
        StreamWindows(streams / "train", labels, size=4, hard=1.5)


def test_windows_past_the_ends_repeat_the_edge_frames(lrw_corpus, streams):
    windows = StreamWindows(streams / "train", _labels(lrw_corpus), size=4, augment=False)
    stream = windows.streams[0]
    region, wav = windows.window(stream, -10)
    assert (region[:10] == stream.region[0]).all() and (region[10:] == stream.region[:19]).all()
    assert not wav[:10 * 640].any() and np.array_equal(wav[10 * 640:], stream.wav[:19 * 640])
    n = len(stream.region)
    region, _ = windows.window(stream, n - 5)
    assert (region[5:] == stream.region[-1]).all()


def test_windows_carry_the_runtime_context_and_clips_its_zero_padding(lrw_corpus, streams):
    """With ``context``, an item is the window plus its 2 neighbours on each side (what the
    cached front-end sees); a clip gets zero frames there, the whole model's padding."""
    from lipx.train.datasets import LipreadingDataset
    from lipx.video import mouth_crop, region_origin

    windows = StreamWindows(streams / "train", _labels(lrw_corpus), size=4, augment=False,
                            context=2)
    item = windows[1]
    stream, first, _ = windows.draw(np.random.default_rng((0, 0x57, 0, 1)))
    index = np.clip(np.arange(first - 2, first + 31), 0, len(stream.region) - 1)
    want = mouth_crop(stream.region[index], windows.video_spec,
                      origin=region_origin(windows.video_spec, 8))
    assert item["video"].shape == (1, 33, 112, 112) and item["audio"].shape[-1] == 4 * 29
    np.testing.assert_array_equal(item["video"][0].numpy(), want)
    clip = LipreadingDataset(lrw_corpus, "val", augment=False, context=2)[0]
    plain = LipreadingDataset(lrw_corpus, "val", augment=False)[0]
    assert clip["video"].shape[1] == plain["video"].shape[1] + 4
    assert not clip["video"][0, :2].any() and not clip["video"][0, -2:].any()
    np.testing.assert_array_equal(clip["video"][0, 2:-2], plain["video"][0])


@pytest.mark.slow
def test_streams_in_the_wild_train_on_the_crop_the_stream_gets_at_run_time(
        lrw_corpus, streams, tmp_path):
    """A wild twin of a training stream (its faces placed, moved and rotated in a 640x480
    frame) decodes to exactly the mouth regions ``--crop auto`` cuts of it at run time, frame
    for frame, framed as the corpus frames its faces; two folders given together
    (comma-separated) are one set."""
    from lipx.runtime.roi import make_roi
    from lipx.train.datasets import LipreadingDataset
    from lipx.video import iter_frames, mouth_region

    synthesize_streams(StreamsOptions(tmp_path / "wild", _recipe(lrw_corpus), streams=1,
                                      per_stream=4, part="train", wild=True))
    spec = LipreadingDataset(lrw_corpus, "train").video_spec  # what training passes
    assert spec.framing == "synthetic"
    both = StreamWindows(f"{streams / 'train'},{tmp_path / 'wild'}", _labels(lrw_corpus),
                         size=4, augment=False, workers=2,  # decoded in 2 processes
                         video_spec=spec)
    aligned, wild = both.streams[0], both.streams[-1]
    assert len(both.streams) == 3 and aligned.name == wild.name
    np.testing.assert_array_equal(wild.centres, aligned.centres)
    video = next((tmp_path / "wild").glob("*.mp4"))
    tracker = make_roi("auto", framing="synthetic")
    streamed = mouth_region(np.stack([tracker(frame).face256 for _, frame in iter_frames(video)]),
                            spec, 8)
    np.testing.assert_array_equal(wild.region, streamed)
    assert wild.region.shape == aligned.region.shape and (wild.region != aligned.region).any()


def test_a_vocabulary_without_no_word_or_streams_of_other_words_are_refused(lrw_corpus, streams):
    with pytest.raises(InputError, match="no-word"):
        StreamWindows(streams / "train", _labels(lrw_corpus)[:-1], size=4)
    with pytest.raises(InputError, match="no word of the vocabulary"):
        StreamWindows(streams / "train", ["ZEBRA", "QUAIL", NO_WORD], size=4)


def _cfg(data, out, **kw) -> TrainConfig:
    base = {"preset": "tiny", "batch_size": 4, "val_every": 2, "save_every": 0, "log_every": 1,
            "threads": 1}
    return TrainConfig(task="lipreading", data=str(data), out=str(out), **{**base, **kw})


@pytest.mark.slow
def test_fine_tuning_for_streams_adds_no_word_and_validates_windows(lrw_corpus, streams,
                                                                     tmp_path):
    clips = tmp_path / "clips"
    train(_cfg(lrw_corpus, clips, steps=2))
    base = load_checkpoint(clips / "last.lipx")
    assert NO_WORD not in base.vocabulary
    assert base.video.framing == "synthetic"  # the corpus' framing, for --crop auto

    result = train(_cfg(lrw_corpus, tmp_path / "streams", steps=2, init=str(clips / "last.lipx"),
                        streams=str(streams / "train"), val_streams=str(streams / "held-out")))
    tuned = load_checkpoint(tmp_path / "streams" / "best.lipx")
    assert tuned.vocabulary == [*base.vocabulary, NO_WORD]
    assert tuned.config.num_classes == len(base.vocabulary) + 1
    # the clip classes' weights started from the clip-trained model (changed by 2 steps only)
    for name, old in base.state_dict.items():
        new = tuned.state_dict[name]
        if new.shape != old.shape:
            assert new.shape[0] == old.shape[0] + 1
    assert result.metric == "score"
    last = result.history[-1]
    assert {"accuracy", "window_accuracy", "window_word_accuracy", "window_no_word_accuracy",
            "score"} <= last.keys()
    assert last["score"] == pytest.approx((last["accuracy"] + last["window_accuracy"]) / 2)


def test_init_from_another_vocabulary_or_task_is_one_line(lrw_corpus, streams, tmp_path):
    clips = tmp_path / "clips"
    train(_cfg(lrw_corpus, clips, steps=1, val_every=0))
    ckpt = load_checkpoint(clips / "last.lipx")
    ckpt.vocabulary = ["ZEBRA", *ckpt.vocabulary[1:]]
    from lipx.models.checkpoint import save_checkpoint

    save_checkpoint(ckpt, tmp_path / "other.lipx")
    with pytest.raises(InputError, match="reads other words"):
        train(_cfg(lrw_corpus, tmp_path / "x", steps=1, init=str(tmp_path / "other.lipx")))
    with pytest.raises(InputError, match="no such checkpoint"):
        train(_cfg(lrw_corpus, tmp_path / "y", steps=1, init=str(tmp_path / "missing.lipx")))
    with pytest.raises(InputError, match="val_streams needs streams"):
        _cfg(lrw_corpus, tmp_path / "z", val_streams=str(streams / "held-out"))
    assert torch.is_tensor(ckpt.state_dict[next(iter(ckpt.state_dict))])


def test_training_with_context_on_zero_frames_is_the_whole_models_padding():
    from lipx.models.registry import get_family, preset_config

    torch.manual_seed(0)
    model = get_family("lipreading").build(preset_config("lipreading", "tiny")).eval()
    video = torch.randn(2, 1, 12, 112, 112)
    mel = torch.randn(2, 1, 80, 48)
    padded = torch.nn.functional.pad(video, (0, 0, 0, 0, 2, 2))
    with torch.no_grad():
        plain = model.forward_train(video, mel)
        chunked = model.forward_train(padded, mel, context=True)
    for key in ("logits", "logits_audio"):
        torch.testing.assert_close(chunked[key], plain[key], atol=1e-5, rtol=1e-5)
