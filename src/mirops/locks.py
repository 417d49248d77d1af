"""Locks that die with their holder: an OS file lock (flock) or a PostgreSQL advisory lock.

Both are released by the kernel or the database when the holding process ends, however it ends, so a crash
never leaves a stale lock and nothing needs an expiry. A waiter polls until `wait_s` and then raises
`LockBusy` naming the holder (the file lock's holder writes who it is into the file; the advisory lock's
holder is found in `pg_stat_activity`). The file lock serves one machine (or a shared filesystem with working
flock); the advisory lock serves every machine that reaches the database.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPORT_EVERY_S = 60.0            # how often a waiter says it still waits
_ADVISORY_NAMESPACE = 0x6D69726F  # "miro": the first key of mirops' two-key advisory locks


class LockBusy(TimeoutError):
    """The lock was still held by someone else after the wait."""


def holder_record(**extra: Any) -> dict[str, Any]:
    """Who takes a lock: host, pid, a unique id, since when, plus `extra` (e.g. a flow run id)."""
    return {"id": uuid.uuid4().hex[:12], "pid": os.getpid(), "host": socket.gethostname(),
            "since": datetime.now(UTC).isoformat(timespec="seconds")} | extra


def describe(holder: dict[str, Any]) -> str:
    if not holder:
        return "another process (holder not yet recorded)"
    extra = ", ".join(f"{k} {v}" for k, v in holder.items() if k not in ("id", "pid", "host", "since") and v)
    return (f"pid {holder.get('pid')} on {holder.get('host')} since {holder.get('since')}"
            + (f" ({extra})" if extra else ""))


def _wait(try_take: Callable[[], bool], who: Callable[[], dict[str, Any]], what: str, wait_s: float,
          say: Callable[[str], None] | None, poll_s: float,
          describe: Callable[[dict[str, Any]], str] = describe) -> float:
    started, said = time.monotonic(), None
    while not try_take():
        waited = time.monotonic() - started
        if waited >= wait_s:
            raise LockBusy(f"{what} is held by {describe(who())}; gave up after {wait_s:g} s")
        if say is not None and (said is None or time.monotonic() - said >= REPORT_EVERY_S):
            say(f"waiting for {what}, held by {describe(who())}; giving up after {wait_s:g} s "
                f"({waited:.0f} s so far)")
            said = time.monotonic()
        time.sleep(min(poll_s, max(wait_s - waited, 0.01)))
    return time.monotonic() - started


def read_holder(path: Path) -> dict[str, Any]:
    """Who holds (or last held) the file lock at `path`, as the holder wrote it; {} when unknown."""
    try:
        return json.loads(Path(path).read_text() or "{}")
    except (OSError, ValueError):
        return {}


@contextmanager
def file_lock(path: Path, holder: dict[str, Any], wait_s: float, what: str,
              say: Callable[[str], None] | None = None, poll_s: float = 0.2,
              describe: Callable[[dict[str, Any]], str] = describe) -> Iterator[float]:
    """Hold an flock on `path` inside the block (yields the seconds waited); `holder` is written into it and
    `describe` turns it into words for the waiters."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)

    def try_take() -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False

    try:
        waited = _wait(try_take, lambda: read_holder(path), f"{what} ({path})", wait_s, say, poll_s, describe)
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder, default=str).encode(), 0)
        try:
            yield waited
        finally:
            os.ftruncate(fd, 0)  # nobody holds it now
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _advisory_key(name: str) -> int:
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "big", signed=True)


def postgres_dsn(url: str) -> str:
    """A libpq URL from an SQLAlchemy one (`postgresql+psycopg2://` -> `postgresql://`)."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.split("+")[0] not in ("postgresql", "postgres"):
        raise ValueError(f"{url!r}: expected a postgresql:// URL for an advisory lock")
    return f"postgresql://{rest}"


@contextmanager
def advisory_lock(url: str, name: str, holder: dict[str, Any], wait_s: float, what: str,
                  say: Callable[[str], None] | None = None, poll_s: float = 0.2) -> Iterator[float]:
    """Hold PostgreSQL advisory lock `name` (session level, on its own connection) inside the block."""
    import psycopg2

    key = _advisory_key(name)
    app = f"mirops lock {holder.get('id', '')} pid {holder.get('pid')}"[:63]
    conn = psycopg2.connect(postgres_dsn(url), application_name=app)
    conn.autocommit = True

    def try_take() -> bool:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_try_advisory_lock(%s, %s)", (_ADVISORY_NAMESPACE, key))
            return bool(cur.fetchone()[0])

    def who() -> dict[str, Any]:
        with conn.cursor() as cur:
            cur.execute("SELECT a.application_name, a.client_addr, a.backend_start FROM pg_locks l "
                        "JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory' AND l.granted "
                        "AND l.classid = %s::oid AND l.objid = %s::oid AND l.objsubid = 2",
                        (_ADVISORY_NAMESPACE, key & 0xFFFFFFFF))
            row = cur.fetchone()
        if not row:
            return {}
        words = str(row[0]).split()  # "mirops lock <id> pid <pid>", as set below
        pid = words[-1] if len(words) == 5 else f"? (client {row[0]!r})"
        return {"pid": pid, "host": row[1] or "the database host's socket", "since": row[2]}

    try:
        waited = _wait(try_take, who, f"{what} (PostgreSQL advisory lock {name!r})", wait_s, say, poll_s)
        try:
            yield waited
        finally:
            with conn.cursor() as cur:
                cur.execute("SELECT pg_advisory_unlock(%s, %s)", (_ADVISORY_NAMESPACE, key))
    finally:
        conn.close()  # closing the session releases the lock as well
