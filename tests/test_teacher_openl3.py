"""OpenL3 mel128/music/512 port: the official Keras weight layout, the .h5 loader, openl3's frame counts."""

from __future__ import annotations

import gzip
import math

import h5py
import numpy as np
import pytest
import torch

from mirops.models.teacher_nets.openl3 import (
    OFFICIAL_URLS,
    OpenL3Mel128,
    frame_audio,
    load_openl3,
    num_frames,
)

SR = 48000
# Weighted layers of openl3's `_construct_mel128_audio_network` (Keras kernels are h, w, in, out).
OFFICIAL_CONVS = [(1, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256), (256, 512), (512, 512)]
OFFICIAL_NORMS = [1, 64, 64, 128, 128, 256, 256, 512]  # the input BN on the spectrogram, then one per conv but the last


def official_layer_names() -> list[tuple[str, str | None]]:
    """(layer name, kind) of every layer in `layer_names` of openl3_audio_mel128_music.h5 (v0_4_0).

    The names are Keras auto-names from the L3 training session (here: a fresh Keras 2 session that built
    the vision half first, as l3embedding's `construct_cnn_L3_melspec1` does); openl3 loads by layer order.
    """
    layers, conv, norm, act, pool = [("input_2", None), ("batch_normalization_10", "norm")], 8, 11, 9, 5
    for index in range(7):
        layers += [(f"conv2d_{conv}", "conv"), (f"batch_normalization_{norm}", "norm"), (f"activation_{act}", None)]
        conv, norm, act = conv + 1, norm + 1, act + 1
        if index in (1, 3, 5):
            layers.append((f"max_pooling2d_{pool}", None))
            pool += 1
    return layers + [("audio_embedding_layer", "conv")]


def write_keras_h5(path, net: OpenL3Mel128, extra_layers: tuple[str, ...] = ()) -> None:
    """`net`'s weights in Keras 2 `save_weights` layout: `<layer>/<layer>/<weight>:0`, kernels HWIO."""
    state = {key: value.numpy() for key, value in net.state_dict().items()}
    torch_keys = iter(key for key, _ in net.keras_layers())
    names = [name for name, _ in official_layer_names()]
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = np.array([name.encode() for name in (*extra_layers, *names)])
        f.attrs["backend"], f.attrs["keras_version"] = b"tensorflow", b"2.2.4"
        for name in extra_layers:  # kapre 0.1 spectrogram constants, as in the v0_2_0 files
            group = f.create_group(name)
            group.attrs["weight_names"] = np.array([f"{name}/real_kernels:0".encode()])
            group[f"{name}/real_kernels:0"] = np.zeros((2048, 1, 1, 1025), np.float32)
        for name, kind in official_layer_names():
            group, weights = f.create_group(name), {}
            if kind == "conv":
                key = next(torch_keys)
                weights = {"kernel": state[f"{key}.weight"].transpose(2, 3, 1, 0), "bias": state[f"{key}.bias"]}
            elif kind == "norm":
                key = next(torch_keys)
                weights = {"gamma": state[f"{key}.weight"], "beta": state[f"{key}.bias"],
                           "moving_mean": state[f"{key}.running_mean"], "moving_variance": state[f"{key}.running_var"]}
            group.attrs["weight_names"] = np.array([f"{name}/{w}:0".encode() for w in weights], dtype="S")
            for weight, value in weights.items():
                group[f"{name}/{weight}:0"] = value


def random_net(seed: int = 0, **options) -> OpenL3Mel128:
    torch.manual_seed(seed)
    net = OpenL3Mel128(**options)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):  # non-trivial statistics, or the BN maths goes untested
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0.0, 0.1)
                module.running_mean.normal_(0.0, 0.1)
                module.running_var.uniform_(0.5, 1.5)
        net.input_norm.running_mean.fill_(-40.0)  # the dB spectrogram lies in [-80, 0]
        net.input_norm.running_var.fill_(400.0)
    return net.eval()


def music(seconds: float, seed: int = 0) -> torch.Tensor:
    """A few sines plus noise, [1, samples] at 48 kHz."""
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * SR)) / SR
    wave = sum(0.2 * np.sin(2 * np.pi * f * t) for f in (220.0, 554.4, 1318.5)) + 0.01 * rng.standard_normal(t.size)
    return torch.from_numpy(wave.astype(np.float32))[None]


def test_full_size_state_dict_has_the_official_layers_and_parameter_count():
    with torch.device("meta"):
        net = OpenL3Mel128()
    state = net.state_dict()
    convs = [state[f"blocks.{i}.conv.weight"].shape for i in range(7)] + [state["embedding_conv.weight"].shape]
    assert [(shape[1], shape[0]) for shape in convs] == OFFICIAL_CONVS
    assert all(shape[2:] == (3, 3) for shape in convs)
    norms = [state["input_norm.weight"].shape[0]] + [state[f"blocks.{i}.norm.running_var"].shape[0] for i in range(7)]
    assert norms == OFFICIAL_NORMS
    assert len(state) == 8 * 2 + 8 * 5  # conv weight+bias; BN weight, bias, running mean/var, num_batches_tracked
    assert sum(p.numel() for p in net.parameters()) == 4_687_042  # Keras: trainable params of the mel128 net
    moving = sum(v.numel() for k, v in state.items() if k.endswith(("running_mean", "running_var")))
    assert sum(p.numel() for p in net.parameters()) + moving == 4_689_860  # Keras "Total params"
    assert (net.sample_rate, net.embedding_dim, net.hop_s, net.has_classifier) == (48000, 512, 0.96, False)


