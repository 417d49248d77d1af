"""The CLI as scripts use it, and `dvc repro` running the same steps through it."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, TINY, make_project, needs_soundfonts

BIN = Path(sys.executable).parent


def mirops(root: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return run([str(BIN / "mirops"), *args, "--root", str(root)], root, check)


def run(cmd: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    if check:
        assert done.returncode == 0, f"{cmd} failed ({done.returncode}):\n{done.stderr[-3000:]}"
    return done


@needs_soundfonts
def test_audit_cli_prints_json_and_fails_naming_the_expectation(tmp_path):
    root = make_project(tmp_path / "p")
    mirops(root, "data", "demo")
    version = json.loads(mirops(root, "data", "version", "--json").stdout)["dataset_version"]
    assert version == yaml.safe_load((root / "data.dvc").read_text())["outs"][0]["md5"].removesuffix(".dir")

    audit = json.loads(mirops(root, "audit", "--json").stdout)
    assert audit["success"] is True and Path(audit["html_path"]).exists()

    strict = mirops(root, "audit", "--set", "audit.min_positives_per_class=99", check=False)
    assert strict.returncode == 1
    assert "critical: label_balance: positives ≥ 99 per class and split failed for" in strict.stderr

    refused = mirops(root, "train", "reprogram", check=False)  # the newest audit of this version failed
    assert refused.returncode == 1 and f"the audit of dataset version {version} failed" in refused.stderr
    assert not (root / "artifacts" / "train").exists()


def test_bad_input_gets_a_clear_error_and_exit_code(tmp_path):
    root = make_project(tmp_path / "empty")
    done = mirops(root, "audit", check=False)
    assert done.returncode == 2
    assert "data.dvc: the dataset is not versioned yet; run `mirops data version`" in done.stderr
    assert "Traceback" not in done.stderr

    (root / "data").mkdir()
    (root / "data" / "labels.json").write_text("{not json")
    done = mirops(root, "data", "version", check=False)  # the check before versioning reads the dataset
    assert done.returncode == 2 and "labels.json: not valid JSON" in done.stderr
    assert not (root / "data.dvc").exists()


@needs_soundfonts
def test_dvc_repro_runs_the_stages_through_the_cli(tmp_path):
    root = make_project(tmp_path / "repro")
    shutil.copy(REPO / "dvc.yaml", root / "dvc.yaml")
    for code in ("src", "flows"):  # the stages depend on the code they run (dvc.yaml lists it)
        (root / code).symlink_to(REPO / code)
    mirops(root, "data", "demo")
    mirops(root, "data", "version")
    run([str(BIN / "dvc"), "repro"], root)

    metrics = json.loads((root / "artifacts" / "evaluate" / "metrics.json").read_text())
    assert 0.0 <= metrics["test_mAP"] <= 1.0
    registration = json.loads((root / "artifacts" / "register" / "reprogram.json").read_text())
    assert registration["aliases"] == ["challenger"]  # registering never crowns: the gate does
    decision = json.loads((root / "artifacts" / "promote" / "reprogram.json").read_text())
    assert decision["action"] == "promote" and decision["champion_after"] == registration["version"] == "1"
    assert "drift_share" in json.loads((root / "artifacts" / "monitor" / "verdict.json").read_text())
    status = run([str(BIN / "dvc"), "status", "--json"], root).stdout
    assert json.loads(status) == {}  # everything up to date: a second repro would do nothing
    assert TINY["registry"]["model_name"] == registration["name"]
    first_run = registration["run_id"]

    # New data: the old run is still scored on the version it was trained on (read from DVC's store, data/
    # untouched), and the next champion decision re-tests the old champion on the new test split.
    mirops(root, "data", "demo", "--overwrite", "--set", "seed=8")
    mirops(root, "data", "version")
    again = json.loads(mirops(root, "evaluate", first_run, "--json").stdout)
    assert again["test_mAP"] == pytest.approx(metrics["test_mAP"], abs=1e-6)
    old = json.loads((root / "artifacts" / "evaluate" / "metrics.json").read_text())
    assert old["dataset_version"] == registration["dataset_version"]
    assert mirops(root, "data", "versions", "--json").returncode == 0
    # The stages by hand this time (the DVC route is covered above and by tests/test_dvc_pipeline.py).
    for stage in (("audit",), ("train", "reprogram"), ("evaluate",), ("register",), ("promote",)):
        mirops(root, *stage)
    second = json.loads((root / "artifacts" / "register" / "reprogram.json").read_text())
    assert second["version"] == "2" and second["run_id"] != first_run
    assert second["dataset_version"] != registration["dataset_version"]
    decision = json.loads((root / "artifacts" / "promote" / "reprogram.json").read_text())
    assert decision["version"] == "2" and decision["champion_before"] == "1"
    assert decision["checks"]["gain"]["champion_rescored"]  # the old champion, re-tested on this test split
    assert decision["checks"]["gain"]["clips"] > 0 and "v1" in decision["reason"]

    # The same gate from the CLI: a dry run explains and changes nothing; rollback restores v1.
    dry = json.loads(mirops(root, "promote", "--version", "2", "--dry-run", "--json").stdout)
    assert dry["dry_run"] and dry["run_id"] is None and dry["action"] in ("promote", "reject", "noop")
    if decision["action"] == "promote":
        back = json.loads(mirops(root, "rollback", "--reason", "test", "--json").stdout)
        assert back["action"] == "rollback" and back["champion_after"] == "1"


def test_version_versions_checkout_through_the_cli_with_the_quarantine_counted(tmp_path):
    from tests.test_audio_io import corpus_dataset

    root = make_project(tmp_path / "v")
    expected = corpus_dataset(root / "data")
    n_bad = sum(r != "ok" for r in expected.values())
    first = json.loads(mirops(root, "data", "version", "-m", "corpus as downloaded", "--json").stdout)
    assert (root / "data" / "quarantine.parquet").exists()
    (root / "data" / "audio" / "good.wav").unlink()  # a user edit; the manifest now names a missing file
    second = json.loads(mirops(root, "data", "version", "-m", "lost one", "--json").stdout)
    listed = json.loads(mirops(root, "data", "versions", "--json").stdout)["versions"]
    assert [(v["version"], v["message"], v["quarantined"]) for v in listed] == [
        (first["dataset_version"], "corpus as downloaded", n_bad),
        (second["dataset_version"], "lost one", n_bad + 1)]
    done = mirops(root, "data", "checkout", first["dataset_version"][:8])
    assert "is now version" in done.stderr and (root / "data" / "audio" / "good.wav").exists()
    missing = mirops(root, "data", "checkout", "ffffffff", check=False)
    assert missing.returncode == 2 and "no dataset version starts with 'ffffffff'" in missing.stderr
