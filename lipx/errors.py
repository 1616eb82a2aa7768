"""User-facing errors.

Every mistake a user can make (a missing file, an unknown model, a bad option) raises a
``LipxError`` subclass. The CLI prints its message as one line and exits 1; anything else is a bug
and keeps its traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class LipxError(Exception):
    """Base class of all user-facing errors: the message says what is wrong and how to fix it."""


class InputError(LipxError):
    """A file, option or value given by the user is missing, unreadable or invalid."""


class CheckpointError(InputError):
    """A checkpoint cannot be read, or does not fit the model it claims to hold."""


class ManifestError(LipxError):
    """A model package's manifest is missing, malformed or of an unsupported schema version."""


class BackendUnavailableError(LipxError):
    """An engine/backend needs a library or device that is not present."""


class BuildFailed(LipxError):
    """An artifact (a converted graph, a TensorRT plan) could not be built."""


class ParityError(LipxError):
    """An exported artifact's outputs differ from the reference beyond tolerance."""


class ShapeMismatch(ParityError):
    """An artifact's output shape differs from the reference output shape."""


class ToleranceExceeded(ParityError):
    """An artifact's output values differ from the reference beyond tolerance."""


def check_tolerances(min_top1: float | None = None, **bounds: float | None) -> None:
    """InputError unless each given bound (``atol=``, ``rtol=``, ...) is >= 0 and ``min_top1``
    within 0..1; None means not given. Shared by the export and bench options."""
    for name, value in bounds.items():
        if value is not None and value < 0:
            raise InputError(f"--{name.replace('_', '-')} must be >= 0, got {value}")
    if min_top1 is not None and not 0 <= min_top1 <= 1:
        raise InputError(f"--min-top1 must be within 0..1, got {min_top1}")


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """A ' (did you mean X?)' hint and the list of valid choices, for error messages."""
    choices = sorted(choices)
    close = difflib.get_close_matches(name, choices, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"{hint}; choose from: {', '.join(choices)}"


def first_line(e: BaseException) -> str:
    """The first line of an exception's message (tools print pages), else its type's name."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
