"""YAMNet's log-mel front end in torchaudio: 16 kHz mono -> log-mel frames -> 0.96 s patches.

Matches the TensorFlow front end of YAMNet (`features.py` in tensorflow/models): a magnitude STFT with
a 25 ms periodic Hann window, 10 ms hop and a 512-point FFT, no centring; 64 HTK mel bands from 125 to
7500 Hz; `log(mel + 1e-6)`; patches of 96 frames every 48 frames. Differentiable end to end.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
import torchaudio
from torch import Tensor, nn

SAMPLE_RATE = 16000
WINDOW_SAMPLES = 400  # 25 ms
HOP_SAMPLES = 160  # 10 ms
N_FFT = 512
N_MELS = 64
F_MIN = 125.0
F_MAX = 7500.0
LOG_OFFSET = 1e-6
PATCH_FRAMES = 96  # 0.96 s
PATCH_HOP = 48  # 0.48 s

# torch.stft centres a short window inside the n_fft frame, so each frame would start (512-400)/2 = 56
# samples late and the last 112 samples could not start a frame. TF frames 400 samples, then zero-pads
# to 512. Padding the waveform by 56 on both sides gives TF's frames exactly (same count, same samples;
# the shift only changes the phase, not the magnitude).
_WINDOW_PAD = (N_FFT - WINDOW_SAMPLES) // 2


def num_frames(num_samples: int) -> int:
    """Log-mel frames YAMNet's front end yields for a waveform of `num_samples` (0 if too short)."""
    return max(0, 1 + (num_samples - WINDOW_SAMPLES) // HOP_SAMPLES)


def num_patches(frames: int, patch_frames: int = PATCH_FRAMES, hop_frames: int = PATCH_HOP) -> int:
    """Patches `frame_patches` yields: rounds up, as YAMNet's `pad_waveform` does (998 frames -> 20)."""
    return 1 + math.ceil(max(0, frames - patch_frames) / hop_frames)


class YamnetLogMel(nn.Module):
    """Waveform [B, samples] (float32, 16 kHz, mono) -> log-mel [B, frames, 64]."""

    def __init__(self) -> None:
        super().__init__()
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=SAMPLE_RATE,
            n_fft=N_FFT,
            win_length=WINDOW_SAMPLES,
            hop_length=HOP_SAMPLES,
            f_min=F_MIN,
            f_max=F_MAX,
            n_mels=N_MELS,
            window_fn=torch.hann_window,  # periodic by default, like tf.signal.hann_window
            power=1.0,  # YAMNet uses the magnitude, not the power
            center=False,
            mel_scale="htk",
            norm=None,
        )

    @staticmethod
    def config() -> dict:
        """Everything the output depends on: the cache key of precomputed frames."""
        return {"frontend": "yamnet_logmel", "sample_rate": SAMPLE_RATE, "window": WINDOW_SAMPLES,
                "hop": HOP_SAMPLES, "n_fft": N_FFT, "n_mels": N_MELS, "f_min": F_MIN, "f_max": F_MAX,
                "log_offset": LOG_OFFSET}

    def forward(self, wave: Tensor) -> Tensor:
        if wave.dim() == 1:
            wave = wave.unsqueeze(0)
        if wave.dim() != 2:
            raise ValueError(f"expected a waveform [batch, samples], got shape {tuple(wave.shape)}")
        if wave.shape[-1] < WINDOW_SAMPLES:
            # Shorter than one analysis window: silence-pad so there is one frame to look at.
            wave = F.pad(wave, (0, WINDOW_SAMPLES - wave.shape[-1]))
        mel = self.mel(F.pad(wave, (_WINDOW_PAD, _WINDOW_PAD)))  # [B, 64, frames]
        return torch.log(mel + LOG_OFFSET).transpose(1, 2)


def frame_patches(logmel: Tensor, patch_frames: int = PATCH_FRAMES, hop_frames: int = PATCH_HOP) -> Tensor:
    """Log-mel [B, T, 64] -> patches [B, P, patch_frames, 64].

    The end is padded with `log(1e-6)` (the log of silence) up to a whole number of hops, as YAMNet pads
    its waveform, so every frame lands in a patch and a clip shorter than a patch still yields one:
    P = 1 + ceil(max(0, T - 96) / 48). 10 s -> 998 frames -> 20 patches (the 20th is 38 frames of
    audio plus silence).
    """
    if logmel.dim() != 3:
        raise ValueError(f"expected log-mel [batch, frames, mels], got shape {tuple(logmel.shape)}")
    frames = logmel.shape[1]
    patches = num_patches(frames, patch_frames, hop_frames)
    needed = patch_frames + (patches - 1) * hop_frames
    if needed > frames:
        logmel = F.pad(logmel, (0, 0, 0, needed - frames), value=math.log(LOG_OFFSET))
    # unfold gives [B, P, mels, patch_frames]: put time back before mels.
    return logmel.unfold(1, patch_frames, hop_frames).transpose(2, 3)
