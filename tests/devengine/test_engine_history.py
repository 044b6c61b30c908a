"""History the engine writes: event types, eventIds, pairing fields, timers, children,
continue-as-new, versions and patches."""

from __future__ import annotations

import json
from datetime import timedelta

from dapr.ext.workflow._durabletask.internal import protos as pb
from engine_support import STATUS, has_kind, kind, kinds, of_kind, turn_start, unique_id


def assert_turns_well_formed(events: list[pb.HistoryEvent]) -> None:
    """Every turn opens with workflowStarted, then the inbox (eventId -1), then the events
    produced from the turn's actions (eventId = action id)."""
    assert kinds(events)[:2] == ["workflowStarted", "executionStarted"]
    previous_was_action = False
    for event in events:
        inbound = event.eventId == -1
        if inbound and previous_was_action:
            assert kind(event) == "workflowStarted", f"{kind(event)} without a new turn"
        previous_was_action = not inbound
    action_ids = [e.eventId for e in events if e.eventId != -1]
    assert action_ids == sorted(action_ids) and len(set(action_ids)) == len(action_ids)


def test_activities_pair_task_scheduled_with_task_completed(engine):
    instance_id = unique_id("pairs")
    order = json.dumps({"id": "o-1", "qty": 3, "amount": 1.0})
    engine.start("two_steps", instance_id, input=order)
    engine.wait_done(instance_id)

    events = engine.history(instance_id)

    assert_turns_well_formed(events)
    assert [(kind(e), e.eventId) for e in events if kind(e) != "workflowStarted"] == [
        ("executionStarted", -1),
        ("taskScheduled", 1),
        ("taskCompleted", -1),
        ("taskScheduled", 2),
        ("taskCompleted", -1),
        ("executionCompleted", 3),
    ]
    started = of_kind(events, "executionStarted")[0].executionStarted
    assert started.name == "two_steps"
    assert started.input.value == order
    assert started.workflowInstance.instanceId == instance_id
    assert started.workflowInstance.executionId
    scheduled = of_kind(events, "taskScheduled")
    completed = of_kind(events, "taskCompleted")
    assert [s.taskScheduled.name for s in scheduled] == ["reserve_stock", "ship"]
    assert [c.taskCompleted.taskScheduledId for c in completed] == [1, 2]
    for s, c in zip(scheduled, completed, strict=True):
        assert s.taskScheduled.taskExecutionId
        assert c.taskCompleted.taskExecutionId == s.taskScheduled.taskExecutionId
    assert completed[0].taskCompleted.result.value == '{"reserved": 3}'
    end = of_kind(events, "executionCompleted")[0].executionCompleted
    assert end.workflowStatus == STATUS["COMPLETED"]
    assert json.loads(end.result.value) == {
        "stock": {"reserved": 3},
        "ship": {"tracking": "trk-o-1"},
    }


def test_an_activity_failure_is_recorded_as_task_failed_and_fails_the_workflow(engine):
    instance_id = unique_id("task-failed")
    engine.start("fails", instance_id, input=json.dumps({"id": "o", "address": "nowhere"}))
    engine.wait_done(instance_id)

    events = engine.history(instance_id)

    assert_turns_well_formed(events)
    failed = of_kind(events, "taskFailed")
    assert [f.taskFailed.taskScheduledId for f in failed] == [1]
    details = failed[0].taskFailed.failureDetails
    assert (details.errorType, details.errorMessage) == (
        "ValueError",
        "no carrier serves this address",
    )
    end = events[-1]
    assert (kind(end), end.eventId) == ("executionCompleted", 2)
    assert end.executionCompleted.workflowStatus == STATUS["FAILED"]
    assert end.executionCompleted.failureDetails.errorType == "TaskFailedError"


