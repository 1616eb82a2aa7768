"""``lipx serve`` for real: a server subprocess on a free port, streams from the Python client and
from bare protocol clients. Streams served together read what each reads alone; every fault
gets its refusal and leaves the other streams alone."""

from __future__ import annotations

import asyncio
import json
import shutil
import ssl
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("aiohttp")

from serve_fixtures import held_out_streams  # noqa: E402
from serve_helpers import (  # noqa: E402
    Served,
    exchange,
    frames_of,
    hello,
    in_threads,
    run,
    stream_alone,
    stream_served,
)
from stream_fixtures import write_video  # noqa: E402

from lipx.runtime.stream import StreamOptions  # noqa: E402
from lipx.serve.protocol import encode_jpeg, frame_message  # noqa: E402

WORDS = StreamOptions(threshold=0.0, agreement=1)
"""The tiny random model's every window is a word: many words to compare."""
LIP, SPEECH = "tiny-lipreading", "tiny-lip2speech"


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> list[Path]:
    """Four different face videos (3-5 s)."""
    folder = tmp_path_factory.mktemp("serve-videos")
    return [write_video(folder / f"v{i}.mp4", 75 + 12 * i, seed=10 + i) for i in range(4)]


@pytest.fixture(scope="module")
def server(packages):
    # one onnxruntime thread per call, as a local stream: with more, its sums split by batch
    # size and round differently (1e-6), and Griffin-Lim's phase carries that to 1e-2 in samples
    served = Served(packages["lipreading"], packages["lip2speech"], "--threads", "1",
                    "--max-streams", "6",
                    "--idle-timeout", "3", "--max-message-bytes", "300000")
    yield served
    assert served.stop() == 0, served.stderr


