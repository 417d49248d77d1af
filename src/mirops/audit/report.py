"""Run every audit suite on a manifest, turn GE's results into a verdict, and write audit.json/html.

A failed `critical` expectation makes the audit fail (training must not start: `raise_for_critical`);
a failed `warning` is reported and logged but lets the pipeline go on.

audit.json is a DVC output that training depends on, so it holds only what follows from the data, the
suites and the parameters: no timing, no run time or ids, no absolute paths (the duration is on
`AuditResult.seconds`, for MLflow). audit.html is the one-page verdict GE's Data Docs do not give: our
severities (GE marks a suite failed on a warning), the failing rows named, the derived tables, and it is
self-contained (Data Docs load their styles and scripts from CDNs). It links to the Data Docs index.
"""

from __future__ import annotations

import html
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mirops.atomic import atomic_write_bytes
from mirops.audit.checkpoint import run_checkpoints
from mirops.audit.errors import AuditFailed as AuditFailed  # raised here, defined light for the CLI
from mirops.audit.suites import Suite, load_suites, suite_parameters
from mirops.audit.tables import ROW_DETAILS, ROW_NAMES, derived_tables
from mirops.config import AuditParams
from mirops.data.manifest import LabelSpec

AUDIT_JSON = "audit.json"
AUDIT_HTML = "audit.html"
REPORTED_TABLES = ("balance", "splits", "classes", "prevalence", "descriptor_shift", "dataset")
MAX_NAMED_ROWS = 10  # failing rows named in one message; the rest are counted
# What audit.json keeps of AuditResult: the verdict, not where files went or how long it took.
_DOCUMENT_FIELDS = ("success", "dataset_version", "checks", "critical_failures", "warnings")
_SUMMARY_KWARGS = ("column", "min_value", "max_value", "strict_min", "strict_max", "value_set", "column_set",
                   "exact_match", "regex", "row_condition")


@dataclass
class AuditResult:
    success: bool
    dataset_version: str
    checks: list[dict[str, Any]] = field(default_factory=list)
    critical_failures: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    json_path: Path | None = None
    html_path: Path | None = None
    data_docs: Path | None = None  # GE's Data Docs index (artifacts/data_docs/index.html), when built
    data_docs_pages: dict[str, Path] = field(default_factory=dict)  # suite -> its validation result page
    seconds: float = 0.0  # how long the audit took (logged to MLflow; never written to audit.json)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict, repr=False)  # what the suites validated


def raise_for_critical(result: AuditResult) -> None:
    if result.critical_failures or not result.success:
        raise AuditFailed(result)


def run_audit(
    manifest: pd.DataFrame,
    spec: LabelSpec,
    params: AuditParams,
    expectations_dir: Path,
    out_dir: Path,
    dataset_version: str,
    audio: pd.DataFrame | None = None,
    duplicates: pd.DataFrame | None = None,
    reference: tuple[pd.DataFrame, LabelSpec, str] | None = None,
    quarantined: int = 0,
    data_docs_dir: Path | None = None,
) -> AuditResult:
    """Validate the manifest's derived tables with every suite in `expectations_dir`; write the reports.

    `audio` (per-clip descriptors), `duplicates` (cross-split fingerprint matches), `reference` (another
    version's manifest, spec and id) and `quarantined` feed the audio, leakage and representativeness
    suites; see `mirops.audit.tables.derived_tables`. `data_docs_dir`: build GE's Data Docs there.
    """
    started = time.perf_counter()
    suites = load_suites(expectations_dir)
    tables = derived_tables(manifest, spec, params.ambiguous_band, audio, duplicates, reference, quarantined)
    parameters = suite_parameters(params, spec)
    result = AuditResult(success=True, dataset_version=dataset_version, tables=tables)
    result.warnings.extend(_unused_bounds(params, suites))
    checked = run_checkpoints(suites, tables, parameters, dataset_version, data_docs_dir)
    raw: dict[str, Any] = {}
    for run in checked.runs:
        raw[run.suite.name] = run.raw
        for exp, exp_result in zip(run.suite.payload["expectations"], run.results, strict=True):
            check = _check(run.suite, exp, exp_result, parameters)
            result.checks.append(check)
            if not check["success"]:
                target = result.critical_failures if check["severity"] == "critical" else result.warnings
                target.append(check["message"])
    result.success = not result.critical_failures
    result.data_docs = checked.data_docs
    result.data_docs_pages = {run.suite.name: run.page for run in checked.runs if run.page}

    out_dir = Path(out_dir)
    result.json_path, result.html_path = out_dir / AUDIT_JSON, out_dir / AUDIT_HTML
    document = {
        **{k: getattr(result, k) for k in _DOCUMENT_FIELDS},
        "parameters": parameters,
        "tables": {name: tables[name].to_dict(orient="records") for name in REPORTED_TABLES},
        "validation_results": raw,
    }
    payload = json.dumps(_jsonable(document), indent=2, allow_nan=False, ensure_ascii=False) + "\n"
    atomic_write_bytes(result.json_path, payload.encode())
    atomic_write_bytes(result.html_path, _html(result, tables).encode())
    result.seconds = time.perf_counter() - started
    return result


