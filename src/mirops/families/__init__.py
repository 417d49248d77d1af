"""Model families, each one declared object (`mirops.families.base.ModelFamily`): the one place the family is chosen."""

from __future__ import annotations

from mirops.families.base import ModelFamily
from mirops.families.east import EAST
from mirops.families.reprogram import REPROGRAMMING
from mirops.lineage import FAMILY_NAMES

FAMILIES: dict[str, ModelFamily] = {f.name: f for f in (REPROGRAMMING, EAST)}
if tuple(FAMILIES) != FAMILY_NAMES:  # the CLI offers lineage's names without importing the families (torch)
    raise ImportError(f"mirops.lineage.FAMILY_NAMES {FAMILY_NAMES} must name the families {tuple(FAMILIES)}")


def family(name: str) -> ModelFamily:
    """The family called `name`; ValueError naming the known ones otherwise."""
    if name not in FAMILIES:
        raise ValueError(f"unknown model family {name!r}; choose one of {sorted(FAMILIES)}")
    return FAMILIES[name]


def family_of_model(settings, model_name: str) -> ModelFamily:
    """The family whose registered model is `model_name` (each family has its own)."""
    for f in FAMILIES.values():
        if f.model_name(settings) == model_name:
            return f
    raise ValueError(f"registered model {model_name!r} belongs to no model family "
                     f"({', '.join(f'{f.name}: {f.model_name(settings)}' for f in FAMILIES.values())})")
