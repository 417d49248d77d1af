"""The demo dataset: rendered through real GM SoundFonts, checked the way a user would check it."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from mirops.config import DEMO_CLASSES, Settings
from mirops.data import demo, oneshots
from mirops.data.compositions import (
    CRASH,
    GROOVES,
    KICK,
    RIDE,
    SIDE_STICK,
    SNARE,
    SNARE_2,
    STYLES,
    TEMPO_BANDS,
    TEMPO_TAGS,
    TOMS,
    Key,
    Note,
    Song,
    cymbal_part,
    drum_part,
    part_for,
    tempo_tag,
)
from mirops.data.demo import render
from mirops.data.demo.build import available_kits
from mirops.data.demo.draws import PlanError, draw_sets, zipf_weights
from mirops.data.demo.groups import allocate_groups, split_fractions
from mirops.data.demo.instruments import plan_batches
from mirops.data.demo.plans import Batch, truth_matrix
from mirops.data.demo.tagging import plan_tagging
from mirops.data.gm import DRUM_KITS, GM_INSTRUMENTS, PREVALENCE, UnknownInstrumentError, check_classes, gm_instrument
from mirops.data.manifest import LABELLED_SPLITS, label_column, read_manifest
from mirops.data.synth import SoundFontNotFoundError, find_soundfont

REPO = Path(__file__).resolve().parents[1]
CYMBAL_KEYS = {42, 44, 46, 49, 51, 52, 53, 55, 57, 59}
SKIN_KEYS = {35, KICK, SIDE_STICK, SNARE, SNARE_2, *TOMS}
TRAINING_FONTS = ["FluidR3_GM.sf2", "MuseScore_General_Lite.sf3"]
TINY = {
    "demo__clips": 12,
    "demo__groups": 4,
    "demo__clip_seconds": 3.0,
    "demo__production_clips": 4,
    "demo__missing_fraction": 0.4,
    "demo__classes": ["bass", "cymbals", "drums", "piano", "violin"],
    "demo__min_positives": 1,
}


def _soundfonts_missing() -> str | None:
    try:
        import tinysoundfont  # noqa: F401
    except ImportError:
        return "tinysoundfont is not installed"
    try:
        for name in (*TRAINING_FONTS, "TimGM6mb.sf2"):
            find_soundfont(name)
    except SoundFontNotFoundError as exc:
        return str(exc)
    return None


needs_soundfonts = pytest.mark.skipif(_soundfonts_missing() is not None, reason=_soundfonts_missing() or "")
needs_drumkits = pytest.mark.skipif(not oneshots.find_kits(), reason=oneshots.missing_kits_message())


def tiny_settings(root: Path, **overrides: object) -> Settings:
    return Settings.load(root, **{**TINY, **overrides})


def repo_settings(**overrides: object) -> Settings:
    """The repository's params.yaml: what `make demo` builds."""
    return Settings.load(REPO, **overrides)


def file_hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def instrument_sets(df: pd.DataFrame) -> list[set[str]]:
    return [set(s.split("|")) for s in df["instruments"]]


def split_of(batch: Batch) -> np.ndarray:
    return np.array([p.session.split for p in batch.clips])


def annotated_positives(batch: Batch) -> pd.DataFrame:
    """Rows: classes; columns: splits; what the audit counts (annotated labels >= 0.5)."""
    splits = split_of(batch)
    return pd.DataFrame(
        {s: np.nansum(batch.labels[splits == s] >= 0.5, axis=0) for s in LABELLED_SPLITS}, index=batch.classes
    )


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
    assert spec.extra["variant"] == "instruments" and summary.variant == "instruments"
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
    assert abs(np.isnan(labels).mean() - 0.4) < 0.05
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
def test_each_session_renders_through_one_training_soundfont_and_every_split_has_both(built) -> None:
    settings, summary = built
    df, spec = read_manifest(settings.data_dir)
    assert (df.groupby("group")["domain"].nunique() == 1).all(), "a session mixes SoundFonts"
    assert sorted(spec.extra["soundfonts"]) == TRAINING_FONTS == sorted(summary.domains)
    assert sum(summary.domains.values()) == len(df)
    # 4 sessions, 2 SoundFonts: the train split (2 sessions) holds both timbre domains.
    assert set(df.loc[df["split"] == "train", "domain"]) == set(TRAINING_FONTS)


