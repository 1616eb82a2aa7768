"""``lipx crop``: the model's-eye view and the per-frame mouth box lines, through the real CLI."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import av
import numpy as np
import pytest
from cli_process import Lipx
from stream_fixtures import write_video

from lipx.runtime.faces import apply

cv2 = pytest.importorskip("cv2")
pytest.importorskip("onnxruntime")
KEYS = ["frame", "t", "found", "held", "corners"]


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def video_frames(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


@pytest.fixture(scope="module")
def astronaut_video(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    """12 frames of the astronaut turned 15 degrees in a 640x480 frame, and its placement."""
    photo = pytest.importorskip("skimage.data").astronaut()
    m = np.asarray(cv2.getRotationMatrix2D((256, 256), 15, 0.9), np.float64)
    m[:, 2] += [64, -16]
    frame = cv2.warpAffine(photo, m, (640, 480), borderMode=cv2.BORDER_REFLECT)
    path = tmp_path_factory.mktemp("crop") / "astronaut.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=25, options={"qscale": "2"})
        stream.width, stream.height, stream.pix_fmt = 640, 480, "yuv420p"
        for _ in range(12):
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path, m


def test_crop_auto_writes_the_view_and_the_box_of_every_frame(astronaut_video, tmp_path, run_cli):
    from lipx.runtime.roi import make_roi

    video, m = astronaut_video
    out, boxes = tmp_path / "view.mp4", tmp_path / "boxes.jsonl"
    code, _, err = run_cli("crop", video, "-o", out, "--jsonl", boxes)
    assert code == 0, err
    assert "PASSED | 12 frames, face in 12 (0 held), 1 searched" in err
    records = lines(boxes)
    assert [r["frame"] for r in records] == list(range(12))
    assert all(list(r) == KEYS and r["found"] and not r["held"] for r in records)
    assert records[3]["t"] == pytest.approx(0.12)
    # the box follows the face: the upright photograph's box, turned and moved with it
    upright = make_roi("auto")
    photo = pytest.importorskip("skimage.data").astronaut()
    truth = apply(m, [upright(photo) for _ in range(5)][-1].corners)
    corners = np.array(records[-1]["corners"])
    assert np.abs(corners - truth).max() < 4.0  # source px; the box is ~180 px wide here
    assert corners[1, 1] < corners[0, 1]  # turned anticlockwise: the top-right corner is higher
    frames = video_frames(out)
    assert len(frames) == 12 and frames[0].shape == (480, 640 + 480, 3)
    # the right half is the model's crop: grey, and of the mouth (not the frame's corner)
    right = frames[-1][:, 640:].astype(int)
    assert np.abs(right[..., 0] - right[..., 1]).max() < 12
    assert right.std() > 10


def test_crop_lrw_gives_the_fixed_box_and_a_faceless_source_gives_null_corners(
        face_video, tmp_path, run_cli):
    boxes = tmp_path / "boxes.jsonl"
    code, _, err = run_cli("crop", face_video, "--crop", "lrw", "--jsonl", boxes,
                           "--max-frames", "5")
    assert code == 0, err
    records = lines(boxes)
    assert len(records) == 5 and all(r["found"] for r in records)
    assert records[0]["corners"] == [[59, 95], [195, 95], [195, 231], [59, 231]]
    code, _, err = run_cli("crop", "lavfi:testsrc=size=320x240:rate=25", "--jsonl", boxes,
                           "--max-frames", "4")
    assert code == 0, err
    assert [(r["found"], r["held"], r["corners"]) for r in lines(boxes)] == [(False, False,
                                                                              None)] * 4


@pytest.mark.parametrize(("args", "message"), [
    (["webcam:7", "-o", "{tmp}/v.mp4"], "cannot open webcam 7"),
    (["{tmp}/missing.mp4", "-o", "{tmp}/v.mp4"], "video file not found"),
    (["{video}"], "nothing to write: give -o OUT.mp4 and/or --jsonl BOXES"),
    (["{video}", "-o", "{tmp}/no/such/v.mp4"], "folder {tmp}/no/such does not exist"),
    (["{video}", "--jsonl", "{tmp}/b.jsonl", "--crop", "haar"], "unknown --crop 'haar'"),
    (["{video}", "--jsonl", "{tmp}/b.jsonl", "--max-frames", "0"], "--max-frames must be >= 1"),
])
def test_bad_input_is_one_line_and_leaves_nothing(face_video, tmp_path, run_cli, args, message):
    fill = {"tmp": tmp_path, "video": face_video}
    code, _, err = run_cli("crop", *(a.format(**fill) for a in args))
    assert code == 1
    assert "error: " in err and message.format(**fill) in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_a_stopped_crop_keeps_its_lines_and_a_playable_video(tmp_path):
    long = write_video(tmp_path / "long.mp4", 1500, size=320)  # 60 s: still running when stopped
    out, boxes = tmp_path / "view.mp4", tmp_path / "boxes.jsonl"
    lipx = Lipx("crop", long, "-o", out, "--jsonl", boxes)
    lipx.wait_until(lambda: boxes.exists() and boxes.read_text().count("\n") >= 25)
    code = lipx.stop(signal.SIGTERM)
    assert code == 0, lipx.stderr
    assert "PASSED | interrupted, " in lipx.stderr and "Traceback" not in lipx.stderr
    records = lines(boxes)
    assert 25 <= len(records) < 1500
    assert 0 < len(video_frames(out)) <= len(records)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["boxes.jsonl", "long.mp4", "view.mp4"]
