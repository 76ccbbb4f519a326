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
import statistics
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
EMOTION_MISSPELT = "emotion misspelt"

DROPPED = "row dropped"
_ROOT_HINT = " (pass --root to place it from the clip's frames on disk)"
TIMING_KEYS: tuple[str, str, str] = ("onset", "apex", "offset")
_NAMED_FRAMES = 5  # missing frames named in a problem
_LAST_NUMBER = re.compile(r"(\d+)(?!.*\d)")

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
    "amusement": "positive",  # CASME I's word for its happiness clips
    "positive": "positive",
    "surprise": "surprise",
}
# Words that are real emotions outside the 3 classes ("others"); anything else is reported as unknown.
_OUT_OF_PROTOCOL = {"others", "other", "tense", "unknown"}
# Misspellings found in the official sheets → the word meant (CASME I's Section A writes "comtempt").
_MISSPELT: dict[str, str] = {"comtempt": "contempt"}

_SPREADSHEET_SUFFIXES = {".xlsx", ".xlsm"}  # .xls (binary) is read through python-calamine
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
    if text in {"", "/", "\\", "-", "?"} or re.fullmatch(r"-\d+(\.0+)?", text):
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
        self,
        row: int | None,
        clip: str,
        kind: str,
        detail: str,
        key: tuple[str, str] | None = None,
        *,
        outcome: str = "",
        repair: bool = False,
        original: str = "",
    ) -> None:
        problem = Problem(self.file, row, clip, f"{kind}: {detail}", outcome, repair, original)
        self.entries.append((problem, key))


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


def _sheets_from_xls(path: Path) -> Iterator[tuple[str, list[tuple[int, list[object]]]]]:
    """An old binary .xls workbook (CAS(ME)^3 v1) through python-calamine, a maintained reader (xlrd, the
    old one, is deprecated in pandas); empty and error cells become None, as openpyxl gives them."""
    import python_calamine

    def unreadable(exc: Exception) -> UserError:
        return UserError(
            f"{path}: not a readable .xls workbook ({type(exc).__name__}: {exc}); give the dataset's "
            "annotation spreadsheet (.xls/.xlsx) or a CSV export of it"
        )

    try:
        workbook = python_calamine.CalamineWorkbook.from_path(str(path))
    except python_calamine.CalamineError as exc:
        raise unreadable(exc) from None
    try:
        for name in workbook.sheet_names:
            try:  # skip_empty_area=False keeps the leading empty rows: row numbers stay the sheet's own
                values = workbook.get_sheet_by_name(name).to_python(skip_empty_area=False)
            except python_calamine.CalamineError as exc:
                raise unreadable(exc) from None
            rows = [
                (number, [None if cell == "" else cell for cell in row])
                for number, row in enumerate(values, start=1)
            ]
            yield name, rows
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
    tables = read_tables(path, columns, what, required, foreign, first_only=True)
    _, rows, header_number = tables[0]
    return rows, header_number


def read_tables(
    path: Path,
    columns: dict[str, tuple[str, ...]],
    what: str,
    required: Iterable[str] | None = None,
    foreign: dict[str, str] | None = None,
    first_only: bool = False,
) -> list[tuple[str, list[SheetRow], int]]:
    """Every sheet with such a header row, as (sheet title, data rows, header row number), in workbook order
    (CASME I splits its clips over two sheets); a UserError when none has one."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: annotation file not found; give --annotations the {what} file")
    if path.stat().st_size == 0:
        raise UserError(f"{path}: the file is empty; give --annotations the {what} file")
    required = list(columns if required is None else required)
    suffix = path.suffix.lower()
    if suffix in _SPREADSHEET_SUFFIXES:
        sheets: Iterable[tuple[str, list[tuple[int, list[object]]]]] = _sheets_from_xlsx(path)
    elif suffix == ".xls":
        sheets = _sheets_from_xls(path)
    elif suffix in {".csv", ".txt"}:
        sheets = [("csv", _rows_from_csv(path))]
    else:
        raise UserError(
            f"{path}: not a spreadsheet (.xlsx, .xls) or CSV file; give --annotations the {what} file"
        )

    wanted = {key: {_normalise_header(a) for a in aliases} for key, aliases in columns.items()}
    seen_sheets: list[str] = []
    found: list[tuple[str, list[SheetRow], int]] = []
    for title, rows in sheets:
        seen_sheets.append(title)
        table = _table(path, title, rows, wanted, required, foreign or {}, what)
        if table is not None:
            found.append(table)
            if first_only:
                return found
    if found:
        return found
    needed = ", ".join(columns[key][0] for key in required)
    where = f"sheets {seen_sheets}" if len(seen_sheets) > 1 else "the file"
    raise UserError(
        f"{path}: no header row with columns [{needed}] in {where}; is this the {what}? "
        "(header names are matched ignoring case, spaces and punctuation)"
    )


def _table(
    path: Path,
    title: str,
    rows: list[tuple[int, list[object]]],
    wanted: dict[str, set[str]],
    required: list[str],
    foreign: dict[str, str],
    what: str,
) -> tuple[str, list[SheetRow], int] | None:
    """The sheet's data rows under its first header row that names every required column, else None."""
    for header_number, header in rows[:_HEADER_SCAN_ROWS]:
        names = [_normalise_header(cell) for cell in header]
        positions: dict[str, int] = {}
        for key, aliases in wanted.items():
            for index, name in enumerate(names):
                if name in aliases:
                    positions[key] = index
                    break
        if not all(key in positions for key in required):
            continue
        for header_name, dataset in foreign.items():
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
        return title, data, header_number
    return None


