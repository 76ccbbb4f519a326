"""Person folds, the fail-closed guard on real Zarr stores, equal budgets, batched = one-by-one training."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from augmenter.errors import UserError
from augmenter.store import StoreWriter, write_clip
from recognition_eval.loso import (
    Budget,
    ModelTask,
    batch_schedule,
    budget_for,
    fold_seed,
    sorted_folds,
    train_models,
)
from recognition_eval.models import build_recognizer, recognizer_spec
from recognition_eval.provenance import Declarations, PersonIndex, read_target_persons
from recognition_eval.synthetic import (
    allowed_for_fold,
    cap_synthetic,
    load_store,
    parse_quality_bar,
    shuffle_labels,
)

CLASSES = ("negative", "positive", "surprise")
# casme2/4 is a variant of casme2/1 (the same human filmed twice): one person, "p1".
MANIFEST = pd.DataFrame(
    {
        "dataset": ["casme2"] * 8 + ["samm"] * 2,
        "subject": ["1", "1", "2", "2", "3", "3", "4", "4", "006", "006"],
        "person": ["p1", "p1", "p2", "p2", "p3", "p3", "p1", "p1", "samm/006", "samm/006"],
        "clip_id": [f"EP{i:02d}" for i in range(10)],
        "label3": ["negative", "positive", "surprise", "negative", "positive", "", "surprise", "negative",
                   "positive", "negative"],
    }
)  # fmt: skip
INDEX = PersonIndex.of(MANIFEST, source="test manifest")
PROTOCOL = {
    f"{d}/{s}/{c}": CLASSES.index(label)
    for d, s, c, label in MANIFEST[["dataset", "subject", "clip_id", "label3"]].itertuples(index=False)
    if label
}  # fmt: skip


def write_store(
    path: Path, rows: list[dict], kind: str = "fp-fomm", trained_on: str = "", trained_persons: str = ""
) -> Path:
    """A real store of 4-frame 16² clips; each row gives source (fold key, clip) and target (fold key or
    folder name), and optionally the recorded persons; quality_l1 = 0.1 × position.
    """
    plan = pd.DataFrame(
        {
            "pair_id": [f"{path.stem}-{i}" for i in range(len(rows))],
            "source_dataset": [r["source"].split("/")[0] for r in rows],
            "source_subject": [r["source"] for r in rows],
            "source_person": [r.get("source_person", "") for r in rows],
            "source_clip": [r["clip"] for r in rows],
            "target_id": [
                r["target"] if r["target"].startswith("folder/") else r["target"] + "/EP00" for r in rows
            ],
            "target_subject": [r["target"] for r in rows],
            "target_person": [r.get("target_person", "") for r in rows],
            "label3": [r.get("label3", "surprise") for r in rows],
            "au": "12",
            "emotion": "happiness",
            "seed": 0,
        }
    )
    generator = {
        "generator_kind": kind,
        "generator_checksum": path.stem,
        "generator_training_subjects": trained_on,
        "generator_training_persons": trained_persons,
    }
    writer = StoreWriter(path, size=16, max_frames=4, attrs=generator | {"size": 16, "seed": 0})
    indices = writer.append(plan, generator)
    rng = np.random.default_rng(0)
    for index in indices:
        write_clip(path, int(index), rng.integers(0, 255, (4, 16, 16, 3), dtype=np.uint8))
    writer.record([{"index": int(i), "n_frames": 4, "apex_index": 2, "quality_l1": 0.1 * int(i),
                    "quality_identity": float("nan"), "error": ""} for i in indices])  # fmt: skip
    writer.finish()
    return path


def _every_pair() -> list[dict]:
    """Every source clip of the manifest onto the onset face of every other subject."""
    subjects = sorted({f"{d}/{s}" for d, s in zip(MANIFEST["dataset"], MANIFEST["subject"], strict=True)})
    rows = []
    for d, s, clip in zip(MANIFEST["dataset"], MANIFEST["subject"], MANIFEST["clip_id"], strict=True):
        rows.extend({"source": f"{d}/{s}", "clip": clip, "target": t} for t in subjects if t != f"{d}/{s}")
    return rows


def _load(store: Path, strict: bool = True, declarations: Declarations = Declarations(), **kwargs: object):
    return load_store(store, INDEX, PROTOCOL, CLASSES, "label3", declarations, strict, **kwargs)  # type: ignore[arg-type]


def test_the_guard_works_on_persons_so_a_variant_subject_never_trains_its_own_fold(tmp_path: Path) -> None:
    store = write_store(tmp_path / "a.zarr", _every_pair(), trained_on="casme2/2;casme2/3")
    pool = _load(store)
    assert pool.counts["done"] == len(_every_pair())
    for person in sorted(set(MANIFEST["person"])):
        allowed = allowed_for_fold(pool.table, person, strict=True)
        subjects_of_person = {f"casme2/{s}" for s in MANIFEST["subject"][MANIFEST["person"] == person]}
        # Re-derived from the store's own strings: no source or target subject of the person, variants too.
        assert not set(allowed["source_subject"]) & subjects_of_person
        assert not set(allowed["target_subject"]) & subjects_of_person
        if person in ("p2", "p3"):  # the generator saw them
            assert allowed.empty
        else:
            assert len(allowed) > 0
    # casme2/4 is p1: a subject-level guard would have let casme2/4's clips train fold p1.
    assert allowed_for_fold(pool.table, "casme2/1", strict=True).equals(pool.table)  # not a person: no fold
    relaxed = allowed_for_fold(pool.table, "p2", strict=False)
    assert len(relaxed) > 0 and not (relaxed["source_subject"] == "casme2/2").any()


def test_labels_come_from_the_manifest_through_the_source_clip(tmp_path: Path) -> None:
    rows = [
        {
            "source": "casme2/1",
            "clip": "EP00",
            "target": "casme2/2",
            "label3": "positive",
        },  # manifest: negative
        {"source": "casme2/3", "clip": "EP05", "target": "casme2/2"},  # the protocol excludes EP05 (no class)
        {"source": "casme2/2", "clip": "EP02", "target": "casme2/3", "label3": "surprise"},
    ]
    pool = _load(write_store(tmp_path / "labels.zarr", rows, kind="landmark-tps"))
    assert pool.counts == {"done": 3, "source_excluded": 1, "quality": 0, "label_changed": 1, "kept": 2}
    assert pool.table["label"].tolist() == [CLASSES.index("negative"), CLASSES.index("surprise")]
    bar = parse_quality_bar("l1<=0.15")
    assert _load(tmp_path / "labels.zarr", quality_bars=[bar]).counts["quality"] == 1


def test_the_guard_fails_closed_on_names_it_cannot_place(tmp_path: Path) -> None:
    renamed = [{"source": "casme2/sub01", "clip": "EP00", "target": "casme2/2"}]
    with pytest.raises(UserError, match=r"renamed\.zarr: 1 clip\(s\) with a source subject .*casme2/sub01"):
        _load(write_store(tmp_path / "renamed.zarr", renamed, kind="landmark-tps"))
    target = [{"source": "casme2/1", "clip": "EP00", "target": "casme2/S02"}]
    with pytest.raises(UserError, match="target subject"):
        _load(write_store(tmp_path / "target.zarr", target, kind="landmark-tps"))
    trained = [{"source": "casme2/1", "clip": "EP00", "target": "casme2/2"}]
    with pytest.raises(UserError, match="generator training person"):
        _load(write_store(tmp_path / "train-name.zarr", trained, trained_on="casme2/02"))
    # A recorded person that is not a manifest person does not rescue an unknown subject either.
    mixed = [{"source": "casme2/x", "clip": "EP00", "target": "casme2/2", "source_person": "nobody"}]
    with pytest.raises(UserError, match="source subject"):
        _load(write_store(tmp_path / "mixed.zarr", mixed, kind="landmark-tps"))


def test_unknown_training_sets_are_refused_in_strict_mode_and_training_free_is_known(tmp_path: Path) -> None:
    rows = [{"source": "casme2/1", "clip": "EP00", "target": "casme2/2"}]
    unknown = write_store(tmp_path / "imported.zarr", rows, kind="fp-fomm")
    with pytest.raises(UserError, match=r"imported\.zarr: generator fp-fomm records no training persons"):
        _load(unknown)
    relaxed = _load(unknown, strict=False)
    assert relaxed.table["training_known"].tolist() == [False]
    assert len(allowed_for_fold(relaxed.table, "p3", strict=False)) == 1
    free = _load(write_store(tmp_path / "free.zarr", rows, kind="copy-onset", trained_on="training-free"))
    assert free.table["training_persons"].tolist() == [frozenset()]
    old_tps = _load(write_store(tmp_path / "old-tps.zarr", rows, kind="landmark-tps"))  # nothing recorded
    assert old_tps.table["training_known"].tolist() == [True]
    # Persons recorded by the generator win over nothing; another dataset's subjects are nobody here.
    recorded = _load(write_store(tmp_path / "rec.zarr", rows, trained_persons="p3;smic/s1", trained_on=""))
    assert recorded.table["training_persons"].tolist() == [frozenset({"p3"})]


def test_folder_targets_must_be_mapped_or_declared_external(tmp_path: Path) -> None:
    rows = [{"source": "casme2/2", "clip": "EP02", "target": "folder/alice"},
            {"source": "casme2/2", "clip": "EP03", "target": "folder/bob"}]  # fmt: skip
    store = write_store(tmp_path / "folder.zarr", rows, kind="landmark-tps")
    with pytest.raises(UserError, match=r"folder target face .*--target-persons .*--external-targets"):
        _load(store)
    external = _load(store, declarations=Declarations(external_targets=True))
    assert len(allowed_for_fold(external.table, "p1", strict=True)) == 2
    (tmp_path / "targets.csv").write_text("target,person\nimages/alice.jpg,p1\n")
    mapped = read_target_persons(tmp_path / "targets.csv")
    assert mapped == {"folder/alice": "p1"}
    with pytest.raises(UserError, match="folder/bob"):
        _load(store, declarations=Declarations(target_persons=mapped))
    both = _load(store, declarations=Declarations(external_targets=True, target_persons=mapped))
    assert allowed_for_fold(both.table, "p1", strict=True)["target_subject"].tolist() == ["folder/bob"]
    (tmp_path / "wrong.csv").write_text("target,person\nbob,nobody\n")
    with pytest.raises(UserError, match="not a person"):
        _load(store, declarations=Declarations(target_persons=read_target_persons(tmp_path / "wrong.csv")))


def test_shuffled_labels_stay_within_each_store_and_keep_its_class_counts(tmp_path: Path) -> None:
    a = _load(write_store(tmp_path / "sa.zarr", _every_pair(), kind="landmark-tps"))
    b = _load(write_store(tmp_path / "sb.zarr", _every_pair()[:20], kind="copy-onset"))
    table = pd.concat([a.table, b.table], ignore_index=True)
    shuffled = shuffle_labels(table, seed=0)
    for store in (str(tmp_path / "sa.zarr"), str(tmp_path / "sb.zarr")):
        mine, theirs = table[table["store"] == store], shuffled[shuffled["store"] == store]
        assert sorted(mine["label"]) == sorted(theirs["label"])
    assert (shuffled["label"] != table["label"]).mean() > 0.3
    assert shuffled["label"].tolist() == shuffle_labels(table, seed=0)["label"].tolist()
    capped = cap_synthetic(a.table, n_real=4, max_ratio=0.5, seed=1)
    assert len(capped) == 2 and capped.equals(cap_synthetic(a.table, 4, 0.5, seed=1))


PINNED_FOLD_SEEDS = [209996134, 2045661949]  # fold_seed(0 and 1, "casme2/1") as first published


def _separable(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Flow-like maps whose class sets the sign of u in a blob: learnable by every recognizer."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 3
    x = rng.normal(0, 0.3, (n, 3, 28, 28)).astype(np.float32)
    x[:, 0, 10:18, 10:18] += (labels - 1)[:, None, None] * 1.5
    return x, labels


def _tasks(folds: np.ndarray, synthetic: int, seeds: tuple[int, ...] = (0,)) -> list[ModelTask]:
    tasks = []
    for seed in seeds:
        for fold in sorted_folds(folds):
            train, test = np.flatnonzero(folds != fold), np.flatnonzero(folds == fold)
            tasks.append(ModelTask("baseline", seed, fold, train, test))
            rows = np.arange(synthetic) if fold != "0" else np.zeros(0, np.int64)  # fold 0: guard left none
            tasks.append(ModelTask("arm", seed, fold, train, test, rows, np.arange(len(rows)) % 3))
    return tasks


def test_replace_budget_every_arm_trains_the_same_steps_and_a_fold_without_synthetic_is_the_baseline() -> (
    None
):
    x, y = _separable(48, 0)
    folds = np.repeat(np.arange(6), 8).astype(str)
    spec = recognizer_spec("ststnet", epochs=4)
    budget = budget_for(spec, [40] * 6, synthetic_share=0.25, mode="replace")
    assert budget == Budget(steps=4 * 3, batch=16, synthetic_per_batch=4, mode="replace")
    assert budget.ratio == "12:4"
    tasks = _tasks(folds, synthetic=10)
    for task in tasks:
        positions, labels, used = batch_schedule(task, budget, y, len(x))
        assert positions.shape == labels.shape == (budget.steps, budget.batch)
        real = positions[positions < len(x)]
        assert set(real) <= set(task.train_rows)  # never a test-person clip
        assert used == (4 if len(task.synthetic_rows) else 0) and (positions >= len(x)).sum() == used * 12
    base, arm_without = (
        batch_schedule(tasks[0], budget, y, len(x)),
        batch_schedule(tasks[1], budget, y, len(x)),
    )
    assert np.array_equal(base[0], arm_without[0])  # fold 0: the arm got nothing → the baseline's batches
    outcomes = train_models(spec, tasks, x, y, x[:10] + 0.1, budget, 3, torch_threads=1)
    assert {o.steps for o in outcomes} == {budget.steps} and {o.batch for o in outcomes} == {16}
    assert {o.real_per_batch for o in outcomes if o.arm == "arm" and o.fold != "0"} == {12}
    first = {o.arm: o for o in outcomes if o.fold == "0"}
    assert np.array_equal(first["baseline"].predictions, first["arm"].predictions)
    assert first["baseline"].final_loss == first["arm"].final_loss
    with pytest.raises(ValueError, match="synthetic share"):
        budget_for(spec, [40], synthetic_share=1.0, mode="replace")


def test_add_budget_keeps_the_baselines_real_batches_and_puts_synthetic_on_top() -> None:
    x, y = _separable(48, 0)
    folds = np.repeat(np.arange(6), 8).astype(str)
    spec = recognizer_spec("ststnet", epochs=4)
    budget = budget_for(spec, [40] * 6, synthetic_share=0.5)  # add is the default
    assert budget == Budget(steps=12, batch=16, synthetic_per_batch=8, mode="add") and budget.ratio == "16:8"
    tasks = _tasks(folds, synthetic=10)
    for baseline, arm in zip(tasks[0::2], tasks[1::2], strict=True):
        base_positions, base_labels, _ = batch_schedule(baseline, budget, y, len(x))
        positions, labels, used = batch_schedule(arm, budget, y, len(x))
        width = 16 + used
        assert positions.shape == (12, width) and used == (8 if len(arm.synthetic_rows) else 0)
        # the first 16 of every batch ARE the baseline's batch, clip for clip
        assert np.array_equal(positions[:, :16], base_positions)
        assert np.array_equal(labels[:, :16], base_labels)
        assert (positions[:, 16:] >= len(x)).all()
    outcomes = train_models(spec, tasks, x, y, x[:10] + 0.1, budget, 3, torch_threads=1)
    seen = {(o.arm, o.fold): (o.steps * o.real_per_batch, o.steps * o.synthetic_per_batch) for o in outcomes}
    assert seen[("baseline", "1")] == (12 * 16, 0) and seen[("arm", "1")] == (12 * 16, 12 * 8)
    assert seen[("arm", "0")] == (12 * 16, 0)  # the guard left fold 0 without synthetic clips
    first = {o.arm: o for o in outcomes if o.fold == "0"}
    assert np.array_equal(first["baseline"].predictions, first["arm"].predictions)
    with pytest.raises(ValueError, match="synthetic mode"):
        Budget(steps=1, batch=4, mode="mix")


def test_batched_training_equals_one_model_at_a_time_and_learns() -> None:
    x, y = _separable(48, 0)
    folds = np.repeat(np.arange(6), 8).astype(str)
    spec = recognizer_spec("ststnet", epochs=10)
    budget = budget_for(spec, [40], synthetic_share=0.5)
    tasks = _tasks(folds, synthetic=10, seeds=(0, 1))
    batched = train_models(spec, tasks, x, y, x[:10] + 0.1, budget, 3, batched=True, torch_threads=1)
    single = train_models(spec, tasks, x, y, x[:10] + 0.1, budget, 3, batched=False, torch_threads=1)
    for a, b in zip(batched, single, strict=True):
        assert (a.fold, a.arm, a.seed) == (b.fold, b.arm, b.seed)
        assert np.array_equal(a.predictions, b.predictions)
        assert a.final_loss == pytest.approx(b.final_loss, abs=1e-4)
    accuracy = np.mean([np.mean(o.predictions == y[o.test_rows]) for o in batched])
    assert accuracy >= 0.75
    again = train_models(spec, tasks[:2], x, y, x[:10] + 0.1, budget, 3, batched=True, torch_threads=1)
    assert all(np.array_equal(a.predictions, b.predictions) for a, b in zip(again, batched[:2], strict=True))
    # BatchNorm under vmap: the ResNet's per-model running statistics (one step; equality as above).
    resnet = recognizer_spec("resnet", input_size=28)
    one_step = Budget(steps=2, batch=8)
    small = [
        ModelTask("baseline", 0, f, np.flatnonzero(folds != f), np.flatnonzero(folds == f)) for f in "01"
    ]
    a = train_models(resnet, small, x, y, x[:0], one_step, 3, batched=True, torch_threads=1)
    b = train_models(resnet, small, x, y, x[:0], one_step, 3, batched=False, torch_threads=1)
    assert [o.final_loss for o in a] == pytest.approx([o.final_loss for o in b], abs=1e-4)
    # pinned: cached models and every published table depend on this derivation staying the same
    assert [fold_seed(0, "casme2/1"), fold_seed(1, "casme2/1")] == PINNED_FOLD_SEEDS


def test_networks_take_their_documented_inputs() -> None:
    import torch

    for name, shape in (
        ("resnet", (2, 3, 64, 64)),
        ("ststnet", (2, 3, 28, 28)),
        ("offapexnet", (2, 2, 28, 28)),
    ):
        spec = recognizer_spec(name)
        assert (len(spec.channels), spec.input_size) == shape[1:3]
        assert build_recognizer(spec, 5)(torch.zeros(shape)).shape == (2, 5)
    assert sum(p.numel() for p in build_recognizer(recognizer_spec("ststnet"), 3).parameters()) == 1651
    with pytest.raises(UserError, match="unknown recognizer"):
        recognizer_spec("vgg")


def test_folds_come_in_natural_order() -> None:
    keys = ["casme2/10", "casme2/2", "samm/006", "casme2/1", "smic/s10", "smic/s3", "casme2/2"]
    assert sorted_folds(keys) == ["casme2/1", "casme2/2", "casme2/10", "samm/006", "smic/s3", "smic/s10"]


def test_folds_of_whole_persons_keep_every_person_on_one_side_and_the_guard_covers_the_group(
    tmp_path: Path,
) -> None:
    from recognition_eval.evaluate import group_persons

    persons = [f"casme2/{k}" for k in range(1, 24)] * 2  # a person appears once per clip
    folds = group_persons(persons, 5)
    assert set(folds) == set(persons) and group_persons(persons, 5) == folds  # every person, same every run
    sizes = sorted(pd.Series(folds).value_counts())
    assert len(sizes) == 5 and sizes[-1] - sizes[0] <= 1  # 23 persons → folds of 4 and 5
    assert group_persons(persons, None) == {p: p for p in set(persons)}  # LOPO: each person its own fold
    with pytest.raises(UserError, match="--person-folds"):
        group_persons(persons, 1)
    # two generators, each trained on one half: no fold mixes the halves; 12 + 11 persons → 3 + 2 folds
    seen = {p: ("store-b.zarr",) if k % 2 else ("store-a.zarr",) for k, p in enumerate(sorted(set(persons)))}
    halves = group_persons(persons, 5, seen)
    for fold in set(halves.values()):
        assert len({seen[p] for p, f in halves.items() if f == fold}) == 1, fold
    assert sorted(pd.Series(halves).value_counts()) == [4, 4, 4, 5, 6]
    pool = _load(write_store(tmp_path / "g.zarr", _every_pair(), trained_on="casme2/2"))
    group = allowed_for_fold(pool.table, ["p1", "p3"])
    one_by_one = allowed_for_fold(allowed_for_fold(pool.table, "p1"), "p3")
    assert group["index"].tolist() == one_by_one["index"].tolist() and len(group) > 0
    for column in ("source_persons", "target_persons", "training_persons"):
        assert not any({"p1", "p3"} & set(persons) for persons in group[column])
