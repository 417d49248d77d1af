"""Register: an evaluated training run's model becomes a new version (alias `challenger`) with its lineage
as tags and a model card. The champion does not move here: that is the promotion gate's decision.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from mirops import lineage
from mirops.atomic import atomic_write_json
from mirops.config import Settings
from mirops.families import family
from mirops.pipeline import dashboards
from mirops.pipeline.evaluate import last_run_id
from mirops.progress import console
from mirops.registry import card, models, tracking

# Recipe parameters the model card names (the rest are on the training run).
CARD_DETAILS = ("reprogram.backbone", "reprogram.transform", "reprogram.mapping", "east.student", "east.mode",
                "east.teachers")


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
    return tracking.latest_run(settings, lineage.STEP_MONITOR, dataset_version)


def drift_line(run) -> str:
    """One line on a drift verdict run, for the model card and the gate."""
    if run is None:
        return "no drift report on this data yet"
    tags, metrics = run.data.tags, run.data.metrics
    auc = metrics.get("embedding_drift_score")
    embedding = f", embedding AUC {auc:.2f}" if auc is not None else ""
    return (f"{tags.get(lineage.TAG_DRIFT_SEVERITY, 'unknown')} (p = {metrics.get('drift_p_value', float('nan')):.4f}, "
            f"drifted column share {metrics.get('drift_share', float('nan')):.2f}{embedding}; run {run.info.run_id})")


def register(settings: Settings, run_id: str | None = None, family_name: str = "reprogram") -> Registration:
    """Register the evaluated run's model (default: the family's last run) as a new version of its family's
    registered model, alias `challenger`, with lineage tags and a model card."""
    run_id = run_id or last_run_id(settings, family_name)
    tracking.setup(settings)
    run = tracking.get_run(run_id)
    tags, metrics, params = run.data.tags, run.data.metrics, run.data.params
    fam = family(tags.get(lineage.TAG_FAMILY, family_name))
    name, metric = fam.model_name(settings), settings.registry.primary_metric
    if metric not in metrics:
        raise LookupError(f"run {run_id} has no {metric}: run `mirops evaluate {run_id}` first")
    dataset_version = tags.get(lineage.TAG_DATASET_VERSION, "unknown")
    drift = latest_drift(settings, dataset_version)
    lineage_tags = {
        lineage.TAG_DATASET_VERSION: dataset_version,
        lineage.TAG_GIT_COMMIT: tags.get(lineage.TAG_GIT_COMMIT, "unknown"),
        lineage.TAG_AUDIT_SUCCESS: tags.get(lineage.TAG_AUDIT_SUCCESS, "not-run"),
        lineage.TAG_AUDIT_RUN: tags.get(lineage.TAG_AUDIT_RUN, "none"),
        lineage.TAG_DRIFT_RUN: drift.info.run_id if drift is not None else "none",
        lineage.TAG_DRIFT_SEVERITY: (drift.data.tags.get(lineage.TAG_DRIFT_SEVERITY, "unknown")
                                     if drift is not None else "none"),
        lineage.TAG_TRAINING_RUN: run_id,
        lineage.TAG_FAMILY: fam.name,
        metric: f"{metrics[metric]:.6f}",
    }
    per_class = tracking.load_json_artifact(run_id, lineage.PER_CLASS_FILE) or {}  # the card says when absent
    audit = tags.get(lineage.TAG_AUDIT_SUCCESS, "not-run")
    details = {k.split(".", 1)[1]: v for k, v in params.items() if k in CARD_DETAILS}

    def render(version: str) -> str:
        return card.render(card.CardFacts(
            name=name, version=version, family=fam.name, dataset_version=dataset_version, training_run_id=run_id,
            git_commit=lineage_tags[lineage.TAG_GIT_COMMIT],
            audit={"true": "passed", "false": "FAILED", "not-run": "not run"}.get(audit, audit)
            + (f": {tags[lineage.TAG_AUDIT_SUMMARY]}" if lineage.TAG_AUDIT_SUMMARY in tags else ""),
            audit_run_id=lineage_tags[lineage.TAG_AUDIT_RUN], drift=drift_line(drift),
            metrics={k: v for k, v in metrics.items() if k.startswith("test_")}, per_class=per_class,
            params_trainable=int(metrics["params_trainable"]) if "params_trainable" in metrics else None,
            params_total=int(metrics["params_total"]) if "params_total" in metrics else None,
            classes=params.get("classes", "").split(",") if params.get("classes") else [],
            details=details))

    version = models.register_version(name, run_id, lineage_tags, render)
    tracking.log_text_to(run_id, render(version), lineage.MODEL_CARD_FILE)
    aliases = list(models.model_version(name, version).aliases)
    reg = Registration(name, version, aliases, run_id, dataset_version, lineage_tags)
    atomic_write_json(settings.artifacts_dir / lineage.ARTIFACT_REGISTER / f"{fam.name}.json", asdict(reg))
    dashboards.record_registry(settings, [name])  # the models dashboard (a warning if it fails)
    console.print(f"[bold]register[/] {name} v{version} → {', '.join(aliases)} "
                  f"(dataset {dataset_version}, audit {lineage_tags[lineage.TAG_AUDIT_SUCCESS]})")
    return reg
