"""The engine interface: a runner with a lifecycle, like Polygraphy's runners.

Every backend (onnxruntime, TensorRT, the PyTorch reference) is a :class:`Runner`::

    with OrtRunner("pkg/model.onnx") as runner:
        outputs = runner.infer({"video": frames})   # name -> np.ndarray
        runner.last_latency_s

Public methods check the state and validate feeds against :meth:`Runner.input_metadata`;
subclasses implement ``_activate`` / ``_infer`` / ``_deactivate`` / ``_input_metadata`` /
``_output_metadata``, and each ``_infer`` sets ``last_latency_s``. Torch-free.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from lipx.errors import InputError, did_you_mean
from lipx.package import Manifest, TensorInfo

log = logging.getLogger(__name__)


class RunnerStateError(RuntimeError):
    """A runner method was called in the wrong state (a programming error, not a user one)."""


class Runner(ABC):
    """Base class of all engines: activate, infer a dict of arrays, deactivate."""

    concurrent = False
    """Whether :meth:`infer` may run on several threads at once (else callers take turns)."""

    def __init__(self, name: str | None = None) -> None:
        self.name = name or type(self).__name__
        self.is_active = False
        self.last_latency_s: float | None = None
        """Seconds the last :meth:`infer` spent in the engine (excluding validation)."""

    @classmethod
    def for_artifact(cls, path: Path, entry: Any, manifest: Manifest, *, name: str,
                     device: str, threads: int | None = None, cuda_graph: bool = False) -> Runner:
        """An unopened runner of one package artifact (the engine factory's hook).

        Args:
            path: the checked file (:func:`lipx.package.package_file`).
            entry: its manifest entry (a GraphInfo or an EngineInfo).
            manifest: the package's manifest.
            name: for messages.
            device, threads, cuda_graph: the stream's options; a backend ignores what it lacks.
        """
        raise NotImplementedError(f"{cls.__name__} does not run package artifacts")

    # -- lifecycle --------------------------------------------------------------------------
    def activate(self) -> None:
        """Load the engine (sessions, device buffers). Idempotence is an error, not a no-op."""
        if self.is_active:
            raise RunnerStateError(f"{self.name} is already active")
        self._activate()
        self.is_active = True

    def deactivate(self) -> None:
        """Release the engine's resources."""
        if not self.is_active:
            raise RunnerStateError(f"{self.name} is not active")
        try:
            self._deactivate()
        finally:
            self.is_active = False

    def __enter__(self) -> Runner:
        self.activate()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.is_active:
            self.deactivate()

    # -- metadata ---------------------------------------------------------------------------
    def input_metadata(self) -> dict[str, TensorInfo]:
        """Input name -> dtype and shape (dynamic axes by name), in the engine's input order."""
        self._require_active("input_metadata")
        return self._input_metadata()

    def output_metadata(self) -> dict[str, TensorInfo]:
        """Output name -> dtype and shape, in the engine's output order."""
        self._require_active("output_metadata")
        return self._output_metadata()

    # -- inference --------------------------------------------------------------------------
    def infer(self, feeds: Mapping[str, np.ndarray], check: bool = True) -> dict[str, np.ndarray]:
        """Run the engine once.

        Args:
            feeds: input name -> array, e.g. ``video`` (B, 1, T, 112, 112) float32.
            check: validate names, dtypes, ranks and fixed dims first (cheap; keep it on unless
                the caller already validated the same shapes).
        Returns:
            Output name -> array, in :meth:`output_metadata` order.
        Raises:
            InputError: a feed is missing, unexpected, or of the wrong dtype or shape.
        """
        self._require_active("infer")
        if check:
            self.validate_feeds(feeds)
        return self._infer(feeds)

    def validate_feeds(self, feeds: Mapping[str, np.ndarray]) -> None:
        """Raise InputError naming the first feed that does not fit :meth:`input_metadata`."""
        meta = self.input_metadata()
        missing = [n for n in meta if n not in feeds]
        if missing:
            raise InputError(f"{self.name}: missing input {missing[0]!r} "
                             f"(expected inputs: {', '.join(meta)})")
        for name in feeds:
            if name not in meta:
                raise InputError(
                    f"{self.name}: unexpected input {name!r}{did_you_mean(name, meta)}")
        sizes: dict[str, tuple[str, int]] = {}
        for name, info in meta.items():
            check_array(self.name, info, feeds[name], sizes)

    # -- subclass hooks -----------------------------------------------------------------------
    @abstractmethod
    def _activate(self) -> None: ...

    @abstractmethod
    def _infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    @abstractmethod
    def _deactivate(self) -> None: ...

    @abstractmethod
    def _input_metadata(self) -> dict[str, TensorInfo]: ...

    @abstractmethod
    def _output_metadata(self) -> dict[str, TensorInfo]: ...

    def _require_active(self, what: str) -> None:
        if not self.is_active:
            raise RunnerStateError(f"{self.name}.{what}() needs an active runner: call "
                                   f"activate() or use it as a context manager")

    def __repr__(self) -> str:
        state = "active" if self.is_active else "inactive"
        return f"<{type(self).__name__} {self.name!r} {state}>"


def check_array(
    runner: str, info: TensorInfo, array: object, sizes: dict[str, tuple[str, int]]
) -> None:
    """Check one feed against its metadata.

    Args:
        runner: runner name for messages.
        info: the expected name, dtype and shape.
        array: the feed.
        sizes: symbolic dim name -> (input that fixed it, size), shared across a call's feeds
            so that e.g. ``batch`` agrees between ``video`` and ``noise``.
    Raises:
        InputError: wrong type, dtype, rank, fixed size, or inconsistent symbolic size.
    """
    where = f"{runner}: input {info.name!r}"
    if not isinstance(array, np.ndarray):
        raise InputError(f"{where} must be a numpy array, got {type(array).__name__}")
    if array.dtype != np.dtype(info.dtype):
        raise InputError(f"{where} must be {info.dtype}, got {array.dtype} "
                         f"(convert with .astype(np.{info.dtype}))")
    if array.ndim != len(info.shape):
        raise InputError(f"{where} must have {len(info.shape)} dims {_shape(info.shape)}, "
                         f"got {array.ndim}: {tuple(array.shape)}")
    for axis, (want, got) in enumerate(zip(info.shape, array.shape, strict=True)):
        if isinstance(want, int) and want >= 0 and want != got:
            raise InputError(f"{where} must have size {want} on axis {axis} "
                             f"{_shape(info.shape)}, got {tuple(array.shape)}")
        if isinstance(want, str) and want:
            first = sizes.setdefault(want, (info.name, got))
            if first[1] != got:
                raise InputError(f"{where}: {want!r} is {got} but input {first[0]!r} has "
                                 f"{first[1]}; inputs must agree on {want!r}")


def _shape(shape: tuple[int | str, ...]) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ")"
