"""The runtime install: a machine with the base install plus [cpu] (no torch, no onnx) streams
and benchmarks packages exported elsewhere, and the commands that need an extra say which.

Each check runs the real CLI in a fresh interpreter whose import system cannot find the export
and training stack (torch, onnx, onnxscript, tensorboard, pesq), as in a venv made with
``pip install ".[cpu]"``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ABSENT = ("torch", "onnx", "onnxscript", "tensorboard", "pesq")

BLOCKER = textwrap.dedent(f"""
    import importlib.abc, sys

    class _Absent(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in {ABSENT!r}:
                raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
            return None

    sys.meta_path.insert(0, _Absent())
    import importlib.util
    _find = importlib.util.find_spec
    def _find_spec(name, package=None):
        if name.split(".")[0] in {ABSENT!r}:
            return None
        return _find(name, package)
    importlib.util.find_spec = _find_spec
""")


def lipx_without_torch(tmp_path: Path, *args: object) -> subprocess.CompletedProcess[str]:
    """``lipx ARGS`` in a fresh interpreter where the :data:`ABSENT` modules cannot be found."""
    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(BLOCKER)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH",
                                                                                  "")])}
    code = ("import sys, lipx.cli\n"
            "try:\n    lipx.cli.main()\n"
            "finally:\n"
            f"    bad = [m for m in sys.modules if m.split('.')[0] in {ABSENT!r}]\n"
            "    print('LOADED', bad, file=sys.stderr)\n")
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True,
                          text=True, env=env, timeout=240)


def _loaded(result: subprocess.CompletedProcess[str]) -> str:
    return next(line for line in result.stderr.splitlines() if line.startswith("LOADED"))


def test_the_blocker_really_hides_torch(tmp_path):
    result = lipx_without_torch(tmp_path, "export", "x.lipx", "-o", tmp_path / "pkg")
    assert result.returncode == 1
    assert "lipx export needs torch, onnx, onnxscript" in result.stderr
    assert "pip install 'lipx[export]'" in result.stderr
    assert _loaded(result) == "LOADED []"


@pytest.mark.parametrize("args, extra", [
    (["train", "lipreading", "data", "-o", "run"], "lipx[train]"),
    (["eval", "x.lipx", "data"], "lipx[train]"),
    (["convert", "x.pth", "-o", "y.lipx"], "lipx[export]"),
    (["info", "x.lipx"], "lipx[export]"),
    (["demo"], "lipx[train]"),
])
def test_commands_that_need_an_extra_name_it(tmp_path, args, extra):
    result = lipx_without_torch(tmp_path, *args)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 1 and len(errors) == 1 and extra in errors[0], result.stderr


@pytest.mark.slow
def test_stream_bench_and_info_of_a_package_run_without_torch(tmp_path, packages, face_video):
    pkg = packages["lipreading"]
    stats = tmp_path / "stats.json"
    result = lipx_without_torch(tmp_path, "stream", face_video, "--model", pkg, "--max-frames",
                                "40", "--stats", stats)
    assert result.returncode == 0, result.stderr
    assert json.loads(stats.read_text())["frames_out"] == 40
    assert _loaded(result) == "LOADED []"

    out = tmp_path / "bench"
    result = lipx_without_torch(tmp_path, "bench", pkg, "--engine", "onnx", "--engine", "torch",
                                "--budget-s", "0.3", "--batch-sizes", "1,2", "--out", out)
    assert result.returncode == 0, result.stderr
    rows = {r["key"]: r for r in json.loads((out / "bench.json").read_text())["rows"]}
    assert rows["onnx-cpu-fp32"]["status"] == "ok"  # the reference without a checkpoint
    assert rows["torch"]["status"] == "skipped"
    assert "lipx[export]" in rows["onnx-cpu-int8"]["reason"]  # converting needs onnx
    assert _loaded(result) == "LOADED []"
    saved = json.loads((out / "bench.json").read_text())  # FLOPs need onnx: a note, no column
    note = "FLOPs not counted: needs onnx: pip install 'lipx[export]'"
    assert saved["flops"]["note"] == note and saved["flops"]["flops"] == {}
    assert rows["onnx-cpu-fp32"]["gflop_s"] == {} and rows["onnx-cpu-fp32"]["step"] is None
    assert saved["machine"]["gemm_peak"]["peak_gflop_s"] > 0  # the peak needs numpy only
    header = next(line for line in (out / "bench.md").read_text().splitlines()
                  if line.startswith("| engine | status"))
    assert "GFLOP/s" not in header and "% peak" not in header and "step gain" in header
    assert result.stdout.count(note) == 1

    result = lipx_without_torch(tmp_path, "info", pkg)
    assert result.returncode == 0 and "lipreading" in result.stdout, result.stderr
    assert "head output" in result.stdout and _loaded(result) == "LOADED []"
