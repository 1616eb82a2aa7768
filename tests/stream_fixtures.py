"""Session fixtures for the streaming tests: tiny exported packages and synthetic face videos.

The packages are exported from the real ``tiny`` presets with random (seeded) weights and small
windows (lipreading window 9 stride 3, lip-to-speech window 12 stride 4), both at once (the
exporter runs each graph in its own process). Parity is not re-checked here; the export tests do
that, and the streaming tests compare the streamed windows with the package's own graphs.
They are cached between runs (see :func:`packages`).
``conftest.py`` registers the fixtures (``packages_fixture`` provides ``packages``,
``face_video_fixture`` ``face_video``) once for every module: imported into two test modules
they would be two fixtures, and the packages exported twice. Also here: stand-ins
for ``tensorrt`` and cuda-python (:func:`install_fake_tensorrt`), so the TensorRT paths run
without a GPU, optionally backed by onnxruntime (:func:`onnx_plan`).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import importlib.machinery
import inspect
import itertools
import os
import shutil
import sys
import types
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import Enum, IntEnum
from pathlib import Path

import numpy as np
import pytest

from lipx.package import ShapeRange

SCHEDULES = {"lipreading": (9, 3), "lip2speech": (12, 4)}
"""task -> (window, stride) of the test packages."""
FPS = 25


def build_package(task: str, out: Path, window: int, stride: int, preset: str = "tiny",
                  seed: int = 0) -> Path:
    """Export a random-weight ``preset`` model of ``task`` to the package ``out``."""
    import torch

    from lipx.export.api import ExportOptions, export_package
    from lipx.models.checkpoint import Checkpoint, save_checkpoint
    from lipx.models.registry import get_family, preset_config

    torch.manual_seed(seed)
    config = preset_config(task, preset)
    model = get_family(task).build(config).eval()
    vocabulary = ([f"WORD{i:03d}" for i in range(config.num_classes)]
                  if task == "lipreading" else None)
    ckpt = Checkpoint(task=task, config=config, state_dict=model.state_dict(), preset=preset,
                      vocabulary=vocabulary, meta={"model_name": f"{preset}-{task}"})
    path = save_checkpoint(ckpt, out.with_suffix(".lipx"))
    export_package(path, ExportOptions(output=out, window=window, stride=stride, parity=False))
    return out


def write_video(path: Path, frames: int, size: int = 256, fps: int = FPS, seed: int = 0) -> Path:
    """A moving random-texture video of ``frames`` (size x size) frames (MPEG-4 in MP4)."""
    import av

    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for i in range(frames):
            image = np.roll(np.roll(base, 3 * i, axis=1), i, axis=0)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def source_digest() -> str:
    """Digest of everything an exported test package depends on (code and library versions)."""
    import onnx
    import torch

    root = Path(__file__).resolve().parent.parent
    h = hashlib.sha256(f"{torch.__version__} {onnx.__version__} {SCHEDULES}".encode())
    h.update(inspect.getsource(build_package).encode())
    files = [*sorted((root / "models").glob("*.py")),
             *sorted((root / "export").glob("*.py")),
             *sorted(f for f in (root / "lipx").glob("*.py") if f.name != "cli.py")]
    for f in files:
        h.update(f.name.encode() + f.read_bytes())
    return h.hexdigest()[:16]


def _install(work: Path, root: Path) -> None:
    """Move freshly built packages to ``root`` (another session may have done it meanwhile) and
    drop the packages of older code."""
    root.parent.mkdir(parents=True, exist_ok=True)
    for old in root.parent.iterdir():
        if not old.name.startswith(root.name):
            shutil.rmtree(old, ignore_errors=True)
    if root.exists() and not all((root / t / "manifest.json").is_file() for t in SCHEDULES):
        shutil.rmtree(root, ignore_errors=True)  # left incomplete
    partial = root.with_name(f"{root.name}.partial-{os.getpid()}")
    shutil.copytree(work, partial)
    try:
        os.replace(partial, root)
    except OSError:  # a concurrent session installed the same packages first
        shutil.rmtree(partial, ignore_errors=True)


@pytest.fixture(scope="session", name="packages")
def packages_fixture(request: pytest.FixtureRequest,
             tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """task -> exported tiny package directory.

    Exporting takes most of a minute, so the packages are kept in pytest's cache folder under a
    digest of the code they come from (:func:`source_digest`): any change to the models, the
    exporter or this module exports them again.
    """
    cache = getattr(request.config, "cache", None)
    root = (cache.mkdir("lipx-stream-packages") if cache is not None
            else tmp_path_factory.mktemp("stream-packages")) / source_digest()
    if not all((root / task / "manifest.json").is_file() for task in SCHEDULES):
        work = tmp_path_factory.mktemp("stream-packages-build")
        with ThreadPoolExecutor(len(SCHEDULES)) as pool:
            futures = [pool.submit(build_package, task, work / task, *schedule)
                       for task, schedule in SCHEDULES.items()]
            for f in futures:
                f.result()
        _install(work, root)
    return {task: root / task for task in SCHEDULES}


@pytest.fixture(scope="session", name="face_video")
def face_video_fixture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 s (50 frames) of 256x256 video at 25 fps."""
    return write_video(tmp_path_factory.mktemp("videos") / "face.mp4", 50)


