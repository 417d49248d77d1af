"""Models anyone can serve: `mlflow.pyfunc.load_model` and `mlflow models serve` without mirops, against a real
MLflow registry, agreeing with `mirops predict` to 1e-5; versions logged as pickles before still predict."""

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import mlflow
import mlflow.pytorch
import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
from mlflow import MlflowClient

from mirops.config import Settings
from mirops.data.audio import load_audio
from mirops.features.windows import windows
from mirops.models.serving import ServingSpec
from mirops.pipeline.predict import predict
from mirops.registry import models, tracking, waveform_pyfunc
from mirops.services import free_port, tool
from mirops.train.loop import batched_probs
from tests.conftest import make_project
from tests.servers import http_json, spawned, tail, wait_for

RATE = 16000
CLASSES = ("bass", "drums", "flute")
LENGTHS = (0.7, 2.0, 5.3)  # seconds: shorter than a clip (padded), exactly one, several (the last end-aligned)
SPECS = {  # registered name -> how it is served
    "yamnet-cnn": ServingSpec(RATE, clip_seconds=2.0, threshold=0.5, classes=CLASSES),
    "ast-tiny": ServingSpec(RATE, clip_seconds=2.0, threshold=0.4, classes=CLASSES),
    "east-student": ServingSpec(RATE, clip_seconds=3.0, threshold=0.6, classes=CLASSES),
}
LEGACY = "yamnet-pickled"  # the YAMNet model again, logged the way mirops logged models before (a pickle)
LOCAL = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # localhost: never through a proxy

# Run first in the subprocess: `import mirops` (and the libraries only mirops needs) fails there.
NO_MIROPS = """
import importlib.abc, sys
class _Blocked(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("mirops", "torchaudio", "transformers"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, _Blocked())
"""


def build_models() -> dict[str, torch.nn.Module]:
    """Tiny versions of what training registers: a reprogrammed YAMNet (the real network, a CNN transform), a
    reprogrammed random AST (Kaldi fbank front end) and an EAsT student; heads seeded to answer unevenly."""
    from transformers import ASTConfig, ASTForAudioClassification

    from mirops.models.ast import ASTBackbone
    from mirops.models.backbone import YamnetBackbone
    from mirops.models.reprogram import ReprogrammedClassifier
    from mirops.models.students import build_student

    torch.manual_seed(0)
    ast = ASTForAudioClassification(ASTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                              intermediate_size=64, num_labels=5)).eval()
    built = {"yamnet-cnn": ReprogrammedClassifier(YamnetBackbone.from_onnx(), CLASSES, transform="cnn"),
             "ast-tiny": ReprogrammedClassifier(ASTBackbone(ast), CLASSES, transform="none"),
             "east-student": build_student("mobile_fcn", len(CLASSES))}
    for model in built.values():
        head = model.head.linear if hasattr(model.head, "linear") else model.head
        if isinstance(head, torch.nn.Linear):
            with torch.no_grad():
                head.weight.normal_(0, 2.0)
    return {name: model.eval() for name, model in built.items()}


def music(seconds: float, seed: int) -> np.ndarray:
    """Notes with harmonics and a decay, a new one every quarter second, over noise hits: audio with content."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * RATE))
    t = np.arange(n) / RATE
    out = 0.02 * rng.normal(size=n) * (np.sin(2 * np.pi * 2 * t) > 0.6)
    for start in np.arange(0.0, seconds, 0.25):
        i, f0 = int(start * RATE), 110 * 2 ** (int(rng.integers(0, 24)) / 12)
        tt = t[i:] - start
        out[i:] += np.exp(-4 * tt) * sum(np.sin(2 * np.pi * f0 * k * tt) / k for k in (1, 2, 3))
    return (0.6 * out / np.abs(out).max()).astype(np.float32)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> dict:
    """A project whose registry holds each model as version 1 (champion) of its own name, exported by
    `log_model` as training does, and the YAMNet model once more in the legacy pickle format; audio files of
    several lengths at the models' rate."""
    root = tmp_path_factory.mktemp("portable")
    settings = Settings.load(make_project(root / "p"))
    tracking.setup(settings)
    built = build_models()
    client = MlflowClient()

    def register(name: str, log) -> None:
        with tracking.run(settings, name, "train", "dataset-md5-v1"):
            uri = log()
        version = mlflow.register_model(uri, name).version
        client.set_registered_model_alias(name, models.CHAMPION, version)

    for name, spec in SPECS.items():
        register(name, lambda name=name, spec=spec: models.log_model(built[name], spec))
    register(LEGACY, lambda: mlflow.pytorch.log_model(  # exactly how versions were logged before
        built["yamnet-cnn"], name="model", serialization_format="pickle",
        signature=models.waveform_signature(len(CLASSES)),
        metadata={models.SERVING_METADATA: SPECS["yamnet-cnn"].to_json()},
        input_example=np.zeros((2, RATE), np.float32), pip_requirements=["torch", "mirops==0.1.0"]).model_uri)

    audio = root / "audio"
    audio.mkdir()
    files = []
    for i, seconds in enumerate(LENGTHS):
        files.append(audio / f"music_{seconds}s.wav")
        sf.write(files[-1], music(seconds, i), RATE, subtype="FLOAT")  # float wav: decodes bit-exactly anywhere
    return {"settings": settings, "models": built, "files": files, "predicted": {}}


