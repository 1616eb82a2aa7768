"""A package's graph run by a Triton Inference Server: the streaming route for users of Triton.

    runner = TritonRunner("http://triton:8000", manifest, "frontend")
    with runner:
        outputs = runner.infer({"video": clips})         # one request; Triton batches many

``lipx export --format triton`` writes a model repository whose front-end and back-end are
separate, dynamically batched models (:mod:`lipx.export.triton`). A stream's state (the feature
ring, the head, the clocks) is not a model's: it stays with the client, in its
:class:`~lipx.runtime.session.Session`, and only the engine calls go to the server, through this
runner (``lipx stream --triton URL``; ``lipx serve --triton URL`` sends its batched calls there).
Triton's dynamic batcher then merges the calls of every client of the server.

The wire format is the KServe v2 HTTP/REST inference protocol with Triton's binary tensor data
extension (``POST /v2/models/NAME/infer``: a JSON header, its length in
``Inference-Header-Content-Length``, then each tensor's little-endian bytes), spoken with the
standard library: no client package. Torch-free.
"""

from __future__ import annotations

import http.client
import json
import re
import threading
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from lipx.errors import BackendUnavailableError, InputError
from lipx.package import Manifest, TensorInfo
from lipx.runtime.runner import Runner

DATATYPES = {"float32": "FP32", "float16": "FP16", "int64": "INT64", "int32": "INT32",
             "bool": "BOOL", "uint8": "UINT8"}
"""numpy dtype name -> the v2 protocol's datatype."""
DTYPES = {v: k for k, v in DATATYPES.items()}
HEADER = "Inference-Header-Content-Length"
TIMEOUT_S = 30.0


def triton_model_name(manifest: Manifest, role: str | None = None) -> str:
    """The Triton model of a package's graph (``<name>_<role>``) or its ensemble (None)."""
    base = re.sub(r"[^A-Za-z0-9_]+", "_", manifest.model_name).strip("_") or manifest.task
    return f"{base}_{role}" if role else base


def triton_url(url: str) -> tuple[str, int]:
    """``http://HOST:PORT`` -> (host, port); InputError otherwise."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise InputError(f"--triton must be a Triton server's http://HOST:PORT, got {url!r}")
    return parts.hostname, parts.port or 8000


class TritonRunner(Runner):
    """One graph of a package (``frontend``, ``backend`` or ``model``) on a Triton server.

    Args:
        url: the server's HTTP endpoint, ``http://HOST:PORT``.
        manifest: the package's manifest: the graph's inputs and outputs, the model's name.
        role: which graph.
        precision: which of the package's graphs the repository serves (its ``--precision``).
    """

    concurrent = True  # a connection per thread

    def __init__(self, url: str, manifest: Manifest, role: str, precision: str = "fp32") -> None:
        super().__init__(f"triton:{triton_model_name(manifest, role)}")
        self.host, self.port = triton_url(url)
        self.url = url
        self.graph = manifest.graph(role, precision)
        self.model = triton_model_name(manifest, role)
        self._local = threading.local()

    def _connection(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = http.client.HTTPConnection(self.host, self.port,
                                                                 timeout=TIMEOUT_S)
        return conn

    def _request(self, method: str, path: str, body: bytes | None = None,
                 headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        """One request on this thread's connection (opened again once if the server closed
        it); (status, headers, body)."""
        for attempt in (0, 1):
            conn = self._connection()
            try:
                conn.request(method, path, body=body, headers=headers or {})
                response = conn.getresponse()
                return response.status, dict(response.getheaders()), response.read()
            except (ConnectionError, http.client.HTTPException, OSError) as e:
                conn.close()
                self._local.conn = None
                if attempt:
                    raise BackendUnavailableError(f"Triton server {self.url}: "
                                                  f"{str(e) or type(e).__name__}") from None
        raise AssertionError("unreachable")

    def _activate(self) -> None:
        status, _, body = self._request("GET", f"/v2/models/{self.model}/ready")
        if status != 200:
            raise BackendUnavailableError(
                f"Triton server {self.url} has no ready model {self.model!r} (HTTP {status}); "
                f"serve the package's repository (lipx export --format triton) there")

    def _deactivate(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def _input_metadata(self) -> dict[str, TensorInfo]:
        return {t.name: t for t in self.graph.inputs}

    def _output_metadata(self) -> dict[str, TensorInfo]:
        return {t.name: t for t in self.graph.outputs}

    def _infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        start = time.perf_counter()
        body, headers = encode_request(feeds, [t.name for t in self.graph.outputs])
        status, answer_headers, answer = self._request(
            "POST", f"/v2/models/{self.model}/infer", body, headers)
        if status != 200:
            raise BackendUnavailableError(f"Triton server {self.url}, model {self.model}: HTTP "
                                          f"{status}: {answer[:300].decode(errors='replace')}")
        outputs = decode_response(answer, answer_headers)
        self.last_latency_s = time.perf_counter() - start
        return {t.name: outputs[t.name] for t in self.graph.outputs}


def encode_request(feeds: Mapping[str, np.ndarray], outputs: list[str]
                   ) -> tuple[bytes, dict[str, str]]:
    """An inference request: the JSON header, then every input's bytes (binary extension)."""
    arrays = [np.ascontiguousarray(a) for a in feeds.values()]
    header = {"inputs": [{"name": name, "shape": list(a.shape),
                          "datatype": DATATYPES[a.dtype.name],
                          "parameters": {"binary_data_size": a.nbytes}}
                         for name, a in zip(feeds, arrays)],
              "outputs": [{"name": name, "parameters": {"binary_data": True}}
                          for name in outputs]}
    text = json.dumps(header).encode()
    body = b"".join([text, *(a.astype(a.dtype.newbyteorder("<"), copy=False).tobytes()
                             for a in arrays)])
    return body, {HEADER: str(len(text)), "Content-Type": "application/octet-stream"}


