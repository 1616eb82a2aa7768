"""A third task plugs in through the same interface as lipreading and lip-to-speech: its spec and
its stream unit are registered, and it streams and is evaluated on a stream set by the shared
code (pipeline, session, stream loop, sinks, stream evaluator) without any change to it."""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest

from lipx.package import Manifest, Package
from lipx.runtime.events import WordEvent
from lipx.runtime.runner import Runner
from lipx.runtime.sinks import JsonLines
from lipx.runtime.stream import StreamOptions, stream
from lipx.runtime.stream_eval import StreamEvalOptions, evaluate_streams
from lipx.runtime.task import Capture, HeadOptions, StreamItem, StreamScorer, StreamTask
from lipx.runtime.tasks import register, stream_task
from lipx.tasks import SPECS, Schedule, register_spec

TOY = "mouth-class"


class ClassHead:
    """Names each window's top class ``c<k>`` as soon as the window is read (no agreement)."""

    min_window = 1
    lookahead_frames = 0
    delay_frames = 0
    audio_s = 0.0

    def __init__(self, fps: float) -> None:
        self.fps, self.words = fps, 0

    def push(self, logits: np.ndarray, start: int, end: int) -> list[WordEvent]:
        self.words += 1
        k = int(np.argmax(logits))
        return [WordEvent(f"c{k}", start / self.fps, end / self.fps, 1.0)]

    def flush(self) -> list[WordEvent]:
        return []


class ClassCount(StreamScorer):
    """Scores a stream by how many windows it named and whether they lie inside the stream."""

    def __init__(self) -> None:
        self.named, self.outside, self.streams = 0, 0, 0

    def add(self, item: StreamItem, capture: Capture, engines: Mapping[str, Runner]) -> None:
        self.streams += 1
        self.named += len(capture.words)
        end = capture.stats.media_s + 1e-6
        self.outside += sum(not 0 <= w.start_s < w.end_s <= end for w in capture.words)

    def scores(self) -> dict[str, float]:
        return {"named": float(self.named), "outside": float(self.outside),
                "per_stream": self.named / max(self.streams, 1)}

    def waits(self) -> list[float]:
        return []


class MouthClass(StreamTask):
    name = TOY
    quality_metric = ("named per stream", "per_stream")

    def make_head(self, manifest: Manifest, options: HeadOptions, schedule: Schedule,
                  record: bool = False) -> ClassHead:
        return ClassHead(manifest.video.fps)

    def scorer(self, manifest: Manifest) -> ClassCount:
        return ClassCount()


@pytest.fixture
def toy_package(packages, tmp_path) -> Path:
    """The lipreading test package's graphs, declared as the toy task's (its spec registered)."""
    saved_spec = SPECS.get(TOY)
    register_spec(dataclasses.replace(SPECS["lipreading"], task=TOY, stream_defaults={}))
    register(MouthClass())
    pkg = tmp_path / "toy"
    shutil.copytree(packages["lipreading"], pkg)
    manifest = json.loads((pkg / "manifest.json").read_text())
    manifest["task_spec"]["task"] = TOY
    manifest["task_spec"]["stream_defaults"] = {}
    (pkg / "manifest.json").write_text(json.dumps(manifest))
    yield pkg
    if saved_spec is None:
        SPECS.pop(TOY, None)


def test_a_toy_task_streams_through_the_shared_loop(toy_package, face_video, tmp_path):
    assert Package.open(toy_package).task == TOY and isinstance(stream_task(TOY), MouthClass)
    out = tmp_path / "classes.jsonl"
    stats = stream(toy_package, str(face_video), StreamOptions(stride=3), [JsonLines(out)])
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    words = [x for x in lines if x.get("type") == "word"]
    assert stats.run.task == TOY and stats.run.words == len(words) == stats.run.backend_calls
    assert words and all(w["word"].startswith("c") for w in words)


def test_a_toy_task_is_evaluated_on_a_stream_set(toy_package, run_cli, tmp_path):
    data = tmp_path / "streams"
    code, _, err = run_cli("data", "synth", data, "--layout", "lrw-streams", "--speakers", "2",
                           "--words", "3", "--streams", "2", "--per-stream", "2")
    assert code == 0, err
    report = evaluate_streams(StreamEvalOptions(toy_package, data, StreamOptions(stride=4)))
    assert report.task == TOY and report.streams == 2
    assert report.scores["named"] > 0 and report.scores["outside"] == 0
    assert report.quality() == ("named per stream", report.scores["named"] / 2)
    assert report.exactness["outputs_max_abs"] < 1e-4  # the shared exactness check ran too
