"""The page at ``/`` in a real browser: headless Chromium streams its camera to ``lipx serve``.

The camera is Chromium's fake device playing a held-out stream (aligned faces, words with
pauses) converted to Y4M; the server serves the shipped, trained lipreading package. The page
is driven by its URL (``?crop=lrw&autostart=1``) and its Stop button; the words it shows must
be those said (see ``browser_helpers`` for what it needs).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from browser_helpers import common_words, mp4_to_y4m, needs_chromium, stream_in_browser
from serve_helpers import Served

pytestmark = [pytest.mark.slow, needs_chromium]


@pytest.mark.timeout(600)
def test_page_reads_the_camera(shipped_lipreading_package: Path,
                               held_out_stream: tuple[Path, list[str]], tmp_path: Path) -> None:
    video, said = held_out_stream
    y4m = tmp_path / "camera.y4m"
    duration = mp4_to_y4m(video, y4m)
    server = Served(shipped_lipreading_package)  # listening: its package is loaded
    try:
        assert server.get("/healthz")[0] == 200
        read, statuses, console = stream_in_browser(server, y4m, duration)
    finally:
        code = server.stop()
    context = (f"said {said}\nread {read}\nstatuses {statuses}\nconsole {console}\n"
               f"server:\n{server.stderr}")
    assert not [s for s in statuses if s.startswith("error")], context
    assert statuses[-1] == "ended", context
    assert common_words([w.upper() for w in said], [w.upper() for w in read]) >= len(said) / 2, \
        context
    assert code == 0, f"lipx serve exited {code} after SIGTERM:\n{server.stderr}"
