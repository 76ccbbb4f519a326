"""End to end on a real 2-worker LocalCluster, a real store and the real demo corpus (landmark-tps, 64²).

Resume must be exact: after a killed worker or a killed job, the store holds exactly the planned clips and
each is byte-identical to the clip of a clean run.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import xarray as xr

from augmenter.cluster import close_client, get_client
from augmenter.crops import read_rgb
from augmenter.errors import UserError
from augmenter.generate import MAX_BATCH_CLIPS, GenerateJob, batch_sizes, fit_length, generate, plan_job
from augmenter.manifest import clip_frames, read_manifest, write_manifest
from augmenter.preview import preview
from augmenter.store import StoreLock, read_clip, store_table

REPO = Path(__file__).resolve().parents[1]
SOURCE_SUBJECTS = 3  # usable subjects in the base manifest; the grown one adds one more
MAX_PER_SOURCE = 2


@pytest.fixture(scope="module")
def inputs(demo_manifest: tuple[Path, Path], dlib_backend, tmp_path_factory: pytest.TempPathFactory) -> dict:  # noqa: ANN001
    """Base and grown manifests of demo subjects whose onset face dlib finds at 64² (targets = base)."""
    manifest_path, root = demo_manifest
    manifest = read_manifest(manifest_path)
    usable = [
        s
        for s, rows in manifest.groupby("subject", sort=False)
        if all(dlib_backend.detect(read_rgb(clip_frames(r, root)[0][1])) for _, r in rows.iterrows())
    ]
    assert len(usable) > SOURCE_SUBJECTS, f"demo corpus has too few subjects dlib can find: {usable}"
    folder = tmp_path_factory.mktemp("generate-inputs")
    base = manifest[manifest["subject"].isin(usable[:SOURCE_SUBJECTS])].groupby("subject").head(2)
    grown = manifest[manifest["subject"].isin(usable[: SOURCE_SUBJECTS + 1])].groupby("subject").head(2)
    return {
        "root": root,
        "base": write_manifest(base, folder / "base.csv"),
        "grown": write_manifest(grown, folder / "grown.csv"),
        "n_base": len(base) * MAX_PER_SOURCE,
        "n_new": (len(grown) - len(base)) * MAX_PER_SOURCE,
        "base_frame": base,
    }


@pytest.fixture(scope="module")
def client():  # noqa: ANN201
    """One real 2-worker LocalCluster shared by the in-process runs (workers keep the model loaded)."""
    client = get_client(workers=2, gpus="none", dashboard_address=None)
    client.wait_for_workers(2, timeout=60)
    yield client
    close_client(client)


def job_for(inputs: dict, out: Path, **changes: object) -> GenerateJob:
    job = GenerateJob(
        manifest=inputs["base"],
        root=inputs["root"],
        generator="landmark-tps",
        targets=inputs["base"],
        out=out,
        max_per_source=MAX_PER_SOURCE,
        size=64,  # landmark-tps works at any size; its default is 128
        batch_size=2,
        progress=False,
        identity_quality=False,
        dashboard_address=None,
    )
    for key, value in changes.items():
        setattr(job, key, value)
    return job


def checksums(store: Path) -> dict[str, str]:
    """pair_id → sha256 of the clip's valid frames (+ n_frames, apex), for every done clip."""
    table = store_table(store)
    return {
        row.pair_id: hashlib.sha256(read_clip(store, row.index).tobytes()).hexdigest()
        + f"/{row.n_frames}/{row.apex_index}"
        for row in table.itertuples()
    }


@pytest.fixture(scope="module")
def clean_store(inputs: dict, client, tmp_path_factory: pytest.TempPathFactory) -> Path:  # noqa: ANN001
    out = tmp_path_factory.mktemp("clean") / "clean.zarr"
    result = generate(job_for(inputs, out, identity_quality=True), client=client)
    assert result.failures == [] and result.written == inputs["n_base"]
    return out


