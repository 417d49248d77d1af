"""Promote: the gate that moves `champion`, and rollback.

The challenger replaces the champion only when its gain on the same test clips of the same dataset version
has a paired-bootstrap (1 - `registry.alpha`) interval above `registry.min_gain` (`gain_test`, the one function
that decides; benchmarks/gate_calibration.py measures how often it is wrong), its dataset audit passed, and no
critical drift is open on that data.
Every decision (promote, reject, noop, rollback) is an MLflow run plus version tags.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from rich.markup import escape

from mirops import lineage
from mirops.atomic import atomic_write_json
from mirops.config import RegistryParams, Settings
from mirops.families import family_of_model
from mirops.pipeline import dashboards
from mirops.pipeline.evaluate import ClipPredictions, predict_test, run_predictions
from mirops.pipeline.register import drift_line, latest_drift
from mirops.pipeline.version import open_dataset
from mirops.progress import console
from mirops.registry import models, promotion, tracking
from mirops.registry.lock import registry_lock
from mirops.registry.promotion import Decision
from mirops.train.paired_bootstrap import PairedGain, paired_bootstrap


def version_predictions(settings: Settings, name: str, version: str, dataset_version: str
                        ) -> tuple[ClipPredictions, bool]:
    """Version `version`'s test predictions on `dataset_version`: those kept by its evaluation when it was
    tested on that version, else a fresh scoring of the registered model on that version's test split.
    The flag says whether it was re-scored."""
    mv = models.model_version(name, version)
    if mv.tags.get(lineage.TAG_DATASET_VERSION) == dataset_version:
        kept = run_predictions(mv.run_id)
        if kept is not None:
            return kept, False
    with open_dataset(settings, dataset_version) as ds:
        return predict_test(settings, ds, f"models:/{name}/{version}"), True


def gain_test(labels: np.ndarray, challenger: np.ndarray, champion: np.ndarray, p: RegistryParams,
              seed: int = 0, threshold: float = 0.5) -> tuple[PairedGain, bool]:
    """The gate's statistics on one pair of per-clip predictions: the paired-bootstrap gain and whether it
    passes (the lower end of its 1 - `alpha` interval above `min_gain`: one-sided at alpha / 2, docs/registry.md
    #the-gate says why half)."""
    gain = paired_bootstrap(labels, challenger, champion, p.primary_metric.removeprefix("test_"),
                            p.bootstrap_samples, 1.0 - p.alpha, seed=seed, threshold=threshold)
    return gain, gain.low > p.min_gain


def gain_check(settings: Settings, name: str, challenger: str, champion: str, dataset_version: str
               ) -> tuple[dict[str, Any], dict[str, Any]]:
    p = settings.registry
    ours, _ = version_predictions(settings, name, challenger, dataset_version)
    theirs, rescored = version_predictions(settings, name, champion, dataset_version)
    if ours.classes != theirs.classes:
        raise ValueError(f"{name} v{challenger} predicts {ours.classes} but v{champion} predicts {theirs.classes}: "
                         "they cannot be compared")
    shared = [c for c in ours.clip_ids if c in set(theirs.clip_ids)]
    ours, theirs = ours.subset(shared), theirs.subset(shared)
    threshold = models.serving_spec(f"models:/{name}/{challenger}").threshold
    gain, passed = gain_test(ours.labels, ours.probs, theirs.probs, p, seed=settings.seed, threshold=threshold)
    detail = (f"{gain.metric} {gain.challenger:.4f} vs champion v{champion} {gain.champion:.4f} on the same "
              f"{gain.clips} test clips{' (champion re-scored on this data)' if rescored else ''}: gain "
              f"{gain.gain:+.4f}, {gain.confidence:.0%} interval [{gain.low:+.4f}, {gain.high:+.4f}] "
              f"{'above' if passed else 'not above'} the margin {p.min_gain:+.4f} (alpha {p.alpha:g})")
    artifacts = {lineage.CHAMPION_PREDICTIONS_FILE: {
        "version": champion, "dataset_version": dataset_version, "clip_ids": theirs.clip_ids,
        "classes": theirs.classes, "probs": theirs.probs.round(6).tolist()}} if rescored else {}
    return {"passed": passed, "detail": detail, **gain.to_json(), "champion_rescored": rescored}, artifacts


def gate(settings: Settings, name: str, version: str | None = None) -> tuple[Decision, dict, dict]:
    """Decide on `version` (default: the `challenger`) against the current champion, changing nothing.
    Returns the decision, its metrics and the artifacts to keep with it."""
    tracking.setup(settings)
    p = settings.registry
    version = version or models.alias_version(name, models.CHALLENGER)
    if version is None:
        raise LookupError(f"{name} has no challenger to promote: register a run first (`mirops register RUN`)")
    mv = models.model_version(name, version)
    dataset_version = mv.tags.get(lineage.TAG_DATASET_VERSION, "unknown")
    champion = models.alias_version(name, models.CHAMPION)
    checks: dict[str, dict[str, Any]] = {}

    audit = mv.tags.get(lineage.TAG_AUDIT_SUCCESS, "not-run")
    checks["audit"] = {"passed": audit == "true" or not p.require_audit,
                       "detail": {"true": f"dataset {dataset_version} passed its audit "
                                          f"(run {mv.tags.get(lineage.TAG_AUDIT_RUN, '?')})",
                                  "not-run": f"dataset {dataset_version} was never audited (`mirops audit`)"}
                       .get(audit, f"the audit of dataset {dataset_version} failed")
                       + ("" if p.require_audit else "; not required (registry.require_audit: false)")}
    drift = latest_drift(settings, dataset_version)
    severity = drift.data.tags.get(lineage.TAG_DRIFT_SEVERITY, "unknown") if drift is not None else "none"
    checks["drift"] = {"passed": severity != "critical" or not p.block_on_critical_drift,
                       "detail": f"newest verdict on dataset {dataset_version}: {drift_line(drift)}",
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
        checks["gain"], artifacts = gain_check(settings, name, version, champion, dataset_version)
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


def emit(decision: Decision) -> None:
    colour = {"promote": "green", "rollback": "yellow", "reject": "red", "noop": "blue"}[decision.action]
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
    name = name or settings.registry.model_name
    fam = family_of_model(settings, name)
    tracking.setup(settings)
    for _ in range(attempts):
        decision, metrics, artifacts = gate(settings, name, version)
        if dry_run:
            decision.dry_run = True
            emit(decision)
            return decision
        with registry_lock(name, settings.registry.lock_url, settings.root):
            if models.alias_version(name, models.CHAMPION) != decision.champion_before:
                continue  # the champion moved while we scored: judge again against the new one
            promotion.apply(settings, decision, metrics, artifacts)
        emit(decision)
        atomic_write_json(settings.artifacts_dir / lineage.ARTIFACT_PROMOTE / f"{fam.name}.json", decision.to_json())
        dashboards.record_registry(settings, [name])  # the models dashboard (a warning if it fails)
        return decision
    raise RuntimeError(f"the champion of {name} kept moving during {attempts} attempts to decide on v{version}")


def rollback(settings: Settings, name: str | None = None, reason: str = "", dry_run: bool = False) -> Decision:
    """Point `champion` back at the previous champion (the one before the current, skipping deleted ones)."""
    name = name or settings.registry.model_name
    tracking.setup(settings)
    with registry_lock(name, settings.registry.lock_url, settings.root):
        current = models.alias_version(name, models.CHAMPION)
        previous = promotion.previous_champion(name)
        if current is None or previous is None:
            raise LookupError(f"{name} has no earlier champion to roll back to (champions so far: "
                              f"{promotion.champion_stack(name) or 'none'})")
        tags = models.version_tags(name, previous)
        why = reason or "requested by hand"
        decision = Decision("rollback", name, previous, current, previous,
                            f"champion v{current} → v{previous}: {why}",
                            {"previous": {"passed": True, "detail": f"v{previous} was champion before v{current} "
                                          f"(trained on dataset {tags.get(lineage.TAG_DATASET_VERSION, '?')})"}},
                            tags.get(lineage.TAG_DATASET_VERSION), dry_run=dry_run)
        if not dry_run:
            promotion.apply(settings, decision)
    emit(decision)
    if not dry_run:
        dashboards.record_registry(settings, [name])  # the models dashboard (a warning if it fails)
    return decision
