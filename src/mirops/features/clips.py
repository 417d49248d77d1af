"""Per-clip features through the content-addressed cache: decoded audio, front-end frames, descriptors, embeddings.

Every function here takes relative paths of clips under one folder and returns, for each clip, either
its array or the reason it could not be used (an `AudioError`): a broken file is skipped and reported,
never a crash. What was computed once — for this dataset version or any other holding the same audio —
is read back from the cache.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from mirops.data.audio import AudioError, check_path, fit_length, load_audio
from mirops.data.cache import ArrayCache, config_digest, decoded_audio, file_digest
from mirops.features import fingerprint as fingerprinting
from mirops.features.descriptors import DESCRIPTOR_COLUMNS, clip_descriptors


@dataclass
class ClipLoader:
    """Decoded mono audio at `sample_rate` (cached), then cropped/padded to `seconds` by `crop`."""

    folder: Path
    sample_rate: int
    seconds: float | None = None
    crop: str = "centre"
    min_seconds: float = 0.0
    cache: ArrayCache | None = None

    def full(self, rel_path: str) -> np.ndarray:
        path = self.folder / rel_path
        load = lambda: load_audio(path, self.sample_rate, None, self.min_seconds)  # noqa: E731
        return decoded_audio(self.cache, path, self.sample_rate, load) if self.cache else load()

    def wave(self, rel_path: str) -> np.ndarray:
        wave = self.full(rel_path)
        if self.seconds is None:
            return wave
        return fit_length(wave, int(round(self.seconds * self.sample_rate)), self.crop)

    def config(self) -> dict:
        return {"sample_rate": self.sample_rate, "seconds": self.seconds, "crop": self.crop}

    def key(self, rel_path: str, *config: dict) -> str:
        """Cache key of a value derived from this clip: its audio bytes plus everything the value depends on."""
        path = self.folder / rel_path
        return f"{file_digest(path)}{path.suffix.lower()}-{config_digest({'load': self.config(), 'more': config})}"


@dataclass
class ClipResults:
    """Arrays for the clips that worked, in input order, and why the others did not."""

    paths: list[str] = field(default_factory=list)
    arrays: list[np.ndarray] = field(default_factory=list)
    failed: dict[str, AudioError] = field(default_factory=dict)

    def stack(self) -> np.ndarray:
        return np.stack(self.arrays) if self.arrays else np.empty((0,), dtype=np.float32)


def per_clip(
    loader: ClipLoader,
    paths: Sequence[str],
    namespace: str,
    config: dict,
    compute: Callable[[np.ndarray], np.ndarray],
    progress: Callable[[], None] | None = None,
) -> ClipResults:
    """`compute(wave)` for every clip, through the cache under `namespace`; broken clips are collected."""
    out = ClipResults()
    for rel in paths:
        try:
            check_path(loader.folder / rel)  # before hashing: a folder or missing file has no content key
            if loader.cache is None:
                value = compute(loader.wave(rel))
            else:
                value = loader.cache.get_or_compute(namespace, loader.key(rel, config),
                                                    lambda rel=rel: compute(loader.wave(rel)))
        except AudioError as exc:
            out.failed[rel] = exc
        else:
            out.paths.append(rel)
            out.arrays.append(value)
        if progress is not None:
            progress()
    return out


def frontend_frames(loader: ClipLoader, paths: Sequence[str], frontend: torch.nn.Module, frontend_config: dict,
                    progress: Callable[[], None] | None = None) -> ClipResults:
    """The front end's frames (e.g. YAMNet's log-mel [T, 64]) of each clip."""

    @torch.no_grad()
    def compute(wave: np.ndarray) -> np.ndarray:
        return frontend(torch.from_numpy(wave)[None])[0].cpu().numpy()

    return per_clip(loader, paths, "frontend", frontend_config, compute, progress)


def descriptors(loader: ClipLoader, paths: Sequence[str], progress: Callable[[], None] | None = None) -> ClipResults:
    """Audio descriptors (DESCRIPTOR_COLUMNS order) of each clip, as float64 vectors."""

    def compute(wave: np.ndarray) -> np.ndarray:
        values = clip_descriptors(wave, loader.sample_rate)
        return np.array([values[c] for c in DESCRIPTOR_COLUMNS], dtype=np.float64)

    return per_clip(loader, paths, "descriptors", {"columns": list(DESCRIPTOR_COLUMNS), "v": 1}, compute, progress)


def embeddings(loader: ClipLoader, paths: Sequence[str], embed: Callable[[np.ndarray], np.ndarray], model_key: str,
               progress: Callable[[], None] | None = None) -> ClipResults:
    """`embed(wave)` (e.g. a backbone's mean clip embedding) of each clip; `model_key` names the model and weights."""
    return per_clip(loader, paths, "embeddings", {"model": model_key}, embed, progress)


def fingerprints(loader: ClipLoader, paths: Sequence[str], progress: Callable[[], None] | None = None) -> ClipResults:
    """Audio fingerprints (uint32 [2, frames], see `features.fingerprint`) of each clip, for the near-duplicate
    search of the leakage audit; use the whole clip (`seconds=None`), a crop hides what lies outside it."""

    def compute(wave: np.ndarray) -> np.ndarray:
        return fingerprinting.fingerprint(wave, loader.sample_rate)

    return per_clip(loader, paths, "fingerprints", {"v": 1, **fingerprinting.config()}, compute, progress)
