"""The promotion gate, rollback and the race, against a real MLflow store.

The versions here are small logged models whose test predictions are kept on their runs, as
`mirops evaluate` keeps them, so the gate compares them clip by clip without audio; the CLI test in
test_cli.py runs the same gate on real trained models.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import mlflow
import numpy as np
import pytest
import torch
from mlflow import MlflowClient
from sklearn.metrics import average_precision_score, roc_auc_score

from mirops import lineage
from mirops.config import Settings
from mirops.models.serving import ServingSpec
from mirops.pipeline import promote as promote_stage
from mirops.pipeline import register as register_stage
from mirops.pipeline.evaluate import ClipPredictions
from mirops.registry import lock, models, promotion, tracking
from mirops.train.metrics import evaluate_probs
from mirops.train.paired_bootstrap import paired_bootstrap, weighted_average_precision, weighted_roc_auc
from tests.conftest import REPO, make_project

NAME = "gate-test"
CLASSES = ["bass", "drums", "flute", "piano"]
DATASET = "d" * 32
SERVING = ServingSpec(sample_rate=1000, clip_seconds=1.0, threshold=0.5, classes=tuple(CLASSES))


class Constant(torch.nn.Module):
    classes = CLASSES

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        return wave[:, : len(CLASSES)] * 0.0


def labelled(n: int = 120, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    labels = (rng.random((n, len(CLASSES))) < 0.35).astype(float)
    labels[rng.random(labels.shape) < 0.3] = np.nan  # partially annotated, like OpenMIC
    return labels


def probs_of(labels: np.ndarray, skill: float, seed: int) -> np.ndarray:
    """Predictions that separate positives from negatives by `skill` (0 = chance)."""
    rng = np.random.default_rng(seed)
    truth = np.where(np.isnan(labels), rng.random(labels.shape) > 0.5, labels)
    return 1.0 / (1.0 + np.exp(-(skill * (2 * truth - 1) + rng.normal(0, 1, labels.shape))))


def evaluated_version(settings: Settings, probs: np.ndarray, labels: np.ndarray, audit: str = "true",
                      dataset: str = DATASET) -> str:
    """Log, evaluate and register a model whose test predictions are `probs`, as the pipeline would."""
    predictions = ClipPredictions([f"clip{i:03d}" for i in range(len(labels))], CLASSES, probs, labels)
    summary, per_class = evaluate_probs(probs, labels, CLASSES)
    with tracking.run(settings, "fake", "train", dataset) as active:
        models.log_model(Constant(), SERVING)
        mlflow.set_tags({lineage.TAG_AUDIT_SUCCESS: audit, lineage.TAG_AUDIT_RUN: "audit-run"})
        mlflow.log_metrics({f"test_{k}": v for k, v in summary.items()} | {"params_trainable": 10})
        mlflow.log_param("classes", ",".join(CLASSES))
        mlflow.log_dict(per_class, "test_per_class.json")
        active.log_frame(predictions.frame(), lineage.PREDICTIONS_FILE)
    return register_stage.register(settings, active.id).version


@pytest.fixture
def settings(tmp_path) -> Settings:
    settings = Settings.load(make_project(tmp_path / "p", {"registry": {"model_name": NAME,
                                                                          "bootstrap_samples": 500}}))
    tracking.setup(settings)
    return settings


def decision_runs(settings: Settings) -> list:
    return mlflow.search_runs(filter_string=f"tags.`{lineage.TAG_STEP}` = 'promote'", output_format="list",
                              order_by=["attributes.start_time ASC"])


# ---------------------------------------------------------------- the statistics


def test_weighted_curves_equal_scikit_learn_with_sample_weights_ties_included():
    rng = np.random.default_rng(1)
    for _ in range(30):
        n = int(rng.integers(6, 50))
        y = (rng.random(n) < 0.4).astype(float)
        scores = np.round(rng.random(n), 1)  # many ties
        weights = rng.multinomial(n, np.full(n, 1 / n), size=4).astype(float)
        ap, auc = weighted_average_precision(y, scores, weights), weighted_roc_auc(y, scores, weights)
        for row in range(4):
            kept = weights[row] > 0
            if 0 < y[kept].sum() < kept.sum():
                assert ap[row] == pytest.approx(average_precision_score(y, scores, sample_weight=weights[row]))
                assert auc[row] == pytest.approx(roc_auc_score(y, scores, sample_weight=weights[row]))
            else:
                assert np.isnan(ap[row]) and np.isnan(auc[row])


def test_bootstrap_reports_the_metrics_people_see_and_no_gain_for_the_same_model():
    labels = labelled()
    good, chance = probs_of(labels, 2.0, 1), probs_of(labels, 0.0, 2)
    gain = paired_bootstrap(labels, good, chance, "mAP", samples=500)
    assert gain.challenger == pytest.approx(evaluate_probs(good, labels, CLASSES)[0]["mAP"])
    assert gain.champion == pytest.approx(evaluate_probs(chance, labels, CLASSES)[0]["mAP"])
    assert gain.low > 0.1 and gain.low < gain.gain < gain.high and gain.p_not_better == 0.0
    same = paired_bootstrap(labels, good, good, "ROC_AUC", samples=200)
    assert same.gain == 0.0 and same.low == 0.0 == same.high  # paired: identical models never differ


# ---------------------------------------------------------------- the gate


def test_first_version_becomes_champion_then_only_a_significant_gain_replaces_it(settings, capsys):
    labels = labelled()
    first = evaluated_version(settings, probs_of(labels, 0.3, 1), labels)
    assert models.alias_version(NAME, "challenger") == first and models.alias_version(NAME, "champion") is None

    decision = promote_stage.promote(settings, NAME)
    assert decision.action == "promote" and "first champion" in decision.reason
    assert models.alias_version(NAME, "champion") == first

    # A small, noisy gain: the interval reaches below zero, so the champion stays.
    tie = probs_of(labels, 0.3, 1) + np.random.default_rng(5).normal(0, 0.02, labels.shape)
    second = evaluated_version(settings, np.clip(tie, 0, 1), labels)
    rejected = promote_stage.promote(settings, NAME)
    assert rejected.action == "reject" and models.alias_version(NAME, "champion") == first
    gain = rejected.checks["gain"]
    assert gain["low"] <= 0.0 <= gain["high"] and "not above the margin" in rejected.reason
    tags = models.version_tags(NAME, second)
    assert tags["mirops.decision"] == rejected.reason and tags["mirops.decision_run_id"] == rejected.run_id

    # A clearly better model is promoted, and the decision run holds the numbers.
    third = evaluated_version(settings, probs_of(labels, 2.5, 3), labels)
    accepted = promote_stage.promote(settings, NAME)
    assert accepted.action == "promote" and models.alias_version(NAME, "champion") == third
    assert accepted.champion_before == first and accepted.checks["gain"]["low"] > 0.0
    run = MlflowClient().get_run(accepted.run_id)
    assert run.data.tags["mirops.action"] == "promote" and run.data.tags["mirops.champion_before"] == first
    assert run.data.metrics["low"] == pytest.approx(accepted.checks["gain"]["low"])
    assert "beats v1" in run.data.tags["mlflow.note.content"]
    assert [r.data.tags["mirops.action"] for r in decision_runs(settings)] == ["promote", "reject", "promote"]
    assert promotion.champion_stack(NAME) == [first, third]


def test_a_margin_raises_the_bar(settings):
    labels = labelled()
    evaluated_version(settings, probs_of(labels, 0.5, 1), labels)
    promote_stage.promote(settings, NAME)
    evaluated_version(settings, probs_of(labels, 1.5, 2), labels)
    strict = settings.model_copy(update={"registry": settings.registry.model_copy(update={"min_gain": 0.5})})
    decision = promote_stage.promote(strict, NAME, dry_run=True)
    assert decision.action == "reject" and "margin +0.5000" in decision.reason
    assert promote_stage.promote(settings, NAME).action == "promote"


def test_dry_run_explains_without_acting(settings, capsys):
    labels = labelled()
    first = evaluated_version(settings, probs_of(labels, 0.3, 1), labels)
    promote_stage.promote(settings, NAME)
    second = evaluated_version(settings, probs_of(labels, 2.5, 2), labels)
    runs_before = len(decision_runs(settings))

    decision = promote_stage.promote(settings, NAME, dry_run=True)
    assert decision.action == "promote" and decision.dry_run and decision.run_id is None
    assert models.alias_version(NAME, "champion") == first
    assert "mirops.decision" not in models.version_tags(NAME, second)
    assert len(decision_runs(settings)) == runs_before
    err = capsys.readouterr().err
    assert "PROMOTE" in err and "interval" in err and "dry run: nothing was changed" in err


def test_failed_audit_or_critical_drift_blocks_even_a_better_model(settings):
    labels = labelled()
    evaluated_version(settings, probs_of(labels, 0.3, 1), labels)
    promote_stage.promote(settings, NAME)

    unaudited = evaluated_version(settings, probs_of(labels, 2.5, 2), labels, audit="not-run")
    decision = promote_stage.promote(settings, NAME)
    assert decision.action == "reject" and not decision.checks["audit"]["passed"]
    assert decision.checks["gain"]["passed"] and "never audited" in decision.reason
    assert models.alias_version(NAME, "champion") != unaudited

    better = evaluated_version(settings, probs_of(labels, 2.5, 3), labels)
    with tracking.run(settings, "monitor", "monitor", DATASET) as drift_run:
        mlflow.set_tags({"mirops.drift_severity": "critical", "mirops.drift_detected": "true"})
        mlflow.log_metrics({"drift_share": 0.8, "embedding_drift_score": 0.97})
    decision = promote_stage.promote(settings, NAME)
    assert decision.action == "reject" and decision.checks["drift"]["severity"] == "critical"
    assert drift_run.id in decision.reason

    with tracking.run(settings, "monitor", "monitor", DATASET):  # the next batch is fine again
        mlflow.set_tags({"mirops.drift_severity": "none", "mirops.drift_detected": "false"})
        mlflow.log_metrics({"drift_share": 0.1})
    assert promote_stage.promote(settings, NAME, better).action == "promote"


def test_registered_version_carries_lineage_and_a_model_card(settings):
    labels = labelled()
    with tracking.run(settings, "monitor", "monitor", DATASET) as drift_run:
        mlflow.set_tags({"mirops.drift_severity": "drift"})
        mlflow.log_metrics({"drift_share": 0.3, "embedding_drift_score": 0.7})
    version = evaluated_version(settings, probs_of(labels, 1.0, 1), labels)
    mv = MlflowClient().get_model_version(NAME, version)
    assert {k: mv.tags[k] for k in ("mirops.dataset_version", "mirops.audit_run_id", "mirops.drift_run_id",
                                    "mirops.training_run_id", "mirops.audit_success")} == {
        "mirops.dataset_version": DATASET, "mirops.audit_run_id": "audit-run",
        "mirops.drift_run_id": drift_run.id, "mirops.training_run_id": mv.run_id,
        "mirops.audit_success": "true"}
    assert mv.tags["mirops.git_commit"]
    card = mlflow.artifacts.load_text(f"runs:/{mv.run_id}/model_card.md")
    assert card == mv.description
    for expected in (f"# {NAME} v{version}", DATASET, "Per class", "| flute |", "trainable parameters: 10",
                     "## Intended use", "## Limits", drift_run.id):
        assert expected in card
    info = mlflow.models.get_model_info(f"models:/{NAME}/{version}")
    assert info.signature is not None and info.saved_input_example_info is not None


def test_register_refuses_a_model_whose_files_are_gone(settings):
    import shutil

    with tracking.run(settings, "fake", "train", DATASET) as active:
        uri = models.log_model(Constant(), SERVING)
        mlflow.log_metric("test_mAP", 0.5)
    location = MlflowClient().get_logged_model(uri.removeprefix("models:/")).artifact_location
    shutil.rmtree(location.removeprefix("file://") + "/artifacts")  # an upload cut short: no exported programs
    with pytest.raises(FileNotFoundError, match="weights"):
        register_stage.register(settings, active.id)
    assert MlflowClient().search_model_versions(f"name = '{NAME}'") == []


# ---------------------------------------------------------------- rollback


def test_rollback_walks_back_through_champions_and_is_logged(settings):
    labels = labelled()
    versions = []
    for skill in (0.2, 1.2, 3.0):
        versions.append(evaluated_version(settings, probs_of(labels, skill, len(versions)), labels))
        assert promote_stage.promote(settings, NAME).action == "promote"
    assert promotion.champion_stack(NAME) == versions

    assert promote_stage.rollback(settings, NAME, dry_run=True).champion_after == versions[1]
    assert models.alias_version(NAME, "champion") == versions[2]
    back = promote_stage.rollback(settings, NAME, reason="complaints from the tagging team")
    assert back.action == "rollback" and models.alias_version(NAME, "champion") == versions[1]
    assert "complaints from the tagging team" in MlflowClient().get_run(back.run_id).data.tags["mlflow.note.content"]
    assert models.version_tags(NAME, versions[2])["mirops.rolled_back_by"] == back.run_id
    promote_stage.rollback(settings, NAME)
    assert models.alias_version(NAME, "champion") == versions[0]
    with pytest.raises(LookupError, match="no earlier champion"):
        promote_stage.rollback(settings, NAME)
    assert models.alias_version(NAME, "champion") == versions[0]


def test_a_move_cut_short_between_stack_and_alias_is_repaired(settings):
    labels = labelled()
    first = evaluated_version(settings, probs_of(labels, 0.2, 1), labels)
    promote_stage.promote(settings, NAME)
    second = evaluated_version(settings, probs_of(labels, 3.0, 2), labels)
    # A promotion that died after writing the stack but before moving the alias:
    MlflowClient().set_registered_model_tag(NAME, promotion.TAG_STACK, json.dumps([first, second]))
    assert promotion.champion_stack(NAME) == [first]
    assert promote_stage.promote(settings, NAME).action == "promote"
    assert promotion.champion_stack(NAME) == [first, second]


# ---------------------------------------------------------------- the race and the lock

RACER = """
import sys, time
from mirops.config import Settings
from mirops.pipeline import promote as promote_stage
root, version, start = sys.argv[1], sys.argv[2], float(sys.argv[3])
settings = Settings.load(root)
time.sleep(max(0.0, start - time.time()))
d = promote_stage.promote(settings, None, version); print(d.action, d.version, "vs", d.champion_before)
"""


def test_two_racing_promotions_leave_one_champion_and_lose_no_history(settings):
    labels = labelled(n=200)
    first = evaluated_version(settings, probs_of(labels, 0.2, 1), labels)
    promote_stage.promote(settings, NAME)
    second = evaluated_version(settings, probs_of(labels, 1.5, 2), labels)
    third = evaluated_version(settings, probs_of(labels, 3.0, 3), labels)

    start = time.time() + 8.0  # both processes have imported everything by then
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    racers = [subprocess.Popen([sys.executable, "-c", RACER, str(settings.root), v, str(start)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
              for v in (second, third)]
    outcomes = [r.communicate(timeout=300) for r in racers]
    print([out for out, _ in outcomes])  # who was judged against whom, shown if an assertion below fails
    assert all(r.returncode == 0 for r in racers), [err[-2000:] for _, err in outcomes]

    champion = models.alias_version(NAME, "champion")
    client = MlflowClient()
    holders = [str(v.version) for v in client.search_model_versions(f"name = '{NAME}'")
               if "champion" in client.get_model_version(NAME, v.version).aliases]
    assert holders == [champion]  # exactly one champion
    stack = promotion.champion_stack(NAME)
    assert stack[0] == first and stack[-1] == champion and champion in (second, third)
    # Every promotion was judged against the champion of its moment: the champion before each move is
    # the one the previous move installed, so no champion vanished from the history.
    moves = [r for r in decision_runs(settings) if r.data.tags["mirops.action"] == "promote"][1:]
    assert [m.data.tags["mirops.champion_before"] for m in moves] == stack[:-1][-len(moves):]
    assert [m.data.tags["mirops.version"] for m in moves] == stack[1:]
    assert [m.name for m in MlflowClient().search_registered_models()] == [NAME]  # no lock poses as a model
    promote_stage.rollback(settings, NAME)
    assert models.alias_version(NAME, "champion") == stack[-2]


HOLD_LOCK = """
import sys, time
from pathlib import Path
import mlflow
from mirops.registry import lock
mlflow.set_tracking_uri(sys.argv[1])
with lock.registry_lock(sys.argv[2], sys.argv[3] or None, Path(sys.argv[4])):
    print("held", flush=True)
    time.sleep(600)
"""


@pytest.mark.parametrize("lock_url", [None, "postgresql://postgres@127.0.0.1:5432/test"],
                         ids=["file-lock", "postgres-advisory"])
def test_lock_waits_names_its_holder_and_dies_with_it(settings, lock_url):
    """The lock is a primitive made for it (never a registered model) and a killed holder frees it at once."""
    if lock_url:
        psycopg2 = pytest.importorskip("psycopg2")
        try:
            psycopg2.connect(lock_url).close()
        except psycopg2.OperationalError as exc:
            pytest.skip(f"no PostgreSQL at {lock_url}: {exc}")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, mlflow.get_tracking_uri(), NAME, lock_url or "",
                               str(settings.root)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert holder.stdout.readline().strip() == "held"
        with (pytest.raises(lock.LockTimeout, match=rf"promotion lock of {NAME}.*pid {holder.pid}"),
              lock.registry_lock(NAME, lock_url, settings.root, timeout=0.5)):
            pass
        assert [m.name for m in MlflowClient().search_registered_models()] == []  # the UI shows no lock model
    finally:
        holder.kill()  # dies holding it: no release code runs
        holder.wait()
    with lock.registry_lock(NAME, lock_url, settings.root, timeout=5) as me:
        assert me
