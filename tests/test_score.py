"""Self-reenactment scores on the real demo corpus: one table on one clip set, by person, resumable."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from augmenter.errors import UserError
from augmenter.face.dlib_backend import DlibFaceBackend
from augmenter.flow import AU_REGIONS, au_region_masks
from augmenter.generators.landmark_tps import LandmarkTPSGenerator
from augmenter.manifest import read_manifest, row_fold_key, row_person
from augmenter.score import (
    COPY_ONSET,
    METRICS,
    clips_path_for,
    crop_face_box,
    flow_cosine,
    parse_generator_option,
    person_bootstrap_ci,
    score_generator,
    score_generators,
)

SUMMARY_KEYS = {"name", *METRICS, "n_clips", "ci_flow_epe", "ci_flow_epe_au", "specs", "held_out"}
SUBJECTS = ("4", "5", "6")  # 9 clips; subjects 1–3 are where landmark-tps' defaults may be looked at


def _rows_of(manifest: Path, subjects: tuple[str, ...]) -> list:
    return [row for _, row in read_manifest(manifest).iterrows() if row["subject"].lstrip("0") in subjects]


def _persons(manifest: Path, subjects: tuple[str, ...]) -> list[str]:
    return sorted({row_person(row) for row in _rows_of(manifest, subjects)})


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _whole_lines(path: Path) -> list[dict]:
    """The per-clip lines that parse (a torn one, from a killed run, does not)."""
    lines = []
    for line in path.read_text().splitlines():
        try:
            lines.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return lines


class _Learned(LandmarkTPSGenerator):
    """landmark-tps dressed as a learned generator with a recorded training set (the leakage rule's input)."""

    kind = "learned"
    training_free = False

    def __init__(self, persons: tuple[str, ...] = (), subjects: tuple[str, ...] = ()) -> None:
        super().__init__(size=64)
        self.training_persons, self.training_subjects = persons, subjects
        self.checksum = "learned-" + ",".join(persons + subjects)


@pytest.fixture(scope="module")
def table(demo_manifest: tuple[Path, Path], dlib_backend: DlibFaceBackend, tmp_path_factory) -> tuple:
    """landmark-tps on the 9 clips of 3 persons, with per-clip results on disk."""
    manifest, root = demo_manifest
    out = tmp_path_factory.mktemp("scores") / "scores.json"
    document = score_generators(
        ["landmark-tps"],
        manifest,
        root,
        persons=_persons(manifest, SUBJECTS),
        size=64,
        backend=dlib_backend,
        out=out,
        progress=False,
    )
    return document, out


def test_one_table_on_one_clip_set(table: tuple) -> None:
    document, out = table
    assert json.loads(out.read_text()) == json.loads(json.dumps(document))
    assert document["unit"] == "person" and document["n_clips"] == 9 and len(document["persons"]) == 3
    assert set(document["rows"]) == {"landmark-tps", COPY_ONSET}
    for summary in document["rows"].values():
        assert set(summary) == SUMMARY_KEYS and summary["n_clips"] == 9
        for metric in ("l1", "akd", "aed", "flow_epe", "flow_epe_au", *(f"flow_epe_{r}" for r in AU_REGIONS)):
            assert np.isfinite(summary[metric]), (summary["name"], metric)
        low, high = summary["ci_flow_epe"]
        assert low <= summary["flow_epe"] <= high
    assert document["generator"] == document["rows"]["landmark-tps"]
    assert document["copy_onset"] == document["rows"][COPY_ONSET]
    assert document["rows"]["landmark-tps"]["held_out"] == "training-free"
    lines = _lines(clips_path_for(out))
    clips = {
        row: {line["clip"] for line in lines if line["row"] == row} for row in ("landmark-tps", COPY_ONSET)
    }
    assert len(lines) == 18 and clips["landmark-tps"] == clips[COPY_ONSET] and len(clips[COPY_ONSET]) == 9


def test_landmark_tps_moves_better_than_copy_onset(table: tuple) -> None:
    generator, copy = table[0]["rows"]["landmark-tps"], table[0]["rows"][COPY_ONSET]
    assert generator["flow_epe"] < 0.6 * copy["flow_epe"], (generator, copy)
    assert generator["flow_epe_au"] < copy["flow_epe_au"], (generator, copy)
    assert copy["flow_cos"] == 0.0  # no motion has no direction
    assert generator["flow_cos"] > 0.7
    assert generator["l1"] < copy["l1"] and generator["akd"] < copy["akd"]


def test_rerun_resumes_and_a_new_row_scores_only_itself(
    table: tuple, demo_manifest: tuple[Path, Path], dlib_backend: DlibFaceBackend, tmp_path: Path
) -> None:
    document, original = table
    manifest, root = demo_manifest
    persons = _persons(manifest, SUBJECTS)
    out = tmp_path / "scores.json"
    clips = clips_path_for(out)
    lines = clips_path_for(original).read_text().splitlines(keepends=True)
    # A run killed while writing its last line: that line is torn and its clip must be scored again.
    clips.write_text("".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2])
    again = score_generators(
        ["landmark-tps"],
        manifest,
        root,
        persons=persons,
        size=64,
        backend=dlib_backend,
        out=out,
        progress=False,
    )
    assert again["rows"] == json.loads(json.dumps(document["rows"]))
    assert len(_whole_lines(clips)) == 18
    raw = LandmarkTPSGenerator(size=64, tracking="landmarks", sigma_frames=0.0, dead_band_px=0.0)
    both = score_generators(
        ["landmark-tps", ("tps-raw-dlib", [raw])],
        manifest,
        root,
        persons=persons,
        size=64,
        backend=dlib_backend,
        out=out,
        progress=False,
    )
    new = _whole_lines(clips)[18:]
    assert {line["row"] for line in new} == {"tps-raw-dlib"} and len(new) == 9  # nothing else redone
    assert both["rows"]["landmark-tps"] == again["rows"]["landmark-tps"]
    assert both["rows"]["tps-raw-dlib"]["n_clips"] == both["rows"][COPY_ONSET]["n_clips"] == 9
    # Raw dlib tracks jitter as much as the motion: worse than the flow-tracked default.
    assert both["rows"]["tps-raw-dlib"]["flow_epe"] > both["rows"]["landmark-tps"]["flow_epe"]


