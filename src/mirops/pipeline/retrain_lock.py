"""At most one retraining per project at a time: a file lock (`mirops.locks.file_lock`, flock) on
`<root>/.mirops/locks/retrain.lock`.

What two retrainings must not share is the project folder (data/, its DVC cache, artifacts/, the registry
moves), and every retraining runs where that folder is: a scheduled run served by `mirops serve`, a
drift-triggered run of the same deployment, `mirops pipeline run` by hand on a Prefect server or on a temporary
API. One lock on a file of the project covers them all, whichever Prefect API each one talks to, and the kernel
drops it when its holder dies, so a crash never leaves a stale lock. The holder writes who it is into the file,
so a waiter can say whom it waits for. A waiter gives up after `wait_s` seconds (ProjectBusy); it never hangs.
The lock lives outside `.prefect/` so that `make clean` during a retraining cannot free it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from mirops import locks

LOCK_FILE = Path(".mirops") / "locks" / "retrain.lock"


class ProjectBusy(locks.LockBusy):
    """Another retraining of the same project held the lock for longer than this one would wait."""


def lock_path(root: Path) -> Path:
    return Path(root).resolve() / LOCK_FILE


def read_holder(root: Path) -> dict[str, Any]:
    """Who holds (or last held) the lock, as the holder wrote it; {} when unknown."""
    return locks.read_holder(lock_path(root))


def describe(holder: dict[str, Any]) -> str:
    if not holder:
        return "another retraining (holder not yet recorded)"
    run = f"flow run {holder['flow_run_id']}" if holder.get("flow_run_id") else "a run outside Prefect"
    name = f" ({holder['flow_run_name']})" if holder.get("flow_run_name") else ""
    return f"{run}{name}, pid {holder.get('pid')} on {holder.get('host')}, since {holder.get('since')}"


@contextmanager
def retraining_lock(root: Path, holder: dict[str, Any], wait_s: float, say: Callable[[str], None] = print,
                    poll_s: float = 1.0) -> Iterator[float]:
    """Hold the project's retraining lock inside the block; yields how many seconds it waited for it.

    `holder` (e.g. the flow run's id and name) is recorded in the lock file; `say` gets the waiting lines.
    Raises ProjectBusy, naming the holder, when the lock is still taken after `wait_s` seconds.
    """
    path = lock_path(root)
    stack = ExitStack()
    try:
        waited = stack.enter_context(locks.file_lock(path, locks.holder_record(**holder), wait_s,
                                                     "the project's retraining lock", say, poll_s, describe))
    except locks.LockBusy:
        raise ProjectBusy(
            f"skipped: another retraining of the project {Path(root).resolve()} is running "
            f"({describe(read_holder(root))}) and did not finish within schedule.lock_wait_s = {wait_s:g} s; "
            "at most one retraining per project runs at a time") from None
    with stack:
        yield waited
