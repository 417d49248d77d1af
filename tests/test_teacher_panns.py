"""PANNs CNN14 teacher port: official checkpoint layout, loading, one clip-level embedding, and its errors.

The expected layout is written down from panns_inference 0.1.1 `models.py::Cnn14(sample_rate=32000,
window_size=1024, hop_size=320, mel_bins=64, fmin=50, fmax=14000, classes_num=527)` with torchlibrosa 0.1.0:
84 state-dict entries, 81 837 071 parameters. The clip-length tests run the full-size net (about a second per
10 s clip on one core); the file round trip uses narrow blocks of the same code path.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mirops.models.teacher_nets.panns import CHECKPOINT_NAME, OFFICIAL_URLS, Cnn14, load_panns

SR = 32000
SMALL_WIDTHS = (4, 8, 8, 16, 16, 32)


def official_layout() -> list[tuple[str, tuple[int, ...]]]:
    """The state dict of the official Cnn14, in its order."""

    def batch_norm(name: str, channels: int) -> list[tuple[str, tuple[int, ...]]]:
        return [(f"{name}.{stat}", (channels,)) for stat in ("weight", "bias", "running_mean", "running_var")] + [
            (f"{name}.num_batches_tracked", ())]

    layout = [
        ("spectrogram_extractor.stft.conv_real.weight", (513, 1, 1024)),
        ("spectrogram_extractor.stft.conv_imag.weight", (513, 1, 1024)),
        ("logmel_extractor.melW", (513, 64)),
        *batch_norm("bn0", 64),
    ]
    channels = (1, 64, 128, 256, 512, 1024, 2048)
    for block in range(1, 7):
        c_in, c_out = channels[block - 1], channels[block]
        layout += [(f"conv_block{block}.conv1.weight", (c_out, c_in, 3, 3)),
                   (f"conv_block{block}.conv2.weight", (c_out, c_out, 3, 3)),
                   *batch_norm(f"conv_block{block}.bn1", c_out), *batch_norm(f"conv_block{block}.bn2", c_out)]
    return layout + [("fc1.weight", (2048, 2048)), ("fc1.bias", (2048,)),
                     ("fc_audioset.weight", (527, 2048)), ("fc_audioset.bias", (527,))]


def music(seconds: float, seed: int = 0) -> torch.Tensor:
    t = np.arange(int(round(seconds * SR))) / SR
    rng = np.random.default_rng(seed)
    wave = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.2 * np.sin(2 * np.pi * 1234.5 * t) + 0.05 * rng.standard_normal(t.size)
    return torch.from_numpy(wave[None]).float()


def randomised(net: Cnn14, seed: int = 0) -> dict[str, torch.Tensor]:
    """The net's state dict with every float tensor redrawn (BatchNorm variances kept positive)."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, value in net.state_dict().items():
        if not value.is_floating_point():
            state[key] = value.clone()
        elif key.endswith("running_var"):
            state[key] = torch.rand(value.shape, generator=generator) + 0.5
        else:
            state[key] = value + 0.1 * torch.randn(value.shape, generator=generator) * value.abs().mean().clamp(min=1)
    return state


@pytest.fixture(scope="module")
def full_net() -> Cnn14:
    torch.manual_seed(0)
    return Cnn14().eval()


def test_full_size_state_dict_is_the_official_layout():
    with torch.device("meta"):
        net = Cnn14()
    state = net.state_dict()
    assert [(key, tuple(value.shape)) for key, value in state.items()] == official_layout()
    assert len(state) == 84
    assert sum(parameter.numel() for parameter in net.parameters()) == 81_837_071
    assert state["bn0.num_batches_tracked"].dtype == torch.int64
    assert (net.sample_rate, net.embedding_dim, net.hop_s, net.num_classes) == (32000, 2048, None, 527)


