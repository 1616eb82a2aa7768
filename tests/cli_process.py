"""The ``lipx`` console entry point in a subprocess, for tests that signal or serve it."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable

import pytest

PROGRESS_TIMEOUT_S = 120.0
"""Most seconds a command may take to start and make progress (imports on a busy machine)."""
EXIT_TIMEOUT_S = 60.0
"""Most seconds it may take to close its outputs and exit once signalled."""


def _default_stop_signals() -> None:
    """In the child: SIGTERM and SIGHUP as a terminal leaves them. Under ``nohup`` (a CI job
    started with it) the test runner ignores SIGHUP, the child would inherit that, and lipx
    rightly keeps an ignored signal ignored."""
    for name in ("SIGTERM", "SIGHUP"):
        signal.signal(getattr(signal, name), signal.SIG_DFL)


class Lipx:
    """The ``lipx`` console entry point in a subprocess, its stderr collected as it comes."""

    def __init__(self, *args: object):
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from lipx.cli import main; main()", *map(str, args)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            preexec_fn=_default_stop_signals)
        self.err: list[str] = []
        self._reader = threading.Thread(target=lambda: self.err.extend(self.proc.stderr),
                                        daemon=True)
        self._reader.start()

    @property
    def stderr(self) -> str:
        return "".join(self.err)

    def wait_until(self, ready: Callable[[], bool]) -> None:
        """Poll ``ready`` until it holds; fail if the process ends first or it takes too long."""
        deadline = time.monotonic() + PROGRESS_TIMEOUT_S
        while not ready():
            if self.proc.poll() is not None:
                self._reader.join(5)
                pytest.fail(f"lipx ended ({self.proc.returncode}) before making progress:\n"
                            f"{self.stderr}")
            if time.monotonic() > deadline:
                self.proc.kill()
                pytest.fail(f"lipx made no progress in {PROGRESS_TIMEOUT_S:.0f} s:\n{self.stderr}")
            time.sleep(0.05)

    def stop(self, signum: int) -> int:
        """Send ``signum``; the exit code once the process has ended."""
        self.proc.send_signal(signum)
        try:
            self.proc.wait(EXIT_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            pytest.fail(f"lipx did not exit within {EXIT_TIMEOUT_S:.0f} s of the signal")
        self._reader.join(5)
        return self.proc.returncode
