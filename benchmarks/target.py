"""What ``lipx bench`` measures: a model package, with the PyTorch model when there is one.

``lipx bench MODEL_PACKAGE_OR_CHECKPOINT``:

* a **checkpoint** is exported first with :func:`lipx.export.api.export_package` (graphs only;
  the bench measures parity itself) into ``OUT/package`` (or a temporary folder), and its model is
  kept as the float32 PyTorch reference;
* a **package** (a folder with ``manifest.json``) needs its checkpoint for the PyTorch reference
  (``--checkpoint``; its sha256 must match the one the manifest records). Without one the PyTorch
  rows are skipped and parity is measured against onnxruntime CPU float32.

Reduced-precision graphs the package lacks and TensorRT plans are built into a work folder, never
into the package.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lipx.errors import InputError
from lipx.export.build import BUILDERS
from lipx.package import MANIFEST_NAME, GraphInfo, Manifest, Package
from lipx.runtime.package_runners import BuildOptions, PackageArtifacts
from lipx.tasks import Schedule

log = logging.getLogger(__name__)

Say = Callable[[str], None]


@dataclass
class Target:
    """A package ready to benchmark."""

    package: Path
    manifest: Manifest
    checkpoint: Path | None
    model: Any | None
    """The float32 PyTorch model (eval mode), or None without a checkpoint."""
    workdir: Path
    """Where converted graphs and plans go."""
    export_s: float | None = None
    """Seconds the export of a checkpoint took (None for a package)."""
    _artifacts: PackageArtifacts | None = None

    @property
    def task(self) -> str:
        return self.manifest.task

    def artifacts(self, options: BuildOptions) -> PackageArtifacts:
        """The package's artifacts; what it lacks is made into the work folder with
        ``options`` (the first call's: one bench run builds every artifact the same way)."""
        if self._artifacts is None:
            self._artifacts = PackageArtifacts(Package(self.package, self.manifest), self.workdir,
                                               options, BUILDERS)
        return self._artifacts

    def schedule(self, window: int | None, stride: int | None) -> Schedule:
        """The package's window and stride unless overridden."""
        return self.manifest.spec.schedule(window, stride, default=self.manifest.schedule)


def is_package(path: Path) -> bool:
    return (path.is_dir() and (path / MANIFEST_NAME).is_file()) or path.name == MANIFEST_NAME


def open_target(path: Path, checkpoint: Path | None, window: int | None, stride: int | None,
                max_batch: int, workdir: Path, package_dir: Path, say: Say) -> Target:
    """Resolve ``path`` (a package or a checkpoint) to a :class:`Target`.

    Args:
        path: a package folder (or its manifest.json), or a lipx checkpoint.
        checkpoint: the package's checkpoint (packages only).
        window, stride: export schedule of a checkpoint (None: the task's defaults).
        max_batch: largest batch the export should allow.
        workdir: folder for converted graphs and plans.
        package_dir: where a checkpoint's package is exported (replaced if it exists: it is
            inside the bench's own output folder).
        say: progress messages.
    Raises:
        InputError / CheckpointError / ManifestError: unreadable or mismatched inputs.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path} does not exist: expected a model package folder (with "
                         f"manifest.json) or a lipx checkpoint")
    if is_package(path):
        pkg = path.parent if path.name == MANIFEST_NAME else path
        manifest = Manifest.read(pkg)
        model = _reference_model(checkpoint, manifest) if checkpoint else None
        if model is None:
            log.info("no --checkpoint: the PyTorch rows are skipped; parity is against "
                     "onnxruntime CPU fp32")
        return Target(pkg, manifest, checkpoint, model, workdir)
    if path.is_dir():
        raise InputError(f"{path} is a folder without {MANIFEST_NAME}: expected a model package "
                         f"(lipx export) or a lipx checkpoint file")
    if checkpoint is not None:
        raise InputError("--checkpoint is only for packages: the target is already a checkpoint")
    return _export(path, window, stride, max_batch, workdir, package_dir, say)


def _export(path: Path, window: int | None, stride: int | None, max_batch: int, workdir: Path,
            package_dir: Path, say: Say) -> Target:
    from lipx.export.api import ExportOptions, export_package
    from lipx.models.checkpoint import build_model, load_checkpoint

    ckpt = load_checkpoint(path)  # fail fast on a bad file, before the export's processes
    say(f"exporting {path.name} to {package_dir}")
    started = time.perf_counter()
    opts = ExportOptions(output=package_dir, window=window, stride=stride, parity=False,
                         max_batch=max(8, max_batch), force=True)
    result = export_package(path, opts, progress=say)
    return Target(result.path, result.manifest, path, build_model(ckpt), workdir,
                  export_s=time.perf_counter() - started)


def _reference_model(checkpoint: Path, manifest: Manifest) -> Any:
    """The PyTorch model of ``checkpoint``, checked against the package it claims to be."""
    from lipx.export.trt import file_sha256
    from lipx.models.checkpoint import build_model, load_checkpoint

    ckpt = load_checkpoint(checkpoint)
    exported = manifest.task
    if exported != ckpt.task:
        raise InputError(f"--checkpoint {checkpoint} is a {ckpt.task} model but the package is "
                         f"{manifest.task}; pass the checkpoint the package was exported from")
    digest = file_sha256(Path(checkpoint))
    if manifest.checkpoint_sha256 and digest != manifest.checkpoint_sha256:
        raise InputError(f"--checkpoint {checkpoint} (sha256 {digest[:12]}...) is not the "
                         f"checkpoint this package was exported from (sha256 "
                         f"{manifest.checkpoint_sha256[:12]}...); pass that one")
    if not manifest.checkpoint_sha256:
        log.warning("the manifest records no checkpoint digest: cannot verify %s", checkpoint)
    return build_model(ckpt)


# --- inputs ---------------------------------------------------------------------------------


def feed_shapes(graph: GraphInfo, batch: int, frames: int) -> dict[str, tuple[int, ...]]:
    """Input name -> concrete shape of ``graph`` at ``batch`` x ``frames``.

    Raises:
        InputError: the graph has a dynamic dim other than batch/frames/chunk.
    """
    dims = {"batch": batch, "frames": frames, "chunk": frames}
    shapes = {}
    for t in graph.inputs:
        for d in t.shape:
            if isinstance(d, str) and d not in dims:
                raise InputError(f"{graph.file}: input {t.name!r} has an unknown dynamic dim "
                                 f"{d!r}; re-export the package with this lipx")
        shapes[t.name] = tuple(dims[d] if isinstance(d, str) else d for d in t.shape)
    return shapes


def random_feeds(graph: GraphInfo, batch: int, frames: int, seed: int) -> dict[str, np.ndarray]:
    """Seeded inputs of ``graph`` at ``batch`` x ``frames`` (shapes: :func:`feed_shapes`).

    The first input (video or features) is standard normal (frames are normalised, so this is
    their scale); the others (the lip-to-speech noise) are zeros, as in inference.

    Raises:
        InputError: the graph has a dynamic dim other than batch/frames/chunk.
    """
    rng = np.random.default_rng(seed)
    feeds = {}
    for i, (name, shape) in enumerate(feed_shapes(graph, batch, frames).items()):
        dtype = np.dtype(graph.inputs[i].dtype)
        feeds[name] = (rng.standard_normal(shape).astype(dtype) if i == 0
                       else np.zeros(shape, dtype))
    return feeds


def zero_inputs_like(graph: GraphInfo, video: np.ndarray) -> dict[str, np.ndarray]:
    """Feeds of the whole-model ``graph`` for ``video`` (B, 1, T, H, W): other inputs zeros."""
    b, t = video.shape[0], video.shape[2]
    rest = random_feeds(graph, b, t, seed=0)
    first = graph.inputs[0].name
    return {first: np.ascontiguousarray(video, dtype=np.float32),
            **{k: v for k, v in rest.items() if k != first}}
