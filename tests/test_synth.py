"""``lipx data synth``: determinism, the GRID and LRW on-disk layouts, learnability, errors, CLI."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from lipx.cli import app
from lipx.data import lexicon
from lipx.data.render import Appearance, Placement, render_frames
from lipx.data.synth import (
    ClipSpec,
    SynthOptions,
    clip_files,
    plan_clips,
    synthesize_clip,
    synthesize_corpus,
)
from lipx.data.voice import Voice, synthesize
from lipx.errors import InputError
from lipx.landmarks import read_landmarks, reference_face, similarity_transform

LRW_BOX = (59, 95, 195, 231)


def _grid_opts(out: Path, **kw) -> SynthOptions:
    return SynthOptions(out=out, layout="grid", speakers=2, utterances=2, **kw)


def _lrw_opts(out: Path, **kw) -> SynthOptions:
    return SynthOptions(out=out, layout="lrw", speakers=3, words=2, clips_per_word=2,
                        val_per_word=1, test_per_word=1, **kw)


@pytest.fixture(scope="module")
def grid_corpus(tmp_path_factory) -> tuple[SynthOptions, object]:
    opts = _grid_opts(tmp_path_factory.mktemp("grid"))
    return opts, synthesize_corpus(opts)


@pytest.fixture(scope="module")
def lrw_corpus(tmp_path_factory) -> tuple[SynthOptions, object]:
    opts = _lrw_opts(tmp_path_factory.mktemp("lrw"))
    return opts, synthesize_corpus(opts)


def _decode(path: Path) -> tuple[np.ndarray, float, np.ndarray, int]:
    """Frames (T, H, W, 3), fps, audio samples, audio rate of a video file."""
    with av.open(str(path)) as c:
        fps = float(c.streams.video[0].average_rate)
        frames = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])
    with av.open(str(path)) as c:
        rate = c.streams.audio[0].sample_rate
        audio = np.concatenate([f.to_ndarray().reshape(-1) for f in c.decode(audio=0)])
    return frames, fps, audio, rate


# --- determinism ---------------------------------------------------------------------------

def test_same_seed_same_arrays_other_seed_differs(tmp_path):
    opts = _lrw_opts(tmp_path)
    spec = plan_clips(opts)[0]
    a, b = synthesize_clip(opts, spec), synthesize_clip(opts, spec)
    assert a.frames.shape == (29, 256, 256, 3) and a.frames.dtype == np.uint8
    assert a.audio.shape == (18560,) and a.audio.dtype == np.float32
    assert np.array_equal(a.frames, b.frames)
    assert np.array_equal(a.audio, b.audio)
    assert np.array_equal(a.landmarks, b.landmarks)
    c = synthesize_clip(replace(opts, seed=1), spec)
    assert not np.array_equal(a.frames, c.frames)
    assert not np.array_equal(a.audio, c.audio)


@pytest.mark.slow
def test_parallel_run_writes_the_same_files(grid_corpus, tmp_path):
    opts, _ = grid_corpus
    other = replace(opts, out=tmp_path, workers=2)
    synthesize_corpus(other)
    for spec in plan_clips(opts):
        for kind in ("audio", "align", "landmark"):
            mine, theirs = clip_files(opts, spec.key)[kind], clip_files(other, spec.key)[kind]
            assert mine.read_bytes() == theirs.read_bytes(), mine


# --- GRID layout ---------------------------------------------------------------------------

def test_grid_files_decode(grid_corpus):
    opts, report = grid_corpus
    assert report.clips == report.written == 4 and report.skipped == 0
    assert report.speakers == ("s1", "s2") and report.held_out == ("s2",)
    meta = json.loads((opts.out / "synth.json").read_text())
    assert meta["layout"] == "grid" and meta["held_out"] == ["s2"] and len(meta["vocabulary"]) == 51
    for spec in plan_clips(opts):
        files = clip_files(opts, spec.key)
        assert files["video"].name == f"{lexicon.grid_id(spec.words)}.mpg"
        frames, fps, audio, rate = _decode(files["video"])
        assert frames.shape == (75, 288, 360, 3) and fps == 25.0
        assert rate == 16000 and abs(len(audio) / rate - 3.0) < 0.1
        wav, sr = sf.read(files["audio"])
        assert sr == 16000 and wav.shape == (48000,) and np.abs(wav).max() > 0.3
        # the MP2 track decodes in sync with the WAV (the decoder delay is compensated)
        track = audio[:48000].astype(np.float64)
        lags = range(-100, 101)
        xc = [np.dot(track[max(k, 0):48000 + min(k, 0)], wav[max(-k, 0):48000 - max(k, 0)])
              for k in lags]
        assert abs(lags[int(np.argmax(xc))]) <= 2
    assert not list(opts.out.rglob("*.part"))


def test_grid_align_files(grid_corpus):
    opts, _ = grid_corpus
    for spec in plan_clips(opts):
        rows = [line.split() for line in clip_files(opts, spec.key)["align"].read_text()
                .splitlines()]
        starts, ends = [int(r[0]) for r in rows], [int(r[1]) for r in rows]
        assert rows[0][2] == "sil" and starts[0] == 0 and rows[-1][2] == "sil"
        assert ends[-1] == 75000 and all(a < b for a, b in zip(starts, ends, strict=True))
        assert starts[1:] == ends[:-1]
        assert tuple(r[2] for r in rows if r[2] not in ("sil", "sp")) == spec.words
        speech = [(a, b) for a, b, r in zip(starts, ends, rows, strict=True)
                  if r[2] not in ("sil", "sp")]
        assert speech[0][0] >= 5000 and speech[-1][1] <= 70000  # >= 0.2 s of silence around


def test_grid_landmarks_match_render_and_align_to_lrw(grid_corpus):
    opts, _ = grid_corpus
    spec = plan_clips(opts)[0]
    points = read_landmarks(clip_files(opts, spec.key)["landmark"])
    assert points.shape == (75, 98, 2)
    clip = synthesize_clip(opts, spec)
    assert np.abs(points - clip.landmarks).max() <= 0.5 + 1e-6
    assert (points[..., 0] > 0).all() and (points[..., 0] < 360).all()
    assert (points[..., 1] > 0).all() and (points[..., 1] < 288).all()
    # not pre-aligned: the raw mouth is away from LRW's box centre ...
    raw_mouth = points[:, 76:96].mean(1)
    assert np.abs(raw_mouth - (127, 163)).max() > 10
    # ... and the similarity fit onto the reference face puts it in the box centre.
    ref = reference_face()
    for t in range(0, 75, 15):
        m = similarity_transform(points[t], ref)
        mouth = points[t, 76:96] @ m[:, :2].T + m[:, 2]
        assert np.abs(mouth.mean(0) - (127, 163)).max() < 8
        assert 60 < np.ptp(mouth[:, 0]) < 100


def test_landmarks_lie_on_the_rendered_face():
    app = replace(Appearance.random(np.random.default_rng(5)), light_strength=0.0, brightness=1.0)
    vis = np.nan_to_num(lexicon.PHONEMES["AA"].target[:6])[None]
    frames, lm = render_frames(app, Placement.lrw(), vis, np.random.default_rng(0), noise=False)
    img, pts = frames[0].astype(float), lm[0]

    def colour(p: np.ndarray) -> np.ndarray:
        return img[int(round(p[1])), int(round(p[0]))]

    assert np.abs(colour(pts[53]) - app.skin).max() < 12  # nose bridge on skin
    lower_lip = (pts[85] + pts[94]) / 2  # between outer and inner lower lip
    assert np.abs(colour(lower_lip) - app.lip).max() < 12
    inside = (pts[90] + pts[94]) / 2  # open mouth: dark interior or tongue, not skin
    assert np.abs(colour(inside) - app.skin).max() > 40
    x1, y1, x2, y2 = LRW_BOX
    centre = pts[76:96].mean(0)
    assert abs(centre[0] - (x1 + x2) / 2) < 4 and abs(centre[1] - (y1 + y2) / 2) < 6
    assert 60 <= np.ptp(pts[76:88, 0]) <= 90


# --- LRW layout ----------------------------------------------------------------------------

def test_lrw_files_decode(lrw_corpus):
    opts, report = lrw_corpus
    words = lexicon.lrw_vocabulary(2)
    assert report.clips == report.written == 8 and report.vocabulary == words
    for word in words:
        for split, n in (("train", 2), ("val", 1), ("test", 1)):
            names = sorted(p.name for p in (opts.out / word / split).iterdir())
            assert names == sorted(f"{word}_{i:05d}{ext}" for i in range(1, n + 1)
                                   for ext in (".mp4", ".txt"))
    video = opts.out / words[0] / "train" / f"{words[0]}_00001.mp4"
    frames, fps, audio, rate = _decode(video)
    assert frames.shape == (29, 256, 256, 3) and fps == 25.0
    assert rate == 16000 and abs(len(audio) / rate - 1.16) < 0.1
    text = video.with_suffix(".txt").read_text().splitlines()
    assert text[0] == f"Text: {words[0]}" and text[1].startswith("Conf: ")
    seconds = float(text[2].split(" ")[1])
    assert text[2].endswith(" seconds") and 0.1 < seconds < 1.1


def test_lrw_word_centred_and_splits_use_held_out_speakers(lrw_corpus):
    opts, _ = lrw_corpus
    clips = plan_clips(opts)
    held = {opts.speakers - 1}
    assert all(c.speaker in held for c in clips if "/train/" not in c.key)
    assert all(c.speaker not in held for c in clips if "/train/" in c.key)
    clip = synthesize_clip(opts, clips[0])
    (_, start, end), = clip.words
    assert abs((start + end) / 2 - 0.58) < 1e-6


# --- learnability --------------------------------------------------------------------------

def _mouth_delta(app: Appearance, phone: str) -> np.ndarray:
    """Grey mouth crop (56x56) of a phoneme's viseme minus the same speaker's rest crop."""
    def crop(name: str) -> np.ndarray:
        vis = np.nan_to_num(lexicon.PHONEMES[name].target[:6])[None]
        f, _ = render_frames(app, Placement.lrw(), vis, np.random.default_rng(0), noise=False)
        x1, y1, x2, y2 = LRW_BOX
        grey = cv2.cvtColor(f[0, y1:y2, x1:x2], cv2.COLOR_RGB2GRAY).astype(np.float64) / 255
        return cv2.resize(grey, (56, 56), interpolation=cv2.INTER_AREA)
    return crop(phone) - crop("SIL")


def test_mouth_shape_depends_on_phoneme_more_than_on_speaker():
    phones = ("AA", "IY", "UW", "F", "TH", "OW", "P", "L")
    apps = [Appearance.random(np.random.default_rng(i)) for i in range(4)]
    d = np.array([[_mouth_delta(a, p) for p in phones] for a in apps])  # (S, P, 56, 56)

    def rms(x: np.ndarray) -> float:
        return float(np.sqrt(np.mean(x ** 2)))

    n_s, n_p = d.shape[:2]
    across_phones = np.mean([rms(d[s, i] - d[s, j]) for s in range(n_s)
                             for i in range(n_p) for j in range(i + 1, n_p)])
    across_speakers = np.mean([rms(d[s, i] - d[t, i]) for i in range(n_p)
                               for s in range(n_s) for t in range(s + 1, n_s)])
    assert across_phones > 1.5 * across_speakers


def _vowel_spectrum(voice: Voice, phone: str) -> tuple[np.ndarray, np.ndarray]:
    phones = (lexicon.Phone("SIL", -1, 0), lexicon.Phone(phone, 0, 0.6),
              lexicon.Phone("SIL", 0.6, 1.6))
    utt = lexicon.Utterance(phones, ((phone.lower(), 0.0, 0.6),))
    audio = synthesize(lexicon.articulate(utt, -0.1, 1.0), voice, 0.0, 12800,
                       np.random.default_rng(0))
    seg = audio[2400:8000] * np.hanning(5600)
    return np.fft.rfftfreq(5600, 1 / 16000), np.abs(np.fft.rfft(seg)) ** 2


def test_vowel_spectra_differ():
    for seed in range(3):
        voice = Voice.random(np.random.default_rng(seed))
        f, aa = _vowel_spectrum(voice, "AA")
        _, iy = _vowel_spectrum(voice, "IY")

        def ratio(p: np.ndarray, f: np.ndarray = f) -> float:  # F2 region over F1 region
            return p[(f > 1900) & (f < 3000)].sum() / p[(f > 550) & (f < 1100)].sum()

        assert ratio(iy) > 5 * ratio(aa)


# --- resume, errors, CLI -------------------------------------------------------------------

def test_rerun_skips_done_clips_and_redoes_broken_ones(lrw_corpus):
    opts, _ = lrw_corpus
    spec = plan_clips(opts)[3]
    video = clip_files(opts, spec.key)["video"]
    video.unlink()
    video.with_name(video.name + ".part").write_bytes(b"half")  # an interrupted write
    calls = []
    report = synthesize_corpus(opts, progress=lambda done, total: calls.append((done, total)))
    assert (report.written, report.skipped) == (1, 7)
    assert calls[-1] == (8, 8) and video.exists()
    assert not video.with_name(video.name + ".part").exists()
    with pytest.raises(InputError, match="other options"):
        synthesize_corpus(replace(opts, seed=3))


@pytest.mark.parametrize("kwargs", [
    dict(layout="vhs"), dict(speakers=0), dict(speakers=2, held_out=2), dict(words=5),
    dict(words=52), dict(image_size=(255, 256)), dict(workers=0), dict(seed=-1),
    dict(utterances=True), dict(words=6, utterances=100),
])
def test_bad_options_raise_input_error(kwargs, tmp_path):
    with pytest.raises(InputError):
        SynthOptions(out=tmp_path, **{"layout": "grid", **kwargs})


def test_bad_lrw_options_raise_input_error(tmp_path):
    with pytest.raises(InputError, match="square"):
        SynthOptions(out=tmp_path, layout="lrw", image_size=(320, 256))
    with pytest.raises(InputError):
        SynthOptions(out=tmp_path, layout="lrw", words=1)
    with pytest.raises(InputError):
        synthesize_clip(SynthOptions(out=tmp_path, layout="lrw"), ClipSpec("A/train/A_1", 0,
                                                                           ("",)))


def test_cli_synth(tmp_path, run_cli):
    out = tmp_path / "corpus"
    result = CliRunner().invoke(app, ["data", "synth", str(out), "--layout", "lrw", "--words",
                                      "2", "--clips-per-word", "1", "--val-per-word", "1",
                                      "--test-per-word", "0", "--speakers", "2"])
    assert result.exit_code == 0, result.output
    assert "PASSED" in result.output and "4 clips written" in result.output
    assert len(list(out.rglob("*.mp4"))) == 4
    code, _, err = run_cli("data", "synth", str(out), "--layout", "lrw", "--words", "3")
    assert code == 1 and "other options" in err
    code, _, err = run_cli("data", "synth", str(tmp_path / "x"), "--layout", "vhs")
    assert code == 1 and "unknown layout" in err
