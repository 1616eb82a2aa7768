"""``lipx crop``: what the model sees of a face, frame by frame.

    report = crop_video("clip.mp4", CropOptions(crop="auto"), video="view.mp4",
                        jsonl="boxes.jsonl")

Each source frame (resampled to the model's 25 fps, as ``lipx stream`` reads it) goes through
the same mouth ROI a stream uses (``--crop auto``: the landmark tracker; ``--crop lrw``: the
fixed box) and the same mouth crop (:func:`lipx.video.mouth_crop_frame`). The view video shows
the frame with the mouth box and the tracked points (the 98 WFLW points the box is fitted to)
beside the crop the model receives (112x112 luma, scaled to the frame's height). The JSON lines
give, per frame, ``{"frame", "t", "found", "held", "corners"}``: the mouth box's top-left,
top-right, bottom-right and bottom-left corners in source pixels, null when no face is known.
Frames are on the model's clock (``frame`` counts 25 fps ticks, ``t`` is ``frame / 25``); a
25 fps source gives one line per source frame.

An interruption (Ctrl-C, SIGTERM, SIGHUP through the CLI) ends the run like the end of the
source: the JSON lines written so far stay, and the video is finished so that it plays.
Torch-free.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import numpy as np

from lipx.errors import InputError
from lipx.landmarks import named_framing
from lipx.runtime.events import FrameEvent
from lipx.runtime.mp4 import BOX_RGB, HELD_BOX_RGB, AnnotatedVideoSink
from lipx.runtime.roi import MouthROI, RoiResult, check_crop, make_roi
from lipx.runtime.sinks import Sink
from lipx.runtime.sources import Frame, open_source
from lipx.video import FPS, VideoSpec, denormalise, mouth_crop_frame

log = logging.getLogger(__name__)

POINT_RGB = (255, 64, 64)


@dataclass(frozen=True)
class CropOptions:
    """What ``lipx crop`` does."""

    crop: str = "auto"
    """Mouth ROI: ``auto`` (landmark tracker) or ``lrw`` (fixed box of an aligned face)."""
    device: str = "cpu"
    """onnxruntime device of the face models (``cpu``, ``cuda``, ``tensorrt``)."""
    framing: str = "landmarks"
    """How the model's training faces were framed (:data:`lipx.landmarks.FRAMINGS`; a
    package's ``video.framing``)."""
    max_frames: int | None = None
    """Stop after this many frames (None: until the source ends)."""

    def __post_init__(self) -> None:
        check_crop(self.crop)
        named_framing(self.framing)  # an unknown name fails here, before a camera opens
        if self.max_frames is not None and self.max_frames < 1:
            raise InputError(f"--max-frames must be >= 1, got {self.max_frames}")


@dataclass(frozen=True)
class CropReport:
    """What a ``lipx crop`` run saw."""

    frames: int
    found: int
    """Frames with a face known (tracked now or held)."""
    held: int
    """Frames whose face was held from an earlier one."""
    detections: int | None
    """Frames the face detector searched (``--crop auto``)."""
    interrupted: bool

    def summary(self) -> str:
        searched = "" if self.detections is None else f", {self.detections} searched"
        stopped = "interrupted, " if self.interrupted else ""
        return (f"{stopped}{self.frames} frames, face in {self.found} ({self.held} held)"
                f"{searched}")


def box_record(frame: Frame, roi: RoiResult) -> dict[str, object]:
    """One ``--jsonl`` line: the frame, its time, found/held, the corners (2 decimals)."""
    corners = None
    if roi.found and roi.corners is not None:
        corners = [[round(float(x), 2), round(float(y), 2)] for x, y in roi.corners]
    return {"frame": frame.index, "t": round(frame.pts_s, 4), "found": bool(roi.found),
            "held": bool(roi.held), "corners": corners}


class BoxLines(Sink):
    """``--jsonl``: one :func:`box_record` line per frame, flushed as written."""

    def __init__(self, path: str | os.PathLike[str]):
        super().__init__()
        self.path = Path(path)
        self._out: TextIO | None = None

    def _open(self) -> None:
        self._out = self.path.open("w", encoding="utf-8", newline="\n")

    def on_frame(self, event: FrameEvent) -> None:
        assert self._out is not None and event.roi is not None  # opened by write; a crop's event
        self._out.write(json.dumps(box_record(event.frame, event.roi)) + "\n")
        self._out.flush()

    def _close(self) -> None:
        if self._out is not None:
            self._out.close()


