"""Audio fingerprints that survive re-encoding, and a search for near-duplicate clips across splits.

A clip's fingerprint is a coarse, quantised spectrogram in the style of Haitsma & Kalker (2002): audio
at 8 kHz, a 256 ms window every 32 ms, 33 mel bands from 150 to 3500 Hz (what every codec and sample
rate keeps), log energies floored 30 dB under the clip's mean band energy (so codec noise in quiet
bands and silence all read as the floor), then per frame 32 bits, the signs of the time difference of
the band differences:

    d[t, m] = (E[t, m] - E[t, m + 1]) - (E[t - 1, m] - E[t - 1, m + 1])      bit = d > 0

A second word marks the *strong* bits, |d| > 1 dB: a codec, a resampler or a gain change flips weak
bits, rarely strong ones, and floored regions (silence, empty bands) have d = 0 and are never strong.
Signs of differences of log energies do not change with gain; a mono mixdown is what the loader feeds.

`similarity` is the correlation of two codes read as ternary vectors (+1/-1 for a strong bit by its
sign, 0 for a weak one), at the best of a range of time offsets: 1 for identical codes, near 0 for
unrelated music. Measured on the 200-clip demo dataset (10 s, 16 kHz; 40 sessions of 5 clips that share
key, tempo, instruments and SoundFont), 15 degradations of every clip against all 19,900 clip pairs:

- re-encoded: Ogg Vorbis and MP3 at 16 kHz (default quality down to ~24 kb/s) and at 44.1 kHz (64-128
  kb/s, stereo), ±6 dB (+6 clipped), cropped 0.1 to 1 s, all at once: min 0.64, 5th percentile >= 0.73
  per degradation, median 0.83-1.0; with white noise at 30 dB SNR (not a re-encoding): min 0.58;
- different clips of one session: max 0.20 (99.9th percentile 0.18); of different sessions: max 0.15;
  3 s clips of the tiny test demo: max 0.29.

Hence THRESHOLD = 0.5, in the middle of the gap.

`find_near_duplicates` does not compare every pair: each frame's bits, cut into two overlapping 24-bit
windows, are keys of an inverted index (a window with fewer than 4 strong bits says too little to be a
key, a key more common than `max_df` says nothing). Clips in different splits that share at least
`min_votes` keys at one time offset (±1 frame) are candidates; only those are scored by `similarity_at`,
at the three offsets with the most votes, so a copy cropped anywhere is found if at least half of the
shorter clip overlaps. On the demo dataset with every clip's degraded copy planted in another split it
found all 200 copies of each re-encoding, gain and crop above, 197 of 200 with noise at 30 dB SNR (noise
in empty bands changes every key), and no other pair, also with splits shuffled across sessions.
20,000 clips take seconds (benchmarks/fingerprint.py), brute force would take about a day.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

import numpy as np
import pandas as pd
import torch
import torchaudio
import torchaudio.functional as AF

RATE = 8000
WINDOW = 2048  # 256 ms: long windows overlap much, so a crop off the frame grid changes energies little
HOP = 256  # 32 ms: a 10 s clip has 305 frames, 2.4 kB of code
N_BANDS = 33  # 32 band differences: one uint32 per frame
F_MIN = 150.0
F_MAX = 3500.0  # below the low-pass of low-bitrate codecs and of 8 kHz audio
FLOOR_DB = -30.0  # band energies under this (relative to the clip's mean band energy) read as the floor
STRONG_DB = 1.0  # |d| above this: a bit that re-encoding rarely flips
THRESHOLD = 0.5
MAX_SHIFT = 32  # frames (~1 s) `similarity` searches either way
MIN_OVERLAP = 0.5  # of the shorter code: an offset leaving less is not a comparison
KEY_BITS = 24
KEY_SHIFTS = (0, 8)  # key windows: bits 0-23 and 8-31
KEY_MIN_STRONG = 4
OFFSETS_PER_PAIR = 3
FRAME_SECONDS = HOP / RATE
MAX_CHANNELS = 8  # more "channels" than this: a [channels, samples] array, refused rather than misread

COLUMNS = ["clip_a", "split_a", "clip_b", "split_b", "similarity", "offset_s"]


def config() -> dict:
    """Everything a fingerprint depends on: part of its cache key."""
    return {"rate": RATE, "window": WINDOW, "hop": HOP, "bands": N_BANDS, "f_min": F_MIN, "f_max": F_MAX,
            "floor_db": FLOOR_DB, "strong_db": STRONG_DB}


@functools.cache
def _mel() -> torchaudio.transforms.MelSpectrogram:
    return torchaudio.transforms.MelSpectrogram(sample_rate=RATE, n_fft=WINDOW, hop_length=HOP, f_min=F_MIN,
                                                f_max=F_MAX, n_mels=N_BANDS, power=2.0, center=False)


def _pack(bits: np.ndarray) -> np.ndarray:
    """bool [frames, 32] -> uint32 [frames], band m in bit m."""
    return (bits.astype(np.uint32) << np.arange(bits.shape[1], dtype=np.uint32)).sum(axis=1, dtype=np.uint32)


@torch.no_grad()
def fingerprint(wave: np.ndarray, sample_rate: int) -> np.ndarray:
    """uint32 [2, frames]: row 0 the bits, row 1 which of them are strong. `wave` is [samples] or
    [samples, channels] (mixed to mono); a clip shorter than one window is padded with silence."""
    wave = np.asarray(wave, dtype=np.float32)
    if wave.ndim == 2 and wave.shape[1] <= MAX_CHANNELS:
        wave = wave.mean(axis=1)
    if wave.ndim != 1:
        raise ValueError(f"expected a waveform [samples] or [samples, channels], got shape {wave.shape}")
    x = torch.from_numpy(np.ascontiguousarray(wave))
    if sample_rate != RATE:
        x = AF.resample(x, sample_rate, RATE)
    if x.shape[0] < WINDOW + HOP:  # two frames at least: bits are differences in time
        x = torch.nn.functional.pad(x, (0, WINDOW + HOP - x.shape[0]))
    energy = _mel()(x)  # [bands, frames]
    floor = energy.mean() * 10 ** (FLOOR_DB / 10)
    db = 10 * torch.log10(torch.maximum(energy, floor.clamp_min(1e-20)))
    band_diff = db[:-1] - db[1:]
    d = (band_diff[:, 1:] - band_diff[:, :-1]).T.numpy()  # [frames - 1, 32]
    return np.stack([_pack(d > 0), _pack(np.abs(d) > STRONG_DB)])


def _count(words: np.ndarray) -> int:
    return int(np.bitwise_count(words).sum())


def similarity_at(a: np.ndarray, b: np.ndarray, offset: int) -> float:
    """Correlation of the ternary codes where frame i of `a` meets frame i - offset of `b`."""
    start = max(0, offset)
    end = min(a.shape[1], b.shape[1] + offset)
    if end <= start:
        return 0.0
    xa, xb = a[:, start:end], b[:, start - offset : end - offset]
    both = xa[1] & xb[1]
    strong = _count(xa[1]) * _count(xb[1])
    if strong == 0:
        return 0.0
    return (_count(both) - 2 * _count((xa[0] ^ xb[0]) & both)) / float(np.sqrt(strong))


def overlaps(a: np.ndarray, b: np.ndarray, offset: int, min_overlap: float = MIN_OVERLAP) -> bool:
    """Whether the codes at `offset` share at least `min_overlap` of the shorter one's frames."""
    overlap = min(a.shape[1], b.shape[1] + offset) - max(0, offset)
    return overlap >= max(1.0, min_overlap * min(a.shape[1], b.shape[1]))


