"""`lipx bench` end to end on this CPU for both tasks (tiny random-weight models: lipreading from a
checkpoint the bench exports itself, lip-to-speech from the streaming tests' package and its
checkpoint), the gate against a deliberately corrupted engine, the reports, the options and the
timing statistics."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from test_prepare import build_lrw, grid_clip

from lipx.benchmarks.api import BenchOptions, bench
from lipx.benchmarks.efficiency import step_figures, step_sentence
from lipx.benchmarks.engines import DEVICE_PRECISIONS, engine_matrix
from lipx.benchmarks.peak import gemm_peak
from lipx.benchmarks.report import markdown, write_report
from lipx.benchmarks.results import BenchReport, EngineRow
from lipx.benchmarks.timing import ISA_FLAGS, Budget, Timing, time_calls, warm_up
from lipx.data.prepare import PrepareOptions, prepare_corpus
from lipx.errors import InputError, ParityError
from lipx.files import file_sha256
from lipx.models.checkpoint import Checkpoint, save_checkpoint
from lipx.models.registry import get_family, preset_config
from lipx.package import Manifest
from lipx.runtime.stats import LatencyStats
from lipx.tasks import task_spec

WORDS = ("ABOUT", "BOARD")
FAST = ("--budget-s", "0.3", "--batch-sizes", "1,2", "--compile-timeout-s", "0")


def tiny_checkpoint(task: str, path: Path) -> Path:
    import torch

    torch.manual_seed(0)
    cfg = preset_config(task, "tiny")
    model = get_family(task).build(cfg)
    vocab = None
    if task == "lipreading":  # the corpus' words, in another order, among others
        vocab = [f"W{i:03d}" for i in range(cfg.num_classes)]
        vocab[7], vocab[3] = WORDS
    ckpt = Checkpoint(task=task, config=cfg, state_dict=model.state_dict(), preset="tiny",
                      vocabulary=vocab)
    return save_checkpoint(ckpt, path)


@pytest.fixture(scope="module")
def lipreading(tmp_path_factory, run_cli_module):
    """`lipx bench CHECKPOINT --data LRW --gate --out OUT` through the real entry point.

    The gate is loosened (``--atol 1 --min-top1 0``) so that int8 of random weights on two clips
    is measured, not judged: the gate itself is tested on a known-bad and a known-good engine.
    """
    root = tmp_path_factory.mktemp("bench_lr")
    ckpt = tiny_checkpoint("lipreading", root / "lr.lipx")
    data = root / "lrw"
    prepare_corpus(PrepareOptions("lrw", build_lrw(root / "lrw_src", WORDS), data))
    out = root / "out"
    code, stdout, stderr = run_cli_module(
        "bench", ckpt, *[a for e in ("torch", "torch-compile", "onnx-cpu-fp32", "onnx-cpu-int8",
                                     "trt-fp16", "onnx-cuda-fp16") for a in ("--engine", e)],
        "--window", "8", "--stride", "4", "--data", data, "--split", "lrw",
        "--gate", "--atol", "1", "--min-top1", "0", "--out", out, *FAST)
    return {"ckpt": ckpt, "out": out, "data": data, "code": code, "stdout": stdout,
            "stderr": stderr, "json": json.loads((out / "bench.json").read_text())}


@pytest.fixture(scope="module")
def run_cli_module():
    """The real `lipx` entry point for module fixtures (exit code, stdout, stderr)."""
    import contextlib
    import io
    import sys

    from lipx import cli

    def run(*args):
        out, err = io.StringIO(), io.StringIO()
        argv, debug = sys.argv, cli._state["debug"]
        sys.argv = ["lipx", *map(str, args)]
        code = 0
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                cli.main()  # rich's consoles write to whatever sys.stdout/stderr are now
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        finally:
            sys.argv, cli._state["debug"] = argv, debug
        return code, out.getvalue(), err.getvalue()

    return run


@pytest.mark.slow
def test_lipreading_bench_from_a_checkpoint_end_to_end(lipreading):
    assert lipreading["code"] == 0, lipreading["stderr"] + lipreading["stdout"]
    out, report = lipreading["out"], lipreading["json"]
    assert {"bench.json", "bench.md", "latency.png", "accuracy-speed.png"} <= {
        p.name for p in out.iterdir()}
    assert (out / "latency.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "package" / "manifest.json").is_file()  # the exported package is kept
    rows = {r["key"]: r for r in report["rows"]}
    assert list(rows)[0] == "torch" and report["reference"] == "torch"
    assert report["settings"]["window"] == 8 and report["settings"]["stride"] == 4
    assert report["machine"]["load_average"] and report["machine"]["versions"]["onnxruntime"]
    features = report["machine"]["cpu_features"] or []  # int8 kernels differ with/without VNNI
    assert set(features) <= set(ISA_FLAGS) and ("avx2" in features) == _cpu_has("avx2")
    for key in ("torch", "onnx-cpu-fp32", "onnx-cpu-int8"):
        r = rows[key]
        assert r["status"] == "ok", r["reason"]
        assert r["window"]["count"] >= 3
        assert len(r["samples_ms"]["window"]) == r["window"]["count"]
        assert set(r["batches"]) == {"1", "2"} and r["streams"] >= 0 and r["peak_rss_mb"] > 0
        assert r["parity"]["metrics"]["accuracy"] in (0.0, 0.5, 1.0)  # 2 test clips
    fp32 = rows["onnx-cpu-fp32"]["parity"]
    assert fp32["outputs"][0]["max_abs"] < 1e-4 and fp32["top1_agreement"] == 1.0
    assert {o["graph"] for o in fp32["outputs"]} == {"model", "split"}
    assert rows["onnx-cpu-fp32"]["speedup"] > 0
    int8 = rows["onnx-cpu-int8"]["parity"]["outputs"][0]
    assert int8["max_abs"] > fp32["outputs"][0]["max_abs"]  # measured, not copied
    compiled = rows["torch-compile"]
    assert compiled["status"] == "skipped" and "disabled" in compiled["reason"]
    trt_reason = rows["trt-fp16"]["reason"]
    assert rows["trt-fp16"]["status"] == "skipped" and "tensorrt" in trt_reason.lower()
    if importlib.util.find_spec("tensorrt_rtx") is not None:  # builds here, cannot run
        assert "needs an NVIDIA GPU" in trt_reason and "built here with TensorRT-RTX" in trt_reason
    assert "CUDAExecutionProvider" in rows["onnx-cuda-fp16"]["reason"]
    assert "PASSED" in lipreading["stderr"] and "onnx-cpu-int8" in lipreading["stdout"]
    md = (out / "bench.md").read_text()
    assert "| onnx-cpu-int8 | ok |" in md and "trt-fp16: skipped" in md


def _cpu_has(flag: str) -> bool:
    try:
        return any(line.startswith("flags") and flag in line.split()
                   for line in Path("/proc/cpuinfo").read_text().splitlines())
    except OSError:
        return False


def redigest(package: Path) -> None:
    """Record the digests of ``package``'s files as they are now (a consistent, wrong package)."""
    m = Manifest.read(package)
    graphs = tuple(dataclasses.replace(g, sha256=file_sha256(package / g.file))
                   for g in m.graphs)
    dataclasses.replace(m, graphs=graphs).write(package)


