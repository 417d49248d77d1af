"""Fill the Evidently workspace's dashboards from the pipeline (`dashboards/workspace`, served by `mirops ui`).

- `record_audit` (called by `mirops.pipeline.audit`): the data-quality run of a dataset version, from its
  manifest, the audit's per-clip descriptors and the quarantine;
- `record_registry` (called by `mirops.pipeline.register` and `promote`, and by `mirops ui`): the models
  project, replayed from the registry itself (`mirops.registry.history`): every registered version and every
  decision run of the promotion gate becomes one run at the time it happened, added once; the text panel names
  today's champion. Events from before these dashboards existed are filled in the same way.

The drift project is filled by `mirops monitor` (`mirops.monitor.drift`). Evidently itself is only imported in
`mirops.monitor`. A dashboard that cannot be written is a warning, never a failed step.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd
from rich.markup import escape

from mirops.config import Settings
from mirops.data.manifest import LABELLED_SPLITS, LabelSpec, label_column
from mirops.monitor.projects import (
    MISSING_COLUMN,
    POSITIVE_PREFIX,
    QUARANTINED,
    TEST_METRICS,
    USABLE,
    Champion,
    ModelEvent,
    ensure_drift_dashboard,
    record_data_quality,
    record_model_events,
)
from mirops.monitor.workspace import find_project, open_workspace
from mirops.progress import warn
from mirops.registry import models, tracking
from mirops.registry.history import is_registered, model_events

T = TypeVar("T")


def workspace_dir(settings: Settings) -> Path:
    return settings.dashboards_dir / "workspace"


def _warn_on_failure(what: str, fn: Callable[[], T]) -> T | None:
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - a dashboard is a view: the step it watches must not fail
        warn(f"the {what} dashboard was not updated ({escape(type(exc).__name__)}: {escape(str(exc))})")
        return None


# ---------------------------------------------------------------- data quality

def clip_quality_table(manifest: pd.DataFrame, spec: LabelSpec, audio: pd.DataFrame | None = None,
                       quarantined: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per clip, what the data-quality dashboard summarises: `usable` and `quarantined` (0/1), `split`,
    `labels_missing` (share of the classes not annotated, labelled splits only), `pos:<class>` (1 positive,
    0 negative, NaN not annotated) and the audit's audio descriptors (usable clips)."""
    n = len(manifest)
    labels = pd.DataFrame({c: pd.to_numeric(manifest[label_column(c)], errors="coerce") if label_column(c) in manifest
                           else np.nan for c in spec.classes}, index=manifest.index).astype(float)
    split = manifest["split"].astype(str) if "split" in manifest else pd.Series("unknown", index=manifest.index)
    labelled = split.isin(LABELLED_SPLITS).to_numpy()
    table = pd.DataFrame({"clip_id": manifest["clip_id"].astype(str).to_numpy() if "clip_id" in manifest
                          else np.arange(n).astype(str), USABLE: 1.0, QUARANTINED: 0.0, "split": split.to_numpy()})
    missing = labels.isna().mean(axis=1).to_numpy() if spec.classes else np.zeros(n)
    table[MISSING_COLUMN] = np.where(labelled, missing, np.nan)
    for cls in spec.classes:
        values = labels[cls].to_numpy()
        table[f"{POSITIVE_PREFIX}{cls}"] = np.where(np.isnan(values), np.nan, (values >= spec.threshold) * 1.0)
    if audio is not None and len(audio):
        numeric = [c for c in audio.columns if c not in ("clip_id", "split", "sample_rate")
                   and pd.api.types.is_numeric_dtype(audio[c])]
        table = table.merge(audio[["clip_id", *numeric]].drop_duplicates("clip_id"), on="clip_id", how="left")
    if quarantined is not None and len(quarantined):
        table = pd.concat([table, pd.DataFrame({"clip_id": quarantined["clip_id"].astype(str).to_numpy(),
                                                USABLE: 0.0, QUARANTINED: 1.0, "split": None})], ignore_index=True)
    return table.drop(columns="clip_id")


def record_audit(settings: Settings, dataset_version: str, manifest: pd.DataFrame, spec: LabelSpec,
                 audio: pd.DataFrame | None, quarantined: pd.DataFrame | None, success: bool,
                 audit_run_id: str | None = None) -> str | None:
    """The data-quality run of `dataset_version` (replacing an earlier one); its run id, or None with a warning."""

    def record() -> str:
        table = clip_quality_table(manifest, spec, audio, quarantined)
        return record_data_quality(workspace_dir(settings), table, spec.classes, dataset_version, {
            "audit": "passed" if success else "failed", "audit_run_id": audit_run_id or "none",
            "classes": str(len(spec.classes)), "clips": str(len(manifest)),
            "quarantined": str(0 if quarantined is None else len(quarantined))})

    return _warn_on_failure("data quality", record)


