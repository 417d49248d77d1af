"""The retraining pipeline as a Prefect flow:
demo data → check (quarantine) → version → precompute (mapped) → audit → train → evaluate → register → monitor.

Each task calls one function of `mirops.steps`; the flow only orders them and passes ids along.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, task

from flows.precompute import run_precompute
from mirops import steps
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
def train(settings: Settings, dataset_version: str, audit_run_id: str) -> str:
    return steps.train(settings, dataset_version, audit_run_id)


@task(name="evaluate", retries=1)
def evaluate(settings: Settings, run_id: str) -> dict[str, float]:
    return steps.evaluate(settings, run_id)


@task(name="register", retries=1)
def register(settings: Settings, run_id: str):
    return steps.register(settings, run_id)


@task(name="monitor")
def monitor(settings: Settings, dataset_version: str, current: str | None, run_id: str):
    return steps.monitor(settings, Path(current) if current else None, dataset_version, run_id)


@flow(name="mirops-retrain")
def retrain(root: str = ".", overrides: dict[str, Any] | None = None, current: str | None = None,
            task_runner: str = "thread") -> dict[str, Any]:
    """Run the whole pipeline on the project at `root`; `overrides` are `section__field` settings.

    `task_runner` ("thread" or "dask") runs the mapped feature precomputation.
    """
    settings = Settings.load(root, **(overrides or {}))
    if not (settings.data_dir / "manifest.parquet").exists():
        demo_data(settings)
    checked = check(settings)
    dataset_version = version(settings)
    # Mapped over chunks first: the audit's descriptors and fingerprints, and training's frames, then come cached.
    run_precompute(str(settings.root), overrides, task_runner, settings.ingest.workers)
    audited = audit(settings, dataset_version)
    run_id = train(settings, dataset_version, audited.run_id)
    metrics = evaluate(settings, run_id)
    registration = register(settings, run_id)
    drift = monitor(settings, dataset_version, current, run_id)
    return {
        "dataset_version": dataset_version,
        "quarantine": {"clips": checked.quarantined, "reasons": checked.reasons, "table": checked.table_path},
        "audit": {"success": audited.success, "run_id": audited.run_id, "report": audited.html_path},
        "run_id": run_id,
        "metrics": metrics,
        "model": {"name": registration.name, "version": registration.version, "aliases": registration.aliases,
                  "decision": registration.decision},
        "drift": drift.to_json(),
        "tracking_uri": settings.tracking_uri,
    }
