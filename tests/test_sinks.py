"""Sinks: WAV, subtitles, JSON lines, console, annotated MP4 (also after interruptions)."""

from __future__ import annotations

import importlib.util
import io
import json

import av
import numpy as np
import pytest
import soundfile as sf

from lipx.errors import BackendUnavailableError, InputError, LipxError
from lipx.runtime.events import AudioChunk, FrameEvent, WordEvent
from lipx.runtime.mp4 import AnnotatedVideoSink
from lipx.runtime.roi import RoiResult
from lipx.runtime.sinks import (
    ConsoleWords,
    JsonLines,
    LiveAudio,
    Sink,
    SinkGroup,
    SubtitleSink,
    WavSink,
)
from lipx.runtime.sources import Frame

SR = 16000
WORDS = [WordEvent("ABOUT", 0.5, 1.04, 0.91), WordEvent("HOUSE", 62.25, 62.8, 0.5)]


def tone(seconds: float, amp: float = 0.5, hz: float = 440.0) -> np.ndarray:
    t = np.arange(round(seconds * SR)) / SR
    return (amp * np.sin(2 * np.pi * hz * t)).astype(np.float32)


class Boom(Exception):
    pass


# -- WAV ----------------------------------------------------------------------------------------


def test_wav_is_valid_and_complete_after_an_exception(tmp_path):
    path = tmp_path / "speech.wav"
    with pytest.raises(Boom), WavSink(path) as sink:
        for k in range(3):
            sink.write(AudioChunk(0.25 * k, tone(0.25)))
        assert not path.exists()  # written to NAME.partial until closed
        raise Boom
    assert path.exists() and not (tmp_path / "speech.wav.partial").exists()
    info = sf.info(path)
    assert (info.samplerate, info.channels, info.subtype) == (SR, 1, "PCM_16")
    audio, _ = sf.read(path, dtype="float32")
    assert len(audio) == 3 * SR // 4
    expected = np.concatenate([tone(0.25)] * 3)
    assert np.abs(audio - expected).max() < 1e-4


def test_wav_places_chunks_by_time_and_clips(tmp_path):
    path = tmp_path / "gaps.wav"
    with WavSink(path) as sink:
        sink.write(AudioChunk(0.0, np.full(1600, 0.25, np.float32)))
        sink.write(AudioChunk(0.2, np.full(1600, 2.0, np.float32)))  # after a 0.1 s gap, clipped
        sink.write(AudioChunk(0.25, np.full(1600, -0.5, np.float32)))  # overlaps by 800 samples
    audio, _ = sf.read(path, dtype="float32")
    assert len(audio) == round(0.35 * SR) and sink.duration_s == pytest.approx(0.35)
    assert np.allclose(audio[:1600], 0.25, atol=1e-4) and np.all(audio[1600:3200] == 0)
    assert np.allclose(audio[3200:4800], 1.0, atol=1e-4)
    assert np.allclose(audio[4800:], -0.5, atol=1e-4)
    with pytest.raises(InputError, match="22050 Hz"):
        WavSink(tmp_path / "x.wav").write(AudioChunk(0.0, tone(0.1), sample_rate=22050))


def test_writing_into_a_missing_folder_is_an_input_error(tmp_path):
    for sink in (
        WavSink(tmp_path / "no" / "a.wav"),
        SubtitleSink(tmp_path / "no" / "a.srt"),
        AnnotatedVideoSink(tmp_path / "no" / "a.mp4"),
    ):
        with pytest.raises(InputError, match="does not exist"):
            sink.open()
        sink.close()  # closing a sink that never opened is fine


# -- text sinks -----------------------------------------------------------------------------------


def test_srt_format(tmp_path):
    path = tmp_path / "words.srt"
    with SubtitleSink(path) as sink:
        for w in WORDS:
            sink.write(w)
        sink.write(WordEvent("A", 70.0, 70.0, 0.9))  # zero-length: extended to 0.2 s
        assert path.read_text().count("-->") == 3  # complete cues on disk while streaming
    assert path.read_text() == (
        "1\n00:00:00,500 --> 00:00:01,040\nABOUT\n\n"
        "2\n00:01:02,250 --> 00:01:02,800\nHOUSE\n\n"
        "3\n00:01:10,000 --> 00:01:10,200\nA\n\n"
    )


def test_vtt_format(tmp_path):
    path = tmp_path / "words.vtt"
    with SubtitleSink(path) as sink:
        assert path.read_text() == "WEBVTT\n\n"  # valid even before the first word
        for w in WORDS:
            sink.write(w)
    assert path.read_text() == (
        "WEBVTT\n\n00:00:00.500 --> 00:00:01.040\nABOUT\n\n00:01:02.250 --> 00:01:02.800\nHOUSE\n\n"
    )
    with pytest.raises(InputError, match="srt or vtt"):
        SubtitleSink(tmp_path / "words.txt")


def test_jsonl_lines_parse(tmp_path, capsys):
    path = tmp_path / "events.jsonl"
    with JsonLines(path, audio=True) as sink:
        sink.write(WORDS[0])
        sink.write(AudioChunk(0.5, tone(0.1)))
        sink.write(FrameEvent(Frame(0, 0.0, np.zeros((4, 4, 3), np.uint8))))  # not logged
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert lines[0] == {
        "type": "word",
        "word": "ABOUT",
        "start_s": 0.5,
        "end_s": 1.04,
        "confidence": 0.91,
    }
    assert lines[1]["type"] == "audio" and lines[1]["samples"] == 1600
    assert lines[1]["end_s"] == pytest.approx(0.6)
    assert lines[1]["rms"] == pytest.approx(0.3536, abs=1e-3)
    assert len(lines) == 2
    with JsonLines("-") as sink:  # stdout, words only by default
        sink.write(WORDS[1])
        sink.write(AudioChunk(0.0, tone(0.1)))
    assert [json.loads(x)["word"] for x in capsys.readouterr().out.splitlines()] == ["HOUSE"]


