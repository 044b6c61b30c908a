"""The workflow engine: instance state machine, turns, activities, timers.

It reproduces the behaviour of the Dapr sidecar's workflow engine as PROTOCOL.md describes it.
All state changes run on one asyncio event loop (the gRPC server's), so the engine needs no locks:
every method here is called from that loop, and every change is one SQLite transaction.

Vocabulary:
- a *turn* is one WorkflowRequest handed to a worker: the committed history as pastEvents, and
  as newEvents a fresh workflowStarted followed by the instance's visible inbox. At most one turn
  per instance is in flight; events arriving meanwhile wait for the next turn.
- the *inbox* holds events not yet given to a turn: executionStarted, eventRaised, task and child
  results, suspend/resume/terminate requests, and timerFired events that become visible at fireAt.
- an *activity* is a taskScheduled waiting for its result; it is handed to a worker and handed out
  again if that worker goes away before answering (at-least-once, duplicates dropped).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import json
import logging
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import grpc

from devengine import protos as p
from devengine.retention import RetentionPolicy
from devengine.store import InstanceRow, Store
from devengine.telemetry import Tracing

log = logging.getLogger("devengine")

# A wait for an external event without timeout records a timer at this instant; it never fires.
SENTINEL_YEAR_SECONDS = 253402300799  # 9999-12-31T23:59:59Z
# Events the SDK refuses to replay ("Don't know how to handle event"): kept in the history the
# engine returns, left out of pastEvents.
NOT_REPLAYED = frozenset({"eventSent", "continueAsNew", "workflowCompleted"})
RERUNNABLE = frozenset({"taskScheduled", "timerCreated", "childWorkflowInstanceCreated"})
# The history event each creating action writes, under the action's id.
CREATED_BY = {
    "scheduleTask": "taskScheduled",
    "createTimer": "timerCreated",
    "createChildWorkflow": "childWorkflowInstanceCreated",
}
# daprd's --max-body-size default: the most a gRPC message (a work item too) may hold.
DEFAULT_MAX_BODY_SIZE = 4 * 1024 * 1024
# What an activity's request holds besides its action's fields (ids, trace context), with room.
ACTIVITY_REQUEST_HEADROOM = 64 * 1024
# Retention purges done in a row before other work on the event loop gets a turn: many may be
# due at once after the engine was down.
PURGE_BATCH = 100
# How long after a pass of retention purges failed (the database refused a write, say) the
# next is tried: the purges are left for later, not dropped.
PURGE_RETRY_SECONDS = 1.0


class EngineError(Exception):
    """A request the engine refuses: carries the gRPC status code daprd would answer with."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


class InstanceNotFound(EngineError):
    """The instance does not exist (daprd answers UNKNOWN with this text)."""

    def __init__(self) -> None:
        super().__init__(grpc.StatusCode.UNKNOWN, "no such instance exists")


class NothingToPurge(EngineError):
    """A purge of an instance that does not exist: daprd's executor wraps the not-found error."""

    def __init__(self, cause: str = "no such instance exists") -> None:
        super().__init__(grpc.StatusCode.UNKNOWN, f"failed to purge workflow state: {cause}")


def no_such_instance() -> EngineError:
    return InstanceNotFound()


def now_ns() -> int:
    return time.time_ns()


async def _sleep_until(due_ns: int | None, wakeup: asyncio.Event) -> None:
    """Returns at ``due_ns`` (never, for None), or sooner when ``wakeup`` is set (an earlier due
    time came in), with the wakeup cleared."""
    timeout = None if due_ns is None else max(0.0, (due_ns - now_ns()) / 1e9)
    # asyncio.timeout, not wait_for: Python 3.11's wait_for can swallow a cancel that lands as
    # the wakeup fires, and the loop would run again after the engine stopped.
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):
            await wakeup.wait()
    wakeup.clear()


def timestamp(ns: int) -> p.Timestamp:
    ts = p.Timestamp()
    ts.FromNanoseconds(ns)
    return ts


# Go's time.Time{} as a protobuf Timestamp (0001-01-01T00:00:00Z): what daprd sends for a time
# it doesn't have.
GO_ZERO_TIME = p.Timestamp(seconds=-62135596800)


def history_times(inst: InstanceRow) -> tuple[p.Timestamp, p.Timestamp]:
    """Created and last-updated times as daprd answers them: read from the committed history,
    which is empty until the first turn commits, so a pending instance has Go's zero time for
    both, and no input."""
    if inst.status == p.PENDING:
        return GO_ZERO_TIME, GO_ZERO_TIME
    return timestamp(inst.created_ns), timestamp(inst.updated_ns)


def timestamp_ns(ts: p.Timestamp) -> int:
    return ts.seconds * 1_000_000_000 + ts.nanos


# Nanoseconds since 1970 as SQLite stores them (a signed 64-bit integer): until 2262-04-11.
MAX_NS = 2**63 - 1


def timer_due_ns(fire_at: p.Timestamp) -> int | None:
    """When a timer's timerFired becomes visible, in nanoseconds; None for a timer that never
    fires here: the 9999 sentinel of a wait without timeout, or a time after 2262 (daprd keeps
    it; no engine of today lives to fire it). A time before 1677 is due at once."""
    if fire_at.seconds >= SENTINEL_YEAR_SECONDS:
        return None
    due = timestamp_ns(fire_at)
    return max(due, 0) if due <= MAX_NS else None


def new_event(event_id: int = -1, at_ns: int | None = None) -> p.HistoryEvent:
    event = p.HistoryEvent(eventId=event_id)
    event.timestamp.CopyFrom(timestamp(at_ns if at_ns is not None else now_ns()))
    return event


def workflow_trace(start: p.HistoryEvent | None) -> p.TraceContext | None:
    """The context of a run's workflow span: what its activities, timers and children hang on."""
    if start is None or not start.executionStarted.HasField("parentTraceContext"):
        return None
    started = start.executionStarted
    if started.workflowSpanID.value:
        return Tracing.child(started.parentTraceContext, started.workflowSpanID.value)
    return started.parentTraceContext


@dataclass(eq=False)
class WorkerStream:
    """One open GetWorkItems stream and the work it holds."""

    queue: asyncio.Queue = field(default_factory=asyncio.Queue)
    turns: set[str] = field(default_factory=set)
    activities: set[int] = field(default_factory=set)


@dataclass
class Turn:
    token: str
    instance_id: str
    execution_id: str
    inbox_ids: list[int]
    new_events: list[p.HistoryEvent]
    start_event: p.HistoryEvent | None
    history: list[p.HistoryEvent]
    past_patches: list[str]  # every patch recorded so far, in order
    last_stall: str | None  # description of a stall the history ends with
    version_name: str
    stream: WorkerStream


