"""Model logging and registration: a signature, lineage tags and a model card; alias `challenger`.

`champion` moves only through `mirops.registry.promotion` (the gate and rollbacks).

Registry stages are legacy in MLflow 3: aliases and version tags carry the state.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import mlflow
import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.types import Schema, TensorSpec

from mirops import __version__
from mirops.lineage import MODEL_ARTIFACT, TAG_DATASET_VERSION, TAG_MODEL_URI
from mirops.models.serving import ServingSpec
from mirops.progress import warn

CHAMPION, CHALLENGER = "champion", "challenger"
SERVING_METADATA = "mirops_serving"  # the key of the ServingSpec in the logged model's MLmodel metadata
DATASET_METADATA = "dataset_version"  # ... and of the dataset version (DVC md5) it was trained on
_ALIAS_URI = re.compile(r"^models:/(?P<name>[^/@]+)@(?P<alias>[^/@]+)$")
_VERSION_URI = re.compile(r"^models:/(?P<name>[^/@]+)/(?P<version>\d+)$")


def waveform_signature(num_classes: int) -> ModelSignature:
    # The signature of the legacy pickled modules: any batch of any length of mono audio in, one logit per
    # class out. Portable models have the pyfunc's signature (`mirops.registry.portable.signature`).
    return ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, -1))]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, num_classes))]),
    )


def _dataset_version_of_active_run() -> str | None:
    run = mlflow.active_run()
    return MlflowClient().get_run(run.info.run_id).data.tags.get(TAG_DATASET_VERSION) if run else None


def log_model(model, serving: ServingSpec, dataset_version: str | None = None) -> str:
    """Log the model in the active run so that anyone can serve it (`mirops.registry.portable`: exported
    programs and a pyfunc that needs no mirops), with its serving spec and dataset version (default: the
    run's tag) in the MLmodel metadata; returns its URI.

    A module torch.export cannot export faithfully is logged the legacy way (a pickle that needs mirops to
    load), with a warning naming why, so a finished training is never lost at its last step."""
    from mirops.registry import portable

    metadata = {SERVING_METADATA: serving.to_json(),
                DATASET_METADATA: dataset_version or _dataset_version_of_active_run() or "unknown"}
    try:
        info = portable.log_portable(model, serving, MODEL_ARTIFACT, metadata)
    except portable.ExportError as exc:
        warn(f"{exc}; logging {type(model).__name__} as a pickle instead: it loads only where mirops is "
             "installed (`mlflow.pyfunc.load_model` elsewhere fails)")
        info = log_pickled(model, serving, metadata)
    mlflow.set_tag(TAG_MODEL_URI, info.model_uri)
    return info.model_uri


def log_pickled(model, serving: ServingSpec, metadata: dict | None = None):
    """The legacy format (mlflow.pytorch, a pickled module whose class lives in `mirops`); returns ModelInfo."""
    import torch

    example = np.ascontiguousarray(np.random.default_rng(0).normal(0, 0.1, (2, serving.window_samples))
                                   .astype(np.float32))
    # A pickled module is a deliberate fallback here, so MLflow's warning about pickles is not repeated.
    logging.getLogger("mlflow.pytorch").setLevel(logging.ERROR)
    return mlflow.pytorch.log_model(
        model,
        name=MODEL_ARTIFACT,
        serialization_format="pickle",
        signature=waveform_signature(len(serving.classes)),
        metadata=metadata or {SERVING_METADATA: serving.to_json()},
        input_example=example,
        pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", "torchaudio==2.11.0", f"mirops=={__version__}"],
    )


def model_uri_of_run(run_id: str) -> str:
    run = MlflowClient().get_run(run_id)
    uri = run.data.tags.get(TAG_MODEL_URI)
    if not uri:
        raise LookupError(f"run {run_id} has no logged model (tag {TAG_MODEL_URI} missing): train it first")
    return uri


def is_legacy(info) -> bool:
    """A version logged before models were portable: an mlflow.pytorch flavour (a pickled module) in its MLmodel."""
    return "pytorch" in (info.flavors or {})


def serving_spec(uri: str, info=None) -> ServingSpec:
    """The serving spec training stored with the model at `uri` (its MLmodel metadata)."""
    metadata = (info or mlflow.models.get_model_info(uri)).metadata or {}
    if SERVING_METADATA not in metadata:
        raise ValueError(f"{uri}: its MLmodel metadata has no {SERVING_METADATA!r} (sample rate, clip length, "
                         "threshold, classes): not a model `mirops train` logged; retrain it")
    return ServingSpec.from_json(metadata[SERVING_METADATA], f"{uri} MLmodel metadata {SERVING_METADATA}")


def load_served(uri: str) -> tuple[Any, ServingSpec]:
    """The model at `uri` as a module `windows [B, clip samples] -> logits` in eval mode on the CPU, with its
    serving spec. A portable model gives its exported programs (`frontend` and `forward_spectrogram` as
    well, for evaluation on cached frames); a legacy one its unpickled module."""
    info = mlflow.models.get_model_info(uri)
    spec = serving_spec(uri, info)
    if is_legacy(info):
        return mlflow.pytorch.load_model(uri, map_location="cpu").eval(), spec
    return mlflow.pyfunc.load_model(uri).unwrap_python_model().net, spec


def load_model(uri: str):
    return load_served(uri)[0]


class Classifier(Protocol):
    def predict(self, data: Any, params: dict[str, Any] | None = None) -> pd.DataFrame: ...


class _LegacyClassifier:
    """A pickled module behind the portable pyfunc's own code, so it answers exactly as a portable one."""

    def __init__(self, module, spec: ServingSpec) -> None:
        from mirops.registry.portable import pyfunc_config
        from mirops.registry.waveform_pyfunc import WaveformClassifier

        self._model = WaveformClassifier(module, pyfunc_config(spec))

    def predict(self, data: Any, params: dict[str, Any] | None = None) -> pd.DataFrame:
        return self._model.predict(None, data, params)


def load_classifier(uri: str) -> tuple[Classifier, ServingSpec]:
    """The pyfunc of the model at `uri` (`predict(DataFrame with a "wave" column, params)` -> one probability
    column per class), with its serving spec: what `mlflow.pyfunc.load_model` gives anyone, or for a legacy
    version its module behind the same pyfunc code."""
    info = mlflow.models.get_model_info(uri)
    spec = serving_spec(uri, info)
    if is_legacy(info):
        return _LegacyClassifier(mlflow.pytorch.load_model(uri, map_location="cpu").eval(), spec), spec
    return mlflow.pyfunc.load_model(uri), spec


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
        # Weights: the exported programs under artifacts/ (portable), or the pickle under data/ (legacy).
        weights = [f for folder in ("artifacts", "data") if folder in names
                   for f in mlflow.artifacts.list_artifacts(artifact_uri=f"{location}/{folder}")]
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
