"""Train: the training-run lifecycle, written once for every model family (`mirops.families`).

One model: audit gate → sets of the dataset version → checkpoints → (re)open the MLflow run → parameters →
fit with per-epoch metrics and progress → log the model with its serving spec → artifacts/train/<run file>.
A grid: the same under one parent run, a child run per variant (valid-selected, then scored once on test),
finished variants skipped on `--resume`, a summary table and plot. `resume` continues the interrupted run
of the same settings and data from its last epoch checkpoint, in the same MLflow run.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import numpy as np

from mirops import lineage, plots
from mirops.atomic import atomic_write_json, atomic_write_text
from mirops.config import Settings
from mirops.data.cache import config_digest
from mirops.families import family
from mirops.families.base import ModelFamily, Trained
from mirops.pipeline import dvc_outputs
from mirops.pipeline.audit import require_passed
from mirops.pipeline.dataset_inputs import log_splits, split_table
from mirops.pipeline.version import open_dataset
from mirops.progress import console, progress, warn
from mirops.registry import models, tracking
from mirops.train.checkpoint import Checkpoints
from mirops.train.grid import summary_markdown
from mirops.train.loop import resolve_device


def checkpoints_for(settings: Settings, fam: ModelFamily, name: str, dataset_version: str,
                    **extra: Any) -> Checkpoints:
    """The checkpoint folder of a training configuration: same settings and data, same folder (so --resume
    finds it), anything else a new one."""
    key = config_digest(fam.checkpoint_config(settings) | {"data": dataset_version, **extra})
    return Checkpoints(settings.artifacts_dir / lineage.ARTIFACT_TRAIN / "checkpoints" / f"{name}-{key}", key)


def report_checkpointed_epochs(run, checkpoints: Checkpoints) -> None:
    """Per-epoch metrics of the epochs a resumed run will skip, where MLflow lacks them: a process killed after an
    epoch's checkpoint but before its metrics were logged would otherwise leave a hole in the curves."""
    saved = checkpoints.latest()
    if saved is None:
        return
    logged = run.metric_steps("valid_mAP")
    for row in saved["history"]:
        if int(row["epoch"]) not in logged:
            run.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=int(row["epoch"]))


def fit_logged(run, fit: Callable[[Callable], Trained], epochs: int, checkpoints: Checkpoints, what: str) -> Trained:
    """Run `fit(on_epoch)` with progress and per-epoch metrics on `run`, then log the best epoch, the training
    curves and the history."""
    report_checkpointed_epochs(run, checkpoints)
    with progress(f"training {what}", epochs) as advance:
        def on_epoch(row: dict[str, float]) -> None:
            run.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=int(row["epoch"]))
            shown = (f"valid mAP {row['valid_mAP']:.3f}" if "valid_mAP" in row
                     else f"train loss {row.get('train_loss', float('nan')):.4f}")  # no valid split (fold_valid)
            advance(description=f"{what}: epoch {row['epoch']} {shown}")

        trained = fit(on_epoch)
    result = trained.result
    if result.resumed_from:
        console.print(f"{what}: resumed after epoch {result.resumed_from} from {checkpoints.folder}")
    if result.stopped_early:
        console.print(f"{what}: stopped early after epoch {result.history[-1]['epoch']} (valid mAP stopped improving)")
    if result.history:
        run.log_metrics({"best_epoch": result.best_epoch, "stopped_early": int(result.stopped_early)}
                        | {f"best_valid_{k}": v for k, v in result.best_valid.items()})
        if any("train_loss" in row for row in result.history):
            run.log_figure(plots.training_curves(result.history), "plots/training_curves.png")
        run.log_json(result.history, lineage.HISTORY_FILE)
    return trained


def metric_safe(name: str) -> str:
    """A variant name as part of an MLflow metric key, which allows only letters, digits, _ - . / and spaces
    ("kd+east-yamnet" -> "kd_plus_east-yamnet")."""
    return re.sub(r"[^\w\-./ ]", "_", name.replace("+", "_plus_"))


def run_file(settings: Settings, fam: ModelFamily):
    return settings.artifacts_dir / lineage.ARTIFACT_TRAIN / fam.run_file


