"""AST's front end: Kaldi-compatible log-mel filter banks, padded or cropped to a fixed number of frames.

The settings are those of the reprogramming reference (Chen & Lerch 2023, docs/methods.md §1.3) and of AST's own
training code: 16 kHz, `torchaudio.compliance.kaldi.fbank` with a Hanning window, 128 mel bins, 25 ms
frames every 10 ms, dither 0, no energy term, Kaldi defaults otherwise (pre-emphasis 0.97, per-frame DC
removal, 20 Hz to Nyquist, log of the power mel spectrum floored at float32 epsilon). 10 s give 998 frames,
zero-padded to 1024 (zero in the log domain, before any normalisation, as the reference pads).

Two switches around that:

* `normalize` (default off): AudioSet normalisation `(x - mean) / (2 * std)` with mean -4.2677393 and std
  4.5689974, exactly what `transformers.ASTFeatureExtractor` does with `do_normalize=True` (after padding,
  so padded frames become `(0 - mean) / (2 * std)`). The reference ran OpenMIC without it (`skip_norm`),
  which is what its published numbers were produced with; Hung et al. (docs/methods.md §2) used it.
* `peak_normalize` (default on): divide each clip by its peak |x| first. The reference peak-normalised
  every file before the fbank; without normalisation of the fbank itself, a clip's level would otherwise
  shift every log-mel bin by 2·log(gain) and the frozen AST would see a different input for the same
  music. Here it applies to the clip the front end receives (the crop), not to the whole file as in the
  reference; a silent clip is left as it is. `ASTFeatureExtractor` does not peak-normalise.

Functions below (`kaldi_fbank`, `fit_frames`, `audioset_normalize`, `peak_normalize`) are what the module
composes, so tests can call them directly.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
import torchaudio
from torch import Tensor, nn

SAMPLE_RATE = 16000
NUM_MEL_BINS = 128
TARGET_LENGTH = 1024  # frames; AST's position embeddings are laid out for exactly this many
FRAME_LENGTH_MS = 25.0
FRAME_SHIFT_MS = 10.0
WINDOW_SAMPLES = int(SAMPLE_RATE * FRAME_LENGTH_MS / 1000)  # 400: the shortest input that yields a frame
AUDIOSET_MEAN = -4.2677393
AUDIOSET_STD = 4.5689974
KALDI_LOG_FLOOR = math.log(torch.finfo(torch.float32).eps)  # the fbank value of digital silence: -15.94


def kaldi_fbank(wave: Tensor, num_mel_bins: int = NUM_MEL_BINS, sample_rate: int = SAMPLE_RATE) -> Tensor:
    """One clip [samples] -> log-mel fbank [frames, num_mel_bins] with the reference's Kaldi settings."""
    if wave.shape[-1] < WINDOW_SAMPLES:
        # Kaldi refuses an input shorter than one window: pad with silence so there is one frame.
        wave = F.pad(wave, (0, WINDOW_SAMPLES - wave.shape[-1]))
    return torchaudio.compliance.kaldi.fbank(
        wave.reshape(1, -1),
        htk_compat=True,  # only changes the energy's position, and there is no energy term: kept as the reference
        sample_frequency=sample_rate,
        use_energy=False,
        window_type="hanning",
        num_mel_bins=num_mel_bins,
        dither=0.0,
        frame_length=FRAME_LENGTH_MS,
        frame_shift=FRAME_SHIFT_MS,
    )


def fit_frames(fbank: Tensor, target_length: int = TARGET_LENGTH, value: float = 0.0) -> Tensor:
    """Crop [frames, bins] to its first `target_length` frames or pad its end with `value` (0, the reference's)."""
    missing = target_length - fbank.shape[0]
    if missing > 0:
        return F.pad(fbank, (0, 0, 0, missing), value=value)
    return fbank[:target_length]


def audioset_normalize(x: Tensor, mean: float = AUDIOSET_MEAN, std: float = AUDIOSET_STD) -> Tensor:
    """AST's convention: subtract the mean, divide by twice the standard deviation."""
    return (x - mean) / (2 * std)


def peak_normalize(wave: Tensor) -> Tensor:
    """Scale each clip of [B, samples] to peak |x| = 1; all-zero clips stay zero."""
    peak = wave.abs().amax(dim=-1, keepdim=True)
    return wave / torch.where(peak > 0, peak, torch.ones_like(peak))


class AstFbank(nn.Module):
    """Waveform [B, samples] (float32, 16 kHz, mono, in [-1, 1]) -> fbank [B, target_length, num_mel_bins]."""

    def __init__(
        self,
        target_length: int = TARGET_LENGTH,
        num_mel_bins: int = NUM_MEL_BINS,
        normalize: bool = False,
        peak_normalize: bool = True,
        mean: float = AUDIOSET_MEAN,
        std: float = AUDIOSET_STD,
    ) -> None:
        super().__init__()
        self.target_length, self.num_mel_bins = target_length, num_mel_bins
        self.normalize, self.peak_normalize = normalize, peak_normalize
        self.mean, self.std = mean, std

    def config(self) -> dict:
        """Everything the output depends on: the cache key of precomputed frames."""
        return {"frontend": "ast_kaldi_fbank", "sample_rate": SAMPLE_RATE, "num_mel_bins": self.num_mel_bins,
                "frame_length_ms": FRAME_LENGTH_MS, "frame_shift_ms": FRAME_SHIFT_MS, "window": "hanning",
                "target_length": self.target_length, "peak_normalize": self.peak_normalize,
                "normalize": self.normalize, "mean": self.mean if self.normalize else None,
                "std": self.std if self.normalize else None}

    @property
    def fill_value(self) -> float:
        """What padded (and, in the reference, SpecAugment-masked) frames hold in this front end's output."""
        return (0.0 - self.mean) / (2 * self.std) if self.normalize else 0.0

    def forward(self, wave: Tensor) -> Tensor:
        if wave.dim() == 1:
            wave = wave.unsqueeze(0)
        if wave.dim() != 2:
            raise ValueError(f"expected a waveform [batch, samples], got shape {tuple(wave.shape)}")
        if self.peak_normalize:
            wave = peak_normalize(wave)
        frames = torch.stack([fit_frames(kaldi_fbank(clip, self.num_mel_bins), self.target_length) for clip in wave])
        return audioset_normalize(frames, self.mean, self.std) if self.normalize else frames
