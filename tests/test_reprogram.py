"""What a user checks of a reprogrammed model: only the tiny parts train, the backbone never moves."""

import numpy as np
import pytest
import torch

from mirops.config import ReprogramParams
from mirops.models.reprogram import OutputMapping, ReprogrammedClassifier
from mirops.models.transforms import UNetTransform
from mirops.train.loop import SpecAugment, masked_bce
from mirops.train.reprogram import SpecSet, fit


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_reference_parameter_counts():
    assert n_params(UNetTransform()) == 1285  # docs/methods.md §1.4
    assert n_params(OutputMapping(768, 20)) == 16916  # the AST head of the reference


def test_unet_keeps_the_spectrogram_shape():
    x = torch.randn(2, 1, 96, 64)
    assert UNetTransform()(x).shape == x.shape
    assert (UNetTransform(final_relu=True)(x) >= 0).all()


@pytest.fixture(scope="module")
def model():
    from mirops.models.yamnet import YAMNet

    torch.manual_seed(0)
    return ReprogrammedClassifier(YAMNet.from_onnx(), ["a", "b", "c"], transform="unet")


def test_only_transform_and_head_train(model):
    counts = model.count_parameters()
    assert counts["trainable"] == 1285 + (2 * 1024 + 1024 * 3 + 3)
    assert counts["total"] - counts["trainable"] == n_params(model.backbone)


def test_a_training_step_leaves_the_backbone_untouched(model):
    backbone_before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    head_before = model.head.linear.weight.detach().clone()
    specs = model.spectrogram(torch.from_numpy(np.random.default_rng(0).normal(0, 0.1, (4, 16000 * 2)).astype("f4")))
    labels = torch.tensor([[1.0, 0.0, float("nan")], [0.0, 1.0, 1.0], [float("nan")] * 3, [0.3, 0.9, 0.0]])
    params = ReprogramParams(epochs=1, batch_size=2, lr=1e-2, freq_mask=4, time_mask=20)
    fit(model, SpecSet(specs, labels), SpecSet(specs, labels), params, seed=0)
    for key, value in model.backbone.state_dict().items():
        assert torch.equal(value, backbone_before[key]), f"backbone weight {key} changed"
    assert not torch.equal(model.head.linear.weight, head_before)
    assert not model.backbone.training  # stays in eval mode even after model.train()


def test_forward_takes_raw_audio_of_any_length(model):
    model.eval()
    with torch.no_grad():
        for seconds in (0.5, 3.0, 10.0):
            assert model(torch.zeros(2, int(16000 * seconds))).shape == (2, 3)


def test_masked_loss_ignores_missing_labels_and_is_finite_when_all_missing():
    logits = torch.tensor([[2.0, -1.0], [0.5, 3.0]], requires_grad=True)
    labels = torch.tensor([[1.0, float("nan")], [float("nan"), float("nan")]])
    loss = masked_bce(logits, labels)
    expected = torch.nn.functional.binary_cross_entropy_with_logits(torch.tensor([2.0]), torch.tensor([1.0]))
    assert torch.isclose(loss, expected)
    none = masked_bce(logits, torch.full((2, 2), float("nan")))
    none.backward()
    assert torch.isfinite(none) and none.item() == 0.0


def test_specaugment_masks_with_silence_and_keeps_shape():
    torch.manual_seed(0)
    spec = torch.zeros(3, 200, 64)
    out = SpecAugment(freq_mask=10, time_mask=40)(spec)
    assert out.shape == spec.shape and (out < 0).any()


def test_calibrated_unet_starts_close_to_its_input():
    torch.manual_seed(0)
    x = torch.randn(4, 1, 200, 64) * 2.2 - 0.5  # log-mel scale of the demo data
    unet = UNetTransform(final_relu=False)
    unet.calibrate(mean=float(x.mean()), std=float(x.std()))
    unet.eval()
    with torch.no_grad():
        y = unet(x)
    corr = torch.corrcoef(torch.stack([x.flatten(), y.flatten()]))[0, 1]
    assert corr > 0.8, f"calibrated U-Net output correlates {corr:.2f} with its input"
    assert abs(float(y.mean() - x.mean())) < float(x.std()) / 2  # the decoder adds a little


