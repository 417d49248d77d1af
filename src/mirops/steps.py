"""The pipeline's steps, each one plain function over `Settings`.

The `mirops` CLI, the Prefect flow in flows/ and the DVC stages all call these; nothing is done twice.
Each step writes what it produced under artifacts/ (JSON a later step or a person can read) and
tags its MLflow run with the dataset version and the git commit.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rich.console import Console

from mirops.config import Settings
from mirops.data.audio import load_audio
from mirops.data.manifest import MANIFEST, read_manifest

console = Console(stderr=True)
AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".opus", ".mp3"}
EMBEDDING_PREFIX = "emb_"


# ---------------------------------------------------------------- data

def demo(settings: Settings, overwrite: bool = False):
    from mirops.data.demo import build_demo

    return build_demo(settings, overwrite=overwrite)


def version(settings: Settings) -> str:
    from mirops.data.version import version_data

    v = version_data(settings.root)
    console.print(f"[bold]dataset version[/] {v.version} ({v.files} files, {v.size_bytes / 1e6:.1f} MB)")
    return v.version


def current_version(settings: Settings) -> str:
    from mirops.data.version import read_version

    return read_version(settings.root).version


def load_waves(data_dir: Path, paths: list[str], settings: Settings) -> np.ndarray:
    """[N, samples] float32 at the backbone's rate, each clip cropped or padded to `train.clip_seconds`."""
    from mirops.features.logmel import SAMPLE_RATE

    return np.stack([load_audio(data_dir / p, SAMPLE_RATE, settings.train.clip_seconds) for p in paths])


# ---------------------------------------------------------------- audit

class AuditNotPassed(RuntimeError):
    """Training was asked for on a dataset version whose audit failed."""


@dataclass
class AuditSummary:
    success: bool
    run_id: str
    json_path: str
    html_path: str
    critical_failures: list[str]
    warnings: list[str]


def audit(settings: Settings, dataset_version: str | None = None, raise_on_failure: bool = True) -> AuditSummary:
    """Run the Great Expectations suites on the manifest; log them as an MLflow run; stop on critical failure."""
    import mlflow

    from mirops.audit.report import raise_for_critical, run_audit
    from mirops.registry import tracking

    dataset_version = dataset_version or current_version(settings)
    df, spec = read_manifest(settings.data_dir)
    result = run_audit(
        df, spec, settings.audit, settings.expectations_dir, settings.artifacts_dir / "audit", dataset_version
    )
    with tracking.run(settings, "audit", "audit", dataset_version) as active:
        failed = [c for c in result.checks if not c["success"]]
        mlflow.log_metrics({"checks": len(result.checks), "checks_failed": len(failed),
                            "critical_failures": len(result.critical_failures)})
        mlflow.set_tag(tracking.TAG_AUDIT_SUCCESS, str(result.success).lower())
        tracking.log_file(Path(result.json_path), "audit")
        tracking.log_file(Path(result.html_path), "audit")
    summary = AuditSummary(result.success, active.info.run_id, str(result.json_path), str(result.html_path),
                           list(result.critical_failures), list(result.warnings))
    colour = "green" if result.success else "red"
    console.print(f"[bold]audit[/] [{colour}]{'passed' if result.success else 'FAILED'}[/] "
                  f"({len(result.checks)} checks, {len(result.warnings)} warnings) → {result.html_path}")
    if raise_on_failure:
        raise_for_critical(result)
    return summary


# ---------------------------------------------------------------- features

