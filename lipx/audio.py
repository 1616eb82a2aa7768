"""Audio analysis and synthesis shared by training, streaming and evaluation (numpy only).

The mel/linear spectrograms the lip-to-speech model predicts, and their inverse (Griffin-Lim), are
defined here once.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class AudioSpec:
    """Audio analysis parameters; stored in checkpoints and manifests.

    Defaults are VCA-GAN's (GRID). :meth:`lipreading` gives the lipreading model's audio branch.
    """

    sample_rate: int = 16000
    n_fft: int = 640
    hop: int = 160
    win: int = 640
    window: str = "hann"
    """Periodic Hann window."""
    n_mels: int = 80
    fmin: float = 55.0
    fmax: float = 7500.0
    mel_scale: str = "slaney"
    """``slaney`` (with Slaney area normalisation) or ``htk`` (no normalisation)."""
    preemphasis: float = 0.97
    """Pre-emphasis coefficient (0 disables it)."""
    log: str = "ln_clamp"
    """``ln_clamp``: ln(max(x, 1e-5)) then scaled to [-1, 1]; ``db_cmvn``: power dB + CMVN."""
    mel_frames_per_video_frame: int = 4

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> AudioSpec:
        return cls(**d)

    @classmethod
    def lipreading(cls) -> AudioSpec:
        """The lipreading model's audio branch: n_fft 400, HTK mel 0-8 kHz, power dB + CMVN."""
        return cls(n_fft=400, win=400, fmin=0.0, fmax=8000.0, mel_scale="htk",
                   preemphasis=0.0, log="db_cmvn")
