"""Audio I/O that never crashes a run: decode with soundfile, mix to mono, resample with torchaudio, crop or pad.

Every way a file can be unusable raises `AudioError` with a short `reason` code (the quarantine table's
vocabulary, `REASONS`) and a message naming the file. Callers that must not stop — dataset checks,
imports, feature precomputation — catch it and quarantine the clip.

Length policy (`fit_length`): longer clips are centre-cropped (the reprogramming reference's policy;
`crop="start"` keeps the beginning), shorter ones are right-padded with silence.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from mirops.atomic import atomic_write

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".opus", ".mp3")
# The container libsndfile must find behind each extension (opus lives in an Ogg container).
CONTAINER_OF_SUFFIX = {".wav": {"WAV", "WAVEX", "RF64", "W64"}, ".flac": {"FLAC"}, ".ogg": {"OGG"},
                       ".opus": {"OGG"}, ".mp3": {"MP3", "MPEG"}}

REASONS = {
    "missing_file": "the file does not exist",
    "not_a_file": "the path is a folder or a special file",
    "unreadable": "the file cannot be opened (permissions)",
    "empty_file": "zero bytes",
    "unsupported_extension": f"not one of {', '.join(AUDIO_SUFFIXES)}",
    "undecodable": "soundfile cannot decode it",
    "wrong_extension": "the content's format does not match the extension",
    "truncated": "the data ends before the header says it should, or decoding stops part-way",
    "no_audio": "decodes to zero samples",
    "non_finite": "NaN or Inf samples",
    "silent": "all silence (peak below the silence floor)",
    "too_short": "far shorter than expected",
}

SILENCE_PEAK = 1e-4  # about -80 dBFS: below any real recording's noise floor
TRUNCATION_TOLERANCE = 0.98  # decoders may lose a few frames of the last block; a truncated file loses more


class AudioError(ValueError):
    """A clip that cannot be used. `reason` is a key of REASONS; the message names the file."""

    def __init__(self, path: Path | str, reason: str, detail: str = "") -> None:
        self.path, self.reason, self.detail = str(path), reason, detail or REASONS[reason]
        super().__init__(f"{path}: {reason} ({self.detail})")


@dataclass(frozen=True)
class ClipInfo:
    """What decoding found out about a usable clip (before resampling and cropping)."""

    sample_rate: int
    channels: int
    duration_s: float
    format: str


def check_path(path: Path) -> None:
    """AudioError unless `path` is a readable, non-empty file with an audio extension."""
    if not path.exists():
        raise AudioError(path, "missing_file")
    if not path.is_file():
        raise AudioError(path, "not_a_file")
    if path.suffix.lower() not in AUDIO_SUFFIXES:
        raise AudioError(path, "unsupported_extension", f"extension {path.suffix!r} is not one of {AUDIO_SUFFIXES}")
    if not os.access(path, os.R_OK):
        raise AudioError(path, "unreadable", "no read permission")
    if path.stat().st_size == 0:
        raise AudioError(path, "empty_file")


def decode(path: Path | str) -> tuple[np.ndarray, ClipInfo]:
    """[frames, channels] float32 at the file's own rate, or AudioError saying why not."""
    path = Path(path)
    check_path(path)
    try:
        with sf.SoundFile(str(path)) as f:
            info = ClipInfo(f.samplerate, f.channels, f.frames / f.samplerate if f.samplerate else 0.0, f.format)
            expected = f.frames
            try:
                wave = f.read(dtype="float32", always_2d=True)
            except (sf.LibsndfileError, RuntimeError) as exc:
                raise AudioError(path, "truncated", f"decoding stopped part-way: {exc}") from exc
    except PermissionError as exc:
        raise AudioError(path, "unreadable", str(exc)) from exc
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
        raise AudioError(path, "undecodable", str(exc).strip() or type(exc).__name__) from exc
    if info.format not in CONTAINER_OF_SUFFIX[path.suffix.lower()]:
        raise AudioError(path, "wrong_extension", f"{info.format} data behind a {path.suffix} extension")
    if len(wave) == 0:
        raise AudioError(path, "no_audio")
    _check_riff_size(path, info.format)
    if 0 < expected < 2**62 and len(wave) < TRUNCATION_TOLERANCE * expected:
        raise AudioError(path, "truncated", f"{len(wave)} of the {expected} frames the header promises")
    return wave, ClipInfo(info.sample_rate, info.channels, len(wave) / info.sample_rate, info.format)


