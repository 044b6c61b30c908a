"""What the console forgets, so that its database does not grow with every run ever seen.

An engine keeps the latest run of each instance and nothing of a purged one. The console keeps
more: a purged instance stays as a tombstone, and the earlier runs of an instance (continue-as-new,
an id started again) stay readable, so what happened can still be looked into. They are kept for
``CONSOLE_RETENTION_DAYS`` from when the indexer saw them go (``Instance.purged_at``,
``Run.superseded_at``), then deleted with their events. A workflow that continues as new every
minute leaves 1,440 runs a day, and a workload that purges what finished leaves every instance it
ever ran: without this, both stay for good. The change log, the cursor live pages catch up from,
keeps a day.

Called by each engine's indexer (``EngineIndexer``), under its lock: small transactions (bounded by
the events they delete), each fenced like the indexer's writes, so a pass stays short and a
process that lost the engine deletes nothing. An engine taken out of ``CONSOLE_ENGINES`` and not
forgotten keeps what was indexed from it, for the same period: each ``runindexer`` looks after
the engines of the database that are not in its own ``CONSOLE_ENGINES`` (``forget_unindexed``),
those whose lock no process holds, one call at a time (another runindexer may index them: two
started with different engines must not take each other's). Else they stayed for good, and every
engine's look at its earlier runs walked past theirs. ``manage.py forgetengine`` deletes an
engine the same way, a batch at a time.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from importlib import import_module
from typing import Any

from django.conf import settings
from django.db.models import Count, F, QuerySet

from engine_bridge.locks import (
    EngineLock,
    EngineTaken,
    LockLost,
    change_log_in_commit_order,
    fenced,
    keep_from_deletion,
    one_deleter_at_a_time,
)
from workflows_ui import search
from workflows_ui.models import ChangeKind, ChangeLog, Engine, Instance, Run, StatusCount

#: How long change-log rows are kept: a live page away for longer loads the page again.
CHANGES_KEPT = timedelta(days=1)
#: Rows taken at most per transaction.
INSTANCES_PER_BATCH = 200
RUNS_PER_BATCH = 500
CHANGES_PER_BATCH = 5000
#: Events deleted at most per transaction (or one instance's or run's, when it has more).
EVENTS_PER_BATCH = 20_000


@dataclass
class Forgotten:
    """What one call deleted, and whether more is past its time already."""

    instances: int = 0
    runs: int = 0
    changes: int = 0
    more: bool = False


def forget_expired(
    engine_pk: int, retention_days: float, now: datetime, holder_token: str = ""
) -> Forgotten:
    """One batch of each kind for this engine: tombstones and earlier runs older than
    ``retention_days`` (none when it is 0), and change-log rows older than ``CHANGES_KEPT``."""
    done = Forgotten()
    if retention_days > 0:
        cutoff = now - timedelta(days=retention_days)
        _forget_tombstones(engine_pk, cutoff, holder_token, done)
        _forget_earlier_runs(engine_pk, cutoff, holder_token, done)
    _forget_changes(engine_pk, now - CHANGES_KEPT, holder_token, done)
    return done


def forget_expired_sessions() -> None:
    """The sign-in sessions past their expiry, as Django's ``clearsessions`` deletes them: Django
    leaves that to a cron job an operator may not know of, and a row stays for each sign-in."""
    store = import_module(settings.SESSION_ENGINE).SessionStore
    store.clear_expired()  # a no-op for the engines that expire on their own (cookies, cache)


def forget_unindexed(indexed: Collection[str], retention_days: float, now: datetime) -> Forgotten:
    """``forget_expired`` once for each engine of the database not named in ``indexed`` (this
    process's ``CONSOLE_ENGINES``) whose lock is free, held for that call only: an engine taken
    out of ``CONSOLE_ENGINES`` and not forgotten. One held by another process (its indexer,
    ``forgetengine``, another runindexer's call of this) is left to it."""
    done = Forgotten()
    for pk, name in (
        Engine.objects.exclude(name__in=indexed).order_by("pk").values_list("pk", "name")
    ):
        lock = EngineLock(pk, name)
        try:
            lock.acquire_unfenced()
            one = forget_expired(pk, retention_days, now, lock.token)
        except (EngineTaken, LockLost):
            continue  # indexed meanwhile: its indexer sees to it
        finally:
            lock.release()
        done.instances += one.instances
        done.runs += one.runs
        done.changes += one.changes
        done.more = done.more or one.more
    return done


def _within_events(rows: list[tuple[int, int]]) -> list[int]:
    """The keys of ``rows`` ((key, events), in order) up to EVENTS_PER_BATCH events, at least
    one."""
    taken: list[int] = []
    events = 0
    for key, count in rows:
        if taken and events + count > EVENTS_PER_BATCH:
            break
        taken.append(key)
        events += count
    return taken


def _events_of(pks: list[int]) -> list[tuple[int, int]]:
    """(instance pk, events of all its runs) for ``pks``, in their order."""
    events: dict[int, int] = dict.fromkeys(pks, 0)
    for instance_pk, count in Run.objects.filter(instance__in=pks).values_list(
        "instance_id", "event_count"
    ):
        events[instance_pk] += count
    return [(pk, events[pk]) for pk in pks]


def _delete_batch(
    engine_pk: int,
    token: str,
    rows: list[tuple[int, int]],
    batch: int,
    delete: Callable[[QuerySet[Any]], None],
    qs: QuerySet[Any],
) -> tuple[int, bool]:
    """Deletes from ``qs`` the first of ``rows`` ((pk, events), ``batch`` at most) up to
    EVENTS_PER_BATCH events, with ``delete`` (which logs what pages it changes); how many, and
    whether more may be due already."""
    taken = _within_events(rows)
    with fenced(engine_pk, token):
        delete(qs.filter(pk__in=taken))
    return len(taken), len(taken) < len(rows) or len(rows) == batch


def _delete_instances(going: QuerySet[Instance], engine_going: int | None = None) -> None:
    """Deletes these instances (tombstones, or all of an engine being removed), and logs the
    pages of their kin, which show them: a parent's lists its children, a child's links to its
    parent. Not the kin on ``engine_going``: their pages go too."""
    one_deleter_at_a_time()
    # Locked first: another engine's indexer may be writing a change-log row that names one
    # of them (their kin), which the delete's cascade, reading their rows before it deletes
    # them, would miss (the delete then fails at the commit). Locked, they are deleted before
    # that indexer keeps them (``keep_from_deletion``) or after it commits.
    gone = list(
        going.order_by("pk")
        .select_for_update()
        .values_list("engine_id", "instance_id", "parent_engine_id", "parent_instance_id")
    )
    going.delete()
    keep_from_deletion(lambda: [pk for pk, _, _ in _kin_of_deleted(gone, engine_going)])
    # After the delete: the lock is held for the kin's statuses, this insert and the commit.
    change_log_in_commit_order()
    _log_updated(_kin_of_deleted(gone, engine_going))


def _kin_of_deleted(
    gone: Sequence[tuple[int, str, int | None, str]], engine_going: int | None = None
) -> set[tuple[int, int, str]]:
    """(pk, engine pk, status) of each instance whose page showed one of these deleted instances
    ((engine pk, id, parent's engine pk, parent's id)) as kin: a parent lists a child fewer, a
    child's parent is no longer indexed. Kin on other engines too (their rows go on their own
    engine's log); none on ``engine_going``.

    Read under the change log's lock for their rows, as the indexer's rows for kin are (see
    ``EngineIndexer._log_relatives`` for why not by locking their rows)."""
    parents: dict[int, set[str]] = defaultdict(set)
    children: dict[int, set[str]] = defaultdict(set)
    for engine_pk, instance_id, parent_engine_pk, parent_id in gone:
        children[engine_pk].add(instance_id)
        if parent_engine_pk is not None and parent_id:
            parents[parent_engine_pk].add(parent_id)
    kin: set[tuple[int, int, str]] = set()
    for engine_pk, ids in parents.items():
        if engine_pk != engine_going:
            found = Instance.objects.filter(engine_id=engine_pk, instance_id__in=list(ids))
            kin.update(found.values_list("pk", "engine_id", "status"))
    for engine_pk, ids in children.items():
        found = Instance.children_of(engine_pk, list(ids))
        if engine_going is not None:
            found = found.exclude(engine_id=engine_going)
        kin.update(found.values_list("pk", "engine_id", "status"))
    return kin


def _log_updated(instances: Collection[tuple[int, int, str]]) -> None:
    """An ``updated`` row for each of these instances ((pk, engine pk, status)), on its engine's
    log, in the order of their pks."""
    ChangeLog.objects.bulk_create(
        ChangeLog(engine_id=engine_pk, instance_id=pk, kind=ChangeKind.UPDATED, status=status)
        for pk, engine_pk, status in sorted(instances)
    )


def _delete_earlier_runs(going: QuerySet[Run]) -> None:
    """Deletes these runs, and logs an ``updated`` row for each of their instances: a live
    page of it stops listing them. (The row can't name a run: it would go with it.) No page
    of their kin shows an instance's runs."""
    instances = set(going.values_list("instance_id", "instance__engine_id", "instance__status"))
    going.delete()
    if not instances:
        return
    # After the delete: the lock is held for this insert and the commit only.
    change_log_in_commit_order()
    _log_updated(instances)


def _forget_tombstones(engine_pk: int, cutoff: datetime, token: str, done: Forgotten) -> None:
    pks = list(
        Instance.objects.filter(engine_id=engine_pk, purged=True, purged_at__lt=cutoff)
        .order_by("purged_at")
        .values_list("pk", flat=True)[:INSTANCES_PER_BATCH]
    )
    if not pks:
        return
    # Runs, events, change-log rows and the read schedule go with them (CASCADE); the SQLite
    # search table by its trigger. Checked again in the transaction: still a tombstone.
    n, more = _delete_batch(
        engine_pk,
        token,
        _events_of(pks),
        INSTANCES_PER_BATCH,
        _delete_instances,
        Instance.objects.filter(purged=True),
    )
    done.instances += n
    done.more = done.more or more


def _forget_earlier_runs(engine_pk: int, cutoff: datetime, token: str, done: Forgotten) -> None:
    # From the superseded runs' index, in its order: SQLite, with no statistics, otherwise takes
    # the engine's equality for the rarer term and reads and sorts every run of the engine, at
    # each call (70 ms for 200,000 instances, with nothing to forget).
    runs, names = search.off_index(
        Run.objects.filter(superseded_at__lt=cutoff), ["instance__engine_id"]
    )
    rows = list(
        runs.filter(**{names["instance__engine_id"]: engine_pk})
        .order_by("superseded_at")
        .values_list("pk", "event_count")[:RUNS_PER_BATCH]
    )
    if not rows:
        return
    # Checked again in the transaction: not the instance's current run again meanwhile.
    n, more = _delete_batch(
        engine_pk,
        token,
        rows,
        RUNS_PER_BATCH,
        _delete_earlier_runs,
        Run.objects.filter(superseded_at__lt=cutoff),
    )
    done.runs += n
    done.more = done.more or more


def _forget_changes(engine_pk: int, cutoff: datetime, token: str, done: Forgotten) -> None:
    # Oldest first by id (commit order), not by created_at, which no index serves: the rows
    # to go are at the start, and a call with nothing to do reads one row.
    oldest = ChangeLog.objects.filter(engine_id=engine_pk).order_by("id")
    first = oldest.values_list("created_at", flat=True).first()
    if first is None or first >= cutoff:
        return
    ids = []
    for pk, created_at in oldest.values_list("id", "created_at")[:CHANGES_PER_BATCH]:
        if created_at >= cutoff:
            break
        ids.append(pk)
    with fenced(engine_pk, token):
        ChangeLog.objects.filter(id__in=ids).delete()
    done.changes += len(ids)
    done.more = done.more or len(ids) == CHANGES_PER_BATCH


def forget_engine_batch(engine_pk: int, token: str) -> int:
    """Deletes a batch of the instances of an engine being removed from the console
    (``manage.py forgetengine``), its counts kept exact, and logs the pages of their kin on
    other engines; how many (0: none is left)."""
    pks = list(
        Instance.objects.filter(engine_id=engine_pk)
        .order_by("pk")
        .values_list("pk", flat=True)[:INSTANCES_PER_BATCH]
    )
    if not pks:
        return 0
    taken = _within_events(_events_of(pks))
    with fenced(engine_pk, token):
        live = (
            Instance.objects.filter(pk__in=taken, purged=False)
            .values_list("name", "status")
            .annotate(n=Count("pk"))
        )
        for name, status, n in live:
            StatusCount.objects.filter(engine_id=engine_pk, name=name, status=status).update(
                count=F("count") - n
            )
        _delete_instances(Instance.objects.filter(pk__in=taken), engine_going=engine_pk)
    return len(taken)


def unlink_children_batch(engine_pk: int, token: str) -> int:
    """Unlinks a batch of the children of an engine being removed, once its instances are
    deleted (``manage.py forgetengine``); how many (0: none is left)."""
    pks = list(
        Instance.objects.filter(parent_engine=engine_pk).values_list("pk", flat=True)[
            :INSTANCES_PER_BATCH
        ]
    )
    if pks:
        with fenced(engine_pk, token):
            unlink_children(Instance.objects.filter(pk__in=pks, parent_engine=engine_pk))
    return len(pks)


def unlink_children(children: QuerySet[Instance]) -> None:
    """Unlinks these children from their parent's engine, and logs their pages, whose parent
    link would lead nowhere: they keep their parent's app id and id, shown without a link."""
    # Locked in the order of their rows, as an indexer writing some of them saves them; locked,
    # their statuses are those to log.
    unlinked = list(
        children.order_by("pk")
        .select_for_update(no_key=True)
        .values_list("pk", "engine_id", "status")
    )
    if not unlinked:
        return
    Instance.objects.filter(pk__in=[pk for pk, _, _ in unlinked]).update(parent_engine=None)
    # After the update: the lock is held for this insert and the commit only.
    change_log_in_commit_order()
    _log_updated(unlinked)