@needs_soundfonts
def test_production_batch_uses_the_other_soundfont_and_keeps_true_labels(built) -> None:
    settings, summary = built
    df, spec = read_manifest(settings.production_dir)
    assert summary.n_production == len(df) == 4
    assert set(df["split"]) == {"unlabeled"}
    assert spec.extra["soundfonts"] == ["TimGM6mb.sf2"] and set(df["domain"]) == {"TimGM6mb.sf2"}
    assert all((settings.production_dir / p).is_file() for p in df["path"])
    for row, present in enumerate(instrument_sets(df)):
        truth = [float(c in present) for c in spec.classes]
        assert df[[label_column(c) for c in spec.classes]].iloc[row].tolist() == truth


@needs_soundfonts
@needs_drumkits
def test_real_drum_one_shots_are_mixed_into_some_sessions(built) -> None:
    settings, summary = built
    df, _ = read_manifest(settings.data_dir)
    drummed = df[[bool({"drums", "cymbals"} & s) for s in instrument_sets(df)]]
    real = drummed["drum_samples"].str.startswith("hydrogen:")
    assert real.sum() == summary.real_drum_clips > 0
    assert set(drummed["drum_samples"]) <= {"soundfont", *(f"hydrogen:{k}" for k in oneshots.find_kits())}
    assert (df.loc[df["drum_samples"] == "", "instruments"].map(lambda s: not {"drums", "cymbals"} & set(s.split(
        "|")))).all(), "a clip without drums or cymbals names a drum source"
    assert (df.groupby("group")["drum_samples"].agg(lambda s: len(set(s) - {""})) <= 1).all(), "one kit per session"


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
    real_render, calls = render.render_clip, []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 5:
            raise RuntimeError("disk full")
        return real_render(*args, **kwargs)

    monkeypatch.setattr(render, "render_clip", flaky)
    with pytest.raises(RuntimeError, match="disk full"):
        demo.build_demo(tiny_settings(tmp_path, demo__soundfonts=["TimGM6mb.sf2"]), overwrite=True)
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
        demo__soundfont="TimGM6mb.sf2",  # the one-SoundFont spelling of older params.yaml files still works
    )
    summary = demo.build_demo(settings)
    df, spec = read_manifest(settings.data_dir)
    assert spec.classes == classes and summary.n_clips == {"train": 2, "valid": 2, "test": 2}
    assert set().union(*instrument_sets(df)) <= set(classes) and set(df["domain"]) == {"TimGM6mb.sf2"}
    prod, _ = read_manifest(settings.production_dir)
    assert len(prod) == 0


# -- the default dataset, planned (no audio) -----------------------------------------------------------


def test_all_18_gm_classes_have_positives_in_every_split_under_a_long_tail() -> None:
    settings = repo_settings()
    labelled, _ = plan_batches(settings, drum_kits=["kit"])
    assert labelled.classes == DEMO_CLASSES and len(DEMO_CLASSES) == 18
    assert set(DEMO_CLASSES) == set(GM_INSTRUMENTS) == set(PREVALENCE)

    positives = annotated_positives(labelled)
    assert (positives >= settings.audit.min_positives_per_class).all().all(), positives
    clips = pd.Series(truth_matrix(labelled.clips, labelled.classes).sum(axis=0), index=labelled.classes)
    # Long-tailed like OpenMIC: the common classes in many clips, the rare in few.
    assert clips.max() >= 4 * clips.min(), clips.sort_values()
    assert set(clips.nlargest(3).index) <= set(PREVALENCE[:5]), clips.sort_values()
    assert set(clips.nsmallest(3).index) <= set(PREVALENCE[-7:]), clips.sort_values()
    # The tail comes from the Zipf exponent: without it the classes are near balanced.
    flat, _ = plan_batches(repo_settings(demo__zipf_exponent=0.0))
    flat_clips = truth_matrix(flat.clips, flat.classes).sum(axis=0)
    assert flat_clips.max() < 2 * flat_clips.min()


