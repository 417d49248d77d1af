"""Load the Great Expectations suites kept as JSON in `expectations/` and run them on derived tables.

Each suite names the table it validates in `meta.table` (see `mirops.audit.tables`). Thresholds are
not written into the JSON: the suites hold GE suite parameters (`{"$PARAMETER": "min_positives"}`),
and `suite_parameters` supplies their values from `AuditParams` at run time through
`ValidationDefinition.run(expectation_parameters=...)` (native in GE 1.24, no text substitution).

GE is imported lazily (it costs seconds) and runs in one cached, in-memory (ephemeral) context.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from mirops.audit.tables import LABELLED_SPLITS, ROW_DETAILS, ROW_NAMES
from mirops.config import AuditParams
from mirops.data.manifest import BASE_COLUMNS, LabelSpec, label_columns

if TYPE_CHECKING:
    from great_expectations.core import ExpectationSuiteValidationResult

SUITE_ORDER = ("schema", "label_balance", "class_balance", "missing_labels", "subjectivity", "split_proportions",
               "class_diversity", "representativeness", "descriptor_shift", "leakage", "duplicate_audio", "integrity",
               "quarantine")
SEVERITIES = ("critical", "warning")
PARTIAL_ROWS = 20  # unexpected rows GE reports per expectation (SUMMARY keeps audit.json small)


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


@dataclass
class _Runner:
    """The ephemeral GE context and what was already registered in it (suites are keyed by content)."""

    context: Any
    datasource: Any
    batch_definitions: dict[str, Any] = field(default_factory=dict)
    validations: dict[str, Any] = field(default_factory=dict)


@lru_cache(maxsize=1)
def _runner() -> _Runner:
    # GE 1.24 sends no usage statistics, but older/newer releases read this; never reach out.
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),  # no docs site
        progress_bars=ProgressBarsConfig(globally=False),  # tqdm bars would land on stderr of the CLI
        analytics_enabled=False,
    )
    context = gx.get_context(mode="ephemeral", project_config=config)
    return _Runner(context=context, datasource=context.data_sources.add_pandas("mirops-audit"))


def _validation_for(runner: _Runner, suite: Suite) -> Any:
    import great_expectations as gx

    key = f"{suite.name}-{suite.digest}"
    if key not in runner.validations:
        if suite.table not in runner.batch_definitions:
            asset = runner.datasource.add_dataframe_asset(suite.table)
            runner.batch_definitions[suite.table] = asset.add_batch_definition_whole_dataframe("whole")
        try:
            gx_suite = gx.ExpectationSuite(**{**suite.payload, "name": key})
        except Exception as exc:  # GE raises pydantic/KeyError/ValueError for a malformed expectation
            raise SuiteError(f"{suite.path}: not a Great Expectations {gx.__version__} suite ({exc})") from exc
        gx_suite = runner.context.suites.add(gx_suite)
        batch = runner.batch_definitions[suite.table]
        validation = gx.ValidationDefinition(name=key, data=batch, suite=gx_suite)
        runner.validations[key] = runner.context.validation_definitions.add(validation)
    return runner.validations[key]


def index_columns(table: str, df: pd.DataFrame) -> list[str]:
    """Columns GE should report for each unexpected row; only those present (a missing one makes GE
    fail every row-wise expectation silently)."""
    return [c for c in (*ROW_NAMES[table], *ROW_DETAILS.get(table, [])) if c in df.columns]


@dataclass
class SuiteRun:
    """One suite's outcome: GE's whole validation result, and its per-expectation results in the order of
    the suite file (GE returns them in metric-graph order)."""

    suite: Suite
    raw: dict[str, Any]
    results: list[dict[str, Any]]


def run_suite(suite: Suite, df: pd.DataFrame, parameters: dict[str, Any]) -> SuiteRun:
    """Validate one derived table with one suite."""
    missing = suite.parameters() - parameters.keys()
    if missing:
        raise SuiteError(f"{suite.path}: no value for suite parameter(s) {sorted(missing)}")
    validation = _validation_for(_runner(), suite)
    result_format: dict[str, Any] = {"result_format": "SUMMARY", "partial_unexpected_count": PARTIAL_ROWS}
    keys = index_columns(suite.table, df)
    if keys:
        result_format["unexpected_index_column_names"] = keys
    outcome: ExpectationSuiteValidationResult = validation.run(
        batch_parameters={"dataframe": df},
        expectation_parameters={k: parameters[k] for k in suite.parameters()},
        result_format=result_format,
    )
    position = {exp.id: i for i, exp in enumerate(validation.suite.expectations)}
    ordered = sorted(outcome.results, key=lambda r: position[r.expectation_config.id])
    return SuiteRun(suite=suite, raw=outcome.to_json_dict(), results=[r.to_json_dict() for r in ordered])