def test_clips_of_seen_persons_are_refused_and_halves_cover_each_other(
    demo_manifest: tuple[Path, Path], dlib_backend: DlibFaceBackend, tmp_path: Path
) -> None:
    manifest, root = demo_manifest
    rows = _rows_of(manifest, ("5", "6"))
    person_5 = row_person(next(r for r in rows if r["subject"].lstrip("0") == "5"))
    person_6 = row_person(next(r for r in rows if r["subject"].lstrip("0") == "6"))
    persons = [person_5, person_6]
    with pytest.raises(UserError, match=f"trained on person {person_6}"):
        score_generators(
            [_Learned(persons=(person_6,))], manifest, root, persons=persons, backend=dlib_backend
        )
    subject_6 = row_fold_key(next(r for r in rows if row_person(r) == person_6))
    with pytest.raises(UserError, match="trained on person"):  # no persons recorded: by subject
        score_generators(
            [_Learned(subjects=(subject_6,))], manifest, root, persons=persons, backend=dlib_backend
        )
    with pytest.raises(UserError, match="no clips of persons"):
        score_generators(["landmark-tps"], manifest, root, persons=["nobody"], size=64, backend=dlib_backend)
    # Two halves in one row: each clip goes to the generator that never saw its person.
    half_a, half_b = _Learned(persons=(person_5,)), _Learned(persons=(person_6,))
    out = tmp_path / "halves.json"
    document = score_generators(
        [("halves", [half_a, half_b])],
        manifest,
        root,
        persons=persons,
        backend=dlib_backend,
        out=out,
        progress=False,
    )
    assert document["rows"]["halves"]["held_out"] == "persons"
    used = {
        (line["person"], line["checksum"]) for line in _lines(clips_path_for(out)) if line["row"] == "halves"
    }
    assert used == {(person_5, half_b.checksum), (person_6, half_a.checksum)}


