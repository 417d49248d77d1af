"""Dataset versions with DVC: `dvc add data`, push to a remote (local by default), read the md5 back.

The version id of a dataset is the md5 DVC records for `data/` in `data.dvc` (without DVC's `.dir`
suffix); every later artefact carries it. `data.versions.jsonl` beside `data.dvc` lists every version
made here (id, date, message, clip and class counts), so any of them can be checked out again from the
DVC cache or remote; inside a git repository both files are committed with the version's message.
"""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import yaml

from mirops.atomic import atomic_write_bytes

DEFAULT_REMOTE = "local"
VERSIONS_FILE = "data.versions.jsonl"


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


# ---------------------------------------------------------------- the list of versions


@dataclass(frozen=True)
class VersionRecord:
    version: str
    created: str  # UTC, ISO 8601
    message: str
    clips: int
    classes: int
    quarantined: int
    files: int
    size_bytes: int
    splits: dict[str, int] = field(default_factory=dict)
    source: str = ""


class DirtyDataError(ValueError):
    """data/ holds changes that no version records; checking out another version would lose them."""


def dataset_stats(data_dir: Path) -> dict:
    """Clip, class, split and quarantine counts of a dataset folder (zeros where it has no manifest)."""
    # Lazy (as pandas below): both import pandas, which listing versions (`mirops data versions`) never needs.
    from mirops.data.manifest import ManifestError, read_manifest
    from mirops.data.quarantine import read_quarantine

    try:
        df, spec = read_manifest(data_dir)
    except ManifestError:
        return {"clips": 0, "classes": 0, "splits": {}, "quarantined": 0, "source": ""}
    return {"clips": len(df), "classes": len(spec.classes),
            "splits": {str(k): int(v) for k, v in df["split"].value_counts().sort_index().items()},
            "quarantined": len(read_quarantine(data_dir)), "source": str(spec.extra.get("source", ""))}


def list_versions(root: Path, target: str = "data") -> list[VersionRecord]:
    path = Path(root) / VERSIONS_FILE
    if not path.exists():
        return []
    records = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if line.strip():
            try:
                records.append(VersionRecord(**json.loads(line)))
            except (ValueError, TypeError) as exc:
                raise ValueError(f"{path}: line {number} is not a version record ({exc})") from exc
    return records


def _record(root: Path, v: DataVersion, message: str, target: str) -> VersionRecord:
    """Append the version to the list unless it is there already (unchanged data keeps its first record)."""
    known = {r.version: r for r in list_versions(root, target)}
    if v.version in known:
        return known[v.version]
    stats = dataset_stats(Path(root) / target)
    record = VersionRecord(version=v.version, created=datetime.now(UTC).isoformat(timespec="seconds"),
                           message=message, files=v.files, size_bytes=v.size_bytes, **stats)
    with open(Path(root) / VERSIONS_FILE, "a") as f:  # one short line per append: no reader sees half a record
        f.write(json.dumps(asdict(record)) + "\n")
    return record


def find_version(root: Path, prefix: str) -> VersionRecord:
    matches = [r for r in list_versions(root) if r.version.startswith(prefix)]
    if not matches:
        raise LookupError(f"no dataset version starts with {prefix!r}; `mirops data versions` lists them")
    if len({r.version for r in matches}) > 1:
        raise LookupError(f"{prefix!r} is ambiguous: {', '.join(r.version for r in matches)}")
    return matches[0]


# ---------------------------------------------------------------- git


def in_git_repo(root: Path) -> bool:
    probe = subprocess.run(["git", "-C", os.fspath(root), "rev-parse", "--is-inside-work-tree"],
                           capture_output=True, text=True)
    return probe.returncode == 0 and probe.stdout.strip() == "true"


def git_commit_version(root: Path, record: VersionRecord, target: str = "data") -> str | None:
    """Commit only the version's pointer files (never whatever else is staged); the new commit's sha, or None."""
    paths = [p for p in (f"{target}.dvc", VERSIONS_FILE, ".gitignore") if (Path(root) / p).exists()]
    git = ["git", "-C", os.fspath(root)]
    subprocess.run([*git, "add", "--", *paths], check=True, capture_output=True)
    if subprocess.run([*git, "diff", "--cached", "--quiet", "--", *paths]).returncode == 0:
        return None  # nothing changed: this version is committed already
    title = f"data: {record.message or 'new dataset version'} ({record.version[:8]})"
    body = f"{record.clips} clips, {record.classes} classes, {record.quarantined} quarantined"
    done = subprocess.run([*git, "commit", "-q", "-m", title, "-m", body, "--", *paths], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"git commit of {', '.join(paths)} failed: {done.stderr.strip() or done.stdout.strip()}")
    return subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()


# ---------------------------------------------------------------- make and restore versions


