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
    read_target_persons,
    summarize_plan,
    targets_from_manifest,
)

LABELS = {"4": ("negative", "disgust"), "12": ("positive", "happiness"), "1+2": ("surprise", "surprise")}


def manifest(
    subjects: int, clips_per_subject: int, dataset: str = "casme2", persons: dict[int, str] | None = None
) -> pd.DataFrame:
    """A small manifest; `persons` says which subjects are whom (default: each subject its own person)."""
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
                    "person": (persons or {}).get(s, ""),
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


def test_one_person_under_two_subjects_is_never_paired_with_itself() -> None:
    sources = manifest(4, 2, persons={1: "ann", 3: "ann"})  # subject 3 is subject 1 recorded again
    plan = make_plan(sources, targets_from_manifest(sources), generator_checksum="g")
    assert (plan["source_person"] != plan["target_person"]).all()
    pairs = set(zip(plan["source_subject"], plan["target_subject"], strict=True))
    assert ("casme2/1", "casme2/3") not in pairs and ("casme2/3", "casme2/1") not in pairs
    assert ("casme2/1", "casme2/2") in pairs
    assert len(plan) == 2 * 4 + 2 * 4 + 2 * 6 + 2 * 6  # ann's 4 clips see 2 persons' clips; others see 3
    assert set(plan["source_person"]) == {"ann", "casme2/2", "casme2/4"}


def test_folder_target_persons_file_maps_photos_to_manifest_persons(tmp_path: Path) -> None:
    folder = tmp_path / "faces"
    folder.mkdir()
    for name in ("anna", "bob", "cleo"):
        assert cv2.imwrite(str(folder / f"{name}.png"), np.zeros((8, 8, 3), np.uint8))
    persons = tmp_path / "persons.csv"
    persons.write_text(f"target,person\nanna,casme2/1\n{folder / 'bob.png'},casme2/2\n")
    assert read_target_persons(persons) == {"anna": "casme2/1", str(folder / "bob.png"): "casme2/2"}
    targets, _ = load_targets(folder, persons)
    assert list(targets["target_person"]) == ["casme2/1", "casme2/2", "folder/cleo"]
    plan = make_plan(manifest(3, 1), targets, generator_checksum="g")
    pairs = set(zip(plan["source_person"], plan["target_id"], strict=True))
    assert ("casme2/1", "folder/anna") not in pairs and ("casme2/2", "folder/bob") not in pairs
    assert ("casme2/1", "folder/bob") in pairs and ("casme2/1", "folder/cleo") in pairs
    assert len(plan) == 3 * 3 - 2
    persons.write_text("target,person\ndora,casme2/1\n")
    with pytest.raises(UserError, match="not in .*faces.*'dora'"):
        load_targets(folder, persons)
    persons.write_text("image,who\nanna,x\n")
    with pytest.raises(UserError, match="target,person"):
        load_targets(folder, persons)
    write_manifest(manifest(2, 1), tmp_path / "m.csv")
    with pytest.raises(UserError, match="folder of images"):
        load_targets(tmp_path / "m.csv", persons)


def test_sources_without_a_label_are_left_out_unless_asked() -> None:
    sources = manifest(3, 2)
    sources.loc[0, "label3"] = ""  # e.g. CASME II "others": not in the 3-class protocol
    targets = targets_from_manifest(sources)
    plan = make_plan(sources, targets, generator_checksum="g")
    assert len(plan) == 5 * 4 and (plan["label3"] != "").all()
    assert plan.attrs["unlabelled_sources"] == 1
    assert "left out: 1 source clips without a 3-class label" in format_summary(plan)
    everything = make_plan(sources, targets, generator_checksum="g", include_unlabelled=True)
    assert len(everything) == 6 * 4 and set(plan["pair_id"]) < set(everything["pair_id"])
    balanced = make_plan(
        sources, targets, generator_checksum="g", strategy="balanced", per_class=50, include_unlabelled=True
    )
    assert (balanced["label3"] != "").all()  # balanced counts per class: an unlabelled clip has none
