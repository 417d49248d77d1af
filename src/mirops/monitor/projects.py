"""The three projects of the Evidently workspace and their dashboards: data quality, drift, models.

- **data quality**: one run per dataset version (recorded again, it replaces its run), an Evidently Report over
  a table with one row per clip (`mirops.pipeline.dashboards.clip_quality_table`): usable and quarantined clips, clips
  per split, the missing-label rate, each class's prevalence (positive rate among annotated labels) and
  positives, and medians of the audio descriptors.
- **drift**: one run per monitored batch, written by `mirops.monitor.drift.drift_report`; the dashboard plots
  the verdict's p-value (the permutation test over files), Evidently's window-level share of drifted columns
  and the embedding domain classifier's ROC AUC.
- **models**: one run per registry event (a version registered; a promotion, rejection or rollback decided),
  at the time it happened: the version's test metrics, whether it is the champion, the champion's version and
  test metrics, and the gate's gain with its interval. A text panel names the current champion.

Evidently dashboards plot metric results of runs. A number that is not a column statistic (a version's test
mAP) is stored as the `MeanValue` of a one-row table with that column, so it is a metric result like any other.
Panels filter runs by tags (`event=register`) and metadata (`model`). Evidently is imported inside functions.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from mirops.data.manifest import SPLITS
from mirops.monitor.workspace import add_run, get_or_create_project, open_workspace, run_metadata, set_dashboard

DATA_QUALITY, DRIFT, MODELS = "data quality", "drift", "models"
DESCRIPTIONS = {
    DATA_QUALITY: "Per dataset version: clips, quarantine, missing labels, label prevalence, audio descriptors",
    DRIFT: "Drift of new audio against the training reference",  # as mirops.monitor.drift creates it
    MODELS: "Per registry event: test metrics of each registered version, promotions and the champion",
}
USABLE, QUARANTINED = "usable", "quarantined"  # 0/1 columns of the clip table
POSITIVE_PREFIX = "pos:"
MISSING_COLUMN = "labels_missing"
# Descriptor summaries on the data-quality dashboard: (column, statistic, legend), grouped by panel.
DESCRIPTOR_PANELS: dict[str, list[tuple[str, str, str]]] = {
    "Audio of the latest dataset version": [
        ("loudness_lufs", "median", "median loudness (LUFS)"),
        ("spectral_centroid_hz", "median", "median spectral centroid (Hz)"),
        ("silence_ratio", "mean", "silent frames (mean share)")],
    "Loudness per dataset version (median over clips)": [
        ("loudness_lufs", "median", "loudness (LUFS)"), ("rms_db", "median", "RMS (dBFS)")],
    "Spectrum per dataset version (median over clips, Hz)": [
        ("spectral_centroid_hz", "median", "spectral centroid"), ("spectral_bandwidth_hz", "median", "bandwidth"),
        ("spectral_rolloff_hz", "median", "roll-off")],
    "Silence, clipping, noisiness per dataset version": [
        ("silence_ratio", "mean", "silent frames (mean share)"),
        ("clipping_ratio", "mean", "clipped samples (mean share)"),
        ("spectral_flatness", "median", "spectral flatness (median)"),
        ("zero_crossing_rate", "median", "zero-crossing rate (median)")],
}
TEST_METRICS = {"test_mAP": "test mAP", "test_ROC_AUC": "test ROC-AUC", "test_F1_macro": "test F1 (positive, macro)",
                "test_F1_openmic": "test F1 (OpenMIC macro avg)"}
_STATISTICS = {"mean": "MeanValue", "median": "MedianValue", "sum": "SumValue"}


# ---------------------------------------------------------------- panels

def _series(column: str, legend: str, statistic: str = "mean", tags: Sequence[str] = (),
            metadata: Mapping[str, str] | None = None) -> Any:
    """A panel series: one statistic of one column of the runs' tables (optionally only runs with `tags`)."""
    from evidently.sdk.models import PanelMetric

    return PanelMetric(legend=legend, metric=_STATISTICS[statistic], metric_labels={"column": column},
                       tags=list(tags), metadata=dict(metadata or {}))


def _category(column: str, category: str, legend: str) -> Any:
    """A panel series: how many rows of the runs' tables hold `category` in `column`."""
    from evidently.sdk.models import PanelMetric

    return PanelMetric(legend=legend, metric="CategoryCount", metric_labels={
        "column": column, "categories": str([category]), "value_type": "count"})


