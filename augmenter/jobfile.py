"""TOML job files: every `augmenter generate` option in a file, so a cron or SLURM job is one short line.

Keys are the option names (`per-class` or `per_class`), either at the top level or under a `[generate]` table.
Relative paths are read relative to the job file's folder, so a job file can travel with its data.
Options given on the command line win over the file.

    manifest = "manifests/casme2.csv"
    root = "/data/CASME2"
    generator = "landmark-tps"
    targets = "manifests/casme2.csv"
    out = "synthetic/casme2-tps.zarr"
    strategy = "balanced"
    per-class = 200
    exclude-subjects = ["casme2/1"]
"""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path
from typing import Any

from augmenter.errors import UserError
from augmenter.generate import GenerateJob

PATH_FIELDS: tuple[str, ...] = (
    "manifest",
    "root",
    "targets",
    "targets_root",
    "out",
    "scheduler_file",
    "cache_dir",
    "target_persons",
)
INT_FIELDS: tuple[str, ...] = (
    "workers",
    "per_class",
    "max_per_source",
    "max_per_target",
    "limit",
    "size",
    "seed",
    "max_frames",
    "batch_size",
    "retries",
    "estimate_pairings",
)
BOOL_FIELDS: tuple[str, ...] = ("dry_run", "overwrite", "progress", "identity_quality", "include_unlabelled")
REQUIRED_FIELDS: tuple[str, ...] = ("manifest", "root", "generator", "targets", "out")
JOB_FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(GenerateJob))


def read_job_file(path: str | Path) -> dict[str, Any]:
    """The file's options as GenerateJob field names → values (relative paths: from the file's folder)."""
    path = Path(path)
    try:
        document = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: job file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{path}: not valid TOML ({exc}); fix the file") from None
    table = document.get("generate", document)
    values: dict[str, Any] = {}
    for raw_key, value in table.items():
        key = raw_key.replace("-", "_")
        if key not in JOB_FIELDS or key == "generate":
            raise UserError(
                f"{path}: unknown option {raw_key!r}; see `augmenter generate --help` for the names"
            )
        values[key] = _coerce(path, key, value)
    for key in PATH_FIELDS:
        if values.get(key) is not None and not Path(values[key]).expanduser().is_absolute():
            values[key] = (path.parent / values[key]).resolve()
    # the generator is a path too unless it names a training-free generator
    generator = values.get("generator")
    if generator is not None and str(generator).endswith(".pt") and not Path(generator).is_absolute():
        values["generator"] = str((path.parent / generator).resolve())
    return values


def _coerce(path: Path, key: str, value: Any) -> Any:
    """TOML types → job types, with a one-line error naming the file and key on a mismatch."""
    try:
        if key in PATH_FIELDS:
            return Path(str(value)).expanduser()
        if key in INT_FIELDS:
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError("an integer")
            return value
        if key in BOOL_FIELDS:
            if not isinstance(value, bool):
                raise TypeError("true or false")
            return value
        if key == "exclude_subjects":
            if isinstance(value, str):
                return [part.strip() for part in value.split(",") if part.strip()]
            if not isinstance(value, list):
                raise TypeError("a list of subjects")
            return [str(v) for v in value]
        if key == "gpus" and isinstance(value, list):
            return ",".join(str(v) for v in value)
        return str(value)
    except TypeError as exc:
        raise UserError(f"{path}: option {key!r} must be {exc} (got {value!r})") from None


def build_job(file_values: dict[str, Any], cli_values: dict[str, Any]) -> GenerateJob:
    """Merge file and command line (command line wins; None = not given) into a GenerateJob."""
    merged = dict(file_values)
    merged.update(
        {k: v for k, v in cli_values.items() if v is not None and not (k == "exclude_subjects" and not v)}
    )
    missing = [k for k in REQUIRED_FIELDS if merged.get(k) in (None, "")]
    if missing:
        names = ", ".join("--" + k.replace("_", "-") for k in missing)
        raise UserError(f"generate needs {names} (on the command line or in the --config job file)")
    for key in PATH_FIELDS:
        if merged.get(key) is not None:
            merged[key] = Path(merged[key])
    merged["generator"] = str(merged["generator"])
    return GenerateJob(**merged)


def job_from_file(path: str | Path, **overrides: Any) -> GenerateJob:
    """A job from a TOML file, with keyword overrides (the library form of `--config FILE --option value`)."""
    return build_job(read_job_file(path), overrides)
