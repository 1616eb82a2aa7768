"""Original-layout checkpoints filled by the reference fill rule (tests/data/reference/README)."""

from __future__ import annotations

import json
import math
import zlib
from pathlib import Path

import numpy as np
import torch

REFERENCE = Path(__file__).parent / "data" / "reference"
TAG = "lipx-ref-v1"


def _fill(group: str, row: dict) -> np.ndarray:
    key, shape, module = row["key"], tuple(row["shape"]), row["module"]
    leaf = key.rsplit(".", 1)[-1]
    rng = np.random.default_rng(zlib.crc32(f"{TAG}/{group}/{key}".encode()))
    if leaf == "num_batches_tracked":
        return np.zeros(shape, np.int64)
    if leaf == "running_var":
        x = rng.uniform(0.5, 1.5, shape)
    elif leaf == "running_mean":
        x = rng.normal(0.0, 0.1, shape)
    elif module.startswith("BatchNorm") and leaf == "weight":
        x = 1.0 + rng.normal(0.0, 0.1, shape)
    elif module == "PReLU":
        x = rng.uniform(0.1, 0.3, shape)
    elif module == "Memory":
        x = rng.normal(0.0, 0.5, shape)
    elif len(shape) >= 2:
        x = rng.normal(0.0, 1.0, shape) / math.sqrt(math.prod(shape[1:]))
    else:
        x = rng.normal(0.0, 0.02, shape)
    return np.asarray(x, np.float64).astype(np.float32)


def schema(name: str) -> dict:
    """The schema of ``mvm_gru``, ``mvm_mstcn`` or ``vca_gan``."""
    return json.loads((REFERENCE / f"{name}.schema.json").read_text())


def fill_original(name: str) -> dict[str, dict[str, torch.Tensor]]:
    """An original checkpoint's groups, every tensor filled by the reference rule."""
    return {
        group: {row["key"]: torch.from_numpy(_fill(group, row)) for row in rows}
        for group, rows in schema(name)["groups"].items()
    }


def golden(name: str) -> dict[str, np.ndarray]:
    """The golden input/outputs of ``name``."""
    with np.load(REFERENCE / f"{name}.golden.npz") as z:
        return {k: z[k] for k in z.files}


def schema_param_counts(name: str) -> dict[str, int]:
    """Parameter count per group, as the original counts them (buffers excluded)."""
    buffers = ("running_mean", "running_var", "num_batches_tracked")
    return {
        group: sum(math.prod(r["shape"]) for r in rows if not r["key"].endswith(buffers))
        for group, rows in schema(name)["groups"].items()
    }


def save_original(name: str, path: Path, data_parallel: bool = False) -> Path:
    """Write a filled original checkpoint to ``path`` (keys ``module.``-prefixed if asked)."""
    groups = fill_original(name)
    if data_parallel:
        groups = {g: {f"module.{k}": v for k, v in sd.items()} for g, sd in groups.items()}
    torch.save(groups, path)
    return path
