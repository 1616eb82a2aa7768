"""The two papers' training objectives, as plain functions of model outputs.

Lipreading (memory model): CE on the recalled-audio path + CE on the real-audio path + the
addressing KL + the value reconstruction, all weighted 1 in the original.

VCA-GAN: non-saturating (softplus) GAN losses over three scales, each with an unconditional and a
conditional head; R1 on the unconditional real logits; a contrastive sync loss between per-frame
visual features and the sync discriminator's audio embedding; and 50 x the L1 reconstruction of
de-normalised log-mels (three scales) plus the linear magnitude.
"""

from __future__ import annotations

import math
from typing import cast

import torch
import torch.nn.functional as F

LIPREADING_WEIGHTS = {"ce": 1.0, "ce_audio": 1.0, "kl": 1.0, "recon": 1.0}
LIP2SPEECH_WEIGHTS = {"adv": 1.0, "sync": 1.0, "recon": 50.0, "r1": 1.0}

#: (x + 11.5129) / 5.7565 - 1 maps ln-mel to [-1, 1]; its inverse scale and offset.
_LOG_CLAMP = math.log(1e-5)


def lipreading_loss(out: dict[str, torch.Tensor], labels: torch.Tensor,
                    weights: dict[str, float]) -> tuple[torch.Tensor, dict[str, float]]:
    """The memory model's objective.

    Args:
        out: ``LipreadingModel.forward_train`` outputs (``logits``, ``logits_audio``,
            ``recon_loss``, ``kl_loss``).
        labels: (B,) int64 class indices.
    Returns:
        the weighted total (scalar) and each term as a float.
    """
    w = {**LIPREADING_WEIGHTS, **weights}
    terms = {
        "ce": F.cross_entropy(out["logits"].float(), labels),
        "ce_audio": F.cross_entropy(out["logits_audio"].float(), labels),
        "kl": out["kl_loss"].float(),
        "recon": out["recon_loss"].float(),
    }
    total = cast(torch.Tensor, sum(w[k] * v for k, v in terms.items()))  # terms is not empty
    return total, {k: float(v.detach()) for k, v in terms.items()}


def gan_d_loss(real: tuple[torch.Tensor, torch.Tensor],
               fake: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Discriminator side of the non-saturating loss for one scale (both heads)."""
    return cast(torch.Tensor,
                sum(F.softplus(-r).mean() + F.softplus(f).mean() for r, f in zip(real, fake)))


def gan_g_loss(fake: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Generator side of the non-saturating loss for one scale (both heads)."""
    return cast(torch.Tensor, sum(F.softplus(-f).mean() for f in fake))


def r1_penalty(real_logit: torch.Tensor, real_input: torch.Tensor) -> torch.Tensor:
    """Batch-mean squared gradient norm of the unconditional real logit w.r.t. the real mel.

    ``real_input`` must have ``requires_grad`` set before the discriminator ran.
    """
    (grad,) = torch.autograd.grad(real_logit.sum(), real_input, create_graph=True)
    return grad.pow(2).flatten(1).sum(1).mean()


def sync_infonce(visual: torch.Tensor, audio: torch.Tensor, temperature: float = 1.0,
                 lengths: torch.Tensor | None = None) -> torch.Tensor:
    """Symmetric InfoNCE over each clip's T x T frame cosine-similarity matrix.

    Args:
        visual: (B, T, D) per-frame visual features.
        audio: (B, T, D) sync-discriminator embeddings of the mel of the same clip.
        lengths: (B,) valid frames per clip; padded frames are neither anchors nor negatives.
    """
    v = F.normalize(visual.float(), dim=-1)
    a = F.normalize(audio.float(), dim=-1)
    sim = v @ a.transpose(1, 2) / temperature  # (B, T, T)
    b, t, _ = sim.shape
    target = torch.arange(t, device=sim.device).expand(b, t)
    valid = torch.ones(b, t, dtype=torch.bool, device=sim.device)
    if lengths is not None:
        valid = torch.arange(t, device=sim.device)[None] < lengths[:, None]
        pair = valid[:, :, None] & valid[:, None, :]
        sim = sim.masked_fill(~pair, -1e4)
    loss_va = F.cross_entropy(sim.reshape(b * t, t), target.reshape(-1), reduction="none")
    loss_av = F.cross_entropy(sim.transpose(1, 2).reshape(b * t, t), target.reshape(-1),
                              reduction="none")
    mask = valid.reshape(-1).float()
    return ((loss_va + loss_av) * mask).sum() / (2 * mask.sum())


def sync_generator_term(visual: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
    """The generator's sync term: 5 - mean over frames of |cos(v_t, a_t)| (the original's form)."""
    cos = F.cosine_similarity(visual.float(), audio.float(), dim=-1)
    return 5.0 - cos.abs().mean()


def denormalise_mel(mel: torch.Tensor) -> torch.Tensor:
    """[-1, 1] normalised mel -> natural-log mel (the inverse of the data normalisation)."""
    return (mel + 1.0) * (-_LOG_CLAMP / 2.0) + _LOG_CLAMP


def reconstruction_loss(mels: list[torch.Tensor], targets: list[torch.Tensor],
                        linear: torch.Tensor, linear_target: torch.Tensor) -> torch.Tensor:
    """Mean L1 of de-normalised log-mels over the scales, plus L1 of the linear magnitude."""
    mel_l1 = sum(F.l1_loss(denormalise_mel(m.float()), denormalise_mel(t))
                 for m, t in zip(mels, targets)) / len(mels)
    return mel_l1 + F.l1_loss(linear.float(), linear_target)
