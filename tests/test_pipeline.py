"""One pipeline (a package opened once) serves many sessions: engines are opened once, sessions
hold their own state, and the batched steps give what single steps give."""

from __future__ import annotations

import numpy as np
import pytest

from lipx.errors import InputError
from lipx.runtime.batcher import Batcher
from lipx.runtime.events import FrameEvent, WordEvent
from lipx.runtime.ort_runner import OrtRunner
from lipx.runtime.pipeline import Pipeline
from lipx.runtime.stream import StreamOptions, stream
from lipx.runtime.stream_eval import StreamEvalOptions, evaluate_streams, parse_sweep, sweep


@pytest.fixture
def opened(monkeypatch) -> list[str]:
    """The engine files each OrtRunner activation opened, in order."""
    files: list[str] = []
    real = OrtRunner._activate

    def counting(self):
        files.append(self.name)
        return real(self)

    monkeypatch.setattr(OrtRunner, "_activate", counting)
    return files


@pytest.fixture(scope="module")
def stream_set(tmp_path_factory):
    """Where the module's stream set is made (by the first test that needs it)."""
    return tmp_path_factory.mktemp("streams") / "set"


def _synth(run_cli, out) -> None:
    if not (out / "streams.jsonl").is_file():
        code, _, err = run_cli("data", "synth", out, "--layout", "lrw-streams", "--speakers",
                               "2", "--words", "3", "--streams", "3", "--per-stream", "2")
        assert code == 0, err


def test_interleaved_sessions_of_one_pipeline_read_what_separate_streams_read(
        packages, run_cli, stream_set, opened):
    _synth(run_cli, stream_set)
    videos = sorted(str(p) for p in stream_set.glob("*.mp4"))[:2]
    opts = StreamOptions(threshold=0.0, agreement=1)
    alone = [[(w.word, w.start_s, w.end_s) for w in _words(packages["lipreading"], v, opts)]
             for v in videos]
    opened.clear()
    with Pipeline(packages["lipreading"], opts.engine_options()) as pipeline:
        sessions = [pipeline.session(v, opts) for v in videos]
        runs = [s.events() for s in sessions]
        together: list[list] = [[], []]
        live = [True, True]
        while any(live):  # one event of each stream in turn: their state must not mix
            for i, events in enumerate(runs):
                if live[i]:
                    event = next(events, None)
                    live[i] = event is not None
                    if isinstance(event, WordEvent):
                        together[i].append((event.word, event.start_s, event.end_s))
        for s in sessions:
            s.close()
    assert together == alone and all(alone)
    assert sorted(opened) == ["backend.onnx", "frontend.onnx"]  # once, for both sessions


def _words(pkg, video, opts) -> list[WordEvent]:
    from lipx.runtime.sinks import Sink

    class Keep(Sink):
        def __init__(self) -> None:
            super().__init__()
            self.words: list[WordEvent] = []

        def on_word(self, event: WordEvent) -> None:
            self.words.append(event)

    keep = Keep()
    stream(pkg, video, opts, [keep])
    return keep.words


@pytest.mark.parametrize("task", ["lipreading", "lip2speech"])
def test_batched_steps_give_what_single_steps_give(packages, task):
    rng = np.random.default_rng(0)
    with Pipeline(packages[task]) as pipeline:
        size, ctx = pipeline.manifest.video.size, pipeline.context
        clips = [rng.standard_normal((3 + 2 * ctx, size, size)).astype(np.float32)
                 for _ in range(3)] + [np.zeros((1 + 2 * ctx, size, size), np.float32)]
        batched = pipeline.frontend(clips)  # three of one shape, one of another
        single = [pipeline.frontend([c])[0] for c in clips]
        assert [b.shape for b in batched] == [(3, pipeline.feature_dim)] * 3 + [
            (1, pipeline.feature_dim)]
        for b, s in zip(batched, single, strict=True):
            np.testing.assert_allclose(b, s, rtol=1e-4, atol=1e-5)
        window = pipeline.manifest.schedule.window
        feats = [rng.standard_normal((window, pipeline.feature_dim)).astype(np.float32)
                 for _ in range(3)]
        batched_out = pipeline.backend(feats)
        for f, b in zip(feats, batched_out, strict=True):
            s = pipeline.backend([f])[0]
            assert b.keys() == s.keys()
            for k in s:
                assert b[k].shape == s[k].shape and b[k].shape[0] == 1
                np.testing.assert_allclose(b[k], s[k], rtol=1e-4, atol=1e-4)
        assert pipeline.calls["frontend"] == 2 + len(clips)  # two batched calls, then singles


