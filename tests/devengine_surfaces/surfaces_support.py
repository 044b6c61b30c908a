"""Helpers of the surfaces suite: a devengine subprocess with gRPC and HTTP ports, and a plain
HTTP/1.1 client (http.client for ordinary requests, a raw socket for malformed ones)."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
RPC_TIMEOUT = 15.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class HttpResult:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self):
        return json.loads(self.body)


class Http:
    """Plain HTTP/1.1 requests to the engine's HTTP port (a fresh connection per request)."""

    def __init__(self, port: int, token: str | None = None):
        self.port = port
        self.token = token

    def request(
        self,
        method: str,
        path: str,
        body: bytes | str | None = None,
        headers: dict[str, str] | None = None,
        timeout: float = RPC_TIMEOUT,
    ) -> HttpResult:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        all_headers = dict(headers or {})
        if self.token is not None:
            all_headers.setdefault("dapr-api-token", self.token)
        try:
            connection.request(
                method,
                path,
                body=body.encode() if isinstance(body, str) else body,
                headers=all_headers,
            )
            response = connection.getresponse()
            return HttpResult(
                response.status,
                {k.lower(): v for k, v in response.getheaders()},
                response.read(),
            )
        finally:
            connection.close()

    def get(self, path: str, **kwargs) -> HttpResult:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, body: bytes | str | None = None, **kwargs) -> HttpResult:
        return self.request("POST", path, body=body, **kwargs)

    def raw(self, data: bytes, timeout: float = 5.0) -> bytes:
        """Sends bytes as they are and returns everything the server answers until it closes."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as s:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
            chunks = []
            while True:
                try:
                    chunk = s.recv(65536)
                except (ConnectionResetError, TimeoutError):
                    break
                if not chunk:
                    break
                chunks.append(chunk)
            return b"".join(chunks)


class EngineProcess:
    """A devengine subprocess serving gRPC and HTTP on free loopback ports."""

    def __init__(self, db_path: Path, *extra_args: str):
        self.db_path = db_path
        self.grpc_port = free_port()
        self.http_port = free_port()
        self.extra_args = list(extra_args)
        self.log_path = db_path.with_suffix(".log")
        self.process: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def start(self, timeout: float = 30.0) -> EngineProcess:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
        command = [
            sys.executable,
            "-m",
            "devengine",
            "--port",
            str(self.grpc_port),
            "--http-port",
            str(self.http_port),
            "--db",
            str(self.db_path),
            *self.extra_args,
        ]
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"devengine exited early:\n{self.log()}")
            try:
                if Http(self.http_port).get("/v1.0/healthz", timeout=1).status == 204:
                    return self
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"devengine did not come up in {timeout}s:\n{self.log()}")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
