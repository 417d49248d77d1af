"""The drift monitor as a Prefect flow: a batch of incoming audio vs the training data, and, when it drifted,
the retraining deployment started with the reason attached.

`mirops serve` runs it daily (deployment `mirops-monitor/daily`). The verdict itself is `mirops.pipeline.monitor`
(Evidently report, MLflow run). The links: the retraining flow run's `trigger` parameter names this MLflow
monitor run and this Prefect flow run; the MLflow monitor run gets the retraining flow run's id
(`mirops.triggered_flow_run`). Without a Prefect server or deployment to start, the monitor says why and
still finishes with its verdict. The verdict is the run's drift artifact (key `<project>-drift`, as in the
retraining) and its log line; while a retraining of the project runs, the started one waits for the project's
lock (docs/operations.md, "Prefect").
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import httpx
from prefect import flow, get_run_logger, task
from prefect.deployments import run_deployment
from prefect.exceptions import ObjectNotFound
from prefect.runtime import flow_run
from prefect.settings import PREFECT_API_URL

from mirops import flow_files
from mirops.config import Settings
from mirops.lineage import MONITOR_FLOW, RETRAIN_DEPLOYMENT, TAG_NOT_TRIGGERED, TAG_TRIGGERED
from mirops.pipeline import monitor as monitor_stage
from mirops.registry import tracking

control = flow_files.load_path(Path(__file__).with_name("control.py"))


@task(name="drift-check")
def drift_check(settings: Settings, current: str | None):
    verdict = monitor_stage.monitor(settings, Path(current) if current else None)
    control.publish_drift(settings, verdict)
    return verdict


def drift_reason(verdict) -> str:
    """One sentence a person reads in the retraining run: what drifted, by how much, against what threshold."""
    parts = [f"p = {verdict.p_value:.4f} at alpha {verdict.alpha:g}",
             f"{len(verdict.drifted_columns)} of {verdict.n_columns} columns (descriptors, class scores) drifted"
             + (f" ({', '.join(verdict.drifted_columns[:5])})" if verdict.drifted_columns else "")]
    if verdict.embedding_drift_score is not None:
        parts.append(f"the embedding {'drifted' if verdict.embedding_drift_detected else 'held'} "
                     f"(p {verdict.embedding_p_value:.4f}, domain classifier AUC {verdict.embedding_drift_score:.2f})")
    critical = verdict.severity == "critical"
    return (f"{'critical ' if critical else ''}drift detected by the monitor on {verdict.current_files} files "
            f"({verdict.current_rows} windows): "
            + "; ".join(parts)
            + (f"; MLflow monitor run {verdict.run_id}" if verdict.run_id else ""))


def prefect_api_url() -> str | None:
    return PREFECT_API_URL.value() or os.environ.get("PREFECT_API_URL") or None


def start_retraining(trigger: dict[str, str], deployment: str | None = None) -> tuple[str | None, str]:
    """Start the retraining deployment with `trigger` as its parameter; never raises.

    Returns (the new flow run's id, "") or (None, why it could not be started).
    """
    deployment = deployment or RETRAIN_DEPLOYMENT
    api = prefect_api_url()
    if not api:
        return None, (f"no Prefect server to start deployment {deployment!r} on: PREFECT_API_URL is not set "
                      "(this flow ran on a temporary API). Start `prefect server start` (or `mirops ui`), export "
                      "PREFECT_API_URL and run `mirops serve`")
    try:
        flow_run = run_deployment(deployment, parameters={"trigger": trigger}, timeout=0,
                                  tags=["drift-triggered"])
    except ObjectNotFound:
        return None, (f"the Prefect server at {api} has no deployment {deployment!r}: run `mirops serve` "
                      "against it to create (and serve) the deployments")
    except Exception as exc:  # an unreachable server, a rejected parameter: say it, keep the verdict
        if isinstance(exc, httpx.TransportError):
            return None, (f"the Prefect server at {api} cannot be reached ({type(exc).__name__}: {exc}), so "
                          f"{deployment!r} was not started; is `prefect server start` running there?")
        return None, f"the Prefect server at {api} did not start {deployment!r}: {type(exc).__name__}: {exc}"
    return str(flow_run.id), ""


def tag_monitor_run(settings: Settings, run_id: str | None, tags: dict[str, str], logger) -> None:
    if not run_id:
        return
    try:
        tracking.tag_runs(settings, [run_id], tags)
    except Exception as exc:  # the tracking server may be down; the Prefect side still has the link
        logger.warning("could not tag MLflow monitor run %s with %s: %s", run_id, tags, exc)


@flow(name=MONITOR_FLOW, persist_result=True)
def monitor(root: str = ".", overrides: dict[str, Any] | None = None, current: str | None = None) -> dict[str, Any]:
    """Drift of `current` (default `schedule.current`, else production/) against the training data of the
    project at `root`; a drifted verdict starts `mirops-retrain/weekly` when `schedule.retrain_on_drift`."""
    logger = get_run_logger()
    settings = Settings.load(root, **(overrides or {}))
    current = current or settings.schedule.current
    if current and not Path(current).is_absolute():
        current = str(settings.root / current)
    with control.to_run_logger():
        verdict = control.persisted(drift_check, settings)(settings, current)
    summary: dict[str, Any] = verdict.to_json() | {"retraining": None}
    if not verdict.drift_detected:
        logger.info("no drift (p = %.4f at alpha %g); nothing to retrain", verdict.p_value, verdict.alpha)
        return summary
    if not settings.schedule.retrain_on_drift:
        logger.info("drift detected; schedule.retrain_on_drift is off, so no retraining is started")
        summary["retraining"] = {"started": False, "why": "schedule.retrain_on_drift is false"}
        return summary
    trigger = {"reason": drift_reason(verdict), "monitor_run_id": str(verdict.run_id or ""),
               "flow_run_id": str(flow_run.get_id() or "")}
    started, why = start_retraining(trigger)
    if started:
        logger.info("drift: started retraining flow run %s (%s)", started, trigger["reason"])
        tag_monitor_run(settings, verdict.run_id, {TAG_TRIGGERED: started}, logger)
    else:
        logger.warning("drift detected but retraining was not started: %s", why)
        tag_monitor_run(settings, verdict.run_id, {TAG_NOT_TRIGGERED: why[:4000]}, logger)
    summary["retraining"] = {"started": bool(started), "flow_run_id": started, "trigger": trigger,
                             **({"why": why} if why else {})}
    return summary
