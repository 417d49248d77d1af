"""OpenMIC-2018 (Humphrey, Durand & McFee, ISMIR 2018) from its official download.

Layout: `openmic-2018-aggregated-labels.csv` (sample_key, instrument, relevance in [0, 1], num_responses; one row
per annotated pair), `class-map.json` (instrument → index), `partitions/split01_{train,test}.csv` (one sample_key
per line) and `audio/<key[:3]>/<key>.ogg` (10 s). Relevance becomes the soft label, num_responses is kept as
`responses:<class>`, and pairs nobody annotated stay missing (NaN), never negative.

Groups: a sample key is `<FMA track id>_<offset>`, so the group is the track id (OpenMIC takes one excerpt per
recording, so these groups are single clips; they still keep a clip out of two splits).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from mirops.config import Settings
from mirops.data.cache import ArrayCache
from mirops.data.importers.common import (
    AUDIO_DIR,
    ImportSummary,
    ImportTable,
    carve_valid,
    check_unit_interval,
    checked_table,
    finalise,
    manifest_frame,
    parse_numbers,
    read_table,
    require_files,
    table_error,
    timed,
)
from mirops.data.manifest import LabelSpec, label_column
from mirops.data.staging import check_target

SOURCE = "openmic-2018"
LABELS_CSV = "openmic-2018-aggregated-labels.csv"
CLASS_MAP = "class-map.json"
PARTITIONS = {"train": "partitions/split01_train.csv", "test": "partitions/split01_test.csv"}
LABEL_COLUMNS = ("sample_key", "instrument", "relevance", "num_responses")
CLIP_SECONDS = 10.0
THRESHOLD = 0.5  # the dataset's own rule: relevance >= 0.5 is positive
KEY_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_\-]*"  # FMA keys are digits and '_'; nothing that could leave audio/
RESPONSES_PREFIX = "responses:"


def _name(text: str) -> str:
    """Instrument names compare without case and with '_' for spaces ('mallet percussion' = 'mallet_percussion')."""
    return "_".join(text.strip().lower().split())


def read_class_map(path: Path) -> list[str]:
    """The class names in the order of their indices."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as exc:
        raise table_error(path, exc.lineno, f"not valid JSON ({exc.msg})") from exc
    if not isinstance(raw, dict) or not raw or not all(isinstance(v, int) for v in raw.values()):
        raise table_error(path, None, 'expected a JSON object of instrument → index, e.g. {"accordion": 0, ...}')
    if len(set(raw.values())) != len(raw):
        raise table_error(path, None, "two instruments share an index")
    return [name for name, _ in sorted(raw.items(), key=lambda kv: kv[1])]


def read_partition(path: Path) -> pd.Series:
    """Sample keys, one per line (first field if a line has more; a 'sample_key' header is skipped)."""
    lines = path.read_text(encoding="utf-8-sig").splitlines()
    keys = pd.Series([ln.replace("\t", ",").split(",")[0].strip() for ln in lines], index=range(1, len(lines) + 1))
    keys = keys[keys != ""]
    if len(keys) and keys.iloc[0].lower() == "sample_key":
        keys = keys.iloc[1:]
    bad = ~keys.str.fullmatch(KEY_PATTERN)
    if bad.any():
        line = int(bad.idxmax())
        raise table_error(path, line, f"{keys[line]!r}: expected a sample key like 000046_3840")
    return keys


def read_labels(path: Path, classes: list[str]) -> pd.DataFrame:
    """The aggregated labels, checked row by row: known instruments, relevance in [0, 1], one row per pair."""
    df = read_table(path, LABEL_COLUMNS)
    bad_key = ~df["sample_key"].str.fullmatch(KEY_PATTERN)
    if bad_key.any():
        line = int(bad_key.idxmax())
        raise table_error(path, line, f"sample_key {df.at[line, 'sample_key']!r}: expected a key like 000046_3840")
    by_name = {_name(c): c for c in classes}
    instrument = df["instrument"].map(lambda s: by_name.get(_name(s)))
    if instrument.isna().any():
        line = int(instrument.isna().idxmax())
        raise table_error(path, line, f"instrument {df.at[line, 'instrument']!r} is not in {CLASS_MAP} "
                                      f"(expected one of {classes})")
    relevance = parse_numbers(df, "relevance", path, blank_ok=False, what="a number in [0, 1]")
    check_unit_interval(relevance, "relevance", path, "a relevance in [0, 1]")
    responses = parse_numbers(df, "num_responses", path, blank_ok=True, what="a count of responses")
    out = pd.DataFrame({"sample_key": df["sample_key"], "instrument": instrument, "relevance": relevance,
                        "num_responses": responses}, index=df.index)
    return _drop_repeats(out, path)


