"""Face framings: how a model's training faces were framed, so ``--crop auto`` frames alike."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest

from lipx.data.prepare_format import corpus_framing
from lipx.data.render import Appearance, average_face, face_shape
from lipx.errors import InputError, ManifestError
from lipx.landmarks import FRAMINGS, format_landmarks, named_framing
from lipx.package import Manifest
from lipx.runtime.crop_view import CropOptions
from lipx.runtime.faces import apply, invert
from lipx.runtime.landmark_tracker import LandmarkTracker, lrw_corners
from lipx.runtime.pipeline import Pipeline
from lipx.runtime.stream import StreamOptions

ROOT = Path(__file__).resolve().parents[1]


def test_the_shipped_average_face_is_what_the_script_writes():
    shipped = (ROOT / "lipx" / "assets" / "synthetic_face_98.txt").read_text()
    assert shipped == format_landmarks("synthetic/average_face", average_face()[None]) + "\n"


def test_every_named_framing_loads_and_an_unknown_one_is_refused():
    for name in FRAMINGS:
        f = named_framing(name)
        assert f.name == name and f.reference.shape == (98, 2) and len(f.points) >= 4
        assert not f.reference.flags.writeable
    with pytest.raises(InputError, match="unknown face framing 'nonsense'.*landmarks"):
        named_framing("nonsense")
    with pytest.raises(InputError, match="unknown face framing"):
        CropOptions(framing="nonsense")


def _box_errors(framing: str, faces: list[np.ndarray]) -> np.ndarray:
    """Largest corner distance (px) between the fixed LRW box and where ``framing`` puts it,
    per face (the faces are drawn in the canonical frame, which is LRW's)."""
    fit = named_framing(framing).fit
    return np.array([np.linalg.norm(apply(invert(fit(f)), lrw_corners()) - lrw_corners(),
                                    axis=1).max() for f in faces])


def test_the_synthetic_framing_reproduces_where_the_renderer_frames_a_face():
    """Faces not in the average (another seed), speaking: fitting their nose and eyes to the
    average face puts the mouth box where the renderer's LRW frame has it, within the corpus'
    own placement jitter (+-3 px and +-3 % scale: up to about 6.5 px at the box's corners), and
    the box stays put as the mouth opens. Fitting all 98 points to LRW's reference face (the
    old ``--crop auto``) follows the jaw: more than twice as far off with the mouth open."""
    rng = np.random.default_rng(2026)
    closed, open_ = np.zeros(6), np.array([1.0, 0.3, 0.2, 0.5, 0.0, 0.0])
    apps = [Appearance.random(rng) for _ in range(24)]
    synthetic = {k: _box_errors("synthetic", [face_shape(a, v).landmarks for a in apps])
                 for k, v in (("closed", closed), ("open", open_))}
    landmarks = _box_errors("landmarks", [face_shape(a, open_).landmarks for a in apps])
    assert np.percentile(synthetic["closed"], 95) < 6.5, synthetic["closed"]
    np.testing.assert_allclose(synthetic["open"], synthetic["closed"], atol=1e-6)
    assert np.median(landmarks) > 2 * np.median(synthetic["open"]), landmarks


def test_a_synthetic_lrw_corpus_is_framed_by_the_renderer_and_others_by_landmarks():
    assert corpus_framing({"synth": {"layout": "lrw", "speakers": 4}}) == "synthetic"
    assert corpus_framing({"synth": {"layout": "grid"}}) == "landmarks"
    assert corpus_framing({}) == "landmarks"  # a real corpus


def test_the_tracker_fits_faces_the_way_the_package_says(packages, face_video, tmp_path):
    """A package's ``video.framing`` reaches ``--crop auto``'s tracker; the shipped lipreading
    model names the renderer's; an unknown one is refused when the manifest is read."""
    pkg = tmp_path / "pkg"
    shutil.copytree(packages["lipreading"], pkg)
    m = Manifest.read(pkg)
    assert m.video.framing == "landmarks"  # exported from a checkpoint that names none
    dataclasses.replace(m, video=dataclasses.replace(m.video, framing="synthetic")).write(pkg)
    with Pipeline(pkg) as pipeline:
        with pipeline.session(str(face_video), StreamOptions(crop="auto", max_frames=2)) as s:
            assert isinstance(s.roi, LandmarkTracker) and s.roi.framing.name == "synthetic"
    dataclasses.replace(m, video=dataclasses.replace(m.video, framing="nonsense")).write(pkg)
    with pytest.raises(ManifestError, match="unknown preprocessing.video.framing 'nonsense'"):
        Manifest.read(pkg)


def test_the_shipped_lipreading_checkpoint_names_the_synthetic_framing():
    from lipx.models.checkpoint import load_checkpoint

    ckpt = load_checkpoint(ROOT / "lipx" / "assets" / "checkpoints" / "lipreading.lipx")
    assert ckpt.video.framing == "synthetic"
