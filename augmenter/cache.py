"""The preparation cache shared by every stage: where it is, how items are named and written, what it served.

Items are named by a digest of what decides them, so they never go stale; they are written whole or not at
all, so a killed run or two processes writing one item leave a readable file. Every process counts its hits
and misses in the cache itself (see cache_stats), which is how a stage over pool processes or Dask workers
is measured.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import tempfile
import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import numpy as np
import pandas as pd

from augmenter.errors import UserError

# The preparation cache of all stages: --cache-dir, else this variable, else CACHE_FOLDER beside the manifest
CACHE_ENV = "AUGMENTER_CACHE"
CACHE_FOLDER = "augmenter-cache"
# Per-process hit/miss counters live here inside a cache (see cache_stats).
STATS_FOLDER = "stats"


def _atomic_write(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Write `path` through a temporary file in its folder, so a killed run (or another process writing the
    same file) leaves either the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            write(stream)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_savez(path: Path, **arrays: np.ndarray) -> None:
    """An .npz written whole or not at all."""
    _atomic_write(path, lambda stream: np.savez(stream, **arrays))


def atomic_save_npy(path: Path, array: np.ndarray) -> None:
    """An .npy written whole or not at all."""
    _atomic_write(path, lambda stream: np.save(stream, array))


def load_npz(path: Path, keys: Sequence[str]) -> dict[str, np.ndarray] | None:
    """The cached arrays, or None when the file is absent or damaged (it is then simply recomputed)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: np.asarray(data[k]) for k in keys}
    except (OSError, KeyError, ValueError, EOFError):
        return None


def resolve_cache_dir(
    cache_dir: str | Path | None,
    manifest: str | Path | pd.DataFrame | None = None,
    fallback: str | Path | None = None,
) -> Path | None:
    """The preparation cache a stage uses: `cache_dir` when given, else $AUGMENTER_CACHE, else
    `augmenter-cache/` beside the manifest file, else `fallback` (a manifest given as a table has no folder).

    Every stage resolving it the same way is what lets score, generate and evaluate reuse what train prepared.
    """
    chosen: str | Path | None = cache_dir
    if chosen is None and os.environ.get(CACHE_ENV, "").strip():
        chosen = os.environ[CACHE_ENV].strip()
    if chosen is None and manifest is not None and not isinstance(manifest, pd.DataFrame):
        chosen = Path(manifest).expanduser().resolve().parent / CACHE_FOLDER
    if chosen is None:
        chosen = fallback
    if chosen is None:
        return None
    path = Path(chosen).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(
            f"{path}: cannot create the preparation cache ({exc.strerror or exc}); pass --cache-dir DIR "
            f"or set {CACHE_ENV} to a writable folder"
        ) from None
    return path


@dataclass(frozen=True)
class CacheStats:
    """Lookups of one cache, summed over every process that used it.

    hits: served whole from the cache; partial: the face work (box, landmarks) came from the cache and only
    the crops were made again, at a size not seen before; misses: the face work was done.
    """

    hits: int = 0
    partial: int = 0
    misses: int = 0
    by_kind: dict[str, dict[str, int]] = field(default_factory=dict)

    def __sub__(self, before: CacheStats) -> CacheStats:
        kinds = set(self.by_kind) | set(before.by_kind)
        by_kind = {
            kind: {
                event: self.by_kind.get(kind, {}).get(event, 0) - before.by_kind.get(kind, {}).get(event, 0)
                for event in ("hit", "partial", "miss")
            }
            for kind in sorted(kinds)
        }
        return CacheStats(
            self.hits - before.hits, self.partial - before.partial, self.misses - before.misses, by_kind
        )


class _Counter:
    """This process's lookups per cache folder, rewritten atomically to stats/<host>-<pid>-<token>.json on
    each event, so pool processes and Dask workers are counted without sending anything back."""

    def __init__(self) -> None:
        self.token = uuid.uuid4().hex[:8]
        self.pid = os.getpid()
        self.counts: dict[Path, dict[str, dict[str, int]]] = {}
        self.lock = threading.Lock()  # Dask workers prepare in several threads

    def record(self, cache_dir: Path, kind: str, event: str) -> None:
        if os.getpid() != self.pid:  # a forked child starts its own file
            self.__init__()
        with self.lock:
            counts = self.counts.setdefault(Path(cache_dir), {})
            kind_counts = counts.setdefault(kind, {"hit": 0, "partial": 0, "miss": 0})
            kind_counts[event] += 1
            folder = Path(cache_dir) / STATS_FOLDER
            try:
                folder.mkdir(parents=True, exist_ok=True)
                path = folder / f"{socket.gethostname()}-{self.pid}-{self.token}.json"
                tmp = path.with_name(path.name + ".tmp")
                tmp.write_text(json.dumps(counts, sort_keys=True))
                os.replace(tmp, path)
            except OSError:
                pass  # counting must never break preparation (e.g. a read-only shared cache)


_COUNTER = _Counter()


def record_lookup(cache_dir: str | Path, kind: str, event: str) -> None:
    """Count one lookup of `kind` ("clip", "target", "flows", "tracks"…) in `cache_dir`: "hit" | "partial" |
    "miss" (see CacheStats)."""
    _COUNTER.record(Path(cache_dir), kind, event)


def cache_stats(cache_dir: str | Path) -> CacheStats:
    """Hits, partial hits and misses recorded in `cache_dir` by every process so far (subtract two readings
    to count one stage)."""
    totals: dict[str, dict[str, int]] = {}
    for path in sorted((Path(cache_dir) / STATS_FOLDER).glob("*.json")):
        try:
            counts = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        for kind, events in counts.items():
            into = totals.setdefault(kind, {"hit": 0, "partial": 0, "miss": 0})
            for event in into:
                into[event] += int(events.get(event, 0))
    return CacheStats(
        hits=sum(e["hit"] for e in totals.values()),
        partial=sum(e["partial"] for e in totals.values()),
        misses=sum(e["miss"] for e in totals.values()),
        by_kind=totals,
    )


def _digest(settings: dict) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:20]


def safe_name(text: str) -> str:
    """`text` as a portable file-name part: other characters become "_", at most 80 characters."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)[:80]


def cache_file(cache_dir: str | Path, dataset: str, label: str, settings: dict, suffix: str = ".npz") -> Path:
    """Where one cached item lives: <cache>/<dataset>/<label>-<digest of settings><suffix>."""
    folder = Path(cache_dir) / safe_name(str(dataset) or "unknown")
    return folder / f"{safe_name(label)}-{_digest(settings)}{suffix}"
