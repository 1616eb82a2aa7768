"""Artifact producers log one line each: what, where, how big, how long.

Decorate a function that writes a file or directory given as its ``path`` argument::

    @artifact("ONNX fp16 graph")
    def convert_fp16(src: Path, path: Path) -> GraphInfo: ...

and every call logs ``ONNX fp16 graph: pkg/model.fp16.onnx (12.3 MB, 0.8 s)``.
"""

from __future__ import annotations

import functools
import inspect
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])


def size_of(path: Path) -> int:
    """Bytes of a file, or of all files under a directory (0 when missing)."""
    if path.is_file():
        return path.stat().st_size
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return 0


def log_artifact(what: str, path: Path, seconds: float) -> None:
    """The one line an artifact producer logs."""
    log.info("%s: %s (%.1f MB, %.1f s)", what, path, size_of(path) / 1e6, seconds)


def artifact(what: str) -> Callable[[F], F]:
    """Decorator: log path, size and seconds of the artifact written to the ``path`` argument."""

    def decorate(fn: F) -> F:
        signature = inspect.signature(fn)
        if "path" not in signature.parameters:
            raise TypeError(f"@artifact needs a 'path' parameter on {fn.__qualname__}")

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            path = Path(signature.bind(*args, **kwargs).arguments["path"])
            start = time.perf_counter()
            result = fn(*args, **kwargs)
            log_artifact(what, path, time.perf_counter() - start)
            return result

        return wrapper  # type: ignore[return-value]

    return decorate
