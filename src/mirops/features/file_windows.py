"""Per-window features of whole files: how the monitor reads a folder of tracks of any length.

A model hears clip-length windows, so the monitor compares windows too: each file is cut into windows of the
model's clip length (`windows.spread_starts`: all of them up to `limit`, else `limit` spread over the file), and
each feature is computed per window. A file's value is an array [windows, ...], cached by the file's content,
the feature and the windowing, so a file read once under any batch or reference is not read again.

Only the windows are decoded: a reader seeks to each one (`WindowReader`). An 11-minute Opus track takes 12 s
to decode whole on these machines, its eight 10 s windows a tenth of that; and nothing of the whole track is
kept (its decoded samples would be 40 MB in the cache).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from mirops.data.audio import CONTAINER_OF_SUFFIX, AudioError, check_path, check_samples, fit_length, resample, to_mono
from mirops.features.clips import ClipLoader, ClipResults, per_clip
from mirops.features.descriptors import DESCRIPTOR_COLUMNS, clip_descriptors
from mirops.features.windows import spread_starts


def read_windows(path: Path, sample_rate: int, seconds: float, limit: int | None) -> np.ndarray:
    """The `spread_starts` windows of a file, [windows, seconds * sample_rate] mono float32, decoding only them;
    AudioError (as `data.audio.decode` raises it) for a file that cannot be used."""
    check_path(path)
    try:
        with sf.SoundFile(str(path)) as f:
            if f.format not in CONTAINER_OF_SUFFIX[path.suffix.lower()]:
                raise AudioError(path, "wrong_extension", f"{f.format} data behind a {path.suffix} extension")
            rate, frames = f.samplerate, f.frames
            if not rate or frames <= 0:
                raise AudioError(path, "no_audio")
            native = int(round(seconds * rate))
            chunks = []
            for start in spread_starts(frames, native, limit):
                f.seek(start)
                chunk = f.read(min(native, frames - start), dtype="float32", always_2d=True)
                if len(chunk) == 0:
                    raise AudioError(path, "truncated", f"nothing to read at frame {start} of {frames}")
                chunks.append(chunk)
    except PermissionError as exc:
        raise AudioError(path, "unreadable", str(exc)) from exc
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
        raise AudioError(path, "undecodable", str(exc).strip() or type(exc).__name__) from exc
    check_samples(path, np.concatenate(chunks), rate)
    n = int(round(seconds * sample_rate))
    return np.stack([fit_length(np.ascontiguousarray(resample(to_mono(c), rate, sample_rate), dtype=np.float32), n)
                     for c in chunks])


@dataclass
class WindowReader:
    """A `ClipLoader` whose `wave` is a file's windows [windows, samples]: what `per_clip` caches per file."""

    loader: ClipLoader
    seconds: float
    limit: int | None

    @property
    def folder(self) -> Path:
        return self.loader.folder

    @property
    def cache(self):
        return self.loader.cache

    def key(self, rel_path: str, *config: dict) -> str:
        return self.loader.key(rel_path, *config)

    def wave(self, rel_path: str) -> np.ndarray:
        return read_windows(self.folder / rel_path, self.loader.sample_rate, self.seconds, self.limit)


def windowed(loader: ClipLoader, paths: Sequence[str], namespace: str, config: dict,
             per_window: Callable[[np.ndarray], np.ndarray], seconds: float, limit: int | None,
             progress: Callable[[], None] | None = None) -> ClipResults:
    """`per_window(window)` for each window of each file, stacked per file into [windows, ...]. `loader` must
    give whole files (`seconds=None`)."""
    if loader.seconds is not None:
        raise ValueError(f"windowed features need whole files, got a loader cropping to {loader.seconds} s")

    def compute(windows: np.ndarray) -> np.ndarray:
        return np.stack([per_window(w) for w in windows])

    windowing = {"windows": {"seconds": seconds, "limit": limit, "v": 1}}
    return per_clip(WindowReader(loader, seconds, limit), paths, f"windows-{namespace}", {**config, **windowing},
                    compute, progress)


def window_descriptors(loader: ClipLoader, paths: Sequence[str], seconds: float, limit: int | None,
                       progress: Callable[[], None] | None = None) -> ClipResults:
    """Audio descriptors (DESCRIPTOR_COLUMNS order) of each window of each file."""

    def compute(wave: np.ndarray) -> np.ndarray:
        values = clip_descriptors(wave, loader.sample_rate)
        return np.array([values[c] for c in DESCRIPTOR_COLUMNS], dtype=np.float64)

    return windowed(loader, paths, "descriptors", {"columns": list(DESCRIPTOR_COLUMNS), "v": 1}, compute,
                    seconds, limit, progress)
