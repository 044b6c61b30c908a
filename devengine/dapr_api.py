"""The workflow RPCs of `dapr.proto.runtime.v1.Dapr` (StartWorkflowBeta1, ...), like daprd's.

daprd serves these thin management calls beside TaskHubSidecarService on the same gRPC port, and
the same operations over HTTP (`/v1.0-beta1/workflows/...`, see http_api). Both surfaces go
through `WorkflowApi`, which holds daprd's validation rules and turns engine errors into daprd's
error codes: `DaprApiError` carries the errorCode, the message, the gRPC code and the HTTP status,
all decided here and nowhere else.

Only the workflow methods of the Dapr service are registered: gRPC itself answers every other
method of the service with UNIMPLEMENTED. (The generated `DaprServicer` base class is not used:
under grpc.aio its synchronous stubs raise NotImplementedError, which the server logs as a
servicer failure and reports as "Unexpected <class 'NotImplementedError'>".)
"""

from __future__ import annotations

import re
import unicodedata
import uuid
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import Any

import grpc
from dapr.proto.runtime.v1 import workflow_pb2
from google.protobuf import empty_pb2

from devengine import protos as p
from devengine.engine import (
    Engine,
    EngineError,
    InstanceNotFound,
    NothingToPurge,
    history_times,
)

SERVICE_NAME = "dapr.proto.runtime.v1.Dapr"

# daprd limits ids it creates (state stores with short keys); Go counts the bytes.
MAX_INSTANCE_ID_LENGTH = 64
START_TIME_OPTION = "dapr.workflow.start_time"

# Keys of GetWorkflowResponse.properties.
CUSTOM_STATUS = "dapr.workflow.custom_status"
INPUT = "dapr.workflow.input"
OUTPUT = "dapr.workflow.output"
FAILURE_ERROR_TYPE = "dapr.workflow.failure.error_type"
FAILURE_ERROR_MESSAGE = "dapr.workflow.failure.error_message"
FAILURE_STACK_TRACE = "dapr.workflow.failure.stack_trace"

# daprd's table of runtime_status strings. STALLED is not in it: it reads "UNKNOWN" there too.
RUNTIME_STATUS: dict[int, str] = {
    p.RUNNING: "RUNNING",
    p.COMPLETED: "COMPLETED",
    p.CONTINUED_AS_NEW: "CONTINUED_AS_NEW",
    p.FAILED: "FAILED",
    p.CANCELED: "CANCELED",
    p.TERMINATED: "TERMINATED",
    p.PENDING: "PENDING",
    p.SUSPENDED: "SUSPENDED",
}

# Go's time.Parse(time.RFC3339, ...): fractional seconds are accepted, a zone is required.
_RFC3339 = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(\.\d+)?(Z|[+-](\d{2}):(\d{2}))$"
)
_START_TIME_FORMAT = 'start times must be in RFC3339 format (e.g. "2009-11-10T23:00:00Z")'


class DaprApiError(Exception):
    """An error as daprd reports it: errorCode and message, with its gRPC code and HTTP status."""

    def __init__(self, error_code: str, message: str, grpc_code: grpc.StatusCode, http_status: int):
        super().__init__(message)
        self.error_code = error_code
        self.message = message
        self.grpc_code = grpc_code
        self.http_status = http_status

    def json(self) -> dict[str, str]:
        return {"errorCode": self.error_code, "message": self.message}


def _bad_request(error_code: str, message: str) -> DaprApiError:
    return DaprApiError(error_code, message, grpc.StatusCode.INVALID_ARGUMENT, 400)


def _internal(error_code: str, message: str) -> DaprApiError:
    return DaprApiError(error_code, message, grpc.StatusCode.INTERNAL, 500)


def instance_id_missing() -> DaprApiError:
    return _bad_request("ERR_INSTANCE_ID_PROVIDED_MISSING", "no instance ID was provided")


def instance_id_too_long() -> DaprApiError:
    return _bad_request(
        "ERR_INSTANCE_ID_TOO_LONG",
        f"workflow instance ID exceeds the max length of {MAX_INSTANCE_ID_LENGTH} characters",
    )


