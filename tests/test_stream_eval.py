"""``lipx eval-stream``: the streaming runtime scored on continuous streams."""

from __future__ import annotations

import json
import math

import pytest

from lipx.data.formats import TimedWord
from lipx.runtime.events import WordEvent
from lipx.runtime.lipreading import WordTally
from lipx.runtime.stream import StreamOptions
from lipx.runtime.stream_eval import StreamEvalOptions, evaluate_streams, parse_sweep


def _word(word, start, end, emitted):
    return WordEvent(word, start, end, 0.9, emitted_s=emitted)


def test_word_tally_counts_errors_false_words_by_kind_and_emission_waits():
    segments = [TimedWord("sil", 0.0, 1.0), TimedWord("the", 1.0, 1.2),
                TimedWord("ABOUT", 1.2, 1.6), TimedWord("still", 1.6, 3.6),
                TimedWord("YOUNG", 3.6, 4.0), TimedWord("sil", 4.0, 7.0)]
    emitted = [_word("LONDON", 0.2, 0.6, 0.9),   # in silence: a false word
               _word("ABOUT", 1.2, 1.6, 1.9),    # right, emitted 0.3 s after its end
               _word("LONDON", 2.2, 2.6, 2.8),   # on the still face: a false word
               _word("LONDON", 3.6, 4.0, 4.4)]   # YOUNG read as LONDON: a substitution
    tally = WordTally(vocabulary={"ABOUT", "YOUNG", "LONDON"})
    tally.add_words(segments, emitted)
    s = tally.scores()
    assert (s["words_said"], s["substitutions"], s["deletions"], s["insertions"]) == (2, 1, 0, 2)
    assert s["wer"] == 1.5 and s["words_emitted"] == 4
    assert s["silence_s"] == 4.0 and s["still_face_s"] == 2.0
    assert s["false_words_per_min_silence"] == pytest.approx(1 / (4 / 60))
    assert s["false_words_per_min_still_face"] == pytest.approx(1 / (2 / 60))
    assert s["false_words_per_min"] == pytest.approx(2 / (6 / 60))
    assert s["emission_p50_s"] == pytest.approx(0.3)  # only the word read right
    assert s["time_offset_median_s"] == pytest.approx(0.0)  # ABOUT reported where it was said


def test_sweep_specs_parse_and_bad_ones_are_refused():
    assert parse_sweep(["stride=1,4", "threshold=0.5,0.9"]) == {"stride": [1, 4],
                                                                "threshold": [0.5, 0.9]}
    from lipx.errors import InputError

    for bad in ("stride", "speed=1,2", "stride=a,b", "stride="):
        with pytest.raises(InputError, match="--sweep"):
            parse_sweep([bad])


@pytest.mark.slow  # the fast lane keeps under 2 minutes
def test_eval_stream_lipreading_end_to_end_with_a_sweep(run_cli, packages, tmp_path):
    data = tmp_path / "streams"
    code, _, err = run_cli("data", "synth", data, "--layout", "lrw-streams", "--speakers", "2",
                           "--words", "3", "--streams", "2", "--per-stream", "3")
    assert code == 0, err
    out = tmp_path / "eval.json"
    code, stdout, err = run_cli("eval-stream", packages["lipreading"], data, "--json", out)
    assert code == 0, err
    assert "WER" in stdout and "cache vs whole front-end" in stdout
    report = json.loads(out.read_text())
    said = sum(len(json.loads(line)["words"]) for line in
               (data / "streams.jsonl").read_text().splitlines())
    vocabulary = set(json.loads((packages["lipreading"] / "manifest.json").read_text())
                     ["vocabulary"])
    assert report["scores"]["words_said"] <= said  # only the package's vocabulary counts
    assert report["settings"]["stride"] == 3 and report["streams"] == 2 and vocabulary
    assert report["exactness"]["windows"] > 0
    assert report["exactness"]["features_max_abs"] <= 1e-5  # the cache is exact
    assert report["exactness"]["outputs_max_abs"] <= 1e-5
    assert report["scores"]["silence_s"] > 0 and report["scores"]["still_face_s"] > 0
    quick = tmp_path / "quick.json"  # the same scores without the exactness pass
    code, stdout, err = run_cli("eval-stream", packages["lipreading"], data, "--json", quick,
                                "--no-exactness")
    assert code == 0, err
    assert "cache vs whole front-end" not in stdout
    assert json.loads(quick.read_text())["exactness"] == {}
    assert json.loads(quick.read_text())["scores"]["wer"] == report["scores"]["wer"]

    sweep = tmp_path / "sweep"
    code, _, err = run_cli("eval-stream", packages["lipreading"], data, "--sweep",
                           "stride=1,9,12", "--sweep", "pad=0,5", "--out", sweep,
                           "--max-streams", "1")
    assert code == 0, err
    points = json.loads((sweep / "sweep.json").read_text())
    assert [(p["settings"]["stride"], p["settings"]["pad"]) for p in points] == [
        (1, 0), (1, 5), (9, 0), (9, 5)]  # 12 > the window: skipped
    assert "skipped {'stride': 12, 'pad': 0}" in err
    # a padded stream's cache is exact too (the check pads the whole front-end's input alike)
    padded = evaluate_streams(StreamEvalOptions(packages["lipreading"], data,
                                                StreamOptions(pad=5), max_streams=1))
    assert padded.settings["pad"] == 5 and padded.exactness["windows"] > 0
    assert padded.exactness["outputs_max_abs"] <= 1e-5
    assert (sweep / "sweep.png").stat().st_size > 1000


