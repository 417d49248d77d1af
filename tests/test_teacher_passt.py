"""PaSST teacher port: official checkpoint layout, loading, the reference's framing and its errors.

The expected layout is written down from hear21passt 0.0.26 `models/passt.py` (arch passt_s_swa_p16_128_ap476):
159 tensors, 86 153 758 parameters. Forward tests use one block of the same width (the 12-block net is too slow
for CI); the framing, the front end and the pooling are the same code path.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchaudio

from mirops.models.teacher_nets.passt import OFFICIAL_URLS, PaSST, load_passt

SR = 32000
BLOCK_TENSORS = [
    ("norm1.weight", (768,)), ("norm1.bias", (768,)),
    ("attn.qkv.weight", (2304, 768)), ("attn.qkv.bias", (2304,)),
    ("attn.proj.weight", (768, 768)), ("attn.proj.bias", (768,)),
    ("norm2.weight", (768,)), ("norm2.bias", (768,)),
    ("mlp.fc1.weight", (3072, 768)), ("mlp.fc1.bias", (3072,)),
    ("mlp.fc2.weight", (768, 3072)), ("mlp.fc2.bias", (768,)),
]


def official_layout(depth: int = 12) -> list[tuple[str, tuple[int, ...]]]:
    """The state dict of hear21passt's PaSST(distilled=True, img_size=(128, 998), stride=10), in its order."""
    return [
        ("cls_token", (1, 1, 768)), ("dist_token", (1, 1, 768)), ("new_pos_embed", (1, 2, 768)),
        ("freq_new_pos_embed", (1, 768, 12, 1)), ("time_new_pos_embed", (1, 768, 1, 99)),
        ("patch_embed.proj.weight", (768, 1, 16, 16)), ("patch_embed.proj.bias", (768,)),
        *[(f"blocks.{i}.{name}", shape) for i in range(depth) for name, shape in BLOCK_TENSORS],
        ("norm.weight", (768,)), ("norm.bias", (768,)),
        ("head.0.weight", (768,)), ("head.0.bias", (768,)), ("head.1.weight", (527, 768)), ("head.1.bias", (527,)),
        ("head_dist.weight", (527, 768)), ("head_dist.bias", (527,)),
    ]


def music(seconds: float, seed: int = 0) -> torch.Tensor:
    t = np.arange(int(round(seconds * SR))) / SR
    rng = np.random.default_rng(seed)
    wave = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.2 * np.sin(2 * np.pi * 1234.5 * t) + 0.05 * rng.standard_normal(t.size)
    return torch.from_numpy(wave[None]).float()


@pytest.fixture(scope="module")
def small_net() -> PaSST:
    torch.manual_seed(0)
    return PaSST(depth=1).eval()


def test_full_size_state_dict_is_the_official_layout():
    with torch.device("meta"):
        net = PaSST()
    state = net.state_dict()
    assert [(key, tuple(value.shape)) for key, value in state.items()] == official_layout()
    assert len(state) == 159
    assert sum(value.numel() for value in state.values()) == 86_153_758
    assert (net.sample_rate, net.embedding_dim, net.hop_s) == (32000, 768, 0.96)


def test_front_end_is_augment_mel_stft_in_eval_mode():
    wave = music(1.0)
    # hear21passt AugmentMelSTFT.forward (eval): pre-emphasis, STFT, power, Kaldi bank 0..15 kHz, log, (x + 4.5) / 5
    x = torch.nn.functional.conv1d(wave.unsqueeze(1), torch.tensor([[[-0.97, 1.0]]])).squeeze(1)
    spec = torch.stft(x, 1024, hop_length=320, win_length=800, window=torch.hann_window(800, periodic=False),
                      center=True, normalized=False, return_complex=True)
    power = torch.view_as_real(spec).pow(2).sum(-1)
    bank, _ = torchaudio.compliance.kaldi.get_mel_banks(128, 1024, 32000, 0.0, 15000, vtln_low=100.0,
                                                        vtln_high=-500.0, vtln_warp_factor=1.0)
    mel = torch.matmul(torch.nn.functional.pad(bank, (0, 1)), power)
    expected = ((mel + 1e-5).log() + 4.5) / 5.0
    got = PaSST(depth=0).frontend(wave)
    assert got.shape == (1, 128, 100)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(("seconds", "frames"), [(10.0, 11), (29.1, 31)])
