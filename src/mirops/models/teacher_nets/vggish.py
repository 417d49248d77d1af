"""VGGish (Hershey et al., ICASSP 2017), the AudioSet VGG the EAsT reference uses as a teacher.

Official source read for this port: torch.hub `harritaylor/torchvggish` (github.com/harritaylor/torchvggish):
`hubconf.py` (commit e392ec4), `torchvggish/vggish.py` (commit 4670116: `VGG`, `make_layers`, `Postprocessor`,
`VGGish`), `torchvggish/vggish_input.py` (commit 890ebb9), and `mel_features.py` / `vggish_params.py` as shipped in
PyPI `torchvggish` 0.2 (Google's audioset/vggish files, unchanged). The weights are a port of Google's TF VGGish.

Checkpoints (release v0.1 of harritaylor/torchvggish, see `OFFICIAL_URLS`), both read with `torch.load`:
* `vggish-10086976.pth` (≈ 289 MB): the bare `VGG` state dict, 18 tensors, 72 141 184 parameters,
  `features.{0,3,6,8,11,13}.*` (3x3 convs) and `embeddings.{0,2,4}.*` (Linear 12288 -> 4096 -> 4096 -> 128).
  `VGGish.state_dict()` here has exactly those keys and shapes.
* `vggish_pca_params-970ea276.pth`: a dict of two numpy float64 arrays, `pca_eigen_vectors` [128, 128] and
  `pca_means` [128] (Google's `vggish_pca_params.npz`, pickled with numpy 1, hence `numpy.core` names).

Network: conv 64, pool, conv 128, pool, conv 256 x 2, pool, conv 512 x 2, pool (3x3 pad 1 + ReLU, 2x2 max pools)
on one example [1, 96 frames, 64 bands] -> [512, 6, 4], flattened channels-last as TF did, then three Linear +
ReLU layers (a ReLU after the last one too, as the official port has it). There is no classifier.

Front end (`vggish_input.waveform_to_examples`), 16 kHz: frames of 400 samples every 160 (no centring, no
padding), periodic Hann, 512-point rFFT magnitude, a 64-band mel matrix from 125 to 7500 Hz whose triangles are
linear in HTK mel (not Hz) with the DC bin zeroed, log(mel + 0.01), then non-overlapping examples of 96 frames;
an incomplete last example is dropped. A clip of S samples gives frames = 1 + (S - 400) // 160 and
T = frames // 96 examples (10 s -> 10, 29.1 s -> 30); example t covers [0.96 t, 0.96 t + 0.975] s. The numpy
reference computes in float64 and casts the examples to float32; this port does the same, batched in torch.

Post-processing (`postprocess=True`, what the reference stores): PCA (float32) `W @ (e - mean)`, clip to
[-2, 2], `round((x + 2) * 255 / 4)`, i.e. integers 0..255 returned as float32. mirops normalises them later as
(x - 128) / 256 (docs/methods.md §3.4); `embed` does not.

Choices: resampling to 16 kHz (the reference uses resampy) and mixing to mono are the caller's job. The
YAMNet front end in `mirops.features.logmel` is not reused: its torchaudio mel bank interpolates in Hz (up to
0.0044 apart from this one), its log offset is 1e-6 and its patches overlap and pad. Clips shorter than one
example (15 600 samples) are refused, where the reference would return an empty array.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from mirops.models.teacher_nets.checkpoint_files import load_strict, read_torch, require_file

NETWORK_FILE = "vggish-10086976.pth"
PCA_FILE = "vggish_pca_params-970ea276.pth"
_RELEASE = "https://github.com/harritaylor/torchvggish/releases/download/v0.1/"
OFFICIAL_URLS = {NETWORK_FILE: _RELEASE + NETWORK_FILE, PCA_FILE: _RELEASE + PCA_FILE}

# vggish_params.py
SAMPLE_RATE = 16000
WINDOW_SAMPLES = 400  # round(16000 * 0.025)
HOP_SAMPLES = 160  # round(16000 * 0.010)
FFT_SIZE = 512  # 2 ** ceil(log2(400))
NUM_BANDS = 64
MEL_MIN_HZ, MEL_MAX_HZ = 125.0, 7500.0
LOG_OFFSET = 0.01
EXAMPLE_FRAMES = 96  # 0.96 s of 10 ms frames, also the hop between examples
EMBEDDING_SIZE = 128
QUANTIZE_MIN_VAL, QUANTIZE_MAX_VAL = -2.0, 2.0
PCA_EIGEN_VECTORS_NAME, PCA_MEANS_NAME = "pca_eigen_vectors", "pca_means"

CONV_CHANNELS = (64, 128, 256, 256, 512, 512)
POOL_AFTER = (0, 1, 3, 5)  # indices in CONV_CHANNELS followed by a 2x2 max pool: make_layers' "M"s
HIDDEN_SIZE = 4096
_POOLED_FRAMES, _POOLED_BANDS = EXAMPLE_FRAMES // 16, NUM_BANDS // 16  # 6 x 4 after four pools


def num_examples(num_samples: int) -> int:
    """Examples the reference makes of `num_samples` at 16 kHz (mel_features.frame drops the remainder)."""
    frames = 1 + (num_samples - WINDOW_SAMPLES) // HOP_SAMPLES if num_samples >= WINDOW_SAMPLES else 0
    return frames // EXAMPLE_FRAMES


MIN_SAMPLES = WINDOW_SAMPLES + (EXAMPLE_FRAMES - 1) * HOP_SAMPLES  # 15 600: one whole example


def hertz_to_mel(hertz: Tensor) -> Tensor:
    return 1127.0 * torch.log1p(hertz / 700.0)  # HTK, as mel_features.hertz_to_mel (log(1 + f / 700))


def mel_weight_matrix(num_bands: int = NUM_BANDS, num_bins: int = FFT_SIZE // 2 + 1,
                      sample_rate: int = SAMPLE_RATE, low_hz: float = MEL_MIN_HZ,
                      high_hz: float = MEL_MAX_HZ) -> Tensor:
    """mel_features.spectrogram_to_mel_matrix in float64: [num_bins, num_bands], triangles linear in mel."""
    bins_mel = hertz_to_mel(torch.linspace(0.0, sample_rate / 2, num_bins, dtype=torch.float64))
    edges = torch.linspace(math.log1p(low_hz / 700.0), math.log1p(high_hz / 700.0), num_bands + 2,
                           dtype=torch.float64) * 1127.0
    lower, center, upper = edges[:-2], edges[1:-1], edges[2:]
    rising = (bins_mel[:, None] - lower) / (center - lower)
    falling = (upper - bins_mel[:, None]) / (upper - center)
    weights = torch.minimum(rising, falling).clamp(min=0.0)
    weights[0] = 0.0  # HTK leaves out the DC bin
    return weights


class VGGishLogMel(nn.Module):
    """Waveform [B, samples] at 16 kHz -> log-mel [B, frames, 64] float32, as mel_features.log_mel_spectrogram."""

    def __init__(self) -> None:
        super().__init__()
        periodic_hann = 0.5 - 0.5 * torch.cos(2 * math.pi / WINDOW_SAMPLES * torch.arange(WINDOW_SAMPLES,
                                                                                          dtype=torch.float64))
        self.register_buffer("window", periodic_hann, persistent=False)
        self.register_buffer("mel_matrix", mel_weight_matrix(), persistent=False)

    def forward(self, audio: Tensor) -> Tensor:
        if audio.dim() != 2:
            raise ValueError(f"expected 16 kHz mono audio [batch, samples], got shape {tuple(audio.shape)}")
        if audio.shape[-1] < WINDOW_SAMPLES:
            raise ValueError(f"{audio.shape[-1]} samples is shorter than one 25 ms STFT window ({WINDOW_SAMPLES})")
        # float64 like the numpy reference; buffers are cast too in case the module was moved to another dtype.
        frames = audio.to(torch.float64).unfold(-1, WINDOW_SAMPLES, HOP_SAMPLES)  # [B, frames, 400]
        windowed = frames * self.window.to(torch.float64)
        magnitude = torch.fft.rfft(windowed, n=FFT_SIZE).abs()  # zero-padded to 512 at the end, as np.fft.rfft
        mel = magnitude @ self.mel_matrix.to(torch.float64)
        return torch.log(mel + LOG_OFFSET).to(torch.float32)


def frame_examples(logmel: Tensor) -> Tensor:
    """Log-mel [B, frames, 64] -> non-overlapping examples [B, frames // 96, 96, 64] (remainder dropped)."""
    count = logmel.shape[1] // EXAMPLE_FRAMES
    return logmel[:, : count * EXAMPLE_FRAMES].reshape(logmel.shape[0], count, EXAMPLE_FRAMES, logmel.shape[2])


class VGGishPostprocessor(nn.Module):
    """PCA (with whitening), clipping and 8-bit quantisation of the official `Postprocessor`.

    The parameters are buffers outside `state_dict()` (they come from their own file, see `load_pca`).
    """

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("pca_eigen_vectors", torch.zeros(EMBEDDING_SIZE, EMBEDDING_SIZE), persistent=False)
        self.register_buffer("pca_means", torch.zeros(EMBEDDING_SIZE, 1), persistent=False)
        self.loaded = False

    @torch.no_grad()
    def load_pca(self, params: Mapping, source: str | Path = "PCA parameters") -> None:
        """Set the PCA from the official file's dict (numpy arrays or tensors), checking its keys and shapes."""
        expected = {PCA_EIGEN_VECTORS_NAME, PCA_MEANS_NAME}
        if not isinstance(params, Mapping) or set(params) != expected:
            found = sorted(map(str, params)) if isinstance(params, Mapping) else type(params).__name__
            raise ValueError(f"{source}: expected a dict with keys {sorted(expected)}, found {found}")
        vectors = torch.as_tensor(np.asarray(params[PCA_EIGEN_VECTORS_NAME]), dtype=torch.float32)
        means = torch.as_tensor(np.asarray(params[PCA_MEANS_NAME]), dtype=torch.float32)
        if vectors.shape != (EMBEDDING_SIZE, EMBEDDING_SIZE) or means.numel() != EMBEDDING_SIZE:
            raise ValueError(f"{source}: expected {PCA_EIGEN_VECTORS_NAME} [128, 128] and {PCA_MEANS_NAME} [128], "
                             f"got {tuple(vectors.shape)} and {tuple(means.shape)}")
        self.pca_eigen_vectors.copy_(vectors)
        self.pca_means.copy_(means.reshape(-1, 1))
        self.loaded = True

    def forward(self, embeddings: Tensor) -> Tensor:
        if not self.loaded:
            raise RuntimeError("VGGish PCA parameters are not loaded: use load_vggish(network, pca) or load_pca()")
        pca_applied = torch.mm(self.pca_eigen_vectors, embeddings.t() - self.pca_means).t()  # as the official
        clipped = pca_applied.clamp(QUANTIZE_MIN_VAL, QUANTIZE_MAX_VAL)
        return torch.round((clipped - QUANTIZE_MIN_VAL) * (255.0 / (QUANTIZE_MAX_VAL - QUANTIZE_MIN_VAL)))


class VGGish(nn.Module):
    """VGGish: 16 kHz audio [B, samples] -> post-processed embeddings [B, T, 128], one per 0.96 s example.

    `conv_channels` / `hidden_size` only exist to run the same code path small in tests; the defaults are the
    official network, the only size `load_vggish` builds.
    """

    sample_rate = SAMPLE_RATE
    embedding_dim = EMBEDDING_SIZE
    hop_s = EXAMPLE_FRAMES * HOP_SAMPLES / SAMPLE_RATE  # 0.96 s, non-overlapping
    has_classifier = False

    def __init__(self, conv_channels: Sequence[int] = CONV_CHANNELS, hidden_size: int = HIDDEN_SIZE) -> None:
        super().__init__()
        if len(conv_channels) != len(CONV_CHANNELS):
            raise ValueError(f"VGGish has {len(CONV_CHANNELS)} convolutions, got channels {tuple(conv_channels)}")
        layers: list[nn.Module] = []
        in_channels = 1
        for index, channels in enumerate(conv_channels):  # same module indices as the official make_layers
            layers += [nn.Conv2d(in_channels, channels, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
            if index in POOL_AFTER:
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            in_channels = channels
        self.features = nn.Sequential(*layers)
        self.embeddings = nn.Sequential(
            nn.Linear(in_channels * _POOLED_FRAMES * _POOLED_BANDS, hidden_size), nn.ReLU(inplace=True),
            nn.Linear(hidden_size, hidden_size), nn.ReLU(inplace=True),
            nn.Linear(hidden_size, EMBEDDING_SIZE), nn.ReLU(inplace=True),
        )
        self.frontend = VGGishLogMel()
        self.pproc = VGGishPostprocessor()

    def forward_examples(self, examples: Tensor) -> Tensor:
        """Log-mel examples [N, 1, 96, 64] -> raw embeddings [N, 128] (the official `VGG.forward`)."""
        x = self.features(examples)  # [N, 512, 6, 4]
        x = x.permute(0, 2, 3, 1).flatten(1)  # channels last, the order TF's fc1 weights expect
        return self.embeddings(x)

    def examples(self, audio: Tensor) -> Tensor:
        """16 kHz audio [B, samples] (or [samples]) -> log-mel examples [B, T, 96, 64]."""
        if audio.dim() == 1:
            audio = audio.unsqueeze(0)
        if audio.dim() != 2:
            raise ValueError(f"expected 16 kHz mono audio [batch, samples], got shape {tuple(audio.shape)}")
        if audio.shape[-1] < MIN_SAMPLES:
            raise ValueError(f"VGGish needs at least {MIN_SAMPLES} samples ({MIN_SAMPLES / SAMPLE_RATE:.3f} s at "
                             f"16 kHz) for one 0.96 s example, got {audio.shape[-1]}")
        return frame_examples(self.frontend(audio))

    def embed_raw(self, audio: Tensor) -> Tensor:
        """Embeddings before PCA and quantisation [B, T, 128] (the official `postprocess=False`)."""
        examples = self.examples(audio)
        batch, count = examples.shape[:2]
        raw = self.forward_examples(examples.reshape(batch * count, 1, EXAMPLE_FRAMES, NUM_BANDS).float())
        return raw.reshape(batch, count, EMBEDDING_SIZE)

    def embed(self, audio: Tensor) -> Tensor:
        """16 kHz audio [B, samples] in [-1, 1] -> the reference's stored values [B, T, 128]: integers 0..255."""
        raw = self.embed_raw(audio)
        return self.pproc(raw.reshape(-1, EMBEDDING_SIZE)).reshape(raw.shape).float()

    def logits(self, audio: Tensor) -> None:
        return None  # VGGish has no classifier


# --------------------------------------------------------------------------- the official files


def _numpy_safe_globals() -> list:
    """What a pickled float numpy array needs, under numpy 1 names (the official file) and numpy 2 names."""
    reconstruct = np.ndarray.__reduce__(np.zeros(1))[0]  # numpy's _reconstruct, without touching numpy.core
    return [(reconstruct, "numpy.core.multiarray._reconstruct"), (reconstruct, "numpy._core.multiarray._reconstruct"),
            np.ndarray, np.dtype, type(np.dtype(np.float64)), type(np.dtype(np.float32))]


def _read(path: Path, what: str, file_name: str):
    return read_torch(path, f"VGGish {what}", file_name, OFFICIAL_URLS[file_name], _numpy_safe_globals())


def load_vggish(network_path: str | Path, pca_path: str | Path) -> VGGish:
    """The official VGGish from `vggish-10086976.pth` and `vggish_pca_params-970ea276.pth`, frozen, eval mode."""
    network_path, pca_path = Path(network_path), Path(pca_path)
    require_file(network_path, "VGGish network", NETWORK_FILE, OFFICIAL_URLS[NETWORK_FILE])
    pca = _read(pca_path, "PCA parameters", PCA_FILE)  # the small file first: its errors come without a 289 MB read
    net = VGGish()
    net.pproc.load_pca(pca, pca_path)
    return load_strict(net, network_path, _read(network_path, "network", NETWORK_FILE),
                       f"official VGGish network ({NETWORK_FILE})")
