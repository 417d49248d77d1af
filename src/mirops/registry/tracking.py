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
from mlflow.utils.mlflow_tags import MLFLOW_GIT_BRANCH, MLFLOW_GIT_COMMIT, MLFLOW_GIT_DIRTY, MLFLOW_GIT_REPO_URL

from mirops.config import Settings
from mirops.lineage import TAG_DATASET_VERSION, TAG_GIT_COMMIT, TAG_STEP


def _git(root: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True).stdout.strip()


def git_commit(root: Path) -> str:
    """The commit of the code that produced a run ("unknown" outside git), with "-dirty" for local edits."""
    try:
        sha = _git(root, "rev-parse", "HEAD")
        dirty = _git(root, "status", "--porcelain", "--untracked-files=no")
    except (subprocess.CalledProcessError, FileNotFoundError):
        return "unknown"
    return f"{sha}-dirty" if dirty else sha


def git_source_tags(root: Path, commit: str) -> dict[str, str]:
    """MLflow's own source tags (`mlflow.source.git.commit`, branch, repo URL), which its UI shows and links.

    MLflow fills them itself only for a script run from inside a repository; `mirops` is an installed command,
    so they are set here from the project's checkout. The commit is the bare SHA (MLflow links it); local edits
    show in `mlflow.source.git.dirty`.
    """
    if commit == "unknown":
        return {}
    tags = {MLFLOW_GIT_COMMIT: commit.removesuffix("-dirty"), MLFLOW_GIT_DIRTY: str(commit.endswith("-dirty")).lower()}
    for key, args in ((MLFLOW_GIT_BRANCH, ("rev-parse", "--abbrev-ref", "HEAD")),
                      (MLFLOW_GIT_REPO_URL, ("config", "--get", "remote.origin.url"))):
        try:
            if value := _git(root, *args):
                tags[key] = value
        except (subprocess.CalledProcessError, FileNotFoundError):
            pass  # no branch (detached) or no remote: MLflow shows the commit alone
    return tags


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
    commit = git_commit(settings.root)
    return {TAG_DATASET_VERSION: dataset_version, TAG_GIT_COMMIT: commit, TAG_STEP: step,
            **git_source_tags(settings.root, commit)}


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

    @staticmethod
    def log_dataset(frame: Any, name: str, digest: str, source: str, context: str) -> None:
        """A table the run used as an MLflow dataset input (its Datasets tab): `digest` is the dataset version
        (the DVC md5), `source` where it lives, `context` how the run used it (train, valid, test, ...)."""
        import mlflow.data

        dataset = mlflow.data.from_pandas(frame, source=source, name=name, digest=digest[:36])
        mlflow.log_input(dataset, context=context)

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
        nested: bool = False, system_metrics: bool = False) -> Iterator[Run]:
    """Start a run tagged with the dataset version and git commit (`run_id`: reopen that run, e.g. to resume
    an interrupted training; `nested`: a child of the active run; `system_metrics`: MLflow samples CPU, memory,
    disk and network (and GPUs, where pynvml is installed) while the run is open, shown in its System metrics
    tab)."""
    if not nested:
        setup(settings)
    sampled = {"log_system_metrics": True} if system_metrics else {}
    if run_id is not None:
        with mlflow.start_run(run_id=run_id, nested=nested, **sampled) as active:
            yield Run(active)
        return
    with mlflow.start_run(run_name=name, tags=base_tags(settings, dataset_version, step), nested=nested,
                          **sampled) as active:
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