def drift_panels() -> list[Any]:
    """The verdict's p-value, the window-level drift share and embedding drift, latest and per batch."""
    from evidently.sdk.models import PanelMetric
    from evidently.sdk.panels import bar_plot_panel, counter_panel, line_plot_panel

    from mirops.monitor.drift import DECISION_METRIC_TYPE, EMBEDDING_METRIC_TYPE

    p_value = PanelMetric(legend="drift p-value over files", metric=DECISION_METRIC_TYPE)
    share = PanelMetric(legend="share of drifted columns (windows)", metric="DriftedColumnsCount",
                        metric_labels={"value_type": "share"})
    count = PanelMetric(legend="drifted columns", metric="DriftedColumnsCount", metric_labels={"value_type": "count"})
    # A panel can only name a metric type under evidently:metric_v2: (`workspace.plottable`): the embedding panels
    # stay empty while mirops.monitor.drift registers its metric under another namespace.
    auc = PanelMetric(legend="domain-classifier ROC AUC", metric=EMBEDDING_METRIC_TYPE)
    # Bars as well as lines: bars read as well with one batch as with a hundred.
    return [
        counter_panel("Drift verdict, latest batch", [p_value], size="half",
                      description="permutation test over files: drift when the p-value is at most monitor.alpha"),
        bar_plot_panel("Drift p-value per batch", [p_value], size="half",
                       description="the verdict's p-value, batch after batch (small: drifted)"),
        counter_panel("Drift share, latest batch", [share, count], size="half",
                      description="Evidently's per-column tests over windows (diagnostics, not the verdict)"),
        counter_panel("Embedding drift, latest batch", [auc], size="half",
                      description="ROC AUC of a classifier telling batch from reference embeddings (0.5: alike)"),
        line_plot_panel("Drift over time", [share, auc],
                        description="share of drifted columns and embedding ROC AUC, batch after batch"),
        bar_plot_panel("Drift share per batch", [share], size="half",
                       description="descriptor and prediction columns with a drifted distribution"),
        bar_plot_panel("Embedding drift per batch", [auc], size="half",
                       description="YAMNet embeddings: held-out ROC AUC of the domain classifier"),
    ]


def data_quality_panels(classes: Sequence[str], columns: Iterable[str]) -> list[Any]:
    """Counts, missing labels, per-class prevalence and positives, descriptor medians (those in `columns`)."""
    from evidently.sdk.models import PanelMetric
    from evidently.sdk.panels import bar_plot_panel, counter_panel

    columns = set(columns)
    panels = [
        # Evidently's counters show 0 as "no value": count the clips checked beside the usable ones instead of
        # showing "quarantined: no value".
        counter_panel("Latest dataset version", size="full", values=[
            PanelMetric(legend="clips checked", metric="RowCount"), _series(USABLE, "usable clips", "sum"),
            _series(MISSING_COLUMN, "missing-label rate"),
        ], description="clips checked, clips that decoded (the rest is quarantined), labels not annotated "
                       "(train, valid, test)"),
        bar_plot_panel("Clips per split and quarantined, per dataset version", stacked=True, size="half", values=[
            *(_category("split", s, s) for s in SPLITS), _series(QUARANTINED, "quarantined", "sum")]),
        bar_plot_panel("Missing labels and quarantine per dataset version", size="half", values=[
            _series(MISSING_COLUMN, "missing-label rate"), _series(QUARANTINED, "quarantined share")],
            description="labels not annotated (train, valid, test); clips that did not decode"),
        bar_plot_panel("Label prevalence per class", values=[
            _series(f"{POSITIVE_PREFIX}{c}", c) for c in classes],
            description="positive rate among annotated labels, per dataset version"),
        bar_plot_panel("Annotated positives per class", values=[
            _series(f"{POSITIVE_PREFIX}{c}", c, "sum") for c in classes],
            description="clips labelled positive, all splits, per dataset version"),
    ]
    for n, (title, items) in enumerate(DESCRIPTOR_PANELS.items()):
        values = [_series(col, legend, stat) for col, stat, legend in items if col in columns]
        if values and n == 0:
            panels.insert(1, counter_panel(title, values, description="of the audit's audio descriptors, per clip"))
        elif values:
            panels.append(bar_plot_panel(title, values, size="half"))
    return panels


