"""The one interface every frozen backbone of reprogramming offers (YAMNet, AST, the pooled spectrogram).

Its own module so that the implementations (`mirops.models.backbone` for YAMNet and the pooled spectrogram,
`mirops.models.ast` for AST) and the factory in `mirops.models.backbone` can all import it, and the factory can
import AST without AST importing the factory back.
"""

from __future__ import annotations

from torch import Tensor, nn


class Backbone(nn.Module):
    """Frozen network: front-end frames [B, T, F] -> (logits [B, num_logits], embedding [B, embedding_dim]).

    Subclasses set `frontend`, `embedding_dim`, `num_logits`, `input_shape` ((frames or None when any length
    goes, bins)), `fill_value` (what padding and silence look like in the frames) and implement
    `forward_spectrogram` and `label_names`.
    """

    frontend: nn.Module
    embedding_dim: int
    num_logits: int
    input_shape: tuple[int | None, int]
    fill_value: float

    def freeze(self) -> Backbone:
        self.requires_grad_(False)
        return super().train(False)

    def train(self, mode: bool = True) -> Backbone:
        # Frozen for good: whatever the enclosing model does, the backbone stays in eval mode.
        return super().train(False)

    @property
    def label_names(self) -> list[str]:
        """Names of the logits, in order (AudioSet display names for both backbones here)."""
        raise NotImplementedError

    def forward_spectrogram(self, spec: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def embed_spectrogram(self, spec: Tensor) -> Tensor:
        return self.forward_spectrogram(spec)[1]

    def forward(self, spec: Tensor) -> tuple[Tensor, Tensor]:
        return self.forward_spectrogram(spec)
