"""Decode + resample + fbank throughput on 1 and 2 worker processes, JSON on stdout.

Clips are OpenMIC-like: 10 s, 44.1 kHz stereo Ogg Vorbis, written to a temporary folder. Per clip:
decode (soundfile), mix to mono, resample to 16 kHz (torchaudio), then a Kaldi fbank of 128 bins (the
AST front end, torchaudio.compliance.kaldi) and YAMNet's 64-band log-mel. Baselines in the same run:
decode alone (what the audio costs before any DSP) and a re-run through the content-addressed cache
(what a re-run pays once features are cached). Real-time factor = audio seconds processed per wall second.
Usage: python benchmarks/decode_throughput.py [--clips 48] [--seconds 10]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import soundfile as sf


def write_clips(folder: Path, n: int, seconds: float, sr: int = 44100) -> list[Path]:
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * sr)) / sr
    paths = []
    for i in range(n):
        tone = 0.2 * np.sin(2 * np.pi * (220 + 20 * i) * t) + 0.02 * rng.standard_normal(len(t))
        stereo = np.stack([tone, 0.8 * tone], axis=1).astype(np.float32)
        paths.append(folder / f"clip{i:04d}.ogg")
        sf.write(paths[-1], stereo, sr)
    return paths


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)  # one core per worker process: scaling comes from the processes


def decode_only(path: Path) -> int:
    wave, _ = sf.read(str(path), dtype="float32", always_2d=True)
    return len(wave)


def full_pipeline(path: Path) -> int:
    import torch
    import torchaudio.compliance.kaldi as kaldi

    from mirops.data.audio import load_audio
    from mirops.features.logmel import YamnetLogMel

    wave = load_audio(path, 16000)
    x = torch.from_numpy(wave)
    fbank = kaldi.fbank(x[None], htk_compat=True, sample_frequency=16000, use_energy=False, window_type="hanning",
                        num_mel_bins=128, dither=0.0, frame_shift=10)
    logmel = YamnetLogMel()(x[None])
    return int(fbank.shape[0] + logmel.shape[1])


def cached_pipeline(args: tuple[Path, Path]) -> int:
    from mirops.data.cache import ArrayCache
    from mirops.features.clips import ClipLoader, frontend_frames
    from mirops.features.logmel import YamnetLogMel

    path, cache_dir = args
    frontend = YamnetLogMel()
    out = frontend_frames(ClipLoader(path.parent, 16000, cache=ArrayCache(cache_dir)), [path.name], frontend,
                          frontend.config())
    return len(out.arrays)


def run(fn, items: list, workers: int, audio_seconds: float) -> dict[str, float]:
    with ProcessPoolExecutor(workers, initializer=_init_worker) as pool:
        list(pool.map(fn, items[:workers]))  # warm-up: imports and allocations in every worker
        started = time.perf_counter()
        list(pool.map(fn, items, chunksize=max(1, len(items) // (4 * workers))))
        wall = time.perf_counter() - started
    return {"seconds": round(wall, 3), "clips_per_second": round(len(items) / wall, 2),
            "real_time_factor": round(audio_seconds / wall, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=48)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_clips(Path(tmp), args.clips, args.seconds)
        audio_seconds = args.clips * args.seconds
        results: dict[str, dict] = {}
        for workers in (1, 2):
            results[f"workers_{workers}"] = {
                "decode_resample_fbank_logmel": run(full_pipeline, paths, workers, audio_seconds),
                "baseline_decode_only": run(decode_only, paths, workers, audio_seconds),
            }
        cache_dir = Path(tmp) / "cache"
        items = [(p, cache_dir) for p in paths]
        run(cached_pipeline, items, 2, audio_seconds)  # fills the cache
        results["workers_2"]["rerun_from_cache"] = run(cached_pipeline, items, 2, audio_seconds)
    one = results["workers_1"]["decode_resample_fbank_logmel"]["clips_per_second"]
    two = results["workers_2"]["decode_resample_fbank_logmel"]["clips_per_second"]
    print(json.dumps({
        "benchmark": "decode_throughput", "clips": args.clips, "clip_seconds": args.seconds,
        "source": "44.1 kHz stereo Ogg Vorbis -> 16 kHz mono", "cpu_count": os.cpu_count(),
        "machine": platform.machine(), **results, "speedup_2_workers": round(two / one, 2),
    }, indent=2))


if __name__ == "__main__":
    main()
