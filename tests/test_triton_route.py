"""The Triton route: a stream whose engine calls go to a Triton server (``--triton URL``).

No Triton server can be installed here, so the server is a stand-in that speaks the same KServe
v2 HTTP protocol with Triton's binary tensor extension and serves the repository ``lipx export
--format triton`` writes: each model directory's ``1/model.onnx`` under its directory's name, run
by onnxruntime. What is tested is the client side (the runner, its wire format, the model names,
the stream's state kept locally) and the repository's layout, not Triton itself.
"""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("aiohttp")

from aiohttp import web  # noqa: E402
from background_app import BackgroundApp  # noqa: E402
from serve_helpers import Recorder, stream_alone  # noqa: E402

from lipx.errors import BackendUnavailableError, InputError  # noqa: E402
from lipx.export.triton import TritonSettings, write_repository  # noqa: E402
from lipx.package import Package  # noqa: E402
from lipx.runtime.ort_runner import OrtRunner  # noqa: E402
from lipx.runtime.stream import StreamOptions, stream  # noqa: E402
from lipx.runtime.triton_runner import (  # noqa: E402
    HEADER,
    decode_response,
    encode_request,
    encode_response,
    parse_request,
    triton_model_name,
)

WORDS = StreamOptions(threshold=0.0, agreement=1)


class StandIn:
    """A v2-protocol server over a Triton model repository (see the module docstring)."""

    def __init__(self, repository: Path) -> None:
        self.runners = {}
        for model in sorted(repository.iterdir()):
            graph = model / "1" / "model.onnx"
            if graph.is_file() and (model / "config.pbtxt").is_file():
                runner = OrtRunner(graph, device="cpu", threads=1, name=model.name)
                runner.activate()
                self.runners[model.name] = runner
        self.requests = {name: 0 for name in self.runners}
        self.app = BackgroundApp([web.get("/v2/models/{name}/ready", self._ready),
                                  web.post("/v2/models/{name}/infer", self._infer)],
                                 client_max_size=64 << 20)
        self.url = self.app.url

    async def _ready(self, request: web.Request) -> web.Response:
        return web.Response(status=200 if request.match_info["name"] in self.runners else 404)

    async def _infer(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in self.runners:
            return web.Response(status=404, text=f"no model {name}")
        inputs, wanted = parse_request(await request.read(), request.headers)
        outputs = self.runners[name].infer(inputs)
        self.requests[name] += 1
        body, length = encode_response(name, {k: outputs[k] for k in wanted})
        return web.Response(body=body, headers={HEADER: length})

    def close(self) -> None:
        self.app.stop()
        for runner in self.runners.values():
            runner.deactivate()


@pytest.fixture(scope="module")
def triton(packages, tmp_path_factory):
    """Both tiny packages' repositories (as ``lipx export --format triton`` writes them) behind
    one stand-in server."""
    repository = tmp_path_factory.mktemp("triton")
    for task in ("lipreading", "lip2speech"):
        package = Package.open(packages[task])
        write_repository(package.manifest, package.dir, repository, TritonSettings(kind="cpu"))
    server = StandIn(repository)
    yield server
    server.close()


def test_wire_format_round_trips():
    feeds = {"video": np.random.default_rng(0).random((2, 1, 7, 4, 4), dtype=np.float32),
             "ids": np.arange(6, dtype=np.int64).reshape(2, 3)}
    body, headers = encode_request(feeds, ["features"])
    got, wanted = parse_request(body, headers)
    assert wanted == ["features"]
    for name, array in feeds.items():
        np.testing.assert_array_equal(got[name], array)
        assert got[name].dtype == array.dtype
    reply, length = encode_response("m", {"features": feeds["video"][:, 0] * 2,
                                          "half": feeds["video"].astype(np.float16)})
    back = decode_response(reply, {HEADER.lower(): length})
    np.testing.assert_array_equal(back["features"], feeds["video"][:, 0] * 2)
    assert back["half"].dtype == np.float16 and back["half"].shape == (2, 1, 7, 4, 4)


def test_a_stream_through_triton_reads_what_it_reads_here(triton, packages, face_video):
    here = stream_alone(packages["lipreading"], face_video, WORDS).words
    rec = Recorder()
    stream(packages["lipreading"], str(face_video),
           StreamOptions(threshold=0.0, agreement=1, triton=triton.url), [rec])
    assert rec.words == here and here
    manifest = Package.open(packages["lipreading"]).manifest
    calls = {role: triton.requests[triton_model_name(manifest, role)]
             for role in ("frontend", "backend", "model")}
    assert calls["frontend"] > 0 and calls["backend"] > 0
    assert calls["model"] == 0  # the ring buffer is here, not on the server


def test_speech_through_triton_is_the_speech_here(triton, packages, face_video):
    here = stream_alone(packages["lip2speech"], face_video, StreamOptions()).audio
    rec = Recorder()
    stream(packages["lip2speech"], str(face_video), StreamOptions(triton=triton.url), [rec])
    np.testing.assert_allclose(np.concatenate([c.samples for c in rec.audio]),
                               np.concatenate([c.samples for c in here]), atol=1e-4)


def test_triton_errors_are_one_clear_line(triton, packages, face_video, tmp_path):
    with pytest.raises(InputError, match="--triton must be"):
        StreamOptions(triton="grpc://host:8001")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    with pytest.raises(BackendUnavailableError, match="Triton server"):
        stream(packages["lipreading"], str(face_video),
               StreamOptions(triton=f"http://127.0.0.1:{closed}"), [Recorder()])
    empty = StandIn(tmp_path)  # serves no model
    try:
        with pytest.raises(BackendUnavailableError, match="no ready model"):
            stream(packages["lipreading"], str(face_video), StreamOptions(triton=empty.url),
                   [Recorder()])
    finally:
        empty.close()
