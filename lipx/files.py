"""Small file helpers shared by every part of lipx (stdlib only)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file (checkpoint digests in manifests, graph and plan digests)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def atomic_write(
    path: str | Path, write: Callable[[Path], object], tmp: Path | None = None
) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it over ``path``.

    Readers never see half a file, and a failed ``write`` leaves no temporary file behind.

    Args:
        path: the file to write.
        write: writes the whole content to the path it is given.
        tmp: the temporary file (default ``.NAME.PID.tmp`` in the same folder); a fixed name lets a
            rerun overwrite what an interrupted one left.
    Returns:
        ``path``.
    """
    path = Path(path)
    tmp = tmp or path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
