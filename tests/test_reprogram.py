"""What a user checks of a reprogrammed model: only the tiny parts train, the backbone never moves."""

import numpy as np
import pytest
import torch

from mirops.config import TrainParams
from mirops.models.reprogram import OutputMapping, ReprogrammedClassifier
from mirops.models.transforms import UNetTransform
from mirops.train.reprogram import SpecAugment, SpecSet, fit, masked_bce


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_reference_parameter_counts():
    assert n_params(UNetTransform()) == 1285  # methods.md §1.4
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
    params = TrainParams(epochs=1, batch_size=2, lr=1e-2, freq_mask=4, time_mask=20)
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
