"""The console's own copy of every engine's workflow instances.

Written only by the indexer (``engine_bridge.indexer``); read by pages and the REST API, which
never call an engine to read (they leave the indexer a ``RefreshRequest`` when what they show
may be stale: ``workflows_ui.freshness``). Sized for millions of instances: every list query has
a named index (the comment beside it names the query), pagination is keyset (no OFFSET), counts
come from ``StatusCount`` (never a scan), and live pages catch up from ``ChangeLog.id``.

Full-text search over payloads is not a model field: ``workflows_ui.search`` owns it (SQLite FTS5
table / PostgreSQL generated tsvector column), the one place where the two databases differ.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from workflows_ui.plaintext import visible_name


class Status(models.TextChoices):
    """Runtime status of an instance as the engine names it (OrchestrationStatus, no prefix)."""

    RUNNING = "RUNNING", "Running"
    COMPLETED = "COMPLETED", "Completed"
    CONTINUED_AS_NEW = "CONTINUED_AS_NEW", "Continued as new"
    FAILED = "FAILED", "Failed"
    CANCELED = "CANCELED", "Canceled"
    TERMINATED = "TERMINATED", "Terminated"
    PENDING = "PENDING", "Pending"
    SUSPENDED = "SUSPENDED", "Suspended"
    STALLED = "STALLED", "Stalled"


#: Statuses an instance leaves only by being restarted or purged.
TERMINAL_STATUSES = frozenset({Status.COMPLETED, Status.FAILED, Status.TERMINATED, Status.CANCELED})

#: A colour per status for pages (value, label, colour kept in one place).
STATUS_COLOURS = {
    Status.RUNNING: "blue",
    Status.COMPLETED: "green",
    Status.CONTINUED_AS_NEW: "teal",
    Status.FAILED: "red",
    Status.CANCELED: "grey",
    Status.TERMINATED: "orange",
    Status.PENDING: "grey",
    Status.SUSPENDED: "purple",
    Status.STALLED: "yellow",
}


#: An engine with no heartbeat (``Engine.indexer_seen_at``: a row from before heartbeats, or
#: indexed by ``runindexer --once`` from a scheduler) that no indexer has passed over, or tried
#: to, for this long is not being indexed. Without a heartbeat, only a pass says an indexer is
#: there, and one pass (1,000 reads, 16 at a time) of an engine slow to answer each read but
#: within its deadline may take minutes; a scheduler running ``--once`` every few minutes stays
#: within it.
INDEXER_SILENT = timedelta(minutes=5)


def indexer_unseen_limit() -> timedelta:
    """How long an engine's heartbeat may go unrenewed before its runindexer is taken for gone
    (``CONSOLE_INDEXER_STALE_AFTER``, a minute by default). A runindexer renews it every sixth
    of that (10 s), whatever its passes do, so a minute is several missed beats: a beat late
    behind a long write of the console's database is not taken for a dead process, and an
    operator is told within a minute that none runs."""
    return timedelta(seconds=settings.CONSOLE_INDEXER_STALE_AFTER)


class Engine(models.Model):
    """One engine (a Dapr app's sidecar, or a devengine) and its health as the indexer saw it.

    Rows are created from ``settings.CONSOLE_ENGINES`` by the indexer; an engine removed from the
    setting keeps its row and data (``configured`` turns false). ``supports_*`` are ``None`` until
    probed; ``False`` means the sidecar is too old for that call (UNIMPLEMENTED/UNKNOWN).
    """

    name = models.SlugField(max_length=40, unique=True)
    address = models.CharField(max_length=255)
    tls = models.BooleanField(default=False)
    configured = models.BooleanField(default=True)
    #: The Dapr app id, learned from events' router.sourceAppID; links children across engines.
    app_id = models.CharField(max_length=255, blank=True, default="")

    reachable = models.BooleanField(null=True)
    last_contact_at = models.DateTimeField(null=True, blank=True)
    last_pass_at = models.DateTimeField(null=True, blank=True, help_text="last successful pass")
    last_error = models.TextField(blank=True, default="")
    last_error_at = models.DateTimeField(null=True, blank=True)
    #: When its current run of failed passes began (down, refusing, or failing a read), kept
    #: while it goes on failing whatever the error says, cleared by a pass that succeeds: an
    #: operator reads "unreachable since 09:00", not only the latest error's time.
    failing_since = models.DateTimeField(null=True, blank=True)
    supports_list = models.BooleanField(null=True)
    supports_history = models.BooleanField(null=True)
    supports_rerun = models.BooleanField(null=True)
    created_at = models.DateTimeField(default=timezone.now)
    #: Discovery: the listing of all the engine's ids in progress (since when, how many so far;
    #: None when none is), and the last one that went to its end (when, how many ids).
    sweep_started_at = models.DateTimeField(null=True, blank=True)
    sweep_listed = models.PositiveIntegerField(default=0)
    last_sweep_at = models.DateTimeField(null=True, blank=True)
    last_sweep_listed = models.PositiveIntegerField(null=True, blank=True)
    #: Which ``runindexer`` indexes the engine: each writes its own token here when it takes the
    #: engine, and each of its write transactions checks it (a fence, for when its lock was lost
    #: unseen with a database connection and another indexer took the engine meanwhile).
    indexer_token = models.CharField(max_length=32, blank=True, default="")
    #: The heartbeat of the ``runindexer`` that holds the engine: renewed every few seconds while
    #: the process lives, during a pass that takes minutes and while the engine is down. None
    #: before any, and after a ``runindexer --once`` (a scheduled run is not a process that
    #: stays): then ``health`` goes by the last pass, as before heartbeats.
    indexer_seen_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def too_old(self) -> bool:
        """The sidecar lacks calls the console needs to index it (Dapr older than 1.17)."""
        return self.supports_list is False or self.supports_history is False

    @property
    def failing(self) -> bool:
        """Reachable, but its last pass failed since the last one that succeeded (the engine
        refused the console's api token, say): ``last_error`` says why."""
        if not self.reachable or self.last_error_at is None:
            return False
        return self.last_pass_at is None or self.last_error_at > self.last_pass_at

    def last_tried_at(self) -> datetime:
        """When an indexer last passed over it or tried to (or the row was made, before)."""
        return max(t for t in (self.last_pass_at, self.last_error_at, self.created_at) if t)

    def indexer_last_seen(self) -> datetime:
        """When a runindexer was last seen at work on it: its heartbeat, or its last pass or try
        when later (or before any heartbeat)."""
        return max(t for t in (self.indexer_seen_at, self.last_tried_at()) if t)

    def indexer_silent_limit(self) -> timedelta:
        """How long it may go without a sign of a runindexer before it is stale: the limit of
        heartbeats (``indexer_unseen_limit``), or, for an engine with none (indexed by
        ``runindexer --once``), INDEXER_SILENT on its passes and tries."""
        return INDEXER_SILENT if self.indexer_seen_at is None else indexer_unseen_limit()

    def indexer_gone(self) -> bool:
        """No runindexer holds it: no sign of one for longer than ``indexer_silent_limit``."""
        return timezone.now() - self.indexer_last_seen() > self.indexer_silent_limit()

    def health(self) -> str:
        """One word for pages: unknown, ok, failing, unreachable, too-old, not-indexed, stale."""
        if not self.configured:
            # Taken out of CONSOLE_ENGINES: its last health would go on looking current.
            return "not-indexed"
        if self.too_old:
            return "too-old"
        if self.indexer_gone():
            # No runindexer has it (stopped, or killed): its last health is no news.
            return "stale"
        if self.reachable is None:
            return "unknown"
        if not self.reachable:
            return "unreachable"
        return "failing" if self.failing else "ok"

    def down_since(self) -> datetime | None:
        """When its current failure began, for an engine failing or unreachable now, or when a
        runindexer was last seen at work on it, for a stale one; None for the others (one taken
        out of CONSOLE_ENGINES is not indexed, so not failing either)."""
        health = self.health()
        if health in ("failing", "unreachable"):
            return self.failing_since
        if health == "stale":
            return self.indexer_last_seen()
        return None


class Instance(models.Model):
    """A workflow instance of one engine, as of the engine's ``lastUpdatedAt`` we last stored.

    ``(engine, instance_id)`` is unique. Payloads are stored up to ``CONSOLE_PAYLOAD_LIMIT``
    characters (``*_size`` keeps the original length). A purged instance stays as a tombstone
    (``purged``) with its runs and history readable. The parent link is textual
    (``parent_engine`` + ``parent_instance_id``) so it holds whichever side is indexed first, and
    across engines when the parent's app id names another engine.
    """

    # No index of its own: the unique (engine, instance_id) below starts with it.
    engine = models.ForeignKey(
        Engine, on_delete=models.PROTECT, related_name="instances", db_index=False
    )
    instance_id = models.CharField(max_length=512)
    name = models.CharField(max_length=255, blank=True, default="")
    version = models.CharField(max_length=255, blank=True, default="")
    status = models.CharField(max_length=20, choices=Status.choices)

    created_at = models.DateTimeField(help_text="engine's createdTimestamp")
    last_updated_at = models.DateTimeField(help_text="engine's lastUpdatedTimestamp")
    started_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    scheduled_start_at = models.DateTimeField(null=True, blank=True)

    input = models.TextField(blank=True, default="")
    input_size = models.PositiveIntegerField(default=0)
    output = models.TextField(blank=True, default="")
    output_size = models.PositiveIntegerField(default=0)
    custom_status = models.TextField(blank=True, default="")
    custom_status_size = models.PositiveIntegerField(default=0)
    failure_type = models.CharField(max_length=255, blank=True, default="")
    failure_message = models.TextField(blank=True, default="")
    failure_stack_trace = models.TextField(blank=True, default="")

    parent_engine = models.ForeignKey(
        Engine, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    parent_app_id = models.CharField(max_length=255, blank=True, default="")
    parent_instance_id = models.CharField(max_length=512, blank=True, default="")
    parent_execution_id = models.CharField(max_length=100, blank=True, default="")
    parent_task_scheduled_id = models.IntegerField(null=True, blank=True)

    trace_id = models.CharField(max_length=32, blank=True, default="")
    stall_reason = models.CharField(max_length=40, blank=True, default="")
    stall_description = models.TextField(blank=True, default="")
    current_execution_id = models.CharField(max_length=100, blank=True, default="")

    purged = models.BooleanField(default=False)
    purged_at = models.DateTimeField(null=True, blank=True)
    first_seen_at = models.DateTimeField(default=timezone.now)
    indexed_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            # Lookup by id (detail pages, the indexer), and id-prefix filters within an engine.
            models.UniqueConstraint(
                fields=["engine", "instance_id"], name="wf_inst_engine_id_uniq"
            ),
        ]
        indexes = [
            # List, no filter, newest first; keyset on (created_at, id).
            models.Index(fields=["created_at", "id"], name="wf_inst_created"),
            # List filtered by status (one or several), newest first.
            models.Index(fields=["status", "created_at", "id"], name="wf_inst_status_created"),
            # List filtered by workflow name (+ status), newest first.
            models.Index(
                fields=["name", "status", "created_at", "id"], name="wf_inst_name_status_created"
            ),
            # List filtered by engine (+ status), newest first.
            models.Index(
                fields=["engine", "status", "created_at", "id"], name="wf_inst_eng_status_created"
            ),
            # List filtered by engine only, newest first.
            models.Index(fields=["engine", "created_at", "id"], name="wf_inst_engine_created"),
            # List sorted by last update ("what moved lately"), unfiltered or by status.
            models.Index(fields=["last_updated_at", "id"], name="wf_inst_updated"),
            models.Index(fields=["status", "last_updated_at", "id"], name="wf_inst_status_updated"),
            # ... filtered by workflow name (+ status): one range per status, merged.
            models.Index(
                fields=["name", "status", "last_updated_at", "id"],
                name="wf_inst_name_status_updated",
            ),
            # ... filtered by engine (one range per engine, merged).
            models.Index(fields=["engine", "last_updated_at", "id"], name="wf_inst_engine_updated"),
            # Id prefix across engines ("id starts with ...").
            models.Index(fields=["instance_id"], name="wf_inst_instance_id"),
            # Children of an instance (detail page), by the textual parent link.
            models.Index(
                fields=["parent_engine", "parent_instance_id"],
                name="wf_inst_parent",
                condition=~Q(parent_instance_id=""),
            ),
            # "Show me the instance of this trace" (trace id pasted from a tracing UI).
            models.Index(fields=["trace_id"], name="wf_inst_trace", condition=~Q(trace_id="")),
            # Tombstones past the retention period (engine_bridge.retention).
            models.Index(
                fields=["engine", "purged_at"], name="wf_inst_purged", condition=Q(purged=True)
            ),
        ]

    def __str__(self) -> str:
        return f"{self.engine_id}/{visible_name(self.instance_id)}"

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @property
    def duration_seconds(self) -> float | None:
        end: datetime | None = self.completed_at if self.is_terminal else None
        if end is None:
            return None
        return max(0.0, (end - self.created_at).total_seconds())

    def children(self) -> models.QuerySet[Instance]:
        return Instance.children_of(self.engine_id, [self.instance_id])

    @staticmethod
    def children_of(engine_pk: int, instance_ids: list[str]) -> models.QuerySet[Instance]:
        """The instances whose parent is one of these instances of this engine, found through
        the parent link's index (wf_inst_parent). Its condition is spelt out: SQLite takes a
        partial index only for a query that says it (else it reads every child of the engine
        through the plain index of ``parent_engine``, 30 ms for 200,000 instances), and
        PostgreSQL can't tell that a list of ids has no empty one."""
        return Instance.objects.filter(
            parent_engine=engine_pk, parent_instance_id__in=instance_ids
        ).exclude(parent_instance_id="")

    def read_schedule(self) -> InstanceCheck | None:
        """When the indexer reads this instance next and how its last read went; None for a
        tombstone, no longer read. (No query when the instance was read with
        ``select_related("schedule")``.)"""
        try:
            return self.schedule
        except InstanceCheck.DoesNotExist:
            return None

    def read_problem(self) -> InstanceCheck | None:
        """Why the indexer can't read this instance from its engine now; None when it can."""
        check = self.read_schedule()
        return check if check is not None and check.read_failing_since is not None else None

    def parent(self) -> Instance | None:
        if not self.parent_instance_id or self.parent_engine_id is None:
            return None
        return Instance.objects.filter(
            engine_id=self.parent_engine_id, instance_id=self.parent_instance_id
        ).first()


class Run(models.Model):
    """One generation of an instance, identified by its executionStarted's executionId.

    Continue-as-new and restarting a finished id start a new run; earlier runs the indexer saw
    stay readable with their events for ``CONSOLE_RETENTION_DAYS`` after ``superseded_at``, when
    the indexer stored the run that followed (the engine keeps only the latest). ``ordinal``
    counts the runs in the order the indexer saw them (it can miss runs that started and ended
    between two polls).
    """

    # No index of its own: the unique (instance, execution_id) below starts with it.
    instance = models.ForeignKey(
        Instance, on_delete=models.CASCADE, related_name="runs", db_index=False
    )
    execution_id = models.CharField(max_length=100)
    ordinal = models.PositiveIntegerField()
    name = models.CharField(max_length=255, blank=True, default="")
    status = models.CharField(max_length=20, choices=Status.choices)
    started_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    input = models.TextField(blank=True, default="")
    input_size = models.PositiveIntegerField(default=0)
    trace_id = models.CharField(max_length=32, blank=True, default="")
    #: Number of events stored; the next event's position.
    event_count = models.PositiveIntegerField(default=0)
    #: When the indexer stored a later run of the instance (None for its latest run).
    superseded_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            # Earlier runs past the retention period (engine_bridge.retention).
            models.Index(
                fields=["superseded_at"],
                name="wf_run_superseded",
                condition=Q(superseded_at__isnull=False),
            ),
        ]
        constraints = [
            # The indexer finds a run by its executionId.
            models.UniqueConstraint(fields=["instance", "execution_id"], name="wf_run_exec_uniq"),
            # Runs of an instance in order (detail page "other runs").
            models.UniqueConstraint(fields=["instance", "ordinal"], name="wf_run_ordinal_uniq"),
        ]

    def __str__(self) -> str:
        return f"{self.instance_id}#{self.ordinal} {visible_name(self.execution_id)}"


class HistoryEvent(models.Model):
    """One event of a run's history, keyed by ``(run, position)``; ``event_id`` is data.

    Inbound events all have ``event_id = -1``, so position is the identity. ``related_id`` is the
    pairing field (taskScheduledId / timerId) of completions; ``name`` is filled for completions
    from the event they pair with. ``details`` is the event's payload in protobuf's JSON mapping,
    big strings truncated (``details["_truncated"]`` lists them).
    """

    # No index of its own: the unique (run, position) below starts with it.
    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="events", db_index=False)
    position = models.PositiveIntegerField()
    event_id = models.IntegerField()
    event_type = models.CharField(max_length=40)
    name = models.CharField(max_length=255, blank=True, default="")
    timestamp = models.DateTimeField(null=True, blank=True)
    related_id = models.IntegerField(null=True, blank=True)
    details = models.JSONField(default=dict, blank=True)

    class Meta:
        constraints = [
            # History page of a run, in order, keyset on position; and "no duplicates, ever".
            models.UniqueConstraint(fields=["run", "position"], name="wf_event_run_pos_uniq"),
        ]
        indexes = [
            # History page filtered by event type, keyset on position; and, covering with name
            # and timestamp, the GROUP BY of a big run's timeline (``history.summarize``).
            models.Index(
                fields=["run", "event_type", "position", "name", "timestamp"],
                name="wf_event_run_type_pos",
            ),
            # "Waiting on" of a big run: the starts with no completion pointing back at them
            # (``history.summarize``, an anti-join on the completion's related id).
            models.Index(
                fields=["run", "related_id"],
                name="wf_event_run_related",
                condition=Q(related_id__isnull=False),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.run_id}@{self.position} {self.event_type}"


class StatusCount(models.Model):
    """How many live (not purged) instances an engine has per workflow name and status.

    Maintained by the indexer in the same transaction as the instance change, so list pages
    show counts without scanning instances.
    """

    # No index of its own: the unique (engine, name, status) below starts with it.
    engine = models.ForeignKey(
        Engine, on_delete=models.CASCADE, related_name="status_counts", db_index=False
    )
    name = models.CharField(max_length=255, blank=True, default="")
    status = models.CharField(max_length=20, choices=Status.choices)
    count = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            # Upserted by the indexer; read whole per engine for counts.
            models.UniqueConstraint(fields=["engine", "name", "status"], name="wf_count_uniq"),
        ]

    def __str__(self) -> str:
        return f"{self.engine_id}/{visible_name(self.name)}/{self.status}={self.count}"

    @staticmethod
    def per_engine() -> dict[int, dict[str, int]]:
        """Engine pk -> status -> live instances (statuses with none left out)."""
        out: dict[int, dict[str, int]] = {}
        for engine_id, status, count in StatusCount.objects.filter(count__gt=0).values_list(
            "engine_id", "status", "count"
        ):
            per = out.setdefault(engine_id, {})
            per[status] = per.get(status, 0) + count
        return out


