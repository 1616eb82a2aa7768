"""The stream loop end to end on tiny exported packages: the feature cache is exact, words and
speech come out through every sink, Ctrl-C and errors leave valid files, a whole `lipx stream`
run never imports torch, and bad input gives one clear line."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf
from stream_fixtures import FakePlan, install_fake_tensorrt, onnx_plan

from lipx.benchmarks.cache import compare_cache
from lipx.errors import InputError
from lipx.files import file_sha256
from lipx.package import EngineInfo, Manifest
from lipx.runtime.events import FrameEvent, WordEvent
from lipx.runtime.mp4 import AnnotatedVideoSink
from lipx.runtime.ort_runner import OrtRunner
from lipx.runtime.roi import FixedLRWBox
from lipx.runtime.sinks import WavSink
from lipx.runtime.sources import Frame, Source, open_source
from lipx.runtime.stream import Outputs, Pipeline, StreamOptions, make_sinks, stream
from lipx.video import mouth_crop_frame

FPS = 25  # of the test packages and video
OUTPUT = {"lipreading": "logits", "lip2speech": "linear"}


def clip_of(video: Path, manifest: Manifest, frames: int | None = None) -> np.ndarray:
    """The model input the stream sees: (T, 112, 112) float32 mouth crops."""
    roi = FixedLRWBox()
    with open_source(str(video), manifest.video.fps, max_frames=frames) as source:
        return np.stack([mouth_crop_frame(roi(f.image).face256, manifest.video) for f in source])


def noise_for(graph, frames: int) -> dict[str, np.ndarray]:
    return {t.name: np.zeros((1, t.shape[1], t.shape[2], frames), np.float32)
            for t in graph.inputs[1:]}


@contextlib.contextmanager
def session_of(pkg: Path, source: str, opts: StreamOptions, window_hook=None) -> Iterator:
    """One session of a pipeline opened for it (closed together)."""
    with Pipeline(pkg, opts.engine_options()) as pipeline, \
            pipeline.session(source, opts, window_hook) as session:
        yield session


def run_recording(pkg: Path, video, opts: StreamOptions, sinks=()) -> tuple[list, object]:
    windows: list = []
    stats = stream(pkg, video, opts, sinks, window_hook=lambda w, out: windows.append((w, out)))
    return windows, stats


@pytest.mark.parametrize("task", ["lipreading", "lip2speech"])
@pytest.mark.parametrize("chunk", [1, 3])
def test_cached_windows_equal_the_split_graphs_on_the_whole_clip(packages, face_video, task,
                                                                  chunk):
    """Each streamed window's output is the backend on the whole clip's per-frame features
    (the front-end run once over the zero-padded clip, as the whole model does)."""
    pkg = packages[task]
    m = Manifest.read(pkg)
    windows, stats = run_recording(pkg, str(face_video), StreamOptions(chunk=chunk))
    clip = clip_of(face_video, m)
    padded = np.concatenate([np.zeros((2, 112, 112), np.float32), clip,
                             np.zeros((2, 112, 112), np.float32)])
    with OrtRunner(pkg / "frontend.onnx") as front, OrtRunner(pkg / "backend.onnx") as back:
        features = front.infer({"video": padded[None, None]})["features"][0]
        window, stride = m.schedule.window, m.schedule.stride
        ends = [*range(window, len(clip) + 1, stride)]
        ends += [len(clip)] if ends[-1] != len(clip) else []
        assert [(w.start, w.stop) for w, _ in windows] == [(e - window, e) for e in ends]
        for w, out in windows:
            want = back.infer({"features": features[None, w.start:w.stop],
                               **noise_for(m.graph("backend"), w.stop - w.start)})
            np.testing.assert_allclose(out[OUTPUT[task]], want[OUTPUT[task]], atol=2e-5)
    assert stats.frames_out == len(clip) == 50 and not stats.run.interrupted
    assert stats.run.backend_calls == len(windows)


def test_a_padded_stream_repeats_its_first_and_last_frames(packages, face_video):
    """``pad`` frames of the first crop go before the stream and of the last after it: the
    windows cover them (their indices count them), the head's frame indices do not."""
    pkg, pad = packages["lipreading"], 4
    m = Manifest.read(pkg)
    pushed: list[tuple[int, int]] = []
    with session_of(pkg, str(face_video), StreamOptions(pad=pad),
                    window_hook=lambda w, out: windows.append((w, out))) as streamer:
        windows: list = []
        real_push = streamer.head.push
        streamer.head.push = lambda out, a, b: pushed.append((a, b)) or real_push(out, a, b)
        list(streamer.events())
    clip = clip_of(face_video, m)
    padded = np.concatenate([np.repeat(clip[:1], pad, 0), clip, np.repeat(clip[-1:], pad, 0)])
    zeros = np.zeros((2, 112, 112), np.float32)
    with OrtRunner(pkg / "frontend.onnx") as front:
        features = front.infer({"video": np.concatenate([zeros, padded, zeros])[None, None]}
                               )["features"][0]
    assert windows[0][0].start == 0 and windows[-1][0].stop == len(clip) + 2 * pad
    for w, _ in windows:
        np.testing.assert_allclose(w.data, features[w.start:w.stop], atol=2e-5)
    assert pushed[0] == (-pad, windows[0][0].stop - pad)
    assert pushed[-1][1] == len(clip) + pad


