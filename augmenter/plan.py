"""The generation plan: which source clip moves which target face, as plain data.

A plan is a DataFrame that can be printed, diffed and tested before anything runs (the executor only runs it).
Selection order is a stable hash of each pairing, not a global shuffle, so a grown manifest keeps every
earlier pairing and its `pair_id`, and the same seed always gives the same plan.

The unit of independence is the PERSON: a source clip never moves a face of its own person (a manifest row's
person from its `person` column; a folder image is the person `folder/<stem>` unless a target-persons file
says who it shows), so no synthetic clip carries one person's motion on that same person's face.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from pathlib import Path

import pandas as pd

from augmenter.errors import UserError
from augmenter.manifest import clip_key, read_manifest, row_fold_key, row_person, with_persons

PLAN_COLUMNS: tuple[str, ...] = (
    "pair_id",
    "source_dataset",
    "source_subject",  # fold key "dataset/subject"
    "source_person",  # the person filmed in the source clip
    "source_clip",
    "target_id",  # manifest target: its clip key; folder target: "folder/<stem>"
    "target_subject",  # fold key ("folder/<stem>" for folder targets)
    "target_person",  # the person whose face is moved
    "label3",
    "au",
    "emotion",
    "seed",
    "generator",  # the generator checksum the pair is made with
)
TARGET_COLUMNS: tuple[str, ...] = (
    "target_id",
    "target_subject",
    "target_person",
    "target_kind",
    "target_path",
)
STRATEGIES: tuple[str, ...] = ("all", "balanced")
IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def pair_id_of(source_key: str, target_id: str, seed: int, generator_checksum: str) -> str:
    """A stable id of one pairing: the same inputs give the same id on every machine and every run."""
    text = f"{source_key}|{target_id}|{int(seed)}|{generator_checksum}"
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:20]


def targets_from_manifest(manifest: pd.DataFrame) -> pd.DataFrame:
    """Targets = the onset frames of another manifest's clips (one target per clip, its row's person)."""
    rows = [
        {
            "target_id": clip_key(row),
            "target_subject": row_fold_key(row),
            "target_person": row_person(row),
            "target_kind": "manifest",
            "target_path": "",
        }
        for row in with_persons(manifest).to_dict("records")
    ]
    return pd.DataFrame(rows, columns=list(TARGET_COLUMNS))


def read_target_persons(path: str | Path) -> dict[str, str]:
    """A target-persons CSV (columns `target,person`; target = an image file stem or path) → {target: person}.

    It says who a folder image shows, so a photo of a manifest person is never paired with that person's clips
    and the leakage guard can map it to that person's fold.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: target-persons file not found; write a CSV with columns target,person")
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in ("target", "person") if c not in table.columns]
    if missing:
        raise UserError(f"{path}: target-persons file lacks columns {missing}; write columns target,person")
    mapping: dict[str, str] = {}
    for number, row in enumerate(table.to_dict("records"), start=2):
        target, person = str(row["target"]).strip(), str(row["person"]).strip()
        if not target or not person:
            raise UserError(f"{path} row {number}: empty target or person; fill both or delete the row")
        if mapping.get(target, person) != person:
            raise UserError(
                f"{path} row {number}: target {target} is given two persons ({mapping[target]}, {person})"
            )
        mapping[target] = person
    return mapping


def _image_key(target: str) -> str:
    """A target-persons key as the file name or stem it names (the targets folder is flat: a path's last part
    identifies its image)."""
    return Path(target).name if ("/" in target or "\\" in target) else target


def targets_from_folder(folder: str | Path, persons: dict[str, str] | None = None) -> pd.DataFrame:
    """Targets = every face image in a folder; each image is its own subject ("folder/<stem>") and, unless
    `persons` (from `read_target_persons`) names it, its own person too.
    """
    folder = Path(folder)
    images = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise UserError(f"{folder}: no face images ({', '.join(IMAGE_SUFFIXES)}) in the targets folder")
    named = {_image_key(k): v for k, v in (persons or {}).items()}
    known = {p.name for p in images} | {p.stem for p in images}
    unknown = sorted(k for k in named if k not in known)
    if unknown:
        raise UserError(
            f"target-persons names {len(unknown)} image(s) not in {folder} (e.g. {unknown[0]!r}); "
            "use the file stems or paths of images in the targets folder"
        )
    rows = [
        {
            "target_id": f"folder/{p.stem}",
            "target_subject": f"folder/{p.stem}",
            "target_person": named.get(p.name) or named.get(p.stem) or f"folder/{p.stem}",
            "target_kind": "folder",
            "target_path": str(p.name),
        }
        for p in images
    ]
    return pd.DataFrame(rows, columns=list(TARGET_COLUMNS))


