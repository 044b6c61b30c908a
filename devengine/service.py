"""The gRPC surface: `TaskHubSidecarService` served over the engine, and the api-token check."""

from __future__ import annotations

import hmac
import logging
from collections.abc import AsyncIterator

import grpc

from devengine import protos as p
from devengine.engine import Engine, EngineError
from devengine.telemetry import Tracing, server_span

log = logging.getLogger("devengine")


def _metadata(context: grpc.aio.ServicerContext, key: str) -> str | None:
    for item in context.invocation_metadata() or ():
        if item.key == key:
            return item.value if isinstance(item.value, str) else item.value.decode()
    return None


def _optional(message, field: str):
    return getattr(message, field) if message.HasField(field) else None


class TaskHubService(p.grpc_stubs.TaskHubSidecarServiceServicer):
    """Thin: unpacks requests, calls the engine, turns EngineError into a gRPC status."""

    def __init__(self, engine: Engine):
        self.engine = engine

    async def _fail(self, context: grpc.aio.ServicerContext, error: EngineError):
        await context.abort(error.code, error.message)

    async def Hello(self, request, context):
        return p.Empty()

    async def StartInstance(self, request, context):
        trace = self.engine.tracing.incoming(
            _metadata(context, "traceparent"), _metadata(context, "tracestate")
        )
        try:
            instance_id = await self.engine.start_instance(request, trace)
        except EngineError as e:
            await self._fail(context, e)
        return p.pb.CreateInstanceResponse(instanceId=instance_id)

    async def GetInstance(self, request, context):
        return self.engine.get_instance(request.instanceId, request.getInputsAndOutputs)

    async def WaitForInstanceStart(self, request, context):
        await self._wait(request.instanceId, lambda r: r.status != p.PENDING)
        return self.engine.get_instance(request.instanceId, request.getInputsAndOutputs)

    async def WaitForInstanceCompletion(self, request, context):
        await self._wait(request.instanceId, lambda r: r.status in p.TERMINAL_STATUSES)
        return self.engine.get_instance(request.instanceId, request.getInputsAndOutputs)

    async def _wait(self, instance_id: str, done) -> None:
        """Until ``done(instance)``. Like daprd's watch of the workflow actor, an id that doesn't
        exist yet is waited for (until the caller's deadline, or until it is started and done);
        one purged during the wait is answered at once (``exists=false``)."""
        existed = self.engine.store.get_instance(instance_id) is not None

        def reached(inst) -> bool:
            nonlocal existed
            if inst is None:
                return existed
            existed = True
            return done(inst)

        await self.engine.wait_for(instance_id, reached)

    async def RaiseEvent(self, request, context):
        try:
            self.engine.raise_event(request.instanceId, request.name, _optional(request, "input"))
        except EngineError as e:
            await self._fail(context, e)
        return p.pb.RaiseEventResponse()

    async def TerminateInstance(self, request, context):
        try:
            await self.engine.terminate(
                request.instanceId, _optional(request, "output"), request.recursive
            )
        except EngineError as e:
            await self._fail(context, e)
        return p.pb.TerminateResponse()

    async def SuspendInstance(self, request, context):
        try:
            await self.engine.suspend(request.instanceId, _optional(request, "reason"))
        except EngineError as e:
            await self._fail(context, e)
        return p.pb.SuspendResponse()

    async def ResumeInstance(self, request, context):
        try:
            await self.engine.resume(request.instanceId, _optional(request, "reason"))
        except EngineError as e:
            await self._fail(context, e)
        return p.pb.ResumeResponse()

    async def PurgeInstances(self, request, context):
        if request.WhichOneof("request") != "instanceId":
            await context.abort(grpc.StatusCode.UNKNOWN, "multi-instance purge is not implemented")
        try:
            count = await self.engine.purge(
                request.instanceId,
                request.recursive,
                request.force if request.HasField("force") else False,
            )
        except EngineError as e:
            await self._fail(context, e)
        response = p.pb.PurgeInstancesResponse(deletedInstanceCount=count)
        response.isComplete.value = True
        return response

    async def GetWorkItems(self, request, context) -> AsyncIterator:
        stream = self.engine.open_stream()
        log.info("worker connected (%d streams)", len(self.engine.streams))
        try:
            while True:
                yield await stream.queue.get()
        finally:
            self.engine.close_stream(stream)
            log.info("worker disconnected (%d streams)", len(self.engine.streams))

    async def CompleteActivityTask(self, request, context):
        try:
            self.engine.complete_activity(request)
        except EngineError as e:
            await self._fail(context, e)
        return p.pb.CompleteTaskResponse()

    async def CompleteOrchestratorTask(self, request, context):
        self.engine.complete_turn(request)
        return p.pb.CompleteTaskResponse()

    CompleteWorkflowTask = CompleteOrchestratorTask

    async def RerunWorkflowFromEvent(self, request, context):
        try:
            new_id = await self.engine.rerun(request)
        except EngineError as e:
            await self._fail(context, e)
        return p.pb.RerunWorkflowFromEventResponse(newInstanceID=new_id)

    async def ListInstanceIDs(self, request, context):
        try:
            ids, token = self.engine.list_ids(request.pageSize, request.continuationToken)
        except EngineError as e:
            await self._fail(context, e)
        response = p.pb.ListInstanceIDsResponse(instanceIds=ids)
        if token is not None:
            response.continuationToken = token
        return response

    async def GetInstanceHistory(self, request, context):
        try:
            blobs = self.engine.history(request.instanceId)
        except EngineError as e:
            await self._fail(context, e)
        response = p.pb.GetInstanceHistoryResponse()
        for blob in blobs:
            response.events.add().MergeFromString(blob)
        return response


class ApiTokenInterceptor(grpc.aio.ServerInterceptor):
    """Like daprd with DAPR_API_TOKEN: every call must carry `dapr-api-token`."""

    def __init__(self, token: str):
        self.token = token.encode()

    async def intercept_service(self, continuation, handler_call_details):
        supplied = None
        for key, value in handler_call_details.invocation_metadata or ():
            if key == "dapr-api-token":
                supplied = value.encode() if isinstance(value, str) else value
        handler = await continuation(handler_call_details)
        if supplied is not None and hmac.compare_digest(supplied, self.token):
            return handler
        message = (
            "missing api token in request metadata"
            if supplied is None
            else "authentication error: api token mismatch"
        )

        async def deny_unary(request, context):
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

        async def deny_stream(request, context):
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)
            yield  # pragma: no cover - makes this an async generator

        if handler is None:
            return None
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                deny_stream,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return grpc.unary_unary_rpc_method_handler(
            deny_unary,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


class TracingInterceptor(grpc.aio.ServerInterceptor):
    """A SERVER span per unary gRPC call, named after the method, in the caller's trace.

    The work-item stream is left out: it lives as long as the worker is connected.
    """

    def __init__(self, tracing: Tracing):
        self.tracing = tracing

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None or not handler.unary_unary or not self.tracing.enabled:
            return handler
        method = handler_call_details.method
        traceparent = None
        for key, value in handler_call_details.invocation_metadata or ():
            if key == "traceparent":
                traceparent = value if isinstance(value, str) else value.decode()
        behavior = handler.unary_unary

        async def traced(request, context):
            with server_span(self.tracing, method, traceparent):
                return await behavior(request, context)

        return grpc.unary_unary_rpc_method_handler(
            traced,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
