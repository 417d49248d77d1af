"""The content-addressed cache: keyed by audio bytes + config, reused across names and runs, safe under concurrency."""

from __future__ import annotations

import multiprocessing as mp
import shutil

import numpy as np
import torch

from mirops.data.cache import ArrayCache, decoded_audio
from mirops.features.clips import ClipLoader, frontend_frames
from mirops.features.logmel import YamnetLogMel
from tests.broken_audio import write_corpus


def _fill(args) -> None:
    root, corpus, n = args
    loader = ClipLoader(corpus, 16000, 2.0, cache=ArrayCache(root))
    frontend = YamnetLogMel()
    for _ in range(n):
        frontend_frames(loader, ["audio/good.wav", "audio/good.ogg", "audio/good.flac"], frontend, frontend.config())


def test_a_rerun_reads_everything_back_and_a_renamed_copy_hits_the_same_entry(tmp_path):
    write_corpus(tmp_path)
    cache = ArrayCache(tmp_path / "cache")
    loader = ClipLoader(tmp_path, 16000, 2.0, cache=cache)
    frontend = YamnetLogMel()
    first = frontend_frames(loader, ["audio/good.wav", "audio/good.ogg"], frontend, frontend.config())
    misses = cache.misses
    shutil.copy(tmp_path / "audio/good.wav", tmp_path / "audio/renamed.wav")
    again = frontend_frames(loader, ["audio/renamed.wav", "audio/good.ogg"], frontend, frontend.config())
    assert cache.misses == misses and cache.hits == 2  # nothing recomputed
    assert all(np.array_equal(a, b) for a, b in zip(first.arrays, again.arrays, strict=True))
    with torch.no_grad():
        direct = frontend(torch.from_numpy(loader.wave("audio/good.wav"))[None])[0].numpy()
    np.testing.assert_array_equal(first.arrays[0], direct)


def test_another_front_end_config_or_length_is_another_entry(tmp_path):
    write_corpus(tmp_path)
    cache = ArrayCache(tmp_path / "cache")
    frontend = YamnetLogMel()
    two = frontend_frames(ClipLoader(tmp_path, 16000, 2.0, cache=cache), ["audio/good.wav"], frontend,
                          frontend.config())
    one = frontend_frames(ClipLoader(tmp_path, 16000, 1.0, cache=cache), ["audio/good.wav"], frontend,
                          frontend.config())
    other = frontend_frames(ClipLoader(tmp_path, 16000, 2.0, cache=cache), ["audio/good.wav"], frontend,
                            frontend.config() | {"n_mels": 128})
    assert two.arrays[0].shape[0] > one.arrays[0].shape[0]
    assert len(list((tmp_path / "cache" / "frontend").rglob("*.npy"))) == 3 and other.arrays


def test_broken_clips_are_reported_not_raised(tmp_path):
    write_corpus(tmp_path)
    frontend = YamnetLogMel()
    out = frontend_frames(ClipLoader(tmp_path, 16000, 2.0, cache=ArrayCache(tmp_path / "c")),
                          ["audio/good.wav", "audio/zero_bytes.wav", "audio/never_downloaded.ogg"],
                          frontend, frontend.config())
    assert out.paths == ["audio/good.wav"]
    assert {p: e.reason for p, e in out.failed.items()} == {"audio/zero_bytes.wav": "empty_file",
                                                             "audio/never_downloaded.ogg": "missing_file"}


def test_two_processes_filling_the_same_entries_leave_whole_files(tmp_path):
    write_corpus(tmp_path / "corpus")
    root = tmp_path / "cache"
    with mp.get_context("spawn").Pool(2) as pool:
        pool.map(_fill, [(root, tmp_path / "corpus", 3)] * 2)
    files = list(root.rglob("*.npy"))
    assert len(files) == 6 and not list(root.rglob("*.tmp*"))  # 3 decoded clips + 3 frame arrays, no leftovers
    for f in files:
        assert np.load(f).size > 0


def test_decoded_audio_is_computed_once_per_content_and_rate(tmp_path):
    write_corpus(tmp_path)
    cache, calls = ArrayCache(tmp_path / "cache"), []

    def load():
        calls.append(1)
        return np.ones(4, dtype=np.float32)

    for _ in range(3):
        decoded_audio(cache, tmp_path / "audio/good.wav", 16000, load)
    decoded_audio(cache, tmp_path / "audio/good.wav", 22050, load)
    assert len(calls) == 2
