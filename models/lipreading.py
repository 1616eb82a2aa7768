"""The lipreading model: visual front-end, visual-audio memory, and a Bi-GRU or MS-TCN backend.

Re-implements the ICCV 2021 model "Multi-modality associative bridging through memory"
(ms-dot-k/Visual-Audio-Memory). A mouth clip ``(B, 1, T, 112, 112)`` becomes one feature per frame
(front-end, then the memory's recall and fusion, all per frame: this is the streaming
front-end), and a window of those features becomes word logits (the backend).

The audio front-end is built too (its weights live in the checkpoint) but runs only in
:meth:`LipreadingModel.forward_train`; the exported graphs never touch it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

import torch
from torch import nn

from lipx.audio import AudioSpec
from lipx.errors import CheckpointError, InputError
from lipx.models.audio_front import AudioFrontConfig, AudioFrontend
from lipx.models.family import Family, OriginalFormat
from lipx.models.frontend import FrontendConfig, VisualFrontend
from lipx.models.memory import Memory
from lipx.models.mstcn import MSTCNBackend, MSTCNConfig, rename_original

log = logging.getLogger(__name__)

BACKENDS = ("gru", "mstcn")


@dataclass(frozen=True)
class GRUBackendConfig:
    """Sizes of the Bi-GRU backend."""

    hidden: int = 512
    """Hidden size per direction."""
    layers: int = 2
    """Stacked bidirectional layers."""
    dropout: float = 0.3
    """Dropout between GRU layers (training only; ignored with one layer)."""

    @classmethod
    def from_dict(cls, d: dict) -> GRUBackendConfig:
        return cls(**d)


@dataclass(frozen=True)
class LipreadingConfig:
    """Everything that fixes the lipreading model's architecture."""

    frontend: FrontendConfig = field(default_factory=lambda: FrontendConfig(pool="topleft3"))
    """Visual front-end (the original pools the top-left 3x3 of the 4x4 map)."""
    audio: AudioFrontConfig = field(default_factory=lambda: AudioFrontConfig(dropout=0.3))
    """Audio front-end (training only); its ``out_dim`` must equal the visual feature size."""
    memory_slots: int = 88
    """Slots of the key and value memories (88 with the Bi-GRU, 168 with the MS-TCN)."""
    memory_radius: float = 16.0
    """Scale of the cosine addressing (not stored in original checkpoints; 16 there)."""
    memory_dropout: float = 0.5
    """Dropout before the memory's fusion layer (training only)."""
    backend: str = "gru"
    """``gru`` (2-layer Bi-GRU) or ``mstcn`` (multi-branch MS-TCN)."""
    gru: GRUBackendConfig = field(default_factory=GRUBackendConfig)
    """Bi-GRU sizes (used when ``backend == "gru"``)."""
    tcn: MSTCNConfig = field(default_factory=MSTCNConfig)
    """MS-TCN sizes (used when ``backend == "mstcn"``)."""
    num_classes: int = 500
    """Words in the vocabulary (LRW: 500)."""

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        if self.audio.out_dim != self.feature_dim:
            raise ValueError(
                f"audio.out_dim ({self.audio.out_dim}) must equal the visual feature size "
                f"({self.feature_dim}): the memory fuses and compares the two"
            )
        if self.memory_slots < 1 or self.num_classes < 1:
            raise ValueError(
                f"memory_slots and num_classes must be >= 1, got {self.memory_slots} and "
                f"{self.num_classes}"
            )

    @property
    def feature_dim(self) -> int:
        """D, the size of each frame's feature (front-end output = memory output)."""
        return self.frontend.out_dim

    @property
    def min_frames(self) -> int:
        """The smallest number of frames T the model accepts."""
        return 1

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (tuples as lists) that :meth:`from_dict` turns back."""
        return _lists(asdict(self))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LipreadingConfig:
        """Rebuild a config from :meth:`to_dict`; missing keys take their defaults.

        Raises:
            ValueError: unknown keys or invalid values.
        """
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown lipreading config keys {unknown}; known: {sorted(known)}")
        nested: dict[str, Callable[[dict], Any]] = {
            "frontend": FrontendConfig.from_dict,
            "audio": AudioFrontConfig.from_dict,
            "gru": GRUBackendConfig.from_dict,
            "tcn": MSTCNConfig.from_dict,
        }
        return cls(**{k: nested[k](v) if k in nested else v for k, v in d.items()})


def _lists(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _lists(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_lists(v) for v in x]
    return x


def _small() -> LipreadingConfig:
    """Same structure, ~1/4 width: trains on a few CPU cores (synthetic corpus)."""
    return LipreadingConfig(
        frontend=FrontendConfig(widths=(16, 32, 64, 128), pool="topleft3"),
        audio=AudioFrontConfig(widths=(32, 64), out_dim=128, dropout=0.3),
        memory_slots=32,
        gru=GRUBackendConfig(hidden=128),
        tcn=MSTCNConfig(widths=(192, 192, 192, 192)),
    )


def _tiny() -> LipreadingConfig:
    """As small as the structure allows: for unit tests."""
    return LipreadingConfig(
        frontend=FrontendConfig(widths=(8, 8, 16, 16), blocks=(1, 1, 1, 1), pool="topleft3"),
        audio=AudioFrontConfig(widths=(8, 16), out_dim=16, dropout=0.3),
        memory_slots=8,
        gru=GRUBackendConfig(hidden=16),
        tcn=MSTCNConfig(widths=(24, 24), dilations=(1, 2)),
    )


PRESETS: dict[str, Callable[[], LipreadingConfig]] = {
    "original": LipreadingConfig,
    "original-mstcn": lambda: LipreadingConfig(memory_slots=168, backend="mstcn"),
    "small": _small,
    "tiny": _tiny,
}


class GRUBackend(nn.Module):
    """Bidirectional GRU over the window, mean over time, linear classifier."""

    def __init__(self, in_dim: int, num_classes: int, cfg: GRUBackendConfig) -> None:
        super().__init__()
        self.gru = nn.GRU(
            in_dim, cfg.hidden, cfg.layers, batch_first=True, bidirectional=True,
            dropout=cfg.dropout if cfg.layers > 1 else 0.0,
        )
        self.fc = nn.Linear(2 * cfg.hidden, num_classes)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Args: features (B, T, D) float32. Returns (B, num_classes) float32 logits."""
        out, _ = self.gru(features)
        return self.fc(out.mean(dim=1))