def model_view(face256: np.ndarray, spec: VideoSpec) -> np.ndarray:
    """(size, size) uint8 luma: the mouth crop as the model receives it, before normalising."""
    return denormalise(mouth_crop_frame(face256, spec), spec)


def compose(image: np.ndarray, roi: RoiResult, points: np.ndarray | None,
            spec: VideoSpec) -> np.ndarray:
    """The frame (mouth box, mesh points) beside the model's crop scaled to the frame's height.

    Args:
        image: (H, W, 3) uint8 RGB source frame.
        roi: the ROI's result for it.
        points: (N, 2) tracked points in source pixels, or None.

    Returns:
        (H, W + H, 3) uint8 RGB.
    """
    import cv2

    left = image.copy()
    if points is not None:
        for x, y in np.rint(points).astype(int):
            cv2.circle(left, (int(x), int(y)), 1, POINT_RGB, -1)
    if roi.found and roi.corners is not None:
        colour = HELD_BOX_RGB if roi.held else BOX_RGB
        cv2.polylines(left, [np.rint(roi.corners * 16).astype(np.int32)], True, colour, 2,
                      cv2.LINE_AA, shift=4)
    h = image.shape[0]
    crop = cv2.resize(model_view(roi.face256, spec), (h, h), interpolation=cv2.INTER_NEAREST)
    return np.concatenate([left, np.repeat(crop[:, :, None], 3, axis=2)], axis=1)


def crop_video(source: str, opts: CropOptions, *, video: str | os.PathLike[str] | None = None,
               jsonl: str | os.PathLike[str] | None = None,
               progress: Callable[[int, int | None], None] | None = None,
               roi: MouthROI | None = None) -> CropReport:
    """Run the mouth ROI over ``source``, writing the view video and/or the box lines.

    Args:
        source: a ``lipx stream`` source (file, ``lavfi:``, ``webcam``, URL, image folder).
        opts: the crop mode, device and frame limit.
        video: the side-by-side ``.mp4`` to write (None: none).
        jsonl: the per-frame box lines to write (None: none).
        progress: called as ``progress(frames_done, frames_expected_or_None)`` per frame.
        roi: the ROI to use instead of ``make_roi(opts.crop)`` (tests, a shared tracker).

    Raises:
        InputError: no output was asked for, an output's folder is missing, or the source
            cannot be opened.
    """
    if video is None and jsonl is None:
        raise InputError("nothing to write: give -o OUT.mp4 and/or --jsonl BOXES")
    video_sink = None if video is None else AnnotatedVideoSink(
        video, FPS, audio=False, caption=False, meter=False)
    box_sink = None if jsonl is None else BoxLines(jsonl)
    for path in (video, jsonl):  # fail before a camera is opened, and leave nothing behind
        if path is not None and not Path(path).parent.is_dir():
            raise InputError(f"cannot write {path}: folder {Path(path).parent} does not exist")
    spec, frames, found, held, interrupted = VideoSpec(), 0, 0, 0, False
    tracker = {"device": opts.device, "framing": opts.framing} if opts.crop == "auto" else {}
    mouth = roi or make_roi(opts.crop, fps=FPS, **tracker)
    try:
        with open_source(source, FPS, max_frames=opts.max_frames) as src:
            duration = src.info.duration_s
            expected = round(duration * FPS) if duration and not src.info.live else None
            if opts.max_frames is not None:
                expected = min(expected or opts.max_frames, opts.max_frames)
            for frame in src:
                result = mouth(frame.image)
                event = FrameEvent(frame, result)
                if video_sink is not None:
                    points = getattr(mouth, "wflw_points", None)
                    image = compose(frame.image, result, points, spec)
                    video_sink.write(FrameEvent(Frame(frame.index, frame.pts_s, image)))
                if box_sink is not None:
                    box_sink.write(event)
                frames += 1
                found += result.found
                held += result.held
                if progress:
                    progress(frames, expected)
    except KeyboardInterrupt:
        interrupted = True
        log.info("crop interrupted; outputs closed")
    finally:
        for sink in (video_sink, box_sink):
            if sink is not None:
                sink.close()
    return CropReport(frames, found, held, getattr(mouth, "detections", None), interrupted)
