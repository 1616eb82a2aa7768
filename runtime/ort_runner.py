"""onnxruntime engine: runs an ONNX graph on the CPU, CUDA or TensorRT execution provider.

onnxruntime is imported in :meth:`OrtRunner._activate`, never at module import. A device whose
provider is not in this onnxruntime build is refused with the list of available providers, and a
session that silently fell back to the CPU (onnxruntime-gpu without its CUDA libraries) is
refused too: a "GPU" benchmark must never measure the CPU. Torch-free.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from lipx.errors import BackendUnavailableError, InputError, did_you_mean
from lipx.package import Manifest, TensorInfo
from lipx.runtime.runner import Runner

log = logging.getLogger(__name__)

#: device -> execution providers, first the one that must be active. The CPU provider stays as the
#: home of the few shape ops that GPU providers hand back.
DEVICE_PROVIDERS: dict[str, tuple[str, ...]] = {
    "cpu": ("CPUExecutionProvider",),
    "cuda": ("CUDAExecutionProvider", "CPUExecutionProvider"),
    "tensorrt": ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"),
}

_ORT_DTYPES = {
    "tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
    "tensor(int64)": "int64", "tensor(int32)": "int32", "tensor(int8)": "int8",
    "tensor(uint8)": "uint8", "tensor(bool)": "bool",
}

ModelSource = str | Path | bytes | Callable[[], "str | Path | bytes"]


def import_onnxruntime() -> Any:
    """``import onnxruntime``, or BackendUnavailableError naming the pip extra."""
    try:
        import onnxruntime
    except ImportError as e:
        raise BackendUnavailableError(
            "onnxruntime is not installed: pip install 'lipx[cpu]' (or 'lipx[gpu]' for CUDA)"
        ) from e
    return onnxruntime


def providers_for(device: str, available: list[str]) -> list[str]:
    """The providers to request for ``device``.

    Raises:
        InputError: unknown device.
        BackendUnavailableError: the device's provider is not in this onnxruntime build (the
            message lists the available ones).
    """
    if device not in DEVICE_PROVIDERS:
        raise InputError(f"unknown onnxruntime device {device!r}"
                         f"{did_you_mean(device, DEVICE_PROVIDERS)}")
    wanted = DEVICE_PROVIDERS[device]
    if wanted[0] not in available:
        hint = " (install onnxruntime-gpu: pip install 'lipx[gpu]')" if device != "cpu" else ""
        raise BackendUnavailableError(
            f"onnxruntime has no {wanted[0]} for device {device!r}; available providers: "
            f"{', '.join(available) or 'none'}{hint}"
        )
    return [p for p in wanted if p in available]


def check_no_fallback(device: str, active: list[str]) -> None:
    """Raise BackendUnavailableError when the session is not on the provider ``device`` needs.

    onnxruntime-gpu falls back to the CPU with only a log line when the CUDA or TensorRT
    libraries cannot be loaded; ``session.get_providers()`` then lacks the requested provider.
    """
    wanted = DEVICE_PROVIDERS[device][0]
    if wanted not in active:
        raise BackendUnavailableError(
            f"onnxruntime fell back to {', '.join(active)} instead of {wanted}: its CUDA/cuDNN "
            f"(or TensorRT) libraries could not be loaded; check the onnxruntime log above, "
            f"the CUDA install, or use device 'cpu'"
        )


class OrtRunner(Runner):
    """Runs an ONNX graph with onnxruntime.

    Args:
        model: an ONNX file, its bytes, or a callable returning either (a loader).
        device: ``cpu``, ``cuda`` or ``tensorrt`` (the TensorRT execution provider).
        threads: intra-op threads (None: onnxruntime's default).
        name: for messages and reports (default: the file name).
    """

    concurrent = True
    """onnxruntime sessions run concurrent calls (each on its calling thread with one
    intra-op thread: single-threaded calls side by side use the cores without waiting on each
    other's threads)."""

    def __init__(
        self, model: ModelSource, device: str = "cpu", threads: int | None = None,
        name: str | None = None,
    ) -> None:
        if device not in DEVICE_PROVIDERS:
            raise InputError(f"unknown onnxruntime device {device!r}"
                             f"{did_you_mean(device, DEVICE_PROVIDERS)}")
        default = Path(model).name if isinstance(model, (str, Path)) else None
        super().__init__(name or default)
        self.model = model
        self.device = device
        self.threads = threads
        self.session: Any = None

    @classmethod
    def for_artifact(cls, path: Path, entry: Any, manifest: Manifest, *, name: str,
                     device: str, threads: int | None = None,
                     cuda_graph: bool = False) -> OrtRunner:
        """The runner of one ONNX graph of a package (see :meth:`Runner.for_artifact`)."""
        return cls(path, device=device, threads=threads, name=name)

    @property
    def providers(self) -> list[str]:
        """Providers of the active session (empty when inactive)."""
        return list(self.session.get_providers()) if self.session is not None else []

    def _activate(self) -> None:
        ort = import_onnxruntime()
        providers = providers_for(self.device, ort.get_available_providers())
        model = self.model() if callable(self.model) else self.model
        if isinstance(model, (str, Path)):
            if not Path(model).is_file():
                raise InputError(f"ONNX file {model} does not exist")
            model = str(model)
        options = ort.SessionOptions()
        if self.threads:
            options.intra_op_num_threads = self.threads
        try:
            self.session = ort.InferenceSession(model, options, providers=providers)
        except Exception as e:  # onnxruntime raises its own Fail/InvalidGraph/... types
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise InputError(f"onnxruntime cannot load {self.name}: {first}") from e
        check_no_fallback(self.device, self.providers)
        log.debug("%s: onnxruntime session on %s", self.name, ", ".join(self.providers))

    def _deactivate(self) -> None:
        self.session = None

    def _input_metadata(self) -> dict[str, TensorInfo]:
        return {a.name: _tensor_info(a) for a in self.session.get_inputs()}

    def _output_metadata(self) -> dict[str, TensorInfo]:
        return {a.name: _tensor_info(a) for a in self.session.get_outputs()}

    def _infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = [a.name for a in self.session.get_outputs()]
        start = time.perf_counter()
        outputs = self.session.run(names, dict(feeds))
        self.last_latency_s = time.perf_counter() - start
        return dict(zip(names, outputs, strict=True))


def _tensor_info(arg: Any) -> TensorInfo:
    """onnxruntime NodeArg -> TensorInfo (unknown dims become '')."""
    shape = tuple(d if isinstance(d, (int, str)) else "" for d in arg.shape)
    return TensorInfo(arg.name, _ORT_DTYPES.get(arg.type, arg.type), shape)
