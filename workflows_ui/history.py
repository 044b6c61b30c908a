"""Reading a run's history: the timeline's bars and what the run is waiting on.

Pure functions over ``EventRow`` (a lean copy of ``HistoryEvent``), tested with the real engine's
recorded histories; only ``load_rows`` touches the database. Pairing follows PROTOCOL.md:
taskScheduled.eventId = taskCompleted/Failed.taskScheduledId, timerCreated.eventId =
timerFired.timerId, childWorkflowInstanceCreated.eventId = childWorkflowInstance*.taskScheduledId.
A timerCreated with origin externalEvent is the SDK's record of "waiting for event X", never a
timer of its own: its fireAt is 9999-12-31 for a wait without timeout, else the timeout.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from django.db.models import (
    Case,
    CharField,
    Count,
    Exists,
    F,
    Max,
    Min,
    OuterRef,
    Q,
    Subquery,
    Value,
    When,
    Window,
)
from django.db.models.fields.json import KT
from django.db.models.functions import RowNumber

#: Types whose ``info`` carries something the timeline needs (see ``info_of``).
_INFO_KEYS = {
    "timerCreated": ("fireAt",),
    "taskScheduled": ("taskExecutionId",),
    "childWorkflowInstanceCreated": ("instanceId",),
    "taskFailed": ("failureDetails", "errorMessage"),
    "childWorkflowInstanceFailed": ("failureDetails", "errorMessage"),
    "executionSuspended": ("input",),
    "executionResumed": ("input",),
}
_TIMER_ORIGINS = ("externalEvent", "activityRetry", "childWorkflowRetry", "createTimer")
#: The fire time of the SDK's "waiting for an event" timer.
NEVER = datetime.max.replace(tzinfo=UTC)
#: The status to read a run with when it is stored with none: it ended unseen (the id was
#: started again before the indexer read how it ended).
ENDED_UNSEEN = "ENDED"
#: Statuses of a run that has ended.
TERMINAL = frozenset(
    {"COMPLETED", "FAILED", "TERMINATED", "CANCELED", "CONTINUED_AS_NEW", ENDED_UNSEEN}
)


@dataclass(slots=True)
class EventRow:
    """What the timeline and "waiting on" need of one history event."""

    position: int
    event_id: int
    event_type: str
    name: str = ""
    timestamp: datetime | None = None
    related_id: int | None = None
    #: timerCreated: fireAt; taskScheduled: taskExecutionId; childWorkflowInstanceCreated: the
    #: child's instance id; taskFailed/childWorkflowInstanceFailed: the error message.
    info: str = ""
    #: timerCreated only: createTimer, externalEvent, activityRetry or childWorkflowRetry.
    origin: str = ""


def info_of(event_type: str, details: dict[str, Any]) -> tuple[str, str]:
    """``(info, origin)`` of an event from its details (protobuf JSON mapping)."""
    info: Any = details
    for key in _INFO_KEYS.get(event_type, ()):
        info = info.get(key) if isinstance(info, dict) else None
    if not isinstance(info, str):
        info = ""
    origin = ""
    if event_type == "timerCreated":
        origin = next((o for o in _TIMER_ORIGINS if o in details), "createTimer")
    return info, origin


def row_of(ev: Any) -> EventRow:
    """An ``EventRow`` from anything shaped like ``HistoryEvent`` (a model row, a test double)."""
    info, origin = info_of(ev.event_type, ev.details or {})
    return EventRow(
        position=ev.position,
        event_id=ev.event_id,
        event_type=ev.event_type,
        name=ev.name,
        timestamp=ev.timestamp,
        related_id=ev.related_id,
        info=info,
        origin=origin,
    )


def _info_expr() -> Case:
    return Case(
        *[
            When(event_type=etype, then=KT("details__" + "__".join(keys)))
            for etype, keys in _INFO_KEYS.items()
        ],
        default=Value(""),
        output_field=CharField(),
    )


def _origin_expr() -> Case:
    return Case(
        *[
            When(Q(event_type="timerCreated") & Q(details__has_key=o), then=Value(o))
            for o in _TIMER_ORIGINS[:-1]
        ],
        When(event_type="timerCreated", then=Value("createTimer")),
        default=Value(""),
        output_field=CharField(),
    )


def load_rows(
    run_pk: int, types: Iterable[str] | None = None, limit: int | None = None
) -> list[EventRow]:
    """The events of a run (all of them, or the first ``limit`` of ``types``) as ``EventRow``, in
    one query that reads from ``details`` only the few keys the timeline needs."""
    from workflows_ui.models import HistoryEvent

    qs = HistoryEvent.objects.filter(run_id=run_pk)
    order: Any = "position"
    if types is not None:
        qs = qs.filter(event_type__in=list(types))
        # Sorting on an expression keeps SQLite from walking the whole run in position order
        # to find a few events of these types: it reads them through wf_event_run_type_pos.
        order = F("position") + 0
    rows = (
        qs.order_by(order)
        .values_list("position", "event_id", "event_type", "name", "timestamp", "related_id")
        .annotate(info=_info_expr(), origin=_origin_expr())
    )
    if limit is not None:
        rows = rows[:limit]
    return [EventRow(p, e, t, n, ts, r, i or "", o or "") for p, e, t, n, ts, r, i, o in rows]


#: Per completion type, the type of the event it answers: the one whose eventId is its related
#: id (PROTOCOL.md, "Pairing for timelines").
ANSWERED_TYPE = {
    "taskCompleted": "taskScheduled",
    "taskFailed": "taskScheduled",
    "childWorkflowInstanceCompleted": "childWorkflowInstanceCreated",
    "childWorkflowInstanceFailed": "childWorkflowInstanceCreated",
    "timerFired": "timerCreated",
}


#: Positions before a page of history that the events its completions answer are looked for
#: in: a fan-out of this many activities still links each completion to its scheduling.
ANSWER_REACH = 10_000


def answered_positions(run_id: int, events: Sequence[Any]) -> dict[int, int]:
    """For each completion among ``events`` (of one run, a page of its history), by position:
    the position of the event it answers, the latest of its type with its related id before it
    (none for one whose event is not stored).

    One query for the page, reading the events of the answered types from wf_event_run_type_pos
    (no index holds eventId) in the ``ANSWER_REACH`` positions before the page: a bounded read
    in the biggest run. A subquery per completion, walking back from it, read up to the whole
    fan-out for each: a page of a 2,000-activity fan-out's completions took 25 ms, growing with
    the fan-out. An answered event further back than that is not linked."""
    from workflows_ui.models import HistoryEvent

    asked = [
        (ev.position, ANSWERED_TYPE[ev.event_type], ev.related_id)
        for ev in events
        if ev.event_type in ANSWERED_TYPE and ev.related_id is not None
    ]
    if not asked:
        return {}
    found: dict[tuple[str, int], list[int]] = {}
    first, last = min(p for p, _, _ in asked), max(p for p, _, _ in asked)
    for event_type, event_id, position in (
        HistoryEvent.objects.filter(
            run_id=run_id,
            event_type__in={t for _, t, _ in asked},
            position__gte=first - ANSWER_REACH,
            position__lt=last,
            event_id__in={i for _, _, i in asked},
        )
        .order_by("-position")
        .values_list("event_type", "event_id", "position")[: ANSWER_REACH + len(asked)]
    ):
        found.setdefault((event_type, event_id), []).insert(0, position)
    answered: dict[int, int] = {}
    for position, event_type, event_id in asked:
        before = [p for p in found.get((event_type, event_id), []) if p < position]
        if before:
            answered[position] = before[-1]
    return answered


def unfired_timers(run_id: int, events: Sequence[Any], to_the_end: bool) -> set[int]:
    """The positions of the timerCreated among ``events`` (of one run, a page of its history
    in order) that no timerFired of the run answers. A timerFired comes after its timer: when
    ``events`` are all those from the first to the run's last, the page says which; else one
    query through ``wf_event_run_related``."""
    from workflows_ui.models import HistoryEvent

    created = {ev.event_id: ev.position for ev in events if ev.event_type == "timerCreated"}
    unfired = set(created) - {ev.related_id for ev in events if ev.event_type == "timerFired"}
    if unfired and not to_the_end:
        unfired -= set(
            HistoryEvent.objects.filter(
                run_id=run_id, event_type="timerFired", related_id__in=list(unfired)
            ).values_list("related_id", flat=True)
        )
    return {created[i] for i in unfired}


def end_unread(run_id: int, status: str) -> bool:
    """Whether the run ended in a turn the console has no event of: one in no history (see
    ``Timeline.end_unread``), or, for a run that completed, failed or was terminated, one not
    indexed yet (the engine's state read, its history as of an earlier read: a timer may have
    fired in the events not read)."""
    from workflows_ui.models import HistoryEvent

    if status not in TERMINAL:
        return False
    return not HistoryEvent.objects.filter(run_id=run_id, event_type="executionCompleted").exists()


# --- the timeline -------------------------------------------------------------------------------


@dataclass(slots=True)
class Bar:
    """Something that took time in a run: an activity attempt, a timer, a child workflow or a
    wait for an external event. ``end`` is None while it is still going on."""

    kind: str  # activity | timer | retry | child | event
    label: str
    start: datetime | None
    end: datetime | None
    outcome: str  # running | completed | failed | fired | pending | received | timed-out | ...
    position: int
    end_position: int | None = None
    event_id: int = -1
    attempt: int = 1
    #: For timers: when it fires; for an event wait raced by a timer: that timer's fire time.
    due: datetime | None = None
    detail: str = ""
    #: child workflows: the child's instance id.
    child_id: str = ""
    #: an event wait raced by a real timer (when_any with a timeout): that timer's eventId.
    timeout_timer: int | None = None

    @property
    def is_open(self) -> bool:
        return self.end is None


@dataclass(slots=True)
class Marker:
    """A moment of the run: a turn, an event received, suspend/resume, a stall, the end."""

    kind: str  # turn | event | suspended | resumed | stalled | terminated | completed
    label: str
    at: datetime | None
    position: int


@dataclass(slots=True)
class Group:
    """Bars of one kind and label taken together: first start to last end, with how many there
    were, how many failed and how many are still going."""

    kind: str
    label: str
    count: int
    first: datetime | None
    last: datetime | None
    position: int
    failed: int = 0
    open: int = 0


@dataclass
class Timeline:
    start: datetime | None
    end: datetime | None
    finished: bool
    bars: list[Bar] = field(default_factory=list)
    markers: list[Marker] = field(default_factory=list)
    turns: list[Marker] = field(default_factory=list)
    #: The executionSuspended event the run is suspended by (None: not suspended).
    suspended_by: EventRow | None = None
    #: The run ended in a turn the console has no event of (``end_unread``): it continued as new
    #: (that turn is in no history: the engine replaces the history in it), ended unseen, or
    #: ended after the history the indexer read. What still ran is "not read", not abandoned.
    end_unread: bool = False
    #: Set for a run summarized in SQL (``summarize``): the groups replace ``bars``, and
    #: ``turns`` holds one marker per bucket of turns.
    groups: list[Group] | None = None
    #: For a summarized run: how many bars and turns there are in all.
    bar_total: int = 0
    turn_total: int = 0
    #: For a summarized run: how many things it waits on beyond those ``waiting_on`` lists.
    unlisted: int = 0

    @property
    def suspended(self) -> bool:
        return self.suspended_by is not None

    @property
    def suspend_reason(self) -> str:
        return self.suspended_by.info if self.suspended_by is not None else ""


def happened_at(
    event_type: str, details: dict[str, Any], timestamp: datetime | None
) -> datetime | None:
    """When an event happened. The engine stamps timerFired when it creates the timer (daprd
    does, see the recorded histories): a timer fired at its fireAt."""
    if event_type == "timerFired":
        fired = parse_time(str(details.get("fireAt") or ""))
        if fired is not None and fired is not NEVER:
            return fired
    return timestamp


def parse_time(text: str) -> datetime | None:
    """An RFC 3339 time from the protobuf JSON mapping (nanoseconds cut to microseconds)."""
    if not text:
        return None
    if text.startswith("9999-"):
        return NEVER
    text = text.replace("Z", "+00:00")
    if "." in text:
        head, _, rest = text.partition(".")
        digits = "".join(itertools.takewhile(str.isdigit, rest))
        tz = rest[len(digits) :]
        text = f"{head}.{digits[:6].ljust(6, '0')}{tz}"
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


def is_sentinel(row: EventRow) -> bool:
    """The timer the SDK records for a wait on an external event (fires only as its timeout)."""
    return row.origin == "externalEvent" or row.info.startswith("9999-")


def build_timeline(
    events: Iterable[EventRow], status: str = "", pair_races: bool = True
) -> Timeline:
    """Bars, turns and markers of a run's history. ``status`` is the run's status: a terminal
    one closes whatever the history leaves open (abandoned when the run ended).
    ``pair_races``: False when ``events`` are a part of each turn's only (see _pair_races)."""
    tl = Timeline(start=None, end=None, finished=False)
    open_tasks: dict[int, Bar] = {}
    open_children: dict[int, Bar] = {}
    open_timers: dict[int, Bar] = {}
    waits: dict[str, deque[Bar]] = {}
    attempts: dict[str, int] = {}
    turn_timers: list[Bar] = []  # real timers created in the current turn
    turn_waits: list[Bar] = []  # event waits (no timeout of their own) of the current turn
    last_ts: datetime | None = None

    for ev in events:
        ts = ev.timestamp
        if ts is not None:
            last_ts = ts if last_ts is None or ts > last_ts else last_ts
        etype = ev.event_type
        if etype == "workflowStarted":
            tl.turns.append(Marker("turn", "turn", ts, ev.position))
            if pair_races:
                _pair_races(turn_waits, turn_timers)
            turn_timers, turn_waits = [], []
            if tl.start is None:
                tl.start = ts
        elif etype == "executionStarted":
            if ts is not None and (tl.start is None or ts < tl.start):
                tl.start = ts
        elif etype == "taskScheduled":
            key = ev.info or f"{ev.name}#{ev.event_id}"
            attempts[key] = attempts.get(key, 0) + 1
            bar = Bar("activity", ev.name, ts, None, "running", ev.position, event_id=ev.event_id)
            bar.attempt = attempts[key]
            open_tasks[ev.event_id] = bar
            tl.bars.append(bar)
        elif etype in ("taskCompleted", "taskFailed"):
            bar_or_none = open_tasks.pop(ev.related_id, None) if ev.related_id is not None else None
            if bar_or_none is not None:
                bar_or_none.end = ts
                bar_or_none.end_position = ev.position
                bar_or_none.outcome = "completed" if etype == "taskCompleted" else "failed"
                bar_or_none.detail = ev.info
        elif etype == "childWorkflowInstanceCreated":
            bar = Bar("child", ev.name, ts, None, "running", ev.position, event_id=ev.event_id)
            bar.child_id = ev.info
            open_children[ev.event_id] = bar
            tl.bars.append(bar)
        elif etype in ("childWorkflowInstanceCompleted", "childWorkflowInstanceFailed"):
            bar_or_none = (
                open_children.pop(ev.related_id, None) if ev.related_id is not None else None
            )
            if bar_or_none is not None:
                bar_or_none.end = ts
                bar_or_none.end_position = ev.position
                failed = etype == "childWorkflowInstanceFailed"
                bar_or_none.outcome = "failed" if failed else "completed"
                bar_or_none.detail = ev.info
        elif etype == "timerCreated":
            if is_sentinel(ev):
                bar = Bar("event", ev.name, ts, None, "waiting", ev.position, event_id=ev.event_id)
                waits.setdefault(ev.name.lower(), deque()).append(bar)
                tl.bars.append(bar)
                fire = parse_time(ev.info)
                if fire is not None and fire != NEVER:
                    # The SDK's wait with a timeout: this timer is the timeout, and fires then.
                    bar.due = fire
                    bar.timeout_timer = ev.event_id
                    open_timers[ev.event_id] = bar
                    continue
                # A timer created in the same turn may race this wait (when_any with a
                # timeout): paired when the turn ends, see _pair_races.
                turn_waits.append(bar)
            else:
                kind = "retry" if ev.origin in ("activityRetry", "childWorkflowRetry") else "timer"
                label = ev.name or ("retry delay" if kind == "retry" else "timer")
                bar = Bar(kind, label, ts, None, "pending", ev.position, event_id=ev.event_id)
                bar.due = parse_time(ev.info)
                open_timers[ev.event_id] = bar
                tl.bars.append(bar)
                if kind == "timer":
                    turn_timers.append(bar)
        elif etype == "timerFired":
            bar_or_none = (
                open_timers.pop(ev.related_id, None) if ev.related_id is not None else None
            )
            if bar_or_none is not None and bar_or_none.kind == "event":
                if bar_or_none.is_open:  # else the event came first
                    bar_or_none.end = bar_or_none.due or ts
                    bar_or_none.end_position = ev.position
                    bar_or_none.outcome = "timed out"
                    waits[bar_or_none.label.lower()].remove(bar_or_none)
            elif bar_or_none is not None:
                # The engine stamps timerFired with its creation time: the fire time is fireAt.
                bar_or_none.end = bar_or_none.due or ts
                bar_or_none.end_position = ev.position
                bar_or_none.outcome = "fired"
                for queue in waits.values():
                    for wait in list(queue):
                        if wait.timeout_timer == bar_or_none.event_id and wait.is_open:
                            wait.end = bar_or_none.end
                            wait.end_position = ev.position
                            wait.outcome = "timed out"
                            queue.remove(wait)
        elif etype == "eventRaised":
            pending = waits.get(ev.name.lower())
            if pending:
                wait = pending.popleft()
                wait.end = ts
                wait.end_position = ev.position
                wait.outcome = "received"
            tl.markers.append(Marker("event", ev.name, ts, ev.position))
        elif etype == "executionSuspended":
            tl.suspended_by = ev
            tl.markers.append(Marker("suspended", ev.info or "suspended", ts, ev.position))
        elif etype == "executionResumed":
            tl.suspended_by = None
            tl.markers.append(Marker("resumed", ev.info or "resumed", ts, ev.position))
        elif etype == "executionStalled":
            tl.markers.append(Marker("stalled", ev.name or "stalled", ts, ev.position))
        elif etype == "executionTerminated":
            tl.markers.append(Marker("terminated", "terminate requested", ts, ev.position))
        elif etype == "executionCompleted":
            tl.finished = True
            tl.end = ts
            tl.markers.append(Marker("completed", ev.name or "completed", ts, ev.position))

    if pair_races:
        _pair_races(turn_waits, turn_timers)
    if tl.start is None:
        tl.start = min((b.start for b in tl.bars if b.start), default=None)
    if status in TERMINAL:
        tl.end_unread = not tl.finished  # as ``end_unread`` says of the run's history
        tl.finished = True
    if tl.finished:
        tl.end = tl.end or last_ts
        for bar in tl.bars:
            if bar.is_open:
                bar.end = tl.end if tl.end and (bar.start is None or tl.end >= bar.start) else None
                bar.outcome = "not read" if tl.end_unread else "abandoned"
        tl.suspended_by = None
    else:
        tl.end = last_ts
    return tl


