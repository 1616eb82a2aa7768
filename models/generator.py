"""VCA-GAN's generator: per-frame visual features + noise -> mel spectrograms at three scales.

The per-frame features ``(B, T, D)`` are repeated along ``rows`` frequency rows (20 for an 80-bin
mel), concatenated with noise and refined by residual blocks at 20 x T. Two upsampling stages
reach 40 x 2T and 80 x 4T; before each, *visual context attention* lets every time step of the
coarse speech map attend over the sentence features of the whole clip. Each scale ends in a
1-channel tanh head, giving normalised mels of ``rows``, ``2 rows`` and ``4 rows`` bins.

The noise is an explicit input (the original draws it inside its forward pass), so the graph is
deterministic and exportable.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

#: Slope of every LeakyReLU in the generator, postnet and discriminators.
LRELU_SLOPE = 0.2
#: Score given to masked attention positions: large enough to vanish in the softmax, and finite so
#: that FP16 engines do not produce NaNs.
MASK_SCORE = -1e4


class GenResBlock(nn.Module):
    """Pre-activation residual block with batch norm and optional nearest x2 upsampling.

    Residual: BN -> LReLU -> [up x2] -> conv5x5 -> BN -> LReLU -> conv5x5.
    Shortcut: [up x2] -> [1x1 conv without bias when the width changes]. Output: sum / sqrt(2).
    """

    def __init__(self, c_in: int, c_out: int, upsample: bool = False) -> None:
        super().__init__()
        self.upsample = upsample
        self.norm1 = nn.BatchNorm2d(c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 5, 1, 2)
        self.norm2 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 5, 1, 2)
        self.shortcut: nn.Module = (
            nn.Conv2d(c_in, c_out, 1, bias=False) if c_in != c_out else nn.Identity()
        )

    def _up(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=2.0, mode="nearest") if self.upsample else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x (B, C_in, F, T). Returns (B, C_out, F, T); (B, C_out, 2F, 2T) if upsampling."""
        y = self._up(F.leaky_relu(self.norm1(x), LRELU_SLOPE))
        y = self.conv2(F.leaky_relu(self.norm2(self.conv1(y)), LRELU_SLOPE))
        return (y + self.shortcut(self._up(x))) / math.sqrt(2.0)


