"""Prefect as a control plane: what a run reports (artifacts, log lines) and at most one retraining per project.

The reports are plain functions of the stages' results (`mirops.pipeline.reports`), checked here on small
results; the artifacts a real pipeline run leaves on a Prefect server are checked where that run already happens
(tests/test_servers.py, `test_pipeline_runs_against_mlflow_and_prefect_servers`). The lock is checked with flow
runs on a real `prefect server start`: a holder, the real retraining flow that gives up with the holder in its
state and log, and a second holder that waits until the first is done.
"""

from __future__ import annotations

import json
import math
import sys
import threading
import time
from pathlib import Path

import pytest

from mirops.config import Settings
from mirops.pipeline import reports
from mirops.pipeline.audit import AuditSummary
from mirops.pipeline.retrain_lock import ProjectBusy, read_holder, retraining_lock
from mirops.registry.promotion import Decision
from mirops.services import prefect_server
from tests.conftest import load_flow, make_project
from tests.servers import assert_gone, child_env, http_json, last_json, run_python, spawned, tail, wait_for

# ------------------------------------------------------------------ the reports, from the stages' results


def test_artifact_keys_are_stable_per_project_and_valid_for_prefect(tmp_path):
    from prefect.types.names import raise_on_name_alphanumeric_dashes_only

    one, other = make_project(tmp_path / "My Project_1"), make_project(tmp_path / "b" / "My Project_1")
    key = reports.artifact_key(Settings.load(one), "reprogram", "gate")
    assert key == reports.artifact_key(Settings.load(one), "reprogram", "gate")  # same project, same key
    assert key.startswith("mirops-my-project-1-") and key.endswith("-reprogram-gate")
    assert key != reports.artifact_key(Settings.load(other), "reprogram", "gate")  # same folder name elsewhere
    assert raise_on_name_alphanumeric_dashes_only(key, "Artifact key") == key


def test_audit_page_lists_the_failed_expectations_critical_first(tmp_path):
    checks = [{"suite": "integrity", "expectation": "expect_column_values_to_not_be_null", "severity": "warning",
               "success": False, "observed_value": {"unexpected_count": 2}, "message": "2 clips without a group"},
              {"suite": "label_balance", "expectation": "expect_column_min_to_be_between", "severity": "critical",
               "success": False, "observed_value": 0, "message": "positives ≥ 3 per class failed for flute/test"},
              {"suite": "leakage", "expectation": "x", "severity": "critical", "success": True, "message": "fine"}]
    (tmp_path / "audit.json").write_text(json.dumps({"checks": checks}))
    summary = AuditSummary(False, "run123", str(tmp_path / "audit.json"), str(tmp_path / "audit.html"),
                           ["positives ≥ 3 per class failed for flute/test"], ["2 clips without a group"])
    page = reports.audit_markdown(summary, "abc")
    assert page.startswith("# Audit FAILED: dataset version `abc`")
    assert "critical failures: **1**, warnings: 1" in page and "`run123`" in page and "audit.html" in page
    rows = [line for line in page.splitlines() if line.startswith("| critical") or line.startswith("| warning")]
    assert [r.split(" | ")[1] for r in rows] == ["label_balance", "integrity"]  # critical first; passed ones out
    assert "flute/test" in rows[0] and "unexpected_count" in rows[1]
    assert reports.audit_summary(summary).startswith("audit FAILED: 1 critical failures, 1 warnings (MLflow run run1")
    summary.data_docs_path = str(tmp_path / "docs" / "index.html")  # the Data Docs page, once the audit builds it
    assert "Great Expectations Data Docs: `" in reports.audit_markdown(summary, "abc")


def test_metrics_table_has_a_row_per_class_and_no_nan():
    per_class = {"flute": {"AP": 0.81234567, "ROC_AUC": 0.9, "F1": 0.5, "F1_openmic": 0.6, "positives": 3,
                           "annotated": 9},
                 "piano": {"AP": float("nan"), "ROC_AUC": float("nan"), "F1": 0.0, "F1_openmic": 0.4,
                           "positives": 0, "annotated": 7}}
    rows = reports.metrics_table(per_class, {"test_mAP": 0.8123, "test_ROC_AUC": 0.9, "test_F1_macro": 0.25,
                                             "test_F1_openmic": 0.5})
    assert [r["class"] for r in rows] == ["flute", "piano", "macro"]
    assert rows[0]["AP"] == 0.8123 and rows[1]["AP"] is None  # JSON has no NaN
    assert rows[2] == {"class": "macro", "AP": 0.8123, "ROC_AUC": 0.9, "F1": 0.25, "F1_openmic": 0.5,
                       "positives": 3, "annotated": 16}
    json.dumps(rows, allow_nan=False)


