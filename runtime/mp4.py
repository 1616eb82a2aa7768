"""``--save out.mp4``: the input video annotated, with the generated speech as its audio track.

Each source frame is drawn on (the mouth box; the current word as a caption and/or an audio
level meter) and encoded with H.264 (``libx264``; ``mpeg4`` when the FFmpeg build lacks it).
Audio chunks arrive asynchronously and later than their frames; they are placed on the stream
clock by their ``start_s`` (gaps become silence) and encoded as AAC with sample-exact
timestamps, so picture and sound line up whatever the arrival order. Words and audio arrive
after the frames they describe (the model's look-ahead): ``delay_s`` holds frames back that long
before drawing, so captions and the meter land on the right frames.

The file is written to ``NAME.partial`` and renamed at close; closing after an error or Ctrl-C
flushes the encoders and writes the MP4 index, so the file always plays. At close the audio
track is padded with silence to the video's length.
"""

from __future__ import annotations

import collections
import logging
import os
import types
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, cast

import numpy as np

from lipx.audio import SAMPLE_RATE
from lipx.errors import InputError
from lipx.runtime.events import AudioChunk, FrameEvent, WordEvent
from lipx.runtime.sinks import AudioTimeline, Sink
from lipx.video import FPS

if TYPE_CHECKING:
    from av.audio.stream import AudioStream
    from av.container import OutputContainer
    from av.video.stream import VideoStream

log = logging.getLogger(__name__)

AAC_FRAME = 1024
"""Samples per AAC frame."""
BOX_RGB = (0, 255, 0)
HELD_BOX_RGB = (255, 200, 0)
METER_RGB = (0, 220, 255)


def draw_box(
    image: np.ndarray,
    box: tuple[float, float, float, float],
    color: tuple[int, int, int],
    thickness: int = 2,
) -> None:
    """Draw a rectangle outline in place on an (H, W, 3) uint8 image (clipped to the image)."""
    h, w = image.shape[:2]
    x1, y1, x2, y2 = (round(v) for v in box)
    x1, x2 = sorted((min(max(x1, 0), w - 1), min(max(x2, 0), w - 1)))
    y1, y2 = sorted((min(max(y1, 0), h - 1), min(max(y2, 0), h - 1)))
    t = thickness
    image[y1 : y1 + t, x1 : x2 + 1] = color
    image[max(y2 - t + 1, 0) : y2 + 1, x1 : x2 + 1] = color
    image[y1 : y2 + 1, x1 : x1 + t] = color
    image[y1 : y2 + 1, max(x2 - t + 1, 0) : x2 + 1] = color


def draw_meter(image: np.ndarray, level_db: float, floor_db: float = -60.0, width: int = 8) -> None:
    """Draw a vertical level bar at the right edge in place (0 dBFS fills the height)."""
    h, w = image.shape[:2]
    fill = int(round(h * min(max((level_db - floor_db) / -floor_db, 0.0), 1.0)))
    image[:, w - width :] //= 2
    if fill:
        image[h - fill :, w - width :] = METER_RGB