class VisualContextAttention(nn.Module):
    """Each time step of a speech feature map attends over the sentence features of the clip.

    The map ``(B, C, F, T')`` is flattened per time step to ``C*F`` values (channel-major) as the
    query; keys and values come from the sentence features ``(B, S, D)``. The attended values are
    projected to ``F * c_out`` and laid out as a ``(B, c_out, F, T')`` map.
    """

    def __init__(
        self, query_dim: int, context_dim: int, att_dim: int, rows: int, c_out: int
    ) -> None:
        super().__init__()
        self.rows, self.c_out, self.att_dim = rows, c_out, att_dim
        self.q = nn.Linear(query_dim, att_dim)
        self.k = nn.Linear(context_dim, att_dim)
        self.v = nn.Linear(context_dim, att_dim)
        self.out = nn.Linear(att_dim, rows * c_out)

    def forward(
        self, context: torch.Tensor, g: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Attend from the speech map over the sentence features.

        Args:
            context: (B, S, D) float32 sentence features, S = video frames.
            g: (B, C, F, T') float32 speech feature map, C*F == query_dim, F == rows.
            lengths: (B,) int64 valid video frames per sample; key positions >= length are
                ignored. None: all S positions are valid.
        Returns:
            (B, c_out, F, T') float32.
        """
        b, c, f, t = g.shape
        query = self.q(g.reshape(b, c * f, t).transpose(1, 2))  # (B, T', A)
        scores = torch.bmm(query, self.k(context).transpose(1, 2)) / math.sqrt(self.att_dim)
        if lengths is not None:
            positions = torch.arange(context.shape[1], device=context.device)
            invalid = positions.unsqueeze(0) >= lengths.to(context.device).unsqueeze(1)  # (B, S)
            scores = scores.masked_fill(invalid.unsqueeze(1), MASK_SCORE)
        weights = torch.softmax(scores, dim=2)  # (B, T', S)
        out = self.out(torch.bmm(weights, self.v(context)))  # (B, T', F*c_out)
        return out.reshape(b, t, f, self.c_out).permute(0, 3, 2, 1)


def _stage(widths: list[int], upsample_first: bool) -> nn.ModuleList:
    """Residual blocks widths[0] -> widths[1] -> ... (the first one may upsample)."""
    return nn.ModuleList(
        GenResBlock(c_in, c_out, upsample=upsample_first and i == 0)
        for i, (c_in, c_out) in enumerate(zip(widths[:-1], widths[1:]))
    )


def _to_mel(c: int) -> nn.Sequential:
    """BN -> LReLU -> 1x1 conv to one channel -> tanh."""
    return nn.Sequential(
        nn.BatchNorm2d(c), nn.LeakyReLU(LRELU_SLOPE), nn.Conv2d(c, 1, 1), nn.Tanh()
    )


class Generator(nn.Module):
    """The three-scale generator with visual context attention (VCA-GAN's ``Decoder``)."""

    def __init__(
        self,
        frame_dim: int = 512,
        sentence_dim: int = 512,
        noise_dim: int = 128,
        rows: int = 20,
        decode_widths: tuple[int, ...] = (512, 256, 256),
        scale_widths: tuple[int, int, int] = (128, 64, 32),
        att_dim: int = 256,
        att_channels: tuple[int, int] = (64, 32),
        blocks_per_scale: int = 3,
    ) -> None:
        """Args:
            frame_dim: size of the per-frame visual features.
            sentence_dim: size of the sentence features (attention keys and values).
            noise_dim: noise channels concatenated to the repeated frame features.
            rows: frequency rows of the first scale (a quarter of the mel bins).
            decode_widths: widths of the bottleneck blocks at ``rows`` x T.
            scale_widths: widths of the three output scales (g1, g2, g3).
            att_dim: attention width.
            att_channels: channels the attention adds at scales 1 and 2.
            blocks_per_scale: residual blocks per output scale.
        """
        super().__init__()
        self.rows, self.noise_dim = rows, noise_dim
        w1, w2, w3 = scale_widths
        n = blocks_per_scale
        self.decode = _stage([frame_dim + noise_dim, *decode_widths], False)
        self.g1 = _stage([decode_widths[-1], *[w1] * n], False)
        self.att1 = VisualContextAttention(w1 * rows, sentence_dim, att_dim, rows, att_channels[0])
        self.attconv1 = nn.Conv2d(w1 + att_channels[0], w1, 5, 1, 2)
        self.g2 = _stage([w1, *[w2] * n], True)
        self.att2 = VisualContextAttention(
            w2 * 2 * rows, sentence_dim, att_dim, 2 * rows, att_channels[1]
        )
        self.attconv2 = nn.Conv2d(w2 + att_channels[1], w2, 5, 1, 2)
        self.g3 = _stage([w2, *[w3] * n], True)
        self.to_mel1, self.to_mel2, self.to_mel3 = _to_mel(w1), _to_mel(w2), _to_mel(w3)

    def forward(
        self,
        frames: torch.Tensor,
        sentence: torch.Tensor,
        noise: torch.Tensor,
        lengths: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Generate the three mel scales.

        Args:
            frames: (B, T, D) float32 per-frame visual features.
            sentence: (B, D_s, T) float32 sentence features.
            noise: (B, noise_dim, rows, T) float32.
            lengths: (B,) int64 valid frames per sample (masks the attention), or None.
        Returns:
            mel_20 (B, 1, rows, T), mel_40 (B, 1, 2 rows, 2T), mel_80 (B, 1, 4 rows, 4T),
            all in [-1, 1].
        """
        context = sentence.transpose(1, 2)  # (B, T, D_s)
        x = frames.transpose(1, 2).unsqueeze(2).expand(-1, -1, self.rows, -1)
        x = torch.cat([x, noise], dim=1)  # (B, D + noise_dim, rows, T)
        for block in [*self.decode, *self.g1]:
            x = block(x)
        g1 = x
        x = self.attconv1(torch.cat([x, self.att1(context, g1, lengths)], dim=1))
        for block in self.g2:
            x = block(x)
        g2 = x
        x = self.attconv2(torch.cat([x, self.att2(context, g2, lengths)], dim=1))
        for block in self.g3:
            x = block(x)
        return self.to_mel1(g1), self.to_mel2(g2), self.to_mel3(x)
