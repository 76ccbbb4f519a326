"""The demo corpus: real CASME II format, reproducible bytes, and motion that optical flow really measures."""

from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import numpy as np
import openpyxl
import pandas as pd
import pytest
from typer.testing import CliRunner

from augmenter.demo.corpus import (
    ANNOTATION_FILE,
    CASME2_HEADER,
    RAW_FOLDER,
    RECIPES,
    DemoCorpus,
    make_demo_corpus,
    read_demo_persons,
    read_demo_truth,
)
from augmenter.demo.faces import (
    FACES_DIR_ENV,
    SHIPPED_PERSONS,
    available_persons,
    bundled_face_photos,
    demo_faces,
)
from augmenter.demo.oracle import time_map
from augmenter.demo.renderer import ClipPlan, apex_motion, au_field, inter_ocular, render_clip
from augmenter.errors import UserError
from augmenter.face.dlib_backend import DlibFaceBackend
from augmenter.flow import optical_flow
from augmenter.manifest import list_frames, read_manifest

REAL_SHEET = Path(__file__).parent / "data" / "CASME2-coding-20190701.xlsx"


def _digest(root: Path) -> dict[str, str]:
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def _read_rgb(path: Path) -> np.ndarray:
    import cv2

    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


def test_layout_and_frame_numbers_follow_casme2(demo_corpus: DemoCorpus) -> None:
    truth = read_demo_truth(demo_corpus.root)
    assert len(truth) == demo_corpus.clips == 18
    for clip in truth:
        folder = demo_corpus.root / RAW_FOLDER / f"sub{clip.subject}" / clip.filename
        numbers = sorted(int(p.stem[3:]) for p in folder.glob("img*.jpg"))
        assert numbers == list(range(clip.onset, clip.offset + 1))  # onset first, offset last, not from 1
        assert clip.onset < clip.apex < clip.offset
        assert 16 <= len(numbers) <= 24
    assert {clip.label3 for clip in truth} == set(RECIPES)
    image = _read_rgb(
        demo_corpus.root / RAW_FOLDER / "sub01" / truth[0].filename / f"img{truth[0].onset}.jpg"
    )
    assert image.shape == (64, 64, 3)


def test_sheet_matches_the_real_casme2_header_and_cell_types(demo_corpus: DemoCorpus) -> None:
    real = openpyxl.load_workbook(REAL_SHEET, read_only=True).worksheets[0]
    real_header = next(real.iter_rows(min_row=1, max_row=1, values_only=True))
    ours_book = openpyxl.load_workbook(demo_corpus.annotations)
    ours = ours_book.worksheets[0]
    assert ours.title == real.title
    header = [cell.value for cell in ours[1]]
    assert tuple(header[: len(real_header)]) == tuple(real_header) == CASME2_HEADER
    truth = {(clip.subject, clip.filename): clip for clip in read_demo_truth(demo_corpus.root)}
    for row in ours.iter_rows(min_row=2, values_only=True):
        subject, filename, _, onset, apex, offset, _, au, emotion, objective = row[:10]
        clip = truth[(subject, filename)]
        assert isinstance(subject, str) and len(subject) == 2  # "01" as text, like the real sheet
        assert (onset, apex, offset) == (clip.onset, clip.apex, clip.offset)
        assert isinstance(au, int) if "+" not in clip.aus else au == clip.aus
        assert emotion == clip.emotion and isinstance(objective, int)
        extra = dict(zip(header[10:], row[10:], strict=True))
        assert extra["Demo AUs"] == clip.aus and extra["Demo Amplitude px"] == pytest.approx(
            clip.amplitude_px, abs=1e-3
        )


def test_casme2_reader_reads_the_sheet_unchanged(demo_manifest: tuple[Path, Path]) -> None:
    manifest_path, root = demo_manifest
    manifest = read_manifest(manifest_path)
    truth = {(str(int(c.subject)), c.filename): c for c in read_demo_truth(root)}
    assert len(manifest) == len(truth)
    for _, row in manifest.iterrows():
        clip = truth[(row["subject"], row["clip_id"])]
        assert row["au"] == clip.aus and row["label3"] == clip.label3
        assert (row["onset"], row["apex"], row["offset"]) == (clip.onset, clip.apex, clip.offset)
        frames = list_frames(row, root)
        assert len(frames) == row["n_frames"] and frames[0][0] == clip.onset
    counts = manifest["label3"].value_counts()
    assert counts.min() == counts.max()  # classes balanced by construction


