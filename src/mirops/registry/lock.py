"""The promotion lock: one move of a registered model's aliases at a time, wherever the registry is shared.

A lock primitive made for it, chosen by where the registry lives, never an object in the registry itself (a
lock posing as a registered model showed up in the MLflow UI while it was held):
- the store is PostgreSQL (`MLFLOW_TRACKING_URI=postgresql://...`), or `registry.lock_url` names a
  PostgreSQL database: a session advisory lock there, which every machine reaching the database shares;
- the store is an SQLite file: an flock on a file beside it (`<db>.locks/<name>.promotion.lock`), shared by
  every process using that file;
- a tracking server without `registry.lock_url`: an flock under the project (`.mirops/locks/`), which
  serialises promotions from this machine only. Set `registry.lock_url` to a PostgreSQL database (the
  server's own backend store is the natural one) when several machines promote.
Both kinds are released by the OS or the database when the holder dies, so there is nothing to expire.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from urllib.parse import unquote, urlparse

import mlflow

from mirops.locks import LockBusy, advisory_lock, file_lock, holder_record

LOCK_SUFFIX = ".promotion.lock"


class LockTimeout(LockBusy):
    """Another promotion or rollback of the same model held the lock for too long."""


def lock_kind(tracking_uri: str, lock_url: str | None, project_root: Path) -> tuple[str, str]:
    """("advisory", database URL) or ("file", lock folder) for a registry at `tracking_uri`."""
    for url in (lock_url, tracking_uri):
        if url and url.split("://")[0].split("+")[0] in ("postgresql", "postgres"):
            return "advisory", url
    parsed = urlparse(tracking_uri)
    if parsed.scheme == "sqlite":
        db = Path(unquote(parsed.path))
        return "file", str(db.with_name(db.name + ".locks"))
    return "file", str(Path(project_root).resolve() / ".mirops" / "locks")


@contextmanager
def registry_lock(model_name: str, lock_url: str | None = None, project_root: Path = Path("."),
                  timeout: float = 120.0) -> Iterator[str]:
    """Hold the promotion lock of `model_name` (in MLflow's current registry); yields the holder id."""
    holder = holder_record(model=model_name)
    kind, where = lock_kind(mlflow.get_tracking_uri(), lock_url, project_root)
    what = f"the promotion lock of {model_name}"
    held = (advisory_lock(where, f"mirops.promotion:{model_name}", holder, timeout, what) if kind == "advisory"
            else file_lock(Path(where) / f"{model_name}{LOCK_SUFFIX}", holder, timeout, what))
    stack = ExitStack()
    try:
        stack.enter_context(held)
    except LockBusy as busy:
        raise LockTimeout(f"{busy}: another promotion or rollback of {model_name} is running; rerun when it is "
                          "done (the lock is released as soon as its holder exits, even by a crash)") from None
    with stack:
        yield holder["id"]
