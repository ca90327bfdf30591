"""A one-node Slurm cluster on this machine, for tests: munged, slurmctld and slurmd on localhost.

Everything lives in a temporary folder (configuration, keys, state, logs) and the daemons listen
on free ports, so that concurrent test runs and an installed Slurm do not meet. The daemons run
in the foreground as children of the test process and are stopped by their process ids.
"""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "sinfo")


class ClusterUnavailable(RuntimeError):
    """The daemons cannot start here; the message says why."""


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _config(root: Path, host: str, ports: list[int], socket_path: Path) -> str:
    cpus = os.cpu_count() or 1
    return f"""\
ClusterName=bkfctest
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ports[0]}
SlurmdPort={ports[1]}
AuthType=auth/munge
AuthInfo=socket={socket_path}
CredType=cred/munge
SlurmUser={getpass.getuser()}
SlurmdUser=root
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SlurmdParameters=config_overrides
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} State=UNKNOWN
PartitionName=test Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""


class SlurmCluster:
    """Start with :meth:`start` (raises :class:`ClusterUnavailable`), stop with :meth:`stop`."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="bkfc-slurm-"))
        self.conf = self.root / "slurm.conf"
        self.env = dict(os.environ, SLURM_CONF=str(self.conf))
        self._daemons: list[subprocess.Popen] = []
        self._logs: list = []

    def start(self, timeout: float = 60.0) -> SlurmCluster:
        """Write the configuration, start the three daemons and wait for an idle node."""
        missing = [name for name in BINARIES if shutil.which(name) is None]
        if missing:
            raise ClusterUnavailable(f"not installed: {' '.join(missing)} (slurm-wlm, munge)")
        host = socket.gethostname().split(".")[0]
        self.root.chmod(0o755)  # munged wants its socket's folder searchable by all
        keys = self.root / "munge"
        keys.mkdir(mode=0o700)
        key = keys / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o600)
        sock = self.root / "munge.socket"
        self.conf.write_text(_config(self.root, host, _free_ports(2), sock))
        for folder in ("state", "spool"):
            (self.root / folder).mkdir()
        self._spawn(
            "munged", "--foreground", f"--key-file={key}", f"--socket={sock}",
            f"--log-file={keys / 'munged.log'}", f"--pid-file={keys / 'munged.pid'}",
            f"--seed-file={keys / 'munged.seed'}",
        )  # fmt: skip
        self._wait(lambda: sock.exists(), 10, "munged did not create its socket")
        self._spawn("slurmctld", "-D", "-c", "-i", "-f", str(self.conf))
        self._spawn("slurmd", "-D", "-N", host, "-f", str(self.conf))
        self._wait(self._idle, timeout, "the node did not become idle")
        return self

    def _spawn(self, *command: str) -> None:
        log = open(self.root / f"{command[0]}.out", "w")  # closed by stop()
        self._logs.append(log)
        self._daemons.append(
            subprocess.Popen(command, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        )

    def _idle(self) -> bool:
        done = subprocess.run(
            ["sinfo", "-h", "-o", "%T"], env=self.env, capture_output=True, text=True, timeout=20
        )
        return done.returncode == 0 and done.stdout.strip() == "idle"

    def _wait(self, ready, timeout: float, what: str) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            exited = [p.args[0] for p in self._daemons if p.poll() is not None]
            if exited:
                raise ClusterUnavailable(f"{' '.join(exited)} exited: {self.log_tail()}")
            if ready():
                return
            time.sleep(0.5)
        raise ClusterUnavailable(f"{what} within {timeout:.0f} s: {self.log_tail()}")

    def log_tail(self, lines: int = 3) -> str:
        """The last lines of the daemons' logs, for a skip reason or a failure message."""
        tails = []
        for log in sorted(self.root.rglob("*.log")) + sorted(self.root.glob("*.out")):
            text = log.read_text(errors="replace").strip().splitlines()[-lines:]
            if text:
                tails.append(f"{log.name}: {' | '.join(text)}")
        return "; ".join(tails) or "no log"

    def stop(self) -> None:
        """Stop the daemons (by process id, slurmd first) and remove the folder."""
        for process in reversed(self._daemons):
            if process.poll() is None:
                process.terminate()
        for process in reversed(self._daemons):
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for log in self._logs:
            log.close()
        shutil.rmtree(self.root, ignore_errors=True)
