"""The PyTorch reference engine: runs a module behind the same Runner interface as the others.

Like Polygraphy's ``PytRunner``, it takes its input and output names (and their metadata) from
the manifest's :class:`~lipx.package.GraphInfo`, so a torch module and the ONNX graph exported
from it are fed the same dict and compared output by output.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

import numpy as np
import torch
from torch import nn

from lipx.errors import InputError
from lipx.package import GraphInfo, TensorInfo
from lipx.runtime.runner import Runner


class TorchRunner(Runner):
    """Runs ``module(*inputs)`` in inference mode and returns numpy outputs.

    Args:
        module: an ``nn.Module`` or a callable returning one (built on activation).
        graph: names and metadata of the inputs (positional order) and outputs.
        device: ``cpu`` or ``cuda[:N]``.
        name: for messages and reports.
    """

    def __init__(
        self, module: nn.Module | Callable[[], nn.Module], graph: GraphInfo, device: str = "cpu",
        name: str | None = None,
    ) -> None:
        super().__init__(name or f"torch {graph.role}")
        self.module_source = module
        self.graph = graph
        self.device = torch.device(device)
        self.module: nn.Module | None = None

    def _activate(self) -> None:
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise InputError(f"{self.name}: device {self.device} requested but no CUDA GPU found")
        src = self.module_source
        module = src if isinstance(src, nn.Module) else src()
        self.module = module.eval().to(self.device)

    def _deactivate(self) -> None:
        self.module = None

    def _input_metadata(self) -> dict[str, TensorInfo]:
        return {t.name: t for t in self.graph.inputs}

    def _output_metadata(self) -> dict[str, TensorInfo]:
        return {t.name: t for t in self.graph.outputs}

    def _infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        assert self.module is not None
        args = [torch.from_numpy(np.ascontiguousarray(feeds[t.name])).to(self.device)
                for t in self.graph.inputs]
        sync = torch.cuda.synchronize if self.device.type == "cuda" else (lambda: None)
        with torch.inference_mode():
            sync()
            start = time.perf_counter()
            out = self.module(*args)
            sync()
            self.last_latency_s = time.perf_counter() - start
        outs = (out,) if isinstance(out, torch.Tensor) else tuple(out)
        names = [t.name for t in self.graph.outputs]
        if len(outs) != len(names):
            raise RuntimeError(f"{self.name}: module returned {len(outs)} outputs, the graph "
                               f"has {len(names)} ({', '.join(names)})")
        return {n: o.detach().float().cpu().numpy() for n, o in zip(names, outs, strict=True)}
