"""Trainable input transforms of reprogramming: they rewrite the spectrogram before the frozen backbone.

Shapes follow the reference (Chen & Lerch 2023, AR:src/models/ast_models.py): a single-channel
spectrogram [B, 1, T, F] in, the same shape out.
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


TRANSFORMS = {"unet": UNetTransform, "none": IdentityTransform}


def build_transform(name: str, **kwargs) -> nn.Module:
    try:
        return TRANSFORMS[name](**kwargs)
    except KeyError:
        raise ValueError(f"unknown input transform {name!r}; choose one of {sorted(TRANSFORMS)}") from None