class ChangeKind(models.TextChoices):
    NEW = "new", "New instance"
    STATUS = "status", "Status changed"
    EVENTS = "events", "New events"
    #: The stored events of a run from ``first_position`` on are no longer the engine's (its state
    #: store was restored from an older copy) and were deleted; an ``events`` row that follows
    #: says what replaced them, if anything did.
    DROPPED = "dropped", "Events dropped"
    #: The instance's current run is now ``run``: a new one, or one stored before that is the
    #: engine's again.
    RUN = "run", "Current run"
    UPDATED = "updated", "Updated"
    PURGED = "purged", "Purged"


class ChangeLog(models.Model):
    """A change the indexer wrote, in the same transaction as the change itself.

    The id is the cursor live pages catch up from: "everything after id N" never misses a change
    that is visible in the other tables, and never shows one that isn't.
    """

    id = models.BigAutoField(primary_key=True)
    created_at = models.DateTimeField(default=timezone.now)
    engine = models.ForeignKey(Engine, on_delete=models.CASCADE, related_name="+")
    # No index of its own: the index (instance, id) below starts with it.
    instance = models.ForeignKey(
        Instance, on_delete=models.CASCADE, related_name="changes", db_index=False
    )
    kind = models.CharField(max_length=10, choices=ChangeKind.choices)
    status = models.CharField(max_length=20, blank=True, default="")
    old_status = models.CharField(max_length=20, blank=True, default="")
    run = models.ForeignKey(Run, null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    #: For ``events``: the positions [first_position, last_position] that were added; for
    #: ``dropped``: those that were deleted.
    first_position = models.IntegerField(null=True, blank=True)
    last_position = models.IntegerField(null=True, blank=True)

    class Meta:
        indexes = [
            # A detail page's live updates: changes of one instance after a cursor.
            models.Index(fields=["instance", "id"], name="wf_change_instance"),
        ]

    def __str__(self) -> str:
        return f"#{self.id} {self.kind} {self.instance_id}"

    def as_message(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "engine_id": self.engine_id,
            "instance_pk": self.instance_id,
            "status": self.status,
            "old_status": self.old_status,
            "run_pk": self.run_id,
            "first_position": self.first_position,
            "last_position": self.last_position,
        }


class InstanceCheck(models.Model):
    """When the indexer next reads an instance from its engine (kept apart from ``Instance`` so
    the frequent schedule writes don't rewrite the wide, heavily indexed instance rows)."""

    instance = models.OneToOneField(
        Instance, primary_key=True, on_delete=models.CASCADE, related_name="schedule"
    )
    # No index of its own: the index (engine, due_at) below starts with it.
    engine = models.ForeignKey(Engine, on_delete=models.CASCADE, related_name="+", db_index=False)
    due_at = models.DateTimeField()
    #: Seconds between reads while unchanged (grows up to a maximum, reset by any change).
    interval = models.FloatField(default=1.0)
    #: Why the engine's answer could not be read (a deadline exceeded, an answer too big), since
    #: when; cleared by the next read that succeeds. The instance's row is as of its last read.
    read_error = models.TextField(blank=True, default="", db_default="")
    read_failing_since = models.DateTimeField(null=True, blank=True)
    #: When the indexer last asked the engine for this instance (whether or not anything had
    #: changed, and whether or not the answer could be read); None before this was recorded.
    read_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            # The indexer's refresh pass: the instances of an engine due first.
            models.Index(fields=["engine", "due_at"], name="wf_check_due"),
            # The instances the indexer can't read (few), counted per engine on the engines'
            # page.
            models.Index(
                fields=["read_failing_since"],
                name="wf_check_unreadable",
                condition=Q(read_failing_since__isnull=False),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.instance_id} due {self.due_at:%Y-%m-%d %H:%M:%S}"

    def history_only(self) -> bool:
        """Whether only the history failed (its state was read): the error names the call."""
        return self.read_error.startswith("GetInstanceHistory:")

    @staticmethod
    def unreadable_by_engine() -> dict[int, int]:
        """Engine pk -> how many of its instances the indexer can't read now."""
        rows = (
            InstanceCheck.objects.filter(read_failing_since__isnull=False)
            .values("engine")
            .annotate(n=models.Count("pk"))
            .values_list("engine", "n")
        )
        return dict(rows)

    @staticmethod
    def refresh_lag(engine_pks: list[int]) -> dict[int, float]:
        """Engine pk -> seconds the oldest re-read due has waited (0 when none is overdue): it
        grows when the indexer can't keep up with the engine, or isn't running. One index seek
        per engine (wf_check_due)."""
        now = timezone.now()
        out = {}
        for pk in engine_pks:
            oldest = (
                InstanceCheck.objects.filter(engine_id=pk)
                .order_by("due_at")
                .values_list("due_at", flat=True)
                .first()
            )
            if oldest is not None:
                out[pk] = max(0.0, (now - oldest).total_seconds())
        return out


class RefreshRequest(models.Model):
    """ "Read this instance now": written by the actions service (any process) and by a look
    at an instance (``workflows_ui.freshness``), taken by the indexer on its next pass. Works
    for ids the indexer has not discovered yet."""

    # No index of its own: the unique (engine, instance_id) below starts with it.
    engine = models.ForeignKey(Engine, on_delete=models.CASCADE, related_name="+", db_index=False)
    instance_id = models.CharField(max_length=512)
    requested_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            # One pending request per instance (repeated hints coalesce).
            models.UniqueConstraint(fields=["engine", "instance_id"], name="wf_refresh_uniq"),
        ]

    def __str__(self) -> str:
        return f"refresh {self.engine_id}/{visible_name(self.instance_id)}"
