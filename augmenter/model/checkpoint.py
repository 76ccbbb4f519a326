"""Checkpoints: atomic writes with a sha256 sidecar, weights-only loading, FOMM / FP-FOMM state-dict import.

A checkpoint is a dict of tensors and plain values (config, step, training subjects) saved by ``torch.save``;
it is read with ``weights_only=True`` only, so a file that would run code when unpickled is refused. The
networks sit under FOMM's top-level keys (kp_detector, generator, discriminator), so official FOMM / FP-FOMM
checkpoints go through the same importer.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from augmenter.errors import UserError

CHECKPOINT_FORMAT = "augmenter-fpfomm"
NETWORK_KEYS: tuple[str, ...] = ("kp_detector", "generator", "discriminator")


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sidecar_path(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(path.name + ".sha256")


def _atomic_write_bytes(path: Path, write: Any) -> None:
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> str:
    """Write `payload` atomically (temp + rename), then its sha256 sidecar; returns the sha256.

    A kill between the two renames leaves a checkpoint whose sidecar is stale: loading recomputes the hash and
    rewrites nothing, it only refuses a mismatch when the sidecar is newer than the checkpoint.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write_bytes(path, lambda stream: torch.save(payload, stream))
    digest = file_sha256(path)
    _atomic_write_bytes(sidecar_path(path), lambda stream: stream.write(f"{digest}  {path.name}\n".encode()))
    return digest


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[dict[str, Any], str]:
    """(payload, sha256). Refuses (UserError) missing files, corrupt files and pickles that would run code."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: checkpoint not found; train one with `augmenter train` or check the path")
    digest = file_sha256(path)
    sidecar = sidecar_path(path)
    if sidecar.is_file() and sidecar.stat().st_mtime_ns >= path.stat().st_mtime_ns:
        recorded = sidecar.read_text().split()[0] if sidecar.read_text().strip() else ""
        if recorded and recorded != digest:
            raise UserError(
                f"{path}: sha256 {digest[:12]}… differs from {sidecar.name} ({recorded[:12]}…); "
                "the file is damaged, restore it or retrain"
            )
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise UserError(
            f"{path}: refused, the file holds Python objects that would run code when loaded "
            "(only weights-only checkpoints are accepted); re-save its state dicts with torch.save"
        ) from exc
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise UserError(
            f"{path}: not a readable torch checkpoint ({type(exc).__name__}: {str(exc)[:80]}); "
            "restore it or retrain"
        ) from exc
    if not isinstance(payload, dict):
        raise UserError(f"{path}: checkpoint holds a {type(payload).__name__}, not a dict of state dicts")
    return payload, digest


@dataclass
class ImportReport:
    """What an import of foreign weights matched, per network."""

    matched: dict[str, list[str]] = field(default_factory=dict)
    missing: dict[str, list[str]] = field(
        default_factory=dict
    )  # ours, absent or of another shape in the file
    unexpected: dict[str, list[str]] = field(default_factory=dict)  # the file's, with no home here
    shape_mismatch: dict[str, list[str]] = field(default_factory=dict)

    def summary(self) -> str:
        parts = []
        for name in self.matched:
            parts.append(
                f"{name}: {len(self.matched[name])} matched, {len(self.missing[name])} missing, "
                f"{len(self.unexpected[name])} unexpected ({len(self.shape_mismatch[name])} shape mismatches)"
            )
        return "; ".join(parts)


def import_state(networks: nn.Module, state: dict[str, Any]) -> ImportReport:
    """Copy every tensor of `state[network]` whose key and shape match ours; report the rest.

    Works for FOMM / FP-FOMM checkpoints (keys kp_detector, generator, discriminator) and for ours.
    """
    report = ImportReport()
    for name in NETWORK_KEYS:
        module = getattr(networks, name)
        own = module.state_dict()
        theirs = state.get(name) or {}
        usable = {k: v for k, v in theirs.items() if k in own and tuple(own[k].shape) == tuple(v.shape)}
        report.matched[name] = sorted(usable)
        report.shape_mismatch[name] = sorted(k for k in theirs if k in own and k not in usable)
        report.missing[name] = sorted(k for k in own if k not in usable)
        report.unexpected[name] = sorted(k for k in theirs if k not in own)
        if usable:
            module.load_state_dict(usable, strict=False)
    return report


def import_fomm_checkpoint(path: str | Path, networks: nn.Module) -> ImportReport:
    """Load an official FOMM / FP-FOMM checkpoint file into `networks` where shapes match."""
    payload, _ = load_checkpoint(path)
    if not any(name in payload for name in NETWORK_KEYS):
        raise UserError(
            f"{path}: no kp_detector / generator / discriminator state dicts inside; "
            "is this a FOMM checkpoint?"
        )
    return import_state(networks, payload)