def _check_riff_size(path: Path, container: str) -> None:
    """libsndfile quietly reads what is left of a cut WAV file; its RIFF header still says how long it was."""
    if container != "WAV":
        return
    with open(path, "rb") as f:
        head = f.read(8)
    if len(head) == 8 and head[:4] == b"RIFF" and head[4:8] not in (b"\x00" * 4, b"\xff" * 4):  # 0, -1: size unknown
        promised = int.from_bytes(head[4:8], "little") + 8
        actual = path.stat().st_size
        if actual < promised:
            raise AudioError(path, "truncated", f"{actual} of the {promised} bytes its RIFF header promises")


def check_samples(path: Path | str, wave: np.ndarray, sample_rate: int, min_seconds: float = 0.0) -> None:
    """Raise AudioError for samples no model should see: NaN/Inf, all silence, far too short."""
    if not np.isfinite(wave).all():
        bad = int((~np.isfinite(wave)).sum())
        raise AudioError(path, "non_finite", f"{bad} NaN or Inf samples")
    peak = float(np.abs(wave).max()) if wave.size else 0.0
    if peak < SILENCE_PEAK:
        raise AudioError(path, "silent", f"peak {peak:.1e} < {SILENCE_PEAK:.0e}")
    seconds = wave.shape[0] / sample_rate
    if seconds < min_seconds:
        raise AudioError(path, "too_short", f"{seconds:.2f} s, expected at least {min_seconds:.2f} s")


def to_mono(wave: np.ndarray) -> np.ndarray:
    return wave.mean(axis=1) if wave.ndim == 2 else wave


def resample(wave: np.ndarray, orig: int, target: int) -> np.ndarray:
    if orig == target:
        return wave
    import torch  # lazy: reading, checking and writing audio (ingest, the demo) never needs torch
    import torchaudio.functional as AF

    return AF.resample(torch.from_numpy(np.ascontiguousarray(wave)), orig, target).numpy()


def load_audio(
    path: Path | str, sample_rate: int, seconds: float | None = None, min_seconds: float = 0.0, crop: str = "centre"
) -> np.ndarray:
    """Mono float32 at `sample_rate`, checked; cropped or padded to `seconds` if given (see `fit_length`)."""
    raw, info = decode(path)
    check_samples(path, raw, info.sample_rate, min_seconds)
    wave = resample(to_mono(raw), info.sample_rate, sample_rate)
    if seconds is not None:
        wave = fit_length(wave, int(round(seconds * sample_rate)), crop)
    return np.ascontiguousarray(wave, dtype=np.float32)


def fit_length(wave: np.ndarray, n: int, crop: str = "centre") -> np.ndarray:
    """Crop longer clips (centre, the reference's policy, or start), right-pad shorter ones with silence."""
    if crop not in ("centre", "start"):
        raise ValueError(f"crop policy {crop!r}: expected 'centre' or 'start'")
    if len(wave) > n:
        start = (len(wave) - n) // 2 if crop == "centre" else 0
        return wave[start : start + n]
    if len(wave) < n:
        return np.pad(wave, (0, n - len(wave)))
    return wave


def write_wav(path: Path, wave: np.ndarray, sample_rate: int) -> None:
    """16-bit PCM wav, written under a temporary name and renamed."""
    atomic_write(Path(path), lambda tmp: sf.write(str(tmp), wave, sample_rate, subtype="PCM_16", format="WAV"))
