"""Monitor: an Evidently drift report and verdict for a batch of incoming audio against a reference.

Per clip: audio descriptors and the champion's class probabilities are compared column by column, the YAMNet
embeddings together (a domain classifier split by recording). The verdict is an MLflow "monitor" run tagged
with the reference's dataset version (the promotion gate reads the newest verdict on a version) and the
champion's version, and artifacts/monitor/verdict.json for DVC.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mirops import lineage
from mirops.atomic import atomic_write_json
from mirops.config import Settings
from mirops.data.batch import list_batch
from mirops.data.cache import ArrayCache
from mirops.features.dataset_clips import DatasetClips, warn_skipped
from mirops.features.descriptors import DESCRIPTOR_COLUMNS
from mirops.features.file_windows import window_descriptors, windowed
from mirops.models.clip_embedding import EMBEDDING_PREFIX, YAMNET_KEY, embedding_columns, yamnet_embedding
from mirops.monitor.drift import DriftVerdict, drift_report, report_dir, verdict
from mirops.monitor.predictions import Scorer, predicted_distribution
from mirops.monitor.reference import open_reference
from mirops.progress import console, progress, warn
from mirops.registry import models, tracking


def batch_features(settings: Settings, folder: Path, clips: pd.DataFrame | None = None,
                   scorer: Scorer | None = None, seconds: float | None = None) -> tuple[pd.DataFrame, dict]:
    """One row per window of each file of a folder (`clips`: clip_id, path and optionally group rows, default
    `list_batch(folder)`): the window's audio descriptors, mean YAMNet embedding and, with `scorer`, a model's
    class probabilities (`pred_<class>`), each cached by content; and the files skipped as unusable
    ({path: AudioError}). Windows are `seconds` long (default: the scorer's clip length, else the reprogramming
    clip length), at most `monitor.windows_per_file` per file (spread over it). `group` is the file's group in
    the manifest, else its path: the unit the drift test compares (`monitor.decision`)."""
    clips = list_batch(folder) if clips is None else clips
    seconds = seconds or (scorer.serving.clip_seconds if scorer is not None else settings.reprogram.clip_seconds)
    limit = settings.monitor.windows_per_file
    audio = DatasetClips(Path(folder), ArrayCache(settings.cache_dir), settings.ingest.crop)
    loader = audio.loader(None)
    what = "descriptors, embeddings and predictions" if scorer is not None else "descriptors and embeddings"
    with progress(f"{what} of {Path(folder).name}/ ({seconds:g} s windows)",
                  (3 if scorer is not None else 2) * len(clips)) as advance:
        desc = window_descriptors(loader, list(clips["path"]), seconds, limit, progress=advance)
        emb = windowed(loader, desc.paths, "embeddings", {"model": YAMNET_KEY}, yamnet_embedding, seconds, limit,
                       progress=advance)
        parts, done = [desc, emb], emb
        if scorer is not None:
            done = windowed(audio.loader(None, scorer.sample_rate), emb.paths, "class-scores", scorer.cache_config(),
                            scorer, seconds, limit, progress=advance)
            parts.append(done)
    failed: dict = {}
    for part in parts:
        failed |= part.failed
    warn_skipped(failed, f"{folder}")
    by_path = dict(zip(clips["path"], clips["clip_id"], strict=True))
    group_of = dict(zip(clips["path"], clips["group"] if "group" in clips.columns else clips["path"], strict=True))
    kept = done.paths
    arrays = [dict(zip(part.paths, part.arrays, strict=True)) for part in parts]
    # Windows per file: the same positions for every feature, but a rate's rounding may add one; keep the common.
    count = {p: min(len(a[p]) for a in arrays) for p in kept}

    def block(rows: dict, columns: list[str]) -> pd.DataFrame:
        values = np.concatenate([rows[p][: count[p]] for p in kept]) if kept else np.empty((0, len(columns)))
        return pd.DataFrame(values, columns=columns)

    blocks = [pd.DataFrame({"clip_id": [by_path[p] for p in kept for _ in range(count[p])],
                            "group": [str(group_of[p]) for p in kept for _ in range(count[p])],
                            "window": [k for p in kept for k in range(count[p])]}),
              block(arrays[0], list(DESCRIPTOR_COLUMNS)),
              block(arrays[1], embedding_columns(emb.arrays[0].shape[1]) if emb.arrays else [])]
    if scorer is not None:
        blocks.append(block(arrays[2], scorer.columns))
    return pd.concat(blocks, axis=1), failed


def champion_scorer(settings: Settings) -> tuple[models.ModelRef | None, Scorer | None]:
    """The champion (None when there is none yet) and, when it loads, a scorer of its registered version
    (not the alias: it may move while the monitor runs). A champion that does not load is a warning: drift
    of the audio is still worth reporting."""
    champion = models.champion(settings.registry.model_name)
    if champion is None:
        return None, None
    try:
        model, serving = models.load_served(champion.version_uri)
    except Exception as exc:  # noqa: BLE001 - see the docstring
        warn(f"the champion {champion.version_uri} could not be loaded ({exc}); comparing without its predictions")
        return champion, None
    return champion, Scorer(champion.name, champion.version, champion.run_id, model, serving)


def monitor(
    settings: Settings, current: Path | None = None, dataset_version: str | None = None, run_id: str | None = None,
    reference: str | Path | None = None,
) -> DriftVerdict:
    """Drift of a batch of incoming audio (`current`, default production/) against a reference.

    The reference is `reference` (a dataset version id or prefix, or a folder of audio), else `dataset_version`
    (the pipeline's: the version it is about to train on), else the champion's dataset version (its registry
    tag), else the current version of data/; of a dataset version, its train split. With `run_id` (the
    pipeline's training run) the verdict is also recorded on that run.
    """
    if reference is not None and dataset_version is not None:
        raise ValueError("give the reference either as a dataset version or as `reference`, not both")
    current = Path(current or settings.production_dir)
    batch_clips = list_batch(current)  # a missing or empty batch is an error before any scoring
    started = time.perf_counter()
    tracking.setup(settings)
    champion, scorer = champion_scorer(settings)
    with open_reference(settings.root, settings.data_dir, reference if reference is not None else dataset_version,
                        champion.dataset_version if champion else None,
                        champion.version_uri if champion else None) as ref:
        console.print(f"[bold]monitor[/] {current} vs {ref.describe()}"
                      + (f", with the predictions of {scorer.uri}" if scorer else ""))
        ref_table, ref_skipped = batch_features(settings, ref.folder, ref.clips, scorer)
    batch, skipped = batch_features(settings, current, batch_clips, scorer)
    for table, what, failed in ((ref_table, ref.describe(), ref_skipped), (batch, str(current), skipped)):
        if table.empty:
            raise ValueError(f"{what}: none of its clips could be used ({len(failed)} unusable)")
    emb_cols = [c for c in ref_table.columns if c.startswith(EMBEDDING_PREFIX)]
    pred_cols = scorer.columns if scorer else []
    model_version = champion.version if champion else "none"
    p = settings.monitor
    measured = drift_report(
        ref_table, batch, columns=list(DESCRIPTOR_COLUMNS) + pred_cols, embedding_columns=emb_cols,
        out_dir=report_dir(settings.dashboards_dir / "reports"), alpha=p.alpha, permutations=p.permutations,
        workspace_dir=settings.dashboards_dir / "workspace", project="drift", group_column="group",
        tags={"dataset_version": ref.dataset_version, "reference": ref.describe(), "current": str(current),
              "champion_version": model_version})
    result = verdict(
        measured, critical_share=p.critical_drift_share, critical_auc=p.critical_auc, run_id=None,
        dataset_version=ref.dataset_version, reference=ref.describe(), current=str(current),
        model_name=champion.name if champion else None, model_version=champion.version if champion else None,
        prediction_columns=pred_cols,
        predicted_distribution=(predicted_distribution(ref_table, batch, scorer.classes, scorer.threshold)
                                if scorer else {}))
    with tracking.run(settings, "monitor", lineage.STEP_MONITOR, ref.dataset_version) as run:
        result = replace(result, run_id=run.id)
        run.set_tags({lineage.TAG_DRIFT_DETECTED: str(result.drift_detected).lower(),
                      lineage.TAG_DRIFT_SEVERITY: result.severity,
                      lineage.TAG_EVIDENTLY_SNAPSHOT: str(result.snapshot_id),
                      lineage.TAG_CHAMPION_VERSION: model_version,
                      lineage.TAG_MODEL_NAME: champion.name if champion else "none",
                      lineage.TAG_MODEL_VERSION: model_version,
                      lineage.TAG_PREDICTIONS: "compared" if scorer else ("unavailable" if champion else "no champion"),
                      lineage.TAG_REFERENCE: ref.describe(), lineage.TAG_REFERENCE_KIND: ref.kind,
                      lineage.TAG_REFERENCE_CHOSEN_BY: ref.chosen_by, lineage.TAG_CURRENT: str(current)})
        run.log_params({f"monitor.{k}": v for k, v in result.thresholds.items()})
        run.log_metrics({"drift_p_value": result.p_value, "drift_share": result.drift_share,
                         "drifted_columns": len(result.drifted_columns), "compared_columns": result.n_columns,
                         "window_drift_share": result.window_drift_share,
                         "reference_files": result.reference_files, "current_files": result.current_files,
                         "reference_groups": result.reference_groups, "current_groups": result.current_groups,
                         "reference_windows": result.reference_rows, "current_windows": result.current_rows,
                         "files_skipped": len(skipped), "reference_files_skipped": len(ref_skipped),
                         "monitor_seconds": time.perf_counter() - started,
                         "embedding_drift_score": result.embedding_drift_score,
                         "embedding_drift_p_value": result.embedding_p_value})
        run.log_file(Path(result.html_path), "drift")
        run.log_file(Path(result.json_path), "drift")
        run.log_json(result.to_json(), lineage.VERDICT_FILE)
    if run_id:
        with tracking.resume(settings, run_id) as training:
            training.set_tags({lineage.TAG_DRIFT_DETECTED: str(result.drift_detected).lower(),
                               lineage.TAG_DRIFT_RUN: result.run_id})
            training.log_metrics({"production_drift_share": result.drift_share})
    payload: dict[str, Any] = result.to_json()
    atomic_write_json(settings.artifacts_dir / lineage.ARTIFACT_MONITOR / "verdict.json", payload)
    _say(result, ref.dataset_version, model_version, bool(pred_cols))
    return result


def _sizes(files: int, groups: int, windows: int) -> str:
    recordings = f" in {groups} recordings" if groups != files else ""
    return f"{files} files{recordings} ({windows} windows)"


def _say(result: DriftVerdict, dataset_version: str, model_version: str, predictions: bool) -> None:
    verdict_text = {"critical": "[bold red]CRITICAL DRIFT[/]", "drift": "[red]DRIFT[/]"}.get(result.severity,
                                                                                            "[green]no drift[/]")
    embedding = ("" if result.embedding_drift_score is None else
                 f"; embedding p {result.embedding_p_value:.4f}, "
                 f"domain-classifier AUC {result.embedding_drift_score:.2f}")
    console.print(f"[bold]monitor[/] {verdict_text}: p = {result.p_value:.4f} at alpha {result.alpha:g} over "
                  f"{_sizes(result.current_files, result.current_groups, result.current_rows)} vs "
                  f"{_sizes(result.reference_files, result.reference_groups, result.reference_rows)}; "
                  f"{len(result.drifted_columns)}/{result.n_columns} columns drifted "
                  f"(descriptors{' and predictions' if predictions else ''}){embedding}; "
                  f"vs dataset {dataset_version} (model version {model_version}) → {result.html_path}")
    if not result.decidable:
        warn(f"{result.current_groups} against {result.reference_groups} files or recordings cannot reach alpha "
             f"{result.alpha:g} "
             f"(smallest possible p {result.min_p:.3f}): give more files for a verdict with that false-alarm rate")
