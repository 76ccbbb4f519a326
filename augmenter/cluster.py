"""One way to get a Dask client for every setting: an existing scheduler, one GPU box, or a CPU-only laptop.

Every scheduler, worker, nanny and dashboard started here listens on LOOPBACK (127.0.0.1) unless the caller
passes another `host`: a laptop or a shared GPU box must not expose an unauthenticated Dask endpoint.
`listening_sockets` lists what a process tree really listens on, for tests and for checking by hand.

GPU pinning follows DESIGN §7: one worker per GPU, one thread, `resources={"GPU": 1}` and the worker's own
CUDA_VISIBLE_DEVICES set by its Nanny before the worker process starts, so inside a task the model always
sits on "cuda:0" and never sees another job's card. Only an environment variable differs, so the pinning can
be tested on a CPU machine with a fake GPU list.
"""

from __future__ import annotations

import json
import os
import shlex
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from distributed import Client

from augmenter.errors import UserError

LOOPBACK = "127.0.0.1"
DEFAULT_DASHBOARD = f"{LOOPBACK}:8787"
_OWNED_CLUSTERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def detect_gpus() -> list[str]:
    """Default device ids: CUDA_VISIBLE_DEVICES when set, else every card torch can see (none on CPU)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [d.strip() for d in visible.split(",") if d.strip() and d.strip() != "-1"]
    try:
        import torch
    except ImportError:
        return []
    return [str(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []


def parse_gpus(value: str | Sequence[str] | None) -> list[str] | None:
    """ "0,1" / ["0", "1"] → ["0", "1"]; "none" or "" → [] (force CPU); None → detect."""
    if value is None:
        return None
    if isinstance(value, str):
        if value.strip().lower() in ("", "none", "cpu"):
            return []
        return [part.strip() for part in value.split(",") if part.strip()]
    return [str(v) for v in value]


def _cpu_thread_env(threads: int) -> dict[str, str]:
    """Keep torch/BLAS inside a worker to its share of the cores (N workers × all cores thrash)."""
    value = str(max(1, threads))
    return {"OMP_NUM_THREADS": value, "MKL_NUM_THREADS": value, "OPENBLAS_NUM_THREADS": value}


def get_client(
    scheduler_address: str | None = None,
    scheduler_file: str | Path | None = None,
    workers: int | None = None,
    gpus: str | Sequence[str] | None = None,
    dashboard_address: str | None = DEFAULT_DASHBOARD,
    host: str = LOOPBACK,
) -> Client:
    """A client for an existing cluster, or a local one made for this machine.

    Existing: `scheduler_address` (or $DASK_SCHEDULER_ADDRESS), else `scheduler_file`. Local: one worker per
    GPU in `gpus` (default: detect_gpus()), else `workers` CPU worker processes (default: the core count),
    each with one thread. The scheduler and dashboard bind to `host` (127.0.0.1 unless told otherwise).
    Close with `close_client`, which also stops a local cluster made here.
    """
    address = scheduler_address or os.environ.get("DASK_SCHEDULER_ADDRESS")
    if address:
        return Client(address)
    if scheduler_file is not None:
        if not Path(scheduler_file).is_file():
            raise UserError(
                f"{scheduler_file}: scheduler file not found; start `dask scheduler --scheduler-file`"
            )
        return Client(scheduler_file=str(scheduler_file))
    gpu_ids = parse_gpus(gpus)
    if gpu_ids is None:
        gpu_ids = detect_gpus()
    # None must not mean distributed's default (":8787" = every interface): a free port on `host` instead
    dashboard_address = dashboard_address or f"{host}:0"
    cluster = (
        _gpu_cluster(gpu_ids, dashboard_address, host)
        if gpu_ids
        else _cpu_cluster(workers, dashboard_address, host)
    )
    client = Client(cluster)
    _OWNED_CLUSTERS[client] = cluster
    return client


def _cpu_cluster(workers: int | None, dashboard_address: str | None, host: str):  # noqa: ANN202
    cores = os.cpu_count() or 1
    n_workers = int(workers) if workers else cores
    if n_workers < 1:
        raise UserError(f"--workers must be ≥ 1 (got {workers})")
    return local_cluster(n_workers, dashboard_address=dashboard_address, host=host)


# glibc's malloc settings for every worker, set before the worker process starts (glibc reads them once):
# one arena for all threads (tasks run in a worker thread, whose own arena kept unmapping and re-faulting
# its pages), allocations up to 32 MiB (glibc's ceiling for its moving threshold) from the heap, and up to
# 128 MiB of free heap kept rather than handed back. One CPU worker, tiny-64 demo weights, 64² clips:
#   distributed's default (MALLOC_TRIM_THRESHOLD_=65536, which also freezes the mmap threshold at 128 KiB):
#     110,778 page faults and 0.344 CPU s per clip (41 % of it in the kernel), 2.88 clips/s;
#   glibc's own tuning (nothing set): 3,049 faults per clip, 4.24 clips/s;
#   these settings: 0 faults per clip, 4.38 clips/s, resident memory 774 vs 724 MB (+7 %).
WORKER_MALLOC_ENV: dict[str, str] = {
    "MALLOC_ARENA_MAX": "1",
    "MALLOC_MMAP_THRESHOLD_": str(32 << 20),
    "MALLOC_TRIM_THRESHOLD_": str(128 << 20),
}
# The same for workers this process does not start (`dask worker` in a SLURM job): dask reads this variable
# (a Python literal, merged with distributed's own) into distributed.nanny.pre-spawn-environ, which the
# nanny sets before it spawns its worker.
WORKER_MALLOC_EXPORT = f"export DASK_DISTRIBUTED__NANNY__PRE_SPAWN_ENVIRON='{json.dumps(WORKER_MALLOC_ENV)}'"

# Dask's own monitors, set for tasks that keep a core busy for seconds: no statistical profiler (it samples
# every thread's stack 100 times a second), system and memory monitors every few seconds instead of every
# 0.5 / 0.1 s, the event-loop latency check 5 times a second instead of 50. With 2 single-threaded workers on
# 2 cores, each worker spent 12 % more CPU per clip with the defaults, and the driver (scheduler) about a
# third more with the 20 ms check (timed runs of benchmarks/generate_scaling.py). The dashboard's profile
# page stays empty.
WORKER_MONITOR_SETTINGS: dict[str, object] = {
    "distributed.worker.profile.enabled": False,
    "distributed.admin.system-monitor.interval": "5s",
    "distributed.worker.memory.monitor-interval": "2s",
    "distributed.admin.tick.interval": "200ms",
}
# The same as environment variables, for workers this process does not start.
WORKER_MONITOR_EXPORT = "export " + " ".join(
    "DASK_" + key.upper().replace(".", "__").replace("-", "_") + f"={value}"
    for key, value in WORKER_MONITOR_SETTINGS.items()
)


def _worker_config():  # noqa: ANN202 - a dask.config.set context
    """Settings every worker this process starts gets (through its nanny), and the scheduler too: glibc's
    malloc settings WORKER_MALLOC_ENV and Dask's monitors WORKER_MONITOR_SETTINGS."""
    import dask

    malloc = {f"distributed.nanny.pre-spawn-environ.{name}": v for name, v in WORKER_MALLOC_ENV.items()}
    return dask.config.set({**malloc, **WORKER_MONITOR_SETTINGS})