def _drop_repeats(df: pd.DataFrame, path: Path) -> pd.DataFrame:
    """A pair listed twice with the same relevance is harmless; with two relevances it is ambiguous."""
    pair = ["sample_key", "instrument"]
    df = df.drop_duplicates(subset=[*pair, "relevance"])
    clash = df.duplicated(subset=pair, keep=False)
    if clash.any():
        rows = df[clash]
        first = rows.iloc[0]
        lines = rows.index[(rows["sample_key"] == first["sample_key"]) & (rows["instrument"] == first["instrument"])]
        raise table_error(path, int(lines[1]), f"({first['sample_key']}, {first['instrument']}) has two different "
                                               f"relevances (also on line {int(lines[0])}); expected one row per pair")
    return df


def openmic_table(root: Path, valid_fraction: float, seed: int) -> ImportTable:
    """Manifest rows of an OpenMIC-2018 download (no audio touched): this is what the benchmark times."""
    root = Path(root)
    require_files(root, [LABELS_CSV, CLASS_MAP, *PARTITIONS.values()], "OpenMIC-2018")
    classes = read_class_map(root / CLASS_MAP)
    long = read_labels(root / LABELS_CSV, classes)
    split = _partition_of_keys(root)

    wide = long.pivot(index="sample_key", columns="instrument", values=["relevance", "num_responses"])
    keys = split.index
    relevance = wide["relevance"].reindex(index=keys, columns=classes)
    responses = wide["num_responses"].reindex(index=keys, columns=classes)
    unannotated = relevance.isna().all(axis=1).to_numpy()
    split_values = np.where(unannotated, "unlabeled", split.to_numpy())  # a key nobody annotated is unlabeled
    group = keys.str.rsplit("_", n=1).str[0]
    frame = manifest_frame(
        clip_id=keys, paths=[f"{AUDIO_DIR}/{k[:3]}/{k}.ogg" for k in keys], split=split_values, group=group,
        labels=relevance.set_axis([label_column(c) for c in classes], axis=1),
        extra=responses.set_axis([f"{RESPONSES_PREFIX}{c}" for c in classes], axis=1),
    )
    frame["split"] = carve_valid(frame["split"], frame["group"], valid_fraction, seed)
    spec = LabelSpec(classes=classes, threshold=THRESHOLD, extra={
        "source": SOURCE,
        "import": {"partition": "split01", "valid_fraction": valid_fraction, "seed": seed,
                   "valid_from": "train, by group (FMA track id)",
                   "soft_labels": "relevance (annotator agreement); responses:<class> holds num_responses"},
    })
    excluded = {"labelled_but_in_no_partition": int((~long["sample_key"].drop_duplicates().isin(keys)).sum())}
    return checked_table(ImportTable(SOURCE, frame, spec, root, [f"audio/{k[:3]}/{k}.ogg" for k in keys],
                                     CLIP_SECONDS, {k: v for k, v in excluded.items() if v}))


def _partition_of_keys(root: Path) -> pd.Series:
    """sample_key → 'train' / 'test' from split01, sorted by key; a key in both partitions is an error."""
    parts = {name: read_partition(root / rel) for name, rel in PARTITIONS.items()}
    both = set(parts["train"]) & set(parts["test"])
    if both:
        key = sorted(both)[0]
        raise table_error(root / PARTITIONS["test"], int(parts["test"][parts["test"] == key].index[0]),
                          f"sample key {key!r} is also in {PARTITIONS['train']} (expected disjoint partitions)")
    for name, keys in parts.items():
        dupes = keys[keys.duplicated()]
        if len(dupes):
            raise table_error(root / PARTITIONS[name], int(dupes.index[0]),
                              f"sample key {dupes.iloc[0]!r} listed twice")
    split = pd.concat([pd.Series(name, index=keys.to_numpy()) for name, keys in parts.items()])
    return split.sort_index()


def import_openmic(root: Path, out: Path, settings: Settings, overwrite: bool = False,
                   show_progress: bool = False) -> ImportSummary:
    """Build `out` (manifest, labels, quarantine, audio/) from an OpenMIC-2018 download."""
    check_target(Path(out), overwrite)  # fail before minutes of decoding, not after
    table, seconds = timed(lambda: openmic_table(root, settings.ingest.valid_fraction, settings.seed))
    return finalise(table, Path(out), settings.ingest, overwrite, show_progress, seconds,
                    ArrayCache(settings.cache_dir))
