"""Rows for page tests (and the browser tests' server): the real engine's recorded histories
stored the way the indexer stores them, plus running instances cut from them."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.db import transaction

from tests.pages import golden_rows
from workflows_ui.models import Engine, HistoryEvent, Instance, Run, StatusCount

STATUS_PREFIX = "ORCHESTRATION_STATUS_"


@dataclass
class Seeded:
    engine: Engine
    instances: dict[str, Instance] = field(default_factory=dict)


def store(
    engine: Engine,
    record: dict[str, Any],
    instance_id: str | None = None,
    status: str | None = None,
    cut: int | None = None,
    history: list[dict[str, Any]] | None = None,
    **fields: Any,
) -> Instance:
    """An instance, its run and its events from a recorded history (``cut``: only the first
    events, as if the run were still going)."""
    st = record["get_instance"]["workflowState"]
    events = golden_rows.events(history if history is not None else record["history"])
    if cut is not None:
        events = events[:cut]
    started = next(e for e in events if e.event_type == "executionStarted")
    status = status or st["workflowStatus"].removeprefix(STATUS_PREFIX)
    created = started.timestamp
    last = max(e.timestamp for e in events if e.timestamp)
    values: dict[str, Any] = {
        "engine": engine,
        "instance_id": instance_id or st["instanceId"],
        "name": st["name"],
        "status": status,
        "created_at": created,
        "last_updated_at": last,
        "started_at": created,
        "completed_at": last if cut is None else None,
        "input": st.get("input", ""),
        "input_size": len(st.get("input", "")),
        "output": st.get("output", "") if cut is None else "",
        "output_size": len(st.get("output", "")) if cut is None else 0,
        "custom_status": st.get("customStatus", ""),
        "custom_status_size": len(st.get("customStatus", "")),
        "current_execution_id": started.execution_id,
    }
    fd = st.get("failureDetails")
    if fd and cut is None:
        values.update(
            failure_type=fd.get("errorType", ""),
            failure_message=fd.get("errorMessage", ""),
            failure_stack_trace=fd.get("stackTrace", ""),
        )
    if started.parent is not None:
        values.update(
            parent_engine=engine,
            parent_instance_id=started.parent.instance_id,
            parent_execution_id=started.parent.execution_id,
            parent_app_id=started.parent.app_id,
        )
    values.update(fields)
    inst = Instance.objects.create(**values)
    run = Run.objects.create(
        instance=inst,
        execution_id=started.execution_id,
        ordinal=1,
        name=inst.name,
        status=status,
        started_at=created,
        completed_at=values["completed_at"],
        input=values["input"],
        event_count=len(events),
    )
    HistoryEvent.objects.bulk_create(
        HistoryEvent(
            run=run,
            position=i,
            event_id=e.event_id,
            event_type=e.event_type,
            name=e.name,
            timestamp=e.timestamp,
            related_id=e.related_id,
            details=e.details,
        )
        for i, e in enumerate(events)
    )
    count, _ = StatusCount.objects.get_or_create(engine=engine, name=inst.name, status=status)
    StatusCount.objects.filter(pk=count.pk).update(count=count.count + 1)
    return inst


@transaction.atomic
def seed_all(engine_name: str = "orders") -> Seeded:
    engine, _ = Engine.objects.get_or_create(
        name=engine_name, defaults={"address": "127.0.0.1:50001", "reachable": True}
    )
    out = Seeded(engine)
    for name in (
        "two_steps",
        "with_retry",
        "activity_fails",
        "custom_status",
        "approval_timeout",
        "suspend_event_resume",
        "terminated",
        "continue_as_new",
    ):
        rec = golden_rows.load(name)
        out.instances[name] = store(engine, rec)
    fan = golden_rows.load("fan_out_children")
    out.instances["fan_out"] = store(engine, fan)
    for child_id, child_history in fan["children"].items():
        child_state = {
            "get_instance": {
                "workflowState": {
                    "instanceId": child_id,
                    "name": "line_item",
                    "workflowStatus": "ORCHESTRATION_STATUS_COMPLETED",
                    "input": child_history[1]["executionStarted"]["input"],
                }
            },
            "history": child_history,
        }
        out.instances[child_id] = store(engine, child_state)
    # Still going: an approval waiting for its event (with a timeout), a parent waiting on a
    # child that is itself running an activity, a workflow waiting for an event with no timeout.
    out.instances["waiting"] = store(
        engine, golden_rows.load("approval_timeout"), "g-approval-waiting", "RUNNING", cut=4
    )
    fan_history = json.loads(json.dumps(fan["history"]).replace("g-fan-out", "g-fan-running"))
    fan_running = store(engine, fan, "g-fan-running", "RUNNING", cut=4, history=fan_history)
    out.instances["fan_running"] = fan_running
    child_hist = [dict(e) for e in fan["children"]["g-fan-out:0001"]]
    started = dict(child_hist[1]["executionStarted"])
    started["workflowInstance"] = {"instanceId": "g-fan-running:0001", "executionId": "x-1"}
    started["parentInstance"] = {
        **started["parentInstance"],
        "workflowInstance": {"instanceId": "g-fan-running", "executionId": "p-1"},
    }
    child_hist[1] = {**child_hist[1], "executionStarted": started}
    out.instances["fan_running_child"] = store(
        engine,
        {
            "get_instance": {
                "workflowState": {
                    "instanceId": "g-fan-running:0001",
                    "name": "line_item",
                    "workflowStatus": "RUNNING",
                }
            }
        },
        status="RUNNING",
        history=child_hist,
        cut=3,
    )
    out.instances["forever"] = store(
        engine,
        golden_rows.load("terminated"),
        "g-waits-forever",
        "RUNNING",
        cut=3,
        custom_status='"waiting for go"',
        custom_status_size=16,
    )
    for i, inst in enumerate(Instance.objects.order_by("created_at", "id")):
        # Distinct creation times a second apart, in seeding order, so lists sort predictably.
        base = inst.created_at.replace(microsecond=0) + timedelta(seconds=i)
        Instance.objects.filter(pk=inst.pk).update(created_at=base)
    return out
