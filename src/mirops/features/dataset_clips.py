"""The clips of one dataset folder through the content-addressed cache, with progress and skipped-clip warnings.

What every stage that reads audio needs: loaders at a rate and crop, the front end's frames of a split's rows,
the full-length descriptors of a table of clips. A clip that cannot be used is skipped, counted and named in
one warning line, never a crash.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from mirops.data.cache import ArrayCache
from mirops.features.clips import ClipLoader, ClipResults, descriptors, frontend_frames
from mirops.features.descriptors import DESCRIPTOR_COLUMNS
from mirops.features.logmel import SAMPLE_RATE
from mirops.progress import progress, warn


def warn_skipped(failed: dict, what: str) -> None:
    if failed:
        reasons = Counter(e.reason for e in failed.values())
        warn(f"skipped {len(failed)} unusable clips of {what} ({', '.join(f'{n} {r}' for r, n in reasons.items())}); "
             f"first: {next(iter(failed.values()))}")


@dataclass
class DatasetClips:
    """Audio of the clips under `folder` (paths relative to it), decoded once and cached by content."""

    folder: Path
    cache: ArrayCache
    crop: str = "centre"

    def loader(self, seconds: float | None, sample_rate: int | None = None) -> ClipLoader:
        """Clips at `sample_rate` (default 16 kHz, the backbones' rate); `seconds=None` keeps their full length."""
        return ClipLoader(Path(self.folder), sample_rate or SAMPLE_RATE, seconds, self.crop, cache=self.cache)

    def frames(self, rows: pd.DataFrame, frontend, seconds: float, what: str) -> tuple[np.ndarray, pd.DataFrame, int]:
        """Front-end frames [N, T, F] of `rows` (cropped to `seconds`, decoded at the front end's own rate), the
        rows kept, and how many were skipped as unusable."""
        config = frontend.config()
        loader = self.loader(seconds, config.get("sample_rate"))
        with progress(f"front end: {what}", len(rows)) as advance:
            result = frontend_frames(loader, list(rows["path"]), frontend, config, progress=advance)
        warn_skipped(result.failed, what)
        kept = rows[~rows["path"].isin(result.failed)]
        return result.stack(), kept, len(result.failed)

    def descriptors(self, clips: pd.DataFrame) -> tuple[pd.DataFrame, ClipResults]:
        """clip_id + DESCRIPTOR_COLUMNS of every usable clip of `clips` (full length), and the raw results."""
        with progress("audio descriptors", len(clips)) as advance:
            result = descriptors(self.loader(None), list(clips["path"]), progress=advance)
        warn_skipped(result.failed, str(self.folder))
        by_path = dict(zip(clips["path"], clips["clip_id"], strict=True))
        table = pd.DataFrame(result.stack() if result.arrays else np.empty((0, len(DESCRIPTOR_COLUMNS))),
                             columns=list(DESCRIPTOR_COLUMNS))
        table.insert(0, "clip_id", [by_path[p] for p in result.paths])
        return table, result