def test_front_end_is_the_official_dft_and_mel_bank(full_net):
    stft = full_net.spectrogram_extractor.stft
    # The DC kernel is librosa's periodic Hann window (and has no imaginary part).
    torch.testing.assert_close(stft.conv_real.weight[0, 0], torch.hann_window(1024, periodic=True))
    assert stft.conv_imag.weight[0].abs().max() == 0
    # A 1 kHz tone peaks in bin 1000 / (32000 / 1024) = 32; frames are centred: 1 + samples // 320.
    tone = torch.sin(2 * torch.pi * 1000 * torch.arange(SR) / SR)[None]
    power = full_net.spectrogram_extractor(tone)
    assert power.shape == (1, 1 + SR // 320, 513)
    assert power[0, 50].argmax().item() == 32
    assert full_net.logmel(tone).shape == (1, 101, 64)
    # Slaney bank from 50 Hz to 14 kHz: nothing above 14 kHz (bin 448) or below 50 Hz (bin 1).
    assert full_net.logmel_extractor.melW[449:].abs().max() == 0
    assert full_net.logmel_extractor.melW[:2].abs().max() == 0


@pytest.mark.parametrize("seconds", [10.0, 29.1])
def test_clips_embed_to_one_2048_d_vector(full_net, seconds):
    with torch.no_grad():
        embeddings = full_net.embed(music(seconds))
    assert embeddings.shape == (1, 1, 2048)  # methods.md §3.4: PANNs, T = 1 for 10 s and 29.1 s clips
    assert embeddings.dtype == torch.float32
    assert torch.isfinite(embeddings).all() and (embeddings >= 0).all()  # after fc1 + ReLU


def test_logits_are_pre_sigmoid_audioset_scores(full_net):
    audio = torch.cat([music(2.0, seed=1), music(2.0, seed=2)])
    with torch.no_grad():
        logits, embedding = full_net(audio)
        assert torch.equal(full_net.logits(audio), logits)
    assert logits.shape == (2, 527)
    assert logits.min() < 0  # not the official sigmoid probabilities
    torch.testing.assert_close(logits, full_net.fc_audioset(embedding))


def test_random_weights_load_back_from_the_official_file_format(tmp_path):
    net = Cnn14(widths=SMALL_WIDTHS)
    net.load_state_dict(randomised(net), strict=True)
    net.eval()
    path = tmp_path / CHECKPOINT_NAME
    torch.save({"iteration": 600000, "model": net.state_dict()}, path)  # as the official training script saves
    loaded = load_panns(path, widths=SMALL_WIDTHS)
    assert not loaded.training and not any(parameter.requires_grad for parameter in loaded.parameters())
    audio = torch.cat([music(3.0, seed=1), music(3.0, seed=2)])
    with torch.no_grad():
        expected, got = net.embed(audio), loaded.embed(audio)
        assert torch.equal(loaded.logits(audio), net.logits(audio))
    assert got.shape == (2, 1, 2048)
    assert torch.equal(got, expected)
    assert not torch.equal(got[0], got[1])


def test_missing_file_names_the_official_url(tmp_path):
    with pytest.raises(FileNotFoundError) as error:
        load_panns(tmp_path / CHECKPOINT_NAME)
    assert OFFICIAL_URLS[CHECKPOINT_NAME] in str(error.value)
    assert "zenodo.org/record/3987831" in str(error.value)


def test_wrong_or_missing_keys_are_named(tmp_path):
    state = Cnn14(widths=SMALL_WIDTHS).state_dict()
    state["fc_one.weight"] = state.pop("fc1.weight")
    path = tmp_path / "renamed.pth"
    torch.save({"iteration": 0, "model": state}, path)
    with pytest.raises(ValueError) as error:
        load_panns(path, widths=SMALL_WIDTHS)
    message = str(error.value)
    assert str(path) in message and "fc_one.weight" in message and "fc1.weight" in message

    bare = tmp_path / "no_model.pth"
    torch.save({"iteration": 0, "state": {}}, bare)
    with pytest.raises(ValueError, match="no 'model' entry"):
        load_panns(bare)

    full_size = tmp_path / "small_into_full.pth"
    torch.save({"model": Cnn14(widths=SMALL_WIDTHS).state_dict()}, full_size)
    with pytest.raises(ValueError, match=r"wrong shapes: conv_block1\.conv1\.weight \(4, 1, 3, 3\)"):
        load_panns(full_size)


def test_too_short_clip_is_refused(full_net):
    with pytest.raises(ValueError, match="at least 9920 samples"):
        full_net.embed(torch.zeros(1, 5000))
