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
        y = (labels[annotated, k] >= threshold).astype(int)
        p = probs[annotated, k]
        pred = (p >= threshold).astype(int)
        both = 0 < y.sum() < len(y)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out[name] = {
                "AP": float(average_precision_score(y, p)) if both else float("nan"),
                "ROC_AUC": float(roc_auc_score(y, p)) if both else float("nan"),
                "F1": float(f1_score(y, pred, zero_division=0)) if len(y) else float("nan"),
                "F1_openmic": float(f1_score(y, pred, average="macro", labels=[0, 1], zero_division=0))
                if len(y)
                else float("nan"),
                "positives": int(y.sum()),
                "annotated": int(len(y)),
            }
    return out


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
