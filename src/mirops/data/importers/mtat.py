"""MagnaTagATune (Law et al., ISMIR 2009) from `annotations_final.csv` and the mp3 tree `0/ … f/`.

Labels are the N most frequent tags (hard 0/1, every clip annotated for every tag). Tag frequency is counted
over the whole annotation table, the convention behind the 50-tag set every MTAT paper reports on (Dieleman &
Schrauwen 2014, Lee et al. 2017, Won et al. 2020), so results stay comparable; it uses no split information.

Splits:
- `directory`: folders 0–b train, c valid, d–f test.
- `cleaned`: the 15,244 / 1,529 / 4,332 clip lists of Won et al. (`train.npy`, `valid.npy`, `test.npy` from
  github.com/minzwon/sota-music-tagging-models, split/mtat: arrays of "index<TAB>path"), or the same lists as
  Lee et al. published them (`train_list_pub.cP` … from github.com/jongpillee/music_dataset_split, MTAT_split),
  or plain `train.tsv`/`train.txt` … with one path (or "index<TAB>path") per line. Clips in no list are left out.

Groups: the song, i.e. the mp3 file name without its trailing `-<start>-<end>.mp3` segment.
"""

from __future__ import annotations

import io
import pickle
import re
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd

from mirops.config import Settings
from mirops.data.cache import ArrayCache
from mirops.data.importers.common import (
    AUDIO_DIR,
    ImportSummary,
    ImportTable,
    check_unique,
    checked_table,
    finalise,
    manifest_frame,
    read_table,
    require_files,
    safe_relative_path,
    table_error,
    timed,
)
from mirops.data.manifest import LabelSpec, label_column
from mirops.data.staging import check_target

SOURCE = "magnatagatune"
ANNOTATIONS = "annotations_final.csv"
CLIP_SECONDS = 29.1
DIRECTORY_SPLIT = {**dict.fromkeys("0123456789ab", "train"), "c": "valid", **dict.fromkeys("def", "test")}
SPLIT_NAMES = ("train", "valid", "test")
CLEANED_FILES = {  # file name patterns, in the order they are looked for
    "npy": "{}.npy",              # Won et al. 2020
    "cP": "{}_list_pub.cP",       # Lee et al. 2017
    "tsv": "{}.tsv",
    "txt": "{}.txt",
}
SPLIT_DIRS = ("", "split", "split/mtat", "MTAT_split")  # where under ROOT the lists are looked for
SEGMENT = re.compile(r"-\d+-\d+\.mp3$", re.IGNORECASE)
MIN_NUMERIC_SHARE = 0.5  # a column mostly of numbers is a tag (bad cells fail); others are extra, ignored


# ---------------------------------------------------------------- annotations

