"""Any folder of audio plus a CSV: `path` (relative to the folder), one column per class, optional
`clip_id`, `split` and `group`.

Class columns are every other column, or, when some columns are named `label:<class>`, exactly those (then
other columns are extra and ignored). A cell is a confidence in [0, 1]; a blank (or NaN) cell is "not
annotated". With `classes` given, the CSV must have exactly those class columns.

Groups: the `group` column; without one, each file is its own group (`group_by="folder"`: its parent folder,
for collections where a folder is a session or an album; never the default, because folder-per-class layouts
would then put whole classes into one split).

Splits: the `split` column (train/valid/test/unlabeled; when it has no valid rows, valid is carved from train by
group); without one, groups whose clips carry no label at all become `unlabeled` and the rest is split by group
in the `ingest.split` proportions.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import pandas as pd

from mirops.config import Settings
from mirops.data.cache import ArrayCache
from mirops.data.importers.common import (
    AUDIO_DIR,
    ImportSummary,
    ImportTable,
    assign_splits,
    carve_valid,
    check_unique,
    check_unit_interval,
    checked_table,
    finalise,
    manifest_frame,
    parse_numbers,
    read_table,
    safe_relative_path,
    table_error,
    timed,
)
from mirops.data.manifest import LABEL_PREFIX, SPLITS, LabelSpec, label_column
from mirops.data.staging import check_target

SOURCE = "folder"
RESERVED = ("path", "clip_id", "split", "group")
SPLIT_ALIASES = {"val": "valid", "validation": "valid", "dev": "valid", "training": "train", "eval": "test",
                 "unlabelled": "unlabeled"}
GROUP_BY = ("file", "folder")


def class_columns(df: pd.DataFrame, path: Path, classes: list[str] | None) -> dict[str, str]:
    """class name → CSV column, in the order of `classes` (if given) or of the file."""
    prefixed = [c for c in df.columns if c.startswith(LABEL_PREFIX)]
    columns = prefixed or [c for c in df.columns if c not in RESERVED]
    found = {c[len(LABEL_PREFIX):] if prefixed else c: c for c in columns}
    if not found:
        raise table_error(path, 1, f"no class columns (expected path and one column per class); header: "
                                   f"{list(df.columns)}")
    if classes is None:
        return found
    missing = [c for c in classes if c not in found]
    if missing:
        raise table_error(path, 1, f"missing columns for classes {missing} (the header has {list(df.columns)})")
    unknown = [c for c in found if c not in classes]
    if unknown:
        raise table_error(path, 1, f"unknown classes {unknown}: expected only {classes}")
    return {c: found[c] for c in classes}


def read_split_column(df: pd.DataFrame, path: Path) -> pd.Series:
    split = df["split"].str.lower().replace(SPLIT_ALIASES)
    bad = ~split.isin(SPLITS)
    if bad.any():
        line = int(bad.idxmax())
        raise table_error(path, line, f"split {df.at[line, 'split']!r}: expected one of {SPLITS}")
    return split


def groups_of(df: pd.DataFrame, paths: pd.Series, group_by: str) -> tuple[pd.Series, str]:
    if group_by not in GROUP_BY:
        raise ValueError(f"--group-by {group_by!r}: expected one of {GROUP_BY}")
    own = paths if group_by == "file" else paths.map(lambda p: str(PurePosixPath(p).parent))
    if "group" in df.columns:
        return df["group"].where(df["group"] != "", own), "group column (blank: " + group_by + ")"
    return own, group_by


def generated_splits(labels: pd.DataFrame, group: pd.Series, fractions: dict[str, float], seed: int) -> pd.Series:
    """Groups with no label at all → unlabeled; the others train/valid/test by group."""
    labelled_group = labels.notna().any(axis=1).groupby(group).transform("any")
    split = pd.Series("unlabeled", index=group.index, dtype=object)
    if labelled_group.any():
        try:
            split[labelled_group] = assign_splits(group[labelled_group], fractions, seed)
        except ValueError as exc:
            raise ValueError(f"{exc}; add a split column to the CSV, more groups, or set ingest.split "
                             "(e.g. --set 'ingest.split={\"train\": 0.8, \"test\": 0.2}')") from exc
    return split


def folder_table(root: Path, labels_csv: Path, fractions: dict[str, float], valid_fraction: float, seed: int,
                 classes: list[str] | None = None, threshold: float = 0.5, group_by: str = "file") -> ImportTable:
    """Manifest rows of a folder + CSV (no audio touched)."""
    root, labels_csv = Path(root), Path(labels_csv)
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"--threshold {threshold}: expected a value in [0, 1]")
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such folder (expected the folder holding the audio)")
    if not labels_csv.is_file():
        raise FileNotFoundError(f"{labels_csv}: no such file (expected a CSV: path, one column per class, "
                                "optional clip_id/split/group)")
    df = read_table(labels_csv, ("path",), ("clip_id", "split", "group"))
    columns = class_columns(df, labels_csv, classes)
    labels = pd.DataFrame(index=df.index)
    for name, column in columns.items():
        values = parse_numbers(df, column, labels_csv, blank_ok=True, what="a number in [0, 1] or blank")
        check_unit_interval(values, column, labels_csv, "a confidence in [0, 1]; blank = not annotated")
        labels[label_column(name)] = values
    paths = pd.Series([safe_relative_path(p, labels_csv, line) for line, p in df["path"].items()], index=df.index)
    check_unique(paths, "path", labels_csv)
    clip_id = df["clip_id"] if "clip_id" in df.columns else paths.map(lambda p: str(PurePosixPath(p).with_suffix("")))
    check_unique(clip_id, "clip_id", labels_csv)
    group, group_source = groups_of(df, paths, group_by)

    valid_carved = False
    if "split" in df.columns:
        split = read_split_column(df, labels_csv)
        if not (split == "valid").any() and (split == "train").any():
            split, valid_carved = carve_valid(split, group, valid_fraction, seed), True
    else:
        split = generated_splits(labels, group, fractions, seed)
    frame = manifest_frame(clip_id, [f"{AUDIO_DIR}/{p}" for p in paths], split, group, labels)
    spec = LabelSpec(classes=list(columns), threshold=threshold, extra={
        "source": SOURCE,
        "import": {"labels": labels_csv.name, "group": group_source, "seed": seed,
                   "split": "from the CSV" if "split" in df.columns else f"generated by group, {fractions}",
                   "valid_carved": {"fraction": valid_fraction} if valid_carved else False},
    })
    return checked_table(ImportTable(SOURCE, frame, spec, root, list(paths)))


def import_folder(root: Path, labels_csv: Path, out: Path, settings: Settings, classes: list[str] | None = None,
                  threshold: float = 0.5, group_by: str = "file", overwrite: bool = False,
                  show_progress: bool = False) -> ImportSummary:
    """Build `out` (manifest, labels, quarantine, audio/) from a folder of audio and a label CSV."""
    check_target(Path(out), overwrite)
    ingest = settings.ingest
    table, seconds = timed(lambda: folder_table(root, labels_csv, ingest.split, ingest.valid_fraction, settings.seed,
                                                classes, threshold, group_by))
    return finalise(table, Path(out), ingest, overwrite, show_progress, seconds, ArrayCache(settings.cache_dir))

