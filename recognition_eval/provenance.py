"""Who is in a synthetic clip, in the evaluation manifest's own persons — or a clear refusal.

The leakage guard compares persons, so every name a store records must first be resolved against the
evaluation manifest; a name that matches nothing must never pass silently (a store written with other subject
names would otherwise leak every fold). Resolution of one clip:

- source: the store's `source_subject` (a fold key "dataset/subject", or a bare id with `source_dataset`)
  mapped through the manifest's `person` column, plus the store's recorded `source_person` when it is a
  manifest person. Nothing resolves → error.
- target: likewise `target_subject` / `target_person`. A folder target ("folder/<stem>") resolves through a
  target-persons file (`--target-persons`, CSV `target,person`) or is declared of nobody in the manifest
  (`--external-targets`); otherwise → error.
- generator training: `generator_training_persons` and `generator_training_subjects`, each key a manifest
  person or subject. "training-free" (or an old store of a training-free kind with nothing recorded) is known
  to be nobody. Keys of a dataset the manifest does not contain are external (they cannot be a test person).
  An empty list of a learned generator is UNKNOWN: refused in strict mode.
Each clip keeps every person any of its names resolves to (the conservative union).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from augmenter.errors import UserError
from augmenter.manifest import clip_key, fold_key
from augmenter.plan import read_target_persons as read_plan_target_persons

TRAINING_FREE = "training-free"  # the sentinel a store records for a generator trained on nobody
# Kinds that learn nothing: an old store of one of these with no training list recorded is training-free.
TRAINING_FREE_KINDS: frozenset[str] = frozenset({"landmark-tps", "copy-onset", "demo-oracle", "demo-fresh"})
FOLDER_PREFIX = "folder/"


@dataclass(frozen=True)
class PersonIndex:
    """The evaluation manifest's names: fold key → person, the persons, the datasets and clip keys."""

    subject_person: dict[str, str]
    persons: frozenset[str]
    datasets: frozenset[str]
    clips: frozenset[str]
    source: str = "the evaluation manifest"

    @classmethod
    def of(
        cls,
        manifest: pd.DataFrame,
        source: str = "the evaluation manifest",
        known: Sequence[tuple[pd.DataFrame, str]] = (),
    ) -> PersonIndex:
        """From a manifest whose `person` column is filled (read_manifest fills it).

        `known`: (manifest, name) pairs of further manifests whose persons are KNOWN but not evaluated —
        typically the larger manifest a store was made from when the evaluation runs on a protocol subset.
        Their names resolve, their persons are nobody's test person; a subject they map to another person
        than the evaluation manifest does is an error.
        """
        subject_person: dict[str, str] = {}
        persons: set[str] = set()
        datasets: set[str] = set()
        clips: set[str] = set()
        for table, name in [(manifest, source), *known]:
            table_datasets = table["dataset"].astype(str)
            keys = [fold_key(d, s) for d, s in zip(table_datasets, table["subject"].astype(str), strict=True)]
            for key, person in zip(keys, table["person"].astype(str), strict=True):
                if subject_person.setdefault(key, person) != person:
                    raise UserError(
                        f"{name}: subject {key} is person {person!r} there but {subject_person[key]!r} in "
                        f"{source}; give both manifests the same persons file"
                    )
                persons.add(person)
            datasets.update(table_datasets)
            clips.update(clip_key(row) for row in table.to_dict("records"))
        names = [source, *(name for _, name in known)]
        return cls(
            subject_person=subject_person,
            persons=frozenset(persons),
            datasets=frozenset(datasets),
            clips=frozenset(clips),
            source=" + ".join(names),
        )

    def person_of(self, name: str) -> str | None:
        """A manifest person for a subject fold key or a person name; None when it names neither."""
        name = str(name).strip()
        if name in self.subject_person:
            return self.subject_person[name]
        return name if name in self.persons else None


@dataclass(frozen=True)
class Declarations:
    """What the user says about names the manifest cannot resolve (folder targets only)."""

    external_targets: bool = False  # folder faces are of nobody in the manifest
    target_persons: dict[str, str] = field(default_factory=dict)  # folder target → manifest person


def read_target_persons(path: str | Path) -> dict[str, str]:
    """The target-persons CSV that `generate --target-persons` reads, keyed as stores name folder targets
    ("folder/<stem>"); the target may be written as a file name, stem or path."""
    mapping: dict[str, str] = {}
    for target, person in read_plan_target_persons(path).items():
        stem = target[len(FOLDER_PREFIX) :] if target.startswith(FOLDER_PREFIX) else Path(target).stem
        mapping[FOLDER_PREFIX + stem] = person
    return mapping


def _keys(value: object) -> list[str]:
    return [part.strip() for part in str(value or "").split(";") if part.strip() and part.strip() != "nan"]


def _column(table: pd.DataFrame, name: str) -> list[str]:
    if name not in table.columns:
        return [""] * len(table)
    return ["" if str(v) == "nan" else str(v).strip() for v in table[name]]


def _as_fold_key(value: str, dataset: str) -> str:
    return value if "/" in value else fold_key(dataset, value)


def _resolved(index: PersonIndex, *names: str) -> frozenset[str]:
    """The manifest persons that any of the non-empty names resolves to."""
    return frozenset(p for p in (index.person_of(name) for name in names if name) if p is not None)


