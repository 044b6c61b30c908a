"""Trace context and spans, shaped like the ones daprd's workflow engine emits.

The W3C trace context always flows (it is workflow data: executionStarted.parentTraceContext,
taskScheduled.parentTraceContext and ActivityRequest.parentTraceContext carry it). Spans are only
recorded and exported when OTEL_EXPORTER_OTLP_ENDPOINT is set, under the service name `devengine`.

Spans that outlive one call (the workflow's, an activity's, a timer's) are not held open in memory:
their span ids are chosen up front and stored with the workflow (executionStarted.workflowSpanID,
ActivityRequest.parentTraceContext), and the span is written once it ends, with its real start time.
That way an engine restart in between loses nothing, and children can point at a parent span that
has not been exported yet.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
)

from devengine import protos as p

log = logging.getLogger("devengine")


def _parse(traceparent: str | None) -> tuple[int, int, int] | None:
    """(trace id, span id, flags) of a W3C traceparent, or None when it is not one."""
    parts = (traceparent or "").split("-")
    if len(parts) != 4 or len(parts[1]) != 32 or len(parts[2]) != 16 or len(parts[3]) != 2:
        return None
    try:
        trace_id, span_id, flags = int(parts[1], 16), int(parts[2], 16), int(parts[3], 16)
    except ValueError:
        return None
    if trace_id == 0 or span_id == 0:
        return None
    return trace_id, span_id, flags


def _context(trace_id: int, span_id: int, flags: int = 1, state: str = "") -> p.TraceContext:
    ctx = p.TraceContext(
        traceParent=f"00-{trace_id:032x}-{span_id:016x}-{flags:02x}", spanID=f"{span_id:016x}"
    )
    if state:
        ctx.traceState.value = state
    return ctx


class _PresetIds(RandomIdGenerator):
    """Random ids, except a span id chosen in advance, handed out once."""

    def __init__(self) -> None:
        self.next_span_id: int | None = None

    def generate_span_id(self) -> int:
        if self.next_span_id is not None:
            span_id, self.next_span_id = self.next_span_id, None
            return span_id
        return super().generate_span_id()


class Tracing:
    def __init__(self, endpoint: str | None = None):
        endpoint = (
            endpoint if endpoint is not None else os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        )
        self.enabled = bool(endpoint)
        self._provider = None
        self._ids: _PresetIds | None = None
        self._tracer: trace.Tracer | None = None
        if self.enabled:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor

            self._ids = _PresetIds()
            self._provider = TracerProvider(
                resource=Resource.create({"service.name": "devengine"}),
                id_generator=self._ids,
            )
            # The endpoint is the one the OpenTelemetry variables name (plaintext is the norm
            # for a local collector; OTEL_EXPORTER_OTLP_INSECURE is honoured by the exporter).
            insecure = not str(endpoint).startswith("https://")
            self._provider.add_span_processor(
                BatchSpanProcessor(
                    OTLPSpanExporter(endpoint=endpoint, insecure=insecure),
                    schedule_delay_millis=500,
                )
            )
            self._tracer = self._provider.get_tracer("devengine")
            log.info("exporting traces over OTLP to %s", endpoint)

    def shutdown(self) -> None:
        if self._provider is not None:
            self._provider.shutdown()

    # -- context ---------------------------------------------------------------------------

    def incoming(self, traceparent: str | None, tracestate: str | None) -> p.TraceContext:
        """The caller's context: the current server span, else its traceparent, else a new trace."""
        current = trace.get_current_span().get_span_context()
        if current.is_valid:
            return _context(current.trace_id, current.span_id, int(current.trace_flags))
        parsed = _parse(traceparent)
        if parsed is None:
            return self.new_root()
        return _context(*parsed, state=tracestate or "")

    @staticmethod
    def new_root() -> p.TraceContext:
        """A new trace, sampled, with no trace state of a caller."""
        return _context(
            int.from_bytes(os.urandom(16), "big") or 1, int.from_bytes(os.urandom(8), "big") or 1
        )

    @staticmethod
    def new_span_id() -> str:
        return f"{int.from_bytes(os.urandom(8), 'big') or 1:016x}"

    @staticmethod
    def child(parent: p.TraceContext, span_id: str) -> p.TraceContext:
        """The context of a span with this id under `parent` (same trace)."""
        parsed = _parse(parent.traceParent)
        if parsed is None:
            return p.TraceContext()
        trace_id, _, flags = parsed
        return _context(trace_id, int(span_id, 16), flags, parent.traceState.value)

    # -- spans -----------------------------------------------------------------------------

    def _emit(
        self,
        name: str,
        parent: p.TraceContext | None,
        span_id: str | None,
        start_ns: int,
        end_ns: int,
        attributes: dict[str, str | int],
        kind: SpanKind = SpanKind.INTERNAL,
        error: str | None = None,
        events: Iterable[tuple[str, int, dict[str, str]]] = (),
    ) -> None:
        if self._tracer is None or self._ids is None:
            return
        ctx = None
        parsed = _parse(parent.traceParent) if parent is not None else None
        if parsed is not None:
            span_context = SpanContext(
                trace_id=parsed[0],
                span_id=parsed[1],
                is_remote=True,
                trace_flags=TraceFlags(parsed[2] | TraceFlags.SAMPLED),
                trace_state=TraceState(),
            )
            ctx = trace.set_span_in_context(NonRecordingSpan(span_context))
        if span_id:
            self._ids.next_span_id = int(span_id, 16)
        span = self._tracer.start_span(
            name, context=ctx, kind=kind, attributes=attributes, start_time=start_ns
        )
        self._ids.next_span_id = None
        for event_name, at_ns, event_attributes in events:
            span.add_event(event_name, event_attributes, timestamp=at_ns)
        if error:
            span.set_status(Status(StatusCode.ERROR, error))
        span.end(end_time=max(end_ns, start_ns))

    def create_orchestration(
        self, name: str, instance_id: str, parent: p.TraceContext, at_ns: int
    ) -> p.TraceContext:
        """The `create_orchestration||name` span; its context becomes the workflow's parent."""
        span_id = self.new_span_id()
        self._emit(
            f"create_orchestration||{name}",
            parent,
            span_id,
            at_ns,
            at_ns,
            {
                "durabletask.type": "orchestration",
                "durabletask.task.name": name,
                "durabletask.task.instance_id": instance_id,
            },
            kind=SpanKind.CLIENT,
        )
        return self.child(parent, span_id)

    def orchestration(
        self,
        start: p.HistoryEvent,
        status: str,
        start_ns: int,
        end_ns: int,
        history: Iterable[p.HistoryEvent],
        failure: str | None = None,
    ) -> None:
        """The `orchestration||name` span of one run, written when the run ends."""
        if not self.enabled:
            return
        started = start.executionStarted
        events = []
        for event in history:
            kind = event.WhichOneof("eventType")
            at = event.timestamp.seconds * 1_000_000_000 + event.timestamp.nanos
            if kind == "eventRaised":
                events.append(("orchestration_event_raised", at, {"name": event.eventRaised.name}))
            elif kind in ("executionSuspended", "executionResumed", "executionTerminated"):
                events.append((kind, at, {}))
        self._emit(
            f"orchestration||{started.name}",
            started.parentTraceContext if started.HasField("parentTraceContext") else None,
            started.workflowSpanID.value or None,
            start_ns,
            end_ns,
            {
                "durabletask.type": "orchestration",
                "durabletask.task.name": started.name,
                "durabletask.task.instance_id": started.workflowInstance.instanceId,
                "durabletask.runtime_status": status,
            },
            kind=SpanKind.SERVER,
            error=failure,
            events=events,
        )

    def activity(
        self,
        request: p.pb.ActivityRequest,
        workflow_span_id: str,
        start_ns: int,
        end_ns: int,
        failure: str | None = None,
    ) -> None:
        """The `activity||name` span, from scheduling to result, under the workflow's span.

        Its id was chosen at scheduling: it is the span id of ActivityRequest.parentTraceContext,
        so the SDK's own activity span is its child.
        """
        if not self.enabled or not request.HasField("parentTraceContext"):
            return
        own = request.parentTraceContext
        parent = self.child(own, workflow_span_id) if workflow_span_id else None
        self._emit(
            f"activity||{request.name}",
            parent,
            own.spanID or None,
            start_ns,
            end_ns,
            {
                "durabletask.type": "activity",
                "durabletask.task.name": request.name,
                "durabletask.task.instance_id": request.workflowInstance.instanceId,
                "durabletask.task.task_id": request.taskId,
            },
            kind=SpanKind.CLIENT,
            error=failure,
        )

    def timer(
        self,
        workflow_parent: p.TraceContext | None,
        name: str,
        instance_id: str,
        timer_id: int,
        start_ns: int,
        end_ns: int,
    ) -> None:
        if not self.enabled:
            return
        self._emit(
            "timer",
            workflow_parent,
            None,
            start_ns,
            end_ns,
            {
                "durabletask.type": "timer",
                "durabletask.task.name": name,
                "durabletask.task.instance_id": instance_id,
                "durabletask.task.task_id": timer_id,
            },
        )


def server_span(tracing: Tracing, method: str, traceparent: str | None):
    """A SERVER span for one gRPC call, current for the handler (a context manager)."""
    if tracing._tracer is None:
        return _Null()
    parsed = _parse(traceparent)
    ctx = None
    if parsed is not None:
        ctx = trace.set_span_in_context(
            NonRecordingSpan(
                SpanContext(parsed[0], parsed[1], True, TraceFlags(parsed[2]), TraceState())
            )
        )
    return tracing._tracer.start_as_current_span(
        method, context=ctx if ctx is not None else otel_context.Context(), kind=SpanKind.SERVER
    )


class _Null:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False