@pytest.mark.slow  # the fast lane keeps under 2 minutes
def test_a_sweep_of_head_options_replays_the_windows_and_reads_what_a_run_reads(packages,
                                                                                tmp_path):
    from lipx.data.stream_corpus import StreamsOptions, synthesize_streams
    from lipx.data.synth import SynthOptions
    from lipx.runtime.stream_eval import sweep

    data = tmp_path / "streams"
    recipe = SynthOptions(out=tmp_path, layout="lrw", speakers=2, words=3)
    synthesize_streams(StreamsOptions(data, recipe, streams=1, per_stream=4))
    opts = StreamEvalOptions(packages["lipreading"], data, exactness=False)
    reports, _ = sweep(opts, {"threshold": [0.0, 0.2], "agreement": [1, 2]})
    assert [r.settings.get("replayed", False) for r in reports] == [False, True, True, True]
    for r in reports[1:]:
        run = evaluate_streams(StreamEvalOptions(
            packages["lipreading"], data, StreamOptions(threshold=r.settings["threshold"],
                                                        agreement=r.settings["agreement"]),
            exactness=False))
        for k in ("words_emitted", "substitutions", "deletions", "insertions",
                  "false_words_per_min", "time_offset_median_s"):
            assert r.scores[k] == pytest.approx(run.scores[k], nan_ok=True), k
        assert r.latency["algorithmic_max_s"] == run.latency["algorithmic_max_s"]
    assert reports[0].scores["words_emitted"] > reports[3].scores["words_emitted"]
    # word by word, with the emission times of a real run to within the compute's jitter
    from lipx.runtime.pipeline import Pipeline
    from lipx.runtime.stream_eval import read_stream_set, replay_words, run_stream

    video = read_stream_set(data)[0].video
    with Pipeline(packages["lipreading"]) as pipeline:  # one pipeline, two sessions
        manifest = pipeline.manifest
        base = run_stream(pipeline, video, StreamOptions(threshold=0.2))
        other = StreamOptions(threshold=0.0, agreement=2)
        real = run_stream(pipeline, video, other).words
    replayed = replay_words(manifest, other, base)
    assert [(w.word, w.start_s, w.end_s) for w in replayed] == [
        (w.word, w.start_s, w.end_s) for w in real] and real
    assert all(abs(a.emitted_s - b.emitted_s) < 0.25 for a, b in zip(replayed, real))


def test_eval_stream_lip2speech_scores_streamed_and_offline(run_cli, packages, tmp_path):
    data = tmp_path / "grid"
    code, _, err = run_cli("data", "synth", data, "--layout", "grid-streams", "--speakers", "3",
                           "--utterances", "1", "--streams", "1", "--per-stream", "1",
                           "--image-size", "180x144")
    assert code == 0, err
    out = tmp_path / "eval.json"
    code, stdout, err = run_cli("eval-stream", packages["lip2speech"], data, "--json", out)
    assert code == 0, err
    report = json.loads(out.read_text())["scores"]
    for k in ("stoi", "estoi"):
        assert math.isfinite(report[f"stream_{k}"]) and math.isfinite(report[f"offline_{k}"])
        assert math.isfinite(report[f"stitched_{k}"])  # the windows without streaming GL
    assert "audio latency" in stdout


@pytest.mark.parametrize("args, message", [
    (["{pkg}", "{tmp}"], "has no streams.jsonl"),
    (["{pkg}", "{tmp}", "--sweep", "speed=1"], "--sweep takes NAME=V1,V2"),
    (["{pkg}", "{tmp}", "--sweep", "stride=1"], "--sweep needs --out"),
])
def test_bad_stream_eval_input_is_one_line(run_cli, packages, tmp_path, args, message):
    subs = {"pkg": packages["lipreading"], "tmp": tmp_path}
    code, _, err = run_cli("eval-stream", *[a.format(**subs) for a in args])
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 1 and len(lines) == 1 and message in lines[0], err