def corrupt(package: Path, dest: Path) -> Path:
    """A copy of ``package`` whose float32 whole model has one weight tensor scaled (and whose
    manifest records the changed file's digest: wrong, not tampered with)."""
    shutil.copytree(package, dest)
    model = onnx.load(str(dest / "model.onnx"))
    for init in model.graph.initializer:
        weights = numpy_helper.to_array(init)
        if weights.dtype == np.float32 and weights.size > 100:
            init.CopyFrom(numpy_helper.from_array(weights * 1.5 + 0.01, init.name))
            break
    onnx.save(model, str(dest / "model.onnx"))
    redigest(dest)
    return dest


@pytest.mark.slow
def test_gate_fails_on_a_corrupted_engine_and_passes_on_the_clean_one(lipreading, tmp_path,
                                                                       run_cli):
    package, ckpt = lipreading["out"] / "package", lipreading["ckpt"]
    bad = corrupt(package, tmp_path / "bad")
    args = ("--checkpoint", ckpt, "--engine", "onnx-cpu-fp32", "--gate", *FAST)
    code, _, err = run_cli("bench", bad, *args)
    assert code == 1 and "bench gate failed" in err and "onnx-cpu-fp32: parity-failed" in err
    assert "Traceback" not in err
    code, _, err = run_cli("bench", package, *args)
    assert code == 0, err
    report = bench(bad, BenchOptions(checkpoint=ckpt, engines=("onnx-cpu-fp32",), budget_s=0.2,
                                     batch_sizes=(1,), compile_timeout_s=0))
    row = report.row("onnx-cpu-fp32")
    assert row.status == "parity-failed" and "max abs error" in row.reason
    assert row.parity and not row.parity.passed and row.window is not None  # timed all the same
    with pytest.raises(ParityError, match="onnx-cpu-fp32"):
        report.check_gate()


