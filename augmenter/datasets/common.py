"""What every dataset reader shares: finding a header row by content, reading cells, checking timing, frames.

Readers collect problems instead of stopping, so one run reports a whole sheet; `build_manifest`
decides at the end whether a problem is fatal (`strict`). Each problem's reason starts with a short
kind ("apex missing", "onset after offset", ...) followed by ": " and the detail; summaries group by
that kind.
"""

from __future__ import annotations

import csv
import math
import re
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from augmenter.au import parse_au
from augmenter.errors import UserError
from augmenter.manifest import MANIFEST_COLUMNS, Problem, list_frames

# Problem kinds, the stable part of each reason (the text before ": ").
APEX_MISSING = "apex missing"
ONSET_MISSING = "onset missing"
OFFSET_MISSING = "offset missing"
ONSET_AFTER_OFFSET = "onset after offset"
APEX_OUTSIDE = "apex outside onset..offset"
UNKNOWN_EMOTION = "unknown emotion"
UNREADABLE_AU = "unreadable AU"
FRAMES_MISSING = "frames missing"
BAD_SUBJECT = "bad subject"
MISSING_FILENAME = "missing filename"
DUPLICATE_CLIP = "duplicate clip"
NOT_IN_ANNOTATIONS = "GT row not in annotations"

# MEGC 2019 three-class mapping (DESIGN §4), plus the spellings other sheets use for the same words.
_LABEL3: dict[str, str] = {
    "repression": "negative",
    "anger": "negative",
    "angry": "negative",
    "contempt": "negative",
    "disgust": "negative",
    "fear": "negative",
    "sadness": "negative",
    "sad": "negative",
    "negative": "negative",
    "happiness": "positive",
    "happy": "positive",
    "positive": "positive",
    "surprise": "surprise",
}
# Words that are real emotions outside the 3 classes ("others"); anything else is reported as unknown.
_OUT_OF_PROTOCOL = {"others", "other", "tense", "unknown"}

_SPREADSHEET_SUFFIXES = {".xlsx", ".xlsm"}
_HEADER_SCAN_ROWS = 40


def label3_of(emotion: str) -> str | None:
    """The MEGC class of an emotion word; "" for known words outside the 3 classes, None for unknown words."""
    word = emotion.strip().lower()
    if word in _LABEL3:
        return _LABEL3[word]
    if word in _OUT_OF_PROTOCOL:
        return ""
    return None


def cell_text(cell: object) -> str:
    """A cell as text: Excel ints and integral floats lose their ".0"; empty and NaN become ""."""
    if cell is None:
        return ""
    if isinstance(cell, float):
        if math.isnan(cell):
            return ""
        return str(int(cell)) if cell.is_integer() else repr(cell)
    return str(cell).strip()


def frame_cell(cell: object) -> int | None:
    """A frame number; None when missing ("", "/", "-", "?", negative such as the CSV's −1, not a number)."""
    text = cell_text(cell)
    if re.fullmatch(r"\d+", text):
        return int(text)
    if re.fullmatch(r"\d+\.0+", text):
        return int(float(text))
    return None


def _describe(text: str) -> str:
    """How a problem names an unusable frame cell: the cell, and whether it is blank-like or garbage."""
    if text in {"", "/", "-", "?"} or re.fullmatch(r"-\d+(\.0+)?", text):
        return f"cell {text!r}"
    return f"cell {text!r} is not a frame number"


def _normalise_header(cell: object) -> str:
    return re.sub(r"[^a-z0-9]", "", cell_text(cell).lower())


@dataclass(frozen=True)
class SheetRow:
    """One data row: its 1-based row number in the source file and its cells by our column key."""

    number: int
    cells: dict[str, object]

    def text(self, key: str) -> str:
        return cell_text(self.cells.get(key))


@dataclass
class Issues:
    """Problems met while reading, each tagged with the clip key (subject, clip_id) it concerns, if any."""

    file: str
    entries: list[tuple[Problem, tuple[str, str] | None]] = field(default_factory=list)

    def add(
        self, row: int | None, clip: str, kind: str, detail: str, key: tuple[str, str] | None = None
    ) -> None:
        self.entries.append((Problem(self.file, row, clip, f"{kind}: {detail}"), key))


