"""``lipx bench-serve`` without a model: the /metrics parser, the rows and the sustained rule, the
options, and the whole client against a small protocol-speaking stand-in for ``lipx serve``."""

from __future__ import annotations

import json
import time

import pytest

pytest.importorskip("aiohttp")

from aiohttp import WSMsgType, web  # noqa: E402
from background_app import BackgroundApp  # noqa: E402
from stream_fixtures import write_video  # noqa: E402

from lipx.errors import InputError  # noqa: E402
from lipx.serve.bench import BenchServeOptions, bench_serve, load_frames, urls  # noqa: E402
from lipx.serve.bench_results import (  # noqa: E402
    ServeRun,
    StreamRecord,
    failure,
    format_run,
    p50_p95,
    summarize,
    sustained,
)
from lipx.serve.protocol import parse_frame  # noqa: E402
from lipx.serve.scrape import Scrape, batch_means  # noqa: E402

PAGE = """\
# HELP lipx_batch_size Clips or windows per engine call, by step.
# TYPE lipx_batch_size histogram
lipx_batch_size_bucket{le="1",step="frontend"} 2
lipx_batch_size_bucket{le="+Inf",step="frontend"} 10
lipx_batch_size_sum{step="frontend"} 40
lipx_batch_size_count{step="frontend"} 10
lipx_batch_size_sum{step="backend"} 6
lipx_batch_size_count{step="backend"} 6
lipx_streams_refused_total{reason="full"} 3
lipx_streams_refused_total{reason="idle"} 1
process_cpu_seconds_total 12.5
lipx_server_rss_bytes 4.5e+08 1712345678000
odd_label{path="a \\"quoted\\" } value"} 7
lipx_not_a_number NaN-ish
this line is not a sample
"""


def test_scrape_reads_samples_labels_and_skips_the_rest():
    page = Scrape.parse(PAGE)
    assert page.total("lipx_batch_size_sum", step="frontend") == 40
    assert page.total("lipx_batch_size_bucket", step="frontend", le="+Inf") == 10
    assert page.total("lipx_streams_refused_total") == 4
    assert page.total("lipx_streams_refused_total", reason="idle") == 1
    assert page.total("process_cpu_seconds_total") == 12.5
    assert page.total("lipx_server_rss_bytes") == 4.5e8  # the timestamp is not the value
    assert page.total("odd_label", path='a \\"quoted\\" } value') == 7
    assert page.total("lipx_not_a_number") is None and page.total("nothing") is None
    assert page.total("lipx_streams_refused_total", reason="shutdown") is None
    assert page.label_values("lipx_batch_size_count", "step") == ["backend", "frontend"]
    assert Scrape.parse("").samples == {}


def test_deltas_and_mean_batch_sizes_between_two_pages():
    before = Scrape.parse(PAGE)
    after = Scrape.parse(PAGE.replace('sum{step="frontend"} 40', 'sum{step="frontend"} 100')
                         .replace('count{step="frontend"} 10', 'count{step="frontend"} 30')
                         .replace("process_cpu_seconds_total 12.5",
                                  "process_cpu_seconds_total 20"))
    assert after.delta(before, "process_cpu_seconds_total") == 7.5
    assert after.delta(Scrape(), "process_cpu_seconds_total") == 20  # no page before: from 0
    assert after.delta(before, "missing_metric") is None
    # frontend: (100 - 40) / (30 - 10) = 3; backend had no calls in between: left out
    assert batch_means(before, after) == {"frontend": 3.0}
    assert batch_means(Scrape(), before) == {"frontend": 4.0, "backend": 1.0}
    assert batch_means(Scrape(), Scrape()) == {}


def test_p50_p95():
    assert p50_p95([k / 100 for k in range(101)]) == (0.5, 0.95)
    assert p50_p95([0.3]) == (0.3, 0.3)
    assert p50_p95([]) == (None, None)


def _record(sent: int = 100, dropped: int = 0, waits=(0.5,), error: str | None = None,
            ready: bool = True) -> StreamRecord:
    end = {"frames_in": sent, "frames_dropped": dropped} if ready and not error else None
    return StreamRecord(ready=ready, sent=sent, waits=list(waits),
                        server_waits=[w - 0.1 for w in waits], words=len(waits), end=end,
                        error=error)


