"""Self-reenactment scores on the real demo corpus: landmark-tps must move faces better than copy-onset."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from augmenter.errors import UserError
from augmenter.face.dlib_backend import DlibFaceBackend
from augmenter.generators.landmark_tps import LandmarkTPSGenerator
from augmenter.score import crop_face_box, flow_cosine, score_generator

KEYS = {"name", "l1", "akd", "aed", "flow_epe", "flow_cos", "n_clips"}
SUBJECTS = ["4", "5", "6"]  # 9 clips; subjects 1–3 are where landmark-tps' defaults may be looked at


@pytest.fixture(scope="module")
def tps_scores(demo_manifest: tuple[Path, Path], dlib_backend: DlibFaceBackend, tmp_path_factory) -> dict:
    manifest, root = demo_manifest
    out = tmp_path_factory.mktemp("scores") / "scores.json"
    scores = score_generator(
        "landmark-tps", manifest, root, subjects=SUBJECTS, size=64, backend=dlib_backend, out=out
    )
    assert json.loads(out.read_text()) == scores
    return scores


def test_scores_have_the_contract_shape(tps_scores: dict) -> None:
    assert set(tps_scores) == {"generator", "copy_onset"}
    assert set(tps_scores["generator"]) == KEYS and set(tps_scores["copy_onset"]) == KEYS
    assert tps_scores["generator"]["name"] == "landmark-tps"
    assert tps_scores["copy_onset"]["name"] == "copy-onset"
    assert tps_scores["generator"]["n_clips"] == tps_scores["copy_onset"]["n_clips"] == 9
    for part in tps_scores.values():
        assert all(np.isfinite(part[k]) for k in KEYS - {"name", "n_clips"})
        assert 0 <= part["l1"] < 0.2 and part["akd"] >= 0 and part["aed"] >= 0


def test_landmark_tps_moves_better_than_copy_onset(tps_scores: dict) -> None:
    generator, copy = tps_scores["generator"], tps_scores["copy_onset"]
    # Measured here: flow EPE 0.093 vs 0.289 px, cosine 0.96, L1 0.0100 vs 0.0116, AKD 0.24 vs 0.32 px.
    assert generator["flow_epe"] < 0.6 * copy["flow_epe"], (generator, copy)
    assert copy["flow_cos"] == 0.0  # no motion has no direction
    assert generator["flow_cos"] > 0.7
    assert generator["l1"] < copy["l1"] and generator["akd"] < copy["akd"]


def test_cli_score_writes_the_same_json(demo_manifest: tuple[Path, Path], tmp_path: Path) -> None:
    from cli import app

    manifest, root = demo_manifest
    out = tmp_path / "cli-scores.json"
    args = ["score", "--generator", "landmark-tps", "--manifest", str(manifest), "--root", str(root)]
    args += ["--subjects", "5,6", "--size", "64", "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    written = json.loads(out.read_text())
    assert written["generator"]["n_clips"] == 6 and set(written["copy_onset"]) == KEYS


def test_unknown_subjects_and_leaky_generators_are_refused(
    demo_manifest: tuple[Path, Path], dlib_backend: DlibFaceBackend
) -> None:
    manifest, root = demo_manifest
    with pytest.raises(UserError, match="no clips of subjects"):
        score_generator("landmark-tps", manifest, root, subjects=["nobody"], size=64, backend=dlib_backend)
    leaky = LandmarkTPSGenerator(size=64)
    leaky.training_subjects = ("casme2/6",)
    with pytest.raises(UserError, match="trained on casme2/6"):
        score_generator(leaky, manifest, root, subjects=["casme2/6"], backend=dlib_backend)


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
