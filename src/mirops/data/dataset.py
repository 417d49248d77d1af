"""A dataset version as a handle you open: its id, a folder to read its audio from, its manifest and labels.

`open_version(root)` is data/ as it is (its id from data.dvc); `open_version(root, V)` is version V (an id or
a unique prefix): data/ itself when V is what data/ holds, else a read-only view laid out from DVC's
content-addressed store without touching data/. The view is a temporary folder of symlinks into the DVC
cache (or a local remote): the version's `.dir` listing (relative path → md5) names every file. Every
pipeline step takes the handle, so a run asked for version V reads V and the manifest is read once.
"""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from mirops.data.manifest import LABELS, MANIFEST, LabelSpec, label_matrix, read_manifest
from mirops.data.version import VERSIONS_FILE, find_version, local_remote, read_version

_MD5 = re.compile(r"^[0-9a-f]{32}$")


@dataclass(frozen=True)
class DatasetVersion:
    id: str             # DVC's md5 of the dataset folder
    folder: Path        # where its files are readable: data/, or a read-only view of the DVC store
    manifest: pd.DataFrame
    spec: LabelSpec
    working_copy: bool  # the folder is data/ itself (the only place steps may write, e.g. the quarantine)

    @property
    def classes(self) -> list[str]:
        return list(self.spec.classes)

    def split(self, name: str, limit: int | None = None) -> pd.DataFrame:
        """The rows of split `name` (`data.manifest.SPLITS`), the first `limit` of them if given."""
        part = self.manifest[self.manifest["split"] == name]
        return part.head(limit) if limit else part

    def labels(self, rows: pd.DataFrame):
        """(clips, classes) float32 soft labels of `rows`, NaN where not annotated."""
        return label_matrix(rows, self.spec)

    def describe(self) -> str:
        where = "data/" if self.working_copy else f"a read-only view of the DVC store ({self.folder})"
        return f"dataset version {self.id} ({len(self.manifest)} clips, {where})"


def store_places(root: Path) -> list[Path]:
    """Where DVC keeps objects by md5: the project's cache, then a local remote if one is configured."""
    places = [Path(root) / ".dvc" / "cache" / "files" / "md5"]
    remote = local_remote(root) if (Path(root) / ".dvc").is_dir() else None
    if remote is not None:
        places.append(remote / "files" / "md5")
    return places


def store_object(places: list[Path], md5: str) -> Path | None:
    for place in places:
        path = place / md5[:2] / md5[2:]
        if path.is_file():
            return path
    return None


def current_id(root: Path) -> str | None:
    """The version data/ holds (data.dvc's md5), or None when it was never versioned."""
    try:
        return read_version(root).version
    except (FileNotFoundError, ValueError):
        return None


def resolve_version(root: Path, prefix: str) -> str:
    """The full version id behind `prefix`: a listed version (`mirops data versions`), the current one
    (data.dvc), or any full md5 whose listing DVC's store holds. LookupError naming it otherwise."""
    try:
        return find_version(root, prefix).version
    except LookupError as unlisted:
        current = current_id(root)
        if current and current.startswith(prefix):
            return current
        if _MD5.match(prefix) and store_object(store_places(root), f"{prefix}.dir"):
            return prefix
        raise LookupError(f"dataset version {prefix!r} not found: not in {Path(root) / VERSIONS_FILE}, not "
                          f"data.dvc's, and not in the DVC cache or local remote") from unlisted


def in_store(root: Path, version: str) -> bool:
    """Whether DVC's store (cache or local remote) holds the listing of `version`."""
    return store_object(store_places(root), f"{version}.dir") is not None


@contextmanager
def version_view(root: Path, version: str) -> Iterator[Path]:
    """A temporary dataset folder for `version`: symlinks to the DVC store's read-only objects, laid out as
    data/ was (manifest, labels, audio). Removed on exit; nothing in data/ or the store changes."""
    places = store_places(root)
    listing_path = store_object(places, f"{version}.dir")
    if listing_path is None:
        raise FileNotFoundError(f"dataset version {version}: its listing ({version}.dir) is in neither the DVC cache "
                                f"nor a local remote ({', '.join(map(str, places))}); `dvc fetch` it first")
    listing = {e["relpath"]: e["md5"] for e in json.loads(listing_path.read_text())}
    for name in (MANIFEST, LABELS):
        if name not in listing:
            raise FileNotFoundError(f"dataset version {version} has no {name}: not a mirops dataset")
    found = {rel: store_object(places, md5) for rel, md5 in listing.items()}
    missing = sorted(rel for rel, path in found.items() if path is None)
    if missing:
        raise FileNotFoundError(f"dataset version {version}: {len(missing)} of {len(listing)} files are in neither "
                                f"the DVC cache nor a local remote (first: {missing[0]}); `dvc fetch` them first")
    with tempfile.TemporaryDirectory(prefix=f"mirops-version-{version[:8]}-") as tmp:
        view = Path(tmp) / "data"
        for rel, target in found.items():
            link = view / rel
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(target)
        yield view


@contextmanager
def open_version(root: Path, version: str | None = None, data_dir: Path | None = None) -> Iterator[DatasetVersion]:
    """Dataset version `version` (id or prefix; None: what data/ holds), readable inside the `with` block.

    data/ (or `data_dir`) serves when it holds that version; any other version is read from DVC's store."""
    root = Path(root)
    data_dir = Path(data_dir) if data_dir is not None else root / "data"
    current = current_id(root)
    if version is None and current is None:
        read_version(root)  # raises, saying how to version data/
    wanted = current if version is None else resolve_version(root, version)
    if wanted == current:
        manifest, spec = read_manifest(data_dir)
        yield DatasetVersion(wanted, data_dir, manifest, spec, working_copy=True)
        return
    with version_view(root, wanted) as view:
        manifest, spec = read_manifest(view)
        yield DatasetVersion(wanted, view, manifest, spec, working_copy=False)


UNVERSIONED = "unversioned"


def working_copy(root: Path, data_dir: Path | None = None) -> DatasetVersion:
    """data/ as it is, versioned or not (its id is data.dvc's md5, else "unversioned"): for work that fills
    caches before or without a version, never for a run that records which version it read."""
    data_dir = Path(data_dir) if data_dir is not None else Path(root) / "data"
    manifest, spec = read_manifest(data_dir)
    return DatasetVersion(current_id(root) or UNVERSIONED, data_dir, manifest, spec, working_copy=True)
