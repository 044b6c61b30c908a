"""Trace context: the engine takes the caller's W3C traceparent (or starts a trace) and records it
where the console reads a workflow's trace id from."""

from __future__ import annotations

import re

from dapr.ext.workflow._durabletask.internal import protos as pb
from engine_support import of_kind, unique_id

TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}$")


def trace_id(traceparent: str) -> str:
    match = TRACEPARENT.match(traceparent)
    assert match, f"not a W3C traceparent: {traceparent!r}"
    return match.group(1)


def test_the_callers_trace_is_recorded_in_execution_started_and_task_scheduled(engine):
    instance_id = unique_id("traced")
    caller_trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    metadata = (("traceparent", f"00-{caller_trace}-00f067aa0ba902b7-01"), *engine.metadata)
    request = pb.CreateInstanceRequest(instanceId=instance_id, name="hello_world")
    request.input.value = '"t"'

    engine.call("StartInstance", request, metadata=metadata)
    engine.wait_done(instance_id)

    events = engine.history(instance_id)
    started = of_kind(events, "executionStarted")[0].executionStarted
    assert trace_id(started.parentTraceContext.traceParent) == caller_trace
    scheduled = of_kind(events, "taskScheduled")[0].taskScheduled
    assert trace_id(scheduled.parentTraceContext.traceParent) == caller_trace


def test_a_start_without_a_trace_gets_a_new_one(engine):
    first, second = unique_id("untraced"), unique_id("untraced")
    for instance_id in (first, second):
        engine.start("hello_world", instance_id, input='"t"')
        engine.wait_done(instance_id)

    traces = [
        trace_id(
            of_kind(engine.history(i), "executionStarted")[
                0
            ].executionStarted.parentTraceContext.traceParent
        )
        for i in (first, second)
    ]

    assert traces[0] != traces[1]


def test_each_generation_of_continue_as_new_starts_a_trace_of_its_own(engine):
    # daprd since dapr/dapr#10064: the generations of an eternal workflow made one trace that
    # grew without end.
    instance_id = unique_id("generations")
    caller_trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    metadata = (("traceparent", f"00-{caller_trace}-00f067aa0ba902b7-01"), *engine.metadata)
    request = pb.CreateInstanceRequest(instanceId=instance_id, name="monitor")
    request.input.value = "1"  # continues as new once

    engine.call("StartInstance", request, metadata=metadata)
    engine.wait_done(instance_id)

    events = engine.history(instance_id)
    started = of_kind(events, "executionStarted")[0].executionStarted
    generation_trace = trace_id(started.parentTraceContext.traceParent)
    assert generation_trace != caller_trace
    assert started.parentTraceContext.traceParent.endswith("-01")  # sampled
    assert not started.parentTraceContext.HasField("traceState")
