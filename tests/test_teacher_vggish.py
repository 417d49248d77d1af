"""VGGish teacher port: the official checkpoint layout, its file formats, the reference front end and frame counts."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mirops.models.teacher_nets.vggish import (
    NETWORK_FILE,
    OFFICIAL_URLS,
    PCA_FILE,
    VGGish,
    VGGishLogMel,
    load_vggish,
    num_examples,
)

# ---------------------------------------------------------------- the official numpy front end, as the reference
# Copied from mel_features.py (Copyright 2017 The TensorFlow Authors, Apache-2.0; tensorflow/models
# research/audioset/vggish, shipped unchanged in harritaylor/torchvggish and PyPI torchvggish 0.2), docstrings
# dropped; waveform_to_examples' call (vggish_input.py) is `reference_examples` below.


def frame(data, window_length, hop_length):
    num_samples = data.shape[0]
    num_frames = 1 + int(np.floor((num_samples - window_length) / hop_length))
    shape = (num_frames, window_length) + data.shape[1:]
    strides = (data.strides[0] * hop_length,) + data.strides
    return np.lib.stride_tricks.as_strided(data, shape=shape, strides=strides)


def periodic_hann(window_length):
    return 0.5 - (0.5 * np.cos(2 * np.pi / window_length * np.arange(window_length)))


def stft_magnitude(signal, fft_length, hop_length=None, window_length=None):
    frames = frame(signal, window_length, hop_length)
    window = periodic_hann(window_length)
    windowed_frames = frames * window
    return np.abs(np.fft.rfft(windowed_frames, int(fft_length)))


def hertz_to_mel(frequencies_hertz):
    return 1127.0 * np.log(1.0 + (frequencies_hertz / 700.0))


def spectrogram_to_mel_matrix(num_mel_bins=20, num_spectrogram_bins=129, audio_sample_rate=8000,
                              lower_edge_hertz=125.0, upper_edge_hertz=3800.0):
    nyquist_hertz = audio_sample_rate / 2.
    spectrogram_bins_hertz = np.linspace(0.0, nyquist_hertz, num_spectrogram_bins)
    spectrogram_bins_mel = hertz_to_mel(spectrogram_bins_hertz)
    band_edges_mel = np.linspace(hertz_to_mel(lower_edge_hertz), hertz_to_mel(upper_edge_hertz), num_mel_bins + 2)
    mel_weights_matrix = np.empty((num_spectrogram_bins, num_mel_bins))
    for i in range(num_mel_bins):
        lower_edge_mel, center_mel, upper_edge_mel = band_edges_mel[i:i + 3]
        lower_slope = ((spectrogram_bins_mel - lower_edge_mel) / (center_mel - lower_edge_mel))
        upper_slope = ((upper_edge_mel - spectrogram_bins_mel) / (upper_edge_mel - center_mel))
        mel_weights_matrix[:, i] = np.maximum(0.0, np.minimum(lower_slope, upper_slope))
    mel_weights_matrix[0, :] = 0.0
    return mel_weights_matrix


def log_mel_spectrogram(data, audio_sample_rate=8000, log_offset=0.0, window_length_secs=0.025,
                        hop_length_secs=0.010, **kwargs):
    window_length_samples = int(round(audio_sample_rate * window_length_secs))
    hop_length_samples = int(round(audio_sample_rate * hop_length_secs))
    fft_length = 2 ** int(np.ceil(np.log(window_length_samples) / np.log(2.0)))
    spectrogram = stft_magnitude(data, fft_length=fft_length, hop_length=hop_length_samples,
                                 window_length=window_length_samples)
    mel_spectrogram = np.dot(spectrogram, spectrogram_to_mel_matrix(
        num_spectrogram_bins=spectrogram.shape[1], audio_sample_rate=audio_sample_rate, **kwargs))
    return np.log(mel_spectrogram + log_offset)


def reference_examples(data: np.ndarray) -> np.ndarray:
    """vggish_input.waveform_to_examples at 16 kHz, with vggish_params' values."""
    log_mel = log_mel_spectrogram(data, audio_sample_rate=16000, log_offset=0.01, window_length_secs=0.025,
                                  hop_length_secs=0.010, num_mel_bins=64, lower_edge_hertz=125,
                                  upper_edge_hertz=7500)
    return frame(log_mel, window_length=96, hop_length=96).astype(np.float32)


