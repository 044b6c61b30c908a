"""``EngineClient``: the one place that speaks gRPC to an engine (TaskHubSidecarService).

This is the only module importing the generated stubs (from the pinned ``dapr`` package). Every
call has a deadline, carries the ``dapr-api-token`` metadata when the engine has a token, and
raises one of ``engine_bridge.errors`` instead of ``grpc.RpcError``. Results are plain objects
(``engine_bridge.types``).

Importing the stubs runs ``dapr.ext.workflow.__init__``, which instruments gRPC client channels
for OpenTelemetry when ``opentelemetry-instrumentation-grpc`` is installed: we rely on that
instrumentation (spans + ``traceparent`` on our calls) and never instrument a second time. Web
processes don't import this module for reading (views read the database), only the indexer and
the actions service do.
"""

from __future__ import annotations

import re
import socket
import ssl
from collections.abc import Callable
from typing import Any, TypeVar

import grpc
from dapr.ext.workflow._durabletask.internal import orchestrator_service_pb2_grpc as pb_grpc
from dapr.ext.workflow._durabletask.internal import protos as pb
from google.protobuf import empty_pb2, wrappers_pb2

from engine_bridge import mappers
from engine_bridge.config import EngineConfig, env_suffix
from engine_bridge.errors import (
    EngineError,
    EngineRejected,
    EngineUnavailable,
    InstanceNotFound,
    NotSupported,
    Stopping,
)
from engine_bridge.types import Event, InstancePage, InstanceState

__all__ = ["EngineClient", "map_rpc_error", "pb", "pb_grpc"]

T = TypeVar("T")

_TRANSIENT = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.CANCELLED,
    grpc.StatusCode.ABORTED,
}
# Older sidecars answer methods they lack with UNKNOWN and one of these texts, not UNIMPLEMENTED.
_UNSUPPORTED_TEXT = re.compile(
    r"unimplemented|not implemented|unknown method|unknown service", re.I
)
_NO_SUCH_INSTANCE = re.compile(r"no such instance|not found", re.I)
#: Seconds between two looks at ``EngineClient.stopping`` while a call waits for its answer.
STOP_POLL = 0.25
# A connection that could not be set up (not a call that failed on one already open).
_NOT_CONNECTED = "failed to connect to all addresses"
# With TLS: the engine's first bytes were not TLS (a plain gRPC server starts with HTTP/2).
_NOT_TLS_ANSWER = re.compile(r"WRONG_VERSION_NUMBER", re.I)
# Without TLS: the engine closed the connection. A TLS server does so at the plain HTTP/2
# preface, but so does a proxy in front of an engine that is down (Docker's published ports).
_CLOSED = re.compile(r"Socket closed|Connection reset by peer", re.I)
#: Seconds a look at an engine's address waits (see _answers_tls, _takes_connections).
PROBE_TIMEOUT = 2.0
# The address answered in HTTP/1 (a web server, or a sidecar's HTTP port), not in HTTP/2.
_NOT_HTTP2 = re.compile(r"Failed parsing HTTP/2|http1\.x server", re.I)
# Nothing listens on the address's port.
_REFUSED = re.compile(r"Connection refused", re.I)
# The address took the connection and then sent nothing (an engine that hangs).
_SILENT = re.compile(r"timed out before receiving SETTINGS frame", re.I)


def map_rpc_error(err: grpc.RpcError, operation: str, secret: str = "") -> EngineError:
    """The console's exception for a failed call (keeps the engine's text: show it), with
    ``secret`` (the engine's api token) blotted out of it: the text reaches the engines page,
    the API and the log, and an engine or a proxy in front of it may quote the request's
    headers back."""
    code = err.code() if hasattr(err, "code") else None
    text = (err.details() if hasattr(err, "details") else None) or str(err)
    if secret:
        text = text.replace(secret, "***")
    name = code.name if code is not None else "UNKNOWN"
    if code in _TRANSIENT:
        return EngineUnavailable(text, code=name, operation=operation)
    if code == grpc.StatusCode.UNIMPLEMENTED:
        return NotSupported(text, code=name, operation=operation)
    if code == grpc.StatusCode.NOT_FOUND:
        return InstanceNotFound(text, code=name, operation=operation)
    if code == grpc.StatusCode.UNKNOWN:
        if _UNSUPPORTED_TEXT.search(text):
            return NotSupported(text, code=name, operation=operation)
        if _NO_SUCH_INSTANCE.search(text):
            return InstanceNotFound(text, code=name, operation=operation)
    return EngineRejected(text, code=name, operation=operation)