def _pair_races(waits: list[Bar], timers: list[Bar]) -> None:
    """Pairs the event waits and timers one turn created, in order, as waits raced by their
    timeout (when_any of an event and a timer), when there are as many of each. In other
    numbers they are taken as independent (when_all over 500 waits and 200 timers): pairing
    them would show waits as timed out when an unrelated timer fires, and hide both from
    "waiting on"."""
    if len(waits) == len(timers):
        for wait, timer in zip(waits, timers, strict=True):
            _race(wait, timer)


def _race(wait: Bar, timer: Bar) -> None:
    wait.timeout_timer = timer.event_id
    wait.due = timer.due
    timer.detail = f"timeout of the wait for event {wait.label}"


# --- what the run is waiting on -------------------------------------------------------------------


@dataclass(slots=True)
class Wait:
    kind: str  # activity | timer | retry | child | event
    label: str
    since: datetime | None
    position: int
    #: timers: fire time; event waits: the timeout, when a timer races the wait.
    until: datetime | None = None
    attempt: int = 1
    child_id: str = ""
    #: The child's page and engine, on the engine that runs it (filled in by the view).
    child_url: str = ""
    child_engine: str = ""


def waiting_on(tl: Timeline) -> list[Wait]:
    """What a run that has not finished is waiting for: activities scheduled and not finished,
    timers not fired, events waited for by name (with their timeout), children still running.
    A timer that only races an event wait is shown as that wait's timeout, not on its own."""
    if tl.finished:
        return []
    racing = {b.timeout_timer for b in tl.bars if b.kind == "event" and b.is_open}
    out: list[Wait] = []
    for bar in tl.bars:
        if not bar.is_open:
            continue
        if bar.kind in ("timer", "retry") and bar.event_id in racing:
            continue
        out.append(
            Wait(
                kind=bar.kind,
                label=bar.label,
                since=bar.start,
                position=bar.position,
                until=bar.due,
                attempt=bar.attempt,
                child_id=bar.child_id,
            )
        )
    return out


