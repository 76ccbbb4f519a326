"""The Zarr v3 store of synthetic clips: pixels, AU labels, provenance and quality, one row per pairing.

Layout (every per-clip array has the leading dimension `clip`):
    clips                    uint8 (N, T_max, S, S, 3), one chunk (one file) per clip, uncompressed
    n_frames, apex_index     int32           valid frames (the rest is zero padding); apex among them
    au                       uint8 (N, K)    multi-hot over the `au_name` coordinate (AU1 … AU64)
    au_code, label3, emotion strings         the source clip's labels
    pair_id, source_*, target_*, generator_*, seed   provenance (subjects as fold keys "dataset/subject",
                             persons as the manifest's `person`; training lists ";"-joined or "training-free")
    quality_l1, quality_identity float32     self-consistency scores (NaN when not measured)
    error                    string          why a pairing failed ("" when it did not)
    done                     bool            set after the clip's pixels; the only completeness test

Who writes what (DESIGN §7): a worker task writes only whole `clips` chunks (one clip = one file, so no two
tasks share a file; written to a temporary name and renamed, so a file is never half there); every other
array and the group attributes are written by the driver alone, which makes resume exact and avoids the
attribute-write race. Metadata is consolidated at the end of a run and stripped at the start of the next one,
so a reader never sees a stale consolidated shape.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import zarr
from zarr.codecs import BytesCodec

from augmenter.au import parse_au
from augmenter.errors import UserError

STORE_FORMAT = "augmenter-synthetic-clips/1"
AU_NAMES: tuple[str, ...] = tuple(f"AU{n}" for n in range(1, 65))
ROW_CHUNK = 4096  # per-clip label arrays: few files, written by the driver only

STRING_ARRAYS: tuple[str, ...] = (
    "pair_id",
    "source_dataset",
    "source_subject",
    "source_person",
    "source_clip",
    "target_id",
    "target_subject",
    "target_person",
    "label3",
    "emotion",
    "au_code",
    "generator_kind",
    "generator_checksum",
    "generator_training_subjects",
    "generator_training_persons",
    "error",
)
# Arrays missing from a store made before persons were recorded: added (empty) when such a store is opened
# for writing, read as empty strings by store_table.
PERSON_ARRAYS: tuple[str, ...] = ("source_person", "target_person", "generator_training_persons")
INT_ARRAYS: tuple[str, ...] = ("seed", "n_frames", "apex_index")
FLOAT_ARRAYS: tuple[str, ...] = ("quality_l1", "quality_identity")
PLAN_ARRAYS: tuple[str, ...] = (
    "pair_id",
    "source_dataset",
    "source_subject",
    "source_person",
    "source_clip",
    "target_id",
    "target_subject",
    "target_person",
    "label3",
    "emotion",
    "au_code",
    "seed",
)
GENERATOR_ARRAYS: tuple[str, ...] = (
    "generator_kind",
    "generator_checksum",
    "generator_training_subjects",
    "generator_training_persons",
)
RESULT_ARRAYS: tuple[str, ...] = ("n_frames", "apex_index", "quality_l1", "quality_identity", "error", "done")
# Settings that must match for a run to add to an existing store (mixing them would mix two experiments).
FINGERPRINT_KEYS: tuple[str, ...] = ("generator_kind", "generator_checksum", "size", "seed")


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """zarr warns on every call that consolidated metadata is not in the v3 spec; we know (README says so)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*onsolidated metadata.*")
        yield


def au_multi_hot(code: str) -> np.ndarray:
    """uint8 (K,) over AU_NAMES for a canonical AU string (every AU number mentioned, certain or not)."""
    hot = np.zeros(len(AU_NAMES), np.uint8)
    for number in parse_au(code).numbers:
        if 1 <= number <= len(AU_NAMES):
            hot[number - 1] = 1
    return hot


def is_store(path: str | Path) -> bool:
    """True when `path` is a store this module made (a group with our format attribute)."""
    meta = Path(path) / "zarr.json"
    if not meta.is_file():
        return False
    try:
        return json.loads(meta.read_text()).get("attributes", {}).get("format") == STORE_FORMAT
    except (OSError, json.JSONDecodeError):
        return False


