"""Sinks: where the stream's results go (console, JSON lines, WAV, subtitles, live audio).

The stream loop writes three kinds of event (:mod:`lipx.runtime.events`) to every sink:
``FrameEvent`` (a source frame and its mouth box), ``WordEvent`` (a lipread word with its time
span) and ``AudioChunk`` (generated speech, positioned on the stream clock). Each sink picks the
events it cares about.

A sink is a context manager: ``open`` (implicit on first write), ``write(event)``, ``close``.
``close`` is idempotent and is meant to run on errors and Ctrl-C too (``with`` does that), so
files are always valid afterwards: WAV goes to ``NAME.partial`` and is renamed at close, with its
header finalised; subtitles and JSON lines are appended one complete entry at a time.
The annotated MP4 sink lives in ``lipx.runtime.mp4``.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import sys
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TextIO

import numpy as np

from lipx.audio import SAMPLE_RATE
from lipx.errors import BackendUnavailableError, InputError, LipxError
from lipx.runtime.events import AudioChunk, Event, FrameEvent, WordEvent

if TYPE_CHECKING:
    import sounddevice
    import soundfile

log = logging.getLogger(__name__)


class Sink:
    """Receives stream events; subclasses override ``_open``, ``_close`` and the ``on_*`` hooks."""

    def __init__(self) -> None:
        self._state = "new"  # new -> open -> closed

    def open(self) -> None:
        """Prepare the output (idempotent; ``write`` opens on first use)."""
        if self._state == "new":
            self._open()
            self._state = "open"
        elif self._state == "closed":
            raise LipxError(f"{type(self).__name__} is closed; create a new sink")

    def write(self, event: Event) -> None:
        """Hand one event to the sink."""
        self.open()
        if isinstance(event, FrameEvent):
            self.on_frame(event)
        elif isinstance(event, WordEvent):
            self.on_word(event)
        elif isinstance(event, AudioChunk):
            self.on_audio(event)
        else:
            raise TypeError(f"unknown event type {type(event).__name__}")

    def close(self) -> None:
        """Finish the output so it is valid (idempotent; also after errors)."""
        if self._state == "closed":
            return
        was_open = self._state == "open"
        self._state = "closed"
        if was_open:
            self._close()

    def __enter__(self) -> Sink:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _open(self) -> None:
        pass

    def _close(self) -> None:
        pass

    def on_frame(self, event: FrameEvent) -> None:
        pass

    def on_word(self, event: WordEvent) -> None:
        pass

    def on_audio(self, event: AudioChunk) -> None:
        pass


class SinkGroup(Sink):
    """Several sinks as one: opened in order, written in order, all closed even if one fails."""

    def __init__(self, sinks: Iterable[Sink]):
        super().__init__()
        self.sinks = list(sinks)

    def _open(self) -> None:
        try:
            for sink in self.sinks:
                sink.open()
        except BaseException:
            self._close()
            raise

    def write(self, event: Event) -> None:
        self.open()
        for sink in self.sinks:
            sink.write(event)

    def _close(self) -> None:
        errors: list[BaseException] = []
        for sink in self.sinks:
            try:
                sink.close()
            except Exception as e:  # close the rest first, then report
                errors.append(e)
        if errors:
            raise errors[0]


class TextOut(Protocol):
    """Where printed words go: a text stream, or anything with ``write`` and ``flush``."""

    def write(self, text: str, /) -> object: ...

    def flush(self) -> object: ...


class ConsoleWords(Sink):
    """Prints each word as it is read (``stream``: stdout by default)."""

    def __init__(self, stream: TextOut | None = None, timestamps: bool = True):
        super().__init__()
        self.stream, self.timestamps = stream, timestamps

    def on_word(self, event: WordEvent) -> None:
        out = self.stream or sys.stdout
        if self.timestamps:
            out.write(
                f"[{event.start_s:8.2f} - {event.end_s:8.2f}] {event.word} "
                f"({event.confidence:.2f})\n"
            )
        else:
            out.write(f"{event.word}\n")
        out.flush()


def _open_text(path: str | os.PathLike[str]) -> TextIO:
    path = Path(path)
    if not path.parent.is_dir():
        raise InputError(f"cannot write {path}: folder {path.parent} does not exist")
    return path.open("w", encoding="utf-8", newline="\n")


class JsonLines(Sink):
    """``--jsonl``: one JSON object per line and event, flushed as written.

    Word events: ``{"type": "word", "word", "start_s", "end_s", "confidence"}``; with
    ``audio=True`` also ``{"type": "audio", "start_s", "end_s", "samples", "rms"}`` per chunk.
    ``target`` is a path, ``-`` for stdout, or an open text stream.
    """

    def __init__(self, target: str | os.PathLike[str] | TextIO, audio: bool = False):
        super().__init__()
        self.target, self.audio = target, audio
        self._out: TextIO | None = None
        self._owned = False

    def _open(self) -> None:
        if isinstance(self.target, (str, os.PathLike)) and str(self.target) != "-":
            self._out, self._owned = _open_text(self.target), True
        else:
            target = self.target
            self._out = sys.stdout if str(target) == "-" else target  # type: ignore[assignment]

    def _emit(self, obj: dict[str, object]) -> None:
        assert self._out is not None
        self._out.write(json.dumps(obj) + "\n")
        self._out.flush()

    def on_word(self, event: WordEvent) -> None:
        self._emit(event.to_dict())

    def on_audio(self, event: AudioChunk) -> None:
        if self.audio:
            self._emit(event.to_dict())

    def _close(self) -> None:
        if self._owned and self._out is not None:
            self._out.close()


def _timestamp(seconds: float, sep: str) -> str:
    ms = max(0, round(seconds * 1000))
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


class SubtitleSink(Sink):
    """``--srt``/``--vtt``: one cue per word, appended as it comes (the file is valid throughout).

    Args:
        path: output file; ``.srt`` or ``.vtt`` picks the format unless ``fmt`` is given.
        fmt: ``srt`` or ``vtt``.
        min_duration_s: cues shorter than this are extended (players skip zero-length cues).
    """

    def __init__(
        self, path: str | os.PathLike[str], fmt: str | None = None, min_duration_s: float = 0.2
    ):
        super().__init__()
        self.path = Path(path)
        self.fmt = (fmt or self.path.suffix.lstrip(".")).lower()
        if self.fmt not in ("srt", "vtt"):
            raise InputError(f"subtitle format must be srt or vtt, got {self.fmt!r} for {path}")
        self.min_duration_s = min_duration_s
        self._out: TextIO | None = None
        self.cues = 0

    def _open(self) -> None:
        self._out = _open_text(self.path)
        if self.fmt == "vtt":
            self._out.write("WEBVTT\n\n")
            self._out.flush()

    def on_word(self, event: WordEvent) -> None:
        assert self._out is not None
        self.cues += 1
        sep = "," if self.fmt == "srt" else "."
        end = max(event.end_s, event.start_s + self.min_duration_s)
        head = f"{self.cues}\n" if self.fmt == "srt" else ""
        self._out.write(
            f"{head}{_timestamp(event.start_s, sep)} --> {_timestamp(end, sep)}\n{event.word}\n\n"
        )
        self._out.flush()

    def _close(self) -> None:
        if self._out is not None:
            self._out.close()


class AudioTimeline:
    """Places audio chunks on a sample timeline: gaps become silence, overlaps are trimmed."""

    def __init__(self, sample_rate: int = SAMPLE_RATE):
        self.sample_rate = sample_rate
        self.written = 0
        """Samples placed so far."""

    def place(self, chunk: AudioChunk) -> np.ndarray:
        """The (M,) float32 samples to append for ``chunk``, clipped to [-1, 1]."""
        if chunk.sample_rate != self.sample_rate:
            raise InputError(
                f"audio chunk at {chunk.sample_rate} Hz, sink expects {self.sample_rate} Hz"
            )
        samples = np.asarray(chunk.samples, dtype=np.float32).reshape(-1)
        offset = round(chunk.start_s * self.sample_rate)
        if offset > self.written:
            samples = np.concatenate([np.zeros(offset - self.written, np.float32), samples])
        elif offset < self.written:
            samples = samples[self.written - offset :]
        self.written += len(samples)
        return np.clip(samples, -1.0, 1.0)


class WavSink(Sink):
    """``--wav``: 16-bit PCM WAV, written as chunks arrive to ``NAME.partial``, renamed at close.

    Chunks are placed by their ``start_s`` (gaps are silence), so the file lines up with the
    video. Closing (also after an error) finalises the header, so the file is always valid.
    """

    def __init__(self, path: str | os.PathLike[str], sample_rate: int = SAMPLE_RATE):
        super().__init__()
        self.path = Path(path)
        self.timeline = AudioTimeline(sample_rate)
        self._file: soundfile.SoundFile | None = None
        self._tmp = self.path.with_name(self.path.name + ".partial")

    def _open(self) -> None:
        import soundfile as sf

        if not self.path.parent.is_dir():
            raise InputError(f"cannot write {self.path}: folder {self.path.parent} does not exist")
        self._file = sf.SoundFile(
            self._tmp,
            "w",
            samplerate=self.timeline.sample_rate,
            channels=1,
            subtype="PCM_16",
            format="WAV",
        )

    def on_audio(self, event: AudioChunk) -> None:
        samples = self.timeline.place(event)
        if len(samples):
            if self._file is None:
                raise LipxError(f"{type(self).__name__} was written before it was opened")
            self._file.write(samples)
            self._file.flush()

    def _close(self) -> None:
        if self._file is not None:
            self._file.close()
            os.replace(self._tmp, self.path)

    @property
    def duration_s(self) -> float:
        return self.timeline.written / self.timeline.sample_rate


class LiveAudio(Sink):
    """Plays generated speech on the default (or given) output device (needs ``sounddevice``).

    Audio is queued and played by the device's callback; silence fills underruns, and when the
    queue holds more than ``max_buffer_s`` the oldest audio is dropped so latency cannot grow.
    """

    def __init__(
        self,
        sample_rate: int = SAMPLE_RATE,
        device: int | str | None = None,
        max_buffer_s: float = 1.0,
    ):
        super().__init__()
        self.sample_rate, self.device, self.max_buffer_s = sample_rate, device, max_buffer_s
        self._queue: collections.deque[np.ndarray] = collections.deque()
        self._queued = 0
        self._lock = threading.Lock()
        self._stream: sounddevice.OutputStream | None = None
        self.underruns = 0
        self.dropped_samples = 0

    def _open(self) -> None:
        try:
            import sounddevice as sd
        except (ImportError, OSError) as e:  # OSError: the PortAudio library is missing
            raise BackendUnavailableError(
                f"live audio needs sounddevice and PortAudio: pip install sounddevice ({e})"
            ) from e
        try:
            sd.query_devices(self.device, kind="output")
            stream = sd.OutputStream(
                samplerate=self.sample_rate,
                channels=1,
                dtype="float32",
                device=self.device,
                callback=self._callback,
                latency="low",
            )
            self._stream = stream
            stream.start()
        except (sd.PortAudioError, ValueError) as e:
            raise BackendUnavailableError(
                f"no audio output device for live playback ({e}); "
                "drop the live-audio option or write --wav"
            ) from e

    def on_audio(self, event: AudioChunk) -> None:
        samples = np.clip(np.asarray(event.samples, np.float32).reshape(-1), -1, 1)
        with self._lock:
            self._queue.append(samples)
            self._queued += len(samples)
            limit = int(self.max_buffer_s * self.sample_rate)
            while self._queued > limit and len(self._queue) > 1:
                old = self._queue.popleft()
                self._queued -= len(old)
                self.dropped_samples += len(old)

    def _callback(self, outdata: np.ndarray, frames: int, time: object, status: object) -> None:
        out = outdata[:, 0]
        filled = 0
        with self._lock:
            while filled < frames and self._queue:
                head = self._queue[0]
                take = min(frames - filled, len(head))
                out[filled : filled + take] = head[:take]
                filled += take
                self._queued -= take
                if take == len(head):
                    self._queue.popleft()
                else:
                    self._queue[0] = head[take:]
        if filled < frames:
            out[filled:] = 0
            self.underruns += 1

    def _close(self) -> None:
        if self._stream is not None:
            self._stream.stop()
            self._stream.close()
