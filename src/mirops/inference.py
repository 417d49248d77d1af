"""Inference with a registered model (`mirops predict`): files or folders in, class probabilities out.

Models load only through the registry (`models:/NAME@ALIAS` or `models:/NAME/VERSION`), so every answer
names the version that gave it. Audio goes through the project's own decoding (`mirops.data.audio`: soundfile,
mono mix-down, torchaudio resampling, the same checks as the dataset's) at the model's sample rate; a file that
cannot be used gets an entry saying why, and the other files are still classified.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mirops.config import TrainParams
from mirops.data.audio import AUDIO_SUFFIXES, AudioError, fit_length, load_audio

_ALIAS_URI = re.compile(r"^models:/(?P<name>[^/@]+)@(?P<alias>[^/@]+)$")
_VERSION_URI = re.compile(r"^models:/(?P<name>[^/@]+)/(?P<version>\d+)$")
# The family tag `train_east` sets; reprogramming runs carry none and log their recipe as `train.*`.
_FAMILY_TAG = "mirops.family"


@dataclass(frozen=True)
class ModelRef:
    """The registered version that answered (an alias resolved to its version number at load time)."""

    name: str
    version: str
    uri: str  # as the user gave it
    run_id: str | None = None


@dataclass(frozen=True)
class Serving:
    """How audio is fed to the model, and where each value came from (model, training run or default)."""

    sample_rate: int
    clip_seconds: float
    threshold: float
    sources: dict[str, str] = field(default_factory=dict)


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
    serving: Serving
    predictions: list[FilePrediction]
    failed: list[FileFailure]


def parse_model_uri(uri: str) -> tuple[str, str | None, str | None]:
    """(name, alias, version) of a registry URI; ValueError for anything else (runs:/, paths, files)."""
    if m := _ALIAS_URI.match(uri):
        return m["name"], m["alias"], None
    if m := _VERSION_URI.match(uri):
        return m["name"], None, m["version"]
    raise ValueError(f"{uri!r}: models load only through the registry; expected models:/NAME@ALIAS (e.g. "
                     "models:/mirops-instruments@champion) or models:/NAME/VERSION. Register a run's model "
                     "first with `mirops register RUN`")


def resolve(uri: str) -> ModelRef:
    """The concrete registered version behind `uri`; LookupError when the name, alias or version is unknown."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    name, alias, version = parse_model_uri(uri)
    client = MlflowClient()
    try:
        mv = client.get_model_version_by_alias(name, alias) if alias else client.get_model_version(name, version)
    except MlflowException as exc:
        what = f"alias {alias!r}" if alias else f"version {version}"
        raise LookupError(f"{uri}: no registered model {name!r} with {what} in {client.tracking_uri} "
                          f"({exc.message.splitlines()[0]})") from exc
    return ModelRef(name=name, version=str(mv.version), uri=uri, run_id=mv.run_id)


def _training_params(run_id: str | None) -> tuple[str, dict[str, str]]:
    """The recipe section (`train` or `east`) and the parameters logged by the run that produced the model."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    if not run_id:
        return "train", {}
    try:
        run = MlflowClient().get_run(run_id)
    except MlflowException:  # the run was deleted; the registered model still serves, with defaults
        return "train", {}
    return ("east" if run.data.tags.get(_FAMILY_TAG) == "east" else "train"), dict(run.data.params)


def model_sample_rate(model) -> int:
    """EAsT students expose `sample_rate`; reprogrammed models name it in their front end's config."""
    rate = getattr(model, "sample_rate", None)
    if rate is None and hasattr(getattr(model, "frontend", None), "config"):
        rate = model.frontend.config().get("sample_rate")
    if rate is None:
        raise ValueError(f"{type(model).__name__} says neither its sample rate (`sample_rate`) nor its front "
                         "end's (`frontend.config()['sample_rate']`): not a model `mirops train` logged")
    return int(rate)


