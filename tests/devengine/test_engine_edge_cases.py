"""Work that arrives after the fact: late timers, late activity results, ended children."""

from __future__ import annotations

import json
import time

from engine_support import STATUS, has_kind, kind, kinds, of_kind, unique_id


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
