"""The demo dataset: rendered through real GM SoundFonts, checked the way a user would check it."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from mirops.config import Settings
from mirops.data import demo
from mirops.data.gm import GM_INSTRUMENTS, UnknownInstrumentError, check_classes, gm_instrument
from mirops.data.manifest import label_column, read_manifest
from mirops.data.scores import (
    CRASH,
    KICK,
    RIDE,
    SIDE_STICK,
    SNARE,
    SNARE_2,
    TOMS,
    Key,
    Song,
    cymbal_part,
    drum_part,
    part_for,
)
from mirops.data.synth import SoundFontNotFoundError, find_soundfont

CYMBAL_KEYS = {42, 44, 46, 49, 51, 52, 53, 55, 57, 59}
TINY = {
    "demo__clips": 12,
    "demo__groups": 4,
    "demo__clip_seconds": 3.0,
    "demo__production_clips": 4,
    "demo__missing_fraction": 0.4,
}


def _soundfonts_missing() -> str | None:
    try:
        import tinysoundfont  # noqa: F401
    except ImportError:
        return "tinysoundfont is not installed"
    try:
        find_soundfont("FluidR3_GM.sf2")
        find_soundfont("TimGM6mb.sf2")
    except SoundFontNotFoundError as exc:
        return str(exc)
    return None


needs_soundfonts = pytest.mark.skipif(_soundfonts_missing() is not None, reason=_soundfonts_missing() or "")


def tiny_settings(root: Path, **overrides: object) -> Settings:
    return Settings.load(root, **{**TINY, **overrides})


def file_hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def instrument_sets(df: pd.DataFrame) -> list[set[str]]:
    return [set(s.split("|")) for s in df["instruments"]]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, demo.DemoSummary]:
    if _soundfonts_missing():
        pytest.skip(_soundfonts_missing())
    settings = tiny_settings(tmp_path_factory.mktemp("demo"), seed=7)
    return settings, demo.build_demo(settings)


# -- the dataset ---------------------------------------------------------------------------------------


@needs_soundfonts
def test_manifest_meets_the_contract_and_labels_match_the_instruments(built) -> None:
    settings, summary = built
    df, spec = read_manifest(settings.data_dir)
    classes = settings.demo.classes
    assert spec.classes == classes and spec.threshold == 0.5 and spec.extra["source"] == "demo"
    assert len(df) == 12 and sum(summary.n_clips.values()) == 12
    assert set(df["split"]) == {"train", "valid", "test"}
    assert (df.groupby("group")["split"].nunique() == 1).all(), "a group straddles splits"
    assert df["group"].nunique() == 4

    labels = df[[label_column(c) for c in classes]].to_numpy(dtype=float)
    for row, present in enumerate(instrument_sets(df)):
        assert 1 <= len(present) <= settings.demo.max_instruments and present <= set(classes)
        programs = dict(p.split("=") for p in df["programs"].iloc[row].split("|"))
        assert set(programs) == present
        assert all(int(programs[c]) in GM_INSTRUMENTS[c].programs for c in present)
        for c, value in zip(classes, labels[row], strict=True):
            if np.isnan(value):
                continue
            assert (value >= 0.5) == (c in present), f"{df['clip_id'].iloc[row]}: {c}={value}, set {present}"
        assert not np.isnan(labels[row]).all(), "every clip keeps at least one annotated class"
    assert abs(np.isnan(labels).mean() - 0.4) < 0.1
    # Soft like OpenMIC: confidences, not only 0 and 1.
    annotated = labels[~np.isnan(labels)]
    assert np.mean((annotated > 0) & (annotated < 1)) > 0


@needs_soundfonts
def test_audio_is_16k_mono_audible_and_unclipped(built) -> None:
    settings, _ = built
    df, _ = read_manifest(settings.data_dir)
    for path in df["path"]:
        info = sf.info(str(settings.data_dir / path))
        assert (info.samplerate, info.channels, info.frames) == (16000, 1, 3 * 16000)
        assert info.subtype == "PCM_16"
        wave, _ = sf.read(str(settings.data_dir / path))
        peak, rms = np.abs(wave).max(), np.sqrt(np.mean(wave**2))
        assert 0.29 <= peak <= 0.91, f"{path}: peak {peak}"
        assert rms > 0.01, f"{path}: nearly silent"


@needs_soundfonts
def test_production_batch_uses_the_other_soundfont_and_keeps_true_labels(built) -> None:
    settings, summary = built
    df, spec = read_manifest(settings.production_dir)
    assert summary.n_production == len(df) == 4
    assert set(df["split"]) == {"unlabeled"}
    assert spec.extra["soundfont"] == "TimGM6mb.sf2" and set(df["soundfont"]) == {"TimGM6mb.sf2"}
    assert all((settings.production_dir / p).is_file() for p in df["path"])
    for row, present in enumerate(instrument_sets(df)):
        truth = [float(c in present) for c in spec.classes]
        assert df[[label_column(c) for c in spec.classes]].iloc[row].tolist() == truth


@needs_soundfonts
def test_same_seed_gives_identical_files_and_another_seed_other_audio(built, tmp_path: Path) -> None:
    settings, _ = built
    demo.build_demo(tiny_settings(tmp_path, seed=7))
    for name in ("data", "production"):
        assert file_hashes(settings.root / name) == file_hashes(tmp_path / name), f"{name}/ differs"

    with pytest.raises(FileExistsError, match="overwrite"):
        demo.build_demo(tiny_settings(tmp_path, seed=8))
    demo.build_demo(tiny_settings(tmp_path, seed=8), overwrite=True)
    first, other = file_hashes(settings.data_dir), file_hashes(tmp_path / "data")
    audio = [k for k in first if k.startswith("audio/")]
    assert all(first[k] != other[k] for k in audio), "another seed must give other audio"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "production"], "temporary folders left"


@needs_soundfonts
def test_failing_build_leaves_existing_data_untouched(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "keep.txt").write_text("mine")
    before = file_hashes(tmp_path)

    with pytest.raises(UnknownInstrumentError, match="mandolin"):
        demo.build_demo(tiny_settings(tmp_path, demo__classes=["piano", "mandolin"]), overwrite=True)
    assert file_hashes(tmp_path) == before

    # A failure half-way through rendering: nothing is swapped in, nothing temporary stays behind.
    real_render, calls = demo.render_clip, []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 5:
            raise RuntimeError("disk full")
        return real_render(*args, **kwargs)

    monkeypatch.setattr(demo, "render_clip", flaky)
    with pytest.raises(RuntimeError, match="disk full"):
        demo.build_demo(tiny_settings(tmp_path), overwrite=True)
    assert file_hashes(tmp_path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


@needs_soundfonts
def test_other_gm_classes_render_with_drums_and_cymbals_kept_apart(tmp_path: Path) -> None:
    classes = ["banjo", "cymbals", "drums", "mallet_percussion", "voice"]
    settings = tiny_settings(
        tmp_path,
        demo__classes=classes,
        demo__clips=6,
        demo__groups=3,
        demo__clip_seconds=2.0,
        demo__production_clips=0,
        demo__soundfont="TimGM6mb.sf2",
    )
    summary = demo.build_demo(settings)
    df, spec = read_manifest(settings.data_dir)
    assert spec.classes == classes and summary.n_clips == {"train": 2, "valid": 2, "test": 2}
    assert set().union(*instrument_sets(df)) <= set(classes)
    prod, _ = read_manifest(settings.production_dir)
    assert len(prod) == 0


# -- the parts it is made of ---------------------------------------------------------------------------


def test_gm_table_covers_openmic_except_mandolin_and_ukulele() -> None:
    assert gm_instrument("trumpet").programs == (56,) and gm_instrument("voice").programs == (52, 53, 54)
    assert gm_instrument("synthesizer").role_for(81) == "melody"
    assert gm_instrument("synthesizer").role_for(90) == "chords"
    for inst in GM_INSTRUMENTS.values():
        assert all(0 <= p <= 127 for p in inst.programs) and inst.low < inst.high
    for name in ("mandolin", "ukulele"):
        with pytest.raises(UnknownInstrumentError, match=f"{name}.*no {name} program"):
            check_classes(["piano", name])
    with pytest.raises(UnknownInstrumentError, match="more than once"):
        check_classes(["piano", "piano"])


def test_missing_soundfont_names_the_debian_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("mirops.data.synth.SOUNDFONT_DIRS", ())
    monkeypatch.setenv("MIROPS_SOUNDFONT_DIR", str(tmp_path))
    with pytest.raises(SoundFontNotFoundError, match="timgm6mb-soundfont"):
        find_soundfont("TimGM6mb.sf2")
    (tmp_path / "TimGM6mb.sf2").write_bytes(b"x")
    assert find_soundfont("TimGM6mb.sf2") == tmp_path / "TimGM6mb.sf2"


def test_parts_stay_in_the_clip_the_register_and_their_drum_keys() -> None:
    song = Song(key=Key(tonic=2, minor=True), tempo=120.0, seconds=6.0, progression=(0, 5, 2, 6))
    for role in ("chords", "melody", "bass"):
        for seed in range(5):
            notes = part_for(role, np.random.default_rng(seed), song, 40, 76)
            assert notes == sorted(notes) and notes[0].start < song.beat_s  # plays from the first beat
            assert all(0 <= n.start < 6.0 and n.end > n.start and 1 <= n.velocity <= 127 for n in notes)
            if role != "bass":  # bass approach notes may step a semitone past the range
                assert all(40 <= n.key <= 76 for n in notes), role
    for seed in range(10):
        skins = {n.key for n in drum_part(np.random.default_rng(seed), song)}
        cymbals = {n.key for n in cymbal_part(np.random.default_rng(seed), song)}
        assert KICK in skins and skins & {SNARE, SNARE_2} and skins <= {KICK, SNARE, SIDE_STICK, SNARE_2, *TOMS}
        assert cymbals <= CYMBAL_KEYS and cymbals & {CRASH, RIDE, 42, 44}


def test_groups_are_allocated_to_splits_by_fraction() -> None:
    fractions = demo.split_fractions({"train": 0.6, "valid": 0.2, "test": 0.2})
    assert demo.allocate_groups(30, fractions).count("train") == 18
    assert sorted(demo.allocate_groups(4, fractions)) == ["test", "train", "train", "valid"]
    with pytest.raises(ValueError, match="each split needs a group"):
        demo.allocate_groups(2, fractions)
    with pytest.raises(ValueError, match="unknown splits"):
        demo.split_fractions({"train": 0.5, "holdout": 0.5})


@needs_soundfonts
def test_a_clip_renders_the_same_whatever_was_rendered_before() -> None:
    from mirops.data.scores import Note
    from mirops.data.synth import Part, SoundFontRenderer

    path = find_soundfont("TimGM6mb.sf2")
    clip = [Part(0, 0, [Note(0.0, 0.5, 60, 100), Note(0.25, 0.75, 64, 90)]), Part(9, 0, [Note(0.0, 0.1, 36, 110)], 128)]
    fresh = SoundFontRenderer(path).render(clip, 16000)
    used = SoundFontRenderer(path)
    used.render([Part(3, 48, [Note(0.0, 2.0, 50, 127)])], 8000)  # a string pad cut off mid-note
    assert np.array_equal(used.render(clip, 16000), fresh)
    assert fresh.dtype == np.float32 and fresh.shape == (16000,) and np.abs(fresh).max() > 0
