"""A Triton Inference Server model repository for a package (``--format triton``).

Layout (``<name>`` is the package's model name)::

    triton/<name>_model/config.pbtxt + 1/model.onnx|model.plan     whole model, frames -> outputs
    triton/<name>_frontend/...                                     chunk of C+4 frames -> features
    triton/<name>_backend/...                                      window of features -> outputs
    triton/<name>/config.pbtxt                                     ensemble: frontend -> backend

Each graph model batches dynamically (requests of equal shape are merged up to ``max_batch``),
runs ``instances`` copies on GPU or CPU, and uses the ONNX Runtime backend (with the TensorRT
accelerator on GPUs) or, for ``--engine trt``, the TensorRT plans. The ensemble takes a window of
W+4 frames (W frames plus 2 of context each side) and returns the window's outputs.

:func:`validate_repository` re-reads the written configs and checks names, shapes and files
against the manifest (what can be checked without a Triton server).
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lipx.errors import ManifestError
from lipx.export.artifact import artifact
from lipx.package import GraphInfo, Manifest, Package, TensorInfo
from lipx.runtime.backends import BACKENDS
from lipx.runtime.package_runners import PackageArtifacts
from lipx.runtime.triton_runner import triton_model_name

_TYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "int64": "TYPE_INT64",
          "int32": "TYPE_INT32", "bool": "TYPE_BOOL", "uint8": "TYPE_UINT8"}
ROLES = ("frontend", "backend", "model")


@dataclass(frozen=True)
class TritonSettings:
    """How the repository serves the package."""

    engine: str = "onnx"
    """``onnx`` (ONNX Runtime backend) or ``trt`` (TensorRT plans)."""
    precision: str = "fp32"
    """Which graphs to serve (``fp32``/``fp16``/``int8``); for ``trt``, the plans' precision."""
    max_batch: int = 8
    instances: int = 1
    kind: str = "gpu"
    """``gpu`` or ``cpu`` instance groups."""
    queue_delay_us: int = 100
    """Longest wait to fill a dynamic batch."""
    workspace_mb: int = 2048


def _tensor(t: TensorInfo, drop_batch: bool = True) -> str:
    dims = [d if isinstance(d, int) else -1 for d in t.shape[1 if drop_batch else 0:]]
    return (f'  {{\n    name: "{t.name}"\n    data_type: {_TYPES[t.dtype]}\n'
            f'    dims: [ {", ".join(str(d) for d in dims)} ]\n  }}')


def _io(inputs: tuple[TensorInfo, ...], outputs: tuple[TensorInfo, ...]) -> str:
    sep = ",\n"
    return (f"input [\n{sep.join(_tensor(t) for t in inputs)}\n]\n"
            f"output [\n{sep.join(_tensor(t) for t in outputs)}\n]\n")


def _graph(manifest: Manifest, role: str, settings: TritonSettings) -> GraphInfo:
    """The graph whose inputs and outputs the served artifact has (a plan's: its source's)."""
    if BACKENDS[settings.engine].plans:
        return manifest.graph(role)
    return manifest.graph(role, settings.precision)


def _file(settings: TritonSettings) -> str:
    """The artifact's name in a Triton model version folder."""
    return "model" + BACKENDS[settings.engine].suffix


