"""Feature and embedding precomputation as mapped Prefect tasks, on threads or on a Dask cluster.

Each task fills the content-addressed cache (artifacts/cache) for a chunk of clips of data/: the
training front end's frames, audio descriptors and YAMNet embeddings, and (`teachers`) the EAsT teachers'
embedding sequences. Training and monitoring then read
them back instead of decoding again. With `task_runner="dask"` the chunks run on a Dask cluster through
prefect-dask: a LocalCluster by default, or the scheduler at `dask_address` (the same code at scale).
"""

from __future__ import annotations

import json
from typing import Any

from prefect import flow, task, unmapped
from prefect.cache_policies import NO_CACHE
from prefect.futures import as_completed
from rich.progress import Progress

from mirops import steps
from mirops.config import Settings
from mirops.data.manifest import atomic_write_bytes, read_manifest

TASK_RUNNERS = ("thread", "dask")


@task(name="featurize-chunk", retries=1, retry_delay_seconds=2, cache_policy=NO_CACHE)  # our cache is by content
def featurize_chunk(root: str, overrides: dict[str, Any], paths: list[str]) -> dict[str, Any]:
    return steps.precompute_clips(Settings.load(root, **overrides), paths)


@task(name="teacher-chunk", retries=1, retry_delay_seconds=2, cache_policy=NO_CACHE)
def teacher_chunk(root: str, overrides: dict[str, Any], teacher: str, paths: list[str]) -> dict[str, Any]:
    from mirops import steps_east

    return steps_east.precompute_teacher(Settings.load(root, **overrides), teacher, paths)


def task_runner_for(name: str, workers: int, dask_address: str | None = None):
    if name == "thread":
        from prefect.task_runners import ThreadPoolTaskRunner

        return ThreadPoolTaskRunner(max_workers=workers)
    if name == "dask":
        from prefect_dask import DaskTaskRunner

        if dask_address:
            return DaskTaskRunner(address=dask_address)
        # One single-threaded process per worker: torch and libsndfile work in parallel without the GIL.
        return DaskTaskRunner(cluster_kwargs={"n_workers": workers, "threads_per_worker": 1, "processes": True,
                                              "dashboard_address": None})
    raise ValueError(f"task runner {name!r}: expected one of {TASK_RUNNERS}")


@flow(name="mirops-precompute")
def precompute(root: str = ".", overrides: dict[str, Any] | None = None, chunk_size: int = 32,
               teachers: list[str] | None = None) -> dict[str, Any]:
    """Map `featurize_chunk` over the clips of data/ (and `teacher_chunk` per EAsT teacher in `teachers`);
    returns totals and the clips that failed."""
    settings = Settings.load(root, **(overrides or {}))
    df, _ = read_manifest(settings.data_dir)
    paths = list(df["path"])
    chunks = [paths[i : i + chunk_size] for i in range(0, len(paths), chunk_size)]
    futures = featurize_chunk.map(unmapped(str(settings.root)), unmapped(overrides or {}), chunks)
    for teacher in teachers or []:
        futures += teacher_chunk.map(unmapped(str(settings.root)), unmapped(overrides or {}), unmapped(teacher),
                                     chunks)
    totals: dict[str, Any] = {"clips": 0, "ok": 0, "chunks": len(chunks), "failed": {}, "teachers": teachers or []}
    with Progress(console=steps.console, transient=True) as bar:
        progress = bar.add_task(f"precomputing features of {len(paths)} clips"
                                + (f" and {', '.join(teachers)} embeddings" if teachers else ""),
                                total=len(paths) * (1 + len(teachers or [])))
        for future in as_completed(futures):
            done = future.result()
            bar.advance(progress, done["clips"])
            if "teacher" in done:  # counted apart: the clip totals are the data's
                by_teacher = totals.setdefault("teacher_ok", {})
                by_teacher[done["teacher"]] = by_teacher.get(done["teacher"], 0) + done["ok"]
                continue
            totals["clips"] += done["clips"]
            totals["ok"] += done["ok"]
            totals["failed"].update(done["failed"])
    totals["dataset_version"] = _version_or_none(settings)
    totals["frontend"] = {"clip_seconds": settings.train.clip_seconds, "crop": settings.ingest.crop}
    # The cache is keyed by content (shared across versions); this record ties the features to the version.
    record = settings.artifacts_dir / "precompute" / f"{totals['dataset_version'] or 'unversioned'}.json"
    atomic_write_bytes(record, (json.dumps(totals, indent=2) + "\n").encode())
    steps.console.print(f"[bold]precompute[/] {totals['ok']}/{totals['clips']} clips in {len(chunks)} chunks"
                        + (f", {len(totals['failed'])} unusable" if totals["failed"] else "") + f" → {record}")
    return totals


def _version_or_none(settings: Settings) -> str | None:
    try:
        return steps.current_version(settings)
    except FileNotFoundError:
        return None


def run_precompute(root: str, overrides: dict[str, Any] | None = None, task_runner: str = "thread",
                   workers: int = 2, dask_address: str | None = None, chunk_size: int = 32,
                   teachers: list[str] | None = None) -> dict[str, Any]:
    """The flow with the chosen task runner (a flow's runner is fixed per call, so it is set here)."""
    runner = task_runner_for(task_runner, workers, dask_address)
    return precompute.with_options(task_runner=runner)(root, overrides, chunk_size, teachers)
