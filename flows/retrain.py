"""The retraining pipeline as a Prefect flow:
source or demo data → check (quarantine) → version → precompute (mapped) → audit → monitor → per model
family: train → evaluate → register (challenger) → promote (the gate moves champion or says why not).

Each task calls one stage of `mirops.pipeline`; the flow only orders them and passes ids along.
Loaded by entrypoint path (`retrain.py:retrain`, see `mirops.flow_files`), never imported as a package.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, task

from mirops import flow_files, lineage
from mirops.config import Settings
from mirops.data.manifest import MANIFEST
from mirops.pipeline import audit as audit_stage
from mirops.pipeline import evaluate as evaluate_stage
from mirops.pipeline import ingest
from mirops.pipeline import monitor as monitor_stage
from mirops.pipeline import promote as promote_stage
from mirops.pipeline import register as register_stage
from mirops.pipeline import train as train_stage
from mirops.pipeline import version as version_stage
from mirops.registry import tracking


@task(name="demo-data")
def demo_data(settings: Settings) -> None:
    ingest.demo(settings)


@task(name="check-audio")
def check(settings: Settings):
    return ingest.check_data(settings)


@task(name="version", retries=2, retry_delay_seconds=2)
def version(settings: Settings) -> str:
    return version_stage.version(settings, check=False)  # the check-audio task just ran


@task(name="audit")
def audit(settings: Settings, dataset_version: str) -> audit_stage.AuditSummary:
    return audit_stage.audit(settings, dataset_version)  # raises AuditFailed on a critical expectation


@task(name="train")
def train(settings: Settings, dataset_version: str, audit_run_id: str, family: str) -> str:
    return train_stage.train(settings, family, dataset_version, audit_run_id)


@task(name="train-grid")
def train_grid(settings: Settings, dataset_version: str, audit_run_id: str, family: str, grid: str) -> dict:
    return train_stage.train_grid(settings, family, grid, dataset_version, audit_run_id)


@task(name="evaluate", retries=2, retry_delay_seconds=5)
def evaluate(settings: Settings, run_id: str) -> dict[str, float]:
    return evaluate_stage.evaluate(settings, run_id)


@task(name="register", retries=2, retry_delay_seconds=5)
def register(settings: Settings, run_id: str) -> register_stage.Registration:
    return register_stage.register(settings, run_id)


@task(name="promote", retries=2, retry_delay_seconds=5)
def promote(settings: Settings, name: str, version: str):
    return promote_stage.promote(settings, name, version)


@task(name="monitor")
def monitor(settings: Settings, dataset_version: str, current: str | None):
    return monitor_stage.monitor(settings, Path(current) if current else None, dataset_version)


@task(name="link-runs")
def link_runs(settings: Settings, run_ids: list[str], trigger: dict[str, str] | None) -> None:
    """Tag the MLflow runs of this flow run with the Prefect flow run and, if any, what triggered it."""
    from prefect.runtime import flow_run

    tracking.tag_runs(settings, run_ids, {lineage.TAG_FLOW_RUN: str(flow_run.get_id())}
                      | {f"{lineage.TAG_TRIGGER_PREFIX}{k}": str(v) for k, v in (trigger or {}).items()})


FAMILIES = {"reprogram": ["reprogram"], "east": ["east"], "both": ["reprogram", "east"]}


@flow(name=lineage.RETRAIN_FLOW)
def retrain(root: str = ".", overrides: dict[str, Any] | None = None, current: str | None = None,
            task_runner: str = "thread", family: str = "reprogram", grid: str | None = None,
            source: str | None = None, trigger: dict[str, str] | None = None) -> dict[str, Any]:
    """Run the whole pipeline on the project at `root`; `overrides` are `section__field` settings.

    `family`: reprogram | east | both (each its own registered model and champion); `grid`: also train
    that comparison grid; `source`: a dataset folder (with manifest.parquet) that data/ should mirror
    first; `trigger`: why this run started (e.g. a drift verdict: reason, monitor_run_id, flow_run_id),
    recorded on its MLflow runs. `task_runner` ("thread" or "dask") runs the mapped precomputation.
    """
    if family not in FAMILIES:
        raise ValueError(f"family {family!r}: choose one of {sorted(FAMILIES)}")
    settings = Settings.load(root, **(overrides or {}))
    if source:
        ingest.stage_source(settings, source)
    elif not (settings.data_dir / MANIFEST).exists():
        demo_data(settings)
    checked = check(settings)
    dataset_version = version(settings)
    # Mapped over chunks first: the audit's descriptors and fingerprints, training's frames and the EAsT
    # teachers' embeddings then come cached.
    teachers = settings.east.teachers if "east" in FAMILIES[family] else None
    run_precompute = flow_files.load(lineage.PRECOMPUTE_ENTRYPOINT, settings.root)
    run_precompute(str(settings.root), overrides, task_runner, settings.ingest.workers, teachers=teachers)
    audited = audit(settings, dataset_version)
    drift = monitor(settings, dataset_version, current)  # before registering: the versions cite the verdict
    models: dict[str, Any] = {}
    run_ids = [audited.run_id, drift.run_id]
    for fam in FAMILIES[family]:
        if grid:
            run_ids.append(train_grid(settings, dataset_version, audited.run_id, fam, grid)["run_id"])
        run_id = train(settings, dataset_version, audited.run_id, fam)
        metrics = evaluate(settings, run_id)
        registration = register(settings, run_id)
        decision = promote(settings, registration.name, registration.version)
        run_ids += [run_id, decision.run_id]
        models[fam] = {"name": registration.name, "version": registration.version, "run_id": run_id,
                       "metrics": metrics, "decision": decision.action, "reason": decision.reason,
                       "champion": decision.champion_after, "decision_run_id": decision.run_id}
    link_runs(settings, [r for r in run_ids if r], trigger)
    return {
        "dataset_version": dataset_version,
        "quarantine": {"clips": checked.quarantined, "reasons": checked.reasons, "table": checked.table_path},
        "audit": {"success": audited.success, "run_id": audited.run_id, "report": audited.html_path},
        "drift": drift.to_json(),
        "models": models,
        "trigger": trigger,
        "tracking_uri": settings.tracking_uri,
    }
