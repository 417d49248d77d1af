"""Feature precomputation as mapped Prefect tasks fills the cache once; on threads or on a Dask LocalCluster."""

from __future__ import annotations

import pytest

from tests.conftest import load_flow, make_project
from tests.test_audio_io import corpus_dataset


@pytest.fixture
def corpus_project(tmp_path):
    root = make_project(tmp_path / "project", {"reprogram": {"clip_seconds": 2.0}})
    expected = corpus_dataset(root / "data")
    return root, expected


@pytest.mark.parametrize("runner", ["thread", "dask"])
def test_mapped_precompute_fills_the_cache_and_reports_broken_clips(prefect_api, corpus_project, runner):
    run_precompute = load_flow("precompute.py:run_precompute")

    root, expected = corpus_project
    totals = run_precompute(str(root), {}, task_runner=runner, workers=2, chunk_size=4)
    # Unchecked data (the flow checks first): a clip too short for its declared length is still usable here.
    unusable = {p: r for p, r in expected.items() if r not in ("ok", "too_short")}
    good = len(expected) - len(unusable)
    assert totals["clips"] == len(expected) and totals["ok"] == good and totals["chunks"] == -(-len(expected) // 4)
    assert totals["failed"] == unusable
    cache = root / "artifacts" / "cache"
    for namespace in ("audio", "frontend", "descriptors", "embeddings", "fingerprints"):
        assert len(list((cache / namespace).rglob("*.npy"))) == good, namespace


def test_a_second_precompute_computes_nothing(prefect_api, corpus_project):
    run_precompute = load_flow("precompute.py:run_precompute")

    root, _ = corpus_project
    run_precompute(str(root), {}, chunk_size=100)
    before = {p: p.stat().st_mtime_ns for p in (root / "artifacts" / "cache").rglob("*.npy")}
    again = run_precompute(str(root), {}, chunk_size=100)
    after = {p: p.stat().st_mtime_ns for p in (root / "artifacts" / "cache").rglob("*.npy")}
    assert before == after and again["ok"] == len([1 for p in before if "embeddings" in str(p)])
