"""The audit's verdicts as exceptions, in a module that imports nothing heavy: the CLI catches them on every
command, and importing Great Expectations (seconds) just to name them would slow every command down."""

from __future__ import annotations

from typing import Any


class AuditFailed(RuntimeError):
    """A critical expectation failed; `.result` holds the whole audit."""

    def __init__(self, result: Any) -> None:  # a mirops.audit.report.AuditResult (not imported: no cycle)
        self.result = result
        places = [f"{name}: {path}" for name, path in (("report", result.html_path), ("Data Docs", result.data_docs))
                  if path]
        where = f" ({'; '.join(places)})" if places else ""
        failures = "\n  - ".join(result.critical_failures) or "unknown failure"
        super().__init__(
            f"dataset audit of {result.dataset_version} failed: {len(result.critical_failures)} critical "
            f"expectation(s){where}\n  - {failures}"
        )


class AuditNotPassed(RuntimeError):
    """Training was asked for on a dataset version whose audit failed."""