# --------------------------------------------------------------------------- recipe, checkpoints, resume


def _tiny_problem(seed: int = 0, n: int = 12, classes: int = 3):
    """Random log-mel-like frames and soft labels with missing entries: enough for the loop's bookkeeping."""
    rng = np.random.default_rng(seed)
    specs = torch.from_numpy(rng.normal(-6.0, 2.0, (n, 96, 64)).astype("f4"))
    labels = rng.random((n, classes)).astype("f4")
    labels[rng.random((n, classes)) < 0.3] = np.nan
    labels[0, :] = np.arange(classes) % 2 == 0  # every class has a positive and a negative
    labels[1, :] = np.arange(classes) % 2 == 1
    return SpecSet(specs, torch.from_numpy(labels))


def _pooled_model(transform: str = "unet", mapping: str = "linear") -> ReprogrammedClassifier:
    from mirops.models.backbone import SpectrogramPool
    from mirops.models.yamnet import YAMNet

    torch.manual_seed(0)
    pool = SpectrogramPool.like(ReprogrammedClassifier(YAMNet.from_onnx(), ["x"]).backbone)
    return ReprogrammedClassifier(pool, ["a", "b", "c"], transform=transform, mapping=mapping)


def _trainable(model) -> dict[str, torch.Tensor]:
    return {k: v for k, v in model.state_dict().items() if not k.startswith("backbone.")}


def test_resume_after_an_interruption_ends_exactly_like_the_uninterrupted_run(tmp_path):
    from mirops.train.checkpoint import Checkpoints

    train, valid = _tiny_problem(0), _tiny_problem(1)
    params = ReprogramParams(epochs=4, batch_size=4, lr=1e-2, freq_mask=8, time_mask=20, lr_milestones=[2])
    straight = _pooled_model()
    expected = fit(straight, train, valid, params, seed=3, checkpoints=Checkpoints(tmp_path / "a", "k"))

    class Interrupted(Exception):
        pass

    def stop_after_two(row):
        if row["epoch"] == 2:
            raise Interrupted

    checkpoints = Checkpoints(tmp_path / "b", "k")
    with pytest.raises(Interrupted):
        fit(_pooled_model(), train, valid, params, seed=3, on_epoch=stop_after_two, checkpoints=checkpoints)
    assert checkpoints.epochs() == [1, 2]
    resumed_model = _pooled_model("unet")
    with torch.no_grad():  # a fresh process starts from other weights: the checkpoint must overwrite them all
        for p in resumed_model.trainable_parameters():
            p.add_(1.0)
    resumed = fit(resumed_model, train, valid, params, seed=3, checkpoints=checkpoints, resume=True)
    assert resumed.resumed_from == 2 and checkpoints.epochs() == [1, 2, 3, 4]
    assert resumed.history == [{**row, "epoch_seconds": r["epoch_seconds"]}
                               for row, r in zip(expected.history, resumed.history, strict=True)]
    assert resumed.best_epoch == expected.best_epoch and resumed.best_valid == expected.best_valid
    for key, value in _trainable(straight).items():
        assert torch.equal(value, _trainable(resumed_model)[key]), key


def test_a_checkpoint_of_another_configuration_is_refused(tmp_path):
    from mirops.train.checkpoint import CheckpointMismatch, Checkpoints

    params = ReprogramParams(epochs=1, batch_size=4)
    fit(_pooled_model(), _tiny_problem(0), _tiny_problem(1), params, seed=0, checkpoints=Checkpoints(tmp_path, "one"))
    with pytest.raises(CheckpointMismatch, match="epoch-001.pt"):
        fit(_pooled_model(), _tiny_problem(0), _tiny_problem(1), params, seed=0,
            checkpoints=Checkpoints(tmp_path, "two"), resume=True)
    assert not list(tmp_path.glob("*.tmp")), "no half-written checkpoint is left behind"


