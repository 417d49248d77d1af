"""What the flows share on the Prefect side: the run logger, artifacts, result storage, the retraining lock.

- `to_run_logger()`: mirops' console lines (stage summaries, "what: k/n" progress) become records of the
  current task or flow run's logger, so the Prefect UI shows them, not only the terminal;
- `publish_markdown` / `publish_table`: a run's artifacts, under keys stable per project
  (`mirops.pipeline.reports.artifact_key`); a server that refuses one costs a warning, never the stage's work;
- `persisted(task, settings, ...)`: the task with its result persisted under `<root>/.prefect/results`;
- `one_retraining_at_a_time(settings)`: the project's retraining lock (`mirops.pipeline.retrain_lock`), with the
  waiting and the holder in the run's log.

Loaded by path from its sibling flow files (`mirops.flow_files.load_path`), never imported as a package.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from prefect import get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.exceptions import MissingContextError
from prefect.runtime import deployment, flow_run

from mirops.config import Settings
from mirops.pipeline import reports, retrain_lock
from mirops.progress import lines_to

RESULTS_DIR = Path(".prefect") / "results"


def run_logger():
    """The current task or flow run's logger; None outside a run (a thread of a library, a plain call)."""
    try:
        return get_run_logger()
    except MissingContextError:
        return None


def log_line(line: str) -> None:
    logger = run_logger()
    if logger is None:
        print(line, file=sys.stderr)
    else:
        logger.info(line)


@contextmanager
def to_run_logger() -> Iterator[None]:
    """mirops' console output goes to the run's logger (each line resolved in the thread that prints it)."""
    with lines_to(log_line):
        yield


def _publish(kind: str, key: str, create) -> None:
    try:
        create()
    except Exception as exc:  # noqa: BLE001 - the stage's work is done; a lost artifact is a warning
        logger = run_logger()
        if logger is not None:
            logger.warning("could not create the %s artifact %r: %s: %s", kind, key, type(exc).__name__, exc)


def publish_markdown(key: str, markdown: str, description: str) -> None:
    _publish("markdown", key, lambda: create_markdown_artifact(markdown=markdown, key=key, description=description))


def publish_table(key: str, table: list[dict[str, Any]], description: str) -> None:
    _publish("table", key, lambda: create_table_artifact(table=table, key=key, description=description))


def publish_drift(settings: Settings, verdict) -> None:
    """The drift verdict as the run's log line and artifact (the retraining and the monitor flow alike)."""
    log_line(reports.drift_summary(verdict))
    publish_markdown(reports.artifact_key(settings, "drift"), reports.drift_markdown(verdict),
                     f"drift of {verdict.current} against {verdict.reference}")


def persisted(task, settings: Settings, **options: Any):
    """`task` with its result persisted in the project (`<root>/.prefect/results`) and `options` (timeouts)."""
    return task.with_options(persist_result=True, result_storage=settings.root.resolve() / RESULTS_DIR, **options)


@contextmanager
def one_retraining_at_a_time(settings: Settings) -> Iterator[None]:
    """Hold the project's retraining lock for the block; wait up to `schedule.lock_wait_s`, then raise
    ProjectBusy (the flow run fails with the holder in its message). Says in the run's log whom it waits for."""
    holder = {"flow_run_id": str(flow_run.get_id() or ""), "flow_run_name": flow_run.get_name() or "",
              "deployment": deployment.get_name() or ""}
    wait_s = settings.schedule.lock_wait_s
    with retrain_lock.retraining_lock(settings.root, holder, wait_s, say=log_line) as waited:
        log_line(f"holding the retraining lock of {settings.root.resolve()}"
                 + (f" (waited {waited:.0f} s for the previous retraining)" if waited >= 1 else ""))
        yield