# --- big runs -------------------------------------------------------------------------------------

#: A run with more events than this gets its timeline summarized in SQL (``summarize``) instead
#: of built from every event: a page never reads a 50,000-event history whole.
FULL_TIMELINE_EVENTS = 5000
#: At most this many things "waiting on" are read for a summarized run.
OPEN_LIMIT = 200
MAX_TURN_BUCKETS = 400
#: At most this many names of open event waits are named in the query that reads them.
NAMES_IN_QUERY = 1000
MAX_MARKERS = 200

_STARTS = ("taskScheduled", "childWorkflowInstanceCreated", "timerCreated")
_ENDS = (
    "taskCompleted",
    "taskFailed",
    "childWorkflowInstanceCompleted",
    "childWorkflowInstanceFailed",
    "timerFired",
)
_MARKER_TYPES = (
    "eventRaised",
    "executionSuspended",
    "executionResumed",
    "executionStalled",
    "executionTerminated",
    "executionCompleted",
)


def load_timeline(run: Any, status: str) -> tuple[Timeline, list[Wait]]:
    """A run's timeline and what it waits on: from every event for ordinary runs, summarized
    in SQL for big ones."""
    if run.event_count <= FULL_TIMELINE_EVENTS:
        tl = build_timeline(load_rows(run.pk), status)
        waits, tl.unlisted = _latest_waits(waiting_on(tl))
        return tl, waits
    return summarize(run.pk, run.event_count, status)


