"""RerunWorkflowFromEvent: every rule of PROTOCOL.md, and that the new instance really reruns.

The source workflow `rerun_source` has one event of each rerunnable kind: taskScheduled 1 (echo of
the input), timerCreated 2, taskScheduled 3 (echo of the first result plus "!"), then
executionCompleted 4.
"""

from __future__ import annotations

import json

import grpc
import pytest
from dapr.ext.workflow._durabletask.internal import protos as pb
from engine_support import STATUS, kind, kinds, of_kind, rpc_error, unique_id
from google.protobuf import wrappers_pb2


def rerun(engine, source: str, event_id: int, **fields) -> pb.RerunWorkflowFromEventResponse:
    request = pb.RerunWorkflowFromEventRequest(sourceInstanceID=source, eventID=event_id)
    if "input" in fields:
        request.input.CopyFrom(wrappers_pb2.StringValue(value=fields.pop("input")))
        request.overwriteInput = True
    for name, value in fields.items():
        setattr(request, name, value)
    return engine.call("RerunWorkflowFromEvent", request)


@pytest.fixture
def source(engine) -> str:
    instance_id = unique_id("rerun-src")
    engine.start("rerun_source", instance_id, input='"a"')
    assert engine.wait_done(instance_id).workflowState.output.value == '"a!"'
    assert [(kind(e), e.eventId) for e in engine.history(instance_id) if e.eventId > 0] == [
        ("taskScheduled", 1),
        ("timerCreated", 2),
        ("taskScheduled", 3),
        ("executionCompleted", 4),
    ]
    return instance_id


def test_rerun_from_an_activity_with_new_input_reruns_from_that_activity(engine, source):
    new_id = unique_id("rerun-new")
    before = engine.history(source)

    response = rerun(engine, source, 3, newInstanceID=new_id, input='"X"')

    assert response.newInstanceID == new_id
    done = engine.wait_done(new_id)
    assert done.workflowState.workflowStatus == STATUS["COMPLETED"]
    assert done.workflowState.output.value == '"X"'
    events = engine.history(new_id)
    scheduled = of_kind(events, "taskScheduled")
    assert [(s.eventId, s.taskScheduled.input.value) for s in scheduled] == [(1, '"a"'), (3, '"X"')]
    # Event 1 and the timer were replayed from the source, not run again.
    assert [c.taskCompleted.taskScheduledId for c in of_kind(events, "taskCompleted")] == [1, 3]
    assert [f.timerFired.timerId for f in of_kind(events, "timerFired")] == [2]
    assert engine.history(source) == before, "the source must be left untouched"


def test_rerun_from_the_first_activity_runs_everything_after_it_again(engine, source):
    response = rerun(engine, source, 1, input='"b"')

    new_id = response.newInstanceID
    assert new_id and new_id != source, "the new id defaults to a random one"
    done = engine.wait_done(new_id)
    assert done.workflowState.output.value == '"b!"'
    events = engine.history(new_id)
    assert [s.taskScheduled.input.value for s in of_kind(events, "taskScheduled")] == [
        '"b"',
        '"b!"',
    ]
    assert kinds(events).count("executionCompleted") == 1


def test_rerun_from_a_timer_fires_it_again_and_finishes(engine, source):
    response = rerun(engine, source, 2, newInstanceID=unique_id("rerun-timer"))

    done = engine.wait_done(response.newInstanceID)

    assert done.workflowState.output.value == '"a!"'
    fired = of_kind(engine.history(response.newInstanceID), "timerFired")
    assert [f.timerFired.timerId for f in fired] == [2]


def test_rerun_from_a_timer_with_new_input_is_invalid_argument(engine, source):
    error = rpc_error(lambda: rerun(engine, source, 2, input='"x"'))

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_rerun_of_an_unknown_source_is_not_found(engine):
    error = rpc_error(lambda: rerun(engine, unique_id("nobody"), 1))

    assert error.code() == grpc.StatusCode.NOT_FOUND


def test_rerun_of_an_instance_that_is_not_terminal_is_invalid_argument(engine):
    instance_id = unique_id("rerun-running")
    engine.start("wait_forever", instance_id)

    error = rpc_error(lambda: rerun(engine, instance_id, 1))

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    engine.terminate(instance_id)


def test_rerun_of_a_child_workflow_is_invalid_argument(engine):
    parent = unique_id("rerun-parent")
    engine.start("fan_out", parent, input=json.dumps({"id": "o", "qtys": [1]}))
    engine.wait_done(parent)

    error = rpc_error(lambda: rerun(engine, f"{parent}:0001", 1))

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize("event_id", [4, 99], ids=["execution-completed", "no-such-event"])
def test_rerun_from_an_event_that_cannot_be_rerun_is_not_found(engine, source, event_id):
    error = rpc_error(lambda: rerun(engine, source, event_id))

    assert error.code() == grpc.StatusCode.NOT_FOUND


def test_rerun_into_the_source_id_is_refused(engine, source):
    before = engine.history(source)

    error = rpc_error(lambda: rerun(engine, source, 1, newInstanceID=source))

    assert error.code() in (grpc.StatusCode.ALREADY_EXISTS, grpc.StatusCode.INVALID_ARGUMENT)
    assert engine.history(source) == before