def test_summarize_adds_up_streams_and_server_metrics():
    before = Scrape.parse("process_cpu_seconds_total 10\nlipx_batch_size_sum{step=\"backend\"} 0"
                          "\nlipx_batch_size_count{step=\"backend\"} 0")
    after = Scrape.parse("process_cpu_seconds_total 25\nlipx_server_rss_bytes 512000000\n"
                         "lipx_batch_size_sum{step=\"backend\"} 30\n"
                         "lipx_batch_size_count{step=\"backend\"} 10")
    records = [_record(waits=(0.2, 0.4)), _record(dropped=5, waits=(0.6,)),
               _record(sent=0, waits=(), ready=False, error="full")]
    records[0].late, records[0].late_max_s = 2, 0.09
    run = summarize(3, records, before, after, wall_s=10.0)
    assert (run.streams, run.frames, run.dropped, run.dropped_pct) == (3, 200, 5, 2.5)
    assert run.unaccounted == 0
    records[1].end = {"frames_in": 93, "frames_dropped": 5}  # 7 sent frames the server never saw
    assert summarize(3, records, before, after, wall_s=10.0).unaccounted == 7
    assert (run.words, run.refused, run.errors) == (3, 1, {"full": 1})
    assert run.emission_p50_s == 0.4 and run.server_emission_p50_s == 0.3
    assert run.server_cpu_s == 15 and run.cpu_util == 1.5 and run.server_rss_mb == 512.0
    assert run.server_peak_rss_mb is None and run.batch_mean == {"backend": 3.0}
    assert (run.client_late_frames, run.client_late_max_s) == (2, 0.09)
    no_metrics = summarize(1, [_record()], Scrape(), Scrape(), wall_s=5.0)
    assert no_metrics.server_cpu_s is None and no_metrics.cpu_util is None
    assert no_metrics.batch_mean == {}


def test_failure_names_each_failed_criterion():
    ok = ServeRun(streams=4, frames=400, emission_p95_s=0.8)
    assert failure(ok) is None
    assert failure(ServeRun(streams=4, emission_p95_s=1.0)) is None  # the bound is inclusive
    slow = failure(ServeRun(streams=8, dropped=3, emission_p95_s=1.25))
    assert slow == "dropped 3 frames; emission p95 1.25 s > 1 s"
    assert failure(ServeRun(streams=8, emission_p95_s=1.25), max_p95_s=2.0) is None
    assert failure(ServeRun(streams=8)) == "no words to time"
    lost = failure(ServeRun(streams=8, unaccounted=4, emission_p95_s=0.5))
    assert lost == "4 frames sent but not counted by the server"
    refused = failure(ServeRun(streams=40, emission_p95_s=0.5, refused=8,
                               errors={"full": 8, "no end": 1}))
    assert refused == "streams refused or broken: full x8, no end x1"


def test_sustained_is_the_largest_count_before_the_first_failure():
    def run(n: int, failed: str | None = None) -> ServeRun:
        return ServeRun(streams=n, failed=failed)

    assert sustained([run(4), run(8), run(12, "dropped 1 frames")]) == 8
    assert sustained([run(4, "dropped 2 frames")]) is None
    assert sustained([run(4), run(8), run(12)]) == 12
    assert sustained([run(4), run(8, "x"), run(12)]) == 4  # a pass after a failure is no proof
    assert sustained([]) is None


def test_format_run_is_one_line_with_the_verdict():
    run = ServeRun(streams=8, frames=4000, dropped=0, emission_p50_s=0.61, emission_p95_s=0.8,
                   batch_mean={"frontend": 3.25}, client_late_frames=3)
    line = format_run(run)
    assert "\n" not in line and line.startswith("8 streams: 4000 frames")
    assert "p95 0.80 s" in line and "frontend 3.2" in line and line.endswith("| ok")
    assert "CLIENT LATE: 3 frames" in line
    run.failed = "dropped 9 frames"
    assert format_run(run).endswith("| FAILED: dropped 9 frames")


def test_urls_take_ws_or_http():
    assert urls("ws://host:8000") == ("ws://host:8000/ws", "http://host:8000")
    assert urls("http://10.0.0.2:9000/") == ("ws://10.0.0.2:9000/ws", "http://10.0.0.2:9000")
    assert urls("https://h:1") == ("wss://h:1/ws", "https://h:1")
    with pytest.raises(InputError, match="ws://HOST:PORT"):
        urls("host:8000")


def test_options_are_checked_once(tmp_path):
    video = tmp_path / "v.mp4"
    video.write_bytes(b"")
    opts = BenchServeOptions("ws://h:1", video)
    assert opts.schedule() == (4,)
    assert BenchServeOptions("ws://h:1", video, ramp=True).schedule()[:3] == (4, 8, 12)
    assert BenchServeOptions("ws://h:1", video, streams=[2, 6], ramp=True).schedule() == (2, 6)
    bad = [({"url": "ftp://h:1"}, "URL"), ({"video": tmp_path / "none.mp4"}, "no such video"),
           ({"streams": [8, 4], "ramp": True}, "increasing"), ({"streams": [0]}, ">= 1"),
           ({"seconds": 0.5}, "--seconds"), ({"crop": "face"}, "--crop"),
           ({"fps": 0}, "--fps"), ({"json_path": tmp_path / "no" / "r.json"}, "--json")]
    for fields, message in bad:
        with pytest.raises(InputError, match=message):
            BenchServeOptions(**{"url": "ws://h:1", "video": video, **fields})


