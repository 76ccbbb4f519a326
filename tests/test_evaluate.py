"""End-to-end evaluation on the real demo corpus: above chance, cached, leakage-free, same folds and seeds."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from augmenter.errors import UserError
from augmenter.manifest import read_manifest, write_manifest
from augmenter.prepare import prepare_clip
from augmenter.store import StoreWriter, store_table, write_clip
from cli import app
from recognition_eval.evaluate import PROTOCOLS, Arm, EvaluateJob, evaluate, parse_arm, select_protocol_rows

CROP = 64  # the shared demo corpus is 64², so the face crop is too


def _job(demo_manifest: tuple[Path, Path], out: Path, **changes: object) -> EvaluateJob:
    manifest, root = demo_manifest
    settings = dict(
        manifest=manifest,
        root=root,
        out=out,
        recognizer="ststnet",
        crop_size=CROP,
        torch_threads=1,
        bootstrap=300,
    )
    return EvaluateJob(**(settings | changes))


def test_baseline_folds_are_persons_reports_the_issue_keys_and_a_second_run_does_no_work(
    demo_manifest: tuple[Path, Path], tmp_path: Path
) -> None:
    manifest = read_manifest(demo_manifest[0])
    # Subject 4 is filmed again as subject 1's person (a variant): one person, one fold.
    manifest["person"] = ["p1" if s in ("1", "4") else f"casme2/{s}" for s in manifest["subject"].astype(str)]
    path = tmp_path / "persons.csv"
    write_manifest(manifest, path)
    first = evaluate(_job((path, demo_manifest[1]), tmp_path / "run", seeds=(0, 1)))
    n = first["n_samples"]
    assert first["features"]["computed"] == n and first["features"]["cache_hits"] == 0
    persons = sorted(set(manifest["person"]))
    assert first["unit"] == "person" and first["n_folds"] == len(persons) == first["n_subjects"] - 1
    assert (
        first["n_seeds"] == 2 and first["resampled"] == "persons x seeds" and first["folds"][0] == "casme2/2"
    )
    assert first["baseline"]["uf1"] > 0.5 and first["baseline"]["uar"] > 0.5  # chance is 1/3
    assert list(first["arms"]) == ["baseline"] and "augmented" not in first and "gain_uf1" not in first
    keys = {"uf1", "uar", "gain_uf1", "ci_uf1", "gain_uar", "ci_uar", "p_uf1", "steps", "n_synthetic"}
    assert set(first["arms"]["baseline"]) >= keys
    assert first["per_dataset"]["casme2"]["baseline"]["uf1"] == pytest.approx(first["baseline"]["uf1"])
    on_disk = json.loads((tmp_path / "run" / "report.json").read_text())
    assert on_disk["arms"]["baseline"]["uf1"] == pytest.approx(first["baseline"]["uf1"])
    for name in ("confusion.png", "per_class_f1.png", "per_fold.png"):
        assert (tmp_path / "run" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # No fold trains on its own person: p1's model trained on every clip but subjects 1 and 4.
    sets = pd.read_csv(tmp_path / "run" / "training_sets.csv", keep_default_na=False)
    p1 = sets[(sets["fold"] == "p1") & (sets["seed"] == 0)]
    assert p1["n_train_real"].tolist() == [n - int(manifest["subject"].isin(["1", "4"]).sum())]
    assert set(sets["steps"]) == {first["arms"]["baseline"]["steps"]}
    # MEGC log: per person, a "db subject" header per subject, then "file gt pred" lines of its clips.
    lines = (tmp_path / "run" / "loso_baseline_seed0.log").read_text().splitlines()
    headers = [line for line in lines if line.startswith("casme2 ")]
    assert len(headers) == first["n_subjects"] and len(lines) == n + len(headers)
    assert {line.split()[0] for line in lines if line not in headers} <= set(manifest["clip_id"])

    # A rerun (e.g. after a crash) does no flow work and retrains no finished model; results are the same.
    again = evaluate(_job((path, demo_manifest[1]), tmp_path / "run", seeds=(0, 1)))
    assert again["features"]["computed"] == 0 and again["features"]["cache_hits"] == n
    assert again["fold_cache_hits"] == 2 * first["n_folds"] and first["fold_cache_hits"] == 0
    assert again["baseline"] == first["baseline"]
    assert EvaluateJob(manifest=path, root=tmp_path, out=tmp_path).seeds == (0, 1, 2)  # ≥ 3 seeds by default


@pytest.fixture(scope="module")
def synthetic_store(demo_manifest: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real store of clips "moved onto" the next subject by a generator trained on the first two subjects.

    Pixels are the real prepared demo clips (real faces, real motion of the source's label), so the recognizer
    sees meaningful flows; provenance is what the leakage guard reads.
    """
    manifest_path, root = demo_manifest
    manifest = read_manifest(manifest_path)
    folds = sorted({f"casme2/{s}" for s in manifest["subject"]})
    trained_on = ";".join(folds[:2])
    path = tmp_path_factory.mktemp("synthetic") / "store.zarr"
    clips, rows = [], []
    for i, row in manifest.iterrows():
        try:
            clip = prepare_clip(row, root, CROP, "dlib")
        except Exception:  # noqa: BLE001 - a demo face dlib misses is simply not used as a source
            continue
        source = f"casme2/{row['subject']}"
        target = folds[(folds.index(source) + 1) % len(folds)]
        clips.append(clip)
        rows.append(
            {
                "pair_id": f"p{i}",
                "source_dataset": "casme2",
                "source_subject": source,
                "source_clip": row["clip_id"],
                "target_id": f"{target}/onset",
                "target_subject": target,
                "label3": row["label3"],
                "au": row["au"],
                "emotion": row["emotion"],
                "seed": 0,
            }
        )
    generator = {"generator_kind": "landmark-tps", "generator_checksum": "demo-test",
                 "generator_training_subjects": trained_on}  # fmt: skip
    writer = StoreWriter(path, size=CROP, max_frames=max(len(c.frames) for c in clips),
                         attrs=generator | {"size": CROP, "seed": 0})  # fmt: skip
    indices = writer.append(pd.DataFrame(rows), generator)
    for index, clip in zip(indices, clips, strict=True):
        write_clip(path, int(index), clip.frames)
    writer.record(
        [
            {
                "index": int(i),
                "n_frames": len(c.frames),
                "apex_index": c.apex_index,
                "quality_l1": 0.05,
                "quality_identity": 0.3,
                "error": "",
            }  # fmt: skip
            for i, c in zip(indices, clips, strict=True)
        ]
    )
    writer.finish()
    return path


