"""Convert the released original checkpoints into lipx checkpoints.

An original checkpoint is a ``torch.save`` of a dict of groups (``v_front_state_dict``,
``mem_state_dict`` ...), each one module's ``state_dict``, possibly saved from ``DataParallel``
(keys prefixed ``module.``). The family's :class:`~lipx.models.family.OriginalFormat` says which
group goes where and how keys are renamed; everything is checked before anything is written.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from lipx.errors import CheckpointError, InputError, did_you_mean
from lipx.models.checkpoint import Checkpoint, load_state, state_dict_problems, torch_load
from lipx.models.family import Family, OriginalFormat
from lipx.models.registry import original_formats

log = logging.getLogger(__name__)

Groups = dict[str, dict[str, torch.Tensor]]


def read_original(path: str | Path) -> Groups:
    """The groups of an original checkpoint, with ``module.`` prefixes removed.

    Raises:
        CheckpointError: not a dict of state dicts (e.g. a lipx checkpoint or random file).
    """
    payload = torch_load(path)
    if isinstance(payload, dict) and payload.get("format") == "lipx-checkpoint":
        raise CheckpointError(f"{path} is already a lipx checkpoint; nothing to convert")
    if not isinstance(payload, dict):
        raise CheckpointError(f"{path} holds a {type(payload).__name__}, not a dict of state dicts")
    groups = {
        str(name): {_strip_module(k): v for k, v in group.items()}
        for name, group in payload.items()
        if isinstance(group, dict) and group and all(torch.is_tensor(v) for v in group.values())
    }
    if not groups:
        raise CheckpointError(
            f"{path} holds no state dicts (keys: {', '.join(map(str, list(payload)[:6]))})"
        )
    return groups


def _strip_module(key: str) -> str:
    return key[len("module."):] if key.startswith("module.") else key


def detect_format(groups: Groups) -> str:
    """The ``--from`` name whose required groups the checkpoint has; CheckpointError if none."""
    fits = [
        name for name, (_, fmt) in original_formats().items()
        if set(fmt.model_groups) <= set(groups)
    ]
    if len(fits) != 1:
        raise CheckpointError(
            f"cannot tell which model the groups {', '.join(sorted(groups))} belong to; "
            f"pass --from ({', '.join(original_formats())})"
        )
    return fits[0]


def convert_groups(groups: Groups, family: Family, fmt: OriginalFormat) -> Checkpoint:
    """Map original groups onto a lipx model and return the checkpoint.

    Raises:
        CheckpointError: a required group is missing, or keys/shapes do not fit (named).
    """
    missing = [g for g in fmt.model_groups if g not in groups]
    if missing:
        raise CheckpointError(
            f"not a {fmt.name} checkpoint: group(s) {', '.join(missing)} missing "
            f"(found {', '.join(sorted(groups))})"
        )
    config = fmt.config_from_original(groups) if fmt.config_from_original else None
    model = family.build(config)
    load_state(model, _mapped(groups, fmt.model_groups, fmt), f"{family.task} model")
    aux_modules = family.build_aux(config)
    aux: dict[str, dict[str, torch.Tensor]] = {}
    for name, module in aux_modules.items():
        wanted = {g: p.split("/", 1)[1] for g, p in fmt.aux_groups.items()
                  if p.split("/", 1)[0] == name}
        present = {g: p for g, p in wanted.items() if g in groups}
        if not present:
            log.info("no %s groups in the original checkpoint; not converted", name)
            continue
        state = _mapped(groups, present, fmt)
        problems = state_dict_problems(module.state_dict(), state)
        if problems and len(present) == len(wanted):
            raise CheckpointError(f"weights do not fit the {name}: {problems}")
        if not problems:
            aux[name] = state
    return Checkpoint(
        task=family.task,
        config=config,
        state_dict=model.state_dict(),
        preset=_matching_preset(family, config),
        aux=aux,
        meta={"converted_from": fmt.name},
    )


def _mapped(groups: Groups, prefixes: dict[str, str], fmt: OriginalFormat) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for group, prefix in prefixes.items():
        for key, value in groups[group].items():
            out[prefix + fmt.rename(group, key)] = value
    return out


def _matching_preset(family: Family, config: Any) -> str | None:
    for name, factory in family.presets.items():
        if factory() == config:
            return name
    return None


def convert_original(
    src: str | Path, from_name: str | None = None, vocabulary: list[str] | None = None
) -> Checkpoint:
    """Read an original checkpoint and return the equivalent lipx checkpoint.

    Args:
        src: the released checkpoint file.
        from_name: ``lipreading-original`` or ``vca-gan-original``; detected from the groups
            when None.
        vocabulary: class labels in output order (lipreading), e.g. LRW's 500 sorted words.
    """
    formats = original_formats()
    if from_name is not None and from_name not in formats:
        raise InputError(f"unknown original format {from_name!r}{did_you_mean(from_name, formats)}")
    groups = read_original(src)
    name = from_name or detect_format(groups)
    family, fmt = formats[name]
    ckpt = convert_groups(groups, family, fmt)
    ckpt.meta["source"] = str(src)
    if vocabulary is not None:
        classes = getattr(ckpt.config, "num_classes", None)
        if classes is not None and len(vocabulary) != classes:
            raise InputError(
                f"vocabulary has {len(vocabulary)} words but the model has {classes} classes"
            )
        ckpt.vocabulary = list(vocabulary)
    return ckpt