@pytest.mark.parametrize("task", ["lipreading", "lip2speech"])
@pytest.mark.parametrize("frames", [5, None])
def test_a_stream_of_one_window_equals_the_whole_model(packages, face_video, task, frames):
    """A stream of at most one window is one window padded like the whole model: same output,
    with and without the cache."""
    pkg = packages[task]
    m = Manifest.read(pkg)
    frames = frames or m.schedule.window
    clip = clip_of(face_video, m, frames)
    with OrtRunner(pkg / "model.onnx") as model:
        want = model.infer({"video": clip[None, None], **noise_for(m.graph("model"), frames)})
    for cache in (True, False):
        windows, _ = run_recording(pkg, str(face_video),
                                   StreamOptions(max_frames=frames, cache=cache))
        assert [(w.start, w.stop) for w, _ in windows] == [(0, frames)]
        np.testing.assert_allclose(windows[0][1][OUTPUT[task]], want[OUTPUT[task]], atol=2e-5)


def test_without_the_cache_each_window_is_the_whole_model_on_its_frames(packages, face_video):
    pkg = packages["lipreading"]
    windows, stats = run_recording(pkg, str(face_video), StreamOptions(cache=False))
    clip = clip_of(face_video, Manifest.read(pkg))
    with OrtRunner(pkg / "model.onnx") as model:
        for w, out in windows:
            want = model.infer({"video": clip[None, None, w.start:w.stop]})["logits"]
            np.testing.assert_allclose(out["logits"], want, atol=2e-5)
    assert not stats.run.cache and stats.stages["frontend"].count == 0
    # the wait for a second agreeing window (stride 3), but no front-end look-ahead
    assert stats.algorithmic["min_s"] == pytest.approx(3 / FPS)


def test_lipreading_words_reach_console_jsonl_srt_vtt_and_stats(packages, face_video, tmp_path,
                                                               run_cli):
    code, out, err = run_cli(
        "stream", face_video, "--model", packages["lipreading"], "--threshold", "0",
        "--agreement", "1", "--jsonl", tmp_path / "w.jsonl", "--srt", tmp_path / "w.srt",
        "--vtt", tmp_path / "w.vtt", "--stats", tmp_path / "stats.json")
    assert code == 0, err
    lines = [json.loads(line) for line in (tmp_path / "w.jsonl").read_text().splitlines()]
    assert lines and all(x["type"] == "word" and x["word"].startswith("WORD") for x in lines)
    printed = [line for line in out.splitlines() if line.strip()]
    assert len(printed) == len(lines) and lines[0]["word"] in printed[0]
    assert (tmp_path / "w.srt").read_text().count(" --> ") == len(lines)
    assert (tmp_path / "w.vtt").read_text().startswith("WEBVTT")
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert stats["frames_out"] == 50 and stats["run"]["words"] == len(lines)
    assert {"decode", "crop", "frontend", "backend", "head", "sinks"} <= set(stats["stages"])
    assert "p99" in err and "algorithmic latency" in err
    assert f"PASSED | lipreading on onnx/cpu: 50 frames, {len(lines)} word" in err


