"""The audio front-end: a mel spectrogram at 4 frames per video frame -> one 512-d vector per frame.

The same network appears twice in the originals: as the lipreading model's audio branch (training
only, it teaches the memory which audio goes with which lips) and as the trunk of VCA-GAN's sync
discriminator. Input ``(B, 1, n_mels, 4T)``, output ``(B, T, D)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from lipx.models.frontend import BasicBlock


@dataclass(frozen=True)
class AudioFrontConfig:
    """Sizes of the audio front-end."""

    n_mels: int = 80
    """Mel bins of the input (the two stride-2 convs reduce them by 4)."""
    widths: tuple[int, int] = (128, 256)
    """Channels of the two stride-2 convolutions."""
    out_dim: int = 512
    """Feature size per video frame."""
    dropout: float = 0.0
    """Dropout before the projection (0.3 in the lipreading model, none in the sync
    discriminator)."""

    @classmethod
    def from_dict(cls, d: dict) -> AudioFrontConfig:
        return cls(**{**d, "widths": tuple(d["widths"])})


class AudioFrontend(nn.Module):
    """Two stride-2 convs (BN, PReLU), a ReLU basic block, and a linear map per video frame."""

    def __init__(self, cfg: AudioFrontConfig) -> None:
        super().__init__()
        c1, c2 = cfg.widths
        self.convs = nn.Sequential(
            nn.Conv2d(1, c1, 3, 2, 1),
            nn.BatchNorm2d(c1),
            nn.PReLU(c1),
            nn.Conv2d(c1, c2, 3, 2, 1),
            nn.BatchNorm2d(c2),
            nn.PReLU(c2),
        )
        self.block = BasicBlock(c2, c2, prelu=False)
        self.dropout = nn.Dropout(cfg.dropout)
        self.proj = nn.Linear(c2 * ((cfg.n_mels + 3) // 4), cfg.out_dim)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        """Args: mel (B, 1, n_mels, 4T) float32. Returns (B, T, out_dim) float32."""
        x = self.block(self.convs(mel))  # (B, C, n_mels/4, T)
        b, c, f, t = x.shape
        x = x.permute(0, 3, 1, 2).reshape(b, t, c * f)
        return self.proj(self.dropout(x))