def serving_of(model, ref: ModelRef, threshold: float | None = None) -> Serving:
    """Sample rate, clip length and threshold: the model's own attribute, else what its training run logged
    (`train.*` or `east.*`), else the project default (`TrainParams`)."""
    section, params = _training_params(ref.run_id)
    sources = {"sample_rate": "model"}
    values: dict[str, float] = {}
    for key in ("clip_seconds", "threshold"):
        if getattr(model, key, None) is not None:
            values[key], sources[key] = float(getattr(model, key)), "model"
        elif f"{section}.{key}" in params:
            values[key], sources[key] = float(params[f"{section}.{key}"]), f"run param {section}.{key}"
        else:
            values[key], sources[key] = float(TrainParams.model_fields[key].default), "default"
    if threshold is not None:
        values["threshold"], sources["threshold"] = float(threshold), "given"
    if not 0.0 <= values["threshold"] <= 1.0:
        raise ValueError(f"threshold {values['threshold']}: expected a probability in [0, 1]")
    if values["clip_seconds"] <= 0:
        raise ValueError(f"clip length {values['clip_seconds']} s ({sources['clip_seconds']}): expected > 0")
    return Serving(model_sample_rate(model), values["clip_seconds"], values["threshold"], sources)


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


def windows(wave: np.ndarray, n: int) -> list[np.ndarray]:
    """Windows of `n` samples covering `wave` (views where possible: an hour of audio is not copied).

    Training saw one clip-length crop per clip, so a long file is cut into consecutive clip-length windows
    whose probabilities are averaged. The last window is aligned to the file's end (overlapping the one
    before) rather than padded: a mostly-silent tail window would pull every class towards "absent".
    A file shorter than one clip is right-padded with silence, as training padded short clips.
    """
    if len(wave) <= n:
        return [fit_length(wave, n)]
    starts = [i * n for i in range(math.ceil(len(wave) / n) - 1)] + [len(wave) - n]
    return [wave[s : s + n] for s in starts]


def predict(
    model_uri: str,
    paths: Sequence[str | Path],
    batch_size: int = 16,
    threshold: float | None = None,
    show_progress: bool = True,
) -> Predictions:
    """Classify audio files and folders with a registered model (URI resolved against the current MLflow
    tracking/registry URI). Per file: probability per class, the classes at or above the threshold (default:
    the one the model was trained with), the duration; undecodable files are listed in `failed`."""
    import torch
    from rich.console import Console
    from rich.progress import Progress

    from mirops.registry.models import load_model

    if isinstance(paths, str | Path):  # one path, not a sequence of characters
        paths = [paths]
    if batch_size < 1:
        raise ValueError(f"batch size {batch_size}: expected at least 1")
    ref = resolve(model_uri)
    # Load the resolved version, not the alias: the alias may move while we run, the answer must not.
    model = load_model(f"models:/{ref.name}/{ref.version}").eval()
    classes = list(getattr(model, "classes", None) or [])
    if not classes:
        raise ValueError(f"{model_uri} (version {ref.version}) has no `classes`: not a model `mirops train` logged")
    serving = serving_of(model, ref, threshold)
    n = int(round(serving.clip_seconds * serving.sample_rate))

    files, failed = expand(paths)
    # Only folders get a bar (a named file or two is quick); a disabled bar keeps the loop below simple.
    bar = Progress(console=Console(stderr=True), transient=True,
                   disable=not (show_progress and any(Path(p).is_dir() for p in paths)))
    task = bar.add_task(f"predict ({ref.name} v{ref.version})", total=len(files))
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
        bar.advance(task)

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

    with bar:
        for i, path in enumerate(files):
            try:
                wave = load_audio(path, serving.sample_rate)
            except AudioError as exc:
                errors[i] = FileFailure(str(path), exc.reason, exc.detail)
                bar.advance(task)
                continue
            durations[i] = len(wave) / serving.sample_rate
            chunks = windows(wave, n)
            left[i] = n_windows[i] = len(chunks)
            for chunk in chunks:
                pending.append((i, chunk))
                if len(pending) == batch_size:
                    run_batch()
        if pending:
            run_batch()
    order = range(len(files))
    return Predictions(ref, serving, [done[i] for i in order if i in done],
                       failed + [errors[i] for i in order if i in errors])
