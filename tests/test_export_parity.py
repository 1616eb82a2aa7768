"""Parity comparison on the runner interface, and the split pipeline, with numpy runners."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lipx.errors import ShapeMismatch, ToleranceExceeded
from lipx.export.parity import parity_cases
from lipx.export.split import SplitPipeline
from lipx.package import ParityRecord, TensorInfo
from lipx.parity import compare, top1_agreements, validate_parity
from lipx.runtime.runner import Runner
from lipx.tasks import Tolerance


class FnRunner(Runner):
    """Runs a numpy function of the feeds; metadata given explicitly."""

    def __init__(self, name, fn, inputs, outputs):
        super().__init__(name)
        self.fn, self.inputs, self.outputs = fn, inputs, outputs
        self.activations = 0

    def _activate(self):
        self.activations += 1

    def _deactivate(self):
        pass

    def _input_metadata(self):
        return {t.name: t for t in self.inputs}

    def _output_metadata(self):
        return {t.name: t for t in self.outputs}

    def _infer(self, feeds):
        self.last_latency_s = 0.0
        return self.fn(feeds)


FEATURES = TensorInfo("features", "float32", ("batch", "frames", 6))
LOGITS = TensorInfo("logits", "float32", ("batch", 6))


def classifier(name, perturb=lambda y: y):
    return FnRunner(name, lambda f: {"logits": perturb(f["features"].mean(axis=1))},
                    (FEATURES,), (LOGITS,))


def feeds(cases=((1, 29), (3, 12))):
    rng = np.random.default_rng(0)
    return [{"features": rng.standard_normal((b, t, 6), dtype=np.float32)} for b, t in cases]


def test_compare_passes_within_tolerance_and_records_statistics():
    ref, art = classifier("torch"), classifier("model.onnx", lambda y: y + 1e-6)
    result = compare({"torch": ref, "model.onnx": art}, feeds(), "torch", Tolerance(1e-4, 1e-4),
                     top1_output="logits")
    validate_parity(result)
    (record,) = result.records
    assert record.passed and record.artifact == "model.onnx" and record.reference == "torch"
    assert record.cases == ((1, 29), (3, 12))
    (out,) = record.outputs
    assert out.name == "logits" and out.max_abs == pytest.approx(1e-6, rel=0.1)
    assert 0 < out.max_rel < 1e-4 and record.top1_agreement == 1.0
    assert not ref.is_active and ref.activations == 1  # activated for the call only
    data = json.loads(json.dumps(result.to_dict()))
    assert ParityRecord.from_dict(data["records"][0]) == record


def test_values_out_of_tolerance_raise_tolerance_exceeded():
    art = classifier("model.fp16.onnx", lambda y: y + 0.05)
    result = compare({"torch": classifier("torch"), "fp16": art}, feeds(), "torch",
                     Tolerance(1e-3, 1e-2))
    assert not result.passed
    with pytest.raises(ToleranceExceeded, match=r"fp16: output 'logits' max abs error 0.05 "
                                                 r"exceeds 0.001 \+ 0.01 x max\|ref\|"):
        validate_parity(result)
    assert "FAIL" in result.report()


def test_wrong_shapes_or_missing_outputs_raise_shape_mismatch():
    bad = classifier("plan", lambda y: y[:, :5])
    result = compare({"torch": classifier("torch"), "plan": bad}, feeds(), "torch", Tolerance(1, 1))
    shapes = r"output 'logits' has shape \(1, 5\), reference \(1, 6\)"
    with pytest.raises(ShapeMismatch, match=shapes):
        validate_parity(result)
    none = FnRunner("empty", lambda f: {}, (FEATURES,), ())
    result = compare({"torch": classifier("torch"), "empty": none}, feeds(), "torch",
                     Tolerance(1, 1))
    with pytest.raises(ShapeMismatch, match="missing output 'logits'"):
        validate_parity(result)


def test_top1_agreement_is_measured_and_enforced():
    def swap_first_row(y):
        y = y.copy()
        y[0] = -y[0]  # a different winner in the first row of each case: 2 rows of 4
        return y

    art = classifier("int8", swap_first_row)
    result = compare({"torch": classifier("torch"), "int8": art}, feeds(), "torch",
                     Tolerance(0.01, 0.0, min_top1=0.9), top1_output="logits")
    (record,) = result.records
    assert record.top1_agreement == pytest.approx(0.5) and record.min_top1 == 0.9
    with pytest.raises(ToleranceExceeded, match="top-1 agreement 0.500 below 0.9"):
        validate_parity(result)


def test_top1_flips_between_tied_classes_are_not_disagreements():
    ref = np.array([[1.0, 0.9995, -2.0], [3.0, 0.0, 1.0]], np.float32)
    flipped = np.array([[0.9995, 1.0, -2.0], [0.0, 3.0, 1.0]], np.float32)
    assert top1_agreements(ref, flipped, tie=1e-3) == 1  # row 0 tied, row 1 a real flip
    assert top1_agreements(ref, flipped, tie=0.0) == 0


def conv_frontend():
    """A 'front-end' whose frame t sees frames t-2..t+2 (valid temporal conv over the chunk)."""
    kernel = np.array([0.1, -0.3, 1.0, 0.5, 0.2], np.float32)

    def run(f):
        v = f["video"][:, 0]  # (B, C+4, H, W)
        frames = v.reshape(*v.shape[:2], -1)[:, :, :6]
        c = v.shape[1] - 4
        out = sum(kernel[k] * frames[:, k:k + c] for k in range(5))
        return {"features": out.astype(np.float32)}

    video = TensorInfo("video", "float32", ("batch", 1, "chunk", 4, 4))
    return FnRunner("frontend.onnx", run, (video,), (FEATURES,)), kernel


def test_split_pipeline_equals_the_whole_clip_for_any_chunk():
    frontend, kernel = conv_frontend()
    noise = TensorInfo("noise", "float32", ("batch", 2, "frames"))
    backend = FnRunner("backend.onnx", lambda f: {"logits": f["features"].mean(axis=1)
                                                  + f["noise"].mean()},
                       (FEATURES, noise), (LOGITS,))
    rng = np.random.default_rng(1)
    video = rng.standard_normal((2, 1, 11, 4, 4), dtype=np.float32)
    # whole clip: the same conv with zero padding of 2 frames each side
    frames = np.pad(video[:, 0].reshape(2, 11, -1)[:, :, :6], ((0, 0), (2, 2), (0, 0)))
    whole = sum(kernel[k] * frames[:, k:k + 11] for k in range(5))
    n = rng.standard_normal((2, 2, 11), dtype=np.float32)
    for chunk in (1, 3, 4, 11, 20):
        with SplitPipeline(frontend, backend, chunk=chunk) as split:
            np.testing.assert_allclose(split.features(video), whole, rtol=1e-5, atol=1e-6)
            out = split.infer({"video": video, "noise": n})["logits"]
            np.testing.assert_allclose(out, whole.mean(axis=1) + n.mean(), rtol=1e-5, atol=1e-6)
            meta = split.input_metadata()
            assert meta["video"].shape == ("batch", 1, "frames", 4, 4) and "noise" in meta
    assert not frontend.is_active and not backend.is_active


def test_parity_cases_cover_other_batches_and_lengths_within_profiles():
    model = parity_cases("model", window=29, stride=7, min_frames=1, max_batch=8)
    assert {b for b, _ in model} >= {1, 3} and {t for _, t in model} - {29}
    backend = parity_cases("backend", window=29, stride=7, min_frames=1, max_batch=8)
    assert max(t for _, t in backend) == 29 and min(t for _, t in backend) < 29
    front = parity_cases("frontend", window=29, stride=7, min_frames=1, max_batch=8)
    assert (1, 11) in front and max(t for _, t in front) == 33
    assert all(b <= 2 for b, _ in parity_cases("model", 29, 7, 1, max_batch=2))
