"""Drift between a reference table (the training audio) and a new batch, with Evidently 0.7.

One Evidently Report holds everything, so the HTML, the JSON and the workspace run agree:
- `DataDriftPreset` over the descriptor and prediction columns: one drift test per column, chosen by
  Evidently from its type and the sample size (K-S p-value for numbers up to 1000 rows), and the
  share of drifted columns;
- one embedding-drift metric over the backbone embeddings: Evidently's domain-classifier method
  (`ModelDriftMethod`): a classifier learns to tell reference rows from current rows, and its ROC AUC
  on held-out rows is the score (0.5 = indistinguishable).

Why not Evidently's own `EmbeddingsDrift` metric: in 0.7.23 it wraps the legacy
`EmbeddingsDriftMetric`, which always runs a t-SNE of up to 2 x 2500 rows only to draw a contour plot;
for 200 + 200 clips that alone takes 3 to 12 s on two cores. `EmbeddingClassifierDrift` below is the
same computation (the same `DriftMethod` on the same embedding columns from the data definition)
without the plot, so a report over 1024-d embeddings stays within a few seconds.

The verdict: `drift_detected` when the share of drifted columns reaches the threshold, or when the
embedding AUC exceeds `embedding_auc_threshold` (both are Evidently tests in the report too).
"""

from __future__ import annotations

import functools
import math
import os
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd

EMBEDDING_NAME = "embedding"
EMBEDDING_METRIC_TYPE = "mirops:metric_v2:EmbeddingClassifierDrift"
AUC_FLOOR = 0.55  # Evidently's fixed ModelDriftMethod threshold: the smallest effect we call drift
Z_ONE_SIDED_95 = 1.645  # Evidently's bootstrap compares with the 95th percentile of chance AUCs
DRIFTED_COLUMNS_TYPE = "evidently:metric_v2:DriftedColumnsCount"
VALUE_DRIFT_TYPE = "evidently:metric_v2:ValueDrift"


@dataclass
class DriftResult:
    drift_share: float  # share of drifted descriptor + prediction columns, in [0, 1]
    drifted_columns: list[str]
    n_columns: int
    embedding_drift_score: float | None  # domain-classifier ROC AUC; None without embeddings
    embedding_drift_detected: bool | None
    drift_detected: bool
    threshold: float
    html_path: Path
    json_path: Path
    snapshot_id: str | None  # run id in the Evidently workspace, if one was given
    reference_rows: int
    current_rows: int
    run_id: str | None = None   # the MLflow run that records the verdict (set by `mirops.steps.monitor`)
    severity: str = "none"      # none | drift | critical (`severity`)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["html_path"], out["json_path"] = str(self.html_path), str(self.json_path)
        return out


def severity(result: DriftResult, critical_share: float, critical_auc: float) -> str:
    """"none", "drift" (worth a retrain) or "critical" (so far off that no model trained on the reference
    should be promoted until the data catch up): a large share of drifted descriptors, or an embedding
    domain classifier that tells the batches apart almost perfectly."""
    if not result.drift_detected:
        return "none"
    auc = result.embedding_drift_score
    if result.drift_share >= critical_share or (auc is not None and auc >= critical_auc):
        return "critical"
    return "drift"


def embedding_auc_threshold(reference_rows: int, current_rows: int) -> float:
    """The AUC above which the domain classifier is better than chance, for these sample sizes.

    The classifier is scored on a random half of the rows, so with few rows a chance AUC of 0.6 is
    common. Evidently handles that (below 1000 rows) with a bootstrap of random AUCs; the 95th
    percentile of that bootstrap is, in closed form, 0.5 + 1.645 * sd of the Mann-Whitney AUC under
    the null, sqrt((a + b + 1) / (12 a b)) for a and b rows of each kind in the scored half. A fixed
    number lets the report carry it as a test. Never below Evidently's fixed 0.55.
    """
    a, b = max(reference_rows / 2, 1.0), max(current_rows / 2, 1.0)
    return max(AUC_FLOOR, 0.5 + Z_ONE_SIDED_95 * math.sqrt((a + b + 1) / (12 * a * b)))


