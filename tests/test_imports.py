"""Import hygiene: the CLI and the runtime stay torch-free (and onnxruntime/TensorRT-free at
import)."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("torch", "onnxruntime", "tensorrt")


def _loaded_after(code: str) -> dict[str, bool]:
    report = f"print(json.dumps({{m: m in sys.modules for m in {HEAVY!r}}}))"
    probe = f"{code}\nimport json, sys\n{report}"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_lipx_and_cli_help_import_nothing_heavy():
    loaded = _loaded_after(
        "import lipx, lipx.cli, lipx.errors, lipx.audio, lipx.video\n"
        "from typer.testing import CliRunner\n"
        "r = CliRunner().invoke(lipx.cli.app, ['--help'])\nassert r.exit_code == 0, r.output"
    )
    assert not any(loaded.values()), loaded


def test_every_runtime_module_imports_without_torch():
    loaded = _loaded_after(
        "import importlib, pkgutil, lipx.runtime as r\n"
        "for m in pkgutil.iter_modules(r.__path__, 'lipx.runtime.'):\n"
        "    importlib.import_module(m.name)"
    )
    assert not loaded["torch"], "importing lipx.runtime pulled in torch"


def test_every_serve_module_imports_without_torch():
    """lipx.serve.ray too where Ray is installed (``lipx[ray]``; it needs nothing else)."""
    loaded = _loaded_after(
        "import importlib, importlib.util, pkgutil, lipx.serve as s\n"
        "ray = importlib.util.find_spec('ray') is not None\n"
        "for m in pkgutil.iter_modules(s.__path__, 'lipx.serve.'):\n"
        "    if ray or m.name != 'lipx.serve.ray':\n"
        "        importlib.import_module(m.name)"
    )
    assert not loaded["torch"], "importing lipx.serve pulled in torch"


def test_every_data_module_imports_without_torch_or_training():
    code = (
        "import importlib, pkgutil, sys, lipx.data as d\n"
        "for m in pkgutil.iter_modules(d.__path__, 'lipx.data.'):\n"
        "    importlib.import_module(m.name)\n"
        "bad = [m for m in sys.modules if m.startswith(('lipx.train', 'lipx.models'))]\n"
        "assert not bad, bad"
    )
    loaded = _loaded_after(code)
    assert not loaded["torch"], "importing lipx.data pulled in torch"


def test_every_subcommand_has_help(run_cli):
    import typer.main

    from lipx.cli import app

    group = typer.main.get_command(app)
    names = [n for n in group.commands]
    assert {"convert", "info", "data"} <= set(names)
    for name in names:
        code, out, _ = run_cli(name, "--help")
        assert code == 0 and "Usage" in out and len(out) > 200, name
