"""Small tables derived from the manifest: what the audit suites validate, and what dashboards plot.

The suites in `expectations/` must not know a dataset's class names, so per-class facts are turned
into rows (one row per split and class) instead of columns. Pure pandas; safe on a broken manifest
(a missing column gives an empty or partial table, and the schema suite reports the real problem).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from mirops.data.manifest import SPLITS, LabelSpec, label_column

LABELLED_SPLITS = ("train", "valid", "test")

# Per table (as named in a suite's meta.table): the columns that name a failing row in messages
# ("drums/valid"), and extra columns shown beside it.
ROW_NAMES: dict[str, list[str]] = {
    "clips": ["clip_id"],
    "labels": ["clip_id", "class"],
    "balance": ["class", "split"],
    "splits": ["split"],
    "groups": ["group"],
}
ROW_DETAILS: dict[str, list[str]] = {"groups": ["splits"]}


def _label_values(manifest: pd.DataFrame, spec: LabelSpec) -> pd.DataFrame:
    """The spec's label columns that exist, as floats (non-numeric entries become NaN)."""
    cols = [label_column(c) for c in spec.classes if label_column(c) in manifest.columns]
    return manifest[cols].apply(pd.to_numeric, errors="coerce").astype(float)


def clip_table(manifest: pd.DataFrame, spec: LabelSpec) -> pd.DataFrame:
    """The manifest itself plus `label_min`/`label_max` per clip, so one suite can bound every label
    without naming the classes (NaN where a clip has no annotation at all)."""
    values = _label_values(manifest, spec).reset_index(drop=True)
    out = manifest.reset_index(drop=True).copy()
    out["label_min"] = values.min(axis=1, skipna=True)
    out["label_max"] = values.max(axis=1, skipna=True)
    return out


def label_table(manifest: pd.DataFrame, spec: LabelSpec) -> pd.DataFrame:
    """Long format: one row per (clip, class) with `label` (NaN = not annotated)."""
    values = _label_values(manifest, spec)
    values.columns = [c.removeprefix("label:") for c in values.columns]
    ids = manifest.reindex(columns=["clip_id", "split"]).reset_index(drop=True)
    wide = pd.concat([ids, values.reset_index(drop=True)], axis=1)
    long = wide.melt(id_vars=["clip_id", "split"], var_name="class", value_name="label")
    return long[["clip_id", "split", "class", "label"]]


def balance_table(manifest: pd.DataFrame, spec: LabelSpec) -> pd.DataFrame:
    """One row per labelled split and class: annotated, positives (label >= threshold), negatives.

    Every (split, class) pair appears, with zeros when absent: a missing split must fail, not vanish.
    """
    long = label_table(manifest, spec)
    long = long[long["label"].notna() & long["split"].isin(LABELLED_SPLITS)]
    counts = (
        long.assign(positive=long["label"] >= spec.threshold)
        .groupby(["split", "class"])["positive"]
        .agg(annotated="size", positives="sum")
    )
    index = pd.MultiIndex.from_product([LABELLED_SPLITS, spec.classes], names=["split", "class"])
    table = counts.reindex(index, fill_value=0).astype(int).reset_index()
    table["negatives"] = table["annotated"] - table["positives"]
    return table[["split", "class", "annotated", "positives", "negatives"]]


def split_table(manifest: pd.DataFrame) -> pd.DataFrame:
    """One row per split: clips, fraction of all clips, and `labelled_fraction` (of train+valid+test),
    which the bounds apply to, so an unlabeled pool of any size does not skew them."""
    splits = manifest["split"] if "split" in manifest.columns else pd.Series([], dtype=object)
    clips = splits.value_counts().reindex(list(SPLITS), fill_value=0).astype(int)
    labelled = int(clips[list(LABELLED_SPLITS)].sum())
    table = pd.DataFrame({"split": list(SPLITS), "clips": clips.to_numpy()})
    table["fraction"] = table["clips"] / len(manifest) if len(manifest) else 0.0
    table["labelled_fraction"] = table["clips"] / labelled if labelled else 0.0
    table.loc[table["split"] == "unlabeled", "labelled_fraction"] = np.nan
    return table


def group_table(manifest: pd.DataFrame) -> pd.DataFrame:
    """One row per group: how many distinct splits (unlabeled included) its clips fall in, and which."""
    columns = ["group", "n_splits", "splits", "clips"]
    if not {"group", "split"} <= set(manifest.columns):
        return pd.DataFrame(columns=columns)
    # Vectorised: a Python call per group takes seconds on datasets with tens of thousands of groups.
    clips = manifest.dropna(subset=["group"]).groupby("group").size().rename("clips")
    pairs = manifest.loc[manifest["group"].notna() & manifest["split"].notna(), ["group", "split"]]
    pairs = pairs.astype({"split": str}).drop_duplicates().sort_values(["group", "split"])
    n_splits = pairs.groupby("group").size().reindex(clips.index, fill_value=0).rename("n_splits")
    splits = pairs.groupby("group")["split"].first().reindex(clips.index, fill_value="").rename("splits")
    straddling = n_splits.index[n_splits > 1]  # few: only these need their splits joined
    joined = pairs[pairs["group"].isin(straddling)].groupby("group")["split"].agg(",".join)
    splits.loc[joined.index] = joined
    table = pd.concat([n_splits, splits, clips], axis=1).rename_axis("group").reset_index()
    return table[columns]


def derived_tables(manifest: pd.DataFrame, spec: LabelSpec) -> dict[str, pd.DataFrame]:
    """Every table a suite may name in its meta.table."""
    return {
        "clips": clip_table(manifest, spec),
        "labels": label_table(manifest, spec),
        "balance": balance_table(manifest, spec),
        "splits": split_table(manifest),
        "groups": group_table(manifest),
    }