def test_console_words():
    out = io.StringIO()
    with ConsoleWords(out) as sink:
        sink.write(WORDS[0])
    with ConsoleWords(out, timestamps=False) as sink:
        sink.write(WORDS[1])
    assert out.getvalue() == "[    0.50 -     1.04] ABOUT (0.91)\nHOUSE\n"


class Failing(Sink):
    def __init__(self, log):
        super().__init__()
        self.log = log

    def _close(self):
        self.log.append("failing closed")
        raise OSError("disk full")


def test_sink_group_closes_every_sink_even_when_one_fails(tmp_path):
    log: list[str] = []
    wav = WavSink(tmp_path / "a.wav")
    group = SinkGroup([Failing(log), wav])
    with pytest.raises(OSError, match="disk full"), group:
        group.write(AudioChunk(0.0, tone(0.1)))
    assert log == ["failing closed"] and sf.info(tmp_path / "a.wav").frames == 1600
    group.close()  # idempotent
    with pytest.raises(LipxError, match="closed"):
        wav.write(AudioChunk(0.0, tone(0.1)))


@pytest.mark.skipif(
    importlib.util.find_spec("sounddevice") is not None, reason="sounddevice is installed here"
)
def test_live_audio_without_sounddevice_names_the_package():
    with pytest.raises(BackendUnavailableError, match="pip install sounddevice"):
        LiveAudio().open()


# -- annotated MP4 --------------------------------------------------------------------------------


def frames(n: int, size=(96, 72)):
    rng = np.random.default_rng(0)
    base = rng.integers(60, 120, (size[1], size[0], 3), dtype=np.uint8)
    box = (20.0, 30.0, 60.0, 60.0)
    for i in range(n):
        roi = RoiResult(np.zeros((256, 256, 3), np.uint8), box, True)
        yield FrameEvent(Frame(i, i / 25, base), roi)


def stream_durations(path):
    with av.open(str(path)) as c:
        v, a = c.streams.video[0], c.streams.audio[0]
        durations = {s.type: float(s.duration * s.time_base) for s in (v, a)}
        video = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    with av.open(str(path)) as c:
        audio = np.concatenate([f.to_ndarray().reshape(-1) for f in c.decode(audio=0)])
    return durations, video, audio


def write_clip(sink, n_frames, interrupt_at=None, interrupt=KeyboardInterrupt):
    """Frames at 25 fps; speech arrives late, in 0.2 s chunks, 0.32-0.52 s after its frames."""
    with sink:
        for event in frames(n_frames):
            sink.write(event)
            i = event.frame.index
            if i == interrupt_at:
                raise interrupt
            if i % 5 == 4 and i >= 12:
                start = (i - 12) / 25 - 0.04
                sink.write(AudioChunk(max(start, 0.0), tone(0.2, amp=0.8 if i < 30 else 0.0)))


def test_annotated_mp4_has_video_and_audio_of_the_right_length(tmp_path):
    path = tmp_path / "out.mp4"
    sink = AnnotatedVideoSink(path, fps=25, delay_s=0.6)  # audio arrives up to 0.52 s late
    write_clip(sink, 50)
    durations, video, audio = stream_durations(path)
    assert len(video) == 50 and durations["video"] == pytest.approx(2.0, abs=0.041)
    assert durations["audio"] == pytest.approx(2.0, abs=0.07)  # padded to the video's length
    assert len(audio) >= 1.9 * SR
    # the mouth box is drawn green; the level meter is up while speech plays, down in silence
    top_edge = video[10][30, 25:55].astype(int)
    assert top_edge[:, 1].mean() > 180 and top_edge[:, 0].mean() < 100
    meter = np.array([f[20:, -6:-2].mean() for f in video])
    assert meter[2:20].min() > meter[22:].max() + 40  # speech until 0.84 s, then silence


@pytest.mark.parametrize("interrupt", [KeyboardInterrupt, Boom])
def test_annotated_mp4_is_valid_after_an_interruption(tmp_path, interrupt):
    path = tmp_path / "cut.mp4"
    with pytest.raises(interrupt):  # Ctrl-C, or an error, inside the with-block
        write_clip(AnnotatedVideoSink(path, fps=25, delay_s=0.4), 50, 29, interrupt)
    assert not (tmp_path / "cut.mp4.partial").exists()
    durations, video, _ = stream_durations(path)
    assert len(video) == 30 and durations["video"] == pytest.approx(1.2, abs=0.041)
    assert durations["audio"] == pytest.approx(1.2, abs=0.07)


def test_annotated_mp4_odd_size_and_captions(tmp_path):
    path = tmp_path / "odd.mp4"
    with AnnotatedVideoSink(path, fps=25, audio=False, meter=False, caption_hold_s=0.2) as sink:
        sink.write(WordEvent("HELLO", 0.0, 0.4, 0.9))
        for event in frames(20, size=(97, 73)):
            sink.write(event)
    with av.open(str(path)) as c:
        assert not c.streams.audio
        video = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(video) == 20 and video[0].shape == (72, 96, 3)

    def whitest(image):  # brightest pixel of the caption area, by its darkest channel
        return image[72 - 25 :, :].min(axis=2).max()

    assert whitest(video[2]) > 220  # white caption text while the word is current
    assert whitest(video[19]) < 160  # gone 0.2 s after the word ended (0.76 > 0.6 s)