def test_gate_page_gives_the_numbers_of_the_decision():
    gain = {"passed": False, "detail": "mAP 0.6 vs champion v1 0.58: interval not above the margin",
            "metric": "mAP", "challenger": 0.6, "champion": 0.58, "gain": 0.02, "low": -0.01, "high": 0.05,
            "confidence": 0.95, "samples": 1000, "clips": 40, "p_not_better": 0.2}
    decision = Decision("reject", "tiny", "2", "1", "1", "kept champion v1: interval not above the margin",
                        {"audit": {"passed": True, "detail": "passed"}, "gain": gain}, "abc", run_id="r9")
    page = reports.decision_markdown(decision)
    assert page.startswith("# Gate: REJECT tiny v2") and "champion: **v1 → v1**" in page
    for row in ("| challenger mAP | 0.6 |", "| gain | 0.02 |", "| interval low | -0.01 |", "| interval high | 0.05 |",
                "| P(not better) | 0.2 |", "| test clips | 40 |", "| gain | **no** | mAP 0.6 vs champion"):
        assert row in page, row
    assert "`r9`" in page and "kept champion v1" in reports.decision_summary(decision)
    first = Decision("promote", "tiny", "1", None, "1", "first champion", {"gain": {"passed": True, "detail": "-"}})
    assert "champion: **none → v1**" in reports.decision_markdown(first)


def test_drift_page_gives_the_verdict_and_the_report_path(tmp_path):
    from mirops.monitor.drift import DriftVerdict

    verdict = DriftVerdict(p_value=0.0005, alpha=0.05, drift_detected=True, drift_share=0.75,
                           drifted_columns=[f"col{i}" for i in range(25)], n_columns=30,
                           column_p_values={f"col{i}": 0.001 for i in range(30)}, embedding_p_value=0.0005,
                           embedding_drift_detected=True, embedding_drift_score=0.97, window_drift_share=0.9,
                           window_drifted_columns=[], permutations=1999, min_p=0.0005, decidable=True,
                           html_path=tmp_path / "drift.html", json_path=tmp_path / "drift.json",
                           snapshot_id=None, reference_files=12, current_files=4,
                           reference_groups=6, current_groups=2, reference_rows=36, current_rows=8,
                           severity="critical",
                           dataset_version="abc", reference="dataset version abc", current=str(tmp_path / "batch"),
                           run_id="m1")
    page = reports.drift_markdown(verdict)
    assert page.startswith("# Drift DETECTED (severity critical)")
    assert "**p = 0.0005**" in page and "**25 of 30**" in page and "AUC 0.97" in page
    assert "4 files in 2 recordings, 8 windows" in page
    assert f"`{tmp_path / 'drift.html'}`" in page and "`m1`" in page and "… and 5 more" in page
    assert reports.drift_summary(verdict).startswith("drift DETECTED (severity critical): p = 0.0005 at alpha 0.05")
    assert not math.isnan(verdict.drift_share)


# ------------------------------------------------------------------ the lock, without Prefect


def test_the_lock_lets_one_holder_in_and_names_it_to_the_next(tmp_path):
    said: list[str] = []
    with retraining_lock(tmp_path, {"flow_run_id": "run-a"}, wait_s=0) as waited:
        assert waited < 1 and read_holder(tmp_path)["flow_run_id"] == "run-a"
        started = time.monotonic()
        busy = pytest.raises(ProjectBusy, match=r"skipped: another retraining .* \(flow run run-a, pid \d+")
        with busy, retraining_lock(tmp_path, {"flow_run_id": "run-b"}, wait_s=0.5, say=said.append, poll_s=0.1):
            pass
        assert 0.5 <= time.monotonic() - started < 5  # it waited as long as it was told, then gave up
        assert said and "held by flow run run-a" in said[0]
    assert read_holder(tmp_path) == {}  # released: nobody is named any more

    # A waiter gets in as soon as the holder is done, and not before.
    times: dict[str, float] = {}
    holding = threading.Event()

    def first() -> None:
        with retraining_lock(tmp_path, {"flow_run_id": "run-a"}, wait_s=0):
            holding.set()
            time.sleep(1.0)
            times["released"] = time.time()

    thread = threading.Thread(target=first)
    thread.start()
    holding.wait(10)
    with retraining_lock(tmp_path, {"flow_run_id": "run-c"}, wait_s=30, say=lambda _: None, poll_s=0.05) as waited:
        times["acquired"] = time.time()
    thread.join(10)
    assert waited >= 0.5 and times["acquired"] >= times["released"]


