"""The retraining pipeline as a Prefect flow:
source or demo data → check (quarantine) → version → precompute (mapped) → audit → monitor → per model
family: train → evaluate → register (challenger) → promote (the gate moves champion or says why not).

Each task calls one function of `mirops.steps`; the flow only orders them and passes ids along.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, task

from flows.precompute import run_precompute
from mirops import steps, steps_registry
from mirops.config import Settings


@task(name="demo-data")
def demo_data(settings: Settings) -> None:
    steps.demo(settings)


@task(name="check-audio")
def check(settings: Settings):
    return steps.check_data(settings)


@task(name="version", retries=2, retry_delay_seconds=2)
def version(settings: Settings) -> str:
    return steps.version(settings, check=False)  # the check-audio task just ran


@task(name="audit")
def audit(settings: Settings, dataset_version: str) -> steps.AuditSummary:
    return steps.audit(settings, dataset_version)  # raises AuditFailed on a critical expectation


@task(name="train")
def train(settings: Settings, dataset_version: str, audit_run_id: str, family: str) -> str:
    if family == "east":
        from mirops import steps_east

        return steps_east.train_east(settings, dataset_version, audit_run_id)
    return steps.train(settings, dataset_version, audit_run_id)


@task(name="train-grid")
def train_grid(settings: Settings, dataset_version: str, audit_run_id: str, family: str, grid: str) -> dict:
    if family == "east":
        from mirops import steps_east

        return steps_east.train_east_grid(settings, grid, dataset_version, audit_run_id)
    return steps.train_grid(settings, grid, dataset_version, audit_run_id)


@task(name="evaluate", retries=2, retry_delay_seconds=5)
def evaluate(settings: Settings, run_id: str) -> dict[str, float]:
    return steps_registry.evaluate(settings, run_id)


@task(name="register", retries=2, retry_delay_seconds=5)
def register(settings: Settings, run_id: str) -> steps_registry.Registration:
    return steps_registry.register(settings, run_id)


@task(name="promote", retries=2, retry_delay_seconds=5)
def promote(settings: Settings, name: str, version: str):
    return steps_registry.promote(settings, name, version)


@task(name="monitor")
def monitor(settings: Settings, dataset_version: str, current: str | None):
    return steps.monitor(settings, Path(current) if current else None, dataset_version)


@task(name="link-runs")
def link_runs(settings: Settings, run_ids: list[str], trigger: dict[str, str] | None) -> None:
    """Tag the MLflow runs of this flow run with the Prefect flow run and, if any, what triggered it."""
    from prefect.runtime import flow_run

    steps_registry.tag_runs(settings, run_ids, {"mirops.flow_run_id": str(flow_run.get_id())}
                            | {f"mirops.trigger_{k}": str(v) for k, v in (trigger or {}).items()})


FAMILIES = {"reprogram": ["reprogram"], "east": ["east"], "both": ["reprogram", "east"]}


@flow(name="mirops-retrain")
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
        steps.stage_source(settings, source)
    elif not (settings.data_dir / "manifest.parquet").exists():
        demo_data(settings)
    checked = check(settings)
    dataset_version = version(settings)
    # Mapped over chunks first: the audit's descriptors and fingerprints, training's frames and the EAsT
    # teachers' embeddings then come cached.
    teachers = settings.east.teachers if "east" in FAMILIES[family] else None
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
