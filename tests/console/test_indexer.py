"""The indexer's passes against a fake engine fed with the real engine's recorded answers."""

import copy
import json
import logging
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import datetime, timedelta
from io import StringIO

import pytest
from django.db.models import Count, F
from django.utils import timezone
from google.protobuf import json_format

from engine_bridge import indexer as indexer_module
from engine_bridge import locks, mappers
from engine_bridge.client import pb
from engine_bridge.errors import EngineError, EngineRejected, EngineUnavailable, InstanceNotFound
from engine_bridge.indexer import (
    FIRST_TIMEOUT_RETRY,
    STATUS_COUNT_INTERVAL,
    EngineIndexer,
    Limits,
    request_refresh,
    sync_engines,
)
from engine_bridge.types import Event, InstancePage
from tests.console.fakes import FakeEngine, golden_child, golden_instance
from workflows_ui.models import (
    ChangeLog,
    Engine,
    HistoryEvent,
    Instance,
    InstanceCheck,
    RefreshRequest,
    Run,
    StatusCount,
)

pytestmark = pytest.mark.django_db(transaction=True)

GOLDEN = [
    "two_steps",
    "with_retry",
    "approval_event_before_wait",
    "approval_timeout",
    "fan_out_children",
    "continue_as_new",
    "activity_fails",
    "custom_status",
    "suspend_event_resume",
    "terminated",
]


@pytest.fixture
def fake():
    return FakeEngine()


@pytest.fixture
def make_indexer(fake):
    def make(client=None, **limits):
        engine, _ = Engine.objects.get_or_create(name="orders", defaults={"address": "x:1"})
        defaults = {
            "concurrency": 4,
            "active_interval": 0.0,
            "sweep_interval": 0.0,
            "sweep_pause_factor": 0.0,
        }
        return EngineIndexer(engine, client or fake, Limits(**{**defaults, **limits}))

    return make


def counts_are_exact(engine):
    real = {
        (r["name"], r["status"]): r["n"]
        for r in Instance.objects.filter(engine=engine, purged=False)
        .values("name", "status")
        .annotate(n=Count("id"))
    }
    kept = {
        (c.name, c.status): c.count for c in StatusCount.objects.filter(engine=engine) if c.count
    }
    return real == kept


def test_a_pass_indexes_every_recorded_workflow(fake, make_indexer):
    for name in GOLDEN:
        fake.add(*golden_instance(name))
    for child in ("g-fan-out:0001", "g-fan-out:0002"):
        fake.add(*golden_child("fan_out_children", child))
    ix = make_indexer()
    result = ix.run_pass()
    assert result.discovered == 12
    assert Instance.objects.count() == 12
    fails = Instance.objects.get(instance_id="g-fails")
    assert fails.status == "FAILED"
    assert fails.failure_type == "TaskFailedError"
    assert "no carrier" in fails.failure_message
    assert fails.completed_at is not None
    two = Instance.objects.get(instance_id="g-two-steps")
    assert two.input == '{"id": "o-1001", "qty": 2, "amount": 59.9}'
    assert two.input_size == len(two.input)
    assert two.runs.get().events.count() == 9
    assert two.current_execution_id == "9cd16996-fddb-4ed8-823f-6262f3e83415"
    assert Instance.objects.get(instance_id="g-status").custom_status == '{"step": "done"}'
    child = Instance.objects.get(instance_id="g-fan-out:0001")
    assert child.parent_instance_id == "g-fan-out"
    assert child.parent_engine_id == ix.engine.pk
    assert child.parent_task_scheduled_id == 1
    assert child.parent().instance_id == "g-fan-out"
    assert sorted(
        Instance.objects.get(instance_id="g-fan-out")
        .children()
        .values_list("instance_id", flat=True)
    ) == ["g-fan-out:0001", "g-fan-out:0002"]
    retry = Run.objects.get(instance__instance_id="g-with-retry")
    completions = retry.events.filter(event_type="taskFailed").values_list("name", flat=True)
    assert list(completions) == ["charge_card", "charge_card"]
    assert ix.engine.app_id == "example"
    assert counts_are_exact(ix.engine)
    assert ChangeLog.objects.filter(kind="new").count() == 12
    engine = Engine.objects.get(pk=ix.engine.pk)
    assert engine.reachable is True and engine.last_pass_at is not None
    assert engine.supports_list and engine.supports_history and engine.supports_rerun


def test_a_pass_says_its_engine_is_indexed(fake, make_indexer):
    # Another runindexer, started with other CONSOLE_ENGINES as this one took the engine's
    # lock, may have marked it not configured: this one's next pass puts it right.
    ix = make_indexer()
    Engine.objects.update(configured=False)
    ix.run_pass()
    assert Engine.objects.get().configured
    fake.down = True
    Engine.objects.update(configured=False)
    with pytest.raises(EngineUnavailable):
        ix.run_pass()
    assert Engine.objects.get().configured


def test_an_instance_with_a_nul_character_is_indexed(fake, make_indexer, golden):
    # An exception message built from a binary record: the SDK sends it as it is, and
    # PostgreSQL takes no NUL in text or jsonb.
    record = copy.deepcopy(golden("activity_fails"))
    message = "no carrier serves rec\x00ord"
    record["get_instance"]["workflowState"]["failureDetails"]["errorMessage"] = message
    for e in record["history"]:
        if "taskFailed" in e:
            e["taskFailed"]["failureDetails"]["errorMessage"] = message
    state = mappers.instance_state(
        json_format.ParseDict(record["get_instance"], pb.GetInstanceResponse())
    )
    events = [mappers.event(json_format.ParseDict(e, pb.HistoryEvent())) for e in record["history"]]
    fake.add(state, events)
    ix = make_indexer()
    assert ix.run_pass().errors == 0
    inst = Instance.objects.get(instance_id="g-fails")
    assert inst.failure_message == "no carrier serves rec\ufffdord"
    failed = inst.runs.get().events.get(event_type="taskFailed")
    assert failed.details["failureDetails"]["errorMessage"] == "no carrier serves rec\ufffdord"
    assert counts_are_exact(ix.engine)


def test_a_second_pass_over_unchanged_instances_writes_nothing_new(fake, make_indexer):
    for name in GOLDEN:
        fake.add(*golden_instance(name))
    ix = make_indexer(terminal_interval=0.0)
    ix.run_pass()
    before = (HistoryEvent.objects.count(), ChangeLog.objects.count(), Run.objects.count())
    fake.calls.clear()
    result = ix.run_pass()
    assert result.refreshed == len(GOLDEN)
    assert result.changed == 0
    assert (HistoryEvent.objects.count(), ChangeLog.objects.count(), Run.objects.count()) == before
    assert not [c for c in fake.calls if c[0] == "GetInstanceHistory" and c[1]]


def running_copy(name, iid, keep):
    state, events = golden_instance(name)
    return replace(state, status="RUNNING", output=None, completed_at=None), events[:keep], iid


def test_new_events_are_appended_with_positions_and_logged(fake, make_indexer):
    state, events = golden_instance("two_steps")
    fake.add(replace(state, status="RUNNING", output=None), events[:3])
    ix = make_indexer()
    ix.run_pass()
    run = Run.objects.get()
    assert run.event_count == 3 and run.status == "RUNNING"
    fake.append("g-two-steps", events[3:], status="COMPLETED", output=state.output)
    ix.run_pass()
    run.refresh_from_db()
    assert run.event_count == 9 and run.status == "COMPLETED"
    assert list(run.events.order_by("position").values_list("position", flat=True)) == list(
        range(9)
    )
    assert list(run.events.values_list("event_type", flat=True).order_by("position")) == [
        e.event_type for e in events
    ]
    kinds = list(ChangeLog.objects.order_by("id").values_list("kind", "old_status", "status"))
    assert kinds == [
        ("new", "", "RUNNING"),
        ("run", "", "RUNNING"),
        ("events", "", "RUNNING"),
        ("status", "RUNNING", "COMPLETED"),
        ("events", "", "COMPLETED"),
    ]
    last = ChangeLog.objects.order_by("id").last()
    assert (last.first_position, last.last_position) == (3, 8)
    assert counts_are_exact(ix.engine)
    assert StatusCount.objects.get(name="two_steps", status="RUNNING").count == 0


def page_of(pk: int) -> tuple[object, ...]:
    """What the page of an instance shows of it, besides its events and runs: its status and
    last update, whether it is purged, whether the indexer can read it, the engine its parent
    link leads to, its parent (when linked and indexed) and its children (whose own rows tell
    how each goes on)."""
    inst = Instance.objects.get(pk=pk)
    parent = inst.parent()
    return (
        inst.status,
        inst.last_updated_at,
        inst.purged,
        inst.read_problem() is not None,
        inst.parent_engine_id,
        parent.pk if parent else None,
        frozenset(inst.children().values_list("pk", flat=True)),
    )


class LogFollower:
    """What live pages show, kept from the change log alone: it reads the rows after its
    cursor, as a page catching up does, and fetches what they name (an instance's page as a
    whole, when a row names no events)."""

    def __init__(self) -> None:
        self.cursor = 0
        #: run pk -> position -> (event type, timestamp)
        self.shown: dict[int, dict[int, tuple[str, datetime | None]]] = {}
        #: instance pk -> the run pk shown as its current run
        self.current: dict[int, int] = {}
        #: instance pk -> its page (``page_of``) as of the last row about it
        self.pages: dict[int, tuple[object, ...]] = {}

    def catch_up(self) -> None:
        for row in ChangeLog.objects.filter(id__gt=self.cursor).order_by("id"):
            self.cursor = row.id
            self.pages[row.instance_id] = page_of(row.instance_id)
            shown = self.shown.setdefault(row.run_id, {})
            if row.kind == "run":
                self.current[row.instance_id] = row.run_id
            elif row.kind == "dropped":
                for position in range(row.first_position, row.last_position + 1):
                    del shown[position]
            elif row.kind == "events":
                for position, event_type, timestamp in HistoryEvent.objects.filter(
                    run=row.run_id, position__range=(row.first_position, row.last_position)
                ).values_list("position", "event_type", "timestamp"):
                    shown[position] = (event_type, timestamp)

    def shows_what_is_stored(self) -> bool:
        self.catch_up()
        stored: dict[int, dict[int, tuple[str, datetime | None]]] = {}
        for run_pk, position, event_type, timestamp in HistoryEvent.objects.values_list(
            "run_id", "position", "event_type", "timestamp"
        ):
            stored.setdefault(run_pk, {})[position] = (event_type, timestamp)
        return {pk: events for pk, events in self.shown.items() if events} == stored

    def shows_the_current_runs(self) -> bool:
        self.catch_up()
        current = {
            run.instance_id: run.pk
            for run in Run.objects.filter(execution_id=F("instance__current_execution_id"))
        }
        return self.current == current

    def shows_the_instances_as_stored(self) -> bool:
        self.catch_up()
        stored = {pk: page_of(pk) for pk in Instance.objects.values_list("pk", flat=True)}
        # A page of an instance deleted since (its rows with it) is loaded again.
        return {pk: page for pk, page in self.pages.items() if pk in stored} == stored


def test_a_history_shorter_than_stored_replaces_the_events_past_it(fake, make_indexer):
    """The engine's state store restored from an older copy: the run is back at an earlier
    point and goes on from there with events of its own, which the console shows, not those
    of the course the engine no longer has."""
    state, events = golden_instance("two_steps")
    fake.add(state, events)
    ix = make_indexer(terminal_first_interval=0.0)
    page = LogFollower()
    ix.run_pass()
    run = Run.objects.get()
    assert run.event_count == 9 and run.completed_at is not None
    assert page.shows_what_is_stored()
    restored = replace(state, status="RUNNING", output=None, completed_at=None)
    fake.add(replace(restored, last_updated_at=events[2].timestamp), events[:3])
    ix.run_pass()
    run.refresh_from_db()
    assert (run.event_count, run.status, run.completed_at) == (3, "RUNNING", None)
    assert run.events.count() == 3
    # The log says which events went, so a page that showed them drops them.
    dropped = ChangeLog.objects.get(kind="dropped")
    assert (dropped.run, dropped.first_position, dropped.last_position) == (run, 3, 8)
    assert page.shows_what_is_stored()
    # It goes on, another way: its next events are at the positions of those dropped.
    later = [replace(e, timestamp=e.timestamp.replace(year=2027)) for e in events[3:]]
    fake.append("g-two-steps", later, status="COMPLETED", output=state.output)
    ix.run_pass()
    run.refresh_from_db()
    stored = list(run.events.order_by("position").values_list("position", "timestamp"))
    assert stored == [(i, e.timestamp) for i, e in enumerate(events[:3] + later)]
    assert run.event_count == 9 and run.completed_at == later[-1].timestamp
    assert page.shows_what_is_stored()


