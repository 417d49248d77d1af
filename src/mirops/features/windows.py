"""Clip-length windows over audio of any length: how a model trained on fixed clips hears a whole file."""

from __future__ import annotations

import math

import numpy as np

from mirops.data.audio import fit_length


def windows(wave: np.ndarray, n: int) -> list[np.ndarray]:
    """Windows of `n` samples covering `wave` (views where possible: an hour of audio is not copied).

    Training saw one clip-length crop per clip, so a long file is cut into consecutive clip-length windows
    whose probabilities are averaged. The last window is aligned to the file's end (overlapping the one
    before) rather than padded: a mostly-silent tail window would pull every class towards "absent".
    A file shorter than one clip is right-padded with silence, as training padded short clips.
    """
    if len(wave) <= n:
        return [fit_length(wave, n)]
    starts = [i * n for i in range(math.ceil(len(wave) / n) - 1)] + [len(wave) - n]
    return [wave[s : s + n] for s in starts]


def spread_starts(length: int, n: int, limit: int | None) -> list[int]:
    """Start samples of the clip-length windows the monitor reads from a file of `length` samples.

    Every consecutive window when there are at most `limit` (the last aligned to the end, as `windows`); else
    `limit` windows evenly spread from the start to the end, so a long track is heard all through at a bounded
    cost. The positions depend on the duration only, so features decoded at different rates line up."""
    if length <= n:
        return [0]
    count = math.ceil(length / n)
    if limit is None or count <= limit:
        return [i * n for i in range(count - 1)] + [length - n]
    return [int(round(s)) for s in np.linspace(0, length - n, limit)]

