"""Feature and embedding precomputation as mapped Prefect tasks, on threads or on a Dask cluster.

Each task fills the content-addressed cache (artifacts/cache) for a chunk of clips of data/
(`mirops.pipeline.precompute`): the training front end's frames, audio descriptors and YAMNet embeddings,
and (`teachers`) the EAsT teachers' embedding sequences. Training and monitoring then read them back instead
of decoding again. With `task_runner="dask"` the chunks run on a Dask cluster through prefect-dask: a
LocalCluster by default, or the scheduler at `dask_address` (the same code at scale). Each chunk task fails
after `schedule.precompute_timeout_s` (a hung decoder must not hold the schedule); the flow logs each chunk's
counts as it comes back.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, task, unmapped
from prefect.cache_policies import NO_CACHE
from prefect.futures import as_completed

from mirops import lineage
from mirops.config import Settings
from mirops.pipeline import precompute as stage
from mirops.progress import progress

TASK_RUNNERS = ("thread", "dask")


# Our cache is by content, so Prefect's caching is off; the timeout comes from settings (`with_options`).
@task(name="featurize-chunk", retries=1, retry_delay_seconds=2, cache_policy=NO_CACHE)
def featurize_chunk(root: str, overrides: dict[str, Any], paths: list[str]) -> dict[str, Any]:
    return stage.precompute_clips(Settings.load(root, **overrides), paths)


@task(name="teacher-chunk", retries=1, retry_delay_seconds=2, cache_policy=NO_CACHE)
def teacher_chunk(root: str, overrides: dict[str, Any], teacher: str, paths: list[str]) -> dict[str, Any]:
    return stage.precompute_teacher(Settings.load(root, **overrides), teacher, paths)


def task_runner_for(name: str, workers: int, dask_address: str | None = None):
    if name == "thread":
        from prefect.task_runners import ThreadPoolTaskRunner

        return ThreadPoolTaskRunner(max_workers=workers)
    if name == "dask":
        from prefect_dask import DaskTaskRunner  # the optional Dask runner, only when asked for

        if dask_address:
            return DaskTaskRunner(address=dask_address)
        # One single-threaded process per worker: torch and libsndfile work in parallel without the GIL.
        return DaskTaskRunner(cluster_kwargs={"n_workers": workers, "threads_per_worker": 1, "processes": True,
                                              "dashboard_address": None})
    raise ValueError(f"task runner {name!r}: expected one of {TASK_RUNNERS}")


@flow(name=lineage.PRECOMPUTE_FLOW)
def precompute(root: str = ".", overrides: dict[str, Any] | None = None, chunk_size: int = 32,
               teachers: list[str] | None = None) -> dict[str, Any]:
    """Map `featurize_chunk` over the clips of data/ (and `teacher_chunk` per EAsT teacher in `teachers`);
    returns totals and the clips that failed."""
    settings = Settings.load(root, **(overrides or {}))
    paths = stage.paths_to_precompute(settings)
    chunks = [paths[i : i + chunk_size] for i in range(0, len(paths), chunk_size)]
    limit = {"timeout_seconds": settings.schedule.precompute_timeout_s}
    futures = featurize_chunk.with_options(**limit).map(unmapped(str(settings.root)), unmapped(overrides or {}),
                                                        chunks)
    for teacher in teachers or []:
        futures += teacher_chunk.with_options(**limit).map(unmapped(str(settings.root)), unmapped(overrides or {}),
                                                           unmapped(teacher), chunks)
    totals: dict[str, Any] = {"clips": 0, "ok": 0, "chunks": len(chunks), "failed": {}, "teachers": teachers or []}
    what = f"precomputing features of {len(paths)} clips" + (f" and {', '.join(teachers)} embeddings"
                                                              if teachers else "")
    logger = get_run_logger()
    with progress(what, len(paths) * (1 + len(teachers or []))) as advance:
        for future in as_completed(futures):
            done = future.result()
            advance(done["clips"])
            logger.info("%s chunk: %d of %d clips done, %d failed", done.get("teacher", "features"), done["ok"],
                        done["clips"], len(done.get("failed", {})))  # logged here: a Dask worker has no run logger
            if "teacher" in done:  # counted apart: the clip totals are the data's
                by_teacher = totals.setdefault("teacher_ok", {})
                by_teacher[done["teacher"]] = by_teacher.get(done["teacher"], 0) + done["ok"]
                continue
            totals["clips"] += done["clips"]
            totals["ok"] += done["ok"]
            totals["failed"].update(done["failed"])
    logger.info("precompute: %d of %d clips in %d chunks, %d failed%s", totals["ok"], totals["clips"],
                totals["chunks"], len(totals["failed"]),
                "".join(f"; {t}: {n} clips" for t, n in totals.get("teacher_ok", {}).items()))
    return stage.record(settings, totals)


def run_precompute(root: str, overrides: dict[str, Any] | None = None, task_runner: str = "thread",
                   workers: int = 2, dask_address: str | None = None, chunk_size: int = 32,
                   teachers: list[str] | None = None) -> dict[str, Any]:
    """The flow with the chosen task runner (a flow's runner is fixed per call, so it is set here)."""
    runner = task_runner_for(task_runner, workers, dask_address)
    return precompute.with_options(task_runner=runner)(root, overrides, chunk_size, teachers)
