"""Frame sources: lavfi, files, image folders, webcams (absent here), resampling, live dropping."""

from __future__ import annotations

import glob
import itertools
import sys
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from lipx.errors import InputError
from lipx.runtime.resample import Resampler
from lipx.runtime.sources import ResampledSource, SourceInfo, open_source, source_kind


def write_mp4(
    path: Path, n: int, fps: int, size: tuple[int, int] = (64, 48), faststart: bool = False
) -> Path:
    """n uniform frames, frame i has gray level 8 * i (so decoded frames identify themselves)."""
    options = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), "w", options=options) as c:
        s = c.add_stream("libx264", rate=fps, options={"crf": "10"})
        s.width, s.height, s.pix_fmt = size[0], size[1], "yuv420p"
        for i in range(n):
            frame = av.VideoFrame.from_ndarray(
                np.full((size[1], size[0], 3), 8 * i, np.uint8), format="rgb24"
            )
            frame.pts, frame.time_base = i, Fraction(1, fps)
            for p in s.encode(frame):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def write_png(path: Path, image: np.ndarray) -> None:
    with av.open(str(path), "w", format="image2") as c:
        s = c.add_stream("png")
        s.width, s.height, s.pix_fmt = image.shape[1], image.shape[0], "rgb24"
        for p in s.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
            c.mux(p)
        for p in s.encode():
            c.mux(p)


def level(frame) -> int:
    return round(float(frame.image.mean()) / 8)


# -- resampling -----------------------------------------------------------------------------------


def test_resampler_drops_and_duplicates_by_nearest_timestamp():
    down = Resampler(25)
    placed = [down.push(i / 30) for i in range(30)]
    assert sum(a + b for a, b in placed) == 25 and placed.count((0, 0)) == 5
    assert down.finish(1.0) == 0  # 30 frames at 30 fps fill exactly 25 ticks

    up = Resampler(25)
    assert [up.push(i / 10) for i in range(3)] == [(0, 1), (1, 1), (1, 2)]
    # tick 1 (0.04 s) is nearer frame 0 (0 s), ticks 2, 3 nearer frame 1 (0.1 s), ticks 4, 5
    # nearer frame 2 (0.2 s); at the end the last frame covers its own 0.1 s: ticks 6, 7
    assert up.finish(0.3) == 2 and up.next_tick == 8


def test_resampler_restarts_on_timestamp_jumps():
    r = Resampler(25)
    r.push(0.0)
    r.push(0.04)
    assert r.push(100.0) == (0, 1) and r.next_tick == 3 and r.discontinuities == 1
    assert r.push(0.5) == (0, 1) and r.discontinuities == 2  # backwards


# -- lavfi, files, folders -------------------------------------------------------------------------


def test_lavfi_yields_frames_at_fps_and_size():
    with open_source("lavfi:testsrc=size=96x64:rate=25", fps=25, max_frames=10) as src:
        frames = list(src)
    assert src.info.kind == "lavfi" and src.info.native_fps == 25
    assert (src.info.width, src.info.height) == (96, 64)
    assert [f.index for f in frames] == list(range(10))
    assert [f.pts_s for f in frames] == pytest.approx([i / 25 for i in range(10)])
    assert all(f.image.shape == (64, 96, 3) and f.image.dtype == np.uint8 for f in frames)
    assert all(f.dropped_before == 0 for f in frames)


def test_lavfi_50fps_is_resampled_to_25():
    with open_source("lavfi:testsrc=size=32x32:rate=50:duration=1", fps=25) as src:
        frames = list(src)
    assert len(frames) == 25 and src.stats.decoded == 50 and src.stats.resample_dropped == 25


