"""The tasks the runtime knows, by name: each one :class:`~lipx.runtime.task.StreamTask`.

    unit = stream_task("lipreading")      # InputError listing the known tasks otherwise
    register(MyTask())                    # a new task: its unit, with its TaskSpec registered
                                          # in lipx.tasks (lipx.tasks.register_spec)

Shared code asks the unit of a package's task (``stream_task(manifest.task)``) for whatever
differs between tasks; nothing else in the runtime knows a task by name. Torch-free.
"""

from __future__ import annotations

from lipx.errors import InputError, did_you_mean
from lipx.runtime.lip2speech import Lip2Speech
from lipx.runtime.lipreading import Lipreading
from lipx.runtime.task import StreamTask

_UNITS: dict[str, StreamTask] = {t.name: t for t in (Lipreading(), Lip2Speech())}


def register(unit: StreamTask) -> StreamTask:
    """Add (or replace) the stream unit of ``unit.name``; returns it."""
    _UNITS[unit.name] = unit
    return unit


def units() -> list[StreamTask]:
    """Every registered stream unit."""
    return list(_UNITS.values())


def stream_task(name: str) -> StreamTask:
    """The stream unit of task ``name``.

    Raises:
        InputError: a task the runtime has no unit for (listing the known ones).
    """
    if name not in _UNITS:
        raise InputError(f"no stream unit for task {name!r}{did_you_mean(name, _UNITS)}")
    return _UNITS[name]
