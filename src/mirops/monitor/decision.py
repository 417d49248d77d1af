"""The drift decision: one permutation test over files, with its false-alarm rate set by `monitor.alpha`.

Why files, not windows: the windows of one track (or the clips of one recording session) resemble each other
far more than windows of two tracks, so a test that counts windows as independent rows sees "drift" between
two halves of one soundtrack (the issue-15 report: 7 of 12 descriptors flagged between every other track of
one album). The unit that is exchangeable when nothing drifted is the file (the manifest's group where there
is one): so each group is summarised by the mean of its windows, and reference and current groups are compared.

Why one test: the descriptors move together (loudness, RMS and clipping; centroid, roll-off and flatness), and
the embedding and the class probabilities move with them, so a vote over per-column tests ("half the columns
drifted") has no known error rate. Here every column (descriptor, class probability) gets a two-sided rank-sum
(Mann-Whitney) statistic on the group means and the embedding gets the energy distance (Székely & Rizzo) between
the groups' mean embeddings; all are recomputed under the same random relabellings of groups (reference <->
current), which keeps every correlation between them. The batch's p-value is the Westfall-Young single-step
min-P: how often the smallest per-test permutation p-value under relabelling is at most the observed smallest.
Under "no drift" (groups exchangeable) the test is exact at any batch size: P(p <= alpha) <= alpha, counting
the observed labelling among the permutations (Phipson & Smyth 2010). Per-test adjusted p-values (the same
min-P distribution) say which columns drifted, with the family-wise error held at alpha too.

The attainable p-value is bounded by the number of distinct relabellings: with 5 groups against 5, at best
1/252; `min_p` reports it, and a batch too small to ever reach `alpha` is said to be so, not called clean.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

EMBEDDING_TEST = "embedding"


@dataclass(frozen=True)
class FileLevelTest:
    """The decision of `file_level_test`: the batch's p-value and every test's, raw and adjusted."""

    p_value: float                      # Westfall-Young min-P over all tests: the batch drifted when <= alpha
    alpha: float
    drift_detected: bool
    raw_p: dict[str, float]             # per test (columns, "embedding"): its own permutation p-value
    adjusted_p: dict[str, float]        # per test: family-wise adjusted (single-step min-P)
    permutations: int
    reference_groups: int
    current_groups: int
    min_p: float                        # the smallest p-value these group counts can give
    decidable: bool                     # min_p <= alpha: the batch is large enough to ever be called drifted

    def drifted(self, tests: list[str] | None = None) -> list[str]:
        """The tests (in `tests` order, default all but the embedding) whose adjusted p-value is <= alpha."""
        names = tests if tests is not None else [t for t in self.adjusted_p if t != EMBEDDING_TEST]
        return [t for t in names if self.adjusted_p.get(t, 1.0) <= self.alpha]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def group_means(frame: pd.DataFrame, group_column: str, columns: list[str]) -> pd.DataFrame:
    """One row per group: the mean of its rows' `columns` (NaN-aware), in order of first appearance."""
    keys = frame[group_column].astype(str)
    return frame[columns].groupby(keys, sort=False).mean()