def instance_id_invalid(instance_id: str) -> DaprApiError:
    return _bad_request(
        "ERR_INSTANCE_ID_INVALID",
        f"workflow instance ID '{instance_id}' is invalid: only alphanumeric and underscore "
        "characters are allowed",
    )


def workflow_name_missing() -> DaprApiError:
    return _bad_request("ERR_WORKFLOW_NAME_MISSING", "workflow name is not configured")


def event_name_missing() -> DaprApiError:
    return _bad_request("ERR_WORKFLOW_EVENT_NAME_MISSING", "missing workflow event name")


def instance_not_found(instance_id: str) -> DaprApiError:
    return DaprApiError(
        "ERR_INSTANCE_ID_NOT_FOUND",
        f"unable to find workflow with the provided instance ID: {instance_id}",
        grpc.StatusCode.NOT_FOUND,
        404,
    )


def start_failed(name: str, cause: str) -> DaprApiError:
    return _internal("ERR_START_WORKFLOW", f"error starting workflow '{name}': {cause}")


def terminate_failed(instance_id: str, cause: str) -> DaprApiError:
    return _internal(
        "ERR_TERMINATE_WORKFLOW", f"error terminating workflow '{instance_id}': {cause}"
    )


def raise_event_failed(instance_id: str, cause: str) -> DaprApiError:
    return _internal(
        "ERR_RAISE_EVENT_WORKFLOW", f"error raising event on workflow '{instance_id}': {cause}"
    )


def pause_failed(instance_id: str, cause: str) -> DaprApiError:
    return _internal("ERR_PAUSE_WORKFLOW", f"error pausing workflow {instance_id}: {cause}")


def resume_failed(instance_id: str, cause: str) -> DaprApiError:
    return _internal("ERR_RESUME_WORKFLOW", f"error resuming workflow {instance_id}: {cause}")


def purge_failed(instance_id: str, cause: str) -> DaprApiError:
    return _internal("ERR_PURGE_WORKFLOW", f"error purging workflow {instance_id}: {cause}")


def _is_not_found(error: EngineError) -> bool:
    return isinstance(error, InstanceNotFound)


def validate_instance_id(instance_id: str, is_create: bool) -> None:
    """daprd's validateInstanceID: required; on create, at most 64 bytes of letters, digits,
    '-' and '_'."""
    if not instance_id:
        raise instance_id_missing()
    if not is_create:
        return
    if len(instance_id.encode("utf-8", "surrogatepass")) > MAX_INSTANCE_ID_LENGTH:
        raise instance_id_too_long()
    for char in instance_id:
        # Go's unicode.IsLetter (categories L*) and unicode.IsDigit (Nd).
        if not (char.isalpha() or char in "-_" or unicodedata.category(char) == "Nd"):
            raise instance_id_invalid(instance_id)


def parse_rfc3339(text: str) -> datetime:
    """A start time as Go's time.Parse(time.RFC3339) reads it; ValueError when it does not."""
    match = _RFC3339.match(text)
    if match is None:
        raise ValueError(text)
    fraction = match.group(7) or ""
    digits = (fraction[1:] + "000000")[:6]
    zone = match.group(8)
    iso = f"{text[:19]}.{digits}{'+00:00' if zone == 'Z' else zone}"
    if zone != "Z" and (int(match.group(9)) > 23 or int(match.group(10)) > 59):
        raise ValueError(text)
    return datetime.fromisoformat(iso)


