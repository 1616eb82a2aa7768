"""Training VCA-GAN: alternating discriminator and generator steps, as the original.

One step: the generator runs once; the discriminators (three mel scales + sync) are updated on the
real and the detached generated mels with R1 and the sync InfoNCE; then the generator (front-end,
sentence encoder, generator, postnet) is updated on the adversarial, sync and reconstruction terms.
As in the original, the sync InfoNCE of the discriminator step also sends its gradient into the
visual front-end, which the generator optimiser applies together with the generator step's.

:class:`Lip2SpeechTask` is also lip-to-speech's training unit (:class:`~lipx.train.task.
TrainTask`): sentence windows, stream windows with the stream's speech as the target, the
discriminators beside the model, and STOI, ESTOI, PESQ and L1 in ``lipx eval``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lipx import audio as laudio
from lipx.models.checkpoint import Checkpoint
from lipx.models.registry import get_family
from lipx.runtime.metrics import mean_scores, speech_scores
from lipx.train.config import TrainConfig
from lipx.train.distributed import DistInfo
from lipx.train.lipreading_task import clip_and_step, make_optimizer
from lipx.train.losses import (
    LIP2SPEECH_WEIGHTS,
    gan_d_loss,
    gan_g_loss,
    r1_penalty,
    reconstruction_loss,
    sync_generator_term,
    sync_infonce,
)
from lipx.train.task import TrainTask
from lipx.video import VideoSpec

if TYPE_CHECKING:
    from torch.utils.data import DataLoader, Dataset

    from lipx.models.discriminator import SyncDiscriminator
    from lipx.models.lip2speech import Lip2SpeechModel
    from lipx.train.datasets import LipToSpeechDataset, PreparedDataset
    from lipx.train.evaluate import EvalOptions, EvalResult


def mel_scales(mel: torch.Tensor) -> list[torch.Tensor]:
    """The real mel at the generator's three scales (x0.25, x0.5 bilinear, and as is)."""
    return [F.interpolate(mel, scale_factor=s, mode="bilinear", align_corners=False)
            for s in (0.25, 0.5)] + [mel]


def _total(losses: Iterable[torch.Tensor]) -> torch.Tensor:
    """``sum(losses)`` (a tensor: 0 + each in turn), typed as one."""
    return cast(torch.Tensor, sum(losses))


def features(model: Lip2SpeechModel, video: torch.Tensor, context: bool = False) -> torch.Tensor:
    """Per-frame features of a clip, or with ``context`` of a window that carries the
    front-end's context frames on each side (training for streams)."""
    return model.frame_features_chunk(video) if context else model.frame_features(video)


