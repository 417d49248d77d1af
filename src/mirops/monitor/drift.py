"""Drift between a reference table (the training audio) and a new batch, with Evidently 0.7.

One Evidently Report holds everything, so the HTML, the JSON and the workspace run agree:
- `DataDriftPreset` over the descriptor and prediction columns: one drift test per column, chosen by
  Evidently from its type and the sample size (K-S p-value for numbers up to 1000 rows), and the
  share of drifted columns;
- one embedding-drift metric over the backbone embeddings: Evidently's domain-classifier method
  (`ModelDriftMethod`): a classifier learns to tell reference rows from current rows, and its ROC AUC
  on held-out rows is the score (0.5 = indistinguishable).

Clips of one recording (a track cut into clips, a session of the demo) resemble each other more than
clips of different recordings. A row-wise split puts some of a recording's clips on each side, and the
classifier then scores held-out clips by recognising their recording, not their domain: two disjoint sets of
tracks from one soundtrack reached AUC 0.68-0.74 that way (0.39-0.57 split by track). With a group column
(the manifest's `group`: recording, session) the halves are drawn by group, as Evidently's method otherwise
does (`grouped_domain_classifier`), and the chance threshold is the 95th percentile of the held-out AUC when
whole groups swap sides at random (`HeldOut.null_auc_quantile`): clips of one recording score alike, so few
recordings give wide chance AUCs, and one clip per recording gives the row-wise threshold.

Why not Evidently's own `EmbeddingsDrift` metric: in 0.7.23 it wraps the legacy
`EmbeddingsDriftMetric`, which always runs a t-SNE of up to 2 x 2500 rows only to draw a contour plot;
for 200 + 200 clips that alone takes 3 to 12 s on two cores. `EmbeddingClassifierDrift` below is the
same computation (the same `DriftMethod` on the same embedding columns from the data definition)
without the plot, so a report over 1024-d embeddings stays within a few seconds.

The verdict: `drift_detected` when the share of drifted columns reaches the threshold, or when the
embedding AUC exceeds its chance threshold (`embedding_auc_threshold` without groups; both are Evidently
tests in the report too).
"""

from __future__ import annotations

import functools
import math
import time
import warnings
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mirops.atomic import atomic_write

EMBEDDING_NAME = "embedding"
EMBEDDING_METRIC_TYPE = "evidently:metric_v2:MiropsEmbeddingClassifierDrift"  # panels match evidently:metric_v2:*
AUC_FLOOR = 0.55  # Evidently's fixed ModelDriftMethod threshold: the smallest effect we call drift
Z_ONE_SIDED_95 = 1.645  # Evidently's bootstrap compares with the 95th percentile of chance AUCs
SGD_EPOCHS = 50  # passes of the domain classifier's fit (see `grouped_domain_classifier`)
DRIFTED_COLUMNS_TYPE = "evidently:metric_v2:DriftedColumnsCount"
VALUE_DRIFT_TYPE = "evidently:metric_v2:ValueDrift"


@dataclass(frozen=True)
class DriftMeasurement:
    """What one Evidently report measured: per-column drift, the embedding domain classifier, the files."""

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
    embedding_threshold: float | None = None  # the AUC above which the embeddings count as drifted
    reference_groups: int | None = None  # recordings (groups) behind the rows, when a group column was given
    current_groups: int | None = None

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["html_path"], out["json_path"] = str(self.html_path), str(self.json_path)
        return out


@dataclass(frozen=True)
class DriftVerdict(DriftMeasurement):
    """The monitor's verdict: the measurement, how severe it is, and what was compared with what.

    Built once, whole, by `verdict(...)`; `run_id` is the MLflow run that records it."""

    severity: str = "none"              # none | drift | critical (`severity`)
    dataset_version: str | None = None  # the reference's dataset version (folder-<hash> for a folder of audio)
    reference: str | None = None        # the reference, in words
    current: str | None = None          # the batch's folder
    model_name: str | None = None       # the champion whose class probabilities were compared (None: no champion)
    model_version: str | None = None
    prediction_columns: list[str] = field(default_factory=list)  # pred_<class>: among the compared columns
    predicted_distribution: dict[str, dict[str, float]] = field(default_factory=dict)  # class -> means, shares
    thresholds: dict[str, float] = field(default_factory=dict)   # params.yaml `monitor` and the embedding AUC
    run_id: str | None = None


