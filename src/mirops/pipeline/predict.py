"""Predict (`mirops predict`): files or folders in, class probabilities out, from a registered model.

Models load only through the registry (`models:/NAME@ALIAS` or `models:/NAME/VERSION`), so every answer
names the version that gave it, and they are fed as their serving spec says (`mirops.models.serving`): audio
through the project's own decoding (`mirops.data.audio`) at the model's sample rate, cut into clip-length
windows whose probabilities are averaged, a class positive at the model's threshold. The windowing and the
averaging are the model's own pyfunc (`mirops.registry.waveform_pyfunc`, what `mlflow.pyfunc.load_model`
gives anyone), so `mirops predict` and MLflow serving give the same numbers. A file that cannot be used gets
an entry saying why, and the other files are still classified.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from mirops.config import Settings
from mirops.data.audio import AUDIO_SUFFIXES, AudioError, load_audio
from mirops.features.windows import windows
from mirops.models.serving import ServingSpec
from mirops.progress import progress
from mirops.registry import models, tracking
from mirops.registry.models import ModelRef
from mirops.registry.waveform_pyfunc import WAVE_COLUMN


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
    # Load the resolved version, not the alias: the alias may move while we run, the answer must not. The
    # classifier is the model's own pyfunc (what `mlflow.pyfunc.load_model` gives anyone), so the windowing,
    # the averaging and the class columns are the served model's, not a second copy of them here.
    classifier, serving = models.load_classifier(ref.version_uri)
    serving = serving.with_threshold(threshold)
    classes = list(serving.classes)

    files, failed = expand(paths)
    done: list[FilePrediction] = []
    with progress(f"predict ({ref.name} v{ref.version})", len(files)) as advance:
        for path in files:
            try:
                wave = load_audio(path, serving.sample_rate)
            except AudioError as exc:
                failed.append(FileFailure(str(path), exc.reason, exc.detail))
                advance()
                continue
            answer = classifier.predict(pd.DataFrame({WAVE_COLUMN: [wave]}), params={"batch_size": batch_size})
            if list(answer.columns) != classes or len(answer) != 1:
                raise ValueError(f"version {ref.version} answered columns {list(answer.columns)} for one file, "
                                 f"expected one row with its classes {classes}")
            probs = dict(zip(classes, answer.iloc[0].astype(float).tolist(), strict=True))
            ranked = sorted(probs.items(), key=lambda cp: -cp[1])
            done.append(FilePrediction(str(path), probs, [c for c, p in ranked if p >= serving.threshold],
                                       len(wave) / serving.sample_rate, len(windows(wave, serving.window_samples))))
            advance()
    return Predictions(ref, serving, done, failed)