def test_the_retraining_deployment_runs_one_flow_run_at_a_time(tmp_path):
    from prefect.client.schemas.objects import ConcurrencyLimitStrategy

    build = load_flow("deployments.py:build_deployments")
    retrain, monitor = build(Settings.load(make_project(tmp_path / "p")))
    assert retrain.concurrency_limit == 1
    assert retrain.concurrency_options.collision_strategy == ConcurrencyLimitStrategy.ENQUEUE
    assert monitor.concurrency_limit is None


# ------------------------------------------------------------------ the lock on a real Prefect server

HOLD_FLOW = (
    "import json, sys, time\n"
    "from pathlib import Path\n"
    "from prefect import flow\n"
    "from prefect.runtime import flow_run\n"
    "from mirops import flow_files\n"
    "from mirops.config import Settings\n"
    "exclusive = flow_files.load('control.py:one_retraining_at_a_time')\n"
    "@flow(name='hold-retraining-lock')\n"
    "def hold(root: str, wait_s: int, release: str) -> dict:\n"
    "    settings = Settings.load(root, schedule__lock_wait_s=wait_s)\n"
    "    with exclusive(settings):\n"
    "        acquired = time.time()\n"
    "        Path(root, 'holding-' + flow_run.get_id()).touch()\n"
    "        while not Path(release).exists() and time.time() - acquired < 120:\n"
    "            time.sleep(0.2)\n"
    "        released = time.time()\n"
    "    return {'id': flow_run.get_id(), 'acquired': acquired, 'released': released}\n"
    "print('RESULT ' + json.dumps(hold(sys.argv[1], int(sys.argv[2]), sys.argv[3])))\n"
)

RETRAIN_FLOW = (
    "import json, sys\n"
    "from mirops import flow_files\n"
    "retrain = flow_files.load('retrain.py:retrain')\n"
    "state = retrain(root=sys.argv[1], overrides={'schedule__lock_wait_s': 1}, return_state=True)\n"
    "print('RESULT ' + json.dumps({'type': state.type.value, 'message': state.message,\n"
    "                              'id': str(state.state_details.flow_run_id)}))\n"
)


def run_logs(url: str, flow_run_id: str) -> str:
    logs = http_json(f"{url}/logs/filter", {"logs": {"flow_run_id": {"any_": [flow_run_id]}}, "limit": 200})
    return "\n".join(entry["message"] for entry in logs)


@pytest.mark.slow
def test_two_retrainings_of_a_project_never_overlap_on_a_prefect_server(tmp_path):
    root = make_project(tmp_path / "p")
    server = prefect_server(tmp_path / "prefect", tmp_path / "logs", ui=False, services=False)
    with server.start(timeout=240):
        env = child_env({"PREFECT_API_URL": server.url, "PREFECT_HOME": str(tmp_path / "client-home")})
        release = tmp_path / "release"
        with spawned([sys.executable, "-c", HOLD_FLOW, str(root), "0", str(release)], env, tmp_path / "a.out",
                     tmp_path / "a.err") as first:
            wait_for("the first flow run to hold the lock", lambda: list(root.glob("holding-*")) or first.poll(),
                     timeout=180, interval=0.5, on_timeout=lambda: tail(tmp_path / "a.err"))
            assert first.poll() is None, tail(tmp_path / "a.err")
            holder = list(root.glob("holding-*"))[0].name.removeprefix("holding-")

            # The real retraining flow: it waits schedule.lock_wait_s, then gives up naming the holder.
            skipped = run_python(RETRAIN_FLOW, env, str(root), timeout=300)
            assert skipped.returncode == 0, skipped.stderr[-3000:]
            state = last_json(skipped.stdout, "RESULT ")
            assert state["type"] == "FAILED" and "skipped: another retraining" in state["message"]
            assert f"flow run {holder}" in state["message"] and "schedule.lock_wait_s = 1 s" in state["message"]
            assert prefect_api_state(server.url, state["id"]) == "FAILED"
            told = run_logs(server.url, state["id"])
            assert "waiting for the project's retraining lock" in told and f"held by flow run {holder}" in told
            assert not (root / "data").exists()  # it did nothing before giving up

            # A second holder waits for the first and gets in once it is done, not before.
            with spawned([sys.executable, "-c", HOLD_FLOW, str(root), "120", str(release)], env, tmp_path / "c.out",
                         tmp_path / "c.err") as second:
                wait_for("the second flow run to wait", lambda: f"held by flow run {holder}" in tail(
                    tmp_path / "c.err", 200) or second.poll() is not None, timeout=180, interval=0.5)
                time.sleep(1)
                release.touch()
                assert first.wait(timeout=60) == 0 and second.wait(timeout=120) == 0, tail(tmp_path / "c.err")
            a = last_json((tmp_path / "a.out").read_text(), "RESULT ")
            c = last_json((tmp_path / "c.out").read_text(), "RESULT ")
        assert c["acquired"] >= a["released"], (a, c)
        told = run_logs(server.url, c["id"])
        assert f"held by flow run {a['id']}" in told and "holding the retraining lock" in told
        assert "waited" in told, told
        seen = server.processes()
    assert_gone(seen, "prefect server")


