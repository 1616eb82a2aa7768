"""The visual-audio key-value memory of the lipreading model.

Two slot matrices of the same shape, ``key`` and ``value`` (``n_slot x dim``), bridge lip and
speech features. At inference each frame's visual feature addresses the key slots; the same
addressing weights read the value slots, which recalls an audio feature for that frame; the
visual and recalled features are fused by one linear layer. Everything is per frame, so the
memory streams with the front-end
(see :meth:`lipx.models.lipreading.LipreadingModel.frame_features_chunk`).

Training also sees the real audio features of the clip and adds two losses:

- reconstruction: the audio feature addresses the value slots (through ``v_embd``) and the read
  must reproduce it (MSE). This is the only loss that moves ``value`` and ``v_embd``.
- alignment: KL(value addressing || key addressing), which teaches the key slots (and ``q_embd``)
  to address, from the lips, the slots that hold the matching audio.

The fusion layer is also applied to the visual and *real* audio features; classifying that
(``fused_audio``) trains the audio front-end.

Addressing is ``softmax(radius * cos(query, slots))``; the cosine normalises both sides with an
epsilon clamp (ReduceL2 / Clip / Div in ONNX, no data-dependent control flow).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

#: Smallest norm the cosine divides by (safe in float16: never rounds to zero).
NORM_EPS = 1e-6


def cosine_logits(query: torch.Tensor, slots: torch.Tensor, radius: float) -> torch.Tensor:
    """Scaled cosine similarity of every query with every slot.

    Args:
        query: (N, D) float32.
        slots: (S, D) float32.
        radius: the scale (inverse temperature) applied to the cosine.
    Returns:
        (N, S) float32, ``radius * cos(query_n, slot_s)``.
    """
    q = query / query.norm(dim=-1, keepdim=True).clamp_min(NORM_EPS)
    s = slots / slots.norm(dim=-1, keepdim=True).clamp_min(NORM_EPS)
    return radius * (q @ s.t())


@dataclass
class MemoryOutputs:
    """What the training pass of :class:`Memory` returns (all tensors keep their graph)."""

    fused: torch.Tensor
    """(B, T, D) visual features fused with the *recalled* audio (the inference path)."""
    fused_audio: torch.Tensor
    """(B, T, D) visual features fused with the *real* audio features."""
    recon_loss: torch.Tensor
    """() MSE between the value-slot read addressed by the real audio and that audio."""
    kl_loss: torch.Tensor
    """() KL(value addressing || key addressing), batch-mean over the B*T frames."""


class Memory(nn.Module):
    """Key-value memory: per-frame key addressing, value read and fusion.

    Args:
        dim: feature size D of the visual and audio features (and of the fused output).
        slots: number of memory slots.
        radius: scale of the cosine addressing (16 in the original; not stored in checkpoints).
        dropout: dropout on the concatenated features before the fusion layer.
    """

    def __init__(self, dim: int, slots: int, radius: float = 16.0, dropout: float = 0.5) -> None:
        super().__init__()
        self.radius = float(radius)
        self.key = nn.Parameter(torch.empty(slots, dim))
        self.value = nn.Parameter(torch.empty(slots, dim))
        nn.init.normal_(self.key, 0.0, 0.5)
        nn.init.normal_(self.value, 0.0, 0.5)
        self.q_embd = nn.Linear(dim, dim)
        self.v_embd = nn.Linear(dim, dim)  # training only (value addressing)
        self.fusion = nn.Linear(2 * dim, dim)
        self.dropout = nn.Dropout(dropout)

    def key_logits(self, visual: torch.Tensor) -> torch.Tensor:
        """Key-addressing logits. Args: visual (B, T, D). Returns (B, T, S)."""
        return cosine_logits(self.q_embd(visual), self.key, self.radius)

    def _fuse(self, visual: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        return self.fusion(self.dropout(torch.cat([visual, audio], dim=-1)))

    def recall(self, visual: torch.Tensor) -> torch.Tensor:
        """The audio feature the memory recalls for each frame.

        Args:
            visual: (B, T, D) float32 visual features.
        Returns:
            (B, T, D) float32: key-addressing weights times the value slots. No gradient reaches
            the value slots through this read.
        """
        weights = torch.softmax(self.key_logits(visual), dim=-1)
        return weights @ self.value.detach()

    def forward(self, visual: torch.Tensor) -> torch.Tensor:
        """Inference: fuse each frame with its recalled audio.

        Args:
            visual: (B, T, D) float32.
        Returns:
            (B, T, D) float32 fused features.
        """
        return self._fuse(visual, self.recall(visual))

    def forward_train(self, visual: torch.Tensor, audio: torch.Tensor) -> MemoryOutputs:
        """Training pass: both fusions and the memory's two losses.

        Args:
            visual: (B, T, D) float32 visual features.
            audio: (B, T, D) float32 audio features of the same frames.
        Returns:
            :class:`MemoryOutputs`.
        """
        key_logits = self.key_logits(visual)
        key_weights = torch.softmax(key_logits, dim=-1)
        fused = self._fuse(visual, key_weights @ self.value.detach())

        target = audio.detach()
        value_logits = cosine_logits(self.v_embd(target), self.value, self.radius)
        value_weights = torch.softmax(value_logits, dim=-1)
        recon_loss = F.mse_loss(value_weights @ self.value, target)
        n_slot = key_logits.shape[-1]
        kl_loss = F.kl_div(
            torch.log_softmax(key_logits, dim=-1).reshape(-1, n_slot),
            value_weights.detach().reshape(-1, n_slot),
            reduction="batchmean",
        )
        return MemoryOutputs(
            fused=fused,
            fused_audio=self._fuse(visual, audio),
            recon_loss=recon_loss,
            kl_loss=kl_loss,
        )
