"""Audio fingerprints: the same audio re-encoded matches, different music does not, and the search finds
exactly the planted cross-split duplicates."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import mirops.features.fingerprint as fp
from mirops.config import Settings
from mirops.data import demo
from mirops.data.audio import load_audio, resample
from mirops.data.cache import ArrayCache
from mirops.data.manifest import read_manifest
from mirops.features.clips import ClipLoader, fingerprints
from mirops.features.fingerprint import THRESHOLD, find_near_duplicates, fingerprint, similarity
from tests.conftest import needs_soundfonts

SR = 16000
SOURCE_SR = 44100
SCALE = (0, 2, 4, 5, 7, 9, 11)
needs_mp3 = pytest.mark.skipif("MP3" not in sf.available_formats(), reason="libsndfile without MP3 (needs >= 1.1)")


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Tiny spectrograms gain nothing from threads, and on a busy machine OpenMP's waiting threads make
    them many times slower; one thread, as in a per-clip worker process."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def song(session: int, clip: int, seconds: float = 6.0, sr: int = SR) -> np.ndarray:
    """Mono music: key, tempo, timbre and drum groove fixed by the session (like a demo session), the
    chords and melody drawn for the clip. Different clips of one session are the hardest non-duplicates."""
    srng = np.random.default_rng([session])
    root, beat = 45 + int(srng.integers(12)), 60.0 / srng.uniform(90, 130)
    phase = np.arange(4096) / 4096
    timbre = sum(a / k * np.sin(2 * np.pi * k * phase) for k, a in enumerate(srng.uniform(0.2, 1.0, 6), start=1))
    rng = np.random.default_rng([session, clip])
    out = np.zeros(int(seconds * sr))
    for n, start in enumerate(np.arange(0.0, seconds, beat / 2)):
        keys = [root + 12 + SCALE[int(rng.integers(7))]]
        if n % 8 == 0:  # a new chord every bar
            degree = int(rng.integers(7))
            keys += [root + SCALE[(degree + i) % 7] for i in (0, 2, 4)]
        first = int(start * sr)
        t = np.arange(min(len(out) - first, sr)) / sr  # a note rings 1 s (down to -26 dB)
        for key in keys:
            f0 = 440.0 * 2 ** ((key - 69) / 12)
            out[first : first + len(t)] += 0.3 * np.exp(-3.0 * t) * timbre[(f0 * t * 4096).astype(int) % 4096]
        hit = t[: int(0.08 * sr)]
        drum = np.sin(2 * np.pi * 60 * hit) if n % 4 == 0 else rng.standard_normal(len(hit))  # kick / snare, hat
        out[first : first + len(hit)] += (0.8 if n % 2 == 0 else 0.2) * np.exp(-40 * hit) * drum
    return (0.7 * out / np.abs(out).max()).astype(np.float32)


def stereo(wave: np.ndarray) -> np.ndarray:
    """A stereo mix (left louder): the loader hears its mono mixdown."""
    return np.stack([1.2 * wave, 0.8 * wave], axis=1)


# ---- matching: re-encodings against different music ----------------------------------------------------

COPIES = {  # name -> (transform of the 44.1 kHz stereo original, file name); each goes through a file
    "ogg 44.1k": (lambda x: x, "copy.ogg"),
    "mp3 44.1k": (lambda x: x, "copy.mp3"),
    "wav 16k mono mixdown": (lambda x: resample(x.mean(axis=1), SOURCE_SR, SR), "copy.wav"),
    "ogg 16k mono": (lambda x: resample(x.mean(axis=1), SOURCE_SR, SR), "copy.ogg"),
    "mp3 16k mono": (lambda x: resample(x.mean(axis=1), SOURCE_SR, SR), "copy.mp3"),
    "-6 dB, mp3": (lambda x: 0.5 * x, "copy.mp3"),
    "+6 dB clipped, ogg": (lambda x: np.clip(2.0 * x, -1, 1), "copy.ogg"),
    "cropped 0.3 s, ogg": (lambda x: x[int(0.3 * SOURCE_SR) :], "copy.ogg"),
}


@pytest.fixture(scope="module")
def original(tmp_path_factory: pytest.TempPathFactory) -> tuple[np.ndarray, np.ndarray]:
    """The 44.1 kHz stereo source and its fingerprint as the loader sees it (a 16-bit wav, 16 kHz mono)."""
    source = stereo(song(0, 0, sr=SOURCE_SR))
    path = tmp_path_factory.mktemp("original") / "original.wav"
    sf.write(path, source, SOURCE_SR, subtype="PCM_16")
    return source, fingerprint(load_audio(path, SR), SR)


@pytest.mark.parametrize("name", [pytest.param(n, marks=[needs_mp3] if "mp3" in n else []) for n in COPIES])
def test_a_reencoded_copy_matches_its_original(name: str, original, tmp_path: Path):
    source, code = original
    transform, file_name = COPIES[name]
    copy = transform(source)
    sf.write(tmp_path / file_name, copy, SR if copy.ndim == 1 else SOURCE_SR)
    assert similarity(code, fingerprint(load_audio(tmp_path / file_name, SR), SR)) >= THRESHOLD + 0.1


def test_different_music_does_not_match(original):
    _, code = original
    same_session = [similarity(code, fingerprint(song(0, clip), SR)) for clip in range(1, 5)]
    other_sessions = [similarity(code, fingerprint(song(session, 0), SR)) for session in range(1, 5)]
    assert max(same_session) < THRESHOLD - 0.15  # same key, tempo, timbre and drums; other notes
    assert max(other_sessions) < THRESHOLD - 0.15


def test_gain_and_channel_layout_do_not_change_the_code():
    wave = song(1, 1)
    code, quieter = fingerprint(wave, SR), fingerprint(0.5 * wave, SR)
    # Strong bits are the same; a weak one may differ by rounding (log of a scaled energy).
    assert np.array_equal(quieter[1], code[1]) and np.array_equal(quieter[0] & code[1], code[0] & code[1])
    assert np.array_equal(fingerprint(stereo(wave), SR), fingerprint(stereo(wave).mean(axis=1), SR))
    assert code.dtype == np.uint32 and code.shape == (2, 1 + (6 * 8000 - fp.WINDOW) // fp.HOP - 1)
    assert similarity(code, code) == pytest.approx(1.0)


def test_silence_and_tiny_clips_have_codes_that_match_nothing():
    silence = fingerprint(np.zeros(SR, np.float32), SR)
    assert not silence[1].any()  # no strong bits
    assert similarity(silence, silence) == 0.0
    blip = fingerprint(song(2, 0, seconds=0.05), SR)  # shorter than a window: padded, still a code
    assert blip.shape[1] >= 1
    with pytest.raises(ValueError, match="samples"):
        fingerprint(np.zeros((2, 2, 2), np.float32), SR)


# ---- the search --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def collection() -> tuple[dict[str, np.ndarray], dict[str, str], dict[str, np.ndarray]]:
    """200 clips of 3 s: 40 sessions of 5 clips, each session in one split (70/15/15 by session)."""
    splits_of_session = np.random.default_rng(0).choice(["train", "valid", "test"], size=40, p=[0.7, 0.15, 0.15])
    waves, splits = {}, {}
    for session in range(40):
        for clip in range(5):
            clip_id = f"s{session:02d}c{clip}"
            waves[clip_id] = song(session, clip, seconds=3.0)
            splits[clip_id] = str(splits_of_session[session])
    return {c: fingerprint(w, SR) for c, w in waves.items()}, splits, waves


def _encoded(wave: np.ndarray, tmp_path: Path, name: str) -> np.ndarray:
    path = tmp_path / name
    sf.write(path, resample(wave, SR, SOURCE_SR), SOURCE_SR)
    return fingerprint(load_audio(path, SR), SR)


def test_a_clean_collection_reports_nothing(collection):
    codes, splits, _ = collection
    assert find_near_duplicates(codes, splits).empty
    # Sessions straddling splits put similar music (same key, tempo, timbre) in different splits: still no pair.
    shuffled = dict(zip(splits, np.random.default_rng(1).permutation(list(splits.values())), strict=True))
    assert len(set(shuffled.values())) == 3
    assert find_near_duplicates(codes, shuffled).empty


def test_the_planted_cross_split_copies_are_found_and_only_they(collection, tmp_path: Path):
    codes, splits, waves = collection
    train = next(c for c in codes if splits[c] == "train")
    codes = {**codes, "leak": _encoded(waves[train][1000:], tmp_path, "leak.ogg"),  # re-encoded and cropped
             "twin": _encoded(waves[train], tmp_path, "twin.ogg")}
    splits = {**splits, "leak": "test", "twin": "train"}  # twin: a duplicate inside train, not leakage
    table = find_near_duplicates(codes, splits)
    assert list(table.columns) == ["clip_a", "split_a", "clip_b", "split_b", "similarity", "offset_s"]
    assert sorted(map(sorted, table[["clip_a", "clip_b"]].values.tolist())) == [["leak", train], ["leak", "twin"]]
    assert (table.split_a != table.split_b).all() and (table.similarity >= THRESHOLD).all()
    # clip_a at t is clip_b at t - offset_s: the leak starts 1000 samples into the original.
    row = table[table.clip_a == train].iloc[0]
    assert row.offset_s == pytest.approx(1000 / SR, abs=fp.FRAME_SECONDS)


def test_a_copy_at_any_offset_is_found(collection):
    codes, splits, waves = collection
    clip = next(c for c in codes if splits[c] == "valid")
    longer = np.concatenate([song(99, 0, seconds=2.0), waves[clip]])  # the clip 2 s into a longer recording
    table = find_near_duplicates({**codes, "longer": fingerprint(longer, SR)}, {**splits, "longer": "test"})
    assert table[["clip_a", "clip_b"]].values.tolist() == [[clip, "longer"]]
    assert table.offset_s.iloc[0] == pytest.approx(-2.0, abs=fp.FRAME_SECONDS)


def test_search_input_errors():
    assert find_near_duplicates({}, {}).empty
    code = fingerprint(song(3, 0, seconds=1.0), SR)
    with pytest.raises(ValueError, match="bad"):
        find_near_duplicates({"ok": code, "bad": code[0]}, {"ok": "train", "bad": "test"})
    with pytest.raises(KeyError, match="no split"):
        find_near_duplicates({"ok": code}, {})


# ---- through the per-clip cache --------------------------------------------------------------------


def test_fingerprints_are_cached_per_clip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    folder = tmp_path / "audio"
    folder.mkdir()
    for clip in range(3):
        sf.write(folder / f"c{clip}.wav", song(4, clip, seconds=2.0), SR, subtype="PCM_16")
    (folder / "broken.wav").write_bytes(b"RIFF not really")
    paths = ["c0.wav", "c1.wav", "c2.wav", "broken.wav"]
    loader = ClipLoader(folder, SR, seconds=None, cache=ArrayCache(tmp_path / "cache"))
    calls = []
    real = fp.fingerprint
    monkeypatch.setattr(fp, "fingerprint", lambda wave, sr: calls.append(1) or real(wave, sr))

    first = fingerprints(loader, paths)
    assert first.paths == paths[:3] and set(first.failed) == {"broken.wav"} and len(calls) == 3
    second = fingerprints(loader, paths)
    assert len(calls) == 3  # nothing computed again
    assert all(np.array_equal(a, b) for a, b in zip(first.arrays, second.arrays, strict=True))
    assert np.array_equal(first.arrays[0], real(load_audio(folder / "c0.wav", SR), SR))


@needs_soundfonts
def test_demo_music_across_splits_is_no_duplicate_until_a_clip_is_copied(tmp_path: Path):
    """The demo's sessions share key, tempo, instruments and SoundFont: the hardest clean case there is."""
    settings = Settings.load(tmp_path, seed=7, demo__clips=12, demo__groups=4, demo__clip_seconds=3.0,
                             demo__production_clips=2, demo__classes=["bass", "drums", "piano", "violin"],
                             demo__min_positives=1)
    demo.build_demo(settings)
    manifest, _ = read_manifest(settings.data_dir)
    loader = ClipLoader(settings.data_dir, SR, seconds=None, cache=ArrayCache(tmp_path / "cache"))
    codes = dict(zip(manifest["clip_id"], fingerprints(loader, list(manifest["path"])).arrays, strict=True))
    # Splits drawn per clip, not per session: clips of one session sit in different splits.
    splits = dict(zip(manifest["clip_id"], ["train", "valid", "test"] * 4, strict=True))
    assert (manifest.assign(s=manifest["clip_id"].map(splits)).groupby("group")["s"].nunique() > 1).all()
    assert find_near_duplicates(codes, splits).empty

    source = manifest[[splits[c] == "train" for c in manifest["clip_id"]]].iloc[0]
    wave, rate = sf.read(settings.data_dir / source["path"], dtype="float32")
    sf.write(settings.data_dir / "audio/leak.ogg", resample(wave, rate, SOURCE_SR), SOURCE_SR)  # re-encoded
    codes["leak"] = fingerprints(loader, ["audio/leak.ogg"]).arrays[0]
    table = find_near_duplicates(codes, {**splits, "leak": "test"})
    assert table[["clip_a", "clip_b"]].values.tolist() == [[source["clip_id"], "leak"]]