def test_the_default_plan_spreads_sessions_over_both_soundfonts_in_every_split() -> None:
    labelled, production = plan_batches(repo_settings(), drum_kits=["kit"])
    frame = pd.DataFrame([(p.session.split, p.session.group, p.session.soundfont) for p in labelled.clips],
                         columns=["split", "group", "domain"])
    assert frame.groupby("split")["domain"].nunique().tolist() == [2, 2, 2]
    share = frame["domain"].value_counts(normalize=True)
    assert set(share.index) == set(TRAINING_FONTS) and share.min() > 0.4
    assert {p.session.soundfont for p in production.clips} == {"TimGM6mb.sf2"}
    # Some sessions play real drums; which ones does not depend on the kits installed.
    real = {p.session.group for p in labelled.clips if p.session.drum_kit}
    assert 0 < len(real) < frame["group"].nunique()
    no_kits, _ = plan_batches(repo_settings())
    assert [p.instruments for p in no_kits.clips] == [p.instruments for p in labelled.clips]
    assert all(p.session.drum_kit is None for p in no_kits.clips)


@pytest.mark.parametrize("fraction", [0.0, 0.2, 0.4, 0.7])
def test_missing_label_rate_is_honoured_without_starving_a_split(fraction: float) -> None:
    settings = repo_settings(demo__missing_fraction=fraction)
    labelled, production = plan_batches(settings)
    missing = np.isnan(labelled.labels)
    assert abs(missing.mean() - fraction) < 0.01, missing.mean()
    assert not missing.all(axis=1).any(), "every clip keeps an annotated class"
    assert (annotated_positives(labelled) >= settings.demo.min_positives).all().all()
    assert not np.isnan(production.labels).any(), "the production batch keeps its exact labels"


def test_impossible_quotas_say_what_to_change() -> None:
    with pytest.raises(PlanError, match="demo.clips"):
        plan_batches(repo_settings(demo__clips=20, demo__groups=10))


def test_draw_sets_keeps_quota_sizes_and_weights() -> None:
    rng = np.random.default_rng(0)
    weights = np.tile(zipf_weights(8, 1.5), (60, 1))
    weights[:30, 7] = 0.0  # option 7 is open to half of the rows only
    sizes = rng.integers(1, 4, size=60)
    chosen = draw_sets(rng, weights, sizes, max_size=3, quota=4)
    assert (chosen.sum(axis=0) >= 4).all() and (chosen.sum(axis=1) <= 3).all()
    assert not chosen[:30, 7].any(), "an option went to a row closed to it"
    assert chosen[:, 0].sum() > 2 * chosen[:, 6].sum(), "the weights no longer shape the frequencies"


# -- the tagging variant -------------------------------------------------------------------------------


