"""Mappers over what the real engine returned (tests/golden)."""

from datetime import UTC, datetime

import grpc
import pytest
from google.protobuf import json_format

from engine_bridge import mappers
from engine_bridge.client import map_rpc_error, pb
from engine_bridge.errors import (
    EngineRejected,
    EngineUnavailable,
    InstanceNotFound,
    NotSupported,
)
from engine_bridge.types import EVENT_TYPES, trace_id_of


def history(record):
    events = [mappers.event(json_format.ParseDict(e, pb.HistoryEvent())) for e in record["history"]]
    mappers.pair_names(events)
    return events


def state(record):
    return mappers.instance_state(
        json_format.ParseDict(record["get_instance"], pb.GetInstanceResponse())
    )


def test_instance_state_of_a_completed_workflow(golden):
    st = state(golden("two_steps"))
    assert st.instance_id == "g-two-steps"
    assert st.name == "two_steps"
    assert st.status == "COMPLETED"
    assert st.created_at == datetime(2026, 11, 22, 3, 26, 24, 267019, tzinfo=UTC)
    assert st.last_updated_at == datetime(2026, 11, 22, 3, 26, 24, 301097, tzinfo=UTC)
    assert st.input == '{"id": "o-1001", "qty": 2, "amount": 59.9}'
    assert st.output.startswith('{"stock"')
    assert st.custom_status is None
    assert st.failure is None


def test_instance_state_of_a_failed_workflow_has_its_failure(golden):
    st = state(golden("activity_fails"))
    assert st.status == "FAILED"
    assert st.failure.type == "TaskFailedError"
    assert st.failure.message == "g-fails: Activity task #1 failed: no carrier serves this address"
    assert "record_golden.py" in st.failure.stack_trace


def test_instance_state_keeps_custom_status(golden):
    assert state(golden("custom_status")).custom_status == '{"step": "done"}'


def test_a_pending_instance_without_times_has_none_not_year_one():
    # daprd answers Go's zero time for the times of an instance whose first turn hasn't
    # committed (a scheduled start): shown as 0001-01-01, it sorts and reads as nonsense.
    response = pb.GetInstanceResponse(exists=True)
    st = response.workflowState
    st.instanceId, st.name = "later", "report"
    st.workflowStatus = pb.ORCHESTRATION_STATUS_PENDING
    st.createdTimestamp.FromDatetime(datetime(1, 1, 1, tzinfo=UTC))
    st.lastUpdatedTimestamp.seconds = -62135596800
    mapped = mappers.instance_state(response)
    assert (mapped.created_at, mapped.last_updated_at) == (None, None)
    assert mappers.timestamp(st.createdTimestamp) is None
    st.createdTimestamp.nanos = 1000  # a real time, a microsecond after it
    assert mappers.timestamp(st.createdTimestamp) == datetime(1, 1, 1, 0, 0, 0, 1, tzinfo=UTC)


def test_a_missing_instance_maps_to_none():
    assert mappers.instance_state(pb.GetInstanceResponse(exists=False)) is None


def test_events_keep_order_ids_types_and_pairing(golden):
    events = history(golden("with_retry"))
    summary = [f"{e.event_type}(eventId={e.event_id})" for e in events]
    assert summary == golden("with_retry")["summary"]
    started = events[1]
    assert started.execution_id == "aee4cb31-d34f-433a-92ab-046a382f0266"
    assert started.name == "with_retry"
    assert started.input == '{"id": "o-1001", "qty": 2, "amount": 59.9}'
    failed = events[4]
    assert failed.related_id == 1 and failed.name == "charge_card"
    assert failed.details["failureDetails"]["errorType"] == "ConnectionError"
    retry_timer = events[5]
    assert retry_timer.details["activityRetry"]["taskExecutionId"].startswith("e29e54ad")
    fired = events[7]
    assert fired.event_type == "timerFired" and fired.related_id == 2
    completed = events[16]
    assert completed.event_type == "taskCompleted" and completed.related_id == 5
    assert completed.name == "charge_card"
    assert events[-1].name == "COMPLETED"
    assert events[2].source_app_id == "example"
    assert events[2].details["router"] == {"sourceAppID": "example"}


