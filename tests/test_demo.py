"""`augmenter demo`: the halves, a tiny real end-to-end run and its re-run, and the shipped-weights guard."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from rich.console import Console

from augmenter.demo.corpus import TRUTH_FILE, make_demo_corpus
from augmenter.demo.job import (
    HALVES,
    DemoJob,
    DemoResult,
    export_demo_weights,
    run_demo,
    shipped_checkpoint,
    subject_halves,
)
from augmenter.model.checkpoint import load_checkpoint


def test_subject_halves_interleave_in_natural_order() -> None:
    keys = [f"casme2/{i}" for i in (10, 2, 1, 12, 3, 11, 4, 5, 6, 7, 8, 9)]
    halves = subject_halves(keys)
    assert halves["a"] == [f"casme2/{i}" for i in (1, 3, 5, 7, 9, 11)]
    assert halves["b"] == [f"casme2/{i}" for i in (2, 4, 6, 8, 10, 12)]


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
        console=Console(stderr=True, quiet=True),
    )


@pytest.fixture(scope="module")
def tiny_demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[DemoJob, DemoResult]:
    job = _tiny_job(tmp_path_factory.mktemp("demo") / "out")
    return job, run_demo(job)


def test_tiny_demo_runs_every_stage_leakage_free(tiny_demo: tuple[DemoJob, DemoResult]) -> None:
    job, result = tiny_demo
    out = Path(job.out)
    assert set(result.scores) == {"fp-fomm-a", "fp-fomm-b", "landmark-tps"}
    for name in ("fp-fomm-a", "fp-fomm-b"):
        assert result.scores[name]["generator"]["n_clips"] == 6  # its 2 held-out subjects × 3 clips
    for half in HALVES:
        payload, _ = load_checkpoint(out / f"generator-{half}" / "checkpoint.pt")
        held_out = set(subject_halves([f"casme2/{i}" for i in range(1, 5)])[half])
        assert payload["step"] == 2 and not set(payload["training_subjects"]) & held_out
    report = json.loads((out / "report" / "report.json").read_text())
    assert report["baseline"]["uf1"] is not None and report["augmented"]["uf1"] is not None
    assert report["n_synthetic_used"] > 0
    assert result.preview.is_file() and result.preview.stat().st_size > 0
    summary = json.loads((out / "demo-summary.json").read_text())
    assert summary["gain_uf1"] == pytest.approx(report["gain_uf1"])


def test_tiny_demo_rerun_reuses_every_stage(tiny_demo: tuple[DemoJob, DemoResult]) -> None:
    job, first = tiny_demo
    report_before = (Path(job.out) / "report" / "report.json").read_bytes()
    again = run_demo(job)
    reused = {name: s for name, s in again.stage_seconds.items() if not name.startswith("generate")}
    assert all(seconds == 0.0 for seconds in reused.values()), reused
    assert (Path(job.out) / "report" / "report.json").read_bytes() == report_before
    assert again.scores == first.scores


def test_generate_size_defaults_to_the_generators_own(tiny_demo: tuple[DemoJob, DemoResult]) -> None:
    from augmenter.generate import describe_generator

    job, _ = tiny_demo
    checkpoint = Path(job.out) / "generator-a" / "checkpoint.pt"
    assert describe_generator(str(checkpoint), None)["size"] == 64
    assert describe_generator("landmark-tps", None)["size"] == 128


def test_shipped_weights_only_for_their_corpus_and_never_for_a_training_subject(
    tiny_demo: tuple[DemoJob, DemoResult], tmp_path: Path
) -> None:
    job, _ = tiny_demo
    corpus = Path(job.out) / "corpus"
    folder = tmp_path / "weights"
    written = export_demo_weights(Path(job.out), folder)
    assert [p.name for p in written] == ["generator-a.pt", "generator-b.pt"]
    payload, _ = load_checkpoint(written[0])
    assert "discriminator" not in payload and "optimizer_generator" not in payload
    halves = subject_halves([f"casme2/{i}" for i in range(1, 5)])
    assert shipped_checkpoint("a", corpus, halves["a"], folder) == folder / "generator-a.pt"
    # generator a was trained on half b: it must never serve half b's folds
    assert shipped_checkpoint("a", corpus, halves["b"], folder) is None
    other = tmp_path / "other-corpus"
    other.mkdir()
    (other / TRUTH_FILE).write_bytes((corpus / TRUTH_FILE).read_bytes() + b" ")
    assert shipped_checkpoint("a", other, halves["a"], folder) is None
    shutil.rmtree(folder)
    assert shipped_checkpoint("a", corpus, halves["a"], folder) is None


def test_packaged_weights_fit_the_default_demo_corpus(tmp_path: Path) -> None:
    """The weights in the package were trained on exactly the corpus `augmenter demo` builds, without the
    half each serves; if the corpus generator changes, `make demo-weights` must be re-run."""
    job = DemoJob()
    make_demo_corpus(tmp_path, job.subjects, job.clips_per_subject, job.corpus_size, job.seed, job.frames)
    keys = [f"casme2/{i}" for i in range(1, job.subjects + 1)]
    for half, held_out in subject_halves(keys).items():
        path = shipped_checkpoint(half, tmp_path, held_out)
        assert path is not None, f"shipped generator-{half} does not fit the corpus: make demo-weights"
        payload, _ = load_checkpoint(path)
        assert sorted(payload["training_subjects"]) == sorted(set(keys) - set(held_out))
