"""Table step of the OpenMIC-2018 import on a full-size synthetic label table (no audio), JSON on stdout.

Writes an OpenMIC-shaped download without audio into a temporary folder: 20,000 clips, about 41,500
aggregated-label rows (the real file has 41,534: about two annotated instruments per clip), class-map.json
with 20 instruments and the split01 partitions (14,915 / 5,085). Times `openmic_table` (reading and checking
every row, pivoting to the manifest, carving valid by group) against a baseline in the same run: a plain
`pandas.read_csv` + `pivot` of the same file, i.e. the cost of the checks. Target: <= 30 s.
Usage: python benchmarks/import_table.py [--clips 20000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from mirops.data.importers.openmic import CLASS_MAP, LABELS_CSV, PARTITIONS, openmic_table

INSTRUMENTS = ["accordion", "banjo", "bass", "cello", "clarinet", "cymbals", "drums", "flute", "guitar",
               "mallet_percussion", "mandolin", "organ", "piano", "saxophone", "synthesizer", "trombone", "trumpet",
               "ukulele", "violin", "voice"]
ROWS_PER_CLIP = 41534 / 20000  # the real aggregated-labels file
TRAIN_SHARE = 14915 / 20000    # split01
TARGET_SECONDS = 30.0


def write_download(root: Path, clips: int, seed: int = 0) -> int:
    """An OpenMIC-2018 layout without audio; returns the number of label rows."""
    rng = np.random.default_rng(seed)
    tracks = rng.choice(155_000, size=clips, replace=False)
    keys = np.array([f"{t:06d}_{o}" for t, o in zip(tracks, rng.integers(0, 300, clips) * 960, strict=True)])
    per_clip = 1 + rng.multinomial(round(clips * (ROWS_PER_CLIP - 1)), np.full(clips, 1 / clips))
    per_clip = np.minimum(per_clip, len(INSTRUMENTS))
    rows = [(k, inst) for k, n in zip(keys, per_clip, strict=True)
            for inst in rng.choice(INSTRUMENTS, size=n, replace=False)]
    labels = pd.DataFrame(rows, columns=["sample_key", "instrument"])
    labels["relevance"] = rng.random(len(labels)).round(5)
    labels["num_responses"] = rng.integers(1, 6, len(labels))
    labels.to_csv(root / LABELS_CSV, index=False)
    (root / CLASS_MAP).write_text(json.dumps({name: i for i, name in enumerate(INSTRUMENTS)}))
    order = rng.permutation(clips)
    cut = round(clips * TRAIN_SHARE)
    (root / "partitions").mkdir()
    for name, part in (("train", keys[order[:cut]]), ("test", keys[order[cut:]])):
        (root / PARTITIONS[name]).write_text("\n".join(sorted(part)) + "\n")
    return len(labels)


def baseline(root: Path) -> pd.DataFrame:
    df = pd.read_csv(root / LABELS_CSV)
    return df.pivot(index="sample_key", columns="instrument", values="relevance")


def timed(fn, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        out.append(time.perf_counter() - started)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=20000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mirops-bench-") as tmp:
        root = Path(tmp)
        rows = write_download(root, args.clips)
        table = openmic_table(root, valid_fraction=0.15, seed=2022)  # warm-up (imports), and the counts
        ours = timed(lambda: openmic_table(root, valid_fraction=0.15, seed=2022), args.repeats)
        base = timed(lambda: baseline(root), args.repeats)
    seconds = statistics.median(ours)
    print(json.dumps({
        "benchmark": "openmic_import_table", "machine": platform.machine(), "python": platform.python_version(),
        "pandas": pd.__version__, "clips": args.clips, "label_rows": rows, "repeats": args.repeats,
        "splits": table.split_counts(),
        "seconds": seconds, "seconds_all": ours, "clips_per_second": args.clips / seconds,
        "baseline_read_csv_pivot_seconds": statistics.median(base),
        "over_baseline": seconds / statistics.median(base),
        "target_seconds": TARGET_SECONDS, "target_met": seconds <= TARGET_SECONDS,
    }, indent=2))


if __name__ == "__main__":
    main()
