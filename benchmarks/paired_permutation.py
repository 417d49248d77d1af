"""The promotion gate's measured alternative: a paired permutation (randomisation) test, used by
benchmarks/gate_calibration.py as the baseline beside the gate's paired bootstrap.

Approximate randomisation as NLP and IR evaluation use it for non-decomposable metrics (Noreen 1989; Yeh 2000):
the two models' predictions are exchanged on a random set of clips, and the p-value of "the challenger is no
better" is the share of exchanges whose gain reaches the observed one. Scores are mid-ranks per class, so the
models' calibrations do not matter (ranking metrics see only the order). It is exact only when the two models
are interchangeable clip by clip; measured on real models of the demo it promotes seed-retrained challengers
more often than its level (docs/registry.md#how-often-the-gate-is-wrong), which is why the gate does not use it.
"""

from __future__ import annotations

import numpy as np


def _normalised_ranks(scores: np.ndarray) -> np.ndarray:
    """Mid-ranks of `scores` (n,) divided by n: the same order and ties, on a scale that any model shares."""
    order = np.argsort(scores, kind="mergesort")
    s = scores[order]
    first = np.r_[True, s[1:] != s[:-1]]
    group = np.cumsum(first) - 1
    starts = np.flatnonzero(first)
    ends = np.r_[starts[1:], len(s)]
    ranks = np.empty(len(s))
    ranks[order] = ((starts + ends + 1) / 2.0)[group]
    return ranks / len(s)


def _row_sorted(y: np.ndarray, scores: np.ndarray):
    """Each row of `scores` (P, n) sorted from the highest down: its labels, the scores, and for every position
    the last position of its tie group (a tie group is one threshold, as scikit-learn counts them)."""
    order = np.argsort(-scores, axis=1, kind="stable")
    s = np.take_along_axis(scores, order, axis=1)
    n = s.shape[1]
    last = np.ones(s.shape, dtype=bool)
    last[:, :-1] = s[:, 1:] != s[:, :-1]
    end = np.minimum.accumulate(np.where(last, np.arange(n), n - 1)[:, ::-1], axis=1)[:, ::-1]
    return y[order], s, end


def rows_average_precision(y: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """AP of binary `y` (n,) for each row of `scores` (P, n), ties as scikit-learn."""
    ys, _, end = _row_sorted(y, scores)
    precision = np.cumsum(ys, axis=1) / np.arange(1, ys.shape[1] + 1)
    return (ys * np.take_along_axis(precision, end, axis=1)).sum(axis=1) / y.sum()


def rows_roc_auc(y: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """ROC AUC of binary `y` (n,) for each row of `scores` (P, n); a tied positive-negative pair counts half."""
    ys, s, end = _row_sorted(y, scores)
    n = s.shape[1]
    new = np.ones(s.shape, dtype=bool)
    new[:, 1:] = s[:, 1:] != s[:, :-1]
    start = np.maximum.accumulate(np.where(new, np.arange(n), 0), axis=1)
    fp = np.cumsum(1.0 - ys, axis=1)
    above = np.take_along_axis(np.concatenate([np.zeros((fp.shape[0], 1)), fp], axis=1), start, axis=1)
    upto = np.take_along_axis(fp, end, axis=1)
    negatives = float(n - y.sum())
    return (ys * (negatives - upto + 0.5 * (upto - above))).sum(axis=1) / (y.sum() * negatives)


ROWS = {"mAP": rows_average_precision, "ROC_AUC": rows_roc_auc}


def permutation_gains(metric: str, labels: np.ndarray, challenger: np.ndarray, champion: np.ndarray,
                      swaps: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Macro `metric` gain (challenger - champion) after exchanging the models' predictions where a row of
    `swaps` (P, clips) is True; (P,). Classes without annotated positives and negatives are left out."""
    per_class = []
    for k in range(labels.shape[1]):
        annotated = ~np.isnan(labels[:, k])
        y = (labels[annotated, k] >= threshold).astype(np.float64)
        if not 0 < y.sum() < len(y):
            continue
        a = _normalised_ranks(challenger[annotated, k].astype(np.float64))
        b = _normalised_ranks(champion[annotated, k].astype(np.float64))
        swapped = swaps[:, annotated]
        per_class.append(ROWS[metric](y, np.where(swapped, b, a)) - ROWS[metric](y, np.where(swapped, a, b)))
    if not per_class:
        raise ValueError(f"{metric} is undefined on these clips: no class has annotated positives and negatives")
    return np.mean(per_class, axis=0)


def paired_permutation(labels: np.ndarray, challenger: np.ndarray, champion: np.ndarray, metric: str = "mAP",
                       permutations: int = 1999, min_gain: float = 0.0, seed: int = 0, threshold: float = 0.5,
                       cells: int = 1_000_000) -> tuple[float, float]:
    """(observed gain, p-value of "gain <= min_gain"): (1 + k) / (1 + B), k of B random exchanges reaching it."""
    if challenger.shape != champion.shape or challenger.shape != labels.shape:
        raise ValueError(f"predictions {challenger.shape} / {champion.shape} and labels {labels.shape} differ")
    n = labels.shape[0]
    observed = float(permutation_gains(metric, labels, challenger, champion, np.zeros((1, n), bool), threshold)[0])
    rng, reached = np.random.default_rng(seed), 0
    chunk = max(1, cells // n)  # (chunk, clips) arrays per class: a few MB whatever the test split's size
    for start in range(0, permutations, chunk):
        swaps = rng.random((min(chunk, permutations - start), n)) < 0.5
        gains = permutation_gains(metric, labels, challenger, champion, swaps, threshold)
        reached += int(np.sum(gains >= observed - min_gain - 1e-12))
    return observed, (1 + reached) / (1 + permutations)