def test_lip2speech_wav_and_mp4_cover_the_stream(packages, face_video, tmp_path, run_cli):
    code, _, err = run_cli("stream", face_video, "--model", packages["lip2speech"],
                           "--wav", tmp_path / "s.wav", "--save", tmp_path / "s.mp4")
    assert code == 0, err
    info = sf.info(tmp_path / "s.wav")
    assert info.samplerate == 16000 and info.duration == pytest.approx(50 / FPS, abs=1e-3)
    assert np.abs(sf.read(tmp_path / "s.wav")[0]).max() > 0
    with av.open(str(tmp_path / "s.mp4")) as container:
        assert container.streams.audio and container.streams.video
        assert sum(1 for _ in container.decode(video=0)) == 50
    assert "2.0 s of speech" in err


def test_dropped_frames_move_the_audio_and_are_counted(packages, face_video, tmp_path):
    class Dropping(Source):
        """A live-like source: 5 frames are dropped after frame 20."""

        def __init__(self, inner: Source):
            self.inner, self.info, self.fps, self.stats = inner, inner.info, inner.fps, inner.stats

        def __iter__(self) -> Iterator[Frame]:
            for f in self.inner:
                if 20 < f.index < 26:
                    continue
                yield Frame(f.index, f.pts_s, f.image, 5 if f.index == 26 else 0)

        def close(self) -> None:
            self.inner.close()

    source = Dropping(open_source(str(face_video), FPS))
    stats = stream(packages["lip2speech"], source, StreamOptions(),
                   [WavSink(tmp_path / "d.wav")])
    assert (stats.frames_out, stats.frames_dropped, stats.frames_in) == (45, 5, 50)
    assert sf.info(tmp_path / "d.wav").duration == pytest.approx(50 / FPS, abs=1e-3)
    wav = sf.read(tmp_path / "d.wav")[0]
    assert np.abs(wav[21 * 640 + 100:26 * 640 - 100]).max() < 1e-4 < np.abs(wav[:21 * 640]).max()


class StopAfter(Source):
    """Wraps a source; raises ``error`` instead of frame ``n`` (Ctrl-C or a broken stream)."""

    def __init__(self, inner: Source, n: int, error: BaseException):
        self.inner, self.n, self.error = inner, n, error
        self.info, self.fps, self.stats = inner.info, inner.fps, inner.stats
        self.closed = False

    def __iter__(self) -> Iterator[Frame]:
        for f in self.inner:
            if f.index == self.n:
                raise self.error
            yield f

    def close(self) -> None:
        self.closed = True
        self.inner.close()


@pytest.mark.parametrize("error", [KeyboardInterrupt(), InputError("stream broke")])
def test_interrupted_or_broken_streams_leave_valid_wav_and_mp4(packages, face_video, tmp_path,
                                                                 error):
    source = StopAfter(open_source(str(face_video), FPS), 30, error)
    sinks = [WavSink(tmp_path / "i.wav"), AnnotatedVideoSink(tmp_path / "i.mp4", FPS)]
    if isinstance(error, KeyboardInterrupt):
        stats = stream(packages["lip2speech"], source, StreamOptions(), sinks)
        assert stats.run.interrupted and stats.frames_out == 29
    else:
        with pytest.raises(InputError, match="stream broke"):
            stream(packages["lip2speech"], source, StreamOptions(), sinks)
    assert source.closed
    info = sf.info(tmp_path / "i.wav")  # renamed from .partial with a finished header
    assert info.frames > 0 and info.duration <= 30 / FPS
    with av.open(str(tmp_path / "i.mp4")) as container:
        assert sum(1 for _ in container.decode(video=0)) == 30
        assert container.streams.audio
    assert sorted(p.name for p in tmp_path.iterdir()) == ["i.mp4", "i.wav"]