def test_a_history_that_went_another_way_since_it_was_stored_replaces_it(fake, make_indexer):
    """Restored from an older copy, the engine ran the run on to as many events as stored (or
    more) before the indexer read it again: the stored events from where the two part are
    replaced with the engine's."""
    state, events = golden_instance("two_steps")
    fake.add(state, events)
    ix = make_indexer(terminal_first_interval=0.0)
    page = LogFollower()
    ix.run_pass()
    assert page.shows_what_is_stored()
    cursor = page.cursor
    later = [replace(e, timestamp=e.timestamp.replace(year=2027)) for e in events[3:]]
    fake.add(replace(state, last_updated_at=later[-1].timestamp), events[:3] + later)
    ix.run_pass()
    run = Run.objects.get()
    stored = list(run.events.order_by("position").values_list("position", "timestamp"))
    assert stored == [(i, e.timestamp) for i, e in enumerate(events[:3] + later)]
    assert run.event_count == 9 and run.completed_at == later[-1].timestamp
    # Said as what it is: those events went, and others took their places.
    logged = ChangeLog.objects.filter(id__gt=cursor).order_by("id")
    assert list(logged.values_list("kind", "first_position", "last_position")) == [
        ("dropped", 3, 8),
        ("events", 3, 8),
    ]
    assert page.shows_what_is_stored()
    # The same history read again (its state moved): nothing more is replaced.
    fake.append("g-two-steps", [])
    ix.run_pass()
    assert list(run.events.order_by("position").values_list("position", "timestamp")) == stored


def test_new_events_are_read_when_the_last_updated_time_goes_back(fake, make_indexer):
    # daprd's actor backend answers the last history event's time, and a turn's last event can
    # be an event that arrived before the previous turn committed: the time moves back.
    state, events = golden_instance("two_steps")
    fake.add(replace(state, status="RUNNING", output=None), events[:3])
    ix = make_indexer()
    ix.run_pass()
    earlier = state.last_updated_at - timedelta(milliseconds=5)
    fake.append("g-two-steps", events[3:6], last_updated_at=earlier)
    ix.run_pass()
    run = Run.objects.get()
    assert run.event_count == 6
    assert run.instance.last_updated_at == earlier


def test_continue_as_new_starts_a_new_run_and_keeps_the_old_one(fake, make_indexer):
    state, events = golden_instance("continue_as_new")
    first = [replace(e) for e in events[:3]]
    fake.add(replace(state, status="RUNNING"), first)
    ix = make_indexer()
    ix.run_pass()
    fake.append("g-monitor", [], status="COMPLETED")
    fake.instances["g-monitor"] = (fake.instances["g-monitor"][0], events)
    # A new generation: another executionId.
    started = next(e for e in events if e.event_type == "executionStarted")
    first_started = next(e for e in first if e.event_type == "executionStarted")
    first_started.execution_id = "run-one"
    Run.objects.filter(execution_id=started.execution_id).update(execution_id="run-one")
    Instance.objects.filter(instance_id="g-monitor").update(current_execution_id="run-one")
    ix.run_pass()
    runs = list(
        Run.objects.order_by("ordinal").values_list("execution_id", "status", "event_count")
    )
    assert runs == [
        ("run-one", "CONTINUED_AS_NEW", 3),
        (started.execution_id, "COMPLETED", len(events)),
    ]
    inst = Instance.objects.get(instance_id="g-monitor")
    assert inst.current_execution_id == started.execution_id
    assert ChangeLog.objects.filter(kind="run").count() == 2


def test_an_id_missing_from_the_list_is_purged_only_when_the_engine_says_so(fake, make_indexer):
    fake.add(*golden_instance("two_steps"))
    fake.add(*golden_instance("terminated"))
    ix = make_indexer()
    ix.run_pass()
    fake.listing_hides.add("g-two-steps")  # a listing that raced with a write
    ix.run_pass()
    assert not Instance.objects.get(instance_id="g-two-steps").purged
    del fake.instances["g-terminated"]
    ix.run_pass()
    gone = Instance.objects.get(instance_id="g-terminated")
    assert gone.purged and gone.purged_at is not None
    assert gone.runs.get().events.count() == 6  # tombstone keeps its history
    assert ChangeLog.objects.filter(kind="purged", instance=gone).count() == 1
    assert counts_are_exact(ix.engine)
    ix.run_pass()
    assert ChangeLog.objects.filter(kind="purged").count() == 1


def test_a_sweep_looks_for_missing_ids_through_every_batch(fake, make_indexer, monkeypatch):
    monkeypatch.setattr(indexer_module, "LIVE_IDS_BATCH", 2)
    state, events = golden_instance("terminated")
    for i in range(7):
        fake.add(state, events, instance_id=f"t-{i}")
    ix = make_indexer()
    ix.run_pass()
    for i in (0, 3, 6):
        del fake.instances[f"t-{i}"]
    ix.run_pass()
    purged = Instance.objects.filter(purged=True).values_list("instance_id", flat=True)
    assert sorted(purged) == ["t-0", "t-3", "t-6"]
    assert counts_are_exact(ix.engine)


def test_a_purged_id_started_again_comes_back_with_a_new_run(fake, make_indexer):
    state, events = golden_instance("two_steps")
    fake.add(state, events)
    ix = make_indexer()
    ix.run_pass()
    del fake.instances["g-two-steps"]
    ix.run_pass()
    assert Instance.objects.get().purged
    again = [replace(e) for e in events]
    again[1].execution_id = "second-run"
    fake.add(replace(state, last_updated_at=state.last_updated_at.replace(year=2027)), again)
    ix.run_pass()
    inst = Instance.objects.get()
    assert not inst.purged
    assert inst.runs.count() == 2
    assert counts_are_exact(ix.engine)


def _continued_as_new(fake, ix):
    """g-monitor indexed over two runs: "run-one" (continued as new), then the engine's."""
    state, events = golden_instance("continue_as_new")
    fake.add(replace(state, status="RUNNING"), [replace(e) for e in events[:3]])
    ix.run_pass()
    Run.objects.filter(instance__instance_id="g-monitor").update(execution_id="run-one")
    Instance.objects.filter(instance_id="g-monitor").update(current_execution_id="run-one")
    fake.append("g-monitor", [], status="COMPLETED")
    fake.instances["g-monitor"] = (fake.instances["g-monitor"][0], events)
    ix.run_pass()


def test_tombstones_and_earlier_runs_are_forgotten_after_the_retention_period(fake, make_indexer):
    fake.add(*golden_instance("two_steps"))
    fake.add(*golden_instance("terminated"))
    ix = make_indexer(retention_days=30)
    _continued_as_new(fake, ix)
    del fake.instances["g-terminated"]
    ix.run_pass()
    earlier = Run.objects.get(execution_id="run-one")
    assert earlier.superseded_at is not None
    assert Run.objects.filter(superseded_at__isnull=True).count() == 3  # each one's latest
    kept = Run.objects.exclude(execution_id="run-one").get(instance__instance_id="g-monitor")
    tombstone = Instance.objects.get(instance_id="g-terminated", purged=True)
    events_before = HistoryEvent.objects.count()

    # Within the period (and looked at again): all stay.
    ix._forget_at = 0.0
    assert ix.run_pass().forgotten == 0
    assert HistoryEvent.objects.count() == events_before

    # 31 days on: the tombstone and the earlier run go, with their events and change-log rows.
    month_ago = timezone.now() - timedelta(days=31)
    Instance.objects.filter(pk=tombstone.pk).update(purged_at=month_ago)
    Run.objects.filter(pk=earlier.pk).update(superseded_at=month_ago)
    cursor = ChangeLog.objects.order_by("id").last().id
    ix._forget_at = 0.0
    assert ix.run_pass().forgotten == 2
    # A live page of g-monitor learns that it has one run fewer.
    logged = ChangeLog.objects.filter(id__gt=cursor)
    assert list(logged.values_list("instance__instance_id", "kind", "run")) == [
        ("g-monitor", "updated", None)
    ]
    assert not Instance.objects.filter(pk=tombstone.pk).exists()
    assert not Run.objects.filter(pk=earlier.pk).exists()
    assert not HistoryEvent.objects.filter(run__in=[earlier.pk]).exists()
    assert not ChangeLog.objects.filter(instance=tombstone.pk).exists()
    assert HistoryEvent.objects.count() == events_before - 6 - 3
    assert set(Instance.objects.values_list("instance_id", flat=True)) == {
        "g-two-steps",
        "g-monitor",
    }
    assert Run.objects.get(instance__instance_id="g-monitor") == kept
    assert kept.events.count() == kept.event_count
    assert counts_are_exact(ix.engine)


def test_a_run_that_is_current_again_does_not_expire(fake, make_indexer):
    # A client may choose the execution id of a start: the id started anew with one it had.
    state, events = golden_instance("two_steps")

    def run_of(execution_id, seconds):
        started = [
            replace(e, execution_id=execution_id) if e.event_type == "executionStarted" else e
            for e in events
        ]
        later = replace(state, last_updated_at=state.last_updated_at + timedelta(seconds=seconds))
        fake.instances["g-two-steps"] = (later, started)
        request_refresh("orders", "g-two-steps")

    fake.add(state, events)
    ix = make_indexer(retention_days=1)
    page = LogFollower()
    run_of("first", 1)
    ix.run_pass()
    run_of("second", 2)
    ix.run_pass()
    assert page.shows_the_current_runs()
    run_of("first", 3)
    ix.run_pass()
    current = Run.objects.get(execution_id="first")
    assert current.superseded_at is None
    assert page.shows_the_current_runs()  # the log says it is the current run again
    assert Run.objects.get(execution_id="second").superseded_at is not None
    Run.objects.filter(superseded_at__isnull=False).update(
        superseded_at=timezone.now() - timedelta(days=2)
    )
    ix._forget_at = 0.0
    ix.run_pass()
    inst = Instance.objects.get(instance_id="g-two-steps")
    assert list(inst.runs.values_list("execution_id", flat=True)) == ["first"]


def test_tombstones_expire_while_their_engine_is_down(fake, make_indexer):
    fake.add(*golden_instance("terminated"))
    ix = make_indexer(retention_days=30)
    ix.run_pass()
    del fake.instances["g-terminated"]
    ix.run_pass()
    Instance.objects.update(purged_at=timezone.now() - timedelta(days=31))
    fake.down = True
    ix._forget_at = 0.0
    with pytest.raises(EngineUnavailable):
        ix.run_pass()
    assert not Instance.objects.exists()


def test_retention_zero_keeps_tombstones_and_earlier_runs_for_good(fake, make_indexer):
    fake.add(*golden_instance("terminated"))
    ix = make_indexer(retention_days=0)
    _continued_as_new(fake, ix)
    del fake.instances["g-terminated"]
    ix.run_pass()
    long_ago = timezone.now() - timedelta(days=3650)
    Instance.objects.filter(purged=True).update(purged_at=long_ago)
    Run.objects.filter(superseded_at__isnull=False).update(superseded_at=long_ago)
    ix._forget_at = 0.0
    assert ix.run_pass().forgotten == 0
    assert Instance.objects.filter(purged=True).count() == 1
    assert Run.objects.count() == 3


def test_the_change_log_keeps_a_day(fake, make_indexer):
    fake.add(*golden_instance("two_steps"))
    fake.add(*golden_instance("terminated"))
    ix = make_indexer()
    ix.run_pass()
    rows = list(ChangeLog.objects.order_by("id").values_list("id", flat=True))
    assert len(rows) >= 2
    ChangeLog.objects.filter(id__in=rows[:-1]).update(created_at=timezone.now() - timedelta(days=2))
    ix._forget_at = 0.0
    ix.run_pass()
    assert list(ChangeLog.objects.values_list("id", flat=True)) == rows[-1:]


def test_the_earlier_runs_of_an_upgraded_database_expire_from_the_upgrade(fake, make_indexer):
    from importlib import import_module

    from django.apps import apps

    fake.add(*golden_instance("two_steps"))
    ix = make_indexer()
    _continued_as_new(fake, ix)
    Run.objects.update(superseded_at=None)  # as the indexer before it left them
    migration = import_module("workflows_ui.migrations.0013_earlier_runs_and_tombstones_expire")
    migration.supersede_earlier_runs(apps, None)
    superseded = Run.objects.filter(superseded_at__isnull=False)
    assert list(superseded.values_list("execution_id", flat=True)) == ["run-one"]
    assert timezone.now() - superseded.get().superseded_at < timedelta(minutes=1)


