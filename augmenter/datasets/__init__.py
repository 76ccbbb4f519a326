"""Dataset readers: each dataset's own annotations (sheet or folder tree) → one normalised manifest.

`build_manifest` is the entry point used by the CLI and by Python callers alike. Policy on bad rows
(documented in manifests/README.md): every bad row is reported as a `Problem`. Timing faults are
repaired by fixed rules and the row kept, flagged (apex_estimated, timing_repaired): those are
documented repairs. An unknown emotion is kept with label3 "", an unreadable AU token is kept in
au_notes; rows without a clip id, a subject or frames on disk are dropped: those are errors.
`strict=True` turns the first error (never a documented repair) into a UserError.
"""

from __future__ import annotations

import importlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from rich.console import Console
from rich.table import Table

from augmenter.datasets import megc2019
from augmenter.datasets.common import (
    NOT_IN_ANNOTATIONS,
    Issues,
    check_frames_on_disk,
    drop_duplicates,
    to_frame,
)
from augmenter.errors import UserError
from augmenter.manifest import (
    LABEL3_CLASSES,
    Problem,
    fold_key,
    read_manifest,
    read_person_map,
    with_persons,
    write_manifest,
)

DATASETS: tuple[str, ...] = ("casme2", "samm", "smic", "casme3", "mmew", "dfme", "casme1")
PROTOCOLS: tuple[str, ...] = (megc2019.PROTOCOL,)
_NEEDS_ANNOTATIONS = {"casme2", "samm", "casme3", "mmew", "dfme", "casme1"}
PROBLEM_COLUMNS: tuple[str, ...] = ("file", "row", "clip", "severity", "reason", "outcome", "original")


@dataclass
class ManifestBuild:
    """A built manifest, the problems met on the way, and (with a protocol) how many GT rows were matched."""

    dataset: str
    frame: pd.DataFrame
    problems: list[Problem] = field(default_factory=list)
    protocol: str | None = None
    gt_rows: int | None = None
    gt_matched: int | None = None

    def problems_by_reason(self) -> dict[str, int]:
        """Problem counts by kind (the reason's text before the first ': ')."""
        return dict(Counter(problem.kind for problem in self.problems).most_common())

    @property
    def errors(self) -> list[Problem]:
        """The problems that are not documented repairs (what --strict refuses)."""
        return [problem for problem in self.problems if not problem.repair]

    def class_counts(self) -> dict[str, int]:
        """Rows per 3-class label ("" = outside the 3-class protocol), in a fixed order."""
        counts = Counter(self.frame["label3"])
        return {label: int(counts.get(label, 0)) for label in (*LABEL3_CLASSES, "")}

    def print_summary(self, console: Console, max_problems: int = 20) -> None:
        """A Rich summary for people: rows kept, problems by kind (and the first few), classes, GT matches."""
        summary = self.summary()
        title = f"{self.dataset} manifest" + (f" ({self.protocol})" if self.protocol else "")
        table = Table(title=title, show_header=False)
        table.add_row("rows kept", str(summary["rows"]))
        table.add_row("subjects", str(summary["subjects"]))
        table.add_row("apex estimated", str(summary["apex_estimated"]))
        table.add_row("timing repaired", str(summary["timing_repaired"]))
        if self.protocol is not None:
            table.add_row("GT rows matched", f"{self.gt_matched} / {self.gt_rows}")
        classes = ", ".join(f"{label or 'other'} {n}" for label, n in self.class_counts().items())
        table.add_row("classes", classes)
        repairs = len(self.problems) - len(self.errors)
        table.add_row(
            "problems", f"{len(self.problems)} ({repairs} documented repair(s), {len(self.errors)} error(s))"
        )
        for reason, count in self.problems_by_reason().items():
            table.add_row(f"  {reason}", str(count))
        console.print(table)
        for problem in self.problems[:max_problems]:
            console.print(f"[yellow]problem:[/yellow] {problem}", highlight=False, soft_wrap=True)
        if len(self.problems) > max_problems:
            console.print(f"... and {len(self.problems) - max_problems} more (see the .problems.csv file)")

    def summary(self) -> dict[str, object]:
        """Numbers a user checks after a build: rows kept, subjects, problems by kind, classes, GT matches."""
        result: dict[str, object] = {
            "dataset": self.dataset,
            "rows": len(self.frame),
            "subjects": int(self.frame["subject"].nunique()),
            "apex_estimated": int(self.frame["apex_estimated"].sum()),
            "timing_repaired": int(self.frame["timing_repaired"].sum()),
            "problems": len(self.problems),
            "repairs": len(self.problems) - len(self.errors),
            "errors": len(self.errors),
            "problems_by_reason": self.problems_by_reason(),
            "class_counts": self.class_counts(),
        }
        if self.protocol is not None:
            result.update(protocol=self.protocol, gt_rows=self.gt_rows, gt_matched=self.gt_matched)
        return result