def _refuse(store: str, what: str, examples: Iterable[str], count: int, fix: str) -> UserError:
    shown = ", ".join(sorted(set(examples))[:3])
    return UserError(f"{store}: {count} clip(s) with {what} not in the evaluation manifest ({shown}); {fix}")


def _unknown_names_fix(index: PersonIndex, made_from: str | None, whose: str) -> str:
    """What to do about names the evaluation does not know: name the manifest the store was made from."""
    if made_from and Path(made_from).name not in index.source:
        return (
            f"the store was made from {made_from}: pass it as --known-manifest {Path(made_from).name} (its "
            f"persons become known; only {index.source}'s persons are tested)"
        )
    return f"evaluate with the manifest (and persons file) {whose} came from ({index.source})"


def resolve_store(
    table: pd.DataFrame,
    store: str,
    index: PersonIndex,
    declarations: Declarations = Declarations(),
    strict: bool = True,
    made_from: str | None = None,
) -> pd.DataFrame:
    """`table` (store_table of one store) plus `source_persons`, `target_persons`, `training_persons`
    (frozensets of manifest persons), `training_known` and `source_key` (the source's manifest clip key).

    Raises a one-line UserError naming the store for any name that resolves to nobody and was not declared,
    and (strict) for a learned generator whose training set is unknown. `made_from` (the manifest the store
    records it was generated from) is named in the fix when it is not among the index's manifests.
    """
    table = table.copy()
    n = len(table)
    source_subjects = _column(table, "source_subject")
    source_datasets = _column(table, "source_dataset")
    source_person_names = _column(table, "source_person")
    source_keys, source_persons, unresolved = [], [], []
    for subject, dataset, person, clip in zip(
        source_subjects, source_datasets, source_person_names, _column(table, "source_clip"), strict=True
    ):
        key = _as_fold_key(subject, dataset)
        found = _resolved(index, key, person)
        if not found:
            unresolved.append(key)
        source_persons.append(found)
        source_keys.append(f"{key}/{clip}")
    if unresolved:
        raise _refuse(
            store, "a source subject", unresolved, len(unresolved),
            _unknown_names_fix(index, made_from, "the store was generated from"),
        )  # fmt: skip

    target_persons, unresolved_targets, unresolved_folders = [], [], []
    for subject, person, target_id in zip(
        _column(table, "target_subject"), _column(table, "target_person"), _column(table, "target_id"),
        strict=True,
    ):  # fmt: skip
        folder = subject.startswith(FOLDER_PREFIX) or target_id.startswith(FOLDER_PREFIX)
        if folder:
            name = subject if subject.startswith(FOLDER_PREFIX) else target_id
            mapped = declarations.target_persons.get(name)
            found = set(_resolved(index, person))
            if mapped is not None:
                resolved = index.person_of(mapped)
                if resolved is None:
                    raise UserError(
                        f"{store}: --target-persons maps {name} to {mapped!r}, which is not a person of "
                        f"{index.source}; use one of its persons"
                    )
                found.add(resolved)
            if not found and not declarations.external_targets:
                unresolved_folders.append(name)
            target_persons.append(frozenset(found))
            continue
        dataset = target_id.split("/", 1)[0] if "/" in target_id else ""
        key = _as_fold_key(subject, dataset) if subject else ""
        found = _resolved(index, key, person)
        if not found:
            unresolved_targets.append(key or target_id)
        target_persons.append(frozenset(found))
    if unresolved_targets:
        raise _refuse(
            store, "a target subject", unresolved_targets, len(unresolved_targets),
            _unknown_names_fix(index, made_from, "the store's targets"),
        )  # fmt: skip
    if unresolved_folders:
        raise _refuse(
            store, "a folder target face", unresolved_folders, len(unresolved_folders),
            "map it to a manifest person with --target-persons FILE (CSV target,person), or pass "
            "--external-targets if the faces are of nobody in the manifest",
        )  # fmt: skip

    training_persons, known, unresolved_training = [], [], []
    kinds = _column(table, "generator_kind")
    for persons_value, subjects_value, kind in zip(
        _column(table, "generator_training_persons"), _column(table, "generator_training_subjects"), kinds,
        strict=True,
    ):  # fmt: skip
        keys = _keys(persons_value) + _keys(subjects_value)
        if TRAINING_FREE in keys or (not keys and kind in TRAINING_FREE_KINDS):
            training_persons.append(frozenset())
            known.append(True)
            continue
        found = set()
        for key in keys:
            person = index.person_of(key)
            if person is not None:
                found.add(person)
            elif "/" in key and key.split("/", 1)[0] not in index.datasets:
                continue  # another dataset's subject: not a person of this evaluation
            else:
                unresolved_training.append(key)
        training_persons.append(frozenset(found))
        known.append(bool(keys))
    if unresolved_training:
        raise _refuse(
            store, "a generator training person", unresolved_training, len(unresolved_training),
            f"the generator was trained under other names than {index.source}'s; evaluate with the manifest "
            "(and persons file) it was trained on",
        )  # fmt: skip
    if strict and n and not all(known):
        first = next(i for i, ok in enumerate(known) if not ok)
        raise UserError(
            f"{store}: generator {kinds[first] or '?'} records no training persons (unknown), so the strict "
            "leakage guard cannot clear it for any fold; record them (`train`, `checkpoint import "
            "--trained-on`) or pass --no-strict to drop the generator rule"
        )
    table["source_key"] = source_keys
    table["source_persons"] = source_persons
    table["target_persons"] = target_persons
    table["training_persons"] = training_persons
    table["training_known"] = known
    return table