def prefect_api_state(url: str, flow_run_id: str) -> str:
    return http_json(f"{url}/flow_runs/{flow_run_id}")["state_type"]



# ------------------------------------------------------------------ a real pipeline run's artifacts and logs


def assert_run_reports(api_url: str, root: Path, flow_run_id: str, summary: dict) -> None:
    """What the retraining flow run `flow_run_id` of project `root` left on the Prefect server: its artifacts
    (the audit verdict, the test metrics per class, the gate's decision, the drift verdict) under the project's
    keys, the stages' lines in its log, and its persisted task results. Called by the server test that runs the
    whole pipeline (tests/test_servers.py), so no second pipeline runs for it."""
    settings = Settings.load(root)
    found = http_json(f"{api_url}/artifacts/filter",
                      {"artifacts": {"flow_run_id": {"any_": [flow_run_id]}}, "limit": 50})
    by_key = {a["key"]: a for a in found}
    key = lambda *what: reports.artifact_key(settings, *what)  # noqa: E731
    assert {key("audit"), key("reprogram", "test-metrics"), key("reprogram", "gate"), key("drift")} <= set(by_key), \
        sorted(by_key)
    model, drift = summary["models"]["reprogram"], summary["drift"]

    audit = by_key[key("audit")]
    assert audit["type"] == "markdown" and audit["task_run_id"]
    assert audit["data"].startswith(f"# Audit passed: dataset version `{summary['dataset_version']}`")
    assert summary["audit"]["run_id"] in audit["data"] and "critical failures: **0**" in audit["data"]

    table = by_key[key("reprogram", "test-metrics")]
    rows = json.loads(table["data"]) if isinstance(table["data"], str) else table["data"]
    assert table["type"] == "table"
    assert [r["class"] for r in rows] == [*settings.demo.classes, "macro"]
    assert rows[-1]["AP"] == pytest.approx(model["metrics"]["test_mAP"], abs=1e-4)
    assert all(r["annotated"] > 0 for r in rows)

    gate = by_key[key("reprogram", "gate")]["data"]
    assert gate.startswith(f"# Gate: {model['decision'].upper()} {model['name']} v{model['version']}")
    assert f"→ v{model['champion']}**" in gate and model["decision_run_id"] in gate and model["reason"] in gate

    verdict = by_key[key("drift")]["data"]
    assert verdict.startswith("# Drift ") and f"`{drift['html_path']}`" in verdict and drift["run_id"] in verdict

    told = run_logs(api_url, flow_run_id)
    for line in ("holding the retraining lock", "audit passed:", f"evaluate reprogram run {model['run_id']}:",
                 f"gate: {model['decision']} {model['name']} v{model['version']}", "drift ", "version: data/ is",
                 "check-audio: "):
        assert line in told, f"{line!r} not in the flow run's log:\n{told[-3000:]}"
    assert "evaluate test_mAP" in told  # a line mirops' console printed, routed to the run's log
    assert any((root / ".prefect" / "results").iterdir())  # the tasks' results, persisted in the project