def test_a_whole_cli_stream_run_never_imports_torch(packages, face_video, tmp_path):
    driver = (
        "import json, sys\n"
        "from lipx import cli\n"
        f"sys.argv = ['lipx', 'stream', {str(face_video)!r}, '--model', "
        f"{str(packages['lip2speech'])!r}, '--wav', {str(tmp_path / 'a.wav')!r}, '--save', "
        f"{str(tmp_path / 'a.mp4')!r}, '--max-frames', '20']\n"
        "try:\n    cli.main()\n    code = 0\n"
        "except SystemExit as e:\n    code = e.code\n"
        "print(json.dumps({'code': code, 'torch': 'torch' in sys.modules, "
        "'ort': 'onnxruntime' in sys.modules}))\n"
    )
    done = subprocess.run([sys.executable, "-c", driver], capture_output=True, text=True,
                          timeout=120)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"code": 0, "torch": False, "ort": True}, done.stderr
    assert sf.info(tmp_path / "a.wav").duration == pytest.approx(20 / FPS, abs=1e-3)


def test_faces_not_found_are_counted_and_shown(packages, face_video):
    lines: list[str] = []
    stats = stream(packages["lipreading"], str(face_video),
                   StreamOptions(crop="auto", max_frames=20, status_every_s=0.0),
                   on_status=lines.append)
    assert stats.run.frames_without_face == 20  # random texture: no face anywhere
    assert len(lines) >= 10 and "no face" in lines[-1] and lines[-1].startswith("frame ")


def test_compare_cache_reports_both_modes(packages, face_video):
    result = compare_cache(packages["lipreading"], str(face_video),
                           StreamOptions(max_frames=20, threads=1), repeats=1)
    assert result["frames"] == 20 and result["cache_ms"] > 0 and result["no_cache_ms"] > 0
    assert np.isfinite(result["ratio"])


def test_webcam_without_a_camera_is_one_clear_line(packages, run_cli):
    code, _, err = run_cli("stream", "webcam:7", "--model", packages["lipreading"])
    assert code == 1 and "cannot open webcam" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_a_package_pointing_outside_itself_or_tampered_with_is_refused(packages, face_video,
                                                                        tmp_path, run_cli):
    pkg = tmp_path / "pkg"
    shutil.copytree(packages["lipreading"], pkg)
    (pkg / "frontend.onnx").write_bytes((pkg / "frontend.onnx").read_bytes() + b"\0")
    code, _, err = run_cli("stream", face_video, "--model", pkg)
    assert code == 1 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "frontend.onnx does not match the sha256 its manifest records" in err
    data = json.loads((pkg / "manifest.json").read_text())
    data["graphs"][1]["file"] = "../../../../etc/passwd"
    (pkg / "manifest.json").write_text(json.dumps(data))
    code, _, err = run_cli("stream", face_video, "--model", pkg)
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert "'../../../../etc/passwd' points outside the package" in err


@pytest.mark.parametrize("args, message", [
    (["--model", "{missing}"], "is not a lipx model package"),
    (["--model", "{lr}", "--device", "gpu"], "choose from: cpu, cuda, tensorrt"),
    (["--model", "{lr}", "--engine", "trt"], "no TensorRT plan"),
    (["--model", "{lr}", "--wav", "{tmp}/x.wav"], "--wav needs a lip2speech model"),
    (["--model", "{l2s}", "--srt", "{tmp}/x.srt"], "--srt needs a lipreading model"),
    (["--model", "{lr}", "--stride", "12"], "--stride 12 is larger than the window (9 frames)"),
    (["--model", "{lr}", "--no-cache", "--chunk", "2"], "no meaning with --no-cache"),
    (["--model", "{lr}", "--window", "1000000000"], "--window must be in 1..1024 frames"),
    (["--model", "{lr}", "--precision", "int8"], "no int8 frontend graph"),
])
def test_bad_options_are_one_clear_line(packages, face_video, tmp_path, run_cli, args, message):
    subs = {"missing": tmp_path / "nope", "lr": packages["lipreading"],
            "l2s": packages["lip2speech"], "tmp": tmp_path}
    code, _, err = run_cli("stream", face_video, *[a.format(**subs) for a in args])
    assert code == 1 and message in err and "Traceback" not in err, err
    assert not (tmp_path / "x.wav").exists() and not (tmp_path / "x.srt").exists()


