"""Audit: the Great Expectations suites on a dataset version (labels, audio, leakage), logged to MLflow with
plots; a critical failure stops the pipeline, and training refuses a version whose audit failed.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from mirops import lineage, plots
from mirops.audit.errors import AuditNotPassed as AuditNotPassed  # raised here, defined light for the CLI
from mirops.audit.report import raise_for_critical, run_audit
from mirops.config import Settings
from mirops.data.cache import ArrayCache
from mirops.data.quarantine import read_quarantine, reason_counts
from mirops.features.clips import fingerprints
from mirops.features.dataset_clips import DatasetClips
from mirops.features.fingerprint import find_near_duplicates
from mirops.pipeline import dashboards
from mirops.pipeline.version import open_dataset
from mirops.progress import console, warn
from mirops.registry import tracking


@dataclass
class AuditSummary:
    """What the audit stage returns: plain values, so `mirops --json audit` and Prefect serialise it."""

    success: bool
    run_id: str
    json_path: str
    html_path: str
    critical_failures: list[str]
    warnings: list[str]
    data_docs: str | None = None  # GE's Data Docs index (artifacts/data_docs/index.html)
    data_docs_pages: dict[str, str] = field(default_factory=dict)  # suite -> its validation result page


def folder_clips(settings: Settings, folder: Path) -> DatasetClips:
    """The clips of a dataset folder through the project's cache."""
    return DatasetClips(Path(folder), ArrayCache(settings.cache_dir), settings.ingest.crop)


def audio_duplicates(settings: Settings, audio: DatasetClips, clips: pd.DataFrame) -> pd.DataFrame:
    """Pairs of `clips` (manifest rows) in different splits whose audio fingerprints match (re-encoded or
    renamed copies)."""
    result = fingerprints(audio.loader(None), list(clips["path"]))
    by_path = clips.set_index("path")
    codes = {by_path.at[p, "clip_id"]: code for p, code in zip(result.paths, result.arrays, strict=True)}
    splits = dict(zip(clips["clip_id"], clips["split"], strict=True))
    return find_near_duplicates(codes, splits, settings.audit.duplicate_similarity)


def audit(settings: Settings, dataset_version: str | None = None, raise_on_failure: bool = True,
          reference: str | None = None) -> AuditSummary:
    """Run the suites on dataset version `dataset_version` (default: what data/ holds) and its audio; log them
    as an MLflow run with plots; stop on a critical failure. `reference`: another dataset version to compare
    the label mix with."""
    with contextlib.ExitStack() as stack:
        ds = stack.enter_context(open_dataset(settings, dataset_version))
        ref = stack.enter_context(open_dataset(settings, reference)) if reference else None
        quarantined = read_quarantine(ds.folder)
        clips = folder_clips(settings, ds.folder)
        audio, _ = clips.descriptors(ds.manifest)
        result = run_audit(
            ds.manifest, ds.spec, settings.audit, settings.expectations_dir,
            settings.artifacts_dir / lineage.ARTIFACT_AUDIT, ds.id, audio=audio,
            duplicates=audio_duplicates(settings, clips, ds.manifest),
            reference=(ref.manifest, ref.spec, ref.id) if ref else None, quarantined=len(quarantined),
            data_docs_dir=settings.artifacts_dir / lineage.ARTIFACT_DATA_DOCS,
        )
        with tracking.run(settings, "audit", lineage.STEP_AUDIT, ds.id) as run:
            failed = [c for c in result.checks if not c["success"]]
            run.log_metrics({"checks": len(result.checks), "checks_failed": len(failed),
                             "critical_failures": len(result.critical_failures), "clips": len(ds.manifest),
                             "clips_quarantined": len(quarantined), "audit_seconds": result.seconds}
                            | {f"quarantined_{r}": n for r, n in reason_counts(quarantined).items()})
            if len(quarantined):
                run.log_table(quarantined, "quarantine/quarantine.json")
            run.log_metrics({f"suite_{name}_failed": sum(1 for c in failed if c["suite"] == name)
                             for name in dict.fromkeys(c["suite"] for c in result.checks)})
            run.set_tags({lineage.TAG_AUDIT_SUCCESS: str(result.success).lower(),
                          lineage.TAG_AUDIT_REFERENCE: ref.id if ref else "none"}
                         | ({lineage.TAG_DATA_DOCS: result.data_docs.as_uri()} if result.data_docs else {}))
            for name, fig in plots.audit_plots(result.tables).items():
                run.log_figure(fig, f"plots/{name}")
            run.log_file(Path(result.json_path), lineage.ARTIFACT_AUDIT)
            run.log_file(Path(result.html_path), lineage.ARTIFACT_AUDIT)
        summary = AuditSummary(result.success, run.id, str(result.json_path), str(result.html_path),
                               list(result.critical_failures), list(result.warnings),
                               str(result.data_docs) if result.data_docs else None,
                               {name: str(page) for name, page in result.data_docs_pages.items()})
        dashboards.record_audit(settings, ds.id, ds.manifest, ds.spec, result.tables.get("audio"), quarantined,
                                result.success, summary.run_id)  # the data-quality dashboard (a warning if it fails)
    colour = "green" if result.success else "red"
    console.print(f"[bold]audit[/] [{colour}]{'passed' if result.success else 'FAILED'}[/] "
                  f"({len(result.checks)} checks, {len(result.warnings)} warnings) → {result.html_path}"
                  + (f"; Data Docs {result.data_docs}" if result.data_docs else ""))
    if raise_on_failure:
        raise_for_critical(result)
    return summary


def require_passed(settings: Settings, dataset_version: str, audit_run_id: str | None = None) -> dict[str, str]:
    """Tags that tie a training run to its audit; AuditNotPassed when the version's audit failed.

    `audit_run_id`: the audit the pipeline just ran; else the newest audit run of that dataset version."""
    tracking.setup(settings)
    audit_run = (tracking.get_run(audit_run_id) if audit_run_id
                 else tracking.latest_run(settings, lineage.STEP_AUDIT, dataset_version))
    if audit_run is None:
        warn(f"dataset version {dataset_version} has not been audited (`mirops audit`)")
        return {lineage.TAG_AUDIT_SUCCESS: "not-run"}
    success = audit_run.data.tags.get(lineage.TAG_AUDIT_SUCCESS, "false")
    if success != "true":
        raise AuditNotPassed(f"the audit of dataset version {dataset_version} failed "
                             f"(MLflow run {audit_run.info.run_id}); fix the data or the suites before training")
    checks = audit_run.data.metrics
    return {lineage.TAG_AUDIT_SUCCESS: "true", lineage.TAG_AUDIT_RUN: audit_run.info.run_id,
            lineage.TAG_AUDIT_SUMMARY: f"{int(checks.get('checks', 0))} checks, "
                                       f"{int(checks.get('checks_failed', 0))} failed (warnings only)"}
