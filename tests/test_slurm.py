"""Generated SLURM jobs on a real single-node SLURM (Debian's slurmctld, slurmd and munge), CPU workers.

The cluster lives in a temporary folder with its own slurm.conf, munge key and socket, listening on loopback
only; it needs root (slurmd runs jobs as their users) and the packages (`apt-get install slurmctld slurmd
slurm-client munge`; .ci/run installs them where it can). Without them every test here is skipped, saying why.
Checked: the sbatch script and the dask-jobqueue script each finish the plan; `scancel` mid-run and a second
`sbatch` of the same script give exactly the planned clips.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from augmenter.cluster import slurm_script
from augmenter.generate import GenerateJob, plan_job
from augmenter.manifest import read_manifest, write_manifest
from augmenter.store import store_table

DAEMONS = ("slurmctld", "slurmd", "munged", "sbatch", "squeue", "scancel", "sinfo")
MISSING = [name for name in DAEMONS if shutil.which(name) is None]
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        bool(MISSING),
        reason=f"SLURM not installed ({', '.join(MISSING)} missing): "
        "apt-get install slurmctld slurmd slurm-client munge",
    ),
    pytest.mark.skipif(os.geteuid() != 0, reason="a private slurmd must run as root to start jobs"),
]
VENV = Path(sys.executable).parent.parent  # the environment running the tests runs the jobs too


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait(condition, timeout: float, what: str) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


class Slurm:
    """A private single-node SLURM: munged, slurmctld and slurmd, all on 127.0.0.1, all files in `folder`."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.conf = folder / "slurm.conf"
        self.env = os.environ | {"SLURM_CONF": str(self.conf)}

    def start(self) -> Slurm:
        folder, host = self.folder, socket.gethostname()
        for name in ("state", "spool", "log"):
            (folder / name).mkdir()
        key = folder / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o600)
        self._run(["munged", f"--key-file={key}", f"--socket={folder / 'munge.sock'}",
                   f"--pid-file={folder / 'munged.pid'}", f"--log-file={folder / 'log' / 'munged.log'}",
                   f"--seed-file={folder / 'munge.seed'}", "--force"])  # fmt: skip
        memory = int(psutil.virtual_memory().total / 2**20 * 0.8)
        self.conf.write_text(
            "\n".join(
                [
                    "ClusterName=augmentertest",
                    f"SlurmctldHost={host}(127.0.0.1)",
                    f"SlurmctldPort={_free_port()}",
                    f"SlurmdPort={_free_port()}",
                    "AuthType=auth/munge",
                    f"AuthInfo=socket={folder / 'munge.sock'}",
                    "CredType=cred/munge",
                    "SlurmUser=root",
                    "SlurmdUser=root",
                    f"StateSaveLocation={folder / 'state'}",
                    f"SlurmdSpoolDir={folder / 'spool'}",
                    f"SlurmctldPidFile={folder / 'slurmctld.pid'}",
                    f"SlurmdPidFile={folder / 'slurmd.pid'}",
                    f"SlurmctldLogFile={folder / 'log' / 'slurmctld.log'}",
                    f"SlurmdLogFile={folder / 'log' / 'slurmd.log'}",
                    "ProctrackType=proctrack/linuxproc",
                    "TaskPlugin=task/none",
                    "SelectType=select/cons_tres",
                    "SelectTypeParameters=CR_CPU",
                    "JobAcctGatherType=jobacct_gather/none",
                    "AccountingStorageType=accounting_storage/none",
                    "MpiDefault=none",
                    "ReturnToService=2",
                    "KillWait=5",
                    f"NodeName={host} NodeAddr=127.0.0.1 CPUs={os.cpu_count()} RealMemory={memory}",
                    "PartitionName=test Nodes=ALL Default=YES MaxTime=INFINITE State=UP",
                    "",
                ]
            )
        )
        self._run(["slurmctld", "-f", str(self.conf), "-i"])
        self._run(["slurmd", "-f", str(self.conf)])
        _wait(lambda: self.query(["sinfo", "-h", "-o", "%t"]) == "idle", 60, "the node to be idle")
        return self

    def _run(self, command: list[str]) -> None:
        subprocess.run(command, env=self.env, check=True, capture_output=True, timeout=60)

    def query(self, command: list[str]) -> str:
        done = subprocess.run(command, env=self.env, capture_output=True, text=True, timeout=60)
        return done.stdout.strip()

    def submit(self, script: Path) -> str:
        return self.query(["sbatch", "--parsable", f"--chdir={script.parent}", str(script)]).split(";")[0]

    def running(self, job: str) -> bool:
        return bool(self.query(["squeue", "-h", "-j", job, "-o", "%i"]))

    def wait_gone(self, job: str, timeout: float = 300) -> None:
        _wait(lambda: not self.running(job), timeout, f"SLURM job {job} to end")

    def stop(self) -> None:
        for name in ("slurmd.pid", "slurmctld.pid", "munged.pid"):  # only the daemons started above
            pid_file = self.folder / name
            if pid_file.is_file():
                try:
                    os.kill(int(pid_file.read_text().strip()), signal.SIGTERM)
                except (ProcessLookupError, ValueError):
                    pass


