"""A real one-node Slurm cluster with accounting, started for the tests and stopped after them.

MariaDB (its own data folder), munged (a fresh key), slurmdbd, slurmctld and slurmd, each run
in the foreground as a child process with its files under one folder, on ports nothing else
uses; the cluster and an account are registered with ``sacctmgr``, as on a real cluster
(submitit reads job states with ``sacct``, which needs the accounting database). Built for a
container: ``proctrack/linuxproc`` and ``task/none`` need no cgroups.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

DAEMONS = ("mysqld", "mariadb-install-db", "munged", "mungekey", "slurmdbd", "slurmctld", "slurmd")
"""What starting the cluster needs (Debian: slurm-wlm, slurmdbd, munge, mariadb-server)."""
SBIN = ("/usr/sbin", "/usr/bin", "/sbin")
CLUSTER = "medgraft-test"
ACCOUNT = "medgraft"
DB_USER, DB_PASSWORD, DB_NAME = "slurm", "slurm-test", "slurm_acct_db"
START_TIMEOUT = 90.0
PR_SET_PDEATHSIG = 1


def find_program(name: str) -> str | None:
    """``name`` on PATH or in the system folders root's PATH has but a user's may lack."""
    found = shutil.which(name)
    if found:
        return found
    return next((str(Path(d) / name) for d in SBIN if (Path(d) / name).is_file()), None)


def missing_programs() -> list[str]:
    return [name for name in DAEMONS if find_program(name) is None]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _stop_with_parent() -> None:
    """In a daemon's process before it starts: SIGTERM when the test run ends without its
    teardown (killed, timed out), so no daemon outlives it (Linux's PR_SET_PDEATHSIG)."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def wait_until(check, what: str, logs: list[Path], timeout: float = START_TIMEOUT) -> None:
    """Poll ``check`` until it is true; else fail with the tails of the daemons' logs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    tails = "\n".join(f"--- {log}\n{_tail(log)}" for log in logs)
    raise RuntimeError(f"slurm test cluster: {what} not ready after {timeout:.0f}s\n{tails}")


def _tail(path: Path, lines: int = 15) -> str:
    if not path.exists():
        return "(no log)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


@dataclass
class SlurmCluster:
    """The cluster's folder, its environment for clients (``SLURM_CONF``) and its daemons."""

    root: Path
    node: str = field(default_factory=socket.gethostname)
    processes: list[tuple[str, subprocess.Popen]] = field(default_factory=list)
    ports: dict[str, int] = field(default_factory=dict)
    started_in: float = 0.0

    @property
    def conf(self) -> Path:
        return self.root / "etc" / "slurm.conf"

    @property
    def munge_socket(self) -> Path:
        return self.root / "munge" / "munge.socket"

    @property
    def env(self) -> dict[str, str]:
        """The environment a client (``sbatch``, ``sacct``, submitit) needs to reach it."""
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def start(self) -> SlurmCluster:
        began = time.monotonic()
        for folder in ("etc", "db", "munge", "log", "state", "spool", "run"):
            (self.root / folder).mkdir(parents=True, exist_ok=True)
        self.ports = {name: free_port() for name in ("mysql", "dbd", "ctld", "slurmd")}
        try:
            self._start_database()
            self._start_munge()
            self._write_configs()
            self._start("slurmdbd", ["slurmdbd", "-D"], self.root / "log" / "slurmdbd.log")
            wait_until(self._dbd_answers, "slurmdbd", [self.root / "log" / "slurmdbd.log"])
            self.client("sacctmgr", "-i", "add", "cluster", CLUSTER)
            self.client("sacctmgr", "-i", "add", "account", ACCOUNT, f"cluster={CLUSTER}")
            self.client("sacctmgr", "-i", "add", "user", "root", f"account={ACCOUNT}")
            self._start("slurmctld", ["slurmctld", "-D", "-i"], self.root / "log" / "ctld.log")
            self._start(
                "slurmd", ["slurmd", "-D", "-N", self.node], self.root / "log" / "slurmd.log"
            )
            logs = [self.root / "log" / n for n in ("ctld.log", "slurmd.log", "slurmdbd.log")]
            wait_until(self._node_idle, f"node {self.node} idle", logs)
            wait_until(self._sacct_answers, "sacct", logs)
        except BaseException:
            self.stop()
            raise
        self.started_in = time.monotonic() - began
        return self

    def _start(self, name: str, command: list[str], log: Path) -> subprocess.Popen:
        handle = log.open("ab")
        process = subprocess.Popen(
            [find_program(command[0]), *command[1:]],
            stdout=handle,
            stderr=subprocess.STDOUT,
            env=self.env,
            start_new_session=True,  # a Ctrl-C in the test run is the fixture's to handle
            preexec_fn=_stop_with_parent,
        )
        self.processes.append((name, process))
        return process

    def _start_database(self) -> None:
        datadir, sock = self.root / "db", self.root / "run" / "mysqld.sock"
        subprocess.run(
            [find_program("mariadb-install-db"), "--no-defaults", f"--datadir={datadir}",
             "--user=root", "--auth-root-authentication-method=socket", "--skip-test-db"],
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip
        self._start(
            "mysqld",
            [
                "mysqld",
                "--no-defaults",
                "--user=root",
                f"--datadir={datadir}",
                f"--socket={sock}",
                f"--port={self.ports['mysql']}",
                "--bind-address=127.0.0.1",
                f"--pid-file={self.root / 'run' / 'mysqld.pid'}",
                "--innodb-buffer-pool-size=64M",
                "--skip-log-bin",
                "--innodb-log-file-size=16M",
            ],
            self.root / "log" / "mysqld.log",
        )
        wait_until(sock.exists, "MariaDB", [self.root / "log" / "mysqld.log"])
        statements = "".join(
            f"CREATE USER IF NOT EXISTS '{DB_USER}'@'{host}' IDENTIFIED BY '{DB_PASSWORD}';"
            f"GRANT ALL ON {DB_NAME}.* TO '{DB_USER}'@'{host}';"
            for host in ("localhost", "127.0.0.1")
        )
        mysql = find_program("mariadb") or find_program("mysql")
        subprocess.run(
            [mysql, "--no-defaults", f"--socket={sock}", "-uroot", "-e", statements],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip

    def _start_munge(self) -> None:
        key = self.root / "munge" / "munge.key"
        subprocess.run([find_program("mungekey"), "-c", "-k", str(key)], check=True, timeout=30)
        key.chmod(0o600)
        self._start(
            "munged",
            [
                "munged",
                "--foreground",
                "--force",
                f"--socket={self.munge_socket}",
                f"--key-file={key}",
                f"--pid-file={self.root / 'munge' / 'munged.pid'}",
                f"--seed-file={self.root / 'munge' / 'munged.seed'}",
                f"--log-file={self.root / 'log' / 'munged.log'}",
            ],
            self.root / "log" / "munged.out",
        )
        wait_until(self.munge_socket.exists, "munged", [self.root / "log" / "munged.log"])

    def _write_configs(self) -> None:
        auth = f"AuthType=auth/munge\nAuthInfo=socket={self.munge_socket}\n"
        dbd = self.root / "etc" / "slurmdbd.conf"
        dbd.write_text(
            auth + f"DbdHost=localhost\nDbdPort={self.ports['dbd']}\nSlurmUser=root\n"
            f"PidFile={self.root / 'run' / 'slurmdbd.pid'}\n"
            f"LogFile={self.root / 'log' / 'slurmdbd.log'}\n"
            "StorageType=accounting_storage/mysql\nStorageHost=127.0.0.1\n"
            f"StoragePort={self.ports['mysql']}\nStorageUser={DB_USER}\n"
            f"StoragePass={DB_PASSWORD}\nStorageLoc={DB_NAME}\n"
        )
        dbd.chmod(0o600)  # slurmdbd refuses a config others can read: it holds a password
        hardware = self._hardware()
        self.conf.write_text(
            auth + f"ClusterName={CLUSTER}\nSlurmctldHost={self.node}(127.0.0.1)\n"
            "SlurmUser=root\nSlurmdUser=root\n"
            f"SlurmctldPort={self.ports['ctld']}\nSlurmdPort={self.ports['slurmd']}\n"
            f"StateSaveLocation={self.root / 'state'}\nSlurmdSpoolDir={self.root / 'spool'}\n"
            f"SlurmctldPidFile={self.root / 'run' / 'slurmctld.pid'}\n"
            f"SlurmdPidFile={self.root / 'run' / 'slurmd.pid'}\n"
            f"SlurmctldLogFile={self.root / 'log' / 'ctld.log'}\n"
            f"SlurmdLogFile={self.root / 'log' / 'slurmd.log'}\n"
            "ProctrackType=proctrack/linuxproc\nTaskPlugin=task/none\nMpiDefault=none\n"
            "SelectType=select/cons_tres\nSelectTypeParameters=CR_Core\n"
            "SchedulerType=sched/backfill\nReturnToService=2\n"
            "AccountingStorageType=accounting_storage/slurmdbd\n"
            f"AccountingStorageHost=localhost\nAccountingStoragePort={self.ports['dbd']}\n"
            # the munge socket for slurmdbd's connections (AuthInfo serves the others)
            f"AccountingStoragePass={self.munge_socket}\n"
            "JobAcctGatherType=jobacct_gather/none\nJobCompType=jobcomp/none\n"
            "KillWait=2\nMinJobAge=2\nInactiveLimit=0\n"
            f"NodeName={self.node} NodeAddr=127.0.0.1 {hardware} State=UNKNOWN\n"
            "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP\n"
        )

    def _hardware(self) -> str:
        """This machine's cores and memory as ``slurmd -C`` sees them (its node line)."""
        probe = subprocess.run(
            [find_program("slurmd"), "-C"], capture_output=True, text=True, check=True, timeout=30
        )
        words = probe.stdout.split("\n")[0].split()
        return " ".join(w for w in words if not w.startswith(("NodeName=", "UpTime=")))

    def client(self, *command: str, check: bool = True) -> subprocess.CompletedProcess:
        """A Slurm client command (``sinfo``, ``sacct``, ``scancel``…) against this cluster."""
        return subprocess.run(
            [find_program(command[0]), *command[1:]],
            capture_output=True,
            text=True,
            env=self.env,
            check=check,
            timeout=60,
        )

    def _dbd_answers(self) -> bool:
        return self.client("sacctmgr", "-n", "list", "cluster", check=False).returncode == 0

    def _node_idle(self) -> bool:
        state = self.client("sinfo", "-h", "-N", "-o", "%t", check=False).stdout.strip()
        return state == "idle"

    def _sacct_answers(self) -> bool:
        return self.client("sacct", "-n", "-X", check=False).returncode == 0

    def stop(self) -> None:
        """Stop every daemon this cluster started, the last started first."""
        for _, process in reversed(self.processes):
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=15)
        self.processes.clear()