def graph_config(manifest: Manifest, role: str, settings: TritonSettings) -> str:
    """config.pbtxt of one graph."""
    info, graph = BACKENDS[settings.engine], _graph(manifest, role, settings)
    kind = "KIND_GPU" if settings.kind == "gpu" else "KIND_CPU"
    text = (f'name: "{triton_model_name(manifest, role)}"\nbackend: "{info.triton_backend}"\n'
            f"max_batch_size: {settings.max_batch}\n{_io(graph.inputs, graph.outputs)}"
            f"instance_group [\n  {{\n    count: {settings.instances}\n    kind: {kind}\n  }}\n]\n"
            f"dynamic_batching {{\n  max_queue_delay_microseconds: {settings.queue_delay_us}\n}}\n")
    if not info.plans and settings.kind == "gpu":  # graphs on a GPU: TensorRT accelerates them
        mode = "FP16" if settings.precision == "fp16" else "FP32"
        text += (
            "optimization {\n  execution_accelerators {\n    gpu_execution_accelerator : [ {\n"
            '      name : "tensorrt"\n'
            f'      parameters {{ key: "precision_mode" value: "{mode}" }}\n'
            f'      parameters {{ key: "max_workspace_size_bytes" value: '
            f'"{settings.workspace_mb << 20}" }}\n    }} ]\n  }}\n}}\n')
    return text


def ensemble_config(manifest: Manifest, settings: TritonSettings) -> str:
    """config.pbtxt of the ensemble: video window (+ noise) -> frontend -> backend -> outputs."""
    front, back = manifest.graph("frontend"), manifest.graph("backend")
    whole = manifest.graph("model")
    features = back.inputs[0].name
    extra = list(back.inputs[1:])
    video = front.inputs[0]

    def step(name: str, inputs: list[str], outputs: list[str]) -> str:
        maps = "".join(f'      input_map {{ key: "{n}" value: "{n}" }}\n' for n in inputs)
        maps += "".join(f'      output_map {{ key: "{n}" value: "{n}" }}\n' for n in outputs)
        return f'    {{\n      model_name: "{name}"\n      model_version: -1\n{maps}    }}'

    steps = [
        step(triton_model_name(manifest, "frontend"), [video.name], [front.outputs[0].name]),
        step(triton_model_name(manifest, "backend"), [features, *(t.name for t in extra)],
             [t.name for t in back.outputs]),
    ]
    return (f'name: "{triton_model_name(manifest)}"\nplatform: "ensemble"\n'
            f"max_batch_size: {settings.max_batch}\n{_io((video, *extra), whole.outputs)}"
            "ensemble_scheduling {\n  step [\n" + ",\n".join(steps) + "\n  ]\n}\n")


@artifact("Triton model repository")
def write_repository(manifest: Manifest, package: Path, path: Path,
                     settings: TritonSettings) -> list[str]:
    """Write the repository for ``manifest`` (files in ``package``) to ``path``.

    Returns:
        The Triton model names written (graphs, then the ensemble).
    """
    names = []
    for role in ROLES:
        name = triton_model_name(manifest, role)
        version = path / name / "1"
        version.mkdir(parents=True)
        src, _ = PackageArtifacts(Package(package, manifest)).get(settings.engine, role,
                                                                  settings.precision)
        shutil.copyfile(src, version / _file(settings))
        (path / name / "config.pbtxt").write_text(graph_config(manifest, role, settings))
        names.append(name)
    ensemble = path / triton_model_name(manifest)
    (ensemble / "1").mkdir(parents=True)
    (ensemble / "config.pbtxt").write_text(ensemble_config(manifest, settings))
    return [*names, triton_model_name(manifest)]


# -- validation -------------------------------------------------------------------------------
_TOKEN = re.compile(r'\s*(?:([A-Za-z_][A-Za-z0-9_]*)|(-?\d+(?:\.\d+)?)|"((?:[^"\\]|\\.)*)"|'
                    r"([{}\[\]:,]))")


def parse_pbtxt(text: str) -> dict[str, list[Any]]:
    """Parse protobuf text format into ``{field: [values]}`` (messages are nested dicts)."""
    tokens = []
    pos = 0
    text = re.sub(r"#[^\n]*", "", text)
    while pos < len(text.rstrip()):
        m = _TOKEN.match(text, pos)
        if not m:
            raise ManifestError(f"config.pbtxt: cannot parse near {text[pos:pos + 30]!r}")
        ident, num, string, punct = m.groups()
        tokens.append(("id", ident) if ident else ("num", float(num) if "." in num else int(num))
                      if num else ("str", string) if string is not None else ("p", punct))
        pos = m.end()
    message, end = _message(tokens, 0)
    if end != len(tokens):
        raise ManifestError("config.pbtxt: unbalanced braces")
    return message


