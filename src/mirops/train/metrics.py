"""Metrics over annotated entries only, per class then macro-averaged (scikit-learn does the maths).

Conventions (docs/methods.md §1.8): `f1_macro_pos` is the usual positive-class F1; `f1_openmic` is the
OpenMIC "macro avg" F1, the mean of the positive- and negative-class F1 of each class.
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.metrics import average_precision_score, f1_score, roc_auc_score


def per_class_metrics(
    probs: np.ndarray, labels: np.ndarray, classes: list[str], threshold: float = 0.5
) -> dict[str, dict[str, float]]:
    """`labels` holds soft labels with NaN for "not annotated"; they are binarised at `threshold`.

    A class whose annotated entries are all of one kind has no AP/ROC-AUC (NaN), as scikit-learn says.
    """
    out: dict[str, dict[str, float]] = {}
    for k, name in enumerate(classes):
        annotated = ~np.isnan(labels[:, k])
        p = probs[annotated, k]
        out[name] = _binary_scores((labels[annotated, k] >= threshold).astype(int), p, (p >= threshold).astype(int))
    return out


def _binary_scores(y: np.ndarray, p: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """One class's scores from its annotated entries: hard targets y, scores p, hard predictions pred."""
    both = 0 < y.sum() < len(y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {
            "AP": float(average_precision_score(y, p)) if both else float("nan"),
            "ROC_AUC": float(roc_auc_score(y, p)) if both else float("nan"),
            "F1": float(f1_score(y, pred, zero_division=0)) if len(y) else float("nan"),
            "F1_openmic": float(f1_score(y, pred, average="macro", labels=[0, 1], zero_division=0))
            if len(y)
            else float("nan"),
            "positives": int(y.sum()),
            "annotated": int(len(y)),
        }


def summarise(per_class: dict[str, dict[str, float]]) -> dict[str, float]:
    """Macro averages over the classes where the metric is defined."""

    def mean(key: str) -> float:
        values = [m[key] for m in per_class.values() if not np.isnan(m[key])]
        return float(np.mean(values)) if values else float("nan")

    return {"mAP": mean("AP"), "ROC_AUC": mean("ROC_AUC"), "F1_macro": mean("F1"), "F1_openmic": mean("F1_openmic")}


def evaluate_probs(
    probs: np.ndarray, labels: np.ndarray, classes: list[str], threshold: float = 0.5
) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    per_class = per_class_metrics(probs, labels, classes, threshold)
    return summarise(per_class), per_class


def reference_openmic_scores(probs: np.ndarray, soft_labels: np.ndarray, threshold: float = 0.4) -> dict[str, float]:
    """The EAsT reference's OpenMIC evaluation (`models/metrics/metrics.py`; docs/methods.md §3.8, §3.10), keyed
    to sit beside `summarise`'s: `ref_mAP`, `ref_ROC_AUC`, `ref_F1_macro` (mean positive-class F1, the
    reference's `binary_f1`) and `ref_F1_openmic` (mean of positive- and negative-class F1, its `macro_f1`).

    Targets as its `parse_openmic.py` makes them from `Y_true`: relevance > 0.5 positive, < 0.5 negative,
    exactly 0.5 masked out (NaN, our "not annotated", is masked too). Predictions are positive when strictly
    above `threshold`, hard-coded 0.4 there (ours: >= 0.5). The reference's `round(y)` changes nothing here,
    the targets already being 0/1. Where we differ: a class whose annotated entries are all of one kind
    has no AP/ROC-AUC and is left out of the means (the reference would average in torchmetrics' value for
    it), and a class with no true negative gets negative-class F1 0, where the reference's 0/0 gives NaN
    and so a NaN mean.
    """
    probs, soft_labels = np.asarray(probs), np.asarray(soft_labels, dtype=np.float64)
    if probs.shape != soft_labels.shape or probs.ndim != 2:
        raise ValueError(f"expected probs and labels of one shape [N, C], got {probs.shape} and {soft_labels.shape}")
    per_class = {}
    for k in range(soft_labels.shape[1]):
        relevance = soft_labels[:, k]
        kept = ~np.isnan(relevance) & (relevance != 0.5)
        p = probs[kept, k]
        per_class[str(k)] = _binary_scores((relevance[kept] > 0.5).astype(int), p, (p > threshold).astype(int))
    return {f"ref_{key}": value for key, value in summarise(per_class).items()}
