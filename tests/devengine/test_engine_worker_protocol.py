"""The execution protocol seen from the worker's side, with a hand-driven work-item stream.

These tests play the worker themselves (GetWorkItems, CompleteOrchestratorTask,
CompleteWorkflowTask, CompleteActivityTask) to check what the SDK relies on but cannot show: the
shape of each work item, one turn in flight per instance, at-least-once delivery after a
disconnect, duplicate and stale answers, and actions the Python SDK never sends (sendEvent).
Each test has an engine of its own: a hand-driven stream on the shared engine would take work
meant for the session's SDK worker.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from dapr.ext.workflow._durabletask.internal import protos as pb
from engine_support import STATUS, Engine, kind, kinds, of_kind, unique_id
from google.protobuf import wrappers_pb2

# What the Python SDK asks for: health pings and stateful history.
SDK_CAPABILITIES = [pb.WORKER_CAPABILITY_HEALTH_PING, pb.WORKER_CAPABILITY_STATEFUL_HISTORY]


class HandWorker:
    """A work-item stream read on a background thread; items are taken per instance."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self.items: queue.Queue[pb.WorkItem] = queue.Queue()
        self.stash: list[pb.WorkItem] = []
        self.stream = engine.stub.GetWorkItems(
            pb.GetWorkItemsRequest(capabilities=SDK_CAPABILITIES), metadata=engine.metadata
        )
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        try:
            for item in self.stream:
                if item.WhichOneof("request") != "healthPing":
                    self.items.put(item)
        except grpc.RpcError:
            pass

    def take(self, instance_id: str, request: str = "workflowRequest", timeout=10.0) -> pb.WorkItem:
        def matches(item: pb.WorkItem) -> bool:
            if item.WhichOneof("request") != request:
                return False
            if request == "workflowRequest":
                return item.workflowRequest.instanceId == instance_id
            return item.activityRequest.workflowInstance.instanceId == instance_id

        for item in self.stash:
            if matches(item):
                self.stash.remove(item)
                return item
        deadline = datetime.now(UTC) + timedelta(seconds=timeout)
        while (left := (deadline - datetime.now(UTC)).total_seconds()) > 0:
            try:
                item = self.items.get(timeout=left)
            except queue.Empty:
                break
            if matches(item):
                return item
            self.stash.append(item)
        raise AssertionError(f"no {request} for {instance_id} within {timeout}s")

    def nothing_for(self, instance_id: str, seconds: float) -> bool:
        try:
            self.take(instance_id, timeout=seconds)
        except AssertionError:
            return True
        return False

    def answer(self, item: pb.WorkItem, *actions: pb.WorkflowAction, method="CompleteWorkflowTask",
               custom_status: str | None = None) -> None:  # fmt: skip
        response = pb.WorkflowResponse(
            instanceId=item.workflowRequest.instanceId,
            completionToken=item.completionToken,
            actions=list(actions),
        )
        if custom_status is not None:
            response.customStatus.CopyFrom(wrappers_pb2.StringValue(value=custom_status))
        self.engine.call(method, response)

    def close(self) -> None:
        self.stream.cancel()


def complete(action_id: int, result: str) -> pb.WorkflowAction:
    return pb.WorkflowAction(
        id=action_id,
        completeWorkflow=pb.CompleteWorkflowAction(
            workflowStatus=pb.ORCHESTRATION_STATUS_COMPLETED,
            result=wrappers_pb2.StringValue(value=result),
        ),
    )


@pytest.fixture
def hand(own_engine):
    own_engine.start()
    engine = Engine(own_engine.address)
    worker = HandWorker(engine)
    pool = ThreadPoolExecutor(max_workers=4)
    try:
        yield engine, worker, pool
    finally:
        worker.close()
        pool.shutdown(wait=False, cancel_futures=True)
        engine.close()


def start_in_background(pool, engine: Engine, name: str, instance_id: str, input=None) -> Future:
    # StartInstance returns only once the first turn has committed, which takes our answer.
    return pool.submit(engine.start, name, instance_id, input)


