"""The dataset audit at OpenMIC scale, and descriptor extraction throughput; JSON on stdout.

1. A 20,000-clip, 20-class manifest (soft labels, 40 % missing, groups of 2 clips) with cached
   descriptors and no duplicates: time of the whole audit (every suite in expectations/, reports
   written) against a baseline in the same run, the derived tables alone (pandas, no Great Expectations).
2. Per-clip audio descriptors (torchaudio) on 10 s clips: clips/s and real-time factor.
Target (issue 6): the audit ≤ 30 s on 2 cores.
Usage: python benchmarks/audit.py [--clips 20000] [--descriptor-clips 40]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from mirops.audit.report import run_audit
from mirops.audit.tables import derived_tables
from mirops.config import AuditParams
from mirops.data.manifest import LabelSpec
from mirops.features.descriptors import DESCRIPTOR_COLUMNS, clip_descriptors
from mirops.offline import quiet_and_offline

EXPECTATIONS = Path(__file__).resolve().parents[1] / "expectations"


def synthetic(n: int, n_classes: int = 20, seed: int = 0) -> tuple[pd.DataFrame, LabelSpec, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    classes = [f"class{i:02d}" for i in range(n_classes)]
    groups = np.arange(n) // 2
    split = np.where(groups % 10 < 7, "train", np.where(groups % 10 < 8, "valid", "test"))
    df = pd.DataFrame({"clip_id": [f"{i:06d}" for i in range(n)], "path": [f"audio/{i:06d}.ogg" for i in range(n)],
                       "split": split, "group": [f"t{g}" for g in groups], "duration_s": 10.0,
                       "sample_rate": 44100})
    prevalence = np.linspace(0.05, 0.5, n_classes)
    for c, p in zip(classes, prevalence, strict=True):
        truth = rng.random(n) < p
        soft = np.where(truth, rng.uniform(0.6, 1.0, n), rng.uniform(0.0, 0.35, n))
        df[f"label:{c}"] = np.where(rng.random(n) < 0.4, np.nan, soft)
    audio = pd.DataFrame(rng.normal(0, 1, (n, len(DESCRIPTOR_COLUMNS))), columns=DESCRIPTOR_COLUMNS)
    audio["duration_s"], audio["clipping_ratio"], audio["silence_ratio"] = 10.0, 0.0, 0.01
    audio["loudness_lufs"] = rng.normal(-20, 3, n)
    audio.insert(0, "clip_id", df["clip_id"])
    return df, LabelSpec(classes), audio


def time_audit(n: int) -> dict:
    df, spec, audio = synthetic(n)
    empty = pd.DataFrame(columns=["clip_a", "split_a", "clip_b", "split_b", "similarity"])
    started = time.perf_counter()
    derived_tables(df, spec, audio=audio, duplicates=empty, quarantined=0)
    tables_s = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as out:
        run_audit(df.head(200), spec, AuditParams(), EXPECTATIONS, Path(out), "warm-up", audio=audio.head(200))
        started = time.perf_counter()
        result = run_audit(df, spec, AuditParams(), EXPECTATIONS, Path(out), "bench", audio=audio,
                           duplicates=empty)
        audit_s = time.perf_counter() - started
    return {"clips": n, "classes": len(spec.classes), "checks": len(result.checks), "audit_seconds": round(audit_s, 2),
            "baseline_tables_only_seconds": round(tables_s, 2), "target_seconds": 30.0,
            "target_met": audit_s <= 30.0}


def time_descriptors(n: int, seconds: float = 10.0) -> dict:
    rng = np.random.default_rng(1)
    waves = [(0.1 * rng.standard_normal(int(16000 * seconds))).astype(np.float32) for _ in range(n)]
    clip_descriptors(waves[0], 16000)  # warm-up
    started = time.perf_counter()
    for wave in waves:
        clip_descriptors(wave, 16000)
    wall = time.perf_counter() - started
    return {"clips": n, "clip_seconds": seconds, "clips_per_second": round(n / wall, 2),
            "real_time_factor": round(n * seconds / wall, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=20000)
    parser.add_argument("--descriptor-clips", type=int, default=40)
    args = parser.parse_args()
    quiet_and_offline()
    print(json.dumps({"benchmark": "audit", "cpu_count": os.cpu_count(), "audit": time_audit(args.clips),
                      "descriptors": time_descriptors(args.descriptor_clips)}, indent=2))


if __name__ == "__main__":
    main()