def mirops_probabilities(store: dict, name: str) -> dict[str, dict[str, float]]:
    """`mirops predict` of the audio files with the champion of `name` (computed once per module)."""
    if name not in store["predicted"]:
        result = predict(store["settings"], f"models:/{name}@champion", store["files"])
        assert not result.failed
        store["predicted"][name] = {Path(p.path).name: p.probabilities for p in result.predictions}
    return store["predicted"][name]


def assert_close(got: dict, expected: dict, atol: float = 1e-5) -> None:
    assert got.keys() == expected.keys()
    for key in expected:
        assert list(got[key]) == list(expected[key]), key  # the class columns, in the model's order
        assert np.allclose(list(got[key].values()), list(expected[key].values()), atol=atol, rtol=0), (
            key, got[key], expected[key])


def test_pyfunc_loads_and_predicts_where_mirops_cannot_be_imported(store):
    tracking.setup(store["settings"])
    ours = {name: mirops_probabilities(store, name) for name in SPECS}
    for name, spec in SPECS.items():  # the export reproduces the torch module, windowed as training cut clips
        model = store["models"][name]
        for path in store["files"]:
            wave = load_audio(path, RATE)
            assert np.array_equal(wave, sf.read(path, dtype="float32")[0])  # what the subprocess reads
            with torch.no_grad():
                eager = torch.sigmoid(model(torch.from_numpy(np.stack(windows(wave, spec.window_samples)))))
            assert np.allclose(list(ours[name][path.name].values()), eager.mean(0).numpy(), atol=1e-5)

    script = NO_MIROPS + """
import json, sys
import mlflow, soundfile as sf, pandas as pd
for blocked in ("mirops", "torchaudio", "transformers"):
    try:
        __import__(blocked)
    except ModuleNotFoundError:
        continue
    sys.exit(f"{blocked} is importable")
files, names, out = sys.argv[1].split(","), sys.argv[2].split(","), {}
for name in names:
    model = mlflow.pyfunc.load_model(f"models:/{name}@champion")
    frame = model.predict(pd.DataFrame({"wave": [sf.read(f, dtype="float32")[0] for f in files]}))
    out[name] = {f.rsplit("/", 1)[-1]: row for f, row in zip(files, frame.to_dict("records"))}
print(json.dumps(out))
"""
    env = {**os.environ, "MLFLOW_TRACKING_URI": store["settings"].tracking_uri, "PYTHONPATH": ""}
    done = subprocess.run([sys.executable, "-c", script, ",".join(map(str, store["files"])), ",".join(SPECS)],
                          env=env, capture_output=True, text=True, timeout=300, cwd=store["settings"].root)
    assert done.returncode == 0, done.stderr[-4000:]
    theirs = json.loads(done.stdout.strip().splitlines()[-1])
    for name in SPECS:
        assert_close(theirs[name], ours[name])


def test_the_logged_model_says_how_to_feed_it_and_needs_no_mirops(store):
    tracking.setup(store["settings"])
    uri = "models:/yamnet-cnn/1"
    info = mlflow.models.get_model_info(uri)
    assert set(info.flavors) == {"python_function"}  # no pytorch flavour: no pickle to unpickle
    assert info.metadata[models.SERVING_METADATA] == {"sample_rate": RATE, "clip_seconds": 2.0, "threshold": 0.5,
                                                     "classes": list(CLASSES)}
    assert info.metadata[models.DATASET_METADATA] == "dataset-md5-v1"  # the training run's dataset version
    run_id = MlflowClient().get_model_version("yamnet-cnn", "1").run_id
    assert MlflowClient().get_run(run_id).data.params == {}  # logging adds no params beside training's own
    assert info.signature.inputs.input_names() == ["wave"] and info.signature.outputs.input_names() == list(CLASSES)
    assert {p.name: p.default for p in info.signature.params} == {"output": "probabilities", "threshold": 0.5,
                                                                  "batch_size": 16}
    local = Path(mlflow.artifacts.download_artifacts(uri))
    requirements = (local / "requirements.txt").read_text().split()
    assert sorted(r.split("==")[0] for r in requirements) == ["mlflow", "numpy", "pandas", "torch"]
    example = json.loads((local / "serving_input_example.json").read_text())["dataframe_split"]
    assert example["columns"] == ["wave"] and len(example["data"][0][0]) == 2 * RATE  # one clip, not 1 s