def local_cluster(
    n_workers: int,
    threads_per_worker: int = 1,
    *,
    processes: bool = True,
    dashboard_address: str | None = None,
    host: str = LOOPBACK,
    **options: object,
):  # noqa: ANN201 - distributed.LocalCluster
    """A LocalCluster whose scheduler, workers, nannies and dashboard all listen on `host` (loopback).

    For any stage that wants local Dask workers (generate, evaluate): `dashboard_address=None` puts the
    dashboard on a free loopback port (distributed's own default, ":8787", would listen on every interface).
    Worker BLAS/OpenMP threads are limited to their share of the cores; other `options` go to LocalCluster.
    """
    from distributed import LocalCluster

    if n_workers < 1 or threads_per_worker < 1:
        raise UserError(
            f"local Dask cluster needs ≥ 1 worker and thread (got {n_workers}, {threads_per_worker})"
        )
    cores = os.cpu_count() or 1
    env = _cpu_thread_env(max(1, cores // (n_workers * threads_per_worker))) | dict(
        options.pop("env", {}) or {}
    )
    if processes:
        options |= {"host": host, "env": env}
    else:  # threads talk in-process (no host to bind); a worker's own HTTP server would take every interface
        options |= {"worker_dashboard_address": f"{host}:0"}
    with _worker_config():
        return LocalCluster(
            n_workers=n_workers,
            threads_per_worker=threads_per_worker,
            processes=processes,
            dashboard_address=dashboard_address or f"{host}:0",
            **options,
        )


def listening_sockets(pid: int | None = None) -> list[tuple[int, str, int]]:
    """(pid, address, port) of every listening TCP socket of process `pid` (default: this one) and all its
    descendants, e.g. a local cluster's scheduler, nannies and workers."""
    import psutil

    root = psutil.Process(pid)
    found = []
    for process in [root, *root.children(recursive=True)]:
        try:
            sockets = process.net_connections(kind="tcp")
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        found.extend(
            (process.pid, s.laddr.ip, s.laddr.port) for s in sockets if s.status == psutil.CONN_LISTEN
        )
    return found


def is_loopback(address: str) -> bool:
    """127.0.0.0/8 or ::1."""
    import ipaddress

    return ipaddress.ip_address(address.split("%")[0]).is_loopback


def _gpu_cluster(gpu_ids: Sequence[str], dashboard_address: str | None, host: str):  # noqa: ANN202
    from distributed import Nanny, Scheduler, SpecCluster

    threads = (os.cpu_count() or 1) // len(gpu_ids)
    scheduler = {"cls": Scheduler, "options": {"host": host, "dashboard_address": dashboard_address}}
    workers = {
        f"gpu-{device}": {
            "cls": Nanny,
            "options": {
                "nthreads": 1,
                "host": host,
                "resources": {"GPU": 1},
                "env": {"CUDA_VISIBLE_DEVICES": str(device)} | _cpu_thread_env(threads),
            },
        }
        for device in gpu_ids
    }
    with _worker_config():
        return SpecCluster(scheduler=scheduler, workers=workers, name="augmenter-gpu")


def close_client(client: Client) -> None:
    """Close the client and, when get_client started it, the local cluster too (never someone's scheduler)."""
    cluster = _OWNED_CLUSTERS.pop(client, None)
    client.close()
    if cluster is not None:
        cluster.close()


def cluster_has_gpus(client: Client) -> bool:
    """True when a worker advertises a GPU resource (tasks then ask for one; else they would wait forever)."""
    workers = client.scheduler_info(n_workers=-1).get("workers", {})
    return any(info.get("resources", {}).get("GPU", 0) >= 1 for info in workers.values())


@dataclass(frozen=True)
class SlurmLayout:
    """What one generate job asks SLURM for: `workers_per_node` Dask workers on each of `nodes` nodes, each
    with one GPU (`gpu`) or none, `cpus` cores and `memory` (per GPU, or per CPU core in CPU mode)."""

    nodes: int
    workers_per_node: int
    gpu: bool
    cpus: int
    memory: str
    walltime: str
    partition: str | None
    account: str | None

    @property
    def workers(self) -> int:
        return self.nodes * self.workers_per_node

    @property
    def scheduler_host(self) -> str:
        """Loopback when every worker runs on the scheduler's node; else the node's own address."""
        return LOOPBACK if self.nodes == 1 else "$(hostname)"


def slurm_script(
    generate_args: str = "--config job.toml",
    *,
    nodes: int = 1,
    gpus_per_node: int = 1,
    workers_per_node: int | None = None,
    cpus_per_gpu: int = 4,
    mem_per_gpu: str = "16G",
    cpus_per_worker: int = 1,
    mem_per_cpu: str = "4G",
    walltime: str = "04:00:00",
    partition: str | None = None,
    account: str | None = None,
    venv: str = ".venv",
    style: str = "sbatch",
) -> str:
    """Text of a ready SLURM job that runs `augmenter generate` on Dask workers.

    GPU mode (`gpus_per_node` ≥ 1): one worker per GPU, pinned by SLURM. CPU mode (`gpus_per_node` 0, for
    clusters without GPUs): `workers_per_node` single-threaded workers per node with `cpus_per_worker` cores
    each, and no GPU request at all (a node without GPUs refuses a job that names one).
    style "sbatch": plain sbatch script (scheduler on the first node, workers started through srun).
    style "jobqueue": a Python script using dask-jobqueue's SLURMCluster (`pip install 'augmenter[slurm]'`).
    """
    if nodes < 1 or gpus_per_node < 0 or cpus_per_gpu < 1 or cpus_per_worker < 1:
        raise UserError(
            "--nodes, --cpus-per-gpu and --cpus-per-worker must be ≥ 1, --gpus-per-node ≥ 0 (0 = CPU workers)"
        )
    if gpus_per_node == 0:
        if workers_per_node is None or workers_per_node < 1:
            raise UserError("--gpus-per-node 0 (CPU workers) needs --workers-per-node N (N ≥ 1)")
        layout = SlurmLayout(
            nodes, workers_per_node, False, cpus_per_worker, mem_per_cpu, walltime, partition, account
        )
    else:
        if workers_per_node not in (None, gpus_per_node):
            raise UserError(
                f"--workers-per-node {workers_per_node} with --gpus-per-node {gpus_per_node}: GPU jobs run "
                "one worker per GPU; use --gpus-per-node 0 for CPU workers"
            )
        layout = SlurmLayout(
            nodes, gpus_per_node, True, cpus_per_gpu, mem_per_gpu, walltime, partition, account
        )
    if style == "sbatch":
        return _sbatch_text(generate_args, layout, venv)
    if style == "jobqueue":
        return _jobqueue_text(generate_args, layout)
    raise UserError(f"unknown script style {style!r}; choose sbatch or jobqueue")


def _sbatch_text(generate_args: str, layout: SlurmLayout, venv: str) -> str:
    extra = "".join(
        f"#SBATCH --{key}={value}\n"
        for key, value in (("partition", layout.partition), ("account", layout.account))
        if value
    )
    host = layout.scheduler_host
    worker_host = f" --host {LOOPBACK}" if host == LOOPBACK else ""
    listen = "loopback only (one node)" if worker_host else "this node's address (workers on other nodes)"
    if layout.gpu:
        resources = f"#SBATCH --gpus-per-task=1\n#SBATCH --cpus-per-task={layout.cpus}\n"
        resources += f"#SBATCH --mem-per-gpu={layout.memory}\n"
        srun = f"srun --ntasks={layout.workers} --gpus-per-task=1 --cpus-per-task={layout.cpus}"
        worker_options, what = " --resources GPU=1", "one worker per GPU of every node, pinned by SLURM"
    else:
        resources = f"#SBATCH --cpus-per-task={layout.cpus}\n#SBATCH --mem-per-cpu={layout.memory}\n"
        srun = f"srun --ntasks={layout.workers} --cpus-per-task={layout.cpus}"
        worker_options, what = "", f"{layout.workers_per_node} CPU workers per node, no GPU asked for"
    return f"""#!/usr/bin/env bash
#SBATCH --job-name=augmenter-generate
#SBATCH --nodes={layout.nodes}
#SBATCH --ntasks-per-node={layout.workers_per_node}
{resources}#SBATCH --time={layout.walltime}
{extra}#SBATCH --output=augmenter-generate-%j.log
# Generated by `augmenter cluster slurm-script`. Submitting it again resumes: done clips are skipped.
set -euo pipefail
source {shlex.quote(venv)}/bin/activate
export OMP_NUM_THREADS={layout.cpus} MKL_NUM_THREADS={layout.cpus} OPENBLAS_NUM_THREADS={layout.cpus}
# glibc's malloc settings for the workers, set before each is spawned (augmenter.cluster says why)
{WORKER_MALLOC_EXPORT}
# Dask's profiler off, its system and memory monitors every few seconds (they cost CPU beside long tasks)
{WORKER_MONITOR_EXPORT}
SCHEDULER_FILE="$PWD/dask-scheduler-$SLURM_JOB_ID.json"
# Scheduler on this (the first) node, listening on {listen}; its dashboard on loopback.
dask scheduler --scheduler-file "$SCHEDULER_FILE" --host "{host}" --port 0 \\
    --dashboard-address {LOOPBACK}:8787 &
SCHEDULER_PID=$!
trap 'kill $SCHEDULER_PID 2>/dev/null || true; rm -f "$SCHEDULER_FILE"' EXIT
while [ ! -s "$SCHEDULER_FILE" ]; do sleep 1; done
# {what}; one thread each.
{srun} \\
    dask worker --scheduler-file "$SCHEDULER_FILE" --nthreads 1 --nworkers 1{worker_options}{worker_host} \\
    --no-dashboard --memory-limit 0 --local-directory "${{TMPDIR:-/tmp}}" &
WORKERS_PID=$!
trap 'kill $WORKERS_PID $SCHEDULER_PID 2>/dev/null || true; rm -f "$SCHEDULER_FILE"' EXIT
augmenter generate --scheduler-file "$SCHEDULER_FILE" {generate_args}
"""


def _jobqueue_text(generate_args: str, layout: SlurmLayout) -> str:
    if layout.gpu:
        options = [
            f"cores={layout.cpus}",
            "processes=1",
            f"memory={layout.memory!r}",
            'job_extra_directives=["--gres=gpu:1"]',
            'worker_extra_args=["--resources", "GPU=1", "--nthreads", "1"]',
            f"job_script_prologue=[{WORKER_MALLOC_EXPORT!r}, {WORKER_MONITOR_EXPORT!r}]",
        ]
        jobs = layout.workers  # one SLURM job per GPU worker
    else:
        from dask.utils import format_bytes, parse_bytes

        per_job = parse_bytes(layout.memory) * layout.cpus * layout.workers_per_node
        options = [
            f"cores={layout.workers_per_node}",  # one thread per worker
            f"processes={layout.workers_per_node}",
            f"job_cpu={layout.cpus * layout.workers_per_node}",
            f"memory={format_bytes(per_job).replace(' ', '')!r}",
            f'job_script_prologue=["export OMP_NUM_THREADS={layout.cpus}", {WORKER_MALLOC_EXPORT!r}, '
            f"{WORKER_MONITOR_EXPORT!r}]",
        ]
        jobs = layout.nodes  # one SLURM job per node, its workers as processes
    options += [
        f"walltime={layout.walltime!r}",
        # the scheduler runs here and listens on this machine's address (workers in other jobs must reach
        # it), its dashboard on loopback only
        f'scheduler_options={{"host": socket.gethostname(), "dashboard_address": "{LOOPBACK}:8787"}}',
    ]
    if layout.partition:
        options.append(f"queue={layout.partition!r}")
    if layout.account:
        options.append(f"account={layout.account!r}")
    joined = ",\n        ".join(options)
    return f'''"""Made by `augmenter cluster slurm-script --style jobqueue`; needs the `slurm` extra."""
import os
import shlex
import socket
import subprocess

from dask_jobqueue import SLURMCluster

if __name__ == "__main__":  # workers are spawned: never run this on import
    cluster = SLURMCluster(
        {joined},
    )
    cluster.scale(jobs={jobs})
    env = os.environ | {{"DASK_SCHEDULER_ADDRESS": cluster.scheduler_address}}
    try:
        subprocess.run(["augmenter", "generate", *shlex.split({generate_args!r})], env=env, check=True)
    finally:
        cluster.close()
'''
