"""What the monitor compares a batch with: a dataset version's training clips, or a folder of audio.

A dataset version is DVC's md5 of `data/` (`mirops.data.version`). The current one is read from `data/`
itself. Any other is read from DVC's content-addressed store without touching `data/`: the version's
`.dir` listing (relative path → md5) names every file, and a temporary folder of read-only symlinks into
the DVC cache (or the local remote) lays them out as a dataset folder again. The feature cache keys clips
by their bytes, so features computed for those clips under any version are reused.

`open_reference` picks the reference: the version or folder given, else the champion's dataset version
(its registry tag), else the current version.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from mirops.config import Settings

FOLDER_PREFIX = "folder-"  # the "dataset version" a folder reference is recorded under: a hash of its contents
_MD5 = re.compile(r"^[0-9a-f]{32}$")


@dataclass
class Reference:
    """The reference batch: where its audio is readable and which clips of it to compare with."""

    kind: str             # "version" | "folder"
    dataset_version: str  # DVC md5 of the version, or folder-<hash of the folder's files> for a folder
    folder: Path          # data/, a read-only view of the DVC cache, or the folder given
    clips: pd.DataFrame   # clip_id, path (relative to `folder`)
    chosen_by: str        # why this reference: "given", "champion models:/NAME/V", "current data/"

    def describe(self) -> str:
        if self.kind == "folder":
            return f"folder {self.folder} ({len(self.clips)} clips)"
        return f"dataset version {self.dataset_version} ({len(self.clips)} training clips; {self.chosen_by})"


def _store_places(root: Path) -> list[Path]:
    """Where DVC keeps objects by md5: the project's cache, then a local remote if one is configured."""
    from mirops.data.version import _local_remote

    places = [root / ".dvc" / "cache" / "files" / "md5"]
    remote = _local_remote(root) if (root / ".dvc").is_dir() else None
    if remote is not None:
        places.append(remote / "files" / "md5")
    return places


def _object(places: list[Path], md5: str) -> Path | None:
    for place in places:
        path = place / md5[:2] / md5[2:]
        if path.is_file():
            return path
    return None


def resolve_version(root: Path, prefix: str) -> str:
    """The full version id behind `prefix`: a listed version (`mirops data versions`), the current one
    (data.dvc), or any full md5 whose listing DVC's store holds. LookupError naming it otherwise."""
    from mirops.data.version import find_version, read_version

    try:
        return find_version(root, prefix).version
    except LookupError as unlisted:
        try:
            current = read_version(root).version
        except (FileNotFoundError, ValueError):
            current = None
        if current and current.startswith(prefix):
            return current
        if _MD5.match(prefix) and _object(_store_places(root), f"{prefix}.dir"):
            return prefix
        raise LookupError(f"dataset version {prefix!r} not found: not in {root / 'data.versions.jsonl'}, not "
                          f"data.dvc's, and not in the DVC cache or local remote") from unlisted


@contextmanager
def version_view(root: Path, version: str) -> Iterator[Path]:
    """A temporary dataset folder for `version`: symlinks to the DVC store's read-only objects, laid out as
    data/ was (manifest, labels, audio). Removed on exit; nothing in data/ or the store changes."""
    from mirops.data.manifest import LABELS, MANIFEST

    root = Path(root)
    places = _store_places(root)
    listing_path = _object(places, f"{version}.dir")
    if listing_path is None:
        raise FileNotFoundError(f"dataset version {version}: its listing ({version}.dir) is in neither the DVC cache "
                                f"nor a local remote ({', '.join(map(str, places))}); `dvc fetch` it first")
    listing = {e["relpath"]: e["md5"] for e in json.loads(listing_path.read_text())}
    for name in (MANIFEST, LABELS):
        if name not in listing:
            raise FileNotFoundError(f"dataset version {version} has no {name}: not a mirops dataset")
    found = {rel: _object(places, md5) for rel, md5 in listing.items()}
    missing = sorted(rel for rel, path in found.items() if path is None)
    if missing:
        raise FileNotFoundError(f"dataset version {version}: {len(missing)} of {len(listing)} files are in neither "
                                f"the DVC cache nor a local remote (first: {missing[0]}); `dvc fetch` them first")
    with tempfile.TemporaryDirectory(prefix=f"mirops-reference-{version[:8]}-") as tmp:
        view = Path(tmp) / "data"
        for rel, target in found.items():
            link = view / rel
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(target)
        yield view


