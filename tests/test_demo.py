"""`augmenter demo`: person halves, a tiny real end-to-end run with every control arm and its re-run, and the
shipped-weights guard."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from rich.console import Console

from augmenter.demo.corpus import PERSONS_FILE, TRUTH_FILE, make_demo_corpus
from augmenter.demo.job import (
    ARM_ORDER,
    HALVES,
    DemoJob,
    DemoResult,
    export_demo_weights,
    gain_table,
    person_halves,
    run_demo,
    shipped_checkpoint,
    store_paths,
    subject_halves,
)
from augmenter.model.checkpoint import load_checkpoint


def test_subject_halves_interleave_in_natural_order() -> None:
    keys = [f"casme2/{i}" for i in (10, 2, 1, 12, 3, 11, 4, 5, 6, 7, 8, 9)]
    halves = subject_halves(keys)
    assert halves["a"] == [f"casme2/{i}" for i in (1, 3, 5, 7, 9, 11)]
    assert halves["b"] == [f"casme2/{i}" for i in (2, 4, 6, 8, 10, 12)]


def test_person_halves_keep_a_persons_variants_together() -> None:
    rows = pd.DataFrame(
        {
            "dataset": ["casme2"] * 5,
            "subject": ["1", "2", "3", "4", "5"],
            "person": ["ann", "bob", "cy", "ann", "bob"],  # subjects 4 and 5 are variants of 1 and 2
        }
    )
    halves = person_halves(rows)
    assert halves["a"]["persons"] == ["ann", "cy"] and halves["b"]["persons"] == ["bob"]
    assert halves["a"]["subjects"] == ["casme2/1", "casme2/3", "casme2/4"]
    assert halves["b"]["subjects"] == ["casme2/2", "casme2/5"]


def _tiny_job(out: Path) -> DemoJob:
    return DemoJob(
        out=out,
        workers=1,
        subjects=4,
        clips_per_subject=3,
        corpus_size=96,
        frames=(8, 12),
        train=True,
        train_steps=2,
        seeds=(0, 1, 2),
        epochs=1,
        score=True,
        console=Console(stderr=True, quiet=True),
    )


@pytest.fixture(scope="module")
def tiny_demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[DemoJob, DemoResult]:
    job = _tiny_job(tmp_path_factory.mktemp("demo") / "out")
    return job, run_demo(job)


def test_tiny_demo_runs_every_stage_and_arm_leakage_free(tiny_demo: tuple[DemoJob, DemoResult]) -> None:
    job, result = tiny_demo
    out = Path(job.out)
    persons = pd.read_csv(out / "corpus" / PERSONS_FILE, dtype=str)
    assert persons["person"].nunique() == 4  # 4 subjects of 4 different real people
    halves = person_halves(pd.read_csv(out / "manifest.csv", dtype=str))
    for half in HALVES:
        payload, _ = load_checkpoint(out / f"generator-{half}" / "checkpoint.pt")
        assert payload["step"] == 2
        assert not set(payload["training_subjects"]) & set(halves[half]["subjects"])
    for store in store_paths(out).values():
        assert (store.parent / f"{store.name}.complete").is_file()
    report = json.loads((out / "report" / "report.json").read_text())
    assert report["unit"] == "person" and report["n_seeds"] == 3
    summary = json.loads((out / "demo-summary.json").read_text())
    assert set(summary["arms"]) == set(ARM_ORDER)
    for name, arm in summary["arms"].items():
        assert arm["uf1"] is not None and arm["steps"] > 0, name
        if name != "baseline":
            low, high = arm["ci_uf1"]
            assert low <= arm["gain_uf1"] <= high and arm["p_uf1_holm"] >= arm["p_uf1"]
            assert arm["n_synthetic"] > 0 and arm["synthetic_mode"] == "add", name
            assert arm["real_draws"] == summary["arms"]["baseline"]["real_draws"], name
    assert summary["gain_uf1"] == pytest.approx(report["gain_uf1"])
    assert {"unit", "n_folds", "n_seeds", "resampled"} <= set(summary)
    # one domain: every store made at the size the real clips are cropped to for the recognizer
    assert report["domain"] == {"crop_size": 64, "path": report["domain"]["path"], "mismatched_arms": []}
    assert report["arm_roles"] == {
        "fresh": "ceiling", "oracle": "transfer-ceiling", "copy-onset": "floor", "shuffled": "control"
    }  # fmt: skip
    rendered = Console(record=True, width=200)
    rendered.print(gain_table(report))
    text = rendered.export_text()
    assert all(name in text for name in ARM_ORDER)
    assert result.preview.is_file() and result.preview.stat().st_size > 0


def test_fresh_clips_are_new_recordings_of_the_source_aus_on_the_target(
    tiny_demo: tuple[DemoJob, DemoResult],
) -> None:
    """demo-fresh draws a new clip (new plan, sensor noise, JPEG, the real crop path) of the source's AUs on
    another person; demo-oracle re-renders the source's own plan without the recording's noise."""
    import numpy as np

    from augmenter.demo.corpus import read_demo_truth
    from augmenter.store import read_clip, store_table

    job, _ = tiny_demo
    stores = store_paths(Path(job.out))
    fresh, oracle = store_table(stores["fresh"]), store_table(stores["oracle"])
    truth = {(str(int(c.subject)), c.filename): c for c in read_demo_truth(Path(job.out) / "corpus")}
    for row in fresh.to_dict("records"):
        source = truth[(row["source_subject"].split("/")[1], row["source_clip"])]
        assert row["label3"] == source.label3 and row["au_code"] == source.aus  # the source's label and AUs
    assert set(fresh["generator_training_persons"]) == {"training-free"}
    assert (fresh["source_person"] != fresh["target_person"]).all()

    def frame_to_frame(store: Path, table: pd.DataFrame) -> float:
        clips = [read_clip(store, int(i)).astype(float) for i in table["index"][:4]]
        assert all(c.shape[1:] == (64, 64, 3) for c in clips)
        return float(np.mean([np.abs(np.diff(c, axis=0)).mean() for c in clips]))

    # sensor noise and JPEG in every fresh frame; the oracle's frames change only where the face moves
    assert frame_to_frame(stores["fresh"], fresh) > 1.5 * frame_to_frame(stores["oracle"], oracle)


def test_tiny_demo_rerun_reuses_every_stage(tiny_demo: tuple[DemoJob, DemoResult]) -> None:
    job, first = tiny_demo
    report_before = (Path(job.out) / "report" / "report.json").read_bytes()
    again = run_demo(job)
    assert all(seconds == 0.0 for seconds in again.stage_seconds.values()), again.stage_seconds
    assert (Path(job.out) / "report" / "report.json").read_bytes() == report_before
    assert again.scores == first.scores


def test_generate_size_defaults_to_the_generators_own(tiny_demo: tuple[DemoJob, DemoResult]) -> None:
    from augmenter.generate import describe_generator

    job, _ = tiny_demo
    checkpoint = Path(job.out) / "generator-a" / "checkpoint.pt"
    assert describe_generator(str(checkpoint), None)["size"] == 64
    assert describe_generator("landmark-tps", None)["size"] == 128


def test_shipped_weights_only_for_their_corpus_and_never_for_a_training_person(
    tiny_demo: tuple[DemoJob, DemoResult], tmp_path: Path
) -> None:
    job, _ = tiny_demo
    corpus = Path(job.out) / "corpus"
    folder = tmp_path / "weights"
    written = export_demo_weights(Path(job.out), folder)
    assert [p.name for p in written] == ["generator-a.pt", "generator-b.pt"]
    payload, _ = load_checkpoint(written[0])
    assert "discriminator" not in payload and "optimizer_generator" not in payload
    halves = person_halves(pd.read_csv(Path(job.out) / "manifest.csv", dtype=str))
    a, b = halves["a"], halves["b"]
    assert shipped_checkpoint("a", corpus, a["subjects"], folder, a["persons"]) == folder / "generator-a.pt"
    # generator a was trained on half b: it must never serve half b's folds
    assert shipped_checkpoint("a", corpus, b["subjects"], folder, b["persons"]) is None
    other = tmp_path / "other-corpus"
    other.mkdir()
    (other / TRUTH_FILE).write_bytes((corpus / TRUTH_FILE).read_bytes() + b" ")
    assert shipped_checkpoint("a", other, a["subjects"], folder, a["persons"]) is None
    shutil.rmtree(folder)
    assert shipped_checkpoint("a", corpus, a["subjects"], folder, a["persons"]) is None


def test_packaged_weights_fit_the_default_demo_corpus(tmp_path: Path) -> None:
    """The weights in the package were trained on exactly the corpus `augmenter demo` builds, without the
    half of the persons each serves; if the corpus generator changes, `make demo-weights` must be re-run."""
    from augmenter.demo.corpus import read_demo_persons

    job = DemoJob()
    make_demo_corpus(
        tmp_path, job.subject_count(), job.clips_per_subject, job.corpus_size, job.seed, job.frames
    )
    persons = read_demo_persons(tmp_path)
    rows = pd.DataFrame(
        {"dataset": "casme2", "subject": [k.split("/")[1] for k in persons], "person": list(persons.values())}
    )
    for half, members in person_halves(rows).items():
        path = shipped_checkpoint(half, tmp_path, members["subjects"], held_out_persons=members["persons"])
        assert path is not None, f"shipped generator-{half} does not fit the corpus: make demo-weights"
        payload, _ = load_checkpoint(path)
        assert sorted(payload["training_subjects"]) == sorted(set(persons) - set(members["subjects"]))
