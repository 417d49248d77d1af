"""What every importer shares: forgiving table reading with strict checks, group-aware splits, the audio finaliser.

An importer is two steps. Its *table* step reads the source's label files into an `ImportTable` (the manifest
rows and the LabelSpec; no audio touched). `finalise` then decodes every clip (bad ones go to the quarantine
with a reason), brings the good ones into the output folder and writes manifest, labels and quarantine, all
inside a staged folder that replaces the old one only when everything succeeded.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd

from mirops.config import IngestParams
from mirops.data.cache import ArrayCache, audio_filler
from mirops.data.manifest import SPLITS, LabelSpec, ManifestError, validate, write_manifest
from mirops.data.quarantine import CheckPolicy, check_clips, quarantine_rows, reason_counts, write_quarantine
from mirops.data.staging import staged_dir
from mirops.progress import progress

CACHE_RATE = 16000  # the backbones' rate: decoded audio is cached at it
AUDIO_DIR = "audio"  # every importer puts audio under data/audio/, keeping the source's own layout below it
SEPARATORS = ("\t", ",", ";")
MISSING_TOKENS = {"", "nan", "na", "n/a", "none", "null"}
LINK_MODES = ("hardlink", "copy")


# ---------------------------------------------------------------- reading label files

def table_error(path: Path, line: int | None, message: str) -> ManifestError:
    where = f"{path}: line {line}" if line is not None else str(path)
    return ManifestError(f"{where}: {message}")


def require_files(root: Path, names: Sequence[str], source: str) -> None:
    """Fail before anything else when the download is not where the user said, listing what is expected."""
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such folder (expected the {source} download)")
    missing = [n for n in names if not (root / n).is_file()]
    if missing:
        raise FileNotFoundError(f"{root}: not the {source} layout; missing {', '.join(missing)} "
                                f"(expected {', '.join(names)})")


def sniff_separator(path: Path) -> str:
    """Tab, comma or semicolon: whichever the header line holds most of (comma for one-column files)."""
    with open(path, encoding="utf-8-sig", newline="") as f:
        header = f.readline()
    counts = {sep: header.count(sep) for sep in SEPARATORS}
    best = max(counts, key=counts.__getitem__)
    return best if counts[best] else ","


def read_table(path: Path, required: Sequence[str], optional: Sequence[str] = ()) -> pd.DataFrame:
    """Every cell as a stripped string, indexed by its line number in the file, blank lines dropped.

    Accepts tab or comma separators, a UTF-8 BOM, Windows line ends, quoted fields and extra columns; required
    and optional column names match case-insensitively. Missing required columns fail naming the file and
    what was expected.
    """
    path = Path(path)
    try:
        df = pd.read_csv(path, sep=sniff_separator(path), encoding="utf-8-sig", dtype=str, keep_default_na=False,
                         na_filter=False, skip_blank_lines=False, skipinitialspace=True)
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise table_error(path, None, f"not a readable CSV/TSV table ({exc})") from exc
    except pd.errors.EmptyDataError as exc:
        raise table_error(path, None, "empty file (expected a header line and rows)") from exc
    df.columns = [str(c).strip() for c in df.columns]
    wanted = {name.lower(): name for name in (*required, *optional)}
    df = df.rename(columns={c: wanted[c.lower()] for c in df.columns if c.lower() in wanted})
    missing = [name for name in required if name not in df.columns]
    if missing:
        raise table_error(path, 1, f"missing columns {missing}; the header has {list(df.columns)}")
    df.index = pd.RangeIndex(2, len(df) + 2)  # line numbers: the header is line 1
    df = df.apply(lambda col: col.str.strip())
    return df[(df != "").any(axis=1)]


def parse_numbers(df: pd.DataFrame, column: str, path: Path, blank_ok: bool, what: str) -> pd.Series:
    """Floats (NaN for blanks when `blank_ok`); anything else fails naming the line and what was expected."""
    raw = df[column]
    blank = raw.str.lower().isin(MISSING_TOKENS)
    values = pd.to_numeric(raw.where(~blank), errors="coerce")
    bad = values.isna() & (~blank | (not blank_ok))
    if bad.any():
        line = int(bad.idxmax())
        raise table_error(path, line, f"{column}={raw[line]!r}: expected {what}")
    return values.astype(float)


def check_unit_interval(values: pd.Series, column: str, path: Path, what: str) -> None:
    outside = values.notna() & ((values < 0) | (values > 1))
    if outside.any():
        line = int(outside.idxmax())
        raise table_error(path, line, f"{column}={values[line]}: outside [0, 1] (expected {what})")


def check_unique(values: pd.Series, column: str, path: Path) -> None:
    dupes = values[values.duplicated(keep=False)]
    if len(dupes):
        first, second = (int(i) for i in dupes.index[:2])
        raise table_error(path, second, f"duplicate {column} {dupes[second]!r} (also on line {first})")


def safe_relative_path(value: str, path: Path, line: int) -> str:
    """A POSIX path relative to the data root; Windows separators are accepted, escapes and absolutes are not."""
    posix = value.replace("\\", "/")
    p = PurePosixPath(posix)
    if not value or p.is_absolute() or (len(posix) > 1 and posix[1] == ":") or ".." in p.parts:
        raise table_error(path, line, f"path {value!r}: expected a path relative to the dataset folder "
                                      "(no absolute paths, no '..')")
    return str(p)


# ---------------------------------------------------------------- group-aware splits

def _held_out(groups: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of the rows whose groups GroupShuffleSplit holds out (a `fraction` of the groups)."""
    from sklearn.model_selection import GroupShuffleSplit

    n_groups = len(np.unique(groups))
    if n_groups < 2:
        raise ValueError(f"cannot split {len(groups)} clips of {n_groups} group(s) by group: need at least 2 groups")
    splitter = GroupShuffleSplit(n_splits=1, test_size=fraction, random_state=seed)
    _, held = next(splitter.split(np.zeros(len(groups)), groups=groups))
    mask = np.zeros(len(groups), dtype=bool)
    mask[held] = True
    return mask


