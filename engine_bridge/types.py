"""Plain Python objects the engine client hands to the rest of the console (no protobuf)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

#: OrchestrationStatus numbers -> the names the console stores (workflows_ui.models.Status).
STATUS_NAMES = {
    0: "RUNNING",
    1: "COMPLETED",
    2: "CONTINUED_AS_NEW",
    3: "FAILED",
    4: "CANCELED",
    5: "TERMINATED",
    6: "PENDING",
    7: "SUSPENDED",
    8: "STALLED",
}
TERMINAL = frozenset({"COMPLETED", "FAILED", "TERMINATED", "CANCELED"})
#: History event types, as stored: the HistoryEvent ``eventType`` oneof of the pinned protocol
#: (in its order; a test holds this to the generated stubs), and ``unknown`` for an event of a
#: type newer than those stubs.
EVENT_TYPES = (
    "executionStarted",
    "executionCompleted",
    "executionTerminated",
    "taskScheduled",
    "taskCompleted",
    "taskFailed",
    "childWorkflowInstanceCreated",
    "childWorkflowInstanceCompleted",
    "childWorkflowInstanceFailed",
    "timerCreated",
    "timerFired",
    "workflowStarted",
    "workflowCompleted",
    "eventSent",
    "eventRaised",
    "continueAsNew",
    "executionSuspended",
    "executionResumed",
    "executionStalled",
    "detachedWorkflowInstanceCreated",
    "unknown",
)


@dataclass(frozen=True)
class Failure:
    type: str = ""
    message: str = ""
    stack_trace: str = ""


@dataclass(frozen=True)
class InstanceState:
    """GetInstance's answer for an instance that exists."""

    instance_id: str
    name: str
    status: str
    created_at: datetime | None
    last_updated_at: datetime | None
    version: str = ""
    started_at: datetime | None = None
    completed_at: datetime | None = None
    scheduled_start_at: datetime | None = None
    #: Payloads: None when the engine sent none (not asked, or unset).
    input: str | None = None
    output: str | None = None
    custom_status: str | None = None
    failure: Failure | None = None
    execution_id: str = ""
    parent_instance_id: str = ""
    parent_app_id: str = ""


@dataclass(frozen=True)
class InstancePage:
    instance_ids: list[str]
    #: Empty on the last page.
    continuation_token: str


@dataclass(frozen=True)
class ParentRef:
    instance_id: str
    execution_id: str = ""
    app_id: str = ""
    name: str = ""
    task_scheduled_id: int | None = None


@dataclass
class Event:
    """One history event: the fields the console indexes, plus the payload as JSON."""

    event_id: int
    event_type: str
    timestamp: datetime | None
    name: str = ""
    #: Pairing: taskScheduledId of completions/failures, timerId of timerFired.
    related_id: int | None = None
    details: dict[str, Any] = field(default_factory=dict)
    #: ``details`` as JSON text (the mappers encode it; empty when made otherwise).
    details_json: str = ""
    # Only for executionStarted:
    execution_id: str = ""
    parent: ParentRef | None = None
    trace_parent: str = ""
    input: str | None = None
    # workflowStarted: the version the SDK ran; executionStalled: reason / description.
    version: str = ""
    stall_reason: str = ""
    stall_description: str = ""
    # router.sourceAppID: the app that wrote the event.
    source_app_id: str = ""


def trace_id_of(trace_parent: str) -> str:
    """The trace id of a W3C traceparent ("00-<trace id>-<span id>-<flags>"), or ""."""
    parts = trace_parent.split("-")
    if len(parts) >= 4 and len(parts[1]) == 32 and parts[1] != "0" * 32:
        try:
            int(parts[1], 16)
        except ValueError:
            return ""
        return parts[1].lower()
    return ""
