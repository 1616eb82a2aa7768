"""The lip-to-speech model (VCA-GAN): mouth video -> mel and linear spectrograms.

``frontend`` (3D conv + ResNet-18, one feature per frame) -> ``encoder`` (Bi-GRU sentence encoder)
-> ``generator`` (three mel scales, visual context attention) -> ``postnet`` (80-bin mel -> linear
magnitude). The streaming split uses :meth:`Lip2SpeechModel.frame_features_chunk` (per-frame,
cacheable) and :meth:`Lip2SpeechModel.window` (whole window); ``forward`` chains the two.
The multi-scale and sync discriminators are training-only ``aux`` modules
(:mod:`lipx.models.discriminator`).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from lipx.errors import CheckpointError, InputError
from lipx.models.audio_front import AudioFrontConfig
from lipx.models.discriminator import MIN_DISCRIMINATOR_FRAMES, build_discriminators
from lipx.models.family import Family, OriginalFormat
from lipx.models.frontend import FrontendConfig, VisualFrontend
from lipx.models.generator import Generator
from lipx.models.postnet import Postnet

log = logging.getLogger(__name__)

#: Mel frames per video frame (16 kHz audio, 10 ms hop, 25 fps video).
MEL_FRAMES_PER_FRAME = 4


@dataclass(frozen=True)
class Lip2SpeechConfig:
    """Sizes of the lip-to-speech model and its training-only discriminators."""

    frontend: FrontendConfig = field(default_factory=lambda: FrontendConfig(pool="global"))
    """Visual front-end (VCA-GAN averages the whole 4x4 layer-4 map)."""
    gru_hidden: int = 512
    """Hidden size per direction of the Bi-GRU sentence encoder."""
    gru_layers: int = 2
    """Layers of the sentence encoder."""
    gru_dropout: float = 0.3
    """Dropout between GRU layers (training only)."""
    sentence_dim: int = 512
    """Size of the sentence features (the attention's keys and values)."""
    noise_dim: int = 128
    """Noise channels concatenated to the generator's input."""
    decode_widths: tuple[int, ...] = (512, 256, 256)
    """Widths of the generator's bottleneck blocks."""
    scale_widths: tuple[int, int, int] = (128, 64, 32)
    """Widths of the generator's three output scales."""
    blocks_per_scale: int = 3
    """Residual blocks per output scale."""
    att_dim: int = 256
    """Width of the visual context attention."""
    att_channels: tuple[int, int] = (64, 32)
    """Channels the attention adds at scales 1 and 2."""
    n_mels: int = 80
    """Mel bins of the finest scale (the coarser ones have a half and a quarter)."""
    n_linear: int = 321
    """STFT bins of the postnet's linear spectrogram (n_fft 640)."""
    postnet_widths: tuple[int, int] = (128, 256)
    """Channels of the postnet's input convolution and residual blocks."""
    postnet_blocks: int = 3
    """Residual blocks of the postnet."""
    dis_base: int = 32
    """Stem width of the mel discriminators (doubled per block up to ``dis_max_width``)."""
    dis_max_width: int = 512
    """Width cap of the mel discriminators."""
    sync_widths: tuple[int, int] = (128, 256)
    """Channels of the sync discriminator's two stride-2 convolutions."""

    def __post_init__(self) -> None:
        if self.n_mels % 4 != 0:
            raise ValueError(f"n_mels must be a multiple of 4, got {self.n_mels}")
        if len(self.scale_widths) != 3 or len(self.att_channels) != 2 or not self.decode_widths:
            raise ValueError("scale_widths needs 3 entries, att_channels 2, decode_widths >= 1")

    @property
    def feature_dim(self) -> int:
        """Size of the per-frame visual features."""
        return self.frontend.out_dim

    @property
    def rows(self) -> int:
        """Frequency rows of the coarsest generator scale (n_mels / 4)."""
        return self.n_mels // 4

    @property
    def min_frames(self) -> int:
        """Smallest number of video frames the inference model accepts.

        Every layer pads, so one frame is enough; the discriminators (training only) need 20.
        """
        return 1

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (tuples become lists)."""
        return _lists(asdict(self))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Lip2SpeechConfig:
        """Inverse of :meth:`to_dict`; TypeError on unknown keys."""
        d = dict(d)
        front = FrontendConfig.from_dict(d.pop("frontend")) if "frontend" in d else None
        d = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
        return cls(**d) if front is None else cls(frontend=front, **d)


def _lists(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _lists(v) for k, v in x.items()}
    if isinstance(x, (tuple, list)):
        return [_lists(v) for v in x]
    return x


def original_config() -> Lip2SpeechConfig:
    """The published VCA-GAN sizes (GRID)."""
    return Lip2SpeechConfig()


def small_config() -> Lip2SpeechConfig:
    """Same structure, about 4x narrower: trains on a 2-core CPU on the synthetic corpus."""
    return Lip2SpeechConfig(
        frontend=FrontendConfig(widths=(16, 32, 64, 128), pool="global"),
        gru_hidden=128, sentence_dim=128, noise_dim=32,
        decode_widths=(128, 64, 64), scale_widths=(32, 16, 8),
        att_dim=64, att_channels=(16, 8), postnet_widths=(64, 128),
        dis_base=16, dis_max_width=128, sync_widths=(32, 64),
    )


def tiny_config() -> Lip2SpeechConfig:
    """As small as the structure allows, for unit tests."""
    return Lip2SpeechConfig(
        frontend=FrontendConfig(widths=(4, 4, 8, 8), blocks=(1, 1, 1, 1), pool="global"),
        gru_hidden=8, sentence_dim=8, noise_dim=4,
        decode_widths=(8, 4, 4), scale_widths=(4, 4, 4), blocks_per_scale=2,
        att_dim=4, att_channels=(2, 2), postnet_widths=(4, 8), postnet_blocks=2,
        dis_base=4, dis_max_width=8, sync_widths=(4, 8),
    )


PRESETS = {"original": original_config, "small": small_config, "tiny": tiny_config}


class SentenceEncoder(nn.Module):
    """Bi-GRU over the per-frame features, then a linear map: the clip's "global visual context"."""

    def __init__(self, cfg: Lip2SpeechConfig) -> None:
        super().__init__()
        self.gru = nn.GRU(
            cfg.feature_dim, cfg.gru_hidden, cfg.gru_layers, batch_first=True,
            bidirectional=True, dropout=cfg.gru_dropout if cfg.gru_layers > 1 else 0.0,
        )
        self.fc = nn.Linear(2 * cfg.gru_hidden, cfg.sentence_dim)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """Args: frames (B, T, D) float32. Returns sentence features (B, D_s, T) float32."""
        out, _ = self.gru(frames)
        return self.fc(out).transpose(1, 2)


class Lip2SpeechModel(nn.Module):
    """VCA-GAN's inference model: video -> (mel (B, 1, n_mels, 4T), linear (B, 1, n_linear, 4T))."""

    def __init__(self, cfg: Lip2SpeechConfig) -> None:
        super().__init__()
        self.config = cfg
        self.frontend = VisualFrontend(cfg.frontend)
        self.encoder = SentenceEncoder(cfg)
        self.generator = Generator(
            cfg.feature_dim, cfg.sentence_dim, cfg.noise_dim, cfg.rows, cfg.decode_widths,
            cfg.scale_widths, cfg.att_dim, cfg.att_channels, cfg.blocks_per_scale,
        )
        self.postnet = Postnet(cfg.n_mels, cfg.n_linear, cfg.postnet_widths, cfg.postnet_blocks)

    def make_noise(
        self, batch: int, frames: int, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Standard normal generator noise, on the model's device (or ``generator``'s).

        Returns:
            (batch, noise_dim, n_mels / 4, frames) float32.
        Raises:
            InputError: batch < 1 or frames < ``min_frames``.
        """
        if batch < 1 or frames < self.config.min_frames:
            raise InputError(
                f"noise needs batch >= 1 and frames >= {self.config.min_frames}, "
                f"got {batch}, {frames}"
            )
        device = generator.device if generator is not None else next(self.parameters()).device
        shape = (batch, self.config.noise_dim, self.config.rows, frames)
        return torch.randn(shape, generator=generator, device=device)

    def frame_features(self, video: torch.Tensor) -> torch.Tensor:
        """Args: video (B, 1, T, 112, 112) float32, normalised. Returns (B, T, D) float32."""
        return self.frontend(video)

    def frame_features_chunk(self, video: torch.Tensor) -> torch.Tensor:
        """Args: video (B, 1, C+4, 112, 112): C frames and 2 context frames on each side.

        Returns:
            (B, C, D) float32, equal to :meth:`frame_features` of those frames in a longer clip.
        """
        return self.frontend.forward_chunk(video)

    def decode(
        self, features: torch.Tensor, noise: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """Sentence encoder, generator and postnet, with every intermediate output.

        Args:
            features: (B, T, D) float32 per-frame visual features.
            noise: (B, noise_dim, n_mels / 4, T) float32.
            lengths: (B,) int64 valid frames per sample (masks the attention), or None for all.
        Returns:
            ``sentence`` (B, D_s, T); ``mel_20`` (B, 1, n_mels/4, T), ``mel_40``
            (B, 1, n_mels/2, 2T), ``mel_80`` (B, 1, n_mels, 4T) in [-1, 1]; ``linear``
            (B, 1, n_linear, 4T).
        """
        sentence = self.encoder(features)
        mel_20, mel_40, mel_80 = self.generator(features, sentence, noise, lengths)
        linear = self.postnet(mel_80)
        return {"sentence": sentence, "mel_20": mel_20, "mel_40": mel_40, "mel_80": mel_80,
                "linear": linear}

    def window(
        self, features: torch.Tensor, noise: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The backend of the streaming split: a window of features -> spectrograms.

        Args: as :meth:`decode`.
        Returns:
            mel (B, 1, n_mels, 4T) normalised to [-1, 1]; linear (B, 1, n_linear, 4T) magnitude.
        """
        out = self.decode(features, noise, lengths)
        return out["mel_80"], out["linear"]

    def forward(
        self, video: torch.Tensor, noise: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Args: video (B, 1, T, 112, 112); noise and lengths as :meth:`decode`.

        Returns:
            (mel (B, 1, n_mels, 4T), linear (B, 1, n_linear, 4T)) float32.
        """
        return self.window(self.frame_features(video), noise, lengths)


def build_aux(cfg: Lip2SpeechConfig) -> dict[str, nn.Module]:
    """Training-only modules: ``discriminators`` = ModuleDict(dis1, dis2, dis3, sync)."""
    sync = AudioFrontConfig(n_mels=cfg.n_mels, widths=cfg.sync_widths, out_dim=cfg.feature_dim)
    dis = build_discriminators(cfg.sentence_dim, cfg.dis_base, cfg.dis_max_width, sync)
    return {"discriminators": dis}


# --- released checkpoints (ms-dot-k/Visual-Context-Attentional-GAN) -----------------------------

#: Original group -> ordered (original key prefix, our key prefix) pairs; the first match applies.
_PREFIXES: dict[str, tuple[tuple[str, str], ...]] = {
    "v_front_state_dict": (
        ("frontend.", "frontend.stem."), ("resnet.", "frontend.trunk."),
        ("sentence_encoder.", "encoder.gru."), ("fc.", "encoder.fc."),
    ),
    "s_dis_state_dict": (("frontend.", "convs."), ("Res_block.0.", "block."), ("Linear.", "proj.")),
    "post_state_dict": (("postnet.0.", "conv_in."), ("postnet.1.", "norm_in.")),
}
_DIS_GROUPS = ("dis1_state_dict", "dis2_state_dict", "dis3_state_dict")
#: Original prefix -> ours inside a mel discriminator (``main.N``, N >= 1, handled apart).
_DIS_HEADS = (("uncond.1.", "uncond.conv."), ("uncond.4.", "uncond.fc."),
              ("cond.1.", "cond.conv1."), ("cond.3.", "cond.conv2."), ("cond.6.", "cond.fc."),
              ("main.0.", "stem."))
#: Module names that differ, wherever they occur in a key.
_SEGMENTS = {"relu1": "act1", "relu2": "act2", "downsample": "shortcut", "conv1x1": "shortcut",
             "mel": "out"}


def rename_original(group: str, key: str) -> str:
    """An original key -> our key inside the module its group maps to.

    ``v_front_state_dict`` maps onto the whole model (prefix ""), so its keys come back with the
    ``frontend.`` / ``encoder.`` prefix; the other groups come back without their target prefix.
    """
    for old, new in _DIS_HEADS if group in _DIS_GROUPS else _PREFIXES.get(group, ()):
        if key.startswith(old):
            key = new + key[len(old):]
            break
    parts = key.split(".")
    if group in _DIS_GROUPS and parts[0] == "main":  # main.N (N >= 1): downsampling block N-1
        parts = ["blocks", str(int(parts[1]) - 1), *parts[2:]]
    elif group == "post_state_dict" and parts[0] == "postnet":  # postnet.N, N >= 3
        if len(parts) > 3:  # postnet.N.conv1.weight: residual block N-3
            parts = ["blocks", str(int(parts[1]) - 3), *parts[2:]]
        else:  # postnet.N.weight: the output convolution
            parts = ["conv_out", parts[2]]
    return ".".join(_SEGMENTS.get(p, p) for p in parts)


def _count(group: dict[str, Any], pattern: str) -> int:
    """How many consecutive n from 0 have ``pattern.format(n)`` in ``group``."""
    n = 0
    while pattern.format(n) in group:
        n += 1
    return n


def config_from_original(groups: dict[str, dict[str, Any]]) -> Lip2SpeechConfig:
    """The config whose shapes fit an original checkpoint's groups.

    Raises:
        CheckpointError: a tensor the sizes are read from is missing.
    """
    try:
        return _infer_config(groups)
    except KeyError as e:
        raise CheckpointError(
            f"not a complete VCA-GAN checkpoint: {e.args[0]} is missing "
            "(expected the v_front, gen and post groups of ms-dot-k/Visual-Context-Attentional-GAN)"
        ) from e


def _infer_config(groups: dict[str, dict[str, Any]]) -> Lip2SpeechConfig:
    v, gen, post = groups["v_front_state_dict"], groups["gen_state_dict"], groups["post_state_dict"]
    widths = tuple(v[f"resnet.layer{i}.0.conv1.weight"].shape[0] for i in range(1, 5))
    blocks = tuple(_count(v, f"resnet.layer{i}.{{}}.conv1.weight") for i in range(1, 5))
    n_mels = post["postnet.0.weight"].shape[1]
    rows = n_mels // 4
    n_post = sum(1 for k in post if k.startswith("postnet.") and k.endswith(".conv1.weight"))
    cfg: dict[str, Any] = dict(
        frontend=FrontendConfig(widths=widths, blocks=blocks),  # type: ignore[arg-type]
        gru_hidden=v["sentence_encoder.weight_hh_l0"].shape[1],
        gru_layers=_count(v, "sentence_encoder.weight_hh_l{}"),
        sentence_dim=v["fc.weight"].shape[0],
        noise_dim=gen["decode.0.norm1.weight"].shape[0] - widths[-1],
        decode_widths=tuple(gen[f"decode.{i}.conv1.weight"].shape[0]
                            for i in range(_count(gen, "decode.{}.conv1.weight"))),
        scale_widths=tuple(gen[f"g{i}.0.conv1.weight"].shape[0] for i in (1, 2, 3)),
        blocks_per_scale=_count(gen, "g1.{}.conv1.weight"),
        att_dim=gen["att1.q.weight"].shape[0],
        att_channels=(gen["att1.mel.weight"].shape[0] // rows,
                      gen["att2.mel.weight"].shape[0] // (2 * rows)),
        n_mels=n_mels,
        n_linear=post[f"postnet.{3 + n_post}.weight"].shape[0],
        postnet_widths=(post["postnet.0.weight"].shape[0], post["postnet.3.conv2.weight"].shape[0]),
        postnet_blocks=n_post,
    )
    if "dis3_state_dict" in groups:
        d3 = groups["dis3_state_dict"]
        cfg["dis_base"] = d3["main.0.weight"].shape[0]
        cfg["dis_max_width"] = d3["uncond.1.weight"].shape[0]
    if "s_dis_state_dict" in groups:
        s = groups["s_dis_state_dict"]
        cfg["sync_widths"] = (s["frontend.0.weight"].shape[0], s["frontend.3.weight"].shape[0])
    return Lip2SpeechConfig(**cfg)


def build(cfg: Lip2SpeechConfig) -> Lip2SpeechModel:
    """The model of ``cfg`` (train mode, freshly initialised)."""
    return Lip2SpeechModel(cfg)


FAMILY = Family(
    task="lip2speech",
    config_from_dict=Lip2SpeechConfig.from_dict,
    build=build,
    presets=PRESETS,
    build_aux=build_aux,
    min_window=MIN_DISCRIMINATOR_FRAMES,
    min_window_reason="the discriminators pool time by 4 down to 5 steps",
    originals=(
        OriginalFormat(
            name="vca-gan-original",
            model_groups={"v_front_state_dict": "", "gen_state_dict": "generator.",
                          "post_state_dict": "postnet."},
            aux_groups={"dis1_state_dict": "discriminators/dis1.",
                        "dis2_state_dict": "discriminators/dis2.",
                        "dis3_state_dict": "discriminators/dis3.",
                        "s_dis_state_dict": "discriminators/sync."},
            rename=rename_original,
            config_from_original=config_from_original,
        ),
    ),
)
