"""A reprogrammed classifier: trainable input transform → frozen backbone → trainable output mapping.

Raw 16 kHz audio in, class logits out, so a registered model needs nothing but this file to serve.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from mirops.features.logmel import YamnetLogMel
from mirops.models.transforms import build_transform
from mirops.models.yamnet import YAMNet

LOG_FLOOR = math.log(1e-6)  # the log-mel of silence: what padding should look like to the backbone


class OutputMapping(nn.Module):
    """LayerNorm + Linear on the clip embedding (the reference head; 16,916 parameters for 768 → 20)."""

    def __init__(self, embedding_dim: int, num_classes: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(embedding_dim)
        self.linear = nn.Linear(embedding_dim, num_classes)

    def forward(self, embedding: torch.Tensor) -> torch.Tensor:
        return self.linear(self.norm(embedding))


class ReprogrammedClassifier(nn.Module):
    def __init__(
        self,
        backbone: YAMNet,
        classes: list[str],
        transform: str = "unet",
        final_relu: bool = False,
    ) -> None:
        super().__init__()
        self.classes = list(classes)
        self.frontend = YamnetLogMel()
        kwargs = {"final_relu": final_relu} if transform == "unet" else {}
        self.transform = build_transform(transform, **kwargs)
        self.backbone = backbone.eval().requires_grad_(False)
        self.head = OutputMapping(backbone.embedding_dim, len(self.classes))

    def train(self, mode: bool = True) -> ReprogrammedClassifier:
        # The backbone is frozen for good: its BatchNorm-free conv stack stays in eval mode.
        super().train(mode)
        self.backbone.eval()
        return self

    def calibrate_transform(self, specs: torch.Tensor) -> bool:
        """Data-dependent start for the U-Net (see UNetTransform.calibrate); False when it does not apply."""
        calibrate = getattr(self.transform, "calibrate", None)
        if calibrate is None or len(self.transform.out) > 2:  # nothing to do, or a final ReLU (reference mode)
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
        """[B, samples] → log-mel [B, T, 64] (no gradient: the front end has no parameters)."""
        return self.frontend(wave)

    def embed_spectrogram(self, spec: torch.Tensor) -> torch.Tensor:
        """Log-mel [B, T, 64] → transform → backbone → clip embedding [B, D] (mean over patches)."""
        pad = (-spec.shape[1]) % 8  # the U-Net pools three times along time
        if pad:
            spec = nn.functional.pad(spec, (0, 0, 0, pad), value=LOG_FLOOR)
        return self.backbone.embed_logmel(self.transform(spec.unsqueeze(1)).squeeze(1))

    def forward_spectrogram(self, spec: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed_spectrogram(spec))

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        return self.forward_spectrogram(self.spectrogram(wave))
