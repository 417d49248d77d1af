"""Dataset versions with DVC: `dvc add data`, push to a remote, read the md5 back; and dvc.lock for the pipeline.

The version id of a dataset is the md5 DVC records for `data/` in `data.dvc` (without DVC's `.dir`
suffix); every later artefact carries it. `data.versions.jsonl` beside `data.dvc` lists every version
made here (id, date, message, clip and class counts), so any of them can be checked out again from the
DVC cache or remote; inside a git repository both files are committed with the version's message.

The default remote lives outside the project (`default_remote`), so deleting the project's working files
(`make clean`) cannot lose a version. `commit_stages` records the stages of dvc.yaml whose outputs the
Prefect flow just produced in dvc.lock, so `dvc status` agrees with what ran.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import sys
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import yaml

from mirops.atomic import atomic_write_bytes
from mirops.data.git import git_commit, in_git_repo

DEFAULT_REMOTE = "mirops"  # the remote mirops configures (older projects: "local", in .dvc/config)
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


def default_remote(root: Path) -> Path:
    """The per-project remote outside the project: $XDG_DATA_HOME/mirops/dvc-remote/<project>-<hash of its path>
    (~/.local/share when XDG_DATA_HOME is unset). The hash keeps two projects of the same name apart."""
    root = Path(root).resolve()
    base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return base / "mirops" / "dvc-remote" / f"{root.name}-{hashlib.sha256(os.fsencode(root)).hexdigest()[:10]}"


def remote_url(root: Path, remote: str | None) -> str:
    """`remote` as DVC should store it: URLs as given, paths absolute (relative ones are the project's)."""
    if remote is None:
        return os.fspath(default_remote(root))
    if "://" in remote:
        return remote
    path = Path(remote).expanduser()
    return os.fspath(path if path.is_absolute() else (Path(root) / path).resolve())


def ensure_repo(root: Path, remote: str | None = None):
    """Open the DVC repo at `root`, initialising it on first use, with a default remote.

    `remote` (settings `dvc.remote`) given: it becomes the default remote. Not given: a default remote already
    configured stays (a project whose .dvc/config names `../dvc-remote`, or one set with `dvc remote add -d`);
    with none, `default_remote(root)`. What mirops chooses goes to .dvc/config.local: it is this machine's path,
    which git does not track.
    """
    from dvc.repo import Repo

    root = Path(root)
    if not (root / ".dvc").is_dir():
        Repo.init(os.fspath(root), no_scm=not (root / ".git").exists())
    repo = Repo(os.fspath(root))
    core = repo.config["core"]
    # Offline and quiet: no analytics, no update checks. Edit only what is missing.
    if core.get("analytics") is not False or core.get("check_update") is not False:
        with repo.config.edit() as conf:
            conf["core"]["analytics"] = False
            conf["core"]["check_update"] = False
    configured = repo.config["remote"].get(core.get("remote", ""), {}).get("url")
    wanted = None
    if remote is not None:
        wanted = remote_url(root, remote)
    elif configured is None:  # a project made before the remote moved out keeps its dvc-remote/ folder
        legacy = root / "dvc-remote"
        wanted = os.fspath(legacy.resolve()) if legacy.is_dir() else remote_url(root, None)
    if wanted is not None and not _same_url(root, configured, wanted):
        with repo.config.edit("local") as conf:
            conf["remote"][DEFAULT_REMOTE] = {"url": wanted}
            conf["core"]["remote"] = DEFAULT_REMOTE
        repo.close()
        repo = Repo(os.fspath(root))  # the merged config is read once per Repo
    return repo


def _same_url(root: Path, configured: str | None, wanted: str) -> bool:
    if configured is None:
        return False
    if "://" in configured or "://" in wanted:
        return configured == wanted
    return (Path(root) / ".dvc" / configured).resolve() == Path(wanted).resolve()


def version_data(root: Path, target: str = "data", push: bool = True, remote: str | None = None) -> DataVersion:
    """`dvc add` the dataset folder and push it (to `remote`, see `ensure_repo`); returns the new version."""
    root = Path(root)
    if not (root / target).is_dir():
        raise FileNotFoundError(f"{root / target}: no dataset to version (build one with `mirops data demo`)")
    _dvc_logs_to_stderr()
    repo = ensure_repo(root, remote)
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


# ---------------------------------------------------------------- git (mirops.data.git)


def git_commit_version(root: Path, record: VersionRecord, target: str = "data") -> str | None:
    """Commit the version's pointer files; the new commit's sha, or None when it is committed already."""
    return git_commit(root, [f"{target}.dvc", VERSIONS_FILE, ".gitignore"],
                      f"data: {record.message or 'new dataset version'} ({record.version[:8]})",
                      f"{record.clips} clips, {record.classes} classes, {record.quarantined} quarantined")


# ---------------------------------------------------------------- make and restore versions


def make_version(root: Path, message: str = "", commit: bool = False, push: bool = True,
                 target: str = "data", remote: str | None = None) -> tuple[VersionRecord, str | None]:
    """Version data/ (DVC add + push), record it in the list, commit the pointers when asked and in git."""
    v = version_data(root, target, push, remote)
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


def checkout_version(root: Path, prefix: str, force: bool = False, target: str = "data",
                     remote: str | None = None) -> VersionRecord:
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
    repo = ensure_repo(root, remote)
    targets = [os.fspath(root / f"{target}.dvc")]
    try:
        try:
            repo.checkout(targets=targets, force=True)
        except Exception:  # objects not in the local cache: fetch them from the remote, then try again
            from dvc.exceptions import CheckoutError

            repo.fetch(targets=targets)
            try:
                repo.checkout(targets=targets, force=True)
            except CheckoutError as exc:
                where = repo.config["remote"].get(repo.config["core"].get("remote", ""), {}).get("url", "none")
                raise FileNotFoundError(f"dataset version {record.version}: neither the DVC cache "
                                        f"({root / '.dvc' / 'cache'}) nor the remote ({where}) has all of it; "
                                        "`dvc remote list` shows the remotes, settings `dvc.remote` "
                                        "chooses one") from exc
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


# ---------------------------------------------------------------- the pipeline's dvc.lock


@dataclass(frozen=True)
class PipelineStage:
    name: str                # as DVC addresses it: "audit", "train@reprogram"
    params: tuple[str, ...]  # params.yaml keys it depends on ("reprogram", "ingest.crop")
    outs: tuple[str, ...]    # its outputs, relative to the project root


def pipeline_stages(root: Path) -> list[PipelineStage]:
    """The stages of dvc.yaml, `foreach` expanded, in DVC's order."""
    from dvc.dependency.param import ParamsDependency

    _dvc_logs_to_stderr()
    repo = ensure_repo(root)
    try:
        return [PipelineStage(stage.name,  # not .addressing: that one is relative to the working directory
                              tuple(k for d in stage.deps if isinstance(d, ParamsDependency) for k in d.params),
                              tuple(o.def_path for o in stage.outs))
                for stage in repo.index.stages if stage.cmd]
    finally:
        repo.close()


def commit_stages(root: Path, names: list[str]) -> tuple[list[str], dict[str, str]]:
    """`dvc commit --force` each stage in `names`: dvc.lock records its dependencies and outputs as they are
    now, which is right only because its outputs were just made by the command it names. Returns the stages
    committed and, per stage that could not be, why (an output missing, say)."""
    from dvc.exceptions import DvcException

    _dvc_logs_to_stderr()
    repo = ensure_repo(root)
    done, failed = [], {}
    try:
        # What `dvc commit --force STAGE` does, on the stage objects: DVC resolves a target path against the
        # working directory, which need not be the project.
        with repo.lock:
            stages = {stage.name: stage for stage in repo.index.stages if stage.cmd}
            for name in names:
                try:
                    if name not in stages:
                        raise DvcException(f"dvc.yaml has no stage {name!r}")
                    # No run cache: nothing to reuse (outputs are small, uncached files), and DVC 3.67 resolves
                    # its entries against the working directory.
                    stages[name].save(run_cache=False)
                    stages[name].commit()
                    stages[name].dump(update_pipeline=False)
                    done.append(name)
                except DvcException as exc:
                    failed[name] = str(exc)
    finally:
        repo.close()
    return done, failed
