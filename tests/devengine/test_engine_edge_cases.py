"""Work that arrives after the fact: late timers, late activity results, ended children."""

from __future__ import annotations

import json
import time
from datetime import datetime

import grpc
from engine_support import (
    STATUS,
    far_future,
    has_kind,
    kind,
    kinds,
    of_kind,
    rpc_error,
    unique_id,
)


def test_a_timer_left_behind_by_continue_as_new_does_not_fire_into_the_new_generation(engine):
    instance_id = unique_id("stale-timer")
    engine.start("race_then_continue", instance_id, input="0")
    engine.raise_event(instance_id, "go", "1")
    engine.wait_history(
        instance_id,
        lambda events: (
            [e.executionStarted.input.value for e in of_kind(events, "executionStarted")] == ["1"]
        ),
    )

    # The old generation's timer was due 1 s after it started.
    time.sleep(1.3)
    engine.raise_event(instance_id, "done", '"ok"')
    done = engine.wait_done(instance_id)

    assert done.workflowState.output.value == '"ok"'
    assert of_kind(engine.history(instance_id), "timerFired") == []


def test_an_activity_result_after_terminate_changes_nothing(engine):
    instance_id = unique_id("late-result")
    engine.start("slow_steps", instance_id, input=json.dumps({"steps": 1, "seconds": 0.8}))

    engine.terminate(instance_id, output='"cut short"')
    terminated = engine.history(instance_id)
    # The activity is still running in the worker; let its result come back.
    time.sleep(1.2)

    assert engine.status(instance_id) == "TERMINATED"
    assert engine.history(instance_id) == terminated
    assert "taskCompleted" not in kinds(terminated)


def test_terminating_a_suspended_instance_ends_it(engine):
    instance_id = unique_id("suspended-term")
    engine.start("wait_forever", instance_id)
    engine.suspend(instance_id)

    engine.terminate(instance_id, output='"gone"')

    state = engine.get(instance_id).workflowState
    assert state.workflowStatus == STATUS["TERMINATED"]
    assert state.output.value == '"gone"'


def test_a_timer_due_while_suspended_before_the_first_turn_is_not_created_again(engine):
    # The first turn holds the start and the suspend: the workflow creates its timer, then is
    # suspended, so the history has the timer after the suspend. The SDK then holds that
    # timerCreated back while it replays and asks for the timer again on every later turn.
    instance_id = unique_id("suspended-timer")
    engine.start("sleep_then_return", instance_id, input="0.5", start_at=far_future())
    engine.suspend(instance_id)
    first_turn = engine.history(instance_id)
    assert kinds(first_turn) == [
        "workflowStarted",
        "executionStarted",
        "executionSuspended",
        "timerCreated",
    ]

    time.sleep(1.5)  # the timer is due and fires while the instance is suspended

    assert engine.status(instance_id) == "SUSPENDED"
    assert engine.history(instance_id) == first_turn
    engine.resume(instance_id)
    done = engine.wait_done(instance_id)
    assert done.workflowState.output.value == '"fired"'
    events = engine.history(instance_id)
    assert kinds(events)[len(first_turn) :] == [
        "workflowStarted",
        "timerFired",
        "executionResumed",
        "executionCompleted",
    ]
    assert [e.timerFired.timerId for e in of_kind(events, "timerFired")] == [1]


def test_a_terminated_child_reports_child_workflow_instance_failed_to_its_parent(engine):
    parent = unique_id("orphaned")
    engine.start("parent_of_waiters", parent, input="1")
    child = f"{parent}:0001"
    engine.wait_status(child, "RUNNING")

    engine.terminate(child, output='"killed"', recursive=False)

    done = engine.wait_done(parent)
    events = engine.history(parent)
    (failed,) = of_kind(events, "childWorkflowInstanceFailed")
    assert failed.childWorkflowInstanceFailed.taskScheduledId == 1
    assert done.workflowState.workflowStatus == STATUS["FAILED"]
    assert not has_kind("childWorkflowInstanceCompleted")(events)
    assert [kind(e) for e in events][-1] == "executionCompleted"


def test_recursive_terminate_and_purge_reach_grandchildren(engine):
    root = unique_id("nested")
    engine.start("nested_waiters", root, input="2")
    chain = [root, f"{root}:0001", f"{root}:0001:0001"]
    engine.wait_status(chain[-1], "RUNNING")

    engine.terminate(root, recursive=True)

    for instance_id in chain:
        engine.wait_status(instance_id, "TERMINATED", timeout=10)
    assert engine.purge(root, recursive=True).deletedInstanceCount == 3
    assert [engine.get(i).exists for i in chain] == [False, False, False]