def test_early_stopping_on_valid_map_and_the_lr_schedule():
    params = ReprogramParams(epochs=6, batch_size=4, lr=0.0, patience=2, lr_milestones=[1], lr_gamma=0.5)
    result = fit(_pooled_model("cnn"), _tiny_problem(0), _tiny_problem(1), params, seed=0)
    # lr 0 and no BatchNorm: the model never changes, so valid mAP never improves on epoch 1
    assert result.stopped_early and [r["epoch"] for r in result.history] == [1, 2, 3] and result.best_epoch == 1
    params = ReprogramParams(epochs=3, batch_size=4, lr=0.1, lr_milestones=[1, 2], lr_gamma=0.5)
    lrs = [r["lr"] for r in fit(_pooled_model(), _tiny_problem(0), _tiny_problem(1), params, seed=0).history]
    assert lrs == pytest.approx([0.05, 0.025, 0.025])


def test_a_model_with_nothing_to_train_is_only_validated():
    from mirops.models.yamnet import YAMNet

    model = ReprogrammedClassifier(YAMNet.from_onnx(), ["piano", "violin"], transform="none", mapping="audioset")
    assert model.count_parameters()["trainable"] == 0
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = fit(model, _tiny_problem(0, classes=2), _tiny_problem(1, classes=2), ReprogramParams(epochs=3), seed=0)
    assert result.best_epoch == 0 and len(result.history) == 1 and np.isfinite(result.best_valid["ROC_AUC"])
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_presets_set_the_recipe_and_single_values_still_win(tmp_path):
    from mirops.config import TRAIN_PRESETS, Settings, preset_overrides

    settings = Settings.load(tmp_path, **preset_overrides("reference"))
    p = settings.reprogram
    assert (p.lr, p.batch_size, p.epochs) == (1e-5, 4, 30)
    assert p.lr_milestones == list(range(5, 26)) and p.freq_mask == 24
    # the reference's U-Net (its final ReLU), trained on the whole train split for 30 epochs, the last one kept
    assert p.final_relu and p.fold_valid and p.select == "last" and p.patience is None
    settings = Settings.load(tmp_path, **(preset_overrides("reference") | {"reprogram__epochs": 2}))
    assert settings.reprogram.epochs == 2 and settings.reprogram.lr == 1e-5
    tuned = Settings.load(tmp_path, **preset_overrides("tuned")).reprogram
    assert not tuned.final_relu and tuned.select == "valid" and not tuned.fold_valid and tuned.patience == 4
    assert set(TRAIN_PRESETS["reprogram"]) == {"reference", "tuned"}
    with pytest.raises(ValueError, match="unknown reprogram training preset 'fast'"):
        preset_overrides("fast")


def test_selection_settings_that_contradict_each_other_are_errors():
    with pytest.raises(ValueError, match="select=last"):
        ReprogramParams(fold_valid=True)  # valid clips in training cannot choose the epoch
    with pytest.raises(ValueError, match="patience=null"):
        ReprogramParams(select="last", patience=3)


def test_the_last_epoch_is_kept_and_training_needs_no_valid_clips():
    train, valid = _tiny_problem(0), _tiny_problem(1)
    params = ReprogramParams(epochs=3, batch_size=4, lr=0.05, select="last", patience=None)
    model = _pooled_model("cnn")
    result = fit(model, train, valid, params, seed=0)
    assert result.best_epoch == 3 and [r["epoch"] for r in result.history] == [1, 2, 3]
    assert "valid_mAP" in result.history[-1]  # a valid split, when there is one, is still reported

    empty = SpecSet(valid.specs[:0], valid.labels[:0])
    folded = _pooled_model("cnn")
    result = fit(folded, train, empty, params, seed=0)
    assert result.best_epoch == 3 and result.best_valid == {}
    assert all(set(row) >= {"epoch", "train_loss"} and "valid_loss" not in row for row in result.history)
    assert all(torch.equal(v, _trainable(model)[k]) for k, v in _trainable(folded).items())  # same run, same end
    with pytest.raises(ValueError, match="no valid clips"):
        fit(_pooled_model("cnn"), train, empty, ReprogramParams(epochs=1), seed=0)


def test_specaugment_fills_with_the_backbones_silence():
    torch.manual_seed(0)
    out = SpecAugment(freq_mask=10, time_mask=40, fill_value=0.0)(torch.full((3, 200, 64), 5.0))
    assert set(torch.unique(out).tolist()) <= {0.0, 5.0} and (out == 0.0).any()
