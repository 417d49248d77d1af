"""EAsT training loop: modes, the teacher left untouched, the regulariser's effect, resume, probe.

See docs/methods.md §3.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mirops.config import EastParams, Settings
from mirops.models.students import CPResNet
from mirops.train.checkpoint import Checkpoints
from mirops.train.east import (
    MODES,
    Batch,
    EastSet,
    TeacherCache,
    batch_slices,
    evaluate_student,
    fit_probe,
    fit_student,
    inference_ms_per_clip,
    loss_parts,
    mix_labels,
    predict_student,
    reference_lam,
)

CLASSES = 3


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # Tiny convolutions run faster on one thread than on two contended ones, and one thread is deterministic.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def toy_split(n: int, seed: int, latent: int = 6, windows: int = 2, window_frames: int = 32) -> EastSet:
    """A learnable toy world: each 0.32 s window of a clip has a latent z; frames are a fixed random linear
    image of z plus noise, labels are the signs of z's first three coordinates (averaged over the clip, 30 %
    not annotated), and the teacher's embedding is a fixed nonlinear function of the *other* coordinates.
    So BCE alone has no reason to encode what the teacher encodes; only the regulariser does."""
    world = torch.Generator().manual_seed(1234)  # the same mixing for every split
    to_frames = torch.randn(latent, 128, generator=world)
    to_teacher = torch.randn(latent - CLASSES, 16, generator=world)
    rng = torch.Generator().manual_seed(seed)
    z = torch.randn(n, windows, latent, generator=rng)
    frames = 0.5 * (z @ to_frames).repeat_interleave(window_frames, dim=1)
    frames = frames + 0.3 * torch.randn(frames.shape, generator=rng)
    labels = (z[:, :, :CLASSES].mean(dim=1) > 0).float()
    labels[torch.rand(n, CLASSES, generator=rng) < 0.3] = float("nan")
    teacher = torch.tanh(z[:, :, CLASSES:] @ to_teacher)
    return EastSet(frames, labels, {"toy": TeacherCache(teacher, window_frames * 0.01)})


def tiny_student() -> CPResNet:
    torch.manual_seed(0)
    return CPResNet(CLASSES, rho=3, base_channels=8)


def with_probe_logits(train: EastSet, *others: EastSet) -> list[EastSet]:
    probe = fit_probe(train.teachers["toy"].embeddings, train.labels)
    return [split.with_teacher_logits("toy", probe.logits(split.teachers["toy"].embeddings))
            for split in (train, *others)]


def quick(**changes) -> EastParams:
    """No augmentation and no early stopping unless a test asks for them."""
    return EastParams(**({"epochs": 4, "lr": 1e-3, "freq_mask": 0, "time_mask": 0, "mixup": 0.0,
                          "patience": 0} | changes))


# --------------------------------------------------------------------------- losses and batches


def test_the_loss_is_finite_with_every_label_of_the_batch_missing():
    train, = with_probe_logits(toy_split(16, 0))
    cache = train.teachers["toy"]
    batch = Batch(train.frames[:8], torch.full((8, CLASSES), float("nan")), cache.embeddings[:8], cache.logits[:8])
    student = tiny_student()
    for mode in MODES:
        parts, _ = loss_parts(student, batch, mode, lam=0.8, params=quick(), teacher_hop=cache.hop_s)
        student.zero_grad()
        parts["total"].backward()
        assert torch.isfinite(parts["total"]) and parts["prediction"] == 0.0, mode
        assert all(torch.isfinite(p.grad).all() for p in student.parameters() if p.grad is not None), mode


def test_mixup_keeps_an_entry_annotated_in_either_clip_as_the_reference_does():
    nan = float("nan")
    mixed = mix_labels(torch.tensor([[1.0, nan, nan]]), torch.tensor([[0.0, 1.0, nan]]), torch.tensor([[0.75]]))
    assert mixed[0, :2].tolist() == [0.75, 0.25] and torch.isnan(mixed[0, 2])


def test_a_last_batch_of_one_clip_joins_the_one_before():
    assert batch_slices(33, 16) == [slice(0, 16), slice(16, 33)]
    assert batch_slices(34, 16) == [slice(0, 16), slice(16, 32), slice(32, 34)]
    assert batch_slices(1, 16) == [slice(0, 1)]


def test_lam_defaults_to_the_reference_for_the_task_and_teacher():
    # docs/methods.md §3.7: OpenMIC 0.8 (PaSST, PANNs 0.9), MTAT 0.6 for every teacher.
    assert reference_lam("instruments", "vggish") == reference_lam("instruments", "yamnet") == 0.8
    assert reference_lam("instruments", "passt") == reference_lam("instruments", "panns") == 0.9
    assert reference_lam("tagging", "panns") == reference_lam("tagging", "ast") == 0.6


def test_params_yaml_east_section_states_the_defaults(tmp_path):
    from tests.conftest import REPO

    assert Settings.load(REPO).east == EastParams()
    assert Settings.load(tmp_path, east__lam=0.5).east.lam == 0.5


# --------------------------------------------------------------------------- training


def test_every_mode_learns_the_toy_problem():
    train, valid = with_probe_logits(toy_split(48, 1), toy_split(16, 2))
    for mode in MODES:
        result = fit_student(tiny_student(), train, valid, quick(epochs=5), seed=0, mode=mode, teacher="toy")
        losses = [row["train_loss"] for row in result.history]
        assert losses[-1] < 0.85 * losses[0], (mode, losses)
        assert result.best_valid["mAP"] > result.history[0]["valid_mAP"] + 0.05, (mode, result.history)
        assert {"train_east", "valid_east", "valid_dcor", "valid_regulariser", "valid_mAP"} <= set(result.history[0])
        if "kd" in mode:
            assert "train_kd" in result.history[0]


def test_training_moves_the_student_and_never_the_teacher_or_the_data():
    train, valid = with_probe_logits(toy_split(32, 1), toy_split(16, 2))
    before = [t.clone() for split in (train, valid) for t in _tensors(split)]
    student = tiny_student()
    start = [p.detach().clone() for p in student.parameters()]
    fit_student(student, train, valid, quick(epochs=2, freq_mask=8, time_mask=8, mixup=0.3), seed=0,
                mode="kd+east", teacher="toy")
    after = [t for split in (train, valid) for t in _tensors(split)]
    for old, new in zip(before, after, strict=True):
        torch.testing.assert_close(new, old, rtol=0, atol=0, equal_nan=True)
        assert not new.requires_grad
    assert all(not torch.equal(old, new) for old, new in zip(start, student.parameters(), strict=True))


def _tensors(split: EastSet) -> list[torch.Tensor]:
    cache = split.teachers["toy"]
    return [split.frames, split.labels, cache.embeddings, cache.logits]


def test_the_regulariser_raises_the_student_teacher_distance_correlation_on_held_out_clips():
    train, valid = toy_split(128, 1), toy_split(32, 2)
    params = quick(epochs=10)
    east = fit_student(tiny_student(), train, valid, params, seed=0, mode="east", teacher="toy").history
    alone = fit_student(tiny_student(), train, valid, params, seed=0, mode="student", teacher="toy").history
    # The teacher depends on what the labels ignore: BCE alone leaves dCor near its small-batch floor
    # (about 0.3-0.45 here), the regulariser pulls the student's geometry to the teacher's.
    assert east[-1]["valid_dcor"] > alone[-1]["valid_dcor"] + 0.25, (east[-1], alone[-1])
    assert east[-1]["valid_east"] < alone[-1]["valid_east"]


def test_resume_after_an_interruption_ends_exactly_like_the_uninterrupted_run(tmp_path):
    train, valid = with_probe_logits(toy_split(24, 1), toy_split(8, 2))
    # SpecAugment and mixup on (short masks for 64-frame clips): their random streams must resume too.
    params = quick(epochs=4, batch_size=8, freq_mask=8, time_mask=8, mixup=0.3, lr_patience=0)
    straight = tiny_student()
    expected = fit_student(straight, train, valid, params, seed=3, mode="kd+east", teacher="toy",
                           checkpoints=Checkpoints(tmp_path / "a", "k"))

    class Interrupted(Exception):
        pass

    def stop_after_two(row):
        if row["epoch"] == 2:
            raise Interrupted

    checkpoints = Checkpoints(tmp_path / "b", "k")
    with pytest.raises(Interrupted):
        fit_student(tiny_student(), train, valid, params, seed=3, mode="kd+east", teacher="toy",
                    on_epoch=stop_after_two, checkpoints=checkpoints)
    resumed_student = tiny_student()
    with torch.no_grad():  # a fresh process starts from other weights: the checkpoint must overwrite them
        for p in resumed_student.parameters():
            p.add_(1.0)
    resumed = fit_student(resumed_student, train, valid, params, seed=3, mode="kd+east", teacher="toy",
                          checkpoints=checkpoints, resume=True)
    assert resumed.resumed_from == 2 and checkpoints.epochs() == [1, 2, 3, 4]
    assert resumed.history == [{**row, "epoch_seconds": r["epoch_seconds"]}
                               for row, r in zip(expected.history, resumed.history, strict=True)]
    assert resumed.best_epoch == expected.best_epoch and resumed.best_valid == expected.best_valid
    for key, value in straight.state_dict().items():
        assert torch.equal(value, resumed_student.state_dict()[key]), key


def test_early_stopping_on_valid_map_and_the_lr_plateau_schedule():
    student = tiny_student()
    for module in student.modules():  # frozen BatchNorm statistics: with a vanishing lr nothing changes
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = 0.0
    params = quick(epochs=8, lr=1e-12, patience=3, lr_patience=1, lr_factor=0.5)
    result = fit_student(student, toy_split(24, 1), toy_split(8, 2), params, seed=0, mode="student")
    # valid mAP never beats epoch 1: stop after 3 more epochs; the valid loss plateaus: halve the lr
    # once it has not improved for more than lr_patience epochs (the reference's ReduceLROnPlateau).
    assert result.stopped_early and [row["epoch"] for row in result.history] == [1, 2, 3, 4]
    assert result.best_epoch == 1
    assert [row["lr"] for row in result.history] == pytest.approx([1e-12, 1e-12, 5e-13, 5e-13], rel=1e-9)


def test_kd_without_teacher_logits_fails_with_a_clear_message():
    train, valid = toy_split(16, 1), toy_split(8, 2)
    with pytest.raises(ValueError, match=r"distils the teacher's logits.*fit_probe"):
        fit_student(tiny_student(), train, valid, quick(), seed=0, mode="kd", teacher="toy")
    with pytest.raises(ValueError, match="pass teacher=<name>"):
        fit_student(tiny_student(), train, valid, quick(), seed=0, mode="east")
    with pytest.raises(KeyError, match="no embeddings of teacher 'other'"):
        fit_student(tiny_student(), train, valid, quick(), seed=0, mode="east", teacher="other")


# --------------------------------------------------------------------------- probe and inference


def test_the_probe_separates_a_separable_toy_set_and_handles_one_sided_classes():
    from mirops.train.metrics import evaluate_probs

    rng = np.random.default_rng(0)
    centres = rng.normal(0, 3, (2, 10))

    def split(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = rng.integers(0, 2, n)
        embeddings = centres[y][:, None, :] + rng.normal(0, 1, (n, 5, 10))  # [N, T, D]
        labels = np.stack([y, 1 - y, np.ones(n), np.full(n, np.nan)], axis=1).astype("f4")
        labels[:, :2][rng.random((n, 2)) < 0.3] = np.nan  # classes "always" (all positive), "never_seen" (no labels)
        return embeddings, labels

    train_x, train_y = split(80)
    test_x, test_y = split(40)
    probe = fit_probe(train_x, train_y)
    metrics, per_class = evaluate_probs(probe.probs(test_x), test_y, ["a", "not_a", "always", "never_seen"])
    assert metrics["mAP"] > 0.95 and metrics["ROC_AUC"] > 0.95
    logits = probe.logits(torch.from_numpy(test_x))
    assert logits.shape == (40, 4) and logits.dtype == torch.float32
    # one label kind: a constant at the smoothed positive rate; no labels at all: 0.5
    assert torch.allclose(logits[:, 2], logits[0, 2]) and logits[0, 2] > 2.0
    assert torch.all(logits[:, 3] == 0.0)


def test_predict_and_time_a_student():
    student = tiny_student()
    frames = toy_split(5, 0).frames
    probs = predict_student(student, frames, batch_size=2)
    assert probs.shape == (5, CLASSES) and ((probs >= 0) & (probs <= 1)).all()
    assert predict_student(student, frames[:0]).shape == (0, CLASSES)
    assert inference_ms_per_clip(student, frames, warmup=1) > 0.0


def test_evaluate_student_reports_dcor_as_one_minus_the_regulariser():
    data = toy_split(20, 0)
    metrics, losses = evaluate_student(tiny_student(), data, "student", "toy", 0.0, quick())
    assert losses["dcor"] == pytest.approx(1.0 - losses["east"]) and 0.0 <= losses["dcor"] <= 1.0
    assert losses["total"] == pytest.approx(losses["prediction"]) and set(metrics) >= {"mAP", "ROC_AUC"}


def test_the_step_budget_ends_training_mid_epoch_and_reference_means_the_tasks():
    from mirops.train.east import step_budget

    # 24 clips in batches of 16: 2 steps an epoch, so 5 steps are two epochs and one batch of the third
    result = fit_student(tiny_student(), toy_split(24, 1), toy_split(8, 2), quick(epochs=10, max_steps=5), seed=0,
                         mode="student")
    assert [row["epoch"] for row in result.history] == [1, 2, 3]
    assert step_budget(EastParams(max_steps="reference")) == 80_000  # OpenMIC's trainer
    assert step_budget(EastParams(task="tagging", student="mobile_fcn", max_steps="reference")) == 100_000
    assert step_budget(EastParams()) is None


def test_early_stopping_can_watch_the_valid_loss_as_the_reference_does():
    student = tiny_student()
    for module in student.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = 0.0
    params = quick(epochs=8, lr=1e-12, patience=2, stop_on="loss")
    result = fit_student(student, toy_split(24, 1), toy_split(8, 2), params, seed=0, mode="student")
    assert result.stopped_early and [row["epoch"] for row in result.history] == [1, 2, 3]


def test_mel_jitter_recomputes_training_frames_from_the_audio_at_every_step():
    """The front end's per-clip mel-band jitter reaches training: train batches are computed from the audio in
    training mode (a different bank each time); valid and test keep the cached eval-mode frames."""
    from mirops.train.east import ClipWaves, gather

    torch.manual_seed(0)
    student = CPResNet(CLASSES, rho=3, base_channels=8)  # OpenMIC's front end: 32 kHz, 128 bands, jitter on
    audio = 0.1 * torch.randn(12, 32_000)
    reads: list[int] = []

    def read(i: int) -> np.ndarray:
        reads.append(i)
        return audio[i].numpy()

    frames = student.frontend.eval()(audio)
    labels = (torch.rand(12, CLASSES) > 0.5).float()
    labels[0], labels[1] = 1.0, 0.0
    train = EastSet(frames, labels, waves=ClipWaves(read, np.arange(12)))
    valid = EastSet(frames[:4], labels[:4])
    front = student.frontend.train()
    one, two = (gather(train, torch.arange(4), None, torch.device("cpu"), front).frames for _ in range(2))
    assert one.shape == frames[:4].shape and not torch.allclose(one, two)  # jittered afresh
    assert torch.allclose(gather(train, torch.arange(4), None, torch.device("cpu")).frames, frames[:4])

    reads.clear()
    fit_student(student, train, valid, quick(epochs=1, batch_size=4, mel_jitter=True), seed=0, mode="student")
    assert sorted(reads) == list(range(12))  # every train clip's audio, once per epoch
    reads.clear()
    fit_student(student, train, valid, quick(epochs=1, batch_size=4, mel_jitter=False), seed=0, mode="student")
    assert reads == []


def test_the_east_reference_preset_is_the_references_recipe(tmp_path):
    from mirops.config import preset_overrides
    from mirops.train.east import effective_recipe

    settings = Settings.load(tmp_path, **preset_overrides("reference", "east"))
    p = settings.east
    assert settings.seed == 1223 and p.stop_on == "loss" and p.max_steps == "reference"
    recipe = effective_recipe(p, "east", "passt")
    assert recipe["max_steps"] == 80_000 and recipe["patience"] == 15 and recipe["lr_patience"] == 8
    assert recipe["mel_jitter"] is True and recipe["lam"] == 0.9  # OpenMIC, PaSST (docs/methods.md §3.7-3.9)
    tagging = effective_recipe(p.model_copy(update={"task": "tagging"}), "east", "vggish")
    assert (tagging["max_steps"], tagging["patience"], tagging["mel_jitter"]) == (100_000, 12, False)
    with pytest.raises(ValueError, match="unknown east training preset 'tuned'; choose one of \\['reference'\\]"):
        preset_overrides("tuned", "east")
