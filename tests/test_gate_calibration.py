"""How often the promotion gate is wrong, in small: many no-better challengers must be promoted at most at the
gate's level, and a real gain must be promoted.

The predictions imitate two trained models on a small, partially annotated test split: a long tail of rare
classes, errors the two models share (hard clips are hard for both) and a different calibration each (the
challenger's logits doubled and shifted, which no ranking metric sees). Each draw is a fresh test split, so the
draws are independent and the false-promotion rate has a binomial interval; the test fails when the interval lies
above the level, i.e. when the gate is liberal. benchmarks/gate_calibration.py measures the same on real models
(docs/registry.md#how-often-the-gate-is-wrong).
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binomtest

from benchmarks.paired_permutation import rows_average_precision, rows_roc_auc
from mirops.config import RegistryParams
from mirops.pipeline.promote import gain_test

PARAMS = RegistryParams(bootstrap_samples=500)  # fewer resamples than the default 2000 keep this fast


def predictions(rng: np.random.Generator, clips: int, skill_challenger: float = 1.0, skill_champion: float = 1.0,
               classes: int = 10) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Soft labels (NaN: not annotated) and two models' probabilities on one test split."""
    prevalence = np.geomspace(0.06, 0.5, classes)                      # rare classes have 1-3 positives
    truth = (rng.random((clips, classes)) < prevalence).astype(float)
    labels = np.where(rng.random(truth.shape) < 0.3, np.nan, truth)    # 30 % not annotated, like OpenMIC
    shared = 0.8 * rng.normal(size=truth.shape)                        # what both models get wrong
    sign = 2 * truth - 1
    challenger = skill_challenger * sign + shared + rng.normal(size=truth.shape)
    champion = skill_champion * sign + shared + rng.normal(size=truth.shape)
    return labels, 1 / (1 + np.exp(-(2 * challenger + 1))), 1 / (1 + np.exp(-champion))


def test_no_better_challengers_are_promoted_at_most_at_the_gate_level():
    rng = np.random.default_rng(2026)
    draws, promoted = 300, 0
    for k in range(draws):
        labels, challenger, champion = predictions(rng, clips=(20, 40)[k % 2])
        promoted += gain_test(labels, challenger, champion, PARAMS, seed=k)[1]
    ci = binomtest(promoted, draws).proportion_ci(confidence_level=0.98, method="exact")
    # Interchangeable models: the gate's one-sided alpha / 2 promotes about 8 of 300; one at 2 x alpha fails.
    assert ci.low <= PARAMS.alpha, (f"{promoted}/{draws} no-better challengers promoted: 98 % interval "
                                    f"[{ci.low:.3f}, {ci.high:.3f}] above alpha {PARAMS.alpha}")
    assert promoted > 0, "a gate that never promotes is not calibrated either"  # the level is used, not wasted


def test_a_real_gain_is_promoted():
    rng = np.random.default_rng(7)
    draws = 30
    promoted = sum(gain_test(*predictions(rng, clips=40, skill_challenger=2.0), PARAMS, seed=k)[1]
                   for k in range(draws))
    assert promoted >= 0.9 * draws, f"only {promoted}/{draws} clearly better challengers promoted"


def test_the_same_ranking_is_never_a_gain_whatever_its_calibration():
    labels, challenger, _ = predictions(np.random.default_rng(3), clips=40)
    recalibrated = 1 / (1 + np.exp(-10 * (challenger - 0.3)))
    for copy in (challenger, challenger ** 3, recalibrated):  # the champion re-registered, or recalibrated
        gain, passed = gain_test(labels, copy, challenger, PARAMS)
        assert not passed and gain.gain == pytest.approx(0.0, abs=1e-12) and gain.low == gain.high == 0.0
    gain, passed = gain_test(labels, np.round(challenger, 2), challenger, PARAMS)  # stored with 2 decimals: ties
    assert not passed and abs(gain.gain) < 0.02


def test_min_gain_shifts_the_null():
    rng = np.random.default_rng(11)
    labels, challenger, champion = predictions(rng, clips=40, skill_challenger=2.5)
    gain, passed = gain_test(labels, challenger, champion, PARAMS)
    assert passed and gain.gain > 0.1
    strict = PARAMS.model_copy(update={"min_gain": gain.gain + 0.05})  # more than it gained: not significant
    assert not gain_test(labels, challenger, champion, strict)[1]
    lenient = PARAMS.model_copy(update={"min_gain": -0.05})  # "not worse by more than 0.05": itself passes
    assert gain_test(labels, champion, champion, lenient)[1]


def test_the_permutation_baselines_curves_equal_scikit_learn_ties_included():
    """benchmarks/paired_permutation.py scores many exchanges at once; its AP and AUC are scikit-learn's."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    rng = np.random.default_rng(2)
    for _ in range(30):
        n = int(rng.integers(4, 50))
        y = (rng.random(n) < 0.4).astype(float)
        y[:2] = [1.0, 0.0]
        scores = np.round(rng.random((4, n)), 1)  # many ties
        ap, auc = rows_average_precision(y, scores), rows_roc_auc(y, scores)
        for row in range(4):
            assert ap[row] == pytest.approx(average_precision_score(y, scores[row]))
            assert auc[row] == pytest.approx(roc_auc_score(y, scores[row]))