def train(settings: Settings, family_name: str = "reprogram", dataset_version: str | None = None,
          audit_run_id: str | None = None, resume: bool = False) -> str:
    """Train the model of `family_name` its settings section describes, on dataset version `dataset_version`
    (default: what data/ holds); returns the MLflow run id (also in artifacts/train/<family run file>)."""
    fam = family(family_name)
    name = fam.run_name(settings)
    with open_dataset(settings, dataset_version) as ds:
        audit_tags = require_passed(settings, ds.id, audit_run_id)
        checkpoints = checkpoints_for(settings, fam, name, ds.id, classes=ds.classes)
        meta = checkpoints.begin(resume)
        if meta.get("finished"):
            console.print(f"[bold]train[/] {name}: this configuration finished in run {meta['run_id']}; "
                          "nothing to resume")
            return meta["run_id"]
        prepared = fam.prepare(settings, ds)
    device = resolve_device(fam.params(settings).device)
    reopen = checkpoints.run_to_reopen()
    with tracking.run(settings, name, lineage.STEP_TRAIN, ds.id, run_id=reopen, system_metrics=True) as run:
        if reopen is None:
            run.log_params(fam.logged_params(settings) | {"classes": ",".join(prepared.classes)}
                           | {f"{s}_clips": len(rows) for s, rows in prepared.parts.items()})
            run.set_tags(audit_tags | fam.run_tags(settings) | {lineage.TAG_FAMILY: fam.name,
                                                                 lineage.TAG_DEVICE: str(device),
                                                                 lineage.TAG_CHECKPOINTS: str(checkpoints.folder)})
            log_splits(run, settings, ds.id, {s: split_table(ds, rows) for s, rows in prepared.parts.items()})
        checkpoints.write_meta(run_id=run.id)
        trained = fit_logged(run, lambda on_epoch: fam.train(settings, prepared, checkpoints, resume, on_epoch, run),
                             fam.epochs(settings), checkpoints, name)
        model = trained.model
        trainable, total = fam.count_parameters(model)
        run.log_metrics({"params_trainable": trainable, "params_total": total, "clips_skipped": prepared.skipped})
        model_uri = models.log_model(model.cpu(), fam.serving(settings, prepared, model), ds.id)  # from the CPU
    checkpoints.write_meta(finished=True)
    atomic_write_json(run_file(settings, fam), {"run_id": run.id, "model_uri": model_uri, "dataset_version": ds.id,
                                                "family": fam.name})
    result = trained.result
    dvc_outputs.write_training(settings, fam.name, result.history, {  # dvc.yaml's metrics and plots of train@F
        "best_epoch": result.best_epoch, "epochs": len(result.history), "stopped_early": result.stopped_early,
        **{f"best_valid_{k}": v for k, v in result.best_valid.items()},
        "params_trainable": trainable, "params_total": total})
    kept = (f"best epoch {result.best_epoch}, valid mAP {result.best_valid['mAP']:.3f}" if "mAP" in result.best_valid
            else f"epoch {result.best_epoch} kept (no valid clips to choose with)")
    console.print(f"[bold]train[/] run {run.id}: {kept}, {trainable:,} trainable of {total:,} parameters")
    return run.id


