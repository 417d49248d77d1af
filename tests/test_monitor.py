"""Evidently drift reports on tiny tables: real Evidently, real local workspace."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

os.environ.setdefault("DO_NOT_TRACK", "true")  # before Evidently is imported: no telemetry

import numpy as np
import pandas as pd
import pytest

from mirops.monitor.decision import file_level_test
from mirops.monitor.drift import DriftMeasurement, drift_report
from mirops.monitor.workspace import open_workspace, project_runs

COLUMNS = ["rms_db", "loudness_lufs", "spectral_centroid_hz", "spectral_flatness", "zero_crossing_rate"]
EMBEDDING = [f"emb_{i}" for i in range(16)]
SHIFTED = COLUMNS[:4]  # most columns move, one stays put
ALPHA = 0.05


def table(rows: int, seed: int, shift: float = 0.0) -> pd.DataFrame:
    """`rows` files of one window each."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({c: rng.normal(shift if c in SHIFTED else 0.0, 1.0, rows) for c in COLUMNS})
    frame[EMBEDDING] = rng.normal(shift, 1.0, (rows, len(EMBEDDING)))
    frame.insert(0, "clip_id", [f"clip{i}" for i in range(rows)])  # extra columns are ignored
    frame["group"] = frame["clip_id"]
    return frame


def report(reference: pd.DataFrame, current: pd.DataFrame, out_dir: Path, **kwargs) -> DriftMeasurement:
    return drift_report(reference, current, columns=COLUMNS, embedding_columns=EMBEDDING, out_dir=out_dir,
                        alpha=ALPHA, group_column="group", permutations=999, **kwargs)


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Same distribution, then a 3-sigma shift, both stored in one workspace (Evidently runs are slow)."""
    root = tmp_path_factory.mktemp("drift")
    ws_dir = root / "workspace"
    reference = table(60, seed=1)

    def run(current: pd.DataFrame, name: str) -> DriftMeasurement:
        return report(reference, current, root / name, workspace_dir=ws_dir, project="drift",
                      tags={"dataset_version": "v1"})

    same = run(table(60, seed=2), "same")
    runs_after_one = project_runs(open_workspace(ws_dir), "drift")
    shifted = run(table(60, seed=3, shift=3.0), "shifted")
    return {"same": same, "shifted": shifted, "runs_after_one": runs_after_one, "ws_dir": ws_dir}


def test_same_distribution_is_not_drift(reports):
    result = reports["same"]
    assert result.drift_detected is False and result.p_value > ALPHA
    assert result.drifted_columns == [] and result.drift_share == 0.0
    assert result.embedding_drift_detected is False
    assert result.embedding_drift_score is not None and result.embedding_drift_score <= 0.7
    assert (result.n_columns, result.reference_rows, result.current_rows) == (5, 60, 60)
    assert (result.reference_files, result.current_groups) == (60, 60) and result.decidable


def test_shifted_distribution_is_drift_and_names_the_columns(reports):
    result = reports["shifted"]
    assert result.drift_detected is True and result.p_value <= ALPHA
    assert set(result.drifted_columns) == set(SHIFTED)  # the column that stayed put is not blamed
    assert result.column_p_values[COLUMNS[4]] > ALPHA
    assert result.drift_share == pytest.approx(len(SHIFTED) / len(COLUMNS))
    assert result.embedding_drift_detected is True and result.embedding_p_value <= ALPHA
    assert result.embedding_drift_score > 0.9
    assert set(SHIFTED) <= set(result.window_drifted_columns)  # Evidently's per-column diagnostics agree


def test_the_report_carries_the_verdict(reports):
    for result in (reports["same"], reports["shifted"]):
        payload = json.loads(json.dumps(result.to_json()))
        assert payload["alpha"] == ALPHA and payload["permutations"] == 999
        snapshot = json.loads(result.json_path.read_text())
        decision = [t for t in snapshot["tests"] if "Drift over files" in t["name"]]
        assert len(decision) == 1 and decision[0]["status"] == ("FAIL" if result.drift_detected else "SUCCESS")


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


def clustered(groups: int, per_group: int, seed: int, prefix: str, correlated: bool = False) -> pd.DataFrame:
    """Windows that come in files: each file's windows sit close to the file's own centre, and the centres of
    every table are drawn from one distribution (no drift between tables). `correlated`: the descriptor
    columns are one quantity plus a little noise, as loudness, RMS and clipping are."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0.0, 1.0, (groups, len(EMBEDDING)))
    spread = np.repeat(np.arange(groups), per_group)
    frame = pd.DataFrame(centres[spread] + rng.normal(0.0, 0.1, (groups * per_group, len(EMBEDDING))),
                         columns=EMBEDDING)
    file_level = rng.normal(0.0, 1.0, (groups, 1 if correlated else len(COLUMNS)))
    values = file_level[spread] + rng.normal(0.0, 0.2, (len(frame), len(COLUMNS)))
    frame[COLUMNS] = values
    frame["group"] = [f"{prefix}{g}" for g in spread]
    return frame


