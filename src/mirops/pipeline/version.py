"""Version: check the audio, then DVC-version data/; every later stage opens the version it is given.

The version id is DVC's md5 of data/ (`mirops.data.version`); `open` gives the handle every stage reads
(`mirops.data.dataset.DatasetVersion`): data/ when it holds that version, else a read-only view of DVC's store.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from mirops.config import Settings
from mirops.data.dataset import DatasetVersion, open_version
from mirops.data.version import make_version, read_version
from mirops.pipeline.ingest import check_data
from mirops.progress import console


def version(settings: Settings, message: str = "", commit: bool = False, check: bool = True) -> str:
    """Check the audio (quarantine; skip with `check=False` when just done), then DVC-version data/.

    Returns the version id; `commit` also commits the pointer files when the project is a git repository.
    """
    if check:
        check_data(settings)
    record, sha = make_version(settings.root, message, commit=commit)
    console.print(f"[bold]dataset version[/] {record.version} ({record.files} files, {record.size_bytes / 1e6:.1f} MB,"
                  f" {record.clips} clips, {record.quarantined} quarantined)"
                  + (f", committed as {sha[:8]}" if sha else ""))
    return record.version


def current_version(settings: Settings) -> str:
    """The version data/ holds (data.dvc); FileNotFoundError saying how to make one when there is none."""
    return read_version(settings.root).version


@contextmanager
def open_dataset(settings: Settings, dataset_version: str | None = None) -> Iterator[DatasetVersion]:
    """Dataset version `dataset_version` (default: what data/ holds), readable inside the `with` block."""
    with open_version(settings.root, dataset_version, settings.data_dir) as ds:
        yield ds
