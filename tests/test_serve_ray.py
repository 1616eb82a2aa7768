"""``lipx serve --ray`` on a real local cluster: ``ray start --head`` (2 CPUs), a 2-replica
deployment of the tiny packages and the shipped lipreading package. Streams through Ray read what
each reads alone, on both replicas; a killed replica's streams reconnect as new sessions while
the other replica's streams go on untouched; the page reconnects too; ``bench-serve`` runs
against it; a stop ends every stream with its results; live streams make the autoscaler add a
replica.

Marked ``ray``: run by ``make test-ray`` (``pytest --ray``), which installs ``lipx[ray]``; plain
``make test`` deselects them. The cluster is stopped with ``ray stop`` at the end (which stops
every Ray process of this user on the machine).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("ray", reason="needs lipx[ray]")

from serve_helpers import Recorder, Served, hello, in_threads, run, stream_alone  # noqa: E402

from lipx.runtime.stream import StreamOptions  # noqa: E402
from lipx.serve.client import stream_remote  # noqa: E402

pytestmark = [pytest.mark.ray, pytest.mark.timeout(600)]

WORDS = StreamOptions(threshold=0.0, agreement=1)
"""The tiny random model's every window is a word: many words to compare."""
LIP, SPEECH, TRAINED = "tiny-lipreading", "tiny-lip2speech", "lipreading"
RAY = Path(sys.executable).with_name("ray")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def cluster():
    """A Ray head on this machine, as a user starts one: its address."""
    port = _free_port()
    started = subprocess.run(
        [str(RAY), "start", "--head", f"--port={port}", "--num-cpus=2", "--num-gpus=0",
         "--include-dashboard=false", "--disable-usage-stats"],
        capture_output=True, text=True, timeout=180)
    assert started.returncode == 0, started.stdout + started.stderr
    yield f"127.0.0.1:{port}"
    subprocess.run([str(RAY), "stop"], capture_output=True, timeout=180)


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> list[Path]:
    from stream_fixtures import write_video

    folder = tmp_path_factory.mktemp("ray-videos")
    return [write_video(folder / f"v{i}.mp4", 100 + 12 * i, seed=20 + i) for i in range(4)]


@pytest.fixture(scope="module")
def served(cluster, packages, shipped_lipreading_package):
    """``lipx serve --ray`` with two replicas (threads 1: sums as a local stream's)."""
    server = Served(packages["lipreading"], packages["lip2speech"], shipped_lipreading_package,
                    "--threads", "1", "--max-streams", "8", "--ray", cluster,
                    "--replicas", "2", "--cpus-per-replica", "1")
    yield server
    if server.proc.poll() is None:
        server.stop()


class Sessions(Recorder):
    """What a stream through the Python client made and saw: its words and audio, each
    session's server, each loss (and how many words had come before it), the last session's
    statistics."""

    def __init__(self) -> None:
        super().__init__()
        self.servers: list[str] = []
        self.lost: list[str] = []
        self.words_before_loss: list[int] = []
        self.started = threading.Event()
        self.stats = None

    def on_session(self, ready: dict) -> None:
        self.servers.append(ready["server"])
        self.started.set()

    def on_lost(self, why: str) -> None:
        self.lost.append(why)
        self.words_before_loss.append(len(self.words))


def _through(server: Served, video: Path, model: str, opts: StreamOptions,
             seen: Sessions) -> Sessions:
    seen.stats = stream_remote(server.ws, str(video), opts, lambda manifest: [seen],
                               model=model, on_lost=seen.on_lost, on_session=seen.on_session)
    return seen


def test_streams_through_ray_read_what_each_reads_alone(served, packages, videos):
    alone = [stream_alone(packages["lipreading"], v, WORDS).words for v in videos]
    speech_alone = stream_alone(packages["lip2speech"], videos[0], StreamOptions()).audio
    seen = [Sessions() for _ in range(5)]
    got = in_threads(*[(_through, (served, v, LIP, WORDS, s)) for v, s in zip(videos, seen)],
                     (_through, (served, videos[0], SPEECH, StreamOptions(), seen[4])))
    assert [r.words for r in got[:4]] == alone
    servers = {s.servers[0] for s in seen}
    for i in range(10):  # Ray's router may send a burst to one replica: more, one at a time
        if len(servers) == 2:
            break
        one = _through(served, videos[i % 4], LIP, WORDS, Sessions())
        assert one.words == alone[i % 4]
        servers.add(one.servers[0])
    assert len(servers) == 2, "the streams should use both replicas"
    assert not any(s.lost for s in seen)
    import numpy as np

    np.testing.assert_allclose(np.concatenate([c.samples for c in got[4].audio]),
                               np.concatenate([c.samples for c in speech_alone]), atol=1e-4)