def test_file_at_30fps_is_resampled_to_25(tmp_path):
    path = write_mp4(tmp_path / "clip30.mp4", n=30, fps=30)
    with open_source(str(path), fps=25) as src:
        frames = list(src)
    assert src.info.kind == "file" and src.info.native_fps == 30 and not src.info.has_audio
    assert [f.index for f in frames] == list(range(25))
    assert [f.pts_s for f in frames] == pytest.approx([k / 25 for k in range(25)])
    # tick k shows the first input frame whose nearest tick is k
    expected = {}
    for i in range(30):
        expected.setdefault(int(np.ceil(i * 25 / 30 - 0.5)), i)
    assert [level(f) for f in frames] == [expected[k] for k in range(25)]


def test_file_at_10fps_is_upsampled_to_25(tmp_path):
    path = write_mp4(tmp_path / "clip10.mp4", n=10, fps=10)
    with open_source(str(path), fps=25) as src:
        frames = list(src)
    assert len(frames) == 25 and src.stats.duplicated == 15
    shown = [level(f) for f in frames]
    assert shown == [int(np.floor(k * 10 / 25 + 0.5)) if k < 24 else 9 for k in range(25)]


def test_realtime_paces_a_file_like_a_live_source():
    start = time.perf_counter()
    with open_source("lavfi:testsrc=size=32x32:rate=25:duration=0.6", realtime=True) as src:
        frames = list(src)
    elapsed = time.perf_counter() - start
    assert src.info.live and len(frames) == 15
    assert elapsed >= 0.8 * 0.56  # the last frame is due at 14 / 25 s


def test_image_folder_in_natural_order(tmp_path):
    for n in (1, 2, 10):
        write_png(tmp_path / f"frame_{n}.png", np.full((24, 32, 3), 8 * n, np.uint8))
    (tmp_path / "notes.txt").write_text("not an image")
    with open_source(str(tmp_path), fps=25) as src:
        frames = list(src)
    assert src.info.kind == "images" and (src.info.width, src.info.height) == (32, 24)
    assert [level(f) for f in frames] == [1, 2, 10]
    with open_source(str(tmp_path), fps=25, image_fps=12.5) as src:
        assert [level(f) for f in src] == [1, 1, 2, 2, 10, 10]


def test_image_folder_errors(tmp_path):
    with pytest.raises(InputError, match="has no .png"):
        open_source(str(tmp_path))
    write_png(tmp_path / "1.png", np.zeros((24, 32, 3), np.uint8))
    write_png(tmp_path / "2.png", np.zeros((20, 32, 3), np.uint8))
    (tmp_path / "3.png").write_bytes(b"garbage")
    with open_source(str(tmp_path)) as src, pytest.raises(InputError, match="2.png.*32x20"):
        list(src)
    (tmp_path / "2.png").unlink()
    with open_source(str(tmp_path)) as src, pytest.raises(InputError, match="3.png"):
        list(src)


# -- errors ---------------------------------------------------------------------------------------


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="v4l2 paths are Linux-only")
@pytest.mark.skipif(bool(glob.glob("/dev/video*")), reason="this machine has a camera")
@pytest.mark.parametrize("spec, n", [("webcam", 0), ("webcam:2", 2)])
def test_missing_webcam_fails_with_one_clear_line(spec, n):
    with pytest.raises(InputError) as err:
        open_source(spec)
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith(f"cannot open webcam {n} (/dev/video{n}): no such device")
    assert "v4l2-ctl --list-devices" in msg and "video file" in msg


def test_missing_garbage_and_truncated_files(tmp_path):
    with pytest.raises(InputError, match="not found: .*nope.mp4"):
        open_source(str(tmp_path / "nope.mp4"))
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(np.random.default_rng(0).bytes(4000))  # seeded: ffmpeg probes some
    # random bytes as a container without streams, so either one-line error names the file
    with pytest.raises(InputError, match=r"(cannot read video .*garbage\.mp4|garbage\.mp4: "
                                         r"has no video stream)"):
        open_source(str(garbage))
    good = write_mp4(tmp_path / "good.mp4", n=30, fps=30, size=(128, 96), faststart=True)
    data = good.read_bytes()
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(InputError, match="truncated.mp4: stream broke.*truncated or corrupt"):
        with open_source(str(truncated)) as src:
            list(src)


