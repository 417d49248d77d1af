"""Evaluate: score a training run's logged model on the test split of the dataset version it was trained on.

Test-split mAP, ROC-AUC and F1 (both conventions) go on the run, and so do the per-clip predictions, so a
later promotion compares two models clip by clip without re-running either.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from mirops import lineage, plots
from mirops.atomic import atomic_write_json
from mirops.config import Settings
from mirops.data.cache import ArrayCache
from mirops.data.dataset import DatasetVersion
from mirops.data.manifest import TEST
from mirops.families import family
from mirops.features.dataset_clips import DatasetClips
from mirops.pipeline import dvc_outputs
from mirops.pipeline.dataset_inputs import log_splits, split_table
from mirops.pipeline.version import open_dataset
from mirops.progress import console
from mirops.registry import models, tracking
from mirops.train.loop import batched_probs
from mirops.train.metrics import evaluate_probs


@dataclass
class ClipPredictions:
    """A model's probabilities on the annotated test split, clip by clip, with the labels they are judged by."""

    clip_ids: list[str]
    classes: list[str]
    probs: np.ndarray    # (clips, classes)
    labels: np.ndarray   # soft labels, NaN = not annotated

    def frame(self) -> pd.DataFrame:
        df = pd.DataFrame({"clip_id": self.clip_ids})
        for k, c in enumerate(self.classes):
            df[f"p:{c}"], df[f"y:{c}"] = self.probs[:, k], self.labels[:, k]
        return df

    @classmethod
    def from_frame(cls, df: pd.DataFrame) -> ClipPredictions:
        classes = [c[2:] for c in df.columns if c.startswith("p:")]
        return cls(list(df["clip_id"].astype(str)), classes,
                   df[[f"p:{c}" for c in classes]].to_numpy(np.float64),
                   df[[f"y:{c}" for c in classes]].to_numpy(np.float64))

    def subset(self, clip_ids: list[str]) -> ClipPredictions:
        index = {c: i for i, c in enumerate(self.clip_ids)}
        rows = [index[c] for c in clip_ids]
        return ClipPredictions(list(clip_ids), self.classes, self.probs[rows], self.labels[rows])


def last_run_id(settings: Settings, family_name: str = "reprogram") -> str:
    """The run the last `mirops train FAMILY` made (its run file under artifacts/train/)."""
    path = settings.artifacts_dir / lineage.ARTIFACT_TRAIN / family(family_name).run_file
    if not path.exists():
        raise FileNotFoundError(f"{path}: no training run recorded; run `mirops train {family_name}` or pass a run id")
    return json.loads(path.read_text())["run_id"]


def predict_test(settings: Settings, ds: DatasetVersion, model_uri: str) -> ClipPredictions:
    """The model at `model_uri` (waveform → logits, with its serving spec) over the test split of `ds`."""
    model, serving = models.load_served(model_uri)
    if list(serving.classes) != ds.classes:
        raise ValueError(f"{model_uri} predicts {list(serving.classes)} but {ds.describe()} has classes {ds.classes}")
    clips = DatasetClips(ds.folder, ArrayCache(settings.cache_dir), settings.ingest.crop)
    frames, test, _ = clips.frames(ds.split(TEST), model.frontend, serving.clip_seconds, "test split")
    with torch.no_grad():
        probs = batched_probs(model, torch.from_numpy(frames), len(serving.classes))
    return ClipPredictions(list(test["clip_id"].astype(str)), ds.classes, np.asarray(probs, np.float64),
                           ds.labels(test).astype(np.float64))


def score(predictions: ClipPredictions, threshold: float) -> tuple[dict[str, float], dict[str, dict]]:
    return evaluate_probs(predictions.probs, predictions.labels, predictions.classes, threshold)


def run_predictions(run_id: str) -> ClipPredictions | None:
    """The per-clip test predictions an evaluation kept on `run_id`, or None (evaluated before they were kept,
    or not evaluated at all)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = tracking.download_artifact(run_id, lineage.PREDICTIONS_FILE, Path(tmp))
        return ClipPredictions.from_frame(pd.read_parquet(path)) if path is not None else None


def evaluate(settings: Settings, run_id: str | None = None, family_name: str = "reprogram") -> dict[str, float]:
    """Test-split metrics and per-clip predictions of a training run (default: the family's last), on the
    dataset version it was trained on (read from DVC's store when data/ holds another)."""
    run_id = run_id or last_run_id(settings, family_name)
    tracking.setup(settings)
    run = tracking.get_run(run_id)
    trained_on = run.data.tags.get(lineage.TAG_DATASET_VERSION)
    if not trained_on:
        raise LookupError(f"run {run_id} has no {lineage.TAG_DATASET_VERSION} tag: not a `mirops train` run")
    model_uri = models.model_uri_of_run(run_id)
    threshold = models.serving_spec(model_uri).threshold
    with open_dataset(settings, trained_on) as ds:
        predictions = predict_test(settings, ds, model_uri)
        test_input = split_table(ds, ds.split(TEST))
    summary, per_class = score(predictions, threshold)
    metrics = {f"test_{k}": v for k, v in summary.items()}
    with tracking.resume(settings, run_id) as active:
        log_splits(active, settings, trained_on, {TEST: test_input})  # the run's Datasets tab
        active.log_metrics(metrics)
        active.log_json(per_class, lineage.PER_CLASS_FILE)
        active.log_frame(predictions.frame(), lineage.PREDICTIONS_FILE)
        active.log_figure(plots.per_class_bars(per_class, title="test split, per class"), "plots/test_per_class.png")
    atomic_write_json(settings.artifacts_dir / lineage.ARTIFACT_EVALUATE / "metrics.json",
                      {"run_id": run_id, "dataset_version": trained_on, **metrics})
    # dvc.yaml's metrics and plots of evaluate@F (git-tracked: `dvc metrics diff`, `dvc exp show`)
    dvc_outputs.write_evaluation(settings, run.data.tags.get(lineage.TAG_FAMILY, family_name), metrics, per_class)
    console.print("[bold]evaluate[/] " + ", ".join(f"{k} {v:.3f}" for k, v in metrics.items()))
    return metrics