def test_an_event_wait_timer_is_named_after_the_event(golden):
    events = history(golden("approval_timeout"))
    wait = events[2]
    assert wait.event_type == "timerCreated"
    assert wait.name == "approval"
    assert wait.details["fireAt"] == "9999-12-31T23:59:59.999999999Z"
    assert wait.timestamp.year == 2026


def test_children_carry_their_parent(golden):
    record = golden("fan_out_children")
    events = history(record)
    assert [e.name for e in events if e.event_type == "childWorkflowInstanceCreated"] == [
        "line_item",
        "line_item",
    ]
    assert events[2].details["instanceId"] == "g-fan-out:0001"
    assert [e.name for e in events if e.event_type == "childWorkflowInstanceCompleted"] == [
        "line_item",
        "line_item",
    ]
    child = [
        mappers.event(json_format.ParseDict(e, pb.HistoryEvent()))
        for e in record["children"]["g-fan-out:0001"]
    ]
    parent = child[1].parent
    assert parent.instance_id == "g-fan-out"
    assert parent.execution_id == "cb74a9a4-dfca-4320-8f7d-76b37489ec2d"
    assert parent.app_id == "example"
    assert parent.task_scheduled_id == 1
    assert parent.name == "fan_out"


def test_suspend_resume_terminate_and_raise_events(golden):
    types = [e.event_type for e in history(golden("suspend_event_resume"))]
    assert "executionSuspended" in types and "executionResumed" in types
    raised = [e for e in history(golden("suspend_event_resume")) if e.event_type == "eventRaised"]
    assert raised[0].name == "go" and raised[0].details["input"] == "42"
    term = history(golden("terminated"))
    assert term[4].event_type == "executionTerminated"
    assert term[-1].name == "TERMINATED"


def test_continue_as_new_history_is_the_last_run(golden):
    events = history(golden("continue_as_new"))
    assert events[1].execution_id == "1eef6b8f-18ed-407e-8ef3-6283478822e0"
    assert events[1].input == "2"


def test_big_strings_in_details_are_cut_and_listed():
    ev = pb.HistoryEvent(eventId=-1)
    ev.eventRaised.name = "big"
    ev.eventRaised.input.value = "x" * 1000
    out = mappers.event(ev, payload_limit=300)
    assert len(out.details["input"]) == 300
    assert out.details["_truncated"] == ["input"]


def test_nul_characters_are_replaced_in_payloads_failures_and_details():
    response = pb.GetInstanceResponse(exists=True)
    st = response.workflowState
    st.instanceId, st.name = "i", "w"
    st.input.value = "rec\x00ord"
    st.failureDetails.errorType = "ValueError"
    st.failureDetails.errorMessage = "bad record rec\x00ord"
    mapped = mappers.instance_state(response)
    assert mapped.input == "rec\ufffdord"
    assert mapped.failure.message == "bad record rec\ufffdord"
    ev = pb.HistoryEvent(eventId=-1)
    ev.taskFailed.taskScheduledId = 1
    ev.taskFailed.failureDetails.errorMessage = "bad record rec\x00ord"
    out = mappers.event(ev)
    assert out.details["failureDetails"]["errorMessage"] == "bad record rec\ufffdord"
    assert "\\u0000" not in out.details_json and "\\ufffd" not in out.details_json


def test_nul_characters_are_replaced_in_names_versions_and_descriptions():
    # Text columns too (the workflow's name, a timer's, a stall's description): PostgreSQL
    # refused the whole instance for a NUL in any of them.
    response = pb.GetInstanceResponse(exists=True)
    st = response.workflowState
    st.instanceId, st.name = "i", "w\x00f"
    st.version.value = "v\x001"
    mapped = mappers.instance_state(response)
    assert (mapped.name, mapped.version) == ("w\ufffdf", "v\ufffd1")
    timer = pb.HistoryEvent(eventId=1)
    timer.timerCreated.name = "t\x00"
    waiting = pb.HistoryEvent(eventId=2)
    waiting.timerCreated.externalEvent.name = "e\x00"
    stalled = pb.HistoryEvent(eventId=-1)
    stalled.executionStalled.description = "patch \x00 missing"
    started = pb.HistoryEvent(eventId=-1)
    started.workflowStarted.version.name = "v\x002"
    begun = pb.HistoryEvent(eventId=-1)
    begun.executionStarted.name = "w"
    begun.executionStarted.version.value = "v\x003"
    assert mappers.event(timer).name == "t\ufffd"
    assert mappers.event(waiting).name == "e\ufffd"
    assert mappers.event(stalled).stall_description == "patch \ufffd missing"
    assert mappers.event(started).version == "v\ufffd2"
    assert mappers.event(begun).version == "v\ufffd3"


