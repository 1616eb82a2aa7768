"""The lipx checkpoint: weights plus everything needed to rebuild and use the model.

A checkpoint is a ``torch.save`` of a plain dict (loadable with ``weights_only=True``)::

    {"format": "lipx-checkpoint", "format_version": 1, "task": "lipreading",
     "preset": "tiny" | None, "config": {...}, "state_dict": {...}, "aux": {name: state_dict},
     "vocabulary": [...] | None, "video": VideoSpec dict, "audio": AudioSpec dict,
     "meta": {"lipx_version": ..., "created": ..., "source": ...}, "training": {...} | None}

``config`` rebuilds the architecture by itself (no preset lookup needed), ``aux`` holds
training-only modules kept beside the model (VCA-GAN's discriminators), and ``training`` holds what
a resumed run needs (optimiser, scheduler, step, RNG state).
"""

from __future__ import annotations

import logging
import os
import time
import zipfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lipx import __version__, files
from lipx.audio import AudioSpec
from lipx.errors import CheckpointError, InputError
from lipx.models.registry import families, get_family
from lipx.video import VideoSpec

log = logging.getLogger(__name__)

FORMAT = "lipx-checkpoint"
FORMAT_VERSION = 1


def default_audio_spec(task: str) -> AudioSpec:
    """The audio analysis a task's model is trained with (its family's; the default analysis for
    a task without a family)."""
    family = families().get(task)
    return family.audio_spec() if family else AudioSpec()


@dataclass
class Checkpoint:
    """A model's weights and the facts needed to rebuild, preprocess for and label it."""

    task: str
    """``lipreading`` or ``lip2speech``."""
    config: Any
    """The family's config dataclass."""
    state_dict: dict[str, torch.Tensor]
    """Weights of the model built from ``config``."""
    preset: str | None = None
    """The preset the config came from, if any."""
    aux: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    """Training-only modules' weights, by name (e.g. ``discriminators``)."""
    vocabulary: list[str] | None = None
    """Class labels in output order (lipreading)."""
    video: VideoSpec = field(default_factory=VideoSpec)
    """Video preprocessing the model expects."""
    audio: AudioSpec | None = None
    """Audio analysis of the model's targets/inputs (defaults per task)."""
    meta: dict[str, Any] = field(default_factory=dict)
    """Provenance: lipx version, creation time, source file, training run."""
    training: dict[str, Any] | None = None
    """Optimiser/scheduler/step/RNG state for ``--resume``."""

    def __post_init__(self) -> None:
        if self.audio is None:
            self.audio = default_audio_spec(self.task)

    def to_payload(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "task": self.task,
            "preset": self.preset,
            "config": self.config.to_dict(),
            "state_dict": self.state_dict,
            "aux": self.aux,
            "vocabulary": self.vocabulary,
            "video": self.video.to_dict(),
            "audio": self.audio.to_dict() if self.audio else None,
            "meta": {"lipx_version": __version__, **self.meta},
            "training": self.training,
        }

    @classmethod
    def from_payload(cls, payload: dict[str, Any], source: str = "checkpoint") -> Checkpoint:
        version = payload.get("format_version")
        if version != FORMAT_VERSION:
            raise CheckpointError(
                f"{source}: checkpoint format version {version} is not supported by lipx "
                f"{__version__} (expected {FORMAT_VERSION}); upgrade lipx"
            )
        task = payload.get("task")
        fam = get_family(task) if task in families() else None
        if fam is None or not isinstance(task, str):
            raise CheckpointError(f"{source}: unknown task {task!r} in checkpoint")
        try:
            config = fam.config_from_dict(payload["config"])
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f"{source}: invalid model config in checkpoint ({e})") from e
        return cls(
            task=task,
            config=config,
            state_dict=payload["state_dict"],
            preset=payload.get("preset"),
            aux=payload.get("aux") or {},
            vocabulary=payload.get("vocabulary"),
            video=VideoSpec.from_dict(payload["video"]),
            audio=AudioSpec.from_dict(payload["audio"]) if payload.get("audio") else None,
            meta=payload.get("meta") or {},
            training=payload.get("training"),
        )

    def num_parameters(self) -> int:
        return sum(t.numel() for k, t in self.state_dict.items() if not k.endswith("_tracked"))