def test_a_backlog_past_the_retention_goes_a_batch_a_pass(fake, make_indexer, monkeypatch):
    monkeypatch.setattr(indexer_module.retention, "INSTANCES_PER_BATCH", 2)
    for n in range(5):
        state, events = golden_instance("terminated")
        fake.add(replace(state, instance_id=f"t-{n}"), events)
    ix = make_indexer(retention_days=1)
    ix.run_pass()
    fake.instances.clear()
    ix.run_pass()
    Instance.objects.update(purged_at=timezone.now() - timedelta(days=2))
    left = []
    for _ in range(4):
        ix._forget_at = 0.0 if not left else ix._forget_at
        result = ix.run_pass()
        left.append((Instance.objects.count(), result.busy))
    # Two a pass; "busy" (no sleep before the next pass) while a batch came back full.
    assert left == [(3, True), (1, True), (0, False), (0, False)]


def test_a_look_past_the_retention_walks_the_superseded_runs_not_the_engine(fake, make_indexer):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    if connection.vendor != "sqlite":
        pytest.skip("SQLite's query plans (PostgreSQL plans with the statistics it keeps)")
    # What a fresh console database does (no ANALYZE has run): the earlier runs past the period
    # are found from their index, not by reading and sorting every run of the engine.
    ix = make_indexer(retention_days=30)
    _continued_as_new(fake, ix)
    with CaptureQueriesContext(connection) as queries:
        indexer_module.retention.forget_expired(ix.engine.pk, 30, timezone.now())
    (sql,) = [
        q["sql"]
        for q in queries.captured_queries
        if q["sql"].startswith('SELECT "workflows_ui_run"') and "superseded_at" in q["sql"]
    ]
    with connection.cursor() as cur:
        cur.execute("EXPLAIN QUERY PLAN " + sql)
        plan = " / ".join(str(row[-1]) for row in cur.fetchall())
    assert "wf_run_superseded" in plan and "TEMP B-TREE" not in plan, plan


def test_an_unreachable_engine_is_recorded_and_data_stays(fake, make_indexer, monkeypatch):
    fake.add(*golden_instance("two_steps"))
    ix = make_indexer()
    ix.run_pass()
    fake.down = True
    with pytest.raises(EngineUnavailable):
        ix.run_pass()
    engine = Engine.objects.get()
    assert engine.reachable is False
    assert "connection refused" in engine.last_error
    assert Instance.objects.count() == 1
    fake.down = False
    fake.add(*golden_instance("terminated"))
    during = []
    refresh_due = ix._refresh_due

    def refresh(result):
        during.append(Engine.objects.get().health())
        refresh_due(result)

    monkeypatch.setattr(ix, "_refresh_due", refresh)
    ix.run_pass()
    # Back: said answering from its Hello (its last pass failed), not "unreachable" for as long
    # as the pass catching up takes.
    assert during == ["failing"]
    assert Engine.objects.get().reachable is True
    assert Engine.objects.get().health() == "ok"
    assert Instance.objects.count() == 2


def too_slow(operation):
    return EngineUnavailable("Deadline Exceeded", code="DEADLINE_EXCEEDED", operation=operation)


def test_an_instance_too_slow_to_read_costs_that_instance_not_the_pass(fake, make_indexer):
    state, events = golden_instance("two_steps")
    fake.add(state, events, instance_id="slow")
    fake.add(state, events, instance_id="fine")
    fake.failing[("GetInstanceHistory", "slow")] = too_slow("GetInstanceHistory")
    ix = make_indexer()
    result = ix.run_pass()  # the engine answers Hello: only that read failed
    assert (result.errors, result.discovered) == (1, 2)
    engine = Engine.objects.get()
    assert engine.reachable is True and engine.health() == "failing"
    assert "'slow'" in engine.last_error and "DEADLINE_EXCEEDED" in engine.last_error
    # Its state was read: it is listed and counted, with no history yet.
    slow = Instance.objects.get(instance_id="slow")
    assert (slow.status, slow.runs.count()) == ("COMPLETED", 0)
    # A first timeout may be the engine's (it stalled): read again soon, not unreadable yet.
    check = InstanceCheck.objects.get(instance=slow)
    assert slow.read_problem() is None and "DEADLINE_EXCEEDED" in check.read_error
    assert check.due_at <= timezone.now() + timedelta(seconds=FIRST_TIMEOUT_RETRY)
    InstanceCheck.objects.filter(instance=slow).update(due_at=timezone.now())
    assert ix.run_pass().errors == 1  # its history is asked for again, and times out again
    problem = Instance.objects.get(instance_id="slow").read_problem()
    assert problem is not None and problem.history_only()
    assert "DEADLINE_EXCEEDED" in problem.read_error
    assert StatusCount.objects.get(name=slow.name, status="COMPLETED").count == 2
    assert Instance.objects.get(instance_id="fine").runs.get().event_count == len(events)
    del fake.failing[("GetInstanceHistory", "slow")]
    ix.run_pass()
    assert Instance.objects.get(instance_id="slow").runs.count() == 0  # not due yet
    InstanceCheck.objects.filter(instance=slow).update(due_at=timezone.now())
    ix.run_pass()  # its history is asked for though its state has not moved
    slow = Instance.objects.get(instance_id="slow")
    assert slow.runs.get().event_count == len(events)
    assert slow.read_problem() is None
    assert Engine.objects.get().health() == "ok"


def test_a_known_instance_whose_reads_fail_is_tried_again_later_not_every_pass(fake, make_indexer):
    state, events = golden_instance("two_steps")
    fake.add(state, events, instance_id="slow")
    fake.add(state, events, instance_id="fine")
    ix = make_indexer(terminal_first_interval=60.0)
    ix.run_pass()
    InstanceCheck.objects.update(due_at=timezone.now())
    fake.append("slow", [])
    fake.append("fine", [])
    fake.failing[("GetInstanceHistory", "slow")] = too_slow("GetInstanceHistory")
    assert ix.run_pass().errors == 1
    first = InstanceCheck.objects.get(instance__instance_id="slow")
    assert (first.interval, first.read_failing_since) == (60, None)  # a first timeout
    InstanceCheck.objects.filter(pk=first.pk).update(due_at=timezone.now())
    before = timezone.now()
    assert ix.run_pass().errors == 1
    slow = InstanceCheck.objects.get(instance__instance_id="slow")
    assert slow.interval == 120  # twice the 60 s it had (finished)
    assert slow.due_at >= before + timedelta(seconds=120)
    fine = Instance.objects.get(instance_id="fine")
    assert fine.last_updated_at == fake.instances["fine"][0].last_updated_at
    assert "DEADLINE_EXCEEDED" in slow.read_error
    assert slow.read_failing_since is not None and slow.read_failing_since >= before
    assert Instance.objects.get(instance_id="slow").read_problem() == slow
    assert Instance.objects.get(instance_id="fine").read_problem() is None
    fake.calls.clear()
    ix.run_pass()
    assert ("GetInstance", "slow") not in fake.calls
    # Failing again keeps the time it started failing; a read that succeeds clears it.
    InstanceCheck.objects.filter(pk=slow.pk).update(due_at=timezone.now())
    ix.run_pass()
    again = InstanceCheck.objects.get(pk=slow.pk)
    assert (again.interval, again.read_failing_since) == (240, slow.read_failing_since)
    del fake.failing[("GetInstanceHistory", "slow")]
    InstanceCheck.objects.filter(pk=slow.pk).update(due_at=timezone.now())
    ix.run_pass()
    healed = InstanceCheck.objects.get(pk=slow.pk)
    assert (healed.read_error, healed.read_failing_since) == ("", None)
    assert Instance.objects.get(instance_id="slow").last_updated_at == (
        fake.instances["slow"][0].last_updated_at
    )


def test_a_page_learns_from_the_log_when_its_instance_cant_be_read_and_when_it_can_again(
    fake, make_indexer
):
    """The page of an instance says when the indexer can't read it (its state, or only its
    history): the log tells when that starts and when it ends."""
    fake.add(*golden_instance("two_steps"), instance_id="slow")
    ix = make_indexer(terminal_first_interval=60.0)
    page = LogFollower()
    ix.run_pass()
    assert page.shows_the_instances_as_stored()
    for call in ("GetInstance", "GetInstanceHistory"):
        fake.failing[(call, "slow")] = too_slow(call)
        fake.append("slow", [])  # moved: its history is asked for
        for _ in range(2):  # a first timeout, then a second one: unreadable
            InstanceCheck.objects.update(due_at=timezone.now())
            ix.run_pass()
            assert page.shows_the_instances_as_stored()
        assert Instance.objects.get().read_problem() is not None
        del fake.failing[(call, "slow")]
        InstanceCheck.objects.update(due_at=timezone.now())
        ix.run_pass()
        assert Instance.objects.get().read_problem() is None
        assert page.shows_the_instances_as_stored()


def too_big(operation):
    return EngineUnavailable(
        "Sent message larger than max (5000000 vs. 4194304)",
        code="RESOURCE_EXHAUSTED",
        operation=operation,
    )


def test_an_instance_whose_payloads_are_too_big_is_indexed_without_them(fake, make_indexer):
    state, events = golden_instance("two_steps")
    fake.add(state, events, instance_id="known")
    ix = make_indexer()
    ix.run_pass()
    assert Instance.objects.get(instance_id="known").input == state.input
    fake.append("known", [])
    fake.add(state, events, instance_id="big")
    InstanceCheck.objects.update(due_at=timezone.now())
    for instance_id in ("big", "known"):
        fake.failing[("GetInstance", instance_id)] = too_big("GetInstance")
        fake.failing[("GetInstanceHistory", instance_id)] = too_big("GetInstanceHistory")
    assert ix.run_pass().errors == 2
    big = Instance.objects.get(instance_id="big")
    assert (big.status, big.input, big.runs.count()) == ("COMPLETED", "", 0)
    problem = big.read_problem()
    assert problem is not None and not problem.history_only()
    assert problem.read_error.startswith("GetInstance: Sent message larger than max")
    # A known instance's status moves on; its payloads stay as last read.
    known = Instance.objects.get(instance_id="known")
    assert known.last_updated_at == fake.instances["known"][0].last_updated_at
    assert known.input == state.input and known.read_problem() is not None
    fake.failing.clear()
    InstanceCheck.objects.update(due_at=timezone.now())
    ix.run_pass()
    big = Instance.objects.get(instance_id="big")
    assert big.input == state.input and big.read_problem() is None
    assert big.runs.get().event_count == len(events)


def test_a_failing_read_backs_off_to_5_minutes_running_and_to_the_hourly_re_read_finished(
    fake, make_indexer
):
    # A finished instance's history no longer changes, and one over the sidecar's size limit
    # stays over it: re-reading it every 5 minutes would pull megabytes from the state store
    # for nothing.
    state, events = golden_instance("two_steps")
    fake.add(state, events, instance_id="done")
    fake.add(replace(state, status="RUNNING"), events[:4], instance_id="going")
    for instance_id in ("done", "going"):
        fake.failing[("GetInstanceHistory", instance_id)] = too_slow("GetInstanceHistory")
    ix = make_indexer()  # finished instances re-read hourly at most (the default)
    ix.run_pass()
    InstanceCheck.objects.update(due_at=timezone.now(), interval=2000.0)
    ix.run_pass()
    intervals = dict(InstanceCheck.objects.values_list("instance__instance_id", "interval"))
    assert intervals == {"done": 3600.0, "going": 300.0}