def test_the_engine_option_and_its_old_spelling(packages, face_video, run_cli):
    code, _, err = run_cli("stream", face_video, "--model", packages["lipreading"], "--engine",
                           "tvm")
    assert code == 2 and "'tvm' is not one of" in " ".join(err.split())  # a usage error
    code, _, err = run_cli("stream", face_video, "--model", packages["lipreading"], "--backend",
                           "trt")
    assert code == 2 and "No such option" in " ".join(err.split())  # no hidden old spelling


def test_options_are_validated_once():
    with pytest.raises(InputError, match="--chunk 10 is larger than --window 9"):
        StreamOptions(window=9, chunk=10)
    with pytest.raises(InputError, match="--threshold must be in"):
        StreamOptions(threshold=1.5)
    with pytest.raises(InputError, match="unknown --crop 'face'"):
        StreamOptions(crop="face")
    with pytest.raises(InputError, match=r"CUDA graphs are for TensorRT plans \(--engine trt\)"):
        StreamOptions(cuda_graph=True)
    with pytest.raises(InputError, match="--lookahead must be >= 0"):
        StreamOptions(lookahead=-1)


def test_sinks_follow_the_task(packages, tmp_path):
    lip = Manifest.read(packages["lipreading"])
    sinks = make_sinks(lip, StreamOptions(), Outputs(jsonl="-", srt=tmp_path / "a.srt"))
    assert [type(s).__name__ for s in sinks] == ["JsonLines", "SubtitleSink"]  # no console words
    speech = Manifest.read(packages["lip2speech"])
    sinks = make_sinks(speech, StreamOptions(), Outputs(wav=tmp_path / "a.wav",
                                                        save=tmp_path / "a.mp4"))
    assert [type(s).__name__ for s in sinks] == ["WavSink", "AnnotatedVideoSink"]
    assert 0 < sinks[1].delay_s < 1.0


def with_plans(pkg: Path, out: Path) -> tuple[Path, dict[bytes, FakePlan]]:
    """A copy of ``pkg`` with TensorRT "plans" (profiles as ``lipx export`` builds them) that the
    fake TensorRT runs with onnxruntime; returns the copy and the fake plans."""
    from lipx.export.trt import derive_dims, profile_for

    shutil.copytree(pkg, out)
    m = Manifest.read(out)
    w, stride = m.schedule.window, m.schedule.stride
    engines, plans = [], {}
    for role in ("frontend", "backend", "model"):
        graph = m.graph(role)
        profile = profile_for(graph, derive_dims(role, w, stride, 8, 1, 3 * w))
        data = f"plan of {out / graph.file}".encode()
        (out / f"{role}.plan").write_bytes(data)
        plans[data] = onnx_plan(out / graph.file, profile)
        engines.append(EngineInfo(role, f"{role}.plan", graph.file, "fp16", (profile,), "10.3.0",
                                  "NVIDIA L4", "8.9", sha256=file_sha256(out / f"{role}.plan")))
    dataclasses.replace(m, engines=tuple(engines)).write(out)
    return out, plans


@pytest.mark.parametrize("task, cache", [("lipreading", True), ("lipreading", False),
                                         ("lip2speech", True)])