def _latest_waits(waits: list[Wait]) -> tuple[list[Wait], int]:
    """The latest ``OPEN_LIMIT`` waits of each kind (and of each event's name), as a big run's
    are read, and how many are left out: a run of 4,900 events waiting on 4,900 timers listed
    them all, a page of 1.5 MB with its timeline and history 4,900 lines further down."""
    taken: dict[tuple[str, str], int] = {}
    kept: set[int] = set()
    for wait in sorted(waits, key=lambda w: w.position, reverse=True):
        key = (wait.kind, wait.label.lower() if wait.kind == "event" else "")
        if taken.get(key, 0) < OPEN_LIMIT:
            taken[key] = taken.get(key, 0) + 1
            kept.add(wait.position)
    return [w for w in waits if w.position in kept], len(waits) - len(kept)


def summarize(run_pk: int, event_count: int, status: str) -> tuple[Timeline, list[Wait]]:
    """The timeline of a big run as groups (one GROUP BY over the run's events), its turns
    thinned to one per bucket of positions, its first markers, and what it is waiting on read
    from the events that have no completion (an anti-join on ``wf_event_run_related``)."""
    from workflows_ui.models import HistoryEvent

    events = HistoryEvent.objects.filter(run_id=run_pk)
    # Read from wf_event_run_type_pos alone (it covers name and timestamp); timers, whose
    # kind and fire time are in ``details``, apart (there are few).
    aggregates = {
        "n": Count("id"),
        "first": Min("timestamp"),
        "last": Max("timestamp"),
        "first_pos": Min("position"),
    }
    others = [*_STARTS, *_ENDS, "eventRaised", "executionCompleted"]
    others.remove("timerCreated")
    stats: list[dict[str, Any]] = [
        dict(row)
        for row in events.filter(event_type__in=others)
        .values("event_type", "name")
        .annotate(**aggregates)
        .order_by()
    ]
    stats += [
        dict(row)
        for row in events.filter(event_type="timerCreated")
        .values("event_type", "name")
        .annotate(origin=_origin_expr())
        .values("event_type", "name", "origin")
        .annotate(last_fire=Max(KT("details__fireAt")), **aggregates)
        .order_by()
    ]
    by_type: dict[str, list[dict[str, Any]]] = {}
    for row in stats:
        by_type.setdefault(row["event_type"], []).append(row)

    def total(*types: str) -> int:
        return sum(r["n"] for t in types for r in by_type.get(t, []))

    times = [r[k] for r in stats for k in ("first", "last") if r[k] is not None]
    tl = Timeline(start=min(times, default=None), end=max(times, default=None), finished=False)
    completed = by_type.get("executionCompleted")
    if completed or status in TERMINAL:
        tl.finished = True
        if completed:
            tl.end = max((r["last"] for r in completed if r["last"]), default=None) or tl.end

    groups: dict[tuple[str, str], Group] = {}

    def group(kind: str, key: str, row: dict[str, Any], label: str = "") -> Group:
        g = groups.get((kind, key))
        if g is None:
            g = Group(kind, label or key, 0, None, None, row["first_pos"])
            groups[(kind, key)] = g
        return g

    def widen(g: Group, first: datetime | None, last: datetime | None) -> None:
        if first is not None and (g.first is None or first < g.first):
            g.first = first
        if last is not None and (g.last is None or last > g.last):
            g.last = last

    starts = {"taskScheduled": "activity", "childWorkflowInstanceCreated": "child"}
    for etype, kind in starts.items():
        for row in by_type.get(etype, []):
            g = group(kind, row["name"], row)
            g.count += row["n"]
            g.position = min(g.position, row["first_pos"])
            widen(g, row["first"], None)
    ends = {
        "taskCompleted": ("activity", False),
        "taskFailed": ("activity", True),
        "childWorkflowInstanceCompleted": ("child", False),
        "childWorkflowInstanceFailed": ("child", True),
    }
    for etype, (kind, failed) in ends.items():
        for row in by_type.get(etype, []):
            ended = groups.get((kind, row["name"]))
            if ended is not None:
                ended.failed += row["n"] if failed else 0
                widen(ended, None, row["last"])
    raised: dict[str, tuple[int, datetime | None]] = {}
    for row in by_type.get("eventRaised", []):
        n, last = raised.get(row["name"].lower(), (0, None))
        latest = max((t for t in (last, row["last"]) if t is not None), default=None)
        raised[row["name"].lower()] = (n + row["n"], latest)
    for row in by_type.get("timerCreated", []):
        fire = parse_time(row["last_fire"] or "")
        if row["origin"] == "externalEvent" or fire == NEVER:
            g = group("event", row["name"].lower(), row, label=row["name"])
            widen(g, row["first"], raised.get(row["name"].lower(), (0, None))[1])
        elif row["origin"] in ("activityRetry", "childWorkflowRetry"):
            g = group("retry", "retry delay", row)
            widen(g, row["first"], fire)
        else:
            g = group("timer", row["name"] or "timer", row)
            widen(g, row["first"], fire)
        g.count += row["n"]
        g.position = min(g.position, row["first_pos"])

    waits: list[Wait] = []
    if not tl.finished:
        sentinels = sum(g.count for g in groups.values() if g.kind == "event")
        open_counts = {
            "taskScheduled": total("taskScheduled") - total("taskCompleted", "taskFailed"),
            "childWorkflowInstanceCreated": total("childWorkflowInstanceCreated")
            - total("childWorkflowInstanceCompleted", "childWorkflowInstanceFailed"),
            "timerCreated": total("timerCreated") - sentinels - total("timerFired"),
        }
        wait_names = {r["name"] for r in by_type.get("timerCreated", [])}
        # Waits are FIFO: those of a name still open are its waits less its events raised.
        open_waits = {
            key: g.count - raised.get(key, (0, None))[0]
            for (kind, key), g in groups.items()
            if kind == "event"
        }
        open_tl = _open_timeline(run_pk, open_counts, open_waits, wait_names)
        waits = waiting_on(open_tl)
        for bar in open_tl.bars:
            label = bar.label.lower() if bar.kind == "event" else bar.label
            still = groups.get((bar.kind, label))
            if still is not None:
                still.open += 1
        # At most OPEN_LIMIT of each kind (and of each event's name) were read: what is open
        # beyond is counted, not listed.
        tl.unlisted = sum(
            max(0, n - OPEN_LIMIT) for n in [*open_counts.values(), *open_waits.values()]
        )
        _count_open(run_pk, groups, by_type, open_waits, open_counts["timerCreated"] > OPEN_LIMIT)
        tl.suspended_by = _suspended_by(run_pk)

    tl.groups = sorted(groups.values(), key=lambda g: g.position)
    tl.bar_total = sum(g.count for g in tl.groups)
    # One line per bucket of positions: a turn count and its first time, never every turn.
    bucket = max(1, -(-event_count // MAX_TURN_BUCKETS))
    turns = list(
        events.filter(event_type="workflowStarted")
        .annotate(bucket=F("position") / bucket)
        .values("bucket")
        .annotate(at=Min("timestamp"), pos=Min("position"), n=Count("id"))
        .order_by("bucket")
    )
    tl.turns = [Marker("turn", "turn", t["at"], t["pos"]) for t in turns]
    tl.turn_total = sum(t["n"] for t in turns)
    times = [t["at"] for t in turns if t["at"]]
    if times and (tl.start is None or min(times) < tl.start):
        tl.start = min(times)
    tl.markers = [_marker(ev) for ev in load_rows(run_pk, _MARKER_TYPES, MAX_MARKERS)]
    return tl, waits


def _count_open(
    run_pk: int,
    groups: dict[tuple[str, str], Group],
    by_type: dict[str, list[dict[str, Any]]],
    open_waits: dict[str, int],
    timers_beyond_limit: bool,
) -> None:
    """Sets the open count of each group where the bars read (at most ``OPEN_LIMIT`` of a
    kind) are fewer than what is open: activities and children from their starts and ends by
    name, event waits from the waits and the events raised, timers (when more are open than
    were read) from a count of those not fired."""
    from workflows_ui.models import HistoryEvent

    exact: dict[tuple[str, str], int] = {}
    for etype, kind, sign in (
        ("taskScheduled", "activity", 1),
        ("taskCompleted", "activity", -1),
        ("taskFailed", "activity", -1),
        ("childWorkflowInstanceCreated", "child", 1),
        ("childWorkflowInstanceCompleted", "child", -1),
        ("childWorkflowInstanceFailed", "child", -1),
    ):
        for row in by_type.get(etype, []):
            exact[(kind, row["name"])] = exact.get((kind, row["name"]), 0) + sign * row["n"]
    for name, n in open_waits.items():
        exact[("event", name)] = n
    if timers_beyond_limit:
        events = HistoryEvent.objects.filter(run_id=run_pk)
        fired = events.filter(event_type="timerFired", related_id=OuterRef("event_id"))
        unfired = (
            events.filter(event_type="timerCreated")
            .exclude(details__has_key="externalEvent")
            .exclude(details__fireAt__startswith="9999-")
            .exclude(Exists(fired))
            .values("name")
            .annotate(origin=_origin_expr())
            .values("name", "origin")
            .annotate(n=Count("id"))
            .order_by()
        )
        for counted in unfired:
            retry = counted["origin"] in ("activityRetry", "childWorkflowRetry")
            timer = ("retry", "retry delay") if retry else ("timer", counted["name"] or "timer")
            exact[timer] = exact.get(timer, 0) + counted["n"]
    for group_key, g in groups.items():
        g.open = max(g.open, exact.get(group_key, 0))


def _marker(ev: EventRow) -> Marker:
    kinds = {
        "eventRaised": ("event", ev.name),
        "executionSuspended": ("suspended", ev.info or "suspended"),
        "executionResumed": ("resumed", ev.info or "resumed"),
        "executionStalled": ("stalled", ev.name or "stalled"),
        "executionTerminated": ("terminated", "terminate requested"),
        "executionCompleted": ("completed", ev.name or "completed"),
    }
    kind, label = kinds[ev.event_type]
    return Marker(kind, label, ev.timestamp, ev.position)


def _suspended_by(run_pk: int) -> EventRow | None:
    rows = load_rows_last(run_pk, ("executionSuspended", "executionResumed"))
    return rows[0] if rows and rows[0].event_type == "executionSuspended" else None


def load_rows_last(run_pk: int, types: Iterable[str], limit: int = 1) -> list[EventRow]:
    """The last ``limit`` events of ``types`` of a run, newest first.

    A query per type, each read from the end of that type's range of wf_event_run_type_pos.
    In one query for all the types, every event of them was sorted to keep the last (a run
    failing activities by the thousand: 0.15 s on PostgreSQL, 0.5 s on SQLite at 100,000); and
    one ordered by position, the types' last positions found by subqueries, had PostgreSQL
    walk the whole run in position order when it held none of them."""
    from workflows_ui.models import HistoryEvent

    rows: list[Any] = []
    for event_type in dict.fromkeys(types):
        rows += (
            HistoryEvent.objects.filter(run_id=run_pk, event_type=event_type)
            .order_by("-position")
            .values_list("position", "event_id", "event_type", "name", "timestamp", "related_id")
            .annotate(info=_info_expr(), origin=_origin_expr())[:limit]
        )
    rows.sort(key=lambda row: row[0], reverse=True)
    return [
        EventRow(p, e, t, n, ts, r, i or "", o or "") for p, e, t, n, ts, r, i, o in rows[:limit]
    ]


def _open_timeline(
    run_pk: int,
    open_counts: dict[str, int],
    open_waits: dict[str, int],
    wait_names: set[str],
) -> Timeline:
    """A timeline of what is still going on in a big run, built from the events that started
    something and have no completion, each preceded by the start of its turn (so a timer and an
    event wait created in the same turn are seen racing, as in ``build_timeline``).
    ``open_counts``: per start event type, how many have no completion (starts minus ends);
    ``open_waits``: per event name (lower-cased), how many waits for it are still open;
    ``wait_names``: the names of the run's timerCreated events (its event waits' among them)."""
    from workflows_ui.models import HistoryEvent

    events = HistoryEvent.objects.filter(run_id=run_pk)
    completion = events.filter(event_type__in=_ENDS, related_id=OuterRef("event_id"))
    turn = (
        events.filter(event_type="workflowStarted", position__lt=OuterRef("position"))
        .order_by("-position")
        .values("position")[:1]
    )
    sentinel = Q(event_type="timerCreated") & (
        Q(details__has_key="externalEvent") | Q(details__fireAt__startswith="9999-")
    )
    selects = ("position", "event_id", "event_type", "name", "timestamp", "related_id")
    rows: list[Any] = []
    # Per kind of start, as many as the counts say are open, searched newest first (what is
    # still going on is usually recent): a walk down wf_event_run_type_pos that stops there.
    for start_type, expected in open_counts.items():
        if expected <= 0:
            continue
        started = (
            events.filter(event_type=start_type)
            .exclude(sentinel)
            .exclude(Exists(completion))
            .order_by("-position")
            .values_list(*selects)
            .annotate(info=_info_expr(), origin=_origin_expr(), turn=Subquery(turn))
        )
        rows += list(started[: min(expected, OPEN_LIMIT)])
    rows += _open_waits(events.filter(sentinel), wait_names, selects, turn, open_waits)
    out: dict[int, EventRow] = {}
    for p, e, t, n, ts, r, i, o, turn_pos in rows:
        if turn_pos is not None:
            out.setdefault(turn_pos, EventRow(turn_pos, -1, "workflowStarted"))
        out[p] = EventRow(p, e, t, n, ts, r, i or "", o or "")
    # Beyond OPEN_LIMIT, a turn's waits and timers are read in part: their numbers no longer
    # tell races from independent waits.
    capped = any(n > OPEN_LIMIT for n in [*open_counts.values(), *open_waits.values()])
    return build_timeline((out[p] for p in sorted(out)), "RUNNING", pair_races=not capped)


def _open_waits(
    waits: Any,
    names: set[str],
    selects: tuple[str, ...],
    turn: Any,
    open_waits: dict[str, int],
) -> list[Any]:
    """The event waits still open, read for every name in one query (a run may wait on
    hundreds of names: a query each took seconds). Waits are FIFO, so the ones still open are
    the last of each name (``open_waits``), at most ``OPEN_LIMIT`` a name."""
    still = {key: n for key, n in open_waits.items() if n > 0}
    if not still:
        return []
    open_names = [name for name in names if name.lower() in still]
    if len(open_names) <= NAMES_IN_QUERY:  # else all names, rather than a query too long
        waits = waits.filter(name__in=open_names)
    # Ranked per stored spelling of the name (case folding in SQL differs between databases,
    # and from Python's beyond ASCII), then taken per name as Python folds it.
    waits = (
        waits.values_list(*selects)
        .annotate(
            info=_info_expr(),
            origin=_origin_expr(),
            turn=Subquery(turn),
            rank=Window(RowNumber(), partition_by=[F("name")], order_by=F("position").desc()),
        )
        .filter(rank__lte=OPEN_LIMIT)
        .order_by("-position")
    )
    taken: dict[str, int] = {}
    rows = []
    for row in waits:
        key = row[3].lower()
        if taken.get(key, 0) < min(still.get(key, 0), OPEN_LIMIT):
            taken[key] = taken.get(key, 0) + 1
            rows.append(row[:-1])
    return rows