def test_same_seed_gives_identical_bytes_and_another_seed_does_not(tmp_path: Path) -> None:
    settings = {"subjects": 2, "clips_per_subject": 2, "size": 48, "frames": (6, 8)}
    first = _digest(make_demo_corpus(tmp_path / "a", seed=7, **settings).root)
    second = _digest(make_demo_corpus(tmp_path / "b", seed=7, **settings).root)
    other = _digest(make_demo_corpus(tmp_path / "c", seed=8, **settings).root)
    assert ANNOTATION_FILE in first and len(first) > 20
    assert first == second
    assert first != other


def test_bad_settings_are_user_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="--size"):
        make_demo_corpus(tmp_path, size=16)
    with pytest.raises(UserError, match="subjects"):
        make_demo_corpus(tmp_path, subjects=0)


def test_cli_writes_a_corpus(tmp_path: Path) -> None:
    from cli import app

    result = CliRunner().invoke(
        app,
        ["demo-data", "--out", str(tmp_path), "--subjects", "1", "--clips-per-subject", "2", "--size", "48"],
    )
    assert result.exit_code == 0, result.output
    sheet = pd.read_excel(tmp_path / ANNOTATION_FILE, engine="openpyxl")
    assert len(sheet) == 2 and (tmp_path / RAW_FOLDER / "sub01").is_dir()