def _build_backend(cfg: LipreadingConfig) -> nn.Module:
    if cfg.backend == "gru":
        return GRUBackend(cfg.feature_dim, cfg.num_classes, cfg.gru)
    return MSTCNBackend(cfg.feature_dim, cfg.num_classes, cfg.tcn)


class LipreadingModel(nn.Module):
    """Mouth clip -> word logits, split into a per-frame part and a per-window part.

    Submodules: ``frontend`` (:class:`VisualFrontend`), ``memory`` (:class:`Memory`), ``backend``
    (Bi-GRU or MS-TCN), ``audio_frontend`` (:class:`AudioFrontend`, training only).
    """

    def __init__(self, cfg: LipreadingConfig) -> None:
        super().__init__()
        self.config = cfg
        self.frontend = VisualFrontend(cfg.frontend)
        self.memory = Memory(cfg.feature_dim, cfg.memory_slots, cfg.memory_radius,
                             cfg.memory_dropout)
        self.backend = _build_backend(cfg)
        self.audio_frontend = AudioFrontend(cfg.audio)

    def frame_features(self, video: torch.Tensor) -> torch.Tensor:
        """Per-frame features: front-end, then the memory's recall and fusion.

        Args:
            video: (B, 1, T, 112, 112) float32, normalised mouth clip.
        Returns:
            (B, T, D) float32.
        """
        return self.memory(self.frontend(video))

    def frame_features_chunk(self, video: torch.Tensor) -> torch.Tensor:
        """Per-frame features of the inner frames of a chunk, for streaming.

        Args:
            video: (B, 1, C+4, 112, 112) float32: C frames with 2 frames of context on each side.
        Returns:
            (B, C, D) float32, equal to :meth:`frame_features` of those C frames inside any longer
            clip that contains the whole chunk.
        """
        return self.memory(self.frontend.forward_chunk(video))

    def window(self, features: torch.Tensor) -> torch.Tensor:
        """The backend. Args: features (B, T, D) float32. Returns (B, num_classes) logits."""
        return self.backend(features)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        """Args: video (B, 1, T, 112, 112) float32. Returns (B, num_classes) float32 logits."""
        return self.window(self.frame_features(video))

    def forward_train(self, video: torch.Tensor, mel: torch.Tensor,
                      context: bool = False) -> dict[str, torch.Tensor]:
        """The pieces of the original training objective (sum them, all weights 1).

        Args:
            video: (B, 1, T, 112, 112) float32 (with ``context``: T + 4 frames, 2 of context on
                each side, as the streaming runtime's cached front-end sees a window).
            mel: (B, 1, n_mels, 4T) float32, the clip's log-mel spectrogram (CMVN-normalised).
            context: ``video`` has the 2 context frames on each side (zero frames for a clip:
                the same as the whole model's padding).
        Returns:
            ``logits`` (B, num_classes) from the recalled-audio fusion (the inference path),
            ``logits_audio`` (B, num_classes) from the real-audio fusion, and the scalar
            ``recon_loss`` and ``kl_loss`` of the memory.
        Raises:
            InputError: the spectrogram does not cover the clip at 4 mel frames per video frame.
        """
        visual = self.frontend.forward_chunk(video) if context else self.frontend(video)
        audio = self.audio_frontend(mel)
        if audio.shape[:2] != visual.shape[:2]:
            raise InputError(
                f"mel of shape {tuple(mel.shape)} gives {audio.shape[1]} audio frames for a clip "
                f"of {visual.shape[1]} video frames (batch {visual.shape[0]}); pass "
                f"(B, 1, {self.config.audio.n_mels}, 4*T) with the video's batch size"
            )
        out = self.memory.forward_train(visual, audio)
        return {
            "logits": self.window(out.fused),
            "logits_audio": self.window(out.fused_audio),
            "recon_loss": out.recon_loss,
            "kl_loss": out.kl_loss,
        }