# --- turning one GE expectation result into a check -------------------------------------------

def _check(
    suite: Suite, exp: dict[str, Any], res: dict[str, Any], parameters: dict[str, Any]
) -> dict[str, Any]:
    # The suite JSON gives meta; GE's copy of the expectation holds the kwargs with parameters resolved.
    kwargs = res.get("expectation_config", {}).get("kwargs", {})
    meta = exp.get("meta", {})
    check = {
        "suite": suite.name,
        "table": suite.table,
        "expectation": exp["type"],
        "kwargs": {k: _short(kwargs[k]) for k in _SUMMARY_KWARGS if k in kwargs},
        "severity": meta["severity"],
        "success": bool(res.get("success")),
        "observed_value": None,
        "description": _fill(meta["description"], parameters),
        "error": _error(res.get("exception_info")),
    }
    body = res.get("result") or {}
    mismatched = (body.get("details") or {}).get("mismatched")
    if isinstance(mismatched, dict):  # a column-set check: what is missing says more than every column
        check["observed_value"] = {"missing": mismatched.get("missing") or []}
    elif "observed_value" in body:
        check["observed_value"] = body["observed_value"]
    elif "element_count" in body:  # a row-wise expectation: the rows that broke it are the observation
        check["observed_value"] = {
            "unexpected_count": body.get("unexpected_count", 0),
            "element_count": body["element_count"],
            "unexpected_rows": body.get("partial_unexpected_index_list", []),
            "unexpected_values": body.get("partial_unexpected_list", []),
        }
    if check["error"] and check["success"]:
        check["success"] = False
    check["message"] = _message(check)
    return check


def _fill(template: str, parameters: dict[str, Any]) -> str:
    class Keep(dict):
        def __missing__(self, key: str) -> str:
            return "{" + key + "}"

    return template.format_map(Keep({k: _fmt(v) for k, v in parameters.items()}))


def _error(info: Any) -> str | None:
    """GE puts either one exception record or one per failed metric here."""
    if not isinstance(info, dict):
        return None
    records = [info] if "raised_exception" in info else [v for v in info.values() if isinstance(v, dict)]
    messages = [r.get("exception_message") for r in records if r.get("raised_exception")]
    return "; ".join(dict.fromkeys(str(m) for m in messages if m)) or None


def _message(check: dict[str, Any]) -> str:
    head = f"{check['suite']}: {check['description']}"
    return f"{head} passed" if check["success"] else f"{head} failed {_failure(check)}"


def _failure(check: dict[str, Any]) -> str:
    """What went wrong, naming the offending rows of the derived table where GE lists them."""
    if check["error"]:
        return f"(error: {check['error']})"
    observed = check["observed_value"]
    if isinstance(observed, dict) and "missing" in observed:
        return f"(missing: {', '.join(map(str, observed['missing'])) or '-'})"
    if isinstance(observed, dict) and "unexpected_count" in observed:
        return f"for {_rows(check, observed)}"
    return f"(observed {_fmt(observed)})"


def _rows(check: dict[str, Any], observed: dict[str, Any]) -> str:
    """'drums/valid (observed 1), piano/test (observed 0) and 3 more'."""
    column = check["kwargs"].get("column")
    names, details = ROW_NAMES[check["table"]], ROW_DETAILS.get(check["table"], [])
    labels: list[str] = []
    for row in observed["unexpected_rows"]:
        if not isinstance(row, dict):  # no key columns in the table: GE gives the row number
            labels.append(f"row {row}")
            continue
        label = "/".join(str(row[k]) for k in names if k in row)
        extra = [f"observed {_fmt(row[column])}"] if column in row and column not in names else []
        extra += [f"{k} {row[k]}" for k in details if k in row and row[k] not in ("", None)]
        labels.append(f"{label} ({'; '.join(extra)})" if extra else label)
    if not labels:
        labels = [f"value {_fmt(v)}" for v in observed["unexpected_values"]]
    unique = list(dict.fromkeys(labels))  # duplicated clip_ids name the same row twice
    named = ", ".join(unique[:MAX_NAMED_ROWS])
    rest = max(len(unique) - MAX_NAMED_ROWS, 0) + observed["unexpected_count"] - len(labels)
    if rest > 0:
        named += f" and {rest} more row(s)"
    return named or f"{observed['unexpected_count']} row(s)"


