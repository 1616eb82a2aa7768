"""CUDA through cuda-python: the device, pinned host and device buffers, streams, events, graphs.

Small owning wrappers over the CUDA runtime API (``cuda.bindings.runtime``, or ``cuda.cudart`` in
cuda-python < 12.6), enough for :class:`~lipx.runtime.trt_runner.TrtRunner`. Every call's status
is checked; a failure raises :class:`CudaError` naming the call and CUDA's error name. cuda-python
is imported lazily (:func:`import_cudart`); without it, BackendUnavailableError names the pip
extra. Torch-free.
"""

from __future__ import annotations

import ctypes
import logging
from collections.abc import Callable
from typing import Any

import numpy as np

from lipx.errors import BackendUnavailableError, LipxError

log = logging.getLogger(__name__)

GPU_EXTRA = "pip install 'lipx[gpu]'"


class CudaError(LipxError):
    """A CUDA runtime call failed (out of memory, a lost device, an invalid launch)."""


def import_cudart() -> Any:
    """The CUDA runtime module of cuda-python, or BackendUnavailableError naming the pip extra."""
    try:
        from cuda.bindings import runtime  # cuda-python >= 12.6
    except ImportError:
        try:
            from cuda import cudart as runtime  # older layout
        except ImportError as e:
            raise BackendUnavailableError(
                "cuda-python is not installed (TensorRT plans need it for device memory and "
                "streams): pip install cuda-python (in 'lipx[gpu]') on a machine with an NVIDIA "
                "GPU") from e
    return runtime


def check(cudart: Any, result: Any, what: str) -> Any:
    """Unwrap a cuda-python result ``(status, *values)``; CudaError when the status is not 0.

    Returns:
        None, the one value, or a tuple of the values.
    """
    status, *values = result if isinstance(result, tuple) else (result,)
    if int(status) != 0:
        try:
            name = cudart.cudaGetErrorName(status)[1]
            name = name.decode() if isinstance(name, bytes) else str(name)
        except Exception:  # the error name is only decoration
            name = f"error {int(status)}"
        raise CudaError(f"CUDA {what} failed: {name}")
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


def device_info(cudart: Any, device: int = 0) -> tuple[str, str]:
    """(name, ``major.minor`` compute capability) of CUDA device ``device``.

    Raises:
        BackendUnavailableError: no CUDA device (or driver) is present, or ``device`` is not one.
    """
    try:
        count = check(cudart, cudart.cudaGetDeviceCount(), "cudaGetDeviceCount")
    except CudaError as e:
        raise BackendUnavailableError(f"no usable CUDA GPU ({e}); use --engine onnx "
                                      f"--device cpu") from e
    if not 0 <= device < count:
        raise BackendUnavailableError(f"CUDA device {device} does not exist ({count} found); "
                                      f"use --engine onnx --device cpu")
    props = check(cudart, cudart.cudaGetDeviceProperties(device), "cudaGetDeviceProperties")
    name = props.name
    if isinstance(name, bytes):
        name = name.split(b"\0", 1)[0].decode(errors="replace")
    return str(name), f"{props.major}.{props.minor}"


class DeviceBuffer:
    """``nbytes`` of device memory (``ptr``), freed by :meth:`free`."""

    def __init__(self, cudart: Any, nbytes: int):
        self._rt, self.nbytes = cudart, max(int(nbytes), 1)
        self.ptr: int = int(check(cudart, cudart.cudaMalloc(self.nbytes), "cudaMalloc"))

    def free(self) -> None:
        if self.ptr:
            ptr, self.ptr = self.ptr, 0
            check(self._rt, self._rt.cudaFree(ptr), "cudaFree")


class PinnedBuffer:
    """``nbytes`` of page-locked host memory (fast, asynchronous copies), viewed as numpy."""

    def __init__(self, cudart: Any, nbytes: int):
        self._rt, self.nbytes = cudart, max(int(nbytes), 1)
        self.ptr: int = int(check(cudart, cudart.cudaMallocHost(self.nbytes), "cudaMallocHost"))
        raw = (ctypes.c_ubyte * self.nbytes).from_address(self.ptr)
        self._bytes = np.frombuffer(memoryview(raw), dtype=np.uint8)

    def view(self, dtype: np.dtype | str, shape: tuple[int, ...]) -> np.ndarray:
        """The first ``prod(shape)`` elements as an array of ``shape`` (shares the memory)."""
        dtype = np.dtype(dtype)
        n = int(np.prod(shape, dtype=np.int64))
        if n * dtype.itemsize > self.nbytes:
            raise ValueError(f"{shape} {dtype} needs {n * dtype.itemsize} bytes, buffer has "
                             f"{self.nbytes}")
        return self._bytes[: n * dtype.itemsize].view(dtype).reshape(shape)

    def free(self) -> None:
        if self.ptr:
            ptr, self.ptr = self.ptr, 0
            self._bytes = np.zeros(0, np.uint8)
            check(self._rt, self._rt.cudaFreeHost(ptr), "cudaFreeHost")