class AnnotatedVideoSink(Sink):
    """Annotated MP4: input frames + mouth box + caption/meter, and the speech as AAC audio.

    Args:
        path: the ``.mp4`` to write.
        fps: the frames' rate (``Frame.index`` counts ticks at this rate).
        audio: add an audio track (the generated speech; silence where none arrived).
        sample_rate: rate of the audio chunks.
        caption: draw the current word (needs OpenCV for text; skipped with a warning without).
        meter: draw an audio level meter.
        delay_s: hold frames back this long so late words and audio are drawn on time.
        caption_hold_s: keep showing a word this long after its span ends.
        codec: video encoder; default ``libx264`` if available, else ``mpeg4``.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        fps: float = FPS,
        *,
        audio: bool = True,
        sample_rate: int = SAMPLE_RATE,
        caption: bool = True,
        meter: bool = True,
        delay_s: float = 0.0,
        caption_hold_s: float = 1.0,
        codec: str | None = None,
    ):
        super().__init__()
        self.path, self.fps = Path(path), fps
        self.rate = Fraction(fps).limit_denominator(1001)
        self.audio, self.caption, self.meter = audio, caption, meter
        self.delay_s, self.caption_hold_s, self.codec = delay_s, caption_hold_s, codec
        self.timeline = AudioTimeline(sample_rate)
        self._tmp = self.path.with_name(self.path.name + ".partial")
        self._container: OutputContainer | None = None
        self._vstream: VideoStream | None = None
        self._astream: AudioStream | None = None
        self._pending: collections.deque[FrameEvent] = collections.deque()
        self._words: list[WordEvent] = []
        self._levels: list[float] = []  # dBFS per frame period of audio
        self._level_acc = np.zeros(0, np.float32)
        self._fifo = np.zeros(0, np.float32)
        self._audio_pts = 0
        self._last_index = -1
        self.frames_written = 0
        self._cv2: types.ModuleType | None = None
        self._warned_text = False

    def _open(self) -> None:
        if not self.path.parent.is_dir():
            raise InputError(f"cannot write {self.path}: folder {self.path.parent} does not exist")

    # -- events --------------------------------------------------------------------------------

    def on_frame(self, event: FrameEvent) -> None:
        if event.frame.index <= self._last_index:
            return  # a frame must move forward in time; a repeat of a tick is ignored
        self._last_index = event.frame.index
        self._pending.append(event)
        while self._pending and event.frame.pts_s - self._pending[0].frame.pts_s >= self.delay_s:
            self._encode_frame(self._pending.popleft())

    def on_word(self, event: WordEvent) -> None:
        self._words.append(event)

    def on_audio(self, event: AudioChunk) -> None:
        samples = self.timeline.place(event)
        self._track_levels(samples)
        if self.audio:
            self._fifo = np.concatenate([self._fifo, samples])
            if self._container is not None:
                self._encode_audio(final=False)

    # -- drawing -------------------------------------------------------------------------------

    def _track_levels(self, samples: np.ndarray) -> None:
        per_frame = self.timeline.sample_rate / self.fps
        self._level_acc = np.concatenate([self._level_acc, samples])
        n = int(len(self._level_acc) // per_frame)
        if n:
            used = round(n * per_frame)
            blocks = np.array_split(self._level_acc[:used].astype(np.float64), n)
            self._levels += [10 * np.log10(np.mean(b * b) + 1e-10) for b in blocks]
            self._level_acc = self._level_acc[used:]

    def _word_at(self, t: float) -> str | None:
        for word in reversed(self._words):
            if word.start_s <= t <= word.end_s + self.caption_hold_s:
                return word.word
        return None

    def _draw(self, event: FrameEvent, image: np.ndarray) -> np.ndarray:
        image = image.copy()
        roi = event.roi
        if roi is not None and roi.box is not None:
            draw_box(image, roi.box, HELD_BOX_RGB if roi.held else BOX_RGB)
        if self.meter:
            k = event.frame.index
            draw_meter(image, self._levels[k] if k < len(self._levels) else -120.0)
        if self.caption and (word := self._word_at(event.frame.pts_s)):
            self._put_text(image, word)
        return image

    def _put_text(self, image: np.ndarray, text: str) -> None:
        if self._cv2 is None:
            try:
                import cv2
            except ImportError:
                if not self._warned_text:
                    log.warning(
                        "captions need OpenCV (pip install opencv-python-headless); "
                        "writing the video without them"
                    )
                    self._warned_text = True
                return
            self._cv2 = cv2
        cv2 = self._cv2
        h = image.shape[0]
        scale = max(h / 400, 0.4)
        org = (8, h - int(12 * scale))
        for color, thick in (((0, 0, 0), 4), ((255, 255, 255), 1)):
            cv2.putText(
                image,
                text,
                org,
                cv2.FONT_HERSHEY_SIMPLEX,
                scale,
                color,
                max(1, round(thick * scale)),
                cv2.LINE_AA,
            )

    # -- encoding ------------------------------------------------------------------------------

    def _start(self, width: int, height: int) -> None:
        import av

        codec = self.codec or ("libx264" if "libx264" in av.codecs_available else "mpeg4")
        self._container = av.open(str(self._tmp), "w", format="mp4")
        options = {"crf": "23", "preset": "veryfast"} if codec == "libx264" else {}
        # a codec named at run time: the stubs cannot tell it is a video one
        v = cast("VideoStream", self._container.add_stream(codec, rate=self.rate, options=options))
        v.width, v.height, v.pix_fmt = width, height, "yuv420p"
        self._vstream = v
        if self.audio:
            self._astream = self._container.add_stream(
                "aac", rate=self.timeline.sample_rate, layout="mono"
            )
        log.debug("writing %s (%s %dx%d @ %s fps)", self.path, codec, width, height, self.rate)

    def _encode_frame(self, event: FrameEvent) -> None:
        import av

        image = event.frame.image
        if self._container is None:
            h, w = image.shape[:2]
            self._start(w - w % 2, h - h % 2)
        container, v = self._video_stream()
        image = self._draw(event, image)
        if image.shape[:2] != (v.height, v.width):
            if image.shape[0] >= v.height and image.shape[1] >= v.width:
                image = image[: v.height, : v.width]
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
        if (frame.height, frame.width) != (v.height, v.width):
            frame = frame.reformat(width=v.width, height=v.height)
        frame.pts, frame.time_base = event.frame.index, 1 / self.rate
        for packet in v.encode(frame):
            container.mux(packet)
        self.frames_written += 1
        if self.audio:
            self._encode_audio(final=False)

    def _encode_audio(self, final: bool) -> None:
        import av

        (container, a), sr = self._audio_stream(), self.timeline.sample_rate
        while len(self._fifo) >= AAC_FRAME or (final and len(self._fifo)):
            chunk, self._fifo = self._fifo[:AAC_FRAME], self._fifo[AAC_FRAME:]
            frame = av.AudioFrame.from_ndarray(chunk[None, :], format="fltp", layout="mono")
            frame.sample_rate, frame.pts, frame.time_base = sr, self._audio_pts, Fraction(1, sr)
            self._audio_pts += len(chunk)
            for packet in a.encode(frame):
                container.mux(packet)

    def _video_stream(self) -> tuple[OutputContainer, VideoStream]:
        """The container and its video stream (``_start`` opens both)."""
        if self._container is None or self._vstream is None:
            raise RuntimeError(f"{self.path}: the video encoder is not started")
        return self._container, self._vstream

    def _audio_stream(self) -> tuple[OutputContainer, AudioStream]:
        """The container and its audio stream (``_start`` opens both when ``audio``)."""
        if self._container is None or self._astream is None:
            raise RuntimeError(f"{self.path}: the audio encoder is not started")
        return self._container, self._astream

    def _close(self) -> None:
        finished = False
        try:
            while self._pending:
                self._encode_frame(self._pending.popleft())
            if self._container is None:
                log.warning("no frames reached %s; nothing written", self.path)
                return
            if self.audio:
                video_end = round((self._last_index + 1) / self.fps * self.timeline.sample_rate)
                if self.timeline.written < video_end:
                    self._fifo = np.concatenate(
                        [self._fifo, np.zeros(video_end - self.timeline.written, np.float32)]
                    )
                    self.timeline.written = video_end
                self._encode_audio(final=True)
                container, a = self._audio_stream()
                for packet in a.encode(None):
                    container.mux(packet)
            container, v = self._video_stream()
            for packet in v.encode(None):
                container.mux(packet)
            finished = True
        finally:
            if self._container is not None:
                self._container.close()
                if finished:  # a failed finish leaves NAME.partial for inspection
                    os.replace(self._tmp, self.path)

    @property
    def duration_s(self) -> float:
        """Video duration written so far (seconds)."""
        return (self._last_index + 1) / self.fps
