"""The retraining pipeline as a Prefect flow:
source or demo data → check (quarantine) → version → precompute (mapped) → audit → monitor → per model
family: train → evaluate → register (challenger) → promote (the gate moves champion or says why not).

Each task calls one stage of `mirops.pipeline`; the flow only orders them and passes ids along.
Loaded by entrypoint path (`retrain.py:retrain`, see `mirops.flow_files`), never imported as a package.

As a control plane (docs/operations.md, "Prefect"): at most one retraining per project runs at a time (the
project's lock, `schedule.lock_wait_s`); each task logs its result through the run logger and mirops' console
lines go there too; the audit verdict, the test metrics per class, the gate's decision and the drift verdict
are the run's artifacts; training, evaluation and precomputation have timeouts (`schedule.*_timeout_s`),
DVC and registry calls retries, and task results are persisted under `<root>/.prefect/results`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, task

from mirops import flow_files, lineage
from mirops.audit.errors import AuditFailed
from mirops.config import Settings
from mirops.data.manifest import MANIFEST
from mirops.pipeline import audit as audit_stage
from mirops.pipeline import evaluate as evaluate_stage
from mirops.pipeline import ingest, reports
from mirops.pipeline import monitor as monitor_stage
from mirops.pipeline import promote as promote_stage
from mirops.pipeline import register as register_stage
from mirops.pipeline import train as train_stage
from mirops.pipeline import version as version_stage
from mirops.registry import tracking

control = flow_files.load_path(Path(__file__).with_name("control.py"))
IO_RETRIES: dict[str, Any] = {"retries": 2, "retry_delay_seconds": 5}  # DVC, the registry: a server may blink


@task(name="demo-data")
def demo_data(settings: Settings) -> None:
    ingest.demo(settings)


@task(name="check-audio")
def check(settings: Settings):
    checked = ingest.check_data(settings)
    control.log_line(f"check-audio: {checked.line()}")
    return checked


@task(name="version", **IO_RETRIES)
def version(settings: Settings) -> str:
    dataset_version = version_stage.version(settings, check=False)  # the check-audio task just ran
    control.log_line(f"version: data/ is dataset version {dataset_version}")
    return dataset_version


def publish_audit(settings: Settings, summary, dataset_version: str) -> None:
    control.log_line(reports.audit_summary(summary))
    control.publish_markdown(reports.artifact_key(settings, "audit"), reports.audit_markdown(summary, dataset_version),
                             f"audit of dataset version {dataset_version}")


@task(name="audit")
def audit(settings: Settings, dataset_version: str) -> audit_stage.AuditSummary:
    """The suites; the verdict and its failed expectations become the run's audit artifact, pass or fail."""
    try:
        summary = audit_stage.audit(settings, dataset_version)
    except AuditFailed as failed:  # a critical expectation: published as well, then the flow stops
        publish_audit(settings, failed.result, dataset_version)
        raise
    publish_audit(settings, summary, dataset_version)
    return summary


@task(name="train")
def train(settings: Settings, dataset_version: str, audit_run_id: str, family: str) -> str:
    run_id = train_stage.train(settings, family, dataset_version, audit_run_id)
    control.log_line(f"train {family}: MLflow run {run_id}")
    return run_id


@task(name="train-grid")
def train_grid(settings: Settings, dataset_version: str, audit_run_id: str, family: str, grid: str) -> dict:
    result = train_stage.train_grid(settings, family, grid, dataset_version, audit_run_id)
    control.log_line(f"train-grid {family} {grid}: parent MLflow run {result['run_id']}")
    return result


@task(name="evaluate", **IO_RETRIES)
def evaluate(settings: Settings, run_id: str, family: str) -> dict[str, float]:
    metrics = evaluate_stage.evaluate(settings, run_id)
    control.log_line(reports.metrics_summary(family, run_id, metrics))
    control.publish_table(reports.artifact_key(settings, family, "test-metrics"),
                          reports.metrics_table(reports.per_class_of_run(settings, run_id), metrics),
                          f"{family}: test-split metrics per class of MLflow run {run_id}")
    return metrics


@task(name="register", **IO_RETRIES)
def register(settings: Settings, run_id: str) -> register_stage.Registration:
    registration = register_stage.register(settings, run_id)
    control.log_line(f"register: {registration.name} v{registration.version} (challenger) from run {run_id}")
    return registration


@task(name="promote", **IO_RETRIES)
def promote(settings: Settings, name: str, version: str, family: str):
    decision = promote_stage.promote(settings, name, version)
    control.log_line(reports.decision_summary(decision))
    control.publish_markdown(reports.artifact_key(settings, family, "gate"), reports.decision_markdown(decision),
                             f"{family}: the promotion gate on {name} v{version}")
    return decision


@task(name="monitor")
def monitor(settings: Settings, dataset_version: str, current: str | None):
    verdict = monitor_stage.monitor(settings, Path(current) if current else None, dataset_version)
    control.publish_drift(settings, verdict)
    return verdict