def _rows_from_csv(path: Path) -> list[tuple[int, list[object]]]:
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            return [(number, list(row)) for number, row in enumerate(csv.reader(handle), start=1)]
    except UnicodeDecodeError as exc:
        raise UserError(
            f"{path}: not a text CSV ({exc.reason}); export the sheet as UTF-8 CSV or give the .xlsx"
        ) from None


def _sheets_from_xlsx(path: Path) -> Iterator[tuple[str, list[tuple[int, list[object]]]]]:
    import openpyxl
    from openpyxl.utils.exceptions import InvalidFileException

    try:
        workbook = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except (InvalidFileException, zipfile.BadZipFile, KeyError, OSError) as exc:
        raise UserError(
            f"{path}: not a readable .xlsx workbook ({type(exc).__name__}); give the dataset's annotation "
            "spreadsheet (.xlsx) or a CSV export of it"
        ) from None
    try:
        for sheet in workbook.worksheets:
            rows = [
                (number, list(values)) for number, values in enumerate(sheet.iter_rows(values_only=True), 1)
            ]
            yield sheet.title, rows
    finally:
        workbook.close()


def read_table(
    path: Path,
    columns: dict[str, tuple[str, ...]],
    what: str,
    required: Iterable[str] | None = None,
    foreign: dict[str, str] | None = None,
) -> tuple[list[SheetRow], int]:
    """Find the first sheet whose header row (searched by content, not position) names every required column.

    `columns` maps our key to the accepted header spellings (compared lower-case, letters and digits only).
    `foreign` maps a header that only another dataset's sheet has to that dataset (e.g. SAMM's "Inducement
    Code"), so a sheet given under the wrong --dataset is refused, not misread. Extra columns are ignored.
    Returns the data rows (blank rows skipped) and the header's row number.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: annotation file not found; give --annotations the {what} file")
    if path.stat().st_size == 0:
        raise UserError(f"{path}: the file is empty; give --annotations the {what} file")
    required = list(columns if required is None else required)
    suffix = path.suffix.lower()
    if suffix in _SPREADSHEET_SUFFIXES:
        sheets: Iterable[tuple[str, list[tuple[int, list[object]]]]] = _sheets_from_xlsx(path)
    elif suffix in {".csv", ".txt"}:
        sheets = [("csv", _rows_from_csv(path))]
    elif suffix == ".xls":
        raise UserError(
            f"{path}: old .xls workbooks are not read; save it as .xlsx (or CSV) and pass that file"
        )
    else:
        raise UserError(f"{path}: not a spreadsheet (.xlsx) or CSV file; give --annotations the {what} file")

    wanted = {key: {_normalise_header(a) for a in aliases} for key, aliases in columns.items()}
    seen_sheets: list[str] = []
    for title, rows in sheets:
        seen_sheets.append(title)
        for header_number, header in rows[:_HEADER_SCAN_ROWS]:
            names = [_normalise_header(cell) for cell in header]
            positions: dict[str, int] = {}
            for key, aliases in wanted.items():
                for index, name in enumerate(names):
                    if name in aliases:
                        positions[key] = index
                        break
            if all(key in positions for key in required):
                for header_name, dataset in (foreign or {}).items():
                    if _normalise_header(header_name) in names:
                        raise UserError(
                            f"{path}: this looks like the {dataset} sheet (it has a {header_name!r} column), "
                            f"not the {what}; use --dataset {dataset}"
                        )
                data: list[SheetRow] = []
                for number, values in rows:
                    if number <= header_number or all(cell_text(v) == "" for v in values):
                        continue
                    cells = {key: (values[i] if i < len(values) else None) for key, i in positions.items()}
                    data.append(SheetRow(number, cells))
                return data, header_number
    needed = ", ".join(columns[key][0] for key in required)
    where = f"sheets {seen_sheets}" if len(seen_sheets) > 1 else "the file"
    if not any(True for _ in seen_sheets):
        where = "the file"
    raise UserError(
        f"{path}: no header row with columns [{needed}] in {where}; is this the {what}? "
        "(header names are matched ignoring case, spaces and punctuation)"
    )


@dataclass(frozen=True)
class Timing:
    onset: int
    apex: int
    offset: int
    apex_estimated: bool


def clip_and_subject(
    row: SheetRow, issues: Issues, parse_subject: Callable[[str], str | None], kind: str = "subject number"
) -> tuple[str, str] | None:
    """The row's Filename and parsed subject, or None after reporting the unusable one (row dropped)."""
    clip = row.text("clip")
    if not clip:
        issues.add(row.number, "", MISSING_FILENAME, "empty Filename cell; row dropped")
        return None
    subject = parse_subject(row.text("subject"))
    if subject is None:
        issues.add(row.number, clip, BAD_SUBJECT, f"{row.text('subject')!r} is not a {kind}; dropped")
        return None
    return clip, subject


