"""MMEW: `MMEW_Micro_Exp.xlsx` → manifest rows.

Frames are filed by emotion: `Micro_Expression/<emotion>/<Filename, e.g. S01-01-001>/*.jpg`; the
emotion folder's spelling on disk is matched case-insensitively. MMEW was filmed at 90 fps.
"""

from __future__ import annotations

from pathlib import Path

from augmenter.datasets.common import (
    Issues,
    SheetReading,
    read_table,
    rows_with_clip_and_subject,
    typical_span,
    under_root,
)

DATASET = "mmew"
FPS = 90.0
FRAME_PATTERN = "*.jpg"
COLUMNS: dict[str, tuple[str, ...]] = {
    "subject": ("Subject",),
    "clip": ("Filename", "File name"),
    "onset": ("OnsetFrame", "Onset Frame", "Onset"),
    "apex": ("ApexFrame", "Apex Frame", "Apex"),
    "offset": ("OffsetFrame", "Offset Frame", "Offset"),
    "au": ("Action Units", "AU", "AUs"),
    "emotion": ("Estimated Emotion", "Emotion"),
}


def _subject_id(text: str) -> str | None:
    """The subject cell as written; None when it is empty."""
    return text.strip() or None


def _emotion_folder(root: Path | None, prefix: str, emotion: str) -> str:
    """The emotion folder as spelled on disk (case-insensitive match), else the sheet's word."""
    if root is not None and (root / prefix).is_dir():
        for folder in (root / prefix).iterdir():
            if folder.is_dir() and folder.name.lower() == emotion.lower():
                return folder.name
    return emotion


def read_records(
    annotations: Path, root: Path | None, *, check_frames: bool = False
) -> tuple[list[tuple[int | None, dict]], Issues]:
    """Every usable row of the MMEW sheet as a manifest record (with its sheet row number), plus problems."""
    rows, _ = read_table(annotations, COLUMNS, "MMEW sheet (MMEW_Micro_Exp.xlsx)")
    issues = Issues(str(annotations))
    prefix = under_root(root, "Micro_Expression")
    span = typical_span(rows, FPS)
    records: list[tuple[int | None, dict]] = []
    reading = SheetReading(DATASET, FPS, FRAME_PATTERN, root, check_frames, records, issues)
    for row, clip, subject in rows_with_clip_and_subject(
        rows, issues, _subject_id, kind="subject (empty cell)"
    ):
        frames_dir = f"{prefix}{_emotion_folder(root, prefix, row.text('emotion'))}/{clip}"
        timing = reading.timing(row, subject=subject, clip=clip, frames_dir=frames_dir, span=span)
        if timing is not None:
            reading.keep(row, subject=subject, clip=clip, frames_dir=frames_dir, timing=timing)
    return records, issues