@pytest.fixture(scope="module")
def long_videos(tmp_path_factory) -> list[Path]:
    """Four 20 s videos: recordings that are still streaming when a replica is killed."""
    from stream_fixtures import write_video

    folder = tmp_path_factory.mktemp("ray-long-videos")
    return [write_video(folder / f"long{i}.mp4", 500, seed=40 + i) for i in range(4)]


def test_a_killed_replica_loses_only_its_streams(served, packages, long_videos):
    """A camera-paced stream and three recordings (read without dropping a frame) over two
    replicas; the camera's replica is killed (SIGKILL) mid-way. The camera reconnects as a new
    session on a live replica and reads on; a recording on the dead replica either reconnects
    too or, when it had already sent every frame (Ray's proxy buffers them), ends with one
    clear error; the other replica's recordings read exactly what they read alone."""
    from lipx.errors import InputError

    videos = long_videos
    alone = [stream_alone(packages["lipreading"], v, WORDS).words for v in videos]
    seen = [Sessions() for _ in videos]
    results: list = [None] * len(videos)
    errors: list = [None] * len(videos)
    camera = StreamOptions(threshold=0.0, agreement=1, realtime=True)

    def run(i: int) -> None:
        try:
            results[i] = _through(served, videos[i], LIP, camera if i == 0 else WORDS, seen[i])
        except InputError as e:
            errors[i] = e

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(videos))]
    for t in threads:
        t.start()
    for s in seen:
        assert s.started.wait(60)
    time.sleep(1.5)
    victim = seen[0].servers[0]
    os.kill(int(victim.rsplit(":", 1)[1]), signal.SIGKILL)
    killed_at = time.monotonic()
    for t in threads:
        t.join(120)
    on_victim = [i for i, s in enumerate(seen) if s.servers[0] == victim]
    others = [i for i in range(len(videos)) if i not in on_victim]
    assert others, f"every stream was on one replica: {[s.servers for s in seen]}"
    for i in others:
        assert errors[i] is None and not seen[i].lost and len(seen[i].servers) == 1
        assert results[i].words == alone[i]
    for i in on_victim:
        if errors[i] is not None:  # a recording that had sent everything: nothing to resume
            assert i != 0 and "before its end" in str(errors[i]), errors[i]
            continue
        assert len(seen[i].lost) == 1 and "lost the stream" in seen[i].lost[0], seen[i].lost
        assert len(seen[i].servers) == 2 and seen[i].servers[1] != victim
        assert results[i].stats.frames_out > 0, results[i].stats
        if i > 0:  # a recording: what came before the loss is what it reads alone
            before = seen[i].words_before_loss[0]
            assert results[i].words[:before] == alone[i][:before]
    assert results[0] is not None and results[0].words, errors[0]
    assert time.monotonic() - killed_at < 60
    # Ray restarts the replica: the deployment is whole again and serves a fresh stream
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and served.get("/healthz")[0] != 200:
        time.sleep(1)
    again = _through(served, videos[1], LIP, WORDS, Sessions())
    assert again.words == alone[1]


def test_bench_serve_through_ray(served, videos, tmp_path):
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, "-c", "from lipx.cli import main; main()", "bench-serve", served.ws,
         "--video", str(videos[0]), "--model", LIP, "--streams", "2,4", "--seconds", "4",
         "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    runs = json.loads(out.read_text())["runs"]
    assert [r["streams"] for r in runs] == [2, 4]
    assert all(r["frames"] > 0 and not r["unaccounted"] and not r["errors"] for r in runs), runs


def test_page_through_ray_reconnects_when_its_replica_dies(served, held_out_stream, tmp_path):
    from browser_helpers import (
        CHROMIUM,
        common_words,
        mp4_to_y4m,
        stream_in_browser,
    )

    if not CHROMIUM.is_file():
        pytest.skip(f"needs Debian's chromium at {CHROMIUM}")
    video, said = held_out_stream
    y4m = tmp_path / "camera.y4m"
    duration = mp4_to_y4m(video, y4m)
    killed: list[str] = []

    def kill_its_replica(page) -> None:
        page.wait_for_timeout(3000)
        server = page.get_attribute("#status", "data-server")
        killed.append(server)
        os.kill(int(server.rsplit(":", 1)[1]), signal.SIGKILL)

    read, statuses, console = stream_in_browser(served, y4m, duration, during=kill_its_replica,
                                                query=f"model={TRAINED}&crop=lrw")
    context = f"said {said}\nread {read}\nstatuses {statuses}\nconsole {console}"
    assert killed and any(s.startswith("reconnecting") for s in statuses), context
    assert statuses[-1] == "ended", context
    assert statuses.index("ended") > max(i for i, s in enumerate(statuses)
                                         if s.startswith("reconnecting")), context
    # what the lost window held is lost; the rest is read
    assert common_words([w.upper() for w in said], [w.upper() for w in read]) >= len(said) / 3, \
        context


