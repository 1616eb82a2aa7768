"""Stream statistics: stage percentiles, compute latency, algorithmic latency, JSON."""

from __future__ import annotations

import json
import time

import pytest

from lipx.runtime.stats import LatencyStats, StageTimer, StreamRun, algorithmic_latency_s

RUN = StreamRun("lipreading", "onnx", "cpu", cache=True, window=9, stride=5, chunk=1,
                source="toy.mp4")


def test_latency_stats_of_known_values():
    p = LatencyStats.of([k / 1000 for k in range(1, 101)])  # 1 .. 100 ms
    assert p.count == 100 and p.mean_ms == pytest.approx(50.5)
    assert (p.p50_ms, p.p95_ms, p.p99_ms) == pytest.approx((50.5, 95.05, 99.01))
    assert (p.min_ms, p.max_ms) == pytest.approx((1, 100)) and p.total_s == pytest.approx(5.05)
    assert p.std_ms == pytest.approx(28.866, abs=1e-3) and p.clipped == 0
    assert LatencyStats.of([]).count == 0


def test_latency_stats_sigma_clipping():
    samples = [0.010] * 50 + [0.011] * 49 + [1.0]  # one 1 s outlier among ~10 ms calls
    s = LatencyStats.of(samples, sigma=2.0)
    assert s.count == 100 and s.clipped == 1 and s.max_ms == pytest.approx(1000.0)
    assert s.p50_ms == pytest.approx(10.5) and s.mean_ms == pytest.approx(10.49, abs=0.01)
    assert s.std_ms < 1.0 and s.p99_ms > 11.0
    assert LatencyStats.of(samples).mean_ms == pytest.approx(20.39)  # no clipping asked


def test_algorithmic_latency():
    lat = algorithmic_latency_s(fps=25, stride=5, lookahead=3)
    assert lat == pytest.approx({"min_s": 0.2, "mean_s": 0.28, "max_s": 0.36})
    assert algorithmic_latency_s(25)["max_s"] == pytest.approx(0.08)  # the front-end's t+2


def test_stage_timer_summary():
    timer = StageTimer(fps=25, wait_stages=("decode",))
    for i in range(10):
        timer.count_in(1, dropped=1 if i == 5 else 0)
        timer.add("decode", 0.010)  # waiting for the camera: not compute
        timer.add("frontend", 0.002)
        if i % 5 == 4:
            timer.add("backend", 0.020)  # the frame that triggers a window run pays for it
        timer.end_frame()
    stats = timer.summary(RUN, stride=5, lookahead=0)
    assert stats.frames_in == 11 and stats.frames_out == 10 and stats.frames_dropped == 1
    assert stats.stages["frontend"].count == 10 and stats.stages["backend"].count == 2
    assert stats.stages["decode"].mean_ms == pytest.approx(10)
    assert stats.compute.p50_ms == pytest.approx(2) and stats.compute.max_ms == pytest.approx(22)
    assert stats.media_s == pytest.approx(11 / 25)
    assert stats.rtf == pytest.approx((10 * 0.002 + 2 * 0.020) / (11 / 25))
    assert stats.algorithmic["max_s"] == pytest.approx((2 + 4) / 25)
    assert stats.model_ms_per_frame == pytest.approx((10 * 2 + 2 * 20) / 10)
    assert stats.run is RUN
    assert stats.stages["crop"].count == 0  # listed even when unused
    table = stats.format_table()
    assert "backend" in table and "dropped 1" in table and "RTF" in table


def test_stage_context_manager_and_json(tmp_path):
    timer = StageTimer(fps=25)
    with timer.stage("crop"):
        time.sleep(0.01)
    timer.end_frame()
    stats = timer.summary(RUN)
    assert 9 <= stats.stages["crop"].max_ms < 1000  # milliseconds (a loaded machine: later)
    data = json.loads(stats.to_json())
    assert data["stages"]["crop"]["count"] == 1 and data["run"]["source"] == "toy.mp4"
    assert data["run"]["words"] == 0 and data["model_ms_per_frame"] == 0
    path = tmp_path / "stats.json"
    stats.save(path)
    assert json.loads(path.read_text()) == data and not (tmp_path / "stats.json.partial").exists()


def test_status_line():
    timer = StageTimer(fps=25)
    assert "warming up" in timer.status_line()
    for _ in range(5):
        timer.add("frontend", 0.004)
        timer.end_frame()
        time.sleep(0.002)
    timer.count_in(5, dropped=2)
    line = timer.status_line()
    assert line.startswith("frame 5 |") and "fps" in line and "dropped 2" in line
    assert "p50   4.0 ms" in line and "RTF 0.10" in line and "\n" not in line