def test_cli_score_writes_the_same_json(demo_manifest: tuple[Path, Path], tmp_path: Path) -> None:
    from cli import app

    manifest, root = demo_manifest
    out = tmp_path / "cli-scores.json"
    persons = ",".join(_persons(manifest, ("5", "6")))
    args = ["score", "--generator", "tps=landmark-tps", "--manifest", str(manifest), "--root", str(root)]
    args += ["--persons", persons, "--size", "64", "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    written = json.loads(out.read_text())
    assert written["rows"]["tps"]["n_clips"] == 6 and set(written["copy_onset"]) == SUMMARY_KEYS
    assert "flow_epe_au [95% CI]" in result.output  # the table on stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a torch without a usable GPU")
def test_a_cuda_device_without_cuda_is_one_line(demo_manifest: tuple[Path, Path], tmp_path: Path) -> None:
    manifest, root = demo_manifest
    command = [sys.executable, "-c", "from cli import main; main()", "score", "--generator", "landmark-tps"]
    command += ["--manifest", str(manifest), "--root", str(root), "--device", "cuda:0"]
    command += ["--out", str(tmp_path / "s.json")]
    done = subprocess.run(command, capture_output=True, text=True, cwd=Path(__file__).parents[1], timeout=120)
    assert done.returncode == 2, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "--device cuda:0" in done.stderr, done.stderr
    assert not (tmp_path / "s.json").exists()


def test_score_generator_is_the_one_row_table(
    demo_manifest: tuple[Path, Path], dlib_backend: DlibFaceBackend
) -> None:
    manifest, root = demo_manifest
    leaky = LandmarkTPSGenerator(size=64)
    leaky.training_free = False  # type: ignore[misc]
    leaky.kind = "leaky"  # type: ignore[misc]
    leaky.training_subjects = (row_fold_key(_rows_of(manifest, ("6",))[0]),)
    with pytest.raises(UserError, match="trained on person"):
        score_generator(leaky, manifest, root, subjects=["6"], backend=dlib_backend)


def test_generator_options_parse() -> None:
    assert parse_generator_option("landmark-tps") == (None, ("landmark-tps",))
    assert parse_generator_option("fp=runs/a/checkpoint.pt,runs/b/checkpoint.pt") == (
        "fp",
        ("runs/a/checkpoint.pt", "runs/b/checkpoint.pt"),
    )
    assert parse_generator_option("demo-oracle:/data/x=y") == (None, ("demo-oracle:/data/x=y",))
    with pytest.raises(UserError, match="no generator"):
        parse_generator_option("name=")


def test_au_regions_lie_between_the_landmarks_and_scale_with_the_face(dlib_backend: DlibFaceBackend) -> None:
    from skimage import data

    from augmenter.prepare import prepare_target

    target = prepare_target(data.astronaut(), 64, dlib_backend, key="astronaut", subject="images/astronaut")
    points = target.landmarks
    masks = au_region_masks(points, (64, 64))
    assert set(masks) == {*AU_REGIONS, "au"}
    assert np.array_equal(masks["au"], masks["glabella"] | masks["cheeks"] | masks["nasolabial"])
    rows, cols = np.nonzero(masks["glabella"])
    assert points[21, 0] < cols.mean() < points[22, 0]  # between the brows
    assert points[[21, 22], 1].mean() < rows.mean() < points[[39, 42], 1].mean()
    rows, cols = np.nonzero(masks["cheeks"])
    assert rows.mean() > points[[40, 41, 46, 47], 1].mean()  # below the lower lids
    assert (cols < points[27, 0]).any() and (cols > points[27, 0]).any()  # both sides
    rows, cols = np.nonzero(masks["nasolabial"])
    assert points[[31, 35], 1].mean() < rows.mean() < points[[48, 54], 1].mean() + 2
    eyes = np.linalg.norm(points[42] - points[39])
    for region in AU_REGIONS:  # centred between landmarks, never on one
        rows, cols = np.nonzero(masks[region])
        for side in (cols < points[27, 0], cols >= points[27, 0]):
            if side.sum() > 5:
                centre = np.array([cols[side].mean(), rows[side].mean()])
                assert np.linalg.norm(points - centre, axis=1).min() > 0.15 * eyes, region
    doubled = au_region_masks(points * 2, (128, 128))
    for region in AU_REGIONS:
        assert doubled[region].sum() / masks[region].sum() == pytest.approx(4.0, rel=0.15)


def test_person_bootstrap_widens_with_clustered_persons() -> None:
    rng = np.random.default_rng(0)
    persons = [f"p{i}" for i in range(6) for _ in range(10)]
    independent = rng.normal(1.0, 0.1, 60)
    clustered = np.repeat(rng.normal(1.0, 0.3, 6), 10) + rng.normal(0, 0.01, 60)
    low_i, high_i = person_bootstrap_ci(independent, persons)
    low_c, high_c = person_bootstrap_ci(clustered, persons)
    assert low_i < independent.mean() < high_i and low_c < clustered.mean() < high_c
    assert (high_c - low_c) > 3 * (high_i - low_i)
    assert person_bootstrap_ci([0.5] * 4, ["a", "a", "b", "b"]) == [0.5, 0.5]


def test_flow_cosine_and_face_box() -> None:
    reference = np.zeros((8, 8, 2), np.float32)
    reference[..., 0] = 1.0
    mask = np.ones((8, 8), bool)
    assert flow_cosine(reference, reference, mask) == pytest.approx(1.0)
    assert flow_cosine(-reference, reference, mask) == pytest.approx(-1.0)
    assert flow_cosine(np.zeros_like(reference), reference, mask) == 0.0
    assert np.isnan(flow_cosine(reference, 0.1 * reference, mask))  # reference under 0.2 px everywhere
    box = crop_face_box(150, margin=0.25)
    assert (box.left, box.right, box.width) == (25, 125, 100)