def test_trt_backend_streams_like_onnx(packages, face_video, tmp_path, monkeypatch, task, cache):
    """The TensorRT path (plans, profiles, device buffers, CUDA graphs) on a stand-in TensorRT
    that runs each plan's ONNX graph: the same windows and outputs as onnxruntime."""
    pkg, plans = with_plans(packages[task], tmp_path / "pkg")
    trt, cudart = install_fake_tensorrt(monkeypatch, plans)
    want, _ = run_recording(pkg, str(face_video), StreamOptions(cache=cache))
    got, stats = run_recording(pkg, str(face_video),
                               StreamOptions(engine="trt", cuda_graph=True, cache=cache))
    assert [(w.start, w.stop) for w, _ in got] == [(w.start, w.stop) for w, _ in want]
    for (_, a), (_, b) in zip(got, want, strict=True):
        for name in b:
            np.testing.assert_allclose(a[name], b[name], atol=1e-6)
    assert (stats.run.engine, stats.run.device) == ("trt", "cuda")
    assert 0 < cudart.launches < trt.executed  # CUDA graphs were captured and replayed
    assert cudart.device == {} and cudart.streams == {}  # and everything released


def test_trt_backend_checks_the_plans_profiles_and_names_the_missing_extra(packages, face_video,
                                                                            tmp_path, run_cli):
    pkg, _ = with_plans(packages["lipreading"], tmp_path / "pkg")
    code, _, err = run_cli("stream", face_video, "--model", pkg, "--engine", "trt",
                           "--window", "12")
    assert code == 1 and "--window gives 12 frames but backend.plan was built for 1..9" in err
    code, _, err = run_cli("stream", face_video, "--model", pkg, "--engine", "trt")
    # a full-TensorRT plan: "needs tensorrt or tensorrt_rtx" without either, "TensorRT is not
    # installed" where only TensorRT-RTX is; both name the extra
    assert code == 1 and "pip install 'lipx[gpu]'" in err and "Traceback" not in err


def test_realtime_paces_a_file(packages, face_video):
    stats = stream(packages["lipreading"], str(face_video),
                   StreamOptions(realtime=True, max_frames=15))
    assert stats.frames_out + stats.frames_dropped >= 15
    assert stats.wall_s >= 13 / FPS  # paced: about 15 frame periods, not as fast as possible
    assert "decode" not in {k for k, v in stats.stages.items() if v.count == 0}


def _paced_run(pkg, video, pipeline: bool | None):
    """A real-time paced stream whose backend takes 0.1 s every 4 frames (RTF ~0.6), reading
    every word it can (threshold 0, agreement 1)."""
    def slow_backend(window, outputs):
        time.sleep(0.1)

    opts = StreamOptions(realtime=True, stride=4, pipeline=pipeline, threshold=0.0, agreement=1)
    with session_of(pkg, str(video), opts, window_hook=slow_backend) as streamer:
        words = [e for e in streamer.events() if isinstance(e, WordEvent)]
        return streamer.stats(), words


def test_a_pipelined_paced_stream_reads_the_words_of_a_default_one_each_after_its_end(
        packages, face_video):
    """How many frames each loop drops depends on the machine's load, so it is not asserted
    here: the deterministic test below proves that a pipelined loop reads on while a window
    computes (what keeps it from dropping frames)."""
    piped, piped_words = _paced_run(packages["lipreading"], face_video, pipeline=True)
    assert piped.frames_out + piped.frames_dropped == 50
    # the same words, every one stamped with when it was emitted, after its end
    assert [w.word for w in piped_words] == [w.word for w in _paced_run(
        packages["lipreading"], face_video, pipeline=None)[1]]
    assert piped_words and all(w.emitted_s is not None and w.wait_s > 0 for w in piped_words)
    assert piped.emission is not None and piped.emission.count == len(piped_words)


def test_pipelined_the_loop_reads_on_while_a_window_computes(packages, face_video):
    """Deterministic: each window's backend waits until the loop has read 6 frames past the
    window's end, which only a loop that does not wait for the backend can do (inline, the wait
    would time out)."""
    import threading

    read, moved = [0], threading.Condition()
    waited = []

    def backend(window, outputs):
        with moved:
            ok = moved.wait_for(lambda: read[0] >= min(window.stop + 6, 50), timeout=10)
        waited.append(ok)

    opts = StreamOptions(pipeline=True, stride=3)
    with session_of(packages["lipreading"], str(face_video), opts, window_hook=backend) as s:
        for event in s.events():
            if isinstance(event, FrameEvent):
                with moved:
                    read[0] += 1
                    moved.notify_all()
    assert waited and all(waited)
