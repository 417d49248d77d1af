"""`mirops predict` against a real MLflow registry: registered models only, per-file probabilities, failures named."""

import json
from pathlib import Path

import mlflow
import numpy as np
import pytest
import soundfile as sf
import torch
from mlflow import MlflowClient

from mirops.config import Settings
from mirops.features.windows import windows
from mirops.models.serving import ServingSpec
from mirops.pipeline.predict import predict
from mirops.registry import models, tracking
from tests.conftest import make_project
from tests.test_cli import mirops

PROBE_RATE = 8000
PROBE_SERVING = ServingSpec(PROBE_RATE, clip_seconds=1.0, threshold=0.45, classes=("energy", "filled", "pitch"))


class Probe(torch.nn.Module):
    """A stand-in model whose probabilities describe what it was fed, one window [B, 8000] at a time:
    `energy` the peak amplitude, `filled` the share of non-silent samples, `pitch` the dominant frequency
    over Nyquist. It is served at its own rate, clip length and threshold (`PROBE_SERVING`)."""

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        assert wave.dtype == torch.float32 and wave.shape[1] == PROBE_RATE, wave.shape
        energy = wave.abs().amax(dim=1)
        filled = (wave.abs() > 1e-6).float().mean(dim=1)
        pitch = torch.fft.rfft(wave).abs().argmax(dim=1).float() / (wave.shape[1] / 2)
        return torch.logit(torch.stack([energy, filled, pitch], dim=1).clamp(1e-4, 1 - 1e-4))


def reprogram_model(classes: list[str]):
    """A real (tiny) reprogrammed classifier: YAMNet's front end, pooled, a linear head fixed to answer
    sigmoid(3) = 0.95, sigmoid(-3) = 0.05 and sigmoid(0.2) = 0.55 whatever it hears."""
    from mirops.features.logmel import YamnetLogMel
    from mirops.models.backbone import SpectrogramPool
    from mirops.models.reprogram import LOG_FLOOR, ReprogrammedClassifier

    model = ReprogrammedClassifier(SpectrogramPool(YamnetLogMel(), (None, 64), LOG_FLOOR), classes, transform="none")
    with torch.no_grad():
        model.head.linear.weight.zero_()
        model.head.linear.bias.copy_(torch.tensor([3.0, -3.0, 0.2]))
    return model.eval()


def east_student(classes: list[str]):
    from mirops.models.students import build_student

    return build_student("mobile_fcn", len(classes)).eval()


def register(settings: Settings, name: str, model, serving: ServingSpec) -> str:
    """Log `model` with its serving spec as `mirops train` does, register it as challenger (and champion
    when there is none yet); returns the version."""
    with tracking.run(settings, name, "train", "v1"):
        uri = models.log_model(model, serving)
    version = mlflow.register_model(uri, name).version
    client = MlflowClient()
    client.set_registered_model_alias(name, "challenger", version)
    if models.alias_version(name, "champion") is None:
        client.set_registered_model_alias(name, "champion", version)
    return str(version)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Settings:
    """One project with a registry holding the probe (v1 champion, v2 challenger), a reprogrammed model and
    an EAsT student, each logged the way training logs them."""
    settings = Settings.load(make_project(tmp_path_factory.mktemp("predict") / "p"))
    tracking.setup(settings)
    assert register(settings, "probe", Probe(), PROBE_SERVING) == "1"  # the first version becomes champion
    assert register(settings, "probe", Probe(), PROBE_SERVING) == "2"  # challenger; v1 stays champion
    register(settings, "tiny-reprogram", reprogram_model(["bass", "drums", "flute"]),
             ServingSpec(16000, clip_seconds=2.0, threshold=0.6, classes=("bass", "drums", "flute")))
    register(settings, "tiny-east", east_student(["fast", "rock", "piano"]),
             ServingSpec(16000, clip_seconds=3.0, threshold=0.7, classes=("fast", "rock", "piano")))
    return settings


def sine(seconds: float, sr: int, freq: float, level: float) -> np.ndarray:
    t = np.arange(int(round(seconds * sr))) / sr
    return (level * np.sin(2 * np.pi * freq * t + 0.3)).astype(np.float32)  # phase: no sample is exactly 0