class Stream:
    """A CUDA stream; ``handle`` is what cuda-python calls take, ``int(handle)`` TensorRT's."""

    def __init__(self, cudart: Any):
        self._rt = cudart
        self.handle: Any = check(cudart, cudart.cudaStreamCreate(), "cudaStreamCreate")

    def copy_h2d(self, device_ptr: int, host_ptr: int, nbytes: int) -> None:
        rt = self._rt
        check(rt, rt.cudaMemcpyAsync(device_ptr, host_ptr, nbytes,
                                     rt.cudaMemcpyKind.cudaMemcpyHostToDevice, self.handle),
              "cudaMemcpyAsync (host to device)")

    def copy_d2h(self, host_ptr: int, device_ptr: int, nbytes: int) -> None:
        rt = self._rt
        check(rt, rt.cudaMemcpyAsync(host_ptr, device_ptr, nbytes,
                                     rt.cudaMemcpyKind.cudaMemcpyDeviceToHost, self.handle),
              "cudaMemcpyAsync (device to host)")

    def synchronize(self) -> None:
        check(self._rt, self._rt.cudaStreamSynchronize(self.handle), "cudaStreamSynchronize")

    def close(self) -> None:
        if self.handle is not None:
            handle, self.handle = self.handle, None
            check(self._rt, self._rt.cudaStreamDestroy(handle), "cudaStreamDestroy")


class Event:
    """A CUDA event, for timing work on a stream."""

    def __init__(self, cudart: Any):
        self._rt = cudart
        self.handle: Any = check(cudart, cudart.cudaEventCreate(), "cudaEventCreate")

    def record(self, stream: Stream) -> None:
        check(self._rt, self._rt.cudaEventRecord(self.handle, stream.handle), "cudaEventRecord")

    def ms_since(self, earlier: Event) -> float:
        """Milliseconds between ``earlier`` and this event (both recorded and completed)."""
        return float(check(self._rt, self._rt.cudaEventElapsedTime(earlier.handle, self.handle),
                           "cudaEventElapsedTime"))

    def close(self) -> None:
        if self.handle is not None:
            handle, self.handle = self.handle, None
            check(self._rt, self._rt.cudaEventDestroy(handle), "cudaEventDestroy")


class Graph:
    """A CUDA graph captured from the work ``enqueue`` puts on a stream, replayed by :meth:`launch`.

    Args:
        cudart: the CUDA runtime module.
        stream: the stream to capture on.
        enqueue: puts the work on ``stream`` (e.g. ``context.execute_async_v3``).
    Raises:
        CudaError: the work cannot be captured (the caller may fall back to plain launches).
    """

    def __init__(self, cudart: Any, stream: Stream, enqueue: Callable[[], None]):
        self._rt = cudart
        mode = cudart.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
        check(cudart, cudart.cudaStreamBeginCapture(stream.handle, mode), "cudaStreamBeginCapture")
        try:
            enqueue()
        finally:
            graph = check(cudart, cudart.cudaStreamEndCapture(stream.handle),
                          "cudaStreamEndCapture")
        self._graph = graph
        self._exec = check(cudart, cudart.cudaGraphInstantiate(graph, 0), "cudaGraphInstantiate")

    def launch(self, stream: Stream) -> None:
        check(self._rt, self._rt.cudaGraphLaunch(self._exec, stream.handle), "cudaGraphLaunch")

    def close(self) -> None:
        if self._exec is not None:
            exec_, graph, self._exec, self._graph = self._exec, self._graph, None, None
            check(self._rt, self._rt.cudaGraphExecDestroy(exec_), "cudaGraphExecDestroy")
            check(self._rt, self._rt.cudaGraphDestroy(graph), "cudaGraphDestroy")