def train_grid(settings: Settings, family_name: str = "reprogram", grid: str = "paper",
               dataset_version: str | None = None, audit_run_id: str | None = None,
               resume: bool = False) -> dict[str, Any]:
    """Train every variant of `grid` on the same cached sets: one MLflow parent run, a child per variant,
    a summary table and plot. `resume` skips the variants that finished and resumes the interrupted one. A variant
    the family cannot build for these data (`grid_skip_reason`) is skipped with its reason: a warning, a line of
    the table, `skipped` in the summary, a `mirops.skipped.<variant>` tag on the parent run."""
    fam = family(family_name)
    variants = fam.grid_variants(settings, grid)
    name = fam.grid_name(settings, grid)
    with open_dataset(settings, dataset_version) as ds:
        audit_tags = require_passed(settings, ds.id, audit_run_id)
        prepared = fam.prepare(settings, ds, grid=grid)
    # Variants that cannot be built for these data (e.g. the fixed AudioSet map of classes it has no labels for)
    # are skipped, saying why, and the others still train.
    skipped = {v.name: reason for v in variants if (reason := fam.grid_skip_reason(settings, prepared, v))}
    for variant_name, reason in skipped.items():
        warn(f"{name}: variant {variant_name} skipped: {reason}")
    device = resolve_device(fam.params(settings).device)
    parent_ckpt = checkpoints_for(settings, fam, name, ds.id, classes=ds.classes, grid=grid)
    reopen = parent_ckpt.begin(resume).get("run_id")
    rows, per_class = [], {}
    grid_tags = {lineage.TAG_GRID: grid, lineage.TAG_FAMILY: fam.name}
    with tracking.run(settings, name, lineage.STEP_TRAIN_GRID, ds.id, run_id=reopen) as parent:
        if reopen is None:
            parent.log_params(fam.logged_params(settings) | {"grid": grid, "classes": ",".join(prepared.classes),
                                                             "variants": ",".join(v.name for v in variants)}
                              | ({"variants_skipped": ",".join(skipped)} if skipped else {}))
            parent.log_metrics({"clips_skipped": prepared.skipped}
                               | {f"{s}_clips": len(rows) for s, rows in prepared.parts.items()})
            parent.set_tags(audit_tags | grid_tags | {lineage.TAG_DEVICE: str(device)})
        if skipped:
            parent.set_tags({f"{lineage.TAG_SKIPPED}.{metric_safe(v)}": reason for v, reason in skipped.items()})
        parent_ckpt.write_meta(run_id=parent.id)
        for variant in variants:
            if variant.name in skipped:
                rows.append(fam.skipped_row(settings, variant, skipped[variant.name]))
                continue
            checkpoints = checkpoints_for(settings, fam, f"{name}-{variant.name}", ds.id, classes=ds.classes,
                                          variant=variant.name)
            done = checkpoints.begin(resume)
            if done.get("finished"):
                console.print(f"{variant.name}: finished in an earlier run ({done['run_id']}), not retrained")
                rows.append(done["row"])
                per_class[variant.name] = done.get("per_class", {})
                continue
            child_id = checkpoints.run_to_reopen()
            with tracking.run(settings, variant.name, lineage.STEP_TRAIN, ds.id, run_id=child_id,
                              nested=True) as child:
                if child_id is None:
                    child.log_params(fam.logged_params(settings) | {"variant": variant.name} | variant.params)
                    child.set_tags(grid_tags | variant.tags | {lineage.TAG_VARIANT: variant.name,
                                                               lineage.TAG_PARENT_RUN: parent.id})
                checkpoints.write_meta(run_id=child.id)
                outcome = None

                def fit(on_epoch, variant=variant, checkpoints=checkpoints, child=child):
                    nonlocal outcome
                    trained, outcome = fam.train_variant(settings, prepared, variant, checkpoints, resume, on_epoch,
                                                         child)
                    return trained

                fit_logged(child, fit, fam.epochs(settings), checkpoints, variant.name)
                child.log_metrics(outcome.metrics)
                child.log_json(outcome.per_class, lineage.PER_CLASS_FILE)
                if outcome.state is not None:
                    child.log_torch_state(outcome.state, outcome.state_file)
            checkpoints.write_meta(finished=True, row=outcome.row, per_class=outcome.per_class)
            rows.append(outcome.row)
            per_class[variant.name] = outcome.per_class
        table, stem, figures = fam.grid_summary(settings, grid, rows, per_class)
        markdown = summary_markdown(table)
        parent.log_text(markdown, f"{stem}.md")
        parent.log_text(table.to_csv(index=False), f"{stem}.csv")
        for row in rows:  # per variant on the parent too, to compare them in the MLflow UI
            prefix = metric_safe(row["variant"])
            parent.log_metrics({f"{prefix}.{k}": row[k] for k in ("test_mAP", "test_F1_openmic", "test_ROC_AUC")
                                if k in row and np.isfinite(row[k])})
        for artifact_file, figure in figures.items():
            parent.log_figure(figure, artifact_file)
    out = settings.artifacts_dir / lineage.ARTIFACT_TRAIN / f"{fam.grid_prefix}-{grid}.md"
    atomic_write_text(out, markdown)
    console.print(markdown, soft_wrap=True, highlight=False)
    summary = {"run_id": parent.id, "grid": grid, "family": fam.name, "dataset_version": ds.id, "summary": str(out),
               "rows": json_records(table), "skipped": skipped}
    atomic_write_json(out.with_suffix(".json"), summary)
    return summary


def json_records(table) -> list[dict]:
    """The table's rows with empty cells as null, so `--json` output is strict JSON (jq rejects NaN)."""
    return [{k: None if isinstance(v, float) and np.isnan(v) else v for k, v in row.items()}
            for row in table.astype(object).to_dict(orient="records")]
