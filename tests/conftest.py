"""Shared fixtures: the stack offline and quiet, and tiny projects in temporary folders."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest
import yaml

from mirops.offline import quiet_and_offline

REPO = Path(__file__).resolve().parents[1]
quiet_and_offline()
# The default DVC remote is $XDG_DATA_HOME/mirops/dvc-remote/<project>-<hash> (mirops.data.version): tests, and the
# CLI processes they start, push to a temporary one, never to the real user's data folder.
os.environ["XDG_DATA_HOME"] = tempfile.mkdtemp(prefix="mirops-test-data-home-")
atexit.register(shutil.rmtree, os.environ["XDG_DATA_HOME"], True)

# A dataset small enough for a test, big enough that every split has positives of every class.
TINY = {
    "seed": 7,
    "demo": {"clips": 36, "production_clips": 8, "clip_seconds": 3.0, "groups": 12, "missing_fraction": 0.2,
             "classes": ["bass", "drums", "flute", "piano"], "max_instruments": 3},
    "audit": {"min_positives_per_class": 1},
    "reprogram": {"epochs": 1, "batch_size": 8, "clip_seconds": 3.0},
    "registry": {"model_name": "tiny-instruments"},
}


def soundfonts_available() -> bool:
    return all(Path("/usr/share/sounds/sf2", f).exists() for f in ("FluidR3_GM.sf2", "TimGM6mb.sf2")) and Path(
        "/usr/share/sounds/sf3/MuseScore_General_Lite.sf3").exists()


needs_soundfonts = pytest.mark.skipif(
    not soundfonts_available(),
    reason="Debian SoundFonts missing (make setup installs fluid-soundfont-gm, timgm6mb-soundfont and "
    "musescore-general-soundfont-small)",
)


def load_flow(entrypoint: str):
    """A Prefect flow file of the repository by entrypoint path, as `mirops pipeline run` loads it."""
    from mirops import flow_files

    return flow_files.load(entrypoint, REPO)


def merged(base: dict, changes: dict) -> dict:
    out = dict(base)
    for key, value in changes.items():
        out[key] = merged(out.get(key, {}), value) if isinstance(value, dict) else value
    return out


def make_project(root: Path, params: dict | None = None) -> Path:
    """A project folder as a user has it: the repository's params.yaml with `params` (default TINY)
    merged in, and the expectation suites."""
    root.mkdir(parents=True, exist_ok=True)
    repo_params = yaml.safe_load((REPO / "params.yaml").read_text())
    (root / "params.yaml").write_text(yaml.safe_dump(merged(repo_params, TINY if params is None else params)))
    shutil.copytree(REPO / "expectations", root / "expectations", dirs_exist_ok=True)
    return root


@pytest.fixture
def tiny_project(tmp_path: Path) -> Path:
    return make_project(tmp_path / "project")


@pytest.fixture(scope="session")
def demo_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A TINY demo project, rendered and versioned once for the training tests that only read its data."""
    from tests.test_cli import mirops

    root = make_project(tmp_path_factory.mktemp("demo") / "p")
    mirops(root, "data", "demo")
    mirops(root, "data", "version", "--no-commit")
    return root


@pytest.fixture(scope="session")
def prefect_api():
    """One temporary Prefect API for the whole session (starting one costs seconds)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield
