"""Held-out continuous test streams (``lipx data synth --layout lrw-streams|grid-streams``):
determinism, timings against the frames and the audio, frozen stills, held-out speakers, files,
the CLI and its errors."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf

from lipx.data import formats
from lipx.data.formats import NON_SPEECH, STILL, TimedWord
from lipx.data.stream_corpus import StreamsOptions, plan_streams
from lipx.data.streams import (
    StreamSpec,
    held_out_speakers,
    render_stream,
    script_stream,
)
from lipx.data.synth import SynthOptions, corpus_manifest, plan_clips
from lipx.demo import CHECKPOINTS
from lipx.errors import InputError

FPS, SR = 25, 16000
TINY_LRW = ("--speakers", "2", "--words", "3", "--image-size", "96")


def _lrw(**kw) -> SynthOptions:
    return SynthOptions(out=Path("."), layout="lrw", speakers=2, words=3, image_size=(96, 96), **kw)


@pytest.fixture(scope="module")
def lrw_stream():
    """A four-word LRW stream with pauses, rendered (96x96 frames)."""
    recipe = _lrw()
    spec = StreamSpec("t", held_out_speakers(recipe)[0],
                      tuple((w,) for w in ("ABOUT", "YOUNG", "MARKET", "ABOUT")))
    return recipe, render_stream(recipe, script_stream(recipe, spec))


def _inner(seg: TimedWord, trim: float = 0.03) -> tuple[int, int]:
    """Audio samples of a segment without its edges (the articulation is smooth)."""
    return int((seg.start + trim) * SR), int((seg.end - trim) * SR)


def test_align_round_trip_keeps_non_speech_labels(tmp_path):
    segments = [TimedWord("sil", 0.0, 0.5), TimedWord("ABOUT", 0.5, 0.9),
                TimedWord("sil", 0.9, 0.903),  # rounds to nothing: dropped
                TimedWord("the", 0.903, 1.0), TimedWord("sil", 1.0, 1.2),
                TimedWord(STILL, 1.2, 2.0), TimedWord("sil", 2.0, 2.4)]
    path = tmp_path / "x.align"
    formats.write_align(path, segments, n_frames=60)
    back = formats.read_segments(path)
    assert [s.word for s in back] == ["sil", "ABOUT", "the", "sil", "still", "sil"]
    assert back[-1].end == 60 / FPS and all(a.end == b.start for a, b in zip(back, back[1:]))
    assert back[4] == TimedWord(STILL, 1.2, 2.0)
    assert [w.word for w in formats.read_align(path)] == ["ABOUT", "the"]  # words only, as before


def test_the_script_labels_every_stretch_of_the_stream(lrw_stream):
    _, stream = lrw_stream
    script = stream.script
    segs = script.segments
    assert segs[0].start == 0 and segs[-1].end == pytest.approx(script.duration)
    assert all(a.end == pytest.approx(b.start) for a, b in zip(segs, segs[1:]))
    spoken = [s.word for s in segs if s.word not in NON_SPEECH]
    assert [w for w in spoken if w.isupper()] == ["ABOUT", "YOUNG", "MARKET", "ABOUT"]
    assert any(w.islower() for w in spoken)  # context words, as LRW clips have
    # three gaps between four words: at least one silence (>= 1 s) and one still face
    stills = [s for s in segs if s.word == STILL]
    assert len(stills) == len(script.still) >= 1
    assert [(round(s.start * FPS), round(s.end * FPS)) for s in stills] == list(script.still)
    assert max(s.end - s.start for s in segs if s.word == "sil") >= 1.0


def test_still_faces_are_frozen_and_the_rest_is_alive(lrw_stream):
    _, stream = lrw_stream
    frames = stream.frames
    assert frames.shape == (stream.script.n_frames, 96, 96, 3) and frames.dtype == np.uint8
    for first, end in stream.script.still:
        assert end - first >= FPS  # a second or more
        assert all(np.array_equal(frames[first], frames[i]) for i in range(first, end))
        assert not np.array_equal(frames[end - 1], frames[end])
    silence = max((s for s in stream.script.segments if s.word == "sil"),
                  key=lambda s: s.end - s.start)
    a = int(np.ceil(silence.start * FPS))
    assert not np.array_equal(frames[a], frames[a + 1])  # a live face in silence


def test_speech_is_inside_the_words_and_silence_outside(lrw_stream):
    _, stream = lrw_stream
    audio, script = stream.audio, stream.script
    assert len(audio) == script.n_frames * SR // FPS

    def rms(seg: TimedWord) -> float:
        a, b = _inner(seg)
        return float(np.sqrt(np.mean(audio[a:b].astype(np.float64) ** 2)))

    long = [s for s in script.segments if s.end - s.start >= 0.15]
    speech = [rms(s) for s in long if s.word not in NON_SPEECH]
    quiet = [rms(s) for s in long if s.word in NON_SPEECH]
    assert speech and quiet
    assert np.median(speech) > 20 * max(quiet), (speech, quiet)


def test_rendering_is_deterministic_in_the_seed_and_the_name(lrw_stream):
    recipe, stream = lrw_stream
    again = render_stream(recipe, script_stream(recipe, stream.script.spec))
    assert np.array_equal(again.frames, stream.frames)
    assert np.array_equal(again.audio, stream.audio)
    other = script_stream(_lrw(seed=1), stream.script.spec)
    assert other.segments != stream.script.segments


def test_without_pauses_the_words_come_in_a_row():
    recipe = _lrw()
    spec = StreamSpec("row", 1, (("ABOUT",), ("YOUNG",), ("MARKET",)), pauses=False)
    script = script_stream(recipe, spec)
    assert not script.still
    inner = [s for s in script.segments[1:-1] if s.word in NON_SPEECH]
    assert all(s.word == "sil" and s.end - s.start <= 0.2 for s in inner)  # LRW's own pauses


def test_streams_use_only_held_out_speakers():
    lrw = SynthOptions(out=Path("."), layout="lrw", speakers=5, held_out=2, words=3)
    specs = plan_streams(StreamsOptions(Path("."), lrw, streams=5, per_stream=2))
    assert {s.speaker for s in specs} == {3, 4} == set(held_out_speakers(lrw))
    assert all(len(s.phrases) == 2 and s.phrases[0][0] in lrw.vocabulary()[0] for s in specs)
    grid = SynthOptions(out=Path("."), layout="grid", speakers=6, utterances=3)
    specs = plan_streams(StreamsOptions(Path("."), grid, streams=3, per_stream=2))
    test_only = set(held_out_speakers(grid))
    assert test_only and {s.speaker for s in specs} <= test_only and 0 not in test_only
    own = {c.words for c in plan_clips(grid) if c.speaker == specs[0].speaker}
    assert set(specs[0].phrases) <= own  # the speaker's own test sentences


def test_parts_split_the_held_out_speakers_or_take_the_training_ones():
    lrw = SynthOptions(out=Path("."), layout="lrw", speakers=8, held_out=4, words=3)
    parts = {p: {s.speaker for s in plan_streams(StreamsOptions(Path("."), lrw, streams=8,
                                                                part=p))}
             for p in ("val", "test", "train", "held-out")}
    assert parts == {"val": {4, 5}, "test": {6, 7}, "train": {0, 1, 2, 3},
                     "held-out": {4, 5, 6, 7}}
    # GRID trains on the unseen protocol's training speakers only, not on its val speakers
    grid = SynthOptions(out=Path("."), layout="grid", speakers=24, utterances=4)
    train_part = {s.speaker for s in plan_streams(StreamsOptions(Path("."), grid, streams=30,
                                                                 part="train"))}
    assert train_part == set(range(12))  # s1-s12; s13-s17 validate, s18-s24 test
    # each part draws its own words; the held-out part keeps the draws it always had
    first = {p: plan_streams(StreamsOptions(Path("."), lrw, streams=1, part=p))[0].phrases
             for p in ("held-out", "train")}
    assert first["held-out"] != first["train"]
    with pytest.raises(InputError, match="unknown --part"):
        StreamsOptions(Path("."), lrw, part="dev")
    one = SynthOptions(out=Path("."), layout="lrw", speakers=3, held_out=1, words=3)
    with pytest.raises(InputError, match="splits the held-out speakers in two"):
        StreamsOptions(Path("."), one, part="val")


def _decoded(path: Path) -> tuple[int, tuple[int, int], float]:
    with av.open(str(path)) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    return len(frames), frames[0].shape[:2], float(frames[0].mean())


def test_cli_writes_streams_an_index_and_the_recipe_then_resumes(run_cli, tmp_path):
    out = tmp_path / "streams"
    args = ("data", "synth", out, "--layout", "lrw-streams", *TINY_LRW, "--streams", "2",
            "--per-stream", "2")
    code, _, err = run_cli(*args)
    assert code == 0, err
    assert "2 streams written" in err
    records = [json.loads(line) for line in (out / "streams.jsonl").read_text().splitlines()]
    assert [r["name"] for r in records] == ["stream0001_spk002", "stream0002_spk002"]
    r = records[0]
    assert r["layout"] == "lrw-streams" and r["task"] == "lipreading" and r["speaker"] == "spk002"
    assert len(r["words"]) == 2 and set(r["words"]) <= set(_lrw().vocabulary()[0])
    assert r["speech_s"] + r["silence_s"] + r["still_s"] == pytest.approx(r["duration_s"])
    n, size, _ = _decoded(out / r["video"])
    assert n == r["frames"] and size == (96, 96)
    wav, sr = sf.read(out / r["wav"])
    assert sr == SR and len(wav) == r["frames"] * SR // FPS
    segments = formats.read_segments(out / r["align"])
    assert segments[-1].end == r["frames"] / FPS
    assert [s.word for s in segments if s.word not in NON_SPEECH] == r["spoken"]
    # the recipe is the one a training corpus made with the same options records
    meta = json.loads((out / "synth.json").read_text())
    assert meta["options"] == corpus_manifest(_lrw())["options"]
    assert meta["layout"] == "lrw-streams" and meta["held_out"] == ["spk002"]
    before = (out / r["align"]).read_bytes(), (out / r["wav"]).read_bytes()
    code, _, err = run_cli(*args)
    assert code == 0 and "0 streams written, 2 already there" in err
    # --like a corpus' synth.json makes the same streams, byte for byte
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "synth.json").write_text(json.dumps(corpus_manifest(_lrw())))
    code, _, err = run_cli("data", "synth", tmp_path / "like", "--layout", "lrw-streams",
                           "--like", corpus, "--streams", "1", "--per-stream", "2")
    assert code == 0, err
    like = tmp_path / "like" / r["align"], tmp_path / "like" / r["wav"]
    assert (like[0].read_bytes(), like[1].read_bytes()) == before


def test_cli_grid_streams_are_aligned_256_faces(run_cli, tmp_path):
    out = tmp_path / "grid"
    code, _, err = run_cli("data", "synth", out, "--layout", "grid-streams", "--speakers", "3",
                           "--utterances", "1", "--streams", "1", "--per-stream", "1",
                           "--no-pauses", "--image-size", "180x144")
    assert code == 0, err
    (r,) = [json.loads(line) for line in (out / "streams.jsonl").read_text().splitlines()]
    assert r["task"] == "lip2speech" and r["speaker"] == "s3" and len(r["words"]) == 6
    assert r["still_s"] == 0
    n, size, mean = _decoded(out / r["video"])
    assert n == r["frames"] and size == (256, 256) and mean > 20  # the face fills the frame


@pytest.mark.skipif(not (CHECKPOINTS / "lipreading.lipx").is_file(),
                    reason="the shipped checkpoints are missing")
def test_cli_like_a_checkpoint_takes_its_recipe(run_cli, tmp_path):
    pytest.importorskip("torch")
    from lipx.models.checkpoint import load_checkpoint

    ckpt = CHECKPOINTS / "lipreading.lipx"
    out = tmp_path / "like"
    code, _, err = run_cli("data", "synth", out, "--layout", "lrw-streams", "--like", ckpt,
                           "--streams", "1", "--per-stream", "1", "--no-pauses")
    assert code == 0, err
    meta = json.loads((out / "synth.json").read_text())
    assert meta["options"] == load_checkpoint(ckpt).meta["corpus_synth"]
    assert meta["streams"]["speakers"][0] in meta["held_out"]


@pytest.mark.parametrize("args, message", [
    (["--layout", "lrw", "--streams", "2"], "--streams goes with --layout lrw-streams"),
    (["--layout", "grid", "--no-pauses"], "--pauses goes with"),
    (["--layout", "lrw", "--part", "train"], "--part goes with"),
    (["--layout", "lrw-streams", "--part", "dev"], "unknown --part 'dev'"),
    (["--layout", "lrw-stream"], "unknown layout 'lrw-stream'"),
    (["--layout", "lrw-streams", "--streams", "0"], "--streams must be in [1,"),
    (["--layout", "lrw-streams", "--per-stream", "51"], "--per-stream (words per stream)"),
    (["--layout", "lrw-streams", "--speakers", "1"], "include no held-out one"),
    (["--layout", "lrw-streams", "--workers", "2"], "--workers is for the corpus layouts"),
    (["--layout", "lrw-streams", "--like", "nowhere.lipx"], "no such file"),
    (["--layout", "lrw-streams", "--like", ".", "--seed", "3"], "drop --seed"),
])
def test_bad_options_get_one_line(run_cli, tmp_path, args, message):
    code, _, err = run_cli("data", "synth", tmp_path / "out", *args)
    assert code == 1 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out").exists()


def test_like_a_recipe_of_the_other_layout_is_refused(run_cli, tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    grid = SynthOptions(out=corpus, layout="grid", speakers=3, utterances=1)
    (corpus / "synth.json").write_text(json.dumps(corpus_manifest(grid)))
    code, _, err = run_cli("data", "synth", tmp_path / "out", "--layout", "lrw-streams",
                           "--like", corpus)
    assert code == 1 and "use --layout grid-streams" in err