def test_stall_and_version_are_read():
    ev = pb.HistoryEvent(eventId=-1)
    ev.executionStalled.reason = 1
    ev.executionStalled.description = "patch p1 missing"
    out = mappers.event(ev)
    assert out.stall_reason and out.stall_reason == out.name
    assert out.stall_description == "patch p1 missing"
    ws = pb.HistoryEvent(eventId=-1)
    ws.workflowStarted.version.name = "v2"
    assert mappers.event(ws).version == "v2"


def test_the_event_types_are_the_protocols():
    oneof = pb.HistoryEvent.DESCRIPTOR.oneofs_by_name["eventType"]
    assert (*(f.name for f in oneof.fields), "unknown") == EVENT_TYPES
    assert mappers.event(pb.HistoryEvent(eventId=1)).event_type == "unknown"


def test_trace_parent_to_trace_id():
    assert trace_id_of("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01") == (
        "4bf92f3577b34da6a3ce929d0e0e4736"
    )
    assert trace_id_of("") == ""
    assert trace_id_of("00-00000000000000000000000000000000-00f067aa0ba902b7-01") == ""
    assert trace_id_of("garbage") == ""


def test_execution_started_gives_the_traceparent_of_its_trace_context():
    traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    ev = pb.HistoryEvent(eventId=-1)
    ev.executionStarted.name = "two_steps"
    ev.executionStarted.parentTraceContext.traceParent = traceparent
    ev.executionStarted.parentTraceContext.spanID = "00f067aa0ba902b7"
    out = mappers.event(ev)
    assert out.trace_parent == traceparent
    assert trace_id_of(out.trace_parent) == "4bf92f3577b34da6a3ce929d0e0e4736"


def test_execution_started_without_a_trace_context_has_no_traceparent():
    ev = pb.HistoryEvent(eventId=-1)
    ev.executionStarted.name = "two_steps"
    assert mappers.event(ev).trace_parent == ""


class FakeRpcError(grpc.RpcError):
    def __init__(self, code, details):
        self._code, self._details = code, details

    def code(self):
        return self._code

    def details(self):
        return self._details


