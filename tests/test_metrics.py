import numpy as np
from sklearn.metrics import average_precision_score, f1_score

from mirops.train.metrics import evaluate_probs


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