# ---------------------------------------------------------------- helpers


def synthetic_clip(seconds: float, seed: int = 0) -> np.ndarray:
    """A few sines plus noise at 16 kHz, float64 in [-1, 1]."""
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * 16000)) / 16000
    wave = sum(0.2 * np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi)) for f in (110.0, 440.0, 1250.0, 3300.0))
    return np.clip(wave + 0.05 * rng.standard_normal(t.size), -1.0, 1.0)


def save_official_pca(path, vectors: np.ndarray, means: np.ndarray) -> None:
    """The PCA file as the release serves it: torch.save of a dict of float64 numpy arrays, pickled by numpy 1.

    Written in torch's pre-1.6 (non-zip) format, whose pickle stream can be edited in place, with numpy 2's
    `numpy._core` module name put back to numpy 1's `numpy.core`.
    """
    torch.save({"pca_eigen_vectors": vectors, "pca_means": means}, path, _use_new_zipfile_serialization=False)
    data = path.read_bytes()
    path.write_bytes(data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))


@pytest.fixture(scope="module")
def official_files(tmp_path_factory):
    """A full-size VGGish with random weights, saved as the two official files; PCA scaled to use the 0..255 range."""
    torch.manual_seed(0)
    net = VGGish().eval()
    with torch.no_grad():
        raw = net.embed_raw(torch.from_numpy(synthetic_clip(10.0, seed=1)).float()[None])[0]
    rng = np.random.default_rng(0)
    means = raw.mean(0).double().numpy()
    vectors = rng.standard_normal((128, 128)) / math.sqrt(128) / (raw.std(0).double().numpy() + 1e-6)
    folder = tmp_path_factory.mktemp("vggish")
    network_path, pca_path = folder / NETWORK_FILE, folder / PCA_FILE
    torch.save(net.state_dict(), network_path)
    save_official_pca(pca_path, vectors, means)
    net.pproc.load_pca({"pca_eigen_vectors": vectors, "pca_means": means})
    return net, network_path, pca_path


# ---------------------------------------------------------------- tests


def test_full_size_network_has_the_official_checkpoint_layout():
    # From torchvggish/vggish.py: make_layers() [64, M, 128, M, 256, 256, M, 512, 512, M] (conv + ReLU, pools)
    # and VGG.embeddings (Linear 512*4*6 -> 4096, ReLU, 4096 -> 4096, ReLU, 4096 -> 128, ReLU).
    convs = {0: (1, 64), 3: (64, 128), 6: (128, 256), 8: (256, 256), 11: (256, 512), 13: (512, 512)}
    linears = {0: (12288, 4096), 2: (4096, 4096), 4: (4096, 128)}
    expected = {}
    for index, (cin, cout) in convs.items():
        expected[f"features.{index}.weight"], expected[f"features.{index}.bias"] = (cout, cin, 3, 3), (cout,)
    for index, (fin, fout) in linears.items():
        expected[f"embeddings.{index}.weight"], expected[f"embeddings.{index}.bias"] = (fout, fin), (fout,)
    with torch.device("meta"):
        net = VGGish()
    state = net.state_dict()
    assert {key: tuple(value.shape) for key, value in state.items()} == expected
    assert len(state) == 18
    assert sum(value.numel() for value in state.values()) == 72_141_184  # ≈ 289 MB of float32
    assert (net.sample_rate, net.embedding_dim, net.hop_s) == (16000, 128, 0.96)
    assert net.has_classifier is False