@functools.cache
def _embedding_metric_class() -> type:
    """Evidently metric: `DriftMethod` score over the embedding columns, without the t-SNE plot.

    Built on first use (Evidently is imported lazily) and cached: Evidently registers each metric
    class under its type alias, which must happen once per process.
    """
    from evidently.core.metric_types import SingleValue, SingleValueCalculation, SingleValueMetric
    from evidently.metrics.embeddings import DriftMethod

    class EmbeddingClassifierDrift(SingleValueMetric):
        class Config:
            type_alias = EMBEDDING_METRIC_TYPE

        embeddings_name: str
        drift_method: DriftMethod

    # This module's annotations are strings (postponed evaluation); resolve them for pydantic here.
    EmbeddingClassifierDrift.update_forward_refs(DriftMethod=DriftMethod)

    class EmbeddingClassifierDriftCalculation(SingleValueCalculation[EmbeddingClassifierDrift]):
        def calculate(self, context: Any, current_data: Any, reference_data: Any) -> SingleValue:
            if reference_data is None:
                raise ValueError("embedding drift needs reference data")
            columns = context.data_definition.embeddings[self.metric.embeddings_name]
            # DriftMethod adds a label column to its inputs: hand it copies.
            score, _, _ = self.metric.drift_method(
                current_data.as_dataframe()[columns].copy(), reference_data.as_dataframe()[columns].copy()
            )
            return self.result(float(score))

        def display_name(self) -> str:
            return f"Embedding drift ({self.metric.embeddings_name}): domain classifier ROC AUC"

    return EmbeddingClassifierDrift


def _check_table(frame: pd.DataFrame, columns: list[str], embedding_columns: list[str], which: str) -> None:
    missing = [c for c in columns + embedding_columns if c not in frame.columns]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise ValueError(f"{which} table lacks column(s) {shown}")
    if frame.empty:
        raise ValueError(f"{which} table has no rows")
    # The domain classifier cannot take gaps (descriptor columns can: Evidently drops NaN per column).
    if embedding_columns and frame[embedding_columns].isna().to_numpy().any():
        raise ValueError(f"{which} table has missing values in its embedding columns")


def _datasets(
    reference: pd.DataFrame, current: pd.DataFrame, columns: list[str], embedding_columns: list[str]
) -> tuple[Any, Any]:
    from evidently import DataDefinition, Dataset

    numeric = [c for c in columns if pd.api.types.is_numeric_dtype(reference[c])]
    definition = DataDefinition(
        numerical_columns=numeric,
        categorical_columns=[c for c in columns if c not in numeric],
        # Declared as an embedding, not as 1024 numerical columns: Evidently would profile each one.
        embeddings={EMBEDDING_NAME: embedding_columns} if embedding_columns else None,
    )
    keep = columns + embedding_columns  # only what is compared: extra columns cost time
    return (
        Dataset.from_pandas(reference[keep].reset_index(drop=True), data_definition=definition),
        Dataset.from_pandas(current[keep].reset_index(drop=True), data_definition=definition),
    )


def _report(columns: list[str], embedding_threshold: float | None, threshold: float, tags: dict[str, str]) -> Any:
    from evidently import Report
    from evidently.metrics.embeddings import ModelDriftMethod
    from evidently.presets import DataDriftPreset
    from evidently.tests import lte

    metrics: list[Any] = [DataDriftPreset(columns=columns, drift_share=threshold)]
    if embedding_threshold is not None:
        metric = _embedding_metric_class()
        method = ModelDriftMethod(threshold=embedding_threshold)
        metrics.append(metric(embeddings_name=EMBEDDING_NAME, drift_method=method, tests=[lte(embedding_threshold)]))
    # include_tests: the per-column drift verdicts come out as tests, which is where we read them.
    return Report(metrics, metadata=dict(tags), tags=[f"{k}={v}" for k, v in tags.items()], include_tests=True)


