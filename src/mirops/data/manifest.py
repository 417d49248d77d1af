"""The data contract: one row per clip in `manifest.parquet`, the task in `labels.json`.

Columns: clip_id, path (relative to the data root), split, group, duration_s, sample_rate and one
`label:<class>` column per class holding a soft confidence in [0, 1] or NaN (not annotated).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd

from mirops.atomic import atomic_write, atomic_write_bytes

MANIFEST = "manifest.parquet"
LABELS = "labels.json"
LABEL_PREFIX = "label:"
SPLITS = ("train", "valid", "test", "unlabeled")
TRAIN, VALID, TEST, UNLABELED = SPLITS
LABELLED_SPLITS = (TRAIN, VALID, TEST)  # the splits whose clips carry annotations
BASE_COLUMNS = ("clip_id", "path", "split", "group", "duration_s", "sample_rate")


class ManifestError(ValueError):
    """The manifest or labels file breaks the contract; the message names the file and row."""


@dataclass(frozen=True)
class LabelSpec:
    classes: list[str]
    task: str = "multilabel"
    threshold: float = 0.5
    extra: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"task": self.task, "classes": self.classes, "threshold": self.threshold, **self.extra}


def label_column(name: str) -> str:
    return f"{LABEL_PREFIX}{name}"


def label_columns(classes: list[str]) -> list[str]:
    return [label_column(c) for c in classes]


def read_labels(data_dir: Path) -> LabelSpec:
    path = Path(data_dir) / LABELS
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ManifestError(f"{path}: missing; every dataset needs a labels.json beside its manifest") from exc
    except json.JSONDecodeError as exc:
        raise ManifestError(f"{path}: not valid JSON ({exc})") from exc
    return read_labels_json(raw, str(path))


def read_labels_json(raw: dict, path: str) -> LabelSpec:
    """A LabelSpec from labels.json's parsed content; errors name `path`."""
    if not isinstance(raw, dict):
        raise ManifestError(f"{path}: expected a JSON object")
    for key in ("task", "classes", "threshold"):
        if key not in raw:
            raise ManifestError(f"{path}: missing key {key!r}")
    if raw["task"] != "multilabel":
        raise ManifestError(f"{path}: task {raw['task']!r} is not supported (expected 'multilabel')")
    classes = raw["classes"]
    if not classes or len(set(classes)) != len(classes):
        raise ManifestError(f"{path}: 'classes' must be a non-empty list of distinct names")
    extra = {k: v for k, v in raw.items() if k not in ("task", "classes", "threshold")}
    return LabelSpec(classes=list(classes), task=raw["task"], threshold=float(raw["threshold"]), extra=extra)


def validate(df: pd.DataFrame, spec: LabelSpec, source: str) -> None:
    """Raise ManifestError naming the first offending row and what was expected there."""
    missing = [c for c in (*BASE_COLUMNS, *label_columns(spec.classes)) if c not in df.columns]
    if missing:
        raise ManifestError(f"{source}: missing columns {missing}")
    unknown = [c for c in df.columns if c.startswith(LABEL_PREFIX) and c[len(LABEL_PREFIX):] not in spec.classes]
    if unknown:
        raise ManifestError(f"{source}: label columns for classes not in labels.json: {unknown}")
    dupes = df["clip_id"][df["clip_id"].duplicated()]
    if len(dupes):
        row = int(dupes.index[0])
        raise ManifestError(f"{source}: row {row}: duplicate clip_id {dupes.iloc[0]!r}")
    for row, (clip, split, path) in enumerate(zip(df["clip_id"], df["split"], df["path"], strict=True)):
        if split not in SPLITS:
            raise ManifestError(f"{source}: row {row} ({clip}): split {split!r} not in {SPLITS}")
        p = PurePosixPath(str(path))
        if p.is_absolute() or ".." in p.parts or not str(path):
            raise ManifestError(f"{source}: row {row} ({clip}): path {path!r} must be relative to the data root")
    for col in label_columns(spec.classes):
        values = pd.to_numeric(df[col], errors="coerce").to_numpy(dtype=float)
        bad = np.flatnonzero(~np.isnan(values) & ((values < 0) | (values > 1)))
        if len(bad):
            row = int(bad[0])
            raise ManifestError(
                f"{source}: row {row} ({df['clip_id'].iloc[row]}): {col}={values[row]} outside [0, 1] "
                "(soft labels are confidences; NaN means not annotated)"
            )


def read_manifest(data_dir: Path) -> tuple[pd.DataFrame, LabelSpec]:
    data_dir = Path(data_dir)
    spec = read_labels(data_dir)
    path = data_dir / MANIFEST
    if not path.exists():
        raise ManifestError(f"{path}: missing; build a dataset first (e.g. `mirops data demo`)")
    df = pd.read_parquet(path)
    validate(df, spec, str(path))
    return df, spec


def write_manifest(data_dir: Path, df: pd.DataFrame, spec: LabelSpec) -> None:
    data_dir = Path(data_dir)
    validate(df, spec, str(data_dir / MANIFEST))
    df = df.reset_index(drop=True)
    atomic_write(data_dir / MANIFEST, lambda tmp: df.to_parquet(tmp, index=False))
    atomic_write_bytes(data_dir / LABELS, (json.dumps(spec.to_json(), indent=2) + "\n").encode())


def label_matrix(df: pd.DataFrame, spec: LabelSpec) -> np.ndarray:
    """(clips, classes) float32 with NaN where not annotated."""
    return df[label_columns(spec.classes)].to_numpy(dtype=np.float32)