def read_annotations(path: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(clip_id + mp3_path, binary tag matrix) indexed by line number; every cell checked."""
    df = read_table(path, ("clip_id", "mp3_path"))
    candidates = [c for c in df.columns if c not in ("clip_id", "mp3_path") and not c.startswith("Unnamed:")]
    numbers = df[candidates].apply(pd.to_numeric, errors="coerce")
    tags = [c for c in candidates if numbers[c].notna().mean() >= MIN_NUMERIC_SHARE]
    if not tags:
        raise table_error(path, 1, "no tag columns (expected clip_id, one 0/1 column per tag, mp3_path)")
    values = numbers[tags]
    bad = ~values.isin([0, 1])
    if bad.to_numpy().any():
        line = int(bad.any(axis=1).idxmax())
        column = bad.columns[bad.loc[line].to_numpy()][0]
        raise table_error(path, line, f"tag {column!r} = {df.at[line, column]!r}: expected 0 or 1 "
                                      "(MagnaTagATune tags are binary)")
    check_unique(df["clip_id"], "clip_id", path)
    paths = pd.Series([safe_relative_path(p, path, line) for line, p in df["mp3_path"].items()], index=df.index)
    check_unique(paths, "mp3_path", path)
    return pd.DataFrame({"clip_id": df["clip_id"], "mp3_path": paths}), values.astype(np.float32)


def top_tags(values: pd.DataFrame, n: int) -> list[str]:
    """The n most frequent tags over all clips, most frequent first (ties: the file's column order)."""
    if n < 1:
        raise ValueError(f"--top-tags {n}: expected at least 1")
    counts = values.sum(axis=0).sort_values(ascending=False, kind="stable")
    return list(counts.index[:n])


def song_of(mp3_path: str) -> str:
    """The song a clip was cut from: 'f/artist-album-01-title-30-59.mp3' → 'artist-album-01-title'."""
    name = PurePosixPath(mp3_path).name
    return SEGMENT.sub("", name) if SEGMENT.search(name) else PurePosixPath(name).stem


# ---------------------------------------------------------------- splits

def directory_split(clips: pd.DataFrame, path: Path) -> pd.Series:
    folder = clips["mp3_path"].str.split("/").str[0].str.lower()
    split = folder.map(DIRECTORY_SPLIT)
    if split.isna().any():
        line = int(split.isna().idxmax())
        raise table_error(path, line, f"mp3_path {clips.at[line, 'mp3_path']!r}: expected it under one of the "
                                      "folders 0–f (--split directory maps 0–b train, c valid, d–f test)")
    return split


def find_split_files(root: Path, split_dir: Path | None) -> tuple[dict[str, Path], str]:
    """The three cleaned-split lists and their format, from --split-dir or the usual places under ROOT."""
    places = [Path(split_dir)] if split_dir else [root / d for d in SPLIT_DIRS]
    for place in places:
        for kind, pattern in CLEANED_FILES.items():
            files = {s: place / pattern.format(s) for s in SPLIT_NAMES}
            if all(f.is_file() for f in files.values()):
                return files, kind
    expected = "; ".join(", ".join(p.format(s) for s in SPLIT_NAMES) for p in CLEANED_FILES.values())
    where = ", ".join(str(p) for p in places)
    raise FileNotFoundError(
        f"--split cleaned: no split lists found in {where}. Expected one of these sets: {expected} "
        "(train.npy/valid.npy/test.npy from github.com/minzwon/sota-music-tagging-models split/mtat/, or "
        "*_list_pub.cP from github.com/jongpillee/music_dataset_split MTAT_split/); pass --split-dir DIR, "
        "or use --split directory")


class _ListsOnly(pickle.Unpickler):
    """The published .cP files are pickled lists of strings; refuse anything that would run code."""

    def find_class(self, module: str, name: str):
        raise pickle.UnpicklingError(f"{module}.{name}: only lists of paths are accepted in a split list")


def read_split_list(path: Path, kind: str) -> list[str]:
    """Entries of one split list, normalised to mp3 paths ('index<TAB>path' → path, '.npy' → '.mp3')."""
    try:
        if kind == "npy":
            raw = [str(x) for x in np.load(path, allow_pickle=False).ravel()]
        elif kind == "cP":
            loaded = _ListsOnly(io.BytesIO(path.read_bytes()), encoding="latin1").load()
            raw = [x.decode() if isinstance(x, bytes) else str(x) for x in loaded]
        else:
            raw = [ln for ln in path.read_text(encoding="utf-8-sig").splitlines() if ln.strip()]
    except (ValueError, OSError, pickle.UnpicklingError, EOFError, TypeError) as exc:
        raise table_error(path, None, f"cannot read this split list ({exc}); expected a list of "
                                      "'index<TAB>path' or path strings") from exc
    entries = [x.split("\t")[-1].strip().removeprefix("./") for x in raw]
    return [e[: -len(".npy")] + ".mp3" if e.endswith(".npy") else e for e in entries]


def cleaned_split(clips: pd.DataFrame, root: Path, split_dir: Path | None) -> tuple[pd.Series, list[str]]:
    """'train'/'valid'/'test' per clip from the published lists (NaN for clips in none) and the file names used."""
    files, kind = find_split_files(root, split_dir)
    line_of_path = pd.Series(clips.index, index=clips["mp3_path"].to_numpy())
    line_of_name = pd.Series(clips.index, index=[PurePosixPath(p).name for p in clips["mp3_path"]])
    line_of_name = line_of_name[~line_of_name.index.duplicated(keep=False)]
    split = pd.Series(np.nan, index=clips.index, dtype=object)
    for name, file in files.items():
        for number, entry in enumerate(read_split_list(file, kind), start=1):
            line = line_of_path.get(entry, line_of_name.get(PurePosixPath(entry).name))
            if line is None:
                raise table_error(file, None, f"entry {number} ({entry!r}) is not in {ANNOTATIONS}")
            if isinstance(split[line], str):
                raise table_error(file, None, f"entry {number} ({entry!r}) is already in the {split[line]} list "
                                              "(expected disjoint lists)")
            split[line] = name
    return split, [f.name for f in files.values()]


def locate_audio(root: Path, paths: pd.Series) -> str:
    """'' when the 0/ … f/ folders sit in ROOT, 'mp3/' when they sit in ROOT/mp3 (both are common)."""
    sample = paths.iloc[:50]
    for prefix in ("", "mp3/"):
        if any((root / f"{prefix}{p}").exists() for p in sample):
            return prefix
    return ""


# ---------------------------------------------------------------- the table and the import

def mtat_table(root: Path, split: str = "cleaned", n_tags: int = 50, split_dir: Path | None = None) -> ImportTable:
    """Manifest rows of a MagnaTagATune download (no audio decoded)."""
    root = Path(root)
    if split not in ("cleaned", "directory"):
        raise ValueError(f"--split {split!r}: expected 'cleaned' or 'directory'")
    require_files(root, [ANNOTATIONS], "MagnaTagATune")
    clips, values = read_annotations(root / ANNOTATIONS)
    tags = top_tags(values, n_tags)
    if split == "directory":
        split_of, split_files = directory_split(clips, root / ANNOTATIONS), []
    else:
        split_of, split_files = cleaned_split(clips, root, split_dir)
    keep = split_of.notna().to_numpy()
    clips, values, split_of = clips[keep], values[keep], split_of[keep]
    prefix = locate_audio(root, clips["mp3_path"])
    frame = manifest_frame(
        clip_id=clips["clip_id"], paths=[f"{AUDIO_DIR}/{p}" for p in clips["mp3_path"]], split=split_of,
        group=[song_of(p) for p in clips["mp3_path"]],
        labels=values[tags].set_axis([label_column(t) for t in tags], axis=1),
    )
    spec = LabelSpec(classes=tags, threshold=0.5, extra={
        "source": SOURCE,
        "import": {"split": split, "split_files": split_files, "top_tags": n_tags,
                   "tags_ranked_on": f"all {len(keep)} clips of {ANNOTATIONS}", "group": "song"},
    })
    excluded = {"not_in_cleaned_split": int((~keep).sum())} if (~keep).any() else {}
    sources = [f"{prefix}{p}" for p in clips["mp3_path"]]
    return checked_table(ImportTable(SOURCE, frame, spec, root, sources, CLIP_SECONDS, excluded))


def import_mtat(root: Path, out: Path, settings: Settings, split: str = "cleaned", n_tags: int = 50,
                split_dir: Path | None = None, overwrite: bool = False, show_progress: bool = False) -> ImportSummary:
    """Build `out` (manifest, labels, quarantine, audio/) from a MagnaTagATune download."""
    check_target(Path(out), overwrite)
    table, seconds = timed(lambda: mtat_table(root, split, n_tags, split_dir))
    return finalise(table, Path(out), settings.ingest, overwrite, show_progress, seconds,
                    ArrayCache(settings.cache_dir))
