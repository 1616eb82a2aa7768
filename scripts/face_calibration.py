"""Fit the Face Mesh -> WFLW map that ``--crop auto`` aligns with (``runtime/wflw_map.py``).

    .venv/bin/python scripts/face_calibration.py [--work /tmp/face-calibration]

1. Renders in-the-wild streams (``lipx data synth --layout lrw-streams --wild``, the recipe of
   the shipped lipreading checkpoint) of **training** speakers (``--part train``, 24 streams) to
   fit on, and of **validation** speakers (``--part val``) to choose on; the test speakers
   (``--part test``) are never rendered here. Existing folders in ``--work`` are reused.
2. Runs the tracker's face mesh over every frame and pairs its 468 points with the drawn face's
   true 98 WFLW points (``NAME.wild.json``), kept as ``--work``/PART-wild.npz for the next run.
3. Fits a :class:`~lipx.runtime.wflw_map.WflwMap` for each number of principal components in
   :data:`COMPONENTS` on the training frames, and scores each on the validation frames, for
   every framing of :data:`lipx.landmarks.FRAMINGS` (the points ``--crop auto`` fits to a
   model's training faces): the mouth box of the framing's fit of the mapped points against the
   box of the same fit of the true points, p95 of the corners in px of the 256 face, once as
   measured and once with 0.5 px of noise added to every mesh point. It keeps the map whose
   worst framing is best on validation, among the maps that noise does not hurt by more than
   :data:`NOISE_SLACK` in any framing (a map that leans on small differences between many
   points amplifies noise, and would fail on faces unlike the renders).
4. Writes ``lipx/assets/faces/mesh_to_wflw.npz`` and ``mesh_to_wflw.json`` (sha256, the data,
   the table of every candidate, the choice).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CHECKPOINT = ROOT / "lipx/assets/checkpoints/lipreading.lipx"
PARTS = {"train": 24, "val": 6}
"""Streams rendered per part (one per speaker)."""
COMPONENTS = (0, 5, 10, 15, 20, 25, 30, 40)
RIDGE = 1e-3
NOISE_PX = 0.5
NOISE_SLACK = 1.15


def render(work: Path, part: str) -> Path:
    out = work / f"{part}-wild"
    if not (out / "streams.jsonl").exists():
        subprocess.run([sys.executable, "-m", "lipx.cli", "data", "synth", str(out), "--layout",
                        "lrw-streams", "--like", str(CHECKPOINT), "--part", part, "--wild",
                        "--streams", str(PARTS[part])], check=True)
    return out


def collect(folder: Path) -> dict[str, np.ndarray]:
    """Mesh points and true WFLW points of every frame with a mesh."""
    import av

    from lipx.data.wild import read_truth
    from lipx.landmarks import reference_face
    from lipx.runtime.landmark_tracker import LandmarkTracker
    from lipx.runtime.wflw_map import WflwMap

    # the mesh points do not depend on the map (it only turns them into the crop): any will do
    ring = np.stack([np.cos(np.arange(468)), np.sin(np.arange(468))], 1) * 60 + 128
    placeholder = WflwMap(ring, np.zeros((0, 936)), np.zeros((0, 196)),
                          reference_face().astype(np.float64).ravel())
    meshes, wflw = [], []
    for video in sorted(folder.glob("*.mp4")):
        truth = video.with_suffix(".wild.json")
        points = read_truth(truth, "landmarks")
        tracker = LandmarkTracker(wflw=placeholder)
        with av.open(str(video)) as c:
            for i, frame in enumerate(c.decode(video=0)):
                tracker(frame.to_ndarray(format="rgb24"))
                if tracker.points is not None:
                    meshes.append(tracker.points)
                    wflw.append(points[i])
        print(f"{video.name}: {len(meshes)} frames so far", flush=True)
    return {"meshes": np.array(meshes), "wflw": np.array(wflw)}


def collected(work: Path, part: str) -> dict[str, np.ndarray]:
    """:func:`collect` of ``part``'s renders, kept in ``work`` (the mesh runs once a part)."""
    cache = work / f"{part}-wild.npz"
    if not cache.exists():
        np.savez(cache, **collect(render(work, part)))
    with np.load(cache) as z:
        return {k: z[k] for k in z.files}