@task(name="link-runs", **IO_RETRIES)
def link_runs(settings: Settings, run_ids: list[str], trigger: dict[str, str] | None) -> None:
    """Tag the MLflow runs of this flow run with the Prefect flow run and, if any, what triggered it."""
    from prefect.runtime import flow_run

    tracking.tag_runs(settings, run_ids, {lineage.TAG_FLOW_RUN: str(flow_run.get_id())}
                      | {f"{lineage.TAG_TRIGGER_PREFIX}{k}": str(v) for k, v in (trigger or {}).items()})


FAMILIES = {"reprogram": ["reprogram"], "east": ["east"], "both": ["reprogram", "east"]}


@flow(name=lineage.RETRAIN_FLOW, persist_result=True)
def retrain(root: str = ".", overrides: dict[str, Any] | None = None, current: str | None = None,
            task_runner: str = "thread", family: str = "reprogram", grid: str | None = None,
            source: str | None = None, trigger: dict[str, str] | None = None) -> dict[str, Any]:
    """Run the whole pipeline on the project at `root`; `overrides` are `section__field` settings.

    `family`: reprogram | east | both (each its own registered model and champion); `grid`: also train
    that comparison grid; `source`: a dataset folder (with manifest.parquet) that data/ should mirror
    first; `trigger`: why this run started (e.g. a drift verdict: reason, monitor_run_id, flow_run_id),
    recorded on its MLflow runs. `task_runner` ("thread" or "dask") runs the mapped precomputation.
    Waits for (then gives up on, ProjectBusy) another retraining of the same project.
    """
    if family not in FAMILIES:
        raise ValueError(f"family {family!r}: choose one of {sorted(FAMILIES)}")
    settings = Settings.load(root, **(overrides or {}))
    with control.one_retraining_at_a_time(settings), control.to_run_logger():
        if trigger:
            control.log_line(f"triggered: {trigger.get('reason', trigger)}")
        return pipeline(settings, overrides, current, task_runner, family, grid, source, trigger)


def pipeline(settings: Settings, overrides: dict[str, Any] | None, current: str | None, task_runner: str,
             family: str, grid: str | None, source: str | None, trigger: dict[str, str] | None) -> dict[str, Any]:
    """The flow's body, under the project's lock: the stages in order, each a task."""
    plan = settings.schedule
    if source:
        ingest.stage_source(settings, source)
    elif not (settings.data_dir / MANIFEST).exists():
        demo_data(settings)
    checked = control.persisted(check, settings)(settings)
    dataset_version = control.persisted(version, settings)(settings)
    # Mapped over chunks first: the audit's descriptors and fingerprints, training's frames and the EAsT
    # teachers' embeddings then come cached.
    teachers = settings.east.teachers if "east" in FAMILIES[family] else None
    run_precompute = flow_files.load(lineage.PRECOMPUTE_ENTRYPOINT, settings.root)
    run_precompute(str(settings.root), overrides, task_runner, settings.ingest.workers, teachers=teachers)
    audited = control.persisted(audit, settings)(settings, dataset_version)
    # Before registering: the versions cite the verdict.
    drift = control.persisted(monitor, settings)(settings, dataset_version, current)
    models: dict[str, Any] = {}
    run_ids = [audited.run_id, drift.run_id]
    for fam in FAMILIES[family]:
        if grid:
            grid_task = control.persisted(train_grid, settings, timeout_seconds=plan.train_timeout_s)
            run_ids.append(grid_task(settings, dataset_version, audited.run_id, fam, grid)["run_id"])
        run_id = control.persisted(train, settings, timeout_seconds=plan.train_timeout_s)(
            settings, dataset_version, audited.run_id, fam)
        metrics = control.persisted(evaluate, settings, timeout_seconds=plan.evaluate_timeout_s)(settings, run_id, fam)
        registration = control.persisted(register, settings)(settings, run_id)
        decision = control.persisted(promote, settings)(settings, registration.name, registration.version, fam)
        run_ids += [run_id, decision.run_id]
        models[fam] = {"name": registration.name, "version": registration.version, "run_id": run_id,
                       "metrics": metrics, "decision": decision.action, "reason": decision.reason,
                       "champion": decision.champion_after, "decision_run_id": decision.run_id}
    control.persisted(link_runs, settings)(settings, [r for r in run_ids if r], trigger)
    # dvc.lock records the dvc.yaml stages this run performed; git commits it with data.dvc (docs/pipeline.md#dvc)
    recorded = version_stage.record_pipeline(settings, FAMILIES[family], overrides, current)
    return {
        "dataset_version": dataset_version,
        "quarantine": {"clips": checked.quarantined, "reasons": checked.reasons, "table": checked.table_path},
        "audit": {"success": audited.success, "run_id": audited.run_id, "report": audited.html_path},
        "drift": drift.to_json(),
        "models": models,
        "trigger": trigger,
        "tracking_uri": settings.tracking_uri,
        "dvc": recorded.to_json(),
    }
