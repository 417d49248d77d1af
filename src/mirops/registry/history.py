"""A registered model's history as plain records: every version registered and every decision of the gate.

What the models dashboard replays (`mirops.pipeline.dashboards`); nothing here knows of Evidently.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from mirops import lineage


@dataclass(frozen=True)
class RegistryEvent:
    when: dt.datetime            # naive local time, as Evidently stamps its runs
    kind: str                    # register | promote | reject | rollback | noop
    version: str
    key: str                     # unique per event: a dashboard adds each one once
    gate: dict[str, float] = field(default_factory=dict)  # the gate's gain and interval (decisions)
    before: str | None = None    # the champion before and after (decisions)
    after: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)


def _time(ms: int | None) -> dt.datetime:
    # Naive local time, as Evidently stamps runs (datetime.now()): the UI sorts all runs of a project together.
    return dt.datetime.fromtimestamp((ms or 0) / 1000)


def is_registered(name: str) -> bool:
    try:
        MlflowClient().get_registered_model(name)
    except MlflowException:
        return False
    return True


def model_events(name: str) -> tuple[list[RegistryEvent], dict[str, dict[str, float]]]:
    """The registry events of model `name` (unordered) and each version's test metrics (`test_*` of its
    training run; none when the run was deleted). MLflow must point at the project's store."""
    client = MlflowClient()
    versions = client.search_model_versions(f"name = '{name}'")
    metrics: dict[str, dict[str, float]] = {}
    for mv in versions:
        try:
            run_metrics = client.get_run(mv.run_id).data.metrics
        except MlflowException:  # its run was deleted: the version stays on the dashboard, without metrics
            run_metrics = {}
        metrics[str(mv.version)] = {k: float(v) for k, v in run_metrics.items() if k.startswith("test_")}
    events = [RegistryEvent(_time(mv.creation_timestamp), "register", str(mv.version), f"{name}:register:{mv.version}",
                            metadata={"dataset_version": mv.tags.get(lineage.TAG_DATASET_VERSION, "unknown"),
                                      "training_run_id": mv.run_id or "none"})
              for mv in versions]
    decisions = mlflow.search_runs(
        search_all_experiments=True, output_format="list",
        filter_string=f"tags.`{lineage.TAG_STEP}` = '{lineage.STEP_PROMOTE}' and "
                      f"tags.`{lineage.TAG_MODEL_NAME}` = '{name}'")
    for run in decisions:
        tags, gate = run.data.tags, run.data.metrics
        note = tags.get("mlflow.note.content", "").splitlines()
        events.append(RegistryEvent(
            _time(run.info.start_time), tags.get(lineage.TAG_ACTION, "decision"), tags.get(lineage.TAG_VERSION, "?"),
            f"{name}:decision:{run.info.run_id}",
            gate={k: gate[m] for k, m in (("gain", "gain"), ("gain_low", "low"), ("gain_high", "high")) if m in gate},
            before=tags.get(lineage.TAG_CHAMPION_BEFORE), after=tags.get(lineage.TAG_CHAMPION_AFTER),
            metadata={"decision_run_id": run.info.run_id, "reason": (note[0] if note else "")[:300],
                      "dataset_version": tags.get(lineage.TAG_DATASET_VERSION, "unknown")}))
    return events, metrics
