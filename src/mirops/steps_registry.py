"""The registry life cycle as steps: evaluate a training run, register it, promote it through the gate,
roll back.

- `evaluate` scores the run's model on the test split and keeps its per-clip predictions beside the run,
  so a later promotion compares two models clip by clip without re-running either.
- `register` makes a new version (alias `challenger`) carrying its lineage as tags and a model card.
- `promote` is the gate: the challenger replaces the champion only when its gain on the same test clips
  of the same dataset version has a paired-bootstrap interval above `registry.min_gain`, its dataset audit
  passed, and no critical drift is open on that data. Every decision is an MLflow run plus version tags.
- `rollback` restores the previous champion, recorded the same way.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mirops import dashboards
from mirops.config import Settings
from mirops.data.manifest import read_manifest
from mirops.registry.promotion import Decision
from mirops.registry.tracking import TAG_DRIFT_SEVERITY
from mirops.steps import _split, console, current_version, split_frames

PREDICTIONS_FILE = "test_predictions.parquet"
TAG_FAMILY = "mirops.family"
TAG_TRAINING_RUN = "mirops.training_run_id"
TAG_DRIFT_RUN = "mirops.drift_run_id"
RUN_FILES = {"reprogram": "run.json", "east": "east-run.json"}


def model_name_for(settings: Settings, family: str | None) -> str:
    """Each family is its own registered model, with its own champion."""
    return settings.east.model_name if family == "east" else settings.registry.model_name


def last_run_id(settings: Settings, family: str = "reprogram") -> str:
    path = settings.artifacts_dir / "train" / RUN_FILES[family]
    if not path.exists():
        raise FileNotFoundError(f"{path}: no training run recorded; run `mirops train {family}` or pass a run id")
    return json.loads(path.read_text())["run_id"]


def tag_runs(settings: Settings, run_ids: list[str], tags: dict[str, str]) -> None:
    """Add `tags` to finished runs (e.g. the Prefect flow run and the trigger that started them)."""
    from mlflow import MlflowClient

    from mirops.registry import tracking

    tracking.setup(settings)
    client = MlflowClient()
    for run_id in run_ids:
        for key, value in tags.items():
            client.set_tag(run_id, key, value)


# ---------------------------------------------------------------- test predictions

@dataclass
class ClipPredictions:
    """A model's probabilities on the annotated test split, clip by clip, with the labels they are judged by."""

    clip_ids: list[str]
    classes: list[str]
    probs: np.ndarray    # (clips, classes)
    labels: np.ndarray   # soft labels, NaN = not annotated

    def frame(self) -> pd.DataFrame:
        df = pd.DataFrame({"clip_id": self.clip_ids})
        for k, c in enumerate(self.classes):
            df[f"p:{c}"], df[f"y:{c}"] = self.probs[:, k], self.labels[:, k]
        return df

    @classmethod
    def from_frame(cls, df: pd.DataFrame) -> ClipPredictions:
        classes = [c[2:] for c in df.columns if c.startswith("p:")]
        return cls(list(df["clip_id"].astype(str)), classes,
                   df[[f"p:{c}" for c in classes]].to_numpy(np.float64),
                   df[[f"y:{c}" for c in classes]].to_numpy(np.float64))

    def subset(self, clip_ids: list[str]) -> ClipPredictions:
        index = {c: i for i, c in enumerate(self.clip_ids)}
        rows = [index[c] for c in clip_ids]
        return ClipPredictions(list(clip_ids), self.classes, self.probs[rows], self.labels[rows])


def predict_test(settings: Settings, model) -> ClipPredictions:
    """Run `model` (waveform → logits) over the test split of the current data/."""
    import torch

    from mirops.data.manifest import label_matrix
    from mirops.train.reprogram import predict_probs

    df, spec = read_manifest(settings.data_dir)
    if list(getattr(model, "classes", spec.classes)) != spec.classes:
        raise ValueError(f"model classes {model.classes} differ from the dataset's {spec.classes}")
    # Served models carry the clip length they were trained on; older ones used train.clip_seconds.
    seconds = getattr(model, "clip_seconds", None) or settings.train.clip_seconds
    frames, test, _ = split_frames(settings, _split(df, "test"), model.frontend, "test split", seconds=seconds)
    with torch.no_grad():
        probs = predict_probs(model, torch.from_numpy(frames))
    return ClipPredictions(list(test["clip_id"].astype(str)), spec.classes, np.asarray(probs, np.float64),
                           label_matrix(test, spec).astype(np.float64))


