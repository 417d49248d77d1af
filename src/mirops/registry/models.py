"""Model logging and the registry life cycle: register with a signature, alias `challenger`, crown `champion`.

Registry stages are legacy in MLflow 3: aliases and version tags carry the state.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import mlflow
import numpy as np
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.types import Schema, TensorSpec

from mirops import __version__
from mirops.registry.tracking import TAG_DATASET_VERSION, TAG_MODEL_URI

CHAMPION, CHALLENGER = "champion", "challenger"
MODEL_ARTIFACT = "model"


@dataclass
class Registration:
    name: str
    version: str
    aliases: list[str]
    decision: str  # why champion moved or stayed
    champion_version: str


def waveform_signature(num_classes: int) -> ModelSignature:
    # Any batch of any length of 16 kHz mono audio in; one logit per class out. Unnamed tensors, so
    # pyfunc serving hands the model a plain array rather than a dict.
    return ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, -1))]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, num_classes))]),
    )


def log_model(model, num_classes: int, sample_rate: int) -> str:
    """Log the model (pickled module; its class lives in `mirops`) in the active run; returns its URI."""
    import torch

    example = np.ascontiguousarray(np.random.default_rng(0).normal(0, 0.1, (2, sample_rate)).astype(np.float32))
    # A pickled module is a deliberate choice (its class is importable from `mirops`), so MLflow's
    # warning about pickles is silenced here rather than shown on every run.
    logging.getLogger("mlflow.pytorch").setLevel(logging.ERROR)
    info = mlflow.pytorch.log_model(
        model,
        name=MODEL_ARTIFACT,
        serialization_format="pickle",
        signature=waveform_signature(num_classes),
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


def alias_version(name: str, alias: str) -> str | None:
    try:
        return str(MlflowClient().get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


def register(
    name: str,
    run_id: str,
    metric: str,
    challenger_score: float,
    dataset_version: str,
    champion_score_on_same_data: float | None,
    tags: dict[str, str] | None = None,
) -> Registration:
    """Register the run's model as `challenger`; make it `champion` when there is none or it scores higher.

    `champion_score_on_same_data` is the current champion's `metric` on the same test split of the same
    dataset version (the caller re-evaluates the champion when it was tested on another version).
    """
    client = MlflowClient()
    mv = mlflow.register_model(model_uri_of_run(run_id), name, tags={"run_id": run_id})
    version_tags = {TAG_DATASET_VERSION: dataset_version, metric: f"{challenger_score:.6f}", **(tags or {})}
    for key, value in version_tags.items():
        client.set_model_version_tag(name, mv.version, key, value)
    client.set_registered_model_alias(name, CHALLENGER, mv.version)

    champion = alias_version(name, CHAMPION)
    if champion is None:
        decision = "no champion yet: the first registered version becomes champion"
        promote = True
    elif champion_score_on_same_data is None or np.isnan(champion_score_on_same_data):
        decision = f"champion v{champion} could not be scored on this test split; kept"
        promote = False
    elif challenger_score > champion_score_on_same_data:
        decision = (
            f"{metric} {challenger_score:.4f} beats champion v{champion} "
            f"({champion_score_on_same_data:.4f}) on the same test data"
        )
        promote = True
    else:
        decision = (
            f"{metric} {challenger_score:.4f} does not beat champion v{champion} "
            f"({champion_score_on_same_data:.4f}); champion kept"
        )
        promote = False
    if promote:
        client.set_registered_model_alias(name, CHAMPION, mv.version)
        champion = mv.version
    client.set_model_version_tag(name, mv.version, "mirops.decision", decision)
    aliases = [CHALLENGER] + ([CHAMPION] if champion == mv.version else [])
    return Registration(name=name, version=str(mv.version), aliases=aliases, decision=decision,
                        champion_version=str(champion))


def version_tags(name: str, version: str) -> dict[str, str]:
    return dict(MlflowClient().get_model_version(name, version).tags)