def test_workers_run_opencv_on_their_own_thread_budget(clean_store: Path, client) -> None:  # noqa: ANN001
    """Each of the 2 workers on this machine owns cores // 2 threads; after a batch, OpenCV keeps to that
    budget too (its own pool ignores OMP_NUM_THREADS)."""
    import cv2

    budget = str(max(1, (os.cpu_count() or 1) // 2))
    assert set(client.run(os.getenv, "OMP_NUM_THREADS").values()) == {budget}
    assert set(client.run(cv2.getNumThreads).values()) == {int(budget)}


def test_clean_run_is_readable_with_xarray_and_dask(inputs: dict, clean_store: Path) -> None:
    ds = xr.open_zarr(clean_store)
    n = inputs["n_base"]
    assert ds["clips"].shape[:1] == (n,) and ds["clips"].shape[2:] == (64, 64, 3)
    assert bool(ds["done"].all()) and set(ds["error"].values) == {""}
    assert set(ds["generator_kind"].values) == {"landmark-tps"}
    base = inputs["base_frame"]
    by_clip = base.set_index(base["dataset"] + "/" + base["subject"] + "/" + base["clip_id"])
    keys = [f"{s}/{c}" for s, c in zip(ds["source_subject"].values, ds["source_clip"].values, strict=True)]
    assert list(ds["label3"].values) == list(by_clip.loc[keys, "label3"])
    assert list(ds["au_code"].values) == list(by_clip.loc[keys, "au"])
    lengths = (by_clip.loc[keys, "offset"] - by_clip.loc[keys, "onset"] + 1).to_numpy()
    np.testing.assert_array_equal(ds["n_frames"].values, lengths)
    assert (ds["source_subject"].values != ds["target_subject"].values).all()
    table = store_table(clean_store)
    assert np.isfinite(table["quality_l1"]).all() and np.isfinite(table["quality_identity"]).all()
    assert table["au_names"].str.startswith("AU").all()
    clips = da.from_zarr(str(clean_store / "clips"))
    first = clips[0, : int(ds["n_frames"][0])].compute()
    assert first.std() > 10  # a real face, not padding
    np.testing.assert_array_equal(first, read_clip(clean_store, 0))


def test_sigkilled_worker_then_rerun_gives_exactly_the_clean_clips(
    inputs: dict,
    client,
    clean_store: Path,
    tmp_path: Path,  # noqa: ANN001
) -> None:
    out = tmp_path / "killed-worker.zarr"
    pids = list(client.run(os.getpid).values())

    def kill_one_worker_once_a_clip_lands() -> None:
        deadline = time.time() + 120
        while time.time() < deadline and not any((out / "clips").glob("c.*")):
            time.sleep(0.05)
        os.kill(pids[0], signal.SIGKILL)

    killer = threading.Thread(target=kill_one_worker_once_a_clip_lands, daemon=True)
    killer.start()
    first = generate(job_for(inputs, out), client=client)
    killer.join()
    with pytest.raises(ProcessLookupError):
        os.kill(pids[0], 0)  # the worker really died mid-run
    rerun = generate(job_for(inputs, out), client=client)
    assert rerun.failures == []
    assert first.written + rerun.written == inputs["n_base"] or rerun.already_done == first.written
    assert checksums(out) == checksums(clean_store)


def _augmenter() -> list[str]:
    script = Path(sys.executable).with_name("augmenter")
    return [str(script)] if script.exists() else [sys.executable, str(REPO / "cli.py")]


def test_sigkilled_job_resumes_from_a_job_file(inputs: dict, clean_store: Path, tmp_path: Path) -> None:
    out = tmp_path / "killed-job.zarr"
    options = {
        "manifest": str(inputs["base"]),
        "root": str(inputs["root"]),
        "generator": "landmark-tps",
        "targets": str(inputs["base"]),
        "out": str(out),
        "max-per-source": MAX_PER_SOURCE,
        "size": 64,
        "workers": 1,  # one cold worker starts faster on 2 shared cores; the pool's resume is tested above
        "batch-size": 1,
        "identity-quality": False,
    }
    args = [f"--{k}={v}" for k, v in options.items() if not isinstance(v, bool)] + ["--no-identity-quality"]
    job = subprocess.Popen(
        [*_augmenter(), "generate", *args],
        cwd=tmp_path,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    while time.time() < deadline and len(list((out / "clips").glob("c.*"))) < 2 and job.poll() is None:
        time.sleep(0.05)
    assert job.poll() is None, "the job finished before it could be killed; make the plan larger"
    os.killpg(job.pid, signal.SIGKILL)  # the driver, its scheduler and its workers, all at once
    job.wait()
    assert Path(str(out) + ".lock").exists()  # left behind by the killed job
    done_before = int(store_table(out, include_pending=True)["done"].sum())
    assert done_before < inputs["n_base"]

    config = tmp_path / "job.toml"
    lines = [f"{k} = {json.dumps(v)}" for k, v in options.items()]
    config.write_text("[generate]\n" + "\n".join(lines) + "\n")
    resumed = subprocess.run(
        [*_augmenter(), "generate", "--config", str(config)], cwd=tmp_path, capture_output=True, text=True
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"{inputs['n_base']} planned" in resumed.stdout
    assert checksums(out) == checksums(clean_store)
    assert not Path(str(out) + ".lock").exists()


def test_grown_manifest_appends_only_new_pairs(
    inputs: dict, client, clean_store: Path, tmp_path: Path
) -> None:  # noqa: ANN001
    out = tmp_path / "grown.zarr"
    shutil.copytree(clean_store, out)
    before = checksums(out)
    result = generate(job_for(inputs, out, manifest=inputs["grown"]), client=client)
    assert result.already_done == inputs["n_base"] and result.written == inputs["n_new"] > 0
    after = checksums(out)
    assert len(after) == inputs["n_base"] + inputs["n_new"]
    assert {k: after[k] for k in before} == before  # earlier clips untouched, same indices
    assert list(store_table(out)["pair_id"][: len(before)]) == list(store_table(clean_store)["pair_id"])


def test_refusals_are_one_line_user_errors(inputs: dict, clean_store: Path, tmp_path: Path) -> None:
    out = tmp_path / "other.zarr"
    shutil.copytree(clean_store, out)
    with pytest.raises(UserError, match="size") as info:
        generate(job_for(inputs, out, size=48))
    assert "\n" not in str(info.value) and "--overwrite" in str(info.value)
    with pytest.raises(UserError, match="seed"):
        generate(job_for(inputs, out, seed=1))
    with StoreLock(out):
        refused = subprocess.run(
            [*_augmenter(), "generate", f"--manifest={inputs['base']}", f"--root={inputs['root']}",
             "--generator=landmark-tps", f"--targets={inputs['base']}", f"--out={out}"],
            capture_output=True, text=True,
        )  # fmt: skip
    assert refused.returncode == 2 and "in use by pid" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    dry = generate(job_for(inputs, tmp_path / "never.zarr", dry_run=True))
    assert dry.planned == inputs["n_base"] and "per class:" in dry.plan_summary
    assert not (tmp_path / "never.zarr").exists()
    plan, info = plan_job(job_for(inputs, tmp_path / "never.zarr"))
    assert len(plan) == dry.planned and info["generator_kind"] == "landmark-tps"
    assert (plan["generator"] == info["generator_checksum"]).all()


def test_pipelined_batches_write_the_clean_clips(
    inputs: dict, client, clean_store: Path, tmp_path: Path
) -> None:  # noqa: ANN001
    """The GPU workers' pipeline (next group prepared and last group written beside the model, in threads),
    forced on CPU workers with whole-target batches: the same clips, byte for byte, and the same qualities."""
    out = tmp_path / "pipelined.zarr"
    job = job_for(inputs, out, identity_quality=True, pipeline=True, batch_size=inputs["n_base"])
    result = generate(job, client=client)
    assert result.failures == [] and result.written == inputs["n_base"]
    assert checksums(out) == checksums(clean_store)
    columns = ["pair_id", "quality_l1", "quality_identity"]
    pipelined = store_table(out)[columns].sort_values("pair_id").reset_index(drop=True)
    clean = store_table(clean_store)[columns].sort_values("pair_id").reset_index(drop=True)
    assert np.allclose(pipelined[columns[1:]].to_numpy(float), clean[columns[1:]].to_numpy(float))


@pytest.mark.parametrize("pipeline", [False, True])
def test_corrupt_frames_fail_their_pairs_only(inputs: dict, client, tmp_path: Path, pipeline: bool) -> None:  # noqa: ANN001
    root = tmp_path / "root"
    shutil.copytree(inputs["root"], root)
    bad = inputs["base_frame"].iloc[0]
    frames = clip_frames(bad, root)
    frames[len(frames) // 2][1].write_bytes(b"not a jpeg")
    out = tmp_path / "corrupt.zarr"
    result = generate(job_for(inputs, out, root=root, pipeline=pipeline, batch_size=4), client=client)
    failed = {pair for pair, _ in result.failures}
    table = store_table(out, include_pending=True)
    bad_rows = table[table["source_clip"] == bad["clip_id"]]
    assert failed == set(bad_rows["pair_id"]) and len(failed) == MAX_PER_SOURCE
    assert bad_rows["error"].str.contains("unreadable image").all() and not bad_rows["done"].any()
    assert table["done"].sum() == inputs["n_base"] - MAX_PER_SOURCE


def test_preview_draws_source_target_generated(clean_store: Path, tmp_path: Path) -> None:
    import imageio.v3 as iio

    gif = preview(clean_store, tmp_path / "grid.gif", n=2)
    frames = iio.imread(gif, index=None)
    assert frames.shape[2] == 3 * 128 + 2 * 2  # three 64² columns at x2, 2 px apart (tests/test_preview.py)
    # The last clip's frames row sits above its flow row (128 + 2 px each, at the bottom).
    left, right = frames[0, -260:-132, :128].astype(int), frames[0, -260:-132, -128:].astype(int)
    assert left.std() > 10 and right.std() > 10  # both a source face and a generated face were drawn


@pytest.mark.parametrize("n_todo, n_workers", [(32, 2), (1000, 4), (7, 3), (1, 1)])
def test_default_batches_shrink_so_workers_finish_together(n_todo: int, n_workers: int) -> None:
    """Every pairing in exactly one batch; never above the cap, never growing; the run ends on single clips
    so no worker is left with a large last batch while the others idle; a size the job sets is kept."""
    sizes = list(batch_sizes(n_todo, n_workers))
    assert sum(sizes) == n_todo and min(sizes) >= 1 and max(sizes) <= MAX_BATCH_CLIPS
    assert sizes == sorted(sizes, reverse=True)
    assert sizes[-min(n_workers, len(sizes)) :] == [1] * min(n_workers, len(sizes))
    assert list(batch_sizes(10, n_workers, fixed=4)) == [4, 4, 2]


def test_fit_length_keeps_apex() -> None:
    frames = np.arange(30)[:, None, None, None] * np.ones((1, 2, 2, 3), np.uint8)
    fitted, apex = fit_length(frames, 13, 10)
    assert len(fitted) == 10 and fitted[apex, 0, 0, 0] == 13 and fitted[0, 0, 0, 0] == 0
    assert fitted[-1, 0, 0, 0] == 29
    same, same_apex = fit_length(frames[:5], 2, 10)
    assert len(same) == 5 and same_apex == 2


def test_job_file_paths_types_and_command_line_precedence(tmp_path: Path) -> None:
    from augmenter.jobfile import build_job, job_from_file, read_job_file

    (tmp_path / "jobs").mkdir()
    config = tmp_path / "jobs" / "job.toml"
    config.write_text(
        'manifest = "../m.csv"\nroot = "/data/casme2"\ngenerator = "landmark-tps"\ntargets = "faces"\n'
        'out = "out.zarr"\nper-class = 5\nstrategy = "balanced"\nexclude-subjects = "casme2/1, casme2/2"\n'
    )
    values = read_job_file(config)
    assert values["manifest"] == (tmp_path / "m.csv").resolve() and values["root"] == Path("/data/casme2")
    assert values["exclude_subjects"] == ["casme2/1", "casme2/2"]
    job = build_job(values, {"per_class": 9, "seed": None, "exclude_subjects": []})
    assert job.per_class == 9 and job.seed == 0 and job.exclude_subjects == ["casme2/1", "casme2/2"]
    assert job_from_file(config, out=tmp_path / "x.zarr").out == tmp_path / "x.zarr"
    config.write_text('manifest = "m.csv"\nper_clas = 3\n')
    with pytest.raises(UserError, match="unknown option 'per_clas'"):
        read_job_file(config)
    config.write_text('per-class = "many"\n')
    with pytest.raises(UserError, match="must be an integer"):
        read_job_file(config)
    with pytest.raises(UserError, match="--manifest, --root"):
        build_job({}, {"generator": "landmark-tps", "targets": "t", "out": "o"})


def test_copy_onset_store_is_the_motionless_target_with_person_provenance(
    inputs: dict,
    client,
    tmp_path: Path,  # noqa: ANN001
) -> None:
    from augmenter.generators.base import TRAINING_FREE

    out = tmp_path / "copy-onset.zarr"
    result = generate(job_for(inputs, out, generator="copy-onset"), client=client)
    assert result.failures == [] and result.written == inputs["n_base"]
    table = store_table(out)
    assert set(table["generator_kind"]) == {"copy-onset"}
    assert set(table["generator_training_subjects"]) == {TRAINING_FREE}
    assert set(table["generator_training_persons"]) == {TRAINING_FREE}
    assert (table["source_person"] != table["target_person"]).all()
    base = inputs["base_frame"]
    persons = dict(zip(base["dataset"] + "/" + base["subject"], base["person"], strict=True))
    assert list(table["source_person"]) == [persons[s] for s in table["source_subject"]]
    for row in table.itertuples():
        frames = read_clip(out, row.index)
        assert len(frames) == row.n_frames and (frames == frames[0]).all()  # no motion at all
        assert row.quality_l1 == 0.0  # and frame 0 is the target itself


def test_dry_run_estimates_time_and_store_size(inputs: dict, tmp_path: Path) -> None:
    job = job_for(inputs, tmp_path / "never.zarr", dry_run=True, workers=2, gpus="none", estimate_pairings=2)
    dry = generate(job)
    assert not (tmp_path / "never.zarr").exists()
    base = inputs["base_frame"]
    frames = int((base["offset"] - base["onset"] + 1).sum()) * MAX_PER_SOURCE
    assert dry.estimated_store_bytes == frames * 64 * 64 * 3  # uncompressed, padding a file hole: exact
    assert dry.estimated_seconds is not None and 0 < dry.estimated_seconds < 600
    assert "estimate:" in dry.plan_summary and "on 2 cpu worker(s)" in dry.plan_summary
    assert "GB on disk when every clip is written" in dry.plan_summary
