"""MLflow tracking: where runs go, what every run carries (dataset version, git commit), and logging.

The embedded default is `sqlite:///<root>/mlruns.db` with artifacts in `<root>/mlartifacts`; setting
MLFLOW_TRACKING_URI (e.g. an `mlflow server` backed by PostgreSQL) changes nothing else.
"""

from __future__ import annotations

import math
import os
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from mirops.config import Settings
from mirops.lineage import TAG_DATASET_VERSION, TAG_GIT_COMMIT, TAG_STEP


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


class Run:
    """The active MLflow run, as the pipeline writes to it: no caller outside `registry/` touches MLflow.

    Metrics that are not finite (NaN F1 of a class without positives, say) are left out rather than
    rejected, so one empty class does not stop a run from being recorded.
    """

    def __init__(self, active: Any) -> None:
        self.id: str = active.info.run_id

    @staticmethod
    def log_params(params: dict[str, Any]) -> None:
        mlflow.log_params(params)

    @staticmethod
    def log_metrics(metrics: dict[str, float], step: int | None = None) -> None:
        finite = {k: float(v) for k, v in metrics.items() if v is not None and math.isfinite(float(v))}
        if finite:
            mlflow.log_metrics(finite, step=step)

    @staticmethod
    def set_tags(tags: dict[str, Any]) -> None:
        mlflow.set_tags({k: str(v) for k, v in tags.items()})

    @staticmethod
    def log_text(text: str, artifact_file: str) -> None:
        mlflow.log_text(text, artifact_file)

    @staticmethod
    def log_json(payload: Any, artifact_file: str) -> None:
        mlflow.log_dict(payload, artifact_file)

    @staticmethod
    def log_file(path: Path, artifact_path: str | None = None) -> None:
        mlflow.log_artifact(str(path), artifact_path=artifact_path)

    @staticmethod
    def log_table(table: Any, artifact_file: str) -> None:
        mlflow.log_table(table, artifact_file)

    @staticmethod
    def log_figure(fig: Any, artifact_file: str) -> None:
        """Log a matplotlib figure and close it (figures of a long run would pile up in memory)."""
        import matplotlib.pyplot as plt

        mlflow.log_figure(fig, artifact_file)
        plt.close(fig)

    def metric_steps(self, key: str) -> set[int]:
        """The steps at which metric `key` is logged on this run (e.g. the epochs a resumed run reported)."""
        return {m.step for m in MlflowClient().get_metric_history(self.id, key)}

    def log_frame(self, frame: Any, artifact_file: str) -> None:
        """A DataFrame as a Parquet artifact (`artifact_file`: its path on the run)."""
        directory, _, name = artifact_file.rpartition("/")
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / name
            frame.to_parquet(path, index=False)
            self.log_file(path, directory or None)

    def log_torch_state(self, state: dict[str, Any], artifact_file: str) -> None:
        """A state dict (`torch.save`) as an artifact: the trainable part of a grid variant, say."""
        import torch

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / artifact_file
            torch.save(state, path)
            self.log_file(path)


@contextmanager
def run(settings: Settings, name: str, step: str, dataset_version: str, run_id: str | None = None,
        nested: bool = False) -> Iterator[Run]:
    """Start a run tagged with the dataset version and git commit (`run_id`: reopen that run, e.g. to resume
    an interrupted training; `nested`: a child of the active run)."""
    if not nested:
        setup(settings)
    if run_id is not None:
        with mlflow.start_run(run_id=run_id, nested=nested) as active:
            yield Run(active)
        return
    with mlflow.start_run(run_name=name, tags=base_tags(settings, dataset_version, step), nested=nested) as active:
        yield Run(active)


@contextmanager
def resume(settings: Settings, run_id: str) -> Iterator[Run]:
    """Reopen a finished run to add what a later step measured (e.g. test metrics)."""
    setup(settings)
    with mlflow.start_run(run_id=run_id) as active:
        yield Run(active)


def latest_run(settings: Settings, step: str, dataset_version: str):
    """The newest finished run of `step` on `dataset_version`, or None."""
    setup(settings)
    runs = mlflow.search_runs(
        filter_string=f"tags.`{TAG_STEP}` = '{step}' and tags.`{TAG_DATASET_VERSION}` = '{dataset_version}'",
        order_by=["attributes.start_time DESC"], max_results=1, output_format="list",
    )
    return runs[0] if runs else None


def get_run(run_id: str):
    """A run's record (params, metrics, tags); LookupError naming the run when the store has none."""
    try:
        return MlflowClient().get_run(run_id)
    except MlflowException as exc:
        raise LookupError(f"MLflow run {run_id}: not found in {mlflow.get_tracking_uri()} "
                          f"({exc.message.splitlines()[0]})") from exc


def tag_runs(settings: Settings, run_ids: list[str], tags: dict[str, str]) -> None:
    """Add `tags` to finished runs (e.g. the Prefect flow run and the trigger that started them)."""
    setup(settings)
    client = MlflowClient()
    for run_id in run_ids:
        for key, value in tags.items():
            client.set_tag(run_id, key, str(value))


def log_text_to(run_id: str, text: str, artifact_file: str) -> None:
    """Add a text artifact to a finished run without reopening it."""
    MlflowClient().log_text(run_id, text, artifact_file)


def load_json_artifact(run_id: str, artifact_file: str) -> Any | None:
    """A JSON artifact of a run, or None when the run has none by that name."""
    try:
        return mlflow.artifacts.load_dict(f"runs:/{run_id}/{artifact_file}")
    except Exception:  # noqa: BLE001 - absent (an older run, a step not run): the caller says what it means
        return None


def download_artifact(run_id: str, artifact_file: str, dst: Path) -> Path | None:
    """A run's artifact file downloaded into `dst`, or None when the run has none by that name."""
    try:
        return Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=artifact_file,
                                                        dst_path=str(dst)))
    except Exception:  # noqa: BLE001 - absent: e.g. evaluated before per-clip predictions were kept
        return None


def point_at_store(settings: Settings) -> None:
    """Only the tracking URI (reading the registry must not create an experiment, as `setup` does)."""
    _set_tracking_uri(settings.tracking_uri)
