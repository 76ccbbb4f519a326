"""Disjoint person sets for benchmarks that select something: train, validation (choose), test (report).

The unit is the person of the manifest (`augmenter.manifest.row_person`): a demo subject that is a variant of
another (mirrored, re-lit) belongs to the same person, so it lands in the same set. The split is a seeded
shuffle of the sorted persons, so it is fixed for a seed and readable in the benchmark's output.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from augmenter.manifest import read_manifest, row_fold_key, row_person

# The demo corpus the benchmarks select on: the `augmenter demo` settings, another corpus seed (other clips of
# the same people than the demo's own corpus).
CORPUS_SEED = 1


@dataclass(frozen=True)
class PersonSplit:
    """Three disjoint person sets; `subjects_of` maps a set to its fold keys (for `exclude_subjects`)."""

    train: tuple[str, ...]
    validation: tuple[str, ...]
    test: tuple[str, ...]
    subjects: dict[str, str]  # fold key → person

    def subjects_of(self, persons: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(sorted(k for k, p in self.subjects.items() if p in persons))

    def as_dict(self) -> dict[str, list[str]]:
        return {"train": list(self.train), "validation": list(self.validation), "test": list(self.test)}


def split_persons(manifest: pd.DataFrame, n_validation: int, n_test: int, seed: int = 0) -> PersonSplit:
    """Test persons first, then validation, the rest train; every person in exactly one set."""
    subjects = {row_fold_key(row): row_person(row) for _, row in manifest.iterrows()}
    persons = sorted(set(subjects.values()))
    if n_validation + n_test > len(persons):
        raise ValueError(f"{len(persons)} persons cannot give {n_validation} validation + {n_test} test")
    order = [persons[i] for i in np.random.default_rng(seed).permutation(len(persons))]
    test = tuple(sorted(order[:n_test]))
    validation = tuple(sorted(order[n_test : n_test + n_validation]))
    train = tuple(sorted(order[n_test + n_validation :]))
    return PersonSplit(train, validation, test, subjects)


def demo_manifest(
    out: Path, subjects: int, clips_per_subject: int, size: int, frames: tuple[int, int]
) -> tuple:
    """(manifest path, corpus root, manifest frame) of a demo corpus under `out`, built once, with persons."""
    from augmenter.datasets import build_manifest
    from augmenter.demo import PERSONS_FILE, make_demo_corpus
    from augmenter.manifest import write_manifest

    corpus = out / "corpus"
    manifest = out / "manifest.csv"
    if not manifest.is_file():
        made = make_demo_corpus(corpus, subjects, clips_per_subject, size, CORPUS_SEED, frames)
        build = build_manifest(
            "casme2", made.annotations, made.root, check_frames=True, persons=made.root / PERSONS_FILE
        )
        write_manifest(build.frame, manifest)
    return manifest, corpus, read_manifest(manifest)