def _flow_at(flow: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Mean flow over the 3×3 pixels around each (x, y) point."""
    rows = []
    for x, y in np.rint(points).astype(int):
        rows.append(flow[y - 1 : y + 2, x - 1 : x + 2].reshape(-1, 2).mean(axis=0))
    return np.array(rows)


# AU → (points that must move, expected sign of (dx outward, dy)), points far away that must not move.
DIRECTIONS = {
    (12,): ((48, 54), (1, -1), (19, 24, 8)),  # corners up and outward; brows and chin still
    (4,): ((20, 21, 22, 23), (-1, 1), (48, 54, 8)),  # inner brows down and toward the midline
    (1, 2): ((19, 21, 22, 24), (0, -1), (48, 54, 8)),  # brows up
    (15,): ((48, 54), (0, 1), (19, 24, 36, 45)),  # corners down
}


@pytest.mark.parametrize("aus", list(DIRECTIONS))
def test_au_motion_is_measured_by_tvl1_where_and_as_facs_says(
    aus: tuple[int, ...], dlib_backend: DlibFaceBackend
) -> None:
    face = demo_faces(1, 96, dlib_backend)[0]  # the astronaut
    amplitude = 2.0
    plan = ClipPlan(
        aus=aus,
        amplitude_px=amplitude,
        n_frames=9,
        apex_index=4,
        blink_start=None,
        blink_frames=6,
        weak_au=None,
        weak_gain=0.0,
        weak_apex_index=4,
        jitter_px=0.0,
        noise_sigma=1.0,
        light_gain=0.0,
        light_tilt=0.0,
    )
    frames, truth = render_clip(face.image, face.landmarks, plan, np.random.default_rng(0))
    flow = optical_flow(frames[0], frames[plan.apex_index], "tvl1")
    moved, signs, still = DIRECTIONS[aus]
    points = face.landmarks
    midline = points[27:31, 0].mean()
    measured = _flow_at(flow, points[list(moved)])
    expected = np.asarray(truth["apex_displacement"])[list(moved)]
    outward = np.sign(points[list(moved), 0] - midline)
    for axis, sign in enumerate(signs):
        if sign:
            component = measured[:, axis] * (outward if axis == 0 else 1.0)
            assert (np.sign(component) == sign).all(), (aus, axis, measured)
    cosine = (measured * expected).sum(1) / (
        np.linalg.norm(measured, axis=1) * np.linalg.norm(expected, axis=1)
    )
    assert cosine.min() > 0.8, cosine
    ratio = np.linalg.norm(measured, axis=1).max() / amplitude
    assert 0.5 < ratio < 1.4, ratio
    assert np.linalg.norm(_flow_at(flow, points[list(still)]), axis=1).max() < 0.3


def test_corpus_motion_agrees_with_its_truth(demo_corpus: DemoCorpus) -> None:
    """Across the noisy corpus (blinks, jitter, lighting, noise): flow points the written way with about the
    written size, and the face away from moved landmarks stays still except for the recorded head jitter."""
    cosines, ratios, still = [], [], []
    for clip in read_demo_truth(demo_corpus.root):
        folder = demo_corpus.root / RAW_FOLDER / f"sub{clip.subject}" / clip.filename
        flow = optical_flow(
            _read_rgb(folder / f"img{clip.onset}.jpg"), _read_rgb(folder / f"img{clip.apex}.jpg")
        )
        landmarks = np.asarray(clip.landmarks_onset)
        truth = np.asarray(clip.apex_displacement)
        measured = _flow_at(flow, landmarks) - np.asarray(clip.apex_global_shift)
        size = np.linalg.norm(truth, axis=1)
        moved = size > 0.5 * size.max()
        # The written amplitude is the largest landmark-field move of any control point; skin effects add
        # at most half of it on top (their gains are ≤ 0.5).
        assert 0.5 * clip.amplitude_px < size.max() <= 1.5 * clip.amplitude_px
        cosines.append(
            np.mean(
                (measured[moved] * truth[moved]).sum(1)
                / (np.linalg.norm(measured[moved], axis=1) * size[moved])
            )
        )
        ratios.append(np.median(np.linalg.norm(measured[moved], axis=1) / size[moved]))
        still.append(np.median(np.linalg.norm(measured[size < 0.02], axis=1)))
    assert np.median(cosines) > 0.9 and np.mean(np.array(cosines) > 0.7) >= 0.8, cosines
    assert 0.45 < np.median(ratios) < 1.3, ratios
    assert np.median(still) < 0.2, still


@pytest.mark.parametrize("aus", [(4,), (6, 12), (14,)])
def test_skin_effects_move_and_shade_the_skin_between_landmarks(
    aus: tuple[int, ...], dlib_backend: DlibFaceBackend
) -> None:
    """Glabellar furrows, cheek bulge and nasolabial fold, dimple: TV-L1 sees motion where no landmark is
    (more than 0.1 inter-ocular distances from all 68), pointing the way the truth says, and the furrows
    darken."""
    face = demo_faces(1, 96, dlib_backend)[0]
    plan = ClipPlan(
        aus=aus,
        amplitude_px=2.5,
        n_frames=9,
        apex_index=4,
        blink_start=None,
        blink_frames=6,
        weak_au=None,
        weak_gain=0.0,
        weak_apex_index=4,
        jitter_px=0.0,
        noise_sigma=1.0,
        light_gain=0.0,
        light_tilt=0.0,
    )
    frames, truth = render_clip(face.image, face.landmarks, plan, np.random.default_rng(0))
    assert {effect["au"] for effect in truth["skin_effects"]} == set(aus)
    motion = apex_motion(face.landmarks, aus, plan.amplitude_px, 96)
    skin = np.linalg.norm(motion.field - au_field(face.landmarks, aus, plan.amplitude_px, 96), axis=-1)
    ys, xs = np.mgrid[0:96, 0:96]
    grid = np.stack([xs, ys], axis=-1).astype(np.float32)
    nearest_landmark = np.linalg.norm(grid[:, :, None] - face.landmarks[None, None], axis=-1).min(axis=-1)
    region = (skin > 0.4) & (nearest_landmark > 0.1 * inter_ocular(face.landmarks))
    assert region.sum() > 30
    flow = optical_flow(frames[0], frames[plan.apex_index], "tvl1")[region]
    expected = motion.field[region]
    cosine = (flow * expected).sum(-1) / (np.linalg.norm(flow, axis=-1) * np.linalg.norm(expected, axis=-1))
    assert np.median(cosine) > 0.8, np.median(cosine)
    assert np.linalg.norm(flow, axis=-1).mean() > 0.4 * np.linalg.norm(expected, axis=-1).mean()
    shaded = motion.shade > 0.05
    grey = frames.astype(np.float64).mean(axis=-1)
    assert grey[0][shaded].mean() - grey[plan.apex_index][shaded].mean() > 5.0
    assert np.abs(grey[0][~shaded & (skin < 0.05)] - grey[-1][~shaded & (skin < 0.05)]).mean() < 3.0


def test_persons_file_names_the_real_person_of_every_subject(
    tmp_path: Path, dlib_backend: DlibFaceBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Subjects beyond the distinct people are variants: they get the person they are a variant of, and the
    manifest built with the persons file carries it. (The shipped people only, so the corpus stays small;
    test_demo_faces.py builds one with every fetched person.)"""
    from augmenter.datasets import build_manifest_file

    monkeypatch.setenv(FACES_DIR_ENV, str(tmp_path / "no-fetched-faces"))
    people = len(bundled_face_photos(dlib_backend))
    assert people == SHIPPED_PERSONS == available_persons()
    corpus = make_demo_corpus(
        tmp_path / "c", subjects=people + 2, clips_per_subject=1, size=48, frames=(4, 5)
    )
    persons = read_demo_persons(corpus.root)
    assert len(persons) == people + 2 and len(set(persons.values())) == people
    assert persons["casme2/1"] == persons[f"casme2/{people + 1}"] == "astronaut"
    truth = {int(clip.subject): clip.identity for clip in read_demo_truth(corpus.root)}
    assert all(persons[f"casme2/{number}"] == identity for number, identity in truth.items())
    manifest = tmp_path / "m.csv"
    build_manifest_file(
        "casme2",
        corpus.annotations,
        corpus.root,
        manifest,
        check_frames=True,
        strict=True,
        persons=corpus.persons,
    )
    rows = read_manifest(manifest)
    assert rows["person"].nunique() == people
    assert set(rows.loc[rows["subject"] == str(people + 1), "person"]) == {"astronaut"}


def test_demo_oracle_renders_the_recorded_motion(demo_corpus: DemoCorpus) -> None:
    """Self-reenactment with the oracle (a clip's own onset frame as the target) reproduces the clip's apex
    far better than copy-onset does, in the pixels that move; shorter sources keep onset, apex and offset."""
    from augmenter.generators import load_generator
    from augmenter.generators.base import PreparedClip, TargetFace

    oracle = load_generator(f"demo-oracle:{demo_corpus.root}")
    assert oracle.kind == "demo-oracle" and oracle.training_free and oracle.size == 64
    assert oracle.training_subjects == () and oracle.training_persons == ()
    oracle_errors, copy_errors = [], []
    for clip in read_demo_truth(demo_corpus.root):
        folder = demo_corpus.root / RAW_FOLDER / f"sub{clip.subject}" / clip.filename
        frames = np.stack([_read_rgb(folder / f"img{n}.jpg") for n in range(clip.onset, clip.offset + 1)])
        landmarks = np.asarray(clip.landmarks_onset, np.float32)
        apex = clip.apex - clip.onset
        source = PreparedClip(
            f"casme2/{int(clip.subject)}/{clip.filename}",
            frames,
            np.repeat(landmarks[None], len(frames), 0),
            apex,
        )
        generated = oracle.animate(source, TargetFace("target", "x", frames[0], landmarks))
        assert generated.shape == frames.shape and generated.dtype == np.uint8
        # Sensor noise (σ 2–4, which the oracle leaves out) is as strong as sub-pixel motion in single pixels:
        # compare blurred frames, where the noise averages out and the motion's edges stay.
        real, onset, made = (
            cv2.GaussianBlur(f.astype(np.float64), (0, 0), 1.5)
            for f in (frames[apex], frames[0], generated[apex])
        )
        moving = np.abs(real - onset).mean(axis=-1) > 3
        oracle_errors.append(np.abs(made - real).mean(axis=-1)[moving].mean())
        copy_errors.append(np.abs(onset - real).mean(axis=-1)[moving].mean())
    assert np.median(oracle_errors) < 0.5 * np.median(copy_errors), (oracle_errors, copy_errors)

    short = PreparedClip(source.key, frames[::2], source.landmarks[::2], apex // 2)
    resampled = oracle.animate(short, TargetFace("target", "x", frames[0], landmarks))
    assert len(resampled) == len(short.frames)
    assert time_map(len(short.frames), apex // 2, len(frames), apex)[[0, apex // 2, -1]].tolist() == [
        0,
        apex,
        len(frames) - 1,
    ]
    with pytest.raises(UserError, match="not in"):
        oracle.animate(
            PreparedClip("casme2/99/EP01_01", frames, source.landmarks, apex), _still_target(frames)
        )
    with pytest.raises(UserError, match="corpus root"):
        load_generator("demo-oracle")


def _still_target(frames: np.ndarray) -> object:
    from augmenter.generators.base import TargetFace

    return TargetFace("target", "x", frames[0], np.zeros((68, 2), np.float32))
