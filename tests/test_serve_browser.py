"""The page at ``/`` in a real browser: headless Chromium streams its camera to ``lipx serve``.

The camera is Chromium's fake device playing a held-out stream (aligned faces, words with
pauses) converted to Y4M; the server serves the shipped, trained lipreading package. The page
is driven by its URL (``?crop=lrw&autostart=1``) and its Stop button; the words it shows must
be those said. Needs ``/usr/bin/chromium`` (Debian's) and the ``playwright`` package (its
browsers are never downloaded: ``executable_path`` is Debian's).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from serve_helpers import Served
from y4m import write_y4m

playwright = pytest.importorskip("playwright.sync_api", reason="needs the playwright package")

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

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.is_file(), reason=f"needs Debian's chromium at {CHROMIUM}"),
]


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


@pytest.mark.timeout(600)
def test_page_reads_the_camera(shipped_lipreading_package: Path,
                               held_out_stream: tuple[Path, list[str]], tmp_path: Path) -> None:
    video, said = held_out_stream
    y4m = tmp_path / "camera.y4m"
    duration = mp4_to_y4m(video, y4m)
    server = Served(shipped_lipreading_package)  # listening: its package is loaded
    try:
        assert server.get("/healthz")[0] == 200
        read, statuses, console = _stream_in_browser(server, y4m, duration)
    finally:
        code = server.stop()
    context = (f"said {said}\nread {read}\nstatuses {statuses}\nconsole {console}\n"
               f"server:\n{server.stderr}")
    assert not [s for s in statuses if s.startswith("error")], context
    assert statuses[-1] == "ended", context
    assert common_words([w.upper() for w in said], [w.upper() for w in read]) >= len(said) / 2, \
        context
    assert code == 0, f"lipx serve exited {code} after SIGTERM:\n{server.stderr}"


def _stream_in_browser(server: Served, y4m: Path,
                       duration: float) -> tuple[list[str], list[str], list[str]]:
    """Open the page with the Y4M as its camera, stream the whole video, stop.

    Returns:
        The words the page shows, every status it showed, and its console messages.
    """
    args = ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
            f"--use-file-for-fake-video-capture={y4m}", "--no-sandbox"]
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=args)
        try:
            page = browser.new_page()
            console: list[str] = []
            page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
            page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
            page.add_init_script(STATUS_LOG)
            page.goto(f"{server.url}/?crop=lrw&autostart=1")
            _wait_for_status(page, "streaming", console, server)
            page.wait_for_timeout((duration + TAIL_S) * 1000)
            page.click("#start")
            _wait_for_status(page, "ended", console, server)
            return (page.text_content("#words").split(), page.evaluate("window.statusLog"),
                    console)
        finally:
            browser.close()


def _wait_for_status(page, want: str, console: list[str], server: Served,
                     timeout_s: float = 30.0) -> None:
    """Wait until the page's #status is ``want``; fail on an error status or a timeout."""
    try:
        page.wait_for_function(
            "want => { const s = document.getElementById('status').textContent;"
            " return s === want || s.startsWith('error'); }", arg=want, timeout=timeout_s * 1000)
    except playwright.TimeoutError:
        pass
    status = page.text_content("#status")
    if status != want:
        pytest.fail(f"the page shows {status!r}, not {want!r}; statuses "
                    f"{page.evaluate('window.statusLog')}; console {console}\n"
                    f"server:\n{server.stderr}")
