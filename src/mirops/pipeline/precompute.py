"""Precompute: fill the content-addressed feature cache for clips of a dataset, before audit and training.

One call is one mapped task of the precompute flow (flows/precompute.py): the training front end's frames,
audio descriptors (audit, monitor), YAMNet embeddings (monitor), fingerprints (audit) and, per EAsT teacher,
its embedding sequences. Training and monitoring then read them back instead of decoding again.
"""

from __future__ import annotations

from typing import Any

from mirops import lineage
from mirops.atomic import atomic_write_json
from mirops.config import Settings
from mirops.data.cache import ArrayCache
from mirops.data.dataset import current_id, working_copy
from mirops.families.east import teacher_sequences
from mirops.families.reprogram import training_frontend
from mirops.features.clips import descriptors, embeddings, fingerprints, frontend_frames
from mirops.features.dataset_clips import DatasetClips
from mirops.models.clip_embedding import YAMNET_KEY, yamnet_embedding
from mirops.progress import console


def precompute_clips(settings: Settings, paths: list[str]) -> dict[str, Any]:
    """Frames, descriptors, embeddings and fingerprints of `paths` (clips of data/, versioned or not); returns
    counts and the clips that failed."""
    cache = ArrayCache(settings.cache_dir)
    frontend = training_frontend(settings)
    clips = DatasetClips(settings.data_dir, cache, settings.ingest.crop)
    frames = frontend_frames(clips.loader(settings.reprogram.clip_seconds), paths, frontend, frontend.config())
    full = clips.loader(None)
    desc = descriptors(full, frames.paths)
    emb = embeddings(full, desc.paths, yamnet_embedding, YAMNET_KEY)
    prints = fingerprints(full, emb.paths)
    failed = frames.failed | desc.failed | emb.failed | prints.failed
    return {"clips": len(paths), "ok": len(prints.paths), "cache_hits": cache.hits, "cache_misses": cache.misses,
            "failed": {p: e.reason for p, e in failed.items()}}


def precompute_teacher(settings: Settings, name: str, paths: list[str]) -> dict[str, Any]:
    """Teacher `name`'s embedding sequences of `paths` (clips of data/) into the cache."""
    cache = ArrayCache(settings.cache_dir)
    done, _ = teacher_sequences(settings, working_copy(settings.root, settings.data_dir), name, paths, cache)
    return {"teacher": name, "clips": len(paths), "ok": len(done.paths), "cache_hits": cache.hits,
            "cache_misses": cache.misses, "failed": {p: e.reason for p, e in done.failed.items()}}


def paths_to_precompute(settings: Settings) -> list[str]:
    """Every clip of data/ (the precompute flow maps over chunks of them)."""
    return list(working_copy(settings.root, settings.data_dir).manifest["path"])


def record(settings: Settings, totals: dict[str, Any]) -> dict[str, Any]:
    """The precompute record artifacts/precompute/<version>.json: the cache is keyed by content (shared across
    versions); this ties the features to the version. Returns the totals as recorded."""
    dataset_version = current_id(settings.root)
    totals = totals | {"dataset_version": dataset_version,
                       "frontend": {"clip_seconds": settings.reprogram.clip_seconds, "crop": settings.ingest.crop}}
    path = settings.artifacts_dir / lineage.ARTIFACT_PRECOMPUTE / f"{dataset_version or 'unversioned'}.json"
    atomic_write_json(path, totals)
    console.print(f"[bold]precompute[/] {totals['ok']}/{totals['clips']} clips in {totals['chunks']} chunks"
                  + (f", {len(totals['failed'])} unusable" if totals["failed"] else "") + f" → {path}")
    return totals
