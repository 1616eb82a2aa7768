"""The exporter's parity check: every artifact against its PyTorch module.

:func:`check_artifacts` runs each graph against its PyTorch module, and the split pipeline
against the whole model, at several batch sizes and lengths, including ones other than the
export example, through :func:`lipx.parity.compare`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from torch import nn

from lipx.export.spec import ExportSpec
from lipx.export.split import SplitPipeline
from lipx.export.torch_runner import TorchRunner
from lipx.package import GraphInfo, ParityRecord
from lipx.parity import Comparison, compare
from lipx.runtime.runner import Runner
from lipx.tasks import CONTEXT, Tolerance

log = logging.getLogger(__name__)


def parity_cases(role: str, window: int, stride: int, min_frames: int,
                 max_batch: int) -> list[tuple[int, int]]:
    """(batch, input frames) sets for a graph: the streaming shapes plus other batches and lengths.

    The export example is (2, window) (front-end: (2, stride + 4)); these add batch 1 and 3 and
    lengths other than it, all within the TensorRT profiles (backend <= window frames).
    """
    short = max(min_frames, window // 2)
    by_role = {
        "model": [(1, window), (3, window + 5), (2, short)],
        "frontend": [(1, stride + 2 * CONTEXT), (3, window + 2 * CONTEXT), (2, 1 + 2 * CONTEXT)],
        "backend": [(1, window), (3, window), (2, short)],
        "split": [(1, window), (3, short)],
    }
    return [(min(b, max_batch), t) for b, t in by_role[role]]


def check_artifacts(
    model: nn.Module, spec: ExportSpec, reference_graphs: Mapping[str, GraphInfo],
    artifacts: Mapping[str, Runner], tolerance: Tolerance, window: int, stride: int,
    max_batch: int,
) -> Comparison:
    """Compare exported artifacts with the PyTorch model.

    Args:
        model: the task model (eval mode).
        spec: its export spec.
        reference_graphs: role -> fp32 GraphInfo (names and metadata for the torch reference).
        artifacts: role -> runner of that role's artifact (ONNX graph, converted graph, plan).
        tolerance, window, stride, max_batch: as in the export options.
    Returns:
        Records for each artifact, and for the split pipeline when both halves are given.
    """
    facts = spec.task_spec
    records: list[ParityRecord] = []
    for role, runner in artifacts.items():
        graph = spec.graphs[role]
        torch_runner = TorchRunner(graph.wrap(model), reference_graphs[role])
        cases = parity_cases(role, window, stride, facts.min_frames, max_batch)
        feeds = [graph.feeds(b, t, seed=10 + i) for i, (b, t) in enumerate(cases)]
        top1 = facts.top1_output if role != "frontend" else None
        records += compare({"torch": torch_runner, runner.name: runner}, feeds, "torch",
                           tolerance, top1).records
    if "frontend" in artifacts and "backend" in artifacts:
        split = SplitPipeline(artifacts["frontend"], artifacts["backend"], chunk=stride,
                              name=f"{artifacts['frontend'].name}+{artifacts['backend'].name}")
        whole = spec.graphs["model"]
        reference = TorchRunner(whole.wrap(model), reference_graphs["model"])
        cases = parity_cases("split", window, stride, facts.min_frames, max_batch)
        feeds = [whole.feeds(b, t, seed=20 + i) for i, (b, t) in enumerate(cases)]
        records += compare({"torch": reference, split.name: split}, feeds, "torch", tolerance,
                           facts.top1_output).records
    result = Comparison(tuple(records))
    log.info("parity:\n%s", result.report())
    return result
