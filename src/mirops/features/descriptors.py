"""Per-clip audio descriptors: loudness, level, clipping, silence and spectral shape, one row per clip.

These are what drift monitoring compares between the training audio and a new batch: a change of
microphone, mastering or codec shows here before it shows in the model's accuracy. One magnitude STFT
(torchaudio) feeds the spectral descriptors; the small per-frame formulas are pure functions on it.
Per-frame values are averaged over non-silent frames only, so a clip padded with silence describes
the same sound as the clip without the padding. Every value is finite, silent clips included.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from typing import TypeVar

import numpy as np
import pandas as pd
import torch
import torchaudio
from torch import Tensor

from mirops.progress import progress

DESCRIPTOR_COLUMNS: list[str] = [
    "duration_s",
    "rms_db",
    "loudness_lufs",
    "peak",
    "clipping_ratio",
    "silence_ratio",
    "spectral_centroid_hz",
    "spectral_bandwidth_hz",
    "spectral_rolloff_hz",
    "spectral_flatness",
    "zero_crossing_rate",
]

REFERENCE_RATE = 16000
REFERENCE_N_FFT = 1024  # 64 ms at 16 kHz; hop is half of it
CLIP_LEVEL = 0.999  # |x| at or above this counts as a clipped sample
SILENCE_DB = -60.0  # frames quieter than this (dBFS RMS) are silence
SILENCE_FRAME_S = 0.025
ROLLOFF_FRACTION = 0.85
RMS_FLOOR_DB = -120.0  # rms_db of digital silence, instead of -inf
LUFS_FLOOR = -70.0  # BS.1770's absolute gate: nothing quieter is measured, so it is the floor
LOUDNESS_BLOCK_S = 0.4  # BS.1770 gating block; shorter clips have no loudness
EPS = 1e-10
PROGRESS_AFTER = 20  # clips; fewer finish before a progress bar would be worth drawing


def frame_sizes(sample_rate: int) -> tuple[int, int]:
    """(n_fft, hop): 1024/512 at 16 kHz, the same duration (to a power of two) at other rates."""
    n_fft = 2 ** max(6, round(math.log2(REFERENCE_N_FFT * sample_rate / REFERENCE_RATE)))
    return n_fft, n_fft // 2


def level_db(rms: Tensor) -> Tensor:
    return 20.0 * torch.log10(rms.clamp_min(EPS))


def frame_rms(frames: Tensor) -> Tensor:
    """frames [n, length] -> RMS per frame [n]."""
    return frames.square().mean(dim=-1).sqrt()


def zero_crossing_rate(frames: Tensor) -> Tensor:
    """Share of adjacent sample pairs per frame whose signs differ (0 counts as positive)."""
    signs = frames >= 0
    return (signs[:, 1:] != signs[:, :-1]).float().mean(dim=-1)


def spectral_centroid(mag: Tensor, freqs: Tensor) -> Tensor:
    """mag [bins, frames] magnitude, freqs [bins] in Hz -> magnitude-weighted mean frequency [frames]."""
    weights = mag / mag.sum(dim=0).clamp_min(EPS)
    return (freqs[:, None] * weights).sum(dim=0)


def spectral_bandwidth(mag: Tensor, freqs: Tensor, centroid: Tensor) -> Tensor:
    """Magnitude-weighted standard deviation of frequency around the centroid [frames] (librosa, p=2)."""
    weights = mag / mag.sum(dim=0).clamp_min(EPS)
    return ((freqs[:, None] - centroid[None, :]).square() * weights).sum(dim=0).sqrt()


def spectral_rolloff(mag: Tensor, freqs: Tensor, fraction: float = ROLLOFF_FRACTION) -> Tensor:
    """Lowest frequency below which `fraction` of the frame's magnitude lies [frames]."""
    cumulative = mag.cumsum(dim=0)
    reached = cumulative >= fraction * cumulative[-1:, :]
    return freqs[reached.float().argmax(dim=0)]


def spectral_flatness(mag: Tensor) -> Tensor:
    """Geometric over arithmetic mean of the power spectrum [frames]: ~1 for white noise, ~0 for a tone."""
    power = mag.square().clamp_min(EPS)
    return power.log().mean(dim=0).exp() / power.mean(dim=0)


def silence_ratio(wave: Tensor, sample_rate: int) -> float:
    """Share of 25 ms frames whose RMS is below -60 dBFS (a trailing partial frame counts as one)."""
    size = max(1, round(SILENCE_FRAME_S * sample_rate))
    padded = torch.nn.functional.pad(wave, (0, -len(wave) % size))
    frames = padded.reshape(-1, size)
    return float((level_db(frame_rms(frames)) < SILENCE_DB).float().mean())