def test_a_recursive_terminate_fires_no_timer_of_a_child_early(engine):
    # The terminate made every event waiting in the child's inbox due at once, its timer too:
    # a child asleep completed early, and one that continued as new on it kept running.
    root = unique_id("sleepy")
    engine.start("parent_of_sleeper", root, input="60")
    child = f"{root}:0001"
    engine.wait_status(child, "RUNNING")
    engine.wait_history(child, has_kind("timerCreated"))

    engine.terminate(root, recursive=True)

    for instance_id in (root, child):
        engine.wait_status(instance_id, "TERMINATED", timeout=10)
    assert not has_kind("timerFired")(engine.history(child))


def test_a_result_travels_up_a_chain_of_children(engine):
    root = unique_id("chain")
    engine.start("nested_waiters", root, input="2")
    deepest = f"{root}:0001:0001"
    engine.wait_status(deepest, "RUNNING")

    engine.raise_event(deepest, "go", '"from the bottom"')

    assert engine.wait_done(root).workflowState.output.value == '"from the bottom"'


def test_a_child_that_continues_as_new_reports_only_its_final_result(engine):
    parent = unique_id("child-can")
    engine.start("parent_of_monitor", parent)

    done = engine.wait_done(parent)

    assert done.workflowState.workflowStatus == STATUS["COMPLETED"]
    assert done.workflowState.output.value == '"checked 3 times"'
    events = engine.history(parent)
    assert len(of_kind(events, "childWorkflowInstanceCompleted")) == 1
    assert of_kind(events, "childWorkflowInstanceFailed") == []


def test_many_events_are_delivered_in_the_order_they_were_raised(engine):
    instance_id = unique_id("ordered")
    engine.start("collect_events", instance_id, input="20")

    for n in range(20):
        engine.raise_event(instance_id, "item", str(n))

    done = engine.wait_done(instance_id)
    assert json.loads(done.workflowState.output.value) == list(range(20))


def test_non_ascii_payloads_are_stored_unchanged(engine):
    instance_id = unique_id("unicode")
    text = json.dumps("h\u00e9llo \u2713 \u4e16\u754c \U0001f680", ensure_ascii=False)

    engine.start("hello_world", instance_id, input=text)
    done = engine.wait_done(instance_id)

    assert done.workflowState.input.value == text
    started = of_kind(engine.history(instance_id), "executionStarted")[0].executionStarted
    assert started.input.value == text
    # The SDK re-encodes what it returns (as ASCII JSON): compare the decoded value.
    assert json.loads(done.workflowState.output.value) == "hello " + json.loads(text)


def test_a_retried_child_restarts_under_the_same_id_after_a_child_retry_timer(engine):
    parent = unique_id("child-retry")
    engine.start("parent_retrying_child", parent, input=json.dumps({"id": "o", "amount": 3}))

    done = engine.wait_done(parent, timeout=30)

    assert done.workflowState.workflowStatus == STATUS["COMPLETED"]
    assert done.workflowState.output.value == '{"charged": 3}'
    events = engine.history(parent)
    created = of_kind(events, "childWorkflowInstanceCreated")
    child_id = f"{parent}:0001"
    assert [c.childWorkflowInstanceCreated.instanceId for c in created] == [child_id] * 3
    timers = of_kind(events, "timerCreated")
    assert [t.timerCreated.WhichOneof("origin") for t in timers] == ["childWorkflowRetry"] * 2
    assert {t.timerCreated.childWorkflowRetry.instanceId for t in timers} == {child_id}
    failed = [
        f.childWorkflowInstanceFailed.taskScheduledId
        for f in of_kind(events, "childWorkflowInstanceFailed")
    ]
    assert failed == [created[0].eventId, created[1].eventId]
    completed = of_kind(events, "childWorkflowInstanceCompleted")
    assert [c.childWorkflowInstanceCompleted.taskScheduledId for c in completed] == [
        created[2].eventId
    ]
    assert engine.status(child_id) == "COMPLETED"


def test_a_timer_centuries_ahead_waits_and_one_centuries_past_fires_at_once(engine):
    # Nanoseconds since 1970 leave a 64-bit integer after 2262 and before 1677.
    ahead = unique_id("timer-ahead")
    engine.start("sleep_until", ahead, input=json.dumps("3000-01-01T00:00:00+00:00"))
    engine.wait_history(ahead, has_kind("timerCreated"))
    assert engine.status(ahead) == "RUNNING"
    engine.terminate(ahead)

    past = unique_id("timer-past")
    engine.start("sleep_until", past, input=json.dumps("1600-01-01T00:00:00+00:00"))
    assert engine.wait_done(past).workflowState.output.value == '"fired"'


def test_a_start_scheduled_beyond_what_devengine_keeps_is_refused_with_a_reason(engine):
    # Was UNKNOWN "OverflowError: Python int too large to convert to SQLite INTEGER".
    far = unique_id("start-far")
    error = rpc_error(lambda: engine.start("sleep_until", far, start_at=datetime(3000, 1, 1)))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "between 1677-09-21 and 2262-04-11" in error.details()
    assert not engine.get(far).exists
    near = unique_id("start-near")
    engine.start("sleep_until", near, start_at=datetime(2262, 1, 1))
    assert engine.status(near) == "PENDING"