def carve_valid(split: pd.Series, group: pd.Series, fraction: float, seed: int) -> pd.Series:
    """Move a `fraction` of the train groups to valid; no group ends up in both."""
    out = split.copy()
    train = (split == "train").to_numpy()
    held = _held_out(group.to_numpy()[train], fraction, seed)
    out.iloc[np.flatnonzero(train)[held]] = "valid"
    return out


def assign_splits(group: pd.Series, fractions: dict[str, float], seed: int) -> pd.Series:
    """train/valid/test by group in the given proportions: test held out first, then valid from the rest."""
    shares = {s: float(fractions.get(s, 0.0)) for s in ("train", "valid", "test")}
    if shares["train"] <= 0 or any(v < 0 for v in shares.values()):
        raise ValueError(f"ingest.split {fractions}: expected a positive train fraction, valid and test >= 0")
    split = pd.Series("train", index=group.index, dtype=object)
    remaining = sum(shares.values())
    for name in ("test", "valid"):
        if shares[name] == 0:
            continue
        pool = np.flatnonzero((split == "train").to_numpy())
        held = _held_out(group.to_numpy()[pool], shares[name] / remaining, seed)
        split.iloc[pool[held]] = name
        remaining -= shares[name]
    return split


# ---------------------------------------------------------------- the table an importer builds

@dataclass
class ImportTable:
    """Manifest rows and label spec from a source's label files, before any audio is touched.

    `frame.path` is where each clip will live inside the output folder (`audio/<source layout>`); its source
    file is `root / sources[i]`. `duration_s` and `sample_rate` stay empty until `finalise` decodes the clip.
    """

    source: str
    frame: pd.DataFrame
    spec: LabelSpec
    root: Path
    sources: list[str]
    expected_seconds: float | None = None
    excluded: dict[str, int] = field(default_factory=dict)  # rows left out before audio, by why

    def split_counts(self) -> dict[str, int]:
        return split_counts(self.frame)


def split_counts(frame: pd.DataFrame) -> dict[str, int]:
    counts = frame["split"].value_counts()
    return {s: int(counts.get(s, 0)) for s in SPLITS if counts.get(s, 0)}


def manifest_frame(clip_id: Sequence[str], paths: Sequence[str], split: Sequence[str], group: Sequence[str],
                   labels: pd.DataFrame, extra: pd.DataFrame | None = None) -> pd.DataFrame:
    """The contract's columns in order (audio facts NaN for now), then `label:*`, then any extra columns."""
    n = len(clip_id)
    base = pd.DataFrame({
        "clip_id": np.asarray(clip_id, dtype=object),
        "path": np.asarray(paths, dtype=object),
        "split": np.asarray(split, dtype=object),
        "group": np.asarray(group, dtype=object),
        "duration_s": np.full(n, np.nan),
        "sample_rate": np.zeros(n, dtype=np.int64),
    })
    parts = [base, labels.reset_index(drop=True)]
    if extra is not None:
        parts.append(extra.reset_index(drop=True))
    return pd.concat(parts, axis=1)


def checked_table(table: ImportTable) -> ImportTable:
    """Hold the finished table to the manifest contract (it names the offending row if not)."""
    validate(table.frame, table.spec, f"{table.source} import")
    return table


# ---------------------------------------------------------------- finalising: audio, quarantine, files

