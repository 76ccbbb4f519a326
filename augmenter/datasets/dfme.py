"""DFME: the label sheets (`Subject, Filename, OnsetFrame, ApexFrame, OffsetFrame, Emotion, AU, Fps`) → rows.

DFME was filmed at three frame rates (500, 300 and 200 fps), so each row carries its own `Fps`; a row
without one is kept at the sheet's most common rate and reported. Its AU cells use the full FACS grammar
(`M` movement and `AD` action-descriptor codes included; see augmenter/au.py). The release splits its
clips over folders per part, so a clip's frames are the folder named like its Filename found up to three
levels below the root (`<Filename>/` when no root is given).
"""

from __future__ import annotations

import os
import re
from collections import Counter
from pathlib import Path

from augmenter.datasets.common import (
    Issues,
    SheetReading,
    SheetRow,
    read_table,
    rows_with_clip_and_subject,
    typical_span,
)

DATASET = "dfme"
FRAME_RATES: tuple[float, ...] = (500.0, 300.0, 200.0)
FRAME_PATTERNS: tuple[str, ...] = ("*.jpg", "*.png", "*.bmp")
FPS_MISSING = "fps missing"
_SEARCH_DEPTH = 3
COLUMNS: dict[str, tuple[str, ...]] = {
    "subject": ("Subject",),
    "clip": ("Filename", "File name"),
    "onset": ("OnsetFrame", "Onset Frame", "Onset"),
    "apex": ("ApexFrame", "Apex Frame", "Apex"),
    "offset": ("OffsetFrame", "Offset Frame", "Offset"),
    "emotion": ("Emotion", "Estimated Emotion"),
    "au": ("AU", "AUs", "Action Units"),
    "fps": ("Fps", "FPS", "Frame rate"),
}


def subject_id(text: str) -> str | None:
    """The subject as the sheet writes it (Excel's 12.0 → "12"); None when empty."""
    text = re.sub(r"\.0+$", "", text.strip())
    return text or None


def _fps(row: SheetRow) -> float | None:
    try:
        value = float(row.text("fps"))
    except ValueError:
        return None
    return value if value > 0 else None


def _clip_folders(root: Path | None, clips: set[str]) -> dict[str, str]:
    """Clip name → its folder relative to the root, searched up to _SEARCH_DEPTH levels down (a clip's own
    folder, full of frames, is not searched further)."""
    if root is None:
        return {}
    found: dict[str, str] = {}
    level = [root]
    for _ in range(_SEARCH_DEPTH):
        below = []
        for folder in level:
            try:
                entries = list(os.scandir(folder))
            except OSError:
                continue
            for entry in entries:
                if not entry.is_dir():
                    continue
                if entry.name in clips:
                    found.setdefault(entry.name, Path(entry.path).relative_to(root).as_posix())
                else:
                    below.append(Path(entry.path))
        level = below
    return found


def _pattern(root: Path | None, frames_dir: str) -> str:
    """The first frame pattern with files in the clip's folder (JPEG when nothing is there)."""
    if root is not None:
        for pattern in FRAME_PATTERNS:
            if next((root / frames_dir).glob(pattern), None) is not None:
                return pattern
    return FRAME_PATTERNS[0]


def read_records(
    annotations: Path, root: Path | None, *, check_frames: bool = False
) -> tuple[list[tuple[int | None, dict]], Issues]:
    """Every row of the DFME label sheet as a manifest record (with its sheet row number), plus problems."""
    rows, _ = read_table(
        annotations, COLUMNS, "DFME label sheet", required=[k for k in COLUMNS if k != "fps"]
    )
    issues = Issues(str(annotations))
    rates = Counter(rate for rate in map(_fps, rows) if rate is not None)
    usual = rates.most_common(1)[0][0] if rates else FRAME_RATES[0]
    spans = {rate: typical_span([r for r in rows if _fps(r) == rate], rate) for rate in {*rates, usual}}
    folders = _clip_folders(root, {row.text("clip") for row in rows})
    records: list[tuple[int | None, dict]] = []
    reading = SheetReading(DATASET, usual, FRAME_PATTERNS[0], root, check_frames, records, issues)
    for row, clip, subject in rows_with_clip_and_subject(
        rows, issues, subject_id, kind="subject (empty cell)"
    ):
        key = (subject, clip)
        fps = _fps(row)
        if fps is None:
            detail = f"cell {row.text('fps')!r} is not a frame rate"
            issues.add(row.number, clip, FPS_MISSING, detail, key, outcome=f"kept with {usual:g} fps")
            fps = usual
        frames_dir = folders.get(clip, clip)
        pattern = _pattern(root, frames_dir)
        timing = reading.timing(
            row, subject=subject, clip=clip, frames_dir=frames_dir, span=spans[fps], pattern=pattern
        )
        if timing is None:
            continue
        reading.keep(
            row, subject=subject, clip=clip, frames_dir=frames_dir, timing=timing, pattern=pattern, fps=fps
        )
    return records, issues
