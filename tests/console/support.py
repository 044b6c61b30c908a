"""Real processes for integration tests: a devengine subprocess and an in-process SDK worker."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

from engine_bridge.client import EngineClient
from engine_bridge.config import EngineConfig
from engine_bridge.errors import EngineError

REPO_ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(check: Callable[[], object], timeout: float = 20.0, interval: float = 0.05) -> object:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


class DevEngine:
    """``python -m devengine`` on a SQLite file; stop and start again on the same port and file."""

    def __init__(self, db_path: Path, *args: str, port: int | None = None) -> None:
        self.db_path = db_path
        self.port = port or free_port()
        self.args = list(args)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def config(self, name: str = "local", token: str = "") -> EngineConfig:
        return EngineConfig(name=name, address=self.address, token=token)

    def start(self) -> DevEngine:
        log = open(self.db_path.with_suffix(".log"), "ab")  # noqa: SIM115 - owned by the process
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "devengine",
                "--port",
                str(self.port),
                "--db",
                str(self.db_path),
                *self.args,
            ],
            cwd=REPO_ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        )
        log.close()
        token = self.args[self.args.index("--api-token") + 1] if "--api-token" in self.args else ""
        client = EngineClient(self.config(token=token), timeout=1.0)
        try:

            def ready() -> bool:
                assert self.process is not None and self.process.poll() is None, self.log_tail()
                try:
                    client.hello()
                    return True
                except EngineError:
                    return False

            wait_for(ready, timeout=30)
        finally:
            client.close()
        return self

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def log_tail(self) -> str:
        try:
            return self.db_path.with_suffix(".log").read_text(errors="replace")[-3000:]
        except OSError:
            return ""


def asgi_get(raw_path: bytes, *headers: tuple[bytes, bytes]) -> tuple[int, bytes]:
    """GET through the console's ASGI application as daphne calls it: the path decoded, and
    as sent (``raw_path``). Returns the status and the body."""
    status, _, body = asgi_get_with_headers(raw_path, *headers)
    return status, body


def asgi_get_with_headers(
    raw_path: bytes, *headers: tuple[bytes, bytes]
) -> tuple[int, dict[bytes, bytes], bytes]:
    """``asgi_get``, with the response's headers (names lower-cased)."""
    from urllib.parse import unquote

    from asgiref.sync import async_to_sync
    from asgiref.testing import ApplicationCommunicator

    from console.asgi import application

    async def get() -> tuple[int, dict[bytes, bytes], bytes]:
        scope = {
            "type": "http",
            "method": "GET",
            "path": unquote(raw_path.decode()),
            "raw_path": raw_path,
            "query_string": b"",
            "headers": [(b"host", b"127.0.0.1"), *headers],
        }
        app = ApplicationCommunicator(application, scope)
        await app.send_input({"type": "http.request", "body": b""})
        start = await app.receive_output(5)
        body = b""
        while True:
            chunk = await app.receive_output(5)
            body += chunk.get("body", b"")
            if not chunk.get("more_body"):
                break
        # The application is let finish, as daphne lets it: the end of the request (Django's
        # request_finished) closes the connection of the request's thread. Cancelled when this
        # loop ends instead, it left that connection open until the garbage collector came by,
        # on PostgreSQL up to the end of the session (the test database could not be dropped).
        await app.wait(5)
        sent = {name.lower(): value for name, value in start.get("headers", [])}
        return start["status"], sent, body

    return async_to_sync(get)()


def start_runindexer(
    stack: ExitStack, log_path: Path, env: dict[str, str]
) -> subprocess.Popen[bytes]:
    """``manage.py runindexer`` as a process of its own, its output appended to ``log_path``;
    killed when ``stack`` closes, if still running."""
    log = stack.enter_context(open(log_path, "ab"))  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "runindexer"],
        cwd=REPO_ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )

    def killed() -> None:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    stack.callback(killed)
    return proc


@contextlib.contextmanager
def captured_log() -> Iterator[io.StringIO]:
    """What the console's log handlers write meanwhile, formatted as they write it."""
    handlers = [h for h in logging.getLogger().handlers if type(h) is logging.StreamHandler]
    assert handlers
    written = io.StringIO()
    streams = [h.setStream(written) for h in handlers]
    try:
        yield written
    finally:
        for h, stream in zip(handlers, streams, strict=True):
            h.setStream(stream)
