"""A run's dataset version as MLflow dataset inputs: what the run's Datasets tab shows.

One input per split the run used (context train, valid, test, ...), named `<folder>/<split>`, whose digest is
the DVC version id (so the same split of the same version is one dataset across runs) and whose source is the
project's data folder. The table holds each clip's id, path and group with one column per class (1, 0, or
empty for not annotated), so MLflow's schema and profile describe the labels the run saw.
"""

from __future__ import annotations

import pandas as pd

from mirops.config import Settings
from mirops.data.dataset import DatasetVersion
from mirops.registry.tracking import Run


def split_table(ds: DatasetVersion, rows: pd.DataFrame) -> pd.DataFrame:
    keep = [c for c in ("clip_id", "path", "group") if c in rows.columns]
    table = rows[keep].reset_index(drop=True).astype(str)
    labels = pd.DataFrame(ds.labels(rows), columns=ds.classes)
    return pd.concat([table, labels], axis=1)


def log_splits(run: Run, settings: Settings, dataset_version: str, tables: dict[str, pd.DataFrame]) -> None:
    """Log `tables` (split -> `split_table`) of dataset version `dataset_version` as the run's dataset inputs,
    each with its split as context."""
    for split, table in tables.items():
        run.log_dataset(table, name=f"{settings.data_dir.name}/{split}", digest=dataset_version,
                        source=str(settings.data_dir), context=split)
