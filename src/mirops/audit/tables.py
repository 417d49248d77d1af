"""Small tables derived from the manifest: what the audit suites validate, and what dashboards plot.

The suites in `expectations/` must not know a dataset's class names, so per-class facts are turned
into rows (one row per split and class) instead of columns. Pure pandas; safe on a broken manifest
(a missing column gives an empty or partial table, and the schema suite reports the real problem).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.spatial.distance import jensenshannon

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
    "classes": ["class"],
    "prevalence": ["comparison"],
    "descriptor_shift": ["descriptor", "split"],
    "audio": ["clip_id"],
    "dataset": ["dataset"],
}
ROW_DETAILS: dict[str, list[str]] = {"groups": ["splits"], "audio": ["split", "duplicate_of"],
                                     "prevalence": ["most_changed"]}
# Descriptors whose distribution should look alike across splits (continuous; ratios that are mostly 0 are
# left to the integrity bounds, their IQR is 0).
SHIFT_DESCRIPTORS = ("rms_db", "loudness_lufs", "spectral_centroid_hz", "spectral_bandwidth_hz",
                     "spectral_rolloff_hz", "spectral_flatness", "zero_crossing_rate")
AUDIO_COLUMNS = ("clip_id", "split", "sample_rate", "duration_s", "rms_db", "loudness_lufs", "peak",
                 "clipping_ratio", "silence_ratio", "cross_split_duplicates", "duplicate_of")


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


def balance_table(manifest: pd.DataFrame, spec: LabelSpec, band: tuple[float, float] = (0.3, 0.7)) -> pd.DataFrame:
    """One row per labelled split and class: annotated, positives (label >= threshold), negatives, the
    annotated fraction of the split's clips, the positive rate among annotated labels, ambiguous labels.

    Every (split, class) pair appears, with zeros when absent: a missing split must fail, not vanish.
    """
    long = label_table(manifest, spec)
    clips = long.drop_duplicates("clip_id")["split"].value_counts() if len(long) else pd.Series(dtype=int)
    long = long[long["label"].notna() & long["split"].isin(LABELLED_SPLITS)]
    counts = (
        long.assign(positive=long["label"] >= spec.threshold, ambiguous=long["label"].between(*band))
        .groupby(["split", "class"])[["positive", "ambiguous"]]
        .agg(annotated=("positive", "size"), positives=("positive", "sum"), ambiguous=("ambiguous", "sum"))
    )
    index = pd.MultiIndex.from_product([LABELLED_SPLITS, spec.classes], names=["split", "class"])
    table = counts.reindex(index, fill_value=0).astype(int).reset_index()
    table["negatives"] = table["annotated"] - table["positives"]
    split_clips = table["split"].map(clips).fillna(0).to_numpy(dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        table["annotated_fraction"] = np.where(split_clips > 0, table["annotated"] / split_clips, np.nan)
        table["positive_rate"] = np.where(table["annotated"] > 0, table["positives"] / table["annotated"], np.nan)
    return table[["split", "class", "annotated", "positives", "negatives", "ambiguous", "annotated_fraction",
                  "positive_rate"]]


def effective_groups(groups: pd.Series) -> float:
    """exp(Shannon entropy) of how positives spread over groups: 1 = all from one group, n = n equal groups."""
    counts = groups.value_counts().to_numpy(dtype=float)
    if counts.sum() == 0:
        return 0.0
    p = counts / counts.sum()
    return float(np.exp(-(p * np.log(p)).sum()))


def class_table(manifest: pd.DataFrame, spec: LabelSpec, band: tuple[float, float] = (0.3, 0.7)) -> pd.DataFrame:
    """One row per class over the labelled splits: positives, how unsure its labels are, how many groups its
    positives come from, how rare it is next to the most frequent class, and annotators per label."""
    labelled = manifest[manifest["split"].isin(LABELLED_SPLITS)] if "split" in manifest.columns else manifest
    values = _label_values(labelled, spec)
    rows = []
    for cls in spec.classes:
        col = label_column(cls)
        v = values[col] if col in values.columns else pd.Series(np.nan, index=labelled.index)
        annotated = v.notna()
        positive = v >= spec.threshold
        responses = f"responses:{cls}"
        mean_responses = (pd.to_numeric(labelled.loc[annotated, responses], errors="coerce").mean()
                          if responses in labelled.columns else np.nan)
        groups = labelled.loc[positive, "group"] if "group" in labelled.columns else pd.Series(dtype=object)
        rows.append({"class": cls, "annotated": int(annotated.sum()), "positives": int(positive.sum()),
                     "ambiguous_share": float(v.between(*band).sum() / annotated.sum()) if annotated.any() else np.nan,
                     "effective_groups": effective_groups(groups), "mean_responses": float(mean_responses)})
    table = pd.DataFrame(rows, columns=["class", "annotated", "positives", "ambiguous_share", "effective_groups",
                                        "mean_responses"])
    top = table["positives"].max() if len(table) else 0
    with np.errstate(divide="ignore"):
        table["imbalance_ratio"] = np.where(table["positives"] > 0, top / table["positives"].clip(lower=1), np.inf)
    return table


def _prevalence(manifest: pd.DataFrame, spec: LabelSpec, classes: list[str]) -> np.ndarray:
    """Positive rate per class among annotated labels (0 for a class absent from `spec`)."""
    values = _label_values(manifest, spec)
    out = []
    for cls in classes:
        col = label_column(cls)
        v = values[col].dropna() if col in values.columns else pd.Series(dtype=float)
        out.append(float((v >= spec.threshold).mean()) if len(v) else 0.0)
    return np.asarray(out)


def js_divergence(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen-Shannon divergence in bits between two label mixes (each normalised to sum 1)."""
    p, q = p + 1e-12, q + 1e-12  # a class absent on one side is a real difference, not a NaN
    return float(jensenshannon(p / p.sum(), q / q.sum(), base=2) ** 2)


