"""Diagnostic: WER on the wild test streams with oracle crops instead of the tracker.

    .venv/bin/python benchmarks/results/faces-cpu-2026-12-07/oracle_crops.py matrices|aligned

``matrices``: each frame cut with the inverse of its true placement (the aligned twin's own
fixed box, through the wild frame's pixels); ``aligned``: with the true 98-landmark alignment
(what a perfect tracker would give). The session's ROI is replaced by one that reads the truth
of ``NAME.wild.json``, stream by stream in the evaluator's (sorted) order.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from lipx.data.wild import read_truth
from lipx.landmarks import warp_face
from lipx.runtime import session
from lipx.runtime import stream_eval as se
from lipx.runtime.faces import invert
from lipx.runtime.roi import MouthROI, RoiResult
from lipx.runtime.stream import StreamOptions

WILD, PACKAGE = Path("/tmp/w26/test-wild"), Path("/tmp/w26/pkg")


class Oracle(MouthROI):
    def __init__(self, matrices: np.ndarray, placed: bool):
        super().__init__()
        self.matrices, self.placed = matrices, placed

    def __call__(self, frame: np.ndarray) -> RoiResult:
        m = self.matrices[min(self.frames, len(self.matrices) - 1)]
        self.frames += 1
        return RoiResult(warp_face(frame, invert(m) if self.placed else m), (0, 0, 1, 1), True)


def main() -> None:
    key = sys.argv[1]
    queue = [read_truth(v.with_suffix(".wild.json"), key) for v in sorted(WILD.glob("*.mp4"))]
    session.make_roi = lambda *a, **k: Oracle(queue.pop(0), key == "matrices")  # type: ignore
    opts = se.StreamEvalOptions(PACKAGE, WILD, StreamOptions(crop="auto"), exactness=False)
    scores = se.evaluate_streams(opts).scores
    print(key, json.dumps({k: scores[k] for k in ("wer", "substitutions", "deletions",
                                                   "insertions", "false_words_per_min")}))


if __name__ == "__main__":
    main()
