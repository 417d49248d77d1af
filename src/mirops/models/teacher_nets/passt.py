"""PaSST-S (Koutini et al., Interspeech 2022), the AudioSet transformer the EAsT reference uses as a teacher.

Official source read for this port: PyPI `hear21passt` 0.0.26 (= github.com/kkoutini/passt_hear21, `base.py` at
commit 5a19578): `hear21passt/models/passt.py` (`PaSST`, arch `passt_s_swa_p16_128_ap476`),
`hear21passt/models/preprocess.py` (`AugmentMelSTFT`), `hear21passt/wrapper.py` (`PasstBasicWrapper`).

Checkpoint: `passt-s-f128-p16-s10-ap.476-swa.pt` (AudioSet mAP .476, stochastic weight averaging), see
`OFFICIAL_URLS`. The file is the bare `PaSST` state dict (159 tensors, 86 153 758 parameters), which the
official `load_pretrained` loads strictly into the network; the wrapper's own `net.` / `mel.` prefixes never
appear in it. `PaSST.state_dict()` here has exactly those keys and shapes.

Network: DeiT-base skeleton (768-d, 12 blocks, 12 heads, MLP 3072, LayerNorm eps 1e-6) on 1-channel 16x16
patches of the 128-bin log-mel with stride 10 (12 frequency x up to 99 time patches), separate frequency and
time positional embeddings (the time one is cut to the input's length), CLS and distillation tokens. The
pooled feature is the mean of the two tokens after the final norm; the AudioSet head (LayerNorm eps 1e-5,
Linear 768 -> 527) is applied to it. `head_dist` is in the checkpoint but the official forward never uses it.
Patchout only acts in training mode, so it is not ported: this net computes the eval-mode forward always.

Front end (`AugmentMelSTFT` in eval mode, no augmentation), 32 kHz: pre-emphasis 0.97, STFT n_fft 1024, hop
320, symmetric Hann 800, centred (reflect), power, Kaldi mel bank 128 bins from 0 to 15 000 Hz (`fmax=None`
becomes sr/2 - fmax_aug_range/2 = 16 000 - 1 000), log(x + 1e-5), then (x + 4.5) / 5. That is the students'
`EastLogMel` with another final affine map, so `PasstMel` reuses it and only swaps the normalisation.

Reference extraction (docs/methods.md §3.4, `EA:preprocess/pretrained_feature_extractor/`): audio loaded at
32 kHz, `load_model(mode="embed_only", timestamp_window=960, timestamp_hop=960)`, `get_timestamp_embeddings`.
The wrapper reflect-pads the clip by half a window (15 360 samples) on both sides and cuts windows of 30 720
samples every 30 720, so a clip of S samples gives 1 + S // 30 720 frames (10 s -> 11, 29.1 s -> 31); frame t
is centred at t * 0.96 s. Each window goes through the whole model alone (96 log-mel frames, 12 x 9 patches)
and "embed_only" keeps the 768-d pooled feature. No normalisation is applied to the stored values.

Choices: the PyPI 0.0.26 `load_model` takes no window arguments (the reference ran a local copy of the
package); the windows above are what `PasstBasicWrapper(timestamp_window=960, timestamp_hop=960)` computes.
`logits` follows the wrapper's scene path in "logits" mode: clips up to 10 s go in whole, longer ones are cut
into 10 s windows every 2.5 s (reflect-padded by 5 s) whose logits are averaged. Logits are pre-sigmoid.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mirops.models.students import NORM_MEAN, NORM_STD, EastLogMel
from mirops.models.teacher_nets.checkpoint_files import load_strict, read_torch

ARCH = "passt_s_swa_p16_128_ap476"
CHECKPOINT_NAME = "passt-s-f128-p16-s10-ap.476-swa.pt"
OFFICIAL_URLS = {
    CHECKPOINT_NAME: "https://github.com/kkoutini/PaSST/releases/download/v0.0.1-audioset/" + CHECKPOINT_NAME,
}

SAMPLE_RATE = 32000
N_MELS = 128
MEL_F_MAX = 15000.0  # AugmentMelSTFT(fmax=None, fmax_aug_range=2000): sr // 2 - 2000 // 2
PASST_NORM_OFFSET, PASST_NORM_SCALE = 4.5, 5.0  # AugmentMelSTFT's "fast normalization" (x + 4.5) / 5
TIMESTAMP_WINDOW = 30720  # timestamp_window = 960 ms at 32 kHz
TIMESTAMP_HOP = 30720  # timestamp_hop = 960 ms
SCENE_WINDOW = 320000  # the wrapper's max_model_window, 10 s
SCENE_HOP = 80000  # the wrapper's scene_hop, 2.5 s
PATCH_SIZE, PATCH_STRIDE = 16, 10
FREQ_PATCHES, TIME_PATCHES = 12, 99  # the grid of a 128 x 998 input (img_size of the checkpoint)
NUM_CLASSES = 527


class PasstMel(nn.Module):
    """Waveform [N, samples] at 32 kHz -> PaSST's normalised log-mel [N, 128, frames] (AugmentMelSTFT, eval)."""

    def __init__(self) -> None:
        super().__init__()
        self.logmel = EastLogMel(SAMPLE_RATE, N_MELS, f_min=0.0, f_max=MEL_F_MAX)
        # The STFT window is recomputed at construction: keep it out of the state dict, which must be PaSST's.
        spectrogram = self.logmel.spectrogram
        spectrogram.register_buffer("window", spectrogram.window, persistent=False)

    def forward(self, wave: Tensor) -> Tensor:
        log_mel = self.logmel(wave) * NORM_STD + NORM_MEAN  # undo the students' (x + 3.7) / 3.1
        return ((log_mel + PASST_NORM_OFFSET) / PASST_NORM_SCALE).transpose(1, 2)


