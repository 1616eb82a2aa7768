"""The tasks lipx trains, by name: each one training unit (:class:`~lipx.train.task.TrainTask`).

    unit = training_task("lipreading")    # InputError listing the known tasks otherwise
    register(MyTask)                      # a new task: its unit, beside its model family

Shared training code asks the unit of a config's or checkpoint's task for whatever differs
between tasks (the ultralytics ``task_map`` shape: per task, its trainer and validator).
"""

from __future__ import annotations

from lipx.errors import InputError, did_you_mean
from lipx.train.task import TrainTask

_ADDED: dict[str, type[TrainTask]] = {}


def trainers() -> dict[str, type[TrainTask]]:
    """Task name -> training unit (``lipreading``, ``lip2speech``, then any registered)."""
    from lipx.train.lip2speech_task import Lip2SpeechTask
    from lipx.train.lipreading_task import LipreadingTask

    return {**{t.name: t for t in (LipreadingTask, Lip2SpeechTask)}, **_ADDED}


def register(unit: type[TrainTask]) -> type[TrainTask]:
    """Add (or replace) the training unit of ``unit.name``; returns it."""
    _ADDED[unit.name] = unit
    return unit


def training_task(name: str) -> type[TrainTask]:
    """The training unit of task ``name``.

    Raises:
        InputError: a task lipx cannot train (listing the known ones).
    """
    units = trainers()
    if name not in units:
        raise InputError(f"unknown task {name!r}{did_you_mean(name, units)}")
    return units[name]