def test_load_frames_encodes_each_frame_once(tmp_path):
    video = write_video(tmp_path / "v.mp4", 12, size=64)
    frames = load_frames(video, 25.0, max_frames=100)
    assert len(frames) == 12 and all(f[:2] == b"\xff\xd8" for f in frames)
    assert len(load_frames(video, 25.0, max_frames=5)) == 5


class FakeServer:
    """Speaks lipx serve's protocol with no model, in a thread: a word every 10 frames (at the
    frame's time, emitted 0.05 s after it), ``full`` beyond ``capacity`` streams, batches of 3."""

    def __init__(self, capacity: int) -> None:
        self.capacity, self.active, self.frames = capacity, 0, 0
        self.app = BackgroundApp([web.get("/models", self._models),
                                  web.get("/metrics", self._metrics), web.get("/ws", self._ws)])
        self.port = self.app.port

    def stop(self) -> None:
        self.app.stop()

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"protocol": 1, "models": [
            {"name": "fake", "task": "lipreading", "fps": 25.0, "size": 256, "default": True}]})

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(text=f"lipx_streams_active {self.active}\n"
                                 f'lipx_batch_size_sum{{step="frontend"}} {3 * self.frames}\n'
                                 f'lipx_batch_size_count{{step="frontend"}} {self.frames}\n'
                                 f"process_cpu_seconds_total {time.process_time()}\n")

    async def _ws(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        hello = json.loads((await ws.receive()).data)
        assert hello["live"] is True and hello["format"] == "jpeg" and hello["crop"] == "lrw"
        if self.active >= self.capacity:
            await ws.send_str(json.dumps({"type": "error", "code": "full", "reason": "full"}))
            await ws.close(code=1013)
            return ws
        self.active += 1
        await ws.send_str(json.dumps({"type": "ready", "protocol": 1, "fps": 25.0}))
        t0, n = None, 0
        async for msg in ws:
            if msg.type == WSMsgType.BINARY:
                t, _ = parse_frame(msg.data)
                t0, n = t if t0 is None else t0, n + 1
                self.frames += 1
                if n % 10 == 0:
                    end = round(t - t0, 3)
                    await ws.send_str(json.dumps({"type": "word", "word": "A", "end_s": end,
                                                  "start_s": end - 0.3, "emitted_s": end + 0.05}))
            else:
                await ws.send_str(json.dumps({"type": "end", "stats": {
                    "frames_in": n, "frames_out": n, "frames_dropped": 0}}))
                break
        self.active -= 1
        await ws.close()
        return ws


@pytest.mark.slow  # the fast lane keeps under 2 minutes
def test_bench_serve_against_a_stand_in_server(tmp_path):
    video = write_video(tmp_path / "v.mp4", 10, size=64)  # shorter than a run: looped
    server = FakeServer(capacity=3)
    lines: list[str] = []
    try:
        opts = BenchServeOptions(f"http://127.0.0.1:{server.port}", video, streams=[2, 4],
                                 seconds=3.0, ramp=True, json_path=tmp_path / "r.json")
        report = bench_serve(opts, progress=lines.append)
        with pytest.raises(InputError, match="no model 'other'"):
            bench_serve(BenchServeOptions(opts.url, video, model="other"))
    finally:
        server.stop()
    assert report["model"] == "fake" and report["fps"] == 25.0 and report["video_frames"] == 10
    two, four = report["runs"]
    # a word every 10 frames; those in the last 1.5 s are counted, not timed
    assert (two["streams"], two["frames"], two["words"], two["dropped"]) == (2, 150, 14, 0)
    assert two["failed"] is None and two["refused"] == 0 and two["errors"] == {}
    assert two["batch_mean"] == {"frontend": 3.0} and two["cpu_util"] is not None
    assert two["server_emission_p50_s"] == pytest.approx(0.05, abs=1e-3)
    assert 0 <= two["emission_p50_s"] <= two["emission_p95_s"] < 0.5  # localhost, no model
    assert two["client_late_frames"] == 0
    assert four["refused"] == 1 and four["errors"] == {"full": 1} and four["frames"] == 225
    assert four["failed"].startswith("streams refused or broken: full x1")
    assert report["sustained"] == 2
    assert json.loads((tmp_path / "r.json").read_text()) == report
    assert len(lines) == 2 and lines[0].endswith("| ok") and "FAILED" in lines[1]


def test_an_unreachable_server_is_one_input_error(tmp_path):
    video = tmp_path / "v.mp4"
    video.write_bytes(b"")
    with pytest.raises(InputError, match="cannot reach lipx serve at http://127.0.0.1:9"):
        bench_serve(BenchServeOptions("ws://127.0.0.1:9", video, seconds=1))