def test_source_kinds_and_bad_options(tmp_path):
    assert source_kind("webcam:1") == "webcam" and source_kind("rtsp://cam/1") == "url"
    assert source_kind("lavfi:testsrc") == "lavfi" and source_kind(str(tmp_path)) == "images"
    assert source_kind("clip.mp4") == "file"
    with pytest.raises(InputError, match="bad lavfi graph"):
        open_source("lavfi:nosuchfilter=1")
    with pytest.raises(InputError, match="fps must be > 0"):
        open_source("lavfi:testsrc", fps=0)


# -- live sources: dropping, errors, reconnects ---------------------------------------------


def fake_info(kind: str = "url", live: bool = True, fps: float = 25.0) -> SourceInfo:
    return SourceInfo("fake://cam", kind, fps, 8, 8, False, live)


def fast_frames(n: int, fps: float = 25.0, break_at: int | None = None):
    """Raw frames with timestamps; the image's value is the frame number."""
    for i in range(n):
        if i == break_at:
            raise OSError("connection reset by peer")
        yield i / fps, np.full((8, 8, 3), i % 256, np.uint8)


def test_live_source_drops_stale_frames_for_a_slow_consumer():
    with open_source("lavfi:testsrc=size=32x32:rate=25", realtime=True) as src:
        start = time.perf_counter()
        seen = []
        for frame in src:
            seen.append(frame)
            time.sleep(0.1)  # a consumer at 10 fps behind a 25 fps source
            if len(seen) == 8:
                break
        elapsed = time.perf_counter() - start
    assert src.stats.dropped_stale > 0
    assert sum(f.dropped_before for f in seen) == src.stats.dropped_stale
    for prev, cur in itertools.pairwise(seen):
        assert cur.index - prev.index - 1 == cur.dropped_before
    # the consumer sees recent frames: no backlog builds up (a queue would hand over frame 7;
    # the bound leaves half the elapsed time to a loaded machine)
    assert seen[-1].index >= 0.5 * elapsed * 25 > len(seen)


def test_fake_fast_producer_hands_over_only_the_latest_frame():
    src = ResampledSource(fake_info(), 25.0, lambda: fast_frames(200))
    with src:
        it = iter(src)
        seen = [next(it)]
        time.sleep(0.3)  # the producer runs through all 200 frames meanwhile
        seen += list(it)
    assert len(seen) <= 3 and seen[-1].index == 199 and seen[-1].image[0, 0, 0] == 199
    assert src.stats.dropped_stale == 200 - len(seen) == sum(f.dropped_before for f in seen)


def test_live_stream_that_breaks_raises_in_the_consumer():
    src = ResampledSource(fake_info(), 25.0, lambda: fast_frames(50, break_at=20))
    with src, pytest.raises(InputError, match="broke after 20 frames.*connection reset.*reconnect"):
        for _ in src:
            time.sleep(0.001)


def test_reconnect_resumes_a_broken_stream():
    opened = []

    def reopen():
        opened.append(1)
        return fast_frames(10, break_at=6 if len(opened) == 1 else None)

    src = ResampledSource(fake_info(live=False), 25.0, reopen, reconnect=2)
    frames = list(src)
    assert len(opened) == 2 and src.stats.reconnects == 1
    assert [f.index for f in frames] == list(range(16))  # 6 before the break, 10 after
    assert [int(f.image[0, 0, 0]) for f in frames] == [*range(6), *range(10)]


def test_a_normal_end_is_not_an_error():
    src = ResampledSource(fake_info(), 25.0, lambda: fast_frames(5))
    with src:
        frames = []
        for f in src:
            frames.append(f)
            time.sleep(0.05)
    assert frames[-1].index == 4
