"""``lipx demo``: the README's first command, on a smaller budget, with the shipped checkpoints."""

from __future__ import annotations

import json
import wave

import pytest

from lipx.demo import CHECKPOINTS, score_words


def test_score_words_counts_each_clip_once():
    truth = ["ABOUT", "COURT", "STORY"]
    spans = [("ABOUT", 0.5), ("COURT", 1.7), ("PRISON", 1.9), ("GOING", 2.6), ("MAYBE", 4.0)]
    scores = score_words(spans, truth, clip_s=1.0)
    assert scores["correct"] == 1  # COURT at 1.7 falls in clip 1; ABOUT at 0.5 is clip 0
    scores = score_words(spans, truth, clip_s=1.16)
    assert scores["correct"] == 2  # ABOUT (clip 0) and COURT (clip 1); STORY is missed
    assert scores["extra"] == 3  # PRISON in clip 1, GOING in clip 2, MAYBE after the video
    assert scores["accuracy"] == pytest.approx(2 / 3)


@pytest.mark.parametrize("args, message", [
    (["--words", "0"], "--words must be >= 1"),
    (["--bench-s", "-1"], "--bench-s must be >= 0"),
])
def test_bad_options_get_one_line(run_cli, tmp_path, args, message):
    code, _, err = run_cli("demo", tmp_path / "demo", *args)
    assert code == 1 and message in err and len(err.strip().splitlines()) == 1


def test_missing_checkpoints_get_one_line(run_cli, tmp_path):
    code, _, err = run_cli("demo", tmp_path / "demo", "--checkpoints", tmp_path)
    assert code == 1 and "has no lipreading.lipx" in err


@pytest.mark.skipif(not (CHECKPOINTS / "lipreading.lipx").is_file(),
                    reason="the shipped checkpoints are missing")
def test_demo_reads_words_and_speaks_then_reuses(run_cli, tmp_path):
    out = tmp_path / "demo"
    code, stdout, err = run_cli("demo", out, "--words", "4", "--bench-s", "0.2")
    assert code == 0, err
    result = json.loads((out / "demo.json").read_text())
    assert len(result["truth"]) == 4
    # The shipped checkpoints are trained: most words of an unseen speaker are read right,
    # and the generated speech is intelligible by STOI.
    assert result["scores"]["lipreading"]["correct"] >= 3, result
    assert result["scores"]["lip2speech"]["stoi"] >= 0.5, result
    for word in result["read"]:
        assert word in stdout  # printed as read
    with wave.open(str(out / "speech.wav")) as w:
        assert w.getframerate() == 16000 and w.getnframes() > 16000
    for name in ("lipreading.mp4", "lip2speech.mp4", "words.srt", "bench/lipreading/bench.md"):
        assert (out / name).stat().st_size > 0, name
    assert "Next:" in stdout and "lipx stream webcam" in stdout

    code, stdout, _ = run_cli("demo", out, "--words", "4", "--bench-s", "0")
    assert code == 0
    assert stdout.count("reused") == 2  # both packages; the test videos are reused silently
    assert json.loads((out / "demo.json").read_text())["truth"] == result["truth"]