def _unused_bounds(params: AuditParams, suites: list[Suite]) -> list[str]:
    """A bound set in params.yaml that no suite reads would silently check nothing: say so."""
    used = set().union(*(s.parameters() for s in suites)) if suites else set()
    return [
        f"params: audit.split_fraction_bounds[{split!r}] is not checked by any suite in expectations/"
        for split in params.split_fraction_bounds
        if f"{split}_fraction_min" not in used
    ]


# --- formatting --------------------------------------------------------------------------------

def _short(value: Any) -> Any:
    """Row conditions read as `split == 'train'`; long lists are cut."""
    if isinstance(value, dict) and value.get("type") == "comparison":
        return f"{value.get('column', {}).get('name')} {value.get('operator')} {value.get('parameter')!r}"
    if isinstance(value, list) and len(value) > 12:
        return [*value[:12], f"... {len(value) - 12} more"]
    return value


def _fmt(value: Any) -> str:
    if isinstance(value, float | np.floating):
        return "NaN" if math.isnan(value) else f"{value:.4g}"
    if isinstance(value, list | tuple):
        return ", ".join(_fmt(v) for v in value)
    return str(value)


def _jsonable(value: Any) -> Any:
    """Plain JSON: NaN/inf become null, numpy and paths become Python values."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, bool | int | str):
        return value
    return str(value)


_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}
td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left;vertical-align:top;font-size:.9em}
th{background:#f3f3f3}.pass{background:#e3f4e3}.fail{background:#fbe0e0}.warn{background:#fff3cd}
.badge{display:inline-block;padding:.2em .7em;border-radius:.3em;color:#fff;font-weight:600}
.ok{background:#2e7d32}.ko{background:#c62828}code{font-size:.85em}
"""


def _html(result: AuditResult, tables: dict[str, pd.DataFrame]) -> str:
    esc = html.escape
    verdict = ("ok", "PASSED") if result.success else ("ko", "FAILED")
    badge = f"<span class='badge {verdict[0]}'>{verdict[1]}</span>"
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>Audit {esc(result.dataset_version)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>Dataset audit {badge}</h1><p>dataset version <code>{esc(result.dataset_version)}</code></p>",
    ]
    if result.data_docs and result.html_path:  # relative, so the page stays the same wherever the project is
        link = Path(os.path.relpath(result.data_docs, result.html_path.parent)).as_posix()
        parts.append(f"<p>Great Expectations Data Docs: <a href='{esc(link)}'>{esc(link)}</a></p>")
    for title, items in (("Critical failures", result.critical_failures), ("Warnings", result.warnings)):
        if items:
            parts.append(f"<h2>{title}</h2><ul>" + "".join(f"<li>{esc(m)}</li>" for m in items) + "</ul>")
    for suite in dict.fromkeys(c["suite"] for c in result.checks):
        parts.append(f"<h2>{esc(suite)}</h2><table><tr><th>expectation</th><th>type</th><th>severity</th>"
                     "<th>result</th><th>observed</th></tr>")
        for c in (c for c in result.checks if c["suite"] == suite):
            css = "pass" if c["success"] else ("fail" if c["severity"] == "critical" else "warn")
            observed = _observed_text(c["observed_value"]) if c["success"] else _failure(c).removeprefix("for ")
            parts.append(
                f"<tr class='{css}'><td>{esc(c['description'])}</td>"
                f"<td><code>{esc(c['expectation'])}</code></td>"
                f"<td>{esc(c['severity'])}</td><td>{'pass' if c['success'] else 'FAIL'}</td>"
                f"<td>{esc(observed)}</td></tr>"
            )
        parts.append("</table>")
    for name in REPORTED_TABLES:
        table = tables[name].to_html(index=False, na_rep="", float_format="{:.3f}".format)
        parts.append(f"<h2>table: {name}</h2>{table}")
    parts.append("</body></html>\n")
    return "".join(parts)


def _observed_text(observed: Any) -> str:
    if isinstance(observed, dict) and "unexpected_count" in observed:
        return f"{observed['unexpected_count']} of {observed['element_count']} rows unexpected"
    if isinstance(observed, dict) and "missing" in observed:
        return f"missing: {_fmt(observed['missing']) or 'none'}"
    return _fmt(observed) if observed is not None else ""
