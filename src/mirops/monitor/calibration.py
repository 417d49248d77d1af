"""How often the drift verdict is wrong: random group-disjoint splits of real sources, counted with intervals.

A source is a table of windows (`pipeline.monitor.batch_features`) whose `group` is the file (track) or
recording. Without drift, reference and current are disjoint random sets of groups of one source; with drift,
the reference is groups of one source and the current groups of another. Each split goes through the verdict's
own function (`decision.file_level_test`) with the settings a user has, and the alarms are counted: the
false-alarm rate (no drift) and the detection rate (drift) per batch size, each with its 95 % Clopper-Pearson
interval. `benchmarks/drift_calibration.py` runs it on Debian soundtracks and the demo's SoundFont domains;
a small version runs in tests/test_real_audio_drift.py.

Batches come in two shapes, as users send them: whole files (every window of a drawn track: `clips_per_group`
None) or clips (a few clip-length windows per track, a folder of 10 s clips whose manifest names the track).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from mirops.monitor.decision import file_level_test


@dataclass(frozen=True)
class Rate:
    """Alarms out of trials, with the 95 % Clopper-Pearson interval of the rate."""

    alarms: int
    trials: int
    rate: float
    low: float
    high: float

    @classmethod
    def of(cls, alarms: int, trials: int) -> Rate:
        from scipy.stats import binomtest

        interval = binomtest(alarms, trials).proportion_ci(confidence_level=0.95, method="exact")
        return cls(alarms, trials, alarms / trials, float(interval.low), float(interval.high))

    def to_json(self) -> dict:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}


@dataclass(frozen=True)
class Scenario:
    """One row of the calibration table: a kind of batch at one size, drawn `splits` times."""

    name: str                       # e.g. "wesnoth tracks", "wesnoth vs warzone2100 clips"
    drift: bool                     # True: current from another source (alarms are detections)
    size: int                       # files (tracks) or clips in the current batch
    reference_size: int | None      # groups in the reference (None: all that are not current)
    clips_per_group: int | None     # None: whole files; k: k clip-length windows per track
    target: bool = True             # False: a diagnostic row outside the stated guarantee (see the docs)


def _pick_clips(table: pd.DataFrame, groups: np.ndarray, per_group: int | None, count: int | None,
                rng: np.random.Generator) -> pd.DataFrame:
    """Rows of `groups`: all windows (whole files), or `per_group` random windows of each, then the first
    `count` rows when a clip batch needs fewer."""
    rows = table[table["group"].isin(groups)]
    if per_group is not None:
        rows = rows.iloc[rng.permutation(len(rows))]
        rows = rows[rows.groupby("group", sort=False).cumcount().to_numpy() < per_group]
        # In the groups' drawn order, so `count` takes whole draws first.
        order = pd.Series(np.arange(len(groups)), index=groups)
        rows = rows.iloc[np.argsort(order[rows["group"]].to_numpy(), kind="stable")]
        if count is not None:
            rows = rows[:count]
    return rows


def groups_needed(scenario: Scenario) -> int:
    """How many groups of the current source a batch of this scenario takes."""
    if scenario.clips_per_group is None:
        return scenario.size
    return -(-scenario.size // scenario.clips_per_group)


def draws(scenario: Scenario, reference: pd.DataFrame, current: pd.DataFrame | None, splits: int,
          seed: int) -> Iterator[tuple[pd.DataFrame, pd.DataFrame]]:
    """`splits` (reference, current) tables for `scenario`: without drift, disjoint groups of `reference`;
    with drift, groups of `reference` against groups of `current`."""
    rng = np.random.default_rng(seed)
    ref_groups = reference["group"].unique()
    need = groups_needed(scenario)
    for _ in range(splits):
        if current is None:
            order = rng.permutation(ref_groups)
            cur, rest = order[:need], order[need:]
            source = reference
        else:
            cur = rng.permutation(current["group"].unique())[:need]
            rest, source = rng.permutation(ref_groups), current
        chosen = rest if scenario.reference_size is None else rest[: scenario.reference_size]
        count = scenario.size if scenario.clips_per_group is not None else None
        yield (_pick_clips(reference, chosen, scenario.clips_per_group, None, rng),
               _pick_clips(source, cur, scenario.clips_per_group, count, rng))


def feasible(scenario: Scenario, reference: pd.DataFrame, current: pd.DataFrame | None) -> str | None:
    """Why `scenario` cannot be drawn from these sources (too few groups), or None."""
    need = groups_needed(scenario)
    have = (current if current is not None else reference)["group"].nunique()
    left = reference["group"].nunique() - (need if current is None else 0)
    if need > have:
        return f"needs {need} groups for the batch, the source has {have}"
    if left < max(2, scenario.reference_size or 2):
        return f"leaves {left} groups for the reference"
    return None


def measure(scenario: Scenario, reference: pd.DataFrame, current: pd.DataFrame | None, *, columns: list[str],
            embedding_columns: list[str], alpha: float, permutations: int, splits: int, seed: int = 0,
            progress: Callable[[], None] | None = None) -> dict:
    """The alarm rate of the verdict over `splits` draws of `scenario`, with the p-values' spread."""
    alarms, p_values, files = 0, [], []
    for k, (ref, cur) in enumerate(draws(scenario, reference, current, splits, seed)):
        test = file_level_test(ref, cur, columns=columns, embedding_columns=embedding_columns, group_column="group",
                               alpha=alpha, permutations=permutations, seed=seed + k)
        alarms += test.drift_detected
        p_values.append(test.p_value)
        files.append((test.reference_groups, test.current_groups, len(ref), len(cur)))
        if progress is not None:
            progress()
    sizes = np.array(files)
    return {**asdict(scenario), "rate": Rate.of(alarms, splits).to_json(),
            "median_p": round(float(np.median(p_values)), 4),
            "reference_files": int(np.median(sizes[:, 0])), "current_files": int(np.median(sizes[:, 1])),
            "reference_windows": int(np.median(sizes[:, 2])), "current_windows": int(np.median(sizes[:, 3]))}