@pytest.fixture
def audio(tmp_path) -> Path:
    """A folder as a user has one: tones of several lengths, rates and formats, a subfolder, a corrupt file,
    and a file that is not audio."""
    folder = tmp_path / "batch"
    (folder / "sub").mkdir(parents=True)
    sf.write(folder / "short.wav", sine(0.5, PROBE_RATE, 500, 0.8), PROBE_RATE)
    sf.write(folder / "sub" / "long.flac", sine(2.5, PROBE_RATE, 2000, 0.4), PROBE_RATE)
    left = sine(1.0, 44100, 1000, 0.6)
    sf.write(folder / "stereo44k.wav", np.stack([left, np.zeros_like(left)], axis=1), 44100)
    (folder / "broken.wav").write_bytes(b"RIFF this is not a wave file" * 10)
    (folder / "notes.txt").write_text("not audio")
    return folder


def by_name(result) -> dict:
    return {Path(p.path).name: p for p in result.predictions}


def test_probabilities_per_class_of_every_file_in_a_folder(store, audio):
    tracking.setup(store)
    result = predict(store, "models:/probe/1", [audio])
    got = by_name(result)
    assert sorted(got) == ["long.flac", "short.wav", "stereo44k.wav"]  # notes.txt is not audio: not listed
    for p in result.predictions:
        assert list(p.probabilities) == list(PROBE_SERVING.classes)
        assert all(0.0 <= v <= 1.0 for v in p.probabilities.values())
        assert set(p.positive) == {c for c, v in p.probabilities.items() if v >= 0.45}  # the model's threshold
    assert result.serving == PROBE_SERVING  # what the model was logged with

    short, long, stereo = got["short.wav"], got["long.flac"], got["stereo44k.wav"]
    assert short.duration_s == pytest.approx(0.5) and short.windows == 1
    assert short.probabilities["filled"] == pytest.approx(0.5, abs=0.01)  # padded with silence to the 1 s clip
    assert short.probabilities["pitch"] == pytest.approx(500 / 4000, abs=0.01)
    assert short.positive == ["energy", "filled"]
    # 2.5 s → windows 0-1, 1-2 and 1.5-2.5 s: the last one ends with the file, so none is padded
    assert long.windows == 3 and long.probabilities["filled"] > 0.999
    assert long.probabilities["pitch"] == pytest.approx(2000 / 4000, abs=0.01)
    # 44.1 kHz stereo: mixed to mono (half the left channel's level) and resampled to the model's 8 kHz
    assert stereo.duration_s == pytest.approx(1.0, abs=1e-3) and stereo.windows == 1
    assert stereo.probabilities["pitch"] == pytest.approx(1000 / 4000, abs=0.01)
    assert stereo.probabilities["energy"] == pytest.approx(0.3, abs=0.02)


def test_a_corrupt_file_is_reported_by_name_and_the_others_still_answer(store, audio):
    tracking.setup(store)
    result = predict(store, "models:/probe/1", [audio / "broken.wav", audio / "short.wav", audio / "missing.wav"])
    assert [Path(p.path).name for p in result.predictions] == ["short.wav"]
    failed = {Path(f.path).name: f.reason for f in result.failed}
    assert failed == {"broken.wav": "undecodable", "missing.wav": "missing_file"}
    empty = audio / "sub" / "empty"
    empty.mkdir()
    assert [(f.path, f.reason) for f in predict(store, "models:/probe/1", [empty]).failed] == [
        (str(empty), "no_audio_files")]


def test_an_alias_resolves_to_the_version_that_answers(store, audio):
    tracking.setup(store)
    assert predict(store, "models:/probe@champion", [audio / "short.wav"]).model.version == "1"
    challenger = predict(store, "models:/probe@challenger", [audio / "short.wav"])
    assert (challenger.model.name, challenger.model.version, challenger.model.uri) == (
        "probe", "2", "models:/probe@challenger")
    with pytest.raises(LookupError, match="no registered model 'probe' with alias 'nobody'"):
        predict(store, "models:/probe@nobody", [audio / "short.wav"])


@pytest.mark.parametrize("uri", ["runs:/0123456789abcdef/model", "mlflow-artifacts:/1/abc/artifacts/model",
                                 "models:/probe", "/tmp/model", "model.pkl"])