def test_stop_ends_every_stream_with_its_results(served, tmp_path):
    """SIGTERM: the replicas end their streams (each gets its results and an end with the
    reason), then the deployment is deleted and the command exits 0."""
    from stream_fixtures import write_video

    video = write_video(tmp_path / "long.mp4", 25 * 20, seed=30)  # outlasts the stop
    paced = StreamOptions(threshold=0.0, agreement=1, realtime=True)
    seen = [Sessions() for _ in range(2)]
    results: list = [None, None]

    def run(i: int) -> None:
        results[i] = _through(served, video, LIP, paced, seen[i])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for s in seen:
        assert s.started.wait(60)
    time.sleep(1.5)
    assert served.stop() == 0, served.stderr
    for t in threads:
        t.join(120)
    for s, r in zip(seen, results):
        assert r is not None and r.words, served.stderr
        assert s.lost and "shutting down" in s.lost[-1], s.lost
        assert r.stats.frames_out < 25 * 20  # ended by the stop, not by the video
    assert "deployment deleted" in served.stderr


async def _serving_process(url: str) -> str:
    """A stream that starts and leaves at once: the process (replica) its session ran on."""
    import aiohttp

    async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:
        await ws.send_str(hello(model=LIP, live=False))
        ready = await ws.receive_json(timeout=60)
        await ws.send_str('{"type": "end"}')
        return ready["server"]


def test_autoscaling_adds_a_replica_for_live_streams(cluster, packages, tmp_path):
    """One replica, at most two, aiming at one stream each: three live streams make Ray start
    the second replica, and a new stream then runs there."""
    from stream_fixtures import write_video

    server = Served(packages["lipreading"], "--threads", "1", "--ray", cluster,
                    "--replicas", "1", "--max-replicas", "2", "--target-streams", "1",
                    "--cpus-per-replica", "1")
    try:
        video = write_video(tmp_path / "long.mp4", 25 * 60, seed=31)
        paced = StreamOptions(realtime=True)
        seen = [Sessions() for _ in range(3)]
        threads = [threading.Thread(target=_through, args=(server, video, LIP, paced, s),
                                    daemon=True) for s in seen]
        for t in threads:
            t.start()
        for s in seen:
            assert s.started.wait(60)
        first = {s.servers[0] for s in seen}
        assert len(first) == 1, "one replica to begin with"
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            other = run(_serving_process(server.ws))
            if other not in first:
                break
            time.sleep(2)
        assert other not in first, f"no second replica within 90 s:\n{server.stderr}"
    finally:
        assert server.stop() == 0, server.stderr


def test_ray_options_refuse_clearly():
    from lipx.errors import InputError
    from lipx.serve.ray import RayOptions, build
    from lipx.serve.server import ServeOptions

    for bad, message in [({"replicas": 0}, "--replicas"), ({"max_replicas": 0}, "--max-replicas"),
                         ({"target_streams": 0}, "--target-streams"),
                         ({"cpus_per_replica": 0}, "--cpus-per-replica"),
                         ({"gpus_per_replica": -1}, "--gpus-per-replica")]:
        with pytest.raises(InputError, match=message):
            RayOptions(**bad)
    with pytest.raises(InputError, match="cannot exceed --max-streams"):
        RayOptions(replicas=1, max_replicas=2, target_streams=9).deployment_options(
            ServeOptions(max_streams=8), gpus=0)
    scaled = RayOptions(replicas=1, max_replicas=3).deployment_options(
        ServeOptions(max_streams=8), gpus=1)
    assert scaled["autoscaling_config"]["target_ongoing_requests"] == 6
    assert scaled["autoscaling_config"]["max_replicas"] == 3
    assert scaled["ray_actor_options"] == {"num_cpus": 1.0, "num_gpus": 1}
    fixed = RayOptions(replicas=2).deployment_options(ServeOptions(), gpus=0)
    assert fixed["num_replicas"] == 2 and "num_gpus" not in fixed["ray_actor_options"]
    with pytest.raises(InputError, match="packages="):
        build({})
    with pytest.raises(InputError, match="unknown argument"):
        build({"packages": "p", "colour": "red"})
    with pytest.raises(InputError, match="must be a number"):
        build({"packages": "p", "replicas": "two"})


def test_serve_ray_without_a_cluster_is_one_clear_line(run_cli, packages, tmp_path):
    code, _, err = run_cli("serve", packages["lipreading"], "--ray", "127.0.0.1:1")
    assert code != 0 and "cannot reach a Ray cluster" in err and "Traceback" not in err
    code, _, err = run_cli("serve", tmp_path, "--ray", "local")
    assert code != 0 and "Traceback" not in err