def box_errors(wmap, meshes: np.ndarray, wflw: np.ndarray, framing: str) -> np.ndarray:
    """Corner distances (px of the 256 face) between the mouth boxes of ``framing``'s fit of
    the mapped points and of the true points."""
    from lipx.benchmarks.faces_bench import face_px_error
    from lipx.landmarks import named_framing
    from lipx.runtime.faces import apply, invert
    from lipx.runtime.landmark_tracker import lrw_corners

    fit, corners = named_framing(framing).fit, lrw_corners()
    out = [face_px_error(apply(invert(fit(wmap(m))), corners), apply(invert(fit(p)), corners))
           for m, p in zip(meshes, wflw, strict=True)]
    return np.concatenate(out)


def p95(e: np.ndarray) -> float:
    return round(float(np.percentile(e, 95)), 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/face-calibration"))
    parser.add_argument("--out", type=Path, default=ROOT / "lipx/assets/faces")
    args = parser.parse_args()
    from lipx import __version__
    from lipx.landmarks import FRAMINGS, named_framing
    from lipx.runtime.faces import apply
    from lipx.runtime.wflw_map import MAP_FILE, MAP_META, fit_wflw_map

    data = {part: collected(args.work, part) for part in PARTS}
    train, val = data["train"], data["val"]
    to_lrw = named_framing("landmarks").fit  # the canonical frame: the LRW face's pixels
    start = np.mean([apply(to_lrw(w), m)
                     for w, m in zip(train["wflw"], train["meshes"], strict=True)], axis=0)
    noisy = val["meshes"] + np.random.default_rng(0).normal(0, NOISE_PX, val["meshes"].shape)
    rows, maps = [], {}
    for k in COMPONENTS:
        wmap = maps[k] = fit_wflw_map(train["meshes"], train["wflw"], start, k, RIDGE)
        row: dict = {"components": k}
        for name in FRAMINGS:
            e = box_errors(wmap, val["meshes"], val["wflw"], name)
            row[name] = {
                "train_p95": p95(box_errors(wmap, train["meshes"], train["wflw"], name)),
                "val_p50": round(float(np.median(e)), 3), "val_p95": p95(e),
                "val_noisy_p95": p95(box_errors(wmap, noisy, val["wflw"], name))}
        rows.append(row)
        print(json.dumps(row), flush=True)
    robust = [r for r in rows
              if all(r[n]["val_noisy_p95"] <= NOISE_SLACK * r[n]["val_p95"] for n in FRAMINGS)]
    best = min(robust, key=lambda r: max(r[n]["val_p95"] for n in FRAMINGS))
    args.out.mkdir(parents=True, exist_ok=True)
    maps[best["components"]].save(args.out / MAP_FILE)
    meta = {
        "schema_version": 1, "file": MAP_FILE,
        "sha256": hashlib.sha256((args.out / MAP_FILE).read_bytes()).hexdigest(),
        "what": "Face Mesh v1 (468 points) -> the 98 WFLW points lipx data prepare aligns with "
                "(lipx.runtime.wflw_map.WflwMap)",
        "made_by": "scripts/face_calibration.py", "lipx_version": __version__,
        "data": {"recipe": "lipx data synth --layout lrw-streams --wild --like "
                           "lipx/assets/checkpoints/lipreading.lipx",
                 "fit_on": f"--part train, {PARTS['train']} streams, {len(train['meshes'])} "
                           "frames",
                 "chosen_on": f"--part val, {PARTS['val']} streams, {len(val['meshes'])} frames",
                 "test_speakers": "never used"},
        "ridge": RIDGE, "noise_px": NOISE_PX, "noise_slack": NOISE_SLACK,
        "candidates": rows, "chosen": best,
    }
    (args.out / MAP_META).write_text(json.dumps(meta, indent=1) + "\n")
    worst = max(best[n]["val_p95"] for n in FRAMINGS)
    print(f"chose {best['components']} components: val p95 <= {worst} px -> "
          f"{args.out / MAP_FILE}")


if __name__ == "__main__":
    main()
