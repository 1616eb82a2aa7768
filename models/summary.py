"""What a checkpoint holds, as rows for ``lipx info``."""

from __future__ import annotations

from collections import Counter
from typing import Any

from lipx.models.checkpoint import Checkpoint


def parameter_counts(state_dict: dict[str, Any], depth: int = 1) -> dict[str, int]:
    """Parameters per top-level module (buffers such as BN running statistics excluded)."""
    buffers = ("running_mean", "running_var", "num_batches_tracked")
    counts: Counter[str] = Counter()
    for key, tensor in state_dict.items():
        if not key.endswith(buffers):
            counts[".".join(key.split(".")[:depth])] += tensor.numel()
    return dict(counts)


def summarize(ckpt: Checkpoint) -> dict[str, Any]:
    """A JSON-friendly summary: task, preset, sizes, preprocessing, provenance."""
    modules = parameter_counts(ckpt.state_dict)
    vocab = ckpt.vocabulary
    return {
        "task": ckpt.task,
        "preset": ckpt.preset or "custom",
        "parameters": sum(modules.values()),
        "modules": modules,
        "training-only modules": {
            name: sum(parameter_counts(sd).values()) for name, sd in ckpt.aux.items()
        },
        "vocabulary": (f"{len(vocab)} words: {', '.join(vocab[:8])}"
                       f"{' ...' if len(vocab) > 8 else ''}"
                       if vocab else "none"),
        "video": ckpt.video.to_dict(),
        "audio": ckpt.audio.to_dict() if ckpt.audio else None,
        "config": ckpt.config.to_dict(),
        "meta": ckpt.meta,
        "resumable": ckpt.training is not None,
    }
