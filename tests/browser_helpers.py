"""Chromium's fake camera playing a video into lipx serve's page, for the browser tests.

Needs ``/usr/bin/chromium`` (Debian's) and the ``playwright`` package (its browsers are never
downloaded: ``executable_path`` is Debian's).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from serve_helpers import Served
from y4m import write_y4m

CHROMIUM = Path("/usr/bin/chromium")
TAIL_S = 3.0
"""Seconds streamed past the video's end, so its last words are read."""

STATUS_LOG = """
window.statusLog = [];
new MutationObserver(() => {
  const text = document.getElementById("status")?.textContent;
  if (text && text !== window.statusLog.at(-1)) window.statusLog.push(text);
}).observe(document, {childList: true, characterData: true, subtree: true});
"""
"""Run before the page's own script: every text #status shows, in order."""

sync_api = pytest.importorskip("playwright.sync_api", reason="needs the playwright package")

needs_chromium = pytest.mark.skipif(not CHROMIUM.is_file(),
                                    reason=f"needs Debian's chromium at {CHROMIUM}")


def mp4_to_y4m(mp4: Path, y4m: Path) -> float:
    """Convert a 25 fps video to Y4M for Chromium's fake camera; its duration in seconds."""
    import av

    count = 0

    def frames():
        nonlocal count
        with av.open(str(mp4)) as container:
            for frame in container.decode(video=0):
                count += 1
                yield frame.to_ndarray(format="rgb24")

    write_y4m(y4m, frames(), fps=25)
    return count / 25


def common_words(said: list[str], read: list[str]) -> int:
    """How many of ``said`` appear in ``read`` in order (longest common subsequence)."""
    row = [0] * (len(read) + 1)
    for w in said:
        prev = row[:]
        for j, r in enumerate(read, 1):
            row[j] = prev[j - 1] + 1 if w == r else max(prev[j], row[j - 1])
    return row[-1]


def stream_in_browser(server: Served, y4m: Path, duration: float,
                      during: Callable[[Any], None] | None = None, query: str = "crop=lrw",
                      ) -> tuple[list[str], list[str], list[str]]:
    """Open the page with the Y4M as its camera, stream the whole video, stop; ``during(page)``
    runs once the page streams, before the video's time has passed.

    Returns:
        The words the page shows, every status it showed, and its console messages.
    """
    args = ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
            f"--use-file-for-fake-video-capture={y4m}", "--no-sandbox"]
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=args)
        try:
            page = browser.new_page()
            console: list[str] = []
            page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
            page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
            page.add_init_script(STATUS_LOG)
            page.goto(f"{server.url}/?{query}&autostart=1")
            wait_for_status(page, "streaming", console, server)
            started = time.monotonic()
            if during is not None:
                during(page)
            left = duration + TAIL_S - (time.monotonic() - started)
            page.wait_for_timeout(max(0.0, left) * 1000)
            page.click("#start")
            wait_for_status(page, "ended", console, server)
            return (page.text_content("#words").split(), page.evaluate("window.statusLog"),
                    console)
        finally:
            browser.close()


def wait_for_status(page, want: str, console: list[str], server: Served,
                     timeout_s: float = 30.0) -> None:
    """Wait until the page's #status is ``want``; fail on an error status or a timeout."""
    try:
        page.wait_for_function(
            "want => { const s = document.getElementById('status').textContent;"
            " return s === want || s.startsWith('error'); }", arg=want, timeout=timeout_s * 1000)
    except sync_api.TimeoutError:
        pass
    status = page.text_content("#status")
    if status != want:
        pytest.fail(f"the page shows {status!r}, not {want!r}; statuses "
                    f"{page.evaluate('window.statusLog')}; console {console}\n"
                    f"server:\n{server.stderr}")
