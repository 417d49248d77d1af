"""The champion's view of a batch: its class probabilities per clip, for the drift report's prediction columns.

A shift in what the model predicts (a class it suddenly sees everywhere, or never) is drift that matters even
when the audio descriptors hold still. The champion is `models:/<registry.model_name>@champion`, resolved
to its version once, so every score in one report comes from the same model; its registry tag
`mirops.dataset_version` names the data it was trained on, the monitor's default reference.

Clips are fed as `mirops predict` feeds files (the model's own rate, clip-length windows, probabilities
averaged over windows), and the scores are cached by clip content and model version.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from mirops.config import Settings

PREDICTION_PREFIX = "pred_"


@dataclass(frozen=True)
class ChampionEntry:
    """The registered champion (no model loaded): which version, and the dataset version it was trained on."""

    name: str
    version: str
    run_id: str | None
    dataset_version: str | None

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


def champion_entry(settings: Settings) -> ChampionEntry | None:
    """The champion of `registry.model_name`, or None when there is none (yet). Its dataset version is the
    version's registry tag, else the tag of the run that trained it. MLflow must point at the project's store."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from mirops.registry.models import CHAMPION
    from mirops.registry.tracking import TAG_DATASET_VERSION

    client = MlflowClient()
    name = settings.registry.model_name
    try:
        mv = client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None
    dataset_version = (mv.tags or {}).get(TAG_DATASET_VERSION)
    if not dataset_version and mv.run_id:
        try:
            dataset_version = client.get_run(mv.run_id).data.tags.get(TAG_DATASET_VERSION)
        except MlflowException:  # the training run was deleted: the version still serves
            dataset_version = None
    known = dataset_version not in (None, "", "unknown", "none")  # `mirops register` writes "unknown" when untagged
    return ChampionEntry(name, str(mv.version), mv.run_id, dataset_version if known else None)


@dataclass
class Scorer:
    """A loaded champion: class probabilities of one clip's audio at `sample_rate`."""

    entry: ChampionEntry
    model: Any
    classes: list[str]
    sample_rate: int
    clip_seconds: float
    threshold: float

    @property
    def columns(self) -> list[str]:
        return [f"{PREDICTION_PREFIX}{c}" for c in self.classes]

    def cache_config(self) -> dict:
        """What a cached score depends on besides the audio: the exact model and how it was fed."""
        return {"model": f"{self.entry.name}/{self.entry.version}/{self.entry.run_id}",
                "clip_seconds": self.clip_seconds}

    def __call__(self, wave: np.ndarray) -> np.ndarray:
        import torch

        from mirops.inference import windows

        chunks = np.stack(windows(wave, int(round(self.clip_seconds * self.sample_rate))))
        with torch.no_grad():
            logits = self.model(torch.from_numpy(np.ascontiguousarray(chunks, dtype=np.float32)))
        if logits.ndim != 2 or logits.shape[1] != len(self.classes):
            raise ValueError(f"{self.entry.uri} returned logits of shape {tuple(logits.shape)}, expected "
                             f"[windows, {len(self.classes)}]")
        return torch.sigmoid(logits.float()).mean(dim=0).numpy().astype(np.float64)


def load_scorer(entry: ChampionEntry) -> Scorer:
    """Load the champion's registered version (not the alias: it may move while the monitor runs)."""
    from mirops.inference import ModelRef, serving_of
    from mirops.registry.models import load_model

    model = load_model(entry.uri).eval()
    classes = list(getattr(model, "classes", None) or [])
    if not classes:
        raise ValueError(f"{entry.uri} has no `classes`: not a model `mirops train` logged")
    serving = serving_of(model, ModelRef(entry.name, entry.version, entry.uri, entry.run_id))
    return Scorer(entry, model, classes, serving.sample_rate, serving.clip_seconds, serving.threshold)


def class_scores(loader, paths: Sequence[str], scorer: Scorer, progress: Callable[[], None] | None = None):
    """The scorer's class probabilities of each clip (a `ClipResults`), cached by content and model version.
    `loader` must decode at `scorer.sample_rate` with `seconds=None` (windows cover the whole clip)."""
    from mirops.features.clips import per_clip

    if loader.sample_rate != scorer.sample_rate or loader.seconds is not None:
        raise ValueError(f"class_scores needs whole clips at {scorer.sample_rate} Hz, got a loader at "
                         f"{loader.sample_rate} Hz cropping to {loader.seconds} s")
    return per_clip(loader, paths, "class-scores", scorer.cache_config(), scorer, progress)


def predicted_distribution(reference: pd.DataFrame, current: pd.DataFrame, classes: list[str],
                           threshold: float) -> dict[str, dict[str, float]]:
    """Per class: mean probability and share of clips at or above `threshold`, in the reference and the batch."""
    out = {}
    for c in classes:
        column = f"{PREDICTION_PREFIX}{c}"
        out[c] = {"reference_mean": float(reference[column].mean()), "current_mean": float(current[column].mean()),
                  "reference_positive_share": float((reference[column] >= threshold).mean()),
                  "current_positive_share": float((current[column] >= threshold).mean())}
    return out