@pytest.mark.slow
def test_a_broken_graph_is_export_failed_and_fails_the_gate(lipreading, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(lipreading["out"] / "package", broken)
    (broken / "model.onnx").write_bytes(b"not an onnx file")
    redigest(broken)
    report = bench(broken, BenchOptions(checkpoint=lipreading["ckpt"], budget_s=0.2,
                                        engines=("onnx-cpu-fp32", "onnx-cpu-int8"),
                                        batch_sizes=(1,)))
    fp32, int8 = report.row("onnx-cpu-fp32"), report.row("onnx-cpu-int8")
    assert fp32.status == "export-failed" and "cannot load" in fp32.reason
    assert int8.status == "export-failed" and "converting model.onnx to int8" in int8.reason
    assert report.row("torch").status == "ok"  # the others go on
    with pytest.raises(ParityError, match="export-failed"):
        report.check_gate()


@pytest.mark.slow
def test_a_tampered_package_is_refused_before_loading(lipreading, tmp_path, run_cli):
    tampered = tmp_path / "tampered"
    shutil.copytree(lipreading["out"] / "package", tampered)
    (tampered / "backend.onnx").write_bytes((tampered / "backend.onnx").read_bytes() + b"\0")
    code, _, err = run_cli("bench", tampered, "--engine", "onnx-cpu-fp32", *FAST)
    last = err.strip().splitlines()[-1]  # after the progress lines, one error, no traceback
    assert code == 1 and "backend.onnx does not match the sha256" in last
    assert err.count("error") == 1 and "Traceback" not in err


@pytest.mark.slow
def test_every_row_has_its_gflops_its_share_of_the_gemm_peak_and_its_step_limit(lipreading):
    report, md = lipreading["json"], (lipreading["out"] / "bench.md").read_text()
    peak = report["machine"]["gemm_peak"]
    assert set(peak["gflop_s"]) <= {"1", str(peak["threads"])} and "1" in peak["gflop_s"]
    assert peak["peak_gflop_s"] == max(peak["gflop_s"].values()) > 0
    flops = report["flops"]["flops"]
    assert set(flops) == {"window", "frontend", "backend", "batch2", "tiny"} and not report[
        "flops"]["note"]
    assert flops["batch2"] == 2 * flops["window"] and flops["tiny"] < flops["backend"]
    # window 8, stride 4: the chunk (4 + 2 x 2 context frames) yields 4 of the window's 8 frames
    assert 2 * flops["frontend"] == flops["window"] - flops["backend"]
    assert report["flops"]["by_op"]["backend"].keys() == {"GRU", "Gemm"}
    for row in report["rows"]:
        if row["status"] != "ok":
            assert row["gflop_s"] == {} and row["step"] is None
            continue
        assert row["flops"] == flops and row["tiny_call"]["count"] >= 3
        assert set(row["gflop_s"]) == set(flops) and min(row["gflop_s"].values()) > 0
        assert row["peak_fraction"].keys() == row["gflop_s"].keys()  # every ok row is on the CPU
        assert row["peak_fraction"]["window"] == pytest.approx(
            row["gflop_s"]["window"] / peak["peak_gflop_s"])
        step = row["step"]
        assert step["flop_limit"] == pytest.approx(flops["window"] / (flops["frontend"]
                                                                     + flops["backend"]))
        assert min(step.values()) > 0 and {"gain", "frontend_window_gflop_s", "tiny_ms"} <= set(
            step)
    assert "| GFLOP/s | % peak |" in md and "FLOPs allow" in md and "SGEMM peak" in md
    assert "GFLOP/s" in lipreading["stdout"] and "FLOPs allow" in lipreading["stdout"]
    assert (lipreading["out"] / "efficiency.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_package_without_checkpoint_is_compared_with_onnxruntime_fp32(lipreading):
    report = bench(lipreading["out"] / "package",
                   BenchOptions(engines=("torch", "onnx-cpu-int8"), budget_s=0.2,
                                batch_sizes=(1,), max_clips=3, atol=1.0, min_top1=0.0))
    assert report.reference == "onnx-cpu-fp32" and report.rows[0].key == "onnx-cpu-fp32"
    torch_row = report.row("torch")
    assert torch_row.status == "skipped" and "--checkpoint" in torch_row.reason
    int8 = report.row("onnx-cpu-int8")
    assert int8.status == "ok" and int8.parity.reference == "onnx-cpu-fp32"
    assert "3 random clips" in report.inputs
    report.check_gate()  # skipped rows do not fail the gate


@pytest.mark.slow
def test_a_checkpoint_of_another_model_is_refused(lipreading, tmp_path):
    other = tiny_checkpoint("lip2speech", tmp_path / "other.lipx")
    with pytest.raises(InputError, match="lip2speech model but the package is lipreading"):
        bench(lipreading["out"] / "package", BenchOptions(checkpoint=other))


@pytest.fixture(scope="module")
def lip2speech(tmp_path_factory, packages):
    """The tiny lip-to-speech package (window 12, stride 4) against its checkpoint, on GRID."""
    root = tmp_path_factory.mktemp("bench_l2s")
    src = root / "grid_src"
    for speaker in ("s1", "s2"):
        for name, frames in (("bbaf2n", 50), ("bbaf3s", 30), ("bgaa1a", 45)):
            grid_clip(src, speaker, name, frames=frames)
    prepare_corpus(PrepareOptions("grid", src, root / "grid"))
    package = packages["lip2speech"]
    messages: list[str] = []
    opts = BenchOptions(engines=("onnx-cpu-fp32", "onnx-cpu-int8"),
                        checkpoint=package.with_suffix(".lipx"), budget_s=0.3,
                        batch_sizes=(1, 2), data=root / "grid", split="overlap",
                        out=root / "out", compile_timeout_s=0,
                        atol=1.0, max_stoi_drop=1.0)  # int8 of random weights: measured only
    report = bench(package, opts, progress=messages.append)
    return report, write_report(report, root / "out"), messages


@pytest.mark.slow
def test_lip2speech_bench_with_data_scores_speech_per_engine(lip2speech):
    report, paths, messages = lip2speech
    assert [p.name for p in paths] == ["bench.json", "bench.md", "latency.png",
                                      "accuracy-speed.png", "efficiency.png"]
    assert any("onnx-cpu-int8" in m for m in messages) and report.export_s is None  # no export
    assert report.task == "lip2speech" and "overlap/test" in report.inputs
    assert [r.key for r in report.rows] == ["torch", "onnx-cpu-fp32", "onnx-cpu-int8"]
    ref = report.row("torch")
    assert ref.reference and {"stoi", "estoi", "pesq", "mel_l1", "linear_l1"} <= set(
        ref.parity.metrics)
    for key in ("onnx-cpu-fp32", "onnx-cpu-int8"):
        row = report.row(key)
        assert row.status == "ok", row.reason
        assert {o.name for o in row.parity.outputs} == {"mel", "linear"}
        assert set(row.parity.deltas) >= {"stoi", "estoi", "mel_l1"}
        assert row.parity.stoi_drop == pytest.approx(-row.parity.deltas["stoi"])
    fp32 = report.row("onnx-cpu-fp32").parity
    assert abs(fp32.deltas["stoi"]) < 1e-3 and fp32.worst_abs < 1e-4
    assert report.row("onnx-cpu-fp32").rtf_stream > 0
    saved = json.loads(paths[0].read_text())
    assert saved["rows"][1]["parity"]["metrics"]["stoi"] == pytest.approx(
        fp32.metrics["stoi"])
    assert "STOI" in paths[1].read_text()


@pytest.mark.slow
def test_markdown_lists_every_engine(lip2speech):
    report = lip2speech[0]
    text = markdown(report, [])
    assert all(f"| {r.key} |" in text for r in report.rows)
    assert "load average" in text


# --- options, matrix, gate defaults ---------------------------------------------------------


@pytest.mark.parametrize("kwargs, message", [
    ({"engines": ("onnx-cpu-int9",)}, "did you mean 'onnx-cpu-int8'"),
    ({"batch_sizes": (0, 2)}, "positive"),
    ({"batch_sizes": (2, 2)}, "duplicates"),
    ({"window": 8, "stride": 9}, r"larger than the window \(8 frames\)"),
    ({"split": "overlap"}, "--split needs --data"),
    ({"min_top1": 1.5}, "within 0..1"),
    ({"budget_s": 0}, "--budget-s"),
    ({"device": "tpu"}, "--device"),
])
def test_bad_options_are_refused(kwargs, message):
    with pytest.raises(InputError, match=message):
        BenchOptions(**kwargs)


def test_cli_reports_bad_input_in_one_line(run_cli, tmp_path):
    code, _, err = run_cli("bench", tmp_path / "missing.lipx")
    assert code == 1 and "does not exist" in err and "Traceback" not in err
    code, _, err = run_cli("bench", tmp_path, "--engine", "onnx-gpu")
    assert code == 1 and "unknown engine 'onnx-gpu'" in err
    code, _, err = run_cli("bench", tmp_path, "--batch-sizes", "1,x")
    assert code == 1 and "comma-separated integers" in err


def test_importing_the_bench_loads_neither_torch_nor_onnxruntime_nor_onnx():
    import subprocess
    import sys

    code = ("import sys, lipx.benchmarks.api, lipx.benchmarks.report, lipx.benchmarks.flops\n"
            "print('torch' in sys.modules, 'onnxruntime' in sys.modules, 'onnx' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False", "False"]


def test_the_matrix_comes_from_the_backend_registry():
    keys = list(engine_matrix())
    assert keys[:2] == ["torch", "torch-compile"]
    assert {"onnx-cpu-fp32", "onnx-cpu-int8", "onnx-cuda-fp32", "onnx-cuda-fp16",
            "onnx-tensorrt-fp32", "trt-fp16", "trt-fp32"} == set(keys[2:])
    for spec in engine_matrix().values():
        if spec.backend == "onnx":
            assert spec.precision in DEVICE_PRECISIONS[spec.device]


def test_gate_defaults_and_overrides():
    spec = task_spec("lipreading")
    assert spec.tolerance("int8") == spec.tolerances["int8"]
    g = spec.tolerance("fp16", atol=0.5, min_top1=0.5, max_stoi_drop=None)
    assert (g.atol, g.rtol, g.min_top1) == (0.5, spec.tolerances["fp16"].rtol, 0.5)
    with pytest.raises(InputError, match="no parity tolerance for precision 'bf16'"):
        spec.tolerance("bf16")


def test_compile_clock_charges_first_calls_per_shape_and_gives_up_past_its_limit(monkeypatch):
    from lipx.benchmarks import engines
    from lipx.benchmarks.engines import CompileClock, CompileTimed, EngineSkipped
    from lipx.package import TensorInfo
    from lipx.runtime.runner import Runner

    class Slow(Runner):
        """A runner whose calls take 0.05 s."""

        def _activate(self):
            pass

        def _deactivate(self):
            pass

        def _input_metadata(self):
            return {"x": TensorInfo("x", "float32", ("batch",))}

        def _output_metadata(self):
            return {"y": TensorInfo("y", "float32", ("batch",))}

        def _infer(self, feeds):
            now[0] += 0.05  # every call takes 50 ms of a fake clock: no timing luck
            return {"y": feeds["x"]}

    now = [0.0]
    monkeypatch.setattr(engines, "time", SimpleNamespace(perf_counter=lambda: now[0]))
    clock = CompileClock(limit_s=0.12)
    with CompileTimed(Slow("slow"), clock) as runner:
        for _ in range(3):
            runner.infer({"x": np.zeros(2, np.float32)})
        assert clock.spent_s == pytest.approx(0.05)  # only the first call with this shape
        runner.infer({"x": np.zeros(3, np.float32)})
        with pytest.raises(EngineSkipped, match="over the 0 s limit"):
            runner.infer({"x": np.zeros(4, np.float32)})


def test_tensorrt_stage_times_are_read_in_seconds():
    from lipx.benchmarks.measure import stage_seconds

    class Trt:
        last_timings = {"h2d_ms": 0.5, "compute_ms": 2.0, "d2h_ms": 0.25}

    assert stage_seconds(Trt()) == {"h2d": 0.0005, "compute": 0.002, "d2h": 0.00025}
    assert stage_seconds(object()) == {}


# --- efficiency -----------------------------------------------------------------------------


def stats(mean_ms: float) -> LatencyStats:
    return LatencyStats.of([mean_ms / 1e3] * 3)


def test_step_figures_split_the_gain_short_of_its_flop_limit():
    # front-end 1 GFLOP/frame; window 10 frames + backend 1 GFLOP; chunk of 2 new frames
    row = EngineRow("e", "e", "onnx", "cpu", "fp32", "ok", window=stats(110.0),
                    frontend_chunk=stats(40.0), backend_window=stats(10.0),
                    tiny_call=stats(0.05), flops={"window": 11 * 10**9, "frontend": 2 * 10**9,
                                                  "backend": 10**9, "tiny": 10**6})
    s = step_figures(row)
    assert s["gain"] == pytest.approx(110 / 50) and s["flop_limit"] == pytest.approx(11 / 3)
    assert s["frontend_window_gflop_s"] == pytest.approx(100.0)  # 10 GFLOP in 110 - 10 ms
    assert s["frontend_chunk_gflop_s"] == pytest.approx(50.0) and s["backend_gflop_s"] == 100
    assert s["gain_at_window_rate"] == pytest.approx(110 / (20 + 10))  # chunk at 100 GFLOP/s
    assert s["tiny_ms"] == pytest.approx(0.05)
    assert row.gflop_s() == pytest.approx({"window": 100.0, "frontend": 50.0, "backend": 100.0,
                                           "tiny": 20.0})
    line = step_sentence("e", s)
    assert "2.20x cheaper" in line and "FLOPs allow 3.67x" in line and "(at that rate: 3.67x)" \
        in line
    assert step_figures(dataclasses.replace(row, flops={})) is None


def test_only_cpu_rows_are_compared_with_the_cpu_gemm_peak():
    row = EngineRow("e", "e", "onnx", "cpu", "fp32", "ok", window=stats(10.0),
                    flops={"window": 10**9})
    report = BenchReport("t", "p", "lipreading", "m", None, "x", False, {},
                         {"gemm_peak": {"peak_gflop_s": 200.0}}, (row,), 1.0)
    assert report.peak_fraction(row) == pytest.approx({"window": 0.5})
    assert report.peak_fraction(dataclasses.replace(row, device="cuda")) == {}


def test_the_gemm_peak_is_measured_on_one_and_the_bench_threads():
    peak = gemm_peak(2, sizes=(64, 128), seconds=0.01)
    assert set(peak["gflop_s"]) == {"1", "2"} and peak["kernels"]
    for kernel in peak["kernels"].values():  # numpy's own, and AVX-512's where OpenBLAS skips it
        assert set(kernel["by_size"]) == {"1", "2"} and set(kernel["by_size"]["1"]) == {"64",
                                                                                      "128"}
    assert peak["gflop_s"]["1"] == max(max(k["by_size"]["1"].values())
                                       for k in peak["kernels"].values())
    assert peak["peak_gflop_s"] == max(peak["gflop_s"].values()) > 0
    assert set(gemm_peak(1, sizes=(64,), seconds=0.01)["gflop_s"]) == {"1"}


def test_an_avx512_cpu_gets_the_avx512_kernel_timed_when_openblas_skips_it(monkeypatch):
    from lipx.benchmarks import peak

    monkeypatch.setattr(peak, "cpu_flags", lambda: set(peak.AVX512_FLAGS))
    assert peak._avx512_unused({"blas": "openblas 0.3.31", "kernel": "Haswell"})
    assert not peak._avx512_unused({"blas": "openblas 0.3.31", "kernel": "SkylakeX"})
    assert not peak._avx512_unused({"blas": "mkl 2025", "kernel": "skylake"})
    monkeypatch.setattr(peak, "cpu_flags", lambda: {"avx2", "fma"})
    assert not peak._avx512_unused({"blas": "openblas 0.3.31", "kernel": "Haswell"})


# --- timing ---------------------------------------------------------------------------------


def test_timing_stats_are_sigma_clipped():
    samples = [0.010] * 50 + [0.011] * 49 + [1.0]  # one 1 s outlier among ~10 ms calls
    s = Timing(samples, []).stats
    assert s.count == 100 and s.clipped == 1 and s.max_ms == pytest.approx(1000.0)
    assert s.p50_ms == pytest.approx(10.5) and s.mean_ms == pytest.approx(10.49, abs=0.01)
    assert s.std_ms < 1.0 and s.p99_ms > 11.0


def test_warm_up_goes_on_while_calls_get_faster():
    times = iter([1.3, 1.3, 0.38, 0.011, 0.011, 0.011, 0.011])
    seen = warm_up(lambda: next(times), Budget(1.0, warmup=3))
    assert seen == [1.3, 1.3, 0.38, 0.011, 0.011]
    steady = iter([0.5, 0.01, 0.01, 0.01])
    assert warm_up(lambda: next(steady), Budget(1.0, warmup=3)) == [0.5, 0.01, 0.01]


def test_time_calls_keeps_every_sample_within_the_budget():
    calls = []
    timing = time_calls(lambda: calls.append(1), Budget(0.05, min_runs=5, max_runs=50, warmup=1),
                        stages=lambda: {"compute": 0.001})
    assert len(timing.samples_s) + len(timing.warmup_s) == len(calls)
    assert 5 <= len(timing.samples_s) <= 50 and timing.stages_s["compute"][0] == 0.001
    assert timing.stage_stats()["compute"].p50_ms == pytest.approx(1.0)
