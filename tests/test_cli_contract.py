"""The command line's contract with scripts and schedulers: strict settings, JSON failures, exit codes that are
verdicts (never a crash at shutdown), inputs checked before expensive work."""

from __future__ import annotations

import json
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.conftest import make_project, needs_soundfonts
from tests.test_cli import BIN, mirops, run


def test_version_names_the_package_and_its_stack(tmp_path):
    out = run([str(BIN / "mirops"), "--version"], tmp_path).stdout
    assert out.startswith("mirops 0.1.0 (python 3.11") and "mlflow 3." in out and "torch 2.11.0" in out


def test_a_settings_typo_fails_naming_the_key_it_meant(tmp_path):
    root = make_project(tmp_path / "p")
    done = run([str(BIN / "mirops"), "--root", str(root), "--set", "train.epoch=1", "train", "reprogram"],
               root, check=False)
    assert done.returncode == 2 and "`epoch` -> `reprogram.epochs`" in done.stderr, done.stderr
    done = mirops(root, "train", "reprogram", "--set", "reprogram.epoch=1", check=False)
    assert done.returncode == 2 and "did you mean `reprogram.epochs`?" in done.stderr
    assert "Traceback" not in done.stderr and not (root / "mlruns.db").exists()  # nothing started


def test_with_json_every_failure_is_one_json_object_and_global_options_go_first(tmp_path):
    root = make_project(tmp_path / "p")
    done = run([str(BIN / "mirops"), "--json", "--root", str(root), "--set", "audit.bogus=1", "audit"], root,
               check=False)
    payload = json.loads(done.stdout)
    assert done.returncode == 2 and payload["exit_code"] == 2 and "`audit.bogus`" in payload["error"]

    usage = run([str(BIN / "mirops"), "--json", "nosuch"], root, check=False)
    assert usage.returncode == 2 and json.loads(usage.stdout)["kind"] == "usage"

    missing = mirops(root, "--json", "monitor", "--current", str(tmp_path / "nonexistent"), check=False)
    error = json.loads(missing.stdout)["error"]
    assert missing.returncode == 2 and str(tmp_path / "nonexistent") in error
    assert not (root / "mlruns.db").exists()  # refused before the champion or the reference was touched

    for flag in ("--source", "--current"):
        early = mirops(root, "pipeline", "run", flag, str(tmp_path / "nowhere"), "--json", check=False)
        assert early.returncode == 2 and str(tmp_path / "nowhere") in json.loads(early.stdout)["error"]
    assert not (root / "data").exists()  # no demo rendered, no flow started


@pytest.mark.slow
@needs_soundfonts
def test_data_commands_exit_zero_every_time_under_parallel_load(demo_project, tmp_path):
    """A finished command must not abort at interpreter teardown (native thread pools still alive: exit 134)."""
    projects = []
    for i in range(2):
        copy = tmp_path / f"p{i}"
        shutil.copytree(demo_project, copy, ignore=shutil.ignore_patterns("mlruns.db", "mlartifacts", "artifacts"))
        projects.append(copy)

    def rounds(root):
        codes = []
        for _ in range(3):
            for args in (("data", "check"), ("data", "version", "--no-commit")):
                done = subprocess.run([str(BIN / "mirops"), *args, "--root", str(root)], cwd=root,
                                      capture_output=True, text=True, timeout=600)
                codes.append((args, done.returncode, done.stderr[-2000:]))
        return codes

    with ThreadPoolExecutor(2) as pool:
        results = [c for codes in pool.map(rounds, projects) for c in codes]
    bad = [(args, code, err) for args, code, err in results if code != 0 or "terminate called" in err]
    assert not bad, bad
