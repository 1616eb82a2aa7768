"""Random-number-generator state capture, so a resumed run continues as if never stopped."""

from __future__ import annotations

import random
from typing import Any, cast

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """Every global RNG's state (Python, numpy, torch CPU and CUDA)."""
    state = {
        "python": random.getstate(),
        # the legacy (default) form: the MT19937 tuple; numpy's stubs type the default as a dict
        "numpy": _numpy_state_to_safe(cast(tuple, np.random.get_state())),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    random.setstate(_as_python_state(state["python"]))
    np.random.set_state(_as_numpy_state(state["numpy"]))
    torch.set_rng_state(torch.as_tensor(state["torch"], dtype=torch.uint8))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_python_state(s: Any) -> tuple:
    # tuples may come back as lists after a round trip through torch.save
    return (s[0], tuple(s[1]), s[2])


def _numpy_state_to_safe(s: tuple) -> tuple:
    # numpy arrays are not allowed by torch.load(weights_only=True); a tensor is
    return (s[0], torch.from_numpy(s[1].astype(np.int64)), int(s[2]), int(s[3]), float(s[4]))


def _as_numpy_state(s: Any) -> tuple:
    keys = s[1].numpy() if torch.is_tensor(s[1]) else np.asarray(s[1])
    return (s[0], keys.astype(np.uint32), int(s[2]), int(s[3]), float(s[4]))