# -- stand-ins for cuda-python and tensorrt (TensorRT paths tested without a GPU) ----------------
class FakeCudart(types.ModuleType):
    """cuda-python's runtime API over host memory: device buffers are bytearrays by address,
    pinned buffers real host memory; graphs record the work enqueued while capturing."""

    def __init__(self, devices: int = 1):
        super().__init__("cuda.bindings.runtime")
        self.cudaError_t = IntEnum("cudaError_t", {"cudaSuccess": 0, "cudaErrorNoDevice": 100,
                                                   "cudaErrorMemoryAllocation": 2})
        self.cudaMemcpyKind = Enum("cudaMemcpyKind", "cudaMemcpyHostToDevice "
                                   "cudaMemcpyDeviceToHost")
        self.cudaStreamCaptureMode = Enum("cudaStreamCaptureMode",
                                          "cudaStreamCaptureModeThreadLocal")
        self.devices, self.device, self.host, self.streams = devices, {}, {}, {}
        self.launches, self.copies, self.events = 0, [], 0
        self._ids = itertools.count(0x10000)
        self.ok = self.cudaError_t.cudaSuccess

    def cudaGetErrorName(self, status):
        return self.ok, self.cudaError_t(int(status)).name.encode()

    def cudaGetDeviceCount(self):
        if not self.devices:
            return (self.cudaError_t.cudaErrorNoDevice, 0)
        return self.ok, self.devices

    def cudaGetDeviceProperties(self, device):
        return self.ok, types.SimpleNamespace(name=b"NVIDIA L4\0\0", major=8, minor=9)

    def cudaSetDevice(self, device):
        return (self.ok,)

    def cudaMalloc(self, n):
        ptr = next(self._ids) << 8
        self.device[ptr] = bytearray(n)
        return self.ok, ptr

    def cudaFree(self, ptr):
        del self.device[ptr]
        return (self.ok,)

    def cudaMallocHost(self, n):
        buf = ctypes.create_string_buffer(n)
        self.host[ctypes.addressof(buf)] = buf
        return self.ok, ctypes.addressof(buf)

    def cudaFreeHost(self, ptr):
        del self.host[ptr]
        return (self.ok,)

    def cudaMemcpyAsync(self, dst, src, n, kind, stream):
        self.copies.append(kind.name)
        if kind == self.cudaMemcpyKind.cudaMemcpyHostToDevice:
            self.device[dst][:n] = ctypes.string_at(src, n)
        else:
            ctypes.memmove(dst, bytes(self.device[src][:n]), n)
        return (self.ok,)

    def cudaStreamCreate(self):
        stream = types.SimpleNamespace(id=next(self._ids), capture=None)
        self.streams[stream.id] = stream
        return self.ok, _Handle(stream.id)

    def cudaStreamDestroy(self, handle):
        del self.streams[int(handle)]
        return (self.ok,)

    def cudaStreamSynchronize(self, handle):
        return (self.ok,)

    def cudaEventCreate(self):
        return self.ok, types.SimpleNamespace(t=0.0)

    def cudaEventRecord(self, event, stream):
        self.events += 1
        event.t = float(self.events)
        return (self.ok,)

    def cudaEventElapsedTime(self, start, end):
        return self.ok, end.t - start.t

    def cudaEventDestroy(self, event):
        return (self.ok,)

    def cudaStreamBeginCapture(self, handle, mode):
        self.streams[int(handle)].capture = []
        return (self.ok,)

    def cudaStreamEndCapture(self, handle):
        stream = self.streams[int(handle)]
        work, stream.capture = stream.capture, None
        return self.ok, work

    def cudaGraphInstantiate(self, graph, flags):
        return self.ok, list(graph)

    def cudaGraphLaunch(self, graph_exec, handle):
        self.launches += 1
        for work in graph_exec:
            work()
        return (self.ok,)

    def cudaGraphExecDestroy(self, graph_exec):
        return (self.ok,)

    def cudaGraphDestroy(self, graph):
        return (self.ok,)


class _Handle:
    def __init__(self, value: int):
        self.value = value

    def __int__(self) -> int:
        return self.value


@dataclass
class FakePlan:
    """What a fake plan computes.

    Attributes:
        inputs: name -> (shape with -1 for dynamic dims, (min, opt, max) profile shapes).
        outputs: name -> shape with -1 for dynamic dims.
        shapes: concrete input shapes -> concrete output shapes.
        run: input arrays -> output arrays.
    """

    inputs: dict[str, tuple[tuple[int, ...], tuple[tuple[int, ...], ...]]]
    outputs: dict[str, tuple[int, ...]]
    shapes: Callable[[dict[str, tuple[int, ...]]], dict[str, tuple[int, ...]]]
    run: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]


