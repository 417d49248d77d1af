"""A lock held in the MLflow registry itself, so it works wherever the registry is shared.

Creating a registered model is atomic in every MLflow backend (a unique name in the database, sqlite or
PostgreSQL, behind a server or not), so "create `<name>.promotion-lock`" is a compare-and-set that two
processes on two machines cannot both win. Releasing deletes it. A holder that died leaves a lock with an
expiry tag; a waiter removes it once expired (locks are held for seconds, the expiry is minutes).
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from mirops.lineage import TAG_LOCK_EXPIRES, TAG_LOCK_HOLDER

LOCK_SUFFIX = ".promotion-lock"
TAG_HOLDER, TAG_EXPIRES = TAG_LOCK_HOLDER, TAG_LOCK_EXPIRES


class LockTimeout(TimeoutError):
    """Another promotion or rollback of the same model held the lock for too long."""


def _holder() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _already_exists(err: MlflowException) -> bool:
    return err.error_code == "RESOURCE_ALREADY_EXISTS" or "already exists" in str(err).lower()


def _remove_if_expired(client: MlflowClient, lock_name: str) -> None:
    try:
        expires = float(client.get_registered_model(lock_name).tags.get(TAG_EXPIRES, "inf"))
    except MlflowException:
        return  # released meanwhile
    if time.time() > expires:
        with suppress(MlflowException):  # another waiter removed it first
            client.delete_registered_model(lock_name)


@contextmanager
def registry_lock(model_name: str, timeout: float = 120.0, expiry: float = 600.0,
                  poll: float = 0.2) -> Iterator[str]:
    """Hold the promotion lock of `model_name`; yields the holder id."""
    client = MlflowClient()
    lock_name, holder = model_name + LOCK_SUFFIX, _holder()
    deadline = time.monotonic() + timeout
    while True:
        try:
            client.create_registered_model(
                lock_name, tags={TAG_HOLDER: holder, TAG_EXPIRES: f"{time.time() + expiry:.3f}"},
                description=f"held by {holder} while it moves the aliases of {model_name}; "
                            "deleted when it finishes")
            break
        except MlflowException as err:
            if not _already_exists(err):
                raise
        if time.monotonic() > deadline:
            raise LockTimeout(f"{lock_name} is held by another promotion or rollback of {model_name} "
                              f"(waited {timeout:.0f} s); if no such process is alive, it expires by itself "
                              f"or `mlflow` can delete the registered model {lock_name!r}")
        _remove_if_expired(client, lock_name)
        time.sleep(poll)
    try:
        yield holder
    finally:
        try:  # only our own: a waiter may have removed ours as expired and taken the lock since
            if client.get_registered_model(lock_name).tags.get(TAG_HOLDER) == holder:
                client.delete_registered_model(lock_name)
        except MlflowException:
            pass