def synthesize(model: Lip2SpeechModel, video: torch.Tensor, lengths: torch.Tensor | None = None,
               flip_tta: bool = False, context: bool = False
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Inference with zero noise (deterministic): (mel (B,1,80,4T), linear (B,1,321,4T)).

    With ``flip_tta`` the mels of the clip and of its mirror image are averaged before the
    postnet, as the original's test; ``context`` as :func:`features`.
    """
    feats = features(model, video, context)
    b, t = feats.shape[0], feats.shape[1]
    noise = torch.zeros(b, model.config.noise_dim, model.config.rows, t, device=video.device)
    mel = model.decode(feats, noise, lengths)["mel_80"]
    if flip_tta:
        mel_f = model.decode(features(model, video.flip(-1), context), noise, lengths)["mel_80"]
        mel = (mel + mel_f) / 2
    return mel, model.postnet(mel)


class _Generate(nn.Module):
    """Front-end + decode as one module so DDP can wrap the generator's forward."""

    def __init__(self, model: Lip2SpeechModel, context: bool = False) -> None:
        super().__init__()
        self.model, self.context = model, context

    def forward(self, video, noise, lengths):
        feats = features(self.model, video, self.context)
        return feats, self.model.decode(feats, noise, lengths)


class Lip2SpeechTask(TrainTask):
    """VCA-GAN's objective; validated by STOI of Griffin-Lim speech from the postnet."""

    name = "lip2speech"
    defaults = {"optimizer": "adam", "lr": 1e-4, "window": 40, "lr_milestones": ()}
    metric = "stoi"

    def __init__(self, model: Lip2SpeechModel, discriminators: nn.ModuleDict, cfg: TrainConfig,
                 info: DistInfo, preset: str, video_spec: Any, audio_spec: Any) -> None:
        self.cfg, self.info, self.preset = cfg, info, preset
        self.meta: dict[str, Any] = {}
        """Extra checkpoint metadata (the corpus' synth options, when it is synthetic)."""
        self.video_spec, self.audio_spec = video_spec, audio_spec
        self.weights = {**LIP2SPEECH_WEIGHTS, **cfg.loss_weights}
        self.model = model.to(info.device)
        self.dis = discriminators.to(info.device)
        # No DDP wrapper: the discriminators run on several inputs per step, so gradients are
        # averaged over ranks explicitly (clip_and_step) instead.
        self.context = bool(cfg.streams)
        """Items carry the front-end's context frames (training for streams)."""
        self.generate = _Generate(self.model, self.context)
        self.modules = {"model": self.model, "discriminators": self.dis}
        self.optimizers = {"generator": make_optimizer(self.model.parameters(), cfg),
                           "discriminators": make_optimizer(self.dis.parameters(), cfg)}
        on_cuda16 = cfg.amp == "fp16" and info.device.type == "cuda"
        self.scalers = {k: torch.amp.GradScaler("cuda", enabled=on_cuda16) for k in self.optimizers}
        self.generator = torch.Generator(device="cpu").manual_seed(cfg.seed)
        self._last: dict[str, torch.Tensor] = {}

    def _discriminate(self, mels: list[torch.Tensor], sentence: torch.Tensor):
        return [self.dis[f"dis{i + 1}"](m, sentence) for i, m in enumerate(mels)]

    def train_step(self, batch: dict[str, Any], autocast: Callable) -> dict[str, float]:
        dev = self.info.device
        video, mel, linear = (batch[k].to(dev) for k in ("video", "mel", "linear"))
        lengths = batch["lengths"].to(dev)
        frames = int(lengths.max()) if self.context else video.shape[2]
        noise = self.model.make_noise(video.shape[0], frames, self.generator).to(dev)
        opt_g, opt_d = self.optimizers["generator"], self.optimizers["discriminators"]
        opt_g.zero_grad(set_to_none=True)
        opt_d.zero_grad(set_to_none=True)
        with autocast():
            feats, out = self.generate(video, noise, lengths)
        fakes = [out["mel_20"], out["mel_40"], out["mel_80"]]
        reals = [m.detach().requires_grad_(True) for m in mel_scales(mel)]
        sentence = out["sentence"]

        # discriminator step (the mel discriminators only matter with an adversarial term: with
        # loss_weights.adv=0 they neither run nor train, which makes a step several times cheaper)
        gan = self.weights["adv"] > 0
        zero = torch.zeros((), device=dev)
        adv_d = r1 = adv_g = zero
        if gan:
            real_logits = self._discriminate(reals, sentence.detach())
            fake_logits = self._discriminate([f.detach() for f in fakes], sentence.detach())
            adv_d = _total(gan_d_loss(r, f) for r, f in zip(real_logits, fake_logits)) / 3
            r1 = _total(r1_penalty(r[0], x) for r, x in zip(real_logits, reals)) / 3
        sync = cast("SyncDiscriminator", self.dis["sync"])
        sync_d = sync_infonce(feats, sync.embed(mel), lengths=lengths)
        loss_d = adv_d + self.weights["r1"] * r1 + self.weights["sync"] * sync_d
        clip_and_step(loss_d, self.dis.parameters(), opt_d, self.cfg,
                      self.scalers["discriminators"], retain_graph=True, info=self.info)

        # generator step: keep the front-end's gradient from the sync loss (the original's quirk)
        for name, module in self.model.named_children():
            if name != "frontend":
                module.zero_grad(set_to_none=True)
        if gan:
            adv_g = _total(gan_g_loss(f) for f in self._discriminate(fakes, sentence)) / 3
        sync_g = sync_generator_term(feats.detach(), sync.embed(out["mel_80"]))
        recon = reconstruction_loss(fakes, mel_scales(mel), out["linear"], linear)
        loss_g = (self.weights["adv"] * adv_g + self.weights["sync"] * sync_g
                  + self.weights["recon"] * recon)
        clip_and_step(loss_g, self.model.parameters(), opt_g, self.cfg, self.scalers["generator"],
                      info=self.info)
        self.dis.zero_grad(set_to_none=True)
        self._last = {"mel": out["mel_80"][:1].detach().cpu(), "target": mel[:1].detach().cpu()}
        losses = {"loss_d": loss_d, "loss_g": loss_g, "adv_d": adv_d, "adv_g": adv_g, "r1": r1,
                  "sync_d": sync_d, "sync_g": sync_g, "recon": recon}
        return {k: float(v.detach()) for k, v in losses.items()}

    def training_state(self) -> dict[str, Any]:
        """The noise generator's state (restored on resume)."""
        return {"noise_rng": self.generator.get_state()}

    def load_training_state(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["noise_rng"])

    def validate(self, batches: Iterator[dict[str, Any]]) -> dict[str, float]:
        rows = []
        l1 = []
        for batch in batches:
            dev = self.info.device
            video, mel = batch["video"].to(dev), batch["mel"].to(dev)
            pred_mel, pred_lin = synthesize(self.model, video, batch["lengths"].to(dev),
                                            context=self.context)
            l1.append(float(F.l1_loss(pred_mel, mel)))
            for i in range(video.shape[0]):
                n = int(batch["lengths"][i]) * self.audio_spec.samples_per_video_frame()
                wav = laudio.spectrogram_to_wav(pred_lin[i, 0, :, : 4 * int(batch["lengths"][i])]
                                                .float().cpu().numpy(), self.audio_spec, n_iter=30)
                ref = batch["wav"][i, :n].numpy()
                rows.append(speech_scores(ref, wav[:n], self.audio_spec.sample_rate,
                                          with_pesq=False))
        return {**mean_scores(rows), "mel_l1": float(np.mean(l1)) if l1 else float("nan")}

    def checkpoint(self) -> Checkpoint:
        return Checkpoint(
            task="lip2speech", config=self.model.config, preset=self.preset,
            state_dict={k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            aux={"discriminators": {k: v.detach().cpu() for k, v in self.dis.state_dict().items()}},
            video=self.video_spec, audio=self.audio_spec,
            meta={**self.meta, "trained_with": self.cfg.to_dict()})

    def log_media(self, writer: Any, step: int) -> None:
        """Predicted and target mel images of the last training batch."""
        if not self._last:
            return
        for name in ("mel", "target"):
            img = (self._last[name][0].float() + 1) / 2  # (1, 80, L) in [0, 1]
            writer.add_image(f"mel/{name}", img.flip(1).clamp(0, 1), step)

    # --- the training unit -----------------------------------------------------------------

    @classmethod
    def clips(cls, root: str | Path, part: str, protocol: str, *, window: int | None,
              augment: bool = False, **options: Any) -> LipToSpeechDataset:
        from lipx.train.datasets import LipToSpeechDataset

        return LipToSpeechDataset(root, part, protocol=protocol, window=window, augment=augment,
                                  **options)

    @classmethod
    def with_streams(cls, cfg: TrainConfig, train: PreparedDataset, val: PreparedDataset,
                     size: int, **windows: Any) -> tuple[Dataset, Dataset]:
        """The training clips mixed with windows of the training streams (the stream's speech
        as the target); validation stays on the corpus' clips."""
        from lipx.train.datasets import Mixed
        from lipx.train.stream_windows import SpeechWindows

        speech = SpeechWindows(cfg.streams, size, augment=cfg.augment, seed=cfg.seed, **windows)
        return Mixed(train, speech, []), val

    @classmethod
    def create(cls, model: nn.Module, config: Any, cfg: TrainConfig, info: DistInfo,
               labels: list[str], video_spec: VideoSpec) -> Lip2SpeechTask:
        """The objective, with the family's discriminators built beside the model."""
        aux = get_family(cls.name).build_aux(config)["discriminators"]
        return cls(cast("Lip2SpeechModel", model), cast(nn.ModuleDict, aux), cfg, info,
                   cfg.preset, video_spec, laudio.AudioSpec())

    @classmethod
    def evaluate(cls, model: nn.Module, ckpt: Checkpoint, loader: DataLoader, total: int,
                 opts: EvalOptions, device: torch.device,
                 progress: Callable[[int, int], None] | None) -> EvalResult:
        """Whole clips, flip TTA (mels averaged before the postnet), Griffin-Lim from the
        postnet's linear spectrogram, then STOI, ESTOI, narrow-band PESQ and mel/linear L1
        against the reference; the generated WAVs too with ``opts.wav_dir``."""
        import soundfile as sf

        from lipx.train.evaluate import EvalResult

        spec = ckpt.audio or laudio.AudioSpec()
        rows, wavs, done = [], [], 0
        if opts.wav_dir:
            Path(opts.wav_dir).mkdir(parents=True, exist_ok=True)
        for batch in loader:
            lengths = batch["lengths"]
            mel, linear = synthesize(cast("Lip2SpeechModel", model), batch["video"].to(device),
                                     lengths.to(device), opts.tta)
            for i, n_frames in enumerate(lengths.tolist()):
                frames = 4 * n_frames
                lin = np.maximum(linear[i, 0, :, :frames].float().cpu().numpy(), 0.0)
                n = n_frames * spec.samples_per_video_frame()
                wav = laudio.spectrogram_to_wav(lin, spec, opts.griffin_lim_iters, length=n)
                ref = batch["wav"][i, :n].numpy()
                row = speech_scores(ref, wav, spec.sample_rate)
                row["mel_l1"] = float((mel[i, 0, :, :frames] - batch["mel"][i, 0, :, :frames]
                                       .to(device)).abs().mean())
                row["linear_l1"] = float(np.abs(lin - batch["linear"][i, 0, :, :frames].numpy())
                                         .mean())
                rows.append(row)
                if opts.wav_dir:
                    path = Path(opts.wav_dir) / (str(batch["id"][i]).replace("/", "_") + ".wav")
                    sf.write(path, wav, spec.sample_rate)
                    wavs.append(str(path))
            done += len(lengths)
            if progress:
                progress(done, total)
        return EvalResult(cls.name, len(rows), mean_scores(rows), wavs=wavs)
