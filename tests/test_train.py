"""`lipx train` / `lipx eval`: both tasks end to end, exact resume, DDP with gloo, bad input."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys

import pytest
import torch

from lipx.data.prepare_format import read_corpus
from lipx.errors import InputError
from lipx.models.checkpoint import load_checkpoint
from lipx.train.config import TrainConfig, parse_overrides
from lipx.train.run import train


def _cfg(task, data, out, **kw) -> TrainConfig:
    base = {"preset": "tiny", "batch_size": 2, "val_every": 0, "save_every": 0, "log_every": 1,
            "threads": 1}
    return TrainConfig(task=task, data=str(data), out=str(out), **{**base, **kw})


def _losses(cfg, resume=False) -> dict[int, float]:
    seen: dict[int, float] = {}
    key = "loss" if cfg.task == "lipreading" else "loss_g"
    train(cfg, resume=resume, on_step=lambda step, logs: seen.__setitem__(step, logs[key]))
    return seen


@pytest.mark.parametrize("task,corpus", [("lipreading", "lrw_corpus"),
                                         ("lip2speech", "grid_corpus")])
@pytest.mark.slow
def test_resume_continues_as_if_never_stopped(task, corpus, request, tmp_path):
    data = request.getfixturevalue(corpus)
    window = {} if task == "lipreading" else {"window": 20}
    straight = _losses(_cfg(task, data, tmp_path / "a", steps=6, **window))
    first = _losses(_cfg(task, data, tmp_path / "b", steps=3, **window))
    second = _losses(_cfg(task, data, tmp_path / "b", steps=6, **window), resume=True)
    assert sorted(first) == [1, 2, 3] and sorted(second) == [4, 5, 6]
    for step in range(1, 7):
        resumed = first.get(step, second.get(step))
        assert resumed == pytest.approx(straight[step], rel=1e-5, abs=1e-6), step
    ckpt = load_checkpoint(tmp_path / "b" / "last.lipx")
    assert ckpt.training["progress"]["step"] == 6 and ckpt.task == task


@pytest.mark.slow
def test_lipreading_run_validates_saves_best_and_evaluates(lrw_corpus, tmp_path, run_cli):
    out = tmp_path / "run"
    code, _, err = run_cli("train", "lipreading", lrw_corpus, "-o", out, "--preset", "tiny",
                           "--steps", "4", "--batch-size", "2", "--set", "val_every=2",
                           "--set", "threads=1")
    assert code == 0, err
    assert "step 2 (" in err and "val_accuracy=" in err and (out / "best.lipx").exists()
    assert (out / "config.yaml").exists() and any((out / "tensorboard").iterdir())
    best = load_checkpoint(out / "best.lipx")
    corpus, _ = read_corpus(lrw_corpus)
    assert best.vocabulary == corpus["labels"] and len(best.vocabulary) == 4
    assert best.config.num_classes == len(best.vocabulary)
    # provenance: the synthetic corpus' recipe travels from synth.json to corpus.json to the
    # checkpoint, so `lipx demo` can render its held-out speakers again
    assert best.meta["corpus_synth"] == corpus["synth"]
    assert corpus["synth"]["layout"] == "lrw" and corpus["synth"]["speakers"] >= 2
    report = tmp_path / "eval.json"
    code, out_text, err = run_cli("eval", out / "best.lipx", lrw_corpus, "--json", report)
    assert code == 0, err
    result = json.loads(report.read_text())
    assert result["clips"] == 8 and 0.0 <= result["metrics"]["top1"] <= 1.0
    assert result["metrics"]["top5"] >= result["metrics"]["top1"]
    assert set(result["per_word"]) <= set(best.vocabulary)


@pytest.mark.slow
def test_lip2speech_eval_scores_and_writes_wavs(grid_corpus, tmp_path, run_cli):
    out = tmp_path / "run"
    code, _, err = run_cli("train", "lip2speech", grid_corpus, "-o", out, "--preset", "tiny",
                           "--steps", "2", "--batch-size", "2", "--set", "window=20",
                           "--set", "val_every=2", "--set", "val_batches=1", "--set", "threads=1")
    assert code == 0, err
    assert "val_stoi=" in err
    ckpt = load_checkpoint(out / "last.lipx")
    assert set(ckpt.aux) == {"discriminators"}
    wavs = tmp_path / "wavs"
    code, _, err = run_cli("eval", out / "last.lipx", grid_corpus, "--max-clips", "2",
                           "--wav-dir", wavs, "--json", tmp_path / "e.json")
    assert code == 0, err
    metrics = json.loads((tmp_path / "e.json").read_text())["metrics"]
    assert {"stoi", "estoi", "pesq", "mel_l1", "linear_l1"} <= set(metrics)
    assert -1.0 <= metrics["stoi"] <= 1.0 and metrics["mel_l1"] > 0
    assert len(list(wavs.glob("*.wav"))) == 2


@pytest.mark.slow
def test_time_budget_stops_validates_and_erasing_can_be_turned_off(lrw_corpus, tmp_path):
    from lipx.train.datasets import LipreadingDataset
    from lipx.train.run import _datasets

    cfg = _cfg("lipreading", lrw_corpus, tmp_path / "run", steps=500, minutes=1e-4,
               val_every=50, erase=False)
    result = train(cfg)
    assert 1 <= result.steps < 500
    last = result.history[-1]
    assert last["step"] == result.steps and last["minutes"] >= 0 and "accuracy" in last
    assert (tmp_path / "run" / "best.lipx").exists()
    train_set, _, _ = _datasets(cfg.resolved(), "lrw")
    assert train_set.video_augment.erase_size == 0
    assert LipreadingDataset.video_augment.erase_size == 56  # the class default is untouched
    with pytest.raises(InputError, match="minutes"):
        _cfg("lipreading", lrw_corpus, tmp_path / "x", minutes=-1)


def test_lip2speech_without_adversarial_term_leaves_mel_discriminators_alone(grid_corpus):
    from lipx.train.datasets import LipToSpeechDataset, collate
    from lipx.train.distributed import DistInfo
    from lipx.train.run import _task

    cfg = _cfg("lip2speech", grid_corpus, "unused", window=20,
               loss_weights={"adv": 0.0}).resolved()
    info = DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
    data = LipToSpeechDataset(grid_corpus, "train", protocol="unseen", window=20)
    task = _task(cfg, info, [], data.video_spec)
    before = {k: v.clone() for k, v in task.dis.state_dict().items()}
    batch = collate([data[0], data[1]])
    losses = task.train_step(batch, contextlib.nullcontext)
    assert losses["adv_d"] == losses["adv_g"] == losses["r1"] == 0.0
    assert losses["recon"] > 0 and losses["sync_d"] > 0
    after = task.dis.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if not k.startswith("sync"))
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("sync"))


def test_existing_run_needs_resume_and_bad_options_are_one_line(lrw_corpus, tmp_path, run_cli):
    out = tmp_path / "run"
    train(_cfg("lipreading", lrw_corpus, out, steps=1))
    code, _, err = run_cli("train", "lipreading", lrw_corpus, "-o", out, "--preset", "tiny")
    assert code == 1 and "--resume" in err
    code, _, err = run_cli("train", "lipreading", tmp_path / "nope", "-o", tmp_path / "r2")
    assert code == 1 and "not a folder" in err
    code, _, err = run_cli("train", "lipreading", lrw_corpus, "-o", tmp_path / "r3",
                           "--set", "stepz=3")
    assert code == 1 and "did you mean 'steps'" in err
    code, _, err = run_cli("train", "lipreadin", lrw_corpus, "-o", tmp_path / "r4")
    assert code == 1 and "did you mean 'lipreading'" in err
    with pytest.raises(InputError):
        parse_overrides(["noequals"])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_process_ddp_with_gloo(lrw_corpus, tmp_path):
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
           f"--master_port={_free_port()}", "-m", "lipx.cli", "train", "lipreading",
           str(lrw_corpus), "-o", str(out), "--preset", "tiny", "--steps", "3",
           "--batch-size", "2", "--device", "cpu", "--set", "val_every=3"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ckpt = load_checkpoint(out / "last.lipx")
    assert ckpt.training["progress"]["step"] == 3
    # Only rank 0 saves: one checkpoint set, one TensorBoard writer.
    assert len(list((out / "tensorboard").iterdir())) == 1
    assert ckpt.training["config"]["batch_size"] == 2
    assert torch.isfinite(torch.stack([v.float().sum() for v in ckpt.state_dict.values()])).all()