def strip_consolidated(path: str | Path) -> None:
    """Drop consolidated metadata before changing a store: no reader may trust shapes about to change."""
    meta = Path(path) / "zarr.json"
    document = json.loads(meta.read_text())
    if document.pop("consolidated_metadata", None) is None:
        return
    tmp = meta.with_name("zarr.json.tmp")
    tmp.write_text(json.dumps(document, indent=2))
    tmp.replace(meta)


def consolidate(path: str | Path) -> None:
    """One metadata read for readers (xarray, dask) once a run has finished changing the store."""
    with _quiet():
        zarr.consolidate_metadata(str(path))


# --------------------------------------------------------------------------------------------------- locking


@dataclass
class StoreLock:
    """One job per store: a sibling `<store>.lock` file naming host, pid and start time.

    A lock whose pid is dead on this host (or was reused by another process) is stale and taken over;
    a lock from another host is never broken automatically (we cannot see its processes).
    """

    store: Path
    path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.store = Path(self.store)
        self.path = self.store.with_name(self.store.name + ".lock")

    def acquire(self) -> StoreLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            try:
                handle = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._read()
                if holder is not None and not _holder_is_dead(holder):
                    raise UserError(
                        f"{self.store}: in use by pid {holder.get('pid')} on {holder.get('host')} since "
                        f"{holder.get('started')}; wait for that job, or delete {self.path} if it is gone"
                    ) from None
                self.path.unlink(missing_ok=True)  # stale: its owner died without cleaning up
                continue
            with os.fdopen(handle, "w") as out:
                json.dump(_this_process(), out)
            return self
        raise UserError(f"{self.path}: could not take the store lock (another job raced us); try again")

    def release(self) -> None:
        holder = self._read()
        if (
            holder is not None
            and holder.get("pid") == os.getpid()
            and holder.get("host") == socket.gethostname()
        ):
            self.path.unlink(missing_ok=True)

    def _read(self) -> dict | None:
        try:
            return json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, json.JSONDecodeError):
            return {}  # half-written by a process killed while writing: treat as stale

    def __enter__(self) -> StoreLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _this_process() -> dict:
    import psutil

    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "create_time": psutil.Process().create_time(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def _holder_is_dead(holder: dict) -> bool:
    import psutil

    if not holder or "pid" not in holder:
        return True
    if holder.get("host") != socket.gethostname():
        return False
    try:
        process = psutil.Process(int(holder["pid"]))
        return abs(process.create_time() - float(holder.get("create_time", 0.0))) > 1.0  # pid reused
    except psutil.NoSuchProcess:
        return True
    except psutil.Error:
        return False


# --------------------------------------------------------------------------------------------------- writing


def _row_array(group: zarr.Group, name: str, dtype: object, fill: object, n: int) -> None:
    group.create_array(
        name, shape=(n,), chunks=(ROW_CHUNK,), dtype=dtype, fill_value=fill, dimension_names=("clip",)
    )


def create_store(path: str | Path, *, size: int, max_frames: int, attrs: dict) -> zarr.Group:
    """An empty store (N = 0) with every array; `attrs` must hold the FINGERPRINT_KEYS."""
    missing = [k for k in FINGERPRINT_KEYS if k not in attrs]
    if missing:
        raise ValueError(f"store attributes lack {missing}")
    with _quiet():
        group = zarr.open_group(str(path), mode="w-", zarr_format=3)
        group.create_array(
            "clips",
            shape=(0, max_frames, size, size, 3),
            chunks=(1, max_frames, size, size, 3),  # one clip = one chunk file, written whole by one task
            dtype="uint8",
            fill_value=0,
            # Uncompressed, so ClipWriter writes a clip as its chunk file at raw-file speed, the zero padding
            # after n_frames as a file hole. Through zarr, zstd or blosc chunks wrote at 0.07-0.3x the speed
            # of a raw write (64² x 40 and 256² x 60 frames, measured on 2 cores).
            compressors=None,
            # Flat chunk names (clips/c.<i>.0.0.0.0): a clip is one file in one folder, not four nested
            # folders made per clip (those mkdirs cost a 64² clip's write as much again).
            chunk_key_encoding={"name": "default", "separator": "."},
            dimension_names=("clip", "frame", "y", "x", "channel"),
        )
        for name in STRING_ARRAYS:
            _row_array(group, name, str, "", 0)
        for name in INT_ARRAYS:
            _row_array(group, name, "int64" if name == "seed" else "int32", 0, 0)
        for name in FLOAT_ARRAYS:
            _row_array(group, name, "float32", float("nan"), 0)
        _row_array(group, "done", bool, False, 0)
        group.create_array(
            "au",
            shape=(0, len(AU_NAMES)),
            chunks=(ROW_CHUNK, len(AU_NAMES)),
            dtype="uint8",
            fill_value=0,
            dimension_names=("clip", "au_name"),
            attributes={"au_names": list(AU_NAMES)},
        )
        names = group.create_array(
            "au_name",
            shape=(len(AU_NAMES),),
            chunks=(len(AU_NAMES),),
            dtype=str,
            dimension_names=("au_name",),
        )
        names[:] = np.array(AU_NAMES)
        group.attrs.update(
            {"format": STORE_FORMAT, "n_clips": 0, "size": int(size), "max_frames": int(max_frames)}
            | {k: v for k, v in attrs.items() if k not in ("format", "n_clips")}
        )
    return group


def _per_clip_arrays(group: zarr.Group) -> list[zarr.Array]:
    present = set(group.array_keys())
    names = ("clips", *STRING_ARRAYS, *INT_ARRAYS, *FLOAT_ARRAYS, "done", "au")
    return [group[name] for name in names if name in present]


class StoreWriter:
    """The driver's handle on a store: opens or creates it, appends pairings, records task results.

    Opening repairs a store left by a killed driver: arrays longer than the committed `n_clips` (an append
    that did not finish) are cut back, so the same command redoes exactly that append.
    """

    def __init__(
        self, path: str | Path, *, size: int, max_frames: int, attrs: dict, overwrite: bool = False
    ) -> None:
        self.path = Path(path)
        if self.path.exists() and overwrite:
            if not is_store(self.path):
                raise UserError(f"{self.path}: exists and is not an augmenter store; refusing to delete it")
            shutil.rmtree(self.path)
        if self.path.exists():
            if not is_store(self.path):
                raise UserError(f"{self.path}: exists and is not an augmenter store; choose another --out")
            strip_consolidated(self.path)
            with _quiet():
                self.group = zarr.open_group(str(self.path), mode="r+", use_consolidated=False)
            self._check_fingerprint(attrs)
            self._repair()
            self._add_missing_arrays()
        else:
            self.group = create_store(self.path, size=size, max_frames=max_frames, attrs=attrs)
        self.size = int(self.group.attrs["size"])
        self.max_frames = int(self.group.attrs["max_frames"])

    def _check_fingerprint(self, attrs: dict) -> None:
        stored = dict(self.group.attrs)
        for key in FINGERPRINT_KEYS:
            if key in attrs and str(stored.get(key)) != str(attrs[key]):
                raise UserError(
                    f"{self.path}: made with {key}={stored.get(key)!r}, this job has {attrs[key]!r}; "
                    f"use another --out, or --overwrite to replace it"
                )

    def _repair(self) -> None:
        committed = int(self.group.attrs.get("n_clips", 0))
        for array in _per_clip_arrays(self.group):
            if array.shape[0] != committed:
                array.resize((committed, *array.shape[1:]))

    def _add_missing_arrays(self) -> None:
        """A store from before persons were recorded gets the person arrays, empty ("" = not recorded)."""
        present = set(self.group.array_keys())
        for name in PERSON_ARRAYS:
            if name not in present:
                with _quiet():
                    _row_array(self.group, name, str, "", self.n_clips)

    @property
    def n_clips(self) -> int:
        return int(self.group.attrs["n_clips"])

    def pair_ids(self) -> np.ndarray:
        return np.asarray(self.group["pair_id"][:], dtype=object)

    def done(self) -> np.ndarray:
        return np.asarray(self.group["done"][:], dtype=bool)

    def append(self, plan: pd.DataFrame, generator_attrs: dict) -> np.ndarray:
        """Add plan rows whose pair_id is not in the store yet; returns every plan row's store index.

        Order: grow every array, write the labels, then commit `n_clips` — a crash before the commit is undone
        by the next open.
        """
        existing = {pid: i for i, pid in enumerate(self.pair_ids())}
        new = plan[~plan["pair_id"].isin(existing)]
        start = self.n_clips
        if len(new):
            stop = start + len(new)
            for array in _per_clip_arrays(self.group):
                array.resize((stop, *array.shape[1:]))
            rows = slice(start, stop)
            for name in PLAN_ARRAYS:
                column = "au" if name == "au_code" else name
                if column not in new.columns and name in PERSON_ARRAYS:
                    continue  # a plan from before persons: the array keeps its "" (= not recorded)
                values = new[column].to_numpy()
                self.group[name][rows] = values.astype("int64") if name == "seed" else values.astype(str)
            for name in GENERATOR_ARRAYS:
                self.group[name][rows] = np.full(len(new), str(generator_attrs.get(name, "")))
            self.group["au"][rows] = np.stack([au_multi_hot(code) for code in new["au"].astype(str)])
            self.group.attrs["n_clips"] = stop
            existing.update({pid: start + i for i, pid in enumerate(new["pair_id"])})
        return np.array([existing[pid] for pid in plan["pair_id"]], dtype=np.int64)

    def record(self, results: Sequence[dict]) -> None:
        """Write the small per-clip results of finished tasks; `done` last (pixels are already written)."""
        if not results:
            return
        index = np.array([r["index"] for r in results], dtype=np.int64)
        for name in ("n_frames", "apex_index"):
            self.group[name].vindex[index] = np.array([r[name] for r in results], dtype=np.int32)
        for name in FLOAT_ARRAYS:
            self.group[name].vindex[index] = np.array([r[name] for r in results], dtype=np.float32)
        self.group["error"].vindex[index] = np.array([r["error"] for r in results], dtype=str)
        self.group["done"].vindex[index] = np.array([not r["error"] for r in results], dtype=bool)

    def update_attrs(self, values: dict) -> None:
        self.group.attrs.update(values)

    def finish(self) -> None:
        consolidate(self.path)


def _chunk_is_raw(array: zarr.Array) -> bool:
    """True when one clip is one chunk file holding exactly the clip's bytes (no shard, no compression)."""
    meta = array.metadata
    return (
        getattr(meta, "zarr_format", 2) == 3
        and array.chunks == (1, *array.shape[1:])
        and len(meta.codecs) == 1
        and isinstance(meta.codecs[0], BytesCodec)
        and array.dtype == np.uint8
        and array.order == "C"
    )


class ClipWriter:
    """Worker side: writes whole clips into one store's `clips` array; opened once per worker and reused.

    In a store whose chunk is one raw clip (what create_store makes) a clip is written as its chunk file
    directly: the padded bytes go to a temporary name in the chunk's folder, then an atomic rename, so the
    write costs what a raw file write costs and a killed writer never leaves half a clip under the chunk's
    name. Other layouts (sharded stores from earlier versions) go through zarr, one whole shard per clip.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        with _quiet():
            self.array = zarr.open_array(str(self.path / "clips"), mode="r+", use_consolidated=False)
        _, self.max_frames, self.size, _, _ = self.array.shape
        self.raw = _chunk_is_raw(self.array)
        self._folders: set[Path] = set()  # chunk folders known to exist (one mkdir each, not one per clip)

    def write(self, index: int, frames: np.ndarray) -> int:
        """Write clip `index` (zero-padded to T_max); returns the frames kept."""
        size = self.size
        if frames.ndim != 4 or frames.shape[1:] != (size, size, 3) or frames.dtype != np.uint8:
            raise ValueError(
                f"clip {index}: frames {frames.shape} {frames.dtype}, "
                f"store wants (T, {size}, {size}, 3) uint8"
            )
        if not 0 <= index < self.array.shape[0]:
            raise ValueError(f"clip {index}: outside the store's {self.array.shape[0]} clips")
        kept = min(len(frames), self.max_frames)
        if not self.raw:
            padded = np.zeros((1, self.max_frames, size, size, 3), np.uint8)
            padded[0, :kept] = frames[:kept]
            self.array[index : index + 1] = padded
            return kept
        target = self.path / "clips" / self.array.metadata.encode_chunk_key((index, 0, 0, 0, 0))
        if target.parent not in self._folders:
            target.parent.mkdir(parents=True, exist_ok=True)
            self._folders.add(target.parent)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        try:
            with open(tmp, "wb") as stream:
                stream.write(np.ascontiguousarray(frames[:kept]).data)
                stream.truncate(self.max_frames * size * size * 3)  # the zero padding: a hole, no disk blocks
            os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return kept


_CLIP_WRITERS: dict[tuple[str, int, int], ClipWriter] = {}


def clip_writer(path: str | Path) -> ClipWriter:
    """The worker's ClipWriter of a store; reopened when the array's metadata changed (resize, new store)."""
    meta = os.stat(os.path.join(path, "clips", "zarr.json"))
    key = (os.path.abspath(path), meta.st_ino, meta.st_mtime_ns)  # abspath: no syscalls, unlike resolve()
    writer = _CLIP_WRITERS.get(key)
    if writer is None:
        for old in [k for k in _CLIP_WRITERS if k[0] == key[0]]:
            del _CLIP_WRITERS[old]
        writer = _CLIP_WRITERS[key] = ClipWriter(path)
    return writer


def write_clip(path: str | Path, index: int, frames: np.ndarray) -> int:
    """Worker side: write one clip whole (zero-padded to T_max); returns the frames kept.

    Never writes a part of a chunk or shard: two tasks writing parts of one would lose data (DESIGN §7).
    """
    return clip_writer(path).write(index, np.asarray(frames))


# --------------------------------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class SyntheticStore:
    """A read-only view for consumers (recognition_eval): attributes, the per-clip table, pixel access."""

    path: Path
    attrs: dict
    table: pd.DataFrame  # one row per DONE clip, column `index` = position in the store arrays

    def read_clip(self, index: int) -> np.ndarray:
        return read_clip(self.path, index)

    def to_xarray(self):  # noqa: ANN201 - xarray is imported lazily
        import xarray as xr

        with _quiet():
            return xr.open_zarr(str(self.path), chunks={"clip": 1}, consolidated=None)


def _open_read(path: str | Path) -> zarr.Group:
    path = Path(path)
    if not is_store(path):
        raise UserError(f"{path}: not an augmenter store (no zarr.json with format {STORE_FORMAT!r})")
    with _quiet():
        return zarr.open_group(str(path), mode="r", use_consolidated=False)


def store_table(path: str | Path, include_pending: bool = False) -> pd.DataFrame:
    """One row per done clip (all with `include_pending`): every label, provenance and quality column."""
    group = _open_read(path)
    n = int(group.attrs.get("n_clips", 0))
    columns: dict[str, np.ndarray] = {"index": np.arange(n)}
    present = set(group.array_keys())
    for name in (*STRING_ARRAYS, *INT_ARRAYS, *FLOAT_ARRAYS, "done"):
        if name not in present and name in PERSON_ARRAYS:
            columns[name] = np.full(n, "", dtype=object)  # a store from before persons were recorded
            continue
        values = group[name][:n]
        columns[name] = values.astype(object) if name in STRING_ARRAYS else values
    au = group["au"][:n]
    columns["au_names"] = np.array(
        ["+".join(name for name, on in zip(AU_NAMES, row, strict=True) if on) for row in au], dtype=object
    )
    table = pd.DataFrame(columns)
    if not include_pending:
        table = table[table["done"]].reset_index(drop=True)
    return table


def store_attrs(path: str | Path) -> dict:
    """The store's group attributes (generator, size, seed, the manifest it was made from …)."""
    return dict(_open_read(path).attrs)


def open_store(path: str | Path) -> SyntheticStore:
    group = _open_read(path)
    return SyntheticStore(path=Path(path), attrs=dict(group.attrs), table=store_table(path))


def read_clip(path: str | Path, index: int) -> np.ndarray:
    """uint8 (T, S, S, 3): the clip's valid frames only (padding dropped)."""
    group = _open_read(path)
    n = int(group.attrs.get("n_clips", 0))
    if not 0 <= index < n:
        raise UserError(f"{path}: no clip {index} (store has {n})")
    frames = int(group["n_frames"][index])
    return np.asarray(group["clips"][index, :frames])