@dataclass
class Champion:
    """What the models dashboard says about a registered model's current champion."""

    model: str
    version: str | None
    metrics: dict[str, float] = field(default_factory=dict)
    since: dt.datetime | None = None
    reason: str = ""
    newest: str = ""  # the newest version and what became of it, in words

    def line(self) -> str:
        if self.version is None:
            return f"{self.model}: no champion yet"
        return f"{self.model}: champion v{self.version}"

    def details(self) -> str:
        if self.version is None:
            return "No version has passed the promotion gate." + (f" Newest: {self.newest}." if self.newest else "")
        shown = ", ".join(f"{TEST_METRICS[k]} {v:.3f}" for k, v in self.metrics.items() if k in TEST_METRICS)
        since = f"; since {self.since:%Y-%m-%d %H:%M}" if self.since else ""
        newest = f" Newest: {self.newest}." if self.newest else ""
        return f"{shown or 'no test metrics'}{since}{': ' + self.reason if self.reason else ''}.{newest}"


def models_panels(champions: Sequence[Champion]) -> list[Any]:
    """Per registered model: its champion (text and counters), test metrics per registered version, champion
    version over time, and the gate's gain per decision."""
    from evidently.sdk.panels import bar_plot_panel, counter_panel, line_plot_panel, text_panel

    panels = []
    for champion in champions:
        name = champion.model
        only = {"model": name}
        panels += [
            text_panel(champion.line(), description=champion.details()),
            counter_panel(f"{name}: champion", size="half", values=[
                _series("champion_version", "champion version", metadata=only),
                _series("champion_test_mAP", "champion test mAP", metadata=only)]),
            counter_panel(f"{name}: versions registered", size="half", values=[
                _series("version", "newest version", tags=["event=register"], metadata=only),
                _series("test_mAP", "its test mAP", tags=["event=register"], metadata=only)]),
            line_plot_panel(f"{name}: test metrics per registered version", values=[
                _series(col, legend, tags=["event=register"], metadata=only) for col, legend in TEST_METRICS.items()],
                description="one point per registered version, at its registration"),
            line_plot_panel(f"{name}: champion version over time", size="half", values=[
                _series("champion_version", "champion version (0: none)", metadata=only)]),
            bar_plot_panel(f"{name}: promotion gate, gain over the champion", size="half", values=[
                _series("gain", "gain", tags=["decision"], metadata=only),
                _series("gain_low", "interval, low", tags=["decision"], metadata=only),
                _series("gain_high", "interval, high", tags=["decision"], metadata=only)],
                description="challenger minus champion on the same test clips (paired bootstrap)"),
        ]
    return panels


# ---------------------------------------------------------------- runs

def _report(metrics: list[Any], tags: Mapping[str, str], metadata: Mapping[str, str]) -> Any:
    from evidently import Report

    return Report(metrics, metadata={k: str(v) for k, v in metadata.items()},
                  tags=[f"{k}={v}" if v is not None else k for k, v in tags.items()])


def _dataset(table: pd.DataFrame, categorical: Sequence[str]) -> Any:
    from evidently import DataDefinition, Dataset

    numeric = [c for c in table.columns if c not in categorical]
    return Dataset.from_pandas(table.reset_index(drop=True), data_definition=DataDefinition(
        numerical_columns=numeric, categorical_columns=list(categorical)))


