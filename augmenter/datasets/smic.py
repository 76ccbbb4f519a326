"""SMIC-HS: the folder tree is the annotation — `HS/s1/micro/{negative,positive,surprise}/s1_ne_01/*.bmp`.

SMIC gives no apex and no AU: onset/offset are the first/last frame numbers on disk and the apex is
the middle frame, marked apex_estimated=True. That is the dataset's design, not a fault of a row, so
it is not reported as a problem (the summary counts estimated apexes).
"""

from __future__ import annotations

import re
from pathlib import Path

from augmenter.datasets.common import FRAMES_MISSING, UNKNOWN_EMOTION, Issues, label3_of
from augmenter.errors import UserError
from augmenter.manifest import frame_number

DATASET = "smic"
FPS = 100.0
# Registered frames first (the usual release), then the raw ones.
FRAME_PATTERNS: tuple[str, ...] = ("reg_image*.bmp", "image*.bmp", "*.bmp", "*.jpg", "*.png")
_SUBJECT = re.compile(r"^s\d+$", re.IGNORECASE)


def _hs_folder(root: Path) -> Path:
    """The HS folder: root/HS, or root itself when it already is HS (holds s1/micro/...)."""
    for candidate in (root / "HS", root):
        if candidate.is_dir() and any(
            _SUBJECT.match(p.name) and (p / "micro").is_dir() for p in candidate.iterdir() if p.is_dir()
        ):
            return candidate
    raise UserError(
        f"{root}: no SMIC-HS tree found (expected HS/s1/micro/<negative|positive|surprise>/s1_ne_01/); "
        "pass --root the folder that holds HS"
    )


def _subject_order(path: Path) -> tuple[int, str]:
    digits = re.sub(r"\D", "", path.name)
    return (int(digits) if digits else 0, path.name)


def read_records(
    annotations: Path | None, root: Path | None, *, check_frames: bool = False
) -> tuple[list[tuple[int | None, dict]], Issues]:
    """One record per clip folder under HS/s*/micro/<emotion>/; empty folders are reported and skipped."""
    if root is None:
        raise UserError("SMIC is read from its folder tree: pass --root, the folder holding HS/")
    if annotations is not None:
        raise UserError(
            f"{annotations}: SMIC has no annotation sheet (its folders are the labels); drop --annotations"
        )
    hs = _hs_folder(root)
    issues = Issues(str(hs))
    records: list[tuple[int | None, dict]] = []
    subjects = sorted((p for p in hs.iterdir() if p.is_dir() and _SUBJECT.match(p.name)), key=_subject_order)
    for subject_dir in subjects:
        micro = subject_dir / "micro"
        if not micro.is_dir():
            continue
        for emotion_dir in sorted(p for p in micro.iterdir() if p.is_dir()):
            emotion = emotion_dir.name
            label3 = label3_of(emotion)
            for clip_dir in sorted(p for p in emotion_dir.iterdir() if p.is_dir()):
                clip = clip_dir.name
                key = (subject_dir.name, clip)
                frames = _frames(clip_dir)
                if frames is None:
                    detail = f"no {' / '.join(FRAME_PATTERNS)} files in {clip_dir}; skipped"
                    issues.add(None, clip, FRAMES_MISSING, detail, key)
                    continue
                pattern, numbers = frames
                if label3 is None:
                    issues.add(
                        None,
                        clip,
                        UNKNOWN_EMOTION,
                        f"folder {emotion!r} in {micro}; kept with label3 ''",
                        key,
                    )
                records.append(
                    (
                        None,
                        {
                            "dataset": DATASET,
                            "subject": subject_dir.name,
                            "clip_id": clip,
                            "frames_dir": clip_dir.relative_to(root).as_posix(),
                            "frame_pattern": pattern,
                            "onset": numbers[0],
                            "apex": numbers[(len(numbers) - 1) // 2],
                            "offset": numbers[-1],
                            "apex_estimated": True,
                            "fps": FPS,
                            "n_frames": len(numbers),
                            "au": "",
                            "emotion": emotion,
                            "label3": label3 or "",
                        },
                    )
                )
    return records, issues


def _frames(clip_dir: Path) -> tuple[str, list[int]] | None:
    """The first frame pattern with files in the folder, and their sorted frame numbers."""
    for pattern in FRAME_PATTERNS:
        numbers = []
        for path in clip_dir.glob(pattern):
            try:
                numbers.append(frame_number(path))
            except ValueError:
                continue
        if numbers:
            return pattern, sorted(numbers)
    return None
