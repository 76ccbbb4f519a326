"""Synthetic clips from augmenter stores as training samples, with the leave-one-person-out leakage guard.

For test person p a synthetic clip may train fold p only if it was NOT
- animated from a source clip of p (its motion is p's expression),
- rendered onto a target face of p (its appearance is p's face),
- and, in strict mode (default), made by a generator whose training persons include p.
Persons come from resolving the store's names against the evaluation manifest (provenance.py), which refuses
any name it cannot place. Without these rules the "gain" of augmentation partly measures the test person
leaking into training (DESIGN §8). Labels come from the evaluation manifest through each clip's source clip,
so real and synthetic clips follow one protocol.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from augmenter.errors import UserError
from augmenter.store import store_attrs, store_table
from recognition_eval.provenance import Declarations, PersonIndex, resolve_store

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


@dataclass
class StorePool:
    """The usable clips of one store with their evaluation labels and resolved persons, and what was dropped.

    table columns: store, index (in the store), label (class index from the evaluation manifest),
    source_key, source_persons, target_persons, training_persons (frozensets), training_known, plus the
    store's own columns. counts: done clips, kept, drops by reason (source excluded by the protocol, quality
    bar); label_changed = kept clips whose store label differs from the manifest's (another label mapping
    at generate time).
    """

    store: str
    table: pd.DataFrame
    counts: dict[str, int] = field(default_factory=dict)
    size: int | None = None  # frame side the store's clips were generated at
    made_from: str | None = None  # the manifest the store records it was generated from

    def __len__(self) -> int:
        return len(self.table)


def load_store(
    store: str | Path,
    index: PersonIndex,
    protocol_labels: dict[str, int],
    classes: Sequence[str],
    label_column: str = "label3",
    declarations: Declarations = Declarations(),
    strict: bool = True,
    quality_bars: Sequence[QualityBar] = (),
) -> StorePool:
    """One store's done clips, resolved against the evaluation manifest (fail closed, see provenance) and
    labelled through their source clip: `protocol_labels` maps a manifest clip key to its class index under
    the evaluation protocol; a clip whose source the protocol excludes is dropped and counted.
    """
    name = str(store)
    attrs = store_attrs(store)
    made_from = str(attrs["manifest"]) if attrs.get("manifest") else None
    table = resolve_store(store_table(store), name, index, declarations, strict, made_from)
    table.insert(0, "store", name)
    counts = {"done": len(table), "source_excluded": 0, "quality": 0, "label_changed": 0}
    labels = table["source_key"].map(protocol_labels)
    keep = labels.notna()
    counts["source_excluded"] = int((~keep).sum())
    table = table[keep].copy()
    table["label"] = labels[keep].astype("int64")
    if label_column in table.columns and len(table):
        stored = table[label_column].astype(str).str.strip().str.lower()
        counts["label_changed"] = int((stored != table["label"].map(dict(enumerate(classes)))).sum())
    for bar in quality_bars:
        passes = bar.keeps(table[bar.column])
        counts["quality"] += int((~passes).sum())
        table = table[passes]
    counts["kept"] = len(table)
    size = int(attrs["size"]) if attrs.get("size") is not None else None
    return StorePool(name, table.reset_index(drop=True), counts, size=size, made_from=made_from)


def shuffle_labels(table: pd.DataFrame, seed: int) -> pd.DataFrame:
    """The same clips with their labels permuted within each store (seeded): the specificity control, which
    keeps each store's class balance and pixels and breaks only the motion ↔ label link.
    """
    table = table.copy()
    labels = table["label"].to_numpy().copy()
    for k, store in enumerate(sorted(set(table["store"]))):
        rows = np.flatnonzero((table["store"] == store).to_numpy())
        rng = np.random.default_rng([seed, k])
        labels[rows] = labels[rows][rng.permutation(len(rows))]
    table["label"] = labels
    return table


def allowed_for_fold(
    table: pd.DataFrame, test_persons: str | Iterable[str], strict: bool = True
) -> pd.DataFrame:
    """The synthetic rows that may train the fold whose test person (or persons, for a fold of several) is
    `test_persons` (module docstring): none of them may be a source, target or (strict) training person."""
    if table.empty:
        return table
    tested = {test_persons} if isinstance(test_persons, str) else set(test_persons)

    def touches(column: str) -> pd.Series:
        return table[column].map(lambda persons: not tested.isdisjoint(persons)).astype(bool)

    keep = ~touches("source_persons") & ~touches("target_persons")
    if strict:
        keep &= ~touches("training_persons")
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
