"""Transfer fidelity on the real demo corpus: every row against demo-oracle's clip of the same pairing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from augmenter.demo.oracle import DemoOracleGenerator
from augmenter.errors import UserError
from augmenter.face.dlib_backend import DlibFaceBackend
from augmenter.flow import face_mask, optical_flow
from augmenter.generators.landmark_tps import LandmarkTPSGenerator
from augmenter.manifest import clip_key, read_manifest, row_person
from augmenter.plan import make_plan, targets_from_manifest
from augmenter.prepare import prepare_clip, prepare_targets_from_manifest
from augmenter.score import COPY_ONSET, ScoreRow, clips_path_for, select_clips
from augmenter.transfer import (
    ORACLE,
    TRANSFER_METRICS,
    format_transfer_table,
    score_transfer,
    transfer_pairings,
)

SUBJECTS = ("1", "2", "3", "4")  # 12 source clips of 4 persons


class _Learned(LandmarkTPSGenerator):
    """landmark-tps dressed as a learned generator with recorded training persons (the leakage rule's
    input)."""

    kind = "learned"
    training_free = False
    training_subjects: tuple[str, ...] = ()

    def __init__(self, persons: tuple[str, ...]) -> None:
        super().__init__(size=64)
        self.training_persons = persons
        self.checksum = "learned-" + ",".join(persons)


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _chosen(manifest: Path):  # noqa: ANN202 - DataFrame
    return select_clips(read_manifest(manifest), manifest, subjects=SUBJECTS)


def _halves(manifest: Path) -> tuple[_Learned, _Learned]:
    """Two 'halves' like the demo's: a trained on persons 1–2 (serves 3–4), b on persons 3–4 (serves 1–2)."""
    persons = sorted({row_person(row) for _, row in _chosen(manifest).iterrows()})
    return _Learned(tuple(persons[:2])), _Learned(tuple(persons[2:]))


@pytest.fixture(scope="module")
def transfer(demo_manifest: tuple[Path, Path], dlib_backend: DlibFaceBackend, tmp_path_factory) -> tuple:
    """A two-halves row and landmark-tps (+ copy-onset, oracle) on the pairings of 4 persons' 12 clips."""
    manifest, root = demo_manifest
    half_a, half_b = _halves(manifest)
    out = tmp_path_factory.mktemp("transfer") / "transfer.json"
    document = score_transfer(
        [("halves", [half_a, half_b]), "landmark-tps"],
        manifest,
        root,
        truth=root,
        subjects=SUBJECTS,
        size=64,
        backend=dlib_backend,
        out=out,
        progress=False,
    )
    return document, out, (half_a, half_b)


def test_every_row_is_scored_on_the_same_pairings_of_other_persons(transfer: tuple) -> None:
    document, out, _ = transfer
    assert json.loads(out.read_text()) == document
    assert list(document["rows"]) == ["halves", "landmark-tps", COPY_ONSET, ORACLE]
    assert document["n_pairings"] == 12 and len(set(document["pair_ids"])) == 12  # one per source clip
    lines = _lines(clips_path_for(out))
    assert len(lines) == 12 * 4
    for row in document["rows"]:
        assert sorted(line["pair_id"] for line in lines if line["row"] == row) == sorted(document["pair_ids"])
        assert document["rows"][row]["n_pairings"] == 12
    assert all(line["source_person"] != line["target_person"] for line in lines)
    assert len(document["target_persons"]) == 4


def test_the_oracle_scores_zero_against_itself(transfer: tuple) -> None:
    document, out, _ = transfer
    oracle = document["oracle"]
    assert oracle == document["rows"][ORACLE] and oracle["held_out"] == "training-free"
    for line in _lines(clips_path_for(out)):
        if line["row"] == ORACLE:
            for metric in TRANSFER_METRICS:
                assert line["scores"][metric] == (1.0 if metric.startswith("flow_cos") else 0.0), metric


