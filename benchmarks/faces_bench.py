"""Measure ``--crop auto`` (the landmark tracker) against known truth, and its cost.

``python -m lipx.benchmarks.faces_bench --wild DIR [--out DIR] [--package PKG --aligned DIR]``:

- **wild streams**: every ``*.mp4`` of a ``lipx data synth --layout lrw-streams --wild`` folder,
  decoded and tracked frame by frame; each tracked mouth-box corner is mapped back into the
  truth: the box of the drawn face's true 98 landmarks (``landmarks`` in ``NAME.wild.json``)
  fitted by the same framing (``--framing``, default the ``--package``'s, else ``landmarks``:
  all 98 points to the reference face, as ``lipx data prepare`` aligns), p50 / p95 / max
  corner distance in pixels of the 256 face over the frames where a face is reported; also
  against the fixed LRW box of the unwarped frame (``matrices``: what ``--crop lrw`` of the
  aligned twin cuts, which includes the renderer's own head motion and placement jitter).
- **astronaut**: scikit-image's photograph under known transforms (moved, scaled 0.8-1.3,
  rotated +-20 degrees, re-lit 0.6-1.3, Gaussian noise sigma 6, JPEG quality 60), each tracked
  for 5 frames; the box against the upright photo's box mapped by the same transform (cases
  where no face is found count in ``not_found``, their ``max_corner_px`` null).
- **jitter**: the photograph still in a 640x480 frame for 100 frames with fresh noise each
  frame: standard deviation of each corner (px of the 256 face) after the first 10 frames.
- **lag**: the photograph moving at a constant 100 px/s: how far the box trails the truth,
  in frames, once the filter has settled.
- **recovery**: face for 30 frames, 20 frames of background, the face again: frames after its
  return until the box is within 3 px of the truth.
- **faceless**: grey, noise, gradient and photo-without-face frames: how many report a face.
- **reading** (with ``--package PKG --aligned DIR``): a lipreading package's WER, false words
  and compute per frame on the wild streams with ``--crop auto`` and on their aligned twins
  (``lipx data synth`` of the same streams without ``--wild``) with ``--crop lrw``.
- **cost**: milliseconds per tracked frame (mesh, fit, smoothing, warp) and per detection frame,
  640x480 and 1280x720, one onnxruntime and one OpenCV thread; best of 3 runs per frame.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from lipx.benchmarks.timing import machine
from lipx.data.wild import read_truth
from lipx.landmarks import named_framing
from lipx.runtime.faces import apply, invert
from lipx.runtime.landmark_tracker import LandmarkTracker, lrw_corners


def face_px_error(corners: np.ndarray, truth_corners: np.ndarray) -> np.ndarray:
    """(4,) corner distances in pixels of the 256 face (the mouth box is 136 px wide there)."""
    side = np.linalg.norm(truth_corners[1] - truth_corners[0])
    return np.linalg.norm(corners - truth_corners, axis=1) * 136.0 / side


def stats(errors: list[float] | np.ndarray) -> dict[str, float]:
    e = np.asarray(errors, np.float64)
    if not e.size:
        return {"n": 0}
    return {"n": int(e.size), "p50": round(float(np.percentile(e, 50)), 3),
            "p95": round(float(np.percentile(e, 95)), 3), "max": round(float(e.max()), 3)}


def decode(path: Path) -> list[np.ndarray]:
    import av

    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def wild_streams(folder: Path, framing: str = "landmarks") -> dict:
    errors: list[float] = []
    fixed: list[float] = []
    rows = []
    fit = named_framing(framing).fit
    for video in sorted(folder.glob("*.mp4")):
        truth = [fit(p) for p in read_truth(video.with_suffix(".wild.json"), "landmarks")]
        placed = read_truth(video.with_suffix(".wild.json"))
        frames = decode(video)
        tracker = LandmarkTracker(framing=framing)
        mine, theirs = [], []
        for frame, m, p in zip(frames, truth, placed, strict=True):
            r = tracker(frame)
            if r.corners is not None:
                mine += list(face_px_error(r.corners, apply(invert(m), lrw_corners())))
                theirs += list(face_px_error(r.corners, apply(p, lrw_corners())))
        rows.append({"stream": video.name, "frames": len(frames),
                     "frames_without_face": tracker.frames_without_face,
                     "detections": tracker.detections, **stats(mine),
                     "vs_fixed_box": stats(theirs)})
        errors += mine
        fixed += theirs
    return {"framing": framing, "streams": rows, "corners_px": stats(errors),
            "corners_px_vs_fixed_box": stats(fixed)}


def _astronaut_frame(photo: np.ndarray, m: np.ndarray, size: tuple[int, int], rng,
                     light: float = 1.0, noise: float = 0.0, jpeg: int = 0) -> np.ndarray:
    import cv2

    frame = cv2.warpAffine(photo, m, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    out = frame.astype(np.float32) * light + rng.normal(0, noise, frame.shape)
    frame = np.clip(out + 0.5, 0, 255).astype(np.uint8)
    if jpeg:
        _, data = cv2.imencode(".jpg", frame[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, jpeg])
        decoded = np.asarray(cv2.imdecode(data, cv2.IMREAD_COLOR))
        frame = np.ascontiguousarray(decoded[:, :, ::-1])
    return frame


def placement(scale: float, degrees: float, dx: float, dy: float) -> np.ndarray:
    import cv2

    m = np.asarray(cv2.getRotationMatrix2D((224.0, 140.0), degrees, scale), np.float64)
    m[:, 2] += np.array([320 - 224 + dx, 240 - 140 + dy])
    return m


def astronaut_transforms(photo: np.ndarray) -> dict:
    rng = np.random.default_rng(0)
    upright = LandmarkTracker()
    for _ in range(5):
        ref = upright(photo).corners
    assert ref is not None, "the upright photograph's face is found"
    errors: list[float] = []
    cases = []
    for _ in range(40):
        scale, deg = rng.uniform(0.8, 1.3), rng.uniform(-20, 20)
        dx, dy = rng.uniform(-120, 120), rng.uniform(-60, 60)
        light, jpeg = rng.uniform(0.6, 1.3), int(rng.choice([0, 60]))
        m = placement(scale, deg, dx, dy)
        tracker = LandmarkTracker()
        for _ in range(5):
            frame = _astronaut_frame(photo, m, (640, 480), rng, light, 6.0, jpeg)
            r = tracker(frame)
        worst = None
        if r.corners is not None:
            err = face_px_error(r.corners, apply(m, ref))
            errors += list(err)
            worst = round(float(err.max()), 3)
        cases.append({"scale": round(scale, 3), "degrees": round(deg, 2), "light": round(light, 2),
                      "jpeg": jpeg, "max_corner_px": worst})
    not_found = sum(c["max_corner_px"] is None for c in cases)
    return {"corners_px": stats(errors), "not_found": not_found, "cases": cases}


def jitter_lag_recovery(photo: np.ndarray) -> dict:
    rng = np.random.default_rng(1)
    m = placement(1.0, 0.0, 0.0, 0.0)
    tracker = LandmarkTracker()
    still = []
    for _ in range(100):
        r = tracker(_astronaut_frame(photo, m, (640, 480), rng, noise=4.0))
        lost = np.full((4, 2), np.nan)
        still.append(apply(invert(m), r.corners) if r.corners is not None else lost)
    still_a = np.array(still[10:])
    box_side = np.linalg.norm(still_a.mean(0)[1] - still_a.mean(0)[0])
    jitter = float(np.nanmax(still_a.std(0))) * 136.0 / box_side
    # lag: constant speed 4 px per frame (100 px/s at 25 fps) to the right
    tracker, lags = LandmarkTracker(), []
    for i in range(60):
        mi = placement(1.0, 0.0, -120 + 4 * i, 0.0)
        r = tracker(_astronaut_frame(photo, mi, (640, 480), rng, noise=2.0))
        truth = apply(mi, still_a.mean(0))
        if i >= 30 and r.corners is not None:
            lags.append(float((truth[:, 0] - r.corners[:, 0]).mean()) / 4.0)
    # recovery
    blank = _astronaut_frame(photo, m, (640, 480), rng)[:]
    blank[:] = blank[470:480].mean((0, 1)).astype(np.uint8)
    tracker, recover = LandmarkTracker(hold_frames=12), None
    for i in range(80):
        face = i < 30 or i >= 50
        r = tracker(_astronaut_frame(photo, m, (640, 480), rng, noise=2.0) if face else blank)
        if i >= 50 and recover is None and r.corners is not None and not r.held:
            if face_px_error(r.corners, apply(m, still_a.mean(0))).max() < 3.0:
                recover = i - 50 + 1
    return {"still_jitter_px_std_max": round(jitter, 3),
            "lag_frames_at_100px_per_s": round(float(np.mean(lags)), 3),
            "frames_to_recover": recover}


def faceless(photo: np.ndarray) -> dict:
    import cv2

    rng = np.random.default_rng(2)
    frames = [np.full((480, 640, 3), 128, np.uint8),
              rng.integers(0, 256, (480, 640, 3), dtype=np.uint8),
              np.ascontiguousarray(cv2.resize(photo[300:], (640, 480)))]
    ys, xs = np.mgrid[0:480, 0:640]
    frames.append(np.stack([xs % 256, ys % 256, (xs + ys) % 256], -1).astype(np.uint8))
    found = 0
    for frame in frames:
        tracker = LandmarkTracker()
        found += sum(tracker(frame).found for _ in range(25))
    return {"frames": 25 * len(frames), "faces_found": int(found)}


def cost(photo: np.ndarray) -> dict:
    import cv2

    cv2.setNumThreads(1)
    rng = np.random.default_rng(3)
    out = {}
    for size in ((640, 480), (1280, 720)):
        k = size[1] / 480
        m = placement(1.0, 5.0, 0.0, 0.0)
        m[:, :2] *= k
        m[:, 2] = m[:, 2] * k
        frames = [_astronaut_frame(photo, m, size, rng, noise=2.0) for _ in range(30)]
        best_track, best_detect = [], []
        for _ in range(3):
            tracker = LandmarkTracker()
            t0 = time.perf_counter()
            tracker(frames[0])
            detect = time.perf_counter() - t0
            times = []
            for f in frames[1:]:
                t0 = time.perf_counter()
                tracker(f)
                times.append(time.perf_counter() - t0)
            best_track.append(times)
            best_detect.append(detect)
        t = np.min(np.array(best_track), 0) * 1e3
        out[f"{size[0]}x{size[1]}"] = {
            "tracked_frame_ms_mean": round(float(t.mean()), 3),
            "tracked_frame_ms_p95": round(float(np.percentile(t, 95)), 3),
            "first_frame_with_detection_ms": round(float(min(best_detect)) * 1e3, 3)}
    return out


def reading(package: Path, wild: Path, aligned: Path) -> dict:
    """A lipreading package streamed over the wild streams with ``--crop auto`` and over their
    aligned twins (the same streams before the placement) with ``--crop lrw``: WER, false
    words and compute per frame (crop stage included) of each, by ``lipx eval-stream``'s
    evaluator."""
    from lipx.runtime import stream_eval as se
    from lipx.runtime.stream import StreamOptions

    out = {}
    for crop, folder in (("auto", wild), ("lrw", aligned)):
        opts = se.StreamEvalOptions(package, folder, StreamOptions(crop=crop), exactness=False)
        report = se.evaluate_streams(opts)
        out[crop] = {"streams": str(folder), "n": report.streams, "scores": report.scores,
                     "latency": report.latency}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description="Measure --crop auto against known truth.")
    parser.add_argument("--wild", type=Path, help="a lrw-streams --wild folder")
    parser.add_argument("--out", type=Path, help="folder for faces_bench.json")
    parser.add_argument("--package", type=Path, help="a lipreading package to read the --wild "
                        "streams with --crop auto and their --aligned twins with --crop lrw")
    parser.add_argument("--aligned", type=Path, help="the --wild streams made without --wild")
    parser.add_argument("--framing", help="how the truth and the tracker fit a face "
                        "(lipx.landmarks.FRAMINGS; default: the --package's, else landmarks)")
    args = parser.parse_args()
    framing = args.framing or "landmarks"
    if args.package and not args.framing:
        from lipx.package import Manifest

        framing = Manifest.read(args.package).video.framing
    from lipx.benchmarks.moving_face import astronaut

    photo = astronaut()
    report: dict = {"machine": machine()}
    if args.wild:
        report["wild"] = wild_streams(args.wild, framing)
        report["wild"]["folder"] = str(args.wild)
    if args.package and args.wild and args.aligned:
        report["reading"] = reading(args.package, args.wild, args.aligned)
    report["astronaut"] = astronaut_transforms(photo)
    report["still"] = jitter_lag_recovery(photo)
    report["faceless"] = faceless(photo)
    report["cost"] = cost(photo)
    text = json.dumps(report, indent=1, allow_nan=False)
    print(text)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "faces_bench.json").write_text(text + "\n")


if __name__ == "__main__":
    main()
