"""`make run`'s launcher: however it ends, none of what it started keeps running or holds a port."""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces, so split after its closing paren.
        if int(stat.rpartition(")")[2].split()[1]) == pid:
            found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _args(pid: int) -> list[str]:
    return _cmdline(pid).decode().split("\0")[:-1]


def _environ(pid: int) -> dict[str, str]:
    pairs = Path(f"/proc/{pid}/environ").read_bytes().decode().split("\0")
    return dict(pair.split("=", 1) for pair in pairs if "=" in pair)


def _wait_until(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return predicate()


class Launched:
    def __init__(self, tmp_path: Path) -> None:
        self.engine_port, self.billing_port = _free_port(), _free_port()
        self.http_port = _free_port()
        self.var = tmp_path / "var"
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("DATABASE_URL", "DEVENGINE_STATE_RETENTION")
            and not k.startswith(("CONSOLE_", "DJANGO_"))
        }
        env |= {
            "CONSOLE_VAR_DIR": str(self.var),
            "DEVENGINE_PORT": str(self.engine_port),
            "DEVENGINE_BILLING_PORT": str(self.billing_port),
            "CONSOLE_PORT": str(self.http_port),
        }
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "console.devstack"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.output: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)

    def wait_for(self, text: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.5)
            except queue.Empty:
                assert self.proc.poll() is None, "".join(self.output)
                continue
            self.output.append(line)
            if text in line:
                return
        pytest.fail(f"no {text!r} within {timeout} s:\n" + "".join(self.output))

    def ports_free(self) -> bool:
        for port in (self.engine_port, self.billing_port, self.http_port):
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    return False
        return True

    def cleanup(self) -> None:
        for pid in [*_children(self.proc.pid), self.proc.pid]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.proc.wait(10)


@pytest.fixture
def stack(tmp_path):
    launched = Launched(tmp_path)
    launched.wait_for("Dapr Workflow Console:")
    yield launched
    launched.cleanup()


@pytest.mark.parametrize("signum", [signal.SIGHUP, signal.SIGKILL])
def test_a_closed_terminal_or_a_killed_launcher_stops_every_child(stack, signum):
    children = _children(stack.proc.pid)
    assert len(children) == 5  # devengines of orders and billing, samples, indexer, daphne

    os.kill(stack.proc.pid, signum)

    # Up to 60 s: the samples' own deadline for a clean stop is the backstop when they hang.
    assert _wait_until(lambda: not any(_alive(pid) for pid in children), 60), [
        _cmdline(pid) for pid in children if _alive(pid)
    ]
    assert stack.ports_free()
    stack.proc.wait(10)
    if signum == signal.SIGHUP:
        assert stack.proc.returncode == 0


def test_ctrl_c_stops_everything_cleanly(stack):
    # Ctrl-C in the terminal: SIGINT to the whole foreground process group, the launcher and
    # each child at once (the way the README says to stop `make run`).
    children = _children(stack.proc.pid)
    assert len(children) == 5

    os.killpg(stack.proc.pid, signal.SIGINT)

    assert _wait_until(lambda: not any(_alive(pid) for pid in children), 60), [
        _cmdline(pid) for pid in children if _alive(pid)
    ]
    assert stack.ports_free()
    stack.proc.wait(10)
    assert stack.proc.returncode == 0
    with contextlib.suppress(queue.Empty):
        while True:  # the last lines, as the reader takes them up to the end of the output
            stack.output.append(stack.lines.get(timeout=2))
    said = "".join(stack.output)
    assert "Traceback" not in said, said
    assert "Task was destroyed" not in said, said


def test_two_peered_engines_serve_the_apps_the_console_indexes(tmp_path):
    # A var/ of an earlier make run, whose one engine (app id "devengine") had this file.
    earlier = tmp_path / "var" / "devengine.sqlite3"
    earlier.parent.mkdir()
    earlier.write_bytes(b"an earlier engine's instances")
    stack = Launched(tmp_path)
    try:
        stack.wait_for("Dapr Workflow Console:")
        _check_the_two_apps(stack)
    finally:
        stack.cleanup()
    # Left alone, and said so: its children would wait for ever for the app "devengine".
    assert earlier.read_bytes() == b"an earlier engine's instances"
    assert (
        f"{earlier.resolve()} is the engine of an earlier make run, no longer used: delete it, "
        "and its instances from the console with `.venv/bin/python manage.py forgetengine local`."
    ) in "".join(stack.output)


def _check_the_two_apps(stack: Launched) -> None:
    children = _children(stack.proc.pid)
    engines = {}
    for pid in children:
        args = _args(pid)
        if args[1:3] == ["-m", "devengine"]:
            engines[args[args.index("--app-id") + 1]] = args
    orders, billing = engines.pop("orders"), engines.pop("billing")
    assert not engines

    def option(args: list[str], name: str) -> str:
        return args[args.index(name) + 1]

    assert option(orders, "--port") == str(stack.engine_port)
    assert option(billing, "--port") == str(stack.billing_port)
    assert f"--peer=billing=127.0.0.1:{stack.billing_port}" in orders
    assert f"--peer=orders=127.0.0.1:{stack.engine_port}" in billing
    assert Path(option(orders, "--db")) == stack.var.resolve() / "devengine-orders.sqlite3"
    assert Path(option(billing, "--db")) == stack.var.resolve() / "devengine-billing.sqlite3"
    # A demo left up must not grow without end: finished workflows are purged in time.
    for engine in (orders, billing):
        assert "--state-retention=completed=2h,failed=24h,terminated=24h" in engine

    [samples] = [_args(pid) for pid in children if b"devengine.samples" in _cmdline(pid)]
    assert option(samples, "--engine") == f"127.0.0.1:{stack.engine_port}"
    assert option(samples, "--billing") == f"127.0.0.1:{stack.billing_port}"
    [indexer] = [pid for pid in children if b"runindexer" in _cmdline(pid)]
    assert _environ(indexer)["CONSOLE_ENGINES"] == (
        f"orders=127.0.0.1:{stack.engine_port},billing=127.0.0.1:{stack.billing_port}"
    )


