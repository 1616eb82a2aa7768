"""Time a 20-setting stream sweep and count the engine sessions it opens (old or new code)."""
import json, sys, time
from pathlib import Path
import lipx.runtime.ort_runner as ort

opened = [0]
real = ort.OrtRunner._activate
def counting(self, *a, **k):
    opened[0] += 1
    return real(self, *a, **k)
ort.OrtRunner._activate = counting
try:
    from lipx.runtime.stream_eval import StreamEvalOptions, parse_sweep, sweep
except ImportError:
    from lipx.train.stream_eval import StreamEvalOptions, parse_sweep, sweep
from lipx.runtime.stream import StreamOptions
import lipx
grid = parse_sweep(["stride=2,4", "threshold=0.5,0.6,0.7,0.8,0.85", "agreement=1,2"])
opts = StreamEvalOptions(Path("/tmp/sweep/pkg"), Path("/tmp/sweep/val16"), StreamOptions())
t = time.perf_counter()
reports, skipped = sweep(opts, grid)
dt = time.perf_counter() - t
print(json.dumps({"code": sys.argv[1], "lipx_file": lipx.__file__, "settings": len(reports),
                  "skipped": len(skipped), "engine_sessions_opened": opened[0],
                  "seconds": round(dt, 1),
                  "wer": [round(r.scores["wer"], 4) for r in reports]}))