def _payload(data: bytes) -> str:
    """Raw bytes as the string payload daprd makes of them (Go: string(bytes) in a proto string)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("string field contains invalid UTF-8") from None


class WorkflowApi:
    """daprd's universal workflow API over the engine: what both the gRPC and HTTP surfaces call."""

    def __init__(self, engine: Engine):
        self.engine = engine

    async def start(
        self,
        instance_id: str,
        workflow_name: str,
        input: bytes,
        options: Mapping[str, str],
        trace: p.TraceContext,
    ) -> str:
        if not instance_id:
            instance_id = str(uuid.uuid4())
        validate_instance_id(instance_id, is_create=True)
        if not workflow_name:
            raise workflow_name_missing()
        request = p.pb.CreateInstanceRequest(instanceId=instance_id, name=workflow_name)
        try:
            # daprd always passes the body on, an empty one as "".
            request.input.value = _payload(input)
        except ValueError as e:
            raise start_failed(workflow_name, str(e)) from None
        if START_TIME_OPTION in options:
            try:
                start_at = parse_rfc3339(options[START_TIME_OPTION])
            except ValueError:
                raise start_failed(workflow_name, _START_TIME_FORMAT) from None
            request.scheduledStartTimestamp.FromDatetime(start_at)
        try:
            return await self.engine.start_instance(request, trace)
        except EngineError as e:
            raise start_failed(workflow_name, e.message) from None

    def get(self, instance_id: str) -> tuple[workflow_pb2.GetWorkflowResponse, bool]:
        """The response and whether the instance exists (unknown: OK with only the id, as daprd)."""
        validate_instance_id(instance_id, is_create=False)
        # The stored row says which payloads are present at all (an empty input is not a missing
        # one); the engine's WorkflowState fills absent payloads with "".
        inst = self.engine.store.get_instance(instance_id)
        if inst is None:
            return workflow_pb2.GetWorkflowResponse(instance_id=instance_id), False
        response = workflow_pb2.GetWorkflowResponse(
            instance_id=inst.instance_id,
            workflow_name=inst.name,
            runtime_status=RUNTIME_STATUS.get(inst.status, "UNKNOWN"),
        )
        created, updated = history_times(inst)
        response.created_at.CopyFrom(created)
        response.last_updated_at.CopyFrom(updated)
        properties = response.properties
        if inst.custom_status is not None:
            properties[CUSTOM_STATUS] = inst.custom_status
        if inst.input is not None and inst.status != p.PENDING:  # see history_times
            properties[INPUT] = inst.input
        if inst.failure:
            failure = p.TaskFailureDetails.FromString(inst.failure)
            properties[FAILURE_ERROR_TYPE] = failure.errorType
            properties[FAILURE_ERROR_MESSAGE] = failure.errorMessage
            if failure.HasField("stackTrace"):
                properties[FAILURE_STACK_TRACE] = failure.stackTrace.value
        elif inst.output is not None:
            properties[OUTPUT] = inst.output
        return response, True

    async def terminate(self, instance_id: str) -> None:
        validate_instance_id(instance_id, is_create=False)
        try:
            await self.engine.terminate(instance_id, None, True)
        except EngineError as e:
            if _is_not_found(e):
                raise instance_not_found(instance_id) from None
            raise terminate_failed(instance_id, e.message) from None

    async def raise_event(self, instance_id: str, event_name: str, data: bytes | None) -> None:
        validate_instance_id(instance_id, is_create=False)
        if not event_name:
            raise event_name_missing()
        payload = None
        if data is not None:
            try:
                payload = p.StringValue(value=_payload(data))
            except ValueError as e:
                raise raise_event_failed(instance_id, str(e)) from None
        try:
            self.engine.raise_event(instance_id, event_name, payload)
        except EngineError as e:
            raise raise_event_failed(instance_id, e.message) from None

    async def pause(self, instance_id: str) -> None:
        validate_instance_id(instance_id, is_create=False)
        try:
            await self.engine.suspend(instance_id, None)
        except EngineError as e:
            raise pause_failed(instance_id, e.message) from None

    async def resume(self, instance_id: str) -> None:
        validate_instance_id(instance_id, is_create=False)
        try:
            await self.engine.resume(instance_id, None)
        except EngineError as e:
            raise resume_failed(instance_id, e.message) from None

    async def purge(self, instance_id: str) -> None:
        validate_instance_id(instance_id, is_create=False)
        try:
            await self.engine.purge(instance_id, True, False)
        except NothingToPurge:
            raise instance_not_found(instance_id) from None
        except EngineError as e:
            raise purge_failed(instance_id, e.message) from None


