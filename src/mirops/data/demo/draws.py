"""Long-tailed draws that keep a quota: frequent options stay frequent, rare ones never vanish from a split.

The instruments of each clip, the style of each artist and the tempo band of each clip are drawn here; a
configuration that cannot give every option its quota fails with a `PlanError` that says what to change.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np

from mirops.data.gm import prevalence_rank


class PlanError(ValueError):
    """The configuration cannot give every class its positives in every split; the message says what to change."""


@contextmanager
def plan_hint(advice: str) -> Iterator[None]:
    """Add what to change to a PlanError raised inside."""
    try:
        yield
    except PlanError as exc:
        raise PlanError(f"{exc}; {advice}") from None


def zipf_weights(n: int, exponent: float) -> np.ndarray:
    """Weights of ranks 0..n-1 falling as 1 / (rank + 1) ** exponent: a long tail (exponent 0: uniform)."""
    return 1.0 / np.arange(1, n + 1, dtype=float) ** exponent


def class_weights(classes: list[str], exponent: float) -> np.ndarray:
    """Zipf weights of `classes` ranked by how common each is in music (gm.PREVALENCE)."""
    return zipf_weights(len(classes), exponent)[prevalence_rank(classes)]


def draw_sets(
    rng: np.random.Generator,
    weights: np.ndarray,
    sizes: np.ndarray,
    max_size: int,
    quota: int,
    required: np.ndarray | None = None,
    names: Sequence[str] = (),
    what: str = "",
) -> np.ndarray:
    """One set of options per row (e.g. the instruments of each clip of a split), as a bool matrix.

    `weights` (rows x options, 0 = not allowed) set how often each option is drawn, so frequent options
    stay frequent; but first every option gets `quota` rows (in rows with room, growing a row up to
    `max_size` if it must), so rare options never vanish from a split. `required` options come
    before everything."""
    n_rows, n_options = weights.shape
    required = np.zeros((n_rows, n_options), dtype=bool) if required is None else required
    chosen = required.copy()
    sizes = np.maximum(sizes, chosen.sum(axis=1))
    pending = [o for o in range(n_options) if chosen[:, o].sum() < quota]
    while pending:
        filled = chosen.sum(axis=1)
        free = (weights > 0) & ~chosen & (filled < max_size)[:, None]
        slack = free.sum(axis=0) - (quota - chosen.sum(axis=0))
        # The option closest to running out of rows goes first (e.g. an instrument one style alone
        # plays), then the rarest; each takes the rows with the most room left.
        option = min(pending, key=lambda o: (slack[o], weights[:, o].sum()))
        pending.remove(option)
        need = quota - int(chosen[:, option].sum())
        candidates = rng.permutation(np.flatnonzero(free[:, option]))
        rows = candidates[np.argsort(filled[candidates] - sizes[candidates], kind="stable")][:need]
        if len(rows) < need:
            more = _make_room(chosen, required, weights, option, need - len(rows), quota, max_size)
            rows = np.concatenate([rows, more])
        if len(rows) < need:
            name = names[option] if names else f"option {option}"
            raise PlanError(f"{what}: {name!r} fits in only {len(rows) + quota - need} of the {quota} it needs")
        chosen[rows, option] = True
    for row in range(n_rows):
        free = np.flatnonzero((weights[row] > 0) & ~chosen[row])
        extra = min(int(sizes[row] - chosen[row].sum()), len(free))
        if extra > 0:
            p = weights[row, free] / weights[row, free].sum()
            chosen[row, rng.choice(free, size=extra, replace=False, p=p)] = True
    return chosen


def _make_room(
    chosen: np.ndarray, required: np.ndarray, weights: np.ndarray, option: int, need: int, quota: int, max_size: int
) -> np.ndarray:
    """Full rows open to `option` that give up an option they can spare (above its quota, not required),
    the most common first; returns up to `need` rows, emptied by one slot each (modifies `chosen`)."""
    rows = []
    full = chosen.sum(axis=1) >= max_size
    for row in np.flatnonzero((weights[:, option] > 0) & ~chosen[:, option] & full):
        if len(rows) == need:
            break
        spare = np.flatnonzero(chosen[row] & ~required[row] & (chosen.sum(axis=0) > quota))
        if len(spare):
            chosen[row, spare[np.argmax(chosen.sum(axis=0)[spare])]] = False
            rows.append(row)
    return np.array(rows, dtype=int)


def draw_choices(
    rng: np.random.Generator, weights: np.ndarray, quota: int, names: Sequence[str] = (), what: str = ""
) -> np.ndarray:
    """One option per row (index array): `quota` rows for every option first, the rest by weight."""
    ones = np.ones(len(weights), dtype=int)
    return draw_sets(rng, weights, ones, 1, quota, names=names, what=what).argmax(axis=1)
