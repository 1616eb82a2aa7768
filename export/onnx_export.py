"""torch -> ONNX with the dynamo exporter, one graph per fresh Python process.

Measured on torch 2.13 (issue 5): a second export of a GRU model in the same process silently
fixed the time length, and a batch-1 example silently fixed the batch. So each graph is exported
by ``python -m lipx.export.onnx_export JOB OUT`` in a new process, from an example of batch >= 2,
and the file is accepted only when

* ``onnx.checker`` (full check) passes,
* strict shape inference passes on the graph with the exporter's value_info removed (it records
  shapes specialised to the example, e.g. a GRU output of 29 frames),
* every dynamic input axis (and the outputs' batch axis) is symbolic.

Nodes are renamed ``<module path>/<module class>/<node>`` from the exporter's scope metadata, so
TensorRT layer names and fp16 block lists can be matched by module (``memory``, ``GRU``, ...).
"""

from __future__ import annotations

import ast
import logging
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from lipx.errors import LipxError
from lipx.export.artifact import log_artifact
from lipx.export.spec import GraphSpec
from lipx.package import GraphInfo, TensorInfo

log = logging.getLogger(__name__)

_SCOPES = "pkg.torch.onnx.name_scopes"
_CLASSES = "pkg.torch.onnx.class_hierarchy"
_TEMP_OUT = "lipx_output_"
"""Outputs are exported under these names and renamed afterwards: the exporter names internal
values after aten ops, and an output called ``linear`` would otherwise collide with them."""


class ExportFailed(LipxError):
    """torch.onnx.export failed or produced a graph lipx refuses."""


