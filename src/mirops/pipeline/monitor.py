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
from mirops.features.clips import descriptors, embeddings
from mirops.features.dataset_clips import DatasetClips, warn_skipped
from mirops.features.descriptors import DESCRIPTOR_COLUMNS
from mirops.models.clip_embedding import EMBEDDING_PREFIX, YAMNET_KEY, embedding_columns, yamnet_embedding
from mirops.monitor.drift import DriftVerdict, drift_report, report_dir, verdict
from mirops.monitor.predictions import Scorer, class_scores, predicted_distribution
from mirops.monitor.reference import open_reference
from mirops.progress import console, progress, warn
from mirops.registry import models, tracking


def batch_features(settings: Settings, folder: Path, clips: pd.DataFrame | None = None,
                   scorer: Scorer | None = None) -> tuple[pd.DataFrame, dict]:
    """Per-clip audio descriptors, mean YAMNet embeddings and, with `scorer`, a model's class probabilities
    (`pred_<class>`) of a folder's clips (`clips`: clip_id, path and optionally group rows, default
    `list_batch(folder)`), each computed once and cached by content; and the clips skipped as unusable
    ({path: AudioError}). The table's `group` column is the clip's group, else its path."""
    clips = list_batch(folder) if clips is None else clips
    audio = DatasetClips(Path(folder), ArrayCache(settings.cache_dir), settings.ingest.crop)
    loader = audio.loader(None)
    what = "descriptors, embeddings and predictions" if scorer is not None else "descriptors and embeddings"
    with progress(f"{what} of {Path(folder).name}/", (3 if scorer is not None else 2) * len(clips)) as advance:
        desc = descriptors(loader, list(clips["path"]), progress=advance)
        emb = embeddings(loader, desc.paths, yamnet_embedding, YAMNET_KEY, progress=advance)
        parts, done = [desc, emb], emb
        if scorer is not None:
            done = class_scores(audio.loader(None, scorer.sample_rate), emb.paths, scorer, progress=advance)
            parts.append(done)
    failed: dict = {}
    for part in parts:
        failed |= part.failed
    warn_skipped(failed, f"{folder}")
    by_path = dict(zip(clips["path"], clips["clip_id"], strict=True))
    group_of = dict(zip(clips["path"], clips["group"] if "group" in clips.columns else clips["path"], strict=True))
    kept = done.paths

    def block(result, columns: list[str]) -> pd.DataFrame:
        rows = dict(zip(result.paths, result.arrays, strict=True))
        values = np.stack([rows[p] for p in kept]) if kept else np.empty((0, len(columns)))
        return pd.DataFrame(values, columns=columns)

    blocks = [pd.DataFrame({"clip_id": [by_path[p] for p in kept], "group": [str(group_of[p]) for p in kept]}),
              block(desc, list(DESCRIPTOR_COLUMNS)),
              block(emb, embedding_columns(emb.arrays[0].shape[0]) if emb.arrays else [])]
    if scorer is not None:
        blocks.append(block(done, scorer.columns))
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
        out_dir=report_dir(settings.dashboards_dir / "reports"), threshold=p.drift_share_threshold,
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
        run.log_metrics({"drift_share": result.drift_share, "drifted_columns": len(result.drifted_columns),
                         "compared_columns": result.n_columns, "reference_clips": result.reference_rows,
                         "current_clips": result.current_rows, "clips_skipped": len(skipped),
                         "reference_clips_skipped": len(ref_skipped),
                         "monitor_seconds": time.perf_counter() - started,
                         "embedding_drift_score": result.embedding_drift_score})
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


def _say(result: DriftVerdict, dataset_version: str, model_version: str, predictions: bool) -> None:
    verdict_text = {"critical": "[bold red]CRITICAL DRIFT[/]", "drift": "[red]DRIFT[/]"}.get(result.severity,
                                                                                            "[green]no drift[/]")
    embedding = ("" if result.embedding_drift_score is None else
                 f", embedding drift AUC {result.embedding_drift_score:.2f} (threshold {result.embedding_threshold:.2f}"
                 f"{', drifted' if result.embedding_drift_detected else ''})")
    console.print(f"[bold]monitor[/] {verdict_text}: drift share {result.drift_share:.2f} "
                  f"({len(result.drifted_columns)}/{result.n_columns} columns: descriptors"
                  f"{' and predictions' if predictions else ''}; threshold {result.threshold:.2f}){embedding} "
                  f"vs dataset {dataset_version} (model version {model_version}) → {result.html_path}")
