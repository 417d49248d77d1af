"""A reprogrammed classifier: trainable input transform → frozen backbone → output mapping.

Raw 16 kHz audio in, class logits out, so a registered model needs nothing but this file to serve. The
backbone (YAMNet or AST, see `mirops.models.backbone`) brings its own front end; only the transform and the
mapping may train (the AudioSet label map has nothing to train).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from mirops.models.backbone import Backbone, YamnetBackbone, as_backbone
from mirops.models.mappings import MAPPINGS, AudioSetLabelMap, OutputMapping
from mirops.models.transforms import UNetTransform, build_transform
from mirops.models.yamnet import YAMNet

__all__ = ["LOG_FLOOR", "AudioSetLabelMap", "OutputMapping", "ReprogrammedClassifier"]

LOG_FLOOR = math.log(1e-6)  # YAMNet's log-mel of silence: what padding should look like to that backbone


class ReprogrammedClassifier(nn.Module):
    """`transform` in {none, noise, cnn, unet}; `mapping` in {linear (LayerNorm + Linear), audioset (fixed map)}.

    `final_relu` applies to the U-Net (the reference keeps its last ReLU). `input_frames` fixes the noise
    transform's length for a backbone that takes any length (YAMNet); AST's input is always 1024 frames.
    `label_map` ({target class: [AudioSet names]}, default: OpenMIC's) and `reduce` apply to `audioset`.
    """

    def __init__(
        self,
        backbone: Backbone | YAMNet,
        classes: Sequence[str],
        transform: str = "unet",
        final_relu: bool = False,
        mapping: str = "linear",
        label_map: Mapping[str, Sequence[str]] | None = None,
        reduce: str = "max",
        input_frames: int | None = None,
    ) -> None:
        super().__init__()
        self.classes = list(classes)
        self.backbone = as_backbone(backbone).freeze()
        self.frontend = self.backbone.frontend
        self.transform = build_transform(transform, **self._transform_options(transform, final_relu, input_frames))
        if mapping == "linear":
            self.head = OutputMapping(self.backbone.embedding_dim, len(self.classes))
        elif mapping == "audioset":
            self.head = AudioSetLabelMap(self.classes, self.backbone.label_names, label_map, reduce)
        else:
            raise ValueError(f"unknown output mapping {mapping!r}; choose one of {list(MAPPINGS)}")

    def _transform_options(self, transform: str, final_relu: bool, input_frames: int | None) -> dict:
        if transform == "unet":
            return {"final_relu": final_relu}
        if transform == "noise":
            frames, bins = self.backbone.input_shape
            frames = frames or input_frames
            if frames is None:
                raise ValueError(f"the noise transform needs a fixed spectrogram length: {type(self.backbone).__name__}"
                                 " takes any length, so pass input_frames (the front end's frames of one clip)")
            return {"shape": (frames + (-frames) % 8, bins)}  # the length embed_spectrogram pads to
        return {}

    def __setstate__(self, state: dict) -> None:
        # Models pickled before the backbone interface held a bare YAMNet: wrap it so they still serve.
        super().__setstate__(state)
        if isinstance(self._modules.get("backbone"), YAMNet):
            self._modules["backbone"] = YamnetBackbone(self._modules["backbone"], self._modules.get("frontend"))

    @property
    def fill_value(self) -> float:
        """What padding, silence (and SpecAugment masks) look like in this model's spectrograms."""
        return self.backbone.fill_value

    def train(self, mode: bool = True) -> ReprogrammedClassifier:
        # The backbone is frozen for good: it stays in eval mode whatever the rest does.
        super().train(mode)
        self.backbone.eval()
        return self

    def calibrate_transform(self, specs: torch.Tensor) -> bool:
        """Data-dependent start of the transform (see UNetTransform.calibrate); False when it does not apply."""
        calibrate = getattr(self.transform, "calibrate", None)
        if calibrate is None:
            return False
        if isinstance(self.transform, UNetTransform) and len(self.transform.out) > 2:  # final ReLU: reference mode
            return False
        calibrate(float(specs.mean()), float(specs.std()))
        return True

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def count_parameters(self) -> dict[str, int]:
        total = sum(p.numel() for p in self.parameters())
        return {"trainable": sum(p.numel() for p in self.trainable_parameters()), "total": total}

    @torch.no_grad()
    def spectrogram(self, wave: torch.Tensor) -> torch.Tensor:
        """[B, samples] → front-end frames [B, T, F] (no gradient: the front ends have no parameters)."""
        return self.frontend(wave)

    def transformed(self, spec: torch.Tensor) -> torch.Tensor:
        """Frames [B, T, F] → what the backbone sees: T padded to a multiple of 8 with silence, then transformed."""
        pad = (-spec.shape[1]) % 8  # the U-Net pools three times along time (AST's 1024 frames need none)
        if pad:
            spec = nn.functional.pad(spec, (0, 0, 0, pad), value=self.fill_value)
        return self.transform(spec.unsqueeze(1)).squeeze(1)

    def embed_spectrogram(self, spec: torch.Tensor) -> torch.Tensor:
        """Frames [B, T, F] → transform → backbone → clip embedding [B, D]."""
        return self.backbone.embed_spectrogram(self.transformed(spec))

    def forward_spectrogram(self, spec: torch.Tensor) -> torch.Tensor:
        if self.head.source == "embedding":
            return self.head(self.embed_spectrogram(spec))
        logits, _ = self.backbone.forward_spectrogram(self.transformed(spec))
        return self.head(logits)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        return self.forward_spectrogram(self.spectrogram(wave))