def verdict(measurement: DriftMeasurement, *, critical_share: float, critical_auc: float, run_id: str | None,
            **context: Any) -> DriftVerdict:
    """The whole verdict of `measurement`: its severity (`severity`), the thresholds it was judged by and
    `context` (the `DriftVerdict` fields that say what was compared)."""
    thresholds = {"drift_share": measurement.threshold, "critical_drift_share": critical_share,
                  "critical_auc": critical_auc}
    if measurement.embedding_threshold is not None:
        thresholds["embedding_auc"] = measurement.embedding_threshold
    return DriftVerdict(**{f.name: getattr(measurement, f.name) for f in fields(DriftMeasurement)},
                        severity=severity(measurement, critical_share, critical_auc), thresholds=thresholds,
                        run_id=run_id, **context)


def severity(result: DriftMeasurement, critical_share: float, critical_auc: float) -> str:
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


def _halves(groups: Any, rng: np.random.Generator) -> np.ndarray:
    """True for the rows of the training half: about half the rows, whole groups on each side (rows are split
    one by one when there is a single group)."""
    codes, uniques = pd.factorize(pd.Series(groups).astype(str))
    n = len(codes)
    if len(uniques) < 2:
        train = np.zeros(n, dtype=bool)
        train[rng.permutation(n)[: n // 2]] = True
        return train
    order = rng.permutation(len(uniques))
    sizes = np.bincount(codes, minlength=len(uniques))[order]
    before = np.cumsum(sizes) - sizes
    # Groups fill the training half in random order; the last one always goes to the held-out half.
    chosen = order[:-1][before[:-1] < n / 2]
    return np.isin(codes, chosen)


@dataclass(frozen=True)
class HeldOut:
    """The domain classifier's scores on the held-out half: label 1 = reference, and each row's group."""

    scores: np.ndarray
    labels: np.ndarray
    groups: np.ndarray

    def auc(self) -> float:
        from sklearn.metrics import roc_auc_score

        return float(roc_auc_score(self.labels, self.scores))

    def null_auc_quantile(self, q: float = 0.95, permutations: int = 2000, seed: int = 0) -> float:
        """The `q` quantile of the AUC when whole held-out groups swap sides at random (no drift: reference and
        current recordings are exchangeable). Clips of one group score alike, so with few groups chance AUCs
        spread wide; with one clip per group this is the row-wise bootstrap Evidently runs."""
        from scipy.stats import rankdata

        codes, uniques = pd.factorize(pd.Series(self.groups).astype(str))
        ranks = rankdata(self.scores)
        sizes = np.bincount(codes, minlength=len(uniques)).astype(float)
        rank_sums = np.bincount(codes, weights=ranks, minlength=len(uniques))
        side = np.zeros(len(uniques))
        side[np.unique(codes[self.labels == 1])] = 1.0  # a group lies on one side: that side's label
        chosen = np.random.default_rng(seed).permuted(np.tile(side, (permutations, 1)), axis=1)
        n1 = chosen @ sizes
        n0 = len(ranks) - n1
        auc = (chosen @ rank_sums - n1 * (n1 + 1) / 2) / np.maximum(n1 * n0, 1.0)
        return float(np.quantile(auc, q))


def grouped_domain_classifier(reference: np.ndarray, current: np.ndarray, reference_groups: Any,
                              current_groups: Any, seed: int = 42) -> HeldOut:
    """Evidently's `ModelDriftMethod` (SGD logistic regression on half the rows, ROC AUC on the other half)
    with the halves drawn by group on each side: no recording has clips on both sides of the split.

    The fit is capped at `SGD_EPOCHS` passes: uncapped, SGD on 10,000 x 1024 unscaled embeddings runs 200+
    epochs (9 s on 2 cores) to the same AUC. Whatever the classifier, its AUC on held-out groups is a valid
    test statistic under "no drift"; the cap only bounds the time.
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import SGDClassifier

    reference_groups = np.asarray(pd.Series(reference_groups).astype(str))
    current_groups = np.asarray(pd.Series(current_groups).astype(str))
    if np.intersect1d(reference_groups, current_groups).size:  # a group name on both sides is two groups
        reference_groups = np.char.add("reference:", reference_groups)
        current_groups = np.char.add("current:", current_groups)
    rng = np.random.default_rng(seed)
    ref_train, cur_train = _halves(reference_groups, rng), _halves(current_groups, rng)
    x_train = np.vstack([reference[ref_train], current[cur_train]])
    y_train = np.r_[np.ones(ref_train.sum()), np.zeros(cur_train.sum())]
    if min(ref_train.sum(), (~ref_train).sum(), cur_train.sum(), (~cur_train).sum()) == 0:
        raise ValueError("embedding drift needs at least two rows on each side")
    clf = SGDClassifier(loss="log_loss", random_state=42, max_iter=SGD_EPOCHS)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # a capped fit is still a valid held-out test
        clf.fit(x_train, y_train)
    x_test = np.vstack([reference[~ref_train], current[~cur_train]])
    return HeldOut(scores=clf.predict_proba(x_test)[:, 1],
                   labels=np.r_[np.ones((~ref_train).sum()), np.zeros((~cur_train).sum())],
                   groups=np.r_[reference_groups[~ref_train], current_groups[~cur_train]])


def grouped_domain_auc(reference: np.ndarray, current: np.ndarray, reference_groups: Any, current_groups: Any,
                       seed: int = 42) -> float:
    """The held-out ROC AUC of `grouped_domain_classifier`: the embedding drift score."""
    return grouped_domain_classifier(reference, current, reference_groups, current_groups, seed).auc()


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
        group_column: str | None = None  # rows of one group stay on one side of the classifier's split

    # This module's annotations are strings (postponed evaluation); resolve them for pydantic here.
    EmbeddingClassifierDrift.update_forward_refs(DriftMethod=DriftMethod)

    class EmbeddingClassifierDriftCalculation(SingleValueCalculation[EmbeddingClassifierDrift]):
        def calculate(self, context: Any, current_data: Any, reference_data: Any) -> SingleValue:
            if reference_data is None:
                raise ValueError("embedding drift needs reference data")
            columns = context.data_definition.embeddings[self.metric.embeddings_name]
            current, reference = current_data.as_dataframe(), reference_data.as_dataframe()
            group = self.metric.group_column
            if group is not None:
                return self.result(grouped_domain_auc(reference[columns].to_numpy(), current[columns].to_numpy(),
                                                      reference[group].to_numpy(), current[group].to_numpy()))
            # DriftMethod adds a label column to its inputs: hand it copies.
            score, _, _ = self.metric.drift_method(current[columns].copy(), reference[columns].copy())
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
    reference: pd.DataFrame, current: pd.DataFrame, columns: list[str], embedding_columns: list[str],
    group_column: str | None = None,
) -> tuple[Any, Any]:
    from evidently import DataDefinition, Dataset

    numeric = [c for c in columns if pd.api.types.is_numeric_dtype(reference[c])]
    groups = [group_column] if group_column else []  # read by the embedding metric only, never compared
    definition = DataDefinition(
        numerical_columns=numeric,
        categorical_columns=[c for c in columns if c not in numeric],  # the group column: undeclared, never compared
        # Declared as an embedding, not as 1024 numerical columns: Evidently would profile each one.
        embeddings={EMBEDDING_NAME: embedding_columns} if embedding_columns else None,
    )
    keep = columns + embedding_columns + groups  # only what is needed: extra columns cost time

    def table(frame: pd.DataFrame) -> pd.DataFrame:
        out = frame[keep].reset_index(drop=True)
        if group_column:
            out[group_column] = out[group_column].astype(str)
        return out

    return (Dataset.from_pandas(table(reference), data_definition=definition),
            Dataset.from_pandas(table(current), data_definition=definition))


def _report(columns: list[str], embedding_threshold: float | None, threshold: float, tags: dict[str, str],
            group_column: str | None = None) -> Any:
    from evidently import Report
    from evidently.metrics.embeddings import ModelDriftMethod
    from evidently.presets import DataDriftPreset
    from evidently.tests import lte

    metrics: list[Any] = [DataDriftPreset(drift_share=threshold)]  # every declared column: `columns`
    if embedding_threshold is not None:
        metric = _embedding_metric_class()
        method = ModelDriftMethod()  # the batch's threshold is the test's: metric params stay the same across batches
        metrics.append(metric(embeddings_name=EMBEDDING_NAME, drift_method=method, group_column=group_column,
                              tests=[lte(embedding_threshold)]))
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


def report_dir(parent: Path) -> Path:
    """A new folder name for a report: parent/<YYYYmmdd-HHMMSS>, then .2, .3, ... within the same second."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    n = 1
    while (Path(parent) / (name := stamp if n == 1 else f"{stamp}.{n}")).exists():
        n += 1
    return Path(parent) / name


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
    group_column: str | None = None,
) -> DriftMeasurement:
    """Compare `current` with `reference`; write out_dir/drift.html and drift.json; return the verdict.

    `columns` are compared one by one (descriptors, predictions); `embedding_columns`, if any, together
    as one embedding. `threshold` is the share of drifted columns that counts as drift. With
    `workspace_dir`, the run is also stored in that Evidently workspace, in project `project`.
    `tags` (dataset version, model, ...) go into the run's metadata and tags. `group_column` names each
    row's recording (track, session): the embedding classifier's halves keep groups whole, and its chance
    threshold counts groups (see the module's docstring).
    """
    if not columns:
        raise ValueError("drift_report needs at least one column to compare")
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold is a share of columns in (0, 1], got {threshold}")
    embedding_columns = list(embedding_columns or [])
    for frame, which in ((reference, "reference"), (current, "current")):
        _check_table(frame, columns + ([group_column] if group_column else []), embedding_columns, which)

    n_ref, n_cur = len(reference), len(current)
    g_ref, g_cur = ((int(reference[group_column].nunique()), int(current[group_column].nunique())) if group_column
                    else (None, None))
    auc_threshold = None
    if embedding_columns and group_column:
        # The threshold must be known when the report is built (it is the report's test), so the classifier
        # runs here once to get its chance distribution; the report's metric refits it identically.
        held_out = grouped_domain_classifier(reference[embedding_columns].to_numpy(),
                                             current[embedding_columns].to_numpy(),
                                             reference[group_column].to_numpy(), current[group_column].to_numpy())
        auc_threshold = max(AUC_FLOOR, held_out.null_auc_quantile())
    elif embedding_columns:
        auc_threshold = embedding_auc_threshold(n_ref, n_cur)
    tags = {**(tags or {}), "reference_rows": str(n_ref), "current_rows": str(n_cur)}
    reference_data, current_data = _datasets(reference, current, columns, embedding_columns, group_column)
    with warnings.catch_warnings():
        # Constant descriptor columns (e.g. no clipping anywhere) make Evidently's correlation tables divide
        # by a zero spread; the drift tests themselves are unaffected.
        warnings.simplefilter("ignore", RuntimeWarning)
        snapshot = _report(columns, auc_threshold, threshold, tags, group_column).run(current_data, reference_data)

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    html_path, json_path = out_dir / "drift.html", out_dir / "drift.json"
    atomic_write(html_path, lambda tmp: snapshot.save_html(str(tmp)))
    atomic_write(json_path, lambda tmp: snapshot.save_json(str(tmp)))
    snapshot_id = _add_to_workspace(snapshot, Path(workspace_dir), project) if workspace_dir else None

    summary = snapshot.dict()
    share, drifted = _column_drift(summary, columns)
    score = _embedding_score(summary)
    embedding_drift = None if score is None or auc_threshold is None else score > auc_threshold
    return DriftMeasurement(
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
        embedding_threshold=auc_threshold,
        reference_groups=g_ref,
        current_groups=g_cur,
    )
