"""Build a dataset folder under a temporary name and rename it into place only when it is complete.

A failure at any point leaves the existing folder (and everything DVC tracks in it) as it was.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def check_target(final: Path, overwrite: bool, hint: str = "--overwrite") -> None:
    if final.exists() and any(final.iterdir()) and not overwrite:
        raise FileExistsError(f"{final} already exists and is not empty; pass {hint} to replace it")


def swap_into_place(tmp: Path, final: Path) -> None:
    """Rename the finished folder over `final`; the old one is moved aside first and removed last."""
    old = None
    if final.exists():
        old = Path(tempfile.mkdtemp(prefix=f"{final.name}.old-", dir=final.parent))
        old.rmdir()
        final.rename(old)
    try:
        tmp.rename(final)
    except BaseException:
        if old is not None:
            old.rename(final)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextmanager
def staged_dir(final: Path, overwrite: bool = False, hint: str = "--overwrite") -> Iterator[Path]:
    """Yield an empty sibling folder of `final`; on success it replaces `final`, on failure it is removed."""
    final = Path(final).resolve()
    check_target(final, overwrite, hint)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        yield tmp
        swap_into_place(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def mirror_into(source: Path, final: Path, link: str = "hardlink") -> None:
    """Replace `final` with a copy of the dataset folder `source` (hard links where the filesystem allows),
    atomically: a failure leaves `final` as it was."""
    source = Path(source).resolve()
    if not (source / "manifest.parquet").exists():
        raise FileNotFoundError(f"{source}: no manifest.parquet; build the source with `mirops data import ... "
                                f"--out {source}` or `mirops data demo --out {source}`")

    def place(src: str, dst: str) -> None:
        if link == "hardlink":
            try:
                os.link(src, dst)
                return
            except OSError:  # another filesystem: copy instead
                pass
        shutil.copy2(src, dst)

    with staged_dir(final, overwrite=True) as tmp:
        shutil.copytree(source, tmp, dirs_exist_ok=True, copy_function=place)