async def _leave_midway(url: str, video: Path) -> int:
    """A client that sends half a video and disconnects without a word."""
    import aiohttp

    frames = frames_of(video)
    async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:
        await ws.send_str(hello(model=LIP, live=False))
        await ws.receive_json()
        for k, image in enumerate(frames[: len(frames) // 2]):
            await ws.send_bytes(frame_message(k / 25, encode_jpeg(image)))
    return len(frames) // 2


def test_streams_served_together_read_what_each_reads_alone(server, packages, videos):
    alone = [stream_alone(packages["lipreading"], v, WORDS).words for v in videos]
    assert all(alone)
    together = in_threads(
        *[(stream_served, (server, v, LIP, WORDS)) for v in videos[:3]],
        (stream_served, (server, videos[3], LIP, WORDS, 0.5)),  # joins mid-way
        (lambda: run(_leave_midway(server.ws, videos[0])), ()),  # leaves mid-way
    )
    assert [r.words for r in together[:4]] == alone
    assert server.get("/healthz")[0] == 200
    assert server.metric("lipx_batch_size_count") > 0


def test_speech_served_together_is_the_speech_alone(server, packages, videos):
    opts = StreamOptions()
    alone = stream_alone(packages["lip2speech"], videos[1], opts).audio
    together = in_threads(*[(stream_served, (server, videos[1], SPEECH, opts)) for _ in range(3)])
    want = np.concatenate([c.samples for c in alone])
    for rec in together:
        assert [round(c.start_s, 4) for c in rec.audio] == [round(c.start_s, 4) for c in alone]
        np.testing.assert_allclose(np.concatenate([c.samples for c in rec.audio]), want,
                                   atol=1e-4)


@pytest.mark.parametrize("messages, code, close", [
    (["not json"], "bad_message", 1008),
    ([b"LXF1" + bytes(20)], "bad_message", 1008),
    ([hello(protocol=2, model=LIP)], "unsupported_protocol", 1008),
    ([hello(model="nope")], "unknown_model", 1008),
    ([hello()], "unknown_model", 1008),  # two are served: the client must say which
    ([hello(model=LIP, options={"threshold": 2.0})], "bad_options", 1008),
    ([hello(model=LIP, options={"window": 3, "stride": 5})], "bad_options", 1008),
    ([hello(model=LIP, options={"colour": 1})], "bad_options", 1008),
    ([hello(model=LIP, format="gray", width=8, height=8)], "bad_message", 1008),
    ([hello(model=LIP), b"XXXX" + bytes(30)], "bad_message", 1008),
    ([hello(model=LIP), frame_message(0.0, b"\xff\xd8 not a jpeg")], "bad_message", 1008),
    ([hello(model=LIP, format="gray", width=16, height=16), frame_message(0.0, bytes(10))],
     "bad_message", 1008),
    ([hello(model=LIP), '{"type": "pause"}'], "bad_message", 1008),
])
def test_a_bad_message_gets_its_refusal_in_one_line(server, messages, code, close):
    got, closed = run(exchange(server.ws, messages))
    errors = [m for m in got if isinstance(m, dict) and m["type"] == "error"]
    assert [e["code"] for e in errors] == [code], got
    assert errors[0]["reason"] and "\n" not in errors[0]["reason"]
    assert closed == close


def test_an_oversized_message_closes_with_1009(server):
    got, closed = run(exchange(server.ws, [hello(model=LIP), frame_message(0.0, bytes(400_000))]))
    assert closed == 1009


@pytest.mark.slow  # the fast lane keeps under 2 minutes
def test_a_stalled_client_is_ended_after_the_idle_timeout(server):
    got, closed = run(exchange(server.ws, [], timeout=20))
    assert [m["code"] for m in got] == ["idle"] and closed == 1008
    got, closed = run(exchange(server.ws, [hello(model=LIP)], timeout=20))  # hello, no frames
    assert got[0]["type"] == "ready" and got[-1]["code"] == "idle"


def test_beyond_max_streams_a_connection_is_told_the_server_is_full(server, videos):
    import aiohttp

    async def crowd() -> tuple[list, int | None]:
        async with aiohttp.ClientSession() as http:
            held = [await http.ws_connect(server.ws) for _ in range(6)]
            for ws in held:
                await ws.send_str(hello(model=LIP))
                assert (await ws.receive_json())["type"] == "ready"
            one_more = await exchange(server.ws, [], timeout=10)
            for ws in held:
                await ws.close()
            return one_more

    got, closed = run(crowd())
    assert [m["code"] for m in got] == ["full"] and "full" in got[0]["reason"]
    assert closed == 1013
    deadline = time.monotonic() + 10
    while server.metric("lipx_streams_active") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert server.metric("lipx_streams_active") == 0  # the held ones were let go


def test_metrics_and_health_answer(server):
    status, text = server.get("/healthz")
    assert status == 200
    status, text = server.get("/metrics")
    for name in ("lipx_streams_active", "lipx_frames_received_total", "lipx_batch_size_bucket",
                 "lipx_emission_seconds_bucket", "lipx_step_seconds_bucket",
                 "process_cpu_seconds_total", "lipx_server_rss_bytes"):
        assert name in text
    status, text = server.get("/models")
    assert status == 200 and LIP in text and SPEECH in text


def test_sigterm_ends_live_streams_with_their_last_results(packages, videos):
    import aiohttp

    served = Served(packages["lipreading"])
    frames = frames_of(videos[2])

    async def live_stream() -> tuple[list, int | None]:
        got: list = []
        async with aiohttp.ClientSession() as http, http.ws_connect(served.ws) as ws:
            await ws.send_str(hello(options={"threshold": 0.0, "agreement": 1}))
            await ws.receive_json()

            async def read() -> None:  # a camera client reads while it sends
                async for msg in ws:
                    got.append(msg.json())

            reader = asyncio.create_task(read())
            for k, image in enumerate(frames):
                if reader.done():
                    break
                try:
                    await ws.send_bytes(frame_message(k / 25, encode_jpeg(image)))
                except ConnectionError:  # the server ended the stream meanwhile
                    break
                await asyncio.sleep(0.04)
                if k == 50:
                    served.proc.terminate()
            await reader
            return got, ws.close_code

    got, closed = run(live_stream())
    assert served.proc.wait(60) == 0, served.stderr
    assert got[-1]["type"] == "end" and "shutting down" in got[-1]["reason"]
    assert any(m["type"] == "word" for m in got)  # the window in flight was flushed
    assert closed == 1001
    assert "stream " in served.stderr and "shutdown" in served.stderr  # its log line


@pytest.mark.slow
def test_memory_stays_flat_over_a_thousand_connections(packages, videos):
    import aiohttp

    served = Served(packages["lipreading"], "--max-streams", "64")
    images = [encode_jpeg(f) for f in frames_of(videos[0])[:8]]

    async def cycles(n: int) -> None:
        async with aiohttp.ClientSession() as http:
            async def one() -> None:
                async with http.ws_connect(served.ws) as ws:
                    await ws.send_str(hello())
                    await ws.receive_json()
                    for k, image in enumerate(images):
                        await ws.send_bytes(frame_message(k / 25, image))
            for _ in range(n // 8):
                await asyncio.gather(*(one() for _ in range(8)))

    try:
        run(cycles(200))
        time.sleep(1)
        before = served.metric("lipx_server_rss_bytes")
        run(cycles(1000))
        time.sleep(1)
        after = served.metric("lipx_server_rss_bytes")
        assert served.metric("lipx_streams_total") == 1200
    finally:
        assert served.stop() == 0
    assert after - before < 20e6, (before / 1e6, after / 1e6)


def test_cli_errors_are_one_line(run_cli, tmp_path, videos):
    code, _, err = run_cli("stream", videos[0], "--server", "ftp://x")
    assert code == 1 and "--server must be ws://" in err
    code, _, err = run_cli("stream", videos[0], "--server", "ws://127.0.0.1:9")
    assert code == 1 and "server ws://127.0.0.1:9" in err
    code, _, err = run_cli("stream", videos[0])
    assert code == 1 and "--model" in err
    code, _, err = run_cli("serve", tmp_path / "missing")
    assert code == 1 and "error" in err
    code, _, err = run_cli("serve", tmp_path, "--max-batch", "0")
    assert code == 1 and "--max-batch" in err


def test_lipx_stream_through_a_server_writes_what_a_local_stream_writes(server, packages, videos,
                                                                        run_cli, tmp_path):
    args = ("--threshold", "0", "--agreement", "1")
    code, _, err = run_cli("stream", videos[2], "--model", packages["lipreading"], *args,
                           "--jsonl", tmp_path / "local.jsonl", "--srt", tmp_path / "local.srt")
    assert code == 0, err
    code, _, err = run_cli("stream", videos[2], "--server", server.ws, "--model", LIP, *args,
                           "--jsonl", tmp_path / "remote.jsonl", "--srt", tmp_path / "remote.srt",
                           "--save", tmp_path / "remote.mp4")
    assert code == 0, err

    def words(name: str) -> list:
        rows = [json.loads(line) for line in (tmp_path / name).read_text().splitlines()]
        return [(r["word"], r["start_s"], r["end_s"]) for r in rows if r["type"] == "word"]

    assert words("remote.jsonl") == words("local.jsonl") and words("local.jsonl")
    assert (tmp_path / "remote.srt").read_text() == (tmp_path / "local.srt").read_text()
    assert len(frames_of(tmp_path / "remote.mp4")) == len(frames_of(videos[2]))


def test_tls_serves_wss(packages, videos, tmp_path):
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed (it makes the test's certificate)")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-keyout", key, "-out", cert],
                   check=True, capture_output=True)
    served = Served(packages["lipreading"], "--certfile", cert, "--keyfile", key)
    try:
        assert served.url.startswith("https://")
        context = ssl.create_default_context(cafile=str(cert))
        context.check_hostname = False

        async def over_tls() -> list:
            import aiohttp

            async with aiohttp.ClientSession() as http, http.ws_connect(
                    "wss" + served.url[5:] + "/ws", ssl=context) as ws:
                await ws.send_str(hello(model=LIP))
                return [await ws.receive_json()]

        assert run(over_tls())[0]["type"] == "ready"
    finally:
        assert served.stop() == 0


@pytest.mark.slow
def test_held_out_streams_served_together_read_what_each_reads_alone(shipped_lipreading_package,
                                                                      tmp_path):
    """The trained package, three held-out test streams at once, batched: each reads the words
    (and times) it reads alone, and those are the words said."""
    streams = held_out_streams(tmp_path / "streams", 3)
    alone = [stream_alone(shipped_lipreading_package, video, StreamOptions()).words
             for video, _ in streams]
    served = Served(shipped_lipreading_package, "--threads", "1")
    try:
        name = json.loads(served.get("/models")[1])["models"][0]["name"]
        together = in_threads(*[(stream_served, (served, video, name, StreamOptions()))
                              for video, _ in streams])
    finally:
        assert served.stop() == 0, served.stderr
    assert [r.words for r in together] == alone
    for (_, said), words in zip(streams, alone):
        read = [w for w, _, _ in words]
        assert sum(w in read for w in said) >= len(said) / 2, (said, read)
