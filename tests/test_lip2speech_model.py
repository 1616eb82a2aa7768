"""The lip-to-speech model (VCA-GAN): golden fidelity, sizes, shapes, masking, streaming split."""

from __future__ import annotations

import json

import pytest
import torch
from reference import fill_original, golden, save_original, schema_param_counts

from lipx.errors import CheckpointError
from lipx.models.lip2speech import (
    FAMILY,
    PRESETS,
    Lip2SpeechConfig,
    Lip2SpeechModel,
    config_from_original,
    tiny_config,
)

#: Published parameter counts of the original modules (reference/original-models.md A.7).
ORIGINAL_COUNTS = {
    "v_front_state_dict": 19_588_096, "gen_state_dict": 30_477_283, "post_state_dict": 1_744_896,
    "dis1_state_dict": 3_263_202, "dis2_state_dict": 9_850_594, "dis3_state_dict": 32_921_314,
    "s_dis_state_dict": 4_100_224,
}


def _params(*modules: torch.nn.Module) -> int:
    return sum(p.numel() for m in modules for p in m.parameters())


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """The reference-filled original checkpoint, converted by ``lipx convert``'s code path."""
    from lipx.models.checkpoint import model_from_checkpoint
    from lipx.models.convert import convert_original

    src = save_original("vca_gan", tmp_path_factory.mktemp("vca") / "original.ckpt")
    ckpt = convert_original(src, "vca-gan-original")
    src.unlink()
    return ckpt, model_from_checkpoint(ckpt)


@pytest.fixture(scope="module")
def tiny() -> Lip2SpeechModel:
    torch.manual_seed(0)
    return FAMILY.build(tiny_config()).eval()


def _video(b: int, t: int, seed: int = 0) -> torch.Tensor:
    return torch.randn((b, 1, t, 112, 112), generator=torch.Generator().manual_seed(seed))


@pytest.mark.slow
def test_golden_reproduction(converted) -> None:
    ckpt, model = converted
    assert ckpt.preset == "original"
    ref = {k: torch.from_numpy(v) for k, v in golden("vca_gan").items()}
    with torch.no_grad():
        features = model.frame_features(ref["video"])
        out = model.decode(features, ref["noise"])
        mel, linear = model(ref["video"], ref["noise"])
    got = {"frame_features": features, "sentence_features": out["sentence"], **out}
    for name in ("frame_features", "sentence_features", "mel_20", "mel_40", "mel_80", "linear"):
        assert got[name].shape == ref[name].shape, name
        err = (got[name] - ref[name]).abs().max().item()
        assert err < 1e-4, f"{name}: max abs error {err:.2e}"
    assert torch.equal(mel, out["mel_80"]) and torch.equal(linear, out["linear"])


@pytest.mark.slow
def test_parameter_counts(converted) -> None:
    ckpt, model = converted
    assert schema_param_counts("vca_gan") == ORIGINAL_COUNTS
    assert _params(model.frontend, model.encoder) == ORIGINAL_COUNTS["v_front_state_dict"]
    assert _params(model.frontend) == 11_186_688
    assert _params(model.generator) == ORIGINAL_COUNTS["gen_state_dict"]
    assert _params(model.postnet) == ORIGINAL_COUNTS["post_state_dict"]
    dis = FAMILY.build_aux(ckpt.config)["discriminators"]
    dis.load_state_dict(ckpt.aux["discriminators"], strict=True)
    for name, group in (("dis1", "dis1"), ("dis2", "dis2"), ("dis3", "dis3"), ("sync", "s_dis")):
        assert _params(dis[name]) == ORIGINAL_COUNTS[f"{group}_state_dict"], name


@pytest.mark.slow
def test_config_from_original_needs_the_shapes() -> None:
    groups = fill_original("vca_gan")
    assert config_from_original(groups) == PRESETS["original"]()
    del groups["gen_state_dict"]["att1.q.weight"]
    with pytest.raises(CheckpointError, match="att1.q.weight"):
        config_from_original(groups)


@pytest.mark.parametrize("b", [1, 3])
@pytest.mark.parametrize("t", [1, 4, 21])
def test_tiny_forward_shapes(tiny: Lip2SpeechModel, b: int, t: int) -> None:
    cfg = tiny.config
    assert t >= cfg.min_frames
    video = _video(b, t)
    noise = tiny.make_noise(b, t, torch.Generator().manual_seed(1))
    with torch.no_grad():
        features = tiny.frame_features(video)
        out = tiny.decode(features, noise, torch.full((b,), t))
        mel, linear = tiny(video, noise)
    assert features.shape == (b, t, cfg.feature_dim)
    assert out["sentence"].shape == (b, cfg.sentence_dim, t)
    assert out["mel_20"].shape == (b, 1, 20, t)
    assert out["mel_40"].shape == (b, 1, 40, 2 * t)
    assert mel.shape == (b, 1, 80, 4 * t) and linear.shape == (b, 1, 321, 4 * t)
    assert mel.abs().max() <= 1.0 and torch.isfinite(linear).all()
    # full lengths == no mask
    assert torch.allclose(out["mel_80"], mel, atol=1e-6)
    assert torch.allclose(out["linear"], linear, atol=1e-6)


