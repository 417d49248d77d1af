"""Dataset versions with DVC: `dvc add data`, push to a remote (local by default), read the md5 back.

The version id of a dataset is the md5 DVC records for `data/` in `data.dvc` (without DVC's `.dir`
suffix); every later artefact carries it.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

DEFAULT_REMOTE = "local"


@dataclass(frozen=True)
class DataVersion:
    version: str  # md5 of data/ as DVC computes it
    dvc_file: Path
    files: int
    size_bytes: int


def read_version(root: Path, target: str = "data") -> DataVersion:
    dvc_file = Path(root) / f"{target}.dvc"
    if not dvc_file.exists():
        raise FileNotFoundError(f"{dvc_file}: the dataset is not versioned yet; run `mirops data version`")
    outs = (yaml.safe_load(dvc_file.read_text()) or {}).get("outs") or []
    if not outs or "md5" not in outs[0]:
        raise ValueError(f"{dvc_file}: no md5 recorded in 'outs'")
    out = outs[0]
    return DataVersion(
        version=str(out["md5"]).removesuffix(".dir"),
        dvc_file=dvc_file,
        files=int(out.get("nfiles", 1)),
        size_bytes=int(out.get("size", 0)),
    )


def _dvc_logs_to_stderr() -> None:
    """DVC binds its log handlers to the streams of the moment it is imported, info going to stdout.

    Point them at the current stderr: stdout stays free for `--json`, and a stream replaced since the
    import (a notebook, a test's capture) is never written to after it closed.
    """
    import dvc  # noqa: F401  (its import sets up the handlers)

    for handler in logging.getLogger("dvc").handlers:
        if isinstance(handler, logging.StreamHandler):
            with handler.lock:  # not setStream(): it flushes the old stream, which may be closed
                handler.stream = sys.stderr


def ensure_repo(root: Path, remote_url: str | None = None):
    """Open the DVC repo at `root`, initialising it (and a local remote) on first use."""
    from dvc.repo import Repo

    root = Path(root)
    if not (root / ".dvc").is_dir():
        Repo.init(os.fspath(root), no_scm=not (root / ".git").exists())
    repo = Repo(os.fspath(root))
    core = repo.config["core"]
    # Offline and quiet: no analytics, no update checks. Edit only what is missing.
    if core.get("analytics") is not False or core.get("check_update") is not False or "remote" not in core:
        with repo.config.edit() as conf:
            conf["core"]["analytics"] = False
            conf["core"]["check_update"] = False
            if "remote" not in conf["core"]:
                conf["remote"][DEFAULT_REMOTE] = {"url": remote_url or os.fspath(root / "dvc-remote")}
                conf["core"]["remote"] = DEFAULT_REMOTE
    return repo


def version_data(root: Path, target: str = "data", push: bool = True) -> DataVersion:
    """`dvc add` the dataset folder and push it; returns the new version."""
    root = Path(root)
    if not (root / target).is_dir():
        raise FileNotFoundError(f"{root / target}: no dataset to version (build one with `mirops data demo`)")
    _dvc_logs_to_stderr()
    repo = ensure_repo(root)
    try:
        # DVC resolves paths against the working directory: give it absolute ones.
        repo.add(os.fspath(root / target))
        if push:
            repo.push(targets=[os.fspath(root / f"{target}.dvc")])
    finally:
        repo.close()
    return read_version(root, target)