def test_retries_schedule_timers_with_the_activity_retry_origin(engine):
    instance_id = unique_id("retry")
    engine.start("with_retry", instance_id, input=json.dumps({"id": "o", "qty": 1, "amount": 5}))
    done = engine.wait_done(instance_id)

    events = engine.history(instance_id)

    assert done.workflowState.output.value == '{"charged": 5}'
    assert_turns_well_formed(events)
    scheduled = of_kind(events, "taskScheduled")
    timers = of_kind(events, "timerCreated")
    fired = of_kind(events, "timerFired")
    assert [s.eventId for s in scheduled] == [1, 3, 5]
    assert [t.eventId for t in timers] == [2, 4]
    assert [f.timerFired.timerId for f in fired] == [2, 4]
    execution_ids = {s.taskScheduled.taskExecutionId for s in scheduled}
    assert len(execution_ids) == 1, "retries keep the first attempt's taskExecutionId"
    for timer in timers:
        assert timer.timerCreated.WhichOneof("origin") == "activityRetry"
        assert timer.timerCreated.activityRetry.taskExecutionId in execution_ids
    assert [f.taskFailed.taskScheduledId for f in of_kind(events, "taskFailed")] == [1, 3]
    assert [c.taskCompleted.taskScheduledId for c in of_kind(events, "taskCompleted")] == [5]


def test_a_timer_fires_on_time_and_pairs_by_timer_id(engine):
    instance_id = unique_id("timer")
    engine.start("sleep_then_return", instance_id, input="1")
    done = engine.wait_done(instance_id)

    events = engine.history(instance_id)

    assert done.workflowState.output.value == '"fired"'
    assert_turns_well_formed(events)
    (created,) = of_kind(events, "timerCreated")
    (fired,) = of_kind(events, "timerFired")
    assert created.eventId == 1
    assert created.timerCreated.WhichOneof("origin") == "createTimer"
    assert fired.eventId == -1
    assert fired.timerFired.timerId == created.eventId
    assert fired.timerFired.fireAt == created.timerCreated.fireAt
    fire_at = created.timerCreated.fireAt.ToDatetime(tzinfo=turn_start(events, 0).tzinfo)
    assert fire_at - turn_start(events, 0) == timedelta(seconds=1)
    fired_turn = turn_start(events, events.index(fired))
    assert fire_at <= fired_turn < fire_at + timedelta(seconds=1.5), "timer fired late or early"


def test_child_workflows_are_created_with_derived_ids_and_report_back(engine):
    instance_id = unique_id("children")
    engine.start("fan_out", instance_id, input=json.dumps({"id": "o", "qtys": [4, 5]}))
    done = engine.wait_done(instance_id)

    events = engine.history(instance_id)

    assert done.workflowState.output.value == "9"
    assert_turns_well_formed(events)
    created = of_kind(events, "childWorkflowInstanceCreated")
    assert [(c.eventId, c.childWorkflowInstanceCreated.instanceId) for c in created] == [
        (1, f"{instance_id}:0001"),
        (2, f"{instance_id}:0002"),
    ]
    assert {c.childWorkflowInstanceCreated.name for c in created} == {"line_item"}
    completed = of_kind(events, "childWorkflowInstanceCompleted")
    results = {c.childWorkflowInstanceCompleted.taskScheduledId: c for c in completed}
    assert sorted(results) == [1, 2]
    assert results[1].childWorkflowInstanceCompleted.result.value == "4"
    assert results[2].childWorkflowInstanceCompleted.result.value == "5"

    for task_id, child_created in zip((1, 2), created, strict=True):
        child_id = child_created.childWorkflowInstanceCreated.instanceId
        child_events = engine.history(child_id)
        child_start = of_kind(child_events, "executionStarted")[0].executionStarted
        assert child_start.name == "line_item"
        assert child_start.input.value == child_created.childWorkflowInstanceCreated.input.value
        assert child_start.parentInstance.taskScheduledId == task_id
        assert child_start.parentInstance.name.value == "fan_out"
        assert child_start.parentInstance.workflowInstance.instanceId == instance_id
        assert engine.status(child_id) == "COMPLETED"