def test_a_full_workflow_driven_by_hand(hand):
    engine, worker, pool = hand
    target, instance_id = unique_id("target"), unique_id("hand")

    # A second instance that just waits: it will receive an event sent by the first.
    target_started = start_in_background(pool, engine, "anything", target)
    worker.answer(worker.take(target))
    target_started.result(timeout=10)

    started = start_in_background(pool, engine, "hand_workflow", instance_id, '"in"')
    first = worker.take(instance_id)
    request = first.workflowRequest
    assert first.completionToken
    assert request.executionId.value
    assert list(request.pastEvents) == []
    assert kinds(request.newEvents) == ["workflowStarted", "executionStarted"]
    turn_time = request.newEvents[0].timestamp.ToDatetime(tzinfo=UTC)
    assert abs(datetime.now(UTC) - turn_time) < timedelta(seconds=5), "workflowStarted must be now"
    assert request.newEvents[1].executionStarted.name == "hand_workflow"
    assert request.newEvents[1].executionStarted.input.value == '"in"'
    assert not request.HasField("cachedHistory")

    schedule = pb.WorkflowAction(
        id=1,
        scheduleTask=pb.ScheduleTaskAction(
            name="act", input=wrappers_pb2.StringValue(value='"x"'), taskExecutionId="exec-1"
        ),
    )
    # The deprecated name is what the Python SDK calls; both must work.
    worker.answer(first, schedule, method="CompleteOrchestratorTask", custom_status="step 1")
    started.result(timeout=10)
    state = engine.get(instance_id).workflowState
    assert state.workflowStatus == STATUS["RUNNING"]
    assert state.customStatus.value == "step 1"

    activity = worker.take(instance_id, "activityRequest")
    assert activity.completionToken
    assert (activity.activityRequest.name, activity.activityRequest.taskId) == ("act", 1)
    assert activity.activityRequest.input.value == '"x"'
    assert activity.activityRequest.taskExecutionId == "exec-1"
    assert activity.activityRequest.workflowInstance.instanceId == instance_id
    # The activity joins the workflow's trace.
    workflow_trace = request.newEvents[1].executionStarted.parentTraceContext.traceParent
    activity_trace = activity.activityRequest.parentTraceContext.traceParent
    assert workflow_trace and activity_trace
    assert activity_trace.split("-")[1] == workflow_trace.split("-")[1]
    answer = pb.ActivityResponse(
        instanceId=instance_id,
        taskId=1,
        result=wrappers_pb2.StringValue(value='"y"'),
        completionToken=activity.completionToken,
    )
    engine.call("CompleteActivityTask", answer)

    second = worker.take(instance_id)
    assert kinds(second.workflowRequest.pastEvents) == [
        "workflowStarted",
        "executionStarted",
        "taskScheduled",
    ]
    assert kinds(second.workflowRequest.newEvents) == ["workflowStarted", "taskCompleted"]
    completed = second.workflowRequest.newEvents[1].taskCompleted
    assert (completed.taskScheduledId, completed.result.value) == (1, '"y"')

    # At least once: a second answer for the same task is dropped, not recorded twice.
    with contextlib.suppress(grpc.RpcError):
        engine.call("CompleteActivityTask", answer)
    # One turn in flight per instance: an event raised now waits for the next turn.
    engine.raise_event(instance_id, "mid", '"m"')
    assert worker.nothing_for(instance_id, 0.5)

    send = pb.WorkflowAction(
        id=2,
        sendEvent=pb.SendEventAction(
            instance=pb.WorkflowInstance(instanceId=target),
            name="ping",
            data=wrappers_pb2.StringValue(value='"hi"'),
        ),
    )
    worker.answer(second, send)

    third = worker.take(instance_id)
    new_kinds = kinds(third.workflowRequest.newEvents)
    assert new_kinds == ["workflowStarted", "eventRaised"]
    assert third.workflowRequest.newEvents[1].eventRaised.name == "mid"
    # eventSent is history for people, never replayed to a worker (the SDK would fail).
    assert "eventSent" not in kinds(third.workflowRequest.pastEvents)
    worker.answer(third, complete(3, '"done"'))

    done = engine.wait_done(instance_id)
    assert done.workflowState.workflowStatus == STATUS["COMPLETED"]
    assert done.workflowState.output.value == '"done"'
    events = engine.history(instance_id)
    assert [(kind(e), e.eventId) for e in events if kind(e) != "workflowStarted"] == [
        ("executionStarted", -1),
        ("taskScheduled", 1),
        ("taskCompleted", -1),
        ("eventSent", 2),
        ("eventRaised", -1),
        ("executionCompleted", 3),
    ]
    (sent,) = of_kind(events, "eventSent")
    assert (sent.eventSent.instanceId, sent.eventSent.name) == (target, "ping")
    assert sent.eventSent.input.value == '"hi"'

    # The event reached the other instance's inbox and its next turn.
    delivered = worker.take(target)
    raised = of_kind(delivered.workflowRequest.newEvents, "eventRaised")
    assert [(e.eventRaised.name, e.eventRaised.input.value) for e in raised] == [("ping", '"hi"')]
    worker.answer(delivered, complete(1, '"pong"'))
    assert engine.wait_done(target).workflowState.output.value == '"pong"'


