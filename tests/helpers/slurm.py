"""A real single-node SLURM cluster on this machine, for tests: munged, slurmctld and slurmd
started as root from a throw-away folder (their own munge key and socket, state, spool, logs
and free ports), so nothing of the machine's own configuration is used or changed.

Debian's `slurm-wlm` and `munge` are installed when missing (needs root and the package
registry). Clients find the cluster through `SLURM_CONF`, which `slurm_cluster` returns in
the environment for subprocesses. The cluster has no accounting database: `sacct` answers
that accounting is disabled and submitit falls back to polling the jobs' result files.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd")
SBIN = ("/usr/sbin", "/usr/bin", "/sbin")


def why_not_available() -> str | None:
    """None if a cluster can be started here, else the reason (for pytest.skip)."""
    if os.geteuid() != 0:
        return "starting munged, slurmctld and slurmd needs root"
    return None


def find(program: str) -> str | None:
    return shutil.which(program, path=os.pathsep.join([os.environ.get("PATH", ""), *SBIN]))


def install_packages() -> None:
    """apt-get install slurm-wlm and munge if a daemon or client is missing."""
    if all(find(p) for p in (*DAEMONS, "sbatch", "sinfo")):
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update"], ["apt-get", "install", "-y", "slurm-wlm", "munge"]):
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def slurm_conf(folder: Path, host: str, cpus: int, memory_mb: int) -> str:
    """This host as controller and only node; no cgroups, no accounting."""
    return f"""\
ClusterName=harness-test
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={folder}/munge/munge.socket
StateSaveLocation={folder}/state
SlurmdSpoolDir={folder}/spool
SlurmctldPidFile={folder}/slurmctld.pid
SlurmdPidFile={folder}/slurmd.pid
SlurmctldLogFile={folder}/log/slurmctld.log
SlurmdLogFile={folder}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
MpiDefault=none
SwitchType=switch/none
ReturnToService=2
KillWait=15
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory_mb} State=UNKNOWN
PartitionName=test Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""


def wait_for(check, what: str, timeout: float, logs: Path) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            tails = "".join(f"\n--- {p.name}\n{p.read_text()[-1500:]}"
                            for p in sorted(logs.glob("*.log")))
            raise RuntimeError(f"SLURM test cluster: {what} not within {timeout:.0f} s{tails}")
        time.sleep(0.5)


def stop(pid_file: Path) -> None:
    """SIGTERM the daemon of this pid file and wait for it (SIGKILL after 20 s)."""
    if not pid_file.exists():
        return
    try:
        pid = int(pid_file.read_text().split()[0])
    except (ValueError, IndexError):
        return
    for sig, wait in ((signal.SIGTERM, 20.0), (signal.SIGKILL, 5.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.2)


@contextmanager
def slurm_cluster(folder: Path) -> Iterator[dict[str, str]]:
    """Start the cluster in `folder`; yield the environment for its clients; stop it."""
    install_packages()
    for sub in ("munge", "state", "spool", "log"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    folder.chmod(0o755)  # munged checks that its socket's folders are not writable by others
    (folder / "munge").chmod(0o700)
    key = folder / "munge" / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o600)
    host = socket.gethostname().split(".")[0]
    memory_mb = 4096
    conf = folder / "slurm.conf"
    conf.write_text(slurm_conf(folder, host, os.cpu_count() or 1, memory_mb))
    env = {**os.environ, "SLURM_CONF": str(conf)}
    env["PATH"] = os.pathsep.join([env.get("PATH", ""), *SBIN])
    munge_pid = folder / "munge" / "munged.pid"
    try:
        subprocess.run([find("munged"), "--force", f"--socket={folder}/munge/munge.socket",
                        f"--key-file={key}", f"--pid-file={munge_pid}",
                        f"--seed-file={folder}/munge/munged.seed",
                        f"--log-file={folder}/log/munged.log"], check=True, timeout=30)
        subprocess.run([find("slurmctld")], env=env, check=True, timeout=30)
        subprocess.run([find("slurmd"), "-N", host], env=env, check=True, timeout=30)

        def node_idle() -> bool:
            state = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], env=env,
                                   capture_output=True, text=True, timeout=30).stdout
            return state.strip() == "idle"

        wait_for(node_idle, "the node idle", 60, folder / "log")
        yield env
    finally:
        cancel_jobs(env)
        for pid_file in (folder / "slurmd.pid", folder / "slurmctld.pid", munge_pid):
            stop(pid_file)


def cancel_jobs(env: dict[str, str], timeout: float = 60.0) -> None:
    """Cancel every job of the cluster (it is this test's alone) and wait until they are gone:
    stopping slurmd first would leave their slurmstepd and processes running."""
    if find("scancel") is None:
        return
    subprocess.run(["scancel", "--user=root"], env=env, capture_output=True, timeout=30,
                   check=False)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        queue = subprocess.run(["squeue", "-h"], env=env, capture_output=True, text=True,
                               timeout=30, check=False)
        if queue.returncode != 0 or not queue.stdout.strip():
            return
        time.sleep(1)
