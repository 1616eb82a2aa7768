"""`lipx export` of the real models: converted reference weights (the `original` presets) reproduce
the golden outputs through onnxruntime, whole and split. (The small presets' export, with parity,
is run by the demo test on the shipped checkpoints.)"""

from __future__ import annotations

import numpy as np
import pytest
from reference import golden, save_original

from lipx.package import Manifest
from lipx.runtime.ort_runner import OrtRunner

CASES = {"mvm_gru": "lipreading-original", "mvm_mstcn": "lipreading-original",
         "vca_gan": "vca-gan-original"}


def _run(path, feeds):
    with OrtRunner(path) as runner:
        return runner.infer(feeds)


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.slow
def test_exported_reference_weights_reproduce_golden(name, tmp_path, run_cli):
    src = save_original(name, tmp_path / f"{name}.pth")
    ckpt, pkg = tmp_path / "model.lipx", tmp_path / "pkg"
    assert run_cli("convert", src, "--from", CASES[name], "-o", ckpt)[0] == 0
    code, _, err = run_cli("export", ckpt, "-o", pkg)
    assert code == 0, err
    manifest = Manifest.read(pkg)
    assert manifest.preset in ("original", "original-mstcn")
    assert manifest.parity and all(record.passed for record in manifest.parity)
    ref = golden(name)
    video = ref["video"]
    if name.startswith("mvm"):
        whole = _run(pkg / "model.onnx", {"video": video})["logits"]
        features = _run(pkg / "frontend.onnx", {"video": np.pad(video, [(0, 0)] * 2 + [(2, 2)]
                                                                 + [(0, 0)] * 2)})["features"]
        split = _run(pkg / "backend.onnx", {"features": features})["logits"]
        np.testing.assert_allclose(features, ref["fused_features"], atol=1e-4)
        for got in (whole, split):
            np.testing.assert_allclose(got, ref["logits"], atol=1e-4)
        return
    outputs = _run(pkg / "model.onnx", {"video": video, "noise": ref["noise"]})
    np.testing.assert_allclose(outputs["mel"], ref["mel_80"], atol=1e-4)
    np.testing.assert_allclose(outputs["linear"], ref["linear"], atol=1e-4)
