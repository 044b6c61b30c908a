"""``make run``: the whole console on embedded defaults, stopped by one Ctrl-C.

    python -m console.devstack

Migrates, creates a demo admin on a fresh database (and prints its login), then starts and
supervises: devengine (var/devengine.sqlite3), the sample workloads (``devengine.samples``), the
indexer and daphne on http://127.0.0.1:8000. If one of them exits, the others are stopped too.
Ports: ``DEVENGINE_PORT`` (50001), ``CONSOLE_PORT`` (8000).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VAR = ROOT / "var"


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        # As the servers bind (so connections of a run just stopped, in TIME_WAIT, don't count).
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return True
        time.sleep(0.1)
    return False


class Stack:
    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.children: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        # Own session: Ctrl-C reaches only this launcher, which then stops children in order.
        proc = subprocess.Popen(list(args), cwd=ROOT, env=self.env, start_new_session=True)
        self.children.append((name, proc))
        return proc

    def stop(self) -> None:
        # One at a time, last started first: workers disconnect before the engine stops.
        for name, proc in reversed(self.children):
            if proc.poll() is not None:
                continue
            print(f"stopping {name}", flush=True)
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def watch(self) -> None:
        while True:
            for name, proc in self.children:
                code = proc.poll()
                if code is not None:
                    print(f"{name} exited with status {code}: stopping everything", flush=True)
                    return
            time.sleep(0.5)


def main() -> int:
    python = sys.executable
    engine_port = int(os.environ.get("DEVENGINE_PORT", "50001"))
    http_port = int(os.environ.get("CONSOLE_PORT", "8000"))
    env = dict(os.environ)
    env.setdefault("CONSOLE_ENGINES", f"local=127.0.0.1:{engine_port}")
    # Production behaviour (no tracebacks or URL lists in error pages), static files from daphne.
    env.setdefault("CONSOLE_SERVE_STATIC", "1")
    env["PYTHONUNBUFFERED"] = "1"
    VAR.mkdir(exist_ok=True)

    for port, what in ((engine_port, "DEVENGINE_PORT"), (http_port, "CONSOLE_PORT")):
        if not _port_free(port):
            print(f"port {port} is in use: stop what uses it or set {what}", file=sys.stderr)
            return 1

    manage = [python, str(ROOT / "manage.py")]
    subprocess.run([*manage, "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env, check=True)
    login = subprocess.run(
        [*manage, "ensure_demo_admin"],
        cwd=ROOT,
        env=env,
        check=True,
        text=True,
        stdout=subprocess.PIPE,
    ).stdout.strip()
    print(login, flush=True)

    stack = Stack(env)
    stopping = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stopping
        if stopping:
            return
        stopping = True
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)  # also when started with SIGINT ignored
    try:
        engine = stack.start(
            "devengine",
            python,
            "-m",
            "devengine",
            "--port",
            str(engine_port),
            "--db",
            str(VAR / "devengine.sqlite3"),
        )
        if not _wait_for_port(engine_port, engine):
            print("devengine did not start", file=sys.stderr)
            return 1
        address = f"127.0.0.1:{engine_port}"
        # The samples fail some activities on purpose, and the SDK logs a warning for each (one
        # every second or two): the console shows those failures; the terminal keeps to errors.
        stack.start(
            "samples",
            python,
            "-m",
            "devengine.samples",
            "--engine",
            address,
            "--sdk-log-level",
            "ERROR",
        )
        stack.start("indexer", *manage, "runindexer")
        web = stack.start(
            "daphne",
            python,
            "-m",
            "daphne",
            "-b",
            "127.0.0.1",
            "-p",
            str(http_port),
            "console.asgi:application",
        )
        if _wait_for_port(http_port, web):
            print(
                f"\n  Dapr Workflow Console: http://127.0.0.1:{http_port}/  (Ctrl-C stops all)"
                f"\n  {login}\n",
                flush=True,
            )
        stack.watch()
    except KeyboardInterrupt:
        pass
    finally:
        stack.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
