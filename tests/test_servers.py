"""The stack against real servers: `mlflow server` (SQLite + artifact folder, or PostgreSQL) and `prefect server
start` on free localhost ports, chosen only by MLFLOW_TRACKING_URI and PREFECT_API_URL.

Slow (each starts its own servers; two run the whole pipeline): `pytest tests/test_servers.py -m slow`.
Server logs land in each test's tmp folder (servers/logs) for diagnosis.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from mirops.services import LocalServers, ServiceError, local_servers, mlflow_server, prefect_server
from tests.conftest import make_project, needs_soundfonts
from tests.servers import (
    MIROPS,
    assert_gone,
    client_env,
    flow_runs,
    http_json,
    last_json,
    mlflow_runs,
    noise_batch,
    prefect,
    prefect_or_none,
    process_tree,
    registry_is_consistent,
    run_python,
    spawned,
    tail,
    wait_for,
)
from tests.test_prefect_control import assert_run_reports

MODEL = "tiny-instruments"  # registry.model_name of the TINY project (tests/conftest.py)
PIPELINE_TIMEOUT = 900
POSTGRES = os.environ.get("MIROPS_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[LocalServers]:
    """MLflow (SQLite + artifact folder) and Prefect (SQLite; scheduler every 5 s) servers for one test;
    afterwards not one of their processes may be left."""
    with local_servers(tmp_path / "servers", prefect_ui=False,
                       prefect_env={"PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "5"}) as running:
        yield running
        seen = [p for service in running.services for p in service.processes()]
    assert_gone(seen, "servers after the test")


@pytest.fixture(scope="module")
def versioned_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A TINY project with its demo data rendered and versioned (no servers needed for that)."""
    root = make_project(tmp_path_factory.mktemp("servers") / "p")
    for args in (["data", "demo"], ["data", "version", "--no-commit"]):
        done = subprocess.run([MIROPS, *args, "--root", str(root)], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
    return root


@contextmanager
def mlflow_client(url: str):
    """An MlflowClient on `url`, with the process-wide tracking and registry URIs pointed there meanwhile
    (restored exactly afterwards, unset ones included, so later tests in this process see what they set)."""
    import mlflow
    from mlflow import MlflowClient
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    before_env = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    before = tracking_utils._tracking_uri, registry_utils._registry_uri
    mlflow.set_tracking_uri(url)
    mlflow.set_registry_uri(url)
    try:
        yield MlflowClient(tracking_uri=url, registry_uri=url)
    finally:
        mlflow.set_tracking_uri(before[0])
        registry_utils._registry_uri = before[1]
        for key, value in before_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def pipeline_argv(root: Path) -> list[str]:
    return [MIROPS, "pipeline", "run", "--root", str(root), "--json"]


# ------------------------------------------------------------------ server mode


@pytest.mark.slow
@needs_soundfonts
def test_pipeline_runs_against_mlflow_and_prefect_servers(tmp_path, servers):
    root = make_project(tmp_path / "p")
    done = subprocess.run(pipeline_argv(root), env=client_env(servers, root), capture_output=True, text=True,
                          timeout=PIPELINE_TIMEOUT)
    assert done.returncode == 0, f"pipeline failed:\n{done.stderr[-5000:]}"
    summary = last_json(done.stdout)
    assert summary["tracking_uri"] == servers.mlflow.url
    assert not (root / "mlruns.db").exists() and not (root / "mlartifacts").exists()  # nothing went local

    model = summary["models"]["reprogram"]
    with mlflow_client(servers.mlflow.url) as client:
        # The registered version is on the server, with its model files downloadable from it.
        assert registry_is_consistent(client, tmp_path / "download")[model["name"]] == [str(model["version"])]
        version = client.get_model_version(model["name"], str(model["version"]))
        assert version.run_id == model["run_id"]
        # The runs are on the server; their artifacts live in the server's artifact folder (proxied).
        runs = client.search_runs([client.get_experiment_by_name(MODEL).experiment_id])
        steps = {r.data.tags.get("mirops.step") for r in runs}
        assert {"audit", "train", "monitor"} <= steps, steps
        train = client.get_run(model["run_id"])
        assert train.info.artifact_uri.startswith("mlflow-artifacts:"), train.info.artifact_uri
    assert any((tmp_path / "servers" / "mlartifacts").rglob("MLmodel"))

    # The Prefect flow run is recorded on the Prefect server, completed, and the MLflow runs name it.
    runs = flow_runs(servers, flow_name="mirops-retrain")
    assert [r["state_type"] for r in runs] == ["COMPLETED"], runs
    assert train.data.tags.get("mirops.flow_run_id") == runs[0]["id"]
    # ... with its artifacts (audit, metrics per class, gate, drift), its stages' log lines and persisted results.
    assert_run_reports(servers.prefect.url, root, runs[0]["id"], summary)

    # Stopping the servers leaves no process behind (the fixture checks again after the test).
    seen = [p for service in servers.services for p in service.processes()]
    assert len(seen) >= 2
    for service in servers.services:
        service.stop()
    assert_gone(seen, "mlflow server and prefect server")


def test_a_server_that_cannot_start_says_why(tmp_path):
    service = mlflow_server("nosuchscheme://nowhere", tmp_path / "artifacts", tmp_path / "logs")
    started = time.monotonic()
    with pytest.raises(ServiceError, match=r"mlflow exited with code \d+ before answering .*/health"):
        service.start(timeout=120)
    assert time.monotonic() - started < 120
    assert service.log_path.exists() and not service.processes()


# ------------------------------------------------------------------ schedules and the drift trigger


@pytest.mark.slow
@needs_soundfonts
def test_cron_deployment_creates_and_runs_a_flow_run(tmp_path, servers, versioned_project):
    """`mirops serve` with the monitor's cron every minute: the server's scheduler creates a run, served here."""
    root = versioned_project
    env = client_env(servers, root, MIROPS_SCHEDULE__MONITOR_CRON="* * * * *",
                     MIROPS_SCHEDULE__RETRAIN_ON_DRIFT="false")
    log = tmp_path / "serve"
    with spawned([MIROPS, "serve", "--root", str(root), "--json"], env, log.with_suffix(".out"),
                 log.with_suffix(".err")) as serve:

        def story() -> str:
            return f"mirops serve's log:\n{tail(log.with_suffix('.err'))}"

        monitor = wait_for("the deployments to be created", lambda: serve.poll() is None and prefect_or_none(
            servers, "/deployments/name/mirops-monitor/daily"), timeout=120, on_timeout=story)
        retrain = prefect(servers, "/deployments/name/mirops-retrain/weekly")
        assert [s["schedule"]["cron"] for s in monitor["schedules"]] == ["* * * * *"]
        assert [s["schedule"]["cron"] for s in retrain["schedules"]] == ["0 3 * * 1"]  # params.yaml: weekly
        assert retrain["parameters"] == {"root": str(root), "family": "reprogram", "grid": None, "source": None}
        assert monitor["parameters"] == {"root": str(root), "current": None}
        told = log.with_suffix(".err").read_text()
        assert "mirops-monitor/daily" in told and servers.prefect.url in told
        plan = last_json(log.with_suffix(".out").read_text())
        assert plan["prefect_api_url"] == servers.prefect.url
        assert {d["name"]: d["cron"] for d in plan["deployments"]} == {
            "mirops-retrain/weekly": "0 3 * * 1", "mirops-monitor/daily": "* * * * *"}

        def completed():
            runs = flow_runs(servers, deployment_id=monitor["id"])
            failed = [r for r in runs if r["state_type"] in ("FAILED", "CRASHED")]
            assert not failed, f"{failed[0]['state_name']}: {failed[0]['state']}\n{story()}"
            return [r for r in runs if r["state_type"] == "COMPLETED"]

        done = wait_for("a scheduled monitor run to complete", completed, timeout=150, interval=3,
                        on_timeout=story)[0]
        assert done["auto_scheduled"] is True  # created by the server's scheduler, not by hand
        seen = process_tree(serve.pid)
        assert seen, f"mirops serve exited:\n{story()}"
    assert_gone(seen, "mirops serve and its flow runs")
    # The scheduled monitor run did its work on the servers: an MLflow monitor run with a verdict.
    monitors = mlflow_runs(servers.mlflow.url, MODEL, "monitor")
    assert monitors and all(
        any(t["key"] == "mirops.drift_detected" for t in r["data"]["tags"]) for r in monitors)


MONITOR_FLOW = (
    "import json, sys\n"
    "from mirops import flow_files\n"
    "monitor = flow_files.load('monitor.py:monitor')\n"
    "print('RESULT ' + json.dumps(monitor(root=sys.argv[1], current=sys.argv[2]), default=str))\n"
)


def run_monitor_flow(root: Path, batch: Path, env: dict[str, str]) -> dict:
    done = run_python(MONITOR_FLOW, env, str(root), str(batch))
    assert done.returncode == 0, f"the monitor flow failed:\n{done.stderr[-5000:]}"
    return last_json(done.stdout, "RESULT ")


@pytest.mark.slow
@needs_soundfonts
def test_drift_starts_the_retraining_deployment_with_the_reason(tmp_path, servers, versioned_project):
    """A drifting batch: the monitor flow starts `mirops-retrain/weekly` (served by `mirops serve`) with the reason;
    the retraining runs to the end and its MLflow runs name the monitor run, which names it back."""
    root, batch = versioned_project, noise_batch(tmp_path / "noise")
    env = client_env(servers, root)

    # No deployment on the server yet: the monitor gives its verdict and says why nothing was started.
    alone = run_monitor_flow(root, batch, env)
    assert alone["drift_detected"] is True
    assert alone["retraining"]["started"] is False
    assert "no deployment 'mirops-retrain/weekly'" in alone["retraining"]["why"]

    log = tmp_path / "serve"
    with spawned([MIROPS, "serve", "--root", str(root)], env, log.with_suffix(".out"),
                 log.with_suffix(".err")) as serve:

        def story() -> str:
            return f"mirops serve's log:\n{tail(log.with_suffix('.err'), 60)}"

        retrain = wait_for("the deployments to be created", lambda: serve.poll() is None and prefect_or_none(
            servers, "/deployments/name/mirops-retrain/weekly"), timeout=120, on_timeout=story)
        verdict = run_monitor_flow(root, batch, env)
        started = verdict["retraining"]
        assert started["started"] is True, started

        def finished():
            run = prefect(servers, f"/flow_runs/{started['flow_run_id']}")
            assert run["state_type"] not in ("FAILED", "CRASHED", "CANCELLED"), f"{run['state']}\n{story()}"
            return run if run["state_type"] == "COMPLETED" else None

        run = wait_for("the triggered retraining to complete", finished, timeout=PIPELINE_TIMEOUT, interval=3,
                       on_timeout=story)
        seen = process_tree(serve.pid)
    assert_gone(seen, "mirops serve and its flow runs")

    # The retraining flow run: of the weekly deployment, not one of its cron runs, with the reason.
    assert run["deployment_id"] == retrain["id"] and run["auto_scheduled"] is False
    assert "drift-triggered" in run["tags"]
    trigger = run["parameters"]["trigger"]
    # The reason a person reads in the Prefect UI: the batch, the p-value at the level, what drifted.
    assert re.search(r"drift detected by the monitor on 8 files \(8 windows\): p = \d\.\d+ at alpha 0\.05; "
                     r"\d+ of \d+ columns \(descriptors, class scores\) drifted \(",
                     trigger["reason"]), trigger["reason"]
    assert re.search(r"domain classifier AUC \d\.\d\d", trigger["reason"]), trigger["reason"]
    assert trigger["monitor_run_id"] == verdict["run_id"]
    assert run["parameters"]["root"] == str(root) and run["parameters"]["family"] == "reprogram"
    # ... which names the monitor's own Prefect flow run.
    monitor_run = prefect(servers, f"/flow_runs/{trigger['flow_run_id']}")
    assert prefect(servers, f"/flows/{monitor_run['flow_id']}")["name"] == "mirops-monitor"
    assert monitor_run["state_type"] == "COMPLETED"

    with mlflow_client(servers.mlflow.url) as client:
        # The MLflow monitor runs link forward: the flow run they started, or why there was none.
        tags = client.get_run(verdict["run_id"]).data.tags
        assert tags["mirops.triggered_flow_run"] == run["id"] and tags["mirops.drift_detected"] == "true"
        assert "no deployment" in client.get_run(alone["run_id"]).data.tags["mirops.retrain_not_started"]
        # The retraining's MLflow runs link back: their flow run, the reason, the monitor run and flow run.
        experiment = client.get_experiment_by_name(MODEL).experiment_id
        trained = client.search_runs([experiment], f"tags.`mirops.step` = 'train' and "
                                                   f"tags.`mirops.flow_run_id` = '{run['id']}'")
        assert len(trained) == 1
        linked = trained[0].data.tags
        assert linked["mirops.trigger_reason"] == trigger["reason"]
        assert linked["mirops.trigger_monitor_run_id"] == verdict["run_id"]
        assert linked["mirops.trigger_flow_run_id"] == monitor_run["id"]
        registry_is_consistent(client, tmp_path / "download")


def test_the_monitor_says_why_it_cannot_start_retraining_without_a_server(tmp_path):
    probe = ("from mirops import flow_files\n"
             "start_retraining = flow_files.load('monitor.py:start_retraining')\n"
             "print(repr(start_retraining({'reason': 'drift'})))\n")
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"} | {"PREFECT_HOME": str(tmp_path)}
    unset = run_python(probe, env, timeout=120)
    assert unset.returncode == 0, unset.stderr
    assert "(None, " in unset.stdout and "PREFECT_API_URL is not set" in unset.stdout
    closed = run_python(probe, env | {"PREFECT_API_URL": "http://127.0.0.1:9/api"}, timeout=120)
    assert closed.returncode == 0, closed.stderr
    assert "(None, " in closed.stdout and "cannot be reached" in closed.stdout


def test_serve_needs_a_prefect_server(tmp_path):
    root = make_project(tmp_path / "p")
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"} | {"PREFECT_HOME": str(tmp_path)}
    unset = subprocess.run([MIROPS, "serve", "--root", str(root)], env=env, capture_output=True, text=True,
                           timeout=120)
    assert unset.returncode != 0
    assert "PREFECT_API_URL is not set" in unset.stderr and "prefect server start" in unset.stderr
    closed = subprocess.run([MIROPS, "serve", "--root", str(root)], env=env | {"PREFECT_API_URL": "http://127.0.0.1:9/api"},
                            capture_output=True, text=True, timeout=120)
    assert closed.returncode != 0
    assert "the Prefect server at http://127.0.0.1:9/api does not answer" in closed.stderr


# ------------------------------------------------------------------ tracking-server outage


@pytest.mark.slow
@needs_soundfonts
def test_pipeline_survives_a_tracking_server_outage(tmp_path, servers):
    """Kill the MLflow server (its whole process group) once training has started, restart it on the same port
    and store a few seconds later: the client's retries (MLFLOW_HTTP_REQUEST_*: 0, 2, 4, ... 64 s, about two
    minutes in all) carry the pipeline through. Whatever the outcome, the registry holds no version without
    its model files and no alias to a missing version."""
    root = make_project(tmp_path / "p")
    env = client_env(servers, root, MLFLOW_HTTP_REQUEST_MAX_RETRIES="7", MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR="1",
                     MLFLOW_HTTP_REQUEST_TIMEOUT="60")
    out, err = tmp_path / "pipeline.out", tmp_path / "pipeline.err"
    with spawned(pipeline_argv(root), env, out, err) as pipeline:
        wait_for("the training run on the tracking server",
                 lambda: pipeline.poll() is not None or mlflow_runs(servers.mlflow.url, MODEL, "train"),
                 timeout=PIPELINE_TIMEOUT, on_timeout=lambda: tail(err))
        assert pipeline.poll() is None, f"the pipeline ended before the outage:\n{tail(err)}"
        servers.mlflow.stop(timeout=0)  # SIGTERM and SIGKILL at once: a crash, not a shutdown
        outage = time.monotonic()
        time.sleep(5)  # down at least 5 s, and until the pipeline has felt it (its client retries)
        wait_for("the pipeline to hit the outage", lambda: pipeline.poll() is not None or "Retrying (" in
                 err.read_text(errors="replace"), timeout=120, interval=1, on_timeout=lambda: tail(err))
        servers.mlflow.start(timeout=120)  # same port, same SQLite store and artifact folder
        down = time.monotonic() - outage
        code = pipeline.wait(timeout=PIPELINE_TIMEOUT)
    told = err.read_text(errors="replace")
    assert "Connection refused" in told  # the outage was felt, and ridden out
    if code == 0:
        summary = last_json(out.read_text())
        model = summary["models"]["reprogram"]
        assert summary["tracking_uri"] == servers.mlflow.url
    else:  # allowed, if it says so clearly: the tracking server by its address, not a bare traceback
        assert servers.mlflow.url.split("//")[1] in told, told[-5000:]
    with mlflow_client(servers.mlflow.url) as client:
        versions = registry_is_consistent(client, tmp_path / "download")
        if code == 0:
            assert versions[model["name"]] == [str(model["version"])]
            champion = client.get_model_version_by_alias(model["name"], "champion")
            assert champion.version == str(model["version"])
    print(f"outage {down:.1f} s; pipeline exit code {code}")
    assert code == 0, f"the pipeline did not ride out a {down:.0f} s outage:\n{told[-5000:]}"


@pytest.mark.slow
@needs_soundfonts
def test_pipeline_fails_clearly_when_the_tracking_server_stays_down(tmp_path, servers):
    """A tracking server that does not come back within the retries: the pipeline stops with a message naming
    it, and the registry (looked at once the server is back) holds nothing half-done."""
    root = make_project(tmp_path / "p")
    env = client_env(servers, root, MLFLOW_HTTP_REQUEST_MAX_RETRIES="2", MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR="1",
                     MLFLOW_HTTP_REQUEST_TIMEOUT="10")
    out, err = tmp_path / "pipeline.out", tmp_path / "pipeline.err"
    with spawned(pipeline_argv(root), env, out, err) as pipeline:
        wait_for("the training run on the tracking server",
                 lambda: pipeline.poll() is not None or mlflow_runs(servers.mlflow.url, MODEL, "train"),
                 timeout=PIPELINE_TIMEOUT, on_timeout=lambda: tail(err))
        servers.mlflow.stop(timeout=0)
        code = pipeline.wait(timeout=PIPELINE_TIMEOUT)
    told = err.read_text(errors="replace")
    assert code != 0
    assert servers.mlflow.url in "\n".join(told.strip().splitlines()[-3:]), told[-5000:]  # the last word names it
    servers.mlflow.start(timeout=120)
    with mlflow_client(servers.mlflow.url) as client:
        registry_is_consistent(client, tmp_path / "download")


# ------------------------------------------------------------------ PostgreSQL backend store


@contextmanager
def fresh_postgres_database(prefix: str) -> Iterator[str]:
    """A new database on the PostgreSQL server of MIROPS_TEST_POSTGRES (dropped afterwards); its URL."""
    psycopg2 = pytest.importorskip("psycopg2", reason="psycopg2 (psycopg2-binary) is not installed")
    try:
        admin = psycopg2.connect(POSTGRES, connect_timeout=3)
    except psycopg2.OperationalError as exc:
        pytest.skip(f"no PostgreSQL server reachable at {POSTGRES} ({str(exc).strip()}); "
                    "set MIROPS_TEST_POSTGRES to one")
    admin.autocommit = True
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    try:
        yield POSTGRES.rsplit("/", 1)[0] + "/" + name
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.mark.slow
def test_mlflow_tracking_and_registry_on_postgresql(tmp_path):
    import mlflow
    import psycopg2

    with fresh_postgres_database("mirops_mlflow") as url:
        service = mlflow_server(url, tmp_path / "artifacts", tmp_path / "logs")
        with service.start(timeout=180), mlflow_client(service.url) as client:
            experiment = client.create_experiment("pg-check")
            with mlflow.start_run(experiment_id=experiment) as run:
                mlflow.log_metric("test_mAP", 0.5)
                info = mlflow.pyfunc.log_model(name="model", python_model=identity_model(), pip_requirements=[])
            version = mlflow.register_model(info.model_uri, "pg-model", tags={"run_id": run.info.run_id})
            client.set_registered_model_alias("pg-model", "champion", version.version)

            champion = client.get_model_version_by_alias("pg-model", "champion")
            assert champion.version == version.version and champion.tags["run_id"] == run.info.run_id
            assert client.get_run(run.info.run_id).data.metrics["test_mAP"] == 0.5
            assert registry_is_consistent(client, tmp_path / "download") == {"pg-model": ["1"]}
            seen = service.processes()
        assert_gone(seen, "mlflow server on PostgreSQL")
        # It really is PostgreSQL that holds them.
        with psycopg2.connect(url) as conn, conn.cursor() as cur:
            cur.execute("SELECT name, version FROM model_versions")
            assert cur.fetchall() == [("pg-model", 1)]
            cur.execute("SELECT alias, version FROM registered_model_aliases")
            assert cur.fetchall() == [("champion", 1)]


def identity_model():
    import mlflow.pyfunc

    class Identity(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input: list[float], params=None) -> list[float]:
            return model_input

    return Identity()


@pytest.mark.slow
def test_prefect_server_on_postgresql(tmp_path):
    with fresh_postgres_database("mirops_prefect") as url:
        database = url.replace("postgresql://", "postgresql+asyncpg://", 1)
        service = prefect_server(tmp_path / "prefect", tmp_path / "logs", database_url=database, ui=False,
                                 services=False)
        with service.start(timeout=240):
            flow = http_json(service.url + "/flows/", {"name": "pg-check"})
            run = http_json(service.url + "/flow_runs/", {"flow_id": flow["id"], "name": "pg-run"})
            assert http_json(f"{service.url}/flow_runs/{run['id']}")["name"] == "pg-run"
            seen = service.processes()
        assert_gone(seen, "prefect server on PostgreSQL")
