"""CASME I: the coding workbook with sheets `Section A` and `Section B` → manifest rows (60 fps).

Each sheet has `Subject, Filename, OnsetF, ApexF1, ApexF2, OffsetF, ..., AU, Emotion`; `\\` marks a
missing value. The apex is ApexF1, or ApexF2 when only that one is coded. Frames:
`<Section A|Section B>/sub01/<Filename>/` under the root (also found one level down, e.g.
`CASME_A/Section A`). Problems name the sheet as well as the row.
"""

from __future__ import annotations

from pathlib import Path

from augmenter.datasets.casme2 import subject_number
from augmenter.datasets.common import (
    Issues,
    SheetRow,
    clip_and_subject,
    frames_on_disk,
    keep_sheet_row,
    read_tables,
    resolve_timing,
    typical_span,
)

DATASET = "casme1"
FPS = 60.0
FRAME_PATTERN = "*.jpg"
COLUMNS: dict[str, tuple[str, ...]] = {
    "subject": ("Subject",),
    "clip": ("Filename", "File name"),
    "onset": ("OnsetF", "OnsetFrame", "Onset"),
    "apex": ("ApexF1", "ApexFrame", "Apex"),
    "apex2": ("ApexF2",),
    "offset": ("OffsetF", "OffsetFrame", "Offset"),
    "au": ("AU", "AUs", "Action Units"),
    "emotion": ("Emotion", "Estimated Emotion"),
}


def _subject_text(text: str) -> str | None:
    number = subject_number(text)
    return None if number is None else str(number)


def _section_folder(root: Path | None, title: str) -> str:
    """The sheet's section folder under the root ("Section A" or one level down), else the title itself."""
    if root is not None and not (root / title).is_dir():
        for parent in sorted(p for p in root.iterdir() if p.is_dir()):
            if (parent / title).is_dir():
                return f"{parent.name}/{title}"
    return title


def _apex_row(row: SheetRow) -> SheetRow:
    """The row with ApexF2 standing in for an empty or `\\` ApexF1."""
    if row.text("apex") in ("", "\\", "/", "-") and row.text("apex2") not in ("", "\\", "/", "-"):
        return SheetRow(row.number, {**row.cells, "apex": row.cells.get("apex2")})
    return row


def read_records(
    annotations: Path, root: Path | None, *, check_frames: bool = False
) -> tuple[list[tuple[int | None, dict]], Issues]:
    """Every row of both sections as a manifest record (with its sheet row number), plus the problems."""
    what = "CASME I coding workbook (sheets Section A and Section B)"
    required = [key for key in COLUMNS if key != "apex2"]
    tables = read_tables(annotations, COLUMNS, what, required=required)
    merged = Issues(str(annotations))
    records: list[tuple[int | None, dict]] = []
    for title, rows, _ in tables:
        issues = Issues(f"{annotations} sheet {title!r}" if len(tables) > 1 else str(annotations))
        section = _section_folder(root, title)
        span = typical_span(rows, FPS)
        for row in map(_apex_row, rows):
            parsed = clip_and_subject(row, issues, _subject_text)
            if parsed is None:
                continue
            clip, subject = parsed
            key = (subject, clip)
            frames_dir = f"{section}/sub{int(subject):02d}/{clip}"
            disk = frames_on_disk(root, frames_dir, FRAME_PATTERN)
            timing = resolve_timing(row, clip, key, issues, span=span, disk=disk)
            if timing is None:
                continue
            keep_sheet_row(
                records,
                issues,
                row,
                dataset=DATASET,
                subject=subject,
                clip=clip,
                frames_dir=frames_dir,
                pattern=FRAME_PATTERN,
                timing=timing,
                fps=FPS,
                root=root,
                check_frames=check_frames,
            )
        merged.entries.extend(issues.entries)
    return records, merged
