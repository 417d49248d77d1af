"""A batch of audio as users give it: a dataset folder with a manifest, or any folder of audio files."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from mirops.data.audio import AUDIO_SUFFIXES
from mirops.data.manifest import MANIFEST


def list_batch(folder: Path) -> pd.DataFrame:
    """clip_id, path (relative to `folder`) and, where the folder's manifest has one, group (the recording or
    session each clip comes from): the manifest's rows if there is one, else every audio file under it."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder (expected a folder of audio or a dataset folder)")
    if (folder / MANIFEST).exists():
        manifest = pd.read_parquet(folder / MANIFEST)
        return manifest[["clip_id", "path"] + (["group"] if "group" in manifest.columns else [])]
    paths = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
    if not paths:
        raise FileNotFoundError(f"{folder}: no audio files ({', '.join(sorted(AUDIO_SUFFIXES))}) and no manifest")
    return pd.DataFrame({"clip_id": paths, "path": paths})
