"""Model logging and registration: a signature, lineage tags and a model card; alias `challenger`.

`champion` moves only through `mirops.registry.promotion` (the gate and rollbacks).

Registry stages are legacy in MLflow 3: aliases and version tags carry the state.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import mlflow
import numpy as np
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.types import Schema, TensorSpec

from mirops import __version__
from mirops.lineage import MODEL_ARTIFACT, TAG_DATASET_VERSION, TAG_MODEL_URI
from mirops.models.serving import ServingSpec

CHAMPION, CHALLENGER = "champion", "challenger"
SERVING_METADATA = "mirops_serving"  # the key of the ServingSpec in the logged model's MLmodel metadata
_ALIAS_URI = re.compile(r"^models:/(?P<name>[^/@]+)@(?P<alias>[^/@]+)$")
_VERSION_URI = re.compile(r"^models:/(?P<name>[^/@]+)/(?P<version>\d+)$")


def waveform_signature(num_classes: int) -> ModelSignature:
    # Any batch of any length of 16 kHz mono audio in; one logit per class out. Unnamed tensors, so
    # pyfunc serving hands the model a plain array rather than a dict.
    return ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, -1))]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, num_classes))]),
    )


def log_model(model, serving: ServingSpec) -> str:
    """Log the model (pickled module; its class lives in `mirops`) with its serving spec in the MLmodel
    metadata, in the active run; returns its URI."""
    import torch

    example = np.ascontiguousarray(np.random.default_rng(0).normal(0, 0.1, (2, serving.sample_rate))
                                   .astype(np.float32))
    # A pickled module is a deliberate choice (its class is importable from `mirops`), so MLflow's
    # warning about pickles is silenced here rather than shown on every run.
    logging.getLogger("mlflow.pytorch").setLevel(logging.ERROR)
    info = mlflow.pytorch.log_model(
        model,
        name=MODEL_ARTIFACT,
        serialization_format="pickle",
        signature=waveform_signature(len(serving.classes)),
        metadata={SERVING_METADATA: serving.to_json()},
        input_example=example,
        pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", "torchaudio==2.11.0", f"mirops=={__version__}"],
    )
    mlflow.set_tag(TAG_MODEL_URI, info.model_uri)
    return info.model_uri


def model_uri_of_run(run_id: str) -> str:
    run = MlflowClient().get_run(run_id)
    uri = run.data.tags.get(TAG_MODEL_URI)
    if not uri:
        raise LookupError(f"run {run_id} has no logged model (tag {TAG_MODEL_URI} missing): train it first")
    return uri


def load_model(uri: str):
    return mlflow.pytorch.load_model(uri, map_location="cpu")


def serving_spec(uri: str) -> ServingSpec:
    """The serving spec training stored with the model at `uri` (its MLmodel metadata)."""
    metadata = mlflow.models.get_model_info(uri).metadata or {}
    if SERVING_METADATA not in metadata:
        raise ValueError(f"{uri}: its MLmodel metadata has no {SERVING_METADATA!r} (sample rate, clip length, "
                         "threshold, classes): not a model `mirops train` logged; retrain it")
    return ServingSpec.from_json(metadata[SERVING_METADATA], f"{uri} MLmodel metadata {SERVING_METADATA}")


def load_served(uri: str) -> tuple[Any, ServingSpec]:
    """The model at `uri` in eval mode, on the CPU, with its serving spec."""
    spec = serving_spec(uri)
    return load_model(uri).eval(), spec


@dataclass(frozen=True)
class ModelRef:
    """A registered version (an alias resolved to its version number), and what it was trained on."""

    name: str
    version: str
    uri: str                      # as the user gave it
    run_id: str | None = None
    dataset_version: str | None = None

    @property
    def version_uri(self) -> str:
        """The version itself: an alias may move while a command runs, the answer must not."""
        return f"models:/{self.name}/{self.version}"


def parse_model_uri(uri: str) -> tuple[str, str | None, str | None]:
    """(name, alias, version) of a registry URI; ValueError for anything else (runs:/, paths, files)."""
    if m := _ALIAS_URI.match(uri):
        return m["name"], m["alias"], None
    if m := _VERSION_URI.match(uri):
        return m["name"], None, m["version"]
    raise ValueError(f"{uri!r}: models load only through the registry; expected models:/NAME@ALIAS (e.g. "
                     "models:/mirops-instruments@champion) or models:/NAME/VERSION. Register a run's model "
                     "first with `mirops register RUN`")


def _dataset_version_of(client: MlflowClient, mv) -> str | None:
    """The version's dataset tag, else its training run's; None when unknown (`register` writes "unknown")."""
    dataset_version = (mv.tags or {}).get(TAG_DATASET_VERSION)
    if not dataset_version and mv.run_id:
        try:
            dataset_version = client.get_run(mv.run_id).data.tags.get(TAG_DATASET_VERSION)
        except MlflowException:  # the training run was deleted: the version still serves
            dataset_version = None
    return dataset_version if dataset_version not in (None, "", "unknown", "none") else None


def resolve(uri: str) -> ModelRef:
    """The concrete registered version behind `uri`; LookupError when the name, alias or version is unknown."""
    name, alias, version = parse_model_uri(uri)
    client = MlflowClient()
    try:
        mv = client.get_model_version_by_alias(name, alias) if alias else client.get_model_version(name, version)
    except MlflowException as exc:
        what = f"alias {alias!r}" if alias else f"version {version}"
        raise LookupError(f"{uri}: no registered model {name!r} with {what} in {client.tracking_uri} "
                          f"({exc.message.splitlines()[0]})") from exc
    return ModelRef(name, str(mv.version), uri, mv.run_id, _dataset_version_of(client, mv))


def champion(name: str) -> ModelRef | None:
    """The champion of registered model `name`, or None when there is none (yet)."""
    try:
        return resolve(f"models:/{name}@{CHAMPION}")
    except LookupError:
        return None


def alias_version(name: str, alias: str) -> str | None:
    try:
        return str(MlflowClient().get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


def require_model_files(model_uri: str) -> None:
    """Refuse to register a model whose files are not in the artifact store (an upload cut short)."""
    try:  # a logged model's id is its URI's last part (models:/m-...); its files live at its artifact location
        location = MlflowClient().get_logged_model(model_uri.removeprefix("models:/")).artifact_location
        names = {f.path.rstrip("/").rsplit("/", 1)[-1] for f in mlflow.artifacts.list_artifacts(artifact_uri=location)}
        weights = mlflow.artifacts.list_artifacts(artifact_uri=f"{location}/data") if "data" in names else []
    except (MlflowException, OSError) as err:
        raise FileNotFoundError(f"{model_uri}: its model files cannot be read from the artifact store "
                                f"({err}); not registering it") from err
    if "MLmodel" not in names or not weights:
        raise FileNotFoundError(f"{model_uri}: the artifact store lacks the model's MLmodel or weights "
                                f"(found {sorted(names)}); not registering it")


def register_version(name: str, run_id: str, tags: dict[str, str], card: Callable[[str], str]) -> str:
    """Register the run's model as a new version of `name` with its lineage `tags` and model card
    (`card(version)`: markdown, shown as the version's description) and point `challenger` at it;
    returns the version.

    `champion` is not touched: only the promotion gate (`mirops promote`) moves it.
    """
    client = MlflowClient()
    uri = model_uri_of_run(run_id)
    require_model_files(uri)
    # Tags go in with the version itself, so no version ever exists without its lineage.
    mv = mlflow.register_model(uri, name, tags={"run_id": run_id, **tags})
    client.update_model_version(name, mv.version, description=card(str(mv.version)))
    client.set_registered_model_alias(name, CHALLENGER, mv.version)
    return str(mv.version)


def version_tags(name: str, version: str) -> dict[str, str]:
    return dict(MlflowClient().get_model_version(name, version).tags)


def model_version(name: str, version: str):
    """The registry's record of one version (tags, aliases, run id)."""
    return MlflowClient().get_model_version(name, version)
