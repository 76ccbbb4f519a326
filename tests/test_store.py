"""The Zarr v3 store on real files: layout, readers (zarr, xarray, dask), repair, fingerprint and lock."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import dask.array as da
import numpy as np
import pandas as pd
import pytest
import xarray as xr
import zarr

from augmenter.errors import UserError
from augmenter.store import (
    AU_NAMES,
    StoreLock,
    StoreWriter,
    au_multi_hot,
    open_store,
    read_clip,
    store_table,
    write_clip,
)

SIZE, T_MAX = 16, 6
GENERATOR = {
    "generator_kind": "landmark-tps",
    "generator_checksum": "c0ffee",
    "generator_training_subjects": "",
    "size": SIZE,
}
ATTRS = GENERATOR | {"seed": 0}


def plan_rows(n: int, start: int = 0) -> pd.DataFrame:
    labels = ["negative", "positive", "surprise"]
    return pd.DataFrame(
        {
            "pair_id": [f"p{i:04d}" for i in range(start, start + n)],
            "source_dataset": "casme2",
            "source_subject": [f"casme2/{i % 3 + 1}" for i in range(start, start + n)],
            "source_person": [f"person-{i % 3 + 1}" for i in range(start, start + n)],
            "source_clip": [f"EP{i:02d}" for i in range(start, start + n)],
            "target_id": "folder/anna",
            "target_subject": "folder/anna",
            "target_person": "folder/anna",
            "label3": [labels[i % 3] for i in range(start, start + n)],
            "au": ["4+7", "L12", "1+2+R5"][:1] * n,
            "emotion": "disgust",
            "seed": 0,
            "generator": "c0ffee",
        }
    )


def clip(i: int, frames: int) -> np.ndarray:
    return np.random.default_rng(i).integers(0, 255, (frames, SIZE, SIZE, 3), dtype=np.uint8)


def result(i: int, frames: int, error: str = "") -> dict:
    return {"index": i, "n_frames": frames, "apex_index": frames // 2, "quality_l1": 0.1 * i}  | {
        "quality_identity": float("nan"), "error": error}  # fmt: skip


def test_au_multi_hot_uses_the_project_grammar() -> None:
    hot = au_multi_hot("1+R2+(L4 or 7)")
    assert [AU_NAMES[i] for i in np.flatnonzero(hot)] == ["AU1", "AU2", "AU4", "AU7"]
    assert au_multi_hot("?").sum() == 0


def test_write_read_with_zarr_xarray_dask(tmp_path: Path) -> None:
    path = tmp_path / "s.zarr"
    writer = StoreWriter(path, size=SIZE, max_frames=T_MAX, attrs=ATTRS)
    plan = plan_rows(5)
    indices = writer.append(plan, GENERATOR)
    assert list(indices) == [0, 1, 2, 3, 4]
    lengths = [6, 4, 5, 6, 3]
    with ThreadPoolExecutor(4) as pool:  # concurrent whole-shard writes must not lose each other's data
        list(pool.map(lambda i: write_clip(path, i, clip(i, lengths[i])), range(5)))
    writer.record(
        [result(i, lengths[i]) for i in (0, 1, 3, 4)] + [result(2, 0, error="UserError: bad frame")]
    )
    writer.finish()

    table = store_table(path)
    assert list(table["index"]) == [0, 1, 3, 4]
    assert list(table["label3"]) == ["negative", "positive", "negative", "positive"]
    assert table.loc[0, "au_names"] == "AU4+AU7" and table.loc[0, "source_subject"] == "casme2/1"
    assert store_table(path, include_pending=True).loc[2, "error"] == "UserError: bad frame"
    for i in (0, 1, 3, 4):
        np.testing.assert_array_equal(read_clip(path, i), clip(i, lengths[i]))

    ds = xr.open_zarr(path)
    assert ds["clips"].shape == (5, T_MAX, SIZE, SIZE, 3)
    assert list(ds["label3"].values) == list(plan["label3"])
    assert list(ds["done"].values) == [True, True, False, True, True]
    assert list(ds["au_name"].values[:2]) == ["AU1", "AU2"]
    np.testing.assert_array_equal(ds["clips"][3, :6].values, clip(3, 6))
    lazy = da.from_zarr(str(path / "clips"))
    assert int(lazy[1, 4:].sum().compute()) == 0  # padding after the clip's 4 frames
    np.testing.assert_array_equal(lazy[1, :4].compute(), clip(1, 4))
    store = open_store(path)
    assert store.attrs["generator_checksum"] == "c0ffee" and len(store.table) == 4
    with pytest.raises(UserError, match="no clip 9"):
        read_clip(path, 9)


def test_append_only_new_pairs_and_repair_after_killed_append(tmp_path: Path) -> None:
    path = tmp_path / "s.zarr"
    writer = StoreWriter(path, size=SIZE, max_frames=T_MAX, attrs=ATTRS)
    writer.append(plan_rows(3), GENERATOR)
    writer.finish()
    # a driver killed mid-append: arrays grown, labels half written, n_clips not committed
    group = zarr.open_group(str(path), mode="r+", use_consolidated=False)
    for name in ("clips", "pair_id", "done", "au"):
        group[name].resize((7, *group[name].shape[1:]))
    reopened = StoreWriter(path, size=SIZE, max_frames=T_MAX, attrs=ATTRS)
    assert reopened.n_clips == 3 and zarr.open_array(str(path / "pair_id"))[:].shape == (3,)
    grown = plan_rows(5)
    indices = reopened.append(grown, GENERATOR)
    assert list(indices) == [0, 1, 2, 3, 4]
    assert list(reopened.append(grown.iloc[::-1], GENERATOR)) == [4, 3, 2, 1, 0]  # nothing appended twice
    assert reopened.n_clips == 5
    reopened.finish()
    assert xr.open_zarr(path)["pair_id"].shape == (5,)  # consolidated metadata matches the final shape


def test_other_generator_refused_unless_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "s.zarr"
    StoreWriter(path, size=SIZE, max_frames=T_MAX, attrs=ATTRS).append(plan_rows(2), GENERATOR)
    with pytest.raises(UserError, match="generator_checksum") as info:
        StoreWriter(path, size=SIZE, max_frames=T_MAX, attrs=ATTRS | {"generator_checksum": "beef"})
    assert "\n" not in str(info.value) and "--overwrite" in str(info.value)
    with pytest.raises(UserError, match="size"):
        StoreWriter(path, size=32, max_frames=T_MAX, attrs=ATTRS | {"size": 32})
    fresh = StoreWriter(
        path, size=SIZE, max_frames=T_MAX, attrs=ATTRS | {"generator_checksum": "beef"}, overwrite=True
    )
    assert fresh.n_clips == 0 and fresh.group.attrs["generator_checksum"] == "beef"
    other = tmp_path / "not-a-store"
    other.mkdir()
    (other / "precious.txt").write_text("keep me")
    with pytest.raises(UserError, match="not an augmenter store"):
        StoreWriter(other, size=SIZE, max_frames=T_MAX, attrs=ATTRS, overwrite=True)
    assert (other / "precious.txt").exists()


def test_lock_refuses_live_job_and_takes_over_stale_one(tmp_path: Path) -> None:
    store = tmp_path / "s.zarr"
    with StoreLock(store):
        with pytest.raises(UserError, match=f"pid {os.getpid()}"):
            StoreLock(store).acquire()
    assert not StoreLock(store).path.exists()

    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    lock = StoreLock(store)
    lock.path.write_text(
        json.dumps({"host": socket.gethostname(), "pid": int(dead.stdout), "create_time": 0})
    )
    lock.acquire()  # its pid is gone: stale, taken over
    assert json.loads(lock.path.read_text())["pid"] == os.getpid()
    lock.release()

    lock.path.write_text(json.dumps({"host": "elsewhere", "pid": 1, "create_time": 0}))
    with pytest.raises(UserError, match="elsewhere"):
        StoreLock(store).acquire()  # another host's job is never broken automatically


def test_persons_provenance_and_a_store_from_before_persons(tmp_path: Path) -> None:
    path = tmp_path / "s.zarr"
    trained = GENERATOR | {"generator_training_persons": "person-1;person-2"}
    writer = StoreWriter(path, size=SIZE, max_frames=T_MAX, attrs=ATTRS)
    writer.append(plan_rows(3), trained)
    writer.record([result(i, 4) for i in range(3)])
    writer.finish()
    table = store_table(path)
    assert list(table["source_person"]) == ["person-1", "person-2", "person-3"]
    assert set(table["target_person"]) == {"folder/anna"}
    assert set(table["generator_training_persons"]) == {"person-1;person-2"}

    old = tmp_path / "old.zarr"
    writer = StoreWriter(old, size=SIZE, max_frames=T_MAX, attrs=ATTRS)
    writer.append(plan_rows(2), GENERATOR)
    writer.record([result(i, 4) for i in range(2)])
    group = zarr.open_group(str(old), mode="r+", use_consolidated=False)
    for name in ("source_person", "target_person", "generator_training_persons"):
        del group[name]  # what a store made before persons were recorded looks like
    legacy = store_table(old)
    assert len(legacy) == 2 and set(legacy["source_person"]) == {""}
    grown = StoreWriter(old, size=SIZE, max_frames=T_MAX, attrs=ATTRS)  # opening adds the arrays
    grown.append(plan_rows(3), trained)
    table = store_table(old, include_pending=True)
    assert list(table["source_person"]) == ["", "", "person-3"]
    assert list(table["generator_training_persons"]) == ["", "", "person-1;person-2"]


def test_clip_chunk_is_one_raw_file_written_by_rename(tmp_path: Path) -> None:
    path = tmp_path / "s.zarr"
    writer = StoreWriter(path, size=SIZE, max_frames=T_MAX, attrs=ATTRS)
    writer.append(plan_rows(2), GENERATOR)
    frames = clip(1, 4)
    assert write_clip(path, 1, frames) == 4
    chunk = path / "clips" / "c.1.0.0.0.0"  # flat chunk names: one file per clip in one folder
    raw = np.frombuffer(chunk.read_bytes(), np.uint8).reshape(T_MAX, SIZE, SIZE, 3)
    np.testing.assert_array_equal(raw[:4], frames)  # the file is the padded clip's bytes, nothing else
    assert not raw[4:].any() and not list(chunk.parent.glob(".*.tmp"))
    np.testing.assert_array_equal(zarr.open_array(str(path / "clips"))[1, :4], frames)
    # a longer clip is cut to T_max; a wrong shape or an index outside the store is refused
    assert write_clip(path, 0, clip(0, T_MAX + 3)) == T_MAX
    with pytest.raises(ValueError, match="store wants"):
        write_clip(path, 0, clip(0, 3)[:, :8])
    with pytest.raises(ValueError, match="outside"):
        write_clip(path, 2, frames)
    # after a resize (the driver appended) the worker's cached writer sees the new clips
    writer.append(plan_rows(3), GENERATOR)
    assert write_clip(path, 2, frames) == 4


def _store_of_an_earlier_layout(path: Path, **clips_layout: object) -> None:
    """A two-row store whose `clips` array is laid out as an earlier version made it."""
    writer = StoreWriter(path, size=SIZE, max_frames=T_MAX, attrs=ATTRS)
    writer.append(plan_rows(2), GENERATOR)
    group = zarr.open_group(str(path), mode="r+", use_consolidated=False)
    del group["clips"]
    group.create_array("clips", shape=(2, T_MAX, SIZE, SIZE, 3), chunks=(1, T_MAX, SIZE, SIZE, 3),
                       dtype="uint8", fill_value=0, **clips_layout)  # fmt: skip


def test_sharded_store_of_an_earlier_version_still_takes_whole_clips(tmp_path: Path) -> None:
    path = tmp_path / "s.zarr"
    _store_of_an_earlier_layout(path, shards=(1, T_MAX, SIZE, SIZE, 3))
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda i: write_clip(path, i, clip(i, 5)), range(2)))
    for i in range(2):
        np.testing.assert_array_equal(zarr.open_array(str(path / "clips"))[i, :5], clip(i, 5))


def test_nested_chunk_names_of_an_earlier_version_still_take_raw_clips(tmp_path: Path) -> None:
    """Stores made before the flat chunk names (clips/c/<i>/0/0/0/0) are written the raw way in place."""
    path = tmp_path / "s.zarr"
    _store_of_an_earlier_layout(path, compressors=None)  # zarr's default chunk names: nested folders
    for i in range(2):
        assert write_clip(path, i, clip(i, 5)) == 5
        assert (path / "clips" / "c" / str(i) / "0" / "0" / "0" / "0").is_file()
        np.testing.assert_array_equal(zarr.open_array(str(path / "clips"))[i, :5], clip(i, 5))
