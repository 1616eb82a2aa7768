"""Tiny models with the export contract of the real ones, for fast export tests.

They share the real models' method contract (``frame_features``, ``frame_features_chunk``,
``window``, ``forward``, ``config``) and their export-sensitive parts: a 3D-conv stem with a
temporal kernel of 5, BatchNorm, a softmax memory addressing, a bidirectional GRU, attention and
time upsampling. Seeded, so every build gives the same weights.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from lipx.package import Manifest


@dataclass(frozen=True)
class ToyConfig:
    feature_dim: int = 16
    min_frames: int = 1
    noise_dim: int = 3
    classes: int = 7
    slots: int = 6


class _Front(nn.Module):
    """(B, 1, T, 112, 112) -> (B, T, D); frame t sees frames t-2 .. t+2."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.conv = nn.Conv3d(1, 4, (5, 7, 7), (1, 4, 4), (2, 3, 3), bias=False)
        self.bn = nn.BatchNorm3d(4)
        self.act = nn.PReLU(4)
        self.pool = nn.AvgPool2d(7)
        self.proj = nn.Linear(4 * 4 * 4, d)

    def _trunk(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.bn(x))
        b, c, t, h, w = x.shape
        x = self.pool(x.transpose(1, 2).reshape(b * t, c, h, w))
        return self.proj(x.flatten(1)).reshape(b, t, -1)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        return self._trunk(self.conv(video))

    def chunk(self, video: torch.Tensor) -> torch.Tensor:
        x = nn.functional.conv3d(video, self.conv.weight, None, self.conv.stride, (0, 3, 3))
        return self._trunk(x)


class _Memory(nn.Module):
    """Per-frame key-value memory read (softmax over cosine addressing) and fusion."""

    def __init__(self, d: int, slots: int) -> None:
        super().__init__()
        self.keys = nn.Parameter(torch.randn(slots, d))
        self.values = nn.Parameter(torch.randn(slots, d))
        self.fuse = nn.Linear(2 * d, d)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        k = nn.functional.normalize(self.keys, dim=-1)
        q = nn.functional.normalize(f, dim=-1)
        address = torch.softmax(16.0 * q @ k.t(), dim=-1)
        return self.fuse(torch.cat([f, address @ self.values], dim=-1))


class ToyLipreading(nn.Module):
    """Front-end + memory (per frame) and a Bi-GRU window backend -> (B, classes) logits."""

    def __init__(self, config: ToyConfig | None = None, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.config = config or ToyConfig()
        d = self.config.feature_dim
        self.front = _Front(d)
        self.memory = _Memory(d, self.config.slots)
        self.gru = nn.GRU(d, d, batch_first=True, bidirectional=True)
        self.head = nn.Linear(2 * d, self.config.classes)
        self.eval()

    def frame_features(self, video: torch.Tensor) -> torch.Tensor:
        return self.memory(self.front(video))

    def frame_features_chunk(self, video: torch.Tensor) -> torch.Tensor:
        return self.memory(self.front.chunk(video))

    def window(self, features: torch.Tensor) -> torch.Tensor:
        y, _ = self.gru(features)
        return self.head(y.mean(dim=1))

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        return self.window(self.frame_features(video))


class ToyLip2Speech(nn.Module):
    """Front-end (per frame) and a Bi-GRU + attention + upsampling generator -> (mel, linear)."""

    def __init__(self, config: ToyConfig | None = None, seed: int = 1) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.config = config or ToyConfig()
        d, nd = self.config.feature_dim, self.config.noise_dim
        self.front = _Front(d)
        self.gru = nn.GRU(d, d, batch_first=True, bidirectional=True)
        self.query = nn.Linear(2 * d, d)
        self.noise = nn.Conv1d(nd * 20, d, 1)
        self.mel = nn.Conv1d(3 * d, 80, 5, padding=2)
        self.post = nn.Conv1d(80, 321, 5, padding=2)
        self.eval()

    def frame_features(self, video: torch.Tensor) -> torch.Tensor:
        return self.front(video)

    def frame_features_chunk(self, video: torch.Tensor) -> torch.Tensor:
        return self.front.chunk(video)

    def window(
        self, features: torch.Tensor, noise: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        b, t, _ = features.shape
        y, _ = self.gru(features)
        q = self.query(y)
        scores = q @ features.transpose(1, 2) / q.shape[-1] ** 0.5
        if lengths is not None:
            pad = torch.arange(t, device=features.device)[None, :] >= lengths[:, None]
            scores = scores.masked_fill(pad[:, None, :], -1e4)
        context = torch.softmax(scores, dim=-1) @ features
        z = self.noise(noise.reshape(b, -1, t)).transpose(1, 2)
        h = torch.cat([y, context + z], dim=-1)
        h = nn.functional.interpolate(h.transpose(1, 2), scale_factor=4, mode="nearest")
        mel = torch.tanh(self.mel(h))
        linear = self.post(mel)
        return mel.unsqueeze(1), linear.unsqueeze(1)

    def forward(
        self, video: torch.Tensor, noise: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.window(self.frame_features(video), noise, lengths)


def fake_onnx_stage(package: Path):
    """Stands in for the (slow) ONNX stage of an export (``lipx.export.api._onnx_package``):
    copies a finished package's files into the work dir and returns its manifest."""

    def stage(source, spec, sched, opts, work, say):
        for f in package.iterdir():
            if f.is_file() and f.name != "manifest.json":
                shutil.copy(f, work / f.name)
        return Manifest.read(package)

    return stage