def test_windows_of_one_file_stay_on_one_side_of_the_embedding_classifier():
    from sklearn.linear_model import SGDClassifier
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import train_test_split

    from mirops.monitor.drift import grouped_domain_auc

    reference, current = clustered(16, 6, seed=1, prefix="a"), clustered(16, 6, seed=2, prefix="b")
    # Evidently's row-wise split: held-out rows are recognised by their file, a false drift.
    x = np.vstack([reference[EMBEDDING], current[EMBEDDING]])
    y = np.r_[np.ones(len(reference)), np.zeros(len(current))]
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.5, random_state=42, shuffle=True)
    row_auc = roc_auc_score(y_test, SGDClassifier(loss="log_loss", random_state=42).fit(x_train, y_train)
                            .predict_proba(x_test)[:, 1])
    grouped = grouped_domain_auc(reference[EMBEDDING].to_numpy(), current[EMBEDDING].to_numpy(),
                                 reference["group"], current["group"])
    assert row_auc > 0.9 and grouped < 0.75


def test_files_not_windows_are_the_unit_of_the_verdict(tmp_path: Path):
    reference, current = clustered(16, 6, seed=1, prefix="a"), clustered(16, 6, seed=2, prefix="b")
    result = report(reference, current, tmp_path)
    assert (result.reference_groups, result.current_groups, result.reference_rows) == (16, 16, 96)
    assert result.drift_detected is False, result.to_json()
    # Counted as 96 + 96 independent rows, the same windows look drifted (what a window-level test concludes).
    as_rows = file_level_test(reference.assign(group=range(96)), current.assign(group=range(96)), columns=COLUMNS,
                              embedding_columns=EMBEDDING, group_column="group", alpha=ALPHA, permutations=999)
    assert as_rows.drift_detected is True

    shifted = clustered(16, 6, seed=3, prefix="c")
    shifted[EMBEDDING] += 1.0  # every file of the batch moved: drift, whatever the grouping
    moved = report(reference, shifted, tmp_path / "moved")
    assert moved.drift_detected is True and moved.embedding_drift_detected is True


def test_false_alarms_stay_within_alpha_with_correlated_columns_and_few_files():
    """Under no drift, the verdict fires at most at its level, with five near-copies of one descriptor and
    windows that cluster by file: 300 batches of 8 files against 12, each with a binomial 99 % margin."""
    from scipy.stats import binom

    trials, alarms, naive = 300, 0, 0
    for k in range(trials):
        reference = clustered(12, 4, seed=2 * k, prefix="r", correlated=True)
        current = clustered(8, 4, seed=2 * k + 1, prefix="c", correlated=True)
        test = file_level_test(reference, current, columns=COLUMNS, embedding_columns=EMBEDDING,
                               group_column="group", alpha=ALPHA, permutations=199, seed=k)
        alarms += test.drift_detected
        naive += min(test.raw_p.values()) <= ALPHA  # "any test at 5 %": what the combination corrects
    assert alarms <= binom.ppf(0.99, trials, ALPHA), alarms
    assert naive > binom.ppf(0.99, trials, ALPHA), naive  # without the correction the rate is far above alpha


def test_a_batch_too_small_for_the_level_says_so():
    reference, current = table(3, seed=1), table(2, seed=2, shift=10.0)
    test = file_level_test(reference, current, columns=COLUMNS, embedding_columns=EMBEDDING, group_column="group",
                           alpha=ALPHA, permutations=999)
    assert test.min_p == pytest.approx(1 / 10) and test.decidable is False and test.drift_detected is False


def test_missing_columns_are_named(tmp_path: Path):
    reference = table(10, seed=1)
    with pytest.raises(ValueError, match="current table lacks column.*emb_3"):
        report(reference, reference.drop(columns=["emb_3"]), tmp_path)


# ---------------------------------------------------------------- the monitor step: references, champion, CLI

def _tone_batch(folder: Path, n: int = 12, seconds: float = 3.0, rate: int = 16000) -> Path:
    """A batch nothing like the demo's music: loud white noise and pure tones."""
    import soundfile as sf

    rng = np.random.default_rng(5)
    folder.mkdir(parents=True)
    t = np.arange(int(seconds * rate)) / rate
    for i in range(n):
        wave = (rng.uniform(-0.9, 0.9, len(t)) if i % 2 else 0.9 * np.sin(2 * np.pi * (300 + 150 * i) * t))
        sf.write(folder / f"tone{i:02d}.wav", wave.astype(np.float32), rate)
    return folder