def loudness_lufs(wave: Tensor, sample_rate: int) -> float:
    """Integrated loudness (ITU-R BS.1770), floored at -70 LUFS for clips too short or quiet to gate."""
    if len(wave) < round(LOUDNESS_BLOCK_S * sample_rate) or float(wave.abs().max()) == 0.0:
        return LUFS_FLOOR
    value = float(torchaudio.functional.loudness(wave[None, :], sample_rate))
    return max(value, LUFS_FLOOR) if math.isfinite(value) else LUFS_FLOOR


def _stft_frames(wave: Tensor, sample_rate: int) -> tuple[Tensor, Tensor, Tensor]:
    """(magnitude [bins, frames], time frames [frames, n_fft], freqs [bins]) on the same framing."""
    n_fft, hop = frame_sizes(sample_rate)
    # No centring, so STFT frame i is exactly samples [i*hop, i*hop + n_fft); clips shorter than one
    # window are zero-padded to one.
    if len(wave) < n_fft:
        wave = torch.nn.functional.pad(wave, (0, n_fft - len(wave)))
    spec = torchaudio.transforms.Spectrogram(n_fft=n_fft, hop_length=hop, power=1.0, center=False)
    mag = spec(wave)
    frames = wave.unfold(0, n_fft, hop)
    freqs = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    return mag, frames, freqs


def _spectral_means(wave: Tensor, sample_rate: int) -> dict[str, float]:
    mag, frames, freqs = _stft_frames(wave, sample_rate)
    active = level_db(frame_rms(frames)) >= SILENCE_DB
    if not bool(active.any()):
        # Silence has no spectral shape: report zeros rather than NaN.
        return dict.fromkeys(
            ["spectral_centroid_hz", "spectral_bandwidth_hz", "spectral_rolloff_hz", "spectral_flatness",
             "zero_crossing_rate"], 0.0,
        )
    mag, frames = mag[:, active], frames[active]
    centroid = spectral_centroid(mag, freqs)
    return {
        "spectral_centroid_hz": float(centroid.mean()),
        "spectral_bandwidth_hz": float(spectral_bandwidth(mag, freqs, centroid).mean()),
        "spectral_rolloff_hz": float(spectral_rolloff(mag, freqs).mean()),
        "spectral_flatness": float(spectral_flatness(mag).mean()),
        "zero_crossing_rate": float(zero_crossing_rate(frames).mean()),
    }


def _as_mono_tensor(wave: np.ndarray) -> Tensor:
    array = np.asarray(wave, dtype=np.float32)
    if array.ndim == 2 and 1 in array.shape:
        array = array.reshape(-1)
    if array.ndim != 1:
        raise ValueError(f"expected a mono clip (1-D samples), got an array of shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError("clip contains NaN or Inf samples")
    return torch.from_numpy(np.ascontiguousarray(array))


def clip_descriptors(wave: np.ndarray, sample_rate: int) -> dict[str, float]:
    """Descriptors of one mono float32 clip, keyed as in DESCRIPTOR_COLUMNS; every value finite."""
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    x = _as_mono_tensor(wave)
    if len(x) == 0:
        raise ValueError("clip has no samples")
    values = {
        "duration_s": len(x) / sample_rate,
        "rms_db": max(float(level_db(frame_rms(x[None, :]))[0]), RMS_FLOOR_DB),
        "loudness_lufs": loudness_lufs(x, sample_rate),
        "peak": float(x.abs().max()),
        "clipping_ratio": float((x.abs() >= CLIP_LEVEL).float().mean()),
        "silence_ratio": silence_ratio(x, sample_rate),
        **_spectral_means(x, sample_rate),
    }
    return {name: float(values[name]) for name in DESCRIPTOR_COLUMNS}


T = TypeVar("T")


def _with_progress(items: Iterable[T], description: str) -> Iterator[T]:
    """Yield items, with progress (`mirops.progress`: a bar, or log lines off a terminal) for more than
    PROGRESS_AFTER of them; an iterable of unknown length goes by quietly."""
    total = len(items) if hasattr(items, "__len__") else None  # type: ignore[arg-type]
    if total is None or total <= PROGRESS_AFTER:
        yield from items
        return
    with progress(description, total) as advance:
        for item in items:
            yield item
            advance()


def descriptor_table(clips: Iterable[tuple[str, np.ndarray]], sample_rate: int) -> pd.DataFrame:
    """One row per clip: clip_id then DESCRIPTOR_COLUMNS. A bad clip raises an error naming its id."""
    rows = []
    for clip_id, wave in _with_progress(clips, "audio descriptors"):
        try:
            rows.append({"clip_id": clip_id, **clip_descriptors(wave, sample_rate)})
        except ValueError as exc:
            raise ValueError(f"clip {clip_id!r}: {exc}") from exc
    return pd.DataFrame(rows, columns=["clip_id", *DESCRIPTOR_COLUMNS])

