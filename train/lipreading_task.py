"""Training the lipreading (memory) model: one SGD step on the original four-term objective.

:class:`LipreadingTask` is also lipreading's training unit (:class:`~lipx.train.task.TrainTask`):
word clips, stream windows with the no-word class, the backend and memory options, and word
accuracy in ``lipx eval``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch
from torch import nn

from lipx.errors import InputError
from lipx.models.checkpoint import Checkpoint
from lipx.runtime.metrics import topk_correct
from lipx.tasks import NO_WORD
from lipx.train.config import TrainConfig
from lipx.train.distributed import DistInfo, average_gradients
from lipx.train.losses import lipreading_loss
from lipx.train.task import TrainTask
from lipx.video import VideoSpec

if TYPE_CHECKING:
    from torch.utils.data import DataLoader, Dataset

    from lipx.models.lipreading import LipreadingModel
    from lipx.train.datasets import LipreadingDataset, PreparedDataset
    from lipx.train.evaluate import EvalOptions, EvalResult


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


class LipreadingTask(TrainTask):
    """The memory model's objective; validated by word accuracy on the inference path."""

    name = "lipreading"
    defaults = {"optimizer": "sgd", "lr": 0.1, "window": 29, "lr_milestones": ()}
    validates_streams = True
    score_frames = 29
    """LRW's word clips."""
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
        self.modules: dict[str, nn.Module] = {"model": self.model}
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

    # --- the training unit -----------------------------------------------------------------

    @classmethod
    def clips(cls, root: str | Path, part: str, protocol: str, *, window: int | None,
              augment: bool = False, **options: Any) -> LipreadingDataset:
        from lipx.train.datasets import LipreadingDataset

        return LipreadingDataset(root, part, protocol=protocol, augment=augment, frames=window,
                                 **options)

    @classmethod
    def with_streams(cls, cfg: TrainConfig, train: PreparedDataset, val: PreparedDataset,
                     size: int, **windows: Any) -> tuple[Dataset, Dataset]:
        """The clips relabelled to the vocabulary plus :data:`~lipx.tasks.NO_WORD`, mixed with
        labelled windows of the training streams; validation's with those of ``val_streams``
        (when given)."""
        from lipx.train.datasets import Mixed
        from lipx.train.stream_windows import StreamWindows

        labels = [*cast("LipreadingDataset", train).labels, NO_WORD]
        windows = {**windows, "centre": cfg.stream_centre, "margin": cfg.stream_margin,
                   "hard": cfg.stream_hard, "video_spec": train.video_spec}
        train_windows = StreamWindows(cfg.streams, labels, size, augment=cfg.augment,
                                      seed=cfg.seed, **windows)
        mixed_train = Mixed(train, train_windows, labels)
        if not cfg.val_streams:
            return mixed_train, Mixed(val, None, labels)
        val_windows = StreamWindows(cfg.val_streams, labels, max(len(val), 200), augment=False,
                                    seed=cfg.seed + 1, **windows)
        return mixed_train, Mixed(val, val_windows, labels)

    @classmethod
    def model_config(cls, cfg: TrainConfig, config: Any, classes: int | None) -> Any:
        """The vocabulary's classes, and the backend and memory options where set."""
        changes: dict[str, Any] = {"num_classes": classes}
        if cfg.backend:
            changes["backend"] = cfg.backend
        if cfg.slots:
            changes["memory_slots"] = cfg.slots
        if cfg.radius:
            changes["memory_radius"] = cfg.radius
        return dataclasses.replace(config, **changes)

    @classmethod
    def create(cls, model: nn.Module, config: Any, cfg: TrainConfig, info: DistInfo,
               labels: list[str], video_spec: VideoSpec) -> LipreadingTask:
        return cls(cast("LipreadingModel", model), cfg, info, cfg.preset, labels, video_spec)

    @classmethod
    def check_init(cls, ckpt: Checkpoint, path: str, labels: list[str]) -> None:
        """Also: the checkpoint reads this corpus' words (or all but the no-word class, which
        the new model gains)."""
        super().check_init(ckpt, path, labels)
        old = list(ckpt.vocabulary or [])
        gains_no_word = labels[-1:] == [NO_WORD] and old == labels[:-1]
        if old != labels and not gains_no_word:
            raise InputError(f"init checkpoint {path} reads other words "
                             f"({', '.join(old[:4])}, ...) than this corpus "
                             f"({', '.join(labels[:4])}, ...)")

    @classmethod
    def evaluate(cls, model: nn.Module, ckpt: Checkpoint, loader: DataLoader, total: int,
                 opts: EvalOptions, device: torch.device,
                 progress: Callable[[int, int], None] | None) -> EvalResult:
        """Top-1 and top-5, per-word accuracy and the most frequent confusions, with the
        original's flip test-time augmentation (logits of the clip and its mirror image
        summed)."""
        from lipx.train.evaluate import EvalResult

        vocab = ckpt.vocabulary or [str(i) for i in range(ckpt.config.num_classes)]
        logits_all, labels_all = [], []
        for batch in loader:
            video = batch["video"].to(device)
            logits = model(video)
            if opts.tta:
                logits = logits + model(video.flip(-1))
            logits_all.append(logits.float().cpu().numpy())
            labels_all.append(batch["label"].numpy())
            if progress:
                progress(sum(len(x) for x in labels_all), total)
        logits, labels = np.concatenate(logits_all), np.concatenate(labels_all)
        top1 = topk_correct(logits, labels, 1)
        per_word = {vocab[c]: float(top1[labels == c].mean()) for c in np.unique(labels)}
        return EvalResult(
            cls.name, len(labels),
            {"top1": float(top1.mean()), "top5": float(topk_correct(logits, labels, 5).mean())},
            per_word=dict(sorted(per_word.items())),
            confusions=confusion_summary(labels, logits.argmax(1), vocab))


def confusion_summary(labels: np.ndarray, preds: np.ndarray, vocabulary: list[str],
                      top: int = 10) -> list[tuple[str, str, int]]:
    """The most frequent (true, predicted, count) confusions."""
    pairs: dict[tuple[int, int], int] = {}
    for y, p in zip(labels.tolist(), preds.tolist()):
        if y != p:
            pairs[(y, p)] = pairs.get((y, p), 0) + 1
    ranked = sorted(pairs.items(), key=lambda kv: -kv[1])[:top]
    return [(vocabulary[y], vocabulary[p], c) for (y, p), c in ranked]