@dataclass
class OnnxFromTorch:
    """Loader: export ``graph`` of ``model`` to an ONNX file in a fresh process.

    Args:
        model: the task model (eval mode); ``graph.wrap(model)`` is exported.
        graph: which graph, with its inputs and outputs.
        example: (batch, frames) of the example input; batch must be >= 2.
        dim_min: least size of each dynamic dim.
        opset: ONNX opset (>= 18 for the dynamo exporter).
    """

    model: nn.Module
    graph: GraphSpec
    example: tuple[int, int]
    dim_min: dict[str, int]
    opset: int = 18
    timeout_s: float = 1800.0

    def __call__(self, path: Path) -> GraphInfo:
        """Export to ``path`` and return the checked graph's facts."""
        return self.finish(self.start(path))

    def start(self, path: Path) -> _Job:
        """Write the job file and launch the exporter process (returns without waiting)."""
        batch, frames = self.example
        if batch < 2:
            raise ValueError("export examples need batch >= 2 (batch 1 gets specialised)")
        path = Path(path)
        workdir = Path(tempfile.mkdtemp(prefix=f".{path.stem}.", dir=path.parent))
        feeds = self.graph.feeds(batch, frames, seed=1)
        job = {
            "module": self.graph.wrap(self.model).eval(),
            "args": tuple(torch.from_numpy(feeds[i.name]) for i in self.graph.inputs),
            "input_names": [i.name for i in self.graph.inputs],
            "output_names": [f"{_TEMP_OUT}{i}" for i in range(len(self.graph.outputs))],
            "dynamic": [i.axes for i in self.graph.inputs],
            "dim_min": self.dim_min,
            "opset": self.opset,
        }
        torch.save(job, workdir / "job.pt")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(os.path.abspath(p) for p in sys.path)}
        proc = subprocess.Popen(
            [sys.executable, "-m", "lipx.export.onnx_export", str(workdir / "job.pt"), str(path)],
            cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        return _Job(self, path, workdir, proc, time.perf_counter())

    def finish(self, job: _Job) -> GraphInfo:
        """Wait for the exporter, then check the file (ExportFailed when refused)."""
        try:
            out, _ = job.proc.communicate(timeout=self.timeout_s)
        except subprocess.TimeoutExpired:
            job.proc.kill()
            job.proc.communicate()
            raise ExportFailed(
                f"exporting {job.path.name} took over {self.timeout_s:.0f} s") from None
        finally:
            for f in job.workdir.iterdir():
                f.unlink()
            job.workdir.rmdir()
        if job.proc.returncode != 0:
            raise ExportFailed(f"torch.onnx.export (dynamo, opset {self.opset}) failed for "
                               f"{job.path.name}: {_last_error(out)}")
        log.debug("exporter output for %s:\n%s", job.path.name, out)
        exporter = f"torch {torch.__version__} dynamo"
        info = finalize_onnx(job.path, self.graph, exporter)
        log_artifact(f"ONNX {self.graph.role} graph", job.path, time.perf_counter() - job.started)
        return info


@dataclass
class _Job:
    loader: OnnxFromTorch
    path: Path
    workdir: Path
    proc: subprocess.Popen
    started: float


def export_graphs(loaders: dict[Path, OnnxFromTorch], jobs: int = 2) -> dict[Path, GraphInfo]:
    """Run several exports, at most ``jobs`` processes at a time. Returns path -> GraphInfo."""
    pending = list(loaders.items())
    running: list[_Job] = []
    done: dict[Path, GraphInfo] = {}
    try:
        while pending or running:
            while pending and len(running) < max(1, jobs):
                path, loader = pending.pop(0)
                running.append(loader.start(path))
            job = running.pop(0)
            done[job.path] = job.loader.finish(job)
    finally:
        for job in running:
            job.proc.kill()
            job.proc.communicate()
    return done


def finalize_onnx(path: Path, graph: GraphSpec, exporter: str) -> GraphInfo:
    """Scope node names, re-infer shapes, check, verify dynamic axes; save and describe ``path``."""
    model = onnx.load(str(path))
    scope_node_names(model)
    if len(model.graph.output) != len(graph.outputs):
        raise ExportFailed(f"{path.name} has {len(model.graph.output)} outputs, expected "
                           f"{len(graph.outputs)} ({', '.join(graph.outputs)})")
    outputs = zip(model.graph.output, graph.outputs, strict=True)
    rename_values(model, {o.name: name for o, name in outputs})
    topological_sort(model.graph)
    exported = [_tensor(o).shape for o in model.graph.output]
    del model.graph.value_info[:]  # shapes specialised to the example
    for out in model.graph.output:  # likewise (e.g. 4 x 29 mel frames); re-inferred below
        out.type.tensor_type.ClearField("shape")
    try:
        model = onnx.shape_inference.infer_shapes(
            model, check_type=True, strict_mode=True, data_prop=True)
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        raise ExportFailed(f"{path.name} fails the ONNX check: {str(e).splitlines()[0]}") from e
    for out, old in zip(model.graph.output, exported, strict=True):
        _name_unknown_dims(out, old)
    info = graph_info(model, graph.role, path.name, exporter)
    check_dynamic(info, graph)
    onnx.save(model, str(path))
    return info


def scope_node_names(model: onnx.ModelProto) -> None:
    """Rename nodes ``<module path>/<module class>/<name>`` from the exporter's metadata."""
    for node in model.graph.node:
        meta = {p.key: p.value for p in node.metadata_props}
        try:
            scopes = ast.literal_eval(meta.get(_SCOPES, "[]"))
            classes = ast.literal_eval(meta.get(_CLASSES, "[]"))
        except (ValueError, SyntaxError):
            continue
        path = scopes[-2] if len(scopes) >= 2 else ""
        owner = classes[-2].rsplit(".", 1)[-1] if len(classes) >= 2 else ""
        if "/" in node.name or path.startswith("_") or owner.startswith("_empty"):
            continue  # already scoped, or exporter-internal (no module)
        if path or owner:
            node.name = f"{path}/{owner}/{node.name}"


def rename_values(model: onnx.ModelProto, renames: dict[str, str]) -> None:
    """Rename graph values ``old -> new``; a value already called ``new`` is moved aside first."""
    graph = model.graph
    used = {v for n in graph.node for v in (*n.input, *n.output)}
    used |= {v.name for v in (*graph.input, *graph.output)} | {i.name for i in graph.initializer}
    mapping = dict(renames)
    for new in renames.values():
        if new in used and new not in renames:
            aside = next(f"{new}_{i}" for i in range(len(used) + 1) if f"{new}_{i}" not in used)
            mapping[new] = aside
    _apply_names(graph, mapping)


def _apply_names(graph: onnx.GraphProto, mapping: dict[str, str]) -> None:
    for node in graph.node:
        node.input[:] = [mapping.get(v, v) for v in node.input]
        node.output[:] = [mapping.get(v, v) for v in node.output]
        for attr in node.attribute:  # subgraphs (Loop, Scan, If) may read outer values
            for sub in (*([attr.g] if attr.HasField("g") else []), *attr.graphs):
                _apply_names(sub, mapping)
    for v in (*graph.output, *graph.value_info):
        v.name = mapping.get(v.name, v.name)


def topological_sort(graph: onnx.GraphProto) -> None:
    """Reorder ``graph.node`` so every node follows the producers of its inputs (in place)."""
    ready = {v.name for v in graph.input} | {i.name for i in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        rest = []
        for node in pending:
            if all(v in ready for v in node.input):
                ordered.append(node)
                ready.update(node.output)
            else:
                rest.append(node)
        if len(rest) == len(pending):
            raise ExportFailed(f"graph has a cycle or undefined inputs at {rest[0].name}")
        pending = rest
    graph.ClearField("node")
    graph.node.extend(ordered)


def graph_info(model: onnx.ModelProto, role: str, file: str, exporter: str,
               precision: str = "fp32") -> GraphInfo:
    """The manifest entry of an ONNX graph: inputs, outputs (symbolic dims by name), opset."""
    inits = {i.name for i in model.graph.initializer}
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    return GraphInfo(
        role=role, file=file, opset=opset, exporter=exporter, precision=precision,
        inputs=tuple(_tensor(v) for v in model.graph.input if v.name not in inits),
        outputs=tuple(_tensor(v) for v in model.graph.output),
    )


def check_dynamic(info: GraphInfo, graph: GraphSpec) -> None:
    """ExportFailed unless every dynamic axis of ``graph`` is symbolic in the exported file."""
    names = [t.name for t in info.inputs]
    if names != [i.name for i in graph.inputs]:
        expected = [i.name for i in graph.inputs]
        raise ExportFailed(f"{info.file}: inputs {names}, expected {expected}")
    for spec, got in zip(graph.inputs, info.inputs, strict=True):
        for axis, dim in spec.axes.items():
            if not isinstance(got.shape[axis], str):
                raise ExportFailed(
                    f"{info.file}: input {spec.name!r} axis {axis} ({dim}) was fixed to "
                    f"{got.shape[axis]} by the exporter, so the graph would only run at that "
                    f"size; refusing it (export in a fresh process from a batch >= 2 example)")
    for out in info.outputs:
        if out.shape and not isinstance(out.shape[0], str):
            raise ExportFailed(f"{info.file}: output {out.name!r} has a fixed batch of "
                               f"{out.shape[0]}; refusing it")


def _name_unknown_dims(out: onnx.ValueInfoProto, exported: tuple[int | str, ...]) -> None:
    """Give inferred-unknown output dims a meaningful name: the exporter's symbolic one where it
    had one (its fixed sizes may be stale), ``batch`` on axis 0 (all lipx outputs are batch-first).
    """
    for axis, dim in enumerate(out.type.tensor_type.shape.dim):
        if dim.HasField("dim_value"):
            continue
        if axis < len(exported) and isinstance(exported[axis], str) and exported[axis]:
            dim.dim_param = exported[axis]
        elif axis == 0:
            dim.dim_param = "batch"


def _tensor(v: onnx.ValueInfoProto) -> TensorInfo:
    t = v.type.tensor_type
    dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(t.elem_type)).name
    shape = tuple(d.dim_param if d.HasField("dim_param") else
                  (d.dim_value if d.HasField("dim_value") else "") for d in t.shape.dim)
    return TensorInfo(v.name, dtype, shape)


def _last_error(output: str) -> str:
    lines = [ln.strip() for ln in output.strip().splitlines() if ln.strip()]
    errors = [ln for ln in lines if "Error" in ln or "error" in ln]
    return (errors or lines or ["no output"])[-1][:500]


def _child(job_file: str, out_file: str) -> None:
    """Exporter process body: load the job, export, exit non-zero on failure."""
    job = torch.load(job_file, weights_only=False)
    dims: dict[str, torch.export.Dim] = {}
    for axes in job["dynamic"]:
        for name in axes.values():
            dims.setdefault(name, torch.export.Dim(name, min=job["dim_min"].get(name, 1)))
    dynamic = tuple({axis: dims[name] for axis, name in axes.items()} for axes in job["dynamic"])
    torch.onnx.export(
        job["module"], job["args"], out_file, dynamo=True, opset_version=job["opset"],
        input_names=job["input_names"], output_names=job["output_names"],
        dynamic_shapes=dynamic, external_data=False, optimize=True,
    )


if __name__ == "__main__":
    _child(sys.argv[1], sys.argv[2])
