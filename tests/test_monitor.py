"""Evidently drift reports on tiny tables: real Evidently, real local workspace."""

from __future__ import annotations

import json
import os
from pathlib import Path

os.environ.setdefault("DO_NOT_TRACK", "true")  # before Evidently is imported: no telemetry

import numpy as np
import pandas as pd
import pytest

from mirops.monitor.drift import DriftResult, drift_report, embedding_auc_threshold
from mirops.monitor.workspace import open_workspace, project_runs

COLUMNS = ["rms_db", "loudness_lufs", "spectral_centroid_hz", "spectral_flatness", "zero_crossing_rate"]
EMBEDDING = [f"emb_{i}" for i in range(16)]
SHIFTED = COLUMNS[:4]  # most columns move, one stays put
THRESHOLD = 0.5


def table(rows: int, seed: int, shift: float = 0.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({c: rng.normal(shift if c in SHIFTED else 0.0, 1.0, rows) for c in COLUMNS})
    frame[EMBEDDING] = rng.normal(shift, 1.0, (rows, len(EMBEDDING)))
    frame.insert(0, "clip_id", [f"clip{i}" for i in range(rows)])  # extra columns are ignored
    return frame


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Same distribution, then a 3-sigma shift, both stored in one workspace (Evidently runs are slow)."""
    root = tmp_path_factory.mktemp("drift")
    ws_dir = root / "workspace"
    reference = table(60, seed=1)

    def run(current: pd.DataFrame, name: str) -> DriftResult:
        return drift_report(
            reference, current, columns=COLUMNS, embedding_columns=EMBEDDING, out_dir=root / name,
            threshold=THRESHOLD, workspace_dir=ws_dir, project="drift", tags={"dataset_version": "v1"},
        )

    same = run(table(60, seed=2), "same")
    runs_after_one = project_runs(open_workspace(ws_dir), "drift")
    shifted = run(table(60, seed=3, shift=3.0), "shifted")
    return {"same": same, "shifted": shifted, "runs_after_one": runs_after_one, "ws_dir": ws_dir}


def test_same_distribution_is_not_drift(reports):
    result = reports["same"]
    assert result.drift_detected is False
    assert result.drift_share < THRESHOLD
    assert result.embedding_drift_detected is False
    assert result.embedding_drift_score is not None and result.embedding_drift_score <= 0.7
    assert (result.n_columns, result.reference_rows, result.current_rows) == (5, 60, 60)


def test_shifted_distribution_is_drift_and_names_the_columns(reports):
    result = reports["shifted"]
    assert result.drift_detected is True
    assert set(SHIFTED) <= set(result.drifted_columns)
    assert result.drift_share == pytest.approx(len(result.drifted_columns) / len(COLUMNS))
    assert result.drift_share >= THRESHOLD
    assert result.embedding_drift_detected is True
    assert result.embedding_drift_score > embedding_auc_threshold(60, 60)


def test_shares_are_shares(reports):
    for result in (reports["same"], reports["shifted"]):
        assert 0.0 <= result.drift_share <= 1.0
        assert all(c in COLUMNS for c in result.drifted_columns)
        assert json.loads(json.dumps(result.to_json()))["threshold"] == THRESHOLD


def test_html_and_json_are_written(reports):
    result = reports["shifted"]
    assert result.html_path.name == "drift.html" and result.html_path.stat().st_size > 10_000
    snapshot = json.loads(result.json_path.read_text())
    assert {"metrics", "tests"} <= set(snapshot)
    assert not list(result.html_path.parent.glob(".*.tmp"))  # written under a temp name, then renamed


def test_runs_land_in_one_workspace_project(reports):
    ws = open_workspace(reports["ws_dir"])  # reopened: what a later process or `evidently ui` sees
    assert reports["runs_after_one"] == [reports["same"].snapshot_id]
    runs = project_runs(ws, "drift")
    assert sorted(runs) == sorted([reports["same"].snapshot_id, reports["shifted"].snapshot_id])
    assert [p.name for p in ws.list_projects()] == ["drift"]


def test_embedding_threshold_tightens_with_more_rows():
    assert embedding_auc_threshold(60, 60) > embedding_auc_threshold(200, 200) > 0.55
    assert embedding_auc_threshold(100_000, 100_000) == 0.55


def test_missing_columns_are_named(tmp_path: Path):
    reference = table(10, seed=1)
    with pytest.raises(ValueError, match="current table lacks column.*emb_3"):
        drift_report(reference, reference.drop(columns=["emb_3"]), columns=COLUMNS, embedding_columns=EMBEDDING,
                      out_dir=tmp_path, threshold=THRESHOLD)