def test_arms_share_folds_seeds_and_budget_and_never_train_on_the_test_person(
    demo_manifest: tuple[Path, Path], synthetic_store: Path, tmp_path: Path
) -> None:
    shared = {"synthetic": (synthetic_store,), "cache_dir": tmp_path / "cache"}
    arms = (Arm("copy", (synthetic_store,)),)
    report = evaluate(
        _job(demo_manifest, tmp_path / "aug", seeds=(0, 1), epochs=3, arms=arms,
             shuffle_synthetic_labels=True, **shared)
    )  # fmt: skip
    assert list(report["arms"]) == ["baseline", "augmented", "shuffled", "copy"]
    baseline_entry = report["arms"]["baseline"]
    for name, arm in report["arms"].items():
        assert arm["steps"] == baseline_entry["steps"]  # equal budgets
        # add mode: every model draws exactly the baseline's real samples, the arms 8 synthetic on top
        assert arm["synthetic_mode"] == "add" and arm["real_draws"] == baseline_entry["real_draws"]
        if name != "baseline":
            assert arm["ratio"] == "real:synthetic 16:8" and arm["n_synthetic"] > 0
            assert 0 < arm["synthetic_draws"] <= arm["steps"] * 8 and not arm["domain_mismatch"]
    assert (
        baseline_entry["real_draws"] == baseline_entry["steps"] * 16
        and baseline_entry["synthetic_draws"] == 0
    )
    # The same stores in two arms give the same models (features computed once, same data, same seeds).
    assert report["arms"]["copy"]["uf1"] == report["arms"]["augmented"]["uf1"]
    assert report["arms"]["copy"]["p_uf1"] == report["arms"]["augmented"]["p_uf1"]
    # Holm over the three arms, by hand from the raw p-values the report keeps
    raw = sorted((report["arms"][n]["p_uf1"], n) for n in ("augmented", "shuffled", "copy"))
    running = 0.0
    for rank, (p, name) in enumerate(raw):
        running = max(running, min(1.0, (3 - rank) * p))
        assert report["arms"][name]["p_uf1_holm"] == pytest.approx(running)
    table = store_table(synthetic_store)
    trained_on = set(table["generator_training_subjects"].iloc[0].split(";"))
    sets = pd.read_csv(
        tmp_path / "aug" / "training_sets.csv", keep_default_na=False, dtype={"synthetic_ids": str}
    )
    baseline = sets[sets["arm"] == "baseline"].set_index(["seed", "fold"])
    augmented = sets[sets["arm"] == "augmented"].set_index(["seed", "fold"])
    assert list(baseline.index) == list(augmented.index) and len(baseline) == 2 * report["n_folds"]
    assert (baseline["n_train_real"] == augmented["n_train_real"]).all()
    assert (baseline["steps"] == augmented["steps"]).all() and (baseline["n_train_synthetic"] == 0).all()
    assert (baseline["real_per_batch"] == 16).all() and (augmented["real_per_batch"] == 16).all()
    by_id = {
        f"{synthetic_store}#{i}": row for i, row in zip(table["index"], table.to_dict("records"), strict=True)
    }
    for (_, fold), row in augmented.iterrows():
        ids = [i for i in row["synthetic_ids"].split(";") if i]
        assert len(ids) == row["n_train_synthetic"]
        for clip_id in ids:  # the clips this fold's model could draw from
            provenance = by_id[clip_id]
            assert fold not in (provenance["source_subject"], provenance["target_subject"])
            assert fold not in provenance["generator_training_subjects"].split(";")
        assert (len(ids) == 0) == (fold in trained_on) == (row["synthetic_per_batch"] == 0)
    assert sorted(report["synthetic"]["folds_without_synthetic"]) == sorted(trained_on)
    assert report["n_synthetic_used"] == augmented.loc[0, "n_train_synthetic"].sum()
    assert report["synthetic"]["per_store"][str(synthetic_store)]["kept"] == len(table)

    # Folds the guard left without synthetic clips train the baseline's model: identical predictions.
    for seed in (0, 1):
        base = (tmp_path / "aug" / f"loso_baseline_seed{seed}.log").read_text().split("casme2 ")
        aug = (tmp_path / "aug" / f"loso_augmented_seed{seed}.log").read_text().split("casme2 ")
        for fold in trained_on:
            subject = fold.split("/")[1]
            pick = [block for block in base if block.startswith(subject + "\n")]
            assert pick and pick == [block for block in aug if block.startswith(subject + "\n")]
    for key in ("gain_uf1", "gain_uar", "ci_uf1", "p_uf1"):
        assert report[key] == report["arms"]["augmented"][key]

    # Relaxed guard on a real local Dask cluster (2 workers): the generator rule is off, the source and target
    # rules stay, and the ratio cap holds.
    relaxed = evaluate(
        _job(demo_manifest, tmp_path / "relaxed", strict=False, epochs=2, workers=2, max_synthetic_ratio=0.5,
             min_quality=("l1<=0.1",), seeds=(0,), synthetic_mode="replace", crop_size=48, **shared)
    )  # fmt: skip
    assert relaxed["synthetic"]["folds_without_synthetic"] == []
    assert relaxed["arms"]["augmented"]["ratio"] == "real:synthetic 8:8"
    # the store's 64² clips reach a 48² evaluation resized: flagged
    assert relaxed["arms"]["augmented"]["domain_mismatch"] and relaxed["domain"]["mismatched_arms"] == [
        "augmented"
    ]
    relaxed_sets = pd.read_csv(tmp_path / "relaxed" / "training_sets.csv", keep_default_na=False, dtype=str)
    for row in relaxed_sets[relaxed_sets["arm"] == "augmented"].to_dict("records"):
        ids = [i for i in row["synthetic_ids"].split(";") if i]
        assert 0 < len(ids) <= 0.5 * int(row["n_train_real"])
        assert all(row["fold"] not in (by_id[i]["source_subject"], by_id[i]["target_subject"]) for i in ids)