# --- released original checkpoints ---------------------------------------------------------

_VISUAL_PARTS = {"relu1": "act1", "relu2": "act2", "downsample": "shortcut"}


def _rename_original(group: str, key: str) -> str:
    """Original key -> key inside the lipx submodule that ``group`` maps to."""
    if group == "v_front_state_dict":
        if key.startswith("frontend."):
            return "stem." + key[len("frontend."):]
        if key.startswith("resnet."):
            parts = ["trunk", *key.split(".")[1:]]
            return ".".join(_VISUAL_PARTS.get(p, p) for p in parts)
    elif group == "a_front_state_dict":
        for old, new in (("frontend.", "convs."), ("Res_block.0.", "block."), ("Linear.", "proj.")):
            if key.startswith(old):
                return new + key[len(old):]
    elif group == "back_state_dict":
        return rename_original(key)  # MS-TCN names; the Bi-GRU's (gru.*, fc.*) are ours already
    return key


def _shape(groups: dict[str, dict[str, Any]], group: str, key: str) -> tuple[int, ...]:
    try:
        return tuple(groups[group][key].shape)
    except KeyError:
        raise CheckpointError(
            f"not a lipreading-original checkpoint: {group} has no {key!r}"
        ) from None


def _count(keys: Any, prefix: str) -> int:
    """Number of distinct indices N in keys ``prefix + 'N.'...``."""
    return len({k[len(prefix):].split(".", 1)[0] for k in keys if k.startswith(prefix)})


def _config_from_original(groups: dict[str, dict[str, Any]]) -> LipreadingConfig:
    """Infer the architecture from the original groups' tensor shapes (radius: the original 16)."""
    v_keys = groups["v_front_state_dict"]
    w = [_shape(groups, "v_front_state_dict", f"resnet.layer{i}.0.conv1.weight")[0]
         for i in range(1, 5)]
    b = [_count(v_keys, f"resnet.layer{i}.") for i in range(1, 5)]
    widths, blocks = (w[0], w[1], w[2], w[3]), (b[0], b[1], b[2], b[3])
    cfg = LipreadingConfig(
        frontend=FrontendConfig(widths=widths, blocks=blocks, pool="topleft3"),
        audio=_audio_from_original(groups, widths[-1]),
        memory_slots=_shape(groups, "mem_state_dict", "key")[0],
    )
    back = groups["back_state_dict"]
    if "gru.weight_ih_l0" in back:
        gru = GRUBackendConfig(hidden=_shape(groups, "back_state_dict", "gru.weight_hh_l0")[1],
                               layers=sum(k.startswith("gru.weight_ih_l") and
                                          not k.endswith("_reverse") for k in back))
        classes = _shape(groups, "back_state_dict", "fc.weight")[0]
        return replace(cfg, backend="gru", gru=gru, num_classes=classes)
    if "tcn.tcn_output.weight" in back:
        net = "tcn.mb_ms_tcn.network."
        n = _count(back, net)
        tcn = MSTCNConfig(
            widths=tuple(_shape(groups, "back_state_dict", f"{net}{i}.downsample.weight")[0]
                         for i in range(n)),
            kernel_sizes=tuple(_shape(groups, "back_state_dict", f"{net}0.cbcr0_{j}.conv.weight")[2]
                               for j in range(_count(back, f"{net}0.cbcr0_"))),
            dilations=tuple(2**i for i in range(n)),
        )
        classes = _shape(groups, "back_state_dict", "tcn.tcn_output.weight")[0]
        return replace(cfg, backend="mstcn", tcn=tcn, num_classes=classes)
    raise CheckpointError(
        "not a lipreading-original checkpoint: back_state_dict holds neither a Bi-GRU (gru.*) "
        "nor an MS-TCN (tcn.*)"
    )


def _audio_from_original(groups: dict[str, dict[str, Any]], dim: int) -> AudioFrontConfig:
    """The audio front-end's sizes; the defaults when the training-only group is absent."""
    if "a_front_state_dict" not in groups:
        return AudioFrontConfig(out_dim=dim, dropout=0.3)
    g = "a_front_state_dict"
    c1 = _shape(groups, g, "frontend.0.weight")[0]
    c2 = _shape(groups, g, "frontend.3.weight")[0]
    out_dim, flat = _shape(groups, g, "Linear.weight")
    return AudioFrontConfig(n_mels=4 * (flat // c2), widths=(c1, c2), out_dim=out_dim,
                            dropout=0.3)


FAMILY = Family(
    task="lipreading",
    config_from_dict=LipreadingConfig.from_dict,
    build=LipreadingModel,
    presets=PRESETS,
    audio_spec=AudioSpec.lipreading,
    backends=BACKENDS,
    originals=(
        OriginalFormat(
            name="lipreading-original",
            model_groups={
                "v_front_state_dict": "frontend.",
                "a_front_state_dict": "audio_frontend.",
                "mem_state_dict": "memory.",
                "back_state_dict": "backend.",
            },
            rename=_rename_original,
            config_from_original=_config_from_original,
        ),
    ),
)