def test_copy_onset_epe_is_the_oracle_clips_own_motion(
    transfer: tuple, demo_manifest: tuple[Path, Path], dlib_backend: DlibFaceBackend
) -> None:
    """The metric measures what it says: a motionless clip misses exactly the oracle's onset → apex motion,
    recomputed here from an oracle clip rendered independently of the scorer."""
    document, out, _ = transfer
    manifest, root = demo_manifest
    rows = {clip_key(row): row for row in read_manifest(manifest).to_dict("records")}
    oracle = DemoOracleGenerator(root, size=64)
    copy_lines = [line for line in _lines(clips_path_for(out)) if line["row"] == COPY_ONSET]
    motions = []
    for line in copy_lines:
        source = prepare_clip(rows[line["source_clip"]], root, 64, dlib_backend)
        target_row = rows[line["target_id"]]
        target = prepare_targets_from_manifest(_frame(target_row), root, 64, dlib_backend)[0]
        frames = oracle.animate(source, target)
        flow = optical_flow(frames[0], frames[source.apex_index])
        motion = float(np.linalg.norm(flow, axis=-1)[face_mask(target.landmarks, (64, 64))].mean())
        assert line["scores"]["flow_epe"] == pytest.approx(motion, rel=1e-3, abs=1e-4)
        motions.append(motion)
    copy = document["copy_onset"]
    assert copy["flow_epe"] == pytest.approx(np.mean(motions), rel=1e-3)
    assert copy["flow_epe"] == pytest.approx(document["reference_motion"]["face"], rel=1e-6)
    assert copy["flow_epe_au"] == pytest.approx(document["reference_motion"]["au"], rel=1e-6)
    assert min(motions) > 0.05  # the oracle does move: the equality above is not 0 == 0
    assert copy["flow_cos"] == 0.0


def _frame(row: dict):  # noqa: ANN202 - DataFrame
    import pandas as pd

    return pd.DataFrame([row])


def test_landmark_tps_lands_strictly_between_oracle_and_copy_onset(transfer: tuple) -> None:
    rows = transfer[0]["rows"]
    tps, copy, oracle = rows["landmark-tps"], rows[COPY_ONSET], rows[ORACLE]
    for metric in ("flow_epe_au", "apex_residual_au"):
        assert oracle[metric] < tps[metric] < copy[metric], metric
        assert tps[f"ratio_{metric}"] == pytest.approx(tps[metric] / copy[metric])
    assert copy["ratio_flow_epe"] == 1.0 and oracle["ratio_flow_epe"] == 0.0
    # Motion compensation takes out geometry: what is left of the apex difference is smaller.
    assert tps["apex_residual_au"] < tps["apex_l1_au"] and copy["apex_residual_au"] < copy["apex_l1_au"]


def test_confidence_intervals_contain_the_point_estimate(transfer: tuple) -> None:
    for summary in transfer[0]["rows"].values():
        for metric in TRANSFER_METRICS:
            low, high = summary[f"ci_{metric}"]
            assert low <= summary[metric] + 1e-12 and summary[metric] <= high + 1e-12, (
                summary["name"],
                metric,
            )


def test_each_pairing_is_served_by_the_half_that_saw_neither_person(transfer: tuple) -> None:
    document, out, (half_a, half_b) = transfer
    halves = [line for line in _lines(clips_path_for(out)) if line["row"] == "halves"]
    served = {half_a.checksum: half_a, half_b.checksum: half_b}
    for line in halves:
        seen = served[line["checksum"]].training_persons
        assert line["source_person"] not in seen and line["target_person"] not in seen
    assert {line["checksum"] for line in halves} == set(served)  # both halves serve
    assert document["rows"]["halves"]["held_out"] == "persons"
    assert sum(document["rows"]["halves"]["served"].values()) == 12


