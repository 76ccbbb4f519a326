"""One way to get a Dask client for every setting: an existing scheduler, one GPU box, or a CPU-only laptop.

GPU pinning follows DESIGN §7: one worker per GPU, one thread, `resources={"GPU": 1}` and the worker's own
CUDA_VISIBLE_DEVICES set by its Nanny before the worker process starts, so inside a task the model always
sits on "cuda:0" and never sees another job's card. Only an environment variable differs, so the pinning can
be tested on a CPU machine with a fake GPU list.
"""

from __future__ import annotations

import os
import shlex
import weakref
from collections.abc import Sequence
from pathlib import Path

from distributed import Client

from augmenter.errors import UserError

DEFAULT_DASHBOARD = "127.0.0.1:8787"
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
    host: str = "127.0.0.1",
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
    from distributed import LocalCluster

    cores = os.cpu_count() or 1
    n_workers = int(workers) if workers else cores
    if n_workers < 1:
        raise UserError(f"--workers must be ≥ 1 (got {workers})")
    return LocalCluster(
        n_workers=n_workers,
        threads_per_worker=1,
        processes=True,
        host=host,
        dashboard_address=dashboard_address,
        env=_cpu_thread_env(cores // n_workers),
    )


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


def slurm_script(
    generate_args: str = "--config job.toml",
    *,
    nodes: int = 1,
    gpus_per_node: int = 1,
    cpus_per_gpu: int = 4,
    mem_per_gpu: str = "16G",
    walltime: str = "04:00:00",
    partition: str | None = None,
    account: str | None = None,
    venv: str = ".venv",
    style: str = "sbatch",
) -> str:
    """Text of a ready SLURM job that runs `augmenter generate` on `nodes` × `gpus_per_node` GPU workers.

    style "sbatch": plain sbatch script (scheduler on the first node, one `dask worker` per GPU through srun,
    each pinned by SLURM's per-task GPU binding). style "jobqueue": a Python script using dask-jobqueue's
    SLURMCluster (an optional extra: `pip install 'augmenter[slurm]'`).
    """
    if nodes < 1 or gpus_per_node < 1 or cpus_per_gpu < 1:
        raise UserError("nodes, --gpus-per-node and --cpus-per-gpu must all be ≥ 1")
    if style == "sbatch":
        return _sbatch_text(
            generate_args, nodes, gpus_per_node, cpus_per_gpu, mem_per_gpu, walltime, partition, account, venv
        )
    if style == "jobqueue":
        return _jobqueue_text(
            generate_args, nodes, gpus_per_node, cpus_per_gpu, mem_per_gpu, walltime, partition, account
        )
    raise UserError(f"unknown script style {style!r}; choose sbatch or jobqueue")


def _sbatch_text(
    generate_args: str,
    nodes: int,
    gpus_per_node: int,
    cpus_per_gpu: int,
    mem_per_gpu: str,
    walltime: str,
    partition: str | None,
    account: str | None,
    venv: str,
) -> str:
    extra = "".join(
        f"#SBATCH --{key}={value}\n"
        for key, value in (("partition", partition), ("account", account))
        if value
    )
    workers = nodes * gpus_per_node
    return f"""#!/usr/bin/env bash
#SBATCH --job-name=augmenter-generate
#SBATCH --nodes={nodes}
#SBATCH --ntasks-per-node={gpus_per_node}
#SBATCH --gpus-per-task=1
#SBATCH --cpus-per-task={cpus_per_gpu}
#SBATCH --mem-per-gpu={mem_per_gpu}
#SBATCH --time={walltime}
{extra}#SBATCH --output=augmenter-generate-%j.log
# Generated by `augmenter cluster slurm-script`. Submitting it again resumes: done clips are skipped.
set -euo pipefail
source {shlex.quote(venv)}/bin/activate
SCHEDULER_FILE="$PWD/dask-scheduler-$SLURM_JOB_ID.json"
# Scheduler on this (the first) node; one worker per GPU of every node, one thread each, pinned by SLURM.
dask scheduler --scheduler-file "$SCHEDULER_FILE" --host "$(hostname)" --dashboard-address 127.0.0.1:8787 &
SCHEDULER_PID=$!
while [ ! -s "$SCHEDULER_FILE" ]; do sleep 1; done
srun --ntasks={workers} --gpus-per-task=1 --cpus-per-task={cpus_per_gpu} \\
    dask worker --scheduler-file "$SCHEDULER_FILE" --nthreads 1 --nworkers 1 --resources GPU=1 \\
    --memory-limit 0 --local-directory "${{TMPDIR:-/tmp}}" &
WORKERS_PID=$!
trap 'kill $WORKERS_PID $SCHEDULER_PID 2>/dev/null || true; rm -f "$SCHEDULER_FILE"' EXIT
augmenter generate --scheduler-file "$SCHEDULER_FILE" {generate_args}
"""


def _jobqueue_text(
    generate_args: str,
    nodes: int,
    gpus_per_node: int,
    cpus_per_gpu: int,
    mem_per_gpu: str,
    walltime: str,
    partition: str | None,
    account: str | None,
) -> str:
    options = [
        f"cores={cpus_per_gpu}",
        "processes=1",
        f"memory={mem_per_gpu!r}",
        f"walltime={walltime!r}",
        'job_extra_directives=["--gres=gpu:1"]',
        'worker_extra_args=["--resources", "GPU=1", "--nthreads", "1"]',
    ]
    if partition:
        options.append(f"queue={partition!r}")
    if account:
        options.append(f"account={account!r}")
    joined = ",\n        ".join(options)
    return f'''"""Made by `augmenter cluster slurm-script --style jobqueue`; needs the `slurm` extra."""
import os
import shlex
import subprocess

from dask_jobqueue import SLURMCluster

if __name__ == "__main__":  # workers are spawned: never run this on import
    cluster = SLURMCluster(
        {joined},
    )
    cluster.scale(jobs={nodes * gpus_per_node})  # one SLURM job per GPU worker
    env = os.environ | {{"DASK_SCHEDULER_ADDRESS": cluster.scheduler_address}}
    try:
        subprocess.run(["augmenter", "generate", *shlex.split({generate_args!r})], env=env, check=True)
    finally:
        cluster.close()
'''