@pytest.mark.parametrize("seconds", [10.0, 2.3456])
def test_front_end_matches_the_numpy_reference(seconds):
    audio = synthetic_clip(seconds, seed=3)
    reference = reference_examples(audio)
    examples = VGGish(conv_channels=(1,) * 6, hidden_size=1).examples(torch.from_numpy(audio)[None])[0]
    assert examples.shape == reference.shape == (num_examples(audio.size), 96, 64)
    assert np.abs(examples.numpy() - reference).max() <= 1e-4
    logmel = VGGishLogMel()(torch.from_numpy(audio)[None])[0].numpy()
    reference_logmel = log_mel_spectrogram(audio, audio_sample_rate=16000, log_offset=0.01, num_mel_bins=64,
                                           lower_edge_hertz=125, upper_edge_hertz=7500)
    assert logmel.shape == reference_logmel.shape  # every STFT frame, the last partial example included
    assert np.abs(logmel - reference_logmel).max() <= 1e-4


def test_clips_embed_to_the_reference_frame_counts(official_files):
    net, _, _ = official_files
    for seconds, frames in ((10.0, 10), (29.1, 30)):
        audio = torch.from_numpy(synthetic_clip(seconds, seed=2)).float()[None]
        with torch.no_grad():
            embeddings = net.embed(audio)
        assert embeddings.shape == (1, frames, 128) and embeddings.dtype == torch.float32
        assert torch.equal(embeddings, embeddings.round())  # stored as 8-bit integers
        assert embeddings.min() >= 0 and embeddings.max() <= 255 and embeddings.std() > 10
    assert num_examples(160_000) == 10 and num_examples(465_600) == 30
    assert num_examples(15_600) == 1 and num_examples(15_599) == 0
    with pytest.raises(ValueError, match="at least 15600 samples"):
        net.embed(torch.zeros(1, 15_599))


def test_official_files_load_back_and_embed_like_the_net_in_memory(official_files):
    net, network_path, pca_path = official_files
    loaded = load_vggish(network_path, pca_path)
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    audio = torch.from_numpy(np.stack([synthetic_clip(10.0, seed=4), synthetic_clip(10.0, seed=5)])).float()
    with torch.no_grad():
        expected, got, raw = net.embed(audio), loaded.embed(audio), loaded.embed_raw(audio)
    assert torch.equal(got, expected)
    # The official Postprocessor: round((clip(W (e - mean), -2, 2) + 2) * 255 / 4).
    pca = (raw.reshape(-1, 128) - loaded.pproc.pca_means.t()) @ loaded.pproc.pca_eigen_vectors.t()
    manual = torch.round((pca.clamp(-2, 2) + 2) * 63.75).reshape(got.shape)
    assert (manual - got).abs().max() <= 1  # the same up to float summation order at a rounding edge
    assert loaded.logits(audio) is None


def test_missing_files_name_the_official_urls(tmp_path, official_files):
    _, network_path, pca_path = official_files
    with pytest.raises(FileNotFoundError, match=OFFICIAL_URLS[NETWORK_FILE]):
        load_vggish(tmp_path / NETWORK_FILE, pca_path)
    with pytest.raises(FileNotFoundError, match=OFFICIAL_URLS[PCA_FILE]):
        load_vggish(network_path, tmp_path / PCA_FILE)


def test_wrong_keys_are_named(tmp_path, official_files):
    with torch.device("meta"):  # the official layout without any data: a small file
        state = VGGish().state_dict()
    state["embeddings.4.kernel"] = state.pop("embeddings.4.weight")
    bad_network = tmp_path / "renamed.pth"
    torch.save(state, bad_network)
    _, network_path, pca_path = official_files
    with pytest.raises(ValueError, match=r"embeddings\.4\.kernel") as error:
        load_vggish(bad_network, pca_path)
    assert "embeddings.4.weight" in str(error.value) and str(bad_network) in str(error.value)

    bad_pca = tmp_path / "pca.pth"
    torch.save({"pca_eigen_vectors": np.eye(128), "pca_mean": np.zeros(128)}, bad_pca)
    with pytest.raises(ValueError, match="pca_mean'"):
        load_vggish(network_path, bad_pca)
