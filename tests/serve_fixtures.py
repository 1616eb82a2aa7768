"""Session fixtures for the server's tests: a trained package and a held-out stream it can read.

* ``shipped_lipreading_package``: the shipped checkpoint ``lipx/assets/checkpoints/
  lipreading.lipx`` exported to a package (ONNX, parity checked), so a served stream reads real
  words. Exporting takes most of a minute; the package is kept in pytest's cache folder under
  the checkpoint's sha256 and :func:`stream_fixtures.source_digest` (the code it comes from), so
  a re-run reuses it and any change to the models or the exporter exports it again.
* ``held_out_stream``: one continuous test stream (words with pauses between them) of the
  speakers the checkpoint never saw (``lipx data synth --layout lrw-streams --part test``), as
  ``(mp4 path, the vocabulary words said, in order)``.

``conftest.py`` registers both once for every module (see ``stream_fixtures``).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from stream_fixtures import source_digest

from lipx.files import file_sha256

ROOT = Path(__file__).resolve().parent.parent
SHIPPED_LIPREADING = ROOT / "lipx" / "assets" / "checkpoints" / "lipreading.lipx"
"""The trained lipreading checkpoint the repository ships."""


def export_cached(checkpoint: Path, cache_root: Path, work: Path) -> Path:
    """The package of ``checkpoint``, exported once into ``cache_root`` and reused after.

    Args:
        checkpoint: a lipx checkpoint (``.lipx``).
        cache_root: the folder that keeps one package per checkpoint and code digest; older
            digests of the same checkpoint name are removed.
        work: an empty scratch folder to export into before the package is moved in place.
    Returns:
        The package directory (it holds ``manifest.json``).
    """
    from lipx.export.api import ExportOptions, export_package

    stem = checkpoint.stem
    package = cache_root / f"{stem}-{file_sha256(checkpoint)[:16]}-{source_digest()}"
    if (package / "manifest.json").is_file():
        return package
    export_package(checkpoint, ExportOptions(output=work / stem))
    cache_root.mkdir(parents=True, exist_ok=True)
    for old in cache_root.glob(f"{stem}-*"):
        shutil.rmtree(old, ignore_errors=True)  # older code's packages, or a partial copy
    partial = package.with_name(f"{package.name}.partial-{os.getpid()}")
    shutil.copytree(work / stem, partial)
    try:
        os.replace(partial, package)
    except OSError:  # a concurrent session installed the same package first
        shutil.rmtree(partial, ignore_errors=True)
    return package


@pytest.fixture(scope="session", name="shipped_lipreading_package")
def shipped_lipreading_fixture(request: pytest.FixtureRequest,
                               tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped lipreading checkpoint's package directory (cached between runs)."""
    cache = getattr(request.config, "cache", None)
    root = (cache.mkdir("lipx-serve-packages") if cache is not None
            else tmp_path_factory.mktemp("serve-packages"))
    return export_cached(SHIPPED_LIPREADING, root, tmp_path_factory.mktemp("serve-export"))


def held_out_streams(out: Path, count: int) -> list[tuple[Path, list[str]]]:
    """``count`` held-out test streams of the shipped checkpoint's corpus, written to ``out``:
    (each MP4, 256x256 aligned faces at 25 fps with speech; the vocabulary words said, in
    order). The streams' other spoken words (context words the model does not know) are left
    out."""
    from lipx.data.stream_corpus import synth_options, synthesize_streams

    opts = synth_options(out, "lrw-streams", {}, streams=count, like=SHIPPED_LIPREADING,
                         part="test")
    synthesize_streams(opts)
    records = [json.loads(line) for line in (out / "streams.jsonl").read_text().splitlines()
               if line.strip()]
    return [(out / r["video"], list(r["words"])) for r in records]


@pytest.fixture(scope="session", name="held_out_stream")
def held_out_stream_fixture(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """One held-out test stream (see :func:`held_out_streams`)."""
    (stream,) = held_out_streams(tmp_path_factory.mktemp("held-out-stream"), 1)
    return stream
