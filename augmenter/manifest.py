"""The manifest: one normalised row per clip, the hand-off between every stage.

Paths are relative to a dataset root given at run time, so one manifest serves every machine of a cluster.
Frame numbers (onset/apex/offset) are the dataset's own numbers, i.e. the last integer in a frame's file name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from augmenter.errors import UserError

MANIFEST_COLUMNS: tuple[str, ...] = (
    "dataset",  # casme2 | samm | smic | casme3 | mmew | demo datasets reuse "casme2"
    "subject",  # the dataset's own id, as its sheet writes it (CASME II "1", SAMM "006", SMIC "s1")
    "person",  # the human being filmed: the unit of every split (default "dataset/subject"; see person_map)
    "clip_id",  # the sheet's filename (EP02_01f, 006_1_2, s1_ne_01)
    "frames_dir",  # relative to the dataset root
    "frame_pattern",  # glob inside frames_dir, e.g. "img*.jpg"
    "onset",
    "apex",
    "offset",
    "apex_estimated",  # True when the middle frame stands in for a missing or impossible apex (SMIC: always)
    "timing_repaired",  # True when the sheet's onset/apex/offset contradicted itself and was repaired by rule
    "fps",
    "n_frames",
    "au",  # canonical AU string, e.g. "1+2+L4"; empty when the dataset has none
    "au_notes",  # what the AU cell says besides FACS codes (descriptors, unreadable tokens), ";"-joined
    "emotion",  # the dataset's own word
    "label3",  # negative | positive | surprise | "" (not in the 3-class protocol)
)
LABEL3_CLASSES: tuple[str, ...] = ("negative", "positive", "surprise")

_STRING_COLUMNS = (
    "dataset",
    "subject",
    "person",
    "clip_id",
    "frames_dir",
    "frame_pattern",
    "au",
    "au_notes",
    "emotion",
    "label3",
)
# Columns added after the first manifests were written, with the value an old manifest means.
_LATER_COLUMNS: dict[str, object] = {"timing_repaired": False, "au_notes": ""}
_INT_COLUMNS = ("onset", "apex", "offset", "n_frames")
_FRAME_NUMBER = re.compile(r"(\d+)(?!.*\d)")


@dataclass(frozen=True)
class Problem:
    """One bad annotation row (or file), kept so a whole sheet is reported in one pass.

    `reason` is "kind: detail" (what the sheet says); `outcome` what the build did with the row ("kept
    with ...", "row dropped"), so a build that writes nothing (--strict) can report the reason alone. A
    `repair` is a documented rule applied to a row that is then kept and flagged in the manifest (estimated
    apex, repaired timing); anything else is an error. `original` holds the sheet's cells a repair changed.
    """

    file: str
    row: int | None  # 1-based row in the source sheet (header = row 1 for spreadsheets); None = whole file
    clip: str
    reason: str
    outcome: str = ""
    repair: bool = False
    original: str = ""

    @property
    def kind(self) -> str:
        """The stable part of the reason ("apex missing", "frames missing", ...)."""
        return self.reason.split(": ", 1)[0]

    @property
    def severity(self) -> str:
        return "repair" if self.repair else "error"

    def where(self) -> str:
        """Where to look: FILE row N (CLIP)."""
        place = f"{self.file}" + (f" row {self.row}" if self.row is not None else "")
        return place + (f" ({self.clip})" if self.clip else "")

    def __str__(self) -> str:
        outcome = f"; {self.outcome}" if self.outcome else ""
        return f"{self.where()}: {self.reason}{outcome}"


def clip_key(row: pd.Series | dict) -> str:
    """A stable id of a clip across runs and machines: dataset/subject/clip_id."""
    return f"{row['dataset']}/{row['subject']}/{row['clip_id']}"


def fold_key(dataset: str, subject: str) -> str:
    """The subject identity used by LOSO folds and provenance: "dataset/subject" ("casme2/1", "samm/006")."""
    return f"{dataset}/{subject}"


def row_fold_key(row: pd.Series | dict) -> str:
    """fold_key of one manifest row."""
    return fold_key(row["dataset"], row["subject"])


def row_person(row: pd.Series | dict) -> str:
    """The person of one manifest row: the unit of folds, pairings, the leakage guard and bootstraps."""
    person = str(row.get("person", "") or "").strip()
    return person or row_fold_key(row)


def with_persons(frame: pd.DataFrame, persons: dict[str, str] | None = None) -> pd.DataFrame:
    """`frame` with a filled `person` column: an explicit `persons` entry (keyed by fold key
    "dataset/subject"), else the row's own non-empty person, else its fold key. Subjects are never merged
    unless someone says so.
    """
    frame = frame.copy()
    keys = [
        fold_key(d, s)
        for d, s in zip(frame["dataset"].astype(str), frame["subject"].astype(str), strict=True)
    ]
    given = frame["person"].tolist() if "person" in frame.columns else [""] * len(frame)
    own = [v.strip() if isinstance(v, str) and v.strip().lower() != "nan" else "" for v in given]
    mapping = persons or {}
    frame["person"] = [mapping.get(key) or mine or key for key, mine in zip(keys, own, strict=True)]
    return frame


def read_person_map(path: str | Path, dataset: str | None = None) -> dict[str, str]:
    """A persons file → {fold key: person}. CSV columns `subject,person` (plus `dataset` when the subjects are
    bare ids of several datasets); a bare subject id takes `dataset`. Two subjects with one person (a
    participant recorded twice, a mirrored copy) are how folds learn that they are one human being.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: persons file not found; write a CSV with columns subject,person")
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in ("subject", "person") if c not in table.columns]
    if missing:
        raise UserError(
            f"{path}: persons file lacks columns {missing}; write a CSV with columns subject,person"
        )
    mapping: dict[str, str] = {}
    for number, row in enumerate(table.to_dict("records"), start=2):
        subject, person = str(row["subject"]).strip(), str(row["person"]).strip()
        row_dataset = str(row.get("dataset", "") or dataset or "").strip()
        if not subject or not person:
            raise UserError(f"{path} row {number}: empty subject or person; fill both or delete the row")
        key = subject if "/" in subject else fold_key(row_dataset, subject) if row_dataset else None
        if key is None:
            raise UserError(
                f"{path} row {number}: subject {subject!r} needs a dataset column or a 'dataset/' prefix"
            )
        if mapping.get(key, person) != person:
            raise UserError(
                f"{path} row {number}: subject {key} is given two persons ({mapping[key]}, {person})"
            )
        mapping[key] = person
    return mapping


