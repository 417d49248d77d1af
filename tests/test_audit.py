"""The dataset audit: real Great Expectations suites from expectations/ on small hand-built manifests."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mirops.audit.report import AuditFailed, AuditResult, raise_for_critical, run_audit
from mirops.audit.suites import SuiteError, load_suites
from mirops.config import AuditParams
from mirops.data.manifest import LabelSpec

EXPECTATIONS = Path(__file__).resolve().parents[1] / "expectations"
SUITES = ["schema", "label_balance", "class_balance", "missing_labels", "subjectivity", "split_proportions",
          "class_diversity", "representativeness", "descriptor_shift", "leakage", "duplicate_audio", "integrity",
          "quarantine"]
CLASSES = ["drums", "piano", "violin"]
SPEC = LabelSpec(classes=CLASSES, threshold=0.5)


def make_manifest() -> pd.DataFrame:
    """30 clips in 10 groups of 3: groups 0-5 train, 6-7 valid, 8-9 test (60/20/20).

    Labels alternate per clip, so every split has at least 3 positives and 3 negatives per class.
    """
    rows = []
    for i in range(30):
        group = i // 3
        split = "train" if group < 6 else "valid" if group < 8 else "test"
        row = {"clip_id": f"c{i:02d}", "path": f"audio/c{i:02d}.wav", "split": split, "group": f"g{group}",
               "duration_s": 10.0, "sample_rate": 16000}
        row.update({f"label:{c}": 0.9 if (i + j) % 2 == 0 else 0.1 for j, c in enumerate(CLASSES)})
        rows.append(row)
    df = pd.DataFrame(rows)
    df.loc[[0, 5], "label:drums"] = np.nan  # not annotated is allowed and not a negative
    return df


def audit(df: pd.DataFrame, out: Path, params: AuditParams | None = None) -> AuditResult:
    return run_audit(df, SPEC, params or AuditParams(), EXPECTATIONS, out, dataset_version="test-v1")


def test_good_manifest_passes_and_writes_reports(tmp_path: Path) -> None:
    result = audit(make_manifest(), tmp_path)
    assert result.success, result.critical_failures
    assert result.critical_failures == [] and result.warnings == []
    assert [*dict.fromkeys(c["suite"] for c in result.checks)] == SUITES
    assert result.json_path == tmp_path / "audit.json" and result.json_path.is_file()
    page = result.html_path.read_text()
    assert "PASSED" in page and "label_balance" in page
    assert "http://" not in page and "https://" not in page  # self-contained, renders offline
    raise_for_critical(result)  # no exception


def test_group_in_two_splits_fails_leakage_and_names_groups(tmp_path: Path) -> None:
    df = make_manifest()
    df.loc[df["clip_id"] == "c00", "split"] = "valid"  # g0 now in train and valid
    df.loc[df["clip_id"] == "c29", "split"] = "train"  # g9 now in test and train
    result = audit(df, tmp_path)
    assert not result.success
    [leak] = [m for m in result.critical_failures if m.startswith("leakage:")]
    assert "g0" in leak and "g9" in leak and "g1" not in leak
    with pytest.raises(AuditFailed) as err:
        raise_for_critical(result)
    assert "g0" in str(err.value) and "g9" in str(err.value)
    assert err.value.result is result


def test_too_few_positives_names_class_and_split(tmp_path: Path) -> None:
    df = make_manifest()
    valid = df.index[df["split"] == "valid"]
    df.loc[valid, "label:piano"] = 0.0
    df.loc[valid[0], "label:piano"] = 1.0  # one positive left in valid
    result = audit(df, tmp_path)
    assert not result.success
    [balance] = [m for m in result.critical_failures if m.startswith("label_balance:")]
    assert "piano/valid" in balance and "observed 1" in balance
    assert "drums" not in balance and "piano/train" not in balance


def test_label_out_of_range_fails_schema(tmp_path: Path) -> None:
    df = make_manifest()
    df.loc[df["clip_id"] == "c07", "label:violin"] = 1.5
    result = audit(df, tmp_path)
    assert not result.success
    [schema] = [m for m in result.critical_failures if m.startswith("schema:")]
    assert "c07" in schema and "1.5" in schema


def test_thresholds_come_from_audit_params(tmp_path: Path) -> None:
    good = make_manifest()
    strict = audit(good, tmp_path / "strict", AuditParams(min_positives_per_class=10))
    assert not strict.success
    assert any(m.startswith("label_balance:") and "≥ 10" in m for m in strict.critical_failures)
    [check] = [c for c in strict.checks if c["kwargs"].get("column") == "positives"]
    assert check["kwargs"]["min_value"] == 10

    leaky = good.copy()
    leaky.loc[leaky["clip_id"] == "c00", "split"] = "valid"
    lenient = audit(leaky, tmp_path / "lenient", AuditParams(max_group_splits=2))
    assert lenient.success, lenient.critical_failures


def test_audit_json_round_trips_with_observed_values(tmp_path: Path) -> None:
    df = make_manifest()
    df.loc[df["clip_id"] == "c07", "label:violin"] = 1.5
    result = audit(df, tmp_path)
    saved = json.loads(result.json_path.read_text())
    assert saved["success"] is False and saved["dataset_version"] == "test-v1"
    assert saved["critical_failures"] == result.critical_failures
    assert set(saved["validation_results"]) == set(SUITES)
    fractions = {c["kwargs"]["row_condition"]: c["observed_value"] for c in saved["checks"]
                 if c["suite"] == "split_proportions"}
    assert fractions["split == 'train'"] == pytest.approx(0.6)
    [label_max] = [c for c in saved["checks"] if c["kwargs"].get("column") == "label_max"]
    assert label_max["observed_value"]["unexpected_rows"] == [{"clip_id": "c07", "label_max": 1.5}]
    balance = pd.DataFrame(saved["tables"]["balance"])
    assert balance.set_index(["split", "class"]).loc[("valid", "piano"), "positives"] == 3


def test_suite_files_are_dataset_independent() -> None:
    suites = load_suites(EXPECTATIONS)
    assert [s.name for s in suites] == SUITES
    for suite in suites:
        text = suite.path.read_text()
        assert not any(c in text for c in CLASSES), suite.path  # no class names baked in
        assert '"id"' not in text  # no volatile ids in committed files
    assert {"min_positives", "max_group_splits", "train_fraction_min"} <= set().union(
        *(s.parameters() for s in suites))


def test_suite_without_severity_is_rejected(tmp_path: Path) -> None:
    payload = json.loads((EXPECTATIONS / "leakage.json").read_text())
    del payload["expectations"][0]["meta"]["severity"]
    (tmp_path / "leakage.json").write_text(json.dumps(payload))
    with pytest.raises(SuiteError, match="leakage.json.*severity"):
        load_suites(tmp_path)


def test_two_suites_with_one_name_are_rejected(tmp_path: Path) -> None:
    for name in ("leakage", "leakage_copy"):
        shutil.copy(EXPECTATIONS / "leakage.json", tmp_path / f"{name}.json")  # both say "name": "leakage"
    with pytest.raises(SuiteError, match="leakage_copy.json.*'leakage' is also the name of .*leakage.json"):
        run_audit(make_manifest(), SPEC, AuditParams(), tmp_path, tmp_path / "out", dataset_version="test-v1")