def _column_drift(snapshot: dict[str, Any], columns: list[str]) -> tuple[float, list[str]]:
    """(share of drifted columns, drifted column names) from `snapshot.dict()`.

    The share is the value of the preset's DriftedColumnsCount metric ({"count", "share"}); which
    columns drifted is in the tests: one "Value Drift for column X" test per ValueDrift metric, FAIL
    when that column drifted.
    """
    share = next(
        float(m["value"]["share"]) for m in snapshot["metrics"] if m["config"]["type"] == DRIFTED_COLUMNS_TYPE
    )
    failed = {
        t["metric_config"]["params"]["column"]
        for t in snapshot["tests"]
        if t["metric_config"]["params"]["type"] == VALUE_DRIFT_TYPE and t["status"] == "FAIL"
    }
    return share, [c for c in columns if c in failed]


def _embedding_score(snapshot: dict[str, Any]) -> float | None:
    scores = [float(m["value"]) for m in snapshot["metrics"] if m["config"]["type"] == EMBEDDING_METRIC_TYPE]
    return scores[0] if scores else None


def _write_atomic(write: Callable[[str], None], path: Path) -> None:
    """Write via `write(filename)` under a temporary name, then rename: readers never see half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(str(tmp))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _add_to_workspace(snapshot: Any, workspace_dir: Path, project: str) -> str:
    from mirops.monitor.workspace import get_or_create_project, open_workspace

    ws = open_workspace(workspace_dir)
    target = get_or_create_project(ws, project, "Drift of new audio against the training reference")
    return str(ws.add_run(target.id, snapshot).id)


def drift_report(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    *,
    columns: list[str],
    embedding_columns: list[str] | None,
    out_dir: Path,
    threshold: float,
    workspace_dir: Path | None = None,
    project: str = "drift",
    tags: dict[str, str] | None = None,
) -> DriftResult:
    """Compare `current` with `reference`; write out_dir/drift.html and drift.json; return the verdict.

    `columns` are compared one by one (descriptors, predictions); `embedding_columns`, if any, together
    as one embedding. `threshold` is the share of drifted columns that counts as drift. With
    `workspace_dir`, the run is also stored in that Evidently workspace, in project `project`.
    `tags` (dataset version, model, ...) go into the run's metadata and tags.
    """
    if not columns:
        raise ValueError("drift_report needs at least one column to compare")
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold is a share of columns in (0, 1], got {threshold}")
    embedding_columns = list(embedding_columns or [])
    for frame, which in ((reference, "reference"), (current, "current")):
        _check_table(frame, columns, embedding_columns, which)

    n_ref, n_cur = len(reference), len(current)
    auc_threshold = embedding_auc_threshold(n_ref, n_cur) if embedding_columns else None
    tags = {**(tags or {}), "reference_rows": str(n_ref), "current_rows": str(n_cur)}
    reference_data, current_data = _datasets(reference, current, columns, embedding_columns)
    with warnings.catch_warnings():
        # Constant descriptor columns (e.g. no clipping anywhere) make Evidently's correlation tables divide
        # by a zero spread; the drift tests themselves are unaffected.
        warnings.simplefilter("ignore", RuntimeWarning)
        snapshot = _report(columns, auc_threshold, threshold, tags).run(current_data, reference_data)

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    html_path, json_path = out_dir / "drift.html", out_dir / "drift.json"
    _write_atomic(snapshot.save_html, html_path)
    _write_atomic(snapshot.save_json, json_path)
    snapshot_id = _add_to_workspace(snapshot, Path(workspace_dir), project) if workspace_dir else None

    summary = snapshot.dict()
    share, drifted = _column_drift(summary, columns)
    score = _embedding_score(summary)
    embedding_drift = None if score is None or auc_threshold is None else score > auc_threshold
    return DriftResult(
        drift_share=share,
        drifted_columns=drifted,
        n_columns=len(columns),
        embedding_drift_score=score,
        embedding_drift_detected=embedding_drift,
        drift_detected=share >= threshold or bool(embedding_drift),
        threshold=threshold,
        html_path=html_path,
        json_path=json_path,
        snapshot_id=snapshot_id,
        reference_rows=n_ref,
        current_rows=n_cur,
    )