def timing_fields(timing: Timing, fps: float) -> dict:
    """The timing columns of a manifest record (n_frames from the sheet; --check-frames recounts on disk)."""
    return {
        "onset": timing.onset,
        "apex": timing.apex,
        "offset": timing.offset,
        "apex_estimated": timing.apex_estimated,
        "fps": fps,
        "n_frames": timing.offset - timing.onset + 1,
    }


def keep_record(
    records: list[tuple[int, dict]],
    record: dict,
    row: int,
    root: Path | None,
    check_frames: bool,
    issues: Issues,
) -> None:
    """Append the sheet row's record unless --check-frames finds its frames missing (then it is reported)."""
    if check_frames and root is not None and not check_frames_on_disk(record, root, row, issues):
        return
    records.append((row, record))


def resolve_timing(
    row: SheetRow,
    clip: str,
    key: tuple[str, str],
    issues: Issues,
    keys: tuple[str, str, str] = ("onset", "apex", "offset"),
    last_frame: Callable[[], int | None] | None = None,
) -> Timing | None:
    """Check onset ≤ apex ≤ offset. A missing apex becomes the middle frame (kept, reported); else drop.

    `last_frame`, when given, supplies the last frame number on disk for a missing offset (SAMM writes unclear
    offsets as "?" or -1); without it such a row is dropped.
    """
    onset_key, apex_key, offset_key = keys
    onset, apex, offset = (frame_cell(row.cells.get(k)) for k in keys)
    if onset is None:
        issues.add(row.number, clip, ONSET_MISSING, f"{_describe(row.text(onset_key))}; row dropped", key)
        return None
    if offset is None:
        last = last_frame() if last_frame is not None else None
        if last is None or last < onset:
            issues.add(
                row.number, clip, OFFSET_MISSING, f"{_describe(row.text(offset_key))}; row dropped", key
            )
            return None
        detail = (
            f"{_describe(row.text(offset_key))}; kept with the clip's last frame on disk, {last}, as offset"
        )
        issues.add(row.number, clip, OFFSET_MISSING, detail, key)
        offset = last
    if onset > offset:
        issues.add(row.number, clip, ONSET_AFTER_OFFSET, f"onset {onset} > offset {offset}; row dropped", key)
        return None
    if apex is None:
        middle = (onset + offset) // 2
        issues.add(
            row.number,
            clip,
            APEX_MISSING,
            f"{_describe(row.text(apex_key))}; kept with the middle frame {middle} as apex "
            "(apex_estimated=True)",
            key,
        )
        return Timing(onset, middle, offset, True)
    if not onset <= apex <= offset:
        issues.add(row.number, clip, APEX_OUTSIDE, f"apex {apex} not in {onset}..{offset}; row dropped", key)
        return None
    return Timing(onset, apex, offset, False)