def test_a_child_that_dies_stops_the_others_and_fails_the_run(stack):
    children = _children(stack.proc.pid)
    [engine] = [pid for pid in children if b"--app-id\0billing" in _cmdline(pid)]

    os.kill(engine, signal.SIGKILL)

    assert stack.proc.wait(60) == 1
    assert not any(_alive(pid) for pid in children)
    assert stack.ports_free()


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"DEVENGINE_PORT": "abc"},
            "DEVENGINE_PORT='abc' is not a port number between 1 and 65535",
        ),
        (
            {"DEVENGINE_BILLING_PORT": "65536"},
            "DEVENGINE_BILLING_PORT='65536' is not a port number between 1 and 65535",
        ),
        # One port for both: daphne failed on it after everything else had started.
        (
            {"DEVENGINE_PORT": "47123", "CONSOLE_PORT": "47123"},
            "DEVENGINE_PORT and CONSOLE_PORT are both 47123",
        ),
        (
            {"DEVENGINE_PORT": "47123", "DEVENGINE_BILLING_PORT": "47123"},
            "DEVENGINE_PORT and DEVENGINE_BILLING_PORT are both 47123",
        ),
        (
            {"DEVENGINE_BILLING_PORT": "47123", "CONSOLE_PORT": "47123"},
            "DEVENGINE_BILLING_PORT and CONSOLE_PORT are both 47123",
        ),
        # The billing engine's default, taken by the orders engine.
        (
            {"DEVENGINE_PORT": "50002"},
            "DEVENGINE_PORT and DEVENGINE_BILLING_PORT are both 50002",
        ),
        (
            {"DEVENGINE_STATE_RETENTION": "completed=2 hours"},
            "DEVENGINE_STATE_RETENTION: completed: '2 hours' is not a Go duration "
            "(e.g. 72h, 30m, 1h30m, 0s)",
        ),
    ],
)
def test_a_bad_setting_is_one_line(tmp_path, env, message):
    done = _launch(tmp_path, env)
    assert done.returncode == 1
    assert done.stderr.strip() == message


def _launch(tmp_path, env: dict[str, str]) -> subprocess.CompletedProcess:
    """make run's launcher with these settings, to be refused before it starts anything."""
    return subprocess.run(
        [sys.executable, "-m", "console.devstack"],
        cwd=ROOT,
        env={**os.environ, **env, "CONSOLE_VAR_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_billing_port_in_use_is_one_line(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        ports = {
            "DEVENGINE_PORT": str(_free_port()),
            "DEVENGINE_BILLING_PORT": str(port),
            "CONSOLE_PORT": str(_free_port()),
        }
        done = _launch(tmp_path, ports)
    assert done.returncode == 1
    assert done.stderr.strip() == (
        f"port {port} is in use: stop what uses it or set DEVENGINE_BILLING_PORT"
    )


def test_the_printed_address_carries_the_path_prefix(monkeypatch):
    from console.devstack import _url_prefix

    monkeypatch.setenv("CONSOLE_URL_PREFIX", "/dapr/")
    assert _url_prefix() == "/dapr"
    monkeypatch.setenv("CONSOLE_URL_PREFIX", "dapr")  # malformed: the web server says so
    assert _url_prefix() == ""
    monkeypatch.delenv("CONSOLE_URL_PREFIX")
    assert _url_prefix() == ""


def test_the_engines_retention_is_the_demo_one_unless_set(monkeypatch):
    from console.devstack import DEMO_RETENTION, _retention_setting

    monkeypatch.delenv("DEVENGINE_STATE_RETENTION", raising=False)
    assert _retention_setting() == DEMO_RETENTION
    monkeypatch.setenv("DEVENGINE_STATE_RETENTION", " anyTerminal=30m ")
    assert _retention_setting() == "anyTerminal=30m"
    # Set empty: finished workflows are kept for good, as by a devengine started by hand.
    monkeypatch.setenv("DEVENGINE_STATE_RETENTION", "")
    assert _retention_setting() == ""


def test_the_console_keeps_the_demo_engines_purges_six_hours_unless_set():
    from console.devstack import _index_the_demo

    address = {"orders": "127.0.0.1:1", "billing": "127.0.0.1:2"}
    env = {"CONSOLE_RETENTION_DAYS": " "}
    assert _index_the_demo(env, address)
    assert env["CONSOLE_ENGINES"] == "orders=127.0.0.1:1,billing=127.0.0.1:2"
    assert float(env["CONSOLE_RETENTION_DAYS"]) * 24 == 6
    env = {"CONSOLE_RETENTION_DAYS": "30"}
    assert _index_the_demo(env, address)
    assert env["CONSOLE_RETENTION_DAYS"] == "30"
    # Real engines: the console keeps what they purged as configured (30 days unless set).
    env = {"CONSOLE_ENGINES": "shop=10.1.2.3:50001"}
    assert not _index_the_demo(env, address)
    assert env == {"CONSOLE_ENGINES": "shop=10.1.2.3:50001"}
