"""A corpus of broken audio files, one per way real downloads go wrong, with the quarantine reason each must get."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import soundfile as sf

SR = 16000


def tone(seconds: float, sr: int = SR, level: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (level * np.sin(2 * np.pi * 440 * t)).astype(np.float32)


def _cut(src: Path, dst: Path, keep: float) -> None:
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * keep)])


def write_corpus(folder: Path, seconds: float = 3.0) -> dict[str, str]:
    """Write good and broken files under `folder/audio/`; returns {relative path: expected reason or "ok"}."""
    audio = folder / "audio"
    audio.mkdir(parents=True, exist_ok=True)
    good = tone(seconds)
    sf.write(audio / "good.wav", good, SR, subtype="PCM_16")
    sf.write(audio / "good.flac", good, SR)
    sf.write(audio / "good.ogg", good, SR)
    sf.write(audio / "good.mp3", good, SR, format="MP3")
    sf.write(audio / "good.opus", good, SR, format="OGG", subtype="OPUS")
    loud = tone(seconds, 44100)
    sf.write(audio / "good_44k_stereo.ogg", np.stack([loud, 0.5 * loud], axis=1), 44100)
    good_files = ("good.wav", "good.flac", "good.ogg", "good.mp3", "good.opus", "good_44k_stereo.ogg")
    expected = {f"audio/{n}": "ok" for n in good_files}

    def broken(name: str, reason: str) -> Path:
        expected[f"audio/{name}"] = reason
        return audio / name

    broken("zero_bytes.wav", "empty_file").write_bytes(b"")
    broken("text_file.wav", "undecodable").write_text("this is not audio\n")
    broken("random_bytes.ogg", "undecodable").write_bytes(np.random.default_rng(0).bytes(4096))
    _cut(audio / "good.wav", broken("truncated.wav", "truncated"), 0.4)
    _cut(audio / "good.flac", broken("truncated.flac", "truncated"), 0.4)
    _cut(audio / "good.mp3", broken("truncated.mp3", "truncated"), 0.3)
    shutil.copy(audio / "good.flac", broken("flac_named.wav", "wrong_extension"))
    shutil.copy(audio / "good.ogg", broken("ogg_named.mp3", "wrong_extension"))
    broken("header_only.wav", "no_audio").write_bytes((audio / "good.wav").read_bytes()[:44])
    nan = good.copy()
    nan[100:200] = np.nan
    sf.write(broken("nan_samples.wav", "non_finite"), nan, SR, subtype="FLOAT")
    inf = good.copy()
    inf[5] = np.inf
    sf.write(broken("inf_samples.wav", "non_finite"), inf, SR, subtype="FLOAT")
    sf.write(broken("all_silence.wav", "silent"), np.zeros_like(good), SR, subtype="PCM_16")
    sf.write(broken("far_too_short.wav", "too_short"), tone(0.1), SR, subtype="PCM_16")
    broken("a_folder.wav", "not_a_file").mkdir()
    broken("notes.txt", "unsupported_extension").write_text("liner notes")
    expected["audio/never_downloaded.ogg"] = "missing_file"
    if os.geteuid() != 0:  # root reads anything: the permission case only exists for other users
        sf.write(broken("no_permission.wav", "unreadable"), good, SR, subtype="PCM_16")
        os.chmod(audio / "no_permission.wav", 0)
    return expected