def _batch_key(folder: Path, paths: list[str]) -> str:
    h = hashlib.sha256()
    for p in sorted(paths):
        stat = (folder / p).stat()
        h.update(f"{p}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def list_batch(folder: Path) -> pd.DataFrame:
    """A batch of audio: the folder's manifest if it has one, else every audio file under it."""
    folder = Path(folder)
    if (folder / MANIFEST).exists():
        return pd.read_parquet(folder / MANIFEST)[["clip_id", "path"]]
    paths = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
    if not paths:
        raise FileNotFoundError(f"{folder}: no audio files ({', '.join(sorted(AUDIO_SUFFIXES))}) and no manifest")
    return pd.DataFrame({"clip_id": paths, "path": paths})


def batch_features(settings: Settings, folder: Path) -> pd.DataFrame:
    """Per-clip audio descriptors and mean YAMNet embeddings, cached by the batch's content."""
    import torch
    from rich.progress import Progress

    from mirops.features.descriptors import descriptor_table
    from mirops.features.logmel import SAMPLE_RATE, YamnetLogMel
    from mirops.models.yamnet import YAMNet

    clips = list_batch(folder)
    cache = settings.artifacts_dir / "features" / f"{_batch_key(folder, list(clips['path']))}.parquet"
    if cache.exists():
        return pd.read_parquet(cache)
    waves = [load_audio(folder / p, SAMPLE_RATE) for p in clips["path"]]
    table = descriptor_table(zip(clips["clip_id"], waves, strict=True), SAMPLE_RATE)
    backbone, frontend = YAMNet.from_onnx().eval(), YamnetLogMel()
    embeddings = []
    with torch.no_grad(), Progress(console=console, transient=True) as bar:
        for wave in bar.track(waves, description=f"YAMNet embeddings of {folder.name}/"):
            embeddings.append(backbone.embed_logmel(frontend(torch.from_numpy(wave)[None]))[0].numpy())
    emb_cols = [f"{EMBEDDING_PREFIX}{i:04d}" for i in range(embeddings[0].shape[0])]
    table = pd.concat([table.reset_index(drop=True), pd.DataFrame(np.stack(embeddings), columns=emb_cols)], axis=1)
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp")
    table.to_parquet(tmp, index=False)
    tmp.replace(cache)
    return table


# ---------------------------------------------------------------- train / evaluate / register

def _split(df: pd.DataFrame, split: str, limit: int | None = None) -> pd.DataFrame:
    part = df[df["split"] == split]
    return part.head(limit) if limit else part


def train(settings: Settings, dataset_version: str | None = None, audit_run_id: str | None = None) -> str:
    """Train the reprogrammed classifier; returns the MLflow run id (also in artifacts/train/run.json)."""
    import mlflow
    import torch
    from rich.progress import Progress

    from mirops import plots
    from mirops.data.manifest import label_matrix
    from mirops.features.logmel import SAMPLE_RATE
    from mirops.models.reprogram import ReprogrammedClassifier
    from mirops.models.yamnet import YAMNet
    from mirops.registry import models, tracking
    from mirops.train.reprogram import SpecSet, compute_spectrograms, fit, resolve_device

    dataset_version = dataset_version or current_version(settings)
    audit_tags = _audit_outcome(settings, dataset_version, audit_run_id)
    p = settings.train
    df, spec = read_manifest(settings.data_dir)
    parts = {s: _split(df, s, p.max_clips) for s in ("train", "valid")}
    torch.manual_seed(settings.seed)
    device = resolve_device(p.device)
    model = ReprogrammedClassifier(YAMNet.from_onnx(), spec.classes, transform=p.transform, final_relu=p.final_relu)
    model.to(device)
    sets = {
        s: SpecSet(compute_spectrograms(model, load_waves(settings.data_dir, list(part["path"]), settings)),
                   torch.from_numpy(label_matrix(part, spec)))
        for s, part in parts.items()
    }
    counts = model.count_parameters()
    with tracking.run(settings, f"reprogram-{p.backbone}-{p.transform}", "train", dataset_version) as active:
        mlflow.log_params({f"train.{k}": v for k, v in p.model_dump().items()} | {"seed": settings.seed,
                          "classes": ",".join(spec.classes), "train_clips": len(parts["train"]),
                          "valid_clips": len(parts["valid"])})
        mlflow.log_metrics({"params_trainable": counts["trainable"], "params_total": counts["total"]})
        mlflow.set_tags(audit_tags)
        with Progress(console=console, transient=True) as bar:
            task = bar.add_task("training", total=p.epochs)

            def on_epoch(row: dict[str, float]) -> None:
                mlflow.log_metrics({k: v for k, v in row.items() if k != "epoch" and np.isfinite(v)},
                                   step=int(row["epoch"]))
                bar.update(task, advance=1, description=f"epoch {row['epoch']} valid mAP {row['valid_mAP']:.3f}")

            result = fit(model, sets["train"], sets["valid"], p, settings.seed, on_epoch=on_epoch)
        mlflow.log_metrics({"best_epoch": result.best_epoch} | {f"best_valid_{k}": v
                           for k, v in result.best_valid.items() if np.isfinite(v)})
        tracking.log_figure(plots.training_curves(result.history), "plots/training_curves.png")
        tracking.log_json(result.history, "history.json")
        mlflow.set_tag("mirops.device", str(device))
        model_uri = models.log_model(model.cpu(), len(spec.classes), SAMPLE_RATE)  # logged from the CPU
        run_id = active.info.run_id
    tracking.write_json(settings.artifacts_dir / "train" / "run.json",
                        {"run_id": run_id, "model_uri": model_uri, "dataset_version": dataset_version})
    console.print(f"[bold]train[/] run {run_id}: best epoch {result.best_epoch}, "
                  f"valid mAP {result.best_valid.get('mAP', float('nan')):.3f}, "
                  f"{counts['trainable']:,} trainable of {counts['total']:,} parameters")
    return run_id


def _audit_outcome(settings: Settings, dataset_version: str, audit_run_id: str | None) -> dict[str, str]:
    """Tags that tie a training run to its audit; refuses to train on data whose audit failed."""
    from mlflow import MlflowClient

    from mirops.registry import tracking

    tracking.setup(settings)
    audit_run = (MlflowClient().get_run(audit_run_id) if audit_run_id
                 else tracking.latest_run(settings, "audit", dataset_version))
    if audit_run is None:
        console.print(f"[yellow]warning[/]: dataset version {dataset_version} has not been audited (`mirops audit`)")
        return {tracking.TAG_AUDIT_SUCCESS: "not-run"}
    success = audit_run.data.tags.get(tracking.TAG_AUDIT_SUCCESS, "false")
    if success != "true":
        raise AuditNotPassed(f"the audit of dataset version {dataset_version} failed "
                             f"(MLflow run {audit_run.info.run_id}); fix the data or the suites before training")
    checks = audit_run.data.metrics
    return {tracking.TAG_AUDIT_SUCCESS: "true", tracking.TAG_AUDIT_RUN: audit_run.info.run_id,
            "mirops.audit_summary": f"{int(checks.get('checks', 0))} checks, "
                                    f"{int(checks.get('checks_failed', 0))} failed (warnings only)"}


def last_run_id(settings: Settings) -> str:
    path = settings.artifacts_dir / "train" / "run.json"
    if not path.exists():
        raise FileNotFoundError(f"{path}: no training run recorded; run `mirops train reprogram` or pass a run id")
    return json.loads(path.read_text())["run_id"]


def score_on_test(settings: Settings, model) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """Evaluate `model` (waveform → logits) on the test split of the current data/."""
    import torch

    from mirops.data.manifest import label_matrix
    from mirops.train.metrics import evaluate_probs
    from mirops.train.reprogram import compute_spectrograms, predict_probs

    df, spec = read_manifest(settings.data_dir)
    test = _split(df, "test")
    waves = load_waves(settings.data_dir, list(test["path"]), settings)
    if list(getattr(model, "classes", spec.classes)) != spec.classes:
        raise ValueError(f"model classes {model.classes} differ from the dataset's {spec.classes}")
    with torch.no_grad():
        probs = predict_probs(model, compute_spectrograms(model, waves))
    return evaluate_probs(probs, label_matrix(test, spec), spec.classes, settings.train.threshold)


def _require_data_of(settings: Settings, run_id: str, trained_on: str | None) -> str:
    """Test metrics are compared "on the same test data": never score a run on another dataset version."""
    here = current_version(settings)
    if trained_on != here:
        raise ValueError(f"run {run_id} was trained on dataset version {trained_on}, but data/ is {here}; "
                         f"restore it (`dvc checkout` of that data.dvc) or train on this version")
    return here


def evaluate(settings: Settings, run_id: str | None = None) -> dict[str, float]:
    """Test-split mAP, ROC-AUC and F1 (both conventions), logged on the training run."""
    import mlflow
    from mlflow import MlflowClient

    from mirops import plots
    from mirops.registry import models, tracking

    run_id = run_id or last_run_id(settings)
    tracking.setup(settings)
    here = _require_data_of(settings, run_id,
                            MlflowClient().get_run(run_id).data.tags.get(tracking.TAG_DATASET_VERSION))
    model = models.load_model(models.model_uri_of_run(run_id))
    summary, per_class = score_on_test(settings, model)
    metrics = {f"test_{k}": v for k, v in summary.items()}
    with tracking.resume(settings, run_id):
        mlflow.log_metrics({k: v for k, v in metrics.items() if np.isfinite(v)})
        tracking.log_json(per_class, "test_per_class.json")
        tracking.log_figure(plots.per_class_bars(per_class, title="test split, per class"), "plots/test_per_class.png")
    tracking.write_json(settings.artifacts_dir / "evaluate" / "metrics.json",
                        {"run_id": run_id, "dataset_version": here, **metrics})
    console.print("[bold]evaluate[/] " + ", ".join(f"{k} {v:.3f}" for k, v in metrics.items()))
    return metrics


def register(settings: Settings, run_id: str | None = None):
    """Register the run's model as challenger; it becomes champion if there is none or it beats it."""
    from mlflow import MlflowClient

    from mirops.registry import models, tracking

    run_id = run_id or last_run_id(settings)
    tracking.setup(settings)
    name, metric = settings.registry.model_name, settings.registry.primary_metric
    run = MlflowClient().get_run(run_id)
    if metric not in run.data.metrics:
        raise LookupError(f"run {run_id} has no {metric}: run `mirops evaluate {run_id}` first")
    dataset_version = run.data.tags.get(tracking.TAG_DATASET_VERSION, "unknown")
    champion_score = None
    champion = models.alias_version(name, models.CHAMPION)
    if champion is not None:
        tags = models.version_tags(name, champion)
        if tags.get(tracking.TAG_DATASET_VERSION) == dataset_version and metric in tags:
            champion_score = float(tags[metric])
        else:  # tested on another dataset version: re-test it on this one before comparing
            _require_data_of(settings, run_id, dataset_version)
            summary, _ = score_on_test(settings, models.load_model(f"models:/{name}@{models.CHAMPION}"))
            champion_score = summary[metric.removeprefix("test_")]
    reg = models.register(
        name, run_id, metric, float(run.data.metrics[metric]), dataset_version, champion_score,
        tags={tracking.TAG_GIT_COMMIT: run.data.tags.get(tracking.TAG_GIT_COMMIT, "unknown")},
    )
    tracking.write_json(settings.artifacts_dir / "register" / "registration.json",
                        asdict(reg) | {"dataset_version": dataset_version, "run_id": run_id})
    console.print(f"[bold]register[/] {name} v{reg.version} → {', '.join(reg.aliases)} ({reg.decision})")
    return reg


# ---------------------------------------------------------------- monitor

def monitor(
    settings: Settings, current: Path | None = None, dataset_version: str | None = None, run_id: str | None = None
):
    """Evidently drift report: the training audio (reference) vs a batch of incoming audio (current).

    With `run_id` (the pipeline's training run) the verdict is also recorded on that run.
    """
    import mlflow

    from mirops.features.descriptors import DESCRIPTOR_COLUMNS
    from mirops.monitor.drift import drift_report
    from mirops.registry import models, tracking

    dataset_version = dataset_version or current_version(settings)
    current = Path(current or settings.production_dir)
    started = time.perf_counter()
    df, _ = read_manifest(settings.data_dir)
    reference = batch_features(settings, settings.data_dir)
    reference = reference[reference["clip_id"].isin(set(df.loc[df["split"] == "train", "clip_id"]))]
    batch = batch_features(settings, current)
    emb_cols = [c for c in reference.columns if c.startswith(EMBEDDING_PREFIX)]
    tracking.setup(settings)
    champion = models.alias_version(settings.registry.model_name, models.CHAMPION)
    tags = {"dataset_version": dataset_version, "current": str(current), "champion_version": str(champion)}
    out_dir = settings.dashboards_dir / "reports" / time.strftime("%Y%m%d-%H%M%S")
    result = drift_report(reference, batch, columns=list(DESCRIPTOR_COLUMNS), embedding_columns=emb_cols,
                          out_dir=out_dir, threshold=settings.monitor.drift_share_threshold,
                          workspace_dir=settings.dashboards_dir / "workspace", project="drift", tags=tags)
    with tracking.run(settings, "monitor", "monitor", dataset_version) as active:
        mlflow.set_tags({"mirops.drift_detected": str(result.drift_detected).lower(),
                         "mirops.champion_version": str(champion), "mirops.current": str(current)})
        mlflow.log_metrics({"drift_share": result.drift_share, "drifted_columns": len(result.drifted_columns),
                            "monitor_seconds": time.perf_counter() - started}
                           | ({"embedding_drift_score": result.embedding_drift_score}
                              if result.embedding_drift_score is not None else {}))
        tracking.log_file(Path(result.html_path), "drift")
        tracking.log_file(Path(result.json_path), "drift")
    if run_id:
        with tracking.resume(settings, run_id):
            mlflow.set_tags({"mirops.drift_detected": str(result.drift_detected).lower(),
                             "mirops.drift_run_id": active.info.run_id})
            mlflow.log_metric("production_drift_share", result.drift_share)
    payload: dict[str, Any] = result.to_json() | {"run_id": active.info.run_id}
    tracking.write_json(settings.artifacts_dir / "monitor" / "verdict.json", payload)
    verdict = "[red]DRIFT[/]" if result.drift_detected else "[green]no drift[/]"
    embedding = ("" if result.embedding_drift_score is None else
                 f", embedding drift AUC {result.embedding_drift_score:.2f}"
                 f"{' (drifted)' if result.embedding_drift_detected else ''}")
    console.print(f"[bold]monitor[/] {verdict}: descriptor drift share {result.drift_share:.2f} "
                  f"({len(result.drifted_columns)}/{result.n_columns} columns){embedding} → {result.html_path}")
    return result
