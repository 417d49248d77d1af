"""What a run reports to the orchestrator's UI: markdown and tables built from the stages' results.

The flows (flows/*.py) turn these into Prefect artifacts and log lines; nothing here imports Prefect, so the
texts are plain functions a test calls on a stage's result. Each result gives a one-line summary (the run's
log) and a markdown page or a table (the run's Artifacts tab). Artifact keys are stable per project
(`artifact_key`), so the UI groups a project's audits, gates and drift verdicts run after run.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import tempfile
from pathlib import Path
from typing import Any

from mirops import lineage
from mirops.config import Settings
from mirops.registry import tracking

MAX_LISTED = 20  # failed expectations or drifted columns listed in a page; the rest are counted


def project_slug(root: Path) -> str:
    """`mirops-<folder>-<6 hex of its path>`: lowercase letters, digits and dashes, as Prefect keys must be."""
    root = Path(root).resolve()
    name = re.sub(r"[^a-z0-9]+", "-", root.name.lower()).strip("-")[:40] or "project"
    return f"mirops-{name}-{hashlib.sha1(str(root).encode()).hexdigest()[:6]}"


def artifact_key(settings: Settings, *what: str) -> str:
    """The key of one kind of artifact of this project, e.g. `mirops-p-1a2b3c-reprogram-gate`."""
    parts = [re.sub(r"[^a-z0-9]+", "-", w.lower()).strip("-") for w in what]
    return "-".join([project_slug(settings.root), *filter(None, parts)])


def _number(value: Any, digits: int = 4) -> Any:
    """Rounded, and None for NaN (a table artifact is JSON, which has no NaN)."""
    if isinstance(value, float):
        return None if math.isnan(value) else round(value, digits)
    return value


def _cell(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text.replace("|", "\\|").replace("\n", " ")


# ---------------------------------------------------------------- audit


def failed_checks(json_path: str | Path) -> list[dict[str, Any]]:
    """The failed expectations recorded in the audit's JSON (empty if the file is gone)."""
    try:
        checks = json.loads(Path(json_path).read_text()).get("checks", [])
    except (OSError, ValueError):
        return []
    return [c for c in checks if not c.get("success")]


def data_docs_of(summary: Any) -> str | None:
    """The Great Expectations Data Docs page of an audit, when the audit built one."""
    for name in ("data_docs_path", "data_docs", "data_docs_url", "data_docs_index"):
        value = getattr(summary, name, None)
        if value:
            return str(value)
    return None


def audit_summary(summary: Any) -> str:
    verdict = "passed" if summary.success else "FAILED"
    run = getattr(summary, "run_id", None) or "?"  # a failed audit's result (AuditFailed.result) has no run id
    return (f"audit {verdict}: {len(summary.critical_failures)} critical failures, {len(summary.warnings)} "
            f"warnings (MLflow run {run}); report {data_docs_of(summary) or summary.html_path}")


def audit_markdown(summary: Any, dataset_version: str) -> str:
    """The audit verdict, its failed expectations (critical first) and where the full report is."""
    failed = sorted(failed_checks(summary.json_path), key=lambda c: c.get("severity") != "critical")
    lines = [f"# Audit {'passed' if summary.success else 'FAILED'}: dataset version `{dataset_version}`", "",
             f"- critical failures: **{len(summary.critical_failures)}**, warnings: {len(summary.warnings)}",
             f"- MLflow run: `{getattr(summary, 'run_id', None) or '?'}`"]
    docs = data_docs_of(summary)
    if docs:
        lines.append(f"- Great Expectations Data Docs: `{docs}`")
    lines += [f"- report: `{summary.html_path}` (JSON: `{summary.json_path}`)", ""]
    if failed:
        lines += ["## Failed expectations", "", "| severity | suite | expectation | observed | message |",
                  "| --- | --- | --- | --- | --- |"]
        lines += [f"| {c.get('severity', '?')} | {c.get('suite', '?')} | {c.get('expectation', '?')} | "
                  f"{_cell(c.get('observed_value'))[:200]} | {_cell(c.get('message', ''))} |"
                  for c in failed[:MAX_LISTED]]
        if len(failed) > MAX_LISTED:
            lines.append(f"\n… and {len(failed) - MAX_LISTED} more in the report.")
    elif summary.critical_failures or summary.warnings:  # the JSON is gone: the summary's own sentences
        lines += ["## Failed expectations", ""] + [f"- {m}" for m in summary.critical_failures + summary.warnings]
    else:
        lines.append("Every expectation passed.")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- evaluation


def per_class_of_run(settings: Settings, run_id: str) -> dict[str, dict[str, float]]:
    """The per-class test metrics the evaluation logged on training run `run_id` (empty if it has none)."""
    tracking.setup(settings)
    with tempfile.TemporaryDirectory() as tmp:
        path = tracking.download_artifact(run_id, lineage.PER_CLASS_FILE, Path(tmp))
        return json.loads(path.read_text()) if path is not None else {}


