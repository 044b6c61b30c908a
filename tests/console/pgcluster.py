"""A throw-away PostgreSQL cluster for the test suite (Debian's binaries: initdb + pg_ctl).

PostgreSQL refuses to run as root, so as root the cluster belongs to the ``postgres`` user (or
``nobody``) and its programs run through ``runuser``.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass


def find_bin_dir() -> str | None:
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if os.path.exists(os.path.join(candidate, "initdb")):
            return candidate
    initdb = shutil.which("initdb")
    return os.path.dirname(initdb) if initdb else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Cluster:
    bin_dir: str
    data_dir: str
    port: int
    run_as: str | None

    def _cmd(self, *args: str) -> list[str]:
        cmd = list(args)
        if self.run_as:
            return ["runuser", "-u", self.run_as, "--", *cmd]
        return cmd

    def stop(self) -> None:
        subprocess.run(
            self._cmd(
                os.path.join(self.bin_dir, "pg_ctl"),
                "-D",
                self.data_dir,
                "-m",
                "immediate",
                "-w",
                "stop",
            ),
            capture_output=True,
            check=False,
        )
        shutil.rmtree(os.path.dirname(self.data_dir), ignore_errors=True)


def start() -> Cluster:
    bin_dir = find_bin_dir()
    if bin_dir is None:
        raise FileNotFoundError("PostgreSQL's initdb was not found (apt-get install postgresql)")
    run_as = None
    if os.geteuid() == 0:
        for user in ("postgres", "nobody"):
            try:
                pwd.getpwnam(user)
            except KeyError:
                continue
            run_as = user
            break
    base = tempfile.mkdtemp(prefix="console-pg-")
    data_dir = os.path.join(base, "data")
    if run_as:
        os.chmod(base, 0o755)  # noqa: S103 - the cluster user must reach its data dir
        entry = pwd.getpwnam(run_as)
        os.mkdir(data_dir, 0o700)
        os.chown(data_dir, entry.pw_uid, entry.pw_gid)
    cluster = Cluster(bin_dir, data_dir, _free_port(), run_as)
    subprocess.run(
        cluster._cmd(
            os.path.join(bin_dir, "initdb"),
            "-D",
            data_dir,
            "-A",
            "trust",
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--no-locale",
            "--no-sync",
        ),
        capture_output=True,
        check=True,
    )
    options = (
        f"-p {cluster.port} -k {data_dir} -c listen_addresses=127.0.0.1 -c fsync=off "
        "-c synchronous_commit=off -c full_page_writes=off -c max_connections=100"
    )
    subprocess.run(
        cluster._cmd(
            os.path.join(bin_dir, "pg_ctl"),
            "-D",
            data_dir,
            "-o",
            options,
            "-l",
            os.path.join(data_dir, "server.log"),
            "-w",
            "-t",
            "60",
            "start",
        ),
        capture_output=True,
        check=True,
    )
    return cluster
