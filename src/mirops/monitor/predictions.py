"""The champion's view of a batch: its class probabilities per clip, for the drift report's prediction columns.

A shift in what the model predicts (a class it suddenly sees everywhere, or never) is drift that matters even
when the audio descriptors hold still. The pipeline resolves the champion to its version once and hands it
here loaded (`Scorer`), so every score in one report comes from the same model.

A clip is fed as `mirops predict` feeds a file (the model's own rate, clip-length windows, probabilities
averaged over windows); the monitor hands it one window at a time and caches the scores by content and
model version.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from mirops.features.windows import windows
from mirops.models.serving import ServingSpec

PREDICTION_PREFIX = "pred_"


@dataclass
class Scorer:
    """A loaded registered version: class probabilities of one clip's audio, fed as its serving spec says."""

    name: str
    version: str
    run_id: str | None
    model: Any
    serving: ServingSpec

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"

    @property
    def classes(self) -> list[str]:
        return list(self.serving.classes)

    @property
    def sample_rate(self) -> int:
        return self.serving.sample_rate

    @property
    def threshold(self) -> float:
        return self.serving.threshold

    @property
    def columns(self) -> list[str]:
        return [f"{PREDICTION_PREFIX}{c}" for c in self.classes]

    def cache_config(self) -> dict:
        """What a cached score depends on besides the audio: the exact model and how it was fed."""
        return {"model": f"{self.name}/{self.version}/{self.run_id}", "clip_seconds": self.serving.clip_seconds}

    def __call__(self, wave: np.ndarray) -> np.ndarray:
        chunks = np.stack(windows(wave, self.serving.window_samples))
        with torch.no_grad():
            logits = self.model(torch.from_numpy(np.ascontiguousarray(chunks, dtype=np.float32)))
        if logits.ndim != 2 or logits.shape[1] != len(self.classes):
            raise ValueError(f"{self.uri} returned logits of shape {tuple(logits.shape)}, expected "
                             f"[windows, {len(self.classes)}]")
        return torch.sigmoid(logits.float()).mean(dim=0).numpy().astype(np.float64)


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
