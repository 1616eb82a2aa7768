"""Shared fixtures and hardware gating.

Tests marked ``gpu`` skip without CUDA and ``trt`` without TensorRT; the probes run once, in a
hook, not at import. Tests marked ``ray`` run only with ``--ray`` (``make test-ray``).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--ray", action="store_true",
                     help="run the tests marked ray (a local Ray cluster; make test-ray)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not config.getoption("--ray"):  # heavy: their own target, make test-ray
        kept = [item for item in items if item.get_closest_marker("ray") is None]
        if len(kept) < len(items):
            config.hook.pytest_deselected(items=[i for i in items if i not in kept])
            items[:] = kept
    need_gpu = any("gpu" in item.keywords for item in items)
    need_trt = any("trt" in item.keywords for item in items)
    has_gpu = _cuda_available() if need_gpu or need_trt else False
    has_trt = importlib.util.find_spec("tensorrt") is not None if need_trt else False
    for item in items:
        if "gpu" in item.keywords and not has_gpu:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU (none found)"))
        if "trt" in item.keywords and not (has_trt and has_gpu):
            reason = "needs TensorRT" if not has_trt else "needs a CUDA GPU for TensorRT"
            item.add_marker(pytest.mark.skip(reason=f"{reason} (not available here)"))


@pytest.fixture
def run_cli(capsys, monkeypatch):
    """Run the real ``lipx`` entry point in-process: returns (exit code, stdout, stderr)."""
    from lipx import cli

    def run(*args: str) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", ["lipx", *map(str, args)])
        monkeypatch.setitem(cli._state, "debug", False)
        code = 0
        try:
            cli.main()
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        out, err = capsys.readouterr()
        return code, out, err

    return run


from corpora import grid_corpus, lrw_corpus  # noqa: E402,F401  (session-scoped corpora)
from serve_fixtures import held_out_stream_fixture, shipped_lipreading_fixture  # noqa: E402,F401
from stream_fixtures import face_video_fixture, packages_fixture  # noqa: E402,F401  (packages)
