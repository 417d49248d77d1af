"""The quarantine: clips of a dataset version that cannot be used, each with a reason; the run goes on.

`check_clips` decodes every clip of a manifest (in threads: libsndfile and torchaudio release the GIL),
keeps the good ones and returns the others as quarantine rows. `quarantine_dataset` applies that to a
dataset folder in place: bad clips move from `manifest.parquet` to `quarantine.parquet`, which sits
beside it and is versioned with it (DVC).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from mirops.atomic import atomic_write
from mirops.data.audio import AudioError, ClipInfo, check_path, check_samples, decode, to_mono
from mirops.data.manifest import read_manifest, write_manifest

QUARANTINE = "quarantine.parquet"
QUARANTINE_COLUMNS = ("clip_id", "path", "split", "group", "reason", "detail")
SHORT_FRACTION = 0.5  # "far shorter than expected": under half the expected duration


@dataclass(frozen=True)
class CheckPolicy:
    """What makes a clip usable. `expected_seconds` per clip comes from the source (e.g. OpenMIC: 10 s)."""

    min_seconds: float = 0.5
    short_fraction: float = SHORT_FRACTION


@dataclass(frozen=True)
class CheckedClip:
    clip_id: str
    info: ClipInfo | None
    reason: str | None = None
    detail: str = ""


def check_file(path: Path, expected_seconds: float | None, policy: CheckPolicy,
               on_wave: Callable[[Path, np.ndarray, ClipInfo], None] | None = None,
               known: Callable[[Path], float | None] | None = None) -> ClipInfo | None:
    """Decode and check one file; AudioError when it belongs in quarantine.

    `on_wave(path, mono_wave, info)` sees the decoded mono samples (e.g. to fill the audio cache).
    `known(path)` gives the duration of content that passed a check before (e.g. its audio is cached):
    then only the length is checked again, nothing is decoded, and None is returned for the info.
    """
    floor = policy.min_seconds
    if expected_seconds and expected_seconds > 0:
        floor = max(floor, policy.short_fraction * expected_seconds)
    check_path(path)
    seconds = known(path) if known is not None else None
    if seconds is not None:
        if seconds < floor:
            raise AudioError(path, "too_short", f"{seconds:.2f} s, expected at least {floor:.2f} s")
        return None
    raw, info = decode(path)
    check_samples(path, raw, info.sample_rate, floor)
    if on_wave is not None:
        on_wave(path, to_mono(raw), info)
    return info


def check_clips(
    data_dir: Path,
    clips: pd.DataFrame,
    policy: CheckPolicy | None = None,
    expected_seconds: Iterable[float | None] | None = None,
    workers: int | None = None,
    progress: Callable[[int], None] | None = None,
    on_wave: Callable | None = None,
    known: Callable[[Path], float | None] | None = None,
) -> list[CheckedClip]:
    """One CheckedClip per row of `clips` (columns clip_id, path), in order; never raises for a bad file.

    With `known` (see `check_file`) a good clip's `info` may be None: it passed before and was not decoded.
    """
    policy = policy or CheckPolicy()
    data_dir = Path(data_dir)
    expected = list(expected_seconds) if expected_seconds is not None else [None] * len(clips)

    def one(args: tuple[str, str, float | None]) -> CheckedClip:
        clip_id, path, seconds = args
        try:
            info = check_file(data_dir / path, seconds, policy, on_wave, known)
            return CheckedClip(clip_id, info)
        except AudioError as exc:
            return CheckedClip(clip_id, None, exc.reason, exc.detail)
        finally:
            if progress is not None:
                progress(1)

    jobs = list(zip(clips["clip_id"], clips["path"], expected, strict=True))
    workers = workers or min(4, os.cpu_count() or 1)
    if workers <= 1 or len(jobs) < 2:
        return [one(j) for j in jobs]
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(one, jobs))


def quarantine_rows(clips: pd.DataFrame, checked: list[CheckedClip]) -> pd.DataFrame:
    """The quarantine table for the failed entries of `checked` (rows of `clips` in the same order)."""
    bad = [i for i, c in enumerate(checked) if c.reason is not None]
    rows = clips.iloc[bad]
    out = pd.DataFrame({
        "clip_id": rows["clip_id"].astype(str).to_numpy(),
        "path": rows["path"].astype(str).to_numpy(),
        "split": rows["split"].astype(str).to_numpy() if "split" in rows else "",
        "group": rows["group"].astype(str).to_numpy() if "group" in rows else "",
        "reason": [checked[i].reason for i in bad],
        "detail": [checked[i].detail for i in bad],
    }, columns=list(QUARANTINE_COLUMNS))
    return out


def read_quarantine(data_dir: Path) -> pd.DataFrame:
    path = Path(data_dir) / QUARANTINE
    if not path.exists():
        return pd.DataFrame(columns=list(QUARANTINE_COLUMNS))
    return pd.read_parquet(path)


def write_quarantine(data_dir: Path, table: pd.DataFrame) -> None:
    atomic_write(Path(data_dir) / QUARANTINE, lambda tmp: table.reset_index(drop=True).to_parquet(tmp, index=False))


def reason_counts(table: pd.DataFrame) -> dict[str, int]:
    return {str(k): int(v) for k, v in table["reason"].value_counts().sort_index().items()} if len(table) else {}


@dataclass(frozen=True)
class QuarantineReport:
    checked: int
    kept: int
    quarantined: int  # total in the table, this check and earlier ones
    new: int  # moved to quarantine by this check
    reasons: dict[str, int]
    table_path: str

    def line(self) -> str:
        why = ", ".join(f"{n} {r}" for r, n in self.reasons.items()) or "none"
        return f"{self.kept} clips usable, {self.quarantined} quarantined ({why})"


def quarantine_dataset(data_dir: Path, policy: CheckPolicy | None = None, workers: int | None = None,
                       on_wave: Callable | None = None, progress: Callable[[int], None] | None = None,
                       known: Callable[[Path], float | None] | None = None) -> QuarantineReport:
    """Check every clip of the dataset in `data_dir`; move the bad ones from the manifest to the quarantine.

    The quarantine is written first, then the manifest, each atomically: an interruption leaves at
    worst a clip listed in both (the next check settles it), never a clip lost from both.
    """
    data_dir = Path(data_dir)
    df, spec = read_manifest(data_dir)
    checked = check_clips(data_dir, df, policy, df["duration_s"].tolist(), workers, progress, on_wave, known)
    new = quarantine_rows(df, checked)
    old = read_quarantine(data_dir)
    table = pd.concat([old[~old["clip_id"].isin(new["clip_id"])], new], ignore_index=True) if len(old) else new
    if len(new):
        write_quarantine(data_dir, table)
        write_manifest(data_dir, df[~df["clip_id"].isin(new["clip_id"])], spec)
    elif not (data_dir / QUARANTINE).exists():
        write_quarantine(data_dir, table)  # an empty table says "checked, nothing wrong"
    return QuarantineReport(len(df), len(df) - len(new), len(table), len(new), reason_counts(table),
                            str(data_dir / QUARANTINE))

