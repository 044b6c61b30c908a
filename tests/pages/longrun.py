"""A synthetic long run, stored the way the indexer stores histories: a workflow looping over
thousands of activities (a few failing once and retried after a delay, a timer now and then, a
child workflow per thousand items), still running at the end with an activity in flight and an
event wait raced by a timeout. Used by the detail-page tests and ``bench/detail_page.py``."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from workflows_ui.models import Engine, HistoryEvent, Instance, Run, Status

ACTIVITIES = ("fetch_page", "parse_page", "store_rows", "notify", "checksum")
T0 = datetime(2026, 11, 1, 8, 0, tzinfo=UTC)


def _ts(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def events(n_events: int) -> Iterator[dict[str, Any]]:
    """About ``n_events`` events (the last turn may add a few), as HistoryEvent field values."""
    t = T0
    eid = 0
    n = 0

    def ev(event_type: str, event_id: int = -1, name: str = "", **details: Any) -> dict[str, Any]:
        nonlocal n
        n += 1
        related = details.get("taskScheduledId", details.get("timerId"))
        return {
            "event_id": event_id,
            "event_type": event_type,
            "name": name,
            "timestamp": t,
            "related_id": related,
            "details": details,
        }

    yield ev("workflowStarted")
    yield ev("executionStarted", name="crawl", input='{"site": "example.org", "pages": 20000}')
    item = 0
    prev: tuple[str, int] | None = None
    while n < n_events - 12:
        name = ACTIVITIES[item % len(ACTIVITIES)]
        arg = f'{{"item": {item}, "url": "https://example.org/page/{item}", "attempt": 1}}'
        t += timedelta(milliseconds=40)
        yield ev("workflowStarted")
        if prev is not None:
            pname, pid = prev
            yield ev("taskCompleted", name=pname, taskScheduledId=pid, result=f'{{"ok": {item}}}')
        if item % 100 == 7:
            # Fails once, retried after a 1 s delay.
            yield ev("taskScheduled", eid, name, input=arg)
            t += timedelta(milliseconds=30)
            yield ev("workflowStarted")
            yield ev(
                "taskFailed",
                name=name,
                taskScheduledId=eid,
                failureDetails={"errorType": "TimeoutError", "errorMessage": "upstream timeout"},
            )
            eid += 1
            fire = t + timedelta(seconds=1)
            yield ev("timerCreated", eid, fireAt=_ts(fire), activityRetry={"taskExecutionId": "x"})
            t = fire
            yield ev("workflowStarted")
            yield ev("timerFired", timerId=eid, fireAt=_ts(fire))
            eid += 1
        if item % 500 == 250:
            fire = t + timedelta(seconds=2)
            yield ev("timerCreated", eid, fireAt=_ts(fire), createTimer={})
            t = fire
            yield ev("workflowStarted")
            yield ev("timerFired", timerId=eid, fireAt=_ts(fire))
            eid += 1
        if item % 1000 == 500:
            child = f"crawl-child-{item}"
            yield ev("childWorkflowInstanceCreated", eid, "crawl_section", instanceId=child)
            t += timedelta(seconds=3)
            yield ev("workflowStarted")
            yield ev("childWorkflowInstanceCompleted", name="crawl_section", taskScheduledId=eid)
            eid += 1
        yield ev("taskScheduled", eid, name, input=arg)
        prev = (name, eid)
        eid += 1
        item += 1
    # Still going: the last activity is in flight, and an approval is awaited with a timeout.
    t += timedelta(milliseconds=40)
    yield ev("workflowStarted")
    yield ev(
        "timerCreated",
        eid,
        "approval",
        fireAt="9999-12-31T23:59:59.999999999Z",
        externalEvent={"name": "approval"},
    )
    eid += 1
    yield ev("timerCreated", eid, fireAt=_ts(t + timedelta(hours=1)), createTimer={})


def store(engine: Engine, instance_id: str, n_events: int, batch: int = 5000) -> Run:
    """A running instance whose one run holds about ``n_events`` events."""
    rows = list(events(n_events))
    inst = Instance.objects.create(
        engine=engine,
        instance_id=instance_id,
        name="crawl",
        status=Status.RUNNING,
        created_at=T0,
        last_updated_at=rows[-1]["timestamp"],
        started_at=T0,
        input='{"site": "example.org", "pages": 20000}',
        input_size=39,
        current_execution_id=f"{instance_id}-exec",
    )
    run = Run.objects.create(
        instance=inst,
        execution_id=f"{instance_id}-exec",
        ordinal=1,
        name="crawl",
        status=Status.RUNNING,
        started_at=T0,
        event_count=len(rows),
    )
    for start in range(0, len(rows), batch):
        HistoryEvent.objects.bulk_create(
            HistoryEvent(run=run, position=start + i, **row)
            for i, row in enumerate(rows[start : start + batch])
        )
    return run
