"""Helpers for the devengine conformance suite: engine processes, stubs, polling, history access.

Everything here talks to the engine over real gRPC with the stubs the Dapr SDK ships, so the suite
runs unchanged against a real Dapr sidecar (ENGINE_ADDRESS=host:port).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import grpc
from dapr.ext.workflow._durabletask.internal import orchestrator_service_pb2_grpc as stubs
from dapr.ext.workflow._durabletask.internal import protos as pb
from google.protobuf import empty_pb2, wrappers_pb2
from google.protobuf.json_format import MessageToDict

REPO_ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent

# Every unary call gets a deadline: a write with no worker connected may block otherwise.
RPC_TIMEOUT = 15.0

STATUS = {
    "RUNNING": pb.ORCHESTRATION_STATUS_RUNNING,
    "COMPLETED": pb.ORCHESTRATION_STATUS_COMPLETED,
    "CONTINUED_AS_NEW": pb.ORCHESTRATION_STATUS_CONTINUED_AS_NEW,
    "FAILED": pb.ORCHESTRATION_STATUS_FAILED,
    "TERMINATED": pb.ORCHESTRATION_STATUS_TERMINATED,
    "PENDING": pb.ORCHESTRATION_STATUS_PENDING,
    "SUSPENDED": pb.ORCHESTRATION_STATUS_SUSPENDED,
    "STALLED": pb.ORCHESTRATION_STATUS_STALLED,
}
STATUS_NAMES = {value: name for name, value in STATUS.items()}

# What an indefinite wait for an external event records as its timer's fireAt.
SENTINEL_YEAR = 9999

T = TypeVar("T")


def unique_id(prefix: str) -> str:
    """Instance ids are unique per test so tests can share one engine."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def split_address(address: str) -> tuple[str, str]:
    host, _, port = address.rpartition(":")
    return host, port


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(
    condition: Callable[[], T], timeout: float = 10.0, interval: float = 0.05, what: str = ""
) -> T:
    """Polls `condition` until it returns something truthy; fails the test after `timeout`."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = condition()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(
        f"timed out after {timeout}s waiting for {what or condition}; last={last!r}"
    )


# --- gRPC access ---------------------------------------------------------------------------


def token_metadata(token: str | None = None) -> tuple[tuple[str, str], ...]:
    token = token if token is not None else os.environ.get("DAPR_API_TOKEN", "")
    return (("dapr-api-token", token),) if token else ()


class Engine:
    """The stub plus the metadata every call needs, with a deadline on every call."""

    def __init__(self, address: str, token: str | None = None):
        self.address = address
        self.channel = grpc.insecure_channel(address)
        self.stub = stubs.TaskHubSidecarServiceStub(self.channel)
        self.metadata = token_metadata(token)

    def close(self) -> None:
        self.channel.close()

    def call(self, method: str, request: Any, timeout: float = RPC_TIMEOUT, metadata=None) -> Any:
        rpc = getattr(self.stub, method)
        return rpc(
            request, timeout=timeout, metadata=self.metadata if metadata is None else metadata
        )

    # Thin wrappers for the calls tests make all the time.

    def hello(self) -> None:
        self.call("Hello", empty_pb2.Empty(), timeout=2.0)

    def start(
        self,
        name: str,
        instance_id: str,
        input: str | None = None,
        start_at: datetime | None = None,
        timeout: float = RPC_TIMEOUT,
    ) -> pb.CreateInstanceResponse:
        request = pb.CreateInstanceRequest(instanceId=instance_id, name=name)
        if input is not None:
            request.input.CopyFrom(wrappers_pb2.StringValue(value=input))
        if start_at is not None:
            request.scheduledStartTimestamp.FromDatetime(start_at)
        return self.call("StartInstance", request, timeout=timeout)

    def get(self, instance_id: str, payloads: bool = True) -> pb.GetInstanceResponse:
        return self.call(
            "GetInstance",
            pb.GetInstanceRequest(instanceId=instance_id, getInputsAndOutputs=payloads),
        )

    def status(self, instance_id: str) -> str | None:
        response = self.get(instance_id, payloads=False)
        if not response.exists:
            return None
        return STATUS_NAMES.get(response.workflowState.workflowStatus, "?")

    def history(self, instance_id: str) -> list[pb.HistoryEvent]:
        response = self.call(
            "GetInstanceHistory", pb.GetInstanceHistoryRequest(instanceId=instance_id)
        )
        return list(response.events)

    def raise_event(self, instance_id: str, name: str, data: str | None = None) -> None:
        request = pb.RaiseEventRequest(instanceId=instance_id, name=name)
        if data is not None:
            request.input.CopyFrom(wrappers_pb2.StringValue(value=data))
        self.call("RaiseEvent", request)

    def suspend(self, instance_id: str, reason: str | None = None) -> None:
        request = pb.SuspendRequest(instanceId=instance_id)
        if reason is not None:
            request.reason.CopyFrom(wrappers_pb2.StringValue(value=reason))
        self.call("SuspendInstance", request)

    def resume(self, instance_id: str, reason: str | None = None) -> None:
        request = pb.ResumeRequest(instanceId=instance_id)
        if reason is not None:
            request.reason.CopyFrom(wrappers_pb2.StringValue(value=reason))
        self.call("ResumeInstance", request)

    def terminate(
        self, instance_id: str, output: str | None = None, recursive: bool = True
    ) -> None:
        request = pb.TerminateRequest(instanceId=instance_id, recursive=recursive)
        if output is not None:
            request.output.CopyFrom(wrappers_pb2.StringValue(value=output))
        self.call("TerminateInstance", request)

    def purge(
        self, instance_id: str, recursive: bool = False, force: bool = False
    ) -> pb.PurgeInstancesResponse:
        request = pb.PurgeInstancesRequest(instanceId=instance_id, recursive=recursive, force=force)
        return self.call("PurgeInstances", request)

    def wait_status(self, instance_id: str, *statuses: str, timeout: float = 15.0) -> str:
        return wait_for(
            lambda: (s := self.status(instance_id)) in statuses and s,
            timeout=timeout,
            what=f"{instance_id} to be {'/'.join(statuses)}",
        )

    def wait_done(self, instance_id: str, timeout: float = 20.0) -> pb.GetInstanceResponse:
        """WaitForInstanceCompletion, returning the state with payloads."""
        request = pb.GetInstanceRequest(instanceId=instance_id, getInputsAndOutputs=True)
        return self.call("WaitForInstanceCompletion", request, timeout=timeout)

    def wait_history(
        self, instance_id: str, condition: Callable[[list[pb.HistoryEvent]], bool], timeout=15.0
    ) -> list[pb.HistoryEvent]:
        def check():
            events = self.history(instance_id)
            return events if condition(events) else None

        return wait_for(check, timeout=timeout, what=f"history of {instance_id}")


def rpc_error(call: Callable[[], Any]) -> grpc.RpcError:
    """Runs `call`, which must fail with an RpcError, and returns the error."""
    try:
        call()
    except grpc.RpcError as error:
        return error
    raise AssertionError("the call succeeded but an error was expected")


# --- history helpers -----------------------------------------------------------------------


def kind(event: pb.HistoryEvent) -> str:
    return event.WhichOneof("eventType")


def kinds(events: list[pb.HistoryEvent]) -> list[str]:
    return [kind(e) for e in events]


def of_kind(events: list[pb.HistoryEvent], name: str) -> list[pb.HistoryEvent]:
    return [e for e in events if kind(e) == name]


def has_kind(name: str) -> Callable[[list[pb.HistoryEvent]], bool]:
    return lambda events: any(kind(e) == name for e in events)


def as_dicts(events: list[pb.HistoryEvent]) -> list[dict]:
    return [MessageToDict(e) for e in events]


def is_sentinel(timer_created: pb.HistoryEvent) -> bool:
    return timer_created.timerCreated.fireAt.ToDatetime().year == SENTINEL_YEAR


def turn_start(events: list[pb.HistoryEvent], index: int) -> datetime:
    """Timestamp of the workflowStarted that opened the turn holding events[index]."""
    for event in reversed(events[: index + 1]):
        if kind(event) == "workflowStarted":
            return event.timestamp.ToDatetime(tzinfo=UTC)
    raise AssertionError("no workflowStarted before the event")


def far_future() -> datetime:
    return datetime.now(UTC) + timedelta(days=3650)


# --- engine processes ----------------------------------------------------------------------


class EngineProcess:
    """A real devengine subprocess on a SQLite file; restartable on the same port and file."""

    def __init__(self, db_path: Path, *extra_args: str, port: int | None = None):
        self.db_path = Path(db_path)
        self.port = port or free_port()
        self.extra_args = list(extra_args)
        self.log_path = self.db_path.with_suffix(".log")
        self.process: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self, timeout: float = 30.0) -> EngineProcess:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
        command = [
            sys.executable,
            "-m",
            "devengine",
            "--port",
            str(self.port),
            "--db",
            str(self.db_path),
            *self.extra_args,
        ]
        log = open(self.log_path, "ab")  # noqa: SIM115 - lives as long as the process
        self.process = subprocess.Popen(
            command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
        )
        log.close()
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float) -> None:
        token = _arg_value(self.extra_args, "--api-token")
        engine = Engine(self.address, token=token or "")
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                if self.process and self.process.poll() is not None:
                    raise RuntimeError(f"devengine exited early:\n{self.log_tail()}")
                try:
                    engine.hello()
                    return
                except grpc.RpcError:
                    time.sleep(0.1)
            raise RuntimeError(f"devengine did not answer Hello in {timeout}s:\n{self.log_tail()}")
        finally:
            engine.close()

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def kill(self) -> None:
        """kill -9: no chance to flush or clean up."""
        if self.process and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.kill()


def _arg_value(args: list[str], flag: str) -> str | None:
    if flag in args:
        return args[args.index(flag) + 1]
    return None


class WorkerProcess:
    """An SDK worker (WorkflowRuntime registering every test workflow) in its own process."""

    def __init__(self, address: str, log_path: Path, env: dict[str, str] | None = None):
        self.address = address
        self.log_path = log_path
        self.env = env or {}
        self.process: subprocess.Popen | None = None

    def start(self) -> WorkerProcess:
        env = dict(os.environ)
        env.update(self.env)
        log = open(self.log_path, "ab")  # noqa: SIM115 - lives as long as the process
        self.process = subprocess.Popen(
            [sys.executable, str(HERE / "engine_worker.py"), self.address],
            cwd=REPO_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.kill()