@dataclass(frozen=True)
class Timing:
    onset: int
    apex: int
    offset: int
    apex_estimated: bool
    repaired: bool = False


def clip_and_subject(
    row: SheetRow, issues: Issues, parse_subject: Callable[[str], str | None], kind: str = "subject number"
) -> tuple[str, str] | None:
    """The row's Filename and parsed subject, or None after reporting the unusable one (row dropped)."""
    clip = row.text("clip")
    if not clip:
        issues.add(row.number, "", MISSING_FILENAME, "empty Filename cell", outcome=DROPPED)
        return None
    subject = parse_subject(row.text("subject"))
    if subject is None:
        issues.add(row.number, clip, BAD_SUBJECT, f"{row.text('subject')!r} is not a {kind}", outcome=DROPPED)
        return None
    return clip, subject


def rows_with_clip_and_subject(
    rows: Iterable[SheetRow],
    issues: Issues,
    parse_subject: Callable[[str], str | None],
    kind: str = "subject number",
) -> Iterator[tuple[SheetRow, str, str]]:
    """(row, clip, subject) for each row `clip_and_subject` accepts, lazily, so the dropped rows' problems
    stay in sheet order with the problems the reader adds per row."""
    for row in rows:
        parsed = clip_and_subject(row, issues, parse_subject, kind)
        if parsed is not None:
            clip, subject = parsed
            yield row, clip, subject


def timing_fields(timing: Timing, fps: float) -> dict:
    """The timing columns of a manifest record (n_frames from the sheet; --check-frames recounts on disk)."""
    return {
        "onset": timing.onset,
        "apex": timing.apex,
        "offset": timing.offset,
        "apex_estimated": timing.apex_estimated,
        "timing_repaired": timing.repaired,
        "fps": fps,
        "n_frames": timing.offset - timing.onset + 1,
    }


def typical_span(rows: Iterable[SheetRow], fps: float, keys: tuple[str, str, str] = TIMING_KEYS) -> int:
    """The sheet's own typical clip length (median offset − onset of its consistent rows), for repairing a
    row whose offset or onset is unusable; 0.3 s at the dataset's frame rate when no row is consistent."""
    spans = []
    for row in rows:
        onset, apex, offset = (frame_cell(row.cells.get(k)) for k in keys)
        if onset is not None and apex is not None and offset is not None and onset <= apex <= offset > onset:
            spans.append(offset - onset)
    return int(statistics.median(spans)) if spans else max(1, round(0.3 * fps))


def _frames_lookup(disk: Callable[[], list[int]] | None) -> Callable[[], list[int]]:
    """The clip's frame numbers on disk, looked up at most once and only when a repair needs them."""
    found: list[list[int]] = []

    def lookup() -> list[int]:
        if not found:
            found.append(disk() if disk is not None else [])
        return found[0]

    return lookup


