"""The few git calls the dataset versions and the pipeline record need (plain `git`, no library)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path


def in_git_repo(root: Path) -> bool:
    probe = subprocess.run(["git", "-C", os.fspath(root), "rev-parse", "--is-inside-work-tree"],
                           capture_output=True, text=True)
    return probe.returncode == 0 and probe.stdout.strip() == "true"


def git_commit(root: Path, paths: list[str], title: str, body: str = "") -> str | None:
    """Commit only `paths` (never whatever else is staged); the new commit's sha, or None when none changed."""
    paths = [p for p in paths if (Path(root) / p).exists()]
    git = ["git", "-C", os.fspath(root)]
    subprocess.run([*git, "add", "--", *paths], check=True, capture_output=True)
    if subprocess.run([*git, "diff", "--cached", "--quiet", "--", *paths]).returncode == 0:
        return None  # nothing changed: committed already
    done = subprocess.run([*git, "commit", "-q", "-m", title, *(["-m", body] if body else []), "--", *paths],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"git commit of {', '.join(paths)} failed: {done.stderr.strip() or done.stdout.strip()}")
    return subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()


def git_tracked_outputs(root: Path, paths: list[str]) -> list[str]:
    """Those of `paths` that git does not ignore (metrics and plots the pipeline commits with dvc.lock)."""
    if not paths:
        return []
    ignored = subprocess.run(["git", "-C", os.fspath(root), "check-ignore", "--", *paths], capture_output=True,
                             text=True).stdout.split()
    return [p for p in paths if p not in ignored]