def folder_id(folder: Path, paths: list[str]) -> str:
    """A stable id for a folder reference: the hash of its clips' relative paths and contents."""
    from mirops.data.cache import file_digest

    digest = hashlib.sha256()
    for rel in sorted(paths):
        path = Path(folder) / rel
        digest.update(f"{rel}\0{file_digest(path) if path.is_file() else 'missing'}\n".encode())
    return FOLDER_PREFIX + digest.hexdigest()[:16]


def _training_clips(manifest: pd.DataFrame) -> pd.DataFrame:
    """The train split: what a model trained on this version saw (all clips when there is no train split)."""
    train = manifest[manifest["split"] == "train"] if "split" in manifest.columns else manifest
    return (train if len(train) else manifest)[["clip_id", "path", "group"]].reset_index(drop=True)


def _same_folder(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


@contextmanager
def open_reference(settings: Settings, given: str | Path | None = None,
                   champion_version: str | None = None, champion_uri: str | None = None) -> Iterator[Reference]:
    """The reference to compare with, readable for the duration of the `with` block.

    `given`: a folder of audio (or a dataset folder with a manifest), or a dataset version id or prefix; one
    that cannot be found is an error naming it. Without it: `champion_version` (the champion's dataset
    version, from `champion_uri`'s registry tag), else the current version of data/. A champion's version that
    is no longer in DVC's store falls back to the current version with a warning (a scheduled monitor keeps
    working; `chosen_by` and the MLflow run say so).
    """
    from mirops.data.manifest import read_manifest
    from mirops.data.version import read_version

    root, data_dir = Path(settings.root), Path(settings.data_dir)
    if given is not None and Path(given).is_dir() and not _same_folder(given, data_dir):
        from mirops.steps import list_batch

        folder = Path(given).resolve()
        clips = list_batch(folder)
        yield Reference("folder", folder_id(folder, list(clips["path"])), folder, clips, "given")
        return
    if given is not None and ("/" in str(given) or os.sep in str(given)) and not Path(given).is_dir():
        raise FileNotFoundError(f"reference {given}: no such folder (give a folder of audio or a dataset version)")

    current = read_version(root).version if (root / "data.dvc").exists() else None
    if given is not None and Path(given).is_dir():  # data/ named as a folder: its current version
        version, chosen_by = current, "given: data/"
    elif given is not None:
        version, chosen_by = resolve_version(root, str(given)), "given"
    elif champion_version:
        champion = f"the champion {champion_uri}" if champion_uri else "the champion"
        version = _champion_version(root, champion_version, current)
        chosen_by = (champion.removeprefix("the ") if version == champion_version else
                     f"current data/: {champion}'s dataset version {champion_version} is not in DVC's store")
    else:
        version, chosen_by = current, "current data/"
    if version is None:
        raise FileNotFoundError(f"{root / 'data.dvc'}: the dataset is not versioned yet; run `mirops data version` "
                                "or give the reference as --reference (a dataset version or a folder of audio)")
    if version == current and (data_dir / "manifest.parquet").exists():
        manifest, _ = read_manifest(data_dir)
        yield Reference("version", version, data_dir, _training_clips(manifest), chosen_by)
        return
    with version_view(root, version) as view:
        manifest, _ = read_manifest(view)
        yield Reference("version", version, view, _training_clips(manifest), chosen_by)


def _champion_version(root: Path, version: str, current: str | None) -> str | None:
    """The champion's dataset version if DVC's store still lists it, else (with a warning) the current one."""
    from rich.console import Console

    try:
        full = resolve_version(root, version)
    except LookupError as exc:
        reason = str(exc)
    else:
        if full == current or _object(_store_places(root), f"{full}.dir") is not None:
            return full
        reason = f"its listing {full}.dir is in neither the DVC cache nor a local remote"
    Console(stderr=True).print(f"[yellow]warning[/]: the champion's dataset version cannot be read ({reason}); "
                               f"comparing with the current version {current} instead")
    return current
