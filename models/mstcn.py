"""The multi-branch multi-scale temporal convolutional backend (MS-TCN) of the lipreading model.

A stack of levels over per-frame features ``(B, T, D)``. Each level has two multi-branch
convolution layers; a multi-branch layer runs one dilated Conv1d per kernel size (3, 5, 7 in the
original) side by side and concatenates their outputs, so a level of width 768 has three branches
of 256. Level ``i`` uses dilation ``dilations[i]`` (1, 2, 4, 8). A 1x1 convolution maps the
level's input onto its output for the residual sum, followed by a PReLU. The network is
non-causal; a mean over time and a linear layer give the logits.

Each branch is Conv1d -> BatchNorm1d -> symmetric chomp -> PReLU, as in the original: the
convolution pads ``(k-1)*d`` frames on *both* sides, which lengthens the sequence by ``(k-1)*d``,
and the chomp cuts half of that from each end. The result is aligned like a centred ("same")
convolution; the order matters only for batch statistics in training, where the batch norm also
sees the extra edge frames, exactly as the original does.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class MSTCNConfig:
    """Sizes of the MS-TCN backend."""

    widths: tuple[int, ...] = (768, 768, 768, 768)
    """Output channels of each level (split evenly over the kernel sizes)."""
    kernel_sizes: tuple[int, ...] = (3, 5, 7)
    """One branch per kernel size (odd sizes)."""
    dilations: tuple[int, ...] = (1, 2, 4, 8)
    """Dilation of each level (one per entry of ``widths``)."""
    dropout: float = 0.2
    """Dropout after each multi-branch layer (training only)."""

    def __post_init__(self) -> None:
        if len(self.dilations) != len(self.widths) or not self.widths:
            raise ValueError(
                f"MS-TCN needs one dilation per level: widths {self.widths}, "
                f"dilations {self.dilations}"
            )
        branches = len(self.kernel_sizes)
        if any(w % branches for w in self.widths):
            raise ValueError(
                f"MS-TCN level widths {self.widths} must divide by the {branches} kernel sizes"
            )
        if any(k % 2 == 0 for k in self.kernel_sizes):
            raise ValueError(f"MS-TCN kernel sizes must be odd, got {self.kernel_sizes}")

    @property
    def out_dim(self) -> int:
        return self.widths[-1]

    @classmethod
    def from_dict(cls, d: dict) -> MSTCNConfig:
        return cls(**{**d, **{k: tuple(d[k]) for k in ("widths", "kernel_sizes", "dilations")
                              if k in d}})


class ConvBranch(nn.Module):
    """Conv1d -> BatchNorm1d -> symmetric chomp -> PReLU; keeps the length T."""

    def __init__(self, c_in: int, c_out: int, kernel: int, dilation: int) -> None:
        super().__init__()
        self.pad = (kernel - 1) * dilation
        self.conv = nn.Conv1d(c_in, c_out, kernel, padding=self.pad, dilation=dilation)
        self.bn = nn.BatchNorm1d(c_out)
        self.act = nn.PReLU(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x (B, C_in, T). Returns (B, C_out, T)."""
        y = self.bn(self.conv(x))  # (B, C_out, T + pad)
        half = self.pad // 2
        return self.act(y[:, :, half:-half] if half else y)


class MultiBranchLayer(nn.Module):
    """One branch per kernel size, concatenated over channels, then dropout."""

    def __init__(
        self, c_in: int, c_out: int, kernels: tuple[int, ...], dilation: int, dropout: float
    ) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            ConvBranch(c_in, c_out // len(kernels), k, dilation) for k in kernels
        )
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x (B, C_in, T). Returns (B, C_out, T)."""
        return self.dropout(torch.cat([b(x) for b in self.branches], dim=1))


class MSTCNLevel(nn.Module):
    """Two multi-branch layers plus a 1x1-conv residual, then PReLU."""

    def __init__(self, c_in: int, c_out: int, cfg: MSTCNConfig, dilation: int) -> None:
        super().__init__()
        k = cfg.kernel_sizes
        self.layer0 = MultiBranchLayer(c_in, c_out, k, dilation, cfg.dropout)
        self.layer1 = MultiBranchLayer(c_out, c_out, k, dilation, cfg.dropout)
        self.residual = nn.Conv1d(c_in, c_out, 1)
        self.act = nn.PReLU(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x (B, C_in, T). Returns (B, C_out, T)."""
        return self.act(self.layer1(self.layer0(x)) + self.residual(x))


class MSTCNBackend(nn.Module):
    """Per-frame features ``(B, T, D)`` -> logits ``(B, num_classes)``."""

    def __init__(self, in_dim: int, num_classes: int, cfg: MSTCNConfig) -> None:
        super().__init__()
        c_ins = (in_dim, *cfg.widths[:-1])
        self.levels = nn.ModuleList(
            MSTCNLevel(c_in, c_out, cfg, d)
            for c_in, c_out, d in zip(c_ins, cfg.widths, cfg.dilations)
        )
        self.fc = nn.Linear(cfg.out_dim, num_classes)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Args: features (B, T, D) float32. Returns (B, num_classes) float32 logits."""
        x = features.transpose(1, 2)
        for level in self.levels:
            x = level(x)
        return self.fc(x.mean(dim=2))


def rename_original(key: str) -> str:
    """Map an original MS-TCN backend key onto :class:`MSTCNBackend`'s names.

    ``tcn.mb_ms_tcn.network.N.cbcrI_J.{conv,batchnorm,non_lin}.*`` ->
    ``levels.N.layerI.branches.J.{conv,bn,act}.*``; ``network.N.downsample`` ->
    ``levels.N.residual``; ``network.N.relu_final`` -> ``levels.N.act``;
    ``tcn.tcn_output`` -> ``fc``. Keys that fit none of these come back unchanged.
    """
    if key.startswith("tcn.tcn_output."):
        return "fc." + key[len("tcn.tcn_output."):]
    prefix = "tcn.mb_ms_tcn.network."
    if not key.startswith(prefix):
        return key
    level, module, rest = key[len(prefix):].split(".", 2)
    if module == "downsample":
        return f"levels.{level}.residual.{rest}"
    if module == "relu_final":
        return f"levels.{level}.act.{rest}"
    if module.startswith("cbcr") and "_" in module:
        layer, branch = module[len("cbcr"):].split("_", 1)
        sub, leaf = rest.split(".", 1)
        sub = {"conv": "conv", "batchnorm": "bn", "non_lin": "act"}.get(sub, sub)
        return f"levels.{level}.layer{layer}.branches.{branch}.{sub}.{leaf}"
    return key