def decode_response(body: bytes, headers: Mapping[str, str]) -> dict[str, np.ndarray]:
    """An inference response's outputs (binary after the JSON header, or JSON ``data``)."""
    length = _header_length(headers, len(body))
    header = json.loads(body[:length])
    offset = length
    outputs: dict[str, np.ndarray] = {}
    for out in header.get("outputs", []):
        dtype = np.dtype(DTYPES[out["datatype"]]).newbyteorder("<")
        size = (out.get("parameters") or {}).get("binary_data_size")
        if size is None:
            data = np.asarray(out["data"], dtype=dtype)
        else:
            data = np.frombuffer(body, dtype=dtype, count=size // dtype.itemsize, offset=offset)
            offset += size
        outputs[out["name"]] = data.reshape(out["shape"]).astype(dtype.newbyteorder("="))
    return outputs


def _header_length(headers: Mapping[str, str], total: int) -> int:
    for key, value in headers.items():
        if key.lower() == HEADER.lower():
            return int(value)
    return total


def parse_request(body: bytes, headers: Mapping[str, str]) -> tuple[dict[str, np.ndarray],
                                                                      list[str]]:
    """The server's side of :func:`encode_request` (for tests and stand-ins): inputs, and the
    outputs asked for."""
    length = _header_length(headers, len(body))
    header: dict[str, Any] = json.loads(body[:length])
    offset = length
    inputs = {}
    for spec in header["inputs"]:
        dtype = np.dtype(DTYPES[spec["datatype"]]).newbyteorder("<")
        size = spec["parameters"]["binary_data_size"]
        inputs[spec["name"]] = np.frombuffer(body, dtype=dtype, count=size // dtype.itemsize,
                                             offset=offset).reshape(spec["shape"])
        offset += size
    return inputs, [o["name"] for o in header.get("outputs", [])]


def encode_response(model: str, outputs: Mapping[str, np.ndarray]) -> tuple[bytes, str]:
    """The server's side of :func:`decode_response`: (body, the header-length value)."""
    arrays = {name: np.ascontiguousarray(a) for name, a in outputs.items()}
    header = {"model_name": model,
              "outputs": [{"name": name, "datatype": DATATYPES[a.dtype.name],
                           "shape": list(a.shape), "parameters": {"binary_data_size": a.nbytes}}
                          for name, a in arrays.items()]}
    text = json.dumps(header).encode()
    return b"".join([text, *(a.tobytes() for a in arrays.values())]), str(len(text))