def _reader(dataset: str):
    if dataset not in DATASETS:
        raise UserError(f"unknown dataset {dataset!r}; use one of {', '.join(DATASETS)}")
    return importlib.import_module(f"augmenter.datasets.{dataset}").read_records


def _apply_protocol(
    dataset: str,
    records: list[tuple[int | None, dict]],
    issues: Issues,
    gt: Path | None,
    annotations: Path | None,
) -> tuple[list[tuple[int | None, dict]], list[Problem], int, int]:
    """Keep exactly the GT's rows (in GT order, label3 from the GT); name every GT row that was not found."""
    if dataset not in megc2019.DATASETS:
        raise UserError(
            f"protocol megc2019 covers {', '.join(megc2019.DATASETS)}, not {dataset!r}; drop --protocol"
        )
    gt_rows = megc2019.read_gt(gt if gt is not None else megc2019.BUNDLED_GT, dataset)
    by_key = {
        record_key: (row, record)
        for row, record in records
        for record_key in [(record["subject"], record["clip_id"])]
    }
    wanted = {row.key for row in gt_rows}
    problems = [problem for problem, key in issues.entries if key is None or key in wanted]
    reported = {key for _, key in issues.entries if key is not None}
    selected: list[tuple[int | None, dict]] = []
    for gt_row in gt_rows:
        if gt_row.key in by_key:
            row, record = by_key[gt_row.key]
            selected.append((row, {**record, "label3": gt_row.label3}))
        elif gt_row.key not in reported:
            source = annotations if annotations is not None else "the dataset root"
            problems.append(
                Problem(
                    str(gt),
                    gt_row.line,
                    gt_row.filename,
                    f"{NOT_IN_ANNOTATIONS}: {gt_row.dataset},{gt_row.subject},{gt_row.filename} "
                    f"(looked for subject {gt_row.key[0]!r}, clip {gt_row.key[1]!r}) not found in {source}",
                )
            )
    return selected, problems, len(gt_rows), len(selected)


def build_manifest(
    dataset: str,
    annotations: Path | None,
    root: Path | None,
    *,
    check_frames: bool = False,
    strict: bool = False,
    protocol: str | None = None,
    gt: Path | None = None,
    variant: str | None = None,
    persons: Path | None = None,
) -> ManifestBuild:
    """Read one dataset's annotations into a manifest, reporting (or, with strict, refusing) every bad row.

    `root` is the dataset root the manifest's frames_dir paths are relative to; it is needed for
    SMIC (folders are the annotation) and for `check_frames`, and lets timing repairs use the frames
    on disk. `variant` picks CASME II's frame folder ("raw" or "cropped"; default: the first present
    under root). With `protocol="megc2019"` the rows are exactly the GT file's rows. `persons` is a
    CSV `subject,person[,dataset]` naming the human being behind each subject (default: one person
    per subject).
    """
    read_records = _reader(dataset)
    person_map = read_person_map(persons, dataset) if persons is not None else None
    annotations = Path(annotations) if annotations is not None else None
    root = Path(root) if root is not None else None
    if dataset in _NEEDS_ANNOTATIONS and annotations is None:
        raise UserError(f"dataset {dataset} needs its annotation sheet: pass --annotations FILE")
    if check_frames and root is None:
        raise UserError("--check-frames needs --root, the folder the dataset's frames are under")
    if root is not None and not root.is_dir():
        raise UserError(f"{root}: dataset root is not a folder; pass --root the folder holding the frames")
    if protocol is not None and protocol not in PROTOCOLS:
        raise UserError(f"unknown protocol {protocol!r}; use one of {', '.join(PROTOCOLS)}")
    options = {"variant": variant} if dataset == "casme2" else {}
    if variant is not None and dataset != "casme2":
        raise UserError(f"--variant applies to casme2 only, not {dataset}")
    records, issues = read_records(annotations, root, check_frames=check_frames, **options)
    records = drop_duplicates(records, issues)
    if person_map:
        _check_persons(person_map, dataset, {record["subject"] for _, record in records}, persons)
    gt_rows = gt_matched = None
    if protocol is not None:
        records, problems, gt_rows, gt_matched = _apply_protocol(dataset, records, issues, gt, annotations)
    else:
        problems = [problem for problem, _ in issues.entries]
    errors = [problem for problem in problems if not problem.repair]
    if strict and errors:
        first = errors[0]
        repairs = len(problems) - len(errors)
        also = f", besides {repairs} documented repair(s)" if repairs else ""
        raise UserError(
            f"{first.where()}: {first.reason} (--strict: stopped at the first of {len(errors)} error(s)"
            f"{also}; nothing written; fix the sheet or drop --strict to keep going and list them all)"
        )
    if not records:
        first = f"; first problem: {problems[0].where()}: {problems[0].reason}" if problems else ""
        source = annotations if annotations is not None else root
        raise UserError(f"{source}: no usable {dataset} clips found ({len(problems)} problem(s){first})")
    frame = to_frame(record for _, record in records)
    frame = with_persons(frame.drop(columns="person"), person_map)[list(frame.columns)]
    return ManifestBuild(dataset, frame, problems, protocol, gt_rows, gt_matched)


