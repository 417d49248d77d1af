"""PANNs CNN14 (Kong et al., IEEE/ACM TASLP 2020), the AudioSet CNN behind the EAsT reference's "PANNs" teacher.

Official source read for this port: PyPI `panns-inference` 0.1.1 (`panns_inference/models.py`, class `Cnn14`;
`panns_inference/inference.py`, `AudioTagging`), which copies `pytorch/models.py::Cnn14` of
github.com/qiuqiangkong/audioset_tagging_cnn (read at commit 16000e4), and its front end from PyPI `torchlibrosa`
0.1.0 (`torchlibrosa/stft.py`: `STFT`, `Spectrogram`, `LogmelFilterBank`).

Checkpoint: `Cnn14_mAP=0.431.pth` (Zenodo record 3987831, see `OFFICIAL_URLS`), a torch file holding a dict
{"iteration": ..., "model": state_dict}; the official code does `model.load_state_dict(checkpoint["model"])`
(strict). The state dict has 84 entries (81 837 071 parameters, front end included): the front end's fixed
matrices are in it (`spectrogram_extractor.stft.conv_real.weight` / `conv_imag.weight` [513, 1, 1024], the
windowed DFT as Conv1d kernels, and `logmel_extractor.melW` [513, 64]), then `bn0`, `conv_block1..6`, `fc1` and
`fc_audioset`. `Cnn14.state_dict()` here has exactly those keys and shapes, and the forward computes with the
loaded front-end matrices as the official does.

Front end (32 kHz, settings of `AudioTagging`): centred STFT (reflect padding of 512 samples), 1024-point periodic
Hann window, hop 320, as a Conv1d with the DFT kernels; power |X|^2; Slaney mel bank (librosa `filters.mel`
defaults: 64 bins, 50 - 14 000 Hz, Slaney norm); 10 log10(max(mel, 1e-10)) (ref 1, no top_db). A clip of S
samples gives 1 + S // 320 frames (10 s -> 1001). `bn0` normalises each mel bin with the checkpoint's running
statistics. None of mirops' other front ends computes this (they use Kaldi or HTK banks and natural logs), so
it is written here; the default matrices are built with torch (torchaudio's Slaney bank equals librosa's to
3e-8), so no librosa is needed.

Network (eval mode: dropout, SpecAugment and mixup are training-only and not ported): six ConvBlocks (two 3x3
convs without bias, each BatchNorm + ReLU) of 64, 128, 256, 512, 1024, 2048 channels, 2x2 average pooling after
the first five; mean over mel, then max + mean over time; `embedding` = ReLU(fc1(.)) (2048-d) and the clip
output = fc_audioset(embedding). BatchNorm follows the module's mode as in the official; `load_panns` returns
the net in eval mode.

Reference extraction (docs/methods.md §3.4, U6): the EAsT repository has no PANNs script; its 2048-d, one-vector
teacher is most likely `AudioTagging.inference(audio)[1]`, the `embedding` of the whole clip in one pass. So
`embed` returns that as a length-1 sequence [B, 1, 2048] (hop_s None) for a clip of any length, 10 s or 29.1 s
alike. No normalisation is applied to the stored values (§3.4).

Choices: the audio must be 32 kHz, the checkpoint's rate; resampling other audio (MTAT is stored at 16 kHz) is
the caller's job, and which rate the reference fed is not known (U6). The official clip output is
sigmoid(fc_audioset(.)); `logits` returns the pre-sigmoid values. The loader also accepts a bare state dict (what
`checkpoint["model"]` holds), for files re-saved without the wrapper.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
import torchaudio
from torch import Tensor, nn

from mirops.models.teacher_nets.checkpoint_files import few, load_strict, read_torch

CHECKPOINT_NAME = "Cnn14_mAP=0.431.pth"
OFFICIAL_URLS = {CHECKPOINT_NAME: "https://zenodo.org/record/3987831/files/Cnn14_mAP%3D0.431.pth?download=1"}

SAMPLE_RATE = 32000
WINDOW_SIZE = 1024  # n_fft = win_length
HOP_SIZE = 320
MEL_BINS = 64
F_MIN, F_MAX = 50.0, 14000.0
AMIN = 1e-10  # power_to_db floor; ref = 1, top_db = None
NUM_CLASSES = 527
WIDTHS = (64, 128, 256, 512, 1024, 2048)  # conv_block1..6 output channels
EMBEDDING_DIM = 2048
TIME_REDUCTION = 32  # five 2x2 average pools
MIN_FRAMES = TIME_REDUCTION  # fewer frames pool to nothing: the official forward fails on such clips


class STFT(nn.Module):
    """torchlibrosa's `STFT`: the windowed DFT as two Conv1d (real, imaginary), centred with reflect padding."""

    def __init__(self, n_fft: int = WINDOW_SIZE, hop_length: int = HOP_SIZE) -> None:
        super().__init__()
        self.n_fft, self.hop_length = n_fft, hop_length
        bins = n_fft // 2 + 1
        self.conv_real = nn.Conv1d(1, bins, n_fft, stride=hop_length, bias=False)
        self.conv_imag = nn.Conv1d(1, bins, n_fft, stride=hop_length, bias=False)
        with torch.no_grad(), torch.device("cpu"):  # on the CPU even when built on `meta`
            # W[n, k] = exp(-2 pi i n k / N) times a periodic Hann window; n k is reduced mod N first so the
            # angles stay exact in float64.
            window = torch.hann_window(n_fft, periodic=True, dtype=torch.float64)
            n, k = torch.arange(n_fft), torch.arange(bins)
            angle = 2 * math.pi * ((k[:, None] * n[None, :]) % n_fft).double() / n_fft  # [bins, n_fft]
            self.conv_real.weight.copy_((torch.cos(angle) * window)[:, None, :])
            self.conv_imag.weight.copy_((-torch.sin(angle) * window)[:, None, :])
        self.requires_grad_(False)  # freeze_parameters=True in the official

    def forward(self, audio: Tensor) -> tuple[Tensor, Tensor]:
        """[B, samples] -> real, imaginary parts [B, bins, frames]."""
        x = F.pad(audio[:, None, :], (self.n_fft // 2, self.n_fft // 2), mode="reflect")
        return self.conv_real(x), self.conv_imag(x)


class Spectrogram(nn.Module):
    """Power spectrogram [B, frames, bins]; a module only so that the keys read `spectrogram_extractor.stft.*`."""

    def __init__(self) -> None:
        super().__init__()
        self.stft = STFT()

    def forward(self, audio: Tensor) -> Tensor:
        real, imag = self.stft(audio)
        return (real**2 + imag**2).transpose(1, 2)


class LogmelFilterBank(nn.Module):
    """torchlibrosa's `LogmelFilterBank`: power spectrogram @ melW, then 10 log10(max(x, 1e-10))."""

    def __init__(self) -> None:
        super().__init__()
        self.melW = nn.Parameter(torch.empty(WINDOW_SIZE // 2 + 1, MEL_BINS), requires_grad=False)  # librosa's .T
        with torch.no_grad(), torch.device("cpu"):  # the bank's masked indexing has no `meta` kernel
            self.melW.copy_(torchaudio.functional.melscale_fbanks(
                WINDOW_SIZE // 2 + 1, F_MIN, F_MAX, MEL_BINS, SAMPLE_RATE, norm="slaney", mel_scale="slaney"))

    def forward(self, power: Tensor) -> Tensor:
        return 10.0 * torch.log10(torch.clamp(power @ self.melW, min=AMIN))


class ConvBlock(nn.Module):
    """Two (3x3 conv without bias, BatchNorm, ReLU), then average pooling (1x1 = none, for the last block)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.bn2 = nn.BatchNorm2d(out_channels)
        nn.init.xavier_uniform_(self.conv1.weight)  # the official init; a checkpoint overwrites it
        nn.init.xavier_uniform_(self.conv2.weight)

    def forward(self, x: Tensor, pool: int) -> Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return F.avg_pool2d(x, pool) if pool > 1 else x


class Cnn14(nn.Module):
    """CNN14 with its front end: 32 kHz audio -> clip embedding [B, 1, 2048] (`embed`) or logits [B, 527].

    Built at the checkpoint's size by default; `widths` (the six blocks' channels) only shrink for tests, the
    embedding stays 2048-d. The parameter names are the official ones, so `load_state_dict(checkpoint["model"],
    strict=True)` works.
    """

    sample_rate = SAMPLE_RATE
    hop_s = None  # one clip-level vector
    has_classifier = True

    def __init__(self, widths: Sequence[int] = WIDTHS, embedding_dim: int = EMBEDDING_DIM,
                 num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        if len(widths) != len(WIDTHS):
            raise ValueError(f"CNN14 has {len(WIDTHS)} conv blocks, got widths {tuple(widths)}")
        self.embedding_dim, self.num_classes = embedding_dim, num_classes
        self.spectrogram_extractor = Spectrogram()
        self.logmel_extractor = LogmelFilterBank()
        self.bn0 = nn.BatchNorm2d(MEL_BINS)  # per mel bin
        channels = (1, *widths)
        for index in range(len(widths)):
            self.add_module(f"conv_block{index + 1}", ConvBlock(channels[index], channels[index + 1]))
        self.fc1 = nn.Linear(widths[-1], embedding_dim)
        self.fc_audioset = nn.Linear(embedding_dim, num_classes)
        for layer in (self.fc1, self.fc_audioset):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)

    def blocks(self) -> list[ConvBlock]:
        return [getattr(self, f"conv_block{index + 1}") for index in range(len(WIDTHS))]

    def logmel(self, audio: Tensor) -> Tensor:
        """Audio [B, samples] -> log-mel in dB [B, 1 + samples // 320, 64], before `bn0`."""
        return self.logmel_extractor(self.spectrogram_extractor(audio))

    def forward(self, audio: Tensor) -> tuple[Tensor, Tensor]:
        """Audio [B, samples] at 32 kHz -> (pre-sigmoid clip logits [B, 527], embedding [B, 2048])."""
        audio = self._check_audio(audio)
        x = self.logmel(audio)[:, None]  # [B, 1, frames, mels]
        x = self.bn0(x.transpose(1, 3)).transpose(1, 3)  # BatchNorm2d over the mel axis as channels
        blocks = self.blocks()
        for block in blocks[:-1]:
            x = block(x, pool=2)
        x = blocks[-1](x, pool=1).mean(dim=3)  # [B, C, frames / 32]: mean over mel
        x = x.max(dim=2).values + x.mean(dim=2)  # max + mean over time
        embedding = F.relu(self.fc1(x))
        return self.fc_audioset(embedding), embedding

    def _check_audio(self, audio: Tensor) -> Tensor:
        if audio.dim() == 1:
            audio = audio.unsqueeze(0)
        if audio.dim() != 2:
            raise ValueError(f"expected {SAMPLE_RATE} Hz mono audio [batch, samples], got {tuple(audio.shape)}")
        frames = 1 + audio.shape[-1] // HOP_SIZE
        if audio.shape[-1] <= WINDOW_SIZE // 2 or frames < MIN_FRAMES:
            needed = (MIN_FRAMES - 1) * HOP_SIZE
            raise ValueError(f"CNN14 pools time by {TIME_REDUCTION}: a clip needs at least {needed} samples "
                             f"({needed / SAMPLE_RATE:.2f} s at {SAMPLE_RATE} Hz), got {audio.shape[-1]}")
        return audio.to(self.fc1.weight.dtype)

    def embed(self, audio: Tensor) -> Tensor:
        """Audio [B, samples] at 32 kHz in [-1, 1] -> the official `embedding` of the whole clip, [B, 1, 2048]."""
        return self(audio)[1].unsqueeze(1)

    def logits(self, audio: Tensor) -> Tensor:
        """Audio [B, samples] at 32 kHz -> AudioSet clip logits [B, 527], pre-sigmoid (the official returns
        sigmoid of these as `clipwise_output`)."""
        return self(audio)[0]


def _unwrap(path: Path, checkpoint: object) -> Mapping:
    """The state dict inside the official {"iteration", "model"} dict (or a bare state dict)."""
    if not isinstance(checkpoint, Mapping):
        raise ValueError(f"{path}: expected the {CHECKPOINT_NAME} dict {{'model': state_dict, ...}}, "
                         f"got {type(checkpoint).__name__}")
    if "model" in checkpoint:
        return checkpoint["model"]
    if "fc1.weight" in checkpoint:
        return checkpoint
    raise ValueError(f"{path}: no 'model' entry (the official file holds {{'model': state_dict, ...}}); "
                     f"found keys: {few([str(key) for key in checkpoint])}")


def load_panns(path: str | Path, widths: Sequence[int] = WIDTHS) -> Cnn14:
    """Read the official `Cnn14_mAP=0.431.pth` into a frozen `Cnn14` (eval mode, requires_grad False).

    Keys and shapes are checked strictly; `widths` is the official one for the real file (smaller only for tests).
    """
    path = Path(path)
    url = OFFICIAL_URLS[CHECKPOINT_NAME]
    state = _unwrap(path, read_torch(path, "PANNs CNN14 checkpoint", CHECKPOINT_NAME, url))
    return load_strict(Cnn14(widths=widths), path, state, f"CNN14 ({CHECKPOINT_NAME}, widths {tuple(widths)})",
                       {"module.": "a DataParallel state dict: save `model.module.state_dict()` instead"})
