"""Registry life cycle against a real MLflow store: challenger always, champion only when it wins."""

import mlflow
import torch

from mirops.config import Settings
from mirops.registry import models, tracking
from tests.conftest import make_project


class Constant(torch.nn.Module):
    """A stand-in classifier: waveform [B, S] → logits [B, 2]."""

    classes = ["a", "b"]

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        return wave[:, :2] * 0.0


def logged_run(settings: Settings, score: float) -> str:
    with tracking.run(settings, "fake", "train", "v1") as active:
        models.log_model(Constant(), num_classes=2, sample_rate=1000)
        mlflow.log_metric("test_mAP", score)
    return active.info.run_id


def test_first_version_is_champion_and_only_a_better_one_replaces_it(tmp_path):
    settings = Settings.load(make_project(tmp_path, {"registry": {"model_name": "reg-test"}}))
    tracking.setup(settings)
    first = models.register("reg-test", logged_run(settings, 0.5), "test_mAP", 0.5, "v1", None)
    assert first.aliases == ["challenger", "champion"]

    worse = models.register("reg-test", logged_run(settings, 0.4), "test_mAP", 0.4, "v1", 0.5)
    assert worse.aliases == ["challenger"] and worse.champion_version == first.version
    assert "champion kept" in models.version_tags("reg-test", worse.version)["mirops.decision"]

    better = models.register("reg-test", logged_run(settings, 0.7), "test_mAP", 0.7, "v1", 0.5)
    assert better.aliases == ["challenger", "champion"]
    assert models.alias_version("reg-test", "champion") == better.version
    tags = models.version_tags("reg-test", better.version)
    assert tags[tracking.TAG_DATASET_VERSION] == "v1" and float(tags["test_mAP"]) == 0.7


def test_registered_model_has_a_signature_and_serves_audio(tmp_path):
    settings = Settings.load(make_project(tmp_path, {}))
    tracking.setup(settings)
    reg = models.register("sig-test", logged_run(settings, 0.5), "test_mAP", 0.5, "v1", None)
    info = mlflow.models.get_model_info(f"models:/sig-test/{reg.version}")
    assert list(info.signature.inputs.to_dict()[0]["tensor-spec"]["shape"]) == [-1, -1]
    loaded = models.load_model("models:/sig-test@champion")
    assert loaded(torch.zeros(3, 500)).shape == (3, 2)