def resolve_au(row: SheetRow, clip: str, key: tuple[str, str], issues: Issues, column: str = "au") -> str:
    """The canonical AU string; an unreadable cell is reported and the readable part kept."""
    parsed = parse_au(row.cells.get(column))
    if not parsed.ok:
        issues.add(row.number, clip, UNREADABLE_AU, f"{parsed.error}; kept AU {parsed.canonical!r}", key)
    return parsed.canonical


def resolve_label3(emotion: str, row: int | None, clip: str, key: tuple[str, str], issues: Issues) -> str:
    label = label3_of(emotion)
    if label is None:
        issues.add(row, clip, UNKNOWN_EMOTION, f"{emotion!r}; kept with label3 ''", key)
        return ""
    return label


def check_frames_on_disk(
    record: dict, root: Path, row: int | None, issues: Issues, dropped: str = "; row dropped"
) -> bool:
    """Count the clip's frames on disk (sets n_frames); False (drop) when folder or apex frame is absent."""
    key = (record["subject"], record["clip_id"])
    folder = root / record["frames_dir"]
    if not folder.is_dir():
        issues.add(row, record["clip_id"], FRAMES_MISSING, f"no folder {folder}{dropped}", key)
        return False
    numbers = [n for n, _ in list_frames(record, root) if record["onset"] <= n <= record["offset"]]
    if not numbers:
        issues.add(
            row,
            record["clip_id"],
            FRAMES_MISSING,
            f"no {record['frame_pattern']!r} frames {record['onset']}..{record['offset']} "
            f"in {folder}{dropped}",
            key,
        )
        return False
    if record["apex"] not in numbers and not record["apex_estimated"]:
        issues.add(
            row,
            record["clip_id"],
            FRAMES_MISSING,
            f"apex frame {record['apex']} not in {folder}{dropped}",
            key,
        )
        return False
    expected = record["offset"] - record["onset"] + 1
    if len(numbers) < expected:
        issues.add(
            row,
            record["clip_id"],
            FRAMES_MISSING,
            f"{len(numbers)} of {expected} frames {record['onset']}..{record['offset']} in {folder}",
            key,
        )
    record["n_frames"] = len(numbers)
    return True


def drop_duplicates(records: list[tuple[int | None, dict]], issues: Issues) -> list[tuple[int | None, dict]]:
    """Keep the first row of each (subject, clip_id); later ones are reported."""
    seen: dict[tuple[str, str], int | None] = {}
    kept = []
    for row, record in records:
        key = (record["subject"], record["clip_id"])
        if key in seen:
            issues.add(
                row,
                record["clip_id"],
                DUPLICATE_CLIP,
                f"same subject and clip as row {seen[key]}; dropped",
                key,
            )
            continue
        seen[key] = row
        kept.append((row, record))
    return kept


def to_frame(records: Iterable[dict]) -> pd.DataFrame:
    """Records → a DataFrame with exactly the manifest columns and their types."""
    frame = pd.DataFrame(list(records), columns=list(MANIFEST_COLUMNS))
    for column in ("onset", "apex", "offset", "n_frames"):
        frame[column] = frame[column].astype("int64")
    frame["fps"] = frame["fps"].astype("float64")
    frame["apex_estimated"] = frame["apex_estimated"].astype(bool)
    for column in ("dataset", "subject", "clip_id", "frames_dir", "frame_pattern", "au", "emotion", "label3"):
        frame[column] = frame[column].astype(str)
    return frame.reset_index(drop=True)


def last_frame_on_disk(root: Path | None, frames_dir: str, pattern: str) -> Callable[[], int | None]:
    """A lazy look-up of a clip's last frame number, for sheets whose offset cell is missing."""

    def lookup() -> int | None:
        if root is None:
            return None
        frames = list_frames({"frames_dir": frames_dir, "frame_pattern": pattern}, root)
        return frames[-1][0] if frames else None

    return lookup


def under_root(root: Path | None, folder: str) -> str:
    """The frames_dir prefix: "folder/" when root holds that folder (or no root is known), else ""."""
    if root is None or (root / folder).is_dir():
        return f"{folder}/"
    return ""