def similarity(a: np.ndarray, b: np.ndarray, max_shift: int = MAX_SHIFT, min_overlap: float = MIN_OVERLAP) -> float:
    """The best `similarity_at` over offsets of up to `max_shift` frames that overlap at least `min_overlap`
    of the shorter code; 0 when none does. Symmetric."""
    offsets = [o for o in range(-max_shift, max_shift + 1) if overlaps(a, b, o, min_overlap)]
    return max((similarity_at(a, b, o) for o in offsets), default=0.0)


def _keys(codes: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(key, clip, frame) of every key of every code: each window's bits tagged with the window; a window
    with too few strong bits is left out. All codes at once: a Python loop over clips costs more."""
    lengths = np.array([code.shape[1] for code in codes], dtype=np.int64)
    joined = np.concatenate(codes, axis=1)
    clip = np.repeat(np.arange(len(codes), dtype=np.int32), lengths)
    frame = (np.arange(joined.shape[1]) - np.repeat(np.cumsum(lengths) - lengths, lengths)).astype(np.int32)
    mask = (1 << KEY_BITS) - 1
    keys, clips, frames = [], [], []
    for i, shift in enumerate(KEY_SHIFTS):
        ok = np.bitwise_count((joined[1] >> shift) & mask) >= KEY_MIN_STRONG
        keys.append((((joined[0][ok] >> shift) & mask) | (i << KEY_BITS)).astype(np.int32))
        clips.append(clip[ok])
        frames.append(frame[ok])
    return np.concatenate(keys), np.concatenate(clips), np.concatenate(frames)


def _postings(codes: list[np.ndarray], max_df: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(clip, frame) of every key occurrence, sorted by key, and (start, size) of each key's run there
    for the keys that occur 2..max_df times: rarer ones match nothing, commoner ones say nothing."""
    keys, clips, frames = _keys(codes)
    order = np.argsort(keys)
    keys = keys[order]
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    sizes = np.diff(np.r_[starts, len(keys)])
    useful = (sizes >= 2) & (sizes <= max_df)
    return clips[order], frames[order], starts[useful], sizes[useful]


def _votes(clips: np.ndarray, frames: np.ndarray, starts: np.ndarray, sizes: np.ndarray, split_ids: np.ndarray,
           max_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """Every pair of postings of one key from clips in different splits votes for (clip pair, offset).
    Returns the unique vote codes ((lo * n + hi) * width + offset + max_frames) and their counts."""
    n, width = int(split_ids.shape[0]), 2 * max_frames + 1
    codes = []
    for size in np.unique(sizes):  # all groups of one size at once: pairs come from one index table
        first = starts[sizes == size]
        left, right = np.triu_indices(int(size), 1)
        i, j = (first[:, None] + left).ravel(), (first[:, None] + right).ravel()
        ci, cj = clips[i], clips[j]
        cross = split_ids[ci] != split_ids[cj]
        i, j, ci, cj = i[cross], j[cross], ci[cross], cj[cross]
        swap = ci > cj
        lo, hi = np.where(swap, cj, ci), np.where(swap, ci, cj)
        offset = np.where(swap, frames[j] - frames[i], frames[i] - frames[j]).astype(np.int64)  # lo's minus hi's
        codes.append((lo.astype(np.int64) * n + hi) * width + offset + max_frames)
    if not codes:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    return np.unique(np.concatenate(codes), return_counts=True)


def _candidates(votes: np.ndarray, counts: np.ndarray, width: int, min_votes: int) -> pd.DataFrame:
    """Per clip pair, its `OFFSETS_PER_PAIR` offsets with the most votes within ±1 frame, if at least `min_votes`.
    More than one: in music that repeats itself, a bar or a loop later can outvote the true offset."""
    near = counts.copy()
    for step in (-1, 1):  # add the neighbours' votes: a crop off the frame grid splits them
        at = np.minimum(np.searchsorted(votes, votes + step), max(len(votes) - 1, 0))
        inside = (votes % width + step >= 0) & (votes % width + step < width)
        near += np.where(inside & (votes[at] == votes + step), counts[at], 0)
    table = pd.DataFrame({"pair": votes // width, "offset": votes % width, "votes": near})
    table = table[table["votes"] >= min_votes].sort_values(["pair", "votes"], ascending=[True, False], kind="stable")
    return table.groupby("pair", sort=False).head(OFFSETS_PER_PAIR)


def _verify(a: np.ndarray, b: np.ndarray, voted: int) -> tuple[float, int]:
    """The best (similarity, offset) at a voted offset ±1 frame, whatever its size: keys already found
    where the copies line up. Offsets that overlap too little do not count."""
    offsets = [o for o in (voted - 1, voted, voted + 1) if overlaps(a, b, o)]
    return max(((similarity_at(a, b, o), o) for o in offsets), default=(0.0, 0))


def _checked(clip: str, code: np.ndarray) -> np.ndarray:
    code = np.asarray(code)
    if code.ndim != 2 or code.shape[0] != 2 or code.dtype != np.uint32:
        raise ValueError(f"{clip}: expected a fingerprint, uint32 [2, frames], got {code.dtype} {code.shape}")
    return code


def find_near_duplicates(
    codes: Mapping[str, np.ndarray],
    splits: Mapping[str, str],
    threshold: float = THRESHOLD,
    min_votes: int = 3,
    max_df: int = 50,
) -> pd.DataFrame:
    """Pairs of clips in different splits whose fingerprints match: the same audio, maybe re-encoded,
    re-levelled or cropped. Rows (clip_a, split_a, clip_b, split_b, similarity, offset_s), most similar
    first; clip_a comes first in `codes`, and its audio at t matches clip_b's at t - offset_s.

    Only cross-split pairs are reported: that is leakage (the model is evaluated on what it trained on,
    or selected on it). A duplicate inside one split is not, it only weighs a clip twice; a dedup of a
    split is a different question. The `unlabeled` split counts as a split: a test clip in the unlabeled
    pool leaks into any semi-supervised training. Clips missing from `splits` raise a KeyError.
    """
    ids = list(codes)
    if not ids:
        return pd.DataFrame(columns=COLUMNS)
    missing = [clip for clip in ids if clip not in splits]
    if missing:
        raise KeyError(f"no split for {len(missing)} clip(s), e.g. {missing[:3]}")
    split_names = [str(splits[clip]) for clip in ids]
    _, split_ids = np.unique(split_names, return_inverse=True)
    arrays = [_checked(clip, codes[clip]) for clip in ids]
    max_frames = max(code.shape[1] for code in arrays)
    votes, counts = _votes(*_postings(arrays, max_df), split_ids, max_frames)
    width = 2 * max_frames + 1
    candidates = _candidates(votes, counts, width, min_votes)
    pairs, voted = candidates["pair"].to_numpy(), candidates["offset"].to_numpy() - max_frames
    lo, hi = pairs // len(ids), pairs % len(ids)
    scored = [_verify(arrays[i], arrays[j], int(o)) for i, j, o in zip(lo, hi, voted, strict=True)]
    best = pd.DataFrame(scored, columns=["similarity", "offset"]).assign(lo=lo, hi=hi)
    best = best[best["similarity"] >= threshold].sort_values("similarity", ascending=False, kind="stable")
    best = best.drop_duplicates(["lo", "hi"])
    rows = [(ids[i], split_names[i], ids[j], split_names[j], score, offset * FRAME_SECONDS)
            for i, j, score, offset in zip(best["lo"], best["hi"], best["similarity"], best["offset"], strict=True)]
    table = pd.DataFrame(rows, columns=COLUMNS)
    return table.sort_values("similarity", ascending=False, kind="stable").reset_index(drop=True)
