"""End to end: the Prefect flow on a handful of rendered clips, checked the way a user would check it."""

import json
from pathlib import Path

import mlflow
import yaml
from mlflow import MlflowClient

from mirops.config import Settings
from mirops.registry import tracking
from tests.conftest import needs_soundfonts


@needs_soundfonts
def test_retraining_flow_end_to_end(tiny_project, prefect_api):
    from flows.retrain import retrain
    from mirops.cli import where_to_look

    summary = retrain(root=str(tiny_project))
    settings = Settings.load(tiny_project)

    # What `mirops pipeline run` (and so `make demo`) ends with: where to look.
    told = where_to_look(summary, tiny_project)
    for where in ("artifacts/audit/audit.html", "models:/tiny-instruments/1", "champion", "drift.html", "make ui"):
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
    assert run.data.tags["mirops.drift_detected"] in ("true", "false")  # the verdict is on the run too
    assert run.data.metrics["params_trainable"] < 10_000  # U-Net + a 4-class head: reprogramming is tiny
    assert champion.tags["mirops.dataset_version"] == dvc_md5

    # The champion serves from the registry alone: raw audio in, one probability per class out.
    import torch

    from mirops.data.audio import load_audio
    from mirops.registry.models import load_model

    model = load_model(f"models:/{settings.registry.model_name}@champion")
    clip = next((tiny_project / "production" / "audio").glob("*.wav"))
    with torch.no_grad():
        probs = torch.sigmoid(model(torch.from_numpy(load_audio(clip, 16000))[None]))
    assert probs.shape == (1, 4) and bool(((probs >= 0) & (probs <= 1)).all())

    # The audit passed, and its result is kept as JSON with observed values.
    audit = json.loads((settings.artifacts_dir / "audit" / "audit.json").read_text())
    assert audit["success"] is True and audit["dataset_version"] == dvc_md5
    assert summary["audit"]["success"] is True

    # The drift report exists and its share is a share.
    drift = summary["drift"]
    assert 0.0 <= drift["drift_share"] <= 1.0
    assert (tiny_project / "dashboards").is_dir()
    assert json.loads(Path(drift["json_path"]).read_text())


@needs_soundfonts
def test_a_failed_critical_expectation_stops_the_flow_and_names_it(tmp_path, prefect_api):
    import pytest

    from flows.retrain import retrain
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