def _check_persons(person_map: dict[str, str], dataset: str, subjects: set[str], path: Path | None) -> None:
    """A persons entry for this dataset that names no subject of the sheet is a typo (`01` for `1`), not a
    choice: refuse it rather than leave that subject its own person silently."""
    known = {fold_key(dataset, subject) for subject in subjects}
    unknown = sorted(key for key in person_map if key.startswith(f"{dataset}/") and key not in known)
    if unknown:
        example = sorted(known)[0] if known else f"{dataset}/..."
        raise UserError(
            f"{path}: {len(unknown)} subject(s) not in the {dataset} annotations, first {unknown[0]!r} "
            f"(subjects are written like {example!r}); fix the persons file"
        )


def write_problems(problems: list[Problem], path: Path) -> Path:
    """All problems as a CSV (PROBLEM_COLUMNS; header only when there are none), written atomically.

    `severity` is "repair" (a documented rule was applied and the row kept, flagged) or "error"; `original`
    holds the sheet's own timing cells when a repair changed them.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame(
        [(p.file, p.row, p.clip, p.severity, p.reason, p.outcome, p.original) for p in problems],
        columns=list(PROBLEM_COLUMNS),
    )
    frame["row"] = frame["row"].astype("Int64")
    tmp = path.with_name(path.name + ".tmp")
    frame.to_csv(tmp, index=False)
    tmp.replace(path)
    return path


def problems_path(out: Path) -> Path:
    """Where `build_manifest_file` puts the problem list: OUT.csv → OUT.problems.csv."""
    out = Path(out)
    return out.with_name(out.stem + ".problems.csv")


def build_manifest_file(
    dataset: str,
    annotations: Path | None,
    root: Path | None,
    out: Path,
    *,
    check_frames: bool = False,
    strict: bool = False,
    protocol: str | None = None,
    gt: Path | None = None,
    variant: str | None = None,
    persons: Path | None = None,
) -> ManifestBuild:
    """`build_manifest`, then write the manifest to `out` and its problems to OUT.problems.csv (always: a
    header only when the build was clean), both atomically.

    Nothing is written when the build fails (strict, unreadable file), so an earlier good manifest survives.
    """
    build = build_manifest(
        dataset,
        annotations,
        root,
        check_frames=check_frames,
        strict=strict,
        protocol=protocol,
        gt=gt,
        variant=variant,
        persons=persons,
    )
    write_manifest(build.frame, out)
    write_problems(build.problems, problems_path(out))
    return build


def check_manifest(manifest: Path, root: Path) -> tuple[pd.DataFrame, list[Problem]]:
    """Check every clip of a manifest against the frames under `root` (folder, frames onset..offset, apex).

    Returns the manifest and one problem per clip whose frames are absent or incomplete.
    """
    frame = read_manifest(manifest)
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{root}: dataset root is not a folder; pass --root the folder holding the frames")
    issues = Issues(str(manifest))
    for index, row in enumerate(frame.to_dict("records"), start=2):
        check_frames_on_disk(dict(row), root, index, issues, drop=False)
    return frame, [problem for problem, _ in issues.entries]


def read_dataset(
    dataset: str,
    annotations: Path | None,
    root: Path | None = None,
    *,
    check_frames: bool = False,
    strict: bool = False,
) -> tuple[pd.DataFrame, list[Problem]]:
    """The reader of one dataset as (manifest DataFrame, problems); same rules as `build_manifest`."""
    build = build_manifest(dataset, annotations, root, check_frames=check_frames, strict=strict)
    return build.frame, build.problems


__all__ = [
    "DATASETS",
    "PROBLEM_COLUMNS",
    "PROTOCOLS",
    "ManifestBuild",
    "build_manifest",
    "build_manifest_file",
    "check_manifest",
    "problems_path",
    "read_dataset",
    "write_problems",
]