def atomic_write(path: Path, write) -> None:
    """Call ``write(tmp_path)`` then move the file into place, so readers never see half a file."""
    path = Path(path)
    parent = path.parent
    if not parent.exists():
        raise InputError(f"output folder {parent} does not exist; create it first")
    if not os.access(parent, os.W_OK):
        raise InputError(f"output folder {parent} is not writable")
    files.atomic_write(path, write)


def slim(ckpt: Checkpoint, half: bool = False) -> Checkpoint:
    """What inference and export need only: no optimiser state, no training-only modules.

    Args:
        half: store floating-point weights as float16 (about half the file); loading casts them
            back into the float32 model, so only the rounding of the weights changes.
    """
    def cast(t: torch.Tensor) -> torch.Tensor:
        return t.half() if half and t.is_floating_point() else t

    return replace(ckpt, state_dict={k: cast(v) for k, v in ckpt.state_dict.items()}, aux={},
                   training=None, meta={**ckpt.meta, "slim": {"half": half}})


def save_checkpoint(ckpt: Checkpoint, path: str | Path) -> Path:
    """Write ``ckpt`` to ``path`` atomically. Returns the path."""
    path = Path(path)
    ckpt.meta.setdefault("created", time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    payload = ckpt.to_payload()
    atomic_write(path, lambda tmp: torch.save(payload, tmp))
    log.info("wrote %s (%.1f MB)", path, path.stat().st_size / 1e6)
    return path


def torch_load(path: str | Path) -> Any:
    """``torch.load`` with safe unpickling and a clear error for what is not a torch file."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"checkpoint {path} does not exist" if not path.exists()
                         else f"checkpoint {path} is not a file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (zipfile.BadZipFile, EOFError, RuntimeError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(
            f"{path} is not a readable PyTorch checkpoint (truncated or corrupt? {msg})"
        ) from e
    except Exception as e:  # unpickling errors of many kinds
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(f"{path} is not a PyTorch checkpoint lipx can read ({msg})") from e


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read a lipx checkpoint; raises CheckpointError naming what is wrong."""
    payload = torch_load(path)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        hint = ""
        if isinstance(payload, dict) and any(str(k).endswith("_state_dict") for k in payload):
            hint = ("; it looks like an original checkpoint: convert it with "
                    "`lipx convert --from lipreading-original|vca-gan-original`")
        raise CheckpointError(f"{path} is not a lipx checkpoint{hint}")
    return Checkpoint.from_payload(payload, source=str(path))


def build_model(ckpt: Checkpoint) -> nn.Module:
    """The model of ``ckpt`` with its weights, in eval mode; CheckpointError on a mismatch."""
    model = get_family(ckpt.task).build(ckpt.config)
    load_state(model, ckpt.state_dict, "model")
    return model.eval()


#: The name used by the rest of lipx (exporter, trainer).
model_from_checkpoint = build_model


def load_state(module: nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    """``load_state_dict(strict=True)`` with a message that names missing/unexpected/wrong keys."""
    problems = state_dict_problems(module.state_dict(), state)
    if problems:
        raise CheckpointError(f"weights do not fit the {what}: {problems}")
    module.load_state_dict(state, strict=True)


def state_dict_problems(expected: dict[str, torch.Tensor], given: dict[str, torch.Tensor]) -> str:
    """A short description of how ``given`` differs from ``expected`` ('' when it fits)."""

    def few(keys: list[str]) -> str:
        more = f" and {len(keys) - 4} more" if len(keys) > 4 else ""
        return ", ".join(keys[:4]) + more

    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    shapes = [
        f"{k} {tuple(given[k].shape)} (expected {tuple(expected[k].shape)})"
        for k in expected
        if k in given and tuple(given[k].shape) != tuple(expected[k].shape)
    ]
    parts = []
    if missing:
        parts.append(f"missing keys {few(missing)}")
    if unexpected:
        parts.append(f"unexpected keys {few(unexpected)}")
    if shapes:
        parts.append(f"wrong shapes {few(shapes)}")
    return "; ".join(parts)
