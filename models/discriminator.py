"""VCA-GAN's discriminators (training only).

* :class:`MelDiscriminator`: one per generator scale (phase 1, 2, 3 for the ``rows x T``,
  ``2 rows x 2T`` and ``4 rows x 4T`` mels). A conv stem and ``phase + 1`` downsampling residual
  blocks bring every scale to ``rows/4 x T/4``; an unconditional head scores the mel alone and a
  conditional head scores it together with the clip's mean sentence feature. Needs T >= 20.
* :class:`SyncDiscriminator`: the audio front-end trunk, mapping a mel to one embedding per video
  frame, compared with the per-frame visual features by the sync (contrastive) losses.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from lipx.models.audio_front import AudioFrontConfig, AudioFrontend
from lipx.models.generator import LRELU_SLOPE

#: Smallest number of video frames the mel discriminators accept (their heads need T/4 >= 5).
MIN_DISCRIMINATOR_FRAMES = 20


class DownResBlock(nn.Module):
    """Residual block that halves both axes (no normalisation).

    Residual: LReLU -> conv5x5 (width kept) -> avgpool 2 -> LReLU -> conv5x5 (to c_out).
    Shortcut: [1x1 conv without bias when the width changes] -> avgpool 2. Output: sum / sqrt(2).
    """

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_in, 5, 1, 2)
        self.conv2 = nn.Conv2d(c_in, c_out, 5, 1, 2)
        self.shortcut: nn.Module = (
            nn.Conv2d(c_in, c_out, 1, bias=False) if c_in != c_out else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x (B, C_in, F, L). Returns (B, C_out, F // 2, L // 2)."""
        y = F.avg_pool2d(self.conv1(F.leaky_relu(x, LRELU_SLOPE)), 2)
        y = self.conv2(F.leaky_relu(y, LRELU_SLOPE))
        return (y + F.avg_pool2d(self.shortcut(x), 2)) / math.sqrt(2.0)


class UncondHead(nn.Module):
    """LReLU -> conv5x5 (valid) -> LReLU -> mean over the map -> linear -> one logit."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c, c, 5)
        self.fc = nn.Linear(c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x (B, C, F', L'), F', L' >= 5. Returns (B, 1)."""
        x = F.leaky_relu(self.conv(F.leaky_relu(x, LRELU_SLOPE)), LRELU_SLOPE)
        return self.fc(x.mean(dim=(2, 3)))


class CondHead(nn.Module):
    """Like :class:`UncondHead`, after fusing the condition with a padded conv5x5."""

    def __init__(self, c: int, cond_dim: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c + cond_dim, c, 5, 1, 2)
        self.conv2 = nn.Conv2d(c, c, 5)
        self.fc = nn.Linear(c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x (B, C + cond_dim, F', L'). Returns (B, 1)."""
        x = F.leaky_relu(self.conv1(F.leaky_relu(x, LRELU_SLOPE)), LRELU_SLOPE)
        x = F.leaky_relu(self.conv2(x), LRELU_SLOPE)
        return self.fc(x.mean(dim=(2, 3)))


class MelDiscriminator(nn.Module):
    """Scores one mel scale, alone (unconditional) and with the sentence context (conditional)."""

    def __init__(
        self, phase: int, cond_dim: int = 512, base: int = 32, max_width: int = 512
    ) -> None:
        """Args:
            phase: 1, 2 or 3: the mel scale judged (``rows x T``, ``2 rows x 2T``, ``4 rows x 4T``).
            cond_dim: size of the sentence features.
            base: channels of the stem; each block doubles them up to ``max_width``.
            max_width: the width cap.
        """
        super().__init__()
        if phase not in (1, 2, 3):
            raise ValueError(f"phase must be 1, 2 or 3, got {phase!r}")
        self.stem = nn.Conv2d(1, base, 5, 1, 2)
        widths = [base]
        for _ in range(phase + 1):
            widths.append(min(widths[-1] * 2, max_width))
        self.blocks = nn.Sequential(*(DownResBlock(a, b) for a, b in zip(widths[:-1], widths[1:])))
        self.uncond = UncondHead(widths[-1])
        self.cond = CondHead(widths[-1], cond_dim)

    def forward(
        self, mel: torch.Tensor, sentence: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Unconditional and conditional logits.

        Args:
            mel: (B, 1, F, L) float32 normalised mel of this phase's scale (L = T, 2T or 4T).
            sentence: (B, D_s, T) float32 sentence features; their mean over time is the condition.
        Returns:
            (uncond (B, 1), cond (B, 1)) float32 logits.
        """
        x = self.blocks(self.stem(mel))  # (B, C, F/2^(phase+1), T/4)
        cond = sentence.mean(dim=2)[:, :, None, None].expand(-1, -1, x.shape[2], x.shape[3])
        return self.uncond(x), self.cond(torch.cat([x, cond], dim=1))


class SyncDiscriminator(AudioFrontend):
    """The audio front-end as the sync discriminator: mel -> one embedding per video frame.

    Its embeddings are compared with the per-frame visual features (cosine similarity) by the
    sync losses; it has the parameters (and state-dict keys) of :class:`AudioFrontend`.
    """

    def __init__(self, cfg: AudioFrontConfig) -> None:
        super().__init__(cfg)

    def embed(self, mel: torch.Tensor) -> torch.Tensor:
        """Args: mel (B, 1, n_mels, 4T) float32. Returns (B, T, out_dim) float32."""
        return self(mel)


def build_discriminators(
    cond_dim: int, base: int, max_width: int, sync: AudioFrontConfig
) -> nn.ModuleDict:
    """The training-only modules: ``dis1``, ``dis2``, ``dis3`` (mel scales) and ``sync``."""
    return nn.ModuleDict({
        **{f"dis{p}": MelDiscriminator(p, cond_dim, base, max_width) for p in (1, 2, 3)},
        "sync": SyncDiscriminator(sync),
    })
