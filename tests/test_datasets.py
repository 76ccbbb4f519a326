"""Dataset readers on the real annotation files and on hand-made sheets/trees, one per problem kind."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import openpyxl
import pytest

from augmenter.au import parse_au
from augmenter.datasets import (
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


def write_samm_sheet(path: Path) -> tuple[Path, int]:
    """An official-format SAMM sheet: 13 preamble rows, the header, 159 clips (the GT's 133 + 26 "Other")."""
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
        rows.append(
            [
                subject,
                row.filename,
                1,
                onset,
                onset + 20,
                onset + 60,
                61,
                "Micro - 1/2",
                "R12+A2",
                emotion,
                1,
                "",
            ]
        )
    subjects = sorted({row.subject for row in gt})
    for extra in range(159 - len(gt)):
        subject = subjects[extra % len(subjects)].zfill(3)
        rows.append(
            [subject, f"{subject}_9_{extra}", 2, 10, 20, 40, 31, "Micro - 1/2", "4/7", "Other", 7, ""]
        )
    return write_xlsx(path, rows), len(gt)


def test_samm_official_format_sheet(tmp_path: Path) -> None:
    sheet, gt_count = write_samm_sheet(tmp_path / "SAMM_Micro_FACS_Codes_v2.xlsx")
    build = build_manifest("samm", sheet, None)
    assert len(build.frame) == 159 and build.problems == []
    assert set(build.frame["subject"].str.len()) == {3}
    row = build.frame[build.frame["clip_id"] == "006_1_2"].iloc[0]
    assert row["subject"] == "006" and row["frames_dir"] == "SAMM/006/006_1_2" and row["fps"] == 200.0
    assert row["au"] == "A2+R12"
    assert (build.frame["emotion"] == "Other").sum() == 26

    protocol = build_manifest("samm", sheet, None, protocol="megc2019", gt=GT)
    assert gt_count == 133 and (protocol.gt_rows, protocol.gt_matched) == (133, 133)
    assert protocol.class_counts() == {"negative": 92, "positive": 26, "surprise": 15, "": 0}


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
    assert reasons(build)[0].startswith(
        "offset missing: cell '?'; kept with the clip's last frame on disk, 5580"
    )
    assert reasons(build)[1] == "offset missing: cell '-1'; row dropped"
    assert [n for n, _ in clip_frames(row, root)][:2] == [5562, 5563]


# --- malformed sheets: one per problem kind ---


@pytest.mark.parametrize(
    ("row", "kind", "detail", "kept"),
    [
        (
            casme2_row(1, "EP01", 10, "/", 30, "4", "disgust"),
            "apex missing",
            "cell '/'; kept with the middle frame 20",
            True,
        ),
        (casme2_row(1, "EP01", 10, None, 30, "4", "disgust"), "apex missing", "cell ''", True),
        (casme2_row(1, "EP01", 10, -1, 30, "4", "disgust"), "apex missing", "cell '-1'", True),
        (
            casme2_row(1, "EP01", 40, 45, 30, "4", "disgust"),
            "onset after offset",
            "onset 40 > offset 30; row dropped",
            False,
        ),
        (
            casme2_row(1, "EP01", 10, 35, 30, "4", "disgust"),
            "apex outside onset..offset",
            "apex 35 not in 10..30",
            False,
        ),
        (casme2_row(1, "EP01", "/", 20, 30, "4", "disgust"), "onset missing", "cell '/'; row dropped", False),
        (
            casme2_row(1, "EP01", 10, 20, "x", "4", "disgust"),
            "offset missing",
            "cell 'x' is not a frame number; row dropped",
            False,
        ),
        (
            casme2_row(1, "EP01", 10, 20, 30, "4", "grumpy"),
            "unknown emotion",
            "'grumpy'; kept with label3 ''",
            True,
        ),
        (
            casme2_row(1, "EP01", 10, 20, 30, "4+zz", "disgust"),
            "unreadable AU",
            "unreadable AU term 'ZZ'",
            True,
        ),
        (
            casme2_row("abc", "EP01", 10, 20, 30, "4", "disgust"),
            "bad subject",
            "'abc' is not a subject number",
            False,
        ),
        (casme2_row(1, None, 10, 20, 30, "4", "disgust"), "missing filename", "empty Filename cell", False),
    ],
)
def test_each_problem_kind_is_reported_with_its_row(
    tmp_path: Path, row: list[object], kind: str, detail: str, kept: bool
) -> None:
    good = casme2_row(2, "EP02", 1, 5, 9, "12", "happiness")
    sheet = write_xlsx(tmp_path / "casme2.xlsx", [CASME2_HEADER, good, row])
    build = build_manifest("casme2", sheet, None)
    assert len(build.problems) == 1
    problem = build.problems[0]
    assert problem.row == 3 and problem.reason.startswith(f"{kind}: ") and detail in problem.reason
    assert str(problem).startswith(f"{sheet} row 3")
    assert len(build.frame) == (2 if kept else 1)
    with pytest.raises(UserError, match=f"row 3.*{kind}.*--strict"):
        build_manifest("casme2", sheet, None, strict=True)


def test_duplicate_clip_is_reported(tmp_path: Path) -> None:
    row = casme2_row(1, "EP01", 10, 20, 30, "4", "disgust")
    sheet = write_xlsx(tmp_path / "dup.xlsx", [CASME2_HEADER, row, row])
    build = build_manifest("casme2", sheet, None)
    assert len(build.frame) == 1
    assert reasons(build) == ["duplicate clip: same subject and clip as row 2; dropped"]


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
    assert "no folder" in reasons(build)[0] and "sub01/EP03_02; row dropped" in reasons(build)[0]
    assert "4 of 11 frames 10..20" in reasons(build)[1]
    # the manifest check sees the same gaps from a written manifest
    out = tmp_path / "m.csv"
    build_manifest_file("casme2", sheet, root, out)
    frame, problems = check_manifest(out, root)
    assert len(frame) == 3 and len(problems) == 2


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
        ("picture.png", b"\x89PNG\r\n", "not a spreadsheet (.xlsx) or CSV file"),
        ("old.xls", b"\xd0\xcf\x11\xe0", "save it as .xlsx"),
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
    assert reasons(build) == [f"frames missing: no '*.jpg' frames 300..312 in {color}; row dropped"]
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


def test_manifest_file_round_trip_and_problem_list(tmp_path: Path) -> None:
    out = tmp_path / "out" / "casme2.csv"
    build = build_manifest_file("casme2", CASME2_2019, None, out)
    frame = read_manifest(out)
    assert len(frame) == 255 and frame["subject"].iloc[0] == "1" and frame["apex_estimated"].sum() == 1
    with problems_path(out).open() as handle:
        listed = list(csv.DictReader(handle))
    assert [(int(r["row"]), r["clip"]) for r in listed] == [(31, "EP12_01f")]
    summary = build.summary()
    assert summary["rows"] == 255 and summary["problems_by_reason"] == {"apex missing": 1}


def test_demo_corpus_sheet_reads_unchanged_and_matches_its_truth(demo_corpus) -> None:
    from augmenter.demo_data import read_demo_truth

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
