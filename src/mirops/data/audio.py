"""Audio I/O: decode with soundfile, mix to mono, resample with torchaudio, crop or pad to a length."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf


class AudioError(ValueError):
    """A clip that cannot be used; the message names the file."""


def load_audio(path: Path, sample_rate: int, seconds: float | None = None) -> np.ndarray:
    """Mono float32 at `sample_rate`; centre-cropped or right-padded with zeros to `seconds` if given."""
    try:
        wave, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as exc:
        raise AudioError(f"{path}: cannot decode ({exc})") from exc
    wave = wave.mean(axis=1)
    if not np.isfinite(wave).all():
        raise AudioError(f"{path}: contains NaN or Inf samples")
    if sr != sample_rate:
        import torch
        import torchaudio.functional as AF

        wave = AF.resample(torch.from_numpy(wave), sr, sample_rate).numpy()
    if seconds is not None:
        wave = fit_length(wave, int(round(seconds * sample_rate)))
    return np.ascontiguousarray(wave, dtype=np.float32)


def fit_length(wave: np.ndarray, n: int) -> np.ndarray:
    """Centre-crop longer clips (the reference's policy), right-pad shorter ones with silence."""
    if len(wave) > n:
        start = (len(wave) - n) // 2
        return wave[start : start + n]
    if len(wave) < n:
        return np.pad(wave, (0, n - len(wave)))
    return wave


def write_wav(path: Path, wave: np.ndarray, sample_rate: int) -> None:
    """16-bit PCM wav, written under a temporary name and renamed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    sf.write(str(tmp), wave, sample_rate, subtype="PCM_16", format="WAV")
    tmp.replace(path)
