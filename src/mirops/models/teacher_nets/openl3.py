"""OpenL3 (Cramer et al., ICASSP 2019), audio subnetwork "mel128 / music / 512", an EAsT reference teacher.

Official source read for this port: PyPI `openl3` 0.4.2 (= github.com/marl/openl3, `openl3/core.py`,
`openl3/models.py::_construct_mel128_audio_network`, `setup.py`), its front end `kapre` 0.3.7 (PyPI sdist of
2022-01: `composed.get_melspectrogram_layer`, `time_frequency.STFT/Magnitude/ApplyFilterbank`,
`backend.filterbank_mel`), the older pair `openl3` 0.3.1 + `kapre` 0.1.4 (`time_frequency.Melspectrogram`), the
training code github.com/marl/l3embedding (`l3embedding/audio_model.py`, `notebooks/extract_embedding_models_
from_avc_models.ipynb`) and the PyTorch port PyPI `torchopenl3` 1.0.1 (`models.py`, validated against
openl3 0.3.1).

Weights: `openl3_audio_mel128_music.h5`, installed by openl3's setup.py from the gzip in `OFFICIAL_URLS`
(`-v0_4_0` for openl3 >= 0.4, `-v0_2_0` for <= 0.3.1). Both are Keras `save_weights` files of one flat model:
root attribute `layer_names` lists every layer, group `<layer>` has attribute `weight_names`, and weight `w`
is the dataset `<layer>/<w>`, e.g. `conv2d_8/conv2d_8/kernel:0` (HWIO) and `batch_normalization_10/
batch_normalization_10/gamma:0`, `beta:0`, `moving_mean:0`, `moving_variance:0`. v0_4_0 is v0_2_0 with the kapre
Melspectrogram group (DFT kernels and mel matrix, constants) deleted (marl/openl3 PR #61,
`tests/migration/remove_layers.py`). The group numbers are Keras auto-names from the L3 training session and
openl3 loads the file by layer order, not by name; `load_openl3` does the same: the 16 layers with weights
(8 batch norms, 7 convs, `audio_embedding_layer`) in `layer_names` order, each checked for its kind and
shapes, any `*spectrogram*` group skipped. This module's own `state_dict` is a plain torch layout
(`input_norm`, `blocks.<i>.conv/norm`, `embedding_conv`; 56 keys, 4 687 042 parameters, Keras counts
4 689 860 with the moving statistics).

Network (channels last in Keras; here [N, 1, 128 mel, 199 frames]): BatchNorm on the log-mel, then
4 blocks of two 3x3 "same" convs (64, 128, 256, 512) each followed by BatchNorm (eps 1e-3) + ReLU, 2x2
max-pool after blocks 1-3; in block 4 the second conv is `audio_embedding_layer`, taken raw (no BN/ReLU).
Embedding 512: max-pool (16, 24) over the whole 16 x 24 map -> 512 (6144: pool (4, 8), flattened in Keras'
(h, w, c) order). No classifier: `logits` returns None.

Reference extraction (docs/methods.md §3.4): `openl3.get_audio_embedding(audio, sr, hop_size=0.96,
model=load_audio_embedding_model("mel128", "music", 512))`, centre=True. openl3 resamples to 48 kHz itself
(resampy, `kaiser_best`); `embed` takes 48 kHz audio and mirops resamples with torchaudio's resampler (the
caller's job; `RESAMPY_KAISER_BEST` holds torchaudio settings close to resampy's filter), so values differ from
the stored ones by the resamplers' difference. Framing (`frame_audio`): 24 000 zeros before the clip, zeros
after it up to a whole number of hops, 1 s windows every 46 080 samples, so T = 1 + ceil((S + 24 000 -
48 000) / 46 080) (1 if that is <= 0): 10 s -> 11, 29.1 s -> 31. Values are stored raw (the dataset
subtracts 2.24 later).

Front end: the EAsT repository pins no openl3 version; in 2023 that meant 0.4.x (TensorFlow 2, kapre
0.3.x; 0.3.1 needs TensorFlow < 1.14 and Python <= 3.7), so the default
`frontend="kapre-0.3"` is that Keras front end exactly: `tf.signal.stft` (no centring, frames from sample 0,
`pad_end` zero-pads 1 964 samples to get ceil(48 000 / 242) = 199 frames), periodic Hann 2048, hop 242,
magnitude; librosa mel bank on the magnitude (128 bands, 0-24 kHz, Slaney scale, `norm="slaney"`); then
openl3's `kapre_v0_1_4_magnitude_to_decibel`: 10 log10(max(x, 1e-10)), minus the window's maximum, floored
at -80. The network was trained on kapre 0.1.4's Melspectrogram, which differs (openl3 issue #80 says
embeddings changed with 0.4.0): "same" padding (982 zeros each side), the mel bank (HTK scale,
area-normalised) on the power spectrum, then sqrt, the same dB step. `frontend="kapre-0.1.4"` computes that
one (openl3 <= 0.3.1 with librosa < 0.8, whose `norm=1` meant area normalisation; torchopenl3 on a newer
librosa gets L1-normalised triangles instead, up to 0.24 dB off). Both use torch.stft and torchaudio's
`melscale_fbanks` (librosa's triangles, in float32); no mirops front end does this computation, so none is
reused.

Checked with random weights written in the official layout (one-off, not in CI): against openl3 0.4.2 +
kapre 0.3.7 + TensorFlow 2.15.1 loading that .h5, embeddings of 10 s / 29.1 s clips at 48 kHz agree to
4e-7 (spectrograms to 1.5e-4 dB); `frontend="kapre-0.1.4"` agrees with torchopenl3 1.0.1 to 7e-8 once its
mel bank is area-normalised (4e-5 with its librosa 0.11 L1 triangles).
"""

