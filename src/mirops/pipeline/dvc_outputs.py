"""The metrics and plots files dvc.yaml declares, written by the train and evaluate stages.

They live in git-tracked metrics/<family>/ (not the git-ignored artifacts/), so `dvc metrics diff`,
`dvc exp show` and `dvc plots show` read them in every revision. They hold numbers only, rounded, with no run
ids or times, so unchanged inputs give byte-identical files; `null` stands for an undefined metric (NaN).
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

from mirops import lineage, plots
from mirops.atomic import atomic_write_bytes, atomic_write_json, atomic_write_text
from mirops.config import Settings


def metrics_folder(settings: Settings, family_name: str) -> Path:
    return settings.root / lineage.METRICS_DIR / family_name


def _number(value: Any) -> float | int | None:
    if isinstance(value, bool | int):
        return int(value)
    value = float(value)
    return None if math.isnan(value) else round(value, 6)


def _csv(rows: list[dict[str, Any]]) -> str:
    columns = list(dict.fromkeys(k for row in rows for k in row))
    out = io.StringIO()
    writer = csv.DictWriter(out, columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if (v := row.get(k)) is None else v) for k in columns})
    return out.getvalue()


def _png(figure, path: Path) -> None:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, metadata={"Software": None})  # no version stamp in the bytes
    plt.close(figure)
    atomic_write_bytes(path, buffer.getvalue())


def write_training(settings: Settings, family_name: str, history: list[dict[str, float]], summary: dict[str, Any]
                   ) -> None:
    """metrics/<family>/train.json (the best epoch and its valid metrics, parameter counts), history.csv (one row
    per epoch) and training_curves.png."""
    folder = metrics_folder(settings, family_name)
    atomic_write_json(folder / lineage.TRAIN_METRICS_FILE, {k: _number(v) for k, v in summary.items()})
    rows = [{k: _number(v) for k, v in row.items() if not k.endswith("_seconds")} for row in history]  # no timings
    atomic_write_text(folder / lineage.HISTORY_CSV, _csv(rows))
    if any("train_loss" in row for row in history):
        _png(plots.training_curves(history), folder / lineage.TRAINING_CURVES_PNG)


def write_evaluation(settings: Settings, family_name: str, metrics: dict[str, float],
                     per_class: dict[str, dict[str, float]]) -> None:
    """metrics/<family>/test.json (test-split metrics), test_per_class.csv and test_per_class.png."""
    folder = metrics_folder(settings, family_name)
    atomic_write_json(folder / lineage.TEST_METRICS_FILE, {k: _number(v) for k, v in metrics.items()})
    rows = [{"class": name, **{k: _number(v) for k, v in values.items()}} for name, values in per_class.items()]
    atomic_write_text(folder / lineage.TEST_PER_CLASS_CSV, _csv(rows))
    _png(plots.per_class_bars(per_class, title=f"{family_name}: test split, per class"),
         folder / lineage.TEST_PER_CLASS_PNG)
