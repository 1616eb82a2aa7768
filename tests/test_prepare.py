"""lipx data prepare: tiny GRID- and LRW-like corpora written with PyAV, bad files included."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest
from typer.testing import CliRunner

from lipx import landmarks as L
from lipx.cli import app
from lipx.data import prepare_format as fmt
from lipx.data.prepare import PrepareOptions, prepare_corpus
from lipx.errors import InputError

cv2 = pytest.importorskip("cv2")

SR = 16000
MOUTH = L.reference_face()[76:96].astype(np.float64).mean(0)  # mouth centre in the face frame
ORIGIN = np.array([51, 87])  # top-left of the stored region (box minus the 8 px margin)


# --- building tiny corpora ------------------------------------------------------------------


def write_av(path: Path, frames: np.ndarray, wav: np.ndarray | None,
             container_format: str | None = None, vcodec: str = "mpeg1video",
             acodec: str = "mp2") -> None:
    """Encode RGB frames (25 fps) and optional mono 16 kHz audio with PyAV."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format=container_format) as out:
        video = out.add_stream(vcodec, rate=25)
        video.width, video.height, video.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        video.bit_rate = 8_000_000
        audio = out.add_stream(acodec, rate=SR, layout="mono") if wav is not None else None
        for frame in frames:
            out.mux(video.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        out.mux(video.encode())
        if audio is not None:
            pcm = (np.clip(wav, -1, 1) * 32767).astype(np.int16)
            step = audio.codec_context.frame_size or 1024
            for i in range(0, pcm.size, step):
                chunk = av.AudioFrame.from_ndarray(pcm[None, i:i + step], format="s16",
                                                   layout="mono")
                chunk.sample_rate, chunk.pts = SR, i
                out.mux(audio.encode(chunk))
            out.mux(audio.encode())


def tone(frames: int, hz: float = 440.0) -> np.ndarray:
    """A 440 Hz tone plus a 25 Hz hum (that GRID's 55 Hz high-pass must remove)."""
    t = np.arange(frames * 640) / SR
    return (0.3 * np.sin(2 * np.pi * hz * t) + 0.3 * np.sin(2 * np.pi * 25 * t)).astype(np.float32)


def similarity(i: int) -> tuple[float, np.ndarray, np.ndarray]:
    """A per-frame head pose: scale, rotation matrix, shift (drifting with the frame index)."""
    angle = np.deg2rad(-8.0 + 0.5 * i)
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    return 1.2 + 0.005 * i, rot, np.array([40.0 + i, 10.0 - 0.5 * i])


def grid_clip(root: Path, speaker: str, name: str, frames: int = 30, audio: bool = True,
              landmark_dir: str | None = "{s}/landmark") -> None:
    """A GRID-like 360x288 mpg whose bright disk sits on the mouth of per-frame landmarks."""
    images, points = [], []
    for i in range(frames):
        scale, rot, shift = similarity(i)
        image = np.full((288, 360, 3), 50, np.uint8)
        centre = scale * MOUTH @ rot.T + shift
        cv2.circle(image, tuple(int(round(v)) for v in centre), int(round(16 * scale)),
                   (230, 200, 190), -1)
        images.append(image)
        points.append(scale * L.reference_face() @ rot.T + shift)
    write_av(root / speaker / "video" / f"{name}.mpg", np.stack(images),
             tone(frames) if audio else None, container_format="mpeg")
    if landmark_dir:
        L.write_landmarks(root / landmark_dir.format(s=speaker) / f"{name}.txt",
                          f"{speaker}/video/{name}.mpg", np.stack(points))
    align = root / speaker / "align" / f"{name}.align"
    align.parent.mkdir(parents=True, exist_ok=True)
    align.write_text("0 12000 sil\n12000 30000 bin\n30000 48000 blue\n48000 75000 sil\n")


def build_grid(root: Path) -> Path:
    """s1, s2 with three good clips each, plus corrupt, truncated, no-landmark, silent and short
    clips."""
    for name in ("bbaf2n", "bbaf3s", "bgaa1a"):
        grid_clip(root, "s1", name)
        grid_clip(root, "s2", name, landmark_dir="landmarks/{s}")  # the root-level location
    s1 = root / "s1" / "video"
    (s1 / "corrupt.mpg").write_bytes(np.random.default_rng(0).bytes(20000))
    grid_clip(root, "s1", "trunc", frames=40)
    data = (s1 / "trunc.mpg").read_bytes()
    (s1 / "trunc.mpg").write_bytes(data[: len(data) // 5])
    grid_clip(root, "s2", "nolm", landmark_dir=None)
    grid_clip(root, "s2", "noaudio", audio=False)
    grid_clip(root, "s2", "short", frames=10)
    return root


def lrw_face(word_index: int, frames: int = 29) -> np.ndarray:
    """256x256 faces with a disk at the mouth whose size depends on the word."""
    images = np.full((frames, 256, 256, 3), 60, np.uint8)
    for i, image in enumerate(images):
        radius = 10 + 8 * word_index + (i % 4)
        cv2.circle(image, (int(MOUTH[0]), int(MOUTH[1])), radius, (220, 190, 180), -1)
    return images


def build_lrw(root: Path, words: tuple[str, ...] = ("ABOUT", "BOARD")) -> Path:
    """Two words x (train 2, val 1, test 1) 29-frame mp4 clips with audio, plus a corrupt one."""
    for w, word in enumerate(words):
        for part, count in (("train", 2), ("val", 1), ("test", 1)):
            for k in range(1, count + 1):
                path = root / word / part / f"{word}_{k:05d}.mp4"
                write_av(path, lrw_face(w), tone(29, 300.0 + 200 * w), vcodec="libx264",
                         acodec="aac")
                path.with_suffix(".txt").write_text(f"Text:  {word}\nDuration: 0.53 seconds\n")
    good = (root / words[0] / "train" / f"{words[0]}_00001.mp4").read_bytes()
    (root / words[0] / "train" / f"{words[0]}_00003.mp4").write_bytes(good[: len(good) // 2])
    return root


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    src = build_grid(tmp_path_factory.mktemp("grid_src"))
    out = tmp_path_factory.mktemp("grid_out")
    calls = []
    report = prepare_corpus(PrepareOptions("grid", src, out, workers=2),
                            progress=lambda n, t: calls.append((n, t)))
    return src, out, report, calls


@pytest.fixture(scope="module")
def lrw(tmp_path_factory):
    src = build_lrw(tmp_path_factory.mktemp("lrw_src"))
    out = tmp_path_factory.mktemp("lrw_out")
    return src, out, prepare_corpus(PrepareOptions("lrw", src, out))


# --- GRID -----------------------------------------------------------------------------------


def test_grid_report_lists_bad_clips(grid):
    src, out, report, calls = grid
    assert report.prepared == 6 and report.skipped == 0 and report.clips == 6
    reasons = {f.source: f.reason for f in report.failed}
    assert reasons["s1/video/corrupt.mpg"] == "corrupt"
    assert reasons["s1/video/trunc.mpg"] in ("truncated", "too_short")
    assert reasons["s2/video/nolm.mpg"] == "missing_landmarks"
    assert reasons["s2/video/noaudio.mpg"] == "no_audio"
    assert reasons["s2/video/short.mpg"] == "too_short"
    assert len(reasons) == 5
    saved = json.loads((out / "report.json").read_text())
    assert saved["prepared"] == 6 and len(saved["failed"]) == 5
    assert calls[-1] == (11, 11) and len(calls) == 11


def test_grid_clips_are_aligned_regions_with_filtered_audio(grid):
    _, out, _, _ = grid
    corpus, records = fmt.read_corpus(out)
    assert corpus["layout"] == "grid" and corpus["margin"] == 8 and len(records) == 6
    record = next(r for r in records if r["id"] == "s1/bbaf2n")
    assert record["text"] == "bin blue" and record["frames"] == 30 and record["samples"] == 30 * 640
    video, wav, meta = fmt.read_clip(out / record["path"])
    assert video.shape == (30, 152, 152) and video.dtype == np.uint8
    assert wav.shape == (19200,) and wav.dtype == np.float32 and np.abs(wav).max() <= 1.0
    assert meta["words"][0] == [0.48, 1.2, "bin"]
    for frame in video[2:-2]:  # the mouth disk lands on the reference mouth in every frame
        ys, xs = np.nonzero(frame > 140)
        assert abs(xs.mean() + ORIGIN[0] - MOUTH[0]) < 1.5
        assert abs(ys.mean() + ORIGIN[1] - MOUTH[1]) < 1.5
    spectrum = np.abs(np.fft.rfft(wav[3200:16000] * np.hanning(12800)))
    hum, note = spectrum[round(25 * 12800 / SR)], spectrum[round(440 * 12800 / SR)]
    assert note / hum > 100  # 25 Hz hum removed by the 55 Hz high-pass (it was equal to the note)


def test_grid_generated_splits(grid):
    _, out, report, _ = grid
    corpus, records = fmt.read_corpus(out)
    assert report.split_sources == dict.fromkeys(("overlap", "unseen", "four", "s1", "s2"), "rule")
    assert corpus["splits"] == report.split_sources
    unseen_train = {r["id"] for r in fmt.select(records, "unseen", "train")}
    assert unseen_train == {"s1/bbaf2n", "s1/bbaf3s", "s1/bgaa1a"}
    assert {r["speaker"] for r in fmt.select(records, "unseen", "test")} == {"s2"}
    overlap_test = fmt.select(records, "overlap", "test")
    assert overlap_test == fmt.select(records, "overlap", "val") and len(overlap_test) == 2
    for speaker in ("s1", "s2"):
        parts = [fmt.select(records, speaker, p) for p in fmt.PARTS]
        assert [len(p) for p in parts] == [1, 1, 1]
    assert len(fmt.select(records, "four", "train")) == 2
    with pytest.raises(InputError, match="did you mean"):
        fmt.select(records, "overlapp", "train")


def test_grid_resume_skips_finished_clips_and_reads_split_files(grid, tmp_path):
    src, out, _, _ = grid
    stamp = (out / "clips" / "s1" / "bbaf2n.npz").stat().st_mtime_ns
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "train_4.txt").write_text(
        "s1/video/bbaf2n.mp4\ns1/video/bbaf3s.mp4\ns2/video/bbaf2n.mp4\n")
    (lists / "test_4.txt").write_text("s1/video/bgaa1a.mp4\n")
    (lists / "unseen_splits.txt").write_text("train/s2/bbaf2n\ntest/s1/bbaf2n\n")
    again = prepare_corpus(PrepareOptions("grid", src, out, splits=lists))
    assert again.prepared == 0 and again.skipped == 6 and len(again.failed) == 5
    assert (out / "clips" / "s1" / "bbaf2n.npz").stat().st_mtime_ns == stamp
    assert again.split_sources["four"] == "files" and again.split_sources["overlap"] == "rule"
    _, records = fmt.read_corpus(out)
    four_train = [r["id"] for r in fmt.select(records, "four", "train")]
    assert four_train == ["s1/bbaf2n", "s1/bbaf3s", "s2/bbaf2n"]
    assert [r["id"] for r in fmt.select(records, "s1", "test")] == ["s1/bgaa1a"]
    assert [r["id"] for r in fmt.select(records, "unseen", "test")] == ["s1/bbaf2n"]
    redo = prepare_corpus(PrepareOptions("grid", src, out, overwrite=True))
    assert redo.prepared == 6 and redo.skipped == 0


# --- LRW ------------------------------------------------------------------------------------


def test_lrw_prepare(lrw):
    src, out, report = lrw
    assert report.prepared == 8 and report.clips == 8
    failed = [(f.source, f.reason) for f in report.failed]
    assert failed == [("ABOUT/train/ABOUT_00003.mp4", "corrupt")]
    corpus, records = fmt.read_corpus(out)
    assert corpus["labels"] == ["ABOUT", "BOARD"] and report.split_sources == {"lrw": "folders"}
    assert [len(fmt.select(records, "lrw", p)) for p in fmt.PARTS] == [4, 2, 2]
    record = next(r for r in records if r["id"] == "BOARD/val/BOARD_00001")
    assert record["label"] == 1 and record["word"] == "BOARD" and record["frames"] == 29
    video, wav, meta = fmt.read_clip(out / record["path"])
    assert video.shape == (29, 152, 152) and wav.shape == (18560,) and meta["duration"] == 0.53
    face = cv2.cvtColor(lrw_face(1)[0], cv2.COLOR_RGB2GRAY)[87:239, 51:203]
    assert np.abs(video[0].astype(int) - face).mean() < 2.0  # the fixed box, no alignment
    spectrum = np.abs(np.fft.rfft(wav))
    assert abs(np.argmax(spectrum) * SR / wav.size - 500) < 5


def test_prepared_format_is_loadable_without_pickle(lrw):
    _, out, _ = lrw
    path = next((out / "clips").rglob("*.npz"))
    with np.load(path, allow_pickle=False) as data:
        assert set(data.files) == {"video", "audio", "meta"} and data["audio"].dtype == np.int16


# --- options and the command line -----------------------------------------------------------


def test_options_validation(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    with pytest.raises(InputError, match="does not exist"):
        PrepareOptions("grid", tmp_path / "nope", tmp_path / "out")
    with pytest.raises(InputError, match="did you mean 'grid'"):
        PrepareOptions("gird", src, tmp_path / "out")
    with pytest.raises(InputError, match="inside the source"):
        PrepareOptions("grid", src, src / "out")
    with pytest.raises(InputError, match="GRID only"):
        PrepareOptions("lrw", src, tmp_path / "out", splits=tmp_path)
    with pytest.raises(InputError, match="workers"):
        PrepareOptions("grid", src, tmp_path / "out", workers=0)
    with pytest.raises(InputError, match="no GRID videos"):
        prepare_corpus(PrepareOptions("grid", src, tmp_path / "out"))
    with pytest.raises(InputError, match="no LRW videos"):
        prepare_corpus(PrepareOptions("lrw", src, tmp_path / "out"))


def test_cli_errors_exit_1(tmp_path):
    runner = CliRunner()
    empty = tmp_path / "empty"
    empty.mkdir()
    for args, message in ((["grid", str(tmp_path / "missing")], "does not exist"),
                          (["grid", str(empty)], "no GRID videos"),
                          (["lrw", str(empty)], "no LRW videos"),
                          (["mp4", str(empty)], "unknown layout")):
        result = runner.invoke(app, ["data", "prepare", *args, "-o", str(tmp_path / "out")])
        assert result.exit_code == 1, result.output
        assert message in str(result.exception)
    result = runner.invoke(app, ["data", "prepare", "grid", str(empty)])
    assert result.exit_code == 2  # usage error: -o is required


def test_cli_prepares_and_summarises(lrw, tmp_path):
    src, _, _ = lrw
    out = tmp_path / "cli_out"
    result = CliRunner().invoke(app, ["data", "prepare", "lrw", str(src), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "PASSED" in result.output and "8 prepared, 0 already done, 1 failed" in result.output
    assert "ABOUT_00003.mp4: corrupt" in result.output and (out / "index.jsonl").is_file()


# --- videos without landmark files: the --crop auto tracker ---------------------------------


def test_a_video_without_landmarks_is_aligned_by_the_streams_tracker(tmp_path):
    """One crop for training and streaming: prepare of a GRID video without a landmark file
    stores the mouth regions that ``--crop auto`` cuts from the same decoded frames."""
    from lipx import video as vid
    from lipx.runtime.roi import make_roi

    photo = pytest.importorskip("skimage.data").astronaut()
    pytest.importorskip("onnxruntime")
    images = []
    for i in range(30):  # the face turns and drifts across a 640x480 frame
        m = cv2.getRotationMatrix2D((256, 256), -10 + i, 0.8)
        m[:, 2] += [40 + 2 * i, -40]
        images.append(cv2.warpAffine(photo, m, (640, 480), borderMode=cv2.BORDER_REFLECT))
    src = tmp_path / "src"
    write_av(src / "s1" / "video" / "own.mp4", np.stack(images), tone(30), vcodec="mpeg4",
             acodec="aac")
    grid_clip(src, "s1", "lm")  # beside one with landmarks: aligned by them as before
    result = CliRunner().invoke(app, ["data", "prepare", "grid", str(src), "-o",
                                      str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    corpus, records = fmt.read_corpus(tmp_path / "out")
    by_id = {r["id"]: r for r in records}
    region, _, meta = fmt.read_clip(tmp_path / "out" / by_id["s1/own"]["path"])
    assert meta["aligned_by"] == "tracker" and region.shape == (30, 152, 152)
    assert fmt.read_clip(tmp_path / "out" / by_id["s1/lm"]["path"])[2]["aligned_by"] == "landmarks"
    tracker = make_roi("auto")
    streamed = np.stack([tracker(frame).face256 for _, frame in vid.iter_frames(
        src / "s1" / "video" / "own.mp4")])
    np.testing.assert_array_equal(region, vid.mouth_region(streamed, vid.VideoSpec(), 8))


def test_a_video_where_the_tracker_finds_no_face_is_skipped(tmp_path):
    pytest.importorskip("onnxruntime")
    src = tmp_path / "src"
    grid_clip(src, "s1", "noface", landmark_dir=None)  # a disk on grey: no face
    from functools import partial

    from lipx.runtime.roi import make_roi

    report = prepare_corpus(PrepareOptions("grid", src, tmp_path / "out",
                                           tracker=partial(make_roi, "auto")))
    assert [(f.source, f.reason) for f in report.failed] == [("s1/video/noface.mpg", "no_face")]