from __future__ import annotations

import gzip
import io
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchaudio
from torch import Tensor, nn

from mirops.models.teacher_nets.checkpoint_files import few

WEIGHT_FILE = "openl3_audio_mel128_music.h5"
_MODELS_URL = "https://github.com/marl/openl3/raw/models/"
OFFICIAL_URLS = {
    "openl3_audio_mel128_music-v0_4_0.h5.gz": _MODELS_URL + "openl3_audio_mel128_music-v0_4_0.h5.gz",  # >= 0.4
    "openl3_audio_mel128_music-v0_2_0.h5.gz": _MODELS_URL + "openl3_audio_mel128_music-v0_2_0.h5.gz",  # <= 0.3.1
}

SAMPLE_RATE = 48000
WINDOW_SAMPLES = SAMPLE_RATE  # 1 s analysis windows
HOP_SAMPLES = int(0.96 * SAMPLE_RATE)  # hop_size=0.96 -> 46 080 (openl3 truncates with int())
N_FFT = 2048
STFT_HOP = 242
N_MELS = 128
STFT_FRAMES = math.ceil(WINDOW_SAMPLES / STFT_HOP)  # 199, both for tf pad_end and Keras "same"
STFT_PAD = (STFT_FRAMES - 1) * STFT_HOP + N_FFT - WINDOW_SAMPLES  # 1 964 zeros in all
DB_AMIN, DB_RANGE = 1e-10, 80.0
BN_EPS = 1e-3  # Keras BatchNormalization default
CHANNELS = (64, 128, 256, 512)
POOL_SIZES = {512: (16, 24), 6144: (4, 8)}  # openl3 AUDIO_POOLING_SIZES["mel128"]
FRONTENDS = ("kapre-0.3", "kapre-0.1.4")
# torchaudio.functional.resample options that approximate resampy's "kaiser_best" (64 zero crossings, Kaiser
# beta 14.77, roll-off 0.9476), which openl3 resamples with; resampy interpolates a filter table, so not bit-exact.
RESAMPY_KAISER_BEST = {"lowpass_filter_width": 64, "rolloff": 0.9475937167399596,
                       "resampling_method": "sinc_interp_kaiser", "beta": 14.769656459379492}
_CONV_WEIGHTS = {"kernel", "bias"}
_NORM_WEIGHTS = {"gamma", "beta", "moving_mean", "moving_variance"}


def num_frames(num_samples: int) -> int:
    """Embedding frames openl3 (centre=True, hop 0.96 s) gives for a 48 kHz clip of `num_samples`."""
    padded = num_samples + WINDOW_SAMPLES // 2
    return 1 if padded <= WINDOW_SAMPLES else 1 + math.ceil((padded - WINDOW_SAMPLES) / HOP_SAMPLES)


