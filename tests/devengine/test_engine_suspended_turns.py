"""Turns of a suspended instance that ask again for what the history already holds.

The Python SDK, replaying a suspended instance, holds back every event that follows the
executionSuspended, creation events too: a task, timer or child created in the suspend's own turn
is asked for again at every later turn, and the engine must reject those turns (the timer's case
is in test_engine_edge_cases.py).
"""

from __future__ import annotations

from dapr.ext.workflow import WorkflowRuntime
from dapr.ext.workflow._durabletask.internal import protos as pb
from engine_support import Engine, far_future, kinds, of_kind, split_address, unique_id, wait_for
from engine_workflows import activity_calls, register_all, workflow_turns


def start_suspended(
    engine: Engine, name: str, instance_id: str, input: str | None = None
) -> list[pb.HistoryEvent]:
    """Starts `name` suspended: its first turn holds the start and the suspend, so what the
    workflow creates at its start is written after the executionSuspended. Returns the history."""
    engine.start(name, instance_id, input=input, start_at=far_future())
    engine.suspend(instance_id)
    return engine.history(instance_id)


def wait_past_turn(engine: Engine, instance_id: str, turn: int) -> None:
    """Waits until the engine has taken the worker's answer to the instance's turn `turn`: an
    event no one waits for gives it one more turn, which the engine hands out only after that."""
    wait_for(lambda: workflow_turns[instance_id] >= turn, what=f"turn {turn} of {instance_id}")
    engine.raise_event(instance_id, "nudge")
    wait_for(lambda: workflow_turns[instance_id] > turn, what=f"the turn after {turn}")


def test_an_activity_scheduled_in_the_turn_of_a_suspend_runs_once(engine):
    instance_id = unique_id("suspended-activity")
    first_turn = start_suspended(engine, "echo_generations", instance_id, "1")
    assert kinds(first_turn)[-2:] == ["executionSuspended", "taskScheduled"]

    # The activity runs while the instance is suspended; the turn its result brings (the
    # second) asks for the activity again.
    wait_for(lambda: activity_calls[instance_id] >= 1, what="the activity's call")
    wait_past_turn(engine, instance_id, 2)

    assert engine.status(instance_id) == "SUSPENDED"
    assert engine.history(instance_id) == first_turn
    engine.resume(instance_id)
    done = engine.wait_done(instance_id)
    assert done.workflowState.output.value == "1"
    assert activity_calls[instance_id] == 1
    events = engine.history(instance_id)
    assert [e.eventId for e in of_kind(events, "taskScheduled")] == [1]
    assert [e.taskCompleted.taskScheduledId for e in of_kind(events, "taskCompleted")] == [1]


def test_a_child_created_in_the_turn_of_a_suspend_starts_once(engine):
    parent = unique_id("suspended-parent")
    child = f"{parent}:0001"
    first_turn = start_suspended(engine, "parent_of_echo", parent)
    assert kinds(first_turn)[-2:] == ["executionSuspended", "childWorkflowInstanceCreated"]

    # The child runs to its end while the parent is suspended; the turn its result brings asks
    # for the child again.
    engine.wait_status(child, "COMPLETED")
    child_starts = of_kind(engine.history(child), "executionStarted")
    wait_past_turn(engine, parent, 2)

    assert engine.status(parent) == "SUSPENDED"
    assert engine.history(parent) == first_turn
    engine.resume(parent)
    done = engine.wait_done(parent)
    assert done.workflowState.output.value == "1"
    # One run of the child: started again, it would have a new execution id and a second call.
    assert of_kind(engine.history(child), "executionStarted") == child_starts
    assert activity_calls[child] == 1
    assert len(of_kind(engine.history(parent), "childWorkflowInstanceCreated")) == 1


def test_a_workflow_resumed_into_continue_as_new_runs_its_next_generation(engine):
    instance_id = unique_id("suspended-continue")
    first_turn = start_suspended(engine, "echo_generations", instance_id, "0")
    wait_for(lambda: activity_calls[instance_id] >= 1, what="the first generation's call")
    wait_past_turn(engine, instance_id, 2)
    assert engine.history(instance_id) == first_turn

    # The resume's turn continues as new; the next generation creates its activity under the
    # same id as the first one did, which is no re-creation: its history starts again.
    engine.resume(instance_id)
    done = engine.wait_done(instance_id)
    assert done.workflowState.output.value == "1"
    assert activity_calls[instance_id] == 2
    events = engine.history(instance_id)
    assert [e.executionStarted.input.value for e in of_kind(events, "executionStarted")] == ["1"]
    assert [e.eventId for e in of_kind(events, "taskScheduled")] == [1]


def test_a_rejected_turn_is_logged_once_however_often_it_comes_back(own_engine):
    own_engine.start()
    engine = Engine(own_engine.address)
    host, port = split_address(own_engine.address)
    runtime = WorkflowRuntime(host=host, port=port)
    register_all(runtime)
    runtime.start()
    instance_id = unique_id("rejected-log")
    try:
        start_suspended(engine, "echo_generations", instance_id, "1")
        wait_for(lambda: activity_calls[instance_id] >= 1, what="the activity's call")
        # Three turns rejected: the activity's result, then each event raised.
        wait_past_turn(engine, instance_id, 2)
        wait_past_turn(engine, instance_id, 3)
        engine.resume(instance_id)
        engine.wait_done(instance_id)
    finally:
        runtime.shutdown()
        engine.close()

    log = own_engine.log_path.read_text(errors="replace")
    rejected = [line for line in log.splitlines() if f"{instance_id}: turn rejected" in line]
    assert len(rejected) == 1, rejected