def score(settings: Settings, predictions: ClipPredictions) -> tuple[dict[str, float], dict[str, dict]]:
    from mirops.train.metrics import evaluate_probs

    return evaluate_probs(predictions.probs, predictions.labels, predictions.classes, settings.train.threshold)


def score_on_test(settings: Settings, model) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    return score(settings, predict_test(settings, model))


def require_data_of(settings: Settings, what: str, trained_on: str | None) -> str:
    """Test metrics are compared "on the same test data": never score on another dataset version."""
    here = current_version(settings)
    if trained_on != here:
        raise ValueError(f"{what} needs dataset version {trained_on}, but data/ is {here}; restore it "
                         f"(`mirops data checkout {trained_on}`) or train on this version")
    return here


def _log_predictions(predictions: ClipPredictions, artifact_path: str | None = None, name: str = PREDICTIONS_FILE):
    from mirops.registry import tracking

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        predictions.frame().to_parquet(path, index=False)
        tracking.log_file(path, artifact_path)


def _run_predictions(run_id: str) -> ClipPredictions | None:
    import mlflow

    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=PREDICTIONS_FILE, dst_path=tmp)
            return ClipPredictions.from_frame(pd.read_parquet(path))
    except Exception:  # noqa: BLE001 - evaluated before predictions were kept, or not evaluated at all
        return None


# ---------------------------------------------------------------- evaluate

def evaluate(settings: Settings, run_id: str | None = None, family: str = "reprogram") -> dict[str, float]:
    """Test-split mAP, ROC-AUC and F1 (both conventions) and the per-clip predictions, logged on the run."""
    import mlflow
    from mlflow import MlflowClient

    from mirops import plots
    from mirops.registry import models, tracking

    run_id = run_id or last_run_id(settings, family)
    tracking.setup(settings)
    here = require_data_of(settings, f"run {run_id}",
                           MlflowClient().get_run(run_id).data.tags.get(tracking.TAG_DATASET_VERSION))
    predictions = predict_test(settings, models.load_model(models.model_uri_of_run(run_id)))
    summary, per_class = score(settings, predictions)
    metrics = {f"test_{k}": v for k, v in summary.items()}
    with tracking.resume(settings, run_id):
        mlflow.log_metrics({k: v for k, v in metrics.items() if np.isfinite(v)})
        tracking.log_json(per_class, "test_per_class.json")
        _log_predictions(predictions)
        tracking.log_figure(plots.per_class_bars(per_class, title="test split, per class"), "plots/test_per_class.png")
    tracking.write_json(settings.artifacts_dir / "evaluate" / "metrics.json",
                        {"run_id": run_id, "dataset_version": here, **metrics})
    console.print("[bold]evaluate[/] " + ", ".join(f"{k} {v:.3f}" for k, v in metrics.items()))
    return metrics


# ---------------------------------------------------------------- register

@dataclass
class Registration:
    name: str
    version: str
    aliases: list[str]
    run_id: str
    dataset_version: str
    lineage: dict[str, str]


def latest_drift(settings: Settings, dataset_version: str):
    """The newest drift verdict measured against this dataset version (an MLflow monitor run), or None."""
    from mirops.registry import tracking

    return tracking.latest_run(settings, "monitor", dataset_version)


def _drift_line(run) -> str:
    if run is None:
        return "no drift report on this data yet"
    tags, metrics = run.data.tags, run.data.metrics
    auc = metrics.get("embedding_drift_score")
    embedding = f", embedding AUC {auc:.2f}" if auc is not None else ""
    return (f"{tags.get(TAG_DRIFT_SEVERITY, 'unknown')} (descriptor drift share "
            f"{metrics.get('drift_share', float('nan')):.2f}{embedding}; run {run.info.run_id})")


