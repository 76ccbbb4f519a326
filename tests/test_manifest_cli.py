"""`augmenter manifest build|check` through the installed console script: files, summary, exit codes."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest

from augmenter.datasets import PROBLEM_COLUMNS
from augmenter.manifest import read_manifest
from cli import main

REAL = Path(__file__).parent / "data"
AUGMENTER = Path(sys.executable).parent / "augmenter"


def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """In-process through `cli.main`, the console script's entry point: exit code and stderr as users see."""
    argv, stderr = sys.argv, sys.stderr
    sys.argv, sys.stderr = ["augmenter", *map(str, args)], io.StringIO()
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = int(exc.code or 0)
    finally:
        captured = sys.stderr.getvalue()
        sys.argv, sys.stderr = argv, stderr
    return subprocess.CompletedProcess(args, code, "", captured)


def run_script(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """The installed `augmenter` console script in its own process."""
    return subprocess.run([str(AUGMENTER), *map(str, args)], capture_output=True, text=True, timeout=120)


def test_build_real_casme2_sheet_writes_manifest_and_summary(tmp_path: Path) -> None:
    out = tmp_path / "casme2.csv"
    result = run(
        "manifest",
        "build",
        "--dataset",
        "casme2",
        "--annotations",
        REAL / "CASME2-coding-20190701.xlsx",
        "--out",
        out,
    )
    assert result.returncode == 0, result.stderr
    assert len(read_manifest(out)) == 255
    assert (tmp_path / "casme2.problems.csv").is_file()
    assert "rows kept" in result.stderr and "255" in result.stderr and "apex missing" in result.stderr


def test_build_with_megc2019_protocol(tmp_path: Path) -> None:
    out = tmp_path / "megc.csv"
    result = run(
        "manifest",
        "build",
        "--dataset",
        "casme2",
        "--annotations",
        REAL / "casme2_annotations_2015_csv_export.csv",
        "--protocol",
        "megc2019",
        "--gt",
        REAL / "megc2019_combined_3class_gt.csv",
        "--out",
        out,
    )
    assert result.returncode == 0, result.stderr
    frame = read_manifest(out)
    assert frame["label3"].value_counts().to_dict() == {"negative": 88, "positive": 32, "surprise": 25}
    assert "145 / 145" in result.stderr
    # a clean build still writes its problems file, as the README says: the header alone
    assert (tmp_path / "megc.problems.csv").read_text().splitlines() == [",".join(PROBLEM_COLUMNS)]


@pytest.mark.parametrize(
    ("content", "name", "message"),
    [
        (b"not a workbook", "sheet.xlsx", "not a readable .xlsx workbook"),
        (b"", "sheet.csv", "the file is empty"),
        (b"a,b,c\n1,2,3\n", "sheet.csv", "no header row with columns"),
    ],
)
def test_bad_files_exit_2_with_one_line(tmp_path: Path, content: bytes, name: str, message: str) -> None:
    sheet = tmp_path / name
    sheet.write_bytes(content)
    out = tmp_path / "out.csv"
    out.write_text("previous manifest\n")
    result = run("manifest", "build", "--dataset", "casme2", "--annotations", sheet, "--out", out)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0] and name in lines[0]
    assert out.read_text() == "previous manifest\n"  # a failed build never touches what was there


def test_strict_accepts_documented_repairs_and_stops_at_the_first_error(tmp_path: Path) -> None:
    out = tmp_path / "out.csv"
    sheet = REAL / "CASME2-coding-20190701.xlsx"  # its one "/" apex is a documented repair, not an error
    result = run("manifest", "build", "--dataset", "casme2", "--strict", "--out", out, "--annotations", sheet)
    assert result.returncode == 0, result.stderr
    assert len(read_manifest(out)) == 255 and "1 documented repair(s), 0 error(s)" in result.stderr

    bad = tmp_path / "bad.csv"
    bad.write_text(
        "subject,filename,onset,apex,offset,emotion,action_units\n"
        "1,EP01,10,/,30,disgust,4\n"  # a repair
        "1,EP02,10,20,30,grumpy,4\n"  # an error: the first one --strict stops at
        "1,EP03,10,20,30,disgust,4+zz\n"
    )
    out = tmp_path / "strict.csv"
    result = run("manifest", "build", "--dataset", "casme2", "--strict", "--out", out, "--annotations", bad)
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert f"{bad} row 3 (EP02): unknown emotion: 'grumpy'" in line
    assert "stopped at the first of 2 error(s), besides 1 documented repair(s); nothing written" in line
    assert "kept" not in line  # nothing was written, so nothing was kept
    assert not out.exists() and not (tmp_path / "strict.problems.csv").exists()


def test_persons_option(tmp_path: Path) -> None:
    persons = tmp_path / "persons.csv"
    persons.write_text("subject,person\n1,alice\n2,alice\n")
    out = tmp_path / "m.csv"
    sheet = REAL / "CASME2-coding-20190701.xlsx"
    result = run(
        "manifest", "build", "--dataset", "casme2", "--annotations", sheet, "--persons", persons, "--out", out
    )
    assert result.returncode == 0, result.stderr
    frame = read_manifest(out)
    assert set(frame.loc[frame["subject"].isin(["1", "2"]), "person"]) == {"alice"}
    assert frame["person"].nunique() == 25


def test_check_reports_missing_frames(tmp_path: Path) -> None:
    out = tmp_path / "casme2.csv"
    sheet = REAL / "CASME2-coding-20190701.xlsx"
    assert (
        run("manifest", "build", "--dataset", "casme2", "--annotations", sheet, "--out", out).returncode == 0
    )
    root = tmp_path / "root"
    clip = root / "CASME2_RAW_selected" / "sub01" / "EP02_01f"
    clip.mkdir(parents=True)
    result = run("manifest", "check", out, "--root", root)
    assert result.returncode == 1
    assert "255 clips checked, 255 problem(s)" in result.stderr
    assert "no 'img*.jpg' frames 46..86" in result.stderr
    for number in range(46, 87):
        if number != 60:
            (clip / f"img{number}.jpg").write_bytes(b"x")
    result = run("manifest", "check", out, "--root", root)
    assert "EP02_01f): frames missing: 1 of 41 frames missing (46..86): img60.jpg in " in result.stderr
    assert "255 problem(s)" in result.stderr and "kept" not in result.stderr  # 254 absent, 1 gappy


def test_installed_console_script_exit_codes(tmp_path: Path) -> None:
    missing = tmp_path / "absent.xlsx"
    result = run_script(
        "manifest", "build", "--dataset", "samm", "--annotations", missing, "--out", tmp_path / "o.csv"
    )
    assert result.returncode == 2
    expected = f"error: {missing}: annotation file not found; give --annotations the SAMM sheet"
    assert result.stderr.strip().splitlines() == [f"{expected} (SAMM_Micro_FACS_Codes_v2.xlsx) file"]


def test_unknown_option_is_a_usage_error_not_a_traceback() -> None:
    result = run_script("evaluate", "--no-such-option")
    assert result.returncode == 2
    assert "No such option: --no-such-option" in result.stderr
    assert "Traceback" not in result.stderr and "╭" not in result.stderr