def frame_audio(audio: Tensor) -> Tensor:
    """[B, S] -> [B, T, 48 000]: openl3's `_center_audio`, `_pad_audio` and framing, with zeros."""
    audio = F.pad(audio, (WINDOW_SAMPLES // 2, 0))
    length = audio.shape[-1]
    target = WINDOW_SAMPLES + (num_frames(length - WINDOW_SAMPLES // 2) - 1) * HOP_SAMPLES
    return F.pad(audio, (0, target - length)).unfold(-1, WINDOW_SAMPLES, HOP_SAMPLES)


class ConvNorm(nn.Module):
    """3x3 "same" conv, then BatchNorm (eps 1e-3) and ReLU."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm = nn.BatchNorm2d(out_channels, eps=BN_EPS)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.norm(self.conv(x)))


class OpenL3Mel128(nn.Module):
    """OpenL3 audio network "mel128": 48 kHz audio [B, S] -> embeddings [B, T, 512], one per 0.96 s.

    `channels` other than the official (64, 128, 256, 512) only serve fast tests of the same code path.
    `batch_size` bounds how many 1 s windows go through the network at once (openl3 uses 32).
    """

    sample_rate = SAMPLE_RATE
    embedding_dim = 512  # the official size; set per instance from `channels` and `embedding_size`
    hop_s = HOP_SAMPLES / SAMPLE_RATE  # 0.96
    has_classifier = False

    def __init__(self, frontend: str = "kapre-0.3", embedding_size: int = 512,
                 channels: tuple[int, int, int, int] = CHANNELS, batch_size: int = 32) -> None:
        super().__init__()
        if frontend not in FRONTENDS:
            raise ValueError(f"unknown OpenL3 front end {frontend!r}; choose one of {list(FRONTENDS)}")
        if embedding_size not in POOL_SIZES:
            raise ValueError(f"OpenL3 embeddings are {sorted(POOL_SIZES)}-dimensional, got {embedding_size}")
        self.frontend, self.pool_size, self.batch_size = frontend, POOL_SIZES[embedding_size], batch_size
        pooled = (N_MELS // 8 // self.pool_size[0]) * (STFT_FRAMES // 8 // self.pool_size[1])
        self.embedding_dim = channels[-1] * pooled
        with torch.device("cpu"):  # constants, computed for real even when the net is built on "meta"
            window = torch.hann_window(N_FFT, periodic=True)
            mel_bank = torchaudio.functional.melscale_fbanks(
                N_FFT // 2 + 1, 0.0, SAMPLE_RATE / 2, N_MELS, SAMPLE_RATE, norm="slaney",
                mel_scale="slaney" if frontend == "kapre-0.3" else "htk")
        self.register_buffer("window", window, persistent=False)
        self.register_buffer("mel_bank", mel_bank.T.contiguous(), persistent=False)  # [128, 1025]
        self.input_norm = nn.BatchNorm2d(1, eps=BN_EPS)
        widths = [1] + [width for width in channels for _ in range(2)]  # 1, 64, 64, 128, 128, ..., 512, 512
        self.blocks = nn.ModuleList(ConvNorm(widths[i], widths[i + 1]) for i in range(7))
        self.embedding_conv = nn.Conv2d(channels[-1], channels[-1], 3, padding=1)  # `audio_embedding_layer`

    def spectrogram(self, windows: Tensor) -> Tensor:
        """1 s windows [N, 48 000] -> per-window normalised dB mel spectrogram [N, 1, 128, 199]."""
        if self.frontend == "kapre-0.3":  # tf.signal.stft(pad_end=True): frames start at 0, zeros at the end
            padded, power = F.pad(windows, (0, STFT_PAD)), 1.0
        else:  # kapre 0.1.4: a strided conv with Keras "same" padding, split evenly here
            padded, power = F.pad(windows, (STFT_PAD // 2, STFT_PAD - STFT_PAD // 2)), 2.0
        stft = torch.stft(padded, N_FFT, STFT_HOP, window=self.window, center=False, return_complex=True)
        mel = torch.matmul(self.mel_bank, stft.abs().pow(power))  # [N, 128, 199]
        if power == 2.0:
            mel = mel.sqrt()  # kapre 0.1.4's power_melgram=1.0
        decibel = 10.0 * torch.log10(mel.clamp(min=DB_AMIN))
        decibel = decibel - decibel.amax(dim=(1, 2), keepdim=True)  # kapre 0.1.4's per-example reference
        return decibel.clamp(min=-DB_RANGE).unsqueeze(1)

    def forward_spectrogram(self, spec: Tensor) -> Tensor:
        """[N, 1, 128, 199] -> embeddings [N, embedding_dim]."""
        x = self.input_norm(spec)
        for index, block in enumerate(self.blocks):
            x = block(x)
            if index in (1, 3, 5):  # end of blocks 1-3: MaxPooling2D(2, strides=2), "valid"
                x = F.max_pool2d(x, 2)
        x = F.max_pool2d(self.embedding_conv(x), self.pool_size)  # the 16 x 24 map divides evenly
        return x.permute(0, 2, 3, 1).flatten(1)  # Keras Flatten on channels-last

    def embed(self, audio: Tensor) -> Tensor:
        """Audio [B, S] float32 mono at 48 kHz in [-1, 1] -> embeddings [B, T, D], T = `num_frames(S)`."""
        if audio.dim() != 2:
            raise ValueError(f"expected 48 kHz audio [batch, samples], got shape {tuple(audio.shape)}")
        frames = frame_audio(audio.float())
        batch, n_frames = frames.shape[:2]
        windows = frames.reshape(batch * n_frames, WINDOW_SAMPLES)
        chunks = [self.forward_spectrogram(self.spectrogram(chunk)) for chunk in windows.split(self.batch_size)]
        return torch.cat(chunks).reshape(batch, n_frames, -1)

    def forward(self, audio: Tensor) -> Tensor:
        return self.embed(audio)

    def logits(self, audio: Tensor) -> None:
        """OpenL3 has no classifier."""
        return None

    def keras_layers(self) -> list[tuple[str, nn.Module]]:
        """The modules that own the Keras file's weighted layers, in the file's order."""
        layers: list[tuple[str, nn.Module]] = [("input_norm", self.input_norm)]
        for index, block in enumerate(self.blocks):
            layers += [(f"blocks.{index}.conv", block.conv), (f"blocks.{index}.norm", block.norm)]
        return layers + [("embedding_conv", self.embedding_conv)]


def _text(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def read_keras_weights(path: str | Path) -> list[tuple[str, dict[str, np.ndarray]]]:
    """(layer name, {weight kind: array}) for each layer with weights, in the file's `layer_names` order.

    Reads a Keras `save_weights` HDF5 file, or one gzipped as openl3 publishes it. Weight kinds are the names
    without layer prefix and `:0` ("kernel", "gamma", ...). kapre Melspectrogram groups are skipped.
    """
    import h5py

    path = Path(path)
    data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else None
    layers = []
    with h5py.File(io.BytesIO(data) if data is not None else path, "r") as root:
        if "layer_names" not in root.attrs and "model_weights" in root:
            root = root["model_weights"]  # a whole-model save keeps the weights one group down
        if "layer_names" not in root.attrs:
            raise ValueError(f"{path}: not a Keras weight file (no 'layer_names' attribute at its root)")
        for name in map(_text, root.attrs["layer_names"]):
            weight_names = [_text(w) for w in root[name].attrs.get("weight_names", [])]
            if not weight_names or "spectrogram" in name:
                continue
            weights = {w.split("/")[-1].split(":")[0]: np.asarray(root[name][w]) for w in weight_names}
            layers.append((name, weights))
    return layers


def _to_torch(path: Path, name: str, weights: dict[str, np.ndarray], module: nn.Module, key: str) -> dict:
    """One Keras layer's weights as the torch module's state entries, with errors that name the layer."""
    conv = isinstance(module, nn.Conv2d)
    expected = _CONV_WEIGHTS if conv else _NORM_WEIGHTS
    if set(weights) != expected:
        raise ValueError(f"{path}: layer {name!r} has weights {sorted(weights)}, but the OpenL3 layer here "
                         f"({key}) is a {'Conv2D' if conv else 'BatchNormalization'} with {sorted(expected)}")
    if conv:  # Keras kernels are (h, w, in, out)
        state = {"weight": np.transpose(weights["kernel"], (3, 2, 0, 1)), "bias": weights["bias"]}
    else:
        state = {"weight": weights["gamma"], "bias": weights["beta"],
                 "running_mean": weights["moving_mean"], "running_var": weights["moving_variance"]}
    found = {}
    for param, value in state.items():
        target = getattr(module, param)
        if tuple(value.shape) != tuple(target.shape):
            raise ValueError(f"{path}: layer {name!r} gives {key}.{param} of shape {tuple(value.shape)}, "
                             f"expected {tuple(target.shape)}")
        found[f"{key}.{param}"] = torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32))
    return found


def load_openl3(path: str | Path, frontend: str = "kapre-0.3", embedding_size: int = 512,
                channels: tuple[int, int, int, int] = CHANNELS) -> OpenL3Mel128:
    """OpenL3 mel128 in eval mode, frozen, from the official Keras weight file (`.h5`, or the `.h5.gz`)."""
    path = Path(path)
    if not path.is_file():
        urls = "\n  ".join(f"{name}: {url}" for name, url in OFFICIAL_URLS.items())
        raise FileNotFoundError(f"{path}: no OpenL3 weight file there. The official mel128/music weights are "
                                f"(gunzip to {WEIGHT_FILE}, or pass the .gz as it is):\n  {urls}")
    net = OpenL3Mel128(frontend, embedding_size, channels)
    layers, targets = read_keras_weights(path), net.keras_layers()
    if len(layers) != len(targets):
        raise ValueError(f"{path}: expected {len(targets)} Keras layers with weights (8 BatchNormalization, "
                         f"8 Conv2D), found {len(layers)}: {few([name for name, _ in layers])}")
    state = {key: value for key, value in net.state_dict().items() if key.endswith("num_batches_tracked")}
    for (name, weights), (key, module) in zip(layers, targets, strict=True):
        state.update(_to_torch(path, name, weights, module, key))
    net.load_state_dict(state, strict=True)
    net.requires_grad_(False)
    return net.eval()