def write_manifest(frame: pd.DataFrame, path: str | Path) -> Path:
    """Write atomically (temp + rename) so a killed run never leaves half a manifest."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if "person" not in frame.columns:
        frame = with_persons(frame)
    frame = _with_later_columns(frame)
    missing = [c for c in MANIFEST_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"manifest frame lacks columns {missing}")
    extra = [c for c in frame.columns if c not in MANIFEST_COLUMNS]
    tmp = path.with_name(path.name + ".tmp")
    frame[list(MANIFEST_COLUMNS) + extra].to_csv(tmp, index=False)
    tmp.replace(path)
    return path


def read_manifest(path: str | Path) -> pd.DataFrame:
    """Read a manifest CSV with ids kept as strings ("006" stays "006")."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: manifest not found; build one with `augmenter manifest build`")
    dtypes = {c: "string" for c in _STRING_COLUMNS}
    try:
        frame = pd.read_csv(path, dtype=dtypes, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise UserError(
            f"{path}: not a readable manifest CSV ({exc}); rebuild it with `augmenter manifest build`"
        ) from None
    if "person" not in frame.columns:
        frame = with_persons(frame)  # a manifest from before persons: every subject is its own person
    frame = _with_later_columns(frame)
    missing = [c for c in MANIFEST_COLUMNS if c not in frame.columns]
    if missing:
        raise UserError(
            f"{path}: manifest lacks columns {missing}; rebuild it with `augmenter manifest build`"
        )
    for column in _STRING_COLUMNS:
        frame[column] = frame[column].astype(str)
    frame = with_persons(frame)
    for column in _INT_COLUMNS:
        frame[column] = pd.to_numeric(frame[column], errors="raise").astype("int64")
    frame["fps"] = pd.to_numeric(frame["fps"]).astype("float64")
    for column in ("apex_estimated", "timing_repaired"):
        frame[column] = frame[column].astype(str).str.lower().isin(["true", "1"])
    extra = [c for c in frame.columns if c not in MANIFEST_COLUMNS]
    return frame[list(MANIFEST_COLUMNS) + extra]


def _with_later_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """Fill the columns newer than a manifest (or a caller's frame) with the value their absence means."""
    absent = {c: v for c, v in _LATER_COLUMNS.items() if c not in frame.columns or frame[c].isna().all()}
    if not absent:
        return frame
    frame = frame.copy()
    for column, value in absent.items():
        frame[column] = value
    return frame


def frame_number(path: Path) -> int:
    """The dataset's frame number: the last integer in the name (img46.jpg → 46, 006_05562.jpg → 5562)."""
    match = _FRAME_NUMBER.search(path.stem)
    if match is None:
        raise ValueError(f"{path}: no frame number in the file name")
    return int(match.group(1))


def list_frames(row: pd.Series | dict, root: str | Path) -> list[tuple[int, Path]]:
    """All frames of a clip on disk, sorted by frame number (never by directory order)."""
    folder = Path(root) / str(row["frames_dir"])
    frames = [(frame_number(p), p) for p in folder.glob(str(row["frame_pattern"])) if p.is_file()]
    return sorted(frames)


def clip_frames(row: pd.Series | dict, root: str | Path) -> list[tuple[int, Path]]:
    """The frames from onset to offset inclusive; raises UserError naming the clip when they are absent."""
    onset, offset = int(row["onset"]), int(row["offset"])
    frames = [(n, p) for n, p in list_frames(row, root) if onset <= n <= offset]
    if not frames:
        raise UserError(
            f"{Path(root) / str(row['frames_dir'])}: no frames {onset}..{offset} matching "
            f"{row['frame_pattern']!r} for clip {clip_key(row)}; check --root"
        )
    return frames