def data_quality_snapshot(table: pd.DataFrame, classes: Sequence[str], dataset_version: str,
                          metadata: Mapping[str, str] | None = None, timestamp: dt.datetime | None = None) -> Any:
    """The data-quality run of one dataset version, from its clip table (see `mirops.pipeline.dashboards`)."""
    import warnings

    from evidently.metrics import CategoryCount, MeanValue, MedianValue, RowCount, SumValue

    metrics: list[Any] = [RowCount(), SumValue(column=USABLE), SumValue(column=QUARANTINED),
                          MeanValue(column=QUARANTINED)]
    metrics += [CategoryCount(column="split", category=s) for s in SPLITS]
    if table[MISSING_COLUMN].notna().any():
        metrics.append(MeanValue(column=MISSING_COLUMN))
    for cls in classes:
        column = f"{POSITIVE_PREFIX}{cls}"
        if table[column].notna().any():  # a class nobody annotated has no prevalence: no value, not NaN
            metrics += [MeanValue(column=column), SumValue(column=column)]
    summaries = {(col, stat) for items in DESCRIPTOR_PANELS.values() for col, stat, _ in items}
    for column, statistic in sorted(summaries):
        if column in table.columns and table[column].notna().any():
            metrics.append({"mean": MeanValue, "median": MedianValue}[statistic](column=column))
    report = _report(metrics, {"dataset_version": dataset_version},
                     {"dataset_version": dataset_version, **(metadata or {})})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # Evidently's column profile divides by empty counts
        return report.run(_dataset(table, ["split"]), None, timestamp=timestamp)


def record_data_quality(workspace_dir: Path, table: pd.DataFrame, classes: Sequence[str], dataset_version: str,
                        metadata: Mapping[str, str] | None = None) -> str:
    """Store the data-quality run of `dataset_version` (replacing an earlier one) and set the dashboards;
    returns the run id."""
    ws = open_workspace(workspace_dir)
    project = get_or_create_project(ws, DATA_QUALITY, DESCRIPTIONS[DATA_QUALITY])
    snapshot = data_quality_snapshot(table, classes, dataset_version, metadata)
    run_id = add_run(ws, project, snapshot, replace={"dataset_version": dataset_version})
    set_dashboard(ws, project, data_quality_panels(classes, table.columns), DATA_QUALITY)
    ensure_drift_dashboard(ws)
    return run_id


def ensure_drift_dashboard(ws: Any) -> bool:
    """The drift project with its dashboard (drift runs are added by `mirops.monitor.drift`)."""
    project = get_or_create_project(ws, DRIFT, DESCRIPTIONS[DRIFT])
    return set_dashboard(ws, project, drift_panels(), DRIFT)


@dataclass
class ModelEvent:
    """One registry event: `kind` register | promote | reject | rollback | noop, about `version` of `model`."""

    model: str
    kind: str
    version: str
    timestamp: dt.datetime
    key: str                                 # unique per event: recording it twice adds it once
    values: dict[str, float] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def is_decision(self) -> bool:
        return self.kind != "register"


def model_event_snapshot(event: ModelEvent) -> Any:
    from evidently.metrics import MeanValue

    values = {k: float(v) for k, v in event.values.items() if v is not None and v == v}  # NaN-free
    table = pd.DataFrame([values or {"version": 0.0}])  # one row: each column's mean is its value
    tags: dict[str, str | None] = {"model": event.model, "event": event.kind, "version": event.version}
    if event.is_decision:
        tags["decision"] = None
    metadata = {"model": event.model, "event": event.kind, "version": event.version, "event_key": event.key,
                **event.metadata}
    report = _report([MeanValue(column=c) for c in table.columns], tags, metadata)
    return report.run(_dataset(table, []), None, timestamp=event.timestamp,
                      name=f"{event.model} v{event.version}: {event.kind}")


def record_model_events(workspace_dir: Path, events: Iterable[ModelEvent], champions: Sequence[Champion]) -> list[str]:
    """Store the events not stored yet (by `key`), oldest first, and set the models dashboard; returns the ids
    of the runs added."""
    ws = open_workspace(workspace_dir)
    project = get_or_create_project(ws, MODELS, DESCRIPTIONS[MODELS])
    stored = {meta.get("event_key") for meta in _metadata(ws, project)}
    added = [add_run(ws, project, model_event_snapshot(event))
             for event in sorted(events, key=lambda e: e.timestamp) if event.key not in stored]
    set_dashboard(ws, project, models_panels(champions), MODELS)
    ensure_drift_dashboard(ws)
    return added


def _metadata(ws: Any, project: Any) -> list[dict[str, Any]]:
    return list(run_metadata(ws, project).values())


def stored_versions(workspace_dir: Path) -> list[str]:
    """Dataset versions with a data-quality run."""
    ws = open_workspace(workspace_dir)
    project = get_or_create_project(ws, DATA_QUALITY, DESCRIPTIONS[DATA_QUALITY])
    return sorted({meta.get("dataset_version", "") for meta in _metadata(ws, project)} - {""})
