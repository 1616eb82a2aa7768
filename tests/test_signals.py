"""SIGTERM and SIGHUP end a command as Ctrl-C does: the real CLI in a subprocess, stopped mid-run,
leaves the same valid files (stream: WAV and MP4; train: last.lipx)."""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from pathlib import Path

import av
import pytest
import soundfile as sf
from cli_process import Lipx
from stream_fixtures import FPS, write_video

from lipx.signals import stop_signals_interrupt


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


@pytest.fixture(scope="module")
def long_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """10 s of video: played in real time, it is still running when the signal comes."""
    return write_video(tmp_path_factory.mktemp("signals") / "long.mp4", 10 * FPS)


@pytest.mark.parametrize("signum", [
    pytest.param(signal.SIGTERM, id="SIGTERM"),
    pytest.param(signal.SIGHUP, id="SIGHUP", marks=pytest.mark.slow),  # the same path again
])
def test_a_stopped_stream_leaves_a_valid_wav_and_mp4(packages, long_video, tmp_path, signum):
    wav, mp4 = tmp_path / "s.wav", tmp_path / "s.mp4"
    lipx = Lipx("stream", long_video, "--model", packages["lip2speech"], "--realtime",
                "--wav", wav, "--save", mp4)
    partial = wav.with_name(wav.name + ".partial")
    lipx.wait_until(lambda: _size(partial) > 44 + 16000)  # header + 0.5 s of 16 kHz 16-bit
    code = lipx.stop(signum)
    assert code == 0, lipx.stderr  # as after Ctrl-C: the run ends, interrupted, with its summary
    assert "PASSED | interrupted, lip2speech" in lipx.stderr
    assert "Traceback" not in lipx.stderr
    info = sf.info(wav)
    assert 0.5 <= info.duration < 10.0 and info.samplerate == 16000
    with av.open(str(mp4)) as container:
        assert container.streams.audio and container.streams.video
        assert 0 < sum(1 for _ in container.decode(video=0)) < 10 * FPS
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.mp4", "s.wav"]  # no .partial left


@pytest.mark.slow
def test_a_stopped_training_run_saves_last(lrw_corpus, tmp_path):
    from lipx.models.checkpoint import load_checkpoint

    out = tmp_path / "run"
    lipx = Lipx("train", "lipreading", lrw_corpus, "-o", out, "--preset", "tiny", "--steps",
                "100000", "--batch-size", "2", "--set", "threads=1", "--set", "val_every=2",
                "--set", "val_batches=1")
    lipx.wait_until(lambda: "step 2 (" in lipx.stderr)  # in the loop, validated once
    code = lipx.stop(signal.SIGTERM)
    assert code == 130, lipx.stderr  # as after Ctrl-C
    saved = re.search(r"interrupted at step (\d+); saved (\S+)", lipx.stderr)
    assert saved and Path(saved[2]) == out / "last.lipx", lipx.stderr
    ckpt = load_checkpoint(out / "last.lipx")
    assert ckpt.task == "lipreading" and ckpt.training["progress"]["step"] == int(saved[1]) >= 2


def test_the_first_stop_signal_interrupts_later_ones_are_ignored_and_handlers_restored():
    before = signal.getsignal(signal.SIGTERM)
    with stop_signals_interrupt():
        with pytest.raises(KeyboardInterrupt, match="SIGTERM"):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler runs before this returns
        os.kill(os.getpid(), signal.SIGHUP)  # while winding down: ignored
        os.kill(os.getpid(), signal.SIGTERM)
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_stop_signal_ignored_at_start_stays_ignored():
    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)  # as under nohup
    try:
        with stop_signals_interrupt():
            assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
            os.kill(os.getpid(), signal.SIGHUP)
    finally:
        signal.signal(signal.SIGHUP, previous)


def test_outside_the_main_thread_nothing_is_installed():
    seen: list[object] = []

    def run() -> None:
        with stop_signals_interrupt():
            seen.append(signal.getsignal(signal.SIGTERM))

    before = signal.getsignal(signal.SIGTERM)
    worker = threading.Thread(target=run)
    worker.start()
    worker.join()
    assert seen == [before]
