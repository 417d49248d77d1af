"""The "teacher + logistic regression" baseline of EAsT (docs/methods.md §3.4): a linear probe on a frozen
teacher's time-mean embedding. Its logits on the train split are the KD targets (`train.east`), as the
reference's linear probe teacher gives them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor


@dataclass
class LinearProbe:
    """logits = mean_t(embedding) @ weight.T + bias: the reference's `PretrainedFeatureClassifier`
    (docs/methods.md §3.4), fitted here by scikit-learn's logistic regression."""

    weight: np.ndarray  # [C, D]
    bias: np.ndarray    # [C]

    def logits(self, embeddings: Tensor | np.ndarray) -> Tensor:
        """[N, T, D] sequences (or [N, D] clip vectors) -> logits [N, C], float32 on the CPU."""
        pooled = _time_mean(embeddings)
        return torch.from_numpy((pooled @ self.weight.T + self.bias).astype(np.float32))

    def probs(self, embeddings: Tensor | np.ndarray) -> np.ndarray:
        return torch.sigmoid(self.logits(embeddings)).numpy()


def _time_mean(embeddings: Tensor | np.ndarray) -> np.ndarray:
    array = embeddings.detach().cpu().numpy() if isinstance(embeddings, Tensor) else np.asarray(embeddings)
    if array.ndim == 3:
        array = array.mean(axis=1)
    if array.ndim != 2:
        raise ValueError(f"expected embeddings [N, T, D] or [N, D], got shape {array.shape}")
    return array.astype(np.float64)


def fit_probe(train_embeddings: Tensor | np.ndarray, train_labels: Tensor | np.ndarray, threshold: float = 0.5,
              c: float = 1.0, max_iter: int = 2000) -> LinearProbe:
    """The "teacher + logistic regression" baseline: one L2 logistic regression per class on the time-mean
    embedding, fitted on that class's annotated clips (labels >= threshold are positive).

    Features are standardised for the solver and the scaling folded back into the weights, so the probe
    stays one linear map of the embedding. A class whose annotated clips are all of one kind (or that has
    none) gets a constant: the logit of its smoothed positive rate (pos + 0.5) / (n + 1), 0 without labels.
    """
    from sklearn.linear_model import LogisticRegression  # scikit-learn only where a probe is fitted

    x = _time_mean(train_embeddings)
    labels = train_labels.numpy() if isinstance(train_labels, Tensor) else np.asarray(train_labels)
    if len(x) != len(labels):
        raise ValueError(f"{len(x)} embeddings but {len(labels)} label rows")
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale[scale == 0] = 1.0
    z = (x - mean) / scale
    weight = np.zeros((labels.shape[1], x.shape[1]))
    bias = np.zeros(labels.shape[1])
    for k in range(labels.shape[1]):
        annotated = ~np.isnan(labels[:, k])
        y = (labels[annotated, k] >= threshold).astype(int)
        if 0 < y.sum() < len(y):
            model = LogisticRegression(C=c, max_iter=max_iter).fit(z[annotated], y)
            weight[k] = model.coef_[0] / scale
            bias[k] = model.intercept_[0] - weight[k] @ mean
        else:
            rate = (y.sum() + 0.5) / (len(y) + 1.0)
            bias[k] = np.log(rate / (1.0 - rate))
    return LinearProbe(weight, bias)
