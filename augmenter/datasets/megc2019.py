"""The MEGC 2019 composite 3-class protocol: the selection comes from the official GT file, never re-derived.

The GT (no header, CRLF, rows `db,subject,filename,label`, 0 negative / 1 positive / 2 surprise)
writes ids its own way; `gt_key` maps them onto the readers' (subject, clip_id): CASME II `sub01` →
`1`, SAMM `6` → `006`, SMIC `s01` / `s01_ne_01` → `s1` / `s1_ne_01`.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

from augmenter.errors import UserError

PROTOCOL = "megc2019"
DATASETS: tuple[str, ...] = ("casme2", "samm", "smic")
LABELS: dict[str, str] = {"0": "negative", "1": "positive", "2": "surprise"}
# The official GT file (442 rows, 68 subjects), shipped so `--protocol megc2019` works without `--gt`.
BUNDLED_GT = Path(__file__).with_name("megc2019_combined_3class_gt.csv")


@dataclass(frozen=True)
class GTRow:
    """One row of the GT file: where it is (line), the ids as written, our key, and the 3-class label."""

    line: int
    dataset: str
    subject: str
    filename: str
    key: tuple[str, str]
    label3: str


def _smic_id(text: str) -> str:
    """`s01` → `s1`, `s01_ne_01` → `s1_ne_01` (only the subject part loses its zero padding)."""
    return re.sub(r"^s0*(\d+)", lambda m: f"s{int(m.group(1))}", text.strip(), flags=re.IGNORECASE)


def gt_key(dataset: str, subject: str, filename: str) -> tuple[str, str]:
    """The (subject, clip_id) a reader of `dataset` gives to this GT row."""
    subject, filename = subject.strip(), filename.strip()
    if dataset == "casme2":
        match = re.fullmatch(r"(?:sub)?0*(\d+)", subject, flags=re.IGNORECASE)
        return (str(int(match.group(1))) if match else subject, filename)
    if dataset == "samm":
        return (subject.zfill(3) if subject.isdigit() else subject, filename)
    if dataset == "smic":
        return (_smic_id(subject), _smic_id(filename))
    return (subject, filename)


def read_gt(path: Path, dataset: str | None = None) -> list[GTRow]:
    """The GT rows (of one dataset when given); bad lines are a UserError naming the line."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: MEGC 2019 GT file not found; pass --gt megc2019_combined_3class_gt.csv")
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            lines = list(csv.reader(handle))
    except UnicodeDecodeError:
        raise UserError(f"{path}: not a text CSV; pass --gt the MEGC 2019 GT CSV") from None
    rows: list[GTRow] = []
    for number, cells in enumerate(lines, start=1):
        if not cells or all(not c.strip() for c in cells):
            continue
        if len(cells) != 4 or cells[3].strip() not in LABELS:
            raise UserError(
                f"{path} line {number}: expected 'db,subject,filename,label' with label 0/1/2, "
                f"got {','.join(cells)!r}; "
                "pass the official megc2019_combined_3class_gt.csv"
            )
        db = cells[0].strip().lower()
        if dataset is not None and db != dataset:
            continue
        rows.append(
            GTRow(
                number,
                db,
                cells[1].strip(),
                cells[2].strip(),
                gt_key(db, cells[1], cells[2]),
                LABELS[cells[3].strip()],
            )
        )
    if not rows:
        what = f"rows for {dataset!r}" if dataset else "rows"
        raise UserError(
            f"{path}: no {what} in the GT file; pass the official megc2019_combined_3class_gt.csv"
        )
    return rows
