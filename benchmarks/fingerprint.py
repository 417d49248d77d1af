"""Audio fingerprint throughput and near-duplicate search at scale, JSON on stdout.

1. Throughput: `fingerprint` of 10 s clips (synthetic chords, melody and drums) at 16 and 44.1 kHz, on one
   torch thread and on all; baseline in the same run: YAMNet's log-mel front end on the same 16 kHz clips.
2. Search: `find_near_duplicates` over 20,000 synthetic codes of 10 s clips (random bits, 20-50 % strong,
   10 % of frames drawn from a shared vocabulary of 2,000 "common sounds", as steady tones and silence
   make some frames common in real music) in train/valid/test (70/15/15), with planted duplicates:
   a clip's code copied into another split with 5-15 % of its strong bits' signs flipped, 3-10 % of its
   strength flags toggled and shifted by up to ±30 frames (~1 s); their similarity spans what real
   re-encodings measured (0.6-0.9). Baseline: brute force, `similarity` of
   every cross-split pair, on a subset that holds some planted pairs; its per-pair cost extrapolated to
   all cross-split pairs of the full set. Both must find the same pairs on the subset.
Usage: python benchmarks/fingerprint.py [--codes 20000] [--planted 25] [--subset 200]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import time
import tracemalloc

import numpy as np
import torch

from mirops.data.audio import resample
from mirops.features.fingerprint import (
    FRAME_SECONDS,
    MAX_SHIFT,
    THRESHOLD,
    find_near_duplicates,
    fingerprint,
    similarity,
)
from mirops.features.logmel import YamnetLogMel

SPLITS = np.array(["train", "valid", "test"])
SPLIT_P = [0.7, 0.15, 0.15]


def music(rng: np.random.Generator, seconds: float, sr: int = 16000) -> np.ndarray:
    """Chords, a melody and kick/snare/hi-hat at a random tempo and key: enough structure for a spectrogram."""
    t = np.arange(int(seconds * sr)) / sr
    beat = 60.0 / rng.uniform(80, 140)
    out = np.zeros_like(t)
    root = 48 + rng.integers(12)
    for start in np.arange(0, seconds, beat / 2):  # eighth notes: melody; every 8th: a chord
        idx = (t >= start) & (t < start + 4 * beat)
        keys = [root + rng.choice([0, 2, 4, 5, 7, 9, 11]) + 12]
        if round(start / beat * 2) % 8 == 0:
            keys += [root + i for i in (0, 4, 7)]
        for key in keys:
            f0 = 440.0 * 2 ** ((key - 69) / 12)
            env = np.exp(-(t[idx] - start) * 3.0)
            out[idx] += env * sum(np.sin(2 * np.pi * f0 * k * t[idx]) / k for k in range(1, 6)) * 0.1
        hit = (t >= start) & (t < start + 0.1)
        out[hit] += rng.standard_normal(hit.sum()) * np.exp(-(t[hit] - start) * 40) * 0.2  # hi-hat / snare
    return (0.8 * out / np.abs(out).max()).astype(np.float32)


def timed(fn, items: list) -> float:
    fn(items[0])  # warm-up: filter banks, resampling kernels
    started = time.perf_counter()
    for item in items:
        fn(item)
    return time.perf_counter() - started


def throughput(clips: int, seconds: float) -> dict:
    rng = np.random.default_rng(0)
    waves16 = [music(rng, seconds) for _ in range(clips)]
    waves44 = [resample(w, 16000, 44100) for w in waves16]
    frontend = YamnetLogMel()
    audio = clips * seconds
    figures: dict[str, dict] = {}
    for threads in (1, torch.get_num_threads()):
        torch.set_num_threads(threads)
        runs = {
            "fingerprint_16k": timed(lambda w: fingerprint(w, 16000), waves16),
            "fingerprint_44k": timed(lambda w: fingerprint(w, 44100), waves44),
            "baseline_yamnet_logmel_16k": timed(lambda w: frontend(torch.from_numpy(w)[None]), waves16),
        }
        figures[f"threads_{threads}"] = {name: {"clips_per_second": round(clips / wall, 1),
                                                "real_time_factor": round(audio / wall, 1)}
                                         for name, wall in runs.items()}
    return {"clips": clips, "clip_seconds": seconds, **figures}


def random_codes(rng: np.random.Generator, n: int, frames: int, vocab: np.ndarray | None = None) -> np.ndarray:
    """uint32 [n, 2, frames]: random bits, a per-clip share of strong bits, 10 % vocabulary frames."""
    codes = np.empty((n, 2, frames), dtype=np.uint32)
    codes[:, 0] = rng.integers(0, 2**32, size=(n, frames), dtype=np.uint32)
    for start in range(0, n, 1000):  # bools in chunks: 1000 x frames x 32 at a time
        stop = min(n, start + 1000)
        density = rng.uniform(0.2, 0.5, size=(stop - start, 1, 1))
        strong = rng.random((stop - start, frames, 32)) < density
        codes[start:stop, 1] = (strong.astype(np.uint32) << np.arange(32, dtype=np.uint32)).sum(2, dtype=np.uint32)
    if vocab is None:
        return codes
    common = rng.random((n, frames)) < 0.1
    picks = rng.integers(0, len(vocab), size=int(common.sum()))
    codes[:, 0][common], codes[:, 1][common] = vocab[picks, 0], vocab[picks, 1]
    return codes


def degraded_copy(rng: np.random.Generator, code: np.ndarray, fresh: np.ndarray) -> tuple[np.ndarray, int]:
    """A re-encoded, cropped copy: 5-15 % of strong signs flipped, 3-10 % of strength flags toggled, shifted."""
    frames = code.shape[1]
    flips = (rng.random((frames, 32)) < rng.uniform(0.05, 0.15)).astype(np.uint32) << np.arange(32, dtype=np.uint32)
    toggles = (rng.random((frames, 32)) < rng.uniform(0.03, 0.1)).astype(np.uint32) << np.arange(32, dtype=np.uint32)
    copy = code.copy()
    copy[0] ^= flips.sum(1, dtype=np.uint32) & code[1]
    copy[1] ^= toggles.sum(1, dtype=np.uint32)
    shift = int(rng.integers(-30, 31))  # copy frame i = source frame i + shift; the rest is new audio
    copy = np.roll(copy, -shift, axis=1)
    if shift > 0:
        copy[:, frames - shift :] = fresh[:, frames - shift :]
    elif shift < 0:
        copy[:, :-shift] = fresh[:, :-shift]
    return copy, shift


def dataset(n: int, planted: int, frames: int, seed: int = 1):
    rng = np.random.default_rng(seed)
    vocab = random_codes(rng, 2000, 1)[:, :, 0]
    codes = random_codes(rng, n, frames, vocab)
    splits = rng.choice(SPLITS, size=n, p=SPLIT_P)
    slots = rng.choice(n, size=2 * planted, replace=False)
    pairs = []
    for source, target in zip(slots[:planted], slots[planted:], strict=True):
        codes[target], _ = degraded_copy(rng, codes[source], codes[target])
        splits[target] = rng.choice([s for s in SPLITS if s != splits[source]])
        pairs.append((f"c{min(source, target):05d}", f"c{max(source, target):05d}"))
    ids = [f"c{i:05d}" for i in range(n)]
    return dict(zip(ids, codes, strict=True)), dict(zip(ids, splits, strict=True)), set(pairs)


def brute_force(codes: dict[str, np.ndarray], splits: dict[str, str]) -> tuple[set, int, float]:
    ids = list(codes)
    found, compared = set(), 0
    started = time.perf_counter()
    for i, a in enumerate(ids):
        for b in ids[i + 1 :]:
            if splits[a] != splits[b]:
                compared += 1
                if similarity(codes[a], codes[b]) >= THRESHOLD:
                    found.add((min(a, b), max(a, b)))
    return found, compared, time.perf_counter() - started


def cross_split_pairs(n: int) -> int:
    """Expected cross-split pairs among n clips split 70/15/15."""
    return int(n * (n - 1) / 2 * (1 - sum(p * p for p in SPLIT_P)))


def search(n: int, planted: int, subset: int, seconds: float) -> dict:
    frames = int(seconds / FRAME_SECONDS) - 8
    codes, splits, truth = dataset(n, planted, frames)
    started = time.perf_counter()
    table = find_near_duplicates(codes, splits)
    wall = time.perf_counter() - started
    tracemalloc.start()  # a second run for memory: tracing slows it down; numpy reports its buffers
    find_near_duplicates(codes, splits)
    search_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    found = {(min(a, b), max(a, b)) for a, b in zip(table["clip_a"], table["clip_b"], strict=True)}
    planted_sim = [similarity(codes[a], codes[b]) for a, b in sorted(truth)]

    # The subset: every clip of the first few planted pairs, then others, so both methods have something to find.
    inside = [c for pair in sorted(truth)[: max(1, subset // 20)] for c in pair]
    others = [c for c in codes if c not in inside][: subset - len(inside)]
    sub_codes = {c: codes[c] for c in inside + others}
    sub_splits = {c: splits[c] for c in sub_codes}
    brute, compared, brute_wall = brute_force(sub_codes, sub_splits)
    started = time.perf_counter()
    lsh_sub = find_near_duplicates(sub_codes, sub_splits)
    lsh_sub_wall = time.perf_counter() - started
    lsh_sub_pairs = {(min(a, b), max(a, b)) for a, b in zip(lsh_sub["clip_a"], lsh_sub["clip_b"], strict=True)}
    per_pair = brute_wall / max(compared, 1)
    return {
        "codes": n, "frames_per_code": frames, "planted_pairs": len(truth),
        "planted_similarity": {"min": round(min(planted_sim), 3), "median": round(float(np.median(planted_sim)), 3)},
        "index_search": {"seconds": round(wall, 2), "peak_memory_mb": round(search_peak / 2**20),
                         "rows": len(table), "planted_found": len(found & truth), "false_rows": len(found - truth)},
        "brute_force_subset": {
            "codes": len(sub_codes), "pairs_compared": compared, "seconds": round(brute_wall, 2),
            "ms_per_pair": round(1000 * per_pair, 3), "found": len(brute),
            "index_search_seconds": round(lsh_sub_wall, 3), "index_search_same_pairs": lsh_sub_pairs == brute,
        },
        "brute_force_extrapolated_to_all": {
            "cross_split_pairs": cross_split_pairs(n),
            "hours": round(cross_split_pairs(n) * per_pair / 3600, 1),
        },
        "speedup_vs_brute_force": round(cross_split_pairs(n) * per_pair / wall, 0),
        "process_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=20, help="clips for the throughput figures")
    parser.add_argument("--codes", type=int, default=20000)
    parser.add_argument("--planted", type=int, default=25)
    parser.add_argument("--subset", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    print(json.dumps({
        "benchmark": "fingerprint", "cpu_count": os.cpu_count(), "machine": platform.machine(),
        "threshold": THRESHOLD, "max_shift_frames": MAX_SHIFT,
        "throughput": throughput(args.clips, args.seconds),
        "search": search(args.codes, args.planted, args.subset, args.seconds),
    }, indent=2))


if __name__ == "__main__":
    main()