def load_targets(
    spec: str | Path, persons: str | Path | dict[str, str] | None = None
) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """Targets from a manifest CSV or an image folder; also returns the target manifest (None for folders).

    `persons`: a target-persons file (or its mapping) for a folder; a manifest carries its own persons.
    """
    path = Path(spec)
    if path.is_dir():
        mapping = read_target_persons(persons) if isinstance(persons, str | Path) else persons
        return targets_from_folder(path, mapping), None
    if path.is_file():
        if persons is not None:
            raise UserError(
                f"{path}: --target-persons is for a folder of images; a target manifest has a person column"
            )
        manifest = read_manifest(path)
        return targets_from_manifest(manifest), manifest
    raise UserError(f"{path}: --targets is neither a manifest CSV nor a folder of face images")


def _excluded(values: Iterable[str]) -> set[str]:
    return {str(v).strip() for v in values if str(v).strip()}


def _subject_matches(fold: str, excluded: set[str]) -> bool:
    """A subject is excluded by its fold key ("casme2/1") or its bare id as the manifest writes it ("1")."""
    return fold in excluded or fold.split("/", 1)[-1] in excluded


def make_plan(
    sources: pd.DataFrame,
    targets: pd.DataFrame,
    *,
    generator_checksum: str,
    seed: int = 0,
    strategy: str = "all",
    per_class: int | None = None,
    max_per_source: int | None = None,
    max_per_target: int | None = None,
    exclude_subjects: Sequence[str] = (),
    limit: int | None = None,
    include_unlabelled: bool = False,
) -> pd.DataFrame:
    """Pair every usable source clip with the targets of other persons.

    `all`: every allowed pairing (after the caps); `balanced`: up to `per_class` pairings per `label3` class.
    Sources without a 3-class label are left out (an evaluation under the 3-class protocol could not use their
    clips) unless `include_unlabelled` (never with `balanced`). Candidates are taken in the order of a hash of
    (pair, seed), so the choice is random-looking yet stable when the manifest grows. The plan's
    `attrs["unlabelled_sources"]` counts the sources left out for want of a label.
    """
    if strategy not in STRATEGIES:
        raise UserError(f"unknown --strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    if strategy == "balanced" and (per_class is None or per_class < 1):
        raise UserError("--strategy balanced needs --per-class N (N ≥ 1)")
    for name, value in (("--max-per-source", max_per_source), ("--max-per-target", max_per_target)):
        if value is not None and value < 1:
            raise UserError(f"{name} must be ≥ 1 (got {value})")
    keep_unlabelled = include_unlabelled and strategy != "balanced"
    excluded = _excluded(exclude_subjects)
    source_rows = []
    unlabelled = 0
    for row in with_persons(sources).to_dict("records"):  # an empty person means the row's own subject
        subject = row_fold_key(row)
        if _subject_matches(subject, excluded):
            continue
        if not str(row["label3"]) and not keep_unlabelled:
            unlabelled += 1
            continue
        source_rows.append((clip_key(row), subject, row_person(row), row))
    person_of = targets["target_person"] if "target_person" in targets.columns else targets["target_subject"]
    target_rows = [
        (str(target_id), str(target_subject), str(person or target_subject))
        for target_id, target_subject, person in zip(
            targets["target_id"], targets["target_subject"], person_of, strict=True
        )
        if not _subject_matches(str(target_subject), excluded)
    ]
    columns: dict[str, list] = {name: [] for name in PLAN_COLUMNS}
    for source_key, subject, person, row in source_rows:
        labels = (str(row["dataset"]), subject, person, str(row["clip_id"]))
        for target_id, target_subject, target_person in target_rows:
            if target_person == person:
                continue  # never move a face with its own person's motion: it would leak identity into folds
            columns["pair_id"].append(pair_id_of(source_key, target_id, seed, generator_checksum))
            for name, value in zip(
                ("source_dataset", "source_subject", "source_person", "source_clip"), labels, strict=True
            ):
                columns[name].append(value)
            columns["target_id"].append(target_id)
            columns["target_subject"].append(target_subject)
            columns["target_person"].append(target_person)
            columns["label3"].append(str(row["label3"]))
            columns["au"].append(str(row["au"]))
            columns["emotion"].append(str(row["emotion"]))
    if not columns["pair_id"]:
        empty = pd.DataFrame(columns=list(PLAN_COLUMNS))
        empty.attrs["unlabelled_sources"] = unlabelled
        return empty
    columns["seed"] = [int(seed)] * len(columns["pair_id"])
    columns["generator"] = [generator_checksum] * len(columns["pair_id"])
    frame = pd.DataFrame(columns, columns=list(PLAN_COLUMNS)).sort_values("pair_id", kind="stable")
    frame = frame.drop_duplicates("pair_id")  # a manifest listing one clip twice must not make it twice
    chosen = _select(frame, strategy, per_class, max_per_source, max_per_target)
    if limit is not None:
        chosen = chosen[: max(0, int(limit))]
    plan = frame.loc[chosen].sort_values(["source_subject", "source_clip", "target_id"], kind="stable")
    plan = plan.reset_index(drop=True)
    plan.attrs["unlabelled_sources"] = unlabelled
    return plan


def _select(
    frame: pd.DataFrame,
    strategy: str,
    per_class: int | None,
    max_per_source: int | None,
    max_per_target: int | None,
) -> list:
    """Greedy pass in hash order honouring the caps; returns the chosen row labels in that order."""
    per_source: dict[str, int] = {}
    per_target: dict[str, int] = {}
    per_label: dict[str, int] = {}
    chosen = []
    for label, source_subject, source_clip, target_id, label3 in zip(
        frame.index,
        frame["source_subject"],
        frame["source_clip"],
        frame["target_id"],
        frame["label3"],
        strict=True,
    ):
        source = f"{source_subject}/{source_clip}"
        if max_per_source is not None and per_source.get(source, 0) >= max_per_source:
            continue
        if max_per_target is not None and per_target.get(target_id, 0) >= max_per_target:
            continue
        if strategy == "balanced" and per_label.get(label3, 0) >= int(per_class or 0):
            continue
        per_source[source] = per_source.get(source, 0) + 1
        per_target[target_id] = per_target.get(target_id, 0) + 1
        per_label[label3] = per_label.get(label3, 0) + 1
        chosen.append(label)
    return chosen


def summarize_plan(plan: pd.DataFrame) -> dict[str, pd.Series]:
    """Counts per class, per source clip and per target, so a dry run shows what a job would make."""
    source = plan["source_subject"].astype(str) + "/" + plan["source_clip"].astype(str)
    label = plan["label3"].astype(str).replace("", "(none)")
    return {
        "per_class": label.value_counts().sort_index(),
        "per_source": source.value_counts().sort_index(),
        "per_target": plan["target_id"].value_counts().sort_index(),
    }


def format_summary(plan: pd.DataFrame, max_rows: int = 20) -> str:
    """The dry-run text: totals, then the three count tables (long tables cut at `max_rows`)."""
    if plan.empty:
        return "plan: 0 pairings (nothing to generate; check --targets, --exclude-subjects and the caps)"
    summary = summarize_plan(plan)
    lines = [
        f"plan: {len(plan)} pairings, {summary['per_source'].size} source clips, "
        f"{summary['per_target'].size} targets, {plan['source_person'].nunique()} source persons"
    ]
    unlabelled = int(plan.attrs.get("unlabelled_sources", 0))
    if unlabelled:
        lines.append(
            f"left out: {unlabelled} source clips without a 3-class label (--include-unlabelled keeps them)"
        )
    for name, counts in summary.items():
        lines.append(f"{name.replace('_', ' ')}:")
        shown = counts.head(max_rows)
        lines.extend(f"  {key}: {value}" for key, value in shown.items())
        if counts.size > max_rows:
            lines.append(f"  … {counts.size - max_rows} more")
    return "\n".join(lines)
