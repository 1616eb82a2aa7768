"""A model family: what the checkpoint, converter, exporter and CLI need to know about one task.

Each task (``lipreading``, ``lip2speech``) registers one :class:`Family` in
:mod:`lipx.models.registry`. Nothing in the models layer branches on the task name: it looks the
family up and uses these fields (the other layers ask their own task units).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from torch import nn

from lipx.audio import AudioSpec


class ModelConfig(Protocol):
    """A frozen dataclass that fully describes a model's architecture."""

    def to_dict(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class OriginalFormat:
    """How the released original checkpoints of a family are laid out.

    The original file is a ``torch.save`` of a dict of groups (``v_front_state_dict`` ...), each a
    module's ``state_dict``. :func:`lipx.models.convert.convert_original` uses these fields.
    """

    name: str
    """The ``--from`` name users type, e.g. ``lipreading-original``."""
    model_groups: dict[str, str]
    """Original group -> prefix of our model's ``state_dict`` keys (e.g. ``"frontend."``)."""
    aux_groups: dict[str, str] = field(default_factory=dict)
    """Training-only groups kept beside the model (e.g. discriminators) -> aux name + prefix
    ``"discriminators/dis1."`` meaning aux module ``discriminators``, key prefix ``dis1.``."""
    rename: Callable[[str, str], str] = lambda group, key: key
    """(group, original key) -> key inside that group's module in lipx, before the prefix."""
    config_from_original: Callable[[dict[str, dict[str, Any]]], Any] | None = None
    """Infer the lipx config from the original groups (slot count, backend, vocabulary size ...)."""


@dataclass(frozen=True)
class Family:
    """Everything lipx needs to know about one task's models."""

    task: str
    """``lipreading`` or ``lip2speech``."""
    config_from_dict: Callable[[dict[str, Any]], Any]
    """Rebuild a config from ``config.to_dict()``."""
    build: Callable[[Any], nn.Module]
    """Build the (inference + training) model from a config."""
    presets: dict[str, Callable[[], Any]]
    """Preset name -> config factory (``original``, ``tiny``, ...)."""
    build_aux: Callable[[Any], dict[str, nn.Module]] = lambda cfg: {}
    """Training-only modules stored beside the model (e.g. VCA-GAN's discriminators)."""
    originals: tuple[OriginalFormat, ...] = ()
    """Released-checkpoint layouts that ``lipx convert`` reads."""
    audio_spec: Callable[[], AudioSpec] = AudioSpec
    """The audio analysis the task's models are trained with (a checkpoint's default)."""
    backends: tuple[str, ...] = ()
    """The backends a config may choose between (``lipx train --set backend=``); empty: no
    choice."""
    min_window: int = 1
    """Fewest frames a training window may have."""
    min_window_reason: str = ""
    """Why the windows need :attr:`min_window` frames (for the error that says so)."""
