"""`lipx convert` / `lipx info`: original checkpoints -> lipx checkpoints, golden fidelity,
errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from reference import fill_original, golden, save_original

from lipx.models.checkpoint import build_model, load_checkpoint, save_checkpoint
from lipx.models.convert import convert_original
from lipx.models.registry import preset_config

FORMATS = {"mvm_gru": "lipreading-original", "mvm_mstcn": "lipreading-original",
           "vca_gan": "vca-gan-original"}


@pytest.fixture(scope="module")
def originals(tmp_path_factory):
    root = tmp_path_factory.mktemp("originals")
    return {name: save_original(name, root / f"{name}.pth") for name in FORMATS}


def _outputs(model, name: str, ref: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    video = torch.from_numpy(ref["video"])
    with torch.no_grad():
        if name.startswith("mvm"):
            return {"visual_features": model.frontend(video),
                    "fused_features": model.frame_features(video),
                    "logits": model(video)}
        feats = model.frame_features(video)
        out = model.decode(feats, torch.from_numpy(ref["noise"]))
        return {"frame_features": feats, "sentence_features": out["sentence"],
                **{k: out[k] for k in ("mel_20", "mel_40", "mel_80", "linear")}}


@pytest.mark.parametrize("name", list(FORMATS))
@pytest.mark.slow
def test_converted_reference_weights_reproduce_golden_outputs(name, originals, tmp_path, run_cli):
    out = tmp_path / f"{name}.lipx"
    code, _, err = run_cli("convert", originals[name], "--from", FORMATS[name], "-o", out)
    assert code == 0, err
    ckpt = load_checkpoint(out)
    assert ckpt.preset in ("original", "original-mstcn")
    ref = golden(name)
    got = _outputs(build_model(ckpt), name, ref)
    assert set(got) == set(ref) - {"video", "noise"}
    for key, tensor in got.items():
        err_max = np.abs(tensor.numpy() - ref[key]).max()
        assert tensor.shape == ref[key].shape, key
        assert err_max < 1e-4, f"{name}/{key}: max abs error {err_max:.2e}"


@pytest.mark.slow
def test_dataparallel_prefixes_and_format_detection(originals, tmp_path):
    dp = save_original("mvm_gru", tmp_path / "dp.pth", data_parallel=True)
    from_dp = convert_original(dp)  # no --from: the layout is detected from the groups
    plain = convert_original(originals["mvm_gru"], "lipreading-original")
    assert from_dp.task == "lipreading" and from_dp.state_dict.keys() == plain.state_dict.keys()
    for key, tensor in plain.state_dict.items():
        torch.testing.assert_close(from_dp.state_dict[key], tensor)


@pytest.mark.slow
def test_info_shows_task_and_parameter_counts(originals, tmp_path, run_cli):
    out = tmp_path / "gru.lipx"
    assert run_cli("convert", originals["mvm_gru"], "-o", out)[0] == 0
    code, text, _ = run_cli("info", out, "--json")
    assert code == 0
    import json

    summary = json.loads(text)
    assert summary["task"] == "lipreading" and summary["preset"] == "original"
    assert summary["modules"]["frontend"] == 11_186_688
    assert summary["modules"]["backend"] == 8_389_108
    code, text, _ = run_cli("info", out)
    assert code == 0 and "lipreading" in text


def _corrupt(kind: str, tmp_path, originals):
    path = tmp_path / f"{kind}.pth"
    if kind == "missing":
        return tmp_path / "nope.pth", "does not exist"
    if kind == "garbage":
        path.write_bytes(b"this is not a checkpoint at all" * 10)
        return path, "not a"
    if kind == "truncated":
        data = originals["mvm_gru"].read_bytes()
        path.write_bytes(data[: len(data) // 2])
        return path, "truncated or corrupt"
    groups = fill_original("mvm_gru")
    if kind == "missing_key":
        del groups["back_state_dict"]["fc.bias"]
        expect = "missing keys"
    elif kind == "unexpected_key":
        groups["mem_state_dict"]["extra"] = torch.zeros(3)
        expect = "unexpected keys"
    elif kind == "wrong_shape":
        groups["v_front_state_dict"]["resnet.layer1.0.conv1.weight"] = torch.zeros(64, 64, 5, 5)
        expect = "wrong shapes"
    elif kind == "not_dict":
        groups = [1, 2, 3]
        expect = "not a dict"
    torch.save(groups, path)
    return path, expect


@pytest.mark.parametrize(
    "kind",
    ["missing", "garbage", "truncated", "missing_key", "unexpected_key", "wrong_shape", "not_dict"],
)
@pytest.mark.slow
def test_bad_original_checkpoints_get_one_clear_line(kind, tmp_path, originals, run_cli):
    src, expect = _corrupt(kind, tmp_path, originals)
    out = tmp_path / "out.lipx"
    code, _, err = run_cli("convert", src, "--from", "lipreading-original", "-o", out)
    assert code == 1
    assert expect in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) <= 3
    assert not out.exists()


@pytest.mark.slow
def test_wrong_family_and_unknown_format(originals, tmp_path, run_cli):
    out = tmp_path / "x.lipx"
    code, _, err = run_cli("convert", originals["mvm_gru"], "--from", "vca-gan-original", "-o", out)
    assert code == 1 and "not a vca-gan-original checkpoint" in err
    code, _, err = run_cli("convert", originals["mvm_gru"], "--from", "lipreading-orig", "-o", out)
    assert code == 1 and "did you mean 'lipreading-original'" in err
    assert not out.exists()


@pytest.mark.slow
def test_info_rejects_original_and_points_to_convert(originals, run_cli):
    code, _, err = run_cli("info", originals["vca_gan"])
    assert code == 1 and "lipx convert" in err


def test_checkpoint_round_trip_rebuilds_the_model_by_itself(tmp_path):
    config = preset_config("lipreading", "tiny")
    from lipx.models.checkpoint import Checkpoint
    from lipx.models.registry import get_family

    model = get_family("lipreading").build(config).eval()
    ckpt = Checkpoint(task="lipreading", config=config, state_dict=model.state_dict(),
                      preset="tiny", vocabulary=[f"w{i}" for i in range(config.num_classes)])
    path = save_checkpoint(ckpt, tmp_path / "tiny.lipx")
    again = build_model(load_checkpoint(path))
    video = torch.randn(2, 1, 7, 112, 112)
    with torch.no_grad():
        torch.testing.assert_close(again(video), model(video))


def test_slim_drops_training_state_and_halves_weights(tmp_path, run_cli):
    from lipx.models.checkpoint import Checkpoint
    from lipx.models.registry import get_family

    config = preset_config("lip2speech", "tiny")
    family = get_family("lip2speech")
    torch.manual_seed(0)
    model = family.build(config).eval()
    aux = {k: m.state_dict() for k, m in family.build_aux(config).items()}
    full = Checkpoint(task="lip2speech", config=config, state_dict=model.state_dict(),
                      aux=aux, preset="tiny", training={"progress": {"step": 3}})
    src = save_checkpoint(full, tmp_path / "full.lipx")
    code, _, err = run_cli("slim", src, "-o", tmp_path / "slim.lipx", "--half")
    assert code == 0, err
    slim = load_checkpoint(tmp_path / "slim.lipx")
    assert slim.aux == {} and slim.training is None and slim.meta["slim"] == {"half": True}
    assert all(t.dtype == torch.float16 for t in slim.state_dict.values() if t.is_floating_point())
    assert (tmp_path / "slim.lipx").stat().st_size < 0.6 * src.stat().st_size
    again = build_model(slim)  # float16 weights load into the float32 model
    assert next(again.parameters()).dtype == torch.float32
    for name, weight in again.state_dict().items():
        if weight.is_floating_point():
            torch.testing.assert_close(weight, model.state_dict()[name], atol=2e-3, rtol=1e-3)
    code, _, err = run_cli("slim", tmp_path / "missing.lipx", "-o", tmp_path / "x.lipx")
    assert code == 1 and "does not exist" in err