def test_rerun_into_an_existing_id_is_already_exists(engine, source):
    other = unique_id("rerun-taken")
    engine.start("hello_world", other, input='"x"')
    engine.wait_done(other)
    before = engine.history(other)

    error = rpc_error(lambda: rerun(engine, source, 1, newInstanceID=other))

    assert error.code() == grpc.StatusCode.ALREADY_EXISTS
    assert engine.history(other) == before


def test_a_new_child_id_for_an_activity_event_is_invalid_argument(engine, source):
    error = rpc_error(
        lambda: rerun(engine, source, 1, newChildWorkflowInstanceID=unique_id("child"))
    )

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_rerun_errors_are_daprds_codes_and_words(engine, source):
    running = unique_id("rerun-running")
    engine.start("wait_forever", running)
    parent = unique_id("rerun-parent")
    engine.start("fan_out", parent, input=json.dumps({"id": "o", "qtys": [1]}))
    engine.wait_done(parent)
    taken = unique_id("rerun-taken")
    engine.start("hello_world", taken, input='"x"')
    engine.wait_done(taken)
    nobody = unique_id("nobody")
    invalid, not_found = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND
    # daprd's words: its backend's, its workflow actor's and its fork's (status errors).
    cases = [
        (nobody, 1, {}, not_found, f"workflow instance does not exist with ID '{nobody}'"),
        (running, 1, {}, invalid, f"'{running}' is not in a terminal state"),
        (f"{parent}:0001", 1, {}, invalid, f"'{parent}:0001': cannot rerun from child-workflows"),
        (source, 99, {}, not_found, "does not have history event with ID '99'"),
        (
            source,
            4,
            {},
            not_found,
            "target event '*protos.HistoryEvent_ExecutionCompleted' with ID '4' is not an "
            "event that can be rerun",
        ),
        (
            source,
            2**32 - 1,  # read as -1 by daprd: the first event, the turn's workflowStarted
            {},
            not_found,
            "target event '*protos.HistoryEvent_WorkflowStarted' with ID '-1' is not an "
            "event that can be rerun",
        ),
        (source, 2, {"input": '"x"'}, invalid, "cannot write input to timer event '2'"),
        (
            source,
            2,
            {"newChildWorkflowInstanceID": "c"},
            invalid,
            "cannot set new child workflow instance ID on timer event '2'",
        ),
        (
            source,
            1,
            {"newChildWorkflowInstanceID": "c"},
            invalid,
            "cannot set new child workflow instance ID on activity event '1'",
        ),
        (
            source,
            1,
            {"newInstanceID": taken},
            grpc.StatusCode.ALREADY_EXISTS,
            f"workflow '{taken}' has already been created",
        ),
    ]
    for source_id, event_id, fields, code, details in cases:
        error = rpc_error(lambda: rerun(engine, source_id, event_id, **dict(fields)))  # noqa: B023

        assert (error.code(), error.details()) == (code, details)
    engine.terminate(running)


def test_rerun_from_a_child_workflow_event_can_name_the_child_and_replace_its_input(engine):
    parent = unique_id("rerun-fan")
    engine.start("fan_out", parent, input=json.dumps({"id": "o", "qtys": [1, 2]}))
    assert engine.wait_done(parent).workflowState.output.value == "3"
    new_id, child_id = unique_id("rerun-fan-new"), unique_id("rerun-child")

    rerun(
        engine,
        parent,
        1,
        newInstanceID=new_id,
        newChildWorkflowInstanceID=child_id,
        input=json.dumps({"qty": 5, "id": "o"}),
    )

    done = engine.wait_done(new_id)
    assert done.workflowState.output.value == "7"
    created = of_kind(engine.history(new_id), "childWorkflowInstanceCreated")
    assert [(c.eventId, c.childWorkflowInstanceCreated.instanceId) for c in created] == [
        (1, child_id),
        (2, f"{new_id}:0002"),
    ]
    child_start = of_kind(engine.history(child_id), "executionStarted")[0].executionStarted
    assert child_start.parentInstance.workflowInstance.instanceId == new_id
    assert engine.status(child_id) == "COMPLETED"


def test_rerun_from_a_child_workflow_event_defaults_the_child_id(engine):
    parent = unique_id("rerun-fan2")
    engine.start("fan_out", parent, input=json.dumps({"id": "o", "qtys": [1, 2]}))
    engine.wait_done(parent)
    new_id = unique_id("rerun-fan2-new")
    source_children = {c: engine.history(c) for c in (f"{parent}:0001", f"{parent}:0002")}

    rerun(engine, parent, 2, newInstanceID=new_id)

    assert engine.wait_done(new_id).workflowState.output.value == "3"
    # The rerun runs children of its own: the source's children are left as they were.
    for child_id, before in source_children.items():
        assert engine.history(child_id) == before
    created = of_kind(engine.history(new_id), "childWorkflowInstanceCreated")
    assert [c.childWorkflowInstanceCreated.instanceId for c in created] == [
        f"{new_id}:0001",
        f"{new_id}:0002",
    ]


def test_rerun_works_through_the_sdk_client(engine, client, source):
    new_id = client.rerun_workflow_from_event(source, 3, input="sdk")

    state = client.wait_for_workflow_completion(new_id, timeout_in_seconds=15)

    assert state.serialized_output == '"sdk"'