@pytest.fixture(scope="module")
def slurm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Slurm]:
    cluster = Slurm(tmp_path_factory.mktemp("slurm"))
    try:
        yield cluster.start()
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def manifest(demo_manifest: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two clips of each of three demo subjects (a plan of a dozen 64² landmark-tps clips)."""
    path, root = demo_manifest
    frame = read_manifest(path)
    small = frame[frame["subject"].isin(sorted(frame["subject"].unique())[:3])].groupby("subject").head(2)
    return write_manifest(small, tmp_path_factory.mktemp("slurm-inputs") / "m.csv"), root


def _job_file(folder: Path, manifest: tuple[Path, Path], out: Path, per_source: int) -> tuple[Path, set[str]]:
    """A job.toml and the pair ids its plan must end with."""
    lines = [
        f'manifest = "{manifest[0]}"',
        f'root = "{manifest[1]}"',
        'generator = "landmark-tps"',
        f'targets = "{manifest[0]}"',
        f'out = "{out}"',
        "size = 64",
        f"max-per-source = {per_source}",
        "batch-size = 1",
        "identity-quality = false",
        f'cache-dir = "{folder / "cache"}"',
    ]
    config = folder / "job.toml"
    config.write_text("[generate]\n" + "\n".join(lines) + "\n")
    job = GenerateJob(manifest=manifest[0], root=manifest[1], generator="landmark-tps", targets=manifest[0],
                      out=out, size=64, max_per_source=per_source)  # fmt: skip
    return config, set(plan_job(job)[0]["pair_id"])


def _done(store: Path) -> set[str]:
    if not (store / "zarr.json").exists():
        return set()
    table = store_table(store)
    return set(table["pair_id"])


def _cpu_script(folder: Path, config: Path, style: str = "sbatch") -> Path:
    text = slurm_script(f"--config {config}", gpus_per_node=0, workers_per_node=2, mem_per_cpu="1G",
                        walltime="00:15:00", venv=str(VENV), style=style)  # fmt: skip
    script = folder / ("generate.sbatch" if style == "sbatch" else "generate_jobqueue.py")
    script.write_text(text)
    return script


def _log(folder: Path, tail: int | None = 3000) -> str:
    """The jobs' logs (their last `tail` characters each, for a failure message; None = whole)."""
    return "\n".join(p.read_text()[-tail if tail else 0 :] for p in sorted(folder.glob("*.log")))


def test_sbatch_cpu_job_completes_then_scancel_and_resubmit_resume_exactly(
    slurm: Slurm, manifest: tuple[Path, Path], tmp_path: Path
) -> None:
    out = tmp_path / "sbatch.zarr"
    config, planned = _job_file(tmp_path, manifest, out, per_source=4)
    script = _cpu_script(tmp_path, config)
    job = slurm.submit(script)
    _wait(lambda: len(list((out / "clips").glob("c.*"))) >= 2 or not slurm.running(job), 300,
          "the first clips")  # fmt: skip
    assert slurm.running(job), f"job ended before it could be cancelled:\n{_log(tmp_path)}"
    slurm.query(["scancel", job])
    slurm.wait_gone(job)
    partial = _done(out)
    assert partial < planned, "scancel came too late to test a resume"

    again = slurm.submit(script)  # the same script, submitted again
    slurm.wait_gone(again)
    assert _done(out) == planned, _log(tmp_path)
    table = store_table(out, include_pending=True)
    assert len(table) == len(planned) and table["done"].all() and (table["error"] == "").all()
    # generate's summary line reached the job's log (workers' shutdown lines follow it, so read it whole)
    assert "clips/s" in _log(tmp_path, tail=None), _log(tmp_path)
    assert not Path(f"{out}.lock").exists()


def test_jobqueue_cpu_script_completes(slurm: Slurm, manifest: tuple[Path, Path], tmp_path: Path) -> None:
    pytest.importorskip("dask_jobqueue", reason="the jobqueue style needs the slurm extra (dask-jobqueue)")
    out = tmp_path / "jobqueue.zarr"
    config, planned = _job_file(tmp_path, manifest, out, per_source=1)
    script = _cpu_script(tmp_path, config, style="jobqueue")
    env = slurm.env | {"PATH": f"{VENV / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"}
    run = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=600)  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    assert _done(out) == planned and len(planned) > 0
