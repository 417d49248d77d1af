"""Named grids of reprogramming variants (`mirops train reprogram --grid NAME`) and their summary table.

`paper` is Chen & Lerch's ablation (MMM 2023, docs/methods.md §1.4/§1.9) row by row, with the backbone the
settings name (`reprogram.backbone`): what the frozen network does alone (a fixed map from its own AudioSet
labels, ours; a trained LayerNorm + Linear head, the paper's AST-BS), with a universal additive noise (AST-NRP),
what the input transforms do without the network, and the two reprogrammed models. Each row carries the
paper's OpenMIC F1 and trainable parameters where the paper gives them, and where the number comes from.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pandas only where a table is built: the CLI imports GRIDS for its --grid choices
    import pandas as pd

# Where a row's paper value comes from (docs/methods.md §1.9, U2): the paper's table as the authors' talk quotes
# it; the median of the repository's box plot (Ins_f1_box_rf.png, read to ±0.3); a row the paper does not have.
TABLE = "table"
FIGURE = "figure median"
OURS = "ours"


@dataclass(frozen=True)
class Variant:
    name: str            # run name and table key
    label: str           # the row's name in the paper's terms
    transform: str       # none | noise | cnn | unet
    mapping: str         # linear (LayerNorm + Linear) | audioset (fixed many-to-one map, nothing trains)
    backbone: bool = True  # False: the transform feeds a linear map of the pooled spectrogram (no network)
    paper_f1: float | None = None  # OpenMIC "macro avg" F1 (%) the paper reports with AST, where it does
    paper_params_m: float | None = None  # trainable parameters (millions) in the paper's complexity table
    source: str = TABLE  # where paper_f1 comes from


GRIDS: dict[str, tuple[Variant, ...]] = {
    "paper": (
        Variant("backbone-map", "backbone + fixed AudioSet map", "none", "audioset", paper_params_m=0.0,
                source=OURS),
        Variant("backbone-ln-linear", "backbone + LayerNorm + Linear (AST-BS)", "none", "linear", paper_f1=62.03,
                paper_params_m=0.017),
        Variant("noise-backbone-fc", "noise + backbone + FC (AST-NRP)", "noise", "linear", paper_f1=68.0,
                paper_params_m=0.148, source=FIGURE),
        Variant("cnn-only", "CNN only", "cnn", "linear", backbone=False, paper_f1=60.77, paper_params_m=0.017),
        Variant("unet-only", "U-Net only", "unet", "linear", backbone=False, paper_f1=62.73),
        Variant("cnn-backbone-fc", "CNN + backbone + FC (AST-CNNRP)", "cnn", "linear", paper_f1=78.08,
                paper_params_m=0.017),
        Variant("unet-backbone-fc", "U-Net + backbone + FC (AST-URP)", "unet", "linear", paper_f1=81.60,
                paper_params_m=0.018),
    ),
}


def grid_variants(name: str) -> tuple[Variant, ...]:
    if name not in GRIDS:
        raise ValueError(f"unknown grid {name!r}; choose one of {sorted(GRIDS)}")
    return GRIDS[name]


SUMMARY_COLUMNS = ["variant", "model", "trainable_params", "paper_params_M", "best_epoch", "valid_mAP", "test_mAP",
                   "test_ROC_AUC", "test_F1_macro", "test_F1_openmic", "paper_F1_openmic", "paper_source",
                   "train_seconds"]
SKIPPED = "skipped"  # the column saying why a variant was not trained (only in a table where one was not)
COUNT_COLUMNS = ("trainable_params", "best_epoch")


def paper_columns(variant: Variant) -> dict:
    """The paper's side of a row: its F1 (as a fraction, like ours), its trainable parameters and the source."""
    return {"paper_params_M": math.nan if variant.paper_params_m is None else variant.paper_params_m,
            "paper_F1_openmic": math.nan if variant.paper_f1 is None else variant.paper_f1 / 100,
            "paper_source": variant.source}


def summary_row(variant: Variant, trainable: int, best_epoch: int, valid: dict[str, float],
                test: dict[str, float], seconds: float) -> dict:
    return {"variant": variant.name, "model": variant.label, "trainable_params": trainable, "best_epoch": best_epoch,
            "valid_mAP": valid.get("mAP", math.nan), "test_mAP": test["mAP"], "test_ROC_AUC": test["ROC_AUC"],
            "test_F1_macro": test["F1_macro"], "test_F1_openmic": test["F1_openmic"], **paper_columns(variant),
            "train_seconds": seconds}


def skipped_row(variant: Variant, reason: str) -> dict:
    """The table line of a variant that could not be built for these data: no metrics, and why."""
    return {"variant": variant.name, "model": variant.label, "trainable_params": None, "best_epoch": None,
            **dict.fromkeys(("valid_mAP", "test_mAP", "test_ROC_AUC", "test_F1_macro", "test_F1_openmic"), math.nan),
            **paper_columns(variant), "train_seconds": math.nan, SKIPPED: reason}


def summary_table(rows: list[dict]) -> pd.DataFrame:
    """One row per variant, metrics and trainable parameters side by side, as in the paper's table; a variant
    that was skipped keeps its line, empty but for the reason in a last `skipped` column."""
    import pandas as pd

    skipped = any(row.get(SKIPPED) for row in rows)
    table = pd.DataFrame(rows, columns=SUMMARY_COLUMNS + ([SKIPPED] if skipped else []))
    if skipped:
        table[SKIPPED] = table[SKIPPED].fillna("")
        for column in COUNT_COLUMNS:  # counts stay integers beside a skipped row's blanks (not 1285.000)
            table[column] = pd.Series([None if pd.isna(v) else int(v) for v in table[column]], dtype=object)
    return table


def summary_markdown(table: pd.DataFrame) -> str:
    shown = table.astype(object).where(table.notna(), None)  # tabulate leaves None cells blank, not "nan"
    return shown.to_markdown(index=False, floatfmt=".3f", intfmt=",", missingval="") + "\n"
