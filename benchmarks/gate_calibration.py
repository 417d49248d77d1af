"""How often the promotion gate is wrong, on real models of the demo: false promotions and power, JSON on stdout.

The gate (`mirops.pipeline.promote.gain_test`, the function `mirops promote` calls) compares two models' per-clip
test predictions. Here the models are real: a demo dataset (the demo's settings with 3 s clips, so a model trains in
5-20 s on 2 cores) and the same recipe trained with K seeds through `mirops train`'s own function, each
scored by `mirops evaluate`'s (the per-clip test predictions kept on the run are exactly what the gate reads).
The challengers with a real gain are the same recipe trained for more epochs; their gain is measured on a larger
held-out set (an independent render of the demo, another seed, every clip scored as the gate re-scores a champion).

Each row applies the gate (registry settings of params.yaml: alpha, min_gain, bootstrap resamples: promote when
the lower end of the paired-bootstrap 1 - alpha interval lies above min_gain, nominally alpha / 2 one-sided) and,
as the baseline in the same run, the alternative it was measured against: a paired permutation test at alpha
(benchmarks/paired_permutation.py). It reports each promotion rate with a 95 % Clopper-Pearson interval, and both
rules' rates at the one-sided levels LEVELS (`by_level`: bootstrap share of resamples not better < level,
permutation p <= level), so another alpha can be read off without a rerun. The models are kept in --workdir: a
rerun there re-tests without training:

- seed pairs: every ordered pair of different-seed models on the test split (no-better challengers: the same
  recipe). Not independent draws: each model is in 2(K-1) pairs, so beside the binomial interval (too narrow)
  each rate has `ci95_models_resampled`, an interval from resampling the models (the independent draws); all
  pairs share the one test split, which the resampled-test-set rows below vary;
- self: each model against itself re-registered (its kept predictions vs. a fresh scoring of the logged model);
- real gain: each longer-trained model against each base model on the test split (power);
- resampled test sets: a random ordered pair of base models on a random test set of the test split's size drawn
  from the held-out pool, a fresh draw each time: the false-promotion rate over test sets from one population,
  given separately for the draws whose challenger is worse on the whole pool (truly no better);
- label-permuted: a random ordered pair of base models on the test split with its clips' label rows shuffled: both
  models at chance, the expected gain exactly 0 (each model's ranking against random labels), their predictions as
  they are (different calibrations, correlated with each other);
- resampled with a real gain: a random longer-trained model against a random base model on test sets drawn from the
  pool (power on fresh test sets).

Usage: python benchmarks/gate_calibration.py [--seeds 24] [--epochs 2] [--gain-seeds 6]
       [--gain-epochs 8] [--clips 200] [--pool-clips 300] [--draws 400] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from mirops.config import Settings
from mirops.data.dataset import DatasetVersion
from mirops.data.manifest import TEST, read_manifest
from mirops.monitor.calibration import Rate
from mirops.offline import quiet_and_offline
from mirops.pipeline import evaluate, ingest, train, version
from mirops.pipeline.evaluate import ClipPredictions
from mirops.pipeline.promote import gain_test
from mirops.registry import models
from mirops.train.metrics import evaluate_probs

sys.path.insert(0, str(Path(__file__).resolve().parent))
from demo_project import demo_project  # noqa: E402 - the benchmarks' own modules beside it
from machine import cpu_name  # noqa: E402
from paired_permutation import paired_permutation  # noqa: E402

LEVELS = (0.01, 0.025, 0.05, 0.1)  # one-sided levels at which both rules' promotion rates are reported
PERMUTATIONS = 1999                # exchanges behind each permutation p-value
CLIP_SECONDS = 3.0


def rate(promoted: int, trials: int) -> dict:
    """Promotions out of trials with the 95 % Clopper-Pearson interval (the drift calibration's `Rate`)."""
    if not trials:
        return {"promoted": 0, "trials": 0, "rate": None, "ci95": None}
    r = Rate.of(promoted, trials)
    return {"promoted": promoted, "trials": trials, "rate": round(r.rate, 4),
            "ci95": [round(r.low, 4), round(r.high, 4)]}


def model_resampled_interval(pairs: list[tuple[int, int]], promoted: list[bool], same_models: bool,
                             resamples: int = 2000, seed: int = 0) -> list[float] | None:
    """95 % interval of a promotion rate over pairs of trained models (challenger i, champion j) that share
    models: the models are the independent draws, so they are resampled (challengers and champions together
    when both come from one set of seeds), and each resample's rate is the mean over its pairs."""
    if not pairs:
        return None
    rows, cols = (max(p[k] for p in pairs) + 1 for k in (0, 1))
    matrix = np.full((rows, cols), np.nan)
    for (i, j), hit in zip(pairs, promoted, strict=True):
        matrix[i, j] = hit
    rng, rates = np.random.default_rng(seed), []
    for _ in range(resamples):
        r = rng.integers(rows, size=rows)
        c = r if same_models else rng.integers(cols, size=cols)
        block = matrix[np.ix_(r, c)]
        if same_models:  # a model drawn twice is not a pair with itself
            block = np.where(r[:, None] == r[None, :], np.nan, block)
        if np.isfinite(block).any():
            rates.append(np.nanmean(block))
    low, high = np.percentile(rates, [2.5, 97.5])
    return [round(float(low), 4), round(float(high), 4)]


class Tally:
    """Promotions of the gate and of the permutation alternative over a set of comparisons; `pair` names the two
    trained models compared (challenger, champion index) where comparisons share models."""

    def __init__(self, same_models: bool = False) -> None:
        self.gate, self.alternative, self.gains, self.pairs = [], [], [], []
        self.p_permutation, self.p_bootstrap = [], []  # each rule's one-sided p-value, for any level
        self.same_models = same_models

    def add(self, labels: np.ndarray, challenger: np.ndarray, champion: np.ndarray, settings: Settings,
            threshold: float, pair: tuple[int, int] | None = None) -> None:
        p = settings.registry
        gain, passed = gain_test(labels, challenger, champion, p, seed=len(self.gate), threshold=threshold)
        _, p_permutation = paired_permutation(labels, challenger, champion, gain.metric, PERMUTATIONS, p.min_gain,
                                              seed=len(self.gate), threshold=threshold)
        self.gate.append(bool(passed))
        self.alternative.append(bool(p_permutation <= p.alpha))
        self.gains.append(gain.gain)
        self.p_permutation.append(p_permutation)
        self.p_bootstrap.append(gain.p_not_better)  # the interval's lower end is above 0 iff this < (1 - conf) / 2
        if pair is not None:
            self.pairs.append(pair)

    def summary(self, mask: list[bool] | None = None) -> dict:
        keep = np.ones(len(self.gate), bool) if mask is None else np.asarray(mask, bool)
        gate, alternative = np.asarray(self.gate)[keep], np.asarray(self.alternative)[keep]
        gains = np.asarray(self.gains)[keep]
        out = {"gate": rate(int(gate.sum()), len(gate)),
               "permutation_at_alpha": rate(int(alternative.sum()), len(gate)),
               "observed_gain": {"mean": round(float(gains.mean()), 4), "sd": round(float(gains.std()), 4)}
               if len(gains) else None}
        perm, boot = np.asarray(self.p_permutation)[keep], np.asarray(self.p_bootstrap)[keep]
        by_level = {f"{a:g}": {"permutation": perm <= a, "bootstrap": boot < a} for a in LEVELS}
        pairs = [p for p, k in zip(self.pairs, keep, strict=True) if k] if self.pairs else []
        for rule, hits in (("gate", gate), ("permutation_at_alpha", alternative)):
            if pairs:  # the binomial interval treats shared-model pairs as independent: too narrow
                out[rule]["ci95_models_resampled"] = model_resampled_interval(pairs, list(hits), self.same_models)
        out["by_level"] = {level: {rule: rate(int(h.sum()), len(h)) | (
            {"ci95_models_resampled": model_resampled_interval(pairs, list(h), self.same_models)} if pairs else {})
            for rule, h in rules.items()} for level, rules in by_level.items()}
        return out


def make_project(root: Path, args: argparse.Namespace) -> Settings:
    return demo_project(root, {
        "demo": {"clips": args.clips, "groups": args.clips // 5, "production_clips": 4, "clip_seconds": CLIP_SECONDS},
        "reprogram": {"transform": args.transform, "epochs": args.epochs, "clip_seconds": CLIP_SECONDS}})


def held_out_pool(settings: Settings, args: argparse.Namespace) -> DatasetVersion:
    """An independent render of the same demo (another seed), every clip in the split the gate scores."""
    folder = settings.root / "heldout"
    if not (folder / "manifest.parquet").exists():
        pool = Settings.load(settings.root, seed=settings.seed + 1000, demo__clips=args.pool_clips,
                             demo__groups=args.pool_clips // 5, demo__production_clips=1)
        ingest.demo(pool, out=folder)
    manifest, spec = read_manifest(folder)
    return DatasetVersion("heldout", folder, manifest.assign(split=TEST), spec, working_copy=False)


PREDICTIONS = ("kept", "rescored", "pool")


def trained(settings: Settings, seed: int, epochs: int, pool: DatasetVersion) -> dict:
    """One model through `mirops train` and `mirops evaluate`: its kept test predictions, its scoring on the pool
    and a fresh scoring of its logged model on the test split (the champion re-registered). Kept in the work
    folder (models/): a rerun with the same --workdir re-tests the gate without training again."""
    saved = settings.root / "models" / f"seed{seed}-epochs{epochs}"
    if (saved / "model.json").exists():
        model = json.loads((saved / "model.json").read_text())
        return model | {k: ClipPredictions.from_frame(pd.read_parquet(saved / f"{k}.parquet")) for k in PREDICTIONS}
    s = Settings.load(settings.root, seed=seed, reprogram__epochs=epochs)
    started = time.perf_counter()
    run_id = train.train(s)
    trained_s = time.perf_counter() - started
    evaluate.evaluate(s, run_id)
    evaluated_s = time.perf_counter() - started - trained_s
    kept = evaluate.run_predictions(run_id)
    uri = models.model_uri_of_run(run_id)
    with version.open_dataset(s) as ds:
        rescored = evaluate.predict_test(s, ds, uri)
    predictions = {"kept": kept, "rescored": rescored.subset(kept.clip_ids),
                   "pool": evaluate.predict_test(s, pool, uri)}
    model = {"seed": seed, "epochs": epochs, "run_id": run_id, "train_s": trained_s, "evaluate_s": evaluated_s}
    saved.mkdir(parents=True, exist_ok=True)
    for k, p in predictions.items():
        p.frame().to_parquet(saved / f"{k}.parquet")
    (saved / "model.json").write_text(json.dumps(model))  # last: a folder without it is trained again
    return model | predictions


def macro_map(p: ClipPredictions, threshold: float) -> float:
    return evaluate_probs(p.probs, p.labels, p.classes, threshold)[0]["mAP"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=24, help="base models (same recipe, different seeds)")
    parser.add_argument("--epochs", type=int, default=2, help="epochs of the base recipe")
    parser.add_argument("--gain-seeds", type=int, default=6, help="challengers with a real gain")
    parser.add_argument("--gain-epochs", type=int, default=8, help="their epochs")
    parser.add_argument("--transform", default="none", help="reprogram.transform of every model")
    parser.add_argument("--clips", type=int, default=200, help="demo clips (test split: a fifth)")
    parser.add_argument("--pool-clips", type=int, default=300, help="held-out clips (an independent render)")
    parser.add_argument("--draws", type=int, default=400, help="draws of each synthetic row")
    parser.add_argument("--workdir", type=Path, default=None, help="keep the project here (reruns reuse it)")
    args = parser.parse_args()
    quiet_and_offline()
    started = time.perf_counter()
    with contextlib.ExitStack() as stack:
        stack.enter_context(contextlib.redirect_stdout(sys.stderr))  # progress and tool chatter: not the JSON
        root = args.workdir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="gate-calibration-")))
        settings = make_project(root.resolve() / "project", args)
        threshold = settings.reprogram.threshold
        pool = held_out_pool(settings, args)
        base = [trained(settings, seed, args.epochs, pool) for seed in range(1, args.seeds + 1)]
        better = [trained(settings, 100 + seed, args.gain_epochs, pool) for seed in range(1, args.gain_seeds + 1)]
        training_s = time.perf_counter() - started
        rows, rng = {}, np.random.default_rng(0)
        labels = base[0]["kept"].labels
        n_test = len(labels)
        for m in base + better:
            m["test_mAP"], m["pool_mAP"] = macro_map(m["kept"], threshold), macro_map(m["pool"], threshold)

        seed_pairs = Tally(same_models=True)
        pool_worse = []
        for i, a in enumerate(base):
            for j, b in enumerate(base):
                if i != j:
                    seed_pairs.add(labels, a["kept"].probs, b["kept"].probs, settings, threshold, pair=(i, j))
                    pool_worse.append(a["pool_mAP"] <= b["pool_mAP"])
        rows["seed_pairs"] = seed_pairs.summary() | {"independent": False,
                                                     "challenger_worse_on_pool": seed_pairs.summary(pool_worse)}
        itself = Tally()
        for m in base:
            itself.add(labels, m["kept"].probs, m["rescored"].probs, settings, threshold)
        rows["self"] = itself.summary() | {"max_abs_prob_difference": float(max(
            np.abs(m["kept"].probs - m["rescored"].probs).max() for m in base))}
        gain = Tally()
        pool_gains = []
        for i, c in enumerate(better):
            for j, b in enumerate(base):
                gain.add(labels, c["kept"].probs, b["kept"].probs, settings, threshold, pair=(i, j))
                pool_gains.append(c["pool_mAP"] - b["pool_mAP"])
        rows["real_gain"] = gain.summary() | {"independent": False, "pool_gain": {
            "mean": round(float(np.mean(pool_gains)), 4), "min": round(float(np.min(pool_gains)), 4)}}

        synthetic_started = time.perf_counter()
        pool_labels = base[0]["pool"].labels
        resampled, resampled_worse, permuted, resampled_gain = Tally(), [], Tally(), Tally()
        for _ in range(args.draws):
            i, j = rng.choice(len(base), 2, replace=False)
            clips = rng.choice(len(pool_labels), n_test, replace=False)
            resampled.add(pool_labels[clips], base[i]["pool"].probs[clips], base[j]["pool"].probs[clips], settings,
                          threshold)
            resampled_worse.append(base[i]["pool_mAP"] <= base[j]["pool_mAP"])
            i, j = rng.choice(len(base), 2, replace=False)
            permuted.add(labels[rng.permutation(n_test)], base[i]["kept"].probs, base[j]["kept"].probs, settings,
                         threshold)
            c, b = better[rng.integers(len(better))], base[rng.integers(len(base))]
            clips = rng.choice(len(pool_labels), n_test, replace=False)
            resampled_gain.add(pool_labels[clips], c["pool"].probs[clips], b["pool"].probs[clips], settings,
                               threshold)
        rows["resampled_test_sets"] = resampled.summary() | {
            "challenger_worse_on_pool": resampled.summary(resampled_worse)}
        rows["label_permuted"] = permuted.summary()
        rows["resampled_real_gain"] = resampled_gain.summary()
        synthetic_s = time.perf_counter() - synthetic_started

    p = settings.registry
    out = {
        "benchmark": "gate_calibration", "date": datetime.date.today().isoformat(), "machine": cpu_name(),
        "cpu_count": os.cpu_count(), "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "command": "python benchmarks/gate_calibration.py " + " ".join(sys.argv[1:]),
        "gate": {"rule": "lower end of the paired-bootstrap 1 - alpha interval > min_gain", "metric": p.primary_metric,
                 "alpha": p.alpha, "min_gain": p.min_gain, "bootstrap_samples": p.bootstrap_samples,
                 "nominal_one_sided_level": p.alpha / 2},
        "baseline": {"rule": "paired permutation p <= alpha for 'gain <= min_gain' (benchmarks/paired_permutation.py)",
                     "permutations": PERMUTATIONS},
        "data": {"demo_clips": args.clips, "clip_seconds": CLIP_SECONDS, "test_clips": n_test,
                 "classes": len(base[0]["kept"].classes),
                 "classes_defined_on_test": int(sum(0 < np.nansum(labels[:, k] >= threshold) < np.sum(
                     ~np.isnan(labels[:, k])) for k in range(labels.shape[1]))),
                 "held_out_pool_clips": len(pool_labels)},
        "models": {"recipe": f"reprogram yamnet, transform {args.transform}, linear mapping",
                   "base": {"seeds": args.seeds, "epochs": args.epochs},
                   "better": {"seeds": args.gain_seeds, "epochs": args.gain_epochs},
                   "per_model": [{k: (round(m[k], 4) if isinstance(m[k], float) else m[k])
                                  for k in ("seed", "epochs", "test_mAP", "pool_mAP", "train_s", "evaluate_s")}
                                 for m in base + better]},
        "rows": rows, "draws_per_synthetic_row": args.draws,
        "seconds": {"training_and_scoring": round(training_s, 1), "synthetic_rows": round(synthetic_s, 1),
                    "per_gate_call": round(synthetic_s / max(3 * args.draws, 1), 3),
                    "total": round(time.perf_counter() - started, 1)},
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