def keep_record(
    records: list[tuple[int | None, dict]],
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


@dataclass(frozen=True)
class SheetReading:
    """What stays the same for every row of one sheet — dataset, frame rate and pattern, root, whether to
    check frames, and where records and problems go — so a reader's loop names only what differs per row."""

    dataset: str
    fps: float
    pattern: str
    root: Path | None
    check_frames: bool
    records: list[tuple[int | None, dict]]
    issues: Issues

    def timing(
        self,
        row: SheetRow,
        *,
        subject: str,
        clip: str,
        frames_dir: str,
        span: int,
        pattern: str | None = None,
    ) -> Timing | None:
        """`resolve_timing` for a clip whose folder holds only that clip, so its frames on disk can place a
        missing or inconsistent onset/offset (`pattern` when this row's frames differ from the default)."""
        disk = frames_on_disk(self.root, frames_dir, self.pattern if pattern is None else pattern)
        return resolve_timing(row, clip, (subject, clip), self.issues, span=span, disk=disk)

    def keep(
        self,
        row: SheetRow,
        *,
        subject: str,
        clip: str,
        frames_dir: str,
        timing: Timing,
        pattern: str | None = None,
        fps: float | None = None,
        clip_id: str | None = None,
        label3: str | None = None,
    ) -> None:
        """The manifest record of one annotation-sheet row — timing, AU cell, emotion word and its 3-class
        label (`label3` when the reader decided it itself) — kept by `keep_record`; `pattern` and `fps`
        override the defaults for this row only."""
        key = (subject, clip)
        emotion = resolve_emotion(row, clip, key, self.issues)
        au = resolve_au(row, clip, key, self.issues)
        if label3 is None:
            label3 = resolve_label3(emotion, row.number, clip, key, self.issues)
        record = {
            "dataset": self.dataset,
            "subject": subject,
            "clip_id": clip_id or clip,
            "frames_dir": frames_dir,
            "frame_pattern": self.pattern if pattern is None else pattern,
            **timing_fields(timing, self.fps if fps is None else fps),
            **au,
            "emotion": emotion,
            "label3": label3,
        }
        keep_record(self.records, record, row.number, self.root, self.check_frames, self.issues)


def resolve_timing(
    row: SheetRow,
    clip: str,
    key: tuple[str, str],
    issues: Issues,
    keys: tuple[str, str, str] = TIMING_KEYS,
    *,
    span: int,
    disk: Callable[[], list[int]] | None = None,
) -> Timing | None:
    """Onset ≤ apex ≤ offset, with every inconsistency repaired by a fixed rule and reported; never a drop
    unless the row has no usable frame number at all and no frames on disk.

    Rules (manifests/README.md): a missing apex becomes the middle frame (apex_estimated). A missing onset or
    an offset that is missing, 0 or before the onset becomes the clip's first/last frame on disk when `disk`
    knows them (a folder holding one clip, under --root), else onset/offset ± `span` (the sheet's typical
    length) — or, for an onset after an offset that agrees with the apex, min(apex, offset − span). An apex
    outside onset..offset moves the bound it crosses to the frames on disk when the apex frame is there, else
    becomes the middle frame. Every repair sets `repaired` (timing_repaired) and keeps the sheet's own cells
    in the problem's `original`.
    """
    onset_key, apex_key, offset_key = keys
    onset, apex, offset = (frame_cell(row.cells.get(k)) for k in keys)
    texts = {k: row.text(k) for k in keys}
    original = f"onset {texts[onset_key]!r}, apex {texts[apex_key]!r}, offset {texts[offset_key]!r}"
    frames = _frames_lookup(disk)
    faults: list[tuple[str, str]] = []  # (kind, what was wrong and which rule placed it)

    if offset == 0 and (onset is None or onset > 0):
        offset = None  # CAS(ME)^3 writes 0 where it has no offset
    if onset is None:
        if frames():
            onset, rule = frames()[0], f"onset = first frame on disk {frames()[0]}"
        elif offset is not None:
            onset, rule = max(0, offset - span), f"onset = offset − {span} (the sheet's typical length)"
        elif apex is not None:
            onset, rule = max(0, apex - span // 2), f"onset = apex − {span // 2} (half the typical length)"
        else:
            detail = f"{_describe(texts[onset_key])}, and no apex, offset or frames on disk to place the clip"
            issues.add(row.number, clip, ONSET_MISSING, detail, key, outcome=DROPPED + _ROOT_HINT)
            return None
        faults.append((ONSET_MISSING, f"{_describe(texts[onset_key])}; {rule}"))
    if offset is None or offset < onset:
        kind = OFFSET_MISSING if offset is None else ONSET_AFTER_OFFSET
        what = _describe(texts[offset_key]) if offset is None else f"onset {onset} > offset {offset}"
        on_disk = frames()
        if on_disk and not on_disk[0] <= onset <= on_disk[-1]:
            onset, offset = on_disk[0], on_disk[-1]
            rule = f"onset is not on disk: onset, offset = first, last frame on disk {onset}, {offset}"
        elif on_disk:
            offset, rule = on_disk[-1], f"offset = last frame on disk {on_disk[-1]}"
        elif offset is not None and apex is not None and apex < onset and 0 <= offset - apex <= 3 * span:
            # apex and offset agree with each other (a clip of plausible length): the onset is the typo
            onset = max(0, min(apex, offset - span))
            rule = f"apex and offset agree: onset = min(apex, offset − {span}) = {onset}"
        else:
            offset, rule = onset + span, f"offset = onset + {span} (the sheet's typical length)"
        faults.append((kind, f"{what}; {rule}"))
    estimated = False
    if apex is None:
        apex, estimated = (onset + offset) // 2, True
        if not faults:
            detail = _describe(texts[apex_key])
            outcome = f"kept with the middle frame {apex} as apex (apex_estimated=True)"
            issues.add(row.number, clip, APEX_MISSING, detail, key, outcome=outcome, repair=True)
            return Timing(onset, apex, offset, True)
        faults.append((APEX_MISSING, f"{_describe(texts[apex_key])}; apex = middle frame {apex}"))
    elif not onset <= apex <= offset:
        what = f"apex {apex} not in {onset}..{offset}"
        on_disk = frames()
        if on_disk and on_disk[0] <= apex <= on_disk[-1]:
            if apex > offset:
                offset = on_disk[-1]
                rule = f"the apex frame is on disk: offset = last frame on disk {offset}"
            else:
                onset = on_disk[0]
                rule = f"the apex frame is on disk: onset = first frame on disk {onset}"
        else:
            apex, estimated = (onset + offset) // 2, True
            rule = f"apex = middle frame {apex} (apex_estimated)"
        faults.append((APEX_OUTSIDE, f"{what}; {rule}"))
    if not faults:
        return Timing(onset, apex, offset, False)
    flags = "timing_repaired=True" + (", apex_estimated=True" if estimated else "")
    issues.add(
        row.number,
        clip,
        faults[0][0],
        "; ".join(text if kind == faults[0][0] else f"{kind}: {text}" for kind, text in faults),
        key,
        outcome=f"kept with onset {onset}, apex {apex}, offset {offset} ({flags})",
        repair=True,
        original=original,
    )
    return Timing(onset, apex, offset, estimated, repaired=True)


def resolve_au(
    row: SheetRow, clip: str, key: tuple[str, str], issues: Issues, column: str = "au"
) -> dict[str, str]:
    """The manifest's `au` (canonical FACS codes) and `au_notes` (descriptors, unreadable tokens as written);
    an unreadable token is reported, and kept in the notes."""
    parsed = parse_au(row.cells.get(column))
    if not parsed.ok:
        outcome = f"kept AU {parsed.canonical!r}" + (f", au_notes {parsed.notes!r}" if parsed.notes else "")
        issues.add(row.number, clip, UNREADABLE_AU, parsed.error or "", key, outcome=outcome)
    return {"au": parsed.canonical, "au_notes": parsed.notes}


def resolve_emotion(row: SheetRow, clip: str, key: tuple[str, str], issues: Issues) -> str:
    """The row's emotion word, a known misspelling replaced by the word meant and reported as a repair (the
    sheet's spelling in the problem's `original`), so the clip keeps its class instead of becoming unknown."""
    written = row.text("emotion")
    meant = _MISSPELT.get(written.lower())
    if meant is None:
        return written
    outcome = f"kept with emotion {meant!r} (label3 {label3_of(meant)!r})"
    detail = f"{written!r} read as {meant!r}"
    issues.add(
        row.number,
        clip,
        EMOTION_MISSPELT,
        detail,
        key,
        outcome=outcome,
        repair=True,
        original=f"emotion {written!r}",
    )
    return meant


def resolve_label3(emotion: str, row: int | None, clip: str, key: tuple[str, str], issues: Issues) -> str:
    label = label3_of(emotion)
    if label is None:
        issues.add(row, clip, UNKNOWN_EMOTION, f"{emotion!r}", key, outcome="kept with label3 ''")
        return ""
    return label


def check_frames_on_disk(
    record: dict, root: Path, row: int | None, issues: Issues, drop: bool = True
) -> bool:
    """Count the clip's frames on disk (sets n_frames); False (drop) when folder or apex frame is absent.

    `drop=False` (a check of a written manifest) reports the same faults without saying the row was dropped.
    """
    key = (record["subject"], record["clip_id"])
    folder = root / record["frames_dir"]
    outcome = DROPPED if drop else ""
    onset, offset = record["onset"], record["offset"]
    if not folder.is_dir():
        issues.add(row, record["clip_id"], FRAMES_MISSING, f"no folder {folder}", key, outcome=outcome)
        return False
    found = [(n, p) for n, p in list_frames(record, root) if onset <= n <= offset]
    numbers = [n for n, _ in found]
    if not numbers:
        detail = f"no {record['frame_pattern']!r} frames {onset}..{offset} in {folder}"
        issues.add(row, record["clip_id"], FRAMES_MISSING, detail, key, outcome=outcome)
        return False
    if record["apex"] not in numbers and not record["apex_estimated"]:
        detail = f"apex frame {record['apex']} not in {folder}"
        issues.add(row, record["clip_id"], FRAMES_MISSING, detail, key, outcome=outcome)
        return False
    expected = offset - onset + 1
    if len(numbers) < expected:
        present = set(numbers)
        missing = [n for n in range(onset, offset + 1) if n not in present]
        names = [_frame_name(found[0][1].name, n) for n in missing[:_NAMED_FRAMES]]
        more = f" and {len(missing) - _NAMED_FRAMES} more" if len(missing) > _NAMED_FRAMES else ""
        detail = (
            f"{len(missing)} of {expected} frames missing ({onset}..{offset}): {', '.join(names)}{more} "
            f"in {folder}"
        )
        kept = f"kept with the {len(numbers)} frames on disk" if drop else ""
        issues.add(row, record["clip_id"], FRAMES_MISSING, detail, key, outcome=kept)
    record["n_frames"] = len(numbers)
    return True


def _frame_name(example: str, number: int) -> str:
    """The file name frame `number` would have, spelled like `example` (same digits width when padded)."""
    match = _LAST_NUMBER.search(example)
    if match is None:
        return str(number)
    digits = match.group(1)
    text = str(number).zfill(len(digits)) if digits.startswith("0") else str(number)
    return example[: match.start(1)] + text + example[match.end(1) :]


def drop_duplicates(records: list[tuple[int | None, dict]], issues: Issues) -> list[tuple[int | None, dict]]:
    """Keep the first row of each (subject, clip_id); later ones are reported."""
    seen: dict[tuple[str, str], int | None] = {}
    kept = []
    for row, record in records:
        key = (record["subject"], record["clip_id"])
        if key in seen:
            detail = f"same subject and clip as row {seen[key]}"
            issues.add(row, record["clip_id"], DUPLICATE_CLIP, detail, key, outcome=DROPPED)
            continue
        seen[key] = row
        kept.append((row, record))
    return kept


def to_frame(records: Iterable[dict]) -> pd.DataFrame:
    """Records → a DataFrame with exactly the manifest columns and their types (person filled later)."""
    defaults = {"person": "", "timing_repaired": False, "au_notes": ""}
    frame = pd.DataFrame([{**defaults, **record} for record in records], columns=list(MANIFEST_COLUMNS))
    for column in ("onset", "apex", "offset", "n_frames"):
        frame[column] = frame[column].astype("int64")
    frame["fps"] = frame["fps"].astype("float64")
    for column in ("apex_estimated", "timing_repaired"):
        frame[column] = frame[column].astype(bool)
    for column in (
        "dataset", "subject", "person", "clip_id", "frames_dir", "frame_pattern", "au", "au_notes", "emotion",
        "label3",
    ):  # fmt: skip
        frame[column] = frame[column].astype(str)
    return frame.reset_index(drop=True)


def frames_on_disk(root: Path | None, frames_dir: str, pattern: str) -> Callable[[], list[int]] | None:
    """A lazy look-up of the frame numbers in a folder that holds exactly one clip (for timing repairs);
    None without a root."""
    if root is None:
        return None

    def lookup() -> list[int]:
        return [n for n, _ in list_frames({"frames_dir": frames_dir, "frame_pattern": pattern}, root)]

    return lookup


def under_root(root: Path | None, folder: str) -> str:
    """The frames_dir prefix: "folder/" when root holds that folder (or no root is known), else ""."""
    if root is None or (root / folder).is_dir():
        return f"{folder}/"
    return ""
