"""Make the artifact an engine needs from a package's float32 ONNX graph.

:data:`BUILDERS` has one builder per engine of the backend table; ``lipx export`` (into the
package being written) and ``lipx bench`` (into its work folder) hand them to
:class:`~lipx.runtime.package_runners.PackageArtifacts`, which calls one when a package lacks an
artifact::

    builder(artifacts, role, precision, path) -> the new manifest entry

Everything a builder needs comes from the manifest: the task spec (fp32 layers, minimum frames,
context), the schedule (TensorRT profiles), and the package's float32 graph, checked against its
digest before it is read. A failure is :class:`~lipx.errors.BuildFailed` with the tool's first
line; a missing library stays BackendUnavailableError.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

from lipx.errors import BackendUnavailableError, BuildFailed, InputError, first_line
from lipx.files import file_sha256
from lipx.package import EngineInfo, GraphInfo

if TYPE_CHECKING:
    from lipx.runtime.package_runners import Builder, PackageArtifacts


def onnx_graph(artifacts: PackageArtifacts, role: str, precision: str, path: Path) -> GraphInfo:
    """Convert the package's float32 ``role`` graph to ``precision`` (fp16, int8) at ``path``."""
    from lipx.export.precision import Fp32Rule
    from lipx.export.quantize import CONVERTERS

    manifest = artifacts.manifest
    fp32 = manifest.graph(role)
    rule = Fp32Rule.with_patterns(manifest.spec.fp32_patterns)
    src = artifacts.package.file(fp32)
    try:
        info = CONVERTERS[precision](fp32, src, path, rule)
    except BackendUnavailableError:
        raise
    except Exception as e:  # converters raise onnx/onnxruntime errors of many kinds
        raise BuildFailed(f"converting {fp32.file} to {precision} failed: {first_line(e)}") from e
    return dataclasses.replace(info, sha256=file_sha256(path))


def tensorrt_plan(artifacts: PackageArtifacts, role: str, precision: str,
                  path: Path) -> EngineInfo:
    """Build the strongly typed TensorRT plan of the package's ``role`` graph at ``path``.

    Profiles come from the package's schedule and the build options: the backend takes
    ``min_frames`` .. window frames, the front-end chunks of 1 .. window frames plus context,
    the whole model ``min_frames`` .. ``max_frames``, each overridable (``--profile``). A graph
    of fixed shapes (the face models) has one profile of those shapes. An fp16 plan is built
    from the fp16 graph, which ``artifacts`` converts when the package lacks it.
    """
    from lipx.export.precision import Fp32Rule
    from lipx.export.trt import (
        BuildSettings,
        apply_overrides,
        build_engine,
        derive_dims,
        profile_for,
    )

    manifest, opts = artifacts.manifest, artifacts.options
    spec, s = manifest.spec, manifest.schedule
    settings = BuildSettings(precision, opts.workspace_mb, opts.cache_dir,
                             Fp32Rule.with_patterns(spec.fp32_patterns), opts.trt_flavour,
                             opts.trt_targets)
    src, graph = artifacts.get("onnx", role, precision)
    if not isinstance(graph, GraphInfo):
        raise TypeError(f"expected a graph for {role}, got {graph!r}")
    dims = {}
    if any(t.dynamic for t in graph.inputs):
        dims = apply_overrides(role, derive_dims(
            role, s.window, s.stride, opts.max_batch, spec.min_frames,
            max(opts.max_frames or 3 * s.window, s.window), spec.context), opts.profiles)
    try:
        return build_engine(graph, src, path, (profile_for(graph, dims),), settings)
    except (BackendUnavailableError, InputError):
        raise
    except Exception as e:  # TensorRT parser/builder errors
        raise BuildFailed(f"building the {precision} plan of {graph.file} failed: "
                          f"{first_line(e)}") from e


BUILDERS: dict[str, Builder] = {"onnx": onnx_graph, "trt": tensorrt_plan}
"""The builder of each engine of :data:`~lipx.runtime.backends.BACKENDS`. Importing this module
needs neither onnx nor TensorRT: each builder imports what it uses when called."""