def prevalence_table(manifest: pd.DataFrame, spec: LabelSpec,
                     reference: tuple[pd.DataFrame, LabelSpec, str] | None = None) -> pd.DataFrame:
    """One row per comparison of label mixes: valid vs train, test vs train, and this data vs a reference
    version's, with the JS divergence and the class whose prevalence moved most."""
    rows = []

    def compare(name: str, a: pd.DataFrame, a_spec: LabelSpec, b: pd.DataFrame, b_spec: LabelSpec) -> None:
        classes = list(dict.fromkeys([*b_spec.classes, *a_spec.classes]))
        p, q = _prevalence(a, a_spec, classes), _prevalence(b, b_spec, classes)
        moved = int(np.argmax(np.abs(p - q))) if classes else 0
        rows.append({"comparison": name, "js_divergence": js_divergence(p, q) if len(a) and len(b) else np.nan,
                     "most_changed": f"{classes[moved]} {q[moved]:.2f}→{p[moved]:.2f}" if classes else ""})

    if "split" in manifest.columns:
        train = manifest[manifest["split"] == "train"]
        for split in ("valid", "test"):
            compare(f"{split} vs train", manifest[manifest["split"] == split], spec, train, spec)
    if reference is not None:
        ref, ref_spec, ref_version = reference
        labelled = manifest[manifest["split"].isin(LABELLED_SPLITS)]
        compare(f"data vs reference {ref_version[:8]}", labelled, spec,
                ref[ref["split"].isin(LABELLED_SPLITS)], ref_spec)
    return pd.DataFrame(rows, columns=["comparison", "js_divergence", "most_changed"])


def descriptor_shift_table(audio: pd.DataFrame) -> pd.DataFrame:
    """One row per (valid/test split, descriptor): how far its median sits from train's, in train IQRs."""
    rows = []
    if len(audio) and "split" in audio.columns:
        train = audio[audio["split"] == "train"]
        for split in ("valid", "test"):
            part = audio[audio["split"] == split]
            for name in SHIFT_DESCRIPTORS:
                if name not in audio.columns or not len(part) or not len(train):
                    continue
                q1, q3 = np.nanpercentile(train[name], [25, 75])
                delta = float(np.nanmedian(part[name]) - np.nanmedian(train[name]))
                spread = max(q3 - q1, 1e-9)
                rows.append({"split": split, "descriptor": name, "median_delta": delta,
                             "shift_iqr": abs(delta) / spread})
    return pd.DataFrame(rows, columns=["split", "descriptor", "median_delta", "shift_iqr"])


def audio_table(manifest: pd.DataFrame, audio: pd.DataFrame | None, duplicates: pd.DataFrame | None
                ) -> pd.DataFrame:
    """One row per clip: its audio descriptors and the source sample rate, and how many clips in other
    splits carry the same audio (by fingerprint)."""
    if audio is None or not len(audio):
        return pd.DataFrame(columns=list(AUDIO_COLUMNS))
    base = manifest.reindex(columns=["clip_id", "split", "sample_rate"])
    table = base.merge(audio.drop(columns=["split", "sample_rate"], errors="ignore"), on="clip_id", how="inner")
    table["cross_split_duplicates"] = 0
    table["duplicate_of"] = ""
    if duplicates is not None and len(duplicates):
        pairs = pd.concat([duplicates.rename(columns={"clip_a": "clip", "clip_b": "other", "split_b": "other_split"}),
                           duplicates.rename(columns={"clip_b": "clip", "clip_a": "other", "split_a": "other_split"})])
        named = pairs.groupby("clip").apply(
            lambda g: ", ".join(f"{o} ({s})" for o, s in zip(g["other"], g["other_split"], strict=True)),
            include_groups=False)
        table["cross_split_duplicates"] = table["clip_id"].map(pairs["clip"].value_counts()).fillna(0).astype(int)
        table["duplicate_of"] = table["clip_id"].map(named).fillna("")
    return table


def dataset_table(manifest: pd.DataFrame, quarantined: int) -> pd.DataFrame:
    total = len(manifest) + quarantined
    return pd.DataFrame([{"dataset": "data", "clips": len(manifest), "quarantined": quarantined,
                          "quarantined_fraction": quarantined / total if total else 0.0}])


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


def derived_tables(manifest: pd.DataFrame, spec: LabelSpec, band: tuple[float, float] = (0.3, 0.7),
                   audio: pd.DataFrame | None = None, duplicates: pd.DataFrame | None = None,
                   reference: tuple[pd.DataFrame, LabelSpec, str] | None = None,
                   quarantined: int = 0) -> dict[str, pd.DataFrame]:
    """Every table a suite may name in its meta.table.

    `audio`: per-clip descriptors (clip_id + DESCRIPTOR_COLUMNS); `duplicates`: cross-split fingerprint
    matches (clip_a, split_a, clip_b, split_b, similarity); `reference`: another version's manifest, spec
    and id. Without them their tables are empty and their suites check nothing.
    """
    audio_rows = audio_table(manifest, audio, duplicates)
    return {
        "clips": clip_table(manifest, spec),
        "labels": label_table(manifest, spec),
        "balance": balance_table(manifest, spec, band),
        "splits": split_table(manifest),
        "groups": group_table(manifest),
        "classes": class_table(manifest, spec, band),
        "prevalence": prevalence_table(manifest, spec, reference),
        "descriptor_shift": descriptor_shift_table(audio_rows),
        "audio": audio_rows,
        "dataset": dataset_table(manifest, quarantined),
    }
