"""MLflow tracking: where runs go, what every run carries (dataset version, git commit), and logging.

The embedded default is `sqlite:///<root>/mlruns.db` with artifacts in `<root>/mlartifacts`; setting
MLFLOW_TRACKING_URI (e.g. an `mlflow server` backed by PostgreSQL) changes nothing else.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow

from mirops.config import Settings

TAG_DATASET_VERSION = "mirops.dataset_version"
TAG_GIT_COMMIT = "mirops.git_commit"
TAG_STEP = "mirops.step"
TAG_AUDIT_SUCCESS = "mirops.audit_success"
TAG_AUDIT_RUN = "mirops.audit_run_id"
TAG_MODEL_URI = "mirops.model_uri"
TAG_DRIFT_SEVERITY = "mirops.drift_severity"  # on monitor runs: none | drift | critical (the gate reads it)


def git_commit(root: Path) -> str:
    """The commit of the code that produced a run ("unknown" outside git), with "-dirty" for local edits."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True, text=True
        ).stdout.strip()
    except (subprocess.CalledProcessError, FileNotFoundError):
        return "unknown"
    return f"{sha}-dirty" if dirty else sha


def _set_tracking_uri(uri: str) -> None:
    # mlflow.set_tracking_uri also exports MLFLOW_TRACKING_URI; keep the environment as the user set it,
    # or the next project opened in this process (a test, a notebook) would write into this one's store.
    before = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    if before is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = before


def setup(settings: Settings) -> str:
    """Point MLflow at the project's store and return the experiment id (created on first use)."""
    _set_tracking_uri(settings.tracking_uri)
    name = settings.registry.model_name
    experiment = mlflow.get_experiment_by_name(name)
    if experiment is not None:
        mlflow.set_experiment(experiment_id=experiment.experiment_id)
        return experiment.experiment_id
    location = None  # a tracking server decides where artifacts go; a database store would use ./mlruns
    if not settings.tracking_uri.startswith(("http://", "https://", "databricks")):
        settings.artifact_root.mkdir(parents=True, exist_ok=True)
        location = settings.artifact_root.as_uri()
    experiment_id = mlflow.create_experiment(name, artifact_location=location)
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id


def base_tags(settings: Settings, dataset_version: str, step: str) -> dict[str, str]:
    return {TAG_DATASET_VERSION: dataset_version, TAG_GIT_COMMIT: git_commit(settings.root), TAG_STEP: step}


@contextmanager
def run(settings: Settings, name: str, step: str, dataset_version: str, run_id: str | None = None,
        nested: bool = False) -> Iterator[Any]:
    """Start a run tagged with the dataset version and git commit (`run_id`: reopen that run, e.g. to resume
    an interrupted training; `nested`: a child of the active run)."""
    if not nested:
        setup(settings)
    if run_id is not None:
        with mlflow.start_run(run_id=run_id, nested=nested) as active:
            yield active
        return
    with mlflow.start_run(run_name=name, tags=base_tags(settings, dataset_version, step), nested=nested) as active:
        yield active


@contextmanager
def resume(settings: Settings, run_id: str) -> Iterator[Any]:
    """Reopen a finished run to add what a later step measured (e.g. test metrics)."""
    setup(settings)
    with mlflow.start_run(run_id=run_id) as active:
        yield active


def log_json(payload: Any, artifact_file: str) -> None:
    mlflow.log_dict(payload, artifact_file)


def log_file(path: Path, artifact_path: str | None = None) -> None:
    mlflow.log_artifact(str(path), artifact_path=artifact_path)


def log_figure(fig: Any, artifact_file: str) -> None:
    mlflow.log_figure(fig, artifact_file)


def write_json(path: Path, payload: Any) -> None:
    """A small JSON beside the pipeline's outputs (e.g. the run id DVC stages pass along)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as fh:
        json.dump(payload, fh, indent=2, default=str)
    Path(fh.name).replace(path)


def latest_run(settings: Settings, step: str, dataset_version: str):
    """The newest finished run of `step` on `dataset_version`, or None."""
    setup(settings)
    runs = mlflow.search_runs(
        filter_string=f"tags.`{TAG_STEP}` = '{step}' and tags.`{TAG_DATASET_VERSION}` = '{dataset_version}'",
        order_by=["attributes.start_time DESC"], max_results=1, output_format="list",
    )
    return runs[0] if runs else None