def test_clips_embed_to_the_reference_frame_counts(small_net, seconds, frames):
    with torch.no_grad():
        embeddings = small_net.embed(music(seconds))
    assert embeddings.shape == (1, frames, 768)
    assert embeddings.dtype == torch.float32 and torch.isfinite(embeddings).all()


def test_each_frame_is_the_pooled_embedding_of_its_centred_window(small_net):
    wave = music(3.0)
    with torch.no_grad():
        embeddings = small_net.embed(wave)
        # frame 1 is centred on 0.96 s: samples [0.48 s, 1.44 s), through the whole model on its own
        _, alone = small_net.forward_spectrogram(small_net.frontend(wave[:, 15360:46080]))
        # frame 0 is centred on 0 s: the first half of its window is the reflection of the clip's start
        first = torch.cat([wave[:, 1:15361].flip(-1), wave[:, :15360]], dim=-1)
        _, at_start = small_net.forward_spectrogram(small_net.frontend(first))
    assert embeddings.shape == (1, 1 + wave.shape[-1] // 30720, 768)
    torch.testing.assert_close(embeddings[:, 1], alone, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(embeddings[:, 0], at_start, atol=1e-5, rtol=1e-5)


def test_logits_are_audioset_clip_logits(small_net):
    ten, long = music(10.0), music(12.0, seed=1)  # longer than 10 s: 10 s windows every 2.5 s, averaged
    with torch.no_grad():
        logits_ten, logits_long = small_net.logits(ten), small_net.logits(long)
        # up to 10 s the whole clip goes in at once; the head sees the mean of the CLS and distillation tokens
        whole, features = small_net.forward_spectrogram(small_net.frontend(ten))
    assert logits_ten.shape == logits_long.shape == (1, 527)
    torch.testing.assert_close(logits_ten, whole)
    torch.testing.assert_close(whole, small_net.head(features))
    assert torch.isfinite(logits_long).all()


def test_official_file_format_loads_back_to_the_same_embeddings(small_net, tmp_path):
    path = tmp_path / "passt-s-f128-p16-s10-ap.476-swa.pt"
    torch.save(small_net.state_dict(), path)  # the release asset is a bare state dict
    loaded = load_passt(path, depth=1)
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    wave = music(2.0)
    with torch.no_grad():
        torch.testing.assert_close(loaded.embed(wave), small_net.embed(wave), atol=0, rtol=0)


def test_missing_file_names_the_official_url(tmp_path):
    with pytest.raises(FileNotFoundError) as error:
        load_passt(tmp_path / "passt-s-f128-p16-s10-ap.476-swa.pt")
    url = OFFICIAL_URLS["passt-s-f128-p16-s10-ap.476-swa.pt"]
    assert url == "https://github.com/kkoutini/PaSST/releases/download/v0.0.1-audioset/passt-s-f128-p16-s10-ap.476-swa.pt"
    assert url in str(error.value)


def test_wrong_keys_and_shapes_are_named(small_net, tmp_path):
    state = small_net.state_dict()
    state["norm.gamma"] = state.pop("norm.weight")
    path = tmp_path / "renamed.pt"
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"missing keys: norm\.weight.*unexpected keys: norm\.gamma"):
        load_passt(path, depth=1)

    state = small_net.state_dict()
    state["head.1.weight"] = state["head.1.weight"][:20]  # an OpenMIC-sized head
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"wrong shapes: head\.1\.weight \(20, 768\)"):
        load_passt(path, depth=1)

    torch.save({f"net.{key}": value for key, value in small_net.state_dict().items()}, path)
    with pytest.raises(ValueError, match="hear21passt wrapper"):
        load_passt(path, depth=1)


def test_too_short_clip_is_refused(small_net):
    with pytest.raises(ValueError, match="reflect-pads by 15360 samples"):
        small_net.embed(torch.zeros(1, 15000))