def test_tagging_plan_tags_are_true_of_the_generated_tempo_style_and_instruments() -> None:
    settings = repo_settings()
    batch = plan_tagging(settings, drum_kits=["kit"])
    params = settings.demo
    assert batch.classes == [*DEMO_CLASSES, *TEMPO_TAGS, *params.styles] and batch.clip_seconds == 30.0
    assert set(np.unique(batch.labels)) == {0.0, 1.0}, "hard labels, none missing (MagnaTagATune-style)"
    for plan, labels in zip(batch.clips, batch.labels, strict=True):
        tags = {t for t, v in zip(batch.classes, labels, strict=True) if v == 1.0}
        style = STYLES[plan.session.style]
        low, high = TEMPO_BANDS[tempo_tag(plan.tempo)]
        assert low <= plan.tempo < high and tempo_tag(plan.tempo) in tags
        assert tags & set(TEMPO_TAGS) == {tempo_tag(plan.tempo)} and tags & set(STYLES) == {style.name}
        assert tags - set(TEMPO_TAGS) - set(STYLES) == set(plan.instruments)
        assert set(style.core) <= set(plan.instruments) <= set(style.instruments)
        assert style.tempo_weights[tempo_tag(plan.tempo)] > 0
        for name in plan.instruments:
            allowed = (style.kits if GM_INSTRUMENTS[name].is_drum_kit else style.programs.get(name)) or ()
            assert not allowed or plan.session.programs[name] in allowed
        if plan.session.drum_kit:
            assert style.acoustic_drums
    splits = split_of(batch)
    per_split = pd.DataFrame({s: batch.labels[splits == s].sum(axis=0) for s in LABELLED_SPLITS},
                             index=batch.classes)
    assert (per_split >= settings.audit.min_positives_per_class).all().all(), per_split
    totals = per_split.sum(axis=1)
    assert totals.max() >= 4 * totals.min(), "tag frequencies should be long-tailed"
    groups = pd.DataFrame([(p.session.group, p.session.style, p.session.soundfont) for p in batch.clips])
    assert (groups.groupby(0)[[1, 2]].nunique() == 1).all().all(), "an artist changes style or SoundFont"


@needs_soundfonts
def test_tagging_variant_from_the_cli_writes_tags_where_asked(tmp_path: Path) -> None:
    from mirops.cli import main

    out = tmp_path / "tags"
    sets = {"demo.tagging_clips": 20, "demo.tagging_groups": 10, "demo.tagging_clip_seconds": 2.0,
            "demo.styles": '["rock", "jazz"]', "demo.classes": '["bass", "cymbals", "drums", "guitar", "piano"]',
            "demo.min_positives": 1, "demo.soundfonts": '["TimGM6mb.sf2"]', "seed": 3}
    args = [f"--set={k}={v}" for k, v in sets.items()]
    main(["data", "demo", "--root", str(tmp_path), "--variant", "tagging", "--out", str(out), *args])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tags"], "no data/ or production/ for the tagging variant"
    df, spec = read_manifest(out)
    assert spec.classes == ["bass", "cymbals", "drums", "guitar", "piano", "slow", "medium", "fast", "rock", "jazz"]
    assert json.loads((out / "labels.json").read_text())["tag_groups"]["style"] == ["rock", "jazz"]
    for _, row in df.iterrows():
        tags = {c for c in spec.classes if row[label_column(c)] == 1.0}
        assert tags == {*row["instruments"].split("|"), row["tempo_tag"], row["style"]}
        assert row["tempo_tag"] == tempo_tag(row["tempo"])
        assert sf.info(str(out / row["path"])).frames == 2 * 16000


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


def test_style_presets_use_programs_and_kits_general_midi_has() -> None:
    for style in STYLES.values():
        assert set(style.instruments) <= set(GM_INSTRUMENTS) and style.groove in GROOVES
        assert set(style.tempo_weights) == set(TEMPO_TAGS) and sum(style.tempo_weights.values()) > 0
        assert set(style.kits) <= set(DRUM_KITS)
        for name, programs in style.programs.items():
            assert set(programs) <= set(GM_INSTRUMENTS[name].programs), (style.name, name)


def test_missing_soundfont_names_the_debian_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("mirops.data.synth.SOUNDFONT_DIRS", ())
    monkeypatch.setenv("MIROPS_SOUNDFONT_DIR", str(tmp_path))
    with pytest.raises(SoundFontNotFoundError, match="timgm6mb-soundfont"):
        find_soundfont("TimGM6mb.sf2")
    with pytest.raises(SoundFontNotFoundError, match="musescore-general-soundfont-small"):
        find_soundfont("MuseScore_General_Lite.sf3")
    (tmp_path / "TimGM6mb.sf2").write_bytes(b"x")
    assert find_soundfont("TimGM6mb.sf2") == tmp_path / "TimGM6mb.sf2"