def test_pairings_are_the_planners_first_servable_choices(
    transfer: tuple, demo_manifest: tuple[Path, Path]
) -> None:
    manifest, root = demo_manifest
    chosen = _chosen(manifest)
    oracle = DemoOracleGenerator(root, size=64)
    tps = ScoreRow("landmark-tps", ("landmark-tps",), [LandmarkTPSGenerator(size=64)])
    plan, info = transfer_pairings(chosen, [tps], oracle.checksum, seed=0, max_per_source=1)
    planned = make_plan(
        chosen, targets_from_manifest(chosen), generator_checksum=oracle.checksum, max_per_source=1
    )
    assert sorted(plan["pair_id"]) == sorted(planned["pair_id"]) and info["passed_over"] == 0
    # With the halves, a cross-half first choice is passed over for the next servable one in hash order.
    halves = ScoreRow("halves", ("a", "b"), list(transfer[2]))
    plan, info = transfer_pairings(chosen, [halves, tps], oracle.checksum, seed=0, max_per_source=1)
    assert sorted(plan["pair_id"]) == sorted(transfer[0]["pair_ids"])
    candidates = make_plan(chosen, targets_from_manifest(chosen), generator_checksum=oracle.checksum)
    candidates = candidates.sort_values("pair_id")
    same_half = {p: i for i, half in enumerate(transfer[2]) for p in half.training_persons}
    for _, pairing in plan.iterrows():
        source = candidates[
            (candidates["source_subject"] == pairing["source_subject"])
            & (candidates["source_clip"] == pairing["source_clip"])
        ]
        servable = source[
            [
                same_half[s] == same_half[t]
                for s, t in zip(source["source_person"], source["target_person"], strict=True)
            ]
        ]
        assert servable["pair_id"].iloc[0] == pairing["pair_id"]
    assert info["passed_over"] == int((~plan["pair_id"].isin(planned["pair_id"])).sum())
    assert 0 < info["passed_over"] < 12
    # A row that saw every person serves nothing: one line saying so.
    everyone = ScoreRow("seen", ("x",), [_Learned(tuple(sorted(set(candidates["source_person"]))))])
    with pytest.raises(UserError, match="no pairing can be served"):
        transfer_pairings(chosen, [everyone], oracle.checksum)


def test_rerun_resumes_without_rescoring(
    transfer: tuple, demo_manifest: tuple[Path, Path], dlib_backend: DlibFaceBackend
) -> None:
    document, out, halves = transfer
    manifest, root = demo_manifest
    before = clips_path_for(out).read_text()
    again = score_transfer(
        [("halves", list(halves)), "landmark-tps"],
        manifest,
        root,
        subjects=SUBJECTS,
        size=64,
        backend=dlib_backend,
        out=out,
        progress=False,
    )
    assert clips_path_for(out).read_text() == before and again == document


def test_table_shows_every_row_with_its_ratio(transfer: tuple) -> None:
    from rich.console import Console

    console = Console(width=200, record=True)
    console.print(format_transfer_table(transfer[0]))
    text = console.export_text()
    for row in transfer[0]["rows"]:
        assert row in text
    assert "×1.00" in text and "×0.00" in text and "12 pairings" in text


def test_a_truth_folder_without_demo_truth_is_one_line(
    demo_manifest: tuple[Path, Path], tmp_path: Path
) -> None:
    manifest, root = demo_manifest
    with pytest.raises(UserError, match="demo truth not found"):
        score_transfer(["landmark-tps"], manifest, root, truth=tmp_path, size=64, progress=False)


def test_cli_score_transfer_writes_the_table(demo_manifest: tuple[Path, Path], tmp_path: Path) -> None:
    from cli import app

    manifest, root = demo_manifest
    out = tmp_path / "cli-transfer.json"
    args = ["score", "--generator", "tps=landmark-tps", "--manifest", str(manifest), "--root", str(root)]
    args += ["--subjects", "1,2", "--size", "64", "--out", str(out), "--transfer", str(root)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    written = json.loads(out.read_text())
    assert list(written["rows"]) == ["tps", COPY_ONSET, ORACLE] and written["n_pairings"] == 6
    assert "transfer fidelity" in result.output