def test_only_registry_uris_load_a_model(store, audio, uri):
    tracking.setup(store)
    with pytest.raises(ValueError, match="models load only through the registry"):
        predict(store, uri, [audio / "short.wav"])


def test_threshold_defaults_to_the_models_serving_spec_and_can_be_given(store, audio):
    tracking.setup(store)
    files = [audio / "short.wav", audio / "sub" / "long.flac"]
    result = predict(store, "models:/tiny-reprogram@champion", files)
    assert result.serving.sample_rate == 16000 and result.serving.clip_seconds == 2.0
    assert result.serving.threshold == 0.6
    for p in result.predictions:
        assert p.probabilities == pytest.approx({"bass": 0.9526, "drums": 0.0474, "flute": 0.5498}, abs=1e-3)
        assert p.positive == ["bass"]
    given = predict(store, "models:/tiny-reprogram/1", files, threshold=0.5)
    assert [p.positive for p in given.predictions] == [["bass", "flute"]] * 2
    with pytest.raises(ValueError, match="threshold 1.5"):
        predict(store, "models:/tiny-reprogram/1", files, threshold=1.5)


def test_an_east_student_is_fed_at_its_own_rate_and_clip_length(store, tmp_path):
    tracking.setup(store)
    path = tmp_path / "five_seconds.ogg"
    sf.write(path, sine(5.0, 22050, 440, 0.5), 22050)
    result = predict(store, "models:/tiny-east@champion", [path])
    assert result.serving.sample_rate == 16000
    assert result.serving.clip_seconds == 3.0 and result.serving.threshold == 0.7  # its serving spec
    (p,) = result.predictions
    assert p.windows == 2 and p.duration_s == pytest.approx(5.0, abs=0.01)
    assert list(p.probabilities) == ["fast", "rock", "piano"]
    assert set(p.positive) == {c for c, v in p.probabilities.items() if v >= 0.7}


def test_a_model_logged_without_a_serving_spec_is_refused_by_name(store, audio):
    import mlflow.pytorch

    with tracking.run(store, "bare", "train", "v1"):
        info = mlflow.pytorch.log_model(Probe(), name="model", serialization_format="pickle", pip_requirements=[])
    version = mlflow.register_model(info.model_uri, "bare").version
    with pytest.raises(ValueError, match="mirops_serving.*not a model `mirops train` logged"):
        predict(store, f"models:/bare/{version}", [audio / "short.wav"])


def test_windows_cover_the_file_and_pad_only_short_ones():
    wave = np.arange(25, dtype=np.float32)
    assert [(w[0], w[-1]) for w in windows(wave, 10)] == [(0, 9), (10, 19), (15, 24)]
    (short,) = windows(wave[:4], 10)
    assert short.tolist() == [0, 1, 2, 3] + [0] * 6


def test_cli_prints_json_and_exits_non_zero_when_a_file_failed(store, audio):
    root = store.root
    done = mirops(root, "predict", "models:/tiny-reprogram@champion", str(audio), "--json", check=False)
    assert done.returncode == 1, done.stderr[-3000:]
    out = json.loads(done.stdout)
    assert out["model"] == {"name": "tiny-reprogram", "version": "1", "uri": "models:/tiny-reprogram@champion",
                            "run_id": out["model"]["run_id"], "dataset_version": "v1"}
    assert out["serving"] == {"sample_rate": 16000, "clip_seconds": 2.0, "threshold": 0.6,
                              "classes": ["bass", "drums", "flute"]}
    assert sorted(Path(p["path"]).name for p in out["predictions"]) == ["long.flac", "short.wav", "stereo44k.wav"]
    assert all(p["positive"] == ["bass"] and set(p["probabilities"]) == {"bass", "drums", "flute"}
               for p in out["predictions"])
    assert [(Path(f["path"]).name, f["reason"]) for f in out["failed"]] == [("broken.wav", "undecodable")]
    assert "broken.wav: undecodable" in done.stderr

    human = mirops(root, "predict", "models:/tiny-reprogram/1", str(audio / "short.wav"))
    assert human.stdout == "" and "tiny-reprogram v1" in human.stderr and "bass 0.95" in human.stderr

    refused = mirops(root, "predict", "runs:/abc/model", str(audio), check=False)
    assert refused.returncode == 2 and "models load only through the registry" in refused.stderr
    assert "Traceback" not in refused.stderr