def _rank_statistics(values: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """|sum of ranks of the current groups - its expectation| per column, for every labelling in `labels`
    (rows: labellings, 1 = current). NaN values (a descriptor undefined for a file) rank in the middle."""
    from scipy.stats import rankdata

    ranks = rankdata(values, axis=0, nan_policy="omit")
    ranks = np.where(np.isnan(ranks), (len(values) + 1) / 2.0, ranks)
    n_current = labels[0].sum()
    return np.abs(labels @ ranks - n_current * (len(values) + 1) / 2.0)


def _energy_statistics(points: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Energy distance 2 E|X-Y| - E|X-X'| - E|Y-Y'| between current and reference groups, per labelling.

    With S the sum of all distances and a a labelling's current indicator, every term follows from a'Da and
    a'D1, so one product (labellings x groups x groups, in float32 through BLAS) serves all labellings."""
    x = points.astype(np.float64)
    squared = (x * x).sum(axis=1)
    distances = np.sqrt(np.maximum(squared[:, None] + squared[None, :] - 2.0 * (x @ x.T), 0.0))
    np.fill_diagonal(distances, 0.0)
    a = labels.astype(np.float32)
    n_c = float(labels[0].sum())
    n_r = len(points) - n_c
    a_d_a = ((a @ distances.astype(np.float32)) * a).sum(axis=1, dtype=np.float64)
    a_d_1 = labels @ distances.sum(axis=1)
    total = distances.sum()
    across = (a_d_1 - a_d_a) / (n_c * n_r)
    within_c = a_d_a / (n_c * n_c)
    within_r = (total - 2.0 * a_d_1 + a_d_a) / (n_r * n_r)
    return 2.0 * across - within_c - within_r


def _permutation_p(statistics: np.ndarray) -> np.ndarray:
    """For each labelling (row) and test (column): the share of labellings whose statistic is at least as
    large, the observed one (row 0) included; larger statistics mean more drift."""
    order = np.sort(statistics, axis=0)
    n = len(statistics)
    p = np.empty_like(statistics, dtype=float)
    for j in range(statistics.shape[1]):
        p[:, j] = (n - np.searchsorted(order[:, j], statistics[:, j], side="left")) / n
    return p


def min_attainable_p(reference_groups: int, current_groups: int, permutations: int) -> float:
    """The smallest p-value of the test: one over the labellings it can draw (distinct ones, or the random
    `permutations` plus the observed)."""
    distinct = math.comb(reference_groups + current_groups, current_groups)
    return 1.0 / min(distinct, permutations + 1)


def file_level_test(reference: pd.DataFrame, current: pd.DataFrame, *, columns: list[str],
                    embedding_columns: list[str] | None, group_column: str, alpha: float,
                    permutations: int = 1999, seed: int = 0) -> FileLevelTest:
    """Did `current` drift from `reference`? Rows are windows; `group_column` names each row's file (or
    recording); `columns` are compared one by one, `embedding_columns` together. See the module docstring."""
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha is a false-alarm rate in (0, 1), got {alpha}")
    embedding_columns = list(embedding_columns or [])
    wanted = columns + embedding_columns
    # A group name on both sides is two groups: the sides' own files.
    ref = group_means(reference.assign(**{group_column: "r:" + reference[group_column].astype(str)}),
                      group_column, wanted)
    cur = group_means(current.assign(**{group_column: "c:" + current[group_column].astype(str)}),
                      group_column, wanted)
    n_ref, n_cur = len(ref), len(cur)
    if n_ref < 1 or n_cur < 1:
        raise ValueError("the drift test needs at least one file on each side")
    pooled = pd.concat([ref, cur], ignore_index=True)
    rng = np.random.default_rng(seed)
    observed = np.r_[np.zeros(n_ref, dtype=np.int8), np.ones(n_cur, dtype=np.int8)]
    labels = np.vstack([observed, rng.permuted(np.tile(observed, (permutations, 1)), axis=1)])
    statistics, names = [], []
    if columns:
        statistics.append(_rank_statistics(pooled[columns].to_numpy(float), labels))
        names += list(columns)
    if embedding_columns:
        points = pooled[embedding_columns].to_numpy(float)
        statistics.append(_energy_statistics(points, labels)[:, None])
        names.append(EMBEDDING_TEST)
    if not names:
        raise ValueError("the drift test needs at least one column or an embedding")
    p = _permutation_p(np.hstack(statistics))
    smallest = p.min(axis=1)
    # Adjusted p of a test: how often the smallest p under relabelling is at most the test's observed p.
    sorted_smallest = np.sort(smallest)
    adjusted = np.searchsorted(sorted_smallest, p[0], side="right") / len(smallest)
    batch_p = float(np.searchsorted(sorted_smallest, smallest[0], side="right") / len(smallest))
    floor = min_attainable_p(n_ref, n_cur, permutations)
    return FileLevelTest(
        p_value=batch_p, alpha=alpha, drift_detected=batch_p <= alpha,
        raw_p={n: float(v) for n, v in zip(names, p[0], strict=True)},
        adjusted_p={n: float(v) for n, v in zip(names, adjusted, strict=True)},
        permutations=permutations, reference_groups=n_ref, current_groups=n_cur, min_p=floor,
        decidable=floor <= alpha)