def test_a_turn_is_handed_out_again_after_its_worker_disconnects(hand):
    engine, first_worker, pool = hand
    instance_id = unique_id("redeliver")
    started = start_in_background(pool, engine, "anything", instance_id)
    lost = first_worker.take(instance_id)
    first_worker.close()

    second_worker = HandWorker(engine)
    try:
        again = second_worker.take(instance_id, timeout=20)
        assert kinds(again.workflowRequest.newEvents) == ["workflowStarted", "executionStarted"]
        execution = again.workflowRequest.executionId.value
        assert execution == lost.workflowRequest.executionId.value

        # The first worker's answer is stale: it must not complete the instance.
        with contextlib.suppress(grpc.RpcError):
            first_worker.answer(lost, complete(1, '"stale"'))
        second_worker.answer(again, complete(1, '"fresh"'))

        started.result(timeout=10)
        assert engine.wait_done(instance_id).workflowState.output.value == '"fresh"'
        assert len(of_kind(engine.history(instance_id), "executionCompleted")) == 1
    finally:
        second_worker.close()


def test_continue_as_new_restarts_the_history_with_the_carried_over_events(hand):
    engine, worker, pool = hand
    instance_id = unique_id("hand-can")
    started = start_in_background(pool, engine, "looper", instance_id, "0")
    first = worker.take(instance_id)
    old_execution = first.workflowRequest.executionId.value
    carried = pb.HistoryEvent(
        eventId=-1,
        eventRaised=pb.EventRaisedEvent(name="kept", input=wrappers_pb2.StringValue(value="7")),
    )
    worker.answer(
        first,
        pb.WorkflowAction(
            id=1,
            completeWorkflow=pb.CompleteWorkflowAction(
                workflowStatus=pb.ORCHESTRATION_STATUS_CONTINUED_AS_NEW,
                result=wrappers_pb2.StringValue(value="1"),
                carryoverEvents=[carried],
            ),
        ),
    )

    second = worker.take(instance_id)
    request = second.workflowRequest
    assert list(request.pastEvents) == []
    assert kinds(request.newEvents) == ["workflowStarted", "executionStarted", "eventRaised"]
    assert request.newEvents[1].executionStarted.name == "looper"
    assert request.newEvents[1].executionStarted.input.value == "1"
    assert request.executionId.value and request.executionId.value != old_execution
    assert request.newEvents[2].eventRaised.name == "kept"
    worker.answer(second, complete(1, '"end"'))

    started.result(timeout=10)
    done = engine.wait_done(instance_id)
    assert done.workflowState.output.value == '"end"'
    assert done.workflowState.input.value == "1"
    events = engine.history(instance_id)
    assert kinds(events) == [
        "workflowStarted",
        "executionStarted",
        "eventRaised",
        "executionCompleted",
    ]
