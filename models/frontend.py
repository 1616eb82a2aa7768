"""The visual front-end shared by both models: a 3D-conv stem and a ResNet-18 trunk with PReLU.

Input is a mouth clip ``(B, 1, T, H, W)`` float32 (112x112, normalised); output is one feature
vector per frame ``(B, T, C)``. The stem's temporal kernel of 5 (padding 2) is the only place where
frames meet, so frame t depends on frames t-2 .. t+2 and nothing else: the streaming split exports
the front-end on chunks of C+4 frames (see :meth:`VisualFrontend.forward_chunk`).

The two originals differ only in the final pooling of the 4x4 layer-4 map: VCA-GAN averages all 16
cells (``pool="global"``), the lipreading model's ``AvgPool2d(3)`` averages only the top-left 3x3
(``pool="topleft3"``). Both are reproduced exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch
from torch import nn


@dataclass(frozen=True)
class FrontendConfig:
    """Sizes of the visual front-end."""

    widths: tuple[int, int, int, int] = (64, 128, 256, 512)
    """Channels of the stem / ResNet layers 1-4 (the stem has ``widths[0]``)."""
    blocks: tuple[int, int, int, int] = (2, 2, 2, 2)
    """BasicBlocks per ResNet layer (ResNet-18: 2 each)."""
    pool: str = "global"
    """``global`` (mean of the 4x4 map, VCA-GAN) or ``topleft3`` (AvgPool2d(3), lipreading)."""
    dropout: float = 0.3
    """Dropout on the per-frame features (training only)."""

    def __post_init__(self) -> None:
        if self.pool not in ("global", "topleft3"):
            raise ValueError(f"pool must be 'global' or 'topleft3', got {self.pool!r}")
        if len(self.widths) != 4 or len(self.blocks) != 4:
            raise ValueError("widths and blocks need 4 entries (ResNet layers 1-4)")

    @property
    def out_dim(self) -> int:
        return self.widths[-1]

    @classmethod
    def from_dict(cls, d: dict) -> FrontendConfig:
        return cls(**{**d, "widths": tuple(d["widths"]), "blocks": tuple(d["blocks"])})


class BasicBlock(nn.Module):
    """ResNet basic block with per-channel PReLU activations (``act`` may be swapped for ReLU)."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1, prelu: bool = True) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.act1: nn.Module = nn.PReLU(c_out) if prelu else nn.ReLU()
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.act2: nn.Module = nn.PReLU(c_out) if prelu else nn.ReLU()
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act1(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return self.act2(y + self.shortcut(x))


class ResNetTrunk(nn.Module):
    """ResNet layers 1-4 over ``(N, widths[0], 28, 28)`` maps, then the original's average pool."""

    def __init__(self, cfg: FrontendConfig) -> None:
        super().__init__()
        layers = []
        c_in = cfg.widths[0]
        for i, (c_out, n) in enumerate(zip(cfg.widths, cfg.blocks)):
            stride = 1 if i == 0 else 2
            blocks = [BasicBlock(c_in, c_out, stride)]
            blocks += [BasicBlock(c_out, c_out) for _ in range(n - 1)]
            layers.append(nn.Sequential(*blocks))
            c_in = c_out
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.pool = nn.AvgPool2d(4 if cfg.pool == "global" else 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.pool(x).flatten(1)


class VisualFrontend(nn.Module):
    """3D-conv stem + ResNet-18 trunk: ``(B, 1, T, 112, 112)`` -> ``(B, T, C)`` per-frame
    features."""

    def __init__(self, cfg: FrontendConfig) -> None:
        super().__init__()
        c = cfg.widths[0]
        self.stem = nn.Sequential(
            nn.Conv3d(1, c, (5, 7, 7), (1, 2, 2), (2, 3, 3), bias=False),
            nn.BatchNorm3d(c),
            nn.PReLU(c),
            nn.MaxPool3d((1, 3, 3), (1, 2, 2), (0, 1, 1)),
        )
        self.trunk = ResNetTrunk(cfg)
        self.dropout = nn.Dropout(cfg.dropout)
        self.out_dim = cfg.out_dim
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Conv3d)):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def _trunk(self, stem_out: torch.Tensor) -> torch.Tensor:
        b, c, t, h, w = stem_out.shape
        x = stem_out.transpose(1, 2).reshape(b * t, c, h, w)
        return self.dropout(self.trunk(x).reshape(b, t, -1))

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        """Args: video (B, 1, T, H, W) float32. Returns (B, T, C) float32."""
        return self._trunk(self.stem(video))

    def forward_chunk(self, video: torch.Tensor) -> torch.Tensor:
        """Features of the inner frames of a chunk, for streaming.

        Args:
            video: (B, 1, C+4, H, W) float32: C frames plus 2 frames of context on each side.
        Returns:
            (B, C, D) float32, equal to what :meth:`forward` gives those C frames inside any longer
            clip that contains the whole chunk.
        """
        stem = cast(nn.Conv3d, self.stem[0])
        x = nn.functional.conv3d(video, stem.weight, None, stem.stride, (0, 3, 3))
        for layer in cast(nn.Sequential, self.stem[1:]):
            x = layer(x)
        return self._trunk(x)