def register(settings: Settings, run_id: str | None = None, family: str = "reprogram") -> Registration:
    """Register the evaluated run's model as a new version (alias `challenger`) with lineage tags and a
    model card. The champion does not move here: that is `promote`'s decision."""
    import mlflow
    from mlflow import MlflowClient

    from mirops.registry import card, models, tracking

    run_id = run_id or last_run_id(settings, family)
    tracking.setup(settings)
    client = MlflowClient()
    run = client.get_run(run_id)
    tags, metrics = run.data.tags, run.data.metrics
    family = tags.get(TAG_FAMILY, "reprogram")
    name, metric = model_name_for(settings, family), settings.registry.primary_metric
    if metric not in metrics:
        raise LookupError(f"run {run_id} has no {metric}: run `mirops evaluate {run_id}` first")
    dataset_version = tags.get(tracking.TAG_DATASET_VERSION, "unknown")
    drift = latest_drift(settings, dataset_version)
    lineage = {
        tracking.TAG_DATASET_VERSION: dataset_version,
        tracking.TAG_GIT_COMMIT: tags.get(tracking.TAG_GIT_COMMIT, "unknown"),
        tracking.TAG_AUDIT_SUCCESS: tags.get(tracking.TAG_AUDIT_SUCCESS, "not-run"),
        tracking.TAG_AUDIT_RUN: tags.get(tracking.TAG_AUDIT_RUN, "none"),
        TAG_DRIFT_RUN: drift.info.run_id if drift is not None else "none",
        TAG_DRIFT_SEVERITY: drift.data.tags.get(TAG_DRIFT_SEVERITY, "unknown") if drift is not None else "none",
        TAG_TRAINING_RUN: run_id,
        TAG_FAMILY: family,
        metric: f"{metrics[metric]:.6f}",
    }
    try:
        per_class = mlflow.artifacts.load_dict(f"runs:/{run_id}/test_per_class.json")
    except Exception:  # noqa: BLE001 - the card says so rather than failing the registration
        per_class = {}
    audit = tags.get(tracking.TAG_AUDIT_SUCCESS, "not-run")
    details = {k.removeprefix("train.").removeprefix("east."): v for k, v in run.data.params.items()
               if k in ("train.backbone", "train.transform", "train.mapping", "east.student", "east.mode",
                        "east.teachers")}

    def render(version: str) -> str:
        return card.render(card.CardFacts(
            name=name, version=version, family=family, dataset_version=dataset_version, training_run_id=run_id,
            git_commit=lineage[tracking.TAG_GIT_COMMIT],
            audit={"true": "passed", "false": "FAILED", "not-run": "not run"}.get(audit, audit)
            + (f": {tags['mirops.audit_summary']}" if "mirops.audit_summary" in tags else ""),
            audit_run_id=lineage[tracking.TAG_AUDIT_RUN], drift=_drift_line(drift),
            metrics={k: v for k, v in metrics.items() if k.startswith("test_")}, per_class=per_class,
            params_trainable=int(metrics["params_trainable"]) if "params_trainable" in metrics else None,
            params_total=int(metrics["params_total"]) if "params_total" in metrics else None,
            classes=run.data.params.get("classes", "").split(",") if run.data.params.get("classes") else [],
            details=details))

    version = models.register_version(name, run_id, lineage, render)
    client.log_text(run_id, render(version), "model_card.md")
    aliases = [a for a in client.get_model_version(name, version).aliases]
    reg = Registration(name, version, aliases, run_id, dataset_version, lineage)
    tracking.write_json(settings.artifacts_dir / "register" / f"{family}.json", asdict(reg))
    dashboards.record_registry(settings, [name])  # the models dashboard (a warning if it fails)
    console.print(f"[bold]register[/] {name} v{version} → {', '.join(aliases)} "
                  f"(dataset {dataset_version}, audit {lineage[tracking.TAG_AUDIT_SUCCESS]})")
    return reg


# ---------------------------------------------------------------- promote / rollback

def _predictions(settings: Settings, name: str, version: str, dataset_version: str) -> tuple[ClipPredictions, bool]:
    """Version `version`'s test predictions on `dataset_version`: those kept by its evaluation when it was
    tested on that version, else a fresh scoring of the registered model (data/ must be that version).
    The flag says whether it was re-scored."""
    from mlflow import MlflowClient

    from mirops.registry import models, tracking

    mv = MlflowClient().get_model_version(name, version)
    if mv.tags.get(tracking.TAG_DATASET_VERSION) == dataset_version:
        kept = _run_predictions(mv.run_id)
        if kept is not None:
            return kept, False
    require_data_of(settings, f"re-scoring {name} v{version} on the challenger's test split", dataset_version)
    return predict_test(settings, models.load_model(f"models:/{name}/{version}")), True


