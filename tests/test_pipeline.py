"""End to end: the Prefect flow on a handful of rendered clips, checked the way a user would check it."""

import json
from pathlib import Path

import mlflow
import yaml
from mlflow import MlflowClient

from mirops.config import Settings
from mirops.registry import tracking
from tests.conftest import load_flow, needs_soundfonts


@needs_soundfonts
def test_retraining_flow_end_to_end(tiny_project, prefect_api):
    retrain = load_flow("retrain.py:retrain")
    from mirops.cli.commands import where_to_look

    # Both families: each trains, is evaluated, registered as its own model and judged by the gate.
    east = {"east__epochs": 2, "east__student": "mobile_fcn", "east__clip_seconds": 3.0,
            "east__model_name": "tiny-east"}
    summary = retrain(root=str(tiny_project), family="both", overrides=east)
    settings = Settings.load(tiny_project, **east)

    # What `mirops pipeline run` (and so `make demo`) ends with: where to look.
    told = where_to_look(summary, tiny_project)
    for where in ("artifacts/audit/audit.html", "models:/tiny-instruments/1", "models:/tiny-east/1", "champion: v1",
                  "promote: first champion", "drift.html", "make ui"):
        assert where in told, f"{where!r} missing from:\n{told}"

    # The dataset version everything carries is the md5 DVC recorded for data/.
    dvc_md5 = yaml.safe_load((tiny_project / "data.dvc").read_text())["outs"][0]["md5"].removesuffix(".dir")
    assert summary["dataset_version"] == dvc_md5

    # A registered version with alias champion, whose run carries that dataset version.
    tracking.setup(settings)
    client = MlflowClient()
    champion = client.get_model_version_by_alias(settings.registry.model_name, "champion")
    run = client.get_run(champion.run_id)
    assert run.data.tags["mirops.dataset_version"] == dvc_md5
    assert run.data.tags["mirops.audit_success"] == "true"
    for metric in ("test_mAP", "test_ROC_AUC", "test_F1_macro", "params_trainable", "valid_mAP"):
        assert metric in run.data.metrics, metric
    assert run.data.metrics["params_trainable"] < 10_000  # U-Net + a 4-class head: reprogramming is tiny
    # Lineage on the version: data, audit, the drift verdict it was registered under, the run, the code.
    assert champion.tags["mirops.dataset_version"] == dvc_md5
    assert champion.tags["mirops.audit_run_id"] == summary["audit"]["run_id"]
    assert champion.tags["mirops.drift_run_id"] == summary["drift"]["run_id"]
    assert champion.tags["mirops.training_run_id"] == champion.run_id
    assert champion.tags["mirops.decision_run_id"] == summary["models"]["reprogram"]["decision_run_id"]
    assert f"# {settings.registry.model_name} v1" in champion.description  # the model card
    assert run.data.tags["mirops.flow_run_id"]  # the Prefect flow run that made it

    # The EAsT student is its own registered model, with its own champion and the same lineage.
    student = client.get_model_version_by_alias("tiny-east", "champion")
    assert student.tags["mirops.family"] == "east" and student.tags["mirops.dataset_version"] == dvc_md5
    assert client.get_run(student.run_id).data.metrics["params_trainable"] > 100_000  # Mobile FCN
    assert "test_mAP" in client.get_run(student.run_id).data.metrics

    # The champion serves from the registry alone (its pyfunc): raw audio in, one probability per class out.
    import pandas as pd

    from mirops.data.audio import load_audio

    model = mlflow.pyfunc.load_model(f"models:/{settings.registry.model_name}@champion")
    clip = next((tiny_project / "production" / "audio").glob("*.wav"))
    probs = model.predict(pd.DataFrame({"wave": [load_audio(clip, 16000)]}))
    assert probs.shape == (1, 4) and set(probs.columns) == set(settings.demo.classes)
    assert bool(((probs >= 0) & (probs <= 1)).all().all())

    # The audit passed, and its result is kept as JSON with observed values.
    audit = json.loads((settings.artifacts_dir / "audit" / "audit.json").read_text())
    assert audit["success"] is True and audit["dataset_version"] == dvc_md5
    assert summary["audit"]["success"] is True

    # The drift report exists, its share is a share, and its verdict has a severity.
    drift = summary["drift"]
    assert 0.0 <= drift["drift_share"] <= 1.0 and drift["severity"] in ("none", "drift")
    assert (tiny_project / "dashboards").is_dir()
    assert json.loads(Path(drift["json_path"]).read_text())


@needs_soundfonts
def test_a_failed_critical_expectation_stops_the_flow_and_names_it(tmp_path, prefect_api):
    import pytest

    retrain = load_flow("retrain.py:retrain")
    from mirops.audit.report import AuditFailed
    from tests.conftest import TINY, make_project, merged

    root = make_project(tmp_path / "strict", merged(TINY, {"audit": {"min_positives_per_class": 50}}))
    with pytest.raises(AuditFailed, match=r"label_balance: positives ≥ 50 per class and split failed for \w+/train"):
        retrain(root=str(root))
    settings = Settings.load(root)
    assert not (settings.artifacts_dir / "train").exists()  # nothing trained on a failed audit
    tracking.setup(settings)
    audit_runs = mlflow.search_runs(search_all_experiments=True, filter_string="tags.`mirops.step` = 'audit'")
    assert list(audit_runs["tags.mirops.audit_success"]) == ["false"]  # the failure itself is on record
