"""What the monitor compares a batch with: a dataset version's training clips, or a folder of audio.

A dataset version is opened as a handle (`mirops.data.dataset.open_version`): data/ when it holds that
version, else a read-only view of DVC's content-addressed store, data/ untouched. The feature cache keys
clips by their bytes, so features computed for those clips under any version are reused.

`open_reference` picks the reference: the version or folder given, else the champion's dataset version
(its registry tag), else the current version.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from mirops.data.batch import list_batch
from mirops.data.cache import file_digest
from mirops.data.dataset import current_id, in_store, open_version, resolve_version
from mirops.data.manifest import TRAIN
from mirops.progress import warn

FOLDER_PREFIX = "folder-"  # the "dataset version" a folder reference is recorded under: a hash of its contents


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


def folder_id(folder: Path, paths: list[str]) -> str:
    """A stable id for a folder reference: the hash of its clips' relative paths and contents."""
    digest = hashlib.sha256()
    for rel in sorted(paths):
        path = Path(folder) / rel
        digest.update(f"{rel}\0{file_digest(path) if path.is_file() else 'missing'}\n".encode())
    return FOLDER_PREFIX + digest.hexdigest()[:16]


def _training_clips(manifest: pd.DataFrame) -> pd.DataFrame:
    """The train split: what a model trained on this version saw (all clips when there is no train split)."""
    train = manifest[manifest["split"] == TRAIN] if "split" in manifest.columns else manifest
    return (train if len(train) else manifest)[["clip_id", "path", "group"]].reset_index(drop=True)


def _same_folder(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


@contextmanager
def open_reference(root: Path, data_dir: Path, given: str | Path | None = None,
                   champion_version: str | None = None, champion_uri: str | None = None) -> Iterator[Reference]:
    """The reference to compare with, readable for the duration of the `with` block.

    `given`: a folder of audio (or a dataset folder with a manifest), or a dataset version id or prefix; one
    that cannot be found is an error naming it. Without it: `champion_version` (the champion's dataset
    version, from `champion_uri`'s registry tag), else the current version of data/. A champion's version that
    is no longer in DVC's store falls back to the current version with a warning (a scheduled monitor keeps
    working; `chosen_by` and the MLflow run say so).
    """
    root, data_dir = Path(root), Path(data_dir)
    if given is not None and Path(given).is_dir() and not _same_folder(given, data_dir):
        folder = Path(given).resolve()
        clips = list_batch(folder)
        yield Reference("folder", folder_id(folder, list(clips["path"])), folder, clips, "given")
        return
    if given is not None and ("/" in str(given) or os.sep in str(given)) and not Path(given).is_dir():
        raise FileNotFoundError(f"reference {given}: no such folder (give a folder of audio or a dataset version)")

    current = current_id(root)
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
    with open_version(root, version, data_dir) as ds:
        yield Reference("version", ds.id, ds.folder, _training_clips(ds.manifest), chosen_by)


def _champion_version(root: Path, version: str, current: str | None) -> str | None:
    """The champion's dataset version if DVC's store still lists it, else (with a warning) the current one."""
    try:
        full = resolve_version(root, version)
    except LookupError as exc:
        reason = str(exc)
    else:
        if full == current or in_store(root, full):
            return full
        reason = f"its listing {full}.dir is in neither the DVC cache nor a local remote"
    warn(f"the champion's dataset version cannot be read ({reason}); comparing with the current version "
         f"{current} instead")
    return current