def _gain_check(settings: Settings, name: str, challenger: str, champion: str, dataset_version: str):
    from mirops.train.bootstrap import paired_bootstrap

    p = settings.registry
    ours, _ = _predictions(settings, name, challenger, dataset_version)
    theirs, rescored = _predictions(settings, name, champion, dataset_version)
    if ours.classes != theirs.classes:
        raise ValueError(f"{name} v{challenger} predicts {ours.classes} but v{champion} predicts {theirs.classes}: "
                         "they cannot be compared")
    shared = [c for c in ours.clip_ids if c in set(theirs.clip_ids)]
    ours, theirs = ours.subset(shared), theirs.subset(shared)
    metric = p.primary_metric.removeprefix("test_")
    gain = paired_bootstrap(ours.labels, ours.probs, theirs.probs, metric, p.bootstrap_samples, p.confidence,
                            seed=settings.seed, threshold=settings.train.threshold)
    passed = gain.low > p.min_gain
    detail = (f"{metric} {gain.challenger:.4f} vs champion v{champion} {gain.champion:.4f} on the same "
              f"{gain.clips} test clips{' (champion re-scored on this data)' if rescored else ''}: gain "
              f"{gain.gain:+.4f}, {gain.confidence:.0%} interval [{gain.low:+.4f}, {gain.high:+.4f}] "
              f"{'above' if passed else 'not above'} the margin {p.min_gain:+.4f}")
    artifacts = {"champion_predictions.json": {"version": champion, "dataset_version": dataset_version,
                                               "clip_ids": theirs.clip_ids, "classes": theirs.classes,
                                               "probs": theirs.probs.round(6).tolist()}} if rescored else {}
    return {"passed": passed, "detail": detail, **gain.to_json(), "champion_rescored": rescored}, artifacts


def gate(settings: Settings, name: str, version: str | None = None) -> tuple[Decision, dict, dict]:
    """Decide on `version` (default: the `challenger`) against the current champion, changing nothing.
    Returns the decision, its metrics and the artifacts to keep with it."""
    from mlflow import MlflowClient

    from mirops.registry import models, tracking

    tracking.setup(settings)
    p = settings.registry
    version = version or models.alias_version(name, models.CHALLENGER)
    if version is None:
        raise LookupError(f"{name} has no challenger to promote: register a run first (`mirops register RUN`)")
    mv = MlflowClient().get_model_version(name, version)
    dataset_version = mv.tags.get(tracking.TAG_DATASET_VERSION, "unknown")
    champion = models.alias_version(name, models.CHAMPION)
    checks: dict[str, dict[str, Any]] = {}

    audit = mv.tags.get(tracking.TAG_AUDIT_SUCCESS, "not-run")
    checks["audit"] = {"passed": audit == "true" or not p.require_audit,
                       "detail": {"true": f"dataset {dataset_version} passed its audit "
                                          f"(run {mv.tags.get(tracking.TAG_AUDIT_RUN, '?')})",
                                  "not-run": f"dataset {dataset_version} was never audited (`mirops audit`)"}
                       .get(audit, f"the audit of dataset {dataset_version} failed")
                       + ("" if p.require_audit else "; not required (registry.require_audit: false)")}
    drift = latest_drift(settings, dataset_version)
    severity = drift.data.tags.get(TAG_DRIFT_SEVERITY, "unknown") if drift is not None else "none"
    checks["drift"] = {"passed": severity != "critical" or not p.block_on_critical_drift,
                       "detail": f"newest verdict on dataset {dataset_version}: {_drift_line(drift)}",
                       "severity": severity}
    metrics: dict[str, float] = {}
    artifacts: dict[str, Any] = {}
    if champion == version:
        decision = Decision("noop", name, version, champion, champion, f"v{version} already is the champion",
                            checks, dataset_version)
        return decision, metrics, artifacts
    if champion is None:
        checks["gain"] = {"passed": True, "detail": "no champion yet: nothing to beat"}
    else:
        checks["gain"], artifacts = _gain_check(settings, name, version, champion, dataset_version)
        metrics = {k: checks["gain"][k] for k in ("challenger", "champion", "gain", "low", "high", "p_not_better")}
    failed = [k for k, c in checks.items() if not c["passed"]]
    if failed:
        reason = "kept champion " + (f"v{champion}" if champion else "(none)") + ": " + "; ".join(
            checks[k]["detail"] for k in failed)
        decision = Decision("reject", name, version, champion, champion, reason, checks, dataset_version)
        return decision, metrics, artifacts
    reason = (f"first champion: {checks['audit']['detail']}" if champion is None
              else f"beats v{champion}: {checks['gain']['detail']}")
    return Decision("promote", name, version, champion, version, reason, checks, dataset_version), metrics, artifacts


