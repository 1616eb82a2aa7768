"""VCA-GAN's postnet: the 80-bin normalised mel -> the linear magnitude spectrogram.

A 1-D convolutional net along time (receptive field about 31 mel frames): a k7 convolution with
batch norm, three residual blocks without normalisation, and a 1x1 projection to the STFT bins.
There is no output activation, so values may be slightly negative.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from lipx.models.generator import LRELU_SLOPE


class ResBlock1d(nn.Module):
    """LReLU -> conv k5 (width kept) -> LReLU -> conv k5 (to c_out), plus a shortcut; sum / sqrt 2.

    The shortcut is a 1x1 convolution without bias when the width changes, else the identity.
    """

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(c_in, c_in, 5, 1, 2)
        self.conv2 = nn.Conv1d(c_in, c_out, 5, 1, 2)
        self.shortcut: nn.Module = (
            nn.Conv1d(c_in, c_out, 1, bias=False) if c_in != c_out else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x (B, C_in, L). Returns (B, C_out, L)."""
        y = self.conv1(F.leaky_relu(x, LRELU_SLOPE))
        y = self.conv2(F.leaky_relu(y, LRELU_SLOPE))
        return (y + self.shortcut(x)) / math.sqrt(2.0)


class Postnet(nn.Module):
    """``(B, 1, n_mels, L)`` normalised mel -> ``(B, 1, n_linear, L)`` linear magnitude."""

    def __init__(
        self, n_mels: int = 80, n_linear: int = 321, widths: tuple[int, int] = (128, 256),
        blocks: int = 3,
    ) -> None:
        """Args:
            n_mels: mel bins of the input.
            n_linear: STFT bins of the output (n_fft / 2 + 1).
            widths: channels of the input convolution and of the residual blocks.
            blocks: residual blocks (the first one widens ``widths[0]`` to ``widths[1]``).
        """
        super().__init__()
        c0, c1 = widths
        self.conv_in = nn.Conv1d(n_mels, c0, 7, 1, 3)
        self.norm_in = nn.BatchNorm1d(c0)
        self.blocks = nn.Sequential(*(ResBlock1d(c0 if i == 0 else c1, c1) for i in range(blocks)))
        self.conv_out = nn.Conv1d(c1, n_linear, 1, bias=False)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        """Args: mel (B, 1, n_mels, L) float32. Returns (B, 1, n_linear, L) float32."""
        x = F.leaky_relu(self.norm_in(self.conv_in(mel.squeeze(1))), LRELU_SLOPE)
        return self.conv_out(self.blocks(x)).unsqueeze(1)
