"""CAS(ME)^3 part A: `cas(me)3_part_A_ME_label_JpgIndex_v2.xlsx` → manifest rows (30 fps).

Frames: `part_A/spNO.1/b/color/175.jpg` — subject folder, the sheet's Filename (one recording), then color/.
A recording holds several MEs, so the Filename repeats within a subject: clip_id is "<Filename>_<Onset>".
"""

from __future__ import annotations

import re
from pathlib import Path

from augmenter.datasets.common import (
    Issues,
    SheetReading,
    read_table,
    resolve_timing,
    rows_with_clip_and_subject,
    typical_span,
    under_root,
)

DATASET = "casme3"
FPS = 30.0
FRAME_PATTERN = "*.jpg"
COLUMNS: dict[str, tuple[str, ...]] = {
    "subject": ("Subject",),
    "clip": ("Filename", "File name"),
    "onset": ("Onset", "OnsetFrame", "Onset Frame"),
    "apex": ("Apex", "ApexFrame", "Apex Frame"),
    "offset": ("Offset", "OffsetFrame", "Offset Frame"),
    "au": ("AU", "Action Units", "AUs"),
    "emotion": ("emotion", "Estimated Emotion"),
}


def subject_folder(text: str) -> str | None:
    """'spNO.1' stays; 1 or '1' → 'spNO.1' (the folder name); anything else None."""
    text = text.strip()
    match = re.fullmatch(r"(?:spNO\.)?0*(\d+)(?:\.0+)?", text, flags=re.IGNORECASE)
    return f"spNO.{int(match.group(1))}" if match else None


def read_records(
    annotations: Path, root: Path | None, *, check_frames: bool = False
) -> tuple[list[tuple[int | None, dict]], Issues]:
    """Every usable row of the part A sheet as a manifest record (with its sheet row), plus problems."""
    rows, _ = read_table(
        annotations, COLUMNS, "CAS(ME)^3 part A sheet (cas(me)3_part_A_ME_label_JpgIndex_v2.xlsx)"
    )
    issues = Issues(str(annotations))
    prefix = under_root(root, "part_A")
    span = typical_span(rows, FPS)
    records: list[tuple[int | None, dict]] = []
    reading = SheetReading(DATASET, FPS, FRAME_PATTERN, root, check_frames, records, issues)
    for row, recording, subject in rows_with_clip_and_subject(
        rows, issues, subject_folder, kind="subject id"
    ):
        clip = f"{recording}_{row.text('onset')}"
        key = (subject, clip)
        # the folder holds the whole recording, so its frames cannot stand in for a clip's bounds
        timing = resolve_timing(row, clip, key, issues, span=span)
        if timing is None:
            continue
        frames_dir = f"{prefix}{subject}/{recording}/color"
        clip_id = f"{recording}_{timing.onset}"
        reading.keep(row, subject=subject, clip=clip, frames_dir=frames_dir, timing=timing, clip_id=clip_id)
    return records, issues