class PatchEmbed(nn.Module):
    def __init__(self, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(1, embed_dim, kernel_size=PATCH_SIZE, stride=PATCH_STRIDE)

    def forward(self, spec: Tensor) -> Tensor:
        return self.proj(spec)  # [N, E, freq patches, time patches]


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        batch, tokens, dim = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, dim // self.num_heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])  # softmax(q k^T / sqrt(head dim)) v
        return self.proj(out.transpose(1, 2).reshape(batch, tokens, dim))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_hidden: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, mlp_hidden)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


def reflect_windows(audio: Tensor, window: int, hop: int) -> Tensor:
    """[B, samples] -> [B, 1 + (samples + 2 * (window // 2) - window) // hop, window], as the wrapper frames.

    The clip is reflect-padded by half a window on each side, so window t is centred on sample t * hop.
    """
    pad = window // 2
    if audio.shape[-1] <= pad:
        raise ValueError(f"PaSST's framing reflect-pads by {pad} samples ({pad / SAMPLE_RATE:.2f} s): a clip needs "
                         f"more than that, got {audio.shape[-1]} samples")
    padded = F.pad(audio.unsqueeze(1), (pad, pad), mode="reflect").squeeze(1)
    return padded.unfold(-1, window, hop)


class PaSST(nn.Module):
    """PaSST-S with its eval-mode front end: 32 kHz audio -> timestamp embeddings [B, T, 768] or logits [B, 527].

    Built at the checkpoint's size by default; `depth` (and the other sizes) only change for tests. The
    parameter names are the official ones, so `load_state_dict(official_state_dict, strict=True)` works.
    """

    sample_rate = SAMPLE_RATE
    hop_s = TIMESTAMP_HOP / SAMPLE_RATE  # 0.96 s between embedding frames
    has_classifier = True

    def __init__(self, depth: int = 12, embed_dim: int = 768, num_heads: int = 12, mlp_hidden: int = 3072,
                 num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.embedding_dim, self.num_classes = embed_dim, num_classes
        self.frontend = PasstMel()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.dist_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.new_pos_embed = nn.Parameter(torch.zeros(1, 2, embed_dim))  # of the CLS and distillation tokens
        self.freq_new_pos_embed = nn.Parameter(torch.zeros(1, embed_dim, FREQ_PATCHES, 1))
        self.time_new_pos_embed = nn.Parameter(torch.zeros(1, embed_dim, 1, TIME_PATCHES))
        for token in (self.cls_token, self.dist_token, self.new_pos_embed, self.freq_new_pos_embed,
                      self.time_new_pos_embed):
            nn.init.trunc_normal_(token, std=0.02)  # the official init; the checkpoint overwrites it
        self.patch_embed = PatchEmbed(embed_dim)
        self.blocks = nn.Sequential(*(Block(embed_dim, num_heads, mlp_hidden) for _ in range(depth)))
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.head = nn.Sequential(nn.LayerNorm(embed_dim), nn.Linear(embed_dim, num_classes))  # eps 1e-5 here
        self.head_dist = nn.Linear(embed_dim, num_classes)  # in the checkpoint, unused by the official forward

    def forward_spectrogram(self, spec: Tensor) -> tuple[Tensor, Tensor]:
        """Log-mel [N, 128, frames] (at most 998 frames) -> (logits [N, 527], pooled features [N, 768])."""
        if spec.dim() != 3 or spec.shape[1] != N_MELS:
            raise ValueError(f"expected PaSST log-mel [batch, {N_MELS}, frames], got {tuple(spec.shape)}")
        x = self.patch_embed(spec.unsqueeze(1))
        time_patches = x.shape[-1]
        if time_patches > TIME_PATCHES:
            raise ValueError(f"PaSST's time embedding covers {TIME_PATCHES} patches (10 s), got {time_patches}: "
                             "cut the input into windows (see `embed` and `logits`)")
        x = x + self.time_new_pos_embed[..., :time_patches]
        x = x + self.freq_new_pos_embed
        x = x.flatten(2).transpose(1, 2)  # [N, freq * time patches, E], frequency-major as the official
        batch = x.shape[0]
        cls_token = self.cls_token.expand(batch, -1, -1) + self.new_pos_embed[:, :1]
        dist_token = self.dist_token.expand(batch, -1, -1) + self.new_pos_embed[:, 1:]
        x = self.norm(self.blocks(torch.cat((cls_token, dist_token, x), dim=1)))
        features = (x[:, 0] + x[:, 1]) / 2
        return self.head(features), features

    def _check_audio(self, audio: Tensor) -> Tensor:
        if audio.dim() == 1:
            audio = audio.unsqueeze(0)
        if audio.dim() != 2:
            raise ValueError(f"expected {SAMPLE_RATE} Hz mono audio [batch, samples], got {tuple(audio.shape)}")
        return audio.to(self.cls_token.dtype)

    def embed(self, audio: Tensor) -> Tensor:
        """Audio [B, samples] at 32 kHz in [-1, 1] -> `get_timestamp_embeddings` [B, 1 + samples // 30720, 768]."""
        windows = reflect_windows(self._check_audio(audio), TIMESTAMP_WINDOW, TIMESTAMP_HOP)
        batch, frames = windows.shape[:2]
        _, features = self.forward_spectrogram(self.frontend(windows.reshape(batch * frames, -1)))
        return features.reshape(batch, frames, -1)

    def logits(self, audio: Tensor) -> Tensor:
        """Audio [B, samples] at 32 kHz -> AudioSet clip logits [B, 527] (pre-sigmoid), the wrapper's scene path."""
        audio = self._check_audio(audio)
        if audio.shape[-1] <= SCENE_WINDOW:
            return self.forward_spectrogram(self.frontend(audio))[0]
        windows = reflect_windows(audio, SCENE_WINDOW, SCENE_HOP)
        batch, count = windows.shape[:2]
        logits, _ = self.forward_spectrogram(self.frontend(windows.reshape(batch * count, -1)))
        return logits.reshape(batch, count, -1).mean(dim=1)


def _official_layout_fixes(state: Mapping[str, Tensor], net: PaSST) -> dict[str, Tensor]:
    """What the official `checkpoint_filter_fn` does to a PaSST file: unwrap {"model": ...}, reshape a flat patch
    projection (checkpoints from before the convolutional patch embedding)."""
    if "model" in state and isinstance(state["model"], Mapping):
        state = state["model"]
    state = dict(state)
    weight = state.get("patch_embed.proj.weight")
    if isinstance(weight, Tensor) and weight.dim() < 4 and weight.numel() == net.patch_embed.proj.weight.numel():
        state["patch_embed.proj.weight"] = weight.reshape(net.patch_embed.proj.weight.shape)
    return state


def load_passt(path: str | Path, depth: int = 12) -> PaSST:
    """Read the official `passt-s-f128-p16-s10-ap.476-swa.pt` (a torch state dict) into a frozen `PaSST`.

    Keys and shapes are checked strictly; `depth` is 12 for the official file (smaller only for tests).
    """
    path = Path(path)
    state = read_torch(path, "PaSST checkpoint", CHECKPOINT_NAME, OFFICIAL_URLS[CHECKPOINT_NAME])
    if not isinstance(state, Mapping):
        raise ValueError(f"{path}: expected a PaSST state dict (a mapping of tensors), got {type(state).__name__}")
    net = PaSST(depth=depth)
    hint = "this looks like a hear21passt wrapper's state dict: save `model.net.state_dict()` instead"
    return load_strict(net, path, _official_layout_fixes(state, net), f"{ARCH} ({CHECKPOINT_NAME}, depth {depth})",
                       {"net.": hint})
