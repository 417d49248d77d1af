"""EAsT students (Ding & Lerch, ISMIR 2023): Mobile FCN for MagnaTagATune, CP-ResNet for OpenMIC.

Each student holds its own log-mel front end (`EastLogMel`, the reference's PaSST-style featuriser) and maps
log-mel frames [B, T, F] to class logits, plus the last stage's feature map averaged over frequency,
[B, T', C], which the EAsT regulariser ties to a teacher's embeddings (`mirops.train.east_losses`). Every
number here is from docs/methods.md §3.3 (architectures) and §3.8 (front end); the shapes quoted are for the
reference's clip lengths (29.1 s MTAT, 10 s OpenMIC).

| student    | sample rate | mels | feature hop | parameters (classes)         |
|------------|-------------|------|-------------|------------------------------|
| mobile_fcn | 16 kHz      | 96   | 1.92 s      | 314 098 (50)                 |
| cp_resnet  | 32 kHz      | 128  | 0.16 s      | 5 534 612 (20, rho 7, 128 ch) |
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
import torchaudio
from torch import Tensor, nn

STUDENTS = ("mobile_fcn", "cp_resnet")

# Front end (docs/methods.md §3.8): pre-emphasis, STFT 1024 / hop 320 / symmetric Hann 800, power, Kaldi mel bank,
# log(x + 1e-5), then (x + 3.7) / 3.1.
N_FFT = 1024
HOP_SAMPLES = 320
WINDOW_SAMPLES = 800
PRE_EMPHASIS = 0.97
LOG_OFFSET = 1e-5
NORM_MEAN = -3.7
NORM_STD = 3.1


class EastLogMel(nn.Module):
    """Waveform [B, samples] at `sample_rate` -> normalised log-mel [B, frames, n_mels].

    Frames are centred (reflect padding), so a clip of S samples gives 1 + (S - 1) // 320 frames (pre-emphasis
    eats one sample): 29.1 s at 16 kHz -> 1455, 10 s at 32 kHz -> 1000. In training mode, each clip's mel
    band edges are jittered as the reference does for OpenMIC (fmin + U{0..fmin_jitter-1} Hz,
    fmax - U{0..fmax_jitter-1} Hz); in eval mode the bank is fixed. SpecAugment and mixup are left to the
    training loop.
    """

    def __init__(self, sample_rate: int, n_mels: int, f_min: float = 0.0, f_max: float | None = None,
                 fmin_jitter: int = 0, fmax_jitter: int = 0) -> None:
        super().__init__()
        self.sample_rate, self.n_mels = sample_rate, n_mels
        self.f_min, self.f_max = f_min, f_max if f_max is not None else sample_rate / 2
        self.fmin_jitter, self.fmax_jitter = fmin_jitter, fmax_jitter
        self.spectrogram = torchaudio.transforms.Spectrogram(
            n_fft=N_FFT, win_length=WINDOW_SAMPLES, hop_length=HOP_SAMPLES,
            window_fn=torch.hann_window, wkwargs={"periodic": False},  # the reference's window is symmetric
            power=2.0, center=True, pad_mode="reflect",
        )
        self.register_buffer("mel_bank", self._mel_bank(self.f_min, self.f_max), persistent=False)

    def _mel_bank(self, f_min: float, f_max: float) -> Tensor:
        """Kaldi's triangular filters (triangles in mel space, unlike torchaudio's MelScale) [n_mels, 513]."""
        bank, _ = torchaudio.compliance.kaldi.get_mel_banks(
            self.n_mels, N_FFT, float(self.sample_rate), float(f_min), float(f_max),
            vtln_low=100.0, vtln_high=-500.0, vtln_warp_factor=1.0,  # no warping (the reference's arguments)
        )
        return F.pad(bank, (0, 1))  # Kaldi leaves out the Nyquist bin; the STFT has it

    def config(self) -> dict:
        """Everything the eval-mode output depends on: the cache key of precomputed frames."""
        return {"frontend": "east_logmel", "sample_rate": self.sample_rate, "n_fft": N_FFT, "hop": HOP_SAMPLES,
                "window": WINDOW_SAMPLES, "n_mels": self.n_mels, "f_min": self.f_min, "f_max": self.f_max,
                "pre_emphasis": PRE_EMPHASIS, "log_offset": LOG_OFFSET, "mean": NORM_MEAN, "std": NORM_STD}

    def _banks(self, batch: int) -> Tensor:
        """One mel bank per clip: jittered band edges in training mode, the fixed bank otherwise."""
        if not (self.training and (self.fmin_jitter or self.fmax_jitter)):
            return self.mel_bank.expand(batch, -1, -1)
        banks = []
        for _ in range(batch):
            f_min = self.f_min + (int(torch.randint(self.fmin_jitter, ())) if self.fmin_jitter else 0)
            f_max = self.f_max - (int(torch.randint(self.fmax_jitter, ())) if self.fmax_jitter else 0)
            banks.append(self._mel_bank(f_min, f_max))
        return torch.stack(banks).to(self.mel_bank.device)

    def forward(self, wave: Tensor) -> Tensor:
        if wave.dim() == 1:
            wave = wave.unsqueeze(0)
        if wave.dim() != 2:
            raise ValueError(f"expected a waveform [batch, samples], got shape {tuple(wave.shape)}")
        if wave.shape[-1] <= N_FFT // 2 + 1:
            raise ValueError(f"a clip needs more than {N_FFT // 2 + 1} samples (reflect padding of the first "
                             f"frame), got {wave.shape[-1]}")
        emphasised = wave[:, 1:] - PRE_EMPHASIS * wave[:, :-1]
        power = self.spectrogram(emphasised)  # [B, 513, frames]
        mel = torch.matmul(self._banks(wave.shape[0]).to(power.dtype), power)
        return ((torch.log(mel + LOG_OFFSET) - NORM_MEAN) / NORM_STD).transpose(1, 2)


class Student(nn.Module):
    """A student: waveform -> log-mel -> (logits, last-stage features over time).

    Subclasses set `frontend`, `feature_hop_s` (seconds between feature steps), `min_frames` (the shortest
    log-mel input that leaves one feature step) and implement `_stages` (spec [B, 1, F, T] -> the last
    stage's map [B, C, F', T']) and `head`.
    """

    frontend: EastLogMel
    feature_hop_s: float
    min_frames: int
    head: nn.Module

    @property
    def sample_rate(self) -> int:
        return self.frontend.sample_rate

    def spectrogram(self, wave: Tensor) -> Tensor:
        return self.frontend(wave)

    def _stages(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def _pool_for_head(self, last: Tensor) -> Tensor:
        return last.mean(dim=(2, 3))

    def forward_features(self, spec: Tensor) -> tuple[Tensor, Tensor]:
        """Log-mel [B, T, F] -> (logits [B, classes], last-stage features [B, T', C] averaged over frequency)."""
        if spec.dim() != 3 or spec.shape[-1] != self.frontend.n_mels:
            raise ValueError(f"expected log-mel [batch, frames, {self.frontend.n_mels}], got {tuple(spec.shape)}")
        if spec.shape[1] < self.min_frames:
            raise ValueError(f"{type(self).__name__} needs at least {self.min_frames} frames "
                             f"({self.min_frames * HOP_SAMPLES / self.sample_rate:.2f} s), got {spec.shape[1]}")
        last = self._stages(spec.transpose(1, 2).unsqueeze(1))  # the networks work on [B, 1, mels, frames]
        features = last.mean(dim=2).transpose(1, 2)
        return self.head(self._pool_for_head(last)), features

    def forward_spectrogram(self, spec: Tensor) -> Tensor:
        return self.forward_features(spec)[0]

    def forward(self, wave: Tensor) -> Tensor:
        return self.forward_spectrogram(self.spectrogram(wave))


# --------------------------------------------------------------------------- Mobile FCN (MTAT)


class ConvBlock(nn.Sequential):
    """3x3 conv (no bias) + BN + ReLU, then max-pool (freq, time)."""

    def __init__(self, in_channels: int, out_channels: int, pool: tuple[int, int] | int):
        super().__init__(nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
                         nn.BatchNorm2d(out_channels), nn.ReLU(), nn.MaxPool2d(pool))


class SeparableConvBlock(nn.Sequential):
    """Depthwise 3x3 + BN + ReLU, pointwise 1x1 + BN + ReLU (no biases), then max-pool (freq, time)."""

    def __init__(self, in_channels: int, out_channels: int, pool: tuple[int, int] | int = 1):
        super().__init__(
            nn.Conv2d(in_channels, in_channels, 3, padding=1, groups=in_channels, bias=False),
            nn.BatchNorm2d(in_channels), nn.ReLU(),
            nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels), nn.ReLU(),
            nn.MaxPool2d(pool),
        )


class MobileFCN(Student):
    """Choi et al.'s FCN with depthwise-separable blocks 3-8 (docs/methods.md §3.3; 314 098 parameters for 50 tags).

    Pools shrink (freq, time) by (96 or 128, 96): 1455 frames -> 15 feature steps of 96 x 20 ms = 1.92 s.
    Dropout 0.5 follows stages 1 and 2 and precedes the head; the features handed to the regulariser are the
    last stage's, before that dropout.
    """

    min_frames = 96  # the product of the time pools

    def __init__(self, num_classes: int = 50, n_mels: int = 96, dropout: float = 0.5) -> None:
        super().__init__()
        if n_mels not in (96, 128):
            raise ValueError(f"Mobile FCN's frequency pools fit 96 or 128 mel bins, got n_mels={n_mels}")
        self.frontend = EastLogMel(16000, n_mels, f_min=0.0, f_max=8000.0)
        self.feature_hop_s = self.min_frames * HOP_SAMPLES / 16000
        self.stage1 = nn.Sequential(
            ConvBlock(1, 64, (2, 4)), ConvBlock(64, 128, (2, 3)),
            SeparableConvBlock(128, 128, (2, 2)), SeparableConvBlock(128, 128, (3 if n_mels == 96 else 4, 2)),
        )
        self.stage2 = nn.Sequential(SeparableConvBlock(128, 128, (4, 2)), SeparableConvBlock(128, 256))
        self.stage3 = nn.Sequential(SeparableConvBlock(256, 256), SeparableConvBlock(256, 256))
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(256, num_classes)

    def _stages(self, x: Tensor) -> Tensor:
        x = self.dropout(self.stage1(x))
        x = self.dropout(self.stage2(x))
        return self.stage3(x)

    def _pool_for_head(self, last: Tensor) -> Tensor:
        return self.dropout(last).mean(dim=(2, 3))


# --------------------------------------------------------------------------- CP-ResNet (OpenMIC)

# The smallest rho at which each conv of CP-ResNet gets a 3x3 kernel instead of 1x1, per stage and block
# (0: always 3x3; None: always 1x1). A restatement of the reference's receptive-field rule (Koutini et al.):
# rho 7 gives stage 1 = (3,1) (3,3) (3,3) (3,3), stage 2 = (3,1) (1,3) (1,3) (1,3), stage 3 all (1,1).
_MIN_RHO_FIRST = ((0, 1, 3, 5), (7, 9, 11, 13), (15, 17, 19, 21))
_MIN_RHO_SECOND = ((None, 2, 4, 6), (None, 2, 4, 6), (16, 18, 20, 22))
_POOL_AFTER_BLOCK = {0: (1, 2, 4), 1: (), 2: ()}  # stage 1 max-pools by 2 after blocks 1, 2 and 4


def cp_resnet_kernels(rho: int) -> list[list[tuple[int, int]]]:
    """(k1, k2) of the four BasicBlocks of each of the three stages for a given rho."""

    def size(min_rho: int | None) -> int:
        return 3 if min_rho is not None and rho >= min_rho else 1

    return [[(size(a), size(b)) for a, b in zip(firsts, seconds, strict=True)]
            for firsts, seconds in zip(_MIN_RHO_FIRST, _MIN_RHO_SECOND, strict=True)]


class BasicBlock(nn.Module):
    """conv(k1)-BN-ReLU-conv(k2)-BN plus a shortcut (1x1 conv + BN when channels change), ReLU after the sum.

    Padding k // 3 (1 for 3x3, 0 for 1x1) keeps the map's size: only the max-pools shrink it.
    """

    def __init__(self, in_channels: int, out_channels: int, k1: int, k2: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, k1, padding=k1 // 3, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, k2, padding=k2 // 3, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = nn.Sequential()
        if in_channels != out_channels:
            self.shortcut = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, bias=False),
                                          nn.BatchNorm2d(out_channels))

    def forward(self, x: Tensor) -> Tensor:
        y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(y + self.shortcut(x))


class CPResNet(Student):
    """Receptive-field-regularised ResNet (Koutini et al.) as EAsT's OpenMIC student (docs/methods.md §3.3).

    A 5x5 stride-2 input conv, then three stages of four BasicBlocks (base, 2x base, 4x base channels),
    global mean, Linear. rho 7 / 128 base channels / 20 classes: 5 534 612 parameters; rho 3: 3 830 676.
    1000 frames -> 62 feature steps of 16 x 10 ms = 0.16 s. In training mode the front end jitters its mel
    band edges as the reference does on OpenMIC (fmin + U{0..19} Hz, fmax - U{0..1999} Hz, docs/methods.md §3.8).
    """

    min_frames = 15  # stride 2 and three pools of 2: 15 frames -> 8 -> 4 -> 2 -> 1

    def __init__(self, num_classes: int = 20, rho: int = 7, base_channels: int = 128,
                 fmin_jitter: int = 20, fmax_jitter: int = 2000) -> None:
        super().__init__()
        self.rho = rho
        self.frontend = EastLogMel(32000, 128, f_min=0.0, f_max=16000.0,
                                   fmin_jitter=fmin_jitter, fmax_jitter=fmax_jitter)
        self.feature_hop_s = 16 * HOP_SAMPLES / 32000
        self.stem = nn.Sequential(nn.Conv2d(1, base_channels, 5, stride=2, padding=2, bias=False),
                                  nn.BatchNorm2d(base_channels), nn.ReLU())
        widths = [(base_channels, base_channels), (base_channels, 2 * base_channels),
                  (2 * base_channels, 4 * base_channels)]
        self.stages = nn.ModuleList(
            self._stage(c_in, c_out, kernels, _POOL_AFTER_BLOCK[index])
            for index, ((c_in, c_out), kernels) in enumerate(zip(widths, cp_resnet_kernels(rho), strict=True))
        )
        self.head = nn.Linear(4 * base_channels, num_classes)
        self._initialise()

    @staticmethod
    def _stage(in_channels: int, out_channels: int, kernels: list[tuple[int, int]], pools: tuple[int, ...]):
        layers: list[nn.Module] = []
        for block, (k1, k2) in enumerate(kernels, start=1):
            layers.append(BasicBlock(in_channels, out_channels, k1, k2))
            in_channels = out_channels
            if block in pools:
                layers.append(nn.MaxPool2d(2))
        return nn.Sequential(*layers)

    def blocks(self) -> list[BasicBlock]:
        return [module for module in self.modules() if isinstance(module, BasicBlock)]

    @torch.no_grad()
    def _initialise(self) -> None:
        """Kaiming-normal (fan in) convs, BN at 1/0, zero Linear bias; then Fixup in every BasicBlock.

        Fixup scales each block's first conv by (number of blocks)^-0.5 and zeroes its second conv. The
        reference counts blocks with a module-level global that keeps growing across instantiations
        (docs/methods.md §3.12), so its second model in a process starts differently; here it is this model's
        own block count (12), identical for every instance.
        """
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        nn.init.zeros_(self.head.bias)
        blocks = self.blocks()
        for block in blocks:
            block.conv1.weight.normal_(0.0, len(blocks) ** -0.5 * _he_std(block.conv1))
            block.conv2.weight.zero_()
            if len(block.shortcut):
                block.shortcut[0].weight.normal_(0.0, _he_std(block.shortcut[0]))

    def _stages(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return x


def _he_std(conv: nn.Conv2d) -> float:
    """He's standard deviation with the fan-out convention of the Fixup code the reference follows."""
    return math.sqrt(2.0 / (conv.kernel_size[0] * conv.kernel_size[1] * conv.out_channels))


# --------------------------------------------------------------------------- factory


def build_student(name: str, num_classes: int, **options) -> Student:
    """A fresh student by name: `mobile_fcn` (options `n_mels`, `dropout`) or `cp_resnet` (options `rho`,
    `base_channels`, `fmin_jitter`, `fmax_jitter`); defaults are the reference's (docs/methods.md §3.3, §3.8)."""
    builders = {"mobile_fcn": MobileFCN, "cp_resnet": CPResNet}
    if name not in builders:
        raise ValueError(f"unknown student {name!r}; choose one of {list(STUDENTS)}")
    try:
        return builders[name](num_classes=num_classes, **options)
    except TypeError as exc:
        raise TypeError(f"student {name!r}: {exc}") from exc


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