def metrics_table(per_class: dict[str, dict[str, Any]], metrics: dict[str, float]) -> list[dict[str, Any]]:
    """One row per class (AP, ROC-AUC, F1, OpenMIC F1, positives / annotated test clips), then the macro row."""
    rows = [{"class": name, **{k: _number(v) for k, v in values.items()}} for name, values in per_class.items()]
    rows.append({"class": "macro", "AP": _number(metrics.get("test_mAP")),
                 "ROC_AUC": _number(metrics.get("test_ROC_AUC")), "F1": _number(metrics.get("test_F1_macro")),
                 "F1_openmic": _number(metrics.get("test_F1_openmic")),
                 "positives": sum(int(v.get("positives", 0)) for v in per_class.values()),
                 "annotated": sum(int(v.get("annotated", 0)) for v in per_class.values())})
    return rows


def metrics_summary(family: str, run_id: str, metrics: dict[str, float]) -> str:
    return f"evaluate {family} run {run_id}: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items())


# ---------------------------------------------------------------- the promotion gate


def _version(v: str | None) -> str:
    return f"v{v}" if v else "none"


def decision_summary(decision: Any) -> str:
    return (f"gate: {decision.action} {decision.name} v{decision.version}, champion "
            f"{_version(decision.champion_before)} → {_version(decision.champion_after)}: {decision.reason}")


def decision_markdown(decision: Any) -> str:
    """The gate's decision with its numbers: champion before/after, the paired gain and its interval, each check."""
    lines = [f"# Gate: {decision.action.upper()} {decision.name} v{decision.version}", "",
             f"- champion: **{_version(decision.champion_before)} → {_version(decision.champion_after)}**",
             f"- reason: {decision.reason}",
             f"- dataset version: `{decision.dataset_version}`",
             f"- decision run (MLflow): `{decision.run_id}`", ""]
    gain = decision.checks.get("gain", {})
    if "gain" in gain:
        lines += ["## Paired bootstrap on the same test clips", "", "| | value |", "| --- | --- |"]
        lines += [f"| {label} | {_number(gain[key]) if key in gain else '?'} |" for label, key in (
            (f"challenger {gain.get('metric', '')}", "challenger"), ("champion", "champion"), ("gain", "gain"),
            ("interval low", "low"), ("interval high", "high"), ("confidence", "confidence"),
            ("P(not better)", "p_not_better"), ("test clips", "clips"), ("resamples", "samples"))]
        lines.append("")
    lines += ["## Checks", "", "| check | passed | detail |", "| --- | --- | --- |"]
    lines += [f"| {name} | {'yes' if c.get('passed') else '**no**'} | {_cell(c.get('detail', ''))} |"
              for name, c in decision.checks.items()]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- drift


def drift_summary(verdict: Any) -> str:
    auc = (f", embedding AUC {verdict.embedding_drift_score:.2f}" if verdict.embedding_drift_score is not None
           else "")
    return (f"drift {'DETECTED' if verdict.drift_detected else 'not detected'} (severity {verdict.severity}): "
            f"p = {verdict.p_value:.4f} at alpha {verdict.alpha:g}, {len(verdict.drifted_columns)} of "
            f"{verdict.n_columns} columns drifted{auc}; report {verdict.html_path}")


def drift_markdown(verdict: Any) -> str:
    """The drift verdict, what drifted, at which false-alarm rate, and the report's path."""
    lines = [f"# Drift {'DETECTED' if verdict.drift_detected else 'not detected'} (severity {verdict.severity})", "",
             f"- batch: `{verdict.current}` ({verdict.current_files} files in {verdict.current_groups} recordings, "
             f"{verdict.current_rows} windows) vs reference {verdict.reference} ({verdict.reference_files} files in "
             f"{verdict.reference_groups} recordings, {verdict.reference_rows} windows, "
             f"dataset version `{verdict.dataset_version}`)",
             f"- permutation test over files: **p = {verdict.p_value:.4f}** (drift when ≤ alpha {verdict.alpha:g}; "
             f"{verdict.permutations} relabellings)",
             f"- drifted columns: **{len(verdict.drifted_columns)} of {verdict.n_columns}** (adjusted p ≤ alpha)"]
    if not verdict.decidable:
        lines.append(f"- too few files for the level: the smallest possible p is {verdict.min_p:.3f}")
    if verdict.embedding_drift_score is not None:
        lines.append(f"- embedding: adjusted p {verdict.embedding_p_value:.4f}"
                     + (" (drifted)" if verdict.embedding_drift_detected else "")
                     + f", domain classifier AUC {verdict.embedding_drift_score:.2f}")
    if verdict.model_name:
        lines.append(f"- class scores of champion {verdict.model_name} v{verdict.model_version} compared")
    lines += [f"- report: `{verdict.html_path}` (JSON: `{verdict.json_path}`)",
              f"- MLflow monitor run: `{verdict.run_id}`", ""]
    if verdict.drifted_columns:
        shown = verdict.drifted_columns[:MAX_LISTED]
        lines += ["## Drifted columns", "", ", ".join(f"`{c}`" for c in shown)
                  + (f" … and {len(verdict.drifted_columns) - len(shown)} more" if len(shown) < len(
                      verdict.drifted_columns) else "")]
    return "\n".join(lines) + "\n"