def test_input_forms_params_and_errors(store):
    tracking.setup(store["settings"])
    model = mlflow.pyfunc.load_model("models:/east-student@champion")
    waves = [music(3.0, 5), music(3.0, 6)]
    frame = model.predict(pd.DataFrame({"wave": [w.tolist() for w in waves]}))  # lists, as JSON gives them
    assert list(frame.columns) == list(CLASSES) and len(frame) == 2
    raw = model.unwrap_python_model()  # the class itself takes arrays as well
    for form in (np.stack(waves), list(waves)):
        assert np.allclose(raw.predict(None, form).to_numpy(), frame.to_numpy(), atol=1e-6)
    positive = model.predict(pd.DataFrame({"wave": waves}), params={"output": "positive", "threshold": 0.3})
    assert positive.dtypes.tolist() == [bool] * 3 and (positive == (frame >= 0.3)).all().all()
    with pytest.raises(ValueError, match="mono audio"):
        raw.predict(None, [np.zeros((RATE, 2), np.float32)])
    with pytest.raises(ValueError, match="column 'wave'"):
        raw.predict(None, pd.DataFrame({"audio": [waves[0]]}))
    with pytest.raises(ValueError, match="output='logits'"):
        raw.predict(None, [waves[0]], {"output": "logits"})


@pytest.mark.parametrize("length", [1, 999, 1000, 1001, 2500, 3000, 3999])
def test_the_pyfunc_cuts_windows_as_training_does(length):
    wave = np.arange(length, dtype=np.float32)
    assert np.array_equal(waveform_pyfunc.windows(wave, 1000), np.stack(windows(wave, 1000)))


def test_mlflow_models_serve_answers_invocations_with_class_columns(store, tmp_path):
    settings = store["settings"]
    tracking.setup(settings)
    ours = mirops_probabilities(store, "yamnet-cnn")
    port = free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": settings.tracking_uri,
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}  # uvicorn of the venv
    argv = [tool("mlflow"), "models", "serve", "-m", "models:/yamnet-cnn@champion", "--env-manager", "local",
            "-h", "127.0.0.1", "-p", str(port), "-w", "1"]
    out, err = tmp_path / "serve.out", tmp_path / "serve.err"
    with spawned(argv, env, out, err) as server:
        def up() -> bool:
            assert server.poll() is None, f"mlflow models serve exited {server.returncode}:\n{tail(err)}"
            try:
                with LOCAL.open(f"http://127.0.0.1:{port}/ping", timeout=2) as response:
                    return response.status == 200
            except OSError:
                return False

        wait_for("mlflow models serve", up, timeout=120, on_timeout=lambda: tail(err))
        names = [p.name for p in store["files"]]
        body = {"dataframe_split": {"columns": ["wave"],
                                    "data": [[sf.read(p, dtype="float32")[0].tolist()] for p in store["files"]]}}
        answer = http_json(f"http://127.0.0.1:{port}/invocations", body, timeout=60)["predictions"]
        assert_close(dict(zip(names, answer, strict=True)), ours)
        body["params"] = {"output": "positive"}
        positive = http_json(f"http://127.0.0.1:{port}/invocations", body, timeout=60)["predictions"]
        assert [[c for c in CLASSES if row[c]] for row in positive] == [
            [c for c in CLASSES if ours[n][c] >= 0.5] for n in names]
    assert server.returncode is not None  # stopped with its process group


def test_a_version_logged_as_a_pickle_still_predicts_and_evaluates(store):
    tracking.setup(store["settings"])
    assert "pytorch" in mlflow.models.get_model_info(f"models:/{LEGACY}/1").flavors
    assert_close(mirops_probabilities(store, LEGACY), mirops_probabilities(store, "yamnet-cnn"))
    # Evaluation and the gate score cached front-end frames through `load_served`: both formats offer that.
    wave = torch.from_numpy(np.stack([music(2.0, 7), music(2.0, 8)]))
    scores = []
    for name in (LEGACY, "yamnet-cnn"):
        net, spec = models.load_served(f"models:/{name}/1")
        assert net.frontend.config() == store["models"]["yamnet-cnn"].frontend.config()
        scores.append(batched_probs(net, net.frontend(wave), len(spec.classes)))
    assert np.allclose(scores[0], scores[1], atol=1e-5)


class DataDependent(torch.nn.Module):
    """Branches on the audio's values: torch.export cannot trace that."""

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        if wave.abs().max() > 0.5:
            return wave[:, :3] * 0.0 + 1.0
        return wave[:, :3] * 0.0 - 1.0


def test_a_module_that_cannot_be_exported_is_logged_as_a_pickle_with_a_warning(store, capsys):
    tracking.setup(store["settings"])
    spec = ServingSpec(RATE, clip_seconds=1.0, threshold=0.5, classes=CLASSES)
    with tracking.run(store["settings"], "branchy", "train", "dataset-md5-v1"):
        uri = models.log_model(DataDependent(), spec)
    assert "cannot export DataDependent" in capsys.readouterr().err  # the warning says why, and what it costs
    info = mlflow.models.get_model_info(uri)
    assert "pytorch" in info.flavors and info.metadata[models.DATASET_METADATA] == "dataset-md5-v1"
    version = mlflow.register_model(uri, "branchy").version
    loud = store["files"][1].parent / "loud.wav"
    sf.write(loud, np.full(RATE, 0.9, np.float32), RATE, subtype="FLOAT")
    (p,) = predict(store["settings"], f"models:/branchy/{version}", [loud]).predictions
    assert p.probabilities == pytest.approx(dict.fromkeys(CLASSES, 0.7311), abs=1e-4)  # sigmoid(1)
