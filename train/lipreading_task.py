"""Training the lipreading (memory) model: one SGD step on the original four-term objective."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from lipx.models.checkpoint import Checkpoint
from lipx.train.config import TrainConfig
from lipx.train.distributed import DistInfo, average_gradients
from lipx.train.losses import lipreading_loss
from lipx.runtime.metrics import topk_correct

if TYPE_CHECKING:
    from lipx.models.lipreading import LipreadingModel


class _TrainForward(nn.Module):
    """Routes ``forward`` to ``forward_train`` so DDP can wrap the training pass."""

    def __init__(self, model: LipreadingModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, video: torch.Tensor, mel: torch.Tensor,
                context: bool = False) -> dict[str, torch.Tensor]:
        return self.model.forward_train(video, mel, context)


def make_optimizer(params, cfg: TrainConfig) -> torch.optim.Optimizer:
    """SGD with Nesterov momentum 0.9 (the lipreading original), Adam with amsgrad (VCA-GAN) or
    AdamW, all with ``cfg.weight_decay``."""
    params = [p for p in params if p.requires_grad]
    lr = cfg.lr
    if lr is None:
        raise ValueError("make_optimizer needs a resolved config (TrainConfig.resolved())")
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, nesterov=True,
                               weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay)
    return torch.optim.Adam(params, lr=lr, weight_decay=cfg.weight_decay, amsgrad=True)


def clip_and_step(loss: torch.Tensor, params, opt: torch.optim.Optimizer, cfg: TrainConfig,
                  scaler: torch.amp.GradScaler, retain_graph: bool = False,
                  info: DistInfo | None = None) -> float:
    """Backward (scaled for fp16), average gradients over ranks when ``info`` is given (modules
    not wrapped in DDP), clip the gradient norm, step. Returns the pre-clip norm."""
    scaler.scale(loss).backward(retain_graph=retain_graph)
    params = [p for p in params if p.grad is not None]
    if info is not None and info.distributed:
        average_gradients(params, info)
    scaler.unscale_(opt)
    norm = nn.utils.clip_grad_norm_(params, cfg.grad_clip if cfg.grad_clip > 0 else float("inf"))
    scaler.step(opt)
    scaler.update()
    return float(norm)


class LipreadingTask:
    """The memory model's objective; validated by word accuracy on the inference path."""

    metric = "accuracy"

    def __init__(self, model: LipreadingModel, cfg: TrainConfig, info: DistInfo, preset: str,
                 vocabulary: list[str], video_spec: Any) -> None:
        self.cfg, self.info, self.preset = cfg, info, preset
        if cfg.val_streams:
            self.metric = "score"
        self.context = bool(cfg.streams)
        """Items carry the front-end's context frames (training for streams): the windows'
        features are then the streaming runtime's, not the whole model's zero-padded ones."""
        self.meta: dict[str, Any] = {}
        """Extra checkpoint metadata (the corpus' synth options, when it is synthetic)."""
        self.vocabulary, self.video_spec = vocabulary, video_spec
        self.model = model.to(info.device)
        forward: nn.Module = _TrainForward(self.model)
        if info.distributed:
            ids = [info.device.index] if info.device.type == "cuda" else None
            forward = nn.parallel.DistributedDataParallel(forward, device_ids=ids)
        self.forward = forward
        self.modules = {"model": self.model}
        self.optimizers = {"model": make_optimizer(self.model.parameters(), cfg)}
        self.scaler = torch.amp.GradScaler(
            "cuda", enabled=cfg.amp == "fp16" and info.device.type == "cuda")

    def _to(self, batch: dict[str, Any], *keys: str) -> list[torch.Tensor]:
        return [batch[k].to(self.info.device, non_blocking=True) for k in keys]

    def train_step(self, batch: dict[str, Any], autocast: Callable) -> dict[str, float]:
        video, mel, labels = self._to(batch, "video", "audio", "label")
        opt = self.optimizers["model"]
        opt.zero_grad(set_to_none=True)
        with autocast():
            out = self.forward(video, mel, self.context)
        loss, parts = lipreading_loss(out, labels, self.cfg.loss_weights)
        parts["grad_norm"] = clip_and_step(loss, self.model.parameters(), opt, self.cfg,
                                           self.scaler)
        parts["loss"] = float(loss.detach())
        parts["accuracy"] = float((out["logits"].argmax(1) == labels).float().mean())
        return parts

    def validate(self, batches: Iterator[dict[str, Any]]) -> dict[str, float]:
        """Clip accuracy (top-1, top-5); with held-out stream windows in the set (a model for
        streams) also their accuracy on word and on no-word windows, and ``score``, the mean of
        clip and window accuracy, which then picks ``best``."""
        clips = np.zeros(3)  # top-1, top-5, count
        windows = np.zeros((2, 2))  # [word, no-word] x [correct, count]
        no_word = len(self.vocabulary) - 1
        for batch in batches:
            video, labels = self._to(batch, "video", "label")
            features = (self.model.frame_features_chunk(video) if self.context
                        else self.model.frame_features(video))
            logits = self.model.window(features).float().cpu().numpy()
            y = labels.cpu().numpy()
            on_stream = np.asarray(batch.get("stream", [False] * len(y)), bool)
            top1 = topk_correct(logits, y, 1)
            clips += [top1[~on_stream].sum(), topk_correct(logits, y, 5)[~on_stream].sum(),
                      (~on_stream).sum()]
            for row, mask in enumerate((on_stream & (y != no_word), on_stream & (y == no_word))):
                windows[row] += [top1[mask].sum(), mask.sum()]
        out = {"accuracy": clips[0] / max(clips[2], 1), "top5": clips[1] / max(clips[2], 1)}
        if windows[:, 1].sum():
            out["window_word_accuracy"] = windows[0, 0] / max(windows[0, 1], 1)
            out["window_no_word_accuracy"] = windows[1, 0] / max(windows[1, 1], 1)
            out["window_accuracy"] = windows[:, 0].sum() / windows[:, 1].sum()
            out["score"] = (out["accuracy"] + out["window_accuracy"]) / 2
        return {k: float(v) for k, v in out.items()}

    def checkpoint(self) -> Checkpoint:
        state_dict = {k: v.detach().cpu() for k, v in self.model.state_dict().items()}
        return Checkpoint(task="lipreading", config=self.model.config, preset=self.preset,
                          state_dict=state_dict,
                          vocabulary=list(self.vocabulary), video=self.video_spec,
                          meta={**self.meta, "trained_with": self.cfg.to_dict()})

    def log_media(self, writer: Any, step: int) -> None:
        """Lipreading logs scalars only."""


def confusion_summary(labels: np.ndarray, preds: np.ndarray, vocabulary: list[str],
                      top: int = 10) -> list[tuple[str, str, int]]:
    """The most frequent (true, predicted, count) confusions."""
    pairs: dict[tuple[int, int], int] = {}
    for y, p in zip(labels.tolist(), preds.tolist()):
        if y != p:
            pairs[(y, p)] = pairs.get((y, p), 0) + 1
    ranked = sorted(pairs.items(), key=lambda kv: -kv[1])[:top]
    return [(vocabulary[y], vocabulary[p], c) for (y, p), c in ranked]
