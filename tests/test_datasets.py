"""Training data sets over prepared corpora: shapes, aligned targets, augmentation, collation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_prepare import build_lrw, grid_clip
from torch.utils.data import DataLoader

from lipx import audio as A
from lipx.audio import AudioSpec
from lipx.data.prepare import PrepareOptions, prepare_corpus
from lipx.data.prepare_format import read_clip
from lipx.errors import InputError
from lipx.train import augment
from lipx.train.datasets import LipreadingDataset, LipToSpeechDataset, collate
from lipx.video import VideoSpec, mouth_crop, region_origin


@pytest.fixture(scope="module")
def lrw_root(tmp_path_factory):
    src = build_lrw(tmp_path_factory.mktemp("ds_lrw_src"))
    out = tmp_path_factory.mktemp("ds_lrw")
    prepare_corpus(PrepareOptions("lrw", src, out))
    return out


@pytest.fixture(scope="module")
def grid_root(tmp_path_factory):
    src = tmp_path_factory.mktemp("ds_grid_src")
    for speaker in ("s1", "s2"):
        for name, frames in (("bbaf2n", 50), ("bbaf3s", 30), ("bgaa1a", 45)):
            grid_clip(src, speaker, name, frames=frames)
    out = tmp_path_factory.mktemp("ds_grid")
    prepare_corpus(PrepareOptions("grid", src, out))
    return out


def test_lipreading_items_and_determinism(lrw_root):
    ds = LipreadingDataset(lrw_root, "train", seed=3)
    assert len(ds) == 4 and ds.augment and ds.labels == ["ABOUT", "BOARD"]
    item = ds[0]
    assert item["video"].shape == (1, 29, 112, 112) and item["video"].dtype == torch.float32
    assert item["audio"].shape == (1, 80, 116) and item["label"].item() in (0, 1)
    assert item["length"] == 29
    again = ds[0]
    assert torch.equal(item["video"], again["video"]) and torch.equal(item["audio"], again["audio"])
    ds.set_epoch(1)
    assert not torch.equal(ds[0]["video"], item["video"])
    other_seed = LipreadingDataset(lrw_root, "train", seed=4)[0]
    assert not torch.equal(other_seed["video"], item["video"])


def test_lipreading_eval_items_are_the_plain_pipeline(lrw_root):
    ds = LipreadingDataset(lrw_root, "test")
    assert not ds.augment and len(ds) == 2
    item = ds[1]
    region, wav, _ = read_clip(lrw_root / ds.records[1]["path"])
    expected = mouth_crop(region, VideoSpec(), origin=region_origin(VideoSpec(), 8))
    np.testing.assert_array_equal(item["video"][0].numpy(), expected)
    features = A.lipreading_features(wav, AudioSpec.lipreading(), 29)
    np.testing.assert_array_equal(item["audio"][0].numpy(), features)
    assert item["label"].item() == 1 and ds.records[1]["word"] == "BOARD"


def test_lipreading_augmentation_erases_flips_and_masks(lrw_root):
    ds = LipreadingDataset(lrw_root, "train", seed=0)
    masked = []
    for epoch in range(8):
        ds.set_epoch(epoch)
        item = ds[0]
        erased = (item["video"][0] == 0).all(dim=0)  # (112, 112): zero in every frame
        assert erased.sum() >= 36 * 36  # the 56x56 square, clipped at most to 36x36
        rows, cols = torch.nonzero(erased, as_tuple=True)
        assert rows.max() - rows.min() < 56 and cols.max() - cols.min() < 56
        zero_time = (item["audio"][0] == 0).all(dim=0).sum().item()
        zero_freq = (item["audio"][0] == 0).all(dim=1).sum().item()
        assert zero_time < 20 and zero_freq < 10 and item["audio"].shape == (1, 80, 116)
        masked.append(zero_time + zero_freq > 0)
    assert any(masked)


def test_lip2speech_windows_align_with_full_clip_targets(grid_root):
    ds = LipToSpeechDataset(grid_root, "train", protocol="overlap", window=20, augment=False,
                            seed=1)
    full = LipToSpeechDataset(grid_root, "train", protocol="overlap", window=None, augment=False)
    for i in range(len(ds)):
        item, whole = ds[i], full[i]
        start, t = item["start"], whole["length"]
        assert item["video"].shape == (1, 20, 112, 112) and item["length"] == 20
        assert item["mel"].shape == (1, 80, 80) and item["linear"].shape == (1, 321, 80)
        assert item["wav"].shape == (12800,) and 0 <= start <= t - 20
        assert whole["mel"].shape == (1, 80, 4 * t) and whole["wav"].shape == (640 * t,)
        assert torch.equal(item["video"], whole["video"][:, start:start + 20])
        assert torch.equal(item["mel"], whole["mel"][..., 4 * start:4 * start + 80])
        assert torch.equal(item["wav"], whole["wav"][640 * start:640 * (start + 20)])
        assert -1 <= item["mel"].min() and item["mel"].max() <= 1 and item["linear"].min() >= 0


def test_lip2speech_augmentation_is_grid_style(grid_root):
    ds = LipToSpeechDataset(grid_root, "train", protocol="overlap", window=20, seed=0)
    assert ds.augment and ds.video_augment.jitter == 0 and ds.video_augment.erase_low == -10
    item = ds[0]
    assert (item["video"][0] == 0).all(dim=0).any()  # the erased square, in every frame
    whole = LipToSpeechDataset(grid_root, "train", protocol="overlap", window=None, seed=0)
    plain = LipToSpeechDataset(grid_root, "train", protocol="overlap", window=None,
                               augment=False)[0]
    flips = []
    for epoch in range(8):
        whole.set_epoch(epoch)
        video = whole[0]["video"]
        keep = ~(video[0] == 0).all(dim=0)
        same = torch.equal(video[..., keep], plain["video"][..., keep])
        flipped = torch.equal(video[..., keep], plain["video"].flip(-1)[..., keep])
        assert same != flipped  # exactly one of them: the coin is per clip
        flips.append(flipped)
    assert 0 < sum(flips) < 8


def test_collate_pads_with_lengths(grid_root):
    ds = LipToSpeechDataset(grid_root, "test", protocol="overlap", window=None)
    loader = DataLoader(ds, batch_size=len(ds), collate_fn=collate)
    batch = next(iter(loader))
    lengths = batch["lengths"].tolist()
    t = max(lengths)
    assert batch["video"].shape == (len(ds), 1, t, 112, 112)
    assert batch["mel"].shape == (len(ds), 1, 80, 4 * t)
    assert batch["wav"].shape == (len(ds), 640 * t)
    for b, n in enumerate(lengths):
        assert (batch["video"][b, :, n:] == 0).all() and (batch["mel"][b, ..., 4 * n:] == 0).all()
    assert isinstance(batch["id"], list) and len(batch["id"]) == len(ds)


def test_lrw_batches(lrw_root):
    loader = DataLoader(LipreadingDataset(lrw_root, "train"), batch_size=2, collate_fn=collate)
    batch = next(iter(loader))
    assert batch["video"].shape == (2, 1, 29, 112, 112) and batch["audio"].shape == (2, 1, 80, 116)
    assert batch["label"].dtype == torch.long and batch["lengths"].tolist() == [29, 29]


def test_dataset_errors(grid_root, lrw_root, tmp_path):
    with pytest.raises(InputError, match="not a prepared corpus"):
        LipreadingDataset(tmp_path)
    with pytest.raises(InputError, match="without word labels"):
        LipreadingDataset(grid_root, "train", protocol="overlap")
    with pytest.raises(InputError, match="not in this corpus"):
        LipToSpeechDataset(lrw_root, "train", protocol="unseen")
    with pytest.raises(InputError, match="window"):
        LipToSpeechDataset(grid_root, "train", window=2)


def test_augment_primitives():
    rng = np.random.default_rng(0)
    draws = [augment.draw_video(rng, augment.VideoAugment.lrw()) for _ in range(400)]
    assert 0.4 < np.mean([d.flip for d in draws]) < 0.6
    corners = np.array([d.corner for d in draws])
    shifts = np.array([d.shift for d in draws])
    assert corners.min() == -20 and corners.max() == 66 and shifts.min() == -5 and shifts.max() == 5
    frames = np.ones((2, 112, 112), np.float32)
    out = augment.erase(frames, (-20, 100), 56)
    assert (out[:, 100:, :36] == 0).all() and out.sum() == frames.sum() - 2 * 12 * 36
    flipped = augment.flip_clip(np.arange(6).reshape(1, 2, 3))[0]
    np.testing.assert_array_equal(flipped, [[2, 1, 0], [5, 4, 3]])
