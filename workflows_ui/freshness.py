"""Reading an instance again because someone looks at it.

The indexer re-reads a finished instance rarely (a minute after it ends, then less and less
often, down to hourly on a big engine), so the page of an id started again, re-run or restarted
could show its old run for up to an hour; and it finds a new id only when its listing of the
engine reaches it. Someone opening an instance's page, or asking the API for it, wants what
the engine has now: when the indexer last read the instance more than ``STALE_AFTER`` ago and
won't read it again within ``DUE_SOON``, the view leaves it a hint (``RefreshRequest``), which
the indexer takes at its next pass, a second or so later. The same for an id the console has
not indexed (yet), say a link to an instance started a moment ago: the indexer asks the engine
for it.

The page is answered with what the console has; a reload shows the new read. A hint costs the
engine one GetInstance (and the history when the instance changed), and hints coalesce: at most
one read per instance and pass whoever looks. The write is small and never holds a page up
(``search.brief_write_wait``): when the database is busy, or takes no writes, there is no hint,
and the instance is read at its usual time.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from django.db import DatabaseError
from django.utils import timezone

from workflows_ui.models import Engine, Instance, RefreshRequest
from workflows_ui.search import brief_write_wait

log = logging.getLogger(__name__)

#: What the console shows of an instance read longer ago than this may be stale.
STALE_AFTER = timedelta(seconds=5)
#: A read due this soon needs no hint.
DUE_SOON = timedelta(seconds=2)
#: The longest id a hint holds (and the console stores).
MAX_ID: int = RefreshRequest._meta.get_field("instance_id").max_length  # type: ignore[assignment]


def read_again(inst: Instance) -> bool:
    """Ask the indexer to read this instance again now if what the console has of it may be
    stale. True when a read is coming within seconds (asked now or by an earlier look, or due
    anyway). Not for a tombstone (the engine's listing finds an id started again), an
    instance whose reads fail (its page says when the indexer tries again: each try can take
    the engine's whole deadline), an engine no indexer runs, or one that is down (its banner
    says so; the indexer reads what changed when it is back)."""
    check = inst.read_schedule()
    if check is None or check.read_failing_since is not None or not _readable(inst.engine):
        return False
    now = timezone.now()
    if check.due_at <= now + DUE_SOON:
        return True
    if check.read_at is not None and now - check.read_at < STALE_AFTER:
        return False
    return _ask(inst.engine, inst.instance_id)


def look_for(engine_name: str, instance_id: str) -> bool:
    """Ask the indexer to look for an id the console has not indexed (yet). True when it was
    asked: the engine exists, some indexer runs it and it was up at its last pass."""
    if not instance_id or len(instance_id) > MAX_ID or "\x00" in instance_id:
        return False
    engine = Engine.objects.filter(name=engine_name).first()
    return engine is not None and _readable(engine) and _ask(engine, instance_id)


def _readable(engine: Engine) -> bool:
    """Whether the indexer reads this engine now: one that is down, or whose passes fail (it
    refuses the console's api token, say), would read a hint only when it is back, and one no
    indexer has passed over for minutes (stale) only when one runs again, not a second or two
    after the page says so."""
    return (
        engine.configured
        and engine.reachable is not False
        and not engine.failing
        and engine.health() != "stale"
    )


def _ask(engine: Engine, instance_id: str) -> bool:
    if RefreshRequest.objects.filter(engine=engine, instance_id=instance_id).exists():
        return True  # a reload: the hint is still waiting
    try:
        with brief_write_wait():
            # Not update_or_create: a hint renewed while the indexer reads it stays for its
            # next pass (engine_bridge.indexer), a second read for nothing.
            RefreshRequest.objects.bulk_create(
                [RefreshRequest(engine=engine, instance_id=instance_id)], ignore_conflicts=True
            )
    except DatabaseError as exc:
        # Busy (SQLite's write lock), or a database that takes no writes (a PostgreSQL standby
        # after a failover, a read-only file): the page only reads, and is answered all the same.
        log.info("no hint to read %s/%s again: %s", engine.name, instance_id[:100], exc)
        return False
    return True
