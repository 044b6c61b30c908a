"""Management RPCs: start, get, wait, raise, suspend/resume, terminate, purge, list, history."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from dapr.ext.workflow._durabletask.internal import protos as pb
from engine_support import (
    STATUS,
    far_future,
    has_kind,
    is_sentinel,
    kinds,
    of_kind,
    rpc_error,
    unique_id,
    wait_for,
)

# --- Hello and StartInstance ------------------------------------------------------------------


def test_hello_answers(engine):
    engine.hello()


def test_start_instance_runs_the_workflow_to_completion(engine):
    instance_id = unique_id("start")

    response = engine.start("hello_world", instance_id, input='"ada"')

    assert response.instanceId == instance_id
    done = engine.wait_done(instance_id)
    assert done.exists
    assert done.workflowState.workflowStatus == STATUS["COMPLETED"]
    assert done.workflowState.output.value == '"hello ada"'


def test_start_returns_only_after_the_first_turn_has_committed(engine):
    instance_id = unique_id("first-turn")

    engine.start("wait_forever", instance_id)

    # No polling: the first turn must already be in the store when StartInstance returns.
    assert engine.status(instance_id) == "RUNNING"
    events = engine.history(instance_id)
    assert kinds(events) == ["workflowStarted", "executionStarted", "timerCreated"]
    engine.terminate(instance_id)


def test_a_scheduled_start_stays_pending_until_its_time(engine):
    instance_id = unique_id("scheduled")
    start_at = datetime.now(UTC) + timedelta(seconds=2)

    began = time.monotonic()
    engine.start("hello_world", instance_id, input='"later"', start_at=start_at)

    assert time.monotonic() - began < 1.5, "a scheduled start must not wait for its time"
    assert engine.status(instance_id) == "PENDING"
    state = engine.get(instance_id).workflowState
    assert state.name == "hello_world"
    # daprd reads times and input from the committed history, empty until the first turn:
    # Go's zero time (0001-01-01) for both times, no input.
    for pending_time in (state.createdTimestamp, state.lastUpdatedTimestamp):
        assert pending_time.ToJsonString() == "0001-01-01T00:00:00Z"
    assert not state.HasField("input")

    started = engine.call(
        "WaitForInstanceStart", pb.GetInstanceRequest(instanceId=instance_id), timeout=10
    )
    assert started.workflowState.workflowStatus != STATUS["PENDING"]
    assert datetime.now(UTC) >= start_at - timedelta(milliseconds=50)

    done = engine.wait_done(instance_id)
    assert done.workflowState.output.value == '"hello later"'
    events = engine.history(instance_id)
    first_turn = events[0].timestamp.ToDatetime(tzinfo=UTC)
    assert first_turn >= start_at - timedelta(milliseconds=1), "the first turn ran early"
    execution_started = of_kind(events, "executionStarted")[0]
    recorded = execution_started.executionStarted.scheduledStartTimestamp.ToDatetime(tzinfo=UTC)
    assert abs(recorded - start_at) < timedelta(milliseconds=1)


@pytest.mark.parametrize("state", ["RUNNING", "SUSPENDED", "PENDING"])
def test_starting_an_active_instance_id_again_is_already_exists_and_changes_nothing(engine, state):
    instance_id = unique_id("active")
    engine.start("wait_forever", instance_id, start_at=far_future() if state == "PENDING" else None)
    if state == "SUSPENDED":
        engine.suspend(instance_id)
    assert engine.status(instance_id) == state
    before = (engine.get(instance_id), engine.history(instance_id))

    error = rpc_error(lambda: engine.start("hello_world", instance_id, input='"x"'))

    assert error.code() == grpc.StatusCode.ALREADY_EXISTS
    assert (engine.get(instance_id), engine.history(instance_id)) == before
    engine.terminate(instance_id)


def test_starting_a_finished_instance_id_again_starts_a_new_run(engine):
    instance_id = unique_id("restart")
    engine.start("hello_world", instance_id, input='"one"')
    engine.wait_done(instance_id)
    first_run = of_kind(engine.history(instance_id), "executionStarted")[0]

    engine.start("hello_world", instance_id, input='"two"')
    done = engine.wait_done(instance_id)

    assert done.workflowState.output.value == '"hello two"'
    events = engine.history(instance_id)
    starts = of_kind(events, "executionStarted")
    assert len(starts) == 1, "the old run's history must be replaced, not appended to"
    assert starts[0].executionStarted.input.value == '"two"'
    old_execution = first_run.executionStarted.workflowInstance.executionId
    new_execution = starts[0].executionStarted.workflowInstance.executionId
    assert new_execution and new_execution != old_execution
    assert len(of_kind(events, "executionCompleted")) == 1


def test_a_start_that_enforces_a_unique_id_refuses_a_finished_instance_too(engine):
    instance_id = unique_id("unique")
    engine.start("hello_world", instance_id, input='"one"')
    engine.wait_done(instance_id)
    before = engine.history(instance_id)
    request = pb.CreateInstanceRequest(
        instanceId=instance_id, name="hello_world", enforceUniqueInstanceId=True
    )

    error = rpc_error(lambda: engine.call("StartInstance", request))

    assert error.code() == grpc.StatusCode.ALREADY_EXISTS
    assert error.details() == (
        f"a workflow with ID '{instance_id}' already exists and the create enforces "
        "instance ID uniqueness"
    )
    assert engine.history(instance_id) == before
    # Without the flag, a finished instance is started again; a new id with it starts.
    fresh = unique_id("unique-new")
    request.instanceId = fresh
    assert engine.call("StartInstance", request).instanceId == fresh
    assert engine.wait_done(fresh).workflowState.workflowStatus == STATUS["COMPLETED"]


# --- GetInstance and waits ---------------------------------------------------------------------


def test_get_instance_of_an_unknown_id_answers_exists_false(engine, client):
    response = engine.get(unique_id("nobody"))

    assert response.exists is False
    assert client.get_workflow_state(unique_id("nobody")) is None


def test_get_instance_returns_payloads_only_when_asked(engine):
    instance_id = unique_id("payloads")
    order = json.dumps({"id": "o-1", "qty": 1, "amount": 2.5})
    engine.start("status_steps", instance_id, input=order)
    engine.wait_done(instance_id)

    full = engine.get(instance_id, payloads=True).workflowState
    bare = engine.get(instance_id, payloads=False).workflowState

    assert full.input.value == order
    assert full.output.value == '"ok"'
    assert full.customStatus.value == '{"step": "done"}'
    for field in ("input", "output", "customStatus", "failureDetails"):
        assert not bare.HasField(field), f"{field} returned without getInputsAndOutputs"
    for state in (full, bare):
        assert state.instanceId == instance_id
        assert state.name == "status_steps"
        assert state.workflowStatus == STATUS["COMPLETED"]
        assert state.createdTimestamp.ToDatetime() <= state.lastUpdatedTimestamp.ToDatetime()


def test_get_instance_reports_failure_details_of_a_failed_workflow(engine):
    instance_id = unique_id("failed")
    engine.start("fails", instance_id, input=json.dumps({"id": "o-9", "address": "nowhere"}))

    done = engine.wait_done(instance_id)

    assert done.workflowState.workflowStatus == STATUS["FAILED"]
    details = done.workflowState.failureDetails
    assert details.errorType == "TaskFailedError"
    assert "no carrier serves this address" in details.errorMessage


def test_get_instance_of_a_child_names_its_parent(engine):
    # daprd answers the parent's id in the state of a child workflow (from its executionStarted),
    # with or without payloads; a top-level instance has none.
    parent = unique_id("named-parent")
    engine.start("fan_out", parent, input=json.dumps({"id": "o-3", "qtys": [1]}))
    engine.wait_done(parent)

    for payloads in (True, False):
        child = engine.get(f"{parent}:0001", payloads=payloads).workflowState
        assert child.parentInstanceId.value == parent
        assert not engine.get(parent, payloads=payloads).workflowState.HasField("parentInstanceId")


def test_wait_for_completion_gives_up_at_its_deadline_on_a_running_instance(engine):
    instance_id = unique_id("deadline")
    engine.start("wait_forever", instance_id)

    error = rpc_error(lambda: engine.wait_done(instance_id, timeout=0.5))

    assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert engine.status(instance_id) == "RUNNING"
    engine.terminate(instance_id)


def test_wait_for_start_returns_at_once_for_a_running_instance(engine):
    instance_id = unique_id("started")
    engine.start("wait_forever", instance_id)

    response = engine.call(
        "WaitForInstanceStart", pb.GetInstanceRequest(instanceId=instance_id), timeout=2
    )

    assert response.workflowState.workflowStatus == STATUS["RUNNING"]
    engine.terminate(instance_id)


def test_a_wait_for_an_unknown_id_waits_for_it_to_be_started_as_daprd_does(engine):
    # daprd watches the workflow actor: no answer before the id exists (no early exists=false).
    instance_id = unique_id("not-yet")
    for method in ("WaitForInstanceStart", "WaitForInstanceCompletion"):
        request = pb.GetInstanceRequest(instanceId=instance_id)
        error = rpc_error(lambda m=method, r=request: engine.call(m, r, timeout=0.5))
        assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED

    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(
            engine.call,
            "WaitForInstanceCompletion",
            pb.GetInstanceRequest(instanceId=instance_id, getInputsAndOutputs=True),
            timeout=20,
        )
        time.sleep(0.3)
        engine.start("hello_world", instance_id, input='"late"')
        done = waiting.result()
    assert done.exists and done.workflowState.output.value == '"hello late"'


def test_a_wait_on_an_instance_purged_meanwhile_answers_that_it_is_gone(engine):
    instance_id = unique_id("purged-while-waited")
    engine.start("wait_forever", instance_id)
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(
            engine.call, "WaitForInstanceCompletion", pb.GetInstanceRequest(instanceId=instance_id),
            timeout=20,
        )  # fmt: skip
        time.sleep(0.3)
        engine.purge(instance_id, force=True)
        assert waiting.result().exists is False


# --- RaiseEvent --------------------------------------------------------------------------------


def test_raise_event_completes_a_waiting_workflow_and_names_are_case_insensitive(engine):
    instance_id = unique_id("raise")
    engine.start("wait_forever", instance_id)

    engine.raise_event(instance_id, "GO", '{"n": 1}')

    done = engine.wait_done(instance_id)
    assert done.workflowState.output.value == '{"n": 1}'
    raised = of_kind(engine.history(instance_id), "eventRaised")
    assert [(e.eventId, e.eventRaised.name, e.eventRaised.input.value) for e in raised] == [
        (-1, "GO", '{"n": 1}')
    ]


def test_events_raised_before_the_workflow_waits_for_them_are_buffered(engine):
    instance_id = unique_id("buffered")
    engine.start("two_events", instance_id)

    # "second" arrives while the workflow still waits for "first".
    engine.raise_event(instance_id, "second", '"b"')
    engine.wait_history(instance_id, has_kind("eventRaised"))
    engine.raise_event(instance_id, "first", '"a"')

    assert engine.wait_done(instance_id).workflowState.output.value == '["a", "b"]'


def test_an_event_for_an_instance_waiting_for_its_scheduled_start_starts_it_now(engine):
    # daprd wakes an instance for an event at the event's time: the start runs then, with it.
    raised = unique_id("early-raise")
    engine.start("wait_forever", raised, start_at=far_future())
    assert engine.status(raised) == "PENDING"

    engine.raise_event(raised, "go", '"early"')

    assert engine.wait_done(raised).workflowState.output.value == '"early"'

    suspended = unique_id("early-suspend")
    engine.start("wait_forever", suspended, start_at=far_future())
    began = time.monotonic()

    engine.suspend(suspended, reason="not yet")

    assert time.monotonic() - began < 5, "the suspend waited for the scheduled start"
    assert engine.status(suspended) == "SUSPENDED"
    assert {"executionStarted", "executionSuspended"} <= set(kinds(engine.history(suspended)))
    engine.resume(suspended)
    engine.raise_event(suspended, "go", '"resumed"')
    assert engine.wait_done(suspended).workflowState.output.value == '"resumed"'


def test_raise_event_on_an_unknown_instance_is_an_error(engine):
    error = rpc_error(lambda: engine.raise_event(unique_id("nobody"), "go", "1"))

    assert error.code() == grpc.StatusCode.UNKNOWN
    assert "no such instance exists" in error.details()


def test_an_event_for_a_finished_instance_is_accepted_and_dropped(engine):
    instance_id = unique_id("late-event")
    engine.start("hello_world", instance_id, input='"x"')
    engine.wait_done(instance_id)
    before = engine.history(instance_id)

    engine.raise_event(instance_id, "go", "1")

    assert engine.history(instance_id) == before
    assert engine.status(instance_id) == "COMPLETED"


# --- Suspend and resume ------------------------------------------------------------------------


def test_suspend_and_resume_record_their_reasons_and_hold_events_back_until_resumed(engine):
    instance_id = unique_id("suspend")
    engine.start("wait_forever", instance_id)

    engine.suspend(instance_id, reason="maintenance")
    # SuspendInstance blocks until the status is SUSPENDED.
    assert engine.status(instance_id) == "SUSPENDED"

    engine.raise_event(instance_id, "go", "42")
    engine.wait_history(instance_id, has_kind("eventRaised"))
    # The engine delivers the event, the SDK holds it back while suspended.
    assert engine.status(instance_id) == "SUSPENDED"
    assert not has_kind("executionCompleted")(engine.history(instance_id))

    engine.resume(instance_id, reason="done")
    assert engine.status(instance_id) in ("RUNNING", "COMPLETED")

    done = engine.wait_done(instance_id)
    assert done.workflowState.workflowStatus == STATUS["COMPLETED"]
    assert done.workflowState.output.value == "42"
    events = engine.history(instance_id)
    suspended = of_kind(events, "executionSuspended")
    resumed = of_kind(events, "executionResumed")
    assert [(e.eventId, e.executionSuspended.input.value) for e in suspended] == [
        (-1, "maintenance")
    ]
    assert [(e.eventId, e.executionResumed.input.value) for e in resumed] == [(-1, "done")]
    order = kinds(events)
    assert order.index("executionSuspended") < order.index("eventRaised")
    assert order.index("eventRaised") < order.index("executionResumed")


def test_an_empty_suspend_or_resume_reason_is_recorded_as_no_reason(engine):
    # Go clients (the Dapr CLI among them) send an empty reason when none is given; daprd
    # records none, as for a request without the field.
    instance_id = unique_id("no-reason")
    engine.start("wait_forever", instance_id)

    engine.suspend(instance_id, reason="")
    engine.resume(instance_id, reason="")

    events = engine.history(instance_id)
    for kind_name in ("executionSuspended", "executionResumed"):
        (event,) = of_kind(events, kind_name)
        assert not getattr(event, kind_name).HasField("input")
    engine.terminate(instance_id)


def test_resume_of_a_running_instance_is_accepted_and_the_sdk_then_fails_the_workflow(engine):
    # The console must refuse this action; this test pins down why (daprd behaves the same).
    instance_id = unique_id("bad-resume")
    engine.start("wait_forever", instance_id)

    engine.resume(instance_id)

    done = engine.wait_done(instance_id)
    assert done.workflowState.workflowStatus == STATUS["FAILED"]
    assert "executionResumed" in done.workflowState.failureDetails.errorMessage


# --- Terminate ---------------------------------------------------------------------------------


def test_terminate_with_an_output_ends_the_instance_as_terminated(engine):
    instance_id = unique_id("terminate")
    engine.start("wait_forever", instance_id)

    engine.terminate(instance_id, output='"stopped by test"')

    # TerminateInstance blocks until the instance is terminal.
    state = engine.get(instance_id).workflowState
    assert state.workflowStatus == STATUS["TERMINATED"]
    assert state.output.value == '"stopped by test"'
    events = engine.history(instance_id)
    assert kinds(events)[-2:] == ["executionTerminated", "executionCompleted"]
    terminated, completed = events[-2:]
    assert terminated.eventId == -1
    assert terminated.executionTerminated.input.value == '"stopped by test"'
    assert terminated.executionTerminated.recurse is True
    assert completed.executionCompleted.workflowStatus == STATUS["TERMINATED"]
    assert completed.executionCompleted.result.value == '"stopped by test"'


def _start_parent_of_waiters(engine, prefix: str, count: int = 2) -> tuple[str, list[str]]:
    parent = unique_id(prefix)
    engine.start("parent_of_waiters", parent, input=str(count))
    children = [f"{parent}:{n:04x}" for n in range(1, count + 1)]
    for child in children:
        engine.wait_status(child, "RUNNING")
    return parent, children


def test_recursive_terminate_terminates_the_children_too(engine):
    parent, children = _start_parent_of_waiters(engine, "rec-term")

    engine.terminate(parent, output='"all"', recursive=True)

    assert engine.status(parent) == "TERMINATED"
    for child in children:
        engine.wait_status(child, "TERMINATED", timeout=10)


def test_non_recursive_terminate_leaves_the_children_running(engine):
    parent, children = _start_parent_of_waiters(engine, "flat-term")

    engine.terminate(parent, recursive=False)

    assert engine.status(parent) == "TERMINATED"
    # A wrong cascade would take effect within moments of the parent's end.
    time.sleep(0.3)
    assert [engine.status(child) for child in children] == ["RUNNING", "RUNNING"]
    for child in children:
        engine.terminate(child)


# --- Purge -------------------------------------------------------------------------------------


def _history_is_gone(engine, instance_id: str) -> bool:
    try:
        return engine.history(instance_id) == []
    except grpc.RpcError as error:
        return error.code() == grpc.StatusCode.NOT_FOUND


def test_purge_deletes_a_finished_instance(engine, client):
    instance_id = unique_id("purge")
    engine.start("hello_world", instance_id, input='"x"')
    engine.wait_done(instance_id)

    response = engine.purge(instance_id)

    assert response.deletedInstanceCount == 1
    assert engine.get(instance_id).exists is False
    assert _history_is_gone(engine, instance_id)
    assert client.get_workflow_state(instance_id) is None


def test_purge_refuses_an_active_instance_unless_forced(engine):
    instance_id = unique_id("purge-active")
    engine.start("wait_forever", instance_id)

    with pytest.raises(grpc.RpcError) as refused:
        engine.purge(instance_id)
    # daprd's executor error, not a gRPC status of its own: UNKNOWN with its words.
    assert refused.value.code() == grpc.StatusCode.UNKNOWN
    assert refused.value.details() == (
        "failed to purge workflow state: orchestration has not yet completed"
    )
    assert engine.status(instance_id) == "RUNNING"

    assert engine.purge(instance_id, force=True).deletedInstanceCount == 1
    assert engine.get(instance_id).exists is False


def test_recursive_purge_deletes_the_children_too(engine):
    parent, children = _start_parent_of_waiters(engine, "rec-purge")
    engine.terminate(parent, recursive=True)
    for child in children:
        engine.wait_status(child, "TERMINATED")

    response = engine.purge(parent, recursive=True)

    assert response.deletedInstanceCount == 3
    for instance_id in [parent, *children]:
        assert engine.get(instance_id).exists is False


def test_non_recursive_purge_keeps_the_children(engine):
    parent, children = _start_parent_of_waiters(engine, "flat-purge")
    engine.terminate(parent, recursive=True)
    for child in children:
        engine.wait_status(child, "TERMINATED")

    response = engine.purge(parent, recursive=False)

    assert response.deletedInstanceCount == 1
    assert engine.get(parent).exists is False
    assert all(engine.get(child).exists for child in children)


def test_a_recursive_purge_stops_at_a_running_child_keeping_what_it_purged(engine):
    parent, (finished, running) = _start_parent_of_waiters(engine, "part-purge")
    engine.terminate(parent, recursive=False)
    engine.terminate(finished)
    assert [engine.status(i) for i in (parent, finished, running)] == [
        "TERMINATED",
        "TERMINATED",
        "RUNNING",
    ]

    with pytest.raises(grpc.RpcError) as refused:
        engine.purge(parent, recursive=True)

    # daprd's walk: children first, each purged as it goes, the first error ends it (daprd
    # visits the children in Go map order, devengine in the order they were created).
    assert refused.value.code() == grpc.StatusCode.UNKNOWN
    assert refused.value.details() == (
        "failed to purge workflow state: failed to purge child workflow: "
        "orchestration has not yet completed"
    )
    assert [engine.get(i).exists for i in (parent, finished, running)] == [True, False, True]

    # The walk goes by the children the history created, skipping one already purged (as
    # daprd's does): the parent is not left impossible to purge recursively.
    engine.terminate(running)
    assert engine.purge(parent, recursive=True).deletedInstanceCount == 2
    assert [engine.get(i).exists for i in (parent, finished, running)] == [False, False, False]


def test_purge_of_an_unknown_instance_is_an_error(engine):
    for recursive, cause in (
        (True, "failed to fetch workflow state: no such instance exists"),
        (False, "no such instance exists"),
    ):
        with pytest.raises(grpc.RpcError) as refused:
            engine.purge(unique_id("never-started"), recursive=recursive)
        assert refused.value.code() == grpc.StatusCode.UNKNOWN
        assert refused.value.details() == f"failed to purge workflow state: {cause}"


def test_purge_with_a_filter_is_an_error_and_deletes_nothing(engine):
    instance_id = unique_id("purge-filter")
    engine.start("hello_world", instance_id, input='"x"')
    engine.wait_done(instance_id)
    request = pb.PurgeInstancesRequest(
        purgeInstanceFilter=pb.PurgeInstanceFilter(runtimeStatus=[STATUS["COMPLETED"]])
    )

    error = rpc_error(lambda: engine.call("PurgeInstances", request))

    assert "multi-instance purge is not implemented" in error.details()
    assert engine.get(instance_id).exists


# --- ListInstanceIDs and GetInstanceHistory -----------------------------------------------------


def _list_all(engine, page_size: int) -> tuple[list[str], list[int]]:
    ids: list[str] = []
    page_lengths: list[int] = []
    token = ""
    for _ in range(100_000):
        request = pb.ListInstanceIDsRequest(pageSize=page_size)
        if token:
            request.continuationToken = token
        page = engine.call("ListInstanceIDs", request)
        ids.extend(page.instanceIds)
        page_lengths.append(len(page.instanceIds))
        token = page.continuationToken
        if not token:
            return ids, page_lengths
    raise AssertionError("paging never ended")


@pytest.mark.slow
def test_list_instance_ids_pages_through_thousands_of_instances(engine):
    # Scheduled far in the future, these stay PENDING and cost the worker nothing.
    prefix = unique_id("list")
    created = [f"{prefix}-{n:04d}" for n in range(2500)]
    start_at = far_future()
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda i: engine.start("hello_world", i, start_at=start_at), created))

    listed, page_lengths = _list_all(engine, page_size=97)

    assert len(listed) == len(set(listed)), "an id was listed twice"
    assert set(created) <= set(listed)
    assert max(page_lengths) <= 97
    assert len(page_lengths) >= 2500 // 97
    for instance_id in created[::500]:
        assert engine.status(instance_id) == "PENDING"


def test_list_instance_ids_with_page_size_zero_returns_everything_at_once(engine, client):
    instance_id = unique_id("list-all")
    engine.start("hello_world", instance_id, input='"x"')
    engine.wait_done(instance_id)

    page = engine.call("ListInstanceIDs", pb.ListInstanceIDsRequest(pageSize=0))

    assert instance_id in page.instanceIds
    assert page.continuationToken == ""
    assert instance_id in set(client.iter_workflow_instance_ids(page_size=50))


def test_get_instance_history_of_an_unknown_instance_is_not_found_or_empty(engine):
    assert _history_is_gone(engine, unique_id("nobody"))


def test_get_instance_history_works_through_the_sdk_client(engine, client):
    instance_id = unique_id("sdk-history")
    engine.start("hello_world", instance_id, input='"x"')
    engine.wait_done(instance_id)

    events = client.get_workflow_history(instance_id)

    raw = engine.history(instance_id)
    assert [e.event_id for e in events] == [e.eventId for e in raw]
    assert events[1].name == "hello_world"
    assert [e.task_scheduled_id for e in events if e.task_scheduled_id] == [1]


def test_the_event_wait_sentinel_timer_is_recorded_and_never_fires(engine):
    instance_id = unique_id("sentinel")
    engine.start("wait_forever", instance_id)
    timer = of_kind(engine.history(instance_id), "timerCreated")[0]
    assert is_sentinel(timer)
    assert timer.timerCreated.WhichOneof("origin") == "externalEvent"
    assert timer.timerCreated.externalEvent.name == "go"

    # Proving a negative needs a little time; a fired sentinel would show up at once.
    time.sleep(0.5)
    engine.raise_event(instance_id, "go", "1")
    engine.wait_done(instance_id)

    assert of_kind(engine.history(instance_id), "timerFired") == []


def test_status_continued_as_new_is_only_ever_transient(engine):
    instance_id = unique_id("can-status")
    engine.start("monitor", instance_id, input="0")

    seen = set()

    def finished():
        status = engine.status(instance_id)
        seen.add(status)
        return status in ("COMPLETED", "FAILED", "TERMINATED")

    wait_for(finished, timeout=15, interval=0.01, what="monitor to finish")
    assert engine.status(instance_id) == "COMPLETED"
    assert seen <= {"RUNNING", "CONTINUED_AS_NEW", "PENDING", "COMPLETED"}
