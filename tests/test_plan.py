"""The pairing plan: plain data, deterministic, leakage-free, stable when the manifest grows."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from augmenter.errors import UserError
from augmenter.manifest import MANIFEST_COLUMNS, write_manifest
from augmenter.plan import (
    PLAN_COLUMNS,
    format_summary,
    load_targets,
    make_plan,
    pair_id_of,
    summarize_plan,
    targets_from_manifest,
)

LABELS = {"4": ("negative", "disgust"), "12": ("positive", "happiness"), "1+2": ("surprise", "surprise")}


def manifest(subjects: int, clips_per_subject: int, dataset: str = "casme2") -> pd.DataFrame:
    rows = []
    aus = list(LABELS)
    for s in range(1, subjects + 1):
        for c in range(clips_per_subject):
            au = aus[(s + c) % len(aus)]
            label3, emotion = LABELS[au]
            rows.append(
                {
                    "dataset": dataset,
                    "subject": str(s),
                    "clip_id": f"EP0{c}_01",
                    "frames_dir": f"sub{s:02d}/EP0{c}_01",
                    "frame_pattern": "img*.jpg",
                    "onset": 1,
                    "apex": 4,
                    "offset": 8,
                    "apex_estimated": False,
                    "fps": 200.0,
                    "n_frames": 8,
                    "au": au,
                    "emotion": emotion,
                    "label3": label3,
                }
            )
    return pd.DataFrame(rows, columns=list(MANIFEST_COLUMNS))


def test_all_pairs_other_subjects_only_with_fold_keys() -> None:
    sources = manifest(4, 2)
    plan = make_plan(sources, targets_from_manifest(sources), generator_checksum="abc")
    assert list(plan.columns) == list(PLAN_COLUMNS)
    assert len(plan) == 8 * 6  # every clip × the 6 clips of the 3 other subjects
    assert (plan["source_subject"] != plan["target_subject"]).all()
    assert plan["source_subject"].str.startswith("casme2/").all()
    assert plan["pair_id"].is_unique
    assert (plan["generator"] == "abc").all()


def test_deterministic_and_seed_changes_ids() -> None:
    sources = manifest(3, 2)
    targets = targets_from_manifest(sources)
    first = make_plan(sources, targets, generator_checksum="g", seed=1, max_per_source=2)
    again = make_plan(sources, targets, generator_checksum="g", seed=1, max_per_source=2)
    other = make_plan(sources, targets, generator_checksum="g", seed=2, max_per_source=2)
    pd.testing.assert_frame_equal(first, again)
    assert set(first["pair_id"]).isdisjoint(other["pair_id"])
    assert first.loc[0, "pair_id"] == pair_id_of(
        f"{first.loc[0, 'source_subject']}/{first.loc[0, 'source_clip']}", first.loc[0, "target_id"], 1, "g"
    )


def test_exclude_subjects_by_id_or_fold_key() -> None:
    sources = manifest(4, 1)
    targets = targets_from_manifest(sources)
    for excluded in (["2"], ["casme2/2"]):
        plan = make_plan(sources, targets, generator_checksum="g", exclude_subjects=excluded)
        assert "casme2/2" not in set(plan["source_subject"]) | set(plan["target_subject"])
        assert len(plan) == 3 * 2


def test_caps_and_balanced() -> None:
    sources = manifest(6, 3)
    targets = targets_from_manifest(sources)
    capped = make_plan(sources, targets, generator_checksum="g", max_per_source=2, max_per_target=3)
    assert capped.groupby(["source_subject", "source_clip"]).size().max() == 2
    assert capped["target_id"].value_counts().max() <= 3
    balanced = make_plan(sources, targets, generator_checksum="g", strategy="balanced", per_class=5)
    assert balanced["label3"].value_counts().to_dict() == {"negative": 5, "positive": 5, "surprise": 5}
    with pytest.raises(UserError, match="per-class"):
        make_plan(sources, targets, generator_checksum="g", strategy="balanced")
    with pytest.raises(UserError, match="strategy"):
        make_plan(sources, targets, generator_checksum="g", strategy="random")


def test_grown_manifest_keeps_every_earlier_pair() -> None:
    small, grown = manifest(3, 2), manifest(5, 2)
    before = make_plan(small, targets_from_manifest(small), generator_checksum="g")
    after = make_plan(grown, targets_from_manifest(grown), generator_checksum="g")
    assert set(before["pair_id"]) < set(after["pair_id"])
    merged = before.merge(after, on="pair_id", suffixes=("", "_after"))
    assert (merged["target_id"] == merged["target_id_after"]).all()


def test_limit_is_a_prefix_of_the_same_order() -> None:
    sources = manifest(4, 2)
    targets = targets_from_manifest(sources)
    five = make_plan(sources, targets, generator_checksum="g", limit=5)
    ten = make_plan(sources, targets, generator_checksum="g", limit=10)
    assert len(five) == 5 and set(five["pair_id"]) < set(ten["pair_id"])


def test_folder_targets_and_summary(tmp_path: Path) -> None:
    folder = tmp_path / "faces"
    folder.mkdir()
    for name in ("anna", "bob"):
        assert cv2.imwrite(str(folder / f"{name}.png"), np.zeros((8, 8, 3), np.uint8))
    (folder / "notes.txt").write_text("not a face")
    targets, target_manifest = load_targets(folder)
    assert target_manifest is None
    assert list(targets["target_id"]) == ["folder/anna", "folder/bob"]
    plan = make_plan(manifest(2, 1), targets, generator_checksum="g", exclude_subjects=["folder/bob"])
    assert set(plan["target_subject"]) == {"folder/anna"}
    counts = summarize_plan(plan)
    assert counts["per_target"].to_dict() == {"folder/anna": 2}
    text = format_summary(plan)
    assert text.startswith("plan: 2 pairings") and "per class:" in text
    write_manifest(manifest(2, 1), tmp_path / "m.csv")
    assert len(load_targets(tmp_path / "m.csv")[0]) == 2
    with pytest.raises(UserError, match="neither"):
        load_targets(tmp_path / "missing")
