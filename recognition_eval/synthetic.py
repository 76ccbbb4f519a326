"""Synthetic clips from augmenter stores as training samples, with the leave-one-subject-out leakage guard.

For test subject s (fold key "dataset/subject") a synthetic clip may train fold s only if it was NOT
- animated from a source clip of s (its motion is s's expression),
- rendered onto a target face of s (its appearance is s's face),
- and, in strict mode (default), made by a generator whose recorded training subjects include s.
Without these rules the "gain" of augmentation partly measures the test subject leaking into training (§8).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from augmenter.errors import UserError
from augmenter.store import store_table

QUALITY_COLUMNS: dict[str, str] = {
    "l1": "quality_l1",
    "quality_l1": "quality_l1",
    "identity": "quality_identity",
    "quality_identity": "quality_identity",
}
_BAR = re.compile(r"^\s*([a-z_0-9]+)\s*(<=|>=)\s*([-+0-9.eE]+)\s*$")


@dataclass(frozen=True)
class QualityBar:
    """Keep synthetic clips whose `column` is <= or >= `bound` (NaN = unmeasured = not kept)."""

    column: str
    op: str
    bound: float

    def keeps(self, values: pd.Series) -> pd.Series:
        numeric = pd.to_numeric(values, errors="coerce")
        return (numeric <= self.bound) if self.op == "<=" else (numeric >= self.bound)

    def __str__(self) -> str:
        return f"{self.column}{self.op}{self.bound:g}"


def parse_quality_bar(text: str) -> QualityBar:
    """ "l1<=0.08" or "quality_identity<=0.6" → QualityBar; a UserError says the accepted forms otherwise."""
    match = _BAR.match(text.lower())
    if match is None or match.group(1) not in QUALITY_COLUMNS:
        raise UserError(
            f"--min-quality {text!r}: write COLUMN<=VALUE or COLUMN>=VALUE with COLUMN one of "
            f"{', '.join(sorted(set(QUALITY_COLUMNS)))}, e.g. 'l1<=0.08'"
        )
    return QualityBar(QUALITY_COLUMNS[match.group(1)], match.group(2), float(match.group(3)))


def as_fold_key(value: str, dataset: str) -> str:
    """Provenance subjects are fold keys ("dataset/subject"); a bare id gets the given dataset prefixed."""
    value = str(value)
    return value if "/" in value else f"{dataset}/{value}"


def training_fold_keys(value: str) -> frozenset[str]:
    """The ";"-joined fold keys a generator was trained on ("" = trained on no subject of ours)."""
    return frozenset(part.strip() for part in str(value).split(";") if part.strip())


@dataclass
class SyntheticPool:
    """Every usable synthetic clip of the given stores, labelled with the evaluation's class indices.

    table columns: store, index (in the store), label (class index), source_fold, target_fold, training_folds
    (frozenset), plus the store's own columns. `dropped` counts clips left out and why.
    """

    table: pd.DataFrame
    dropped: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.table)


def load_synthetic(
    stores: Sequence[str | Path],
    classes: Sequence[str],
    label_column: str = "label3",
    quality_bars: Sequence[QualityBar] = (),
) -> SyntheticPool:
    """The done clips of every store whose label is one of `classes` and that pass every quality bar."""
    frames = []
    dropped = {"no_label": 0, "quality": 0}
    class_index = {name: i for i, name in enumerate(classes)}
    for store in stores:
        table = store_table(store)
        table.insert(0, "store", str(store))
        labels = table[label_column].astype(str).str.strip().str.lower()
        keep = labels.isin(class_index)
        dropped["no_label"] += int((~keep).sum())
        table = table[keep].copy()
        table["label"] = labels[keep].map(class_index).astype("int64")
        for bar in quality_bars:
            passes = bar.keeps(table[bar.column])
            dropped["quality"] += int((~passes).sum())
            table = table[passes]
        frames.append(table)
    if not frames:
        return SyntheticPool(pd.DataFrame(columns=["store", "index", "label"]), dropped)
    table = pd.concat(frames, ignore_index=True)
    table["source_fold"] = [
        as_fold_key(s, d) for s, d in zip(table["source_subject"], table["source_dataset"], strict=True)
    ]
    target_dataset = table["target_id"].astype(str).str.split("/").str[0]
    table["target_fold"] = [
        as_fold_key(s, d) for s, d in zip(table["target_subject"], target_dataset, strict=True)
    ]
    table["training_folds"] = [training_fold_keys(v) for v in table["generator_training_subjects"]]
    return SyntheticPool(table.reset_index(drop=True), dropped)


def allowed_for_fold(table: pd.DataFrame, test_fold: str, strict: bool = True) -> pd.DataFrame:
    """The synthetic rows that may train the fold whose test subject is `test_fold` (module docstring)."""
    if table.empty:
        return table
    keep = (table["source_fold"] != test_fold) & (table["target_fold"] != test_fold)
    if strict:
        keep &= ~table["training_folds"].map(lambda folds: test_fold in folds).astype(bool)
    return table[keep]


def cap_synthetic(allowed: pd.DataFrame, n_real: int, max_ratio: float | None, seed: int) -> pd.DataFrame:
    """At most max_ratio × n_real synthetic rows, drawn without replacement with a fixed seed (None = all)."""
    if max_ratio is None or allowed.empty:
        return allowed
    limit = int(math.floor(max_ratio * n_real))
    if len(allowed) <= limit:
        return allowed
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(len(allowed), size=limit, replace=False))
    return allowed.iloc[chosen]
