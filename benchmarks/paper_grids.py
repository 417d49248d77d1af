"""Both papers' grids on a larger demo, over seeds, with the papers' orderings checked row by row. JSON on stdout.

A demo of `--clips` clips (default 2,000; 3 s clips so the backbone-in-the-loop variants fit a CPU machine) is
rendered and versioned once in `--workdir`. Then, per seed, `mirops train reprogram --grid paper` (YAMNet, the
seven rows) and `mirops train east --grid paper` (a YAMNet teacher: student, probe, KD, EAsT, KD + EAsT) run
through the pipeline's own function, each seed a separate grid run; a rerun in the same folder resumes (finished
variants are not retrained). Per variant: mean ± sd over seeds of test mAP, ROC-AUC and the OpenMIC F1. The
orderings are the papers' claims, each checked on the seed means and called "holds", "reversed", or "within
noise" when the difference is smaller than the larger of the two seed sds. Nothing is tuned on the test split:
the recipes are the params.yaml defaults (`tuned` for reprogramming), model selection is on valid.

The JSON is also written to --out after every finished grid, so a long run can be read before it ends.
Usage: python benchmarks/paper_grids.py [--clips 2000] [--seeds 3] [--clip-seconds 3] [--families reprogram,east]
       [--reprogram-epochs 8] [--east-epochs 30] [--workdir DIR] [--out FILE]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from mirops.config import Settings
from mirops.offline import quiet_and_offline
from mirops.pipeline import train

sys.path.insert(0, str(Path(__file__).resolve().parent))
from demo_project import demo_project  # noqa: E402 - the benchmarks' own modules beside it
from machine import cpu_name  # noqa: E402

METRICS = ("test_mAP", "test_ROC_AUC", "test_F1_openmic")
# (better, worse) as each paper reports them: Chen & Lerch's table (MMM 2023), Ding & Lerch's (ISMIR 2023).
ORDERINGS = {
    "reprogram": [("unet-backbone-fc", "cnn-backbone-fc"), ("cnn-backbone-fc", "backbone-ln-linear"),
                  ("backbone-ln-linear", "backbone-map"), ("noise-backbone-fc", "backbone-ln-linear"),
                  ("cnn-backbone-fc", "cnn-only"), ("unet-backbone-fc", "unet-only")],
    "east": [("east-yamnet", "student"), ("kd-yamnet", "student"), ("east-yamnet", "kd-yamnet"),
             ("kd+east-yamnet", "student")],
}


def summary(rows_by_seed: list[list[dict]]) -> dict[str, dict]:
    """Per variant: mean, sd and the per-seed values of each metric (variants skipped in a seed are left out)."""
    out: dict[str, dict] = {}
    for rows in rows_by_seed:
        for row in rows:
            entry = out.setdefault(row["variant"], {m: [] for m in METRICS})
            for m in METRICS:
                if row.get(m) is not None:
                    entry[m].append(float(row[m]))
    return {v: {m: {"mean": float(np.mean(x)), "sd": float(np.std(x, ddof=1)) if len(x) > 1 else None, "seeds": x}
                for m, x in entry.items() if x} for v, entry in out.items()}


def verdicts(family: str, table: dict[str, dict], metric: str = "test_mAP") -> list[dict]:
    checks = []
    for better, worse in ORDERINGS[family]:
        if better not in table or worse not in table or metric not in table[better] or metric not in table[worse]:
            continue
        a, b = table[better][metric], table[worse][metric]
        gap = a["mean"] - b["mean"]
        if a["sd"] is None or b["sd"] is None:  # one seed: no spread to compare the gap with
            noise, verdict = None, ("holds" if gap > 0 else "reversed") + " (one seed: noise unknown)"
        else:
            noise = max(a["sd"], b["sd"])
            verdict = "within noise" if abs(gap) <= noise else ("holds" if gap > 0 else "reversed")
        checks.append({"better": better, "worse": worse, "metric": metric, "gap": round(gap, 4),
                       "larger_sd": None if noise is None else round(noise, 4), "verdict": verdict})
    return checks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=2000)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--clip-seconds", type=float, default=3.0)
    parser.add_argument("--families", default="reprogram,east")
    parser.add_argument("--reprogram-epochs", type=int, default=8)
    parser.add_argument("--east-epochs", type=int, default=30)
    parser.add_argument("--east-student-options", default='{"rho": 5, "base_channels": 32}',
                        help="CP-ResNet options (JSON) of the EAsT student; the reference's is rho 7, 128 channels")
    parser.add_argument("--workdir", type=Path, default=None, help="keep the project here (reruns resume)")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here after every grid")
    args = parser.parse_args()
    quiet_and_offline()
    started = time.perf_counter()
    families = args.families.split(",")
    result: dict = {"benchmark": "paper_grids", "date": datetime.date.today().isoformat(),
                    "machine": {"cpu": cpu_name()}, "clips": args.clips, "clip_seconds": args.clip_seconds,
                    "seeds": list(range(1, args.seeds + 1)), "families": {}}
    with contextlib.ExitStack() as stack:
        stack.enter_context(contextlib.redirect_stdout(sys.stderr))  # progress and tool chatter: not the JSON
        root = args.workdir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="paper-grids-")))
        base = demo_project(root.resolve() / "project", {
            "demo": {"clips": args.clips, "groups": args.clips // 5, "production_clips": 4,
                     "clip_seconds": args.clip_seconds},
            "reprogram": {"epochs": args.reprogram_epochs, "clip_seconds": args.clip_seconds},
            "east": {"epochs": args.east_epochs, "clip_seconds": args.clip_seconds,
                     "student_options": json.loads(args.east_student_options)}})
        result["render_and_version_s"] = round(time.perf_counter() - started, 1)
        for family in families:
            per_seed, seconds = [], []
            for seed in result["seeds"]:
                began = time.perf_counter()
                settings = Settings.load(base.root, seed=seed)
                per_seed.append(train.train_grid(settings, family, "paper", resume=True)["rows"])
                seconds.append(round(time.perf_counter() - began, 1))
                table = summary(per_seed)
                result["families"][family] = {"variants": table, "orderings": verdicts(family, table),
                                              "grid_seconds": seconds}
                if args.out:
                    args.out.write_text(json.dumps(result, indent=2) + "\n")
    result["total_s"] = round(time.perf_counter() - started, 1)
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