# ---------------------------------------------------------------- models

def _version_number(version: str | None) -> float:
    try:
        return float(version) if version not in (None, "", "None") else 0.0
    except ValueError:
        return 0.0


def _present(version: str | None) -> str | None:
    return version if version not in (None, "", "None") else None


def model_history(name: str) -> tuple[list[ModelEvent], Champion]:
    """The registry events of model `name` as dashboard events (oldest first), each knowing the champion of its
    moment, and its champion now. MLflow must already point at the project's store."""
    raw, metrics = model_events(name)
    metrics = {v: {k: m for k, m in ms.items() if k in TEST_METRICS} for v, ms in metrics.items()}
    events, champion, moved_at = [], None, {}
    for event in sorted(raw, key=lambda e: (e.when, e.kind != "register")):
        values = {"version": _version_number(event.version)}
        values.update(metrics.get(event.version, {}) if event.kind == "register" else event.gate)
        if event.kind != "register":
            after = _present(event.after)
            values["promoted"] = float(after != _present(event.before))
            if event.kind in ("promote", "rollback") and after is not None:
                champion = after
                moved_at[champion] = (event.when, event.metadata.get("reason", ""))
        values["champion_version"] = _version_number(champion)
        values["is_champion"] = float(champion is not None and champion == event.version)
        values.update({f"champion_{k}": v for k, v in metrics.get(champion or "", {}).items()})
        events.append(ModelEvent(name, event.kind, event.version, event.when, event.key, values, event.metadata))
    now = models.alias_version(name, models.CHAMPION)
    since, reason = moved_at.get(now or "", (None, ""))
    return events, Champion(name, now, metrics.get(now or "", {}), since, reason, _newest(events, metrics))


_FATE = {"register": "registered, not judged by the gate yet", "promote": "promoted to champion",
         "reject": "rejected by the gate", "rollback": "restored by a rollback", "noop": "already the champion"}


def _newest(events: list[Any], metrics: dict[str, dict[str, float]]) -> str:
    """The newest version and the last thing that happened to it, in words."""
    if not events:
        return ""
    version = max((e.version for e in events if e.kind == "register"), key=_version_number, default=None)
    if version is None:
        return ""
    fate = [e.kind for e in events if e.version == version][-1]
    score = metrics.get(version, {}).get("test_mAP")
    return f"v{version}{f' (test mAP {score:.3f})' if score is not None else ''}, {_FATE.get(fate, fate)}"


def record_registry(settings: Settings, names: Iterable[str] = ()) -> list[str] | None:
    """Bring the models project up to date with the registry: the project's registered models (reprogram and
    EAsT) and `names`; returns the ids of the runs added, or None with a warning."""
    def record() -> list[str]:
        # Only point MLflow at the store: `setup` would create the experiment, and `mirops ui` only reads.
        tracking.point_at_store(settings)
        events, champions = [], []
        for name in dict.fromkeys([settings.registry.model_name, settings.east.model_name, *names]):
            if not is_registered(name):  # not registered yet (e.g. no EAsT model): no panels for it
                continue
            history, champion = model_history(name)
            events += history
            champions.append(champion)
        return record_model_events(workspace_dir(settings), events, champions)

    return _warn_on_failure("models", record)


def refresh(settings: Settings) -> dict[str, Any]:
    """What `mirops ui` does before serving: the models project from the registry (when the project has a
    store) and the drift dashboard's panels. Returns what it did."""
    done: dict[str, Any] = {}
    has_store = not settings.tracking_uri.startswith("sqlite:///") or (settings.root / "mlruns.db").exists()
    if has_store:
        done["models_runs_added"] = record_registry(settings)
    done["drift_dashboard_written"] = _warn_on_failure(
        "drift", lambda: ensure_drift_dashboard(open_workspace(workspace_dir(settings))))
    return done


def project_links(settings: Settings, base_url: str, names: Iterable[str]) -> dict[str, str]:
    """Project name -> its dashboard's address in the Evidently UI at `base_url`, for the projects that exist."""
    def links() -> dict[str, str]:
        ws = open_workspace(workspace_dir(settings))
        found = {name: find_project(ws, name) for name in names}
        return {name: f"{base_url}/projects/{project.id}" for name, project in found.items() if project is not None}

    return _warn_on_failure("project links", links) or {}