def test_a_failed_child_reports_child_workflow_instance_failed(engine):
    instance_id = unique_id("child-fails")
    order = json.dumps({"id": "o", "address": "nowhere"})
    engine.start("parent_of_failing_child", instance_id, input=order)
    done = engine.wait_done(instance_id)

    events = engine.history(instance_id)

    assert done.workflowState.workflowStatus == STATUS["COMPLETED"]
    assert json.loads(done.workflowState.output.value).startswith("child failed")
    (failed,) = of_kind(events, "childWorkflowInstanceFailed")
    assert failed.eventId == -1
    assert failed.childWorkflowInstanceFailed.taskScheduledId == 1
    assert failed.childWorkflowInstanceFailed.failureDetails.errorType == "TaskFailedError"
    assert engine.status(f"{instance_id}:0001") == "FAILED"


def test_continue_as_new_keeps_only_the_latest_generation(engine):
    instance_id = unique_id("monitor")
    engine.start("monitor", instance_id, input="0")
    done = engine.wait_done(instance_id)

    events = engine.history(instance_id)

    assert done.workflowState.workflowStatus == STATUS["COMPLETED"]
    assert done.workflowState.output.value == '"checked 3 times"'
    assert done.workflowState.input.value == "2"
    assert_turns_well_formed(events)
    (started,) = of_kind(events, "executionStarted")
    assert started.executionStarted.name == "monitor"
    assert started.executionStarted.input.value == "2"
    assert [kind(e) for e in events if kind(e) != "workflowStarted"] == [
        "executionStarted",
        "timerCreated",
        "timerFired",
        "executionCompleted",
    ]
    # Created and started are the latest generation's, as daprd reads both from the current
    # history (the recorded golden: startedAt = its first workflowStarted, a few µs earlier).
    state = done.workflowState
    assert state.createdTimestamp.ToNanoseconds() == started.timestamp.ToNanoseconds()
    assert state.startedAt.ToNanoseconds() == events[0].timestamp.ToNanoseconds()


def test_events_raised_before_continue_as_new_are_carried_over(engine):
    instance_id = unique_id("carry")
    engine.start("carry_over", instance_id, input="0")
    first_run = of_kind(engine.history(instance_id), "executionStarted")[0]

    # "second" is not awaited by generation 0: the SDK buffers it and carries it over.
    engine.raise_event(instance_id, "second", '"kept"')
    engine.wait_history(instance_id, has_kind("eventRaised"))
    engine.raise_event(instance_id, "first", '"used"')
    done = engine.wait_done(instance_id)

    assert json.loads(done.workflowState.output.value) == {"generation": 1, "second": "kept"}
    events = engine.history(instance_id)
    (started,) = of_kind(events, "executionStarted")
    assert started.executionStarted.input.value == "1"
    old_execution = first_run.executionStarted.workflowInstance.executionId
    assert started.executionStarted.workflowInstance.executionId != old_execution
    carried = of_kind(events, "eventRaised")
    assert [(e.eventRaised.name.casefold(), e.eventRaised.input.value) for e in carried] == [
        ("second", '"kept"')
    ]
    assert kinds(events).index("eventRaised") < kinds(events).index("executionCompleted")


def test_custom_status_is_visible_while_the_workflow_runs(engine):
    instance_id = unique_id("custom")
    engine.start("custom_status_then_wait", instance_id)

    state = engine.get(instance_id).workflowState

    assert state.customStatus.value == "waiting"
    engine.raise_event(instance_id, "go", '"x"')
    assert engine.wait_done(instance_id).workflowState.customStatus.value == "waiting"


def test_patches_used_by_a_turn_are_recorded_in_its_workflow_started(engine):
    instance_id = unique_id("patched")
    engine.start("patched", instance_id)
    done = engine.wait_done(instance_id)

    events = engine.history(instance_id)

    assert done.workflowState.output.value == '"patched"'
    assert list(events[0].workflowStarted.version.patches) == ["fix-1"]


def test_the_workflow_version_used_is_recorded_in_workflow_started(engine):
    instance_id = unique_id("versioned")
    engine.start("versioned", instance_id)
    engine.raise_event(instance_id, "go", '"x"')
    done = engine.wait_done(instance_id)

    events = engine.history(instance_id)

    assert done.workflowState.output.value == '"v2 x"'
    assert events[0].workflowStarted.version.name == "v2"