def _emit(decision: Decision) -> None:
    colour = {"promote": "green", "rollback": "yellow", "reject": "red", "noop": "blue"}[decision.action]
    from rich.markup import escape

    head, *rest = decision.explain().splitlines()
    console.print(f"[bold {colour}]{escape(head)}[/]")
    for line in rest:  # "[ok  ]" and "[FAIL]" are text, not markup
        console.print(line, highlight=False, markup=False)
    if decision.run_id is not None:
        console.print(f"  decision run: {decision.run_id}")


def promote(settings: Settings, name: str | None = None, version: str | None = None,
            dry_run: bool = False, attempts: int = 3) -> Decision:
    """Run the gate on `version` (default: the challenger) and act on it under the registry lock.

    The gate's scoring runs outside the lock; under it, if another process moved the champion meanwhile,
    the decision is taken again against the new champion (so two racing promotions are judged in turn).
    """
    from mirops.registry import models, promotion, tracking
    from mirops.registry.lock import registry_lock

    name = name or settings.registry.model_name
    tracking.setup(settings)
    for _ in range(attempts):
        decision, metrics, artifacts = gate(settings, name, version)
        if dry_run:
            decision.dry_run = True
            _emit(decision)
            return decision
        with registry_lock(name):
            if models.alias_version(name, models.CHAMPION) != decision.champion_before:
                continue  # the champion moved while we scored: judge again against the new one
            promotion.apply(settings, decision, metrics, artifacts)
        _emit(decision)
        family = "east" if name == settings.east.model_name else "reprogram"
        tracking.write_json(settings.artifacts_dir / "promote" / f"{family}.json", decision.to_json())
        dashboards.record_registry(settings, [name])  # the models dashboard (a warning if it fails)
        return decision
    raise RuntimeError(f"the champion of {name} kept moving during {attempts} attempts to decide on v{version}")


def rollback(settings: Settings, name: str | None = None, reason: str = "", dry_run: bool = False) -> Decision:
    """Point `champion` back at the previous champion (the one before the current, skipping deleted ones)."""
    from mlflow import MlflowClient

    from mirops.registry import models, promotion, tracking
    from mirops.registry.lock import registry_lock

    name = name or settings.registry.model_name
    tracking.setup(settings)
    with registry_lock(name):
        current = models.alias_version(name, models.CHAMPION)
        previous = promotion.previous_champion(name)
        if current is None or previous is None:
            raise LookupError(f"{name} has no earlier champion to roll back to (champions so far: "
                              f"{promotion.champion_stack(name) or 'none'})")
        tags = MlflowClient().get_model_version(name, previous).tags
        why = reason or "requested by hand"
        decision = Decision("rollback", name, previous, current, previous,
                            f"champion v{current} → v{previous}: {why}",
                            {"previous": {"passed": True, "detail": f"v{previous} was champion before v{current} "
                                          f"(trained on dataset {tags.get(tracking.TAG_DATASET_VERSION, '?')})"}},
                            tags.get(tracking.TAG_DATASET_VERSION), dry_run=dry_run)
        if not dry_run:
            promotion.apply(settings, decision)
    _emit(decision)
    if not dry_run:
        dashboards.record_registry(settings, [name])  # the models dashboard (a warning if it fails)
    return decision
