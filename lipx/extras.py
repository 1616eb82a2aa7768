"""What each pip extra brings, so a command that needs a missing one says which.

The base install is the runtime (stream, bench of packages, info, data); torch and the export
and training stack come with ``lipx[export]`` and ``lipx[train]``::

    require("export", "lipx export")   # BackendUnavailableError: ... pip install 'lipx[export]'

Only whether a module can be found is checked (nothing is imported).
"""

from __future__ import annotations

import importlib.util

from lipx.errors import BackendUnavailableError

EXTRAS: dict[str, tuple[str, ...]] = {
    "export": ("torch", "onnx", "onnxscript"),
    "train": ("torch", "onnx", "tensorboard"),
    "serve": ("aiohttp",),
    "ray": ("aiohttp", "ray", "fastapi"),
}
"""Extra -> the modules a command of it cannot run without (see pyproject.toml)."""


def missing(extra: str) -> list[str]:
    """Modules of ``extra`` that are not installed."""
    return [m for m in EXTRAS[extra] if importlib.util.find_spec(m) is None]


def require(extra: str, what: str) -> None:
    """Raise BackendUnavailableError naming the extra when ``what`` cannot run here."""
    absent = missing(extra)
    if absent:
        raise BackendUnavailableError(f"{what} needs {', '.join(absent)}, which this install "
                                      f"lacks: pip install 'lipx[{extra}]' (with torch==2.13.0 "
                                      f"installed first on a CPU machine)")