@pytest.mark.parametrize(
    ("code", "text", "kind"),
    [
        (grpc.StatusCode.UNAVAILABLE, "connection refused", EngineUnavailable),
        (grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded", EngineUnavailable),
        (grpc.StatusCode.NOT_FOUND, "instance 'x' not found", InstanceNotFound),
        (grpc.StatusCode.UNIMPLEMENTED, "Method not found!", NotSupported),
        (grpc.StatusCode.UNKNOWN, "unknown method ListInstanceIDs", NotSupported),
        (grpc.StatusCode.UNKNOWN, "no such instance exists", InstanceNotFound),
        (grpc.StatusCode.UNKNOWN, "state store is down", EngineRejected),
        (grpc.StatusCode.INVALID_ARGUMENT, "workflow is not terminal", EngineRejected),
        (grpc.StatusCode.UNAUTHENTICATED, "missing api token", EngineRejected),
        (grpc.StatusCode.ALREADY_EXISTS, "an active instance exists", EngineRejected),
    ],
)
def test_grpc_errors_map_to_a_few_exceptions(code, text, kind):
    err = map_rpc_error(FakeRpcError(code, text), "GetInstance")
    assert type(err) is kind
    assert err.message == text
    assert str(err) == f"GetInstance: {text} ({code.name})"
    assert err.transient is (kind is EngineUnavailable)


@pytest.mark.parametrize(
    ("text", "readable"),
    [
        ('"M\\u00fcller"', '"Müller"'),
        ('{"a": "\\u6ce8\\u6587"}', '{"a": "注文"}'),
        ('"\\ud83d\\ude00"', '"😀"'),  # a surrogate pair: one character
        ('"\\ud800"', '"\\ud800"'),  # a lone surrogate can't be written as itself
        ('"\\u0022\\u005c\\u000a"', '"\\u0022\\u005c\\u000a"'),  # quote, backslash, newline
        ('"\\\\u00fc"', '"\\\\u00fc"'),  # an escaped backslash, then "u00fc"
        ('"\\\\\\u00fc"', '"\\\\ü"'),
        ("not json \\u00fc", "not json \\u00fc"),
        ("", ""),
        (None, None),
    ],
)
def test_json_payloads_get_their_non_ascii_characters_as_themselves(text, readable):
    assert mappers.readable_json(text) == readable


def test_event_payloads_get_their_non_ascii_characters_as_themselves_before_being_cut():
    # The history's copies of inputs and results read as the instance's payloads: the history
    # table said "input {"name": "M\u00fcller"}" beside an instance input of "Müller".
    started = pb.HistoryEvent(eventId=-1)
    started.executionStarted.name = "w"
    started.executionStarted.input.value = '{"name": "M\\u00fcller"}'
    done = pb.HistoryEvent(eventId=-1)
    done.taskCompleted.taskScheduledId = 1
    done.taskCompleted.result.value = '"\\u6ce8\\u6587 \\ud83d\\ude00"'
    raised = pb.HistoryEvent(eventId=-1)
    raised.eventRaised.name = "big"
    raised.eventRaised.input.value = '"' + "\\u00fc" * 100 + '"'
    failed = pb.HistoryEvent(eventId=-1)
    failed.taskFailed.taskScheduledId = 1
    failed.taskFailed.failureDetails.errorMessage = "not JSON: M\\u00fcller"
    out = mappers.event(started)
    assert out.details["input"] == out.input == '{"name": "Müller"}'
    assert "Müller" in out.details_json
    assert mappers.event(done).details["result"] == '"注文 😀"'
    cut = mappers.event(raised, payload_limit=64).details
    assert cut["input"] == '"' + "ü" * 63 and cut["_truncated"] == ["input"]
    out = mappers.event(failed)
    assert out.details["failureDetails"]["errorMessage"] == "not JSON: M\\u00fcller"


def test_the_engines_token_is_blotted_out_of_its_error_texts():
    # The text of an engine's error reaches the engines page, the API and the log; an engine
    # (or a proxy in front of it) that quotes the request's headers back would show the token.
    import threading
    from concurrent import futures

    from engine_bridge.client import EngineClient
    from engine_bridge.config import EngineConfig

    def refuse(request, context):
        sent = dict(context.invocation_metadata()).get("dapr-api-token")
        context.abort(grpc.StatusCode.UNAUTHENTICATED, f"api token {sent!r} is not valid")

    handler = grpc.method_handlers_generic_handler(
        "TaskHubSidecarService",
        {name: grpc.unary_unary_rpc_method_handler(refuse) for name in ("Hello", "GetInstance")},
    )
    server = grpc.server(futures.ThreadPoolExecutor(2), handlers=[handler])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        config = EngineConfig("a", f"127.0.0.1:{port}", token="s3cret-token")
        with EngineClient(config, timeout=5) as client:
            with pytest.raises(EngineRejected) as refused:
                client.hello()
            answered = threading.Event()
            later: list = []
            client.get_instance_later("x", lambda a: (later.append(a), answered.set()))
            assert answered.wait(5)
    finally:
        server.stop(None)
    for err in (refused.value, later[0]):
        assert isinstance(err, EngineRejected)
        # After the setting to change, which names the variable, never its value.
        assert err.message == (
            "the engine refused the api token of CONSOLE_ENGINE_TOKEN_A: it must be the "
            "sidecar's DAPR_API_TOKEN; api token '***' is not valid"
        )
        assert "s3cret" not in str(err)
