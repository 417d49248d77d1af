"""The five data challenges, planted one at a time: each is caught by the right expectation and named."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from mirops.audit.report import run_audit
from mirops.config import Settings
from mirops.data.manifest import LabelSpec, read_manifest, write_manifest
from mirops.pipeline import audit as audit_stage
from mirops.pipeline.version import version
from tests.conftest import make_project

SR = 16000
CLASSES = ["bells", "hum", "noise"]
SPLIT_OF_GROUP = ["train"] * 12 + ["valid"] * 4 + ["test"] * 4  # 20 groups of 3 clips


def clip_audio(rng: np.random.Generator, seconds: float = 2.0) -> np.ndarray:
    """A random melody of short harmonic notes over a little noise: every clip sounds different, and like
    music it changes over time (what an audio fingerprint keys on)."""
    n = int(seconds * SR)
    wave = 0.01 * rng.standard_normal(n)
    note = int(0.125 * SR)
    t = np.arange(note) / SR
    for start in range(0, n - note + 1, note):
        f0 = 110 * 2 ** (rng.integers(0, 36) / 12)
        tone = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 6))
        wave[start : start + note] += tone * np.exp(-t * rng.uniform(5, 20))
    return (0.3 * wave / np.abs(wave).max() * 10 ** (rng.uniform(-2, 2) / 20)).astype(np.float32)


def build(root) -> Settings:
    """A clean 60-clip dataset with audio: every split has positives and negatives of every class."""
    rng = np.random.default_rng(0)
    data = root / "data"
    rows = []
    for i in range(60):
        group = i // 3
        path = f"audio/c{i:02d}.wav"
        (data / "audio").mkdir(parents=True, exist_ok=True)
        sf.write(data / path, clip_audio(rng), SR, subtype="PCM_16")
        row = {"clip_id": f"c{i:02d}", "path": path, "split": SPLIT_OF_GROUP[group], "group": f"g{group}",
               "duration_s": 2.0, "sample_rate": SR}
        row.update({f"label:{c}": 0.9 if (i + j) % 2 == 0 else 0.1 for j, c in enumerate(CLASSES)})
        rows.append(row)
    write_manifest(data, pd.DataFrame(rows), LabelSpec(CLASSES))
    return Settings.load(root, audit__min_positives_per_class=2, audit__duration_bounds_s=[1.0, 60.0])


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    root = make_project(tmp_path_factory.mktemp("faults") / "clean")
    return build(root)


def audit(settings: Settings, df: pd.DataFrame | None = None, spec: LabelSpec | None = None, reference=None,
          out: str = "audit"):
    base, base_spec = read_manifest(settings.data_dir)
    df = base if df is None else df
    clips = audit_stage.folder_clips(settings, settings.data_dir)
    return run_audit(df, spec or base_spec, settings.audit, settings.expectations_dir, settings.root / out,
                     "planted", audio=clips.descriptors(df)[0],
                     duplicates=audit_stage.audio_duplicates(settings, clips, df), reference=reference)


def failed(result, suite: str) -> list[str]:
    return [m for m in [*result.critical_failures, *result.warnings] if m.startswith(f"{suite}:")]


def test_the_clean_dataset_passes_without_a_warning(clean):
    result = audit(clean)
    assert result.success and result.critical_failures == [] and result.warnings == []
    assert len(result.tables["audio"]) == 60 and result.tables["audio"]["cross_split_duplicates"].sum() == 0


def test_a_class_with_no_positives_in_test(clean):
    df, _ = read_manifest(clean.data_dir)
    df.loc[df["split"] == "test", "label:hum"] = 0.0
    [message] = failed(result := audit(clean, df), "label_balance")[:1]
    assert not result.success and "hum/test (observed 0)" in message


def test_a_class_unannotated_in_valid(clean):
    df, _ = read_manifest(clean.data_dir)
    df.loc[df["split"] == "valid", "label:noise"] = np.nan
    result = audit(clean, df)
    [message] = [m for m in result.critical_failures if m.startswith("missing_labels:")]
    assert "noise/valid" in message and "annotated at least once" in message


def test_a_class_whose_labels_are_mostly_unsure(clean):
    df, _ = read_manifest(clean.data_dir)
    df["label:bells"] = np.random.default_rng(1).uniform(0.4, 0.6, len(df))
    [message] = failed(audit(clean, df), "subjectivity")
    assert "bells" in message and "hum" not in message


def test_a_class_whose_positives_all_come_from_one_group(clean):
    df, _ = read_manifest(clean.data_dir)
    df["label:bells"] = np.where(df["group"] == "g0", 1.0, 0.0)
    [message] = failed(audit(clean, df), "class_diversity")
    assert "bells (observed 1)" in message


def test_a_group_in_train_and_test(clean):
    df, _ = read_manifest(clean.data_dir)
    df.loc[df["clip_id"] == "c00", "split"] = "test"
    [message] = failed(audit(clean, df), "leakage")
    assert "g0" in message


def test_the_same_audio_re_encoded_in_train_and_test(clean, tmp_path):
    settings = build(make_project(tmp_path / "dup"))
    wave, _ = sf.read(settings.data_dir / "audio/c00.wav", dtype="float32")  # a train clip ...
    sf.write(settings.data_dir / "audio/c59.ogg", wave, SR)  # ... re-encoded as Ogg, as test clip c59
    (settings.data_dir / "audio/c59.wav").unlink()
    df, spec = read_manifest(settings.data_dir)
    df.loc[df["clip_id"] == "c59", "path"] = "audio/c59.ogg"
    write_manifest(settings.data_dir, df, spec)
    result = audit(settings)
    [message] = [m for m in result.critical_failures if m.startswith("duplicate_audio:")]
    assert "c00" in message and "c59" in message and "c01" not in message


def test_a_valid_split_6_db_quieter(clean, tmp_path):
    settings = build(make_project(tmp_path / "quiet"))
    df, _ = read_manifest(settings.data_dir)
    for path in df.loc[df["split"] == "valid", "path"]:
        wave, sr = sf.read(settings.data_dir / path, dtype="float32")
        sf.write(settings.data_dir / path, wave * 10 ** (-6 / 20), sr, subtype="PCM_16")
    [message] = failed(audit(settings), "descriptor_shift")
    assert "rms_db/valid" in message and "loudness_lufs/valid" in message and "/test" not in message


def test_clipped_and_mostly_silent_files(clean, tmp_path):
    settings = build(make_project(tmp_path / "noisy"))
    wave, sr = sf.read(settings.data_dir / "audio/c03.wav", dtype="float32")
    sf.write(settings.data_dir / "audio/c03.wav", np.clip(wave * 8, -1, 1), sr, subtype="PCM_16")
    quiet = np.zeros_like(wave)
    quiet[:1000] = wave[:1000]  # 95 % silence
    sf.write(settings.data_dir / "audio/c04.wav", quiet, sr, subtype="PCM_16")
    messages = failed(audit(settings), "integrity")
    assert any("clipped" in m and "c03" in m and "c04" not in m for m in messages)
    assert any("silent frames" in m and "c04" in m for m in messages)


def test_a_new_version_with_a_very_different_label_mix(clean, tmp_path):
    settings = build(make_project(tmp_path / "mix"))
    reference, spec = read_manifest(settings.data_dir)
    shifted = reference.copy()
    shifted["label:bells"], shifted["label:noise"] = 0.95, 0.02  # bells everywhere, noise gone
    result = audit(settings, shifted, reference=(reference, spec, "ref0000000"))
    messages = failed(result, "representativeness")
    assert any("data vs reference ref00000" in m for m in messages)


def test_audit_step_logs_plots_and_tags_the_version(clean, tmp_path):
    from mlflow import MlflowClient

    from mirops import lineage
    from mirops.registry import tracking

    root = tmp_path / "step"
    shutil.copytree(clean.root, root)
    settings = Settings.load(root, audit__min_positives_per_class=2)
    dataset_version = version(settings, check=False)
    summary = audit_stage.audit(settings, dataset_version)
    tracking.setup(settings)
    run = MlflowClient().get_run(summary.run_id)
    artifacts = {a.path for a in MlflowClient().list_artifacts(summary.run_id, "plots")}
    assert {"plots/prevalence_per_split.png", "plots/missing_and_ambiguous.png", "plots/groups_per_class.png",
            "plots/descriptors_per_split.png"} <= artifacts
    assert run.data.tags[lineage.TAG_DATASET_VERSION] == dataset_version
    assert run.data.metrics["suite_integrity_failed"] == 0
