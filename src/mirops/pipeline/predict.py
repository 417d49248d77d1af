"""Predict (`mirops predict`): files or folders in, class probabilities out, from a registered model.

Models load only through the registry (`models:/NAME@ALIAS` or `models:/NAME/VERSION`), so every answer
names the version that gave it, and they are fed as their serving spec says (`mirops.models.serving`): audio
through the project's own decoding (`mirops.data.audio`) at the model's sample rate, cut into clip-length
windows whose probabilities are averaged, a class positive at the model's threshold. A file that cannot be
used gets an entry saying why, and the other files are still classified.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mirops.config import Settings
from mirops.data.audio import AUDIO_SUFFIXES, AudioError, load_audio
from mirops.features.windows import windows
from mirops.models.serving import ServingSpec
from mirops.progress import progress
from mirops.registry import models, tracking
from mirops.registry.models import ModelRef


@dataclass
class FilePrediction:
    path: str
    probabilities: dict[str, float]  # class -> probability, in the model's class order
    positive: list[str]              # classes with probability >= threshold, most probable first
    duration_s: float
    windows: int                     # clip-length windows whose probabilities were averaged


@dataclass
class FileFailure:
    path: str
    reason: str  # a key of mirops.data.audio.REASONS (or "no_audio_files" for an empty folder)
    detail: str


@dataclass
class Predictions:
    """What `mirops predict --json` prints (as `dataclasses.asdict`): the version that answered, how the audio
    was fed to it, one entry per classified file and one per file that could not be used."""

    model: ModelRef
    serving: ServingSpec
    predictions: list[FilePrediction]
    failed: list[FileFailure]


def expand(paths: Sequence[str | Path]) -> tuple[list[Path], list[FileFailure]]:
    """Files as given, folders recursively (audio extensions only, sorted); an empty folder is a failure."""
    files, failed = [], []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)
            if not found:
                failed.append(FileFailure(str(path), "no_audio_files",
                                          f"a folder without audio files ({', '.join(AUDIO_SUFFIXES)})"))
            files.extend(found)
        else:  # missing files and wrong extensions are reported by the decoder, with its reason
            files.append(path)
    return files, failed


def predict(settings: Settings, model_uri: str, paths: Sequence[str | Path], batch_size: int = 16,
            threshold: float | None = None) -> Predictions:
    """Classify audio files and folders with a registered model of the project's registry. Per file:
    probability per class, the classes at or above the threshold (default: the model's), the duration;
    undecodable files are listed in `failed`."""
    if isinstance(paths, str | Path):  # one path, not a sequence of characters
        paths = [paths]
    if batch_size < 1:
        raise ValueError(f"batch size {batch_size}: expected at least 1")
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold {threshold}: expected a probability in [0, 1]")
    tracking.point_at_store(settings)  # reading only: no experiment is created
    ref = models.resolve(model_uri)
    # Load the resolved version, not the alias: the alias may move while we run, the answer must not.
    model, serving = models.load_served(ref.version_uri)
    serving = serving.with_threshold(threshold)
    classes, n = list(serving.classes), serving.window_samples

    files, failed = expand(paths)
    sums: dict[int, np.ndarray] = {}
    left: dict[int, int] = {}       # windows of a file still waiting for the model
    n_windows: dict[int, int] = {}
    durations: dict[int, float] = {}
    pending: list[tuple[int, np.ndarray]] = []  # (file index, window), across files so batches stay full
    done: dict[int, FilePrediction] = {}
    errors: dict[int, FileFailure] = {}

    def finish(i: int) -> None:
        probs = (sums.pop(i) / n_windows[i]).tolist()
        ranked = sorted(zip(classes, probs, strict=True), key=lambda cp: -cp[1])
        done[i] = FilePrediction(str(files[i]), dict(zip(classes, probs, strict=True)),
                                 [c for c, p in ranked if p >= serving.threshold], durations[i], n_windows[i])

    def run_batch() -> None:
        with torch.no_grad():
            logits = model(torch.from_numpy(np.stack([w for _, w in pending])))
        if logits.ndim != 2 or logits.shape[1] != len(classes):
            raise ValueError(f"version {ref.version} returned logits of shape {tuple(logits.shape)}, expected "
                             f"[batch, {len(classes)}] for its classes")
        for (i, _), p in zip(pending, torch.sigmoid(logits.float()).numpy().astype(np.float64), strict=True):
            sums[i] = sums.get(i, 0.0) + p
            left[i] -= 1
            if left[i] == 0:
                finish(i)
        pending.clear()

    with progress(f"predict ({ref.name} v{ref.version})", len(files)) as advance:
        for i, path in enumerate(files):
            try:
                wave = load_audio(path, serving.sample_rate)
            except AudioError as exc:
                errors[i] = FileFailure(str(path), exc.reason, exc.detail)
                advance()
                continue
            durations[i] = len(wave) / serving.sample_rate
            chunks = windows(wave, n)
            left[i] = n_windows[i] = len(chunks)
            for chunk in chunks:
                pending.append((i, chunk))
                if len(pending) == batch_size:
                    run_batch()
            advance()
        if pending:
            run_batch()
    order = range(len(files))
    return Predictions(ref, serving, [done[i] for i in order if i in done],
                       failed + [errors[i] for i in order if i in errors])