@pytest.mark.parametrize("gzipped", [False, True])
def test_random_weights_in_the_official_keras_file_load_back_and_embed_the_same(tmp_path, gzipped):
    net = random_net()
    path = tmp_path / "openl3_audio_mel128_music.h5"
    write_keras_h5(path, net)
    if gzipped:  # as OFFICIAL_URLS serve it
        path = path.with_suffix(".h5.gz")
        path.write_bytes(gzip.compress((tmp_path / "openl3_audio_mel128_music.h5").read_bytes()))
    loaded = load_openl3(path)
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    for key, value in net.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    audio = music(0.5)  # one window
    with torch.no_grad():
        torch.testing.assert_close(loaded.embed(audio), net.embed(audio), rtol=0, atol=0)


def test_v0_2_0_files_with_the_kapre_spectrogram_layer_load_too(tmp_path):
    net = random_net(seed=1)
    write_keras_h5(tmp_path / "old.h5", net, extra_layers=("melspectrogram_1",))
    loaded = load_openl3(tmp_path / "old.h5")
    assert torch.equal(loaded.embedding_conv.weight, net.embedding_conv.weight)


@pytest.mark.parametrize(("seconds", "frames", "channels"), [(10.0, 11, None), (29.1, 31, (8, 16, 32, 512))])
def test_clips_embed_to_openl3_frame_counts(seconds, frames, channels):
    # 29.1 s runs a narrower net through the same code path (the full one takes ~6 s on one core); D stays 512.
    net = random_net(**({"channels": channels} if channels else {}))
    audio = music(seconds)
    assert num_frames(audio.shape[1]) == frames == 1 + math.ceil((audio.shape[1] + 24000 - 48000) / 46080)
    with torch.no_grad():
        embeddings = net.embed(audio)
    assert embeddings.shape == (1, frames, 512) and embeddings.dtype == torch.float32
    assert torch.isfinite(embeddings).all() and embeddings.std() > 0


def test_framing_centres_the_first_window_and_pads_with_zeros():
    audio = torch.arange(1, 48001, dtype=torch.float32)[None]  # 1 s: 1 + ceil(24 000 / 46 080) = 2 windows
    frames = frame_audio(audio)
    assert frames.shape == (1, 2, SR)
    assert torch.equal(frames[0, 0, :24000], torch.zeros(24000)) and frames[0, 0, 24000] == 1
    assert frames[0, 1, 0] == 46080 - 24000 + 1 and frames[0, 1, -1] == 0  # the second window runs past the end
    assert num_frames(1) == 1 and num_frames(24000) == 1 and num_frames(24001) == 2


@pytest.mark.parametrize("frontend", ["kapre-0.3", "kapre-0.1.4"])
def test_spectrogram_is_normalised_per_window_in_decibels(frontend):
    net = OpenL3Mel128(frontend=frontend, channels=(4, 4, 4, 4))
    window = music(1.0)
    spec = net.spectrogram(window)
    assert spec.shape == (1, 1, 128, 199)
    assert spec.max() == 0 and spec.min() >= -80
    torch.testing.assert_close(net.spectrogram(0.1 * window), spec, atol=1e-3, rtol=0)  # gain cancels out


def test_missing_file_names_the_official_url(tmp_path):
    with pytest.raises(FileNotFoundError) as error:
        load_openl3(tmp_path / "openl3_audio_mel128_music.h5")
    assert OFFICIAL_URLS["openl3_audio_mel128_music-v0_4_0.h5.gz"] in str(error.value)
    assert "https://github.com/marl/openl3/raw/models/openl3_audio_mel128_music-v0_4_0.h5.gz" in str(error.value)


def test_wrong_weights_are_named(tmp_path):
    path = tmp_path / "broken.h5"
    write_keras_h5(path, random_net())
    with h5py.File(path, "a") as f:  # rename conv2d_9's bias
        group = f["conv2d_9"]
        group["conv2d_9/bias_typo:0"] = group["conv2d_9/bias:0"][()]
        del group["conv2d_9/bias:0"]
        group.attrs["weight_names"] = np.array([b"conv2d_9/kernel:0", b"conv2d_9/bias_typo:0"])
    with pytest.raises(ValueError, match=r"broken\.h5: layer 'conv2d_9' has weights \['bias_typo', 'kernel'\]"):
        load_openl3(path)
    write_keras_h5(path, random_net(channels=(64, 128, 256, 256)))
    narrow = r"layer 'conv2d_14' gives blocks\.6\.conv\.weight of shape \(256, 256, 3, 3\), expected \(512, 256"
    with pytest.raises(ValueError, match=narrow):
        load_openl3(path)
    with h5py.File(path, "a") as f:
        f.attrs["layer_names"] = f.attrs["layer_names"][:-1]  # drop audio_embedding_layer
    with pytest.raises(ValueError, match=r"expected 16 Keras layers with weights .* found 15"):
        load_openl3(path)
