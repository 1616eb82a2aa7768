"""Stop signals end a command the way Ctrl-C does.

docker stop, systemd, Kubernetes and Slurm preemption stop a process with SIGTERM, and a closed
terminal sends SIGHUP. Python turns only SIGINT into ``KeyboardInterrupt``; the others kill the
process on the spot, so ``lipx stream`` would leave no WAV or MP4 and ``lipx train`` no
``last.lipx``. Inside :func:`stop_signals_interrupt` they raise ``KeyboardInterrupt`` too, so
every command's Ctrl-C path runs for them::

    with stop_signals_interrupt():
        app()

The first stop signal interrupts; later ones are ignored while the command winds down, since a
manager may send SIGTERM more than once (Slurm signals every process of a step, torchrun forwards
it again) and a second interrupt would cut short the closing of the outputs. The manager forces
an exit with SIGKILL once its grace period ends; a second Ctrl-C (SIGINT) still interrupts, as it
always did. A stop signal ignored when lipx starts (``nohup`` ignores SIGHUP) stays ignored.

Python runs signal handlers in the main thread only, so worker threads are unaffected, just as
with Ctrl-C. Outside the main thread (lipx embedded in a threaded program) nothing is installed.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Iterator
from types import FrameType

log = logging.getLogger(__name__)

STOP_SIGNALS = ("SIGTERM", "SIGHUP")
"""Signals handled as SIGINT is, by name (Windows has no SIGHUP)."""


@contextlib.contextmanager
def stop_signals_interrupt() -> Iterator[None]:
    """Within the block, the first :data:`STOP_SIGNALS` raises ``KeyboardInterrupt`` in the main
    thread and later ones are ignored; the previous handlers are restored on leaving it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {}
    for name in STOP_SIGNALS:
        number = getattr(signal, name, None)
        if number is None:
            continue
        handler = signal.getsignal(number)
        if handler in (signal.SIG_IGN, None):  # ignored on purpose, or set outside Python
            continue
        previous[number] = handler
    received: list[str] = []

    def interrupt(signum: int, frame: FrameType | None) -> None:
        # no output here: the handler may run in the middle of a write to the same stream
        received.append(signal.Signals(signum).name)
        if len(received) == 1:
            raise KeyboardInterrupt(received[0])

    for number in previous:
        signal.signal(number, interrupt)
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        if len(received) > 1:
            log.info("ignored %s while stopping", ", ".join(received[1:]))
