"""CASME II: the coding spreadsheet (2014/2019/"updated" .xlsx, or the 2015 CSV export) → manifest rows.

Columns are found by header name, so the blank spacer columns of the 2019 sheet, the CSV's lower-case names
and extra columns to the right (the demo corpus adds some) all read the same. Subjects are written as ints or
"01"; the manifest writes "1" (the fold key is "casme2/1") and the frames live under `sub01`.
"""

from __future__ import annotations

import re
from pathlib import Path

from augmenter.datasets.common import (
    Issues,
    SheetReading,
    read_table,
    rows_with_clip_and_subject,
    typical_span,
)
from augmenter.errors import UserError

DATASET = "casme2"
FPS = 200.0
# variant name → (folder under the root, frame glob); the first one found under the root wins.
VARIANTS: dict[str, tuple[str, str]] = {
    "raw": ("CASME2_RAW_selected", "img*.jpg"),
    "cropped": ("Cropped", "reg_img*.jpg"),
}
COLUMNS: dict[str, tuple[str, ...]] = {
    "subject": ("Subject", "subject"),
    "clip": ("Filename", "file name", "clip"),
    "onset": ("OnsetFrame", "onset"),
    "apex": ("ApexFrame", "apex"),
    "offset": ("OffsetFrame", "offset"),
    "au": ("Action Units", "action_units", "AU", "AUs", "action unit"),
    "emotion": ("Estimated Emotion", "emotion"),
}


def subject_number(text: str) -> int | None:
    """'1', '01', 1.0, 'sub01' → 1; anything else None."""
    match = re.fullmatch(r"(?:sub)?0*(\d+)(?:\.0+)?", text.strip().lower())
    return int(match.group(1)) if match else None


def subject_id(text: str) -> str | None:
    """The manifest's subject, the number without padding ('sub01' → '1'); None when not a subject number."""
    number = subject_number(text)
    return None if number is None else str(number)


def choose_variant(root: Path | None, variant: str | None) -> tuple[str, str]:
    """The frame folder and glob: the asked variant, else the first present under the root (raw preferred)."""
    if variant is not None:
        if variant not in VARIANTS:
            raise UserError(f"unknown CASME II variant {variant!r}; use one of {sorted(VARIANTS)}")
        return VARIANTS[variant]
    if root is not None:
        for folder, pattern in VARIANTS.values():
            if (root / folder).is_dir():
                return folder, pattern
    return VARIANTS["raw"]


def read_records(
    annotations: Path, root: Path | None, *, check_frames: bool = False, variant: str | None = None
) -> tuple[list[tuple[int | None, dict]], Issues]:
    """Every usable row of the sheet as a manifest record (with its sheet row number), plus the problems."""
    what = "CASME II coding sheet (CASME2-coding-*.xlsx)"
    rows, _ = read_table(annotations, COLUMNS, what, foreign={"Inducement Code": "samm"})
    issues = Issues(str(annotations))
    folder, pattern = choose_variant(root, variant)
    span = typical_span(rows, FPS)
    records: list[tuple[int | None, dict]] = []
    reading = SheetReading(DATASET, FPS, pattern, root, check_frames, records, issues)
    for row, clip, subject in rows_with_clip_and_subject(rows, issues, subject_id):
        frames_dir = f"{folder}/sub{int(subject):02d}/{clip}"
        timing = reading.timing(row, subject=subject, clip=clip, frames_dir=frames_dir, span=span)
        if timing is not None:
            reading.keep(row, subject=subject, clip=clip, frames_dir=frames_dir, timing=timing)
    return records, issues
