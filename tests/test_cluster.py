"""get_client on real Dask clusters: GPU pinning checked with a fake GPU list on CPU, loopback-only listening
sockets read from the processes themselves (psutil), SLURM script text (tests/test_slurm.py runs them)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import pytest

from augmenter.cluster import (
    WORKER_MALLOC_ENV,
    WORKER_MALLOC_EXPORT,
    WORKER_MONITOR_EXPORT,
    close_client,
    cluster_has_gpus,
    detect_gpus,
    get_client,
    is_loopback,
    listening_sockets,
    local_cluster,
    parse_gpus,
    slurm_script,
)
from augmenter.errors import UserError


def _outside_loopback() -> list[tuple[int, str, int]]:
    """Listening sockets of this process and its children (scheduler, nannies, workers) not on loopback."""
    sockets = listening_sockets()
    assert sockets, "psutil saw no listening socket at all; the check would prove nothing"
    return [s for s in sockets if not is_loopback(s[1])]


def _worker_view(dask_worker=None) -> dict:  # noqa: ANN001 - client.run passes the Worker
    names = ("CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS")
    view = {k: os.environ.get(k) for k in (*names, *WORKER_MALLOC_ENV)} | {"pid": os.getpid()}
    if dask_worker is not None:  # the worker's own periodic callbacks: is a profiler running, how often
        callbacks = dask_worker.periodic_callbacks  # does the system monitor run (ms)
        view |= {"profiler": "profile" in callbacks, "monitor_ms": callbacks["monitor"].callback_time}
    return view


def _only(per_worker: dict):  # noqa: ANN202 - whatever the one worker returned
    """The value `client.run` got from the one worker there is."""
    (value,) = per_worker.values()
    return value


def _malloc_settings(view: dict) -> dict:
    return {name: view[name] for name in WORKER_MALLOC_ENV}


def _fresh_page_share_of_tensor_churn() -> float:
    """The share of pages the kernel had to map in afresh while 1–7 MiB tensors were made and freed 40 times
    (after a warm-up): near 0 when freed memory is reused, 1 when each tensor is mapped anew."""
    import torch

    def faults() -> int:
        with open("/proc/self/stat") as stat:
            return int(stat.read().rsplit(")", 1)[1].split()[7])  # minflt

    def churn() -> int:
        pages = 0
        for step in range(40):
            tensor = torch.full(((1 + step % 7) << 18,), 1.0)  # (1 + step % 7) MiB of float32
            doubled = tensor * 2
            pages += 2 * tensor.nbytes // 4096
            del tensor, doubled
        return pages

    churn()
    before = faults()
    pages = churn()
    return (faults() - before) / pages


def test_one_worker_per_fake_gpu_each_pinned_to_its_card() -> None:
    client = get_client(gpus=["0", "1"], dashboard_address=None)
    try:
        client.wait_for_workers(2, timeout=60)
        workers = client.scheduler_info(n_workers=-1)["workers"]
        by_name = {info["name"]: address for address, info in workers.items()}
        assert sorted(by_name) == ["gpu-0", "gpu-1"]
        assert all(info["nthreads"] == 1 and info["resources"] == {"GPU": 1} for info in workers.values())
        assert all(address.startswith("tcp://127.0.0.1:") for address in workers)
        assert _outside_loopback() == []
        views = client.run(_worker_view)
        for name, address in by_name.items():
            assert views[address]["CUDA_VISIBLE_DEVICES"] == name.removeprefix("gpu-")
        assert views[by_name["gpu-0"]]["pid"] != views[by_name["gpu-1"]]["pid"]
        assert all(_malloc_settings(view) == WORKER_MALLOC_ENV for view in views.values())
        assert cluster_has_gpus(client)
        # tasks that ask for a GPU run one at a time per worker, on both workers
        futures = [client.submit(_worker_view, resources={"GPU": 1}, pure=False) for _ in range(6)]
        seen = {f.result()["CUDA_VISIBLE_DEVICES"] for f in futures}
        assert seen <= {"0", "1"} and seen
    finally:
        close_client(client)


def test_cpu_workers_are_single_threaded_processes_and_existing_scheduler_is_reused() -> None:
    client = get_client(workers=2, gpus="none", dashboard_address=None)
    try:
        client.wait_for_workers(2, timeout=60)
        workers = client.scheduler_info(n_workers=-1)["workers"]
        assert len(workers) == 2 and all(info["nthreads"] == 1 for info in workers.values())
        assert not cluster_has_gpus(client)
        assert client.dashboard_link.startswith("http://127.0.0.1:")
        assert _outside_loopback() == []  # the sockets themselves, not a link string
        views = client.run(_worker_view)
        assert len({v["pid"] for v in views.values()} | {os.getpid()}) == 3  # separate processes
        assert {v["OMP_NUM_THREADS"] for v in views.values()} == {str(max(1, (os.cpu_count() or 1) // 2))}
        # glibc's malloc settings reach the worker process, and in a task's thread tensors that come and go
        # no longer make the kernel map and zero fresh pages (distributed's trim setting halved torch's speed)
        assert all(_malloc_settings(view) == WORKER_MALLOC_ENV for view in views.values())
        churn = [client.submit(_fresh_page_share_of_tensor_churn, pure=False) for _ in range(2)]
        assert all(f.result() < 0.1 for f in churn), [f.result() for f in churn]
        # no statistical profiler, the system monitor every 5 s (Dask's monitors cost CPU beside long tasks)
        assert {(v["profiler"], v["monitor_ms"]) for v in views.values()} == {(False, 5000)}
        # an existing scheduler: same workers, and closing this client must not stop that cluster
        other = get_client(scheduler_address=client.scheduler.address)
        assert set(other.scheduler_info(n_workers=-1)["workers"]) == set(workers)
        close_client(other)
        assert client.submit(sum, [1, 2]).result() == 3
    finally:
        close_client(client)


def test_local_cluster_listens_on_loopback_and_the_check_sees_an_open_dashboard() -> None:
    from distributed import LocalCluster

    cluster = local_cluster(1, processes=False)
    try:
        assert _outside_loopback() == []
    finally:
        cluster.close()
    exposed = LocalCluster(n_workers=1, processes=False, dashboard_address=":0")  # distributed's own habit
    try:
        assert any(ip in ("0.0.0.0", "::") for _, ip, _ in _outside_loopback())  # the check can fail
    finally:
        exposed.close()


def test_gpu_list_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    assert parse_gpus("0, 2") == ["0", "2"] and parse_gpus("none") == [] and parse_gpus(None) is None
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    assert detect_gpus() == ["3", "5"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert detect_gpus() == []
    with pytest.raises(UserError, match="scheduler file"):
        get_client(scheduler_file="/nonexistent/scheduler.json")


def test_slurm_scripts_are_valid_and_pin_gpus(tmp_path) -> None:  # noqa: ANN001
    text = slurm_script("--config job.toml", nodes=2, gpus_per_node=4, partition="gpu")
    assert "#SBATCH --nodes=2" in text and "#SBATCH --ntasks-per-node=4" in text
    assert "--gpus-per-task=1" in text and "--resources GPU=1" in text and "--nthreads 1" in text
    assert "srun --ntasks=8" in text and "augmenter generate --scheduler-file" in text
    assert "#SBATCH --partition=gpu" in text
    script = tmp_path / "job.sbatch"
    script.write_text(text)
    if shutil.which("bash"):
        assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    python = slurm_script("--config job.toml", style="jobqueue", gpus_per_node=2)
    compile(python, "jobqueue.py", "exec")  # valid Python without importing dask_jobqueue
    assert '"--gres=gpu:1"' in python and "cluster.scale(jobs=2)" in python
    with pytest.raises(UserError):
        slurm_script(style="pbs")


def test_slurm_cpu_mode_asks_for_no_gpu(tmp_path) -> None:  # noqa: ANN001
    text = slurm_script("--config job.toml", gpus_per_node=0, workers_per_node=3, cpus_per_worker=2)
    for gpu_request in ("--gpus-per-task", "--gres", "GPU=1", "--mem-per-gpu"):
        assert gpu_request not in text  # a node without GPUs refuses a job that names one
    assert "#SBATCH --ntasks-per-node=3" in text and "#SBATCH --cpus-per-task=2" in text
    assert "srun --ntasks=3 --cpus-per-task=2" in text and "--mem-per-cpu=4G" in text
    assert '--host "127.0.0.1"' in text and "--host 127.0.0.1" in text  # one node: loopback only
    script = tmp_path / "cpu.sbatch"
    script.write_text(text)
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    two_nodes = slurm_script(nodes=2, gpus_per_node=0, workers_per_node=1)
    assert '--host "$(hostname)"' in two_nodes and "srun --ntasks=2" in two_nodes
    python = slurm_script(gpus_per_node=0, workers_per_node=2, style="jobqueue")
    compile(python, "jobqueue.py", "exec")
    assert "gres" not in python and "processes=2" in python and "cluster.scale(jobs=1)" in python
    with pytest.raises(UserError, match="--workers-per-node"):
        slurm_script(gpus_per_node=0)
    with pytest.raises(UserError, match="one worker per GPU"):
        slurm_script(gpus_per_node=2, workers_per_node=4)
    with pytest.raises(UserError, match="≥ 0"):
        slurm_script(gpus_per_node=-1)


@pytest.mark.parametrize("style", ["sbatch", "jobqueue"])
def test_slurm_workers_get_the_malloc_settings_and_quiet_monitors(style: str) -> None:
    """The export lines the scripts give their workers, run in a shell that starts a real `dask worker` (with
    its nanny): the worker process has WORKER_MALLOC_ENV and no profiler; without the lines distributed sets
    its own trim threshold (65536), no other malloc setting, and profiles."""
    import dask
    from distributed import Client, LocalCluster

    exports = (WORKER_MALLOC_EXPORT, WORKER_MONITOR_EXPORT)
    for gpus in (0, 1):
        text = slurm_script(gpus_per_node=gpus, workers_per_node=1, style=style)
        for line in exports:
            assert text.count(line if style == "sbatch" else repr(line)) == 1
    dask_worker = shutil.which("dask", path=os.path.dirname(sys.executable))
    assert dask_worker is not None
    # a nanny sets its pre-spawn environment in its own process too: local clusters of earlier tests left
    # the malloc settings in this one's environment
    clean_env = {k: v for k, v in os.environ.items() if k not in WORKER_MALLOC_ENV}
    seen = {}
    with (
        LocalCluster(n_workers=0, host="127.0.0.1", dashboard_address="127.0.0.1:0") as cluster,
        Client(cluster) as client,
    ):
        for label, prologue in (("exported", "; ".join(exports) + "; "), ("plain", "")):
            command = (
                f"{prologue}exec {dask_worker} worker {cluster.scheduler_address} --nthreads 1 "
                f"--host 127.0.0.1 --no-dashboard --name {label}"
            )
            process = subprocess.Popen(
                ["bash", "-c", command], env=clean_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            try:
                client.wait_for_workers(1, timeout=60)
                # os.getenv, not a function of this file: the worker cannot import the tests
                malloc = {name: _only(client.run(os.getenv, name)) for name in WORKER_MALLOC_ENV}
                profiled = _only(client.run(dask.config.get, "distributed.worker.profile.enabled"))
                seen[label] = (malloc, profiled)
            finally:
                process.terminate()
                process.wait(timeout=30)
                deadline = time.monotonic() + 30
                while client.scheduler_info(n_workers=-1)["workers"] and time.monotonic() < deadline:
                    time.sleep(0.2)
    plain = dict.fromkeys(WORKER_MALLOC_ENV) | {"MALLOC_TRIM_THRESHOLD_": "65536"}
    assert seen == {"exported": (WORKER_MALLOC_ENV, False), "plain": (plain, True)}


def test_cli_prints_the_slurm_script() -> None:
    from typer.testing import CliRunner

    from cli import app

    result = CliRunner().invoke(
        app, ["cluster", "slurm-script", "--gpus-per-node", "2", "--args", "--config j.toml"]
    )
    assert result.exit_code == 0, result.output
    assert "#SBATCH --ntasks-per-node=2" in result.output
    assert 'augmenter generate --scheduler-file "$SCHEDULER_FILE" --config j.toml' in result.output