def test_a_first_sweep_of_a_big_engine_is_spread_over_short_passes(fake, make_indexer):
    state, events = golden_instance("two_steps")
    for n in range(30):
        fake.add(state, events, instance_id=f"i-{n:02}")
    ix = make_indexer(list_page_size=10, discovery_seconds=0.0)  # one page a pass
    result = ix.run_pass()
    assert (result.discovered, result.busy) == (10, True)
    request_refresh("orders", "i-29")  # read in the next pass, not after the sweep
    result = ix.run_pass()
    assert (result.hinted, result.discovered, result.busy) == (1, 10, True)
    # The engines page follows the listing: 20 ids listed so far, none listed to the end.
    engine = Engine.objects.get()
    assert engine.sweep_started_at is not None and engine.sweep_listed == 20
    assert engine.last_sweep_at is None
    assert ix.run_pass().discovered == 9  # i-29 is known by now
    assert Instance.objects.count() == 30
    engine = Engine.objects.get()  # the last page ended the listing
    assert (engine.sweep_started_at, engine.last_sweep_listed) == (None, 30)
    assert engine.last_sweep_at is not None
    # Taken out of CONSOLE_ENGINES mid-listing: that listing won't go on.
    Engine.objects.update(sweep_started_at=timezone.now(), sweep_listed=10)
    sync_engines([])
    engine = Engine.objects.get()
    assert (engine.configured, engine.sweep_started_at, engine.sweep_listed) == (False, None, 0)


def test_a_listing_page_too_slow_for_the_deadline_is_asked_again_smaller(
    fake, make_indexer, monkeypatch
):
    monkeypatch.setattr(indexer_module, "ANSWERED_RECENTLY", 0.0)  # ask Hello every time
    ix = make_indexer(list_page_size=40)
    ix.run_pass()  # probed (with a page of one) before the engine fills up
    state, events = golden_instance("two_steps")
    for n in range(30):
        fake.add(state, events, instance_id=f"i-{n:02}")
    fake.failing[("ListInstanceIDs", "")] = too_slow("ListInstanceIDs")
    result = ix.run_pass()  # the engine answers Hello: the page was too big to list in time
    assert (result.errors, result.busy) == (1, True)
    assert Engine.objects.get().reachable is True
    assert "ListInstanceIDs" in Engine.objects.get().last_error
    del fake.failing[("ListInstanceIDs", "")]
    while ix.run_pass().busy:
        pass
    assert Instance.objects.count() == 30
    assert ix._list_page_size == 20
    fake.failing[("Hello", "")] = too_slow("Hello")  # now it doesn't answer at all
    fake.failing[("ListInstanceIDs", "")] = too_slow("ListInstanceIDs")
    ix._sweep_finished_at = 0.0
    with pytest.raises(EngineUnavailable, match="Hello"):
        ix.run_pass()


def test_reads_timing_out_on_an_engine_that_stopped_answering_end_the_pass(fake, make_indexer):
    state, events = golden_instance("two_steps")
    fake.add(state, events, instance_id="a")
    ix = make_indexer()
    ix.run_pass()
    fake.add(state, events, instance_id="b")
    fake.failing[("GetInstance", "b")] = too_slow("GetInstance")
    fake.failing[("Hello", "")] = too_slow("Hello")
    with pytest.raises(EngineUnavailable, match="Hello"):
        ix.run_pass()
    engine = Engine.objects.get()
    assert engine.reachable is False
    assert Instance.objects.count() == 1


