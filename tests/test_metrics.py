import numpy as np
import pytest
from sklearn.metrics import average_precision_score, f1_score, roc_auc_score

from mirops.train.metrics import evaluate_probs, reference_openmic_scores


def test_metrics_use_annotated_entries_only():
    labels = np.array([[1.0, np.nan], [0.0, 0.9], [0.8, 0.1], [np.nan, 0.7], [0.1, np.nan]], dtype=np.float32)
    probs = np.array([[0.9, 0.99], [0.2, 0.6], [0.4, 0.3], [0.99, 0.8], [0.6, 0.01]], dtype=np.float32)
    summary, per_class = evaluate_probs(probs, labels, ["a", "b"], threshold=0.5)

    a = ~np.isnan(labels[:, 0])
    y_a, p_a = (labels[a, 0] >= 0.5).astype(int), probs[a, 0]
    assert per_class["a"]["AP"] == average_precision_score(y_a, p_a)
    assert per_class["a"]["annotated"] == 4 and per_class["a"]["positives"] == 2
    assert per_class["a"]["F1"] == f1_score(y_a, p_a >= 0.5)
    pos_neg = (f1_score(y_a, p_a >= 0.5) + f1_score(1 - y_a, p_a < 0.5)) / 2
    assert np.isclose(per_class["a"]["F1_openmic"], pos_neg)
    assert np.isclose(summary["mAP"], (per_class["a"]["AP"] + per_class["b"]["AP"]) / 2)


def test_class_without_both_kinds_has_no_ap_and_is_left_out_of_the_mean():
    labels = np.array([[1.0, 1.0], [0.0, 1.0]], dtype=np.float32)
    probs = np.array([[0.9, 0.2], [0.1, 0.8]], dtype=np.float32)
    summary, per_class = evaluate_probs(probs, labels, ["a", "b"])
    assert np.isnan(per_class["b"]["AP"])
    assert summary["mAP"] == per_class["a"]["AP"] == 1.0


# --------------------------------------------------------------------------- the EAsT reference's OpenMIC scores


def test_reference_scores_by_hand():
    relevance = np.array([[0.9, 1.0], [0.2, 0.0], [0.6, 0.0], [0.5, 0.7], [np.nan, 0.3], [0.1, 0.5]])
    probs = np.array([[0.8, 0.45], [0.5, 0.35], [0.3, 0.6], [0.99, 0.9], [0.7, 0.1], [0.2, 0.0]])
    scores = reference_openmic_scores(probs, relevance)
    # a: kept rows 0, 1, 2, 5 -> y 1 0 1 0, p .8 .5 .3 .2: AP (1 + 2/3) / 2, AUC 3/4, > 0.4 -> 1 1 0 0, F1 1/2 both
    # b: kept rows 0-4 -> y 1 0 0 1 0, p .45 .35 .6 .9 .1: AP (1 + 2/3) / 2, AUC 5/6, -> 1 0 1 1 0, F1 4/5 both
    assert scores == pytest.approx({"ref_mAP": 5 / 6, "ref_ROC_AUC": (3 / 4 + 5 / 6) / 2, "ref_F1_macro": 0.65,
                                    "ref_F1_openmic": 0.65})


def test_reference_scores_leave_out_relevance_one_half_as_unannotated():
    rng = np.random.default_rng(0)
    relevance = rng.choice([0.0, 0.25, 0.5, 0.75, 1.0], size=(60, 3))
    probs = rng.uniform(size=(60, 3))
    scores = reference_openmic_scores(probs, relevance)
    nan_instead = np.where(relevance == 0.5, np.nan, relevance)
    assert reference_openmic_scores(probs, nan_instead) == scores
    assert reference_openmic_scores(np.where(relevance == 0.5, 1.0 - probs, probs), relevance) == scores
    # Ours counts 0.5 as positive (>= threshold), so there it does matter.
    assert evaluate_probs(probs, relevance, list("abc"))[0]["mAP"] != scores["ref_mAP"]


def test_reference_scores_call_positive_strictly_above_0_4():
    relevance = np.array([[1.0], [1.0], [0.0], [0.0]])
    probs = np.array([[0.4], [0.45], [0.3], [0.1]])
    assert reference_openmic_scores(probs, relevance)["ref_F1_macro"] == pytest.approx(2 / 3)  # 0.4 is negative
    assert reference_openmic_scores(probs, relevance, threshold=0.39)["ref_F1_macro"] == 1.0
    assert evaluate_probs(probs, relevance, ["a"])[0]["F1_macro"] == 0.0  # ours, at >= 0.5


def test_reference_scores_agree_with_scikit_learn_and_the_references_f1_on_the_kept_entries():
    rng = np.random.default_rng(1)
    relevance = rng.choice([0.0, 0.1, 0.4, 0.5, 0.6, 0.9, 1.0, np.nan], size=(300, 5))
    probs = rng.uniform(size=(300, 5))
    scores = reference_openmic_scores(probs, relevance)
    ap, auc, f1_pos, f1_pair = [], [], [], []
    for k in range(5):
        kept = ~np.isnan(relevance[:, k]) & (relevance[:, k] != 0.5)
        y, p = (relevance[kept, k] > 0.5).astype(int), probs[kept, k]
        ap.append(average_precision_score(y, p))
        auc.append(roc_auc_score(y, p))
        f1_pos.append(f1_score(y, p > 0.4))
        # The reference's own counts (models/metrics/metrics.py::_compute_f1).
        tp, fp = np.sum((p > 0.4) & (y == 1)), np.sum((p > 0.4) & (y == 0))
        tn, fn = np.sum((p <= 0.4) & (y == 0)), np.sum((p <= 0.4) & (y == 1))
        f1_pair.append((2 * tp / (2 * tp + fp + fn) + 2 * tn / (2 * tn + fn + fp)) / 2)
    assert scores["ref_mAP"] == pytest.approx(np.mean(ap))
    assert scores["ref_ROC_AUC"] == pytest.approx(np.mean(auc))
    assert scores["ref_F1_macro"] == pytest.approx(np.mean(f1_pos))
    assert scores["ref_F1_openmic"] == pytest.approx(np.mean(f1_pair))
