"""The one write-then-rename helper: readers never see half a file, and a failed write leaves the old one."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any


def atomic_write(path: Path, write: Callable[[Path], None], fsync: bool = False) -> None:
    """Call `write(tmp)` on a temporary name beside `path`, then rename it over `path`.

    The temporary name is unique per process and call (parallel writers of one cache entry do not collide),
    ends like the target (numpy and soundfile pick the format from the suffix), and is removed on failure.
    `fsync`: flush the bytes to disk before the rename (checkpoints a killed machine must find whole).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp{path.suffix}")
    try:
        write(tmp)
        if fsync:
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_bytes(path: Path, payload: bytes) -> None:
    atomic_write(path, lambda tmp: tmp.write_bytes(payload))


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: Path, payload: Any) -> None:
    """A small JSON file (indented, non-JSON values as strings), e.g. the run ids DVC stages pass along."""
    atomic_write_text(path, json.dumps(payload, indent=2, default=str) + "\n")