def _trace_metadata(context: grpc.aio.ServicerContext) -> tuple[str | None, str | None]:
    found: dict[str, str] = {}
    for item in context.invocation_metadata() or ():
        if item.key in ("traceparent", "tracestate"):
            value = item.value
            found[item.key] = value if isinstance(value, str) else value.decode()
    return found.get("traceparent"), found.get("tracestate")


class DaprWorkflowService:
    """The Beta1 (and deprecated Alpha1) workflow methods of the Dapr service."""

    def __init__(self, api: WorkflowApi):
        self.api = api

    async def _call(self, context: grpc.aio.ServicerContext, operation: Awaitable[Any]) -> Any:
        try:
            return await operation
        except DaprApiError as e:
            await context.abort(e.grpc_code, e.message)

    async def StartWorkflowBeta1(self, request, context):
        traceparent, tracestate = _trace_metadata(context)
        trace = self.api.engine.tracing.incoming(traceparent, tracestate)
        instance_id = await self._call(
            context,
            self.api.start(
                request.instance_id,
                request.workflow_name,
                request.input,
                request.options,
                trace,
            ),
        )
        return workflow_pb2.StartWorkflowResponse(instance_id=instance_id)

    async def GetWorkflowBeta1(self, request, context):
        try:
            response, _ = self.api.get(request.instance_id)
        except DaprApiError as e:
            await context.abort(e.grpc_code, e.message)
        return response

    async def TerminateWorkflowBeta1(self, request, context):
        await self._call(context, self.api.terminate(request.instance_id))
        return empty_pb2.Empty()

    async def RaiseEventWorkflowBeta1(self, request, context):
        # Empty bytes are not on the wire: daprd sees no data at all (its HTTP API, reading the
        # body, passes an empty one on as "").
        await self._call(
            context,
            self.api.raise_event(
                request.instance_id, request.event_name, request.event_data or None
            ),
        )
        return empty_pb2.Empty()

    async def PauseWorkflowBeta1(self, request, context):
        await self._call(context, self.api.pause(request.instance_id))
        return empty_pb2.Empty()

    async def ResumeWorkflowBeta1(self, request, context):
        await self._call(context, self.api.resume(request.instance_id))
        return empty_pb2.Empty()

    async def PurgeWorkflowBeta1(self, request, context):
        await self._call(context, self.api.purge(request.instance_id))
        return empty_pb2.Empty()

    def method_handlers(self) -> dict[str, grpc.RpcMethodHandler]:
        methods: dict[str, tuple[Callable[..., Any], Any]] = {
            "StartWorkflow": (self.StartWorkflowBeta1, workflow_pb2.StartWorkflowRequest),
            "GetWorkflow": (self.GetWorkflowBeta1, workflow_pb2.GetWorkflowRequest),
            "TerminateWorkflow": (
                self.TerminateWorkflowBeta1,
                workflow_pb2.TerminateWorkflowRequest,
            ),
            "RaiseEventWorkflow": (
                self.RaiseEventWorkflowBeta1,
                workflow_pb2.RaiseEventWorkflowRequest,
            ),
            "PauseWorkflow": (self.PauseWorkflowBeta1, workflow_pb2.PauseWorkflowRequest),
            "ResumeWorkflow": (self.ResumeWorkflowBeta1, workflow_pb2.ResumeWorkflowRequest),
            "PurgeWorkflow": (self.PurgeWorkflowBeta1, workflow_pb2.PurgeWorkflowRequest),
        }
        handlers: dict[str, grpc.RpcMethodHandler] = {}
        for name, (behavior, request_type) in methods.items():
            handler = grpc.unary_unary_rpc_method_handler(
                behavior,
                request_deserializer=request_type.FromString,
                response_serializer=lambda message: message.SerializeToString(),
            )
            # daprd serves the deprecated Alpha1 names with the same handlers.
            handlers[f"{name}Beta1"] = handler
            handlers[f"{name}Alpha1"] = handler
        return handlers


def add_dapr_workflow_service(api: WorkflowApi, server: grpc.aio.Server) -> None:
    """Registers the workflow methods of `dapr.proto.runtime.v1.Dapr`.

    Every other method of that service is left to gRPC, which answers UNIMPLEMENTED.
    """
    handlers = DaprWorkflowService(api).method_handlers()
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
