"""SAMM: `SAMM_Micro_FACS_Codes_v2.xlsx` → manifest rows.

The sheet opens with a preamble (title, citation, symbol key) before its header row; the header is
found by its content, not by a fixed row number. Subjects keep their 3-digit zero padding ("006"),
also when Excel stored 6. Frames: `<root>/SAMM/006/006_1_2/006_05562.jpg` (or `<root>/006/...` when
the root is the SAMM folder).
"""

from __future__ import annotations

import re
from pathlib import Path

from augmenter.datasets.common import (
    UNKNOWN_EMOTION,
    Issues,
    SheetReading,
    label3_of,
    read_table,
    rows_with_clip_and_subject,
    typical_span,
    under_root,
)

DATASET = "samm"
FPS = 200.0
FRAME_PATTERN = "*.jpg"
EMOTIONS: tuple[str, ...] = (
    "Anger",
    "Contempt",
    "Happiness",
    "Surprise",
    "Other",
    "Disgust",
    "Fear",
    "Sadness",
)
COLUMNS: dict[str, tuple[str, ...]] = {
    "subject": ("Subject",),
    "clip": ("Filename", "File name"),
    "onset": ("Onset Frame", "Onset", "OnsetFrame"),
    "apex": ("Apex Frame", "Apex", "ApexFrame"),
    "offset": ("Offset Frame", "Offset", "OffsetFrame"),
    "au": ("Action Units", "AU", "AUs"),
    "emotion": ("Estimated Emotion", "Emotion"),
}


def subject_id(text: str) -> str | None:
    """6, 6.0, '6', '006' → '006'; anything else None."""
    match = re.fullmatch(r"0*(\d+)(?:\.0+)?", text.strip())
    return f"{int(match.group(1)):03d}" if match else None


def read_records(
    annotations: Path, root: Path | None, *, check_frames: bool = False
) -> tuple[list[tuple[int | None, dict]], Issues]:
    """Every usable row of the SAMM sheet as a manifest record (with its sheet row number), plus problems."""
    rows, _ = read_table(annotations, COLUMNS, "SAMM sheet (SAMM_Micro_FACS_Codes_v2.xlsx)")
    issues = Issues(str(annotations))
    prefix = under_root(root, "SAMM")
    known = {emotion.lower() for emotion in EMOTIONS}
    span = typical_span(rows, FPS)
    records: list[tuple[int | None, dict]] = []
    reading = SheetReading(DATASET, FPS, FRAME_PATTERN, root, check_frames, records, issues)
    for row, clip, subject in rows_with_clip_and_subject(rows, issues, subject_id):
        key = (subject, clip)
        frames_dir = f"{prefix}{subject}/{clip}"
        timing = reading.timing(row, subject=subject, clip=clip, frames_dir=frames_dir, span=span)
        if timing is None:
            continue
        emotion = row.text("emotion")
        label3 = label3_of(emotion)
        if emotion.lower() not in known or label3 is None:
            detail = f"{emotion!r} is not one of {', '.join(EMOTIONS)}"
            label3 = label3 or ""
            issues.add(row.number, clip, UNKNOWN_EMOTION, detail, key, outcome=f"kept with label3 {label3!r}")
        reading.keep(row, subject=subject, clip=clip, frames_dir=frames_dir, timing=timing, label3=label3)
    return records, issues
