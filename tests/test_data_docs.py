"""GE Data Docs from the audit's Checkpoints, readable offline, and an audit.json that only the data changes."""

from __future__ import annotations

import html
import json
import re
import shutil
from dataclasses import asdict
from pathlib import Path

import pytest

from mirops import lineage
from mirops.audit.report import run_audit
from mirops.config import Settings
from mirops.data.manifest import read_manifest
from mirops.pipeline import audit as audit_stage
from tests.conftest import needs_soundfonts
from tests.test_audit import SUITES

pytestmark = needs_soundfonts


@pytest.fixture(scope="module")
def project(demo_project, tmp_path_factory) -> Settings:
    """A copy of the session's demo project (this module writes MLflow runs and artifacts into it)."""
    root = tmp_path_factory.mktemp("data_docs") / "p"
    shutil.copytree(demo_project, root, ignore=shutil.ignore_patterns("mlruns.db", "mlartifacts", "artifacts"))
    return Settings.load(root)


@pytest.fixture(scope="module")
def two_audits(project):
    """The audit stage twice on unchanged data: (summary, audit.json bytes) for each."""
    out = []
    for _ in range(2):
        summary = audit_stage.audit(project)
        out.append((summary, Path(summary.json_path).read_bytes()))
    return out


def text_of(page: Path) -> str:
    """What a browser shows without scripts or styles (offline, GE's CDN assets never load)."""
    source = re.sub(r"<(script|style)\b.*?</\1>", " ", page.read_text(encoding="utf-8"), flags=re.S)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", source)))


def test_two_audits_of_unchanged_data_write_identical_audit_json(two_audits):
    (first, first_bytes), (second, second_bytes) = two_audits
    assert first.success and first.run_id != second.run_id  # two real runs ...
    assert first_bytes == second_bytes  # ... one audit.json
    saved = json.loads(first_bytes)
    assert "seconds" not in saved and "json_path" not in saved
    assert str(Path(first.json_path).parent) not in first_bytes.decode()  # no absolute paths either
    assert set(saved["validation_results"]) == set(SUITES)


def test_the_audit_builds_data_docs_linked_from_its_run_and_summary(project, two_audits):
    from mlflow import MlflowClient

    from mirops.registry import tracking

    summary = two_audits[-1][0]
    index = project.artifacts_dir / lineage.ARTIFACT_DATA_DOCS / "index.html"
    assert summary.data_docs == str(index) and index.is_file()
    assert sorted(summary.data_docs_pages) == sorted(SUITES)
    for suite, page in summary.data_docs_pages.items():
        assert Path(page).is_file() and f"validations/{suite}/" in page
        assert (index.parent / "expectations" / f"{suite}.html").is_file()
    # Only the latest audit's pages: GE removes the first audit's from the site.
    assert len(list((index.parent / "validations").rglob("*.html"))) == len(SUITES)
    json.dumps(asdict(summary))  # plain values: `mirops --json audit` and Prefect serialise it
    tracking.setup(project)
    run = MlflowClient().get_run(summary.run_id)
    assert run.data.tags[lineage.TAG_DATA_DOCS] == index.as_uri()
    assert run.data.metrics["audit_seconds"] > 0
    page = Path(summary.html_path).read_text(encoding="utf-8")
    assert "href='../data_docs/index.html'" in page  # the one-page report links to the Data Docs


def test_offline_the_index_lists_every_suite_and_links_its_pages(two_audits):
    index = Path(two_audits[-1][0].data_docs)
    shown = text_of(index)
    assert "Validation results of the latest audit" in shown and "✘ failed" not in shown
    hrefs = re.findall(r"href='([^']+)'", index.read_text(encoding="utf-8"))
    results = [h for h in hrefs if h.startswith("validations/")]
    assert len(results) == len(SUITES) and all((index.parent / h).is_file() for h in hrefs if "://" not in h)


def test_a_planted_leak_fails_its_suite_and_its_page_names_the_expectation(project, tmp_path):
    df, spec = read_manifest(project.data_dir)
    train_groups = df.loc[df["split"] == "train", "group"]
    leaked = df.index[df["group"] == train_groups.iloc[0]][0]
    df.loc[leaked, "split"] = "test"  # one clip of a train group moves to test: the group straddles splits
    result = run_audit(df, spec, project.audit, project.expectations_dir, tmp_path / "audit", "planted",
                       data_docs_dir=tmp_path / "docs")
    assert not result.success and any(m.startswith("leakage:") for m in result.critical_failures)
    leakage = text_of(result.data_docs_pages["leakage"])
    assert "Status: Failed" in leakage and "n_splits" in leakage
    assert "values must be less than or equal to 1" in leakage and "1 unexpected values found" in leakage
    assert "Status: Succeeded" in text_of(result.data_docs_pages["schema"])
    index = text_of(result.data_docs)
    assert re.search(r"leakage ✘ failed", index) and re.search(r"schema ✔ passed", index)
