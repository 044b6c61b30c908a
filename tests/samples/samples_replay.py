"""A stand-in engine for unit tests: runs one sample workflow to its end inside the test process.

It feeds the Dapr SDK's own workflow executor the history a real engine would build (turn by
turn: activities run at once, timers fire in order on a simulated clock, child workflows run to
their end, raised events wait in the inbox), so workflow code is exercised exactly as the worker
runs it, without a network or an engine. It is deliberately small: no suspend, no terminate, no
concurrency; the slow test against a real devengine covers those.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import dapr.ext.workflow._durabletask.internal.helpers as ph
import dapr.ext.workflow._durabletask.internal.protos as pb
from dapr.ext.workflow import WorkflowRuntime
from dapr.ext.workflow._durabletask import worker
from google.protobuf import timestamp_pb2

log = logging.getLogger(__name__)

START = datetime(2026, 11, 23, 9, 30, tzinfo=UTC)
NEVER_YEAR = 9999  # the SDK's sentinel timer for a wait without timeout


@dataclass
class Outcome:
    status: str  # COMPLETED, FAILED, ...
    output: Any
    failure: pb.TaskFailureDetails | None
    custom_statuses: list[str] = field(default_factory=list)
    activities: list[str] = field(default_factory=list)
    children: list[Outcome] = field(default_factory=list)
    runs: int = 1  # 1 + the number of continue-as-new
    elapsed: timedelta = timedelta(0)


class Replayer:
    def __init__(self, runtime: WorkflowRuntime) -> None:
        self._registry = runtime._WorkflowRuntime__worker._registry  # type: ignore[attr-defined]
        self._logger = logging.getLogger("replayer")

    def run(
        self,
        name: str,
        input: Any,
        instance_id: str,
        events: list[tuple[str, Any]] = (),  # type: ignore[assignment]
        max_turns: int = 200,
    ) -> Outcome:
        """Run ``name`` to completion; ``events`` are raised before the first turn."""
        clock = START
        encoded = json.dumps(input)
        history: list[pb.HistoryEvent] = []
        new = [
            ph.new_workflow_started_event(clock),
            ph.new_execution_started_event(name, instance_id, encoded),
        ]
        for event_name, data in events:
            new.append(ph.new_event_raised_event(event_name, json.dumps(data)))
        timers: list[tuple[datetime, int]] = []
        outcome = Outcome("RUNNING", None, None)
        for _ in range(max_turns):
            executor = worker._OrchestrationExecutor(self._registry, self._logger)
            result = executor.execute(instance_id, history, new)
            if result.encoded_custom_status is not None and (
                not outcome.custom_statuses
                or outcome.custom_statuses[-1] != result.encoded_custom_status
            ):
                outcome.custom_statuses.append(result.encoded_custom_status)
            history.extend(new)
            inbox: list[pb.HistoryEvent] = []
            for action in result.actions:
                kind = action.WhichOneof("workflowActionType")
                if kind == "scheduleTask":
                    st = action.scheduleTask
                    history.append(ph.new_task_scheduled_event(action.id, st.name, st.input.value))
                    outcome.activities.append(st.name)
                    inbox.append(self._run_activity(instance_id, action.id, st))
                elif kind == "createTimer":
                    fire_at = action.createTimer.fireAt.ToDatetime(tzinfo=UTC)
                    history.append(
                        pb.HistoryEvent(
                            eventId=action.id,
                            timestamp=_ts(clock),
                            timerCreated=pb.TimerCreatedEvent(fireAt=action.createTimer.fireAt),
                        )
                    )
                    if fire_at.year != NEVER_YEAR:
                        timers.append((fire_at, action.id))
                elif kind == "createChildWorkflow":
                    cw = action.createChildWorkflow
                    history.append(
                        ph.new_child_workflow_created_event(
                            action.id, cw.name, cw.instanceId, cw.input.value
                        )
                    )
                    child = self.run(cw.name, json.loads(cw.input.value), cw.instanceId)
                    outcome.children.append(child)
                    if child.status == "COMPLETED":
                        inbox.append(
                            ph.new_child_workflow_completed_event(
                                action.id, json.dumps(child.output)
                            )
                        )
                    else:
                        inbox.append(
                            pb.HistoryEvent(
                                eventId=-1,
                                timestamp=_ts(clock),
                                childWorkflowInstanceFailed=pb.ChildWorkflowInstanceFailedEvent(
                                    taskScheduledId=action.id, failureDetails=child.failure
                                ),
                            )
                        )
                elif kind == "completeWorkflow":
                    cw = action.completeWorkflow
                    status = pb.OrchestrationStatus.Name(cw.workflowStatus).removeprefix(
                        "ORCHESTRATION_STATUS_"
                    )
                    if status == "CONTINUED_AS_NEW":
                        history = []
                        new = [
                            ph.new_workflow_started_event(clock),
                            ph.new_execution_started_event(name, instance_id, cw.result.value),
                        ]
                        timers = []
                        outcome.runs += 1
                        break
                    outcome.status = status
                    outcome.output = json.loads(cw.result.value) if cw.result.value else None
                    outcome.failure = cw.failureDetails if cw.HasField("failureDetails") else None
                    outcome.elapsed = clock - START
                    return outcome
                else:
                    raise AssertionError(f"the replayer does not handle {kind}")
            else:
                if not inbox:
                    if not timers:
                        outcome.elapsed = clock - START
                        return outcome  # waiting for something that will never come
                    timers.sort()
                    fire_at, timer_id = timers.pop(0)
                    clock = max(clock, fire_at)
                    inbox.append(
                        pb.HistoryEvent(
                            eventId=-1,
                            timestamp=_ts(clock),
                            timerFired=pb.TimerFiredEvent(fireAt=_ts(fire_at), timerId=timer_id),
                        )
                    )
                new = [ph.new_workflow_started_event(clock), *inbox]
        raise AssertionError(f"{instance_id} did not finish in {max_turns} turns")

    def _run_activity(
        self, instance_id: str, task_id: int, st: pb.ScheduleTaskAction
    ) -> pb.HistoryEvent:
        fn = self._registry.activities.get(st.name)
        try:
            result = worker._ActivityExecutor(self._logger).execute(
                fn, instance_id, st.name, task_id, st.input.value, st.taskExecutionId
            )
        except Exception as exc:  # noqa: BLE001 - becomes taskFailed, as in the engine
            return ph.new_task_failed_event(task_id, exc)
        return ph.new_task_completed_event(task_id, result)


def _ts(when: datetime) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(when)
    return ts