def test_without_drum_kits_the_demo_says_so_once_unless_they_are_required(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(oneshots.DRUMKIT_ENV, str(tmp_path))
    params = repo_settings().demo
    assert available_kits(params) == {}
    err = capsys.readouterr().err
    assert "apt-get install hydrogen-drumkits" in err and err.count("\n") == 1, err
    with pytest.raises(oneshots.DrumKitsNotFoundError, match="apt-get install hydrogen-drumkits"):
        available_kits(params.model_copy(update={"require_real_drums": True}))
    assert available_kits(params.model_copy(update={"real_drums": 0.0})) == {}
    assert capsys.readouterr().err == "", "no note when no real drums are asked for"


@needs_drumkits
def test_drum_kit_samples_keep_skins_and_cymbals_apart() -> None:
    kits = oneshots.find_kits()
    assert "Audiophob" not in kits, "a kit whose names do not match its samples"
    for kit in kits.values():
        for key in SKIN_KEYS:
            assert kit.instrument_for(key).kind in oneshots.SKINS, (kit.name, key)
        for key in CYMBAL_KEYS:
            assert kit.instrument_for(key).kind in oneshots.CYMBALS, (kit.name, key)
    assert oneshots.kind_of('Ride (Custom, Zagrebin 22")') == "ride", "'Custom' is not a tom"
    assert oneshots.kind_of("Hi-Hat Pedal") == "pedal_hat" and oneshots.kind_of("Snare Roll") is None


@needs_drumkits
def test_one_shots_sound_at_the_note_times() -> None:
    kits = oneshots.find_kits()
    player = oneshots.OneShotPlayer(kits, 16000)
    name = sorted(kits)[0]
    wave = player.render(name, [Note(0.5, 0.6, KICK, 110), Note(1.5, 1.6, CRASH, 100)], 32000)
    assert wave.dtype == np.float32 and wave.shape == (32000,)
    assert np.abs(wave[:7900]).max() == 0.0, "sound before the first note"
    assert np.abs(wave[8000:8400]).max() > 0.05 and np.abs(wave[24000:24400]).max() > 0.05


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
    for groove, (skin_part, cymbal_fn) in GROOVES.items():
        for seed in range(5):
            skins = skin_part(np.random.default_rng(seed), song, 0, 127)
            cymbals = cymbal_fn(np.random.default_rng(seed), song, 0, 127)
            assert skins and {n.key for n in skins} <= SKIN_KEYS, groove
            assert cymbals and {n.key for n in cymbals} <= CYMBAL_KEYS, groove
            assert skins[0].start < song.beat_s and cymbals[0].start < song.beat_s, groove


def test_groups_are_allocated_to_splits_by_fraction() -> None:
    fractions = split_fractions({"train": 0.6, "valid": 0.2, "test": 0.2})
    assert allocate_groups(30, fractions).count("train") == 18
    assert sorted(allocate_groups(4, fractions)) == ["test", "train", "train", "valid"]
    with pytest.raises(ValueError, match="each split needs a group"):
        allocate_groups(2, fractions)
    with pytest.raises(ValueError, match="unknown splits"):
        split_fractions({"train": 0.5, "holdout": 0.5})


@needs_soundfonts
def test_a_clip_renders_the_same_whatever_was_rendered_before() -> None:
    from mirops.data.synth import Part, SoundFontRenderer

    path = find_soundfont("TimGM6mb.sf2")
    clip = [Part(0, 0, [Note(0.0, 0.5, 60, 100), Note(0.25, 0.75, 64, 90)]), Part(9, 0, [Note(0.0, 0.1, 36, 110)], 128)]
    fresh = SoundFontRenderer(path).render(clip, 16000)
    used = SoundFontRenderer(path)
    used.render([Part(3, 48, [Note(0.0, 2.0, 50, 127)])], 8000)  # a string pad cut off mid-note
    assert np.array_equal(used.render(clip, 16000), fresh)
    assert fresh.dtype == np.float32 and fresh.shape == (16000,) and np.abs(fresh).max() > 0
