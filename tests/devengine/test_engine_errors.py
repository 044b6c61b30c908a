"""Bad requests get the codes PROTOCOL.md lists and change nothing."""

from __future__ import annotations

import contextlib

import grpc
from dapr.ext.workflow._durabletask.internal import protos as pb
from engine_support import STATUS, rpc_error, unique_id
from google.protobuf import wrappers_pb2


def snapshot(engine, *instance_ids: str) -> dict:
    return {i: (engine.get(i), engine.history(i)) for i in instance_ids}


def test_bad_requests_are_refused_and_change_nothing(engine):
    finished, running = unique_id("bad-done"), unique_id("bad-running")
    engine.start("hello_world", finished, input='"x"')
    engine.wait_done(finished)
    engine.start("wait_forever", running)
    before = snapshot(engine, finished, running)

    def rerun(source, event_id, **fields):
        request = pb.RerunWorkflowFromEventRequest(
            sourceInstanceID=source, eventID=event_id, **fields
        )
        return engine.call("RerunWorkflowFromEvent", request)

    refused = {
        "start an active id": lambda: engine.start("hello_world", running),
        "rerun a running instance": lambda: rerun(running, 1),
        "rerun an event that is not rerunnable": lambda: rerun(finished, 2),
        "rerun an event that does not exist": lambda: rerun(finished, 77),
        "rerun into an existing id": lambda: rerun(finished, 1, newInstanceID=running),
        "rerun an activity event with a new child id": lambda: rerun(
            finished, 1, newChildWorkflowInstanceID="child"
        ),
        "purge with a filter": lambda: engine.call(
            "PurgeInstances", pb.PurgeInstancesRequest(purgeInstanceFilter=pb.PurgeInstanceFilter())
        ),
        "raise an event on an unknown instance": lambda: engine.raise_event(
            unique_id("nobody"), "go"
        ),
    }
    codes = {}
    for what, call in refused.items():
        codes[what] = rpc_error(call).code()

    assert codes == {
        "start an active id": grpc.StatusCode.ALREADY_EXISTS,
        "rerun a running instance": grpc.StatusCode.INVALID_ARGUMENT,
        "rerun an event that is not rerunnable": grpc.StatusCode.NOT_FOUND,
        "rerun an event that does not exist": grpc.StatusCode.NOT_FOUND,
        "rerun into an existing id": grpc.StatusCode.ALREADY_EXISTS,
        "rerun an activity event with a new child id": grpc.StatusCode.INVALID_ARGUMENT,
        "purge with a filter": codes["purge with a filter"],  # any error; the text is pinned below
        "raise an event on an unknown instance": grpc.StatusCode.UNKNOWN,
    }
    assert snapshot(engine, finished, running) == before
    engine.terminate(running)


def test_error_details_carry_a_readable_message(engine):
    unknown = unique_id("nobody")

    raise_error = rpc_error(lambda: engine.raise_event(unknown, "go"))
    purge_error = rpc_error(
        lambda: engine.call(
            "PurgeInstances", pb.PurgeInstancesRequest(purgeInstanceFilter=pb.PurgeInstanceFilter())
        )
    )

    assert "no such instance exists" in raise_error.details()
    assert "multi-instance purge is not implemented" in purge_error.details()


def test_suspending_or_terminating_an_unknown_instance_is_an_error(engine):
    unknown = unique_id("nobody")

    for call in (
        lambda: engine.suspend(unknown),
        lambda: engine.resume(unknown),
        lambda: engine.terminate(unknown),
    ):
        assert rpc_error(call).code() != grpc.StatusCode.OK

    assert engine.get(unknown).exists is False


def test_an_unknown_workflow_name_fails_the_instance_in_the_sdk(engine):
    # daprd accepts any name: the worker that receives the turn fails it.
    instance_id = unique_id("no-such-workflow")
    engine.start("no_such_workflow", instance_id)

    done = engine.wait_done(instance_id)

    assert done.workflowState.workflowStatus == STATUS["FAILED"]
    assert "no_such_workflow" in done.workflowState.failureDetails.errorMessage


def test_the_engine_keeps_serving_after_malformed_requests(engine):
    empty_id_calls = [
        lambda: engine.call("GetInstance", pb.GetInstanceRequest()),
        lambda: engine.call("GetInstanceHistory", pb.GetInstanceHistoryRequest()),
        lambda: engine.call("RaiseEvent", pb.RaiseEventRequest()),
        lambda: engine.call("TerminateInstance", pb.TerminateRequest()),
        lambda: engine.call("SuspendInstance", pb.SuspendRequest()),
        lambda: engine.call("ResumeInstance", pb.ResumeRequest()),
        lambda: engine.call("PurgeInstances", pb.PurgeInstancesRequest()),
        lambda: engine.call("RerunWorkflowFromEvent", pb.RerunWorkflowFromEventRequest()),
        lambda: engine.call(
            "CompleteActivityTask", pb.ActivityResponse(instanceId="x", completionToken="bogus")
        ),
        lambda: engine.call(
            "CompleteOrchestratorTask",
            pb.WorkflowResponse(instanceId="x", completionToken="bogus"),
        ),
        lambda: engine.call(
            "ListInstanceIDs", pb.ListInstanceIDsRequest(continuationToken="not-a-token")
        ),
    ]
    for call in empty_id_calls:
        try:
            call()
        except grpc.RpcError as error:
            # An error is fine; a crash of the handler (UNKNOWN with a Python traceback) is not.
            assert "Traceback" not in (error.details() or "")
            assert error.code() != grpc.StatusCode.UNAVAILABLE

    engine.hello()
    instance_id = unique_id("still-serving")
    engine.start("hello_world", instance_id, input='"ok"')
    assert engine.wait_done(instance_id).workflowState.output.value == '"hello ok"'


def test_start_with_an_empty_input_wrapper_is_the_same_as_no_input(engine):
    instance_id = unique_id("empty-input")
    request = pb.CreateInstanceRequest(
        instanceId=instance_id, name="wait_forever", input=wrappers_pb2.StringValue(value="")
    )

    engine.call("StartInstance", request)

    assert engine.status(instance_id) == "RUNNING"
    engine.terminate(instance_id)


def test_management_calls_on_a_finished_instance_change_nothing(engine):
    instance_id = unique_id("finished")
    engine.start("hello_world", instance_id, input='"x"')
    engine.wait_done(instance_id)
    before = snapshot(engine, instance_id)

    for call in (
        lambda: engine.suspend(instance_id, reason="late"),
        lambda: engine.resume(instance_id, reason="late"),
        lambda: engine.terminate(instance_id, output='"late"'),
        lambda: engine.raise_event(instance_id, "go", "1"),
    ):
        with contextlib.suppress(grpc.RpcError):
            call()

    assert snapshot(engine, instance_id) == before
    assert engine.status(instance_id) == "COMPLETED"
