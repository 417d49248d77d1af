"""Logged models against a real MLflow store: a signature, and audio in, logits out from the registry.

The registry life cycle (lineage, gate, rollback, the race) is tests/test_promotion.py."""

import mlflow
import torch

from mirops.config import Settings
from mirops.models.serving import ServingSpec
from mirops.registry import models, tracking
from tests.conftest import make_project


class Constant(torch.nn.Module):
    """A stand-in classifier: waveform [B, S] → logits [B, 2]."""

    classes = ["a", "b"]

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        return wave[:, :2] * 0.0


def logged_run(settings: Settings, score: float) -> str:
    with tracking.run(settings, "fake", "train", "v1") as active:
        models.log_model(Constant(), ServingSpec(sample_rate=1000, clip_seconds=1.0, threshold=0.5, classes=("a", "b")))
        mlflow.log_metric("test_mAP", score)
    return active.id


def test_registered_model_has_a_signature_and_serves_audio(tmp_path):
    settings = Settings.load(make_project(tmp_path, {}))
    tracking.setup(settings)
    version = models.register_version("sig-test", logged_run(settings, 0.5), {}, lambda v: f"card of v{v}")
    mlflow.MlflowClient().set_registered_model_alias("sig-test", "champion", version)
    info = mlflow.models.get_model_info(f"models:/sig-test/{version}")
    assert info.signature.inputs.input_names() == ["wave"]  # one waveform of any length per row
    assert info.signature.outputs.input_names() == ["a", "b"]  # one probability per class
    loaded = models.load_model("models:/sig-test@champion")
    assert loaded(torch.zeros(3, 1000)).shape == (3, 2)  # windows of its clip length (1 s at 1 kHz)
