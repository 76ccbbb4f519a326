"""CASME I: the coding workbook with sheets `Section A` and `Section B` → manifest rows (60 fps).

Each sheet has `Subject, Filename, OnsetF, ApexF1, ApexF2, OffsetF, ..., AU, Emotion`; `\\` marks a
missing value. The apex is ApexF1, or ApexF2 when only that one is coded. Frames:
`<Section A|Section B>/sub01/<Filename>/` under the root (also found one level down, e.g.
`CASME_A/Section A`). Problems name the sheet as well as the row.

Some folders hold a video in which several MEs are coded (Section A, subject 6, `EP02_5`: six rows). Each
coded ME is its own manifest row: the clip id then carries its window, `<Filename>@<onset>-<offset>`
(`EP02_5@120-151`), and frames_dir stays the video's folder, so the clip is frames onset..offset of that
folder. A folder with one coded ME keeps the plain Filename.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from augmenter.datasets.casme2 import subject_id
from augmenter.datasets.common import (
    Issues,
    SheetReading,
    SheetRow,
    Timing,
    read_tables,
    resolve_timing,
    rows_with_clip_and_subject,
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


def window_clip_id(clip: str, timing: Timing) -> str:
    """The clip id of one of several MEs coded in the folder `clip`: the Filename and its frame window."""
    return f"{clip}@{timing.onset}-{timing.offset}"


def _coded_per_folder(rows: list[SheetRow]) -> Counter[tuple[str, str]]:
    """How many rows code an ME in each (subject, Filename) folder of one sheet (rows without either are
    reported later, by the reading loop)."""
    counts: Counter[tuple[str, str]] = Counter()
    for row in rows:
        subject = subject_id(row.text("subject"))
        if row.text("clip") and subject is not None:
            counts[subject, row.text("clip")] += 1
    return counts


def read_records(
    annotations: Path, root: Path | None, *, check_frames: bool = False
) -> tuple[list[tuple[int | None, dict]], Issues]:
    """Every coded ME of both sections as a manifest record (with its sheet row number), plus the problems."""
    what = "CASME I coding workbook (sheets Section A and Section B)"
    required = [key for key in COLUMNS if key != "apex2"]
    tables = read_tables(annotations, COLUMNS, what, required=required)
    merged = Issues(str(annotations))
    records: list[tuple[int | None, dict]] = []
    for title, rows, _ in tables:
        issues = Issues(f"{annotations} sheet {title!r}" if len(tables) > 1 else str(annotations))
        reading = SheetReading(DATASET, FPS, FRAME_PATTERN, root, check_frames, records, issues)
        section = _section_folder(root, title)
        span = typical_span(rows, FPS)
        coded = _coded_per_folder(rows)
        for row, clip, subject in rows_with_clip_and_subject(map(_apex_row, rows), issues, subject_id):
            frames_dir = f"{section}/sub{int(subject):02d}/{clip}"
            if coded[subject, clip] == 1:
                timing = reading.timing(row, subject=subject, clip=clip, frames_dir=frames_dir, span=span)
                if timing is not None:
                    reading.keep(row, subject=subject, clip=clip, frames_dir=frames_dir, timing=timing)
                continue
            # the folder's first and last frames bound the whole video, not this ME: repairs use the span
            timing = resolve_timing(row, clip, (subject, clip), issues, span=span)
            if timing is not None:
                clip_id = window_clip_id(clip, timing)
                reading.keep(row, subject=subject, clip=clip_id, frames_dir=frames_dir, timing=timing)
        merged.entries.extend(issues.entries)
    return records, merged
