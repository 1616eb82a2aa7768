"""Time ``--crop auto`` per frame: detect-every-frame against tracking, on a moving real face.

``python -m lipx.benchmarks.roi_bench [--out DIR]`` runs both face trackers over the
moving-astronaut videos (``lipx.benchmarks.moving_face``, 640x480 and 512x512) and prints, per
video and mode, the milliseconds of one ``roi(frame)`` call (detection, smoothing and the warp
to the 256x256 face: the stream's ``crop`` stage less the mouth cut) and how far each mode's
mouth box is from detect-every-frame's and from the true mouth. Wall time and the process's
CPU time (all threads) are both kept: OpenCV splits a full-frame search over its threads, so on
an idle machine its wall time is about half its CPU time, while a search near the face is too
small to split.

Each mode runs the whole video ``--repeats`` times with a fresh tracker; a frame's time is its
best over the repeats (the machine may be shared: the load average is recorded before and after
each mode). With ``--out`` the rows, every raw sample and the machine go to ``roi_bench.json``.
Needs OpenCV and scikit-image (the photograph).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lipx.benchmarks.moving_face import MovingFace, astronaut
from lipx.benchmarks.timing import load_average, machine
from lipx.runtime.haar import HaarFaceDetector
from lipx.runtime.roi import TRACK_DETECT_EVERY, FaceTracker, make_roi
from lipx.runtime.stats import LatencyStats

MODES: dict[str, dict[str, Any]] = {"detect-every-frame": {"detect_every": 1}, "tracking": {}}
"""Mode name -> ``make_roi("auto", ...)`` options (tracking: the default)."""
SIZES = ((640, 480), (512, 512))


@dataclass
class RoiRow:
    """One mode on one video."""

    size: str
    mode: str
    frames: int
    stats: LatencyStats
    """Per-frame wall time (best over the repeats)."""
    cpu_stats: LatencyStats
    """Per-frame CPU time of the process, all threads (best over the repeats): what the other
    stages of a stream on the same cores lose."""
    repeat_means_ms: list[float]
    full_detections: int
    frames_without_face: int
    deviation_max_px: float
    """Largest mouth-box corner difference from detect-every-frame, over all frames."""
    deviation_mean_px: float
    truth_max_px: float
    """Largest distance of the mouth box's centre from the true mouth."""
    load_before: list[float] | None
    load_after: list[float] | None
    samples_ms: list[list[float]] = field(repr=False, default_factory=list)
    cpu_samples_ms: list[list[float]] = field(repr=False, default_factory=list)


def run_mode(frames: Sequence[np.ndarray], options: dict[str, Any], repeats: int):
    """Mouth boxes, (repeats, frames, 2) wall and CPU seconds, and the last run's tracker."""
    times, boxes, tracker = [], np.zeros((0, 4)), None
    for _ in range(repeats):
        tracker = make_roi("auto", **options)
        seconds, found = [], []
        for frame in frames:
            wall, cpu = time.perf_counter(), time.process_time()
            result = tracker(frame)
            seconds.append((time.perf_counter() - wall, time.process_time() - cpu))
            found.append(result.box if result.box is not None else (np.nan,) * 4)
        times.append(seconds)
        boxes = np.array(found)
    assert isinstance(tracker, FaceTracker)
    return boxes, np.array(times), tracker


def bench_video(
    motion: MovingFace, frames: list[np.ndarray], repeats: int, reach: float | None = None
) -> list[RoiRow]:
    """Both modes on one video (detect-every-frame first: it is the reference).

    ``reach``: the tracking mode's ``HaarFaceDetector(reach=...)`` (None: its default).
    """
    rows, reference = [], None
    truth = np.array([motion.mouth(t) for t in range(len(frames))])
    for mode, options in MODES.items():
        if mode == "tracking" and reach is not None:
            options = {**options, "detector": HaarFaceDetector(reach=reach)}
        load_before = load_average()
        boxes, times, tracker = run_mode(frames, options, repeats)
        reference = boxes if reference is None else reference
        deviation = np.abs(boxes - reference).max(axis=1)
        centres = (boxes[:, :2] + boxes[:, 2:]) / 2
        best = times.min(axis=0)  # (frames, 2)
        rows.append(
            RoiRow(
                size=f"{motion.size[0]}x{motion.size[1]}",
                mode=mode,
                frames=len(frames),
                stats=LatencyStats.of(best[:, 0]),
                cpu_stats=LatencyStats.of(best[:, 1]),
                repeat_means_ms=[float(t[:, 0].mean() * 1e3) for t in times],
                full_detections=tracker.full_detections,
                frames_without_face=tracker.frames_without_face,
                deviation_max_px=float(np.nanmax(deviation)),
                deviation_mean_px=float(np.nanmean(deviation)),
                truth_max_px=float(np.nanmax(np.linalg.norm(centres - truth, axis=1))),
                load_before=load_before,
                load_after=load_average(),
                samples_ms=(times[:, :, 0] * 1e3).round(4).tolist(),
                cpu_samples_ms=(times[:, :, 1] * 1e3).round(4).tolist(),
            )
        )
    return rows


def format_rows(rows: Sequence[RoiRow]) -> str:
    """A markdown table of the rows."""
    lines = [
        "| video | mode | p50 ms | p95 ms | mean ms | CPU mean ms | full detections "
        "| box dev max / mean px | mouth error max px | load before -> after |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        s = r.stats
        load = f"{r.load_before and r.load_before[0]} -> {r.load_after and r.load_after[0]}"
        lines.append(
            f"| {r.size} | {r.mode} | {s.p50_ms:.2f} | {s.p95_ms:.2f} | {s.mean_ms:.2f} "
            f"| {r.cpu_stats.mean_ms:.2f} | {r.full_detections}/{r.frames} "
            f"| {r.deviation_max_px:.2f} / {r.deviation_mean_px:.2f} | {r.truth_max_px:.1f} "
            f"| {load} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> list[RoiRow]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--frames", type=int, default=150, help="frames per video (one sweep)")
    parser.add_argument("--repeats", type=int, default=5, help="runs per mode; best per frame")
    parser.add_argument(
        "--threads", type=int, default=None, help="cv2.setNumThreads (default: OpenCV's own)"
    )
    parser.add_argument(
        "--reach",
        type=float,
        default=None,
        help="tracking's search reach (face sides; default: HaarFaceDetector's)",
    )
    parser.add_argument("--out", type=Path, default=None, help="folder for roi_bench.json")
    args = parser.parse_args(argv)
    import cv2

    if args.threads is not None:
        cv2.setNumThreads(args.threads)
    photo, rows = astronaut(), []
    for size in SIZES:
        motion = MovingFace(size=size, frames=args.frames)
        rows += bench_video(motion, motion.video(photo), args.repeats, args.reach)
    print(format_rows(rows))
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        report = {
            "machine": machine(),
            "opencv": cv2.__version__,
            "opencv_threads": cv2.getNumThreads(),
            "settings": {**vars(args), "out": str(args.out), "detect_every": TRACK_DETECT_EVERY},
            "rows": [asdict(r) for r in rows],
        }
        (args.out / "roi_bench.json").write_text(json.dumps(report, indent=1) + "\n")
        print(f"wrote {args.out / 'roi_bench.json'}")
    return rows


if __name__ == "__main__":
    main()
