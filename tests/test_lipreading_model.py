"""The lipreading model: golden fidelity to the original, sizes, shapes, streaming, training."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from reference import fill_original, golden, schema_param_counts

from lipx.errors import CheckpointError, InputError
from lipx.models.convert import convert_groups
from lipx.models.lipreading import FAMILY, PRESETS, LipreadingConfig, LipreadingModel

GROUP_MODULES = {
    "v_front_state_dict": "frontend",
    "a_front_state_dict": "audio_frontend",
    "mem_state_dict": "memory",
    "back_state_dict": "backend",
}
ORIGINAL_COUNTS = {
    "mvm_gru": {"frontend": 11_186_688, "audio_frontend": 4_100_224, "memory": 1_140_224,
                "backend": 8_389_108},
    "mvm_mstcn": {"frontend": 11_186_688, "audio_frontend": 4_100_224, "memory": 1_222_144,
                  "backend": 25_187_828},
}
PRESET_OF = {"mvm_gru": "original", "mvm_mstcn": "original-mstcn"}


def _params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _tiny(backend: str = "gru", **kw) -> LipreadingModel:
    torch.manual_seed(0)
    return LipreadingModel(dataclasses.replace(PRESETS["tiny"](), backend=backend, **kw))


@pytest.mark.parametrize("name", ["mvm_gru", "mvm_mstcn"])
@pytest.mark.slow
def test_reference_weights_reproduce_the_original_outputs(name):
    ckpt = convert_groups(fill_original(name), FAMILY, FAMILY.originals[0])
    assert ckpt.preset == PRESET_OF[name]
    model = FAMILY.build(ckpt.config)
    model.load_state_dict(ckpt.state_dict, strict=True)
    model.eval()
    ref = golden(name)
    with torch.no_grad():
        visual = model.frontend(torch.from_numpy(ref["video"]))
        got = {"visual_features": visual, "fused_features": model.memory(visual)}
        got["logits"] = model.window(got["fused_features"])
    for key, tensor in got.items():
        assert tensor.shape == ref[key].shape, key
        err = np.abs(tensor.numpy() - ref[key]).max()
        assert err < 1e-4, f"{name}/{key}: max abs error {err:.2e}"


@pytest.mark.parametrize("name", ["mvm_gru", "mvm_mstcn"])
def test_parameter_counts_equal_the_original_group_by_group(name):
    model = LipreadingModel(PRESETS[PRESET_OF[name]]())
    counts = {m: _params(getattr(model, m)) for m in GROUP_MODULES.values()}
    assert counts == ORIGINAL_COUNTS[name]
    schema = {GROUP_MODULES[g]: n for g, n in schema_param_counts(name).items()}
    assert counts == schema


@pytest.mark.parametrize("backend", ["gru", "mstcn"])
def test_forward_shapes_and_batch_independence(backend):
    model = _tiny(backend).eval()
    cfg = model.config
    torch.manual_seed(1)
    for b in (1, 3):
        for t in (cfg.min_frames, 5, 29):
            video = torch.randn(b, 1, t, 112, 112)
            with torch.no_grad():
                feats = model.frame_features(video)
                logits = model(video)
            assert feats.shape == (b, t, cfg.feature_dim)
            assert logits.shape == (b, cfg.num_classes)
            assert torch.isfinite(logits).all()
            torch.testing.assert_close(logits, model.window(feats))
    with torch.no_grad():  # each clip's logits do not depend on the rest of the batch
        alone = model(video[1:2])
    torch.testing.assert_close(alone, logits[1:2], atol=1e-5, rtol=1e-4)


def test_chunk_features_equal_the_whole_clip_features():
    model = _tiny().eval()
    video = torch.randn(2, 1, 20, 112, 112)
    with torch.no_grad():
        whole = model.frame_features(video)
        for start, c in ((0, 3), (5, 6), (11, 5)):
            chunk = model.frame_features_chunk(video[:, :, start : start + c + 4])
            assert chunk.shape == (2, c, model.config.feature_dim)
            torch.testing.assert_close(chunk, whole[:, start + 2 : start + 2 + c],
                                       atol=1e-5, rtol=1e-4)


def _grads(model: LipreadingModel, loss: torch.Tensor) -> dict[str, bool]:
    """Which parameter groups get a non-zero gradient from ``loss``."""
    named = dict(model.named_parameters())
    grads = torch.autograd.grad(loss, list(named.values()), retain_graph=True, allow_unused=True)
    by_name = dict(zip(named, grads))
    groups = {
        "frontend": [k for k in named if k.startswith("frontend.")],
        "audio_frontend": [k for k in named if k.startswith("audio_frontend.")],
        "backend": [k for k in named if k.startswith("backend.")],
        "key": ["memory.key"], "value": ["memory.value"],
        "q_embd": ["memory.q_embd.weight"], "v_embd": ["memory.v_embd.weight"],
        "fusion": ["memory.fusion.weight"],
    }
    return {
        g: any(by_name[k] is not None and by_name[k].abs().sum() > 0 for k in keys)
        for g, keys in groups.items()
    }


@pytest.mark.parametrize("backend", ["gru", "mstcn"])
def test_training_losses_send_gradients_where_the_original_does(backend):
    model = _tiny(backend).train()
    torch.manual_seed(2)
    video, mel = torch.randn(2, 1, 6, 112, 112), torch.randn(2, 1, 80, 24)
    labels = torch.tensor([3, 7])
    out = model.forward_train(video, mel)
    assert out["logits"].shape == out["logits_audio"].shape == (2, model.config.num_classes)
    for key in ("recon_loss", "kl_loss"):
        assert out[key].dim() == 0 and torch.isfinite(out[key]) and out[key] > 0

    recon = _grads(model, out["recon_loss"])
    assert {g for g, hit in recon.items() if hit} == {"value", "v_embd"}
    kl = _grads(model, out["kl_loss"])
    assert {g for g, hit in kl.items() if hit} == {"key", "q_embd", "frontend"}
    ce = _grads(model, F.cross_entropy(out["logits"], labels))
    assert {g for g, hit in ce.items() if hit} == {"key", "q_embd", "fusion", "frontend", "backend"}
    ce_audio = _grads(model, F.cross_entropy(out["logits_audio"], labels))
    assert {g for g, hit in ce_audio.items() if hit} == {
        "fusion", "frontend", "backend", "audio_frontend"}


def test_training_rejects_a_spectrogram_that_does_not_cover_the_clip():
    model = _tiny().train()
    with pytest.raises(InputError, match="4\\*T"):
        model.forward_train(torch.randn(1, 1, 6, 112, 112), torch.randn(1, 1, 80, 16))


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_config_round_trips_through_json(preset):
    cfg = PRESETS[preset]()
    again = LipreadingConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg
    assert FAMILY.config_from_dict(cfg.to_dict()) == cfg
    mstcn = dataclasses.replace(cfg, backend="mstcn", num_classes=51)
    assert LipreadingConfig.from_dict(json.loads(json.dumps(mstcn.to_dict()))) == mstcn


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="unknown lipreading config keys"):
        LipreadingConfig.from_dict({**PRESETS["tiny"]().to_dict(), "slots": 4})
    with pytest.raises(ValueError, match="backend"):
        dataclasses.replace(PRESETS["tiny"](), backend="lstm")
    with pytest.raises(ValueError, match="audio.out_dim"):
        dataclasses.replace(PRESETS["original"](), audio=PRESETS["tiny"]().audio)


def test_config_inference_rejects_an_unknown_backend():
    groups = fill_original("mvm_gru")
    groups["back_state_dict"] = {"lstm.weight": torch.zeros(4, 4)}
    with pytest.raises(CheckpointError, match="neither a Bi-GRU"):
        FAMILY.originals[0].config_from_original(groups)