def _message(tokens: list[tuple[str, Any]], i: int) -> tuple[dict[str, list[Any]], int]:
    out: dict[str, list[Any]] = {}
    while i < len(tokens) and tokens[i] != ("p", "}"):
        kind, name = tokens[i]
        if kind != "id":
            raise ManifestError(f"config.pbtxt: expected a field name, got {name!r}")
        i += 1
        if tokens[i] == ("p", ":"):
            i += 1
        values, i = _value(tokens, i)
        out.setdefault(name, []).extend(values)
    return out, i


def _value(tokens: list[tuple[str, Any]], i: int) -> tuple[list[Any], int]:
    kind, tok = tokens[i]
    if (kind, tok) == ("p", "{"):
        msg, i = _message(tokens, i + 1)
        return [msg], i + 1
    if (kind, tok) == ("p", "["):
        items: list[Any] = []
        i += 1
        while tokens[i] != ("p", "]"):
            if tokens[i] == ("p", ","):
                i += 1
                continue
            vals, i = _value(tokens, i)
            items.extend(vals)
        return ([items] if items and not isinstance(items[0], dict) else items), i + 1
    return [tok], i + 1


def validate_repository(path: Path, manifest: Manifest, settings: TritonSettings) -> list[str]:
    """Problems found in the repository at ``path`` (empty when it matches the manifest)."""
    problems = []
    for role in ROLES:
        name = triton_model_name(manifest, role)
        graph, file = _graph(manifest, role, settings), _file(settings)
        if not (path / name / "1" / file).is_file():
            problems.append(f"{name}: missing 1/{file}")
        problems += _check_config(path / name / "config.pbtxt", name, graph, settings)
    problems += _check_ensemble(path, manifest)
    return problems


def _check_config(file: Path, name: str, graph: GraphInfo, settings: TritonSettings) -> list[str]:
    if not file.is_file():
        return [f"{name}: missing config.pbtxt"]
    cfg = parse_pbtxt(file.read_text())
    problems = []
    if cfg.get("name") != [name]:
        problems.append(f"{name}: config name {cfg.get('name')} differs from the directory")
    if cfg.get("max_batch_size") != [settings.max_batch]:
        problems.append(f"{name}: max_batch_size {cfg.get('max_batch_size')}, expected "
                        f"{settings.max_batch}")
    for key, tensors in (("input", graph.inputs), ("output", graph.outputs)):
        got = {t["name"][0]: t.get("dims", [[]])[0] for t in cfg.get(key, [])}
        want = {t.name: [d if isinstance(d, int) else -1 for d in t.shape[1:]] for t in tensors}
        if got != want:
            problems.append(f"{name}: {key}s {got} do not match the manifest {want}")
    return problems


def _check_ensemble(path: Path, manifest: Manifest) -> list[str]:
    name = triton_model_name(manifest)
    file = path / name / "config.pbtxt"
    if not file.is_file():
        return [f"{name}: missing config.pbtxt"]
    cfg = parse_pbtxt(file.read_text())
    problems = []
    for step in cfg.get("ensemble_scheduling", [{}])[0].get("step", []):
        target = step["model_name"][0]
        role = target.removeprefix(f"{name}_")
        if role not in ROLES:
            problems.append(f"{name}: step uses unknown model {target}")
            continue
        graph = manifest.graph(role)
        for key, tensors in (("input_map", graph.inputs), ("output_map", graph.outputs)):
            keys = {m["key"][0] for m in step.get(key, [])}
            if keys != {t.name for t in tensors}:
                problems.append(f"{name}: step {target} {key} {sorted(keys)} does not match "
                                f"{sorted(t.name for t in tensors)}")
    return problems
