"""``make run``: the whole console on embedded defaults, stopped by one Ctrl-C.

    python -m console.devstack

Migrates, creates a demo admin on a fresh database (and prints its login), then starts and
supervises: two peered devengines, for the apps "orders" (var/devengine-orders.sqlite3) and
"billing" (var/devengine-billing.sqlite3), the sample workloads split between them
(``devengine.samples``), the indexer of both and daphne on http://127.0.0.1:8000. If one of them
exits, the others are stopped too and the exit status is 1. Ctrl-C, SIGTERM, a closed terminal
(SIGHUP) and Ctrl-\\ stop them all; on Linux so does the launcher's own death (even by SIGKILL),
so no child keeps a port. Ports: ``DEVENGINE_PORT`` (50001, orders), ``DEVENGINE_BILLING_PORT``
(50002, billing), ``CONSOLE_PORT`` (8000); files under ``CONSOLE_VAR_DIR`` (var/). The engines
purge finished workflows after ``DEVENGINE_STATE_RETENTION`` (``DEMO_RETENTION`` when unset;
set empty: kept for good), and the console forgets them six hours later (``_index_the_demo``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import itertools
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The same directory as the settings' VAR_DIR (read here without loading Django).
VAR = Path(os.environ.get("CONSOLE_VAR_DIR", "") or ROOT / "var").resolve()


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        # As the servers bind (so connections of a run just stopped, in TIME_WAIT, don't count).
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _url_prefix() -> str:
    """CONSOLE_URL_PREFIX as the console reads it ("" when unset or malformed: the web server
    then stops with its own line about it)."""
    from django.core.exceptions import ImproperlyConfigured

    from console.env import envurlprefix

    try:
        return envurlprefix("CONSOLE_URL_PREFIX")
    except ImproperlyConfigured:
        return ""


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


PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Ask Linux to send SIGTERM to the calling child when the launcher dies, however it dies."""
    if not sys.platform.startswith("linux"):
        return
    parent = os.getppid()
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # the launcher died before prctl took effect
        os._exit(1)


