"""Dataset readers on the real annotation files and on hand-made sheets/trees, one per problem kind."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import openpyxl
import pandas as pd
import pytest

from augmenter.au import parse_au
from augmenter.datasets import (
    PROBLEM_COLUMNS,
    build_manifest,
    build_manifest_file,
    check_manifest,
    problems_path,
    read_dataset,
)
from augmenter.datasets.megc2019 import gt_key, read_gt
from augmenter.errors import UserError
from augmenter.manifest import MANIFEST_COLUMNS, clip_frames, read_manifest

REAL = Path(__file__).parent / "data"
CASME2_2019 = REAL / "CASME2-coding-20190701.xlsx"
CASME2_2015 = REAL / "casme2_annotations_2015_csv_export.csv"
GT = REAL / "megc2019_combined_3class_gt.csv"
CASME2_HEADER = [
    "Subject",
    "Filename",
    None,
    "OnsetFrame",
    "ApexFrame",
    "OffsetFrame",
    None,
    "Action Units",
    "Estimated Emotion",
    "Objective Classes",
]
SAMM_HEADER = [
    "Subject",
    "Filename",
    "Inducement Code",
    "Onset Frame",
    "Apex Frame",
    "Offset Frame",
    "Duration",
    "Micro",
    "Action Units",
    "Estimated Emotion",
    "Objective Classes",
    "Notes",
]


def write_xlsx(path: Path, rows: list[list[object]], sheets_before: int = 0) -> Path:
    """A real .xlsx via openpyxl; `sheets_before` puts an unrelated sheet first (header not on sheet 1)."""
    workbook = openpyxl.Workbook()
    first = workbook.active
    if sheets_before:
        first.title = "notes"
        first.append(["These are notes, not the coding table"])
        sheet = workbook.create_sheet("coding")
    else:
        sheet = first
    for row in rows:
        sheet.append(row)
    workbook.save(path)
    return path


def casme2_row(
    subject: object, clip: str, onset: object, apex: object, offset: object, au: object, emotion: str
):
    return [subject, clip, None, onset, apex, offset, None, au, emotion, 1]


def reasons(build_or_problems) -> list[str]:
    problems = getattr(build_or_problems, "problems", build_or_problems)
    return [p.reason for p in problems]


# --- real files ---


@pytest.fixture(scope="module")
def casme2_2019():
    return build_manifest("casme2", CASME2_2019, None)


def test_real_casme2_2019_sheet_gives_255_rows(casme2_2019) -> None:
    frame = casme2_2019.frame
    assert list(frame.columns) == list(MANIFEST_COLUMNS)
    assert len(frame) == 255
    assert frame["subject"].nunique() == 26
    first = frame.iloc[0]
    assert (first["subject"], first["clip_id"], first["onset"], first["apex"], first["offset"]) == (
        "1",
        "EP02_01f",
        46,
        59,
        86,
    )
    assert first["frames_dir"] == "CASME2_RAW_selected/sub01/EP02_01f"
    assert first["frame_pattern"] == "img*.jpg" and first["fps"] == 200.0 and first["n_frames"] == 41
    assert first["label3"] == "positive"
    # the one "/" apex (sub04 EP12_01f) is kept at the middle frame and reported
    estimated = frame[frame["apex_estimated"]]
    assert list(estimated["clip_id"]) == ["EP12_01f"] and list(estimated["apex"]) == [(261 + 321) // 2]
    assert casme2_2019.problems_by_reason() == {"apex missing": 1}
    assert "row 31 (EP12_01f): apex missing: cell '/'" in str(casme2_2019.problems[0])
    assert casme2_2019.class_counts() == {"negative": 96, "positive": 32, "surprise": 28, "": 99}


def test_real_casme2_2019_every_au_cell_parsed_or_reported(casme2_2019) -> None:
    workbook = openpyxl.load_workbook(CASME2_2019, read_only=True)
    cells = [row[7] for row in workbook.worksheets[0].iter_rows(min_row=2, values_only=True) if row[1]]
    reported = {p.row for p in casme2_2019.problems if p.reason.startswith("unreadable AU")}
    assert len(cells) == 255
    for row_number, (cell, au) in enumerate(zip(cells, casme2_2019.frame["au"], strict=True), start=2):
        parsed = parse_au(cell)
        assert parsed.ok or row_number in reported
        assert au == parsed.canonical and (au != "" or cell in (None, ""))


def test_real_casme2_2015_csv() -> None:
    build = build_manifest("casme2", CASME2_2015, None)
    assert len(build.frame) == 257
    assert build.problems_by_reason() == {"apex missing": 3}  # the CSV writes −1 for them
    assert sorted(build.frame.loc[build.frame["apex_estimated"], "clip_id"]) == [
        "EP02_02f",
        "EP02_07",
        "EP12_01f",
    ]
    assert "?" in set(build.frame["au"])  # the CSV's "?" AU cell is kept as unknown, not an error


@pytest.mark.parametrize("annotations", [CASME2_2019, CASME2_2015])
def test_megc2019_protocol_matches_all_casme2_gt_rows(annotations: Path) -> None:
    build = build_manifest("casme2", annotations, None, protocol="megc2019", gt=GT)
    assert (build.gt_rows, build.gt_matched) == (145, 145)
    assert build.problems == []
    assert build.class_counts() == {"negative": 88, "positive": 32, "surprise": 25, "": 0}
    gt = [(row.key, row.label3) for row in read_gt(GT, "casme2")]
    keys = zip(build.frame["subject"], build.frame["clip_id"], strict=True)
    assert list(zip(keys, build.frame["label3"], strict=True)) == gt


def test_gt_file_and_id_forms() -> None:
    rows = read_gt(GT)
    assert len(rows) == 442
    assert {r.dataset for r in rows} == {"casme2", "samm", "smic"}
    assert len({(r.dataset, r.subject) for r in rows}) == 68
    assert gt_key("casme2", "sub01", "EP02_01f") == ("1", "EP02_01f")
    assert gt_key("samm", "6", "006_1_2") == ("006", "006_1_2")
    assert gt_key("smic", "s01", "s01_ne_01") == ("s1", "s1_ne_01")
    assert gt_key("smic", "s20", "s20_po_02") == ("s20", "s20_po_02")


# --- SAMM ---

_SAMM_NEGATIVE = ("Anger", "Contempt", "Disgust", "Fear", "Sadness")


# AU cells of the real SAMM sheet that an earlier grammar lost, each with its canonical AU and its notes.
SAMM_AU_QUIRKS: dict[str, tuple[str, str]] = {
    "T18": ("T18", ""),
    "B18+T23": ("B18+T23", ""),
    "T23": ("T23", ""),
    "B23": ("B23", ""),
    "B28": ("B28", ""),
    "T24+T28": ("T24+T28", ""),
    "A/L12": ("(L12/A12)", ""),
    "10A/B": ("(10A/10B)", ""),
    "4(B/C)": ("(4B/4C)", ""),
    "R4,5": ("R4+5", ""),
    "4,17,18": ("4+17+18", ""),
    "10or11": ("(10/11)", ""),
    "soft focus": ("", "soft focus"),
    "12+glare": ("12", "glare"),
    "NULL": ("", ""),
}
# The official sheet's two timing typos, both in the MEGC 2019 composite (onset, apex, offset as written).
SAMM_TYPOS: dict[str, tuple[int, int, int]] = {"028_4_1": (1083, 1143, 1134), "032_3_1": (4896, 1930, 1963)}


def write_samm_sheet(path: Path) -> tuple[Path, int]:
    """An official-format SAMM sheet: 13 preamble rows, the header, 159 clips (the GT's 133 + 26 "Other"),
    with the official file's two timing typos and the AU forms of its key."""
    gt = read_gt(GT, "samm")
    rows: list[list[object]] = [["SAMM Micro-Movement FACS codes"], ["Please cite ..."], []]
    rows += [
        [f"key line {i}: '/' = or, '?' = unclear offset, L2/R2 unilateral, A2 asymmetric"] for i in range(10)
    ]
    assert len(rows) == 13
    rows.append(SAMM_HEADER)
    emotion_of = {"negative": _SAMM_NEGATIVE, "positive": ("Happiness",), "surprise": ("Surprise",)}
    for index, row in enumerate(gt):
        subject = (
            int(row.subject) if index % 2 else row.subject.zfill(3)
        )  # Excel int 6 and text "006" both seen
        emotion = emotion_of[row.label3][index % len(emotion_of[row.label3])]
        onset = 1000 + index
        timing = SAMM_TYPOS.get(row.filename, (onset, onset + 20, onset + 60))
        rows.append(
            [subject, row.filename, 1, *timing, 61, "Micro - 1/2", "R12+A2", emotion, 1, ""]
        )  # fmt: skip
    subjects = sorted({row.subject for row in gt})
    quirks = list(SAMM_AU_QUIRKS)
    for extra in range(159 - len(gt)):
        subject = subjects[extra % len(subjects)].zfill(3)
        au = quirks[extra] if extra < len(quirks) else "4/7"
        rows.append([subject, f"{subject}_9_{extra}", 2, 10, 20, 40, 31, "Micro - 1/2", au, "Other", 7, ""])
    return write_xlsx(path, rows), len(gt)


def test_samm_official_format_sheet(tmp_path: Path) -> None:
    sheet, gt_count = write_samm_sheet(tmp_path / "SAMM_Micro_FACS_Codes_v2.xlsx")
    build = build_manifest("samm", sheet, None)
    assert len(build.frame) == 159 and build.errors == []  # every row kept; only documented repairs
    assert set(build.frame["subject"].str.len()) == {3}
    row = build.frame[build.frame["clip_id"] == "006_1_2"].iloc[0]
    assert row["subject"] == "006" and row["frames_dir"] == "SAMM/006/006_1_2" and row["fps"] == 200.0
    assert row["au"] == "A2+R12" and row["person"] == "samm/006"
    assert (build.frame["emotion"] == "Other").sum() == 26
    # the two timing typos: kept, flagged, the sheet's values in the problem
    repaired = build.frame[build.frame["timing_repaired"]].set_index("clip_id")
    assert sorted(repaired.index) == sorted(SAMM_TYPOS)
    assert repaired.loc["028_4_1", ["onset", "apex", "offset", "apex_estimated"]].tolist() == [
        1083,
        1108,
        1134,
        True,
    ]
    # apex 1930 and offset 1963 agree: the onset 4896 is the typo, so the coded apex is kept
    assert repaired.loc["032_3_1", ["onset", "apex", "offset", "apex_estimated"]].tolist() == [
        1903,
        1930,
        1963,
        False,
    ]
    assert [(p.clip, p.kind, p.repair) for p in build.problems] == [
        ("028_4_1", "apex outside onset..offset", True),
        ("032_3_1", "onset after offset", True),
    ]
    assert build.problems[0].original == "onset '1083', apex '1143', offset '1134'"
    # no AU token lost: every quirk cell reads to its canonical codes, descriptors kept as notes
    by_clip = build.frame.set_index("clip_id")
    for extra, (au, notes) in enumerate(SAMM_AU_QUIRKS.values()):
        clip = build.frame[build.frame["clip_id"].str.endswith(f"_9_{extra}")].iloc[0]
        assert (clip["au"], clip["au_notes"]) == (au, notes), clip["clip_id"]
    assert by_clip["au"].ne("").sum() == 159 - 2  # only "soft focus" and "NULL" code no AU

    protocol = build_manifest("samm", sheet, None, protocol="megc2019", gt=GT)
    assert gt_count == 133 and (protocol.gt_rows, protocol.gt_matched) == (133, 133)
    assert protocol.class_counts() == {"negative": 92, "positive": 26, "surprise": 15, "": 0}
    assert protocol.frame["timing_repaired"].sum() == 2
    strict = build_manifest("samm", sheet, None, protocol="megc2019", gt=GT, strict=True)
    assert strict.frame.equals(protocol.frame)  # repairs are not errors under --strict


def test_samm_frames_and_missing_offset_from_disk(tmp_path: Path) -> None:
    rows = [["title"]] * 13 + [SAMM_HEADER]
    rows.append([6, "006_1_2", 1, 5562, 5570, "?", None, None, "4", "Anger", 1, ""])
    rows.append([6, "006_1_3", 1, 100, 105, -1, None, None, "4", "Anger", 1, ""])  # no frames on disk
    sheet = write_xlsx(tmp_path / "samm.xlsx", rows)
    root = tmp_path / "data"
    folder = root / "006" / "006_1_2"  # root is the SAMM folder itself
    folder.mkdir(parents=True)
    for number in range(5562, 5581):
        (folder / f"006_{number:05d}.jpg").write_bytes(b"x")
    build = build_manifest("samm", sheet, root, check_frames=True)
    assert list(build.frame["clip_id"]) == ["006_1_2"]
    row = build.frame.iloc[0]
    assert (row["frames_dir"], row["offset"], row["n_frames"]) == ("006/006_1_2", 5580, 19)
    assert row["timing_repaired"] and not row["apex_estimated"]
    first, second, third = build.problems
    assert first.repair and first.reason == "offset missing: cell '?'; offset = last frame on disk 5580"
    assert first.outcome == "kept with onset 5562, apex 5570, offset 5580 (timing_repaired=True)"
    assert first.original == "onset '5562', apex '5570', offset '?'"
    # no frames on disk: the timing is estimated from the sheet's typical length, then check-frames drops it
    assert second.repair and second.reason.startswith("offset missing: cell '-1'; offset = onset + ")
    assert not third.repair and third.kind == "frames missing" and third.outcome == "row dropped"
    assert [n for n, _ in clip_frames(row, root)][:2] == [5562, 5563]


# --- malformed sheets: one per problem kind ---


@pytest.mark.parametrize(
    ("row", "kind", "detail", "outcome", "repair"),
    [
        (
            casme2_row(1, "EP01", 10, "/", 30, "4", "disgust"),
            "apex missing",
            "cell '/'",
            "kept with the middle frame 20 as apex (apex_estimated=True)",
            True,
        ),
        (casme2_row(1, "EP01", 10, None, 30, "4", "disgust"), "apex missing", "cell ''", "kept", True),
        (casme2_row(1, "EP01", 10, -1, 30, "4", "disgust"), "apex missing", "cell '-1'", "kept", True),
        (
            # the good row's length (4) is the sheet's typical length: offset = 40 + 4, apex = the middle
            casme2_row(1, "EP01", 40, 45, 30, "4", "disgust"),
            "onset after offset",
            "onset 40 > offset 30; offset = onset + 4 (the sheet's typical length); "
            "apex outside onset..offset: apex 45 not in 40..44; apex = middle frame 42",
            "kept with onset 40, apex 42, offset 44 (timing_repaired=True, apex_estimated=True)",
            True,
        ),
        (
            casme2_row(1, "EP01", 10, 35, 30, "4", "disgust"),
            "apex outside onset..offset",
            "apex 35 not in 10..30; apex = middle frame 20 (apex_estimated)",
            "kept with onset 10, apex 20, offset 30 (timing_repaired=True, apex_estimated=True)",
            True,
        ),
        (
            casme2_row(1, "EP01", "/", 20, 30, "4", "disgust"),
            "onset missing",
            "cell '/'; onset = offset − 4",
            "kept with onset 26, apex 28, offset 30",
            True,
        ),
        (
            casme2_row(1, "EP01", 10, 12, 0, "4", "disgust"),  # CAS(ME)^3's offset 0
            "offset missing",
            "cell '0' is not a frame number; offset = onset + 4",
            "kept with onset 10, apex 12, offset 14 (timing_repaired=True)",
            True,
        ),
        (
            casme2_row(1, "EP01", "/", None, "x", "4", "disgust"),
            "onset missing",
            "cell '/', and no apex, offset or frames on disk to place the clip",
            "row dropped (pass --root",
            False,
        ),
        (casme2_row(1, "EP01", 10, 20, 30, "4", "grumpy"), "unknown emotion", "'grumpy'", "kept", False),
        (
            casme2_row(1, "EP01", 10, 20, 30, "4+zz", "disgust"),
            "unreadable AU",
            "unreadable AU term 'ZZ'",
            "kept AU '4', au_notes 'ZZ'",
            False,
        ),
        (
            casme2_row("abc", "EP01", 10, 20, 30, "4", "disgust"),
            "bad subject",
            "'abc' is not a subject number",
            "row dropped",
            False,
        ),
        (
            casme2_row(1, None, 10, 20, 30, "4", "disgust"),
            "missing filename",
            "empty Filename",
            "row dropped",
            False,
        ),
    ],
)
def test_each_problem_kind_is_reported_with_its_row(
    tmp_path: Path, row: list[object], kind: str, detail: str, outcome: str, repair: bool
) -> None:
    good = casme2_row(2, "EP02", 1, 5, 5, "12", "happiness")
    sheet = write_xlsx(tmp_path / "casme2.xlsx", [CASME2_HEADER, good, row])
    build = build_manifest("casme2", sheet, None)
    assert len(build.problems) == 1
    problem = build.problems[0]
    assert problem.row == 3 and problem.reason.startswith(f"{kind}: ") and detail in problem.reason
    assert problem.outcome.startswith(outcome) and problem.repair == repair
    assert str(problem).startswith(f"{sheet} row 3")
    kept = not problem.outcome.startswith("row dropped")
    assert len(build.frame) == (2 if kept else 1)
    if kept and kind not in ("apex missing", "unknown emotion", "unreadable AU"):
        assert build.frame.iloc[1]["timing_repaired"]  # every timing repair is flagged in the manifest
    if repair:  # a documented repair is not an error: --strict builds the same manifest
        assert build_manifest("casme2", sheet, None, strict=True).frame.equals(build.frame)
    else:  # an error stops --strict, and the message never says what would have been kept
        with pytest.raises(
            UserError, match=f"row 3.*{kind}.*--strict: stopped at the first of 1 error"
        ) as info:
            build_manifest("casme2", sheet, None, strict=True)
        assert "kept" not in str(info.value) and "nothing written" in str(info.value)


def test_timing_repairs_use_the_frames_on_disk(tmp_path: Path) -> None:
    """With --root the clip's frames decide: an apex frame that exists moves the bound it crosses; a bound
    that is not on disk becomes the first/last frame there."""
    sheet = write_xlsx(
        tmp_path / "c.xlsx",
        [
            CASME2_HEADER,
            casme2_row(1, "EP01", 1080, 1143, 1134, "4", "disgust"),  # apex after offset, apex frame on disk
            casme2_row(1, "EP02", 4896, 1930, 1990, "4", "disgust"),  # onset typo: not on disk
            casme2_row(1, "EP03", 10, 12, 0, "4", "disgust"),  # offset 0
        ],
    )
    root = tmp_path / "root"
    for clip, numbers in (("EP01", range(1080, 1151)), ("EP02", range(1890, 1991)), ("EP03", range(10, 31))):
        folder = root / "CASME2_RAW_selected" / "sub01" / clip
        folder.mkdir(parents=True)
        for number in numbers:
            (folder / f"img{number}.jpg").write_bytes(b"x")
    build = build_manifest("casme2", sheet, root, check_frames=True)
    timing = build.frame[["clip_id", "onset", "apex", "offset", "apex_estimated", "timing_repaired"]]
    assert timing.values.tolist() == [
        ["EP01", 1080, 1143, 1150, False, True],
        ["EP02", 1890, 1930, 1990, False, True],
        ["EP03", 10, 12, 30, False, True],
    ]
    assert [p.kind for p in build.problems] == [
        "apex outside onset..offset",
        "onset after offset",
        "offset missing",
    ]
    assert all(p.repair for p in build.problems)
    assert "the apex frame is on disk: offset = last frame on disk 1150" in build.problems[0].reason
    assert (
        "onset is not on disk: onset, offset = first, last frame on disk 1890, 1990"
        in build.problems[1].reason
    )
    assert build.problems[1].original == "onset '4896', apex '1930', offset '1990'"


def test_duplicate_clip_is_reported(tmp_path: Path) -> None:
    row = casme2_row(1, "EP01", 10, 20, 30, "4", "disgust")
    sheet = write_xlsx(tmp_path / "dup.xlsx", [CASME2_HEADER, row, row])
    build = build_manifest("casme2", sheet, None)
    assert len(build.frame) == 1
    assert [str(p).split(": ", 1)[1] for p in build.problems] == [
        "duplicate clip: same subject and clip as row 2; row dropped"
    ]


def test_casme2_frames_on_disk_variant_and_missing(tmp_path: Path) -> None:
    sheet = write_xlsx(
        tmp_path / "c.xlsx",
        [
            CASME2_HEADER,
            casme2_row(1, "EP02_01f", 46, 59, 86, 12, "happiness"),
            casme2_row(1, "EP03_02", 131, 139, 161, 18, "others"),
            casme2_row(2, "EP05", 10, 12, 20, 4, "disgust"),
        ],
    )
    root = tmp_path / "root"
    clip = root / "Cropped" / "sub01" / "EP02_01f"
    clip.mkdir(parents=True)
    for number in range(46, 87):
        (clip / f"reg_img{number}.jpg").write_bytes(b"x")
    gappy = root / "Cropped" / "sub02" / "EP05"
    gappy.mkdir(parents=True)
    for number in (10, 11, 12, 20):
        (gappy / f"reg_img{number}.jpg").write_bytes(b"x")
    build = build_manifest("casme2", sheet, root, check_frames=True)
    assert list(build.frame["clip_id"]) == ["EP02_01f", "EP05"]
    assert build.frame.iloc[0]["frames_dir"] == "Cropped/sub01/EP02_01f"
    assert build.frame.iloc[0]["frame_pattern"] == "reg_img*.jpg" and build.frame.iloc[1]["n_frames"] == 4
    assert build.problems_by_reason() == {"frames missing": 2}
    assert "no folder" in reasons(build)[0] and str(build.problems[0]).endswith("sub01/EP03_02; row dropped")
    assert reasons(build)[1].startswith(
        "frames missing: 7 of 11 frames missing (10..20): reg_img13.jpg, reg_img14.jpg, reg_img15.jpg, "
        "reg_img16.jpg, reg_img17.jpg and 2 more in "
    )
    assert build.problems[1].outcome == "kept with the 4 frames on disk" and not build.problems[1].repair
    # the manifest check sees the same gaps from a written manifest
    out = tmp_path / "m.csv"
    build_manifest_file("casme2", sheet, root, out)
    frame, problems = check_manifest(out, root)
    assert len(frame) == 3 and len(problems) == 2
    assert all(p.outcome == "" for p in problems)  # a check writes nothing, so it says nothing was kept


def test_demo_style_sheet_with_extra_columns_reads_unchanged(tmp_path: Path) -> None:
    header = CASME2_HEADER + ["true_amplitude_px", "true_onset", "notes"]
    row = casme2_row(3, "EP01_01", 0, 15, 40, "1+2", "surprise") + [1.5, 0, "synthetic"]
    sheet = write_xlsx(tmp_path / "demo.xlsx", [header, row], sheets_before=1)
    build = build_manifest("casme2", sheet, None)
    assert build.problems == []
    assert build.frame.iloc[0][["subject", "au", "label3", "frames_dir"]].tolist() == [
        "3",
        "1+2",
        "surprise",
        "CASME2_RAW_selected/sub03/EP01_01",
    ]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.xlsx", b"", "the file is empty"),
        ("notexcel.xlsx", b"this is not a zip", "not a readable .xlsx workbook"),
        ("picture.png", b"\x89PNG\r\n", "not a spreadsheet (.xlsx, .xls) or CSV file"),
        ("old.xls", b"\xd0\xcf\x11\xe0", "not a readable .xls workbook"),
    ],
)
def test_unreadable_files_are_one_line_user_errors(
    tmp_path: Path, name: str, content: bytes, message: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(UserError, match=re.escape(message)) as info:
        build_manifest("casme2", path, None)
    assert "\n" not in str(info.value) and str(path) in str(info.value)


def test_missing_column_and_wrong_sheet_are_user_errors(tmp_path: Path) -> None:
    no_apex = write_xlsx(
        tmp_path / "noapex.xlsx", [[c for c in CASME2_HEADER if c != "ApexFrame"], [1, "EP01"]]
    )
    with pytest.raises(UserError, match=r"no header row with columns \[Subject, .*ApexFrame"):
        build_manifest("casme2", no_apex, None)
    samm = write_samm_sheet(tmp_path / "samm.xlsx")[0]
    with pytest.raises(UserError, match="looks like the samm sheet.*use --dataset samm"):
        build_manifest("casme2", samm, None)  # a SAMM sheet given as CASME II
    with pytest.raises(UserError, match="is this the CAS\\(ME\\)\\^3 part A sheet"):
        build_manifest("casme3", GT, None)
    with pytest.raises(UserError, match="annotation file not found"):
        build_manifest("casme2", tmp_path / "absent.xlsx", None)
    header_only = write_xlsx(tmp_path / "header.xlsx", [CASME2_HEADER])
    with pytest.raises(UserError, match="no usable casme2 clips"):
        build_manifest("casme2", header_only, None)
    with pytest.raises(UserError, match="unknown dataset"):
        build_manifest("casme9", header_only, None)
    with pytest.raises(UserError, match="GT file not found"):
        build_manifest("casme2", CASME2_2019, None, protocol="megc2019", gt=tmp_path / "absent-gt.csv")


def test_bundled_gt_is_the_official_file() -> None:
    """Without --gt the shipped copy of the official GT is used: the same 145 CASME II rows."""
    bundled = build_manifest("casme2", CASME2_2019, None, protocol="megc2019")
    explicit = build_manifest("casme2", CASME2_2019, None, protocol="megc2019", gt=GT)
    assert bundled.gt_matched == explicit.gt_matched == 145
    assert bundled.frame.equals(explicit.frame)


def test_gt_row_not_in_annotations_is_named(tmp_path: Path) -> None:
    sheet = write_xlsx(
        tmp_path / "c.xlsx", [CASME2_HEADER, casme2_row(1, "EP02_01f", 46, 59, 86, 12, "happiness")]
    )
    gt = tmp_path / "gt.csv"
    gt.write_bytes(b"casme2,sub01,EP02_01f,1\r\ncasme2,sub02,EP09_09,0\r\nsamm,6,006_1_2,0\r\n")
    build = build_manifest("casme2", sheet, None, protocol="megc2019", gt=gt)
    assert (build.gt_rows, build.gt_matched, len(build.frame)) == (2, 1, 1)
    assert [p.row for p in build.problems] == [2]
    assert reasons(build)[0].startswith("GT row not in annotations: casme2,sub02,EP09_09")
    bad_gt = tmp_path / "bad.csv"
    bad_gt.write_text("casme2,sub01,EP02_01f,7\n")
    with pytest.raises(UserError, match="line 1: expected 'db,subject,filename,label'"):
        build_manifest("casme2", sheet, None, protocol="megc2019", gt=bad_gt)


# --- SMIC, CAS(ME)^3, MMEW ---


def make_smic_tree(root: Path) -> None:
    for subject, emotion, clip, frames in [
        ("s1", "negative", "s1_ne_01", range(100, 111)),
        ("s1", "positive", "s1_po_01", range(5, 9)),
        ("s2", "surprise", "s2_sur_01", range(40, 50)),
        ("s2", "surprise", "s2_sur_02", ()),  # empty folder
    ]:
        folder = root / "HS" / subject / "micro" / emotion / clip
        folder.mkdir(parents=True)
        for number in frames:
            (folder / f"reg_image{number:06d}.bmp").write_bytes(b"x")
    (root / "HS" / "s1" / "micro" / "negative" / "s1_ne_01" / "Thumbs.db").write_bytes(b"x")


def test_smic_folder_tree(tmp_path: Path) -> None:
    make_smic_tree(tmp_path)
    frame, problems = read_dataset("smic", None, tmp_path)
    assert list(frame["clip_id"]) == ["s1_ne_01", "s1_po_01", "s2_sur_01"]
    first = frame.iloc[0]
    assert (first["onset"], first["apex"], first["offset"], first["n_frames"]) == (100, 105, 110, 11)
    assert first["apex_estimated"] and first["fps"] == 100.0 and first["au"] == ""
    assert (
        first["frames_dir"] == "HS/s1/micro/negative/s1_ne_01" and first["frame_pattern"] == "reg_image*.bmp"
    )
    assert list(frame["label3"]) == ["negative", "positive", "surprise"]
    assert [p.reason.split(":")[0] for p in problems] == ["frames missing"]
    gt = tmp_path / "gt.csv"
    gt.write_bytes(b"smic,s01,s01_ne_01,0\r\nsmic,s02,s02_sur_01,2\r\nsmic,s03,s03_po_09,1\r\n")
    build = build_manifest("smic", None, tmp_path, protocol="megc2019", gt=gt)
    assert list(build.frame["clip_id"]) == ["s1_ne_01", "s2_sur_01"] and build.gt_matched == 2
    assert "s03_po_09" in reasons(build)[0]
    with pytest.raises(UserError, match="no SMIC-HS tree"):
        build_manifest("smic", None, tmp_path / "HS" / "s1")


def test_casme3_repeated_filenames_get_unique_clip_ids(tmp_path: Path) -> None:
    header = ["Subject", "Filename", "Onset", "Apex", "Offset", "AU", "Objective class", "emotion"]
    sheet = write_xlsx(
        tmp_path / "cas(me)3_part_A_ME_label_JpgIndex_v2.xlsx",
        [
            header,
            ["spNO.1", "b", 175, 180, 190, "L12", 1, "happy"],
            ["spNO.1", "b", 300, 305, 312, "4+7", 2, "disgust"],
        ],
    )
    root = tmp_path / "root"
    color = root / "part_A" / "spNO.1" / "b" / "color"
    color.mkdir(parents=True)
    for number in range(170, 195):
        (color / f"{number}.jpg").write_bytes(b"x")
    build = build_manifest("casme3", sheet, root, check_frames=True)
    assert list(build.frame["clip_id"]) == ["b_175"]
    assert build.frame.iloc[0]["frames_dir"] == "part_A/spNO.1/b/color" and build.frame.iloc[0]["fps"] == 30.0
    assert build.frame.iloc[0]["label3"] == "positive"
    assert [str(p).split(": ", 1)[1] for p in build.problems] == [
        f"frames missing: no '*.jpg' frames 300..312 in {color}; row dropped"
    ]
    assert list(build_manifest("casme3", sheet, None).frame["clip_id"]) == ["b_175", "b_300"]


def test_mmew_sheet(tmp_path: Path) -> None:
    header = [
        "Subject",
        "Filename",
        "OnsetFrame",
        "ApexFrame",
        "OffsetFrame",
        "Action Units",
        "Estimated Emotion",
    ]
    sheet = write_xlsx(
        tmp_path / "MMEW_Micro_Exp.xlsx",
        [header + ["remarks"], ["S01", "S01-01-001", 1, 9, 20, "R12", "happiness", ""]],
    )
    root = tmp_path / "mmew"
    (root / "Micro_Expression" / "Happiness" / "S01-01-001").mkdir(parents=True)
    build = build_manifest("mmew", sheet, root)
    row = build.frame.iloc[0]
    assert row["frames_dir"] == "Micro_Expression/Happiness/S01-01-001" and row["label3"] == "positive"
    assert row["subject"] == "S01" and row["fps"] == 90.0


def test_mmew_suffix_laterality(tmp_path: Path) -> None:
    header = [
        "Subject",
        "Filename",
        "OnsetFrame",
        "ApexFrame",
        "OffsetFrame",
        "Action Units",
        "Estimated Emotion",
    ]
    rows = [header] + [
        ["S02", f"S02-01-00{i}", 1, 9, 20, au, "disgust"] for i, au in enumerate(["12L", "4R+10R", "L12"])
    ]
    build = build_manifest("mmew", write_xlsx(tmp_path / "MMEW_Micro_Exp.xlsx", rows), None)
    assert build.problems == [] and list(build.frame["au"]) == ["L12", "R4+R10", "L12"]


CASME3_HEADER = ["Subject", "Filename", "Onset", "Apex", "Offset", "AU", "Objective class", "emotion"]
# Rows as the v2 JpgIndex sheet stores them (every cell text) with the official file's kinds of typo.
CASME3_ROWS = [
    ["spNO.1", "a", "100", "110", "130", "4+L10", "1", "disgust"],
    ["spNO.1", "b", "175", "180", "0", "12R", "2", "happy"],  # offset 0
    ["spNO.2", "a", "40", "70", "60", "T23", "3", "anger"],  # apex outside onset..offset
    ["spNO.2", "c", "500", "506", "520", "1+2", "4", "surprise"],
]


def _check_casme3(build) -> None:
    frame = build.frame.set_index("clip_id")
    assert len(frame) == 4 and build.errors == []
    # offset 0 → onset + the sheet's typical length, the median of its consistent rows' 30 and 20 frames
    assert frame.loc["b_175", ["offset", "timing_repaired"]].tolist() == [175 + 25, True]
    assert frame.loc["a_40", ["apex", "apex_estimated", "timing_repaired"]].tolist() == [50, True, True]
    assert frame.loc["a_40", "au"] == "T23" and frame.loc["b_175", "au"] == "R12"
    assert list(frame["label3"]) == ["negative", "positive", "negative", "surprise"]


def test_casme3_v2_text_cells_and_repairs(tmp_path: Path) -> None:
    sheet = write_xlsx(tmp_path / "cas(me)3_part_A_ME_label_JpgIndex_v2.xlsx", [CASME3_HEADER, *CASME3_ROWS])
    build = build_manifest("casme3", sheet, None)
    _check_casme3(build)
    assert [p.kind for p in build.problems] == ["offset missing", "apex outside onset..offset"]


def test_casme3_v1_xls(tmp_path: Path) -> None:
    """The v1 label file is an old binary .xls (numbers as numbers), read through python-calamine."""
    import xlwt  # a test extra that writes .xls; reading goes through python-calamine, a dependency

    workbook = xlwt.Workbook()
    sheet = workbook.add_sheet("Sheet1")
    for r, row in enumerate([CASME3_HEADER, *CASME3_ROWS]):
        for c, value in enumerate(row):
            sheet.write(r, c, int(value) if r and c in (2, 3, 4, 6) else value)
    path = tmp_path / "cas(me)3_part_A_ME_label_v1.xls"
    workbook.save(str(path))
    _check_casme3(build_manifest("casme3", path, None))


DFME_HEADER = ["Subject", "Filename", "OnsetFrame", "ApexFrame", "OffsetFrame", "Emotion", "AU", "Fps"]


def test_dfme_sheet_frame_rates_codes_and_folders(tmp_path: Path) -> None:
    rows = [
        DFME_HEADER,
        [1, "1_1_1", 10, 60, 110, "happiness", "AU6+AU12", 500],
        [1, "1_2_1", 5, 30, 65, "disgust", "4+M57+AD19", 300],
        [2, "2_1_1", 3, 20, 43, "surprise", "1+2+5B", 200],
        [2, "2_1_2", 7, 9, 0, "fear", "4+20", 200],  # offset 0: the 200 fps rows' typical length (40)
        [3, "3_1_1", 1, 5, 9, "contempt", "R14", None],  # no frame rate
    ]
    sheet = write_xlsx(tmp_path / "DFME_label.xlsx", rows)
    root = tmp_path / "dfme"
    for part, clip, numbers in (("PART_A", "1_1_1", range(10, 111)), ("PART_B", "1_2_1", range(5, 66))):
        folder = root / part / clip
        folder.mkdir(parents=True)
        for number in numbers:
            (folder / f"{number:05d}.png").write_bytes(b"x")
    build = build_manifest("dfme", sheet, root)
    frame = build.frame.set_index("clip_id")
    assert list(frame["fps"]) == [500.0, 300.0, 200.0, 200.0, 200.0]
    assert frame.loc["1_1_1", ["frames_dir", "frame_pattern"]].tolist() == ["PART_A/1_1_1", "*.png"]
    assert frame.loc["2_1_1", "frames_dir"] == "2_1_1"  # not on disk: the Filename itself
    assert frame.loc["1_2_1", "au"] == "4+M57+AD19" and parse_au("4+M57+AD19").numbers == {4}
    assert frame.loc["1_1_1", "au"] == "6+12" and frame.loc["2_1_2", "offset"] == 7 + 40
    assert frame.loc["3_1_1", "label3"] == "negative" and frame.loc["1_1_1", "person"] == "dfme/1"
    assert [(p.clip, p.kind, p.repair) for p in build.problems] == [
        ("2_1_2", "offset missing", True),
        ("3_1_1", "fps missing", False),
    ]
    assert build.problems[1].outcome == "kept with 200 fps"  # the sheet's most common rate
    checked = build_manifest("dfme", sheet, root, check_frames=True)
    assert list(checked.frame["clip_id"]) == ["1_1_1", "1_2_1"] and checked.frame["n_frames"].tolist() == [
        101,
        61,
    ]


CASME1_HEADER = ["Subject", "Filename", "OnsetF", "ApexF1", "ApexF2", "OffsetF", "Duration", "AU", "Emotion"]


def test_casme1_two_sections_and_backslash_cells(tmp_path: Path) -> None:
    workbook = openpyxl.Workbook()
    section_a = workbook.active
    section_a.title = "Section A"
    for row in (
        CASME1_HEADER,
        [1, "EP01_5", 1, 12, "\\", 30, 30, "4+R10", "disgust"],
        [1, "EP02_1", 1, "\\", 15, 25, 25, "12", "amusement"],  # apex only in ApexF2
    ):
        section_a.append(row)
    section_b = workbook.create_sheet("Section B")
    for row in (
        CASME1_HEADER,
        [8, "EP03_2", 4, "\\", "\\", 40, 37, "1+2", "surprise"],  # no apex at all
        [8, "EP05_6", 3, 9, "\\", "\\", None, "14", "repression"],  # no offset
    ):
        section_b.append(row)
    path = tmp_path / "CASME_label.xlsx"
    workbook.save(path)
    root = tmp_path / "casme1"
    (root / "CASME_B" / "Section B").mkdir(parents=True)  # the B section one level down
    build = build_manifest("casme1", path, root)
    frame = build.frame.set_index("clip_id")
    assert list(frame.index) == ["EP01_5", "EP02_1", "EP03_2", "EP05_6"] and set(frame["fps"]) == {60.0}
    assert frame.loc["EP01_5", "frames_dir"] == "Section A/sub01/EP01_5"
    assert frame.loc["EP03_2", "frames_dir"] == "CASME_B/Section B/sub08/EP03_2"
    assert frame.loc["EP02_1", ["apex", "apex_estimated", "label3"]].tolist() == [15, False, "positive"]
    assert frame.loc["EP03_2", ["apex", "apex_estimated"]].tolist() == [22, True]
    assert frame.loc["EP05_6", "timing_repaired"] and frame.loc["EP01_5", "au"] == "4+R10"
    kinds = [(p.file.endswith("'Section B'"), p.kind) for p in build.problems]
    assert kinds == [(True, "apex missing"), (True, "offset missing")]
    assert "cell '\\\\'" in build.problems[0].reason


# Section A as the real workbook lays it out: subject 6's EP02_5 is one video in which several MEs are coded.
CASME1_SECTION_A = [
    CASME1_HEADER,
    [6, "EP02_5", 11, 20, "\\", 40, 30, "4", "disgust"],
    [6, "EP02_5", 61, "\\", 75, 90, 30, "14", "comtempt"],  # the sheet's typo; apex in ApexF2
    [6, "EP02_5", 101, 110, "\\", "\\", None, "4+7", "repression"],  # no offset
    [6, "EP02_5", 61, "\\", 75, 90, 30, "14", "comtempt"],  # the same ME coded twice
    [6, "EP01_12", 5, 9, "\\", "\\", None, "1+2", "surprise"],  # a folder with one ME, no offset
    [1, "EP01_5", 1, 12, "\\", 30, 30, "4+R10", "disgust"],
]


def _casme1_frames(root: Path) -> None:
    for clip, last in (("EP02_5", 200), ("EP01_12", 50)):
        folder = root / "Section A" / "sub06" / clip
        folder.mkdir(parents=True)
        for number in range(1, last + 1):
            (folder / f"img{number}.jpg").write_bytes(b"x")
    (root / "Section A" / "sub01" / "EP01_5").mkdir(parents=True)
    for number in range(1, 31):
        (root / "Section A" / "sub01" / "EP01_5" / f"img{number}.jpg").write_bytes(b"x")


def test_casme1_every_me_of_a_multi_me_folder_is_its_own_clip(tmp_path: Path) -> None:
    workbook = openpyxl.Workbook()
    workbook.active.title = "Section A"
    for row in CASME1_SECTION_A:
        workbook.active.append(row)
    path = tmp_path / "CASME_label.xlsx"
    workbook.save(path)
    root = tmp_path / "casme1"
    _casme1_frames(root)
    build = build_manifest("casme1", path, root, check_frames=True)
    frame = build.frame.set_index("clip_id")
    # the typical length is 29 (the consistent rows' median offset − onset)
    assert list(frame.index) == ["EP02_5@11-40", "EP02_5@61-90", "EP02_5@101-130", "EP01_12", "EP01_5"]
    video = frame.loc[["EP02_5@11-40", "EP02_5@61-90", "EP02_5@101-130"]]
    assert set(video["frames_dir"]) == {"Section A/sub06/EP02_5"} and set(video["subject"]) == {"6"}
    assert video[["onset", "apex", "offset"]].values.tolist() == [[11, 20, 40], [61, 75, 90], [101, 110, 130]]
    # the video's folder runs to frame 200: a missing offset in it comes from the typical length, while
    # a folder holding one ME still ends at its last frame on disk
    assert frame.loc["EP01_12", ["offset", "frames_dir"]].tolist() == [50, "Section A/sub06/EP01_12"]
    assert video["n_frames"].tolist() == [30, 30, 30] and frame.loc["EP01_12", "n_frames"] == 46
    for clip_id, row in video.iterrows():
        numbers = [n for n, _ in clip_frames({**row, "clip_id": clip_id}, root)]
        assert numbers == list(range(row["onset"], row["offset"] + 1))
    assert frame.loc["EP02_5@61-90", ["emotion", "label3", "au"]].tolist() == ["contempt", "negative", "14"]
    assert [(p.row, p.clip, p.kind, p.repair) for p in build.problems] == [
        (3, "EP02_5@61-90", "emotion misspelt", True),
        (4, "EP02_5", "offset missing", True),
        (5, "EP02_5@61-90", "emotion misspelt", True),
        (6, "EP01_12", "offset missing", True),
        (5, "EP02_5@61-90", "duplicate clip", False),
    ]
    misspelt = build.problems[0]
    assert misspelt.original == "emotion 'comtempt'" and "'comtempt' read as 'contempt'" in misspelt.reason
    assert "row 3" in build.problems[-1].reason  # the duplicate names the row it repeats


def test_casme1_xls_workbook_keeps_the_sheets_row_numbers(tmp_path: Path) -> None:
    """An .xls copy of the sheet (python-calamine) with a title row and a blank row above the header reads
    like the .xlsx: empty cells are None, and problems give the sheet's own row numbers."""
    import xlwt

    workbook = xlwt.Workbook()
    sheet = workbook.add_sheet("Section A")
    sheet.write(0, 0, "CASME coding")
    for r, row in enumerate(CASME1_SECTION_A, start=2):
        for c, value in enumerate(row):
            if value is not None:
                sheet.write(r, c, value)
    path = tmp_path / "CASME_label.xls"
    workbook.save(str(path))
    build = build_manifest("casme1", path, None)
    assert list(build.frame["clip_id"]) == [
        "EP02_5@11-40",
        "EP02_5@61-90",
        "EP02_5@101-130",
        "EP01_12",
        "EP01_5",
    ]
    assert build.frame["subject"].tolist() == ["6", "6", "6", "6", "1"]
    assert [(p.row, p.kind) for p in build.problems] == [
        (5, "emotion misspelt"),
        (6, "offset missing"),
        (7, "emotion misspelt"),
        (8, "offset missing"),
        (7, "duplicate clip"),
    ]
    assert build.frame.set_index("clip_id").loc["EP01_12", "offset"] == 5 + 29  # no root: the typical length


def test_persons_file_names_the_person_behind_each_subject(tmp_path: Path) -> None:
    persons = tmp_path / "persons.csv"
    persons.write_text("subject,person\n1,P-A\n2,P-A\n")  # one participant filmed as two subjects
    build = build_manifest("casme2", CASME2_2019, None, persons=persons)
    by_subject = dict(zip(build.frame["subject"], build.frame["person"], strict=False))
    assert by_subject["1"] == by_subject["2"] == "P-A" and by_subject["3"] == "casme2/3"
    assert list(build.frame.columns) == list(MANIFEST_COLUMNS)
    persons.write_text("subject,who\n1,P-A\n")
    with pytest.raises(UserError, match="persons file lacks columns"):
        build_manifest("casme2", CASME2_2019, None, persons=persons)
    persons.write_text(
        "subject,person,dataset\n01,P-A,casme2\n006,P-B,samm\n"
    )  # "01" is not how CASME II writes 1
    with pytest.raises(UserError, match="1 subject.s. not in the casme2 annotations, first 'casme2/01'"):
        build_manifest("casme2", CASME2_2019, None, persons=persons)


def test_old_manifest_without_new_columns_reads_with_their_defaults(tmp_path: Path) -> None:
    out = tmp_path / "m.csv"
    build_manifest_file("casme2", CASME2_2019, None, out)
    old = pd.read_csv(out, dtype=str, keep_default_na=False).drop(
        columns=["timing_repaired", "au_notes", "person"]
    )
    old.to_csv(out, index=False)
    frame = read_manifest(out)
    assert list(frame.columns) == list(MANIFEST_COLUMNS)
    assert not frame["timing_repaired"].any() and set(frame["au_notes"]) == {""}
    assert frame["person"].iloc[0] == "casme2/1"


def test_manifest_file_round_trip_and_problem_list(tmp_path: Path) -> None:
    out = tmp_path / "out" / "casme2.csv"
    build = build_manifest_file("casme2", CASME2_2019, None, out)
    frame = read_manifest(out)
    assert len(frame) == 255 and frame["subject"].iloc[0] == "1" and frame["apex_estimated"].sum() == 1
    with problems_path(out).open() as handle:
        listed = list(csv.DictReader(handle))
    assert [(int(r["row"]), r["clip"], r["severity"]) for r in listed] == [(31, "EP12_01f", "repair")]
    assert listed[0]["outcome"] == "kept with the middle frame 291 as apex (apex_estimated=True)"
    summary = build.summary()
    assert summary["rows"] == 255 and summary["problems_by_reason"] == {"apex missing": 1}
    assert (summary["repairs"], summary["errors"], summary["timing_repaired"]) == (1, 0, 0)
    # a clean build still writes the problems file: the header alone
    clean = tmp_path / "megc.csv"
    build_manifest_file("casme2", CASME2_2019, None, clean, protocol="megc2019")
    assert problems_path(clean).read_text().splitlines() == [",".join(PROBLEM_COLUMNS)]


def test_demo_corpus_sheet_reads_unchanged_and_matches_its_truth(demo_corpus) -> None:
    from augmenter.demo.corpus import read_demo_truth

    build = build_manifest(
        "casme2", demo_corpus.annotations, demo_corpus.root, check_frames=True, strict=True
    )
    truth = read_demo_truth(demo_corpus.root)
    assert len(build.frame) == len(truth) == demo_corpus.clips
    for (_, row), clip in zip(build.frame.iterrows(), truth, strict=True):
        assert row["subject"] == str(int(clip.subject)) and row["clip_id"] == clip.filename
        assert (row["onset"], row["apex"], row["offset"]) == (clip.onset, clip.apex, clip.offset)
        assert row["n_frames"] == clip.offset - clip.onset + 1  # every frame found on disk
        assert row["au"] == parse_au(clip.aus).canonical and row["label3"] == clip.label3
