"""Time a 20-setting stream sweep and count the engine sessions it opens.

    python sweep_engines.py new                        # this lipx
    PYTHONPATH=OLD_CHECKOUT python sweep_engines.py old    # lipx at a003170 (before the pipeline)

The package and the streams are /tmp/sweep/pkg and /tmp/sweep/val16 (see README.md).
"""

from __future__ import annotations

import importlib
import json
import sys
import time
from pathlib import Path
from types import ModuleType

import lipx.runtime.ort_runner as ort
from lipx.runtime.stream import StreamOptions

GRID = ["stride=2,4", "threshold=0.5,0.6,0.7,0.8,0.85", "agreement=1,2"]


def stream_eval() -> ModuleType:
    """The stream evaluator: lipx.runtime's, or lipx.train's before it moved (a003170)."""
    try:
        return importlib.import_module("lipx.runtime.stream_eval")
    except ImportError:
        return importlib.import_module("lipx.train.stream_eval")


def main(code: str) -> None:
    opened = [0]
    activate = ort.OrtRunner._activate

    def counting(self: ort.OrtRunner) -> None:
        opened[0] += 1
        activate(self)

    ort.OrtRunner._activate = counting  # type: ignore[method-assign]
    se = stream_eval()
    opts = se.StreamEvalOptions(Path("/tmp/sweep/pkg"), Path("/tmp/sweep/val16"),
                                StreamOptions())
    start = time.perf_counter()
    reports, skipped = se.sweep(opts, se.parse_sweep(GRID))
    print(json.dumps({"code": code, "settings": len(reports), "skipped": len(skipped),
                      "engine_sessions_opened": opened[0],
                      "seconds": round(time.perf_counter() - start, 1),
                      "wer": [round(r.scores["wer"], 4) for r in reports]}))


if __name__ == "__main__":
    main(sys.argv[1])
