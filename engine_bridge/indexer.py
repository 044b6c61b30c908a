"""The indexer: reads every instance of an engine into the console's database and keeps it true.

The engine has no change feed, so (ARCHITECTURE.md "How the indexer learns about changes"):

- **Discovery** pages through ListInstanceIDs; ids not in the database are fetched and stored.
  At the end of a sweep, ids that were not listed are re-read with GetInstance and marked purged
  only when the engine says ``exists=false`` (a listing races with writes).
- **Refresh** re-reads instances when due (``InstanceCheck``): non-terminal ones every second or
  so, backing off while unchanged; terminal ones rarely (they can only be restarted or purged).
  When ``lastUpdatedAt`` moved, the history is fetched and what is new is appended.
- **Hints** (``RefreshRequest``, see ``request_refresh``) are read first on the next pass.

Every change to one instance (its row, runs, events, counts, change-log rows, schedule) commits in
one transaction, and events are keyed by (run, position): a killed indexer restarts and converges,
never duplicating anything. Engine calls are in flight while the indexer's thread writes.

``EngineIndexer.run_pass()`` is one small unit of work (tests call it directly);
``manage.py runindexer`` loops over it for each engine.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import queue
import random
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

import orjson
from django.conf import settings
from django.db import DataError, IntegrityError, connection
from django.db.models import F, Max, Q, Sum
from django.utils import timezone

from engine_bridge import bulk, retention
from engine_bridge.config import EngineConfig
from engine_bridge.errors import EngineError, EngineRejected, EngineUnavailable, NotSupported
from engine_bridge.locks import (
    EngineLock,
    app_ids_in_order,
    change_log_in_commit_order,
    fenced,
    keep_from_deletion,
)
from engine_bridge.types import TERMINAL, Event, InstancePage, InstanceState, trace_id_of
from workflows_ui.models import (
    ChangeKind,
    ChangeLog,
    Engine,
    HistoryEvent,
    Instance,
    InstanceCheck,
    RefreshRequest,
    Run,
    StatusCount,
)

log = logging.getLogger(__name__)

#: Events the engine writes from the app's own actions: their router.sourceAppID is the app id.
_OWN_EVENTS = {
    "taskScheduled",
    "timerCreated",
    "childWorkflowInstanceCreated",
    "eventSent",
    "executionCompleted",
}
#: Instances written per transaction (each instance's changes stay together in one).
WRITE_CHUNK = 200
#: Ids read per query when a sweep looks for the instances the listing did not show.
LIVE_IDS_BATCH = 5000
#: The ids of live instances discovery compares listings with are read again this often (they
#: are kept up to date as the indexer writes; the reload only catches changes made elsewhere).
KNOWN_RELOAD_INTERVAL = 300.0
#: Allocations between two young collections in the indexer's process (see ``tune_gc``).
GC_YOUNG_THRESHOLD = 10_000
#: Capabilities are probed again this often (a sidecar may be upgraded in place).
PROBE_INTERVAL = timedelta(minutes=10)
#: An instance whose read fails is tried again after twice its last interval, at most this long
#: (seconds): one broken instance costs a failed read now and then, not one every pass. A
#: finished one backs off as far as finished instances are re-read (hourly by default): its
#: history no longer changes, and a history over the sidecar's size limit stays over it.
FAILED_READ_MAX_INTERVAL = 300.0
#: After a read failed with a transient code other than UNAVAILABLE, an answered Hello within
#: this many seconds says the engine is up (the failure was that instance's).
ANSWERED_RECENTLY = 2.0
#: A sweep that finds every instance indexed before it gone warns, when they are this many (an
#: engine with a few may well have had them all purged).
MANY_GONE = 10
#: Seconds (at most) before an instance whose read timed out for the first time is read again:
#: an engine that stalled (a stopped process, a long pause) times out every read in flight,
#: then answers again. A second timeout in a row makes the instance unreadable.
FIRST_TIMEOUT_RETRY = 10.0
#: Deadline (seconds) of the Hello that tells a stalled engine from one slow instance, and of the
#: one that opens each pass while the engine is unreachable: shorter than the reads' deadline,
#: since an engine that hangs answers neither (and a stop waits for it).
HELLO_TIMEOUT = 3.0
#: Seconds between looks for what is past the retention period (engine_bridge.retention), while
#: the last look found nothing more to forget.
RETENTION_CHECK_INTERVAL = 600.0
#: Seconds between counts of an engine's finished and unfinished instances (from StatusCount),
#: which set how far apart their re-reads are (``Limits.terminal_read_rate``,
#: ``Limits.active_read_rate``).
STATUS_COUNT_INTERVAL = 60.0
#: Seconds the console's clock may go back between two passes before the re-reads due are moved
#: back as far (see ``EngineIndexer._follow_clock``).
CLOCK_SLACK = 5.0
#: ListInstanceIDs pages are halved, down to this size, each time one exceeds the deadline while
#: the engine answers (a sidecar pages through its state store for every call).
MIN_LIST_PAGE_SIZE = 10


_COUNT_TABLE = StatusCount._meta.db_table
_UPSERT_COUNT = (
    f"INSERT INTO {_COUNT_TABLE} (engine_id, name, status, count) VALUES (%s, %s, %s, %s) "  # noqa: S608
    "ON CONFLICT (engine_id, name, status) "
    f"DO UPDATE SET count = {_COUNT_TABLE}.count + excluded.count"
)


class Client(Protocol):
    """What the indexer needs from ``engine_bridge.client.EngineClient`` (fakes implement it)."""

    def hello(self, timeout: float | None = ...) -> None: ...
    def list_instance_ids(
        self, page_size: int = ..., continuation_token: str = ...
    ) -> InstancePage: ...
    def get_instance(self, instance_id: str, payloads: bool = ...) -> InstanceState | None: ...
    def get_history(self, instance_id: str) -> list[Event]: ...
    def get_instance_later(
        self,
        instance_id: str,
        done: Callable[[InstanceState | None | EngineError], None],
        payloads: bool = ...,
    ) -> None: ...
    def get_history_later(
        self, instance_id: str, done: Callable[[list[Event] | EngineError], None]
    ) -> None: ...
    def supports_rerun(self) -> bool: ...


@dataclass
class Fetched:
    """What the engine said about one instance."""

    instance_id: str
    state: InstanceState | None = None  # None: exists=false
    events: list[Event] | None = None  # None: history not fetched (unchanged or unsupported)
    error: EngineError | None = None
    #: False: ``state`` came without its payloads (input, output, custom status, failure), the
    #: whole answer being over the engine's message size limit (``error`` says so).
    payloads: bool = True


@dataclass
class PassResult:
    hinted: int = 0
    refreshed: int = 0
    discovered: int = 0
    purged: int = 0
    changed: int = 0
    errors: int = 0
    #: Tombstones and earlier runs deleted past the retention period.
    forgotten: int = 0
    #: True when there is more to do right away (due instances left, a sweep in progress).
    busy: bool = False


@dataclass
class Limits:
    concurrency: int = 16
    batch: int = 1000
    list_page_size: int = 1000
    list_pages_per_pass: int = 20
    #: A pass lists no further page after this many seconds of discovery: a first sweep of a big
    #: engine (20 pages of new instances take about 45 s to read) would keep the engine's running
    #: instances, its refresh requests and every other engine of the process waiting.
    discovery_seconds: float = 5.0
    active_interval: float = 1.0
    active_max_interval: float = 15.0
    #: About how many unfinished instances of an engine that don't change are re-read a second
    #: at most: past ``active_max_interval``, their re-reads are spread over as long as reading
    #: them all at that rate takes, up to ``terminal_interval`` (0: ``active_max_interval``
    #: whatever their number). Workflows waiting for days (an approval, a renewal) are common:
    #: 50,000 of them read every 15 s would be 3,300 reads a second, more than a sidecar and its
    #: state store should be asked for a console, and more than the indexer can read.
    active_read_rate: float = 100.0
    terminal_first_interval: float = 60.0
    terminal_interval: float = 3600.0
    #: About how many finished instances of an engine are re-read a second: their re-reads are
    #: spread over as long as that takes, from ``terminal_first_interval`` up to
    #: ``terminal_interval`` (0: up to ``terminal_interval`` always).
    terminal_read_rate: float = 20.0
    sweep_interval: float = 2.0
    #: After a sweep, wait at least this many times as long as its ListInstanceIDs calls took:
    #: listing a big engine (100,000 ids) then takes a fifth of the time instead of all of it (a
    #: sidecar pages through its state store for every call).
    sweep_pause_factor: float = 4.0
    payload_limit: int = 65536
    #: Days kept of what the engine no longer has (0: for good); see engine_bridge.retention.
    retention_days: float = 0.0

    @classmethod
    def from_settings(cls) -> Limits:
        return cls(
            concurrency=settings.CONSOLE_INDEXER_CONCURRENCY,
            batch=settings.CONSOLE_INDEXER_BATCH,
            list_page_size=settings.CONSOLE_INDEXER_LIST_PAGE_SIZE,
            list_pages_per_pass=settings.CONSOLE_INDEXER_LIST_PAGES_PER_PASS,
            active_interval=settings.CONSOLE_INDEXER_ACTIVE_INTERVAL,
            active_max_interval=settings.CONSOLE_INDEXER_ACTIVE_MAX_INTERVAL,
            active_read_rate=settings.CONSOLE_INDEXER_ACTIVE_READ_RATE,
            terminal_first_interval=settings.CONSOLE_INDEXER_TERMINAL_FIRST_INTERVAL,
            terminal_interval=settings.CONSOLE_INDEXER_TERMINAL_INTERVAL,
            terminal_read_rate=settings.CONSOLE_INDEXER_TERMINAL_READ_RATE,
            payload_limit=settings.CONSOLE_PAYLOAD_LIMIT,
            retention_days=settings.CONSOLE_RETENTION_DAYS,
        )


def tune_gc() -> None:
    """Set up Python's cycle collector for a process that runs the indexer (``runindexer``).

    Each written chunk keeps a window of answers alive (tens of thousands of small objects),
    so the collector's default of a young collection every 700 allocations keeps scanning
    them, and its full collections walk every object the imports made (Django, protobuf,
    gRPC). Both hold the GIL, which the gRPC threads and the writer share. Freezing what exists
    at start-up leaves those objects out of every later collection (they live as long as the
    process anyway), and a higher young threshold lets the chunk's objects be freed by their
    reference counts first. Nearly everything the indexer allocates is freed that way; cycles
    are still collected, less often."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)