def test_the_dask_client_of_evaluate_listens_on_loopback_only(
    demo_manifest: tuple[Path, Path], tmp_path: Path
) -> None:
    import psutil

    from augmenter.cluster import close_client
    from recognition_eval.evaluate import _client

    client = _client(_job(demo_manifest, tmp_path, workers=2))
    try:
        processes = [psutil.Process(), *psutil.Process().children(recursive=True)]
        listening = [
            c.laddr.ip
            for p in processes
            for c in p.net_connections(kind="inet")
            if c.status == psutil.CONN_LISTEN
        ]
        assert listening and set(listening) <= {"127.0.0.1", "::1"}, listening
    finally:
        close_client(client)


def test_cli_runs_the_resnet_and_reports_bad_input_in_one_line(
    demo_manifest: tuple[Path, Path], tmp_path: Path
) -> None:
    manifest, root = demo_manifest
    result = CliRunner().invoke(
        app,
        ["evaluate", "--recognizer", "resnet", "--manifest", str(manifest), "--root", str(root), "--out",
         str(tmp_path / "cli"), "--crop-size", str(CROP), "--epochs", "3", "--seeds", "3", "--threads", "1"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "cli" / "report.json").read_text())
    assert report["recognizer"] == "resnet" and report["seeds"] == [3] and report["spec"]["epochs"] == 3
    assert report["unit"] == "person" and list(report["arms"]) == ["baseline"]
    assert report["spec"]["input_size"] == 64
    # the reported UF1 is scikit-learn's macro F1 of exactly the predictions the MEGC log lists
    from sklearn.metrics import f1_score

    pairs = [line.split() for line in (tmp_path / "cli" / "loso_baseline_seed3.log").read_text().splitlines()]
    gt, pred = zip(*[(int(p[1]), int(p[2])) for p in pairs if len(p) == 3], strict=True)
    assert len(gt) == report["n_samples"]
    expected = f1_score(gt, pred, average="macro", labels=[0, 1, 2], zero_division=0)
    assert report["baseline"]["uf1"] == pytest.approx(expected)

    bad = subprocess.run(
        [sys.executable, "-m", "cli", "evaluate", "--manifest", str(tmp_path / "missing.csv"),
         "--root", str(root), "--out", str(tmp_path / "bad")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert bad.returncode == 2
    assert "missing.csv" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    arguments = ["evaluate", "--manifest", str(manifest), "--root", str(root), "--out", str(tmp_path / "w")]
    wrong = CliRunner().invoke(app, [*arguments, "--min-quality", "blur>2"])
    assert wrong.exit_code != 0 and "COLUMN<=VALUE" in str(wrong.exception)
    for arm, message in (
        ("tps", "NAME=STORE"),
        ("tps=missing.zarr", "store not found"),
        ("baseline=x", "reserved"),
    ):
        bad_arm = CliRunner().invoke(app, [*arguments, "--arm", arm])
        assert bad_arm.exit_code != 0 and message in str(bad_arm.exception), (arm, bad_arm.exception)
    assert parse_arm("a=x.zarr, y.zarr") == Arm("a", (Path("x.zarr"), Path("y.zarr")))
    shuffle_alone = CliRunner().invoke(app, [*arguments, "--shuffle-synthetic-labels"])
    assert "--synthetic" in str(shuffle_alone.exception)


def test_protocol_selection_drops_rows_without_a_class_and_says_how_many(
    demo_manifest: tuple[Path, Path],
) -> None:
    manifest = read_manifest(demo_manifest[0])
    manifest.loc[0, "label3"] = ""  # e.g. an "others" clip: not in the 3-class protocol
    manifest.loc[1, "emotion"] = "fear"  # not one of CASME II's five classes
    rows, labels, dropped, column = select_protocol_rows(manifest, "3class")
    assert (len(rows), dropped, column) == (len(manifest) - 1, 1, "label3")
    assert [PROTOCOLS["3class"][i] for i in labels] == list(rows["label3"])
    rows, labels, dropped, column = select_protocol_rows(manifest, "casme2-5class")
    assert (len(rows), dropped, column) == (len(manifest) - 1, 1, "emotion")
    assert [PROTOCOLS["casme2-5class"][i] for i in labels] == list(rows["emotion"].str.lower())
    with pytest.raises(UserError, match="unknown protocol"):
        select_protocol_rows(manifest, "7class")


def test_stores_of_a_larger_manifest_evaluate_on_a_subset_with_its_persons_known(
    demo_manifest: tuple[Path, Path], synthetic_store: Path, tmp_path: Path
) -> None:
    """A protocol subset (here: one subject left out, as MEGC 2019 leaves out CASME II 10 and 18) of the
    manifest a store was made from: its persons are known, never tested; only unknown names fail."""
    from augmenter.store import StoreWriter
    from recognition_eval.provenance import PersonIndex
    from recognition_eval.synthetic import allowed_for_fold, load_store

    full = read_manifest(demo_manifest[0])
    left_out = sorted(full["subject"].astype(str).unique(), key=int)[-1]
    subset = full[full["subject"].astype(str) != left_out]
    labels = {f"casme2/{r['subject']}/{r['clip_id']}": 0 for r in subset.to_dict("records")}
    store = tmp_path / "made-from-full.zarr"
    import shutil

    shutil.copytree(synthetic_store, store)
    StoreWriter(store, size=CROP, max_frames=1, attrs={}).update_attrs({"manifest": "/data/casme2-full.csv"})
    with pytest.raises(UserError, match="--known-manifest casme2-full.csv") as refused:
        load_store(store, PersonIndex.of(subset, source="megc.csv"), labels, PROTOCOLS["3class"])
    assert "made from /data/casme2-full.csv" in str(refused.value)
    index = PersonIndex.of(subset, source="megc.csv", known=[(full, "casme2-full.csv")])
    pool = load_store(store, index, labels, PROTOCOLS["3class"])
    table = store_table(store)
    from_left_out = table["source_subject"] == f"casme2/{left_out}"
    assert pool.counts["source_excluded"] == int(from_left_out.sum()) > 0  # not in the protocol: no label
    onto_left_out = pool.table[pool.table["target_subject"] == f"casme2/{left_out}"]
    assert len(onto_left_out) > 0  # a known, untested person's face is usable by every evaluated fold
    for fold in sorted({f"casme2/{s}" for s in subset["subject"]})[:3]:
        allowed = allowed_for_fold(pool.table, fold, strict=False)
        expected = onto_left_out[onto_left_out["source_subject"] != fold]
        assert set(expected["index"]) <= set(allowed["index"])
    other = full.assign(person=["someone-else"] * len(full))
    with pytest.raises(UserError, match="same persons file"):
        PersonIndex.of(subset, source="megc.csv", known=[(other, "other.csv")])