def crash_at_the_fifth_history(monkeypatch):
    """The process killed as it writes the chunk's fifth history."""
    original = indexer_module.EngineIndexer._store_events
    calls = {"n": 0}

    def crash_on_fifth(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt("killed")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(indexer_module.EngineIndexer, "_store_events", crash_on_fifth)


def crash_at_the_change_log(monkeypatch):
    """The process killed as it writes the chunk's change-log rows, its last write."""
    original = indexer_module.bulk.insert

    def crash_on_the_log(rows, *args, **kwargs):
        if rows.model is ChangeLog:
            raise KeyboardInterrupt("killed")
        return original(rows, *args, **kwargs)

    monkeypatch.setattr(indexer_module.bulk, "insert", crash_on_the_log)


@pytest.mark.parametrize("crash", [crash_at_the_fifth_history, crash_at_the_change_log])
def test_a_crash_in_the_middle_of_a_write_leaves_nothing_half_done(
    fake, make_indexer, monkeypatch, crash
):
    # The change log is written in the chunk's transaction: a page following it never sees a
    # change the database does not hold, nor misses one it holds.
    for name in GOLDEN:
        fake.add(*golden_instance(name))
    ix = make_indexer()
    crash(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        ix.run_pass()
    # The chunk's transaction rolled back whole.
    assert Instance.objects.count() == 0
    assert Run.objects.count() == HistoryEvent.objects.count() == InstanceCheck.objects.count() == 0
    assert ChangeLog.objects.count() == 0
    assert not StatusCount.objects.exclude(count=0).exists()
    monkeypatch.undo()
    ix2 = make_indexer()
    ix2.run_pass()
    assert Instance.objects.count() == len(GOLDEN)
    assert HistoryEvent.objects.count() == sum(len(golden_instance(n)[1]) for n in GOLDEN)
    assert counts_are_exact(ix2.engine)
    news = ChangeLog.objects.filter(kind="new").values_list("instance_id", flat=True)
    assert sorted(news) == sorted(Instance.objects.values_list("pk", flat=True))
    page = LogFollower()
    assert page.shows_what_is_stored()
    assert page.shows_the_current_runs()
    assert page.shows_the_instances_as_stored()


def test_a_hint_reads_an_instance_now_even_before_discovery(fake, make_indexer):
    fake.unsupported.add("ListInstanceIDs")  # no discovery at all
    fake.add(*golden_instance("two_steps"))
    ix = make_indexer()
    ix.run_pass()
    assert Instance.objects.count() == 0
    request_refresh("orders", "g-two-steps")
    result = ix.run_pass()
    assert result.hinted == 1
    assert Instance.objects.get().status == "COMPLETED"


def test_a_hint_for_an_instance_that_has_not_moved_reads_no_history(fake, make_indexer):
    # Hints come from people looking at an instance too (workflows_ui.freshness): a page
    # reloaded now and then must not fetch a long history each time.
    fake.unsupported.add("ListInstanceIDs")
    state, events = golden_instance("two_steps")
    fake.add(state, events)
    ix = make_indexer()
    request_refresh("orders", "g-two-steps")
    ix.run_pass()
    assert ("GetInstanceHistory", "g-two-steps") in fake.calls  # not known yet
    fake.calls.clear()
    request_refresh("orders", "g-two-steps")
    assert ix.run_pass().hinted == 1
    assert fake.calls == [("GetInstance", "g-two-steps")]
    fake.append("g-two-steps", [])  # lastUpdatedAt moves
    request_refresh("orders", "g-two-steps")
    ix.run_pass()
    assert fake.calls[1:] == [("GetInstance", "g-two-steps"), ("GetInstanceHistory", "g-two-steps")]
    # An instance whose history could not be read is asked for it whatever its state says.
    InstanceCheck.objects.update(read_error="GetInstanceHistory: deadline exceeded")
    fake.calls.clear()
    request_refresh("orders", "g-two-steps")
    ix.run_pass()
    assert ("GetInstanceHistory", "g-two-steps") in fake.calls
    assert InstanceCheck.objects.get().read_error == ""


def test_a_hint_that_finds_nothing_changed_leaves_the_back_off_as_it_was(fake, make_indexer):
    # Someone reloading the page of a finished instance (workflows_ui.freshness) must not bring
    # its unattended re-read, the one that sees it started again, to the longest wait sooner.
    fake.add(*golden_instance("two_steps"))
    ix = make_indexer(terminal_first_interval=60.0, terminal_interval=3600.0, terminal_read_rate=0)
    ix.run_pass()
    assert InstanceCheck.objects.get().interval == 60
    for _ in range(3):
        request_refresh("orders", "g-two-steps")
        ix.run_pass()
    check = InstanceCheck.objects.get()
    assert check.interval == 60
    assert check.due_at <= timezone.now() + timedelta(seconds=60)
    # A due read that finds nothing backs off as before.
    InstanceCheck.objects.update(due_at=timezone.now())
    ix.run_pass()
    assert InstanceCheck.objects.get().interval == 120


def test_an_engine_with_the_list_but_no_rerun_is_said_to_lack_rerun(fake, make_indexer):
    # It was inferred from the list (daprd had re-runs first), never asked.
    fake.unsupported |= {"RerunWorkflowFromEvent"}
    make_indexer().run_pass()
    engine = Engine.objects.get()
    assert engine.supports_list and engine.supports_history
    assert engine.supports_rerun is False
    assert engine.health() == "ok"


def test_an_engine_without_list_and_history_is_too_old_not_crashed(fake, make_indexer):
    fake.unsupported |= {"ListInstanceIDs", "GetInstanceHistory", "RerunWorkflowFromEvent"}
    fake.add(*golden_instance("two_steps"))
    ix = make_indexer()
    ix.run_pass()
    engine = Engine.objects.get()
    assert engine.supports_list is False and engine.supports_history is False
    assert engine.supports_rerun is False
    assert engine.too_old and engine.health() == "too-old"
    assert "too old" in engine.last_error and "ListInstanceIDs" in engine.last_error
    request_refresh(engine, "g-two-steps")
    ix.run_pass()
    inst = Instance.objects.get()
    assert inst.status == "COMPLETED" and inst.runs.count() == 0


def test_payloads_are_cut_to_the_limit_with_their_size_kept(fake, make_indexer):
    state, events = golden_instance("two_steps")
    fake.add(replace(state, input="x" * 5000), events)
    make_indexer(payload_limit=1000).run_pass()
    inst = Instance.objects.get()
    assert len(inst.input) == 1000 and inst.input_size == 5000


def test_a_runs_input_is_stored_readable_and_cut_as_the_instances(fake, make_indexer, golden):
    # The SDK escapes non-ASCII characters ("M\u00fcller"): the run's copy of the input (the
    # runs API) kept the escapes while the instance's was readable, and was cut and sized apart.
    record = golden("two_steps")
    readable = '{"name": "Müller", "note": "注文 😀"}'
    escaped = json.dumps(json.loads(readable))
    record["get_instance"]["workflowState"]["input"] = escaped
    record["history"][1]["executionStarted"]["input"] = escaped
    state = mappers.instance_state(
        json_format.ParseDict(record["get_instance"], pb.GetInstanceResponse())
    )
    events = [mappers.event(json_format.ParseDict(e, pb.HistoryEvent())) for e in record["history"]]
    fake.add(state, events)
    make_indexer(payload_limit=20).run_pass()
    inst = Instance.objects.get()
    run = inst.runs.get()
    assert (inst.input, inst.input_size) == (readable[:20], len(readable))
    assert (run.input, run.input_size) == (inst.input, inst.input_size)


def test_a_stopping_process_ends_the_pass_after_the_reads_in_flight(
    fake, make_indexer, monkeypatch
):
    monkeypatch.setattr(indexer_module, "WRITE_CHUNK", 10)
    state, events = golden_instance("two_steps")
    for n in range(300):
        fake.add(state, events, instance_id=f"i-{n:03}")
    ix = make_indexer(concurrency=4)
    ix.stopping = lambda: Instance.objects.exists()  # as soon as a first chunk is written
    result = ix.run_pass()
    written = Instance.objects.count()
    assert result.busy and 10 <= written < 100  # the first chunk and the reads in flight
    assert result.discovered == written  # not the 300 listed
    assert counts_are_exact(ix.engine)
    ix.stopping = lambda: False
    while ix.run_pass().busy:
        pass
    assert Instance.objects.count() == 300 and counts_are_exact(ix.engine)


def test_every_read_of_an_instance_records_when_it_was_made(fake, make_indexer):
    # What an instance's page says it is as of, and whether looking at it asks for a read
    # (workflows_ui.freshness).
    state, events = golden_instance("two_steps")
    fake.add(state, events, instance_id="a")
    ix = make_indexer(terminal_first_interval=60.0)

    def read_at(instance_id: str = "a") -> datetime:
        value = InstanceCheck.objects.get(instance__instance_id=instance_id).read_at
        assert value is not None
        return value

    before = timezone.now()
    ix.run_pass()
    first = read_at()
    assert before <= first <= timezone.now()
    for change in (None, []):  # unchanged, then new (no) events with lastUpdatedAt moved
        if change is not None:
            fake.append("a", change)
        InstanceCheck.objects.update(due_at=timezone.now())
        ix.run_pass()
        assert read_at() > first
        first = read_at()
    # A read that fails is a read made too (a first timeout, then the ones after).
    fake.failing[("GetInstance", "a")] = too_slow("GetInstance")
    for _ in range(2):
        InstanceCheck.objects.update(due_at=timezone.now())
        assert ix.run_pass().errors == 1
        assert read_at() > first
        first = read_at()
    assert Instance.objects.get(instance_id="a").read_problem() is not None


def test_finished_instances_are_read_again_soon_then_less_and_less_often(make_indexer):
    ix = make_indexer(terminal_first_interval=60.0, terminal_interval=3600.0)
    # A big engine: 100,000 finished instances at 20 reads a second take longer than the hour.
    StatusCount.objects.create(engine=ix.engine, name="a", status="COMPLETED", count=90_000)
    StatusCount.objects.create(engine=ix.engine, name="b", status="FAILED", count=10_000)
    StatusCount.objects.create(engine=ix.engine, name="a", status="RUNNING", count=5_000)
    intervals = []
    interval = 15.0  # what it had while running
    changed = True  # it just ended
    for _ in range(9):
        due_at, interval = ix._next_check("COMPLETED", changed, interval)
        intervals.append(interval)
        changed = False
    assert intervals == [60, 120, 240, 480, 960, 1920, 3600, 3600, 3600]
    assert ix._next_check("FAILED", True, 3600.0)[1] == 60  # it changed (restarted and failed)
    assert ix._next_check("FAILED", False, None)[1] == 60


@pytest.mark.parametrize(
    ("finished", "rate", "longest"),
    [
        (0, 20.0, 60),  # none yet: the first interval
        (1_000, 20.0, 60),  # a thousand in a minute would be 17 reads a second: a minute
        (10_000, 20.0, 500),  # spread over 500 s at 20 a second
        (100_000, 20.0, 3600),  # more than an hour's worth: hourly
        (10_000, 0.0, 3600),  # no rate: hourly whatever the engine has
    ],
)
def test_finished_instances_are_read_at_most_hourly_and_as_often_as_a_rate_allows(
    make_indexer, finished, rate, longest
):
    ix = make_indexer(
        terminal_first_interval=60.0, terminal_interval=3600.0, **{"terminal_read_rate": rate}
    )
    StatusCount.objects.create(engine=ix.engine, name="a", status="TERMINATED", count=finished)
    StatusCount.objects.create(engine=ix.engine, name="a", status="RUNNING", count=50_000)
    other = Engine.objects.create(name="billing", address="x:2")
    StatusCount.objects.create(engine=other, name="a", status="COMPLETED", count=1_000_000)
    interval = 60.0
    for _ in range(8):
        _, interval = ix._next_check("COMPLETED", False, interval)
    assert interval == longest
    due_at, _ = ix._next_check("COMPLETED", False, interval)
    assert due_at <= timezone.now() + timedelta(seconds=longest * 1.1)


@pytest.mark.parametrize(
    ("unfinished", "rate", "longest"),
    [
        (0, 100.0, 15),  # none yet: the maximum
        (1_000, 100.0, 15),  # read every 15 s: 67 reads a second
        (10_000, 100.0, 100),  # every 15 s would be 667 a second: spread over 100 s
        (50_000, 100.0, 500),
        (1_000_000, 100.0, 3600),  # at least hourly
        (50_000, 0.0, 15),  # no rate: the maximum whatever the engine has
    ],
)
def test_unfinished_instances_that_do_not_change_are_read_as_often_as_a_rate_allows(
    make_indexer, unfinished, rate, longest
):
    # Workflows waiting for days were each read every 15 s however many there were: 50,000 of
    # them, 3,300 reads a second asked of the sidecar, more than the indexer can read.
    ix = make_indexer(active_interval=1.0, active_max_interval=15.0, active_read_rate=rate)
    StatusCount.objects.create(engine=ix.engine, name="a", status="RUNNING", count=unfinished // 2)
    StatusCount.objects.create(
        engine=ix.engine, name="b", status="SUSPENDED", count=unfinished - unfinished // 2
    )
    StatusCount.objects.create(engine=ix.engine, name="a", status="COMPLETED", count=1_000_000)
    other = Engine.objects.create(name="billing", address="x:2")
    StatusCount.objects.create(engine=other, name="a", status="RUNNING", count=1_000_000)
    interval = None
    for _ in range(15):
        _, interval = ix._next_check("RUNNING", False, interval)
    assert interval == longest
    due_at, _ = ix._next_check("RUNNING", False, interval)
    assert due_at <= timezone.now() + timedelta(seconds=longest * 1.1)
    # One that changes is read again a second later, on a big engine as on a small one.
    assert ix._next_check("RUNNING", True, interval)[1] == 1.0


def test_the_count_of_finished_instances_is_taken_again_a_minute_later(make_indexer):
    ix = make_indexer(terminal_first_interval=60.0, terminal_interval=3600.0)
    counted = StatusCount.objects.create(
        engine=ix.engine, name="a", status="COMPLETED", count=1_000
    )
    assert ix._next_check("COMPLETED", False, 3600.0)[1] == 60
    StatusCount.objects.filter(pk=counted.pk).update(count=100_000)
    assert ix._next_check("COMPLETED", False, 3600.0)[1] == 60  # counted a moment ago
    ix._counted_at -= STATUS_COUNT_INTERVAL + 1  # as if a minute had gone by
    assert ix._next_check("COMPLETED", False, 3600.0)[1] == 3600


def test_a_finished_instance_restarted_under_its_id_is_seen_at_its_next_check(fake, make_indexer):
    state, events = golden_instance("two_steps")
    fake.add(state, events)
    ix = make_indexer(terminal_first_interval=0.0)
    ix.run_pass()
    again = [replace(e) for e in events[:3]]
    again[1].execution_id = "restarted"
    moved = state.last_updated_at.replace(year=2027)
    fake.add(replace(state, status="RUNNING", last_updated_at=moved, output=None), again)
    # Listed as before, so discovery passes it by: only its check can see the new run.
    ix.run_pass()
    inst = Instance.objects.get()
    assert (inst.status, inst.current_execution_id) == ("RUNNING", "restarted")
    assert list(inst.runs.order_by("ordinal").values_list("execution_id", flat=True))[1:] == [
        "restarted"
    ]
    assert counts_are_exact(ix.engine)


def test_values_the_database_cannot_hold_cost_one_instance_not_the_engine(fake, make_indexer):
    state, events = golden_instance("two_steps")
    fake.add(state, events, instance_id="a-fine")
    long_name = [replace(e) for e in events]
    long_name[1].name = "n" * 300
    fake.add(replace(state, name="n" * 300), long_name, instance_id="b-long-name")
    fake.add(state, events, instance_id="c-" + "x" * 600)
    # App ids are DNS labels; a longer one is stored cut and never taken as the engine's own.
    routed = [replace(e, source_app_id="z" * 300) for e in events]
    child = replace(state, parent_instance_id="p-1", parent_app_id="a" * 300)
    fake.add(child, routed, instance_id="d-long-app-ids")
    ix = make_indexer()
    result = ix.run_pass()
    assert result.errors == 1
    assert sorted(Instance.objects.values_list("instance_id", flat=True)) == [
        "a-fine",
        "b-long-name",
        "d-long-app-ids",
    ]
    assert Instance.objects.get(instance_id="b-long-name").name == "n" * 255
    assert Instance.objects.get(instance_id="d-long-app-ids").parent_app_id == "a" * 255
    assert Run.objects.get(instance__instance_id="b-long-name").name == "n" * 255
    engine = Engine.objects.get(pk=ix.engine.pk)
    assert "cannot index instance 'c-xxx" in engine.last_error
    assert "longer than 512 characters" in engine.last_error
    assert engine.health() == "failing" and counts_are_exact(engine)
    # Reported once: the next sweeps don't read it again, and pass.
    fake.calls.clear()
    assert ix.run_pass().errors == 0
    assert not any(arg.startswith("c-") for _, arg in fake.calls)


def test_an_app_id_longer_than_a_dns_label_allows_is_not_taken_as_the_engines(fake, make_indexer):
    state, events = golden_instance("two_steps")
    fake.add(state, [replace(e, source_app_id="z" * 300) for e in events], instance_id="a")
    ix = make_indexer()
    assert ix.run_pass().errors == 0
    assert Engine.objects.get(pk=ix.engine.pk).app_id == ""
    fake.add(state, events, instance_id="b")  # the recorded app id, "example"
    ix.run_pass()
    assert Engine.objects.get(pk=ix.engine.pk).app_id == "example"


def test_an_engine_whose_sidecar_records_another_app_id_takes_it(fake, make_indexer, caplog):
    """The engine's address pointed at another app's sidecar: the engines page must not keep
    naming the app it served before."""
    state, events = golden_instance("two_steps")
    fake.add(state, events, instance_id="a")  # the recorded app id, "example"
    ix = make_indexer(terminal_first_interval=0.0)
    ix.run_pass()
    assert Engine.objects.get(pk=ix.engine.pk).app_id == "example"
    other = [replace(e, source_app_id="billing") for e in events]
    fake.add(replace(state, last_updated_at=state.last_updated_at.replace(year=2027)), other, "a")
    ix.run_pass()
    assert Engine.objects.get(pk=ix.engine.pk).app_id == "billing"
    assert "records app id 'billing', not 'example' as before" in caplog.text


def test_an_engine_of_the_same_app_as_another_is_said_in_the_log(fake, make_indexer, caplog):
    """One sidecar under two names (its address spelt two ways passes the start-up check)."""
    Engine.objects.create(name="orders-too", address="localhost:1", app_id="example")
    fake.add(*golden_instance("two_steps"))
    make_indexer().run_pass()
    assert "app id 'example' is engine orders-too's too" in caplog.text


def test_a_row_the_database_refuses_is_skipped_and_the_rest_of_the_chunk_written(
    fake, make_indexer, monkeypatch
):
    from django.db import DataError

    for iid in ("a", "b", "c"):
        fake.add(*golden_instance("two_steps"), instance_id=iid)
    real_apply = EngineIndexer._apply

    def refusing(self, f, *args):
        if f.instance_id == "b":
            raise DataError("value too long for type character varying(255)")
        return real_apply(self, f, *args)

    monkeypatch.setattr(EngineIndexer, "_apply", refusing)
    ix = make_indexer()
    assert ix.run_pass().errors == 1
    assert sorted(Instance.objects.values_list("instance_id", flat=True)) == ["a", "c"]
    assert HistoryEvent.objects.filter(run__instance__instance_id="c").exists()
    assert "cannot index instance 'b': value too long" in Engine.objects.get().last_error
    assert counts_are_exact(ix.engine)
    # Learned in the chunk that rolled back, and again in the write of "a" alone.
    assert Engine.objects.get().app_id == ix.engine.app_id == "example"


def test_stall_reason_is_kept_while_stalled(fake, make_indexer):
    state, events = golden_instance("terminated")
    stall = Event(
        event_id=-1,
        event_type="executionStalled",
        timestamp=events[-1].timestamp,
        name="PATCH_MISMATCH",
        stall_reason="PATCH_MISMATCH",
        stall_description="patch p2 not in this worker",
    )
    fake.add(replace(state, status="STALLED"), events[:3] + [stall])
    ix = make_indexer()
    ix.run_pass()
    inst = Instance.objects.get()
    assert inst.status == "STALLED"
    assert inst.stall_reason == "PATCH_MISMATCH"
    assert inst.stall_description == "patch p2 not in this worker"


def test_a_pending_instance_keeps_its_created_time_while_it_waits(fake, make_indexer):
    # A scheduled start: the engine has no created or last-updated time for it until it starts.
    state, _ = golden_instance("two_steps")
    fake.add(
        replace(state, status="PENDING", created_at=None, last_updated_at=None, completed_at=None),
        [],
    )
    ix = make_indexer()
    ix.run_pass()
    first = Instance.objects.get().created_at
    time.sleep(0.01)
    request_refresh(ix.engine, state.instance_id)
    ix.run_pass()
    inst = Instance.objects.get()
    assert (inst.created_at, inst.last_updated_at) == (first, first)


def test_rows_written_from_tuples_name_every_column():
    # The change log, schedule and events are inserted column by column (engine_bridge.bulk):
    # a field added to those models must be added there too (a Django default is not a
    # database default).
    from workflows_ui.models import InstanceCheck

    def columns(model):
        return {f.name for f in model._meta.concrete_fields if not f.primary_key}

    assert set(indexer_module._EVENT_FIELDS) == columns(HistoryEvent)
    assert set(indexer_module._CHANGE_FIELDS) == columns(ChangeLog)
    w = indexer_module._Writes()
    assert set(w.checks.fields) == columns(InstanceCheck) | {"instance"}


class _Clock:
    """Stands in for the indexer's ``time`` module: a monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


def test_re_reads_are_not_held_back_by_the_consoles_clock_set_back(fake, make_indexer, monkeypatch):
    state, events = golden_instance("two_steps")
    fake.add(replace(state, status="RUNNING", output=None), events[:3])
    clock = _Clock()
    monkeypatch.setattr(indexer_module, "time", clock)
    ix = make_indexer(active_interval=1.0)
    ix.run_pass()
    fake.append("g-two-steps", events[3:], status="COMPLETED", output=state.output)
    wall = timezone.now
    monkeypatch.setattr(timezone, "now", lambda: wall() - timedelta(hours=1))
    clock.now += 2.0
    ix.run_pass()
    assert Instance.objects.get().status == "COMPLETED"


def _count_sweep_pages(fake, clock, monkeypatch, seconds_per_call):
    """Counts the ListInstanceIDs calls of sweeps (not the one-id capability probe)."""
    pages = {"n": 0}
    listing = fake.list_instance_ids

    def timed(page_size=1000, continuation_token=""):
        if page_size > 1:
            pages["n"] += 1
            clock.now += seconds_per_call
        return listing(page_size=page_size, continuation_token=continuation_token)

    monkeypatch.setattr(fake, "list_instance_ids", timed)
    return pages


def test_a_slow_listing_spaces_out_the_next_sweep(fake, make_indexer, monkeypatch):
    fake.add(*golden_instance("two_steps"))
    clock = _Clock()
    monkeypatch.setattr(indexer_module, "time", clock)
    pages = _count_sweep_pages(fake, clock, monkeypatch, seconds_per_call=3.0)
    ix = make_indexer(sweep_interval=2.0, sweep_pause_factor=4.0)

    ix.run_pass()
    assert pages["n"] == 1 and Instance.objects.count() == 1
    clock.now += 2.5  # past sweep_interval, but not 4 x 3 s after the sweep
    ix.run_pass()
    assert pages["n"] == 1
    clock.now += 10.0
    ix.run_pass()
    assert pages["n"] == 2


def test_a_quick_listing_sweeps_again_after_the_sweep_interval(fake, make_indexer, monkeypatch):
    fake.add(*golden_instance("two_steps"))
    clock = _Clock()
    monkeypatch.setattr(indexer_module, "time", clock)
    pages = _count_sweep_pages(fake, clock, monkeypatch, seconds_per_call=0.01)
    ix = make_indexer(sweep_interval=2.0, sweep_pause_factor=4.0)

    ix.run_pass()
    clock.now += 1.0
    ix.run_pass()
    assert pages["n"] == 1
    clock.now += 1.5
    ix.run_pass()
    assert pages["n"] == 2


class LateAnswers(FakeEngine):
    """Answers reads later, on other threads, as gRPC does; counts the calls in flight.
    Every call after the first ``fail_after`` fails as an engine going away would."""

    def __init__(self, fail_after: int | None = None) -> None:
        super().__init__()
        self.pool = ThreadPoolExecutor(8)
        self.guard = threading.Lock()
        self.in_flight = 0
        self.most_in_flight = 0
        self.started = 0
        self.fail_after = fail_after

    def _later(self, call, done):
        with self.guard:
            self.started += 1
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
            failing = self.fail_after is not None and self.started > self.fail_after

        def answer():
            time.sleep(random.uniform(0, 0.002))
            try:
                if failing:
                    raise EngineUnavailable("connection reset", code="UNAVAILABLE")
                value = call()
            except EngineError as exc:
                value = exc
            with self.guard:
                self.in_flight -= 1
            done(value)

        self.pool.submit(answer)

    def get_instance_later(self, instance_id, done):
        self._later(lambda: self.get_instance(instance_id), done)

    def get_history_later(self, instance_id, done):
        self._later(lambda: self.get_history(instance_id), done)


def many_instances(fake, n):
    state, events = golden_instance("two_steps")
    for i in range(n):
        fake.add(state, events, instance_id=f"order-{i:04d}")
    return len(events)


def sync_all(ix):
    while ix.run_pass().busy:
        pass


def test_reads_answered_on_other_threads_stay_within_the_concurrency(make_indexer):
    fake = LateAnswers()
    per_instance = many_instances(fake, 300)
    sync_all(make_indexer(client=fake, concurrency=4))
    assert Instance.objects.count() == 300
    assert HistoryEvent.objects.count() == 300 * per_instance
    assert 2 <= fake.most_in_flight <= 4


def test_an_engine_lost_mid_sync_stops_the_reads_and_the_next_pass_converges(make_indexer):
    fake = LateAnswers(fail_after=100)
    per_instance = many_instances(fake, 300)
    ix = make_indexer(client=fake, concurrency=4)
    with pytest.raises(EngineUnavailable):
        sync_all(ix)
    # What was read before the failure is written; no read starts after it (only those
    # already in flight finish, each with at most its history call).
    assert 0 < Instance.objects.count() < 100
    assert fake.started <= 100 + 2 * 4
    fake.fail_after = None
    sync_all(ix)
    assert Instance.objects.count() == 300
    assert HistoryEvent.objects.count() == 300 * per_instance
    assert counts_are_exact(ix.engine)


class _ListingWithGenerations(FakeEngine):
    """Continuation tokens that hold only until the engine restarts (``generation`` moves)."""

    generation = 1

    def list_instance_ids(self, page_size=1000, continuation_token=""):
        self._check("ListInstanceIDs", continuation_token)
        start = 0
        if continuation_token:
            generation, _, at = continuation_token.partition(":")
            if int(generation) != self.generation:
                raise EngineRejected("invalid continuation token", code="INVALID_ARGUMENT")
            start = int(at)
        ids = sorted(self.instances)
        more = start + page_size < len(ids)
        token = f"{self.generation}:{start + page_size}" if more else ""
        return InstancePage(ids[start : start + page_size], token)


def test_a_continuation_token_the_engine_no_longer_takes_starts_the_listing_over(make_indexer):
    engine = _ListingWithGenerations()
    state, events = golden_instance("terminated")
    for i in range(6):
        engine.add(state, events, instance_id=f"t-{i}")
    ix = make_indexer(engine, list_page_size=2, list_pages_per_pass=1)
    ix.run_pass()
    assert Instance.objects.count() == 2
    engine.generation = 2  # restarted: the token of the listing in progress is refused
    failed = ix.run_pass()
    assert failed.errors == 1
    for _ in range(4):
        ix.run_pass()
    assert Instance.objects.count() == 6
    assert Engine.objects.get(pk=ix.engine.pk).last_sweep_listed == 6


def test_a_listed_id_that_cant_be_read_does_not_hide_one_that_is_gone(fake, make_indexer):
    state, events = golden_instance("terminated")
    for iid in ("a", "b", "unreadable"):
        fake.add(state, events, instance_id=iid)
    broken = EngineError("state store error", code="INTERNAL")
    fake.failing[("GetInstance", "unreadable")] = broken
    fake.failing[("GetInstance without payloads", "unreadable")] = broken
    ix = make_indexer()
    ix.run_pass()
    del fake.instances["a"]
    # Listed: b and the unreadable one, two ids as there are two live instances (a, b).
    ix.run_pass()
    assert Instance.objects.get(instance_id="a").purged
    assert counts_are_exact(ix.engine)


def _child_indexed_on_billing(engine_name="billing", instance_id="g-fan-out:0001"):
    """g-fan-out:0001 (or a copy with another id), the child of g-fan-out (app "example"),
    indexed from engine "billing" (or another). Its engine can't tell its own app id (no router
    on its events): the parent's app id is not its."""
    child_state, child_events = golden_child("fan_out_children", "g-fan-out:0001")
    billing_fake = FakeEngine()
    billing_fake.add(child_state, [replace(e, source_app_id="") for e in child_events], instance_id)
    billing = Engine.objects.create(name=engine_name, address="y:1")
    EngineIndexer(billing, billing_fake, Limits(concurrency=2)).run_pass()
    return Instance.objects.get(instance_id=instance_id)


def test_a_child_indexed_before_its_parents_engine_knew_its_app_id_is_linked_then(
    fake, make_indexer
):
    parent_state, parent_events = golden_instance("fan_out_children")
    fake.add(parent_state, parent_events)  # app id "example" on its events
    child = _child_indexed_on_billing()
    assert (child.parent_app_id, child.parent_engine_id) == ("example", None)

    orders = make_indexer()
    orders.run_pass()  # learns "example"

    child.refresh_from_db()
    assert child.parent_engine_id == orders.engine.pk
    # A live page of the child learns of the link from the log of the child's engine.
    updated = ChangeLog.objects.filter(instance=child, kind="updated")
    assert list(updated.values_list("engine__name", flat=True)) == ["billing"]
    parent = Instance.objects.get(instance_id="g-fan-out")
    assert list(parent.children().values_list("instance_id", flat=True)) == ["g-fan-out:0001"]


def test_a_child_linked_while_its_own_engine_changes_it_is_logged_with_its_new_status(
    fake, make_indexer
):
    """On PostgreSQL billing's indexer changes the child's status in a transaction of its own
    while orders' links it: the link's log row comes after billing's, and must not say the
    status billing's replaced (read before billing committed, it did)."""
    from django.db import connection, connections

    if connection.vendor != "postgresql":
        pytest.skip("SQLite has one writer at a time")
    fake.add(*golden_instance("fan_out_children"))  # app id "example" on its events
    child = _child_indexed_on_billing()
    assert child.status != "TERMINATED"
    orders = make_indexer()
    billing = connections.create_connection("default")
    billing.set_autocommit(False)
    with billing.cursor() as cur:
        cur.execute(
            "UPDATE workflows_ui_instance SET status = 'TERMINATED' WHERE id = %s", [child.pk]
        )
    done = threading.Event()

    def index():
        try:
            orders.run_pass()  # learns "example"
        finally:
            connection.close()
            done.set()

    thread = threading.Thread(target=index)
    thread.start()
    try:
        assert not done.wait(1.5)  # the link waits for billing's transaction
    finally:
        billing.commit()
        billing.close()
    assert done.wait(30)
    last = ChangeLog.objects.filter(instance=child).latest("id")
    assert (last.kind, last.status) == ("updated", "TERMINATED")


def test_the_pages_of_a_parent_and_its_children_learn_from_the_log_how_they_are_linked(
    fake, make_indexer
):
    """A parent's page lists its children, and a child's page links to its parent once that
    is indexed: the log tells each page when its kin come, go, or get indexed."""
    ix = make_indexer(terminal_first_interval=0.0)
    page = LogFollower()
    fake.add(*golden_child("fan_out_children", "g-fan-out:0001"))
    ix.run_pass()  # a child before its parent: its page says the parent is not indexed
    assert page.shows_the_instances_as_stored()
    fake.add(*golden_instance("fan_out_children"))
    ix.run_pass()  # now it links to it
    assert page.shows_the_instances_as_stored()
    child_state, child_events = golden_child("fan_out_children", "g-fan-out:0002")
    fake.add(child_state, child_events)
    ix.run_pass()  # a child after its parent: the parent's page lists it
    parent = Instance.objects.get(instance_id="g-fan-out")
    assert parent.children().count() == 2
    assert page.shows_the_instances_as_stored()
    # Started again as another workflow, with no parent: no longer the parent's child.
    plain, plain_events = golden_instance("two_steps")
    again = [replace(e) for e in plain_events]
    again[1].execution_id = "restarted"
    moved = child_state.last_updated_at.replace(year=2027)
    fake.add(replace(plain, last_updated_at=moved), again, instance_id="g-fan-out:0002")
    ix.run_pass()
    assert parent.children().count() == 1
    assert page.shows_the_instances_as_stored()


def test_a_parents_page_learns_from_the_log_of_a_child_linked_to_it_from_another_engine(
    fake, make_indexer
):
    """The parent's engine learns its app id after a child on another engine named it: the
    child is linked then, and the parent's page lists it."""
    parent_state, parent_events = golden_instance("fan_out_children")
    fake.add(parent_state, [replace(e, source_app_id="") for e in parent_events])
    orders = make_indexer()
    page = LogFollower()
    orders.run_pass()  # no app id on the parent's events: orders' is not known yet
    _child_indexed_on_billing()
    assert page.shows_the_instances_as_stored()
    fake.add(*golden_instance("two_steps"))  # its events tell orders' app id
    orders.run_pass()
    parent = Instance.objects.get(instance_id="g-fan-out")
    assert list(parent.children().values_list("instance_id", flat=True)) == ["g-fan-out:0001"]
    assert page.shows_the_instances_as_stored()


def test_the_pages_of_kin_learn_from_the_log_when_a_tombstone_is_forgotten(fake, make_indexer):
    """A tombstone past the retention period is deleted: its parent's page lists one child
    fewer, and its children's pages link to a parent no longer indexed (one of them on another
    engine, whose log tells it)."""
    ix = make_indexer(retention_days=30)
    page = LogFollower()
    fake.add(*golden_instance("fan_out_children"))
    for child in ("g-fan-out:0002", "g-fan-out:0003"):  # the second a copy of the first
        fake.add(*golden_child("fan_out_children", "g-fan-out:0002"), instance_id=child)
    ix.run_pass()
    on_billing = _child_indexed_on_billing()
    assert on_billing.parent() is not None
    parent = Instance.objects.get(instance_id="g-fan-out")
    assert parent.children().count() == 3
    assert page.shows_the_instances_as_stored()

    def forget(*instance_ids):
        for instance_id in instance_ids:
            del fake.instances[instance_id]
        ix.run_pass()  # purged: tombstones, on the pages as before
        assert page.shows_the_instances_as_stored()
        month_ago = timezone.now() - timedelta(days=31)
        Instance.objects.filter(purged=True).update(purged_at=month_ago)
        ix._forget_at = 0.0
        assert ix.run_pass().forgotten == len(instance_ids)
        assert page.shows_the_instances_as_stored()

    forget("g-fan-out:0002")
    assert parent.children().count() == 2
    forget("g-fan-out")
    on_billing.refresh_from_db()
    assert on_billing.parent() is None
    # One row each, on its engine's log.
    last = ChangeLog.objects.order_by("-id")[:2]
    assert sorted(last.values_list("instance__instance_id", "engine__name", "kind")) == [
        ("g-fan-out:0001", "billing", "updated"),
        ("g-fan-out:0003", "orders", "updated"),
    ]


def test_the_pages_of_kin_on_other_engines_learn_from_the_log_when_an_engine_is_forgotten(
    fake, make_indexer, settings, monkeypatch
):
    """forgetengine deletes an engine's instances: a parent's page on another engine lists a
    child fewer, and a child's page on another engine keeps its parent's id, no longer indexed
    nor linked. Each learns it from its own engine's log."""
    from django.core.management import call_command

    from engine_bridge import retention

    settings.CONSOLE_ENGINES = []
    monkeypatch.setattr(retention, "INSTANCES_PER_BATCH", 1)  # kin deleted in other batches
    ix = make_indexer()
    page = LogFollower()
    fake.add(*golden_instance("fan_out_children"))
    fake.add(*golden_child("fan_out_children", "g-fan-out:0002"))
    ix.run_pass()
    _child_indexed_on_billing()
    on_shipping = _child_indexed_on_billing("shipping", "g-fan-out:0003")
    parent = Instance.objects.get(instance_id="g-fan-out")
    assert parent.children().count() == 3
    assert page.shows_the_instances_as_stored()
    Engine.objects.update(configured=False)  # as runindexer restarted without them

    unlink = retention.unlink_children_batch

    def unlink_once_caught_up(*args):
        page.catch_up()  # a page that caught up between the deletes and the unlinking
        return unlink(*args)

    monkeypatch.setattr(retention, "unlink_children_batch", unlink_once_caught_up)
    call_command("forgetengine", "billing", "--yes", stdout=StringIO())
    assert parent.children().count() == 2
    assert page.shows_the_instances_as_stored()
    call_command("forgetengine", "orders", "--yes", stdout=StringIO())
    on_shipping.refresh_from_db()
    assert (on_shipping.parent_engine_id, on_shipping.parent_instance_id) == (None, "g-fan-out")
    assert page.shows_the_instances_as_stored()
    # The rows left are all on shipping's log: those of the engines forgotten went with them.
    assert set(ChangeLog.objects.values_list("engine__name", flat=True)) == {"shipping"}


def test_a_child_links_to_the_configured_engine_of_its_parents_app_not_a_renamed_ones_old_row(
    fake, make_indexer
):
    # "orders" was called "legacy" before: that row, not indexed any more, keeps the app id.
    Engine.objects.create(name="legacy", address="x:1", app_id="example", configured=False)
    orders = make_indexer()
    Engine.objects.filter(pk=orders.engine.pk).update(app_id="example")
    orders.engine.app_id = "example"
    child = _child_indexed_on_billing()
    assert child.parent_engine_id == orders.engine.pk


def test_a_restart_as_another_workflow_drops_the_old_runs_version_and_parent(fake, make_indexer):
    state, events = golden_child("fan_out_children", "g-fan-out:0001")
    fake.add(replace(state, version="v2"), events, instance_id="x")
    ix = make_indexer(terminal_first_interval=0.0)
    ix.run_pass()
    inst = Instance.objects.get()
    assert (inst.version, inst.parent_instance_id) == ("v2", "g-fan-out")
    plain, plain_events = golden_instance("two_steps")
    again = [replace(e) for e in plain_events]
    again[1].execution_id = "restarted"
    moved = state.last_updated_at.replace(year=2027)
    fake.add(replace(plain, last_updated_at=moved), again, instance_id="x")
    ix.run_pass()
    inst.refresh_from_db()
    assert (inst.name, inst.current_execution_id) == ("two_steps", "restarted")
    assert (inst.version, inst.parent_instance_id, inst.parent_engine_id) == ("", "", None)


def test_a_history_not_found_while_the_instance_exists_is_asked_for_again(fake, make_indexer):
    state, events = golden_instance("two_steps")
    fake.add(replace(state, status="RUNNING", output=None), events[:3], instance_id="a")
    ix = make_indexer(terminal_first_interval=0.0)
    ix.run_pass()
    fake.add(replace(state, last_updated_at=state.last_updated_at.replace(year=2027)), events, "a")
    # A spurious answer (or one racing a purge): not an empty history.
    fake.failing[("GetInstanceHistory", "a")] = InstanceNotFound(
        "failed to load history: not found", code="UNKNOWN"
    )
    ix.run_pass()
    inst = Instance.objects.get()
    assert inst.status == "COMPLETED" and inst.schedule.read_failing_since is not None
    del fake.failing[("GetInstanceHistory", "a")]
    InstanceCheck.objects.update(due_at=timezone.now())  # its retry, backed off, is due
    ix.run_pass()
    assert inst.runs.get().events.count() == 9
    assert InstanceCheck.objects.get().read_failing_since is None


def test_change_log_ids_are_taken_in_commit_order_on_postgresql(fake, make_indexer):
    """A transaction of another indexer process holds the change log (it has inserted its rows
    and not yet committed): this one's rows must wait, or they would take higher ids and be
    visible first, and a page that read them would skip the other's for good."""
    from django.db import connection, connections

    if connection.vendor != "postgresql":
        pytest.skip("SQLite has one writer at a time")
    fake.add(*golden_instance("two_steps"))
    ix = make_indexer()
    other = connections.create_connection("default")
    other.set_autocommit(False)
    with other.cursor() as cur:
        cur.execute("SELECT pg_advisory_xact_lock(%s)", [locks.PG_CHANGE_LOG_LOCK])
    done = threading.Event()

    def index():
        try:
            ix.run_pass()
        finally:
            connection.close()
            done.set()

    thread = threading.Thread(target=index)
    thread.start()
    try:
        assert not done.wait(1.5)
        assert not ChangeLog.objects.exists()
    finally:
        other.commit()
        other.close()
    assert done.wait(30)
    assert ChangeLog.objects.filter(kind="new").count() == 1


def test_a_running_run_replaced_by_another_workflow_ended_unseen_not_continued_as_new(
    fake, make_indexer
):
    state, events = golden_instance("two_steps")
    fake.add(replace(state, status="RUNNING", output=None), events[:3], instance_id="x")
    ix = make_indexer()
    ix.run_pass()
    # Terminated and started again as another workflow between two reads.
    other, other_events = golden_instance("custom_status")
    again = [replace(e) for e in other_events]
    again[1].execution_id = "second"
    fake.add(replace(other, last_updated_at=other.last_updated_at.replace(year=2027)), again, "x")
    ix.run_pass()
    first, second = Run.objects.order_by("ordinal")
    assert (first.name, first.status, first.completed_at) == ("two_steps", "", None)
    assert (second.execution_id, second.status) == ("second", other.status)


@pytest.mark.parametrize(
    ("continued", "parent"), [(True, "g-fan-out"), (False, "")], ids=["continued", "started"]
)
def test_a_childs_new_run_keeps_its_parent_only_when_continued_as_new(
    fake, make_indexer, continued, parent
):
    state, events = golden_child("fan_out_children", "g-fan-out:0001")
    fake.add(replace(state, status="RUNNING"), events[:3], instance_id="c")
    ix = make_indexer()
    ix.run_pass()
    assert Instance.objects.get().parent_instance_id == "g-fan-out"
    # A new run whose executionStarted names no parent: a generation that didn't repeat it,
    # or the id started again by hand, as the same workflow, between two reads. Each in a
    # trace of its own (daprd gives a traced generation a fresh one).
    again = [replace(e) for e in events[:3]]
    again[1].execution_id = "new-run"
    again[1].parent = None
    again[1].trace_parent = f"00-{'ef' * 16}-{'cd' * 8}-01"
    if continued:
        # Its first two events written together, workflowStarted first, as continue-as-new
        # writes them (a start: executionStarted when asked, workflowStarted at the first turn).
        again[0].timestamp = again[1].timestamp
    fake.add(
        replace(state, status="RUNNING", last_updated_at=state.last_updated_at.replace(year=2027)),
        again,
        "c",
    )
    ix.run_pass()
    inst = Instance.objects.get()
    assert inst.current_execution_id == "new-run"
    assert inst.parent_instance_id == parent
    assert (inst.parent_engine_id is None) == (not parent)


@pytest.mark.parametrize("trace", ["same", "fresh", "none"])
def test_a_generation_is_continued_as_new_whatever_its_trace(fake, make_indexer, trace):
    # daprd repeated the first generation's trace context; since dapr/dapr#10064 it gives each
    # traced generation a fresh root; untraced workflows have none. How the new run's first
    # events were written tells continue-as-new from a start.
    state, events = golden_instance("continue_as_new")
    first_trace = "" if trace == "none" else f"00-{'ab' * 16}-{'cd' * 8}-01"
    first_run = [replace(e) for e in events[:3]]
    first_run[1].execution_id = "run-one"
    first_run[1].trace_parent = first_trace
    fake.add(replace(state, status="RUNNING"), first_run)
    ix = make_indexer()
    ix.run_pass()
    generation = [replace(e) for e in events[:3]]
    generation[1].trace_parent = {
        "same": first_trace,
        "fresh": f"00-{'12' * 16}-{'34' * 8}-01",
        "none": "",
    }[trace]
    fake.instances["g-monitor"] = (
        replace(state, status="RUNNING", last_updated_at=state.last_updated_at.replace(year=2027)),
        generation,
    )
    ix.run_pass()
    statuses = list(Run.objects.order_by("ordinal").values_list("execution_id", "status"))
    assert statuses[0] == ("run-one", "CONTINUED_AS_NEW")
    # A start of the same workflow (its executionStarted written before workflowStarted): how
    # the run before ended was not seen.
    restarted = [replace(e) for e in events[:3]]
    restarted[1].execution_id = "run-three"
    restarted[0].timestamp = restarted[1].timestamp + timedelta(milliseconds=5)
    fake.instances["g-monitor"] = (
        replace(state, status="RUNNING", last_updated_at=state.last_updated_at.replace(year=2028)),
        restarted,
    )
    ix.run_pass()
    statuses = list(Run.objects.order_by("ordinal").values_list("execution_id", "status"))
    assert statuses[1:] == [(generation[1].execution_id, ""), ("run-three", "RUNNING")]


def test_an_instance_has_the_trace_of_its_current_runs_start(fake, make_indexer):
    # Each run keeps the trace its executionStarted names; the instance shows its current
    # run's. A new generation of continue-as-new has a fresh root trace (daprd since
    # dapr/dapr#10064, and devengine), or none when the workflow is untraced.
    state, events = golden_instance("continue_as_new")
    first, second = "ab" * 16, "12" * 16
    first_run = [replace(e) for e in events[:3]]
    first_run[1].execution_id = "run-one"
    first_run[1].trace_parent = f"00-{first}-{'cd' * 8}-01"
    fake.add(replace(state, status="RUNNING"), first_run)
    ix = make_indexer()
    ix.run_pass()
    assert Instance.objects.get().trace_id == first
    fake.append("g-monitor", [replace(e) for e in events[3:5]])  # the same run goes on
    ix.run_pass()
    assert Run.objects.get().event_count == 5
    assert Instance.objects.get().trace_id == first

    def next_generation(execution_id: str, trace_parent: str, year: int) -> None:
        generation = [replace(e) for e in events[:3]]
        generation[1].execution_id = execution_id
        generation[1].trace_parent = trace_parent
        moved = state.last_updated_at.replace(year=year)
        fake.instances["g-monitor"] = (
            replace(state, status="RUNNING", last_updated_at=moved),
            generation,
        )
        ix.run_pass()

    next_generation("run-two", f"00-{second}-{'34' * 8}-01", 2027)
    assert Instance.objects.get().trace_id == second
    next_generation("run-three", "", 2028)
    assert Instance.objects.get().trace_id == ""
    runs = list(Run.objects.order_by("ordinal").values_list("execution_id", "status", "trace_id"))
    assert runs == [
        ("run-one", "CONTINUED_AS_NEW", first),
        ("run-two", "CONTINUED_AS_NEW", second),
        ("run-three", "RUNNING", ""),
    ]


def test_a_read_torn_by_a_start_again_is_read_once_more(fake, make_indexer, monkeypatch):
    # GetInstance answered for the run that had just completed, GetInstanceHistory a moment
    # later for the run a start put in its place: stored together, the new run took the old
    # one's COMPLETED, and kept it once it continued as new (seen under load, a convergence
    # run on PostgreSQL).
    state, events = golden_instance("two_steps")
    first = [replace(e) for e in events[:3]]
    first[1].execution_id = "run-one"
    fake.add(replace(state, status="RUNNING"), first)
    iid = state.instance_id
    ix = make_indexer()
    ix.run_pass()
    ended_at = state.last_updated_at + timedelta(seconds=5)
    fake.instances[iid] = (replace(state, last_updated_at=ended_at), events)  # COMPLETED
    started_again = [replace(e) for e in events[:3]]
    for e in started_again:
        e.timestamp = ended_at + timedelta(seconds=1)
    started_again[0].timestamp += timedelta(milliseconds=5)  # its first turn, after the start
    started_again[1].execution_id = "run-two"
    real_get_instance = fake.get_instance

    def start_again_after(instance_id, payloads=True):
        answer = real_get_instance(instance_id, payloads)
        if instance_id == iid and fake.instances[iid][0].status == "COMPLETED":
            # Between this answer and the history asked for next.
            later = ended_at + timedelta(seconds=2)
            fake.instances[iid] = (
                replace(state, status="RUNNING", last_updated_at=later, output=None),
                started_again,
            )
        return answer

    monkeypatch.setattr(fake, "get_instance", start_again_after)
    request_refresh(ix.engine, iid)
    ix.run_pass()
    runs = dict(Run.objects.values_list("execution_id", "status"))
    assert runs == {"run-one": "", "run-two": "RUNNING"}
    assert Instance.objects.get().status == "RUNNING"
    assert fake.calls.count(("GetInstanceHistory", iid)) == 3  # the first pass, then twice


def token_refused(operation):
    return EngineRejected(
        "authentication error: api token mismatch", code="UNAUTHENTICATED", operation=operation
    )


def test_an_engine_refusing_the_token_fails_the_pass_and_flags_no_instance(fake, make_indexer):
    fake.add(*golden_instance("two_steps"), instance_id="a")
    fake.add(*golden_instance("two_steps"), instance_id="b")
    ix = make_indexer()
    ix.run_pass()
    InstanceCheck.objects.update(due_at=timezone.now())
    due = dict(InstanceCheck.objects.values_list("pk", "due_at"))
    for iid in ("a", "b"):
        fake.failing[("GetInstance", iid)] = token_refused("GetInstance")
    with pytest.raises(EngineRejected):
        ix.run_pass()
    assert Engine.objects.get().health() == "failing"
    # Nothing is the instances' doing: none is unreadable, none is pushed back.
    assert not InstanceCheck.objects.filter(read_failing_since__isnull=False).exists()
    assert dict(InstanceCheck.objects.values_list("pk", "due_at")) == due


def test_a_first_timeout_of_a_state_read_is_retried_soon_a_second_flags_it(fake, make_indexer):
    fake.add(*golden_instance("two_steps"), instance_id="slow")
    ix = make_indexer(terminal_first_interval=60.0)
    ix.run_pass()
    InstanceCheck.objects.update(due_at=timezone.now())
    fake.failing[("GetInstance", "slow")] = too_slow("GetInstance")
    ix.run_pass()  # the engine answers Hello: the read failed, maybe because the engine stalled
    check = InstanceCheck.objects.get()
    assert check.read_failing_since is None and check.interval == 60
    assert "DEADLINE_EXCEEDED" in check.read_error
    assert check.due_at <= timezone.now() + timedelta(seconds=FIRST_TIMEOUT_RETRY)
    InstanceCheck.objects.update(due_at=timezone.now())
    ix.run_pass()  # again: now it is the instance's
    check = InstanceCheck.objects.get()
    assert check.read_failing_since is not None and check.interval == 120


def test_most_of_an_engine_gone_at_once_is_warned_about(fake, make_indexer, caplog):
    state, events = golden_instance("terminated")
    for i in range(12):
        fake.add(state, events, instance_id=f"t-{i:02}")
    ix = make_indexer()
    ix.run_pass()
    del fake.instances["t-00"]
    ix.run_pass()  # one purged: as usual
    assert not [r for r in caplog.records if r.levelname == "WARNING"]
    fake.instances.clear()  # the sidecar now reads an empty state store
    ix.run_pass()
    (warning,) = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert "none of the 11 instances indexed before this listing is listed any more" in warning
    assert Instance.objects.filter(purged=True).count() == 12


def test_most_of_an_engine_purged_while_some_stays_is_no_alarm(fake, make_indexer, caplog):
    """A sidecar's retention policy purges most of what finished while the indexer is stopped
    for a day: what still runs stays. An emptied state store takes everything indexed, whatever
    came in since."""
    caplog.set_level(logging.DEBUG, logger="engine_bridge.indexer")
    state, events = golden_instance("terminated")
    two_steps, steps = golden_instance("two_steps")
    for i in range(20):
        fake.add(state, events, instance_id=f"t-{i:02}")
    # Indexed as running, it finished and was purged too while the indexer was stopped.
    fake.add(replace(two_steps, status="RUNNING", output=None), steps[:3], instance_id="r-0")
    fake.add(replace(two_steps, status="RUNNING", output=None), steps[:3], instance_id="r-1")
    ix = make_indexer()
    ix.run_pass()
    InstanceCheck.objects.update(due_at=timezone.now() + timedelta(minutes=1))  # not re-read
    for i in range(19):
        del fake.instances[f"t-{i:02}"]
    del fake.instances["r-0"]
    ix.run_pass()
    assert not [r for r in caplog.records if r.levelname == "WARNING"]
    assert "20 instance(s) not listed, checking" in caplog.text
    assert Instance.objects.filter(purged=True).count() == 20

    for i in range(20, 32):
        fake.add(state, events, instance_id=f"t-{i:02}")
    ix.run_pass()
    InstanceCheck.objects.update(due_at=timezone.now() + timedelta(minutes=1))
    fake.instances.clear()  # the sidecar now reads an emptied state store...
    fake.add(state, events, instance_id="new-1")  # ...where the app starts new workflows
    ix.run_pass()
    (warning,) = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert "none of the 14 instances indexed before this listing is listed any more" in warning
    assert Instance.objects.filter(purged=True).count() == 34
    assert Instance.objects.get(instance_id="new-1").purged is False


def test_an_indexer_whose_engine_was_taken_over_writes_nothing_more(fake, make_indexer):
    # Its lock lost unseen (a PostgreSQL restart ends the lock's session), another runindexer
    # took the engine: two writers made the counts drift for good.
    state, events = golden_instance("two_steps")
    fake.add(state, events, instance_id="before")
    ix = make_indexer()
    mine = locks.EngineLock(ix.engine.pk, "orders")
    mine.acquire()
    ix.holder_token = mine.token
    ix.run_pass()
    assert Instance.objects.filter(instance_id="before").exists()
    mine.release()  # as if lost: this indexer still holds its token
    theirs = locks.EngineLock(ix.engine.pk, "orders")
    theirs.acquire()
    try:
        fake.add(state, events, instance_id="after")
        changes = ChangeLog.objects.count()
        with pytest.raises(locks.LockLost, match="another runindexer took this engine over"):
            ix.run_pass()
        assert not Instance.objects.filter(instance_id="after").exists()
        assert ChangeLog.objects.count() == changes
        counts_are_exact(ix.engine)
        # The new holder writes.
        ix.holder_token = theirs.token
        ix.run_pass()
        assert Instance.objects.filter(instance_id="after").exists()
    finally:
        theirs.release()


def _taken_over(ix):
    """``ix`` indexed "before" under a lock that it then lost unseen; another process holds the
    engine now (release it)."""
    mine = locks.EngineLock(ix.engine.pk, "orders")
    mine.acquire()
    ix.holder_token = mine.token
    ix.run_pass()
    mine.release()  # as if lost: this indexer still holds its token
    theirs = locks.EngineLock(ix.engine.pk, "orders")
    theirs.acquire()
    return theirs


def test_an_indexer_whose_engine_was_taken_over_records_no_failed_read(fake, make_indexer):
    """Reads that fail are recorded (and their instances logged as unreadable) apart from the
    chunks: fenced all the same, and a hint stays for the process that has the engine now."""
    fake.add(*golden_instance("two_steps"), instance_id="before")
    ix = make_indexer()
    theirs = _taken_over(ix)
    try:
        fake.failing[("GetInstance", "before")] = EngineRejected("boom", code="INTERNAL")
        InstanceCheck.objects.update(due_at=timezone.now())
        request_refresh("orders", "before")
        checks = list(InstanceCheck.objects.values())
        changes = ChangeLog.objects.count()
        with pytest.raises(locks.LockLost):
            ix.run_pass()
        assert list(InstanceCheck.objects.values()) == checks
        assert ChangeLog.objects.count() == changes
        assert RefreshRequest.objects.filter(instance_id="before").exists()
    finally:
        theirs.release()


def test_an_indexer_whose_engine_was_taken_over_leaves_its_schedule_and_sweep(
    fake, make_indexer, monkeypatch
):
    """The console's clock set back moves the engine's re-reads back, and each listed page
    records how far the sweep went: neither is written by a process that lost the engine."""
    fake.add(*golden_instance("two_steps"), instance_id="before")
    clock = _Clock()
    monkeypatch.setattr(indexer_module, "time", clock)
    ix = make_indexer()
    theirs = _taken_over(ix)
    try:
        due = list(InstanceCheck.objects.values_list("due_at", flat=True))
        wall = timezone.now
        monkeypatch.setattr(timezone, "now", lambda: wall() - timedelta(hours=1))
        clock.now += 2.0
        with pytest.raises(locks.LockLost):
            ix.run_pass()
        assert list(InstanceCheck.objects.values_list("due_at", flat=True)) == due
        monkeypatch.setattr(timezone, "now", wall)
        sweep = Engine.objects.values("sweep_started_at", "last_sweep_at").get()
        with pytest.raises(locks.LockLost):
            ix.run_pass()  # nothing due, nothing new: a sweep's start is its first write
        assert Engine.objects.values("sweep_started_at", "last_sweep_at").get() == sweep
    finally:
        theirs.release()


def test_a_lost_postgresql_lock_is_taken_again_between_passes():
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL's advisory lock (SQLite's is a file lock the process keeps)")
    engine = Engine.objects.create(name="orders", address="x:1")
    mine = locks.EngineLock(engine.pk, "orders")
    mine.acquire()
    try:
        with mine._connection.cursor() as cur:
            cur.execute("SELECT pg_backend_pid()")
            (pid,) = cur.fetchone()
        with connection.cursor() as cur:  # a restart or a failover ends the session like this
            cur.execute("SELECT pg_terminate_backend(%s)", [pid])
        wait_until = time.monotonic() + 10
        other = locks.EngineLock(engine.pk, "orders")
        while time.monotonic() < wait_until:  # the lock is free once the backend has gone
            try:
                other.acquire()
                other.release()
                break
            except locks.EngineTaken:
                time.sleep(0.05)
        mine.ensure()  # between passes: taken again
        with pytest.raises(locks.EngineTaken):
            locks.EngineLock(engine.pk, "orders").acquire()
    finally:
        mine.release()