def engine_rows(configs: Iterable[EngineConfig]) -> list[Engine]:
    """The Engine rows of these engines, created (not configured yet) where missing, others
    left as they are: what ``runindexer`` locks before it writes its settings."""
    return [
        Engine.objects.get_or_create(
            name=cfg.name, defaults={"address": cfg.address, "tls": cfg.tls, "configured": False}
        )[0]
        for cfg in configs
    ]


def sync_engines(configs: Iterable[EngineConfig]) -> list[Engine]:
    """Create/update the Engine rows of the configured engines; unconfigure the others."""
    engines = []
    names = []
    for cfg in configs:
        engine, _ = Engine.objects.update_or_create(
            name=cfg.name, defaults={"address": cfg.address, "tls": cfg.tls, "configured": True}
        )
        engines.append(engine)
        names.append(cfg.name)
    unconfigure_free(names)
    return engines


def unconfigure_free(indexed: Collection[str]) -> None:
    """The engines not in ``indexed`` (this process's CONSOLE_ENGINES) that no process holds
    are no longer indexed: the pages say so, and a listing they were in the middle of won't go
    on. Not an engine another process holds: a runindexer started with other CONSOLE_ENGINES
    indexes it. Called at start, and every few seconds after (runindexer's retention thread):
    an engine whose runindexer stopped for good is said not indexed soon after."""
    others = Engine.objects.exclude(name__in=indexed).filter(configured=True)
    for pk, name in others.values_list("pk", "name"):
        lock = EngineLock(pk, name)
        if lock.seen_held() or not lock.take_once():
            continue
        try:
            token = Engine.objects.filter(pk=pk).values_list("indexer_token", flat=True).first()
            if token is None:  # deleted meanwhile (forgetengine)
                lock.remove_file()
                continue
        finally:
            lock.release()
        # Written once the lock is let go (on SQLite the write may wait for another one, for
        # seconds, and a runindexer starting with the engine waits for its lock for one), and
        # only if no process took the engine meanwhile: taking it writes a new token, then
        # says configured.
        Engine.objects.filter(pk=pk, indexer_token=token).update(
            configured=False, sweep_started_at=None, sweep_listed=0
        )


def request_refresh(engine: Engine | str, instance_id: str) -> None:
    """Ask the indexer to read this instance on its next pass (the actions service calls this
    after changing an instance). Safe from any process; repeated requests coalesce."""
    engine_obj = engine if isinstance(engine, Engine) else Engine.objects.get(name=engine)
    RefreshRequest.objects.update_or_create(
        engine=engine_obj, instance_id=instance_id, defaults={"requested_at": timezone.now()}
    )


#: Longest ids the console stores; longer ones are keys and can't be cut, so such an instance is
#: reported instead of indexed.
MAX_INSTANCE_ID: int = Instance._meta.get_field("instance_id").max_length  # type: ignore[assignment]
MAX_EXECUTION_ID: int = Run._meta.get_field("execution_id").max_length  # type: ignore[assignment]
#: Dapr app ids are DNS labels (63 characters); a longer one names no engine, and is stored cut.
MAX_APP_ID: int = Engine._meta.get_field("app_id").max_length  # type: ignore[assignment]


def _unstorable(f: Fetched) -> str | None:
    """Why this answer can't be stored as it is (on every database: SQLite would take it), or
    None."""
    too_long = f"longer than {MAX_INSTANCE_ID} characters"
    if len(f.instance_id) > MAX_INSTANCE_ID:
        return f"its id is {too_long}"
    if f.state is not None and len(f.state.parent_instance_id) > MAX_INSTANCE_ID:
        return f"its parent's id is {too_long}"
    for e in f.events or []:
        if e.event_type == "executionStarted" and len(e.execution_id) > MAX_EXECUTION_ID:
            return f"its execution id is longer than {MAX_EXECUTION_ID} characters"
        if e.parent is not None and len(e.parent.instance_id) > MAX_INSTANCE_ID:
            return f"its parent's id is {too_long}"
        if e.parent is not None and len(e.parent.execution_id) > MAX_EXECUTION_ID:
            return f"its parent's execution id is longer than {MAX_EXECUTION_ID} characters"
    return None


def _continued_as_new(events: Sequence[Event]) -> bool:
    """Whether this history is of a run that continue-as-new started. The engine then writes
    the new run's workflowStarted and executionStarted together, in that order; a start (and a
    re-run, which keeps the source's events) writes executionStarted when asked, and
    workflowStarted when a worker takes the first turn, later. The trace can't tell: daprd
    gives each traced generation a fresh root trace (since dapr/dapr#10064; it repeated the
    first generation's before), and an untraced one none."""
    first = next((e for e in events if e.event_type == "workflowStarted"), None)
    started = next((e for e in events if e.event_type == "executionStarted"), None)
    if first is None or started is None or first.timestamp is None or started.timestamp is None:
        return False
    if any("rerunParentInstanceInfo" in e.details for e in events):
        return False  # a re-run: its first events are its source's, of a later generation maybe
    return first.timestamp <= started.timestamp


def _newer_run(events: Sequence[Event], read: Fetched) -> bool:
    """Whether this history is of a run started after the state just read last changed: the
    two answers are of different runs."""
    started = next((e for e in events if e.event_type == "executionStarted"), None)
    if started is None or started.timestamp is None or read.state is None:
        return False
    changed = read.state.last_updated_at
    return changed is not None and started.timestamp > changed


def _supersede_runs(inst: Instance, now: datetime) -> None:
    """The instance's runs stored so far are no longer the engine's (it keeps only the run
    being stored): they expire from ``now`` (engine_bridge.retention)."""
    Run.objects.filter(instance=inst, superseded_at__isnull=True).update(superseded_at=now)


def _cut(text: str | None, limit: int) -> tuple[str, int]:
    if not text:
        return "", 0
    return text[:limit], len(text)


@dataclass
class _Changed:
    """An instance whose row changed in this chunk: its history is stored once every new
    instance of the chunk has its primary key."""

    inst: Instance
    st: InstanceState
    started: Event | None
    events: list[Event] | None
    is_new: bool
    revived: bool
    history_moved: bool
    old_status: str
    previous_execution_id: str
    interval: float | None


_CHANGE_FIELDS = (
    "created_at",
    "engine",
    "instance",
    "kind",
    "status",
    "old_status",
    "run",
    "first_position",
    "last_position",
)
#: A read that succeeded clears its instance's read error.
_CHECK_FIELDS = (
    "instance",
    "engine",
    "due_at",
    "interval",
    "read_error",
    "read_failing_since",
    "read_at",
)
_EVENT_FIELDS = (
    "run",
    "position",
    "event_id",
    "event_type",
    "name",
    "timestamp",
    "related_id",
    "details",
)


class _Writes:
    """Rows of one transaction written in bulk at its end."""

    def __init__(self) -> None:
        self.now = timezone.now()
        self.changes = bulk.Rows(ChangeLog, _CHANGE_FIELDS)
        self.counts: dict[tuple[str, str], int] = defaultdict(int)
        self.checks = bulk.Rows(InstanceCheck, _CHECK_FIELDS)
        self.dropped_checks: list[int] = []
        self.new_instances: list[Instance] = []
        self.changed: list[_Changed] = []
        self.new_runs: list[Run] = []
        self.events = bulk.Rows(HistoryEvent, _EVENT_FIELDS, encoded=["details"])
        #: Runs of the chunk's changed instances, by (instance pk, execution id).
        self.runs: dict[tuple[int, str], Run] = {}
        #: app id -> engine pk (parent links), for this chunk.
        self.app_engines: dict[str, int | None] = {}
        #: Instances of the chunk whose state was read but not their history: why, and since
        #: when it has been failing (None: it starts now).
        self.failing: dict[str, str] = {}
        self.failing_since: dict[str, datetime | None] = {}
        #: Of those, the ones whose read timed out with no read of theirs failing before: not
        #: yet unreadable (``EngineIndexer._retry_later`` says why).
        self.first_strike: set[str] = set()
        #: The last stored event (type, time) of the runs whose history was read again, by run pk.
        self.last_events: dict[int, tuple[str, datetime | None]] = {}
        #: Instances of the chunk whose pages say they can't be read (read_failing_since set).
        self.unreadable: set[str] = set()
        #: (engine pk, instance id) of parents that gained or lost a child in the chunk.
        self.parents: set[tuple[int, str]] = set()

    def updated(self, engine_pk: int, key: Instance | int, status: str) -> None:
        """An ``updated`` change-log row for an instance (its model, or its pk) of this engine
        or another: its page is to be loaded again."""
        self.changes.add(self.now, engine_pk, key, ChangeKind.UPDATED, status, "", None, None, None)


def _engine_gone(error: EngineError | None) -> bool:
    """UNAVAILABLE: the engine can't be reached. Its other transient codes (a deadline exceeded,
    an answer over the size limit) may be one instance's doing, a history too big to read in
    time: the writer asks the engine before ending the pass."""
    return isinstance(error, EngineUnavailable) and error.code in ("UNAVAILABLE", "")


def _first_timeout(error: EngineError, since: datetime | None, last_error: str) -> bool:
    """A read that timed out, of an instance whose reads did not fail before."""
    timed_out = isinstance(error, EngineUnavailable) and error.code == "DEADLINE_EXCEEDED"
    return timed_out and since is None and not last_error