def test_noise_is_an_input(tiny: Lip2SpeechModel) -> None:
    a = tiny.make_noise(2, 5, torch.Generator().manual_seed(3))
    assert a.shape == (2, tiny.config.noise_dim, 20, 5)
    assert torch.equal(a, tiny.make_noise(2, 5, torch.Generator().manual_seed(3)))
    features = tiny.frame_features(_video(2, 5)).detach()
    with torch.no_grad():
        first, second = tiny.window(features, a), tiny.window(features, a)
        other = tiny.window(features, torch.randn_like(a))
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    assert not torch.allclose(first[0], other[0])


def test_attention_ignores_frames_past_each_length(tiny: Lip2SpeechModel) -> None:
    """The sentence features enter the generator only through the attention's keys and values:
    changing them past a sample's length must not change that sample's mels, unless unmasked."""
    b, t, length = 2, 12, 7
    features = torch.randn(b, t, tiny.config.feature_dim)
    noise = tiny.make_noise(b, t, torch.Generator().manual_seed(2))
    sentence = torch.randn(b, tiny.config.sentence_dim, t)
    changed = sentence.clone()
    changed[1, :, length:] += 5.0 * torch.randn(tiny.config.sentence_dim, t - length)
    lengths = torch.tensor([t, length])
    with torch.no_grad():
        masked = tiny.generator(features, sentence, noise, lengths)
        masked_changed = tiny.generator(features, changed, noise, lengths)
        unmasked = tiny.generator(features, sentence, noise)
        unmasked_changed = tiny.generator(features, changed, noise)
    for a, c, u, uc in zip(masked[1:], masked_changed[1:], unmasked[1:], unmasked_changed[1:]):
        assert torch.allclose(a, c, atol=1e-6)  # whole output of both samples, every frame
        assert (u[1] - uc[1]).abs().max() > 1e-4  # without the mask the change is visible
        assert torch.allclose(a[0], u[0], atol=1e-6)  # full-length sample: mask is a no-op
        assert (a[1] - u[1]).abs().max() > 1e-4  # the mask does act on the short sample


def test_frame_features_chunk_matches_whole_clip(tiny: Lip2SpeechModel) -> None:
    video = _video(2, 14, seed=5)
    with torch.no_grad():
        whole = tiny.frame_features(video)
        for start, inner in ((0, 4), (3, 6), (9, 1)):
            chunk = tiny.frame_features_chunk(video[:, :, start:start + inner + 4])
            assert chunk.shape == (2, inner, tiny.config.feature_dim)
            expected = whole[:, start + 2:start + 2 + inner]
            assert torch.allclose(chunk, expected, atol=1e-5), (start, inner)


@pytest.mark.parametrize("t", [20, 40])
def test_discriminators_run(tiny: Lip2SpeechModel, t: int) -> None:
    dis = FAMILY.build_aux(tiny.config)["discriminators"]
    assert set(dis) == {"dis1", "dis2", "dis3", "sync"}
    b = 2
    with torch.no_grad():
        features = tiny.frame_features(_video(b, t))
        out = tiny.decode(features, tiny.make_noise(b, t))
    for phase, name in ((1, "mel_20"), (2, "mel_40"), (3, "mel_80")):
        mel = out[name].clone().requires_grad_(True)
        uncond, cond = dis[f"dis{phase}"](mel, out["sentence"])
        assert uncond.shape == (b, 1) and cond.shape == (b, 1)
        (grad,) = torch.autograd.grad(uncond.sum(), mel)  # R1 needs d(uncond)/d(real mel)
        assert grad.shape == mel.shape and grad.abs().sum() > 0
    embeddings = dis["sync"].embed(out["mel_80"])
    assert embeddings.shape == (b, t, tiny.config.feature_dim)


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_config_round_trip(preset: str) -> None:
    cfg = PRESETS[preset]()
    text = json.dumps(cfg.to_dict())
    again = Lip2SpeechConfig.from_dict(json.loads(text))
    assert again == cfg and FAMILY.config_from_dict(cfg.to_dict()) == cfg
    assert again.feature_dim == cfg.frontend.out_dim and cfg.min_frames == 1
    with pytest.raises(TypeError):
        Lip2SpeechConfig.from_dict({**cfg.to_dict(), "bogus": 1})
