"""Native TensorRT engine: runs a plain TensorRT plan with cuda-python buffers and a CUDA stream.

    with TrtRunner("pkg/frontend.plan", engine=manifest.engine("frontend")) as runner:
        out = runner.infer({"video": chunk})      # numpy in, numpy out
        runner.last_timings                        # {"h2d_ms", "compute_ms", "d2h_ms"}

* The plan's flavour (full TensorRT or TensorRT-RTX, from the manifest) decides which module
  loads it. Before a plan is deserialised, the running flavour, version and GPU (found through
  cuda-python, no torch) are checked against what the manifest says it was built for
  (:meth:`~lipx.package.EngineInfo.check`): a mismatch is refused with the fix, never loaded.
* Device and pinned host buffers are allocated once, at the optimisation profile's largest
  shapes; each call sets the input shapes (within the profile: a shape outside it is an
  InputError naming the range), copies in, enqueues, copies out, all on one CUDA stream.
* ``cuda_graph=True`` captures the enqueue as a CUDA graph per input shape (the streaming loop
  uses two or three fixed shapes) and replays it, which removes most launch overhead.
* CUDA events time the copy in, the compute and the copy out of each call (``last_timings``).

The TensorRT module and cuda-python are imported in :meth:`TrtRunner._activate`; without them
BackendUnavailableError names the extra to install. Torch-free.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from lipx.errors import InputError
from lipx.package import EngineInfo, GraphInfo, Manifest, PlanTarget, TensorInfo
from lipx.runtime.backends import TRT_FLAVOURS, import_trt
from lipx.runtime.cuda import (
    CudaError,
    DeviceBuffer,
    Event,
    Graph,
    PinnedBuffer,
    Stream,
    check,
    device_info,
    import_cudart,
)
from lipx.runtime.runner import Runner

log = logging.getLogger(__name__)

PlanSource = str | Path | bytes | Callable[[], "str | Path | bytes"]
MAX_GRAPHS = 8
"""CUDA graphs kept per runner (one per input shape seen)."""


def import_tensorrt(flavour: str = "auto") -> Any:
    """The TensorRT module of ``flavour`` (``auto``: full TensorRT when installed, else
    TensorRT-RTX), or BackendUnavailableError naming the pip extra."""
    return import_trt(flavour, gpu=True)[1]


def running_target(trt: Any, cudart: Any, device: int = 0) -> PlanTarget:
    """The TensorRT flavour and version and the GPU this process would run a plan on (no torch
    needed)."""
    name, capability = device_info(cudart, device)
    flavour = "rtx" if trt.__name__.split(".")[0] == TRT_FLAVOURS["rtx"].module else "tensorrt"
    return PlanTarget(str(trt.__version__), name, capability, flavour)


class _Tensor:
    """One I/O tensor of the engine: its metadata and buffers."""

    def __init__(self, name: str, is_input: bool, dtype: np.dtype, shape: tuple[int, ...]):
        self.name, self.is_input, self.dtype, self.shape = name, is_input, dtype, shape
        self.range: tuple[tuple[int, ...], ...] | None = None
        """(min, opt, max) shapes of an input in the profile."""
        self.device: DeviceBuffer | None = None
        self.host: PinnedBuffer | None = None

    def profile_range(self) -> tuple[tuple[int, ...], ...]:
        """:attr:`range`, which :meth:`TrtRunner._describe` sets on every input."""
        if self.range is None:
            raise RuntimeError(f"{self.name!r} is not an input of the profile")
        return self.range

    def buffers(self) -> tuple[DeviceBuffer, PinnedBuffer]:
        """(device, host) buffers, which :meth:`TrtRunner._allocate` sets on every tensor."""
        if self.device is None or self.host is None:
            raise RuntimeError(f"buffers of {self.name!r} are not allocated")
        return self.device, self.host


class TrtRunner(Runner):
    """Runs a serialized TensorRT plan.

    Args:
        plan: a plan file, its bytes, or a callable returning either (a loader).
        name: for messages (default: the file name).
        engine: the manifest's facts about the plan; when given, its flavour picks the module,
            and a plan built for another flavour, version or GPU is refused before it is loaded.
        graph: the ONNX graph it was built from; names the dynamic dims in the metadata.
        cuda_graph: capture and replay a CUDA graph per input shape.
        device: CUDA device ordinal.
        profile: optimisation profile to use.
    """

    def __init__(self, plan: PlanSource, name: str | None = None, *,
                 engine: EngineInfo | None = None, graph: GraphInfo | None = None,
                 cuda_graph: bool = False, device: int = 0, profile: int = 0) -> None:
        default = Path(plan).name if isinstance(plan, (str, Path)) else None
        super().__init__(name or default)
        self.plan, self.engine_info, self.graph_info = plan, engine, graph
        self.cuda_graph, self.device, self.profile = cuda_graph, device, profile
        self.last_timings: dict[str, float] = {}
        """Milliseconds of the last call: ``h2d_ms``, ``compute_ms``, ``d2h_ms`` (GPU time)."""
        self.target: PlanTarget | None = None
        self._trt: Any = None
        self._rt: Any = None
        self._runtime: Any = None
        self._engine: Any = None
        self._context: Any = None
        self._stream: Stream | None = None
        self._events: list[Event] = []
        self._tensors: dict[str, _Tensor] = {}
        self._graphs: dict[tuple, Graph] = {}

    @classmethod
    def for_artifact(cls, path: Path, entry: Any, manifest: Manifest, *, name: str,
                     device: str, threads: int | None = None,
                     cuda_graph: bool = False) -> TrtRunner:
        """The runner of one plan of a package: its manifest entry and source graph go with it,
        so a plan built for another TensorRT or GPU is refused before it loads."""
        return cls(path, name=name, engine=entry, graph=manifest.graph(entry.role),
                   cuda_graph=cuda_graph)

    # -- lifecycle ----------------------------------------------------------------------------
    def _activate(self) -> None:
        flavour = self.engine_info.flavour if self.engine_info is not None else "auto"
        self._trt, self._rt = import_tensorrt(flavour), import_cudart()
        self.target = running_target(self._trt, self._rt, self.device)
        if self.engine_info is not None:
            self.engine_info.check(self.target)
        data = self._plan_bytes()
        check(self._rt, self._rt.cudaSetDevice(self.device), "cudaSetDevice")
        try:
            self._load(data)
        except BaseException:
            self._deactivate()
            raise

    def _plan_bytes(self) -> bytes:
        plan = self.plan() if callable(self.plan) else self.plan
        if isinstance(plan, (str, Path)):
            if not Path(plan).is_file():
                raise InputError(f"TensorRT plan {plan} does not exist")
            return Path(plan).read_bytes()
        return bytes(plan)

    def _load(self, data: bytes) -> None:
        trt = self._trt
        logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(logger)
        self._engine = self._runtime.deserialize_cuda_engine(data)
        if self._engine is None:
            raise InputError(f"{self.target.label if self.target else 'TensorRT'} cannot load "
                             f"{self.name} (corrupt, or built by another TensorRT flavour or "
                             f"version); rebuild it with `lipx export CHECKPOINT -o DIR --engine "
                             f"trt`")
        if not 0 <= self.profile < self._engine.num_optimization_profiles:
            raise InputError(f"{self.name} has {self._engine.num_optimization_profiles} "
                             f"optimisation profiles; profile {self.profile} does not exist")
        self._context = self._engine.create_execution_context()
        self._stream = Stream(self._rt)
        self._events = [Event(self._rt) for _ in range(4)]
        self._context.set_optimization_profile_async(self.profile, int(self._stream.handle))
        self._tensors = self._describe()
        self._allocate()

    def _describe(self) -> dict[str, _Tensor]:
        trt, engine = self._trt, self._engine
        tensors = {}
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            is_input = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(name)))
            t = _Tensor(name, is_input, dtype, tuple(engine.get_tensor_shape(name)))
            if is_input:
                t.range = tuple(tuple(s) for s in
                                engine.get_tensor_profile_shape(name, self.profile))
            tensors[name] = t
        return tensors

    def _allocate(self) -> None:
        """Buffers for the largest shapes of the profile, bound to the context once."""
        for t in self._tensors.values():
            if t.is_input:
                self._context.set_input_shape(t.name, t.profile_range()[2])
        for t in self._tensors.values():
            shape = (t.profile_range()[2] if t.is_input
                     else tuple(self._context.get_tensor_shape(t.name)))
            if any(d < 0 for d in shape):
                raise InputError(f"{self.name}: output {t.name!r} has a data-dependent shape "
                                 f"{shape}; TrtRunner needs shapes known from the inputs")
            nbytes = int(np.prod(shape, dtype=np.int64)) * t.dtype.itemsize
            device = DeviceBuffer(self._rt, nbytes)
            t.device, t.host = device, PinnedBuffer(self._rt, nbytes)
            self._context.set_tensor_address(t.name, device.ptr)

    def _deactivate(self) -> None:
        for g in self._graphs.values():
            g.close()
        self._graphs.clear()
        for t in self._tensors.values():
            for buf in (t.device, t.host):
                if buf is not None:
                    buf.free()
        self._tensors = {}
        for e in self._events:
            e.close()
        self._events = []
        if self._stream is not None:
            self._stream.close()
            self._stream = None
        self._context = self._engine = self._runtime = None

    # -- metadata -----------------------------------------------------------------------------
    def _input_metadata(self) -> dict[str, TensorInfo]:
        return {t.name: self._info(t) for t in self._tensors.values() if t.is_input}

    def _output_metadata(self) -> dict[str, TensorInfo]:
        return {t.name: self._info(t) for t in self._tensors.values() if not t.is_input}

    def _info(self, t: _Tensor) -> TensorInfo:
        """Dynamic dims take their names from the ONNX graph when known."""
        named: tuple[int | str, ...] = ()
        if self.graph_info is not None:
            known = {x.name: x for x in (*self.graph_info.inputs, *self.graph_info.outputs)}
            if t.name in known and len(known[t.name].shape) == len(t.shape):
                named = known[t.name].shape
        shape = tuple((named[i] if named and isinstance(named[i], str) else "") if d < 0 else d
                      for i, d in enumerate(t.shape))
        return TensorInfo(t.name, t.dtype.name, shape)

    # -- inference ----------------------------------------------------------------------------
    def _infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        start = time.perf_counter()
        inputs = [t for t in self._tensors.values() if t.is_input]
        for t in inputs:
            self._set_shape(t, tuple(feeds[t.name].shape))
        outputs = [t for t in self._tensors.values() if not t.is_input]
        out_shapes = {t.name: tuple(self._context.get_tensor_shape(t.name)) for t in outputs}
        stream, ev = self._live_stream(), self._events
        ev[0].record(stream)
        for t in inputs:
            array = np.asarray(feeds[t.name])
            device, pinned = t.buffers()
            host = pinned.view(t.dtype, array.shape)
            np.copyto(host, array, casting="same_kind")
            stream.copy_h2d(device.ptr, pinned.ptr, host.nbytes)
        ev[1].record(stream)
        self._enqueue(tuple(tuple(feeds[t.name].shape) for t in inputs))
        ev[2].record(stream)
        views = {}
        for t in outputs:
            device, pinned = t.buffers()
            views[t.name] = pinned.view(t.dtype, out_shapes[t.name])
            stream.copy_d2h(pinned.ptr, device.ptr, views[t.name].nbytes)
        ev[3].record(stream)
        stream.synchronize()
        result = {name: view.copy() for name, view in views.items()}
        self.last_timings = {"h2d_ms": ev[1].ms_since(ev[0]), "compute_ms": ev[2].ms_since(ev[1]),
                             "d2h_ms": ev[3].ms_since(ev[2])}
        self.last_latency_s = time.perf_counter() - start
        return result

    def _set_shape(self, t: _Tensor, shape: tuple[int, ...]) -> None:
        low, _, high = t.profile_range()
        if len(shape) != len(high) or any(not lo <= s <= hi for s, lo, hi in
                                          zip(shape, low, high, strict=False)):
            raise InputError(f"{self.name}: input {t.name!r} of shape {shape} is outside the "
                             f"plan's optimisation profile {low} .. {high}; rebuild the plan for "
                             f"this window/stride (lipx export --window/--stride) or use "
                             f"--engine onnx")
        if tuple(self._context.get_tensor_shape(t.name)) != shape:
            if not self._context.set_input_shape(t.name, shape):
                raise InputError(f"{self.name}: TensorRT refused shape {shape} for {t.name!r}")

    def _enqueue(self, key: tuple) -> None:
        """Run the engine on the stream: a replayed CUDA graph, or a plain enqueue."""
        stream = self._live_stream()
        context, handle = self._context, int(stream.handle)
        if not self.cuda_graph:
            self._execute(context, handle)
            return
        graph = self._graphs.get(key)
        if graph is not None:
            graph.launch(stream)
            return
        self._execute(context, handle)  # the first run of a shape also does TensorRT's setup
        if len(self._graphs) >= MAX_GRAPHS:
            return
        try:
            self._graphs[key] = Graph(self._rt, stream, lambda: self._execute(context, handle))
        except CudaError as e:
            log.warning("%s: CUDA graph capture failed (%s); running without graphs",
                        self.name, e)
            self.cuda_graph = False

    def _live_stream(self) -> Stream:
        """The CUDA stream, which exists while the runner is active."""
        if self._stream is None:
            raise RuntimeError(f"{self.name}: not active (no CUDA stream)")
        return self._stream

    def _execute(self, context: Any, handle: int) -> None:
        if not context.execute_async_v3(handle):
            raise CudaError(f"{self.name}: TensorRT failed to enqueue the inference (see the "
                            f"TensorRT log above)")