def _console_refused(error: EngineError | None) -> bool:
    """The engine refused the console itself (its api token): no instance's doing. Every read
    fails the same way, so none of them is the instance's failure to record."""
    return isinstance(error, EngineRejected) and error.code in (
        "UNAUTHENTICATED",
        "PERMISSION_DENIED",
    )


class _Reads:
    """Reads of one ``_sync``: at most ``concurrency`` in flight, and at most ``window`` read
    but not yet taken by the writing thread. Each finished read starts the next (on gRPC's
    thread), so reading goes on while the writer is busy."""

    def __init__(
        self,
        items: Iterable[tuple[str, datetime | None]],
        concurrency: int,
        window: int,
        read: Callable[[str, datetime | None, Callable[[Fetched], None]], None],
    ) -> None:
        self._todo = iter(items)
        self._concurrency = concurrency
        self._window = window
        self._read = read
        self._answers: queue.SimpleQueue[Fetched] = queue.SimpleQueue()
        self._lock = threading.Lock()
        # Under the lock:
        self._running = 0  # started, not finished
        self._held = 0  # finished, not taken
        self._starting = False  # some thread is in start_more (the others leave it to it)
        self._exhausted = False
        self._stopped = False  # the engine is unavailable, or the writer gave up

    @property
    def idle(self) -> bool:
        return self._running == 0

    def stop(self) -> None:
        with self._lock:
            self._stopped = True

    def start_more(self) -> None:
        with self._lock:
            if self._starting:
                return
            self._starting = True
        while True:
            with self._lock:
                item = None
                if not (
                    self._stopped
                    or self._exhausted
                    or self._running >= self._concurrency
                    or self._running + self._held >= self._window
                ):
                    item = next(self._todo, None)
                    self._exhausted = item is None
                if item is None:
                    self._starting = False
                    return
                self._running += 1
            try:
                self._read(item[0], item[1], self._finished)
            except Exception as exc:  # noqa: BLE001 - count it finished, or take() waits forever
                self._finished(Fetched(item[0], error=EngineError(repr(exc), operation="read")))

    def _finished(self, fetched: Fetched) -> None:
        with self._lock:
            self._running -= 1
            self._held += 1
            if _engine_gone(fetched.error) or _console_refused(fetched.error):
                self._stopped = True
        self._answers.put(fetched)
        self.start_more()

    def take(self, stopping: Callable[[], bool]) -> list[Fetched] | None:
        """The reads finished since the last call (waiting for one), or None when all are, or
        when ``stopping()`` turns true while reads are still in flight: those are left
        unwritten (asked again at the next start), not waited for up to their deadline (an
        engine that hangs would hold a stopping process that long)."""
        while True:
            with self._lock:
                if self._running == 0 and self._held == 0:
                    return None
            try:
                first = self._answers.get(timeout=0.25)
                break
            except queue.Empty:
                if stopping():
                    self.stop()
                    return None
        done = [first]
        with contextlib.suppress(queue.Empty):
            while True:
                done.append(self._answers.get_nowait())
        with self._lock:
            self._held -= len(done)
        self.start_more()
        return done


