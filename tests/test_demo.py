"""``lipx demo``: the README's first command, on a smaller budget, with the shipped checkpoints."""

from __future__ import annotations

import json
import wave

import pytest

from lipx.demo import CHECKPOINTS, score_words
from lipx.package import Manifest


def test_score_words_counts_words_read_in_order():
    truth = ["ABOUT", "COURT", "STORY", "PRISON"]
    assert score_words(truth, truth) == {"correct": 4.0, "extra": 0.0, "accuracy": 1.0}
    # a repeat, a wrong word in place of STORY, and an order swap cost what they should
    read = ["ABOUT", "ABOUT", "COURT", "GOING", "PRISON"]
    assert score_words(read, truth) == {"correct": 3.0, "extra": 2.0, "accuracy": 0.75}
    assert score_words(["PRISON", "ABOUT"], truth)["correct"] == 1
    assert score_words([], truth)["accuracy"] == 0.0


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
@pytest.mark.slow
def test_demo_reads_words_and_speaks_then_reuses(run_cli, tmp_path):
    out = tmp_path / "demo"
    code, stdout, err = run_cli("demo", out, "--words", "4", "--bench-s", "0.2")
    assert code == 0, err
    result = json.loads((out / "demo.json").read_text())
    assert len(result["truth"]) == 4
    # The shipped checkpoints are trained: most words of an unseen speaker are read right,
    # and the generated speech is intelligible by STOI.
    assert result["scores"]["lipreading"]["correct"] >= 3, result
    assert result["scores"]["lip2speech"]["stoi"] >= 0.45, result
    for word in result["read"]:
        assert word in stdout  # printed as read
    with wave.open(str(out / "speech.wav")) as w:
        assert w.getframerate() == 16000 and w.getnframes() > 16000
    for name in ("lipreading.mp4", "lip2speech.mp4", "words.srt", "bench/lipreading/bench.md"):
        assert (out / name).stat().st_size > 0, name
    assert "Next:" in stdout and "lipx stream webcam" in stdout
    for task in ("lipreading", "lip2speech"):  # the small presets' export, parity checked
        manifest = Manifest.read(out / "packages" / task)
        assert manifest.preset == "small" and {g.role for g in manifest.graphs} == {
            "model", "frontend", "backend"}
        assert manifest.parity and all(record.passed for record in manifest.parity)

    code, stdout, _ = run_cli("demo", out, "--words", "4", "--bench-s", "0")
    assert code == 0
    assert stdout.count("reused") == 2  # both packages; the test videos are reused silently
    assert json.loads((out / "demo.json").read_text())["truth"] == result["truth"]

    # other options make the test video again; the packages still fit their checkpoints
    code, stdout, _ = run_cli("demo", out, "--words", "2", "--bench-s", "0")
    assert code == 0 and stdout.count("reused") == 2
    assert len(json.loads((out / "demo.json").read_text())["truth"]) == 2
