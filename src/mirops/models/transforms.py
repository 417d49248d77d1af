"""Trainable input transforms of reprogramming: they rewrite the spectrogram before the frozen backbone.

Shapes follow the reference (Chen & Lerch 2023, AR:src/models/ast_models.py, docs/methods.md §1.4): a
single-channel spectrogram [B, 1, T, F] in, the same shape out, and the output replaces the input.

| name | what | trainable parameters |
| --- | --- | --- |
| `none` | identity (backbone + output mapping baseline) | 0 |
| `noise` | one learned additive delta of the spectrogram's shape | T·F (131,072 for AST's 1024 x 128) |
| `cnn` | two 3x3 single-channel convolutions with bias, no activation between them | 20 |
| `unet` | the reference "unet v2" | 1,285 |
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _conv_bn_relu(c_in: int, c_out: int) -> nn.Sequential:
    # bias=False because BatchNorm's shift makes a conv bias redundant (as in the reference).
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU())


def _up(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)


class UNetTransform(nn.Module):
    """The reference "unet v2": 1→4→8→8 down, 8→4→1 up, additive skips, a last 3×3 conv; 1,285 parameters.

    T and F must be divisible by 8 (three 2×2 poolings); `ReprogrammedClassifier` pads T for it.
    `final_relu=True` keeps the reference's last ReLU (a non-negative spectrogram); without it the
    transform can still produce the negative log-mel values a log-mel backbone such as YAMNet expects.
    """

    def __init__(self, final_relu: bool = True) -> None:
        super().__init__()
        self.down1, self.down2, self.down3 = _conv_bn_relu(1, 4), _conv_bn_relu(4, 8), _conv_bn_relu(8, 8)
        self.up2, self.up1 = _conv_bn_relu(8, 4), _conv_bn_relu(4, 1)
        self.out = _conv_bn_relu(1, 1)
        if not final_relu:
            self.out = self.out[:2]
        self.pool = nn.MaxPool2d(2)

    @torch.no_grad()
    def calibrate(self, mean: float, std: float) -> None:
        """Start close to the identity on the backbone's input scale, keeping the architecture as it is.

        The last conv becomes a centre tap and the last BatchNorm's affine maps its normalised output
        back to the spectrogram's mean and spread, so the frozen backbone first sees (nearly) the log-mel
        it was trained on instead of a standardised one; training then moves away from there.
        """
        conv, norm = self.out[0], self.out[1]
        conv.weight.zero_()
        conv.weight[0, 0, 1, 1] = 1.0
        norm.weight.fill_(std)
        norm.bias.fill_(mean)
        norm.running_mean.fill_(mean)
        norm.running_var.fill_(std**2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e1 = self.pool(self.down1(x))
        e2 = self.pool(self.down2(e1))
        e3 = self.pool(self.down3(e2))
        d2 = self.up2(_up(e3) + e2)
        d1 = self.up1(e1 + _up(d2))
        return self.out(_up(d1) + x)


class IdentityTransform(nn.Module):
    """No input transform: the "backbone + output mapping" baseline."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class NoiseTransform(nn.Module):
    """A universal additive perturbation: one learned delta [T, F] added to every spectrogram (AST-NRP).

    Initialised to zeros (the reference left it uninitialised, bug B2; an earlier commit drew N(0, 1)):
    training starts from the plain backbone + mapping baseline, and the delta's gradient is the input
    gradient, which is non-zero from the first step. `init_std > 0` draws N(0, init_std²) instead.
    Inputs of another length than T (e.g. clips of another duration at serving time) get the delta's first
    frames when shorter and no perturbation on the frames past T when longer; the bins must match.
    """

    def __init__(self, shape: tuple[int, int], init_std: float = 0.0) -> None:
        super().__init__()
        frames, bins = shape
        self.delta = nn.Parameter(torch.randn(frames, bins) * init_std if init_std > 0 else torch.zeros(frames, bins))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        frames, bins = self.delta.shape
        if x.shape[-1] != bins:
            raise ValueError(f"noise transform learned for {bins} bins, got a spectrogram {tuple(x.shape)}")
        t = x.shape[-2]
        delta = self.delta[:t] if t <= frames else F.pad(self.delta, (0, 0, 0, t - frames))
        return x + delta


class CNNTransform(nn.Module):
    """Two Conv2d(1→1, 3x3, padding 1, with bias) in a row, no activation between them (AST-CNNRP): 20 parameters.

    Default PyTorch initialisation, as the reference; `calibrate` starts both at the identity instead.
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 1, 3, padding=1)
        self.conv2 = nn.Conv2d(1, 1, 3, padding=1)

    @torch.no_grad()
    def calibrate(self, mean: float, std: float) -> None:
        """Start at the identity (centre taps 1, the rest and the biases 0); the statistics are not needed."""
        for conv in (self.conv1, self.conv2):
            conv.weight.zero_()
            conv.weight[0, 0, 1, 1] = 1.0
            conv.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1(x))


TRANSFORMS = {"none": IdentityTransform, "noise": NoiseTransform, "cnn": CNNTransform, "unet": UNetTransform}


def build_transform(name: str, **kwargs) -> nn.Module:
    """An input transform by name; `noise` needs `shape=(frames, bins)`, `unet` takes `final_relu`."""
    if name not in TRANSFORMS:
        raise ValueError(f"unknown input transform {name!r}; choose one of {sorted(TRANSFORMS)}")
    if name == "noise" and kwargs.get("shape") is None:
        raise ValueError("the noise transform needs the spectrogram shape: build_transform('noise', shape=(T, F))")
    return TRANSFORMS[name](**kwargs)