class EngineIndexer:
    """Indexes one engine. Not thread-safe: one indexer per engine per process."""

    def __init__(self, engine: Engine, client: Client, limits: Limits | None = None) -> None:
        self.engine = engine
        self.client = client
        self.limits = limits or Limits.from_settings()
        #: The fence token of runindexer's lock on the engine, checked by each write (``_fenced``;
        #: none when no lock was taken: tests, and benchmarks).
        self.holder_token = ""
        self._probed_at: datetime | None = None
        # Discovery sweep state (in memory: a restarted process starts a new sweep).
        self._sweep_token = ""
        self._sweep_active = False
        self._sweep_started_at: datetime | None = None
        self._sweep_finished_at = 0.0
        self._sweep_listing = 0.0  # seconds spent in ListInstanceIDs calls this sweep
        self._sweep_pause = 0.0
        self._sweep_seen: set[int] = set()
        self._sweep_listed = 0
        # Distinct listed ids that were indexed (live) when listed: all the live ones, when
        # every one was listed.
        self._sweep_listed_known = 0
        # Live (not purged) instance ids in the database, for discovery; None until read.
        self._known: set[str] | None = None
        self._known_read_at = 0.0
        # Ids the database cannot hold (too long, see _unstorable): reported once, not re-read.
        self._refused: set[str] = set()
        self._answered_at = 0.0  # time.monotonic() of the last Hello answered (_why_down)
        self._forget_at = 0.0  # time.monotonic() of the next look past the retention period
        self._hinted: set[str] = set()  # the ids read for hints in the pass under way
        # The engine's finished and unfinished instances, as last counted (``_counted``), and
        # time.monotonic() of that count.
        self._counts = (0, 0)
        self._counted_at: float | None = None
        self._list_page_size = self.limits.list_page_size
        #: The console's clock and time.monotonic() at the last pass (``_follow_clock``).
        self._clock: tuple[datetime, float] | None = None
        #: Asked now and then during a pass: True ends it early (after the reads in flight are
        #: written), so a stopping process doesn't wait for a first sweep of a big engine.
        self.stopping: Callable[[], bool] = lambda: False
        #: time.monotonic() of the last sign that this indexer's thread is not stuck: a turn of
        #: runindexer's loop of passes (which marks it), a ListInstanceIDs page or a read
        #: answered (each call has a deadline). The runindexer's heartbeat stops for an engine
        #: whose thread shows none for long.
        self.progressed_at = time.monotonic()

    # The unit of work ----------------------------------------------------------------------

    def run_pass(self) -> PassResult:
        """Probe (now and then), take hints, refresh due instances, advance discovery.

        An unreachable engine is recorded on the Engine row and re-raised as EngineUnavailable
        (the loop backs off); indexed data stays as it was.
        """
        result = PassResult()
        # First, and whatever the engine answers: it needs nothing of it (an engine down for
        # weeks still has its tombstones and earlier runs expire).
        self._forget_if_due(result)
        try:
            if self.engine.reachable is False:
                # Down at the last pass: a short Hello first, not a batch of reads that each
                # wait for the full deadline (an engine that hangs rather than refuses).
                self.client.hello(timeout=HELLO_TIMEOUT)
                # Said now, not when the pass ends: catching up after a long outage can take
                # minutes, all that time shown as unreachable.
                self._record_health(reachable=True, error=None)
            self._probe_if_due()
            self._take_hints(result)
            self._refresh_due(result)
            if self.engine.supports_list is not False:
                self._discover(result)
        except EngineUnavailable as exc:
            self._record_health(reachable=False, error=str(exc))
            raise
        except EngineError as exc:
            # Answered but refused (a wrong api token, say): reachable, and the error shows why.
            self._record_health(reachable=True, error=str(exc))
            raise
        self._record_health(reachable=True, error=None, passed=result.errors == 0)
        return result

    def _forget_if_due(self, result: PassResult) -> None:
        """A batch of what is past the retention period, every RETENTION_CHECK_INTERVAL, or at
        each pass while there is more (a pass stays short: the backlog of an upgrade, or of a
        shorter period set, goes a batch a pass)."""
        now = time.monotonic()
        if now < self._forget_at:
            return
        done = retention.forget_expired(
            self.engine.pk, self.limits.retention_days, timezone.now(), self.holder_token
        )
        result.forgotten += done.instances + done.runs
        if done.more:
            result.busy = True
        self._forget_at = now if done.more else now + RETENTION_CHECK_INTERVAL

    # Health and capabilities -----------------------------------------------------------------

    def _record_health(self, reachable: bool, error: str | None, passed: bool = False) -> None:
        now = timezone.now()
        # configured: this process indexes it, whatever another one started with other
        # CONSOLE_ENGINES wrote at the same moment (sync_engines).
        fields: dict[str, Any] = {"reachable": reachable, "configured": True}
        if reachable:
            fields["last_contact_at"] = now
        if passed:
            fields["last_pass_at"] = now
            fields["failing_since"] = None
        if error:
            fields["last_error"] = error[:2000]
            fields["last_error_at"] = now
            if self.engine.failing_since is None:
                fields["failing_since"] = now  # the first failure since a pass succeeded
        for key, value in fields.items():
            setattr(self.engine, key, value)
        Engine.objects.filter(pk=self.engine.pk).update(**fields)

    def _note_error(self, result: PassResult, error: EngineError, instance_id: str = "") -> None:
        result.errors += 1
        message = f"reading {instance_id[:200]!r}: {error}" if instance_id else str(error)
        log.warning("engine %s: %s", self.engine.name, message)
        self._record_health(reachable=True, error=message)

    def _why_down(self, error: EngineUnavailable) -> EngineUnavailable | None:
        """Why the engine is down after this call failed, or None when only the call failed (it
        timed out, or its answer was too big, and the engine answers a Hello): the pass goes on
        without it."""
        if _engine_gone(error):
            return error
        if time.monotonic() - self._answered_at < ANSWERED_RECENTLY:
            return None
        try:
            self.client.hello(timeout=HELLO_TIMEOUT)
        except EngineUnavailable as exc:
            return exc
        except EngineError:
            pass  # it answered (refusing Hello is its business; reads will say more)
        self._answered_at = time.monotonic()
        return None

    def _probe_if_due(self) -> None:
        now = timezone.now()
        if self._probed_at and now - self._probed_at < PROBE_INTERVAL:
            return
        self.client.hello()
        supports: dict[str, bool | None] = {}
        try:
            self.client.list_instance_ids(page_size=1)
            supports["supports_list"] = True
        except NotSupported:
            supports["supports_list"] = False
        except EngineUnavailable:
            raise
        except EngineError:
            supports["supports_list"] = True  # the call exists; it failed for another reason
        try:
            self.client.get_history("")
            supports["supports_history"] = True
        except NotSupported:
            supports["supports_history"] = False
        except EngineUnavailable:
            raise
        except EngineError:
            supports["supports_history"] = True
        # Asked, not inferred from the list (RerunWorkflowFromEvent came first, in Dapr 1.16): an
        # engine that is not daprd may have one call and not the other.
        supports["supports_rerun"] = self.client.supports_rerun()
        changed = {k: v for k, v in supports.items() if getattr(self.engine, k) != v}
        if changed:
            for key, value in changed.items():
                setattr(self.engine, key, value)
            Engine.objects.filter(pk=self.engine.pk).update(**changed)
        if self.engine.too_old:
            calls = {"supports_list": "ListInstanceIDs", "supports_history": "GetInstanceHistory"}
            missing = " and ".join(c for k, c in calls.items() if supports[k] is False)
            message = (
                f"engine {self.engine.name} is too old: it does not implement {missing} "
                "(needs Dapr 1.17 or later): "
                + (
                    "its instances can't be listed"
                    if supports["supports_list"] is False
                    else "its instances are indexed without their histories"
                )
            )
            if self._probed_at is None or changed:
                log.warning("%s", message)
            self._record_health(reachable=True, error=message)
        self._probed_at = now

    # Hints, refresh, discovery -----------------------------------------------------------------

    def _take_hints(self, result: PassResult) -> None:
        hints = list(
            RefreshRequest.objects.filter(engine=self.engine)
            .order_by("requested_at")
            .values_list("pk", "instance_id", "requested_at")[: self.limits.batch]
        )
        if not hints:
            return
        # As a due re-read: the history only when lastUpdatedAt moved (or its last read failed).
        # A hint comes from someone looking at the instance too (workflows_ui.freshness), and a
        # page reloaded now and then must not fetch a long history again each time.
        known = {
            iid: None if error else updated
            for iid, updated, error in Instance.objects.filter(
                engine=self.engine, instance_id__in=[iid for _, iid, _ in hints]
            ).values_list("instance_id", "last_updated_at", "schedule__read_error")
        }
        self._hinted = {iid for _, iid, _ in hints}
        try:
            self._sync([(iid, known.get(iid)) for _, iid, _ in hints], result)
        finally:
            self._hinted = set()
        if self.stopping():
            return  # some may not have been read: the hints stay for the next start
        result.hinted += len(hints)
        # Fenced: a hint taken by a process that lost the engine would never be read by the one
        # that has it now.
        with self._fenced():
            for pk, _, requested_at in hints:
                # A hint renewed while we worked stays for the next pass.
                RefreshRequest.objects.filter(pk=pk, requested_at=requested_at).delete()

    def _follow_clock(self, now: datetime) -> None:
        """Re-reads are due at times of the console's clock. Set back (an NTP correction, a
        host's time zone mistaken for UTC), it would leave each of them late by as much, an hour
        say, with nothing due and "Behind" at zero meanwhile: they are moved back as far."""
        ticks = time.monotonic()
        last, self._clock = self._clock, (now, ticks)
        if last is None:
            return
        back = last[0] + timedelta(seconds=ticks - last[1]) - now
        if back.total_seconds() <= CLOCK_SLACK:
            return
        log.warning(
            "engine %s: the console's clock went back %d s; the re-reads due are moved back as far",
            self.engine.name,
            back.total_seconds(),
        )
        with self._fenced():
            InstanceCheck.objects.filter(engine=self.engine, due_at__gt=now).update(
                due_at=F("due_at") - back
            )

    def _refresh_due(self, result: PassResult) -> None:
        now = timezone.now()
        self._follow_clock(now)
        due = list(
            InstanceCheck.objects.filter(engine=self.engine, due_at__lte=now)
            .order_by("due_at")
            .values_list("instance__instance_id", "instance__last_updated_at", "read_error")[
                : self.limits.batch + 1
            ]
        )
        if len(due) > self.limits.batch:
            result.busy = True
            due = due[: self.limits.batch]
        if due:
            # An instance whose history failed (even once) has its state indexed as of that
            # read: its history is asked for whether or not the state moved since.
            self._sync([(iid, None if error else updated) for iid, updated, error in due], result)
            result.refreshed += len(due)

    def _discover(self, result: PassResult) -> None:
        if not self._sweep_active:
            if time.monotonic() - self._sweep_finished_at < self._sweep_pause:
                return
            self._sweep_active = True
            self._sweep_listing = 0.0
            self._sweep_token = ""
            self._sweep_started_at = timezone.now()
            self._sweep_seen = set()
            self._sweep_listed = 0
            self._sweep_listed_known = 0
            self._record_sweep(sweep_started_at=self._sweep_started_at, sweep_listed=0)
        give_up_at = time.monotonic() + self.limits.discovery_seconds
        for listed in range(self.limits.list_pages_per_pass):
            if self.stopping():
                result.busy = True
                return
            if listed and time.monotonic() > give_up_at:
                break  # the sweep goes on in the next pass
            asked_at = time.monotonic()
            try:
                page = self.client.list_instance_ids(
                    page_size=self._list_page_size, continuation_token=self._sweep_token
                )
            except NotSupported:
                Engine.objects.filter(pk=self.engine.pk).update(
                    supports_list=False, sweep_started_at=None, sweep_listed=0
                )
                self.engine.supports_list = False
                self._sweep_active = False
                return
            except EngineUnavailable as exc:
                if (gone := self._why_down(exc)) is not None:
                    raise gone from None
                # It answers, but not this page in time: smaller pages from now on.
                self._note_error(result, exc)
                smaller = max(MIN_LIST_PAGE_SIZE, self._list_page_size // 2)
                if smaller < self._list_page_size:
                    self._list_page_size = smaller
                    log.warning("engine %s: listing %d ids a page", self.engine.name, smaller)
                    result.busy = True  # try the smaller page now
                return
            except EngineRejected as exc:
                if not self._sweep_token:
                    raise
                # A continuation token the engine no longer takes (it restarted, or its state
                # store moved on): asking with it again would fail for ever. List from the start.
                log.warning(
                    "engine %s: listing refused its continuation token (%s); starting over",
                    self.engine.name,
                    exc,
                )
                self._note_error(result, exc)
                self._sweep_active = False
                self._sweep_finished_at = 0.0
                self._sweep_seen = set()
                result.busy = True
                return
            self.progressed_at = time.monotonic()
            self._sweep_listing += time.monotonic() - asked_at
            ids = page.instance_ids
            self._sweep_listed += len(ids)
            known = self._known_ids()
            new = [i for i in dict.fromkeys(ids) if i not in known and i not in self._refused]
            if new:
                self._sync([(i, None) for i in new], result)
                # Those written: a stopping pass leaves some unread, and failed reads are not.
                known = self._known_ids()
                result.discovered += sum(1 for i in new if i in known)
            for i in ids:
                h = hash(i)
                if h not in self._sweep_seen:
                    self._sweep_seen.add(h)
                    self._sweep_listed_known += i in known
            self._sweep_token = page.continuation_token
            if not self._sweep_token:
                self._finish_sweep(result)
                return
            self._record_sweep(sweep_listed=self._sweep_listed)
        result.busy = True

    def _record_sweep(self, **fields: Any) -> None:
        """How far the listing of the engine's ids has gone, for the engines page (a first
        sweep of a big engine takes minutes)."""
        with self._fenced():  # not the progress of the process that has the engine now
            Engine.objects.filter(pk=self.engine.pk).update(**fields)

    def _known_ids(self) -> set[str]:
        """The ids of the engine's live instances: one query now and then instead of one per
        listed page (``_write`` keeps the set up to date with what it commits)."""
        if self._known is None or time.monotonic() - self._known_read_at > KNOWN_RELOAD_INTERVAL:
            self._known = set(
                Instance.objects.filter(engine=self.engine, purged=False).values_list(
                    "instance_id", flat=True
                )
            )
            self._known_read_at = time.monotonic()
        return self._known

    def _committed(self, fetched: list[Fetched]) -> None:
        if self._known is None:
            return
        for f in fetched:
            if f.state is None:
                self._known.discard(f.instance_id)
            else:
                self._known.add(f.instance_id)

    def _finish_sweep(self, result: PassResult) -> None:
        self._sweep_active = False
        self._sweep_finished_at = time.monotonic()
        self._record_sweep(
            sweep_started_at=None,
            sweep_listed=0,
            last_sweep_at=timezone.now(),
            last_sweep_listed=self._sweep_listed,
        )
        self._sweep_pause = max(
            self.limits.sweep_interval, self._sweep_listing * self.limits.sweep_pause_factor
        )
        live = StatusCount.objects.filter(engine=self.engine).aggregate(n=Sum("count"))["n"] or 0
        if live == self._sweep_listed_known:
            # Every live instance was listed. (Not the count of listed ids: one listed twice, or
            # one that couldn't be read, would hide an instance that is gone.)
            self._sweep_seen = set()
            return
        # Some instance was not listed: find which (one pass over ids, no payloads) and ask the
        # engine about each; only exists=false marks it purged.
        started = self._sweep_started_at
        missing: list[tuple[str, datetime | None]] = []
        indexed = 0
        for iid, updated in self._iter_live_ids(started):
            indexed += 1
            if hash(iid) not in self._sweep_seen:
                missing.append((iid, updated))
        self._sweep_seen = set()
        if len(missing) >= MANY_GONE and len(missing) == indexed:
            # Every instance indexed before this listing gone at once is seldom a purge: a
            # sidecar pointed at another, an emptied state store (new instances may have come
            # in since). A purge, even a sidecar's retention policy purging most of what
            # finished while the indexer was stopped for a day, leaves what still runs or ended
            # since. Each is still asked for (the tombstones keep histories).
            log.warning(
                "engine %s: none of the %d instances indexed before this listing is listed any "
                "more: was its state store emptied or replaced, or all of them purged? Those "
                "the engine says don't exist are marked purged",
                self.engine.name,
                indexed,
            )
        elif missing:
            # Routine on an engine that purges (a retention policy: every sweep); runindexer's
            # summary line counts the purges.
            log.debug(
                "engine %s: %d instance(s) not listed, checking", self.engine.name, len(missing)
            )
        if missing:
            self._sync(missing, result)

    def _iter_live_ids(self, before: datetime | None) -> Iterator[tuple[str, datetime | None]]:
        """(id, last update) of the engine's instances not purged, first seen before
        ``before``."""
        # Keyset on (engine, instance_id), the unique constraint's index: every batch is a range
        # of it, whatever statistics the database has (ordered by id, SQLite without ANALYZE
        # took the rows of the whole engine from another index and sorted them, each batch).
        last_id = ""
        while True:
            qs = Instance.objects.filter(engine=self.engine, purged=False, instance_id__gt=last_id)
            if before is not None:
                qs = qs.filter(first_seen_at__lt=before)
            rows = list(
                qs.order_by("instance_id").values_list("instance_id", "last_updated_at")[
                    :LIVE_IDS_BATCH
                ]
            )
            if not rows:
                return
            last_id = rows[-1][0]
            yield from rows

    # Read (gRPC's threads) and write (this thread) ------------------------------------------

    def _read(
        self,
        instance_id: str,
        known_updated: datetime | None,
        done: Callable[[Fetched], None],
    ) -> None:
        """GetInstance, then GetInstanceHistory when the instance changed; ``done`` gets the
        outcome on a gRPC thread (nothing here touches the database)."""
        out = Fetched(instance_id)
        torn = [False]  # read again once already

        def history_read(answer: list[Event] | EngineError) -> None:
            if not isinstance(answer, EngineError) and not torn[0] and _newer_run(answer, out):
                # The id was started again between the two calls: the state is the run
                # before's (its end, say), the history the new run's. Stored together, the new
                # run would take the old one's status. Both once more.
                torn[0] = True
                self.client.get_instance_later(instance_id, state_read, payloads=out.payloads)
                return
            if isinstance(answer, EngineError):
                # Not found too: purged between the two calls, the next GetInstance says so;
                # or a spurious answer, and taking it for an empty history would leave the
                # events of this change unread for good (lastUpdatedAt has moved past them).
                out.error = out.error or answer  # the payloads' failure first
            else:
                out.events = answer
            done(out)

        def state_read(answer: InstanceState | None | EngineError) -> None:
            if isinstance(answer, EngineError):
                if answer.code == "RESOURCE_EXHAUSTED" and out.payloads:
                    # Its payloads together are over the engine's message size limit: the
                    # rest of its state (status, times) still fits.
                    out.error, out.payloads = answer, False
                    self.client.get_instance_later(instance_id, state_read, payloads=False)
                    return
                out.error = answer
                done(out)
                return
            out.state = answer
            changed = known_updated is None or (
                answer is not None and answer.last_updated_at != known_updated
            )
            if answer is not None and changed and self.engine.supports_history is not False:
                self.client.get_history_later(instance_id, history_read)
            else:
                done(out)

        self.client.get_instance_later(instance_id, state_read)

    def _sync(
        self,
        items: Sequence[tuple[str, datetime | None]],
        result: PassResult,
    ) -> None:
        """Read these instances, ``limits.concurrency`` at a time, and write them as the
        answers come in. Reads go on while a chunk is written: each finished read starts the
        next, as long as fewer than ``window`` answers wait for this thread."""
        window = max(self.limits.concurrency * 4, WRITE_CHUNK + self.limits.concurrency)
        reads = _Reads(items, self.limits.concurrency, window, self._read)
        ready: list[Fetched] = []
        unavailable: EngineUnavailable | None = None
        refused: EngineError | None = None
        try:
            reads.start_more()
            while (done := reads.take(self.stopping)) is not None:
                self.progressed_at = time.monotonic()
                if self.stopping():
                    reads.stop()  # start nothing more; what is in flight is still written
                    result.busy = True
                for f in done:
                    if isinstance(f.error, EngineUnavailable) and unavailable is None:
                        unavailable = self._why_down(f.error)
                        if unavailable is not None:
                            reads.stop()
                    if unavailable is not None and isinstance(f.error, EngineUnavailable):
                        continue
                    if _console_refused(f.error):
                        # Its schedule stays as it is: read again once the token is right
                        # (the pass fails, and the engine's health says why).
                        refused = refused or f.error
                        reads.stop()
                        continue
                    if (
                        isinstance(f.error, NotSupported)
                        and f.error.operation == "GetInstanceHistory"
                        and self.engine.supports_history is not False
                    ):
                        self.engine.supports_history = False
                        Engine.objects.filter(pk=self.engine.pk).update(supports_history=False)
                    if isinstance(f.error, NotSupported) and f.error.operation == (
                        "GetInstanceHistory"
                    ):
                        f.error = None  # an engine without histories: its state is all there is
                    ready.append(f)
                if len(ready) >= WRITE_CHUNK or (ready and reads.idle):
                    self._write(ready, result)
                    ready = []
            if ready:
                self._write(ready, result)
        finally:
            reads.stop()  # after an error here too: start nothing more
        if unavailable is not None:
            raise unavailable
        if refused is not None:
            raise refused

    def _write(self, fetched: list[Fetched], result: PassResult) -> None:
        ok = []
        failed: dict[str, EngineError] = {}
        # Its state was read but not all of it (a history or payloads over the sidecar's message
        # size limit, a history too slow to send): what was read is indexed, so the instance is
        # listed and counted, and the rest is asked for again, backing off, until it comes.
        history_failed: dict[str, EngineError] = {}
        for f in fetched:
            if f.error is not None:
                self._note_error(result, f.error, f.instance_id)
                if f.state is None:
                    failed[f.instance_id] = f.error
                    continue
                history_failed[f.instance_id] = f.error
            if (reason := _unstorable(f)) is not None:
                self._refuse(f.instance_id, reason, result)
            else:
                ok.append(f)
        if failed:
            self._retry_later(failed)
        if not ok:
            return
        try:
            self._write_atomic(ok, result, history_failed)
        except (IntegrityError, DataError) as exc:
            # Another indexer wrote some of these first (IntegrityError), or one of them holds a
            # value the database refuses: write them one by one, so the others are indexed.
            log.warning("engine %s: %s; writing one by one", self.engine.name, exc)
            for f in ok:
                try:
                    self._write_atomic([f], result, history_failed)
                except IntegrityError:
                    log.warning(
                        "engine %s: skipped %s (written elsewhere)", self.engine.name, f.instance_id
                    )
                except DataError as error:
                    self._refuse(f.instance_id, str(error).strip(), result)

    def _write_atomic(
        self, fetched: list[Fetched], result: PassResult, history_failed: dict[str, EngineError]
    ) -> None:
        app_id = self.engine.app_id
        try:
            with self._fenced():
                self._write_chunk(fetched, result, history_failed)
        except BaseException:
            self.engine.app_id = app_id  # learned in the transaction that rolled back
            raise
        self._committed(fetched)

    def _fenced(self) -> contextlib.AbstractContextManager[None]:
        """A transaction that writes only while this process holds the engine: raises LockLost
        once another process took it over (engine_bridge.locks)."""
        return fenced(self.engine.pk, self.holder_token)

    def _retry_later(self, errors: dict[str, EngineError]) -> None:
        """Keep why these (known) instances could not be read, and move their next read back by
        twice their interval: left due, they would be read first again in every pass.

        A first timeout is not yet the instance's: an engine that stalled for longer than the
        deadline (a stopped process, an overloaded host) fails every read in flight, then
        answers the Hello that follows. Such an instance is read again within
        FIRST_TIMEOUT_RETRY, and a second timeout in a row makes it unreadable."""
        # Through the instances' unique (engine, id) index: the checks of an engine are many.
        ids = dict(
            Instance.objects.filter(engine=self.engine, instance_id__in=list(errors)).values_list(
                "pk", "instance_id"
            )
        )
        now = timezone.now()
        rows = InstanceCheck.objects.filter(pk__in=list(ids)).values_list(
            "pk", "interval", "read_failing_since", "read_error", "instance__status"
        )
        # In one transaction with the rows of those that are unreadable from now on, fenced as
        # the chunks are.
        with self._fenced():
            unreadable = []
            for pk, interval, since, last_error, status in rows:
                error = errors[ids[pk]]
                if _first_timeout(error, since, last_error):
                    # Kept in read_error (a read that succeeds clears it), while
                    # read_failing_since stays empty: not listed as unreadable yet.
                    InstanceCheck.objects.filter(pk=pk).update(
                        due_at=now + timedelta(seconds=min(interval, FIRST_TIMEOUT_RETRY)),
                        read_error=str(error)[:2000],
                        read_at=now,
                    )
                    continue
                due_at, new_interval = self._after_failed_read(interval, status)
                InstanceCheck.objects.filter(pk=pk).update(
                    due_at=due_at,
                    interval=new_interval,
                    read_error=str(error)[:2000],
                    read_failing_since=since or now,
                    read_at=now,
                )
                if since is None:
                    # Its page says so from now on.
                    unreadable.append(
                        ChangeLog(
                            created_at=now,
                            engine=self.engine,
                            instance_id=pk,
                            kind=ChangeKind.UPDATED,
                            status=status,
                        )
                    )
            if unreadable:
                change_log_in_commit_order()
                ChangeLog.objects.bulk_create(unreadable)

    def _refuse(self, instance_id: str, reason: str, result: PassResult) -> None:
        """An instance the database cannot hold: the engine's health says so, once per id."""
        result.errors += 1
        if instance_id in self._refused:
            return
        self._refused.add(instance_id)
        message = f"cannot index instance {instance_id[:200]!r}: {reason}"
        log.error("engine %s: %s", self.engine.name, message)
        self._record_health(reachable=True, error=message)

    def _write_chunk(
        self, fetched: list[Fetched], result: PassResult, history_failed: dict[str, EngineError]
    ) -> None:
        """One transaction for the chunk: each instance's row, runs, events, counts, change-log
        rows and schedule are in it, written with a few statements for the whole chunk.
        ``history_failed``: the instances whose history could not be read, and why."""
        ids = [f.instance_id for f in fetched]
        learns, looks_up = self._names_app_ids(fetched)
        if learns or looks_up:
            app_ids_in_order(learning=learns)
        # Most reads in a steady state find the instance unchanged: read the few columns that
        # tell, and the whole (wide) rows of the others only.
        light = {
            row[0]: row[1:]
            for row in Instance.objects.filter(engine=self.engine, instance_id__in=ids).values_list(
                "instance_id",
                "pk",
                "last_updated_at",
                "status",
                "purged",
                "schedule__interval",
                "schedule__read_failing_since",
                "schedule__read_error",
            )
        }
        w = _Writes()
        w.failing = {i: str(error) for i, error in history_failed.items()}
        w.failing_since = {i: light[i][5] if i in light else None for i in history_failed}
        w.first_strike = {
            i
            for i, error in history_failed.items()
            if _first_timeout(error, *(light[i][5:7] if i in light else (None, "")))
        }
        w.unreadable = {i for i, row in light.items() if row[5] is not None}
        rest: list[Fetched] = []
        for f in fetched:
            row = light.get(f.instance_id)
            st = f.state
            if (
                row is not None
                and st is not None
                and f.events is None
                and not row[3]
                and st.last_updated_at == row[1]
                and st.status == row[2]
            ):
                self._schedule_unchanged(row[0], f.instance_id, row[2], row[4], w)
            else:
                rest.append(f)
        stored = [f.instance_id for f in rest if f.instance_id in light]
        existing = {}
        if stored:
            existing = {
                inst.instance_id: inst
                for inst in Instance.objects.filter(engine=self.engine, instance_id__in=stored)
            }
        # Stored ones in the order of their rows: forgetengine unlinking children locks them in
        # that order too, and two writers locking rows in two orders can wait for each other.
        rest.sort(key=lambda f: existing[f.instance_id].pk if f.instance_id in existing else 0)
        for f in rest:
            inst = existing.get(f.instance_id)
            interval = light[f.instance_id][4] if f.instance_id in light else None
            self._apply(f, inst, interval, w, result)
        if w.new_instances:
            pks = dict(
                bulk.insert(bulk.model_rows(w.new_instances), returning=("instance_id", "id"))
            )
            for i in w.new_instances:
                i.pk = pks[i.instance_id]
                i._state.adding = False
        if w.changed:
            self._store_histories(w, result)
        bulk.upsert(w.checks, unique=["instance"], update=_CHECK_FIELDS[2:])
        if w.dropped_checks:
            InstanceCheck.objects.filter(instance__in=w.dropped_checks).delete()
        self._apply_counts(w.counts)
        kin_changed = bool(w.parents or w.new_instances)
        if kin_changed:
            keep_from_deletion(lambda: [pk for pk, _, _ in self._kin(w)])
        if kin_changed or len(w.changes):
            # Last, so that the lock is held for the kin's statuses, this insert and the commit
            # only.
            change_log_in_commit_order()
            if kin_changed:
                self._log_relatives(w)
            if len(w.changes):
                bulk.insert(w.changes)

    def _log_relatives(self, w: _Writes) -> None:
        """Rows for the pages that show the chunk's instances as kin: a parent's, whose list of
        children gained or lost one; a child's, whose parent is now indexed (linked to).

        They may be another engine's instances, and the row gives their status: read under the
        change log's lock, which that engine's indexer also holds from its own rows to its
        commit, so what it changes is read here committed, or logged after this row. (Locking
        the rows could deadlock with that indexer, and would miss its uncommitted new rows:
        they are only kept from deletion, before the lock, ``keep_from_deletion``.)"""
        # Those with a row in the chunk that has their page loaded again are told already.
        told = {
            key if isinstance(key, int) else key.pk
            for _, _, key, kind, *_ in w.changes.rows
            if kind in (ChangeKind.NEW, ChangeKind.UPDATED)
        }
        for pk, engine_pk, status in sorted(self._kin(w)):
            if pk not in told:
                w.updated(engine_pk, pk, status)

    def _kin(self, w: _Writes) -> set[tuple[int, int, str]]:
        """(pk, engine pk, status) of the instances whose pages show the chunk's as kin: the
        parents that gained or lost a child, the children of its new instances."""
        by_engine: dict[int, set[str]] = defaultdict(set)
        for engine_pk, instance_id in w.parents:
            by_engine[engine_pk].add(instance_id)
        kin: set[tuple[int, int, str]] = set()
        for engine_pk, ids in by_engine.items():
            parents = Instance.objects.filter(engine_id=engine_pk, instance_id__in=list(ids))
            kin.update(parents.values_list("pk", "engine_id", "status"))
        if w.new_instances:
            children = Instance.children_of(
                self.engine.pk, [inst.instance_id for inst in w.new_instances]
            )
            kin.update(children.values_list("pk", "engine_id", "status"))
        return kin

    def _apply_counts(self, deltas: dict[tuple[str, str], int]) -> None:
        rows = [(self.engine.pk, n, s, d) for (n, s), d in deltas.items() if d]
        if not rows:
            return
        with connection.cursor() as cur:
            # One statement on both databases (SQLite >= 3.24, PostgreSQL >= 9.5).
            cur.executemany(_UPSERT_COUNT, rows)

    def _schedule_unchanged(
        self, pk: int, instance_id: str, status: str, interval: float | None, w: _Writes
    ) -> None:
        if instance_id in w.failing:
            self._schedule_failing(pk, instance_id, status, interval, w)
            return
        self._log_readable_again(pk, instance_id, status, w)
        if instance_id in self._hinted and interval is not None:
            # Read early because someone looked: its next read as far off as before this one
            # (left to back off, each look would lengthen the wait for a change nobody saw).
            due_at = timezone.now() + timedelta(seconds=interval)
            new_interval = interval
        else:
            due_at, new_interval = self._next_check(status, False, interval)
        w.checks.add(pk, self.engine.pk, due_at, new_interval, "", None, w.now)

    def _schedule(self, inst: Instance, changed: bool, interval: float | None, w: _Writes) -> None:
        if inst.instance_id in w.failing:
            self._schedule_failing(inst, inst.instance_id, inst.status, interval, w)
            return
        self._log_readable_again(inst, inst.instance_id, inst.status, w)
        due_at, new_interval = self._next_check(inst.status, changed, interval)
        w.checks.add(inst, self.engine.pk, due_at, new_interval, "", None, w.now)

    def _schedule_failing(
        self, key: Instance | int, instance_id: str, status: str, interval: float | None, w: _Writes
    ) -> None:
        """The next read of an instance whose history could not be read: twice its interval
        (a new one's: twice the first), why, and since when."""
        if interval is None:
            interval = self._next_check(status, True, None)[1]
        if instance_id in w.first_strike:
            # Read again soon, its history asked for whatever its state says (``_refresh_due``:
            # a read error is kept), and not listed as unreadable yet (``_retry_later``).
            due = w.now + timedelta(seconds=min(interval, FIRST_TIMEOUT_RETRY))
            error = w.failing[instance_id][:2000]
            w.checks.add(key, self.engine.pk, due, interval, error, None, w.now)
            return
        due_at, new_interval = self._after_failed_read(interval, status)
        since = w.failing_since.get(instance_id) or w.now
        if instance_id not in w.unreadable:
            # Its page says so from now on.
            w.updated(self.engine.pk, key, status)
        w.checks.add(
            key, self.engine.pk, due_at, new_interval, w.failing[instance_id][:2000], since, w.now
        )

    def _log_readable_again(
        self, key: Instance | int, instance_id: str, status: str, w: _Writes
    ) -> None:
        if instance_id in w.unreadable:
            # Its page no longer says it can't be read.
            w.updated(self.engine.pk, key, status)

    def _after_failed_read(self, interval: float, status: str) -> tuple[datetime, float]:
        """When to read again an instance whose read failed, and the interval to keep: twice
        the last (left due, it would come first again in every pass), up to
        FAILED_READ_MAX_INTERVAL, or for a finished instance up to ``terminal_interval`` (the
        longest re-read of a finished instance, whatever the engine's number of them)."""
        longest = FAILED_READ_MAX_INTERVAL
        if status in TERMINAL:
            longest = max(longest, self.limits.terminal_interval)
        new_interval = min(longest, max(1.0, interval * 2))
        due_at = timezone.now() + timedelta(seconds=new_interval * (1 + random.uniform(0, 0.1)))
        return due_at, new_interval

    def _next_check(
        self, status: str, changed: bool, interval: float | None
    ) -> tuple[datetime, float]:
        lim = self.limits
        if status in TERMINAL:
            # A finished instance is restarted, re-run or purged and started again under its id
            # mostly soon after it ended (a failure being dealt with, a singleton re-created):
            # read it again after a minute, then twice as long each time, up to the maximum.
            first = min(lim.terminal_first_interval, lim.terminal_interval)
            if changed or interval is None or interval < first:
                new_interval = first
            else:
                new_interval = min(self._terminal_longest(first), interval * 2)
        elif changed or interval is None:
            new_interval = lim.active_interval
        else:
            new_interval = min(self._active_longest(), max(lim.active_interval, interval * 2))
        # Jitter spreads instances indexed together over time.
        delay = new_interval * (1 + random.uniform(-0.1, 0.1))
        return timezone.now() + timedelta(seconds=delay), new_interval

    def _terminal_longest(self, first: float) -> float:
        """The most time between two reads of a finished instance: the engine's finished
        instances read at about ``terminal_read_rate`` a second, so that an id started again
        shows within a minute or so on an engine with a thousand of them, and a big engine's
        are read hourly. (A few reads a second cost a sidecar little; an hour is long to show
        a finished instance that is running again.)"""
        lim = self.limits
        if lim.terminal_read_rate <= 0:
            return lim.terminal_interval
        spread = self._counted()[0] / lim.terminal_read_rate
        return max(first, min(lim.terminal_interval, spread))

    def _active_longest(self) -> float:
        """The most time between two reads of an unfinished instance that does not change:
        ``active_max_interval``, or longer on an engine with more of them than
        ``active_read_rate`` a second reads in that time (one that changes is read again a
        second later, and one someone looks at at the next pass)."""
        lim = self.limits
        if lim.active_read_rate <= 0:
            return lim.active_max_interval
        spread = self._counted()[1] / lim.active_read_rate
        return max(lim.active_max_interval, min(lim.terminal_interval, spread))

    def _counted(self) -> tuple[int, int]:
        """The engine's finished and unfinished instances, counted again every
        STATUS_COUNT_INTERVAL."""
        now = time.monotonic()
        if self._counted_at is None or now - self._counted_at > STATUS_COUNT_INTERVAL:
            finished = Q(status__in=TERMINAL)
            n = StatusCount.objects.filter(engine=self.engine).aggregate(
                finished=Sum("count", filter=finished), unfinished=Sum("count", filter=~finished)
            )
            self._counts = (n["finished"] or 0, n["unfinished"] or 0)
            self._counted_at = now
        return self._counts

    def _change(
        self,
        w: _Writes,
        inst: Instance,
        kind: str,
        status: str,
        old_status: str = "",
        run: Run | None = None,
        first_position: int | None = None,
        last_position: int | None = None,
    ) -> None:
        w.changes.add(
            w.now,
            self.engine.pk,
            inst,
            kind,
            status,
            old_status,
            run,
            first_position,
            last_position,
        )

    def _apply(
        self,
        f: Fetched,
        inst: Instance | None,
        interval: float | None,
        w: _Writes,
        result: PassResult,
    ) -> None:
        st = f.state
        if st is None:
            if inst is not None and not inst.purged:
                inst.purged = True
                inst.purged_at = timezone.now()
                inst.save(update_fields=["purged", "purged_at"])
                w.counts[(inst.name, inst.status)] -= 1
                w.dropped_checks.append(inst.pk)
                self._change(w, inst, ChangeKind.PURGED, status=inst.status)
                result.purged += 1
            elif inst is not None:
                w.dropped_checks.append(inst.pk)
            return

        if (
            inst is not None
            and not inst.purged
            and f.events is None
            and st.last_updated_at == inst.last_updated_at
            and st.status == inst.status
        ):
            # Unchanged (the steady state of most reads): only the schedule moves.
            self._schedule(inst, False, interval, w)
            return

        limit = self.limits.payload_limit
        events = f.events
        started = next((e for e in events or [] if e.event_type == "executionStarted"), None)
        is_new = inst is None
        revived = inst is not None and inst.purged
        old_key = None if inst is None or inst.purged else (inst.name, inst.status)
        old_status = inst.status if inst else ""
        old_name = inst.name if inst else ""
        old_parent = (inst.parent_engine_id, inst.parent_instance_id) if inst else (None, "")
        if inst is None:
            inst = Instance(engine=self.engine, instance_id=f.instance_id)
        history_moved = st.last_updated_at != inst.last_updated_at

        inst.name = st.name[:255]
        inst.status = st.status
        # A pending instance (a scheduled start) has no times yet: it keeps the time it was first
        # seen pending, not a new "now" at each re-read, which would move it in the list (on top
        # of the newest for as long as it waits) and in and out of the created-range filters.
        still_pending = old_status == "PENDING" and not revived
        inst.created_at = (
            st.created_at
            or st.last_updated_at
            or (inst.created_at if still_pending else timezone.now())
        )
        inst.last_updated_at = st.last_updated_at or inst.created_at
        inst.started_at = st.started_at
        inst.scheduled_start_at = st.scheduled_start_at
        if f.payloads:  # else: those stored before stay (none for a new instance)
            inst.input, inst.input_size = _cut(st.input, limit)
            inst.output, inst.output_size = _cut(st.output, limit)
            inst.custom_status, inst.custom_status_size = _cut(st.custom_status, limit)
            fail = st.failure
            inst.failure_type = (fail.type if fail else "")[:255]
            inst.failure_message = (fail.message if fail else "")[:limit]
            inst.failure_stack_trace = (fail.stack_trace if fail else "")[:limit]
        if st.status in TERMINAL:
            completed = next(
                (
                    e.timestamp
                    for e in reversed(events or [])
                    if e.event_type == "executionCompleted"
                ),
                None,
            )
            inst.completed_at = (
                st.completed_at or completed or inst.completed_at or inst.last_updated_at
            )
        else:
            inst.completed_at = None
        # A run we had not seen (a restart, or a purged id started again) may be another
        # workflow, or another version of it, with another parent or none.
        new_run = started is not None and started.execution_id != inst.current_execution_id
        if st.version or new_run:
            inst.version = st.version[:255]
        for e in events or []:
            if e.event_type == "workflowStarted" and e.version:
                inst.version = e.version[:255]
            if self._learns_app_id(e):
                self._learn_app_id(e.source_app_id, w)
        if started is not None:
            inst.trace_id = trace_id_of(started.trace_parent)
            if started.parent is not None:
                inst.parent_instance_id = started.parent.instance_id
                inst.parent_execution_id = started.parent.execution_id
                inst.parent_app_id = started.parent.app_id[:MAX_APP_ID]
                inst.parent_task_scheduled_id = started.parent.task_scheduled_id
            elif (
                new_run
                and (
                    started.name[:255] != old_name
                    or old_status in TERMINAL
                    or not _continued_as_new(events or [])
                )
                and not st.parent_instance_id
            ):
                # Another workflow under the id, or the id started again (after the run we
                # saw end, or as its first events say): not the old run's child.
                # Continue-as-new keeps the name, and its executionStarted may not repeat the
                # parent.
                inst.parent_instance_id = ""
                inst.parent_execution_id = ""
                inst.parent_app_id = ""
                inst.parent_task_scheduled_id = None
                inst.parent_engine_id = None
        if st.parent_instance_id and not inst.parent_instance_id:
            inst.parent_instance_id = st.parent_instance_id
            inst.parent_app_id = st.parent_app_id[:MAX_APP_ID]
        if inst.parent_instance_id:
            inst.parent_engine_id = self._engine_of_app(inst.parent_app_id, w)
        if st.status == "STALLED":
            stall = next(
                (e for e in reversed(events or []) if e.event_type == "executionStalled"), None
            )
            if stall is not None:
                inst.stall_reason = stall.stall_reason[:40]
                inst.stall_description = stall.stall_description[:limit]
        else:
            inst.stall_reason = ""
            inst.stall_description = ""
        if revived:
            inst.purged = False
            inst.purged_at = None
        inst.indexed_at = timezone.now()
        previous_execution_id = inst.current_execution_id
        if events and started is not None:
            inst.current_execution_id = started.execution_id
        if inst.pk is None:
            w.new_instances.append(inst)  # inserted with the chunk's other new instances
        else:
            inst.save()
        new_parent = (inst.parent_engine_id, inst.parent_instance_id)
        if new_parent != old_parent:
            # The parents' pages list their children: one gains this child, the other loses it.
            w.parents.update((e, i) for e, i in (old_parent, new_parent) if e is not None and i)

        new_key = (inst.name, inst.status)
        if old_key != new_key:
            if old_key is not None:
                w.counts[old_key] -= 1
            w.counts[new_key] += 1
        if is_new or revived:
            self._change(w, inst, ChangeKind.NEW, status=inst.status)
            result.changed += 1
        elif old_status != inst.status:
            self._change(w, inst, ChangeKind.STATUS, status=inst.status, old_status=old_status)
            result.changed += 1

        w.changed.append(
            _Changed(
                inst=inst,
                st=st,
                started=started,
                events=events,
                is_new=is_new,
                revived=revived,
                history_moved=history_moved,
                old_status=old_status,
                previous_execution_id=previous_execution_id,
                interval=interval,
            )
        )

    def _store_histories(self, w: _Writes, result: PassResult) -> None:
        """Runs and events of the chunk's changed instances (their rows are written)."""
        known = [c for c in w.changed if c.events and c.started is not None and not c.is_new]
        if known:
            execution_ids = {c.started.execution_id for c in known if c.started is not None}
            execution_ids.update(c.previous_execution_id for c in known if c.previous_execution_id)
            for run in Run.objects.filter(
                instance__in=[c.inst.pk for c in known], execution_id__in=execution_ids
            ):
                w.runs[(run.instance_id, run.execution_id)] = run
            w.last_events = self._last_stored_events(known, w)
        for c in w.changed:
            events_changed = False
            if c.events and c.started is not None:
                events_changed = self._store_events(c, w)
            if events_changed and not c.is_new:
                result.changed += 1
            elif (
                c.history_moved
                and not (c.is_new or c.revived or events_changed)
                and c.old_status == c.inst.status
            ):
                # Something moved without new events we could see (payloads, or history
                # unsupported).
                self._change(w, c.inst, ChangeKind.UPDATED, status=c.inst.status)
            self._schedule(c.inst, c.is_new or c.history_moved or events_changed, c.interval, w)
        if w.new_runs:
            inserted = bulk.insert(
                bulk.model_rows(w.new_runs), returning=("instance", "execution_id", "id")
            )
            run_pks = {
                (instance_pk, execution_id): pk for instance_pk, execution_id, pk in inserted
            }
            for run in w.new_runs:
                run.pk = run_pks[(run.instance_id, run.execution_id)]
                run._state.adding = False
        bulk.insert(w.events)

    def _last_stored_events(
        self, changed: list[_Changed], w: _Writes
    ) -> dict[int, tuple[str, datetime | None]]:
        """The last stored event of each run whose history was read again and is at least as
        long: one query for the chunk (``_store_events`` checks the engine still has it)."""
        last: dict[int, int] = {}
        for c in changed:
            assert c.started is not None
            run = w.runs.get((c.inst.pk, c.started.execution_id))
            if run is not None and 0 < run.event_count <= len(c.events or []):
                last[run.pk] = run.event_count - 1
        if not last:
            return {}
        match = Q()
        for run_pk, position in last.items():
            match |= Q(run_id=run_pk, position=position)
        return {
            run_pk: (event_type, timestamp)
            for run_pk, event_type, timestamp in HistoryEvent.objects.filter(match).values_list(
                "run_id", "event_type", "timestamp"
            )
        }

    def _lost_events(self, run: Run, events: Sequence[Event], w: _Writes) -> bool:
        """Whether the stored history of this run is no longer the engine's: it is longer, or its
        last event is not the engine's at that position. A history only grows: the engine's
        state store was restored from an older copy, and the run went on from there with events
        of its own (as long as those stored by now, or longer)."""
        if len(events) < run.event_count:
            return True
        last = w.last_events.get(run.pk)
        if last is None:
            return False
        engines = events[run.event_count - 1]
        return last != (engines.event_type, engines.timestamp)

    def _drop_lost_events(self, run: Run, instance_id: str, events: Sequence[Event]) -> None:
        """Deletes the stored events of this run from the first that is not the engine's: they
        are of a course the engine no longer has (``_lost_events``). Kept, they would stand in
        for the engine's for good, and mix with them once the run outgrew them."""
        kept = 0
        stored = (
            HistoryEvent.objects.filter(run=run, position__lt=len(events))
            .order_by("position")
            .values_list("event_type", "timestamp")
        )
        for (event_type, timestamp), e in zip(stored.iterator(), events, strict=False):
            if (event_type, timestamp) != (e.event_type, e.timestamp):
                break
            kept += 1
        log.warning(
            "engine %s: history of %s run %s is not the one stored from event %d on (%d events "
            "stored, %d now): was its state store restored from an older copy? The events "
            "stored from there are replaced with the engine's",
            self.engine.name,
            instance_id,
            run.execution_id,
            kept,
            run.event_count,
            len(events),
        )
        HistoryEvent.objects.filter(run=run, position__gte=kept).delete()
        run.event_count = kept
        run.completed_at = next(
            (e.timestamp for e in reversed(events[:kept]) if e.event_type == "executionCompleted"),
            None,
        )

    def _learns_app_id(self, e: Event) -> bool:
        """Whether ``e`` names this engine's app id, and another than the one known."""
        return bool(
            e.source_app_id
            and e.event_type in _OWN_EVENTS
            and e.source_app_id != self.engine.app_id
            and len(e.source_app_id) <= MAX_APP_ID
        )

    def _names_app_ids(self, fetched: list[Fetched]) -> tuple[bool, bool]:
        """Whether writing ``fetched`` will learn this engine's app id (``_learn_app_id``), and
        whether it will look up the engine of a parent on another app (``_engine_of_app``)."""
        own = self.engine.app_id
        learns = looks_up = False
        for f in fetched:
            if f.state is not None and f.state.parent_app_id not in ("", own):
                looks_up = True
            for e in f.events or ():
                learns = learns or self._learns_app_id(e)
                if e.parent is not None and e.parent.app_id not in ("", own):
                    looks_up = True
        return learns, looks_up

    def _learn_app_id(self, app_id: str, w: _Writes) -> None:
        """The app id this engine's sidecar records on its own events (router.sourceAppID),
        learned in the chunk's transaction (``_write`` forgets it if that rolls back). Children
        indexed before it was known, on any engine, get their parent's engine now: a child
        that finished before will not be read again for an hour.

        Another app id than the one learned before: the engine's address now reaches another
        app's sidecar (or the app was renamed). The engines page says so, and its instances'
        children are linked to it, not to the app it served before."""
        if self.engine.app_id:
            log.warning(
                "engine %s: its sidecar records app id %r, not %r as before: does its address "
                "reach another app's sidecar now?",
                self.engine.name,
                app_id,
                self.engine.app_id,
            )
        self.engine.app_id = app_id
        Engine.objects.filter(pk=self.engine.pk).update(app_id=app_id)
        # The replicas of an app share its state store: two engines of one app list the same
        # instances (one sidecar under two names, its address spelt two ways, say).
        twins = Engine.objects.filter(app_id=app_id, configured=True).exclude(pk=self.engine.pk)
        for twin in twins.values_list("name", flat=True):
            log.warning(
                "engine %s: app id %r is engine %s's too: the same app under two names indexes "
                "each of its instances twice",
                self.engine.name,
                app_id,
                twin,
            )
        unlinked = Instance.objects.filter(parent_app_id=app_id, parent_engine__isnull=True)
        # Their pages link to the parent now (on this engine's log or their own engine's).
        # Locked as read: another engine's indexer may be changing one of them, and its row
        # here, after that one's, must give the status that indexer commits.
        linked = (
            unlinked.order_by("pk")
            .select_for_update(no_key=True)
            .values_list("pk", "engine_id", "status", "parent_instance_id")
        )
        for pk, engine_pk, status, parent_id in linked:
            w.updated(engine_pk, pk, status)
            w.parents.add((self.engine.pk, parent_id))  # its page lists them now
        unlinked.update(parent_engine=self.engine)
        for inst in w.new_instances:  # this chunk's, inserted after
            if inst.parent_app_id == app_id and inst.parent_engine_id is None:
                inst.parent_engine_id = self.engine.pk
                w.parents.add((self.engine.pk, inst.parent_instance_id))

    def _engine_of_app(self, app_id: str, w: _Writes) -> int | None:
        """The engine of a parent in app ``app_id``; None while no engine is known to serve
        that app (``_learn_app_id`` fills it in later)."""
        if not app_id or app_id == self.engine.app_id:
            return self.engine.pk
        if app_id not in w.app_engines:
            # A configured engine first: an engine renamed in CONSOLE_ENGINES leaves its old
            # row (not indexed any more) with the same app id.
            w.app_engines[app_id] = (
                Engine.objects.filter(app_id=app_id)
                .order_by("-configured", "pk")
                .values_list("pk", flat=True)
                .first()
            )
        return w.app_engines[app_id]

    def _store_events(self, c: _Changed, w: _Writes) -> bool:
        """Finds or starts the run of ``c.started`` and queues the events it lacks (written
        by ``_store_histories``); returns whether its stored events changed (some added, or
        some dropped as no longer the engine's)."""
        inst, st, events = c.inst, c.st, c.events or []
        assert c.started is not None
        started = c.started
        limit = self.limits.payload_limit
        exec_id = started.execution_id
        run = w.runs.get((inst.pk, exec_id))
        if run is not None and run.superseded_at is not None:
            # A run superseded before is the engine's again (the id started anew with an
            # execution id it had): it must not expire, the run it replaces does.
            _supersede_runs(inst, w.now)
            run.superseded_at = None
            run.save(update_fields=["superseded_at"])
            # Pages show it as the instance's run again, whether or not it has new events.
            self._change(w, inst, ChangeKind.RUN, status=st.status, run=run)
        if run is None:
            previous = (
                w.runs.get((inst.pk, c.previous_execution_id)) if c.previous_execution_id else None
            )
            if previous is not None and previous.status not in TERMINAL:
                # Superseded while we weren't looking at its end. Continue-as-new keeps the
                # workflow's name, and says so in the new run's first events; otherwise the id
                # was started again after this run ended (completed, terminated, or purged),
                # and how it ended was not seen: no status.
                if previous.name == started.name[:255] and _continued_as_new(events):
                    previous.status, previous.completed_at = "CONTINUED_AS_NEW", started.timestamp
                else:
                    previous.status, previous.completed_at = "", None
                previous.save(update_fields=["status", "completed_at"])
            if c.is_new:
                ordinal = 1
            else:
                top = Run.objects.filter(instance=inst).aggregate(m=Max("ordinal"))["m"]
                ordinal = (top or 0) + 1
                _supersede_runs(inst, w.now)
            run_input, run_input_size = _cut(started.input, limit)
            run = Run(
                instance=inst,
                execution_id=exec_id,
                ordinal=ordinal,
                name=started.name[:255],
                status=st.status,
                started_at=started.timestamp,
                input=run_input,
                input_size=run_input_size,
                trace_id=trace_id_of(started.trace_parent),
            )
            w.new_runs.append(run)
            w.runs[(inst.pk, exec_id)] = run
            self._change(w, inst, ChangeKind.RUN, status=st.status, run=run)
        first = run.event_count
        dropped = False
        if first and self._lost_events(run, events, w):
            self._drop_lost_events(run, inst.instance_id, events)
            dropped = run.event_count < first
            if dropped:
                # Before the events that replace them: a live page drops what it showed of
                # them, then adds the engine's.
                self._change(
                    w,
                    inst,
                    ChangeKind.DROPPED,
                    status=st.status,
                    run=run,
                    first_position=run.event_count,
                    last_position=first - 1,
                )
            first = run.event_count
        new_events = events[first:]
        if new_events:
            add = w.events.add
            for i, e in enumerate(new_events):
                add(
                    run,
                    first + i,
                    e.event_id,
                    e.event_type,
                    e.name[:255],
                    e.timestamp,
                    e.related_id,
                    e.details_json or orjson.dumps(e.details).decode(),
                )
            run.event_count = first + len(new_events)
            self._change(
                w,
                inst,
                ChangeKind.EVENTS,
                status=st.status,
                run=run,
                first_position=first,
                last_position=run.event_count - 1,
            )
        completed = next(
            (e for e in reversed(new_events) if e.event_type == "executionCompleted"), None
        )
        run.status = st.status
        if completed is not None:
            run.completed_at = completed.timestamp
        if run.pk is not None:
            run.save(update_fields=["event_count", "status", "completed_at"])
        return bool(new_events) or dropped
