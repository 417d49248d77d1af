"""A content-addressed cache of decoded audio and front-end features, so a re-run skips finished work.

Keys are hashes of what the value depends on: the audio file's bytes (not its name or mtime, so a
renamed or re-versioned copy hits the same entry) plus the decode or front-end configuration.
Values are .npy files written under a unique temporary name and renamed into place: two processes
filling the same entry at once both write the same bytes and the last rename wins; a reader sees a
whole file or none.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np

from mirops.atomic import atomic_write
from mirops.data.audio import resample

_digests: dict[tuple[str, int, int], str] = {}  # (path, size, mtime_ns) -> sha256: hash each file once per process
_digests_lock = threading.Lock()


def file_digest(path: Path) -> str:
    """sha256 of the file's bytes (memoised per process on path, size and mtime)."""
    stat = os.stat(path)
    key = (os.fspath(path), stat.st_size, stat.st_mtime_ns)
    with _digests_lock:
        if key in _digests:
            return _digests[key]
    with open(path, "rb") as f:
        digest = hashlib.file_digest(f, "sha256").hexdigest()
    with _digests_lock:
        _digests[key] = digest
    return digest


def config_digest(config: dict) -> str:
    """A short stable hash of a configuration (sorted JSON)."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


class ArrayCache:
    """Arrays stored as `<root>/<namespace>/<key[:2]>/<key>.npy`."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.hits = 0
        self.misses = 0

    def path(self, namespace: str, key: str) -> Path:
        return self.root / namespace / key[:2] / f"{key}.npy"

    def get(self, namespace: str, key: str) -> np.ndarray | None:
        path = self.path(namespace, key)
        try:
            value = np.load(path, allow_pickle=False)
        except (FileNotFoundError, ValueError, OSError):  # absent, or a foreign/damaged file: recompute
            self.misses += 1
            return None
        self.hits += 1
        return value

    def put(self, namespace: str, key: str, value: np.ndarray) -> None:
        array = np.ascontiguousarray(value)
        atomic_write(self.path(namespace, key), lambda tmp: np.save(tmp, array, allow_pickle=False))

    def shape(self, namespace: str, key: str) -> tuple[int, ...] | None:
        """The stored array's shape without reading its data (None when absent)."""
        try:
            return np.load(self.path(namespace, key), mmap_mode="r", allow_pickle=False).shape
        except (FileNotFoundError, ValueError, OSError):
            return None

    def get_or_compute(self, namespace: str, key: str, compute: Callable[[], np.ndarray]) -> np.ndarray:
        value = self.get(namespace, key)
        if value is None:
            value = compute()
            self.put(namespace, key, value)
        return value


def audio_key(path: Path, sample_rate: int) -> str:
    """The file's content, its extension (the same bytes behind a wrong extension must still fail) and the rate."""
    return f"{file_digest(path)}{Path(path).suffix.lower()}-{sample_rate}"


def decoded_audio(cache: ArrayCache, path: Path, sample_rate: int, load: Callable[[], np.ndarray]) -> np.ndarray:
    """Mono audio at `sample_rate` (uncropped), decoded once per file content and rate."""
    return cache.get_or_compute("audio", audio_key(path, sample_rate), load)


def audio_filler(cache: ArrayCache, sample_rate: int) -> Callable:
    """An `on_wave(path, mono_wave, info)` for the audio check: keep what it decoded, resampled, for later runs."""
    def keep(path: Path, wave: np.ndarray, info) -> None:
        key = audio_key(path, sample_rate)
        if cache.shape("audio", key) is None:
            cache.put("audio", key, np.asarray(resample(wave, info.sample_rate, sample_rate), dtype=np.float32))

    return keep


def known_seconds(cache: ArrayCache, sample_rate: int) -> Callable[[Path], float | None]:
    """Duration of a file whose content was decoded and checked before (its audio is cached), else None."""

    def seconds(path: Path) -> float | None:
        shape = cache.shape("audio", audio_key(path, sample_rate))
        return shape[0] / sample_rate if shape else None

    return seconds