def make_version(root: Path, message: str = "", commit: bool = False, push: bool = True,
                 target: str = "data") -> tuple[VersionRecord, str | None]:
    """Version data/ (DVC add + push), record it in the list, commit the pointers when asked and in git."""
    v = version_data(root, target, push)
    record = _record(root, v, message, target)
    sha = git_commit_version(root, record, target) if commit and in_git_repo(root) else None
    return record, sha


def _write_pointer(root: Path, record: VersionRecord, target: str) -> None:
    dvc_file = Path(root) / f"{target}.dvc"
    doc = yaml.safe_load(dvc_file.read_text()) if dvc_file.exists() else None
    doc = doc or {"outs": [{}]}
    out = doc["outs"][0]
    out.update({"md5": f"{record.version}.dir", "size": record.size_bytes, "nfiles": record.files, "hash": "md5",
                "path": target})
    atomic_write_bytes(dvc_file, yaml.safe_dump(doc, sort_keys=False).encode())


def changed_files(root: Path, target: str = "data") -> list[str]:
    """What in data/ differs from the version in data.dvc ([] when it matches or nothing is versioned)."""
    if not (Path(root) / f"{target}.dvc").exists():
        return []
    _dvc_logs_to_stderr()
    repo = ensure_repo(root)
    try:
        status = repo.status(targets=[os.fspath(Path(root) / f"{target}.dvc")])
    finally:
        repo.close()
    changes = []
    for entries in status.values():
        for entry in entries:
            for path, state in (entry.get("changed outs") or {}).items() if isinstance(entry, dict) else ():
                if state != "not in cache":  # data/ matches data.dvc; only the local cache lacks it (a clone)
                    changes.append(f"{path}: {state}")
    return changes


def checkout_version(root: Path, prefix: str, force: bool = False, target: str = "data") -> VersionRecord:
    """Restore data/ to a listed version from the DVC cache (fetching from the remote when needed).

    Refuses when data/ holds changes no version records, unless `force`: they would be lost.
    """
    root = Path(root)
    record = find_version(root, prefix)
    if not force and (root / target).exists():
        if not (root / f"{target}.dvc").exists():
            raise DirtyDataError(f"{root / target} is not versioned; `mirops data version` it first or pass --force")
        changes = changed_files(root, target)
        if changes:
            raise DirtyDataError(f"{root / target} has changes no version records ({'; '.join(changes)}); "
                                 "`mirops data version` them first or pass --force to discard them")
    _dvc_logs_to_stderr()
    _write_pointer(root, record, target)
    repo = ensure_repo(root)
    targets = [os.fspath(root / f"{target}.dvc")]
    try:
        try:
            repo.checkout(targets=targets, force=True)
        except Exception:  # objects not in the local cache: fetch them from the remote, then try again
            repo.fetch(targets=targets)
            repo.checkout(targets=targets, force=True)
    finally:
        repo.close()
    return record


def read_version_manifest(root: Path, version: str, target: str = "data"):
    """The manifest and labels of another dataset version, read from the DVC cache or a local remote
    (nothing in data/ changes). Returns (manifest DataFrame, LabelSpec)."""
    import pandas as pd

    from mirops.data.manifest import LABELS, MANIFEST, read_labels_json, validate

    root = Path(root)
    record = find_version(root, version)
    places = [root / ".dvc" / "cache" / "files" / "md5"]
    remote = local_remote(root)
    if remote is not None:
        places.append(remote / "files" / "md5")

    def blob(md5: str) -> bytes:
        for place in places:
            path = place / md5[:2] / md5[2:]
            if path.exists():
                return path.read_bytes()
        raise FileNotFoundError(f"dataset version {record.version}: object {md5} is in neither the DVC cache nor "
                                f"a local remote ({', '.join(map(str, places))}); `dvc fetch` it or check it out")

    listing = {e["relpath"]: e["md5"] for e in json.loads(blob(f"{record.version}.dir"))}
    for name in (MANIFEST, LABELS):
        if name not in listing:
            raise FileNotFoundError(f"dataset version {record.version} has no {name}")
    spec = read_labels_json(json.loads(blob(listing[LABELS])), f"{record.version}:{LABELS}")
    df = pd.read_parquet(io.BytesIO(blob(listing[MANIFEST])))
    validate(df, spec, f"{record.version}:{MANIFEST}")
    return df, spec, record.version


def local_remote(root: Path) -> Path | None:
    try:
        repo = ensure_repo(root)
    except Exception:  # not a DVC project: only the cache can hold versions
        return None
    try:
        core = repo.config["core"]
        url = repo.config["remote"].get(core.get("remote", ""), {}).get("url", "")
    finally:
        repo.close()
    if not url or "://" in url:
        return None
    path = Path(url)
    return path if path.is_absolute() else root / ".dvc" / path
