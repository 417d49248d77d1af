"""Audio that never crashes a run: every broken file of a real download ends in the quarantine with its reason."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mirops.data.audio import AudioError, fit_length, load_audio
from mirops.data.manifest import LabelSpec, read_manifest, write_manifest
from mirops.data.quarantine import QUARANTINE, CheckPolicy, check_clips, quarantine_dataset, read_quarantine
from tests.broken_audio import tone, write_corpus


def corpus_dataset(root, seconds: float = 3.0) -> dict[str, str]:
    """A dataset whose manifest lists the whole corpus (good and broken files)."""
    expected = write_corpus(root, seconds)
    paths = sorted(expected)
    df = pd.DataFrame({
        "clip_id": [p.split("/")[-1] for p in paths], "path": paths, "split": "train",
        "group": [f"g{i}" for i in range(len(paths))], "duration_s": seconds, "sample_rate": 16000,
        "label:piano": 1.0,
    })
    write_manifest(root, df, LabelSpec(["piano"]))
    return expected


def test_corpus_has_at_least_ten_kinds_of_broken_file(tmp_path):
    kinds = set(write_corpus(tmp_path).values()) - {"ok"}
    assert len(kinds) >= 10, kinds


def test_every_broken_file_gets_its_reason_and_good_files_pass(tmp_path):
    expected = write_corpus(tmp_path)
    clips = pd.DataFrame({"clip_id": list(expected), "path": list(expected)})
    checked = check_clips(tmp_path, clips, CheckPolicy(min_seconds=0.5), expected_seconds=[3.0] * len(clips),
                          workers=2)
    got = {c.clip_id: c.reason or "ok" for c in checked}
    assert got == expected
    good = [c for c in checked if c.reason is None]
    assert all(abs(c.info.duration_s - 3.0) < 0.05 for c in good)
    assert {c.info.sample_rate for c in good} == {16000, 44100}


def test_quarantine_moves_bad_clips_out_of_the_manifest_and_says_why(tmp_path):
    expected = corpus_dataset(tmp_path)
    report = quarantine_dataset(tmp_path, workers=2)
    n_bad = sum(r != "ok" for r in expected.values())
    assert (report.checked, report.quarantined, report.new) == (len(expected), n_bad, n_bad)
    df, _ = read_manifest(tmp_path)
    table = read_quarantine(tmp_path)
    assert set(df["path"]) == {p for p, r in expected.items() if r == "ok"}
    assert dict(zip(table["path"], table["reason"], strict=True)) == {p: r for p, r in expected.items() if r != "ok"}
    assert table["detail"].str.len().min() > 0 and set(table["split"]) == {"train"}
    assert report.reasons["non_finite"] == 2 and "quarantined" in report.line()
    # A second check finds nothing new and keeps the table.
    again = quarantine_dataset(tmp_path, workers=1)
    assert (again.new, again.quarantined) == (0, n_bad)


def test_a_clean_dataset_gets_an_empty_quarantine_table(tmp_path):
    corpus_dataset(tmp_path)
    df, spec = read_manifest(tmp_path)
    write_manifest(tmp_path, df[df["clip_id"] == "good.wav"], spec)
    report = quarantine_dataset(tmp_path)
    assert report.quarantined == 0 and (tmp_path / QUARANTINE).exists() and len(read_quarantine(tmp_path)) == 0


def test_clips_far_shorter_than_their_declared_duration_are_quarantined(tmp_path):
    write_corpus(tmp_path, seconds=3.0)
    clips = pd.DataFrame({"clip_id": ["a"], "path": ["audio/good.wav"]})
    [checked] = check_clips(tmp_path, clips, CheckPolicy(min_seconds=0.5), expected_seconds=[10.0])
    assert checked.reason == "too_short" and "3.00 s" in checked.detail


def test_load_audio_mixes_resamples_and_fits_length(tmp_path):
    write_corpus(tmp_path)
    wave = load_audio(tmp_path / "audio/good_44k_stereo.ogg", 16000, seconds=2.0)
    assert wave.shape == (32000,) and wave.dtype == np.float32
    assert 0.15 < np.abs(wave).max() < 0.3  # the mean of a 0.3 and a 0.15 channel
    with pytest.raises(AudioError, match="zero_bytes.wav: empty_file"):
        load_audio(tmp_path / "audio/zero_bytes.wav", 16000)


def test_crop_policy_centre_or_start_and_padding_with_silence():
    wave = np.arange(10, dtype=np.float32)
    assert fit_length(wave, 4).tolist() == [3, 4, 5, 6]
    assert fit_length(wave, 4, "start").tolist() == [0, 1, 2, 3]
    assert fit_length(tone(0.001), 20)[-3:].tolist() == [0, 0, 0]
    with pytest.raises(ValueError, match="crop policy"):
        fit_length(wave, 4, "end")


def test_a_second_check_decodes_nothing_and_training_reads_the_checked_audio(tmp_path, monkeypatch):
    from mirops.config import Settings
    from mirops.pipeline.audit import folder_clips
    from mirops.pipeline.ingest import check_data
    from tests.conftest import make_project

    root = make_project(tmp_path / "p")
    corpus_dataset(root / "data")
    settings = Settings.load(root)
    first = check_data(settings)

    def no_decoding(path):
        raise AssertionError(f"{path} decoded again")

    monkeypatch.setattr("mirops.data.quarantine.decode", no_decoding)
    monkeypatch.setattr("mirops.data.audio.decode", no_decoding)
    again = check_data(settings)
    assert (again.new, again.quarantined) == (0, first.quarantined)
    loader = folder_clips(settings, settings.data_dir).loader(2.0)
    assert loader.wave("audio/good.ogg").shape == (32000,)  # from the cache the check filled
