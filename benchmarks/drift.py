"""The drift report at scale: 10,000 reference clips vs 10,000 current clips, JSON on stdout.

Each clip has the monitor's columns: the 11 audio descriptors, 9 class probabilities of a champion (20 columns
compared one by one) and a 1024-d mean embedding (non-negative, low-rank plus noise, like YAMNet's), in
recordings of 5 clips (the group column the embedding classifier splits by). The current batch is mildly
shifted (4 descriptors and 1 probability by 0.1 sd, the embedding's latent factors by 0.3 sd), so the report
has drift to find: a few columns, and the embedding.

Times `drift_report` as `mirops monitor` calls it (the file-level permutation test with 1999 relabellings, an
Evidently Report with it, DataDriftPreset and the grouped domain classifier, HTML and JSON written, the run added
to a local Evidently workspace), after a warm-up on 200 rows
that pays the imports. Baseline in the same run: the same statistics without Evidently (scipy's K-S test and
Wasserstein distance per column, the grouped classifier on the embeddings), i.e. what the report adds.
Target (issue 5): <= 60 s on 2 cores.
Usage: python benchmarks/drift.py [--clips 10000] [--dim 1024]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from mirops.features.descriptors import DESCRIPTOR_COLUMNS
from mirops.monitor.drift import drift_report, grouped_domain_auc
from mirops.offline import quiet_and_offline

PREDICTIONS = [f"pred_class{i}" for i in range(9)]
COLUMNS = list(DESCRIPTOR_COLUMNS) + PREDICTIONS
CLIPS_PER_RECORDING = 5
TARGET_SECONDS = 60.0


def table(n: int, dim: int, seed: int, shift: float, embedding_shift: float) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    basis = np.random.default_rng(0).normal(0.0, 1.0, (32, dim)).astype(np.float32)  # shared by both tables
    factors = rng.normal(embedding_shift, 1.0, (n, 32)).astype(np.float32)
    embedding = np.abs(factors @ basis / 6 + rng.normal(0.0, 0.3, (n, dim)).astype(np.float32))
    frame = pd.DataFrame(embedding, columns=[f"emb_{i:04d}" for i in range(dim)])
    columns = {c: rng.normal(shift if i < 4 else 0.0, 1.0, n) for i, c in enumerate(DESCRIPTOR_COLUMNS)}
    columns |= {c: rng.beta(2.0 + 4 * shift if i == 0 else 2.0, 5.0, n) for i, c in enumerate(PREDICTIONS)}
    frame = pd.concat([pd.DataFrame(columns), frame], axis=1)
    frame.insert(0, "group", [f"s{seed}-r{i // CLIPS_PER_RECORDING}" for i in range(n)])
    return frame


def baseline(reference: pd.DataFrame, current: pd.DataFrame, embedding: list[str]) -> dict:
    from scipy.stats import ks_2samp, wasserstein_distance

    started = time.perf_counter()
    p_values = [ks_2samp(reference[c], current[c]).pvalue for c in COLUMNS]
    distances = [wasserstein_distance(reference[c], current[c]) / (reference[c].std() or 1.0) for c in COLUMNS]
    auc = grouped_domain_auc(reference[embedding].to_numpy(), current[embedding].to_numpy(),
                             reference["group"].to_numpy(), current["group"].to_numpy())
    return {"seconds": round(time.perf_counter() - started, 2), "ks_drifted": int(sum(p < 0.05 for p in p_values)),
            "wasserstein_drifted": int(sum(d >= 0.1 for d in distances)), "embedding_auc": round(auc, 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=1024)
    args = parser.parse_args()
    quiet_and_offline()
    embedding = [f"emb_{i:04d}" for i in range(args.dim)]
    reference = table(args.clips, args.dim, seed=1, shift=0.0, embedding_shift=0.0)
    current = table(args.clips, args.dim, seed=2, shift=0.1, embedding_shift=0.3)

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)

        def run(ref: pd.DataFrame, cur: pd.DataFrame, name: str):
            return drift_report(ref, cur, columns=COLUMNS, embedding_columns=embedding, out_dir=out / name,
                                alpha=0.05, workspace_dir=out / "workspace", project="drift",
                                tags={"dataset_version": "bench"}, group_column="group")

        started = time.perf_counter()
        run(reference.head(200), current.head(200), "warm-up")  # imports, Evidently's registries
        warm_up = time.perf_counter() - started
        started = time.perf_counter()
        result = run(reference, current, "full")
        seconds = time.perf_counter() - started
        sizes = {"html_mb": round(result.html_path.stat().st_size / 1e6, 2),
                 "json_mb": round(result.json_path.stat().st_size / 1e6, 2)}
    base = baseline(reference, current, embedding)
    print(json.dumps({
        "benchmark": "drift", "cpu_count": os.cpu_count(), "machine": platform.machine(),
        "reference_clips": args.clips, "current_clips": args.clips, "compared_columns": len(COLUMNS),
        "embedding_dim": args.dim, "recordings_per_side": args.clips // CLIPS_PER_RECORDING,
        "drift_report_seconds": round(seconds, 2), "warm_up_200_rows_seconds": round(warm_up, 2),
        "target_seconds": TARGET_SECONDS, "target_met": seconds <= TARGET_SECONDS,
        "baseline_without_evidently": base, "over_baseline": round(seconds / max(base["seconds"], 1e-9), 1),
        "verdict": {"p_value": result.p_value, "drift_share": result.drift_share,
                    "drifted_columns": result.drifted_columns, "embedding_p_value": result.embedding_p_value,
                    "embedding_auc": round(result.embedding_drift_score, 4),
                    "window_drift_share": result.window_drift_share, "drift_detected": result.drift_detected},
        "outputs": sizes,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }, indent=2))


if __name__ == "__main__":
    main()