class Engine:
    def __init__(
        self,
        store: Store,
        app_id: str = "devengine",
        tracing: Tracing | None = None,
        max_body_size: int = DEFAULT_MAX_BODY_SIZE,
        retention: RetentionPolicy | None = None,
    ):
        self.store = store
        self.app_id = app_id
        self.max_body_size = max_body_size
        self.retention = retention
        # When the earliest retention purge stored with the instances is due (None: none is).
        self._next_purge_ns: int | None = None
        self.tracing = tracing or Tracing(endpoint="")
        self.streams: list[WorkerStream] = []
        self._rr = 0
        self.ready: dict[str, None] = {}  # ordered set of instances that may need a turn
        self.turns: dict[str, Turn] = {}
        self.turn_by_instance: dict[str, str] = {}
        self.deferred: set[str] = set()  # got events while a turn was in flight
        # The re-creation each instance's last rejected turn was logged for: the same answer
        # comes back at every turn until one is written (every event raised to a suspended
        # instance brings one), and is said once.
        self.rejected: dict[str, tuple[str, int]] = {}
        self.activity_queue: deque[tuple[int, bytes]] = deque()
        self.timers: list[tuple[int, str]] = []
        self.waiters: dict[str, set[asyncio.Future]] = {}
        self._timer_wakeup: asyncio.Event | None = None
        self._timer_task: asyncio.Task | None = None
        # Retention purges have a task of their own, as daprd's retention reminders are apart
        # from its workflow timers: a backlog of purges must not hold up a timer that is due.
        self._purge_wakeup: asyncio.Event | None = None
        self._purge_task: asyncio.Task | None = None
        self._turn_seq = 0
        self._boot = uuid.uuid4().hex[:8]
        # Called when deliveries to other apps' engines were committed to the outbox.
        self.on_outgoing: Callable[[], None] | None = None
        # Purges an instance of another app recursively on its engine: the count purged, None
        # if that engine does not have it; raises EngineError when it can't.
        self.purge_on_other_app: Callable[[str, str, bool], Awaitable[int | None]] | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def recover(self) -> None:
        """Rebuilds the in-memory queues from the database (at start, after a crash too)."""
        now = now_ns()
        rows = self.store.conn.execute("SELECT instance_id, visible_ns FROM inbox").fetchall()
        for instance_id, visible in rows:
            if visible <= now:
                self.ready[instance_id] = None
            else:
                heapq.heappush(self.timers, (visible, instance_id))
        for (instance_id,) in self.store.conn.execute(
            "SELECT instance_id FROM instances WHERE needs_turn = 1"
        ):
            self.ready[instance_id] = None
        self.activity_queue.extend(self.store.pending_activities())
        self._retry_stalled(on_payload_size=True)
        # Purges that came due while the engine was down are done as soon as it starts.
        self._next_purge_ns = self.store.next_purge_due()
        log.info(
            "recovered %d ready instances, %d timers, %d activities",
            len(self.ready),
            len(self.timers),
            len(self.activity_queue),
        )

    async def start(self) -> None:
        self.recover()
        self._timer_wakeup = asyncio.Event()
        self._timer_task = asyncio.create_task(self._run_timers())
        self._purge_wakeup = asyncio.Event()
        self._purge_task = asyncio.create_task(self._run_purges())

    async def stop(self) -> None:
        tasks = [task for task in (self._timer_task, self._purge_task) if task]
        for task in tasks:
            task.cancel()
        # Waited for: the store is closed next, and neither loop may touch it after.
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _run_timers(self) -> None:
        assert self._timer_wakeup is not None
        while True:
            await _sleep_until(self.timers[0][0] if self.timers else None, self._timer_wakeup)
            now = now_ns()
            fired = False
            while self.timers and self.timers[0][0] <= now:
                _, instance_id = heapq.heappop(self.timers)
                self.ready[instance_id] = None
                fired = True
            if fired:
                self._pump()

    async def _run_purges(self) -> None:
        assert self._purge_wakeup is not None
        while True:
            await _sleep_until(self._next_purge_ns, self._purge_wakeup)
            if self._next_purge_ns is not None and self._next_purge_ns <= now_ns():
                try:
                    await self._purge_expired()
                except Exception:
                    # Nothing would start this task again: a failure that ended it would stop
                    # every later purge until the engine restarts.
                    log.exception("retention purges failed; tried again shortly")
                    self._next_purge_ns = now_ns() + int(PURGE_RETRY_SECONDS * 1e9)

    # -- retention ---------------------------------------------------------------------------

    def _keep_until(self, inst: InstanceRow, ended_ns: int) -> None:
        """Stores when the retention policy purges the run that just ended, counted from its
        end as daprd counts it (the run's completion time). As daprd's one retention reminder
        per instance, a later run's end replaces the due time, and a state the policy keeps
        for good leaves it as it was."""
        keep = self.retention.keep_ns(inst.status) if self.retention else None
        if keep is None:
            return
        inst.purge_due_ns = ended_ns + keep
        if self._next_purge_ns is None or inst.purge_due_ns < self._next_purge_ns:
            self._next_purge_ns = inst.purge_due_ns
            if self._purge_wakeup is not None:
                self._purge_wakeup.set()

    async def _purge_expired(self) -> None:
        """Purges the instances whose retention ran out, a batch at a time."""
        while True:
            due = self.store.purges_due(now_ns(), PURGE_BATCH)
            for instance_id in due:
                await self._purge_expired_instance(instance_id)
            if len(due) < PURGE_BATCH:
                break
            await asyncio.sleep(0)
        self._next_purge_ns = self.store.next_purge_due()

    async def _purge_expired_instance(self, instance_id: str) -> None:
        """daprd's retention reminder firing: the instance alone is purged (its children have
        due times of their own), as a purge by hand would purge it. One that is not finished
        then (stalled, say) is left alone and loses its due time, as daprd drops the reminder:
        its run gets a due time of its own when it ends."""
        inst = self.store.get_instance(instance_id)
        if inst is not None and inst.status in p.TERMINAL_STATUSES:
            count, error = await self._purge_tree(instance_id, recursive=False, force=False)
            if count:
                log.debug("purged %s: its retention ran out", instance_id)
                return
            log.debug("retention purge of %s dropped: %s", instance_id, error)
        inst = self.store.get_instance(instance_id)
        if inst is not None and inst.purge_due_ns is not None:
            inst.purge_due_ns = None
            with self.store.transaction():
                self.store.update_instance(inst)

    def _add_timer(self, visible_ns: int, instance_id: str) -> None:
        heapq.heappush(self.timers, (visible_ns, instance_id))
        if self._timer_wakeup is not None and self.timers[0][1] == instance_id:
            self._timer_wakeup.set()

    # -- worker streams --------------------------------------------------------------------

    def open_stream(self) -> WorkerStream:
        stream = WorkerStream()
        self.streams.append(stream)
        # A new worker may be able to run what stalled: retry stalled instances.
        self._retry_stalled(on_payload_size=False)
        self._pump()
        return stream

    def _retry_stalled(self, on_payload_size: bool) -> None:
        """Gives stalled instances a turn again: those stalled on the size of their work when
        the engine starts (only a larger --max-body-size changes that, as with daprd), the
        others when a worker connects."""
        stalled = self.store.conn.execute(
            "SELECT instance_id FROM instances WHERE status = ?", (p.STALLED,)
        ).fetchall()
        retried = [
            instance_id
            for (instance_id,) in stalled
            if self._stalled_on_payload_size(instance_id) == on_payload_size
        ]
        if retried:
            with self.store.transaction():
                for instance_id in retried:
                    inst = self.store.get_instance(instance_id)
                    if inst is not None:
                        inst.needs_turn = 1
                        self.store.update_instance(inst)
                        self.ready[instance_id] = None

    def _stalled_on_payload_size(self, instance_id: str) -> bool:
        # The last event alone: such a history is big by definition, and parsed whole it would
        # push the others out of the store's cache at every worker's connect.
        last = self.store.last_history_event(instance_id)
        return (
            last is not None
            and last.HasField("executionStalled")
            and last.executionStalled.reason == p.PAYLOAD_SIZE_EXCEEDED
        )

    def close_stream(self, stream: WorkerStream) -> None:
        """Hands the work a departed worker held to the others (or keeps it for the next)."""
        if stream in self.streams:
            self.streams.remove(stream)
        for token in stream.turns:
            turn = self.turns.pop(token, None)
            if turn and self.turn_by_instance.get(turn.instance_id) == token:
                del self.turn_by_instance[turn.instance_id]
                self.ready[turn.instance_id] = None
        for activity_id in sorted(stream.activities, reverse=True):
            row = self.store.get_activity(activity_id)
            if row is not None:
                self.activity_queue.appendleft((activity_id, row[3]))
        stream.turns.clear()
        stream.activities.clear()
        self._pump()

    def _next_stream(self) -> WorkerStream:
        self._rr = (self._rr + 1) % len(self.streams)
        return self.streams[self._rr]

    def _pump(self) -> None:
        """Hands out every turn and activity that can go to a connected worker."""
        if not self.streams:
            return
        while self.ready:
            instance_id = next(iter(self.ready))
            del self.ready[instance_id]
            if instance_id in self.turn_by_instance:
                self.deferred.add(instance_id)  # ready again once its turn completes
                continue
            stream = self._next_stream()
            item = self._build_turn(instance_id, stream)
            if item is not None:
                stream.queue.put_nowait(item)
        threshold = self._payload_threshold()
        while self.activity_queue:
            # An activity of a purged instance may still go out: its result is dropped.
            activity_id, request = self.activity_queue.popleft()
            if threshold is not None and len(request) > threshold:
                # Scheduled by a re-run, or before a restart with a lower limit: sending it
                # would fail the stream, and the worker would be handed it again forever.
                self._stall_on_activity(p.pb.ActivityRequest.FromString(request))
                continue  # kept in the database: handed out after a restart
            stream = self._next_stream()
            stream.activities.add(activity_id)
            item = p.pb.WorkItem(completionToken=f"a:{activity_id}")
            item.activityRequest.MergeFromString(request)
            stream.queue.put_nowait(item)

    # -- turns -----------------------------------------------------------------------------

    def _build_turn(self, instance_id: str, stream: WorkerStream) -> p.pb.WorkItem | None:
        inst = self.store.get_instance(instance_id)
        if inst is None:
            return None
        now = now_ns()
        inbox = self.store.visible_inbox(instance_id, now)
        if inst.status in p.TERMINAL_STATUSES:
            if inbox:  # a finished instance accepts events and drops them
                with self.store.transaction():
                    self.store.delete_inbox([i for i, _ in inbox])
            return None
        if inst.status == p.STALLED and not inst.needs_turn:
            return None  # waits for a worker that can run it
        if not inbox and not inst.needs_turn:
            return None
        history = self.store.history_events(instance_id)
        inbox_events = [p.HistoryEvent.FromString(b) for _, b in inbox]
        if not history and not (
            inbox_events
            and inbox_events[0].WhichOneof("eventType") in ("executionStarted", "workflowStarted")
        ):
            return None  # not started yet (scheduled start): events wait for executionStarted
        oversize = self._workflow_oversize(history, inbox)
        if oversize is not None:
            self._stall_on_payload_size(inst, oversize)
            return None

        new_events: list[p.HistoryEvent] = []
        if not (inbox_events and inbox_events[0].HasField("workflowStarted")):
            started = new_event(at_ns=now)
            started.workflowStarted.SetInParent()
            new_events.append(started)
        new_events.extend(inbox_events)

        start_event = None
        past_patches: list[str] = []
        version_name = ""
        for event in history:
            kind = event.WhichOneof("eventType")
            if kind == "executionStarted" and start_event is None:
                start_event = event
            elif kind == "workflowStarted" and event.workflowStarted.HasField("version"):
                past_patches.extend(event.workflowStarted.version.patches)
                version_name = version_name or event.workflowStarted.version.name
        if start_event is None:
            start_event = next((e for e in new_events if e.HasField("executionStarted")), None)

        self._turn_seq += 1
        # Tokens name this process too, so an answer to a turn handed out before a restart
        # never matches a turn handed out after it.
        token = f"w:{self._boot}:{self._turn_seq}"
        turn = Turn(
            token=token,
            instance_id=instance_id,
            execution_id=inst.execution_id,
            inbox_ids=[i for i, _ in inbox],
            new_events=new_events,
            start_event=start_event,
            history=history,
            past_patches=past_patches,
            last_stall=(
                history[-1].executionStalled.description
                if history and history[-1].HasField("executionStalled")
                else None
            ),
            version_name=version_name,
            stream=stream,
        )
        self.turns[token] = turn
        self.turn_by_instance[instance_id] = token
        stream.turns.add(token)

        request = p.pb.WorkflowRequest(instanceId=instance_id)
        request.executionId.value = inst.execution_id
        request.pastEvents.extend(
            e for e in history if e.WhichOneof("eventType") not in NOT_REPLAYED
        )
        request.newEvents.extend(new_events)
        return p.pb.WorkItem(workflowRequest=request, completionToken=token)

    def _payload_threshold(self) -> int | None:
        """As daprd: a work item may fill 95% of the largest message, the rest is headroom for
        the turn's workflowStarted and gRPC's framing. None when there is no limit."""
        if self.max_body_size <= 0:
            return None
        return self.max_body_size * 95 // 100

    def _workflow_oversize(self, history: list[p.HistoryEvent], inbox: list) -> str | None:
        """daprd's check before a turn: the history and the inbox together must fit, or the
        WorkflowRequest could not be sent and the worker would be handed it again forever."""
        threshold = self._payload_threshold()
        if threshold is None:
            return None
        size = sum(map(p.HistoryEvent.ByteSize, history)) + sum(len(b) for _, b in inbox)
        if size <= threshold:
            return None
        return (
            f"Workflow payload size {size} bytes exceeds 95% of max gRPC body size "
            f"{self.max_body_size} bytes; increase daprd --max-body-size and restart to resume"
        )

    def _activity_oversize(self, turn: Turn, response: p.pb.WorkflowResponse) -> str | None:
        """daprd's check before an activity is handed out, on the request a worker would get."""
        threshold = self._payload_threshold()
        if threshold is None:
            return None
        trace = workflow_trace(turn.start_event)
        for action in response.actions:
            if not action.HasField("scheduleTask"):
                continue
            if action.ByteSize() + ACTIVITY_REQUEST_HEADROOM <= threshold:
                continue  # far from it: no request built and measured for every activity
            event = self._task_scheduled(action, trace, p.TaskRouter())
            request, _ = self._activity_request(
                turn.instance_id, turn.execution_id, action.id, event.taskScheduled, trace
            )
            size = request.ByteSize()
            if size > threshold:
                return self._activity_too_big(request, size)
        return None

    def _activity_too_big(self, request: p.pb.ActivityRequest, size: int) -> str:
        # daprd's error, the text of the cause it wraps included.
        return (
            f"activity '{request.name}::{request.taskId}' payload {size} bytes exceeds 95% of "
            f"max gRPC body size {self.max_body_size} bytes; increase daprd --max-body-size and "
            "restart to resume: activity payload exceeds max gRPC body size"
        )

    def _stall_on_activity(self, request: p.pb.ActivityRequest) -> None:
        """Stalls the workflow of an activity too big to hand out."""
        inst = self.store.get_instance(request.workflowInstance.instanceId)
        if inst is None:
            # Another app's workflow, whose engine measured it against a larger limit than
            # this one's (or a purged one): kept here until a restart with a larger limit.
            description = self._activity_too_big(request, request.ByteSize())
            log.error("%s: not handed out: %s", request.workflowInstance.instanceId, description)
            return
        if (
            inst is not None
            and inst.execution_id == request.workflowInstance.executionId.value
            and inst.status not in p.TERMINAL_STATUSES
        ):
            self._stall_on_payload_size(inst, self._activity_too_big(request, request.ByteSize()))

    def _stall_on_payload_size(self, inst: InstanceRow, description: str) -> None:
        """Stalls an instance whose work is never handed out; its inbox waits for the retry
        (a restart with a larger limit)."""
        history = self.store.history_events(inst.instance_id)
        with self.store.transaction():
            last = history[-1] if history else None
            if last is None or last.executionStalled.description != description:
                stalled = new_event()
                stalled.executionStalled.reason = p.PAYLOAD_SIZE_EXCEEDED
                stalled.executionStalled.description = description
                self.store.append_events(inst.instance_id, len(history), [stalled])
            inst.status = p.STALLED
            inst.needs_turn = 0
            inst.updated_ns = now_ns()
            self.store.update_instance(inst)
        log.warning("%s: stalled: %s", inst.instance_id, description)
        self._notify(inst.instance_id)

    def complete_turn(self, response: p.pb.WorkflowResponse) -> None:
        turn = self.turns.get(response.completionToken)
        if turn is None or turn.instance_id != response.instanceId:
            # A stale answer: the turn was handed out again after its worker left, the engine
            # restarted, or the instance was purged. The newer turn is the one that counts.
            log.info("dropping stale workflow completion for %r", response.instanceId)
            return
        del self.turns[response.completionToken]
        turn.stream.turns.discard(turn.token)
        if self.turn_by_instance.get(turn.instance_id) == turn.token:
            del self.turn_by_instance[turn.instance_id]
        inst = self.store.get_instance(turn.instance_id)
        if inst is None or inst.execution_id != turn.execution_id:
            return
        effects = _Effects()
        with self.store.transaction():
            self._commit_turn(inst, turn, response, effects)
        effects.touched.add(turn.instance_id)
        if turn.instance_id in self.deferred:
            self.deferred.discard(turn.instance_id)
            effects.ready.add(turn.instance_id)
        self._apply_effects(effects)

    def _stall_reason(self, turn: Turn, response: p.pb.WorkflowResponse) -> tuple[int, str] | None:
        if any(a.HasField("workflowVersionNotAvailable") for a in response.actions):
            return p.VERSION_NOT_AVAILABLE, f"Version not available: {turn.version_name}"
        # As daprd: the patches recorded so far must be an exact prefix of what the worker
        # reports for this turn.
        history = turn.past_patches
        current = list(response.version.patches)
        if history and current[: len(history)] != history:
            return p.PATCH_MISMATCH, (
                f"Patch mismatch. History patches: [{', '.join(history)}], "
                f"current patches: [{', '.join(current)}]. "
            )
        oversize = self._activity_oversize(turn, response)
        if oversize is not None:
            return p.PAYLOAD_SIZE_EXCEEDED, oversize
        return None

    def _commit_turn(
        self,
        inst: InstanceRow,
        turn: Turn,
        response: p.pb.WorkflowResponse,
        effects: _Effects,
    ) -> None:
        now = now_ns()
        stall = self._stall_reason(turn, response)
        if stall is not None:
            # The turn's events stay in the inbox for the retry; only the stall is recorded,
            # once for as long as the reason stays the same.
            if turn.last_stall != stall[1]:
                stalled = new_event(at_ns=now)
                stalled.executionStalled.reason = stall[0]  # type: ignore[assignment]
                stalled.executionStalled.description = stall[1]
                self.store.append_events(inst.instance_id, len(turn.history), [stalled])
            inst.status = p.STALLED
            inst.needs_turn = 0
            inst.updated_ns = now
            self.store.update_instance(inst)
            return
        recreated = self._recreated_operation(turn, response)
        if recreated is not None:
            # As daprd's workflow actor since dapr/dapr#10379 (older ones wrote it): a turn that
            # would create again what the history already holds is rejected, and nothing of it
            # is written; its events stay in the inbox for the next turn. The Python SDK answers
            # so while suspended: replaying, it holds back the history's events that follow the
            # suspend, creation events too, and asks again for what they created. Written, each
            # answer would add a timer that is already due and fires at once into the same
            # answer again.
            if self.rejected.get(inst.instance_id) != recreated:
                self.rejected[inst.instance_id] = recreated
                log.warning(
                    "%s: turn rejected: it creates again %s %d of the history (said once until "
                    "a turn of it is written)",
                    inst.instance_id,
                    *recreated,
                )
            return
        self.rejected.pop(inst.instance_id, None)

        new_events = turn.new_events
        if response.HasField("version"):
            version = new_events[0].workflowStarted.version
            version.CopyFrom(response.version)
            # Each turn records only the patches the history does not have yet.
            del version.patches[:]
            version.patches.extend(response.version.patches[len(turn.past_patches) :])
            if not version.patches and not version.name:
                new_events[0].workflowStarted.ClearField("version")
        written: list[p.HistoryEvent] = list(new_events)
        self.store.delete_inbox(turn.inbox_ids)
        inst.needs_turn = 0
        if inst.started_ns is None:
            inst.started_ns = timestamp_ns(new_events[0].timestamp)
        terminate_recurse = False
        for event in new_events:
            kind = event.WhichOneof("eventType")
            if kind == "executionStarted" and inst.status == p.PENDING:
                inst.status = p.RUNNING
            elif kind == "executionSuspended" and inst.status in (p.RUNNING, p.STALLED):
                inst.status = p.SUSPENDED
            elif kind == "executionResumed" and inst.status == p.SUSPENDED:
                inst.status = p.RUNNING
            elif kind == "executionTerminated":
                terminate_recurse = terminate_recurse or event.executionTerminated.recurse
            elif kind == "timerFired" and self.tracing.enabled:
                self._timer_span(inst, turn, event.timerFired.timerId, now)
        if inst.status == p.STALLED:
            inst.status = p.RUNNING
        if response.HasField("customStatus"):
            inst.custom_status = response.customStatus.value
        trace = workflow_trace(turn.start_event)

        for action in response.actions:
            router = p.TaskRouter(sourceAppID=self.app_id)
            if action.HasField("router") and action.router.HasField("targetAppID"):
                router.targetAppID = action.router.targetAppID
            kind = action.WhichOneof("workflowActionType")
            if kind == "completeWorkflow":
                done = action.completeWorkflow
                if done.workflowStatus == p.CONTINUED_AS_NEW:
                    self._continue_as_new(inst, turn, done, router, effects)
                    return
                event = new_event(action.id)
                event.executionCompleted.workflowStatus = done.workflowStatus
                if done.HasField("result"):
                    event.executionCompleted.result.CopyFrom(done.result)
                if done.HasField("failureDetails"):
                    event.executionCompleted.failureDetails.CopyFrom(done.failureDetails)
                event.router.CopyFrom(router)
                written.append(event)
                self._finish(inst, turn, done, terminate_recurse, effects)
            elif kind == "scheduleTask":
                event = self._task_scheduled(action, trace, router)
                written.append(event)
                self._schedule_task(inst, event, trace, effects)
            elif kind == "createTimer":
                timer = action.createTimer
                event = new_event(action.id)
                created = event.timerCreated
                created.fireAt.CopyFrom(timer.fireAt)
                if timer.HasField("name"):
                    created.name = timer.name
                origin = timer.WhichOneof("origin")
                if origin:
                    getattr(created, origin).CopyFrom(getattr(timer, origin))
                event.router.CopyFrom(router)
                written.append(event)
                visible = timer_due_ns(timer.fireAt)
                if visible is not None:
                    fired = new_event(at_ns=now)
                    fired.timerFired.fireAt.CopyFrom(timer.fireAt)
                    fired.timerFired.timerId = action.id
                    self.store.add_inbox(inst.instance_id, fired.SerializeToString(), visible)
                    effects.timers.append((visible, inst.instance_id))
            elif kind == "createChildWorkflow":
                child = action.createChildWorkflow
                child_id = child.instanceId or f"{inst.instance_id}:{action.id:04x}"
                event = new_event(action.id)
                created_child = event.childWorkflowInstanceCreated
                created_child.instanceId = child_id
                created_child.name = child.name
                if child.HasField("version"):
                    created_child.version.CopyFrom(child.version)
                if child.HasField("input"):
                    created_child.input.CopyFrom(child.input)
                if trace is not None:
                    created_child.parentTraceContext.CopyFrom(trace)
                event.router.CopyFrom(router)
                written.append(event)
                self._start_child(inst, turn, action.id, child_id, child, router, trace, effects)
            elif kind == "sendEvent":
                send = action.sendEvent
                event = new_event(action.id)
                event.eventSent.instanceId = send.instance.instanceId
                event.eventSent.name = send.name
                if send.HasField("data"):
                    event.eventSent.input.CopyFrom(send.data)
                event.router.CopyFrom(router)
                written.append(event)
                raised = new_event(at_ns=now)
                raised.eventRaised.name = send.name
                if send.HasField("data"):
                    raised.eventRaised.input.CopyFrom(send.data)
                self._deliver(send.instance.instanceId, raised, effects)
            elif kind == "terminateWorkflow":
                term = action.terminateWorkflow
                event = new_event(at_ns=now)
                if term.HasField("reason"):
                    event.executionTerminated.input.CopyFrom(term.reason)
                else:
                    event.executionTerminated.SetInParent()
                event.executionTerminated.recurse = term.recurse
                self._deliver(term.instanceId, event, effects)
            else:
                log.warning("%s: ignoring unsupported action %s", inst.instance_id, kind)

        self.store.append_events(inst.instance_id, len(turn.history), written)
        inst.updated_ns = now
        self.store.update_instance(inst)

    @staticmethod
    def _recreated_operation(turn: Turn, response: p.pb.WorkflowResponse) -> tuple[str, int] | None:
        """The first task, timer or child the response creates under an id whose creation
        event of the same kind is already in the history, as (event kind, id); None if none.
        A continue-as-new starts the ids again, so it never counts."""
        if any(
            a.HasField("completeWorkflow")
            and a.completeWorkflow.workflowStatus == p.CONTINUED_AS_NEW
            for a in response.actions
        ):
            return None
        creating = [
            (kind, action.id)
            for action in response.actions
            if (kind := CREATED_BY.get(str(action.WhichOneof("workflowActionType"))))
        ]
        if not creating:
            return None  # most turns: not worth a look at the whole history
        created = {(e.WhichOneof("eventType"), e.eventId) for e in turn.history}
        return next((c for c in creating if c in created), None)

    def _timer_span(self, inst: InstanceRow, turn: Turn, timer_id: int, fired_ns: int) -> None:
        created = next(
            (e for e in turn.history if e.eventId == timer_id and e.HasField("timerCreated")),
            None,
        )
        if created is not None:
            self.tracing.timer(
                workflow_trace(turn.start_event),
                inst.name,
                inst.instance_id,
                timer_id,
                timestamp_ns(created.timestamp),
                fired_ns,
            )

    @staticmethod
    def _task_scheduled(
        action: p.WorkflowAction, trace: p.TraceContext | None, router: p.TaskRouter
    ) -> p.HistoryEvent:
        """The taskScheduled event a scheduleTask action writes."""
        task = action.scheduleTask
        event = new_event(action.id)
        scheduled = event.taskScheduled
        scheduled.name = task.name
        if task.HasField("version"):
            scheduled.version.CopyFrom(task.version)
        if task.HasField("input"):
            scheduled.input.CopyFrom(task.input)
        scheduled.taskExecutionId = task.taskExecutionId
        if trace is not None:
            scheduled.parentTraceContext.CopyFrom(trace)
        event.router.CopyFrom(router)
        return event

    @staticmethod
    def _activity_request(
        instance_id: str,
        execution_id: str,
        task_id: int,
        scheduled,
        trace: p.TraceContext | None,
    ) -> tuple[p.pb.ActivityRequest, str]:
        """The work item of an activity, and the span id its span hangs on ("" untraced)."""
        request = p.pb.ActivityRequest(name=scheduled.name, taskId=task_id)
        if scheduled.HasField("version"):
            request.version.CopyFrom(scheduled.version)
        if scheduled.HasField("input"):
            request.input.CopyFrom(scheduled.input)
        request.workflowInstance.instanceId = instance_id
        request.workflowInstance.executionId.value = execution_id
        request.taskExecutionId = scheduled.taskExecutionId
        parent_span = ""
        if trace is not None and trace.traceParent:
            # The activity's own span: the SDK's activity span becomes its child.
            request.parentTraceContext.CopyFrom(Tracing.child(trace, Tracing.new_span_id()))
            parent_span = trace.spanID
        return request, parent_span

    def _schedule_task(
        self,
        inst: InstanceRow,
        scheduled: p.HistoryEvent,
        trace: p.TraceContext | None,
        effects: _Effects,
    ) -> None:
        """Runs the activity of a taskScheduled event here, or on the app its router names."""
        target = scheduled.router.targetAppID
        if not self._is_other_app(target):
            self._schedule_activity(
                inst, scheduled.eventId, scheduled.taskScheduled, trace, effects
            )
            return
        # As daprd: the activity runs on the target app's engine, which sends the result back
        # to the app the router names as its source.
        key = f"task:{inst.instance_id}:{inst.execution_id}:{scheduled.eventId}"
        self._send(
            target,
            "activity",
            inst.instance_id,
            key,
            scheduled,
            effects,
            execution_id=inst.execution_id,
        )

    def _schedule_activity(
        self,
        inst: InstanceRow,
        task_id: int,
        scheduled,
        trace: p.TraceContext | None,
        effects: _Effects,
    ) -> None:
        request, parent_span = self._activity_request(
            inst.instance_id, inst.execution_id, task_id, scheduled, trace
        )
        blob = request.SerializeToString()
        activity_id = self.store.add_activity(
            inst.instance_id, inst.execution_id, task_id, blob, now_ns(), parent_span
        )
        effects.activities.append((activity_id, blob))

    def _start_child(
        self,
        parent: InstanceRow,
        turn: Turn,
        task_id: int,
        child_id: str,
        child,
        router: p.TaskRouter,
        trace: p.TraceContext | None,
        effects: _Effects,
    ) -> None:
        start = new_event()
        started = start.executionStarted
        started.name = child.name
        if child.HasField("version") and child.version.value:
            started.version.CopyFrom(child.version)
        if child.HasField("input"):
            started.input.CopyFrom(child.input)
        started.workflowInstance.instanceId = child_id
        started.workflowInstance.executionId.value = str(uuid.uuid4())
        started.parentInstance.taskScheduledId = task_id
        started.parentInstance.name.value = (
            turn.start_event.executionStarted.name if turn.start_event else parent.name
        )
        started.parentInstance.workflowInstance.instanceId = parent.instance_id
        started.parentInstance.workflowInstance.executionId.value = parent.execution_id
        started.parentInstance.appID = self.app_id
        if trace is not None:
            started.parentTraceContext.CopyFrom(trace)
            started.workflowSpanID.value = Tracing.new_span_id()
        if self._is_other_app(router.targetAppID):
            # As daprd: the child starts on the target app's engine, its executionStarted
            # carrying the router of the action that created it.
            start.router.CopyFrom(router)
            key = f"child:{parent.instance_id}:{parent.execution_id}:{task_id}"
            self._send(router.targetAppID, "child", child_id, key, start, effects)
            return
        start.router.CopyFrom(p.TaskRouter(sourceAppID=router.sourceAppID))
        self._create_child(start, effects)

    def _create_child(self, start: p.HistoryEvent, effects: _Effects) -> None:
        """Creates a child workflow from the executionStarted its parent's engine built; an
        active instance with its id fails the parent's task instead."""
        now = now_ns()
        started = start.executionStarted
        child_id = started.workflowInstance.instanceId
        parent = started.parentInstance
        existing = self.store.get_instance(child_id)
        if existing is not None and existing.status not in p.TERMINAL_STATUSES:
            failed = new_event(at_ns=now)
            failed.childWorkflowInstanceFailed.taskScheduledId = parent.taskScheduledId
            failed.childWorkflowInstanceFailed.failureDetails.errorType = "WorkflowAlreadyExists"
            failed.childWorkflowInstanceFailed.failureDetails.errorMessage = (
                f"an active workflow with ID '{child_id}' already exists"
            )
            failed.router.CopyFrom(
                p.TaskRouter(sourceAppID=self.app_id, targetAppID=parent.appID or self.app_id)
            )
            self._send_to_parent(parent, failed, effects)
            return
        start.timestamp.CopyFrom(timestamp(now))
        if existing is not None:
            self.store.delete_instance(child_id)
        self.store.insert_instance(
            InstanceRow(
                seq=0,
                instance_id=child_id,
                name=started.name,
                status=p.PENDING,
                execution_id=started.workflowInstance.executionId.value,
                created_ns=now,
                updated_ns=now,
                input=started.input.value if started.HasField("input") else None,
                parent_instance_id=parent.workflowInstance.instanceId,
                trace_context=(
                    started.parentTraceContext.SerializeToString()
                    if started.HasField("parentTraceContext")
                    else None
                ),
                parent_app_id=parent.appID if self._is_other_app(parent.appID) else None,
            )
        )
        self.store.add_inbox(child_id, start.SerializeToString(), now)
        effects.ready.add(child_id)
        effects.touched.add(child_id)

    def _continue_as_new(
        self, inst: InstanceRow, turn: Turn, done, router: p.TaskRouter, effects: _Effects
    ) -> None:
        """The run ends and a new one starts at once with the result as its input."""
        now = now_ns()
        self._end_run_span(inst, turn, "CONTINUED_AS_NEW", now)
        old_start = turn.start_event.executionStarted if turn.start_event else None
        pending = self.store.all_inbox(inst.instance_id)
        self.store.reset_run(inst.instance_id)
        self.store.clear_inbox(inst.instance_id)
        first = new_event(at_ns=now)
        first.workflowStarted.SetInParent()
        first.router.CopyFrom(router)
        start = new_event(at_ns=now)
        started = start.executionStarted
        started.name = old_start.name if old_start else inst.name
        if old_start is not None:
            if old_start.HasField("version"):
                started.version.CopyFrom(old_start.version)
            if old_start.HasField("parentInstance"):
                started.parentInstance.CopyFrom(old_start.parentInstance)
            if old_start.HasField("parentTraceContext"):
                # A fresh root trace for each traced generation, as daprd since
                # dapr/dapr#10064 (copied, every generation of an eternal workflow joined one
                # unbounded trace); an untraced workflow stays untraced.
                started.parentTraceContext.CopyFrom(Tracing.new_root())
                started.workflowSpanID.value = Tracing.new_span_id()
            started.tags.update(old_start.tags)
        if done.HasField("result"):
            started.input.CopyFrom(done.result)
        execution_id = str(uuid.uuid4())
        started.workflowInstance.instanceId = inst.instance_id
        started.workflowInstance.executionId.value = execution_id
        start.router.CopyFrom(router)
        for event in (first, start, *done.carryoverEvents):
            self.store.add_inbox(inst.instance_id, event.SerializeToString(), now)
        # Events raised during the last turn belong to the new run; results and timers of the
        # old run do not.
        for _, visible, blob in pending:
            event = p.HistoryEvent.FromString(blob)
            if (
                event.HasField("eventRaised")
                or event.HasField("executionTerminated")
                or event.HasField("executionSuspended")
                or event.HasField("executionResumed")
            ):
                self.store.add_inbox(inst.instance_id, blob, visible)
        inst.execution_id = execution_id
        inst.status = p.RUNNING
        inst.input = done.result.value if done.HasField("result") else None
        inst.output = None
        inst.failure = None
        inst.created_ns = now
        # Like created: the new run's (daprd reads both from the current history, which
        # continue-as-new replaces); set by the new run's first turn.
        inst.started_ns = None
        inst.updated_ns = now
        self.store.update_instance(inst)
        effects.ready.add(inst.instance_id)

    def _finish(
        self, inst: InstanceRow, turn: Turn, done, terminate_recurse: bool, effects: _Effects
    ) -> None:
        now = now_ns()
        inst.status = done.workflowStatus
        inst.output = done.result.value if done.HasField("result") else None
        inst.failure = (
            done.failureDetails.SerializeToString() if done.HasField("failureDetails") else None
        )
        inst.completed_ns = now
        self._keep_until(inst, now)
        failure = done.failureDetails.errorMessage if done.HasField("failureDetails") else None
        self._end_run_span(inst, turn, status_name(done.workflowStatus), now, failure)
        # Timers that will never matter and activities whose results would be dropped.
        self.store.conn.execute(
            "DELETE FROM inbox WHERE instance_id = ? AND visible_ns > ?", (inst.instance_id, now)
        )
        self.store.delete_own_activities(inst.instance_id)
        parent = turn.start_event.executionStarted.parentInstance if turn.start_event else None
        if parent is not None and parent.workflowInstance.instanceId:
            event = new_event(at_ns=now)
            if done.workflowStatus == p.COMPLETED:
                event.childWorkflowInstanceCompleted.taskScheduledId = parent.taskScheduledId
                if done.HasField("result"):
                    event.childWorkflowInstanceCompleted.result.CopyFrom(done.result)
            else:
                event.childWorkflowInstanceFailed.taskScheduledId = parent.taskScheduledId
                if done.HasField("failureDetails"):
                    event.childWorkflowInstanceFailed.failureDetails.CopyFrom(done.failureDetails)
            event.router.CopyFrom(
                p.TaskRouter(sourceAppID=self.app_id, targetAppID=parent.appID or self.app_id)
            )
            self._send_to_parent(parent, event, effects)
        if done.workflowStatus == p.TERMINATED and terminate_recurse:
            for child in self.store.children(inst.instance_id):
                if child.status not in p.TERMINAL_STATUSES:
                    self._deliver(child.instance_id, self._cascade_terminate(done, now), effects)
            # Children on other apps, as daprd since its cross-app terminate: their engines
            # pass it on to their own children.
            for child_id, app_id in self._children_on_other_apps(turn.history).items():
                key = f"terminate:{child_id}:{inst.instance_id}:{inst.execution_id}"
                event = self._cascade_terminate(done, now)
                self._send(app_id, "event", child_id, key, event, effects)

    @staticmethod
    def _cascade_terminate(done, now: int) -> p.HistoryEvent:
        event = new_event(at_ns=now)
        if done.HasField("result"):
            event.executionTerminated.input.CopyFrom(done.result)
        else:
            event.executionTerminated.SetInParent()
        event.executionTerminated.recurse = True
        return event

    def _children_on_other_apps(self, history: list[p.HistoryEvent]) -> dict[str, str]:
        """The children a history created on other apps' engines: instance id -> app id."""
        return {
            e.childWorkflowInstanceCreated.instanceId: e.router.targetAppID
            for e in history
            if e.HasField("childWorkflowInstanceCreated")
            and self._is_other_app(e.router.targetAppID)
        }

    # -- other apps ------------------------------------------------------------------------

    def _is_other_app(self, app_id: str) -> bool:
        return bool(app_id) and app_id != self.app_id

    def _send(
        self,
        app_id: str,
        kind: str,
        instance_id: str,
        key: str,
        event: p.HistoryEvent,
        effects: _Effects,
        execution_id: str = "",
    ) -> None:
        """Queues a delivery to the engine of another app, in the open transaction: the
        courier sends it once committed, until that engine accepts it. `key` names the delivery
        for the receiver, which takes each key once."""
        header = {
            "app": app_id,
            "kind": kind,
            "instance": instance_id,
            "key": key,
            "execution": execution_id,
        }
        self.store.add_outgoing(app_id, delivery_body(header, event.SerializeToString()))
        effects.outgoing = True

    def _send_to_parent(
        self, parent: p.ParentInstanceInfo, event: p.HistoryEvent, effects: _Effects
    ) -> None:
        """A child's result (or its failure to start), to a parent on this engine or another."""
        parent_id = parent.workflowInstance.instanceId
        if not self._is_other_app(parent.appID):
            self._deliver(parent_id, event, effects)
            return
        execution_id = parent.workflowInstance.executionId.value
        key = f"child-result:{parent_id}:{execution_id}:{parent.taskScheduledId}"
        self._send(parent.appID, "event", parent_id, key, event, effects, execution_id)

    def accept(self, body: bytes) -> None:
        """Takes a delivery another app's engine sent (see `_send`); one already taken (its
        sender crashed before it could forget it) changes nothing."""
        try:
            delivery, event_bytes = parse_delivery(body)
            app_id, kind, instance_id, key = (
                str(delivery["app"]),
                str(delivery["kind"]),
                str(delivery["instance"]),
                str(delivery["key"]),
            )
            event = p.HistoryEvent.FromString(event_bytes)
            origin = str(delivery.get("origin", ""))
            seq = int(delivery["seq"]) if "seq" in delivery else None
        except (ValueError, KeyError, TypeError) as e:
            raise EngineError(grpc.StatusCode.INVALID_ARGUMENT, f"bad delivery: {e}") from None
        if app_id != self.app_id:
            raise EngineError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"this engine serves app id {self.app_id!r}, not {app_id!r}",
            )
        if kind not in ("child", "activity", "event"):
            raise EngineError(grpc.StatusCode.INVALID_ARGUMENT, f"unknown delivery {kind!r}")
        execution_id = str(delivery.get("execution", ""))
        effects = _Effects()
        with self.store.transaction():
            if self.store.remember_received(key, origin, seq):
                if kind == "child":
                    self._create_child(event, effects)
                elif kind == "activity":
                    self._schedule_for_other_app(instance_id, execution_id, event, effects)
                elif self._is_current_run(instance_id, execution_id):
                    self._deliver(instance_id, event, effects)
        self.store.flush()  # the sender forgets it once answered: committed first
        self._apply_effects(effects)

    def _is_current_run(self, instance_id: str, execution_id: str) -> bool:
        """Whether a result for that run still has a taker (a run that ended by continue-as-new
        or a restart of the id does not)."""
        if not execution_id:
            return True
        inst = self.store.get_instance(instance_id)
        return inst is not None and inst.execution_id == execution_id

    def _schedule_for_other_app(
        self, instance_id: str, execution_id: str, scheduled: p.HistoryEvent, effects: _Effects
    ) -> None:
        """An activity another app's workflow scheduled on this app."""
        task = scheduled.taskScheduled
        trace = task.parentTraceContext if task.HasField("parentTraceContext") else None
        request, parent_span = self._activity_request(
            instance_id, execution_id, scheduled.eventId, task, trace
        )
        blob = request.SerializeToString()
        activity_id = self.store.add_activity(
            instance_id,
            execution_id,
            scheduled.eventId,
            blob,
            now_ns(),
            parent_span,
            scheduled.router.SerializeToString(),
        )
        effects.activities.append((activity_id, blob))

    def _end_run_span(
        self, inst: InstanceRow, turn: Turn, status: str, end_ns: int, failure: str | None = None
    ) -> None:
        if self.tracing.enabled and turn.start_event is not None:
            self.tracing.orchestration(
                turn.start_event,
                status,
                inst.created_ns,
                end_ns,
                [*turn.history, *turn.new_events],
                failure,
            )

    def _deliver(self, instance_id: str, event: p.HistoryEvent, effects: _Effects) -> None:
        """Puts an event in an instance's inbox; events for unknown or finished ones are dropped."""
        target = self.store.get_instance(instance_id)
        if target is None or target.status in p.TERMINAL_STATUSES:
            return
        now = now_ns()
        self.store.add_inbox(instance_id, event.SerializeToString(), now)
        if target.status == p.PENDING:
            # daprd wakes an instance for an event at the event's time, a scheduled start time
            # notwithstanding: the start runs now, with the event.
            self._make_start_visible(instance_id, now)
        effects.ready.add(instance_id)

    def _make_start_visible(self, instance_id: str, at_ns: int) -> None:
        """Makes a pending instance's scheduled start due now (only a pending instance: the
        timers a running one waits on would fire too)."""
        self.store.conn.execute(
            "UPDATE inbox SET visible_ns = ? WHERE instance_id = ? AND visible_ns > ?",
            (at_ns, instance_id, at_ns),
        )

    def _apply_effects(self, effects: _Effects) -> None:
        for instance_id in effects.ready:
            self.ready[instance_id] = None
        for visible, instance_id in effects.timers:
            self._add_timer(visible, instance_id)
        self.activity_queue.extend(effects.activities)
        for instance_id in effects.touched | effects.ready:
            self._notify(instance_id)
        if effects.outgoing and self.on_outgoing is not None:
            self.on_outgoing()
        self._pump()

    # -- activities ------------------------------------------------------------------------

    def complete_activity(self, response: p.pb.ActivityResponse) -> None:
        token = response.completionToken
        if not token.startswith("a:") or not token[2:].isdigit():
            raise EngineError(grpc.StatusCode.INVALID_ARGUMENT, "invalid completion token")
        activity_id = int(token[2:])
        for stream in self.streams:
            stream.activities.discard(activity_id)
        row = self.store.get_activity(activity_id)
        if row is None:
            return  # a duplicate: the first result won
        instance_id, execution_id, task_id, blob, created_ns, parent_span, router = row
        if instance_id != response.instanceId or task_id != response.taskId:
            raise EngineError(
                grpc.StatusCode.INVALID_ARGUMENT, "completion token does not match the task"
            )
        request = p.pb.ActivityRequest.FromString(blob)
        event = new_event()
        if response.HasField("failureDetails"):
            event.taskFailed.taskScheduledId = task_id
            event.taskFailed.failureDetails.CopyFrom(response.failureDetails)
            event.taskFailed.taskExecutionId = request.taskExecutionId
        else:
            event.taskCompleted.taskScheduledId = task_id
            if response.HasField("result"):
                event.taskCompleted.result.CopyFrom(response.result)
            event.taskCompleted.taskExecutionId = request.taskExecutionId
        event.router.sourceAppID = self.app_id
        effects = _Effects()
        with self.store.transaction():
            self.store.delete_activity(activity_id)
            if router is not None:
                # Another app's workflow scheduled it: the result goes back to that app with
                # the taskScheduled's router, as daprd's activity executor answers.
                event.router.ParseFromString(router)
                key = f"task-result:{instance_id}:{execution_id}:{task_id}"
                self._send(
                    event.router.sourceAppID,
                    "event",
                    instance_id,
                    key,
                    event,
                    effects,
                    execution_id=execution_id,
                )
            else:
                inst = self.store.get_instance(instance_id)
                if inst is not None and inst.execution_id == execution_id:
                    self._deliver(instance_id, event, effects)
        failure = response.failureDetails.errorMessage if event.HasField("taskFailed") else None
        self.tracing.activity(request, parent_span, created_ns, now_ns(), failure)
        self._apply_effects(effects)

    # -- management ------------------------------------------------------------------------

    async def start_instance(
        self, request: p.pb.CreateInstanceRequest, trace: p.TraceContext
    ) -> str:
        if not request.name:
            raise EngineError(grpc.StatusCode.INVALID_ARGUMENT, "workflow name is required")
        if request.HasField("scheduledStartTimestamp") and not (
            -MAX_NS - 1 <= timestamp_ns(request.scheduledStartTimestamp) <= MAX_NS
        ):
            # Kept as 64-bit nanoseconds, as its timers: refused with a reason, not an
            # OverflowError answered as UNKNOWN (daprd would schedule it).
            raise EngineError(
                grpc.StatusCode.INVALID_ARGUMENT,
                "devengine takes scheduled start times between 1677-09-21 and 2262-04-11",
            )
        instance_id = request.instanceId or uuid.uuid4().hex
        existing = self.store.get_instance(instance_id)
        if existing is not None and existing.status not in p.TERMINAL_STATUSES:
            raise EngineError(
                grpc.StatusCode.ALREADY_EXISTS,
                f"an active workflow with ID '{instance_id}' already exists",
            )
        if existing is not None and request.enforceUniqueInstanceId:
            # daprd's workflow actor: asked for, uniqueness keeps a finished instance too.
            raise EngineError(
                grpc.StatusCode.ALREADY_EXISTS,
                f"a workflow with ID '{instance_id}' already exists and the create enforces "
                "instance ID uniqueness",
            )
        now = now_ns()
        execution_id = request.executionId.value or str(uuid.uuid4())
        event = new_event(at_ns=now)
        started = event.executionStarted
        started.name = request.name
        if request.HasField("version") and request.version.value:
            started.version.CopyFrom(request.version)
        if request.HasField("input"):
            started.input.CopyFrom(request.input)
        started.workflowInstance.instanceId = instance_id
        started.workflowInstance.executionId.value = execution_id
        scheduled = None
        if request.HasField("scheduledStartTimestamp"):
            started.scheduledStartTimestamp.CopyFrom(request.scheduledStartTimestamp)
            scheduled = timestamp_ns(request.scheduledStartTimestamp)
        trace = self.tracing.create_orchestration(request.name, instance_id, trace, now)
        started.parentTraceContext.CopyFrom(trace)
        started.workflowSpanID.value = Tracing.new_span_id()
        started.tags.update(request.tags)
        visible = max(now, scheduled or now)
        with self.store.transaction():
            if existing is not None:
                self.store.delete_instance(instance_id)
            self.store.insert_instance(
                InstanceRow(
                    seq=0,
                    instance_id=instance_id,
                    name=request.name,
                    status=p.PENDING,
                    execution_id=execution_id,
                    created_ns=now,
                    updated_ns=now,
                    scheduled_ns=scheduled,
                    input=request.input.value if request.HasField("input") else None,
                    trace_context=trace.SerializeToString(),
                )
            )
            self.store.add_inbox(instance_id, event.SerializeToString(), visible)
        effects = _Effects(touched={instance_id})
        if visible > now:
            effects.timers.append((visible, instance_id))
        else:
            effects.ready.add(instance_id)
        self._apply_effects(effects)
        self.store.flush()
        if visible <= now:
            # daprd answers once the first turn has committed.
            await self.wait_for(instance_id, lambda r: r is None or r.status != p.PENDING)
        return instance_id

    def get_instance(self, instance_id: str, with_payloads: bool) -> p.pb.GetInstanceResponse:
        # A read tells a client a state: like daprd, only a committed one (so a crash right
        # after cannot take back what the console has already indexed).
        self.store.flush()
        inst = self.store.get_instance(instance_id)
        if inst is None:
            return p.pb.GetInstanceResponse(exists=False)
        return p.pb.GetInstanceResponse(
            exists=True, workflowState=self.state_of(inst, with_payloads)
        )

    def state_of(self, inst: InstanceRow, with_payloads: bool) -> p.WorkflowState:
        state = p.WorkflowState(instanceId=inst.instance_id, name=inst.name)
        state.workflowStatus = inst.status  # type: ignore[assignment]
        state.version.value = ""
        created, updated = history_times(inst)
        state.createdTimestamp.CopyFrom(created)
        state.lastUpdatedTimestamp.CopyFrom(updated)
        if inst.started_ns is not None:
            state.startedAt.CopyFrom(timestamp(inst.started_ns))
        if inst.scheduled_ns is not None:
            state.scheduledStartTimestamp.CopyFrom(timestamp(inst.scheduled_ns))
        if inst.parent_instance_id:
            # daprd names a child's parent (from its executionStarted) with or without
            # payloads.
            state.parentInstanceId.value = inst.parent_instance_id
            state.parentAppId.value = inst.parent_app_id or self.app_id
        if with_payloads:
            if inst.status != p.PENDING:  # see history_times
                state.input.value = inst.input or ""
            state.output.value = inst.output or ""
            if inst.custom_status is not None:
                state.customStatus.value = inst.custom_status
            if inst.failure:
                state.failureDetails.MergeFromString(inst.failure)
        return state

    async def wait_for(
        self, instance_id: str, predicate: Callable[[InstanceRow | None], bool]
    ) -> InstanceRow | None:
        loop = asyncio.get_running_loop()
        while True:
            inst = self.store.get_instance(instance_id)
            if predicate(inst):
                # What a waiter is told (and answers its caller) must survive a crash.
                self.store.flush()
                return inst
            future = loop.create_future()
            self.waiters.setdefault(instance_id, set()).add(future)
            try:
                await future
            finally:
                waiting = self.waiters.get(instance_id)
                if waiting is not None:
                    waiting.discard(future)
                    if not waiting:
                        del self.waiters[instance_id]

    def _notify(self, instance_id: str) -> None:
        for future in self.waiters.get(instance_id, ()):
            if not future.done():
                future.set_result(None)

    def _existing(self, instance_id: str) -> InstanceRow:
        if not instance_id:
            raise EngineError(grpc.StatusCode.INVALID_ARGUMENT, "instance ID is required")
        inst = self.store.get_instance(instance_id)
        if inst is None:
            raise no_such_instance()
        return inst

    def _add_event(self, inst: InstanceRow, event: p.HistoryEvent) -> None:
        effects = _Effects()
        with self.store.transaction():
            self._deliver(inst.instance_id, event, effects)
        self.store.flush()  # acknowledged to the caller: committed first
        effects.touched.add(inst.instance_id)
        self._apply_effects(effects)

    def raise_event(self, instance_id: str, name: str, data: p.StringValue | None) -> None:
        inst = self._existing(instance_id)
        if not name:
            raise EngineError(grpc.StatusCode.INVALID_ARGUMENT, "event name is required")
        if inst.status in p.TERMINAL_STATUSES:
            return  # accepted and dropped, as daprd does
        if inst.status == p.STALLED:
            # daprd's workflow actor refuses it: a stalled instance runs no turn to take it.
            raise EngineError(grpc.StatusCode.UNKNOWN, "workflow is stalled")
        event = new_event()
        event.eventRaised.name = name
        if data is not None:
            event.eventRaised.input.CopyFrom(data)
        self._add_event(inst, event)

    async def suspend(self, instance_id: str, reason: p.StringValue | None) -> None:
        inst = self._existing(instance_id)
        if inst.status in p.TERMINAL_STATUSES:
            return
        event = new_event()
        event.executionSuspended.SetInParent()
        if reason is not None and reason.value:  # daprd records an empty reason as none
            event.executionSuspended.input.CopyFrom(reason)
        self._add_event(inst, event)
        await self.wait_for(
            instance_id,
            lambda r: r is None or r.status == p.SUSPENDED or r.status in p.TERMINAL_STATUSES,
        )

    async def resume(self, instance_id: str, reason: p.StringValue | None) -> None:
        inst = self._existing(instance_id)
        if inst.status in p.TERMINAL_STATUSES:
            return
        event = new_event()
        event.executionResumed.SetInParent()
        if reason is not None and reason.value:  # as for a suspend
            event.executionResumed.input.CopyFrom(reason)
        self._add_event(inst, event)
        # Like daprd, a resume of an instance that is not suspended is accepted: the event
        # still reaches the workflow (and the Python SDK then fails it).
        await self.wait_for(instance_id, lambda r: r is None or r.status != p.SUSPENDED)

    async def terminate(
        self, instance_id: str, output: p.StringValue | None, recursive: bool
    ) -> None:
        inst = self._existing(instance_id)
        if inst.status in p.TERMINAL_STATUSES:
            return
        event = new_event()
        event.executionTerminated.SetInParent()
        if output is not None:
            event.executionTerminated.input.CopyFrom(output)
        event.executionTerminated.recurse = recursive
        self._add_event(inst, event)
        await self.wait_for(instance_id, lambda r: r is None or r.status in p.TERMINAL_STATUSES)

    async def purge(self, instance_id: str, recursive: bool, force: bool) -> int:
        if not instance_id:
            raise EngineError(grpc.StatusCode.INVALID_ARGUMENT, "instance ID is required")
        count, error = await self._purge_tree(instance_id, recursive, force)
        if error is not None:
            if count == 0 and self.store.get_instance(instance_id) is None:
                raise NothingToPurge(error)
            raise EngineError(grpc.StatusCode.UNKNOWN, f"failed to purge workflow state: {error}")
        return count

    async def purge_for_other_app(self, instance_id: str, force: bool) -> int:
        """A recursive purge another app's engine passes on to a child of its workflow (daprd's
        RecursivePurgeWorkflowState): the count purged, or an EngineError with the bare cause,
        NOT_FOUND for an instance this engine does not have."""
        count, error = await self._purge_tree(instance_id, True, force)
        if error is None:
            return count
        if count == 0 and self.store.get_instance(instance_id) is None:
            raise EngineError(grpc.StatusCode.NOT_FOUND, error)
        raise EngineError(grpc.StatusCode.UNKNOWN, error)

    async def _purge_tree(
        self, instance_id: str, recursive: bool, force: bool
    ) -> tuple[int, str | None]:
        """Purges an instance (and with `recursive` its children, on this engine and on other
        apps' engines); returns how many instances were purged and the error that stopped it."""
        # Instance id -> the execution the walk found purgeable.
        walked: dict[str, str] = {}
        elsewhere = [0]  # purged on other apps' engines
        error = await self._purge_walk(instance_id, recursive, force, walked, elsewhere)
        # The walk waited for other apps' engines: an instance it found finished may have been
        # started again meanwhile, and that run is not the one it was asked to purge. The walk
        # stops there, as at an error (its parents, walked after it, stay).
        purged: list[str] = []
        for walked_id, execution_id in walked.items():
            if self.store.get_instance(walked_id) is None:
                # Purged meanwhile (its retention ran out, say): gone, as asked.
                continue
            if not self._purgeable(walked_id, execution_id, force):
                error = error or f"{walked_id} was started again while it was being purged"
                break
            purged.append(walked_id)
        # As daprd: what its walk purged before an error stays purged.
        with self.store.transaction():
            for target in purged:
                self.store.delete_instance(target)
        self.store.flush()
        for target in purged:
            token = self.turn_by_instance.pop(target, None)
            if token is not None:
                self.turns.pop(token, None)
            self.ready.pop(target, None)
            self.rejected.pop(target, None)
            self._notify(target)
        return len(purged) + elsewhere[0], error

    def _purgeable(self, instance_id: str, execution_id: str, force: bool) -> bool:
        """Whether the instance is still in the run the purge walk found, and still finished
        (or the purge is forced)."""
        inst = self.store.get_instance(instance_id)
        return (
            inst is not None
            and inst.execution_id == execution_id
            and (force or inst.status in p.TERMINAL_STATUSES)
        )

    async def _purge_walk(
        self,
        instance_id: str,
        recursive: bool,
        force: bool,
        purged: dict[str, str],
        elsewhere: list[int],
    ) -> str | None:
        """durabletask-go's purge walk, as daprd runs it: with `recursive`, the instance must be
        finished (unless forced), then each child its history created is purged the same way
        (one already gone skipped), depth first, and the first error stops the walk, keeping
        what it had purged; then the instance itself. Adds what it purges to `purged` (with
        the execution it found), what other apps' engines purged to `elsewhere[0]`; returns the
        error, or None."""
        inst = None if instance_id in purged else self.store.get_instance(instance_id)
        if recursive:
            if inst is None:
                return "failed to fetch workflow state: no such instance exists"
            if not force and inst.status not in p.TERMINAL_STATUSES:
                return "orchestration has not yet completed"
            for child_id, app_id in self._created_children(instance_id):
                if self._is_other_app(app_id):
                    error = await self._purge_on_other_app(app_id, child_id, force, elsewhere)
                elif child_id in purged or self.store.get_instance(child_id) is None:
                    # A child already gone (purged on its own before) is skipped, as daprd's
                    # walk skips one it finds no state for: else the parent could never be
                    # purged recursively again.
                    continue
                else:
                    error = await self._purge_walk(child_id, recursive, force, purged, elsewhere)
                if error is not None:
                    return f"failed to purge child workflow: {error}"
            # As it is now, after the waits for the children. Gone meanwhile (its retention ran
            # out, say), it is no error: daprd's retention reminder would have waited for the
            # purge its workflow actor was running, and found nothing left.
            inst = self.store.get_instance(instance_id)
            if inst is None:
                return None
        # The purge of one instance, as daprd's workflow actor (or, forced, its backend) does it.
        if inst is None:
            return "no such instance exists"
        if not force and inst.status == p.STALLED:
            return "workflow is stalled"
        if not force and inst.status not in p.TERMINAL_STATUSES:
            return "orchestration has not yet completed"
        purged[instance_id] = inst.execution_id
        return None

    async def _purge_on_other_app(
        self, app_id: str, child_id: str, force: bool, elsewhere: list[int]
    ) -> str | None:
        """As daprd's recursive purge: the child's own engine purges it and its children, now;
        while it can't (down, or the child still running) the parent stays. A child it no
        longer has is skipped, as a child gone here is."""
        if self.purge_on_other_app is None:
            return f"no peer serves app id {app_id!r}"
        try:
            count = await self.purge_on_other_app(app_id, child_id, force)
        except EngineError as e:
            return e.message
        if count is not None:
            elsewhere[0] += count
        return None

    def _created_children(self, instance_id: str) -> list[tuple[str, str]]:
        """The children the instance's history created, in order, once each, with the app
        each was routed to ("" for this one): daprd walks the childWorkflowInstanceCreated
        events, not the children that still exist."""
        children: dict[str, str] = {}
        for event in self.store.history_events(instance_id):
            if event.HasField("childWorkflowInstanceCreated"):
                child_id = event.childWorkflowInstanceCreated.instanceId
                children.setdefault(child_id, event.router.targetAppID)
        return list(children.items())

    def history(self, instance_id: str) -> list[bytes]:
        self.store.flush()  # committed state only (see get_instance)
        if self.store.get_instance(instance_id) is None:
            raise EngineError(grpc.StatusCode.NOT_FOUND, "no such instance exists")
        return self.store.history(instance_id)

    def list_ids(self, page_size: int, token: str) -> tuple[list[str], str | None]:
        self.store.flush()  # committed state only (see get_instance)
        after = 0
        if token:
            if not token.isdigit():
                raise EngineError(grpc.StatusCode.INVALID_ARGUMENT, "invalid continuation token")
            after = int(token)
        rows = self.store.list_ids(after, page_size + 1 if page_size else None)
        next_token = None
        if page_size and len(rows) > page_size:
            rows = rows[:page_size]
            next_token = str(rows[-1][0])
        return [r[1] for r in rows], next_token

    async def rerun(self, request: p.pb.RerunWorkflowFromEventRequest) -> str:
        source_id = request.sourceInstanceID
        if not source_id:
            raise EngineError(
                grpc.StatusCode.INVALID_ARGUMENT, "rerun workflow source instance ID is required"
            )
        new_id = request.newInstanceID if request.HasField("newInstanceID") else str(uuid.uuid4())
        if new_id == source_id:
            raise EngineError(
                grpc.StatusCode.INVALID_ARGUMENT,
                "rerun workflow instance ID must be different from the original instance ID",
            )
        # daprd's checks, in its order and with its words (its workflow actor's fork, then the
        # new instance's actor).
        source = self.store.get_instance(source_id)
        if source is None:
            raise EngineError(
                grpc.StatusCode.NOT_FOUND,
                f"workflow instance does not exist with ID '{source_id}'",
            )
        if source.status not in p.TERMINAL_STATUSES:
            raise EngineError(
                grpc.StatusCode.INVALID_ARGUMENT, f"'{source_id}' is not in a terminal state"
            )
        history = [p.HistoryEvent.FromString(b) for b in self.store.history(source_id)]
        start = next((e for e in history if e.HasField("executionStarted")), None)
        if start is None:
            raise EngineError(grpc.StatusCode.NOT_FOUND, f"workflow '{source_id}' has no history")
        if start.executionStarted.HasField("parentInstance"):
            raise EngineError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"'{source_id}': cannot rerun from child-workflows",
            )
        target_pos = self._rerun_target(history, request)
        if self.store.get_instance(new_id) is not None:
            raise EngineError(
                grpc.StatusCode.ALREADY_EXISTS, f"workflow '{new_id}' has already been created"
            )

        forked, tail = self._fork(history, target_pos, request, new_id)
        now = now_ns()
        execution_id = str(uuid.uuid4())
        for event in forked:
            if event.HasField("executionStarted"):
                event.executionStarted.workflowInstance.instanceId = new_id
                event.executionStarted.workflowInstance.executionId.value = execution_id
                if event.executionStarted.HasField("parentTraceContext"):
                    event.executionStarted.workflowSpanID.value = Tracing.new_span_id()
        for event in tail:
            event.timestamp.CopyFrom(timestamp(now))
            body = getattr(event, str(event.WhichOneof("eventType")))
            body.rerunParentInstanceInfo.instanceID = source_id
        started = start.executionStarted
        inst = InstanceRow(
            seq=0,
            instance_id=new_id,
            name=source.name,
            status=p.RUNNING,
            execution_id=execution_id,
            created_ns=now,
            updated_ns=now,
            started_ns=now,
            input=started.input.value if started.HasField("input") else None,
            trace_context=source.trace_context,
        )
        effects = _Effects(touched={new_id})
        with self.store.transaction():
            self.store.insert_instance(inst)
            self.store.append_history(new_id, 0, [e.SerializeToString() for e in (*forked, *tail)])
            forked_start = next(e for e in forked if e.HasField("executionStarted"))
            self._redrive(inst, forked_start, tail, effects)
        self.store.flush()
        self._apply_effects(effects)
        return new_id

    @staticmethod
    def _rerun_target(
        history: list[p.HistoryEvent], request: p.pb.RerunWorkflowFromEventRequest
    ) -> int:
        """The position of the event to rerun from, as daprd's fork finds it: the first event
        with that ID, which must be one that can be rerun (else NOT_FOUND) and take what the
        request asks of it (else INVALID_ARGUMENT)."""
        # daprd reads the (unsigned) event ID as an int32.
        event_id = request.eventID - 2**32 if request.eventID >= 2**31 else request.eventID
        position = next((i for i, e in enumerate(history) if e.eventId == event_id), None)
        if position is None:
            raise EngineError(
                grpc.StatusCode.NOT_FOUND, f"does not have history event with ID '{event_id}'"
            )
        kind = str(history[position].WhichOneof("eventType"))
        new_child_id = request.HasField("newChildWorkflowInstanceID")
        if kind == "taskScheduled" and new_child_id:
            raise EngineError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"cannot set new child workflow instance ID on activity event '{event_id}'",
            )
        if kind == "timerCreated" and request.overwriteInput:
            raise EngineError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"cannot write input to timer event '{event_id}'",
            )
        if kind == "timerCreated" and new_child_id:
            raise EngineError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"cannot set new child workflow instance ID on timer event '{event_id}'",
            )
        if kind not in RERUNNABLE:
            # Go's name of the event's type, as daprd prints it (%T).
            go_type = f"*protos.HistoryEvent_{kind[0].upper()}{kind[1:]}"
            raise EngineError(
                grpc.StatusCode.NOT_FOUND,
                f"target event '{go_type}' with ID '{event_id}' is not an event that can be rerun",
            )
        return position

    @staticmethod
    def _fork(
        history: list[p.HistoryEvent],
        target_pos: int,
        request: p.pb.RerunWorkflowFromEventRequest,
        new_id: str,
    ) -> tuple[list[p.HistoryEvent], list[p.HistoryEvent]]:
        """Splits a source history the way daprd forks it for a re-run.

        Returns the events kept as they were (everything before the target event, with each
        scheduled task, timer and child moved next to its result) and the tail to drive again:
        the target event and what was scheduled before it and had not finished by then, in
        eventId order.
        Children in the tail get ids under the new instance so the source's children are left
        alone.
        """
        kept: list[p.HistoryEvent] = []
        open_tasks: dict[int, p.HistoryEvent] = {}
        open_timers: dict[int, p.HistoryEvent] = {}
        open_children: dict[int, p.HistoryEvent] = {}
        for original in history[:target_pos]:
            event = p.HistoryEvent()
            event.CopyFrom(original)
            kind = event.WhichOneof("eventType")
            if kind == "taskScheduled":
                open_tasks[event.eventId] = event
            elif kind == "timerCreated":
                open_timers[event.eventId] = event
            elif kind == "childWorkflowInstanceCreated":
                open_children[event.eventId] = event
            else:
                if kind in ("taskCompleted", "taskFailed"):
                    opened = open_tasks.pop(getattr(event, kind).taskScheduledId, None)
                elif kind == "timerFired":
                    opened = open_timers.pop(event.timerFired.timerId, None)
                elif kind in ("childWorkflowInstanceCompleted", "childWorkflowInstanceFailed"):
                    opened = open_children.pop(getattr(event, kind).taskScheduledId, None)
                else:
                    opened = None
                if opened is not None:
                    kept.append(opened)
                kept.append(event)

        target = p.HistoryEvent()
        target.CopyFrom(history[target_pos])
        target_kind = str(target.WhichOneof("eventType"))
        if request.overwriteInput:
            payload = getattr(target, target_kind)
            if request.HasField("input"):
                payload.input.CopyFrom(request.input)
            else:
                payload.ClearField("input")
        tail = sorted(
            [target, *open_tasks.values(), *open_timers.values(), *open_children.values()],
            key=lambda e: e.eventId,
        )
        for event in tail:
            if event.HasField("childWorkflowInstanceCreated"):
                event.childWorkflowInstanceCreated.instanceId = f"{new_id}:{event.eventId:04x}"
        if target_kind == "childWorkflowInstanceCreated" and request.HasField(
            "newChildWorkflowInstanceID"
        ):
            target.childWorkflowInstanceCreated.instanceId = request.newChildWorkflowInstanceID
        return kept, tail

    def _redrive(
        self,
        inst: InstanceRow,
        start: p.HistoryEvent,
        tail: list[p.HistoryEvent],
        effects: _Effects,
    ) -> None:
        """Hands out the tail of a forked history: activities, timers and children."""
        turn = Turn(
            token="",
            instance_id=inst.instance_id,
            execution_id=inst.execution_id,
            inbox_ids=[],
            new_events=[],
            start_event=start,
            history=[],
            past_patches=[],
            last_stall=None,
            version_name="",
            stream=WorkerStream(),
        )
        trace = workflow_trace(start)
        now = now_ns()
        for event in tail:
            kind = event.WhichOneof("eventType")
            # As daprd's re-run, the events keep the router they were written with: what went to
            # another app goes there again.
            if kind == "taskScheduled":
                self._schedule_task(inst, event, trace, effects)
            elif kind == "timerCreated":
                fire_at = event.timerCreated.fireAt
                visible = timer_due_ns(fire_at)
                if visible is not None:
                    fired = new_event(at_ns=now)
                    fired.timerFired.fireAt.CopyFrom(fire_at)
                    fired.timerFired.timerId = event.eventId
                    self.store.add_inbox(inst.instance_id, fired.SerializeToString(), visible)
                    effects.timers.append((visible, inst.instance_id))
            elif kind == "childWorkflowInstanceCreated":
                created = event.childWorkflowInstanceCreated
                self._start_child(
                    inst,
                    turn,
                    event.eventId,
                    created.instanceId,
                    created,
                    event.router
                    if event.HasField("router")
                    else p.TaskRouter(sourceAppID=self.app_id),
                    trace,
                    effects,
                )


def delivery_body(header: dict, event: bytes) -> bytes:
    """A delivery to another app's engine: a line of JSON that says what it is, then the
    serialized event as is (base64 in the JSON would make it a third bigger than the event,
    and a payload the sender found small enough too big for the receiver's message limit)."""
    return json.dumps(header).encode() + b"\n" + event


def parse_delivery(body: bytes) -> tuple[dict, bytes]:
    """The header and the event bytes of a delivery (see `delivery_body`)."""
    line, newline, event = body.partition(b"\n")
    header = json.loads(line)
    if not isinstance(header, dict):
        raise ValueError("the header is not an object")
    if not newline:
        raise ValueError("no event after the header")
    return header, event


@dataclass
class _Effects:
    """What to do in memory once a transaction has committed."""

    ready: set[str] = field(default_factory=set)
    touched: set[str] = field(default_factory=set)
    timers: list[tuple[int, str]] = field(default_factory=list)
    activities: list[tuple[int, bytes]] = field(default_factory=list)
    outgoing: bool = False  # deliveries to other apps were queued


def status_name(status: int) -> str:
    name = p.orchestration_pb2.OrchestrationStatus.Name(status)
    return name.removeprefix("ORCHESTRATION_STATUS_")
