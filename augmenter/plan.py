"""The generation plan: which source clip moves which target face, as plain data.

A plan is a DataFrame that can be printed, diffed and tested before anything runs (the executor only runs it).
Selection order is a stable hash of each pairing, not a global shuffle, so a grown manifest keeps every
earlier pairing and its `pair_id`, and the same seed always gives the same plan.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from pathlib import Path

import pandas as pd

from augmenter.errors import UserError
from augmenter.manifest import clip_key, read_manifest, row_fold_key

PLAN_COLUMNS: tuple[str, ...] = (
    "pair_id",
    "source_dataset",
    "source_subject",  # fold key "dataset/subject"
    "source_clip",
    "target_id",  # manifest target: its clip key; folder target: "folder/<stem>"
    "target_subject",  # fold key ("folder/<stem>" for folder targets)
    "label3",
    "au",
    "emotion",
    "seed",
    "generator",  # the generator checksum the pair is made with
)
TARGET_COLUMNS: tuple[str, ...] = ("target_id", "target_subject", "target_kind", "target_path")
STRATEGIES: tuple[str, ...] = ("all", "balanced")
IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def pair_id_of(source_key: str, target_id: str, seed: int, generator_checksum: str) -> str:
    """A stable id of one pairing: the same inputs give the same id on every machine and every run."""
    text = f"{source_key}|{target_id}|{int(seed)}|{generator_checksum}"
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:20]


def targets_from_manifest(manifest: pd.DataFrame) -> pd.DataFrame:
    """Targets = the onset frames of another manifest's clips (one target per clip)."""
    rows = [
        {
            "target_id": clip_key(row),
            "target_subject": row_fold_key(row),
            "target_kind": "manifest",
            "target_path": "",
        }
        for _, row in manifest.iterrows()
    ]
    return pd.DataFrame(rows, columns=list(TARGET_COLUMNS))


def targets_from_folder(folder: str | Path) -> pd.DataFrame:
    """Targets = every face image in a folder; each image is its own subject ("folder/<stem>")."""
    folder = Path(folder)
    images = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise UserError(f"{folder}: no face images ({', '.join(IMAGE_SUFFIXES)}) in the targets folder")
    rows = [
        {
            "target_id": f"folder/{p.stem}",
            "target_subject": f"folder/{p.stem}",
            "target_kind": "folder",
            "target_path": str(p.name),
        }
        for p in images
    ]
    return pd.DataFrame(rows, columns=list(TARGET_COLUMNS))


def load_targets(spec: str | Path) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """Targets from a manifest CSV or an image folder; also returns the target manifest (None for folders)."""
    path = Path(spec)
    if path.is_dir():
        return targets_from_folder(path), None
    if path.is_file():
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
) -> pd.DataFrame:
    """Pair every usable source clip with targets of other subjects.

    `all`: every allowed pairing (after the caps); `balanced`: up to `per_class` pairings per `label3` class
    (sources without a 3-class label are left out). Candidates are taken in the order of a hash of
    (pair, seed), so the choice is random-looking yet stable when the manifest grows.
    """
    if strategy not in STRATEGIES:
        raise UserError(f"unknown --strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    if strategy == "balanced" and (per_class is None or per_class < 1):
        raise UserError("--strategy balanced needs --per-class N (N ≥ 1)")
    for name, value in (("--max-per-source", max_per_source), ("--max-per-target", max_per_target)):
        if value is not None and value < 1:
            raise UserError(f"{name} must be ≥ 1 (got {value})")
    excluded = _excluded(exclude_subjects)
    source_rows = []
    for _, row in sources.iterrows():
        subject = row_fold_key(row)
        if _subject_matches(subject, excluded):
            continue
        if strategy == "balanced" and not str(row["label3"]):
            continue
        source_rows.append((clip_key(row), subject, row))
    target_rows = [
        (str(t["target_id"]), str(t["target_subject"]))
        for _, t in targets.iterrows()
        if not _subject_matches(str(t["target_subject"]), excluded)
    ]
    candidates = []
    for source_key, subject, row in source_rows:
        for target_id, target_subject in target_rows:
            if target_subject == subject:
                continue  # never move a face with its own subject's motion: it would leak identity into LOSO
            pair_id = pair_id_of(source_key, target_id, seed, generator_checksum)
            candidates.append(
                {
                    "pair_id": pair_id,
                    "source_dataset": str(row["dataset"]),
                    "source_subject": subject,
                    "source_clip": str(row["clip_id"]),
                    "target_id": target_id,
                    "target_subject": target_subject,
                    "label3": str(row["label3"]),
                    "au": str(row["au"]),
                    "emotion": str(row["emotion"]),
                    "seed": int(seed),
                    "generator": generator_checksum,
                }
            )
    if not candidates:
        return pd.DataFrame(columns=list(PLAN_COLUMNS))
    frame = pd.DataFrame(candidates, columns=list(PLAN_COLUMNS)).sort_values("pair_id", kind="stable")
    frame = frame.drop_duplicates("pair_id")  # a manifest listing one clip twice must not make it twice
    chosen = _select(frame, strategy, per_class, max_per_source, max_per_target)
    if limit is not None:
        chosen = chosen[: max(0, int(limit))]
    plan = frame.loc[chosen].sort_values(["source_subject", "source_clip", "target_id"], kind="stable")
    return plan.reset_index(drop=True)


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
        f"{summary['per_target'].size} targets, {plan['source_subject'].nunique()} source subjects"
    ]
    for name, counts in summary.items():
        lines.append(f"{name.replace('_', ' ')}:")
        shown = counts.head(max_rows)
        lines.extend(f"  {key}: {value}" for key, value in shown.items())
        if counts.size > max_rows:
            lines.append(f"  … {counts.size - max_rows} more")
    return "\n".join(lines)