def _register_champion(settings, dataset_version: str) -> str:
    """The probe model of test_predict (probabilities that describe what it hears), registered as champion
    with the dataset version it was "trained" on as its registry tag, as `mirops register` tags versions."""
    import mlflow
    from mlflow import MlflowClient

    from mirops import lineage
    from mirops.registry import models, tracking
    from tests.test_predict import PROBE_SERVING, Probe

    name = settings.registry.model_name
    with tracking.run(settings, "probe", "train", dataset_version):
        uri = models.log_model(Probe(), PROBE_SERVING)
    version = mlflow.register_model(uri, name, tags={lineage.TAG_DATASET_VERSION: dataset_version}).version
    MlflowClient().set_registered_model_alias(name, models.CHAMPION, version)
    return str(version)


@pytest.fixture(scope="module")
def one_torch_thread():
    """Clip-by-clip YAMNet on a shared 2-core machine: one intra-op thread (two, competing with other processes,
    ran several times slower); the CLI processes get the same through OMP_NUM_THREADS."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def versions(tmp_path_factory: pytest.TempPathFactory, one_torch_thread) -> dict:
    """A TINY demo project with two dataset versions: v1 (the champion's), then v2 = v1 less four training
    clips, which is what data/ holds. The champion is the probe model, registered on v1."""
    from mirops.config import Settings
    from mirops.data.manifest import MANIFEST, read_manifest
    from mirops.pipeline.ingest import demo
    from mirops.pipeline.version import version
    from mirops.registry import tracking
    from tests.conftest import make_project

    settings = Settings.load(make_project(tmp_path_factory.mktemp("monitor") / "p"))
    demo(settings)
    v1 = version(settings, "all clips", check=False)
    manifest, _ = read_manifest(settings.data_dir)
    dropped = manifest[manifest["split"] == "train"].head(4)
    for rel in dropped["path"]:
        (settings.data_dir / rel).unlink()
    manifest.drop(index=dropped.index).to_parquet(settings.data_dir / MANIFEST, index=False)
    v2 = version(settings, "four training clips fewer", check=False)
    tracking.setup(settings)
    champion = _register_champion(settings, v1)
    n_train = int((manifest["split"] == "train").sum())
    return {"settings": settings, "v1": v1, "v2": v2, "champion": champion, "n_train": n_train,
            "data_files": sorted(p.name for p in settings.data_dir.rglob("*") if p.is_file())}


def test_default_reference_is_the_champions_dataset_version_read_from_dvc_without_touching_data(versions):
    from mirops.data.version import read_version
    from mirops.pipeline.monitor import monitor
    from mirops.registry import tracking

    settings, v1, v2 = versions["settings"], versions["v1"], versions["v2"]
    result = monitor(settings)  # production/ vs the champion's data: v1, which data/ no longer holds
    assert result.dataset_version == v1 and result.reference_files == versions["n_train"]
    # The probe champion hears 1 s: the demo's 3 s clips are three windows each, grouped by session.
    assert result.reference_rows == 3 * versions["n_train"] and result.reference_groups < versions["n_train"]
    assert (result.model_name, result.model_version) == (settings.registry.model_name, versions["champion"])
    assert read_version(settings.root).version == v2  # data/ was not checked out or changed
    assert sorted(p.name for p in settings.data_dir.rglob("*") if p.is_file()) == versions["data_files"]

    # The champion's class probabilities are compared column by column, beside the descriptors.
    assert result.prediction_columns == ["pred_energy", "pred_filled", "pred_pitch"]
    assert result.n_columns == 11 + 3
    shares = result.predicted_distribution["filled"]
    assert 0.0 <= shares["reference_mean"] <= 1.0 and 0.0 <= shares["current_positive_share"] <= 1.0
    snapshot = json.loads(result.json_path.read_text())
    compared = {m["config"].get("column") for m in snapshot["metrics"]}
    assert {"pred_energy", "spectral_centroid_hz"} <= compared

    # The MLflow run: under the reference's version (what the promotion gate looks up), with the model version.
    run = tracking.latest_run(settings, "monitor", v1)
    assert run is not None and run.info.run_id == result.run_id
    assert run.data.tags["mirops.model_version"] == versions["champion"]
    assert run.data.tags["mirops.drift_severity"] == result.severity
    assert run.data.metrics["drift_share"] == pytest.approx(result.drift_share)
    assert run.data.params["monitor.alpha"] == "0.05"
    assert run.data.metrics["drift_p_value"] == pytest.approx(result.p_value)
    verdict = json.loads((settings.artifacts_dir / "monitor" / "verdict.json").read_text())
    assert verdict["dataset_version"] == v1 and verdict["run_id"] == result.run_id
    assert not list(Path(tempfile.gettempdir()).glob(f"mirops-version-{v1[:8]}-*"))  # the view is gone


def test_reference_by_version_prefix_or_folder(versions, tmp_path):
    from mirops.pipeline.monitor import monitor
    from mirops.registry import tracking

    settings, v2 = versions["settings"], versions["v2"]
    current = monitor(settings, reference=v2[:8])  # the current version: read from data/ itself
    assert current.dataset_version == v2 and current.reference_files == versions["n_train"] - 4

    folder = _tone_batch(tmp_path / "tones")
    given = monitor(settings, current=settings.production_dir, reference=folder)
    assert given.dataset_version.startswith("folder-") and given.reference_files == 12
    run = tracking.latest_run(settings, "monitor", given.dataset_version)
    assert run.data.tags["mirops.reference_kind"] == "folder"
    assert given.drift_detected and given.severity in ("drift", "critical")


def test_a_reference_that_cannot_be_found_is_named(versions, tmp_path):
    from mirops.data.dataset import version_view
    from mirops.data.version import default_remote
    from mirops.monitor.reference import open_reference
    from mirops.pipeline.monitor import monitor

    settings = versions["settings"]
    with pytest.raises(LookupError, match="dataset version 'deadbeef' not found"):
        monitor(settings, reference="deadbeef")
    # The champion's version gone from DVC's store: the scheduled monitor goes on against data/, and says so.
    with open_reference(settings.root, settings.data_dir, None, "f" * 32, "models:/tiny-instruments/9") as ref:
        assert ref.dataset_version == versions["v2"] and ref.folder == settings.data_dir
        assert "models:/tiny-instruments/9's dataset version ffff" in ref.chosen_by
    with pytest.raises(FileNotFoundError, match="no such folder"):
        monitor(settings, reference=str(tmp_path / "nowhere"))

    # A version whose audio is gone from the DVC cache and the remote (e.g. after `dvc gc`).
    copy = tmp_path / "copy"
    shutil.copytree(settings.root, copy, symlinks=True, ignore=shutil.ignore_patterns("mlartifacts", "dashboards"))
    # Its own copy of the remote (outside the project, see mirops.data.version.default_remote), so the original's
    # stays whole for the other tests.
    remote = default_remote(copy)
    shutil.copytree(default_remote(settings.root), remote)
    (copy / ".dvc" / "config.local").write_text((copy / ".dvc" / "config.local").read_text().replace(
        str(default_remote(settings.root)), str(remote)))
    v1_listing = copy / ".dvc" / "cache" / "files" / "md5" / versions["v1"][:2] / f"{versions['v1'][2:]}.dir"
    audio = next(e["md5"] for e in json.loads(v1_listing.read_text()) if e["relpath"].startswith("audio/"))
    for store in (copy / ".dvc" / "cache", remote):
        target = store / "files" / "md5" / audio[:2] / audio[2:]
        target.chmod(0o644)
        target.unlink()
    with pytest.raises(FileNotFoundError, match=f"dataset version {versions['v1']}: 1 of .* files are in neither"), \
            version_view(copy, versions["v1"]):
        pass


def test_cli_json_verdict_and_fail_on_drift(versions, tmp_path, monkeypatch):
    from tests.test_cli import REPO, mirops

    monkeypatch.setenv("PYTHONPATH", str(REPO))  # the probe champion's class lives in tests/
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    root, v1 = versions["settings"].root, versions["v1"]
    batch = _tone_batch(tmp_path / "tones")
    done = mirops(root, "monitor", "--current", str(batch), "--reference", v1[:10], "--json", "--fail-on-drift",
                  check=False)
    assert done.returncode == 3, done.stderr[-3000:]  # drift: exit 3, after the verdict is out
    verdict = json.loads(done.stdout)
    assert verdict["drift_detected"] is True and verdict["dataset_version"] == v1
    assert verdict["model_version"] == versions["champion"] and verdict["prediction_columns"]
    assert {"p_value", "alpha", "drift_share", "embedding_drift_score", "severity", "thresholds"} <= set(verdict)
    assert verdict["current_files"] == verdict["current_groups"] == 12  # no manifest: each file is its own group
    assert verdict["current_rows"] == 36  # 3 s files in the probe champion's 1 s windows
    assert Path(verdict["html_path"]).exists() and Path(verdict["json_path"]).exists()
    assert "DRIFT" in done.stderr