def _port_setting(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip() or str(default)
    if not (value.isascii() and value.isdigit()) or not 0 < int(value) < 65536:
        raise ValueError(f"{name}={value!r} is not a port number between 1 and 65535")
    return int(value)


def _port_settings(defaults: dict[str, int]) -> dict[str, int]:
    """The ports by setting name; ValueError names a bad one, or two that are the same."""
    ports = {name: _port_setting(name, default) for name, default in defaults.items()}
    for (a, port_a), (b, port_b) in itertools.combinations(ports.items(), 2):
        if port_a == port_b:
            raise ValueError(f"{a} and {b} are both {port_a}")
    return ports


# The two apps of the samples, each served by a devengine of its own: (app id, port setting,
# database file).
APPS = (
    ("orders", "DEVENGINE_PORT", "devengine-orders.sqlite3"),
    ("billing", "DEVENGINE_BILLING_PORT", "devengine-billing.sqlite3"),
)
# The file of the one devengine of earlier versions (app id "devengine", indexed as "local"). Not
# taken over by orders: its histories name the app "devengine", so the results of its children
# still running would be sent to that app, which no engine serves any more.
EARLIER_ENGINE_DB = "devengine.sqlite3"
# The samples start workflows for as long as the demo runs and never purge one: kept for good,
# they grow the engines' files by about 54 MiB an hour. Completed runs stay two hours, failed
# and terminated ones a day, to look into.
DEMO_RETENTION = "completed=2h,failed=24h,terminated=24h"
# Six hours: what the demo's engines purged stays readable in the console for an afternoon.
DEMO_CONSOLE_RETENTION_DAYS = "0.25"


def _retention_setting() -> str:
    """The engines' retention policy ("": none); ValueError names a bad part."""
    from devengine.retention import parse_retention

    value = os.environ.get("DEVENGINE_STATE_RETENTION")
    value = DEMO_RETENTION if value is None else value.strip()
    try:
        parse_retention([value])
    except ValueError as e:
        raise ValueError(f"DEVENGINE_STATE_RETENTION: {e}") from None
    return value


def _index_the_demo(env: dict[str, str], address: dict[str, str]) -> bool:
    """Points the console at the demo engines, unless CONSOLE_ENGINES is set (False). The
    console then keeps what they purged, and the earlier runs of the monitors that continue as
    new, for DEMO_CONSOLE_RETENTION_DAYS unless CONSOLE_RETENTION_DAYS is set: kept the usual
    30 days, a demo left up would grow the console's file by about 100 MiB an hour for a month."""
    if env.get("CONSOLE_ENGINES", "").strip():
        return False
    env["CONSOLE_ENGINES"] = ",".join(f"{app}={address[app]}" for app, _, _ in APPS)
    if not env.get("CONSOLE_RETENTION_DAYS", "").strip():
        env["CONSOLE_RETENTION_DAYS"] = DEMO_CONSOLE_RETENTION_DAYS
    return True


class Stack:
    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.children: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        # Own session: Ctrl-C reaches only this launcher, which then stops children in order.
        proc = subprocess.Popen(
            list(args),
            cwd=ROOT,
            env=self.env,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
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
        """Return when one of the children has exited (on its own: a failure)."""
        while True:
            for name, proc in self.children:
                code = proc.poll()
                if code is not None:
                    print(f"{name} exited with status {code}: stopping everything", flush=True)
                    return
            time.sleep(0.5)


def main() -> int:
    python = sys.executable
    try:
        ports = _port_settings(
            {"DEVENGINE_PORT": 50001, "DEVENGINE_BILLING_PORT": 50002, "CONSOLE_PORT": 8000}
        )
        retention = _retention_setting()
    except ValueError as e:
        print(e, file=sys.stderr)
        return 1
    http_port = ports["CONSOLE_PORT"]
    address = {app: f"127.0.0.1:{ports[setting]}" for app, setting, _ in APPS}
    env = dict(os.environ)
    if not _index_the_demo(env, address):
        # Exported for the console against real sidecars, it would hide the samples unsaid.
        print(
            f"CONSOLE_ENGINES is set ({env['CONSOLE_ENGINES']}): the console indexes those "
            "engines, not the devengines started here. Unset it to see the sample workflows.",
            flush=True,
        )
    if (VAR / EARLIER_ENGINE_DB).exists():
        print(
            f"{VAR / EARLIER_ENGINE_DB} is the engine of an earlier make run, no longer used: "
            "delete it, and its instances from the console with "
            "`.venv/bin/python manage.py forgetengine local`.",
            flush=True,
        )
    # Production behaviour: no tracebacks or URL lists in error pages (static files from daphne,
    # as by default).
    env["PYTHONUNBUFFERED"] = "1"
    VAR.mkdir(parents=True, exist_ok=True)

    for what, port in ports.items():
        if not _port_free(port):
            print(f"port {port} is in use: stop what uses it or set {what}", file=sys.stderr)
            return 1

    manage = [python, str(ROOT / "manage.py")]
    # A bad setting makes manage.py print one line naming it; nothing to add to that.
    if subprocess.run([*manage, "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env).returncode:
        return 1
    made = subprocess.run(
        [*manage, "ensure_demo_admin"], cwd=ROOT, env=env, text=True, stdout=subprocess.PIPE
    )
    if made.returncode:
        return 1
    login = made.stdout.strip()
    print(login, flush=True)

    stack = Stack(env)
    stopping = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stopping
        if stopping:
            return
        stopping = True
        raise KeyboardInterrupt

    # SIGINT also when started with it ignored; SIGHUP: the terminal was closed.
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(signum, on_signal)
    failed = True
    try:
        for app, setting, db in APPS:
            # Each engine hands the other what a workflow runs on the other's app.
            peers = [f"--peer={other}={address[other]}" for other, _, _ in APPS if other != app]
            kept = [f"--state-retention={retention}"] if retention else []
            engine = stack.start(
                f"devengine {app}",
                python,
                "-m",
                "devengine",
                "--port",
                str(ports[setting]),
                "--db",
                str(VAR / db),
                "--app-id",
                app,
                *peers,
                *kept,
            )
            if not _wait_for_port(ports[setting], engine):
                print(f"devengine {app} did not start", file=sys.stderr)
                return 1
        # The samples fail some activities on purpose, and the SDK logs a warning for each (one
        # every second or two): the console shows those failures; the terminal keeps to errors.
        stack.start(
            "samples",
            python,
            "-m",
            "devengine.samples",
            "--engine",
            address["orders"],
            "--billing",
            address["billing"],
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
                f"\n  Dapr Workflow Console: http://127.0.0.1:{http_port}{_url_prefix()}/"
                "  (Ctrl-C stops all)"
                f"\n  {login}\n",
                flush=True,
            )
        stack.watch()
    except KeyboardInterrupt:
        failed = False
    finally:
        stack.stop()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