class FakeTrt(types.ModuleType):
    """Just enough of ``tensorrt`` to deserialize ``plans`` (bytes -> FakePlan) and run them on
    :class:`FakeCudart` memory, honouring stream capture."""

    def __init__(self, cudart: FakeCudart, plans: dict[bytes, FakePlan]):
        super().__init__("tensorrt")
        self.__spec__ = importlib.machinery.ModuleSpec("tensorrt", None)
        self.__version__ = "10.3.0"
        self.TensorIOMode = Enum("TensorIOMode", "INPUT OUTPUT")
        self.DataType = Enum("DataType", "FLOAT")
        self.Logger = type("Logger", (), {"WARNING": 2, "__init__": lambda s, level: None})
        self.nptype = lambda dtype: np.float32
        self.deserialized = self.executed = 0
        fake = self

        class Engine:
            num_optimization_profiles = 1

            def __init__(self, plan: FakePlan):
                self.plan, self.names = plan, [*plan.inputs, *plan.outputs]
                self.num_io_tensors = len(self.names)

            def get_tensor_name(self, i):
                return self.names[i]

            def get_tensor_mode(self, name):
                inputs = self.plan.inputs
                return fake.TensorIOMode.INPUT if name in inputs else fake.TensorIOMode.OUTPUT

            def get_tensor_dtype(self, name):
                return fake.DataType.FLOAT

            def get_tensor_shape(self, name):
                return self.plan.inputs[name][0] if name in self.plan.inputs else \
                    self.plan.outputs[name]

            def get_tensor_profile_shape(self, name, profile):
                return [list(s) for s in self.plan.inputs[name][1]]

            def create_execution_context(self):
                return Context(self)

        class Context:
            def __init__(self, engine: Engine):
                self.engine, self.plan = engine, engine.plan
                self.shapes, self.addresses = {}, {}

            def set_optimization_profile_async(self, index, stream):
                assert index == 0 and isinstance(stream, int)

            def set_input_shape(self, name, shape):
                self.shapes[name] = tuple(shape)
                return True

            def get_tensor_shape(self, name):
                if name in self.plan.inputs:
                    return self.shapes.get(name, self.plan.inputs[name][0])
                if len(self.shapes) < len(self.plan.inputs):
                    return self.plan.outputs[name]
                return self.plan.shapes(self.shapes)[name]

            def set_tensor_address(self, name, ptr):
                self.addresses[name] = ptr

            def execute_async_v3(self, handle):
                stream = cudart.streams[handle]
                if stream.capture is not None:
                    stream.capture.append(self._run)
                else:
                    self._run()
                return True

            def _run(self):
                fake.executed += 1
                arrays = {n: self._array(n, self.get_tensor_shape(n)) for n in self.engine.names}
                result = self.plan.run({n: arrays[n].copy() for n in self.plan.inputs})
                for name in self.plan.outputs:
                    arrays[name][...] = result[name]

            def _array(self, name, shape):
                buf = cudart.device[self.addresses[name]]
                return np.frombuffer(buf, np.float32, count=int(np.prod(shape))).reshape(shape)

        class Runtime:
            def __init__(self, logger):
                pass

            def deserialize_cuda_engine(self, data):
                fake.deserialized += 1
                plan = plans.get(bytes(data))
                return Engine(plan) if plan is not None else None

        self.Runtime = Runtime


def install_fake_tensorrt(monkeypatch: pytest.MonkeyPatch,
                          plans: dict[bytes, FakePlan]) -> tuple[FakeTrt, FakeCudart]:
    """Put fake ``tensorrt`` and ``cuda.bindings.runtime`` modules into ``sys.modules``."""
    cudart = FakeCudart()
    trt = FakeTrt(cudart, plans)
    bindings = types.ModuleType("cuda.bindings")
    bindings.runtime = cudart  # type: ignore[attr-defined]
    cuda = types.ModuleType("cuda")
    cuda.bindings = bindings  # type: ignore[attr-defined]
    for name, module in (("tensorrt", trt), ("cuda", cuda), ("cuda.bindings", bindings),
                         ("cuda.bindings.runtime", cudart)):
        monkeypatch.setitem(sys.modules, name, module)
    return trt, cudart


def onnx_plan(path: Path, profile: tuple[ShapeRange, ...]) -> FakePlan:
    """A fake plan that runs the ONNX graph ``path`` with onnxruntime within ``profile``."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    ranks = {o.name: len(o.shape) for o in session.get_outputs()}
    dynamic = {r.name: tuple(-1 if lo != hi else lo for lo, hi in zip(r.min, r.max, strict=True))
               for r in profile}

    @functools.cache
    def shapes_of(key: tuple) -> dict[str, tuple[int, ...]]:
        zeros = {name: np.zeros(shape, np.float32) for name, shape in key}
        return {n: a.shape for n, a in zip(names, session.run(names, zeros), strict=True)}

    return FakePlan(
        inputs={r.name: (dynamic[r.name], (r.min, r.opt, r.max)) for r in profile},
        outputs={n: (-1,) * ranks[n] for n in names},
        shapes=lambda given: shapes_of(tuple(sorted(given.items()))),
        run=lambda feeds: dict(zip(names, session.run(names, feeds), strict=True)),
    )
