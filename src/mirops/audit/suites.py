"""Load the Great Expectations suites kept as JSON in `expectations/` and run them on derived tables.

Each suite names the table it validates in `meta.table` (see `mirops.audit.tables`). Thresholds are
not written into the JSON: the suites hold GE suite parameters (`{"$PARAMETER": "min_positives"}`),
and `suite_parameters` supplies their values from `AuditParams` at run time through
`Checkpoint.run(expectation_parameters=...)` (native in GE 1.24, no text substitution); the Checkpoints
and Data Docs are in `mirops.audit.checkpoint`. No GE import here: loading the suites is instant.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from mirops.audit.tables import LABELLED_SPLITS, ROW_DETAILS, ROW_NAMES
from mirops.config import AuditParams
from mirops.data.manifest import BASE_COLUMNS, LabelSpec, label_columns

SUITE_ORDER = ("schema", "label_balance", "class_balance", "missing_labels", "subjectivity", "split_proportions",
               "class_diversity", "representativeness", "descriptor_shift", "leakage", "duplicate_audio", "integrity",
               "quarantine")
SEVERITIES = ("critical", "warning")


class SuiteError(ValueError):
    """A suite file in expectations/ is unreadable or breaks the conventions (meta.table, severity)."""


@dataclass(frozen=True)
class Suite:
    name: str
    table: str
    path: Path
    payload: dict[str, Any] = field(repr=False)

    @property
    def digest(self) -> str:
        return hashlib.sha1(json.dumps(self.payload, sort_keys=True).encode()).hexdigest()[:12]

    def parameters(self) -> set[str]:
        """Names of the `$PARAMETER`s this suite needs."""
        found: set[str] = set()

        def walk(node: Any) -> None:
            if isinstance(node, dict):
                if isinstance(node.get("$PARAMETER"), str):
                    found.add(node["$PARAMETER"])
                for value in node.values():
                    walk(value)
            elif isinstance(node, list):
                for value in node:
                    walk(value)

        walk([e.get("kwargs", {}) for e in self.payload.get("expectations", [])])
        return found


def load_suites(expectations_dir: Path) -> list[Suite]:
    """Every `*.json` suite in the directory (known concerns first), checked for our conventions."""
    expectations_dir = Path(expectations_dir)
    files = sorted(expectations_dir.glob("*.json"))
    if not files:
        raise SuiteError(f"{expectations_dir}: no suite files (*.json)")
    rank = {name: i for i, name in enumerate(SUITE_ORDER)}
    suites = []
    for path in sorted(files, key=lambda p: (rank.get(p.stem, len(rank)), p.stem)):
        try:
            payload = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise SuiteError(f"{path}: not valid JSON ({exc})") from exc
        table = payload.get("meta", {}).get("table")
        if table not in ROW_NAMES:
            raise SuiteError(f"{path}: meta.table must be one of {sorted(ROW_NAMES)}, got {table!r}")
        for i, exp in enumerate(payload.get("expectations", [])):
            meta = exp.get("meta") or {}
            if meta.get("severity") not in SEVERITIES or not meta.get("description"):
                raise SuiteError(
                    f"{path}: expectation {i} ({exp.get('type')}) needs meta.severity in {SEVERITIES} "
                    "and meta.description"
                )
        suites.append(Suite(name=payload.get("name") or path.stem, table=table, path=path, payload=payload))
    return suites


def suite_parameters(params: AuditParams, spec: LabelSpec) -> dict[str, Any]:
    """Values for every `$PARAMETER` the suites may use, all from AuditParams and the LabelSpec."""
    values: dict[str, Any] = {
        "required_columns": [*BASE_COLUMNS, *label_columns(spec.classes)],
        "min_positives": params.min_positives_per_class,
        "max_group_splits": params.max_group_splits,
        "min_duration_s": params.duration_bounds_s[0],
        "max_duration_s": params.duration_bounds_s[1],
        "label_threshold": spec.threshold,
        "zero": 0,
        "one": 1,
        "positive_rate_min": params.positive_rate_bounds[0],
        "positive_rate_max": params.positive_rate_bounds[1],
        "ambiguous_low": params.ambiguous_band[0],
        "ambiguous_high": params.ambiguous_band[1],
        "min_loudness_lufs": params.loudness_bounds_lufs[0],
        "max_loudness_lufs": params.loudness_bounds_lufs[1],
    }
    # Every single-number threshold under its own params.yaml name (max_imbalance_ratio, ...).
    values.update({k: v for k, v in params.model_dump().items() if isinstance(v, int | float)})
    for split in LABELLED_SPLITS:
        low, high = params.split_fraction_bounds.get(split, (0.0, 1.0))  # unset: no constraint
        values[f"{split}_fraction_min"], values[f"{split}_fraction_max"] = low, high
    for split, (low, high) in params.split_fraction_bounds.items():
        values.setdefault(f"{split}_fraction_min", low)
        values.setdefault(f"{split}_fraction_max", high)
    return values


def index_columns(table: str, df: pd.DataFrame) -> list[str]:
    """Columns GE should report for each unexpected row; only those present (a missing one makes GE
    fail every row-wise expectation silently)."""
    return [c for c in (*ROW_NAMES[table], *ROW_DETAILS.get(table, [])) if c in df.columns]
