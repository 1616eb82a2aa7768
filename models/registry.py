"""The model families lipx knows, by task name."""

from __future__ import annotations

from lipx.errors import InputError, did_you_mean
from lipx.models.family import Family, OriginalFormat


def families() -> dict[str, Family]:
    """Task name -> family (``lipreading``, ``lip2speech``)."""
    from lipx.models.lip2speech import FAMILY as LIP2SPEECH
    from lipx.models.lipreading import FAMILY as LIPREADING

    return {f.task: f for f in (LIPREADING, LIP2SPEECH)}


def get_family(task: str) -> Family:
    """The family of ``task``; raises InputError listing the known tasks."""
    fams = families()
    if task not in fams:
        raise InputError(f"unknown task {task!r}{did_you_mean(task, fams)}")
    return fams[task]


def original_formats() -> dict[str, tuple[Family, OriginalFormat]]:
    """``--from`` name -> (family, original checkpoint layout)."""
    return {o.name: (f, o) for f in families().values() for o in f.originals}


def preset_config(task: str, preset: str):
    """The config of ``preset`` for ``task``; raises InputError listing the presets."""
    fam = get_family(task)
    if preset not in fam.presets:
        raise InputError(f"unknown preset {preset!r} for {task}{did_you_mean(preset, fam.presets)}")
    return fam.presets[preset]()