def test_an_evaluation_and_its_sweep_open_each_engine_once(packages, run_cli, stream_set,
                                                           opened):
    _synth(run_cli, stream_set)
    opts = StreamEvalOptions(packages["lipreading"], stream_set, StreamOptions())
    report = evaluate_streams(opts)
    assert report.streams == 3 and report.exactness["windows"] > 0
    assert sorted(opened) == ["backend.onnx", "frontend.onnx"]  # the checks reuse them
    opened.clear()
    reports, skipped = sweep(opts, parse_sweep(["stride=2,3", "threshold=0.5,0.9"]))
    assert len(reports) == 4 and not skipped
    assert sorted(opened) == ["backend.onnx", "frontend.onnx"]


def test_a_session_must_ask_for_the_pipelines_engines(packages, face_video):
    with Pipeline(packages["lipreading"]) as pipeline:
        with pytest.raises(InputError, match="open another pipeline"):
            pipeline.session(str(face_video), StreamOptions(cache=False))


def _run_sessions(pipeline, sources, opts, steps=None) -> list[list]:
    """Each source a session on its own thread (as a server's connections); their results."""
    import threading

    results: list[list] = [[] for _ in sources]
    errors: list[BaseException] = []

    def run(i: int, source: str) -> None:
        try:
            with pipeline.session(source, opts, steps=steps) as session:
                results[i] = [e for e in session.events() if not isinstance(e, FrameEvent)]
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i, s)) for i, s in enumerate(sources)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    return results


@pytest.mark.slow  # the fast lane keeps under 2 minutes
def test_sessions_batched_across_threads_read_the_same_words_at_the_same_times(
        packages, run_cli, stream_set):
    _synth(run_cli, stream_set)
    videos = sorted(str(p) for p in stream_set.glob("*.mp4"))
    opts = StreamOptions(threshold=0.0, agreement=1, stride=2)
    with Pipeline(packages["lipreading"]) as pipeline:
        alone = _run_sessions(pipeline, videos[:1], opts) + _run_sessions(
            pipeline, videos[1:2], opts) + _run_sessions(pipeline, videos[2:3], opts)
        with Batcher(pipeline, max_batch=8, max_wait_ms=20) as batcher:
            together = _run_sessions(pipeline, videos * 2, opts, steps=batcher)  # 6 at once
            sizes = batcher.batch_sizes()
    key = [[(w.word, w.start_s, w.end_s) for w in r] for r in alone]
    assert [[(w.word, w.start_s, w.end_s) for w in r] for r in together] == key * 2
    assert all(key)
    assert max(sizes["frontend"]) > 1 and max(sizes["backend"]) > 1  # it did batch


def test_speech_batched_across_sessions_equals_speech_alone(packages, face_video):
    opts = StreamOptions()
    with Pipeline(packages["lip2speech"]) as pipeline:
        alone = _run_sessions(pipeline, [str(face_video)], opts)[0]
        with Batcher(pipeline, max_batch=4, max_wait_ms=20) as batcher:
            together = _run_sessions(pipeline, [str(face_video)] * 3, opts, steps=batcher)
            assert max(batcher.batch_sizes()["backend"]) > 1
    want = np.concatenate([c.samples for c in alone])
    for chunks in together:
        assert [c.start_s for c in chunks] == [c.start_s for c in alone]
        np.testing.assert_allclose(np.concatenate([c.samples for c in chunks]), want, atol=1e-4)


def test_a_batcher_refuses_bad_sizes_and_another_pipelines_sessions(packages, face_video):
    with Pipeline(packages["lipreading"]) as pipeline:
        for kwargs in ({"max_batch": 0}, {"max_wait_ms": -1}):
            with pytest.raises(InputError, match="--max-"):
                Batcher(pipeline, **kwargs)
        with Pipeline(packages["lipreading"]) as other, Batcher(other) as batcher:
            with pytest.raises(InputError, match="its own pipeline"):
                pipeline.session(str(face_video), steps=batcher)
