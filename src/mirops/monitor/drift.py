"""Drift between a reference table (the training audio) and a new batch, with Evidently 0.7.

Rows are clip-length windows of files (`pipeline.monitor.batch_features`), each with its file's group. The
verdict is `monitor.decision.file_level_test`: one permutation test over files, exact at the false-alarm rate
`alpha` whatever the batch size and however the columns correlate (its docstring says why). One Evidently
Report holds the rest, so the HTML, the JSON and the workspace run agree:
- the verdict as a metric (`MiropsFileLevelDrift`: the batch's p-value, with the test p >= alpha);
- `DataDriftPreset` over the descriptor and prediction columns, window by window: Evidently's per-column tests,
  kept as diagnostics of what moved. They count windows as independent rows, which windows of one track are
  not, so their share is not the verdict (two halves of one soundtrack "drift" in 7 of 12 columns that way);
- the embedding domain classifier's ROC AUC (Evidently's `ModelDriftMethod`, halves drawn by group): how far
  apart the batches are (0.5 = indistinguishable), which grades a detected drift as critical.

Why not Evidently's own `EmbeddingsDrift` metric: in 0.7.23 it wraps the legacy
`EmbeddingsDriftMetric`, which always runs a t-SNE of up to 2 x 2500 rows only to draw a contour plot;
for 200 + 200 clips that alone takes 3 to 12 s on two cores. `EmbeddingClassifierDrift` below is the
same computation (the same `DriftMethod` on the same embedding columns from the data definition)
without the plot, so a report over 1024-d embeddings stays within a few seconds.
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
from mirops.monitor.decision import EMBEDDING_TEST, file_level_test

EMBEDDING_NAME = "embedding"
EMBEDDING_METRIC_TYPE = "evidently:metric_v2:MiropsEmbeddingClassifierDrift"  # panels match evidently:metric_v2:*
DECISION_METRIC_TYPE = "evidently:metric_v2:MiropsFileLevelDrift"
SGD_EPOCHS = 50  # passes of the domain classifier's fit (see `grouped_domain_classifier`)
DRIFTED_COLUMNS_TYPE = "evidently:metric_v2:DriftedColumnsCount"
VALUE_DRIFT_TYPE = "evidently:metric_v2:ValueDrift"


@dataclass(frozen=True)
class DriftMeasurement:
    """What one report measured: the file-level test (the verdict), the window-level diagnostics, the sizes."""

    p_value: float                      # the batch's p-value (`monitor.decision`); drifted when <= alpha
    alpha: float
    drift_detected: bool
    drift_share: float                  # share of compared columns that drifted (family-wise adjusted p <= alpha)
    drifted_columns: list[str]
    n_columns: int
    column_p_values: dict[str, float]   # per column: family-wise adjusted p-value
    embedding_p_value: float | None     # the embedding's adjusted p-value; None without embeddings
    embedding_drift_detected: bool | None
    embedding_drift_score: float | None  # domain-classifier ROC AUC (effect size); None without embeddings
    window_drift_share: float           # Evidently's per-column tests over windows: diagnostics, not the verdict
    window_drifted_columns: list[str]
    permutations: int
    min_p: float                        # the smallest p-value these file counts allow
    decidable: bool                     # min_p <= alpha (else no batch this small can be called drifted)
    html_path: Path
    json_path: Path
    snapshot_id: str | None             # run id in the Evidently workspace, if one was given
    reference_files: int                # files behind the windows (distinct clip_id)
    current_files: int
    reference_groups: int               # the test's units: files, or a manifest's recordings (`group`)
    current_groups: int
    reference_rows: int                 # windows
    current_rows: int

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
    thresholds: dict[str, float] = field(default_factory=dict)   # params.yaml `monitor`
    run_id: str | None = None


def verdict(measurement: DriftMeasurement, *, critical_share: float, critical_auc: float, run_id: str | None,
            **context: Any) -> DriftVerdict:
    """The whole verdict of `measurement`: its severity (`severity`), the thresholds it was judged by and
    `context` (the `DriftVerdict` fields that say what was compared)."""
    thresholds = {"alpha": measurement.alpha, "critical_drift_share": critical_share, "critical_auc": critical_auc,
                  "permutations": float(measurement.permutations)}
    return DriftVerdict(**{f.name: getattr(measurement, f.name) for f in fields(DriftMeasurement)},
                        severity=severity(measurement, critical_share, critical_auc), thresholds=thresholds,
                        run_id=run_id, **context)


def severity(result: DriftMeasurement, critical_share: float, critical_auc: float) -> str:
    """"none", "drift" (worth a retrain) or "critical" (so far off that no model trained on the reference
    should be promoted until the data catch up): a large share of drifted columns, or an embedding domain
    classifier that tells the batches apart almost perfectly."""
    if not result.drift_detected:
        return "none"
    auc = result.embedding_drift_score
    if result.drift_share >= critical_share or (auc is not None and auc >= critical_auc):
        return "critical"
    return "drift"


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


@functools.cache
def _decision_metric_class() -> type:
    """Evidently metric: the file-level test's p-value (`monitor.decision`), so the verdict is in the report,
    its JSON and the workspace beside the per-column diagnostics. Built once per process, as above."""
    from evidently.core.metric_types import SingleValue, SingleValueCalculation, SingleValueMetric

    class FileLevelDrift(SingleValueMetric):
        class Config:
            type_alias = DECISION_METRIC_TYPE

        columns: list[str]
        embeddings_name: str | None = None
        group_column: str
        alpha: float
        permutations: int
        seed: int = 0

    class FileLevelDriftCalculation(SingleValueCalculation[FileLevelDrift]):
        def calculate(self, context: Any, current_data: Any, reference_data: Any) -> SingleValue:
            if reference_data is None:
                raise ValueError("the drift test needs reference data")
            m = self.metric
            embedding = context.data_definition.embeddings[m.embeddings_name] if m.embeddings_name else None
            test = file_level_test(reference_data.as_dataframe(), current_data.as_dataframe(), columns=m.columns,
                                   embedding_columns=embedding, group_column=m.group_column, alpha=m.alpha,
                                   permutations=m.permutations, seed=m.seed)
            return self.result(test.p_value)

        def display_name(self) -> str:
            return (f"Drift over files: permutation p-value of {len(self.metric.columns)} columns"
                    f"{' and the embedding' if self.metric.embeddings_name else ''} "
                    f"(drift when <= {self.metric.alpha})")

    return FileLevelDrift


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


def _report(columns: list[str], embedding: bool, alpha: float, permutations: int, tags: dict[str, str],
            group_column: str) -> Any:
    from evidently import Report
    from evidently.metrics.embeddings import ModelDriftMethod
    from evidently.presets import DataDriftPreset
    from evidently.tests import gt

    decision = _decision_metric_class()(columns=columns, embeddings_name=EMBEDDING_NAME if embedding else None,
                                        group_column=group_column, alpha=alpha, permutations=permutations,
                                        tests=[gt(alpha)])  # the test passes while the batch is not drifted
    metrics: list[Any] = [decision, DataDriftPreset()]  # the preset: every declared column, window by window
    if embedding:
        metrics.append(_embedding_metric_class()(embeddings_name=EMBEDDING_NAME, drift_method=ModelDriftMethod(),
                                                 group_column=group_column))
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


def _decision_p(snapshot: dict[str, Any]) -> float:
    return next(float(m["value"]) for m in snapshot["metrics"] if m["config"]["type"] == DECISION_METRIC_TYPE)


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
    alpha: float,
    group_column: str,
    permutations: int = 1999,
    workspace_dir: Path | None = None,
    project: str = "drift",
    tags: dict[str, str] | None = None,
) -> DriftMeasurement:
    """Compare `current` with `reference`; write out_dir/drift.html and drift.json; return the measurement.

    Rows are windows; `group_column` names each row's file (or recording): the unit of the test. `columns` are
    compared one by one (descriptors, predictions), `embedding_columns`, if any, together as one embedding;
    the verdict is `file_level_test` at false-alarm rate `alpha` with `permutations` relabellings. With
    `workspace_dir`, the run is also stored in that Evidently workspace, in project `project`. `tags`
    (dataset version, model, ...) go into the run's metadata and tags.
    """
    if not columns:
        raise ValueError("drift_report needs at least one column to compare")
    embedding_columns = list(embedding_columns or [])
    for frame, which in ((reference, "reference"), (current, "current")):
        _check_table(frame, columns + [group_column], embedding_columns, which)
    test = file_level_test(reference, current, columns=columns, embedding_columns=embedding_columns,
                           group_column=group_column, alpha=alpha, permutations=permutations)

    n_ref, n_cur = len(reference), len(current)
    files = [int(frame["clip_id"].nunique()) if "clip_id" in frame.columns else groups
             for frame, groups in ((reference, test.reference_groups), (current, test.current_groups))]
    tags = {**(tags or {}), "reference_windows": str(n_ref), "current_windows": str(n_cur),
            "reference_files": str(files[0]), "current_files": str(files[1]),
            "reference_groups": str(test.reference_groups), "current_groups": str(test.current_groups)}
    reference_data, current_data = _datasets(reference, current, columns, embedding_columns, group_column)
    with warnings.catch_warnings():
        # Constant descriptor columns (e.g. no clipping anywhere) make Evidently's correlation tables divide
        # by a zero spread; the drift tests themselves are unaffected.
        warnings.simplefilter("ignore", RuntimeWarning)
        report = _report(columns, bool(embedding_columns), alpha, permutations, tags, group_column)
        snapshot = report.run(current_data, reference_data)

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    html_path, json_path = out_dir / "drift.html", out_dir / "drift.json"
    atomic_write(html_path, lambda tmp: snapshot.save_html(str(tmp)))
    atomic_write(json_path, lambda tmp: snapshot.save_json(str(tmp)))
    snapshot_id = _add_to_workspace(snapshot, Path(workspace_dir), project) if workspace_dir else None

    summary = snapshot.dict()
    reported = _decision_p(summary)
    if not math.isclose(reported, test.p_value):  # one computation, seeded: the report shows what we decide on
        raise RuntimeError(f"the report's drift p-value {reported} differs from the verdict's {test.p_value}")
    window_share, window_drifted = _column_drift(summary, columns)
    drifted = test.drifted(columns)
    embedding_p = test.adjusted_p.get(EMBEDDING_TEST)
    return DriftMeasurement(
        p_value=test.p_value, alpha=alpha, drift_detected=test.drift_detected,
        drift_share=len(drifted) / len(columns), drifted_columns=drifted, n_columns=len(columns),
        column_p_values={c: test.adjusted_p[c] for c in columns},
        embedding_p_value=embedding_p,
        embedding_drift_detected=None if embedding_p is None else embedding_p <= alpha,
        embedding_drift_score=_embedding_score(summary),
        window_drift_share=window_share, window_drifted_columns=window_drifted,
        permutations=permutations, min_p=test.min_p, decidable=test.decidable,
        html_path=html_path, json_path=json_path, snapshot_id=snapshot_id,
        reference_files=files[0], current_files=files[1],
        reference_groups=test.reference_groups, current_groups=test.current_groups,
        reference_rows=n_ref, current_rows=n_cur,
    )
