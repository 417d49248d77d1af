"""Per-clip audio descriptors on signals whose answers are known."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mirops.features.descriptors import DESCRIPTOR_COLUMNS, clip_descriptors, descriptor_table

SR = 16000


def sine(freq: float = 1000.0, seconds: float = 2.0, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def noise(seconds: float = 2.0, seed: int = 0) -> np.ndarray:
    return (0.2 * np.random.default_rng(seed).standard_normal(int(seconds * SR))).astype(np.float32)


def test_sine_has_its_frequency_as_centroid_and_is_tonal():
    d = clip_descriptors(sine(1000.0), SR)
    assert d["spectral_centroid_hz"] == pytest.approx(1000.0, rel=0.02)
    assert d["spectral_rolloff_hz"] == pytest.approx(1000.0, rel=0.05)
    assert d["spectral_flatness"] < 0.01
    assert d["zero_crossing_rate"] == pytest.approx(2 * 1000 / SR, rel=0.05)
    assert d["peak"] == pytest.approx(0.5, abs=1e-3)
    assert d["rms_db"] == pytest.approx(20 * math.log10(0.5 / math.sqrt(2)), abs=0.1)
    assert -12.0 < d["loudness_lufs"] < -6.0
    assert d["duration_s"] == pytest.approx(2.0)
    assert d["clipping_ratio"] == 0.0 and d["silence_ratio"] == 0.0


def test_white_noise_is_flat_and_crosses_zero_often():
    d, tone = clip_descriptors(noise(), SR), clip_descriptors(sine(), SR)
    assert d["spectral_flatness"] > 0.4  # ~0.56 (e^-gamma) for a periodogram of white noise
    assert d["zero_crossing_rate"] > 0.4
    assert d["spectral_centroid_hz"] == pytest.approx(SR / 4, rel=0.05)
    assert d["spectral_bandwidth_hz"] > 10 * tone["spectral_bandwidth_hz"]


def test_half_silence_is_counted_and_does_not_drag_spectral_means():
    full, half = sine(seconds=2.0), sine(seconds=2.0)
    half[SR:] = 0.0
    d, ref = clip_descriptors(half, SR), clip_descriptors(full, SR)
    assert d["silence_ratio"] == pytest.approx(0.5, abs=0.02)
    assert d["spectral_centroid_hz"] == pytest.approx(ref["spectral_centroid_hz"], rel=0.03)
    assert d["zero_crossing_rate"] == pytest.approx(ref["zero_crossing_rate"], rel=0.05)


def test_hard_clipping_is_detected():
    clipped = np.clip(sine(amplitude=3.0), -1.0, 1.0)
    assert clip_descriptors(clipped, SR)["clipping_ratio"] > 0.3
    assert clip_descriptors(sine(amplitude=0.9), SR)["clipping_ratio"] == 0.0


@pytest.mark.parametrize("wave", [np.zeros(SR, np.float32), np.zeros(10, np.float32), sine(seconds=0.01)])
def test_silent_and_tiny_clips_give_finite_values(wave):
    d = clip_descriptors(wave, SR)
    assert list(d) == DESCRIPTOR_COLUMNS
    assert all(math.isfinite(v) for v in d.values())
    if not wave.any():
        assert d["silence_ratio"] == 1.0 and d["loudness_lufs"] == -70.0


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="mono"):
        clip_descriptors(np.zeros((2, 100), np.float32), SR)
    with pytest.raises(ValueError, match="NaN"):
        clip_descriptors(np.array([0.0, np.nan], np.float32), SR)


def test_table_has_one_row_per_clip_in_column_order():
    clips = [(f"clip{i}", sine(200.0 * (i + 1), seconds=0.5)) for i in range(25)]  # > 20: progress path
    table = descriptor_table(iter(clips), SR)
    assert list(table.columns) == ["clip_id", *DESCRIPTOR_COLUMNS]
    assert table["clip_id"].tolist() == [c for c, _ in clips]
    assert np.isfinite(table[DESCRIPTOR_COLUMNS].to_numpy()).all()
    assert table["spectral_centroid_hz"].is_monotonic_increasing
    with pytest.raises(ValueError, match="clip 'bad'"):
        descriptor_table([("bad", np.array([np.inf], np.float32))], SR)