@dataclass
class ImportSummary:
    source: str
    data_dir: str
    clips: dict[str, int]            # usable clips per split
    classes: list[str]
    quarantined: int
    quarantine_reasons: dict[str, int]
    excluded: dict[str, int]          # rows of the label files left out before audio, by why
    linked: dict[str, int]            # how audio entered the folder: hardlink / copy
    seconds: float
    table_seconds: float

    def line(self) -> str:
        splits = ", ".join(f"{s} {n}" for s, n in self.clips.items())
        why = ", ".join(f"{n} {r}" for r, n in self.quarantine_reasons.items()) or "none"
        return (f"{sum(self.clips.values())} clips ({splits}), {len(self.classes)} classes into {self.data_dir}; "
                f"{self.quarantined} quarantined ({why}); {self.seconds:.1f} s")


def bring_in(source: Path, target: Path, link: str) -> str:
    """Hardlink when asked and possible (same filesystem), else copy; returns which it did."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if link == "hardlink":
        try:
            os.link(source, target)
            return "hardlink"
        except OSError:
            pass  # another filesystem, or links not allowed: a copy is always possible
    shutil.copyfile(source, target)
    return "copy"


@contextmanager
def progress_bar(total: int, description: str, enabled: bool) -> Iterator[Callable[[int], None] | None]:
    """Progress on stderr (stdout stays free for --json): a bar, or log lines off a terminal; callable from the
    checking threads."""
    if not enabled:
        yield None
        return
    with progress(description, total) as advance:
        yield lambda n: advance(n)


def finalise(table: ImportTable, out: Path, ingest: IngestParams, overwrite: bool = False,
             show_progress: bool = False, table_seconds: float = 0.0, cache: ArrayCache | None = None
             ) -> ImportSummary:
    """Check every clip, bring the good ones into `out`, write manifest, labels and quarantine (atomically).

    With `cache`, the decoded audio is kept (16 kHz): the version check and training do not decode it again.
    """
    started = time.perf_counter()
    if ingest.link not in LINK_MODES:
        raise ValueError(f"ingest.link={ingest.link!r}: expected one of {LINK_MODES}")
    frame = table.frame.reset_index(drop=True)
    with staged_dir(out, overwrite) as staged:
        checked = _check_audio(table, frame, ingest, show_progress, cache)
        good = np.array([c.info is not None for c in checked], dtype=bool)
        if not good.any():
            raise ValueError(f"{table.source} import: none of the {len(frame)} clips is usable "
                             f"({reason_counts(quarantine_rows(frame, checked))}); is the audio under {table.root}?")
        infos = [c.info for c in checked if c.info is not None]
        frame.loc[good, "duration_s"] = [i.duration_s for i in infos]
        frame.loc[good, "sample_rate"] = [i.sample_rate for i in infos]
        linked = _bring_in_all(table, frame, np.flatnonzero(good), staged, ingest.link, show_progress)
        quarantine = quarantine_rows(frame, checked)
        quarantine["source"] = [table.sources[i] for i in np.flatnonzero(~good)]  # where it is, under the import root
        write_manifest(staged, frame[good], table.spec)
        write_quarantine(staged, quarantine)
    return ImportSummary(
        source=table.source, data_dir=str(Path(out).resolve()), clips=split_counts(frame[good]),
        classes=list(table.spec.classes), quarantined=len(quarantine), quarantine_reasons=reason_counts(quarantine),
        excluded=dict(table.excluded), linked=linked, seconds=table_seconds + time.perf_counter() - started,
        table_seconds=table_seconds,
    )


def _check_audio(table: ImportTable, frame: pd.DataFrame, ingest: IngestParams, show_progress: bool,
                 cache: ArrayCache | None) -> list:
    """Decode every source file (threads); a clip under `short_fraction` of the source's length is too short."""
    sources = pd.DataFrame({"clip_id": frame["clip_id"], "path": table.sources})
    policy = CheckPolicy(ingest.min_seconds, ingest.short_fraction)
    with progress_bar(len(frame), f"checking {table.source} audio", show_progress) as advance:
        return check_clips(table.root, sources, policy, [table.expected_seconds] * len(frame), ingest.workers,
                           advance, audio_filler(cache, CACHE_RATE) if cache is not None else None)


def _bring_in_all(table: ImportTable, frame: pd.DataFrame, rows: np.ndarray, staged: Path, link: str,
                  show_progress: bool) -> dict[str, int]:
    done = {"hardlink": 0, "copy": 0}
    with progress_bar(len(rows), f"{link}ing audio into place", show_progress) as advance:
        for i in rows:
            done[bring_in(table.root / table.sources[i], staged / frame.at[i, "path"], link)] += 1
            if advance is not None:
                advance(1)
    return {k: v for k, v in done.items() if v}


def timed(build: Callable[[], ImportTable]) -> tuple[ImportTable, float]:
    started = time.perf_counter()
    table = build()
    return table, time.perf_counter() - started