def _with_hint(error: EngineError, hint: str) -> EngineError:
    """``error`` with ``hint`` first: the engines page shows an error's first 200 characters,
    and gRPC's run longer."""
    if not hint:
        return error
    return type(error)(f"{hint}; {error.message}", code=error.code, operation=error.operation)


def _split_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.removeprefix("[").removesuffix("]"), int(port)


def _takes_connections(address: str, timeout: float) -> bool:
    """Whether something at ``address`` accepts a TCP connection within ``timeout``."""
    try:
        with socket.create_connection(_split_address(address), timeout=timeout):
            return True
    except (OSError, ValueError):
        return False


def _answers_tls(address: str, timeout: float) -> bool:
    """Whether the server at ``address`` answers a TLS handshake: it sends a TLS answer, its
    certificate left unchecked (its trust is not the question), or a TLS alert (one that wants
    a client certificate)."""
    host, port = _split_address(address)
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with (
            socket.create_connection((host, port), timeout=timeout) as sock,
            context.wrap_socket(sock, server_hostname=host),
        ):
            return True
    except ssl.SSLError as exc:
        return "ALERT" in str(exc.reason or "").upper()
    except (OSError, ValueError):
        return False


class EngineClient:
    """A connection to one engine. Thread-safe.

    ``timeout`` is the deadline (seconds) of every call; write calls that wait for the engine
    (start, suspend, resume, terminate) take ``timeout`` too, so they never hang.
    """

    def __init__(
        self,
        config: EngineConfig,
        *,
        timeout: float = 10.0,
        payload_limit: int = 65536,
        channel: grpc.Channel | None = None,
    ) -> None:
        self.config = config
        self.timeout = timeout
        self.payload_limit = payload_limit
        self._metadata: tuple[tuple[str, str], ...] = (
            (("dapr-api-token", config.token),) if config.token else ()
        )
        self._channel = channel or self._open_channel(config)
        self._stub = pb_grpc.TaskHubSidecarServiceStub(self._channel)
        #: Asked while a call waits for its answer: True gives the call up (``Stopping``), so
        #: a process that is stopping does not wait for an engine that doesn't answer (one that
        #: is frozen, or a slow link) until the call's deadline, a minute or more.
        self.stopping: Callable[[], bool] = lambda: False

    @staticmethod
    def _open_channel(config: EngineConfig) -> grpc.Channel:
        options = [
            ("grpc.max_receive_message_length", 256 * 1024 * 1024),
            ("grpc.keepalive_time_ms", 30_000),
            # Reconnect quickly once an engine comes back (default backoff grows to 2 minutes).
            ("grpc.max_reconnect_backoff_ms", 5_000),
        ]
        if config.tls:
            root = None
            if config.tls_ca_file:
                with open(config.tls_ca_file, "rb") as f:
                    root = f.read()
            return grpc.secure_channel(
                config.address, grpc.ssl_channel_credentials(root_certificates=root), options
            )
        return grpc.insecure_channel(config.address, options)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> EngineClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, operation: str, method: Any, request: Any, timeout: float | None = None) -> Any:
        deadline = timeout or self.timeout
        try:
            future = method.future(request, timeout=deadline, metadata=self._metadata)
            while True:
                try:
                    return future.result(timeout=STOP_POLL)
                except grpc.FutureTimeoutError:
                    if self.stopping():
                        future.cancel()
                        raise Stopping(f"{operation}: given up, the process is stopping") from None
        except grpc.RpcError as err:
            error = map_rpc_error(err, operation, self.config.token)
            hint = self._hint(error) or self._probed_hint(error, deadline)
            raise _with_hint(error, hint) from None

    def _hint(self, error: EngineError) -> str:
        """What to do about ``error``, in the console's words, when gRPC's own text does not
        say it (it names HTTP/2 frames, not the setting to change); "" when there is nothing
        to add."""
        suffix = env_suffix(self.config.name)
        if error.code == "UNAUTHENTICATED":
            if self.config.token:
                return (
                    f"the engine refused the api token of CONSOLE_ENGINE_TOKEN_{suffix}: "
                    "it must be the sidecar's DAPR_API_TOKEN"
                )
            return (
                "the engine wants an api token: set CONSOLE_ENGINE_TOKEN_"
                f"{suffix} to the sidecar's DAPR_API_TOKEN"
            )
        if not isinstance(error, EngineUnavailable):
            return ""
        if _NOT_HTTP2.search(error.message):
            return (
                "the address answers, but not in gRPC (a web server? a Dapr sidecar's gRPC "
                "port is 50001 by default, 3500 is its HTTP port)"
            )
        if _SILENT.search(error.message):
            return "the address takes connections but answers nothing (an engine that hangs?)"
        if _NOT_CONNECTED in error.message and _REFUSED.search(error.message):
            return "nothing listens at the address (an engine that is stopped, or another port?)"
        return ""

    def _probed_hint(self, error: EngineError, deadline: float) -> str:
        """What to do about ``error`` when only a look at the engine's address tells: the side
        that speaks TLS when the other does not (gRPC only says "Socket closed" or "handshake
        failed"), or a deadline that ran out before any answer. Only on the calls that wait for
        their answer: Hello is the first call to an engine, and the first again at each pass
        while it is unreachable."""
        if not isinstance(error, EngineUnavailable):
            return ""
        setting = f"CONSOLE_ENGINE_TLS_{env_suffix(self.config.name)}"
        probe = min(self.timeout, PROBE_TIMEOUT)
        if _NOT_CONNECTED in error.message:
            if self.config.tls and _NOT_TLS_ANSWER.search(error.message):
                return f"the engine does not answer in TLS: unset {setting}"
            if (
                not self.config.tls
                and _CLOSED.search(error.message)
                # Else a proxy in front of an engine that is down: no hint, it would mislead.
                and _answers_tls(self.config.address, probe)
            ):
                return f"the engine answers in TLS: set {setting}=1"
            return ""
        if error.code == "DEADLINE_EXCEEDED" and error.operation == "Hello":
            # Any engine answers a Hello at once: the question is whether anything is there.
            if _takes_connections(self.config.address, probe):
                return (
                    f"no answer within {deadline:g}s, though the address takes connections "
                    "(an engine that hangs, or a server that is not gRPC?)"
                )
            return (
                f"no answer within {deadline:g}s, not even to a connection (a host that is "
                "down, or a firewall that drops the connection?)"
            )
        return ""

    def _call_later(
        self,
        operation: str,
        method: Any,
        request: Any,
        convert: Callable[[Any], T],
        done: Callable[[T | EngineError], None],
    ) -> None:
        """Start the call and return: ``done`` gets the converted answer or the error, on one of
        gRPC's threads. No thread waits on a call in flight, so the indexer keeps many in flight
        at the cost of one thread (a blocking call per thread costs every answer a GIL hand-off
        between threads, a third of the indexer's CPU with 16 threads)."""

        def finished(future: grpc.Future) -> None:
            answer: T | EngineError
            try:
                answer = convert(future.result())
            except grpc.RpcError as err:
                error = map_rpc_error(err, operation, self.config.token)
                answer = _with_hint(error, self._hint(error))
            except Exception as exc:  # noqa: BLE001 - done() must always hear back
                answer = EngineError(f"unreadable answer: {exc!r}", operation=operation)
            done(answer)

        try:
            future = method.future(request, timeout=self.timeout, metadata=self._metadata)
        except ValueError as exc:  # a closed channel
            done(EngineUnavailable(str(exc), operation=operation))
            return
        future.add_done_callback(finished)

    # Reads ---------------------------------------------------------------------------------

    def hello(self, timeout: float | None = None) -> None:
        """A cheap round trip: raises if the engine is unreachable or rejects our token.
        ``timeout``: a shorter deadline than the reads' (an engine that does not answer a Hello
        in a few seconds is down for the indexer)."""
        self._call("Hello", self._stub.Hello, empty_pb2.Empty(), timeout=timeout)

    def list_instance_ids(
        self, page_size: int = 1000, continuation_token: str = ""
    ) -> InstancePage:
        request = pb.ListInstanceIDsRequest(pageSize=page_size)
        if continuation_token:
            request.continuationToken = continuation_token
        response = self._call("ListInstanceIDs", self._stub.ListInstanceIDs, request)
        token = response.continuationToken if response.HasField("continuationToken") else ""
        return InstancePage(list(response.instanceIds), token)

    def get_instance(self, instance_id: str, payloads: bool = True) -> InstanceState | None:
        """The instance's state, or None when the engine says it doesn't exist."""
        request = pb.GetInstanceRequest(instanceId=instance_id, getInputsAndOutputs=payloads)
        return mappers.instance_state(self._call("GetInstance", self._stub.GetInstance, request))

    def get_history(self, instance_id: str) -> list[Event]:
        """The current run's committed events, in order. Raises InstanceNotFound (daprd) or
        returns [] (durabletask-go's SQLite backend) for an unknown instance."""
        request = pb.GetInstanceHistoryRequest(instanceId=instance_id)
        return self._events(
            self._call("GetInstanceHistory", self._stub.GetInstanceHistory, request)
        )

    def _events(self, response: Any) -> list[Event]:
        events = [mappers.event(ev, self.payload_limit) for ev in response.events]
        mappers.pair_names(events)
        return events

    def get_instance_later(
        self,
        instance_id: str,
        done: Callable[[InstanceState | None | EngineError], None],
        payloads: bool = True,
    ) -> None:
        """``get_instance`` without waiting: ``done`` gets what it would return or raise, on
        another thread."""
        request = pb.GetInstanceRequest(instanceId=instance_id, getInputsAndOutputs=payloads)
        self._call_later(
            "GetInstance", self._stub.GetInstance, request, mappers.instance_state, done
        )

    def get_history_later(
        self, instance_id: str, done: Callable[[list[Event] | EngineError], None]
    ) -> None:
        """``get_history`` without waiting: ``done`` gets what it would return or raise, on
        another thread."""
        request = pb.GetInstanceHistoryRequest(instanceId=instance_id)
        self._call_later(
            "GetInstanceHistory", self._stub.GetInstanceHistory, request, self._events, done
        )

    def supports_rerun(self) -> bool:
        """Probe RerunWorkflowFromEvent with an empty source id: an engine that has the call
        rejects it (nothing to re-run), an older one answers UNIMPLEMENTED."""
        try:
            self._call(
                "RerunWorkflowFromEvent",
                self._stub.RerunWorkflowFromEvent,
                pb.RerunWorkflowFromEventRequest(sourceInstanceID=""),
            )
        except NotSupported:
            return False
        except (InstanceNotFound, EngineRejected):
            return True
        return True

    # Writes (for the actions service only) ---------------------------------------------------

    def start_instance(self, name: str, instance_id: str = "", input: str | None = None) -> str:
        request = pb.CreateInstanceRequest(name=name, instanceId=instance_id)
        if input is not None:
            request.input.CopyFrom(wrappers_pb2.StringValue(value=input))
        return self._call("StartInstance", self._stub.StartInstance, request).instanceId

    def raise_event(self, instance_id: str, name: str, input: str | None = None) -> None:
        request = pb.RaiseEventRequest(instanceId=instance_id, name=name)
        if input is not None:
            request.input.CopyFrom(wrappers_pb2.StringValue(value=input))
        self._call("RaiseEvent", self._stub.RaiseEvent, request)

    def suspend(self, instance_id: str, reason: str = "") -> None:
        request = pb.SuspendRequest(instanceId=instance_id)
        if reason:
            request.reason.CopyFrom(wrappers_pb2.StringValue(value=reason))
        self._call("SuspendInstance", self._stub.SuspendInstance, request)

    def resume(self, instance_id: str, reason: str = "") -> None:
        request = pb.ResumeRequest(instanceId=instance_id)
        if reason:
            request.reason.CopyFrom(wrappers_pb2.StringValue(value=reason))
        self._call("ResumeInstance", self._stub.ResumeInstance, request)

    def terminate(
        self, instance_id: str, output: str | None = None, recursive: bool = True
    ) -> None:
        request = pb.TerminateRequest(instanceId=instance_id, recursive=recursive)
        if output is not None:
            request.output.CopyFrom(wrappers_pb2.StringValue(value=output))
        self._call("TerminateInstance", self._stub.TerminateInstance, request)

    def purge(self, instance_id: str, recursive: bool = True, force: bool = False) -> int:
        request = pb.PurgeInstancesRequest(instanceId=instance_id, recursive=recursive)
        if force:
            request.force = True
        response = self._call("PurgeInstances", self._stub.PurgeInstances, request)
        return int(response.deletedInstanceCount)
