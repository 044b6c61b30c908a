"""engine_bridge.bulk on the database the suite runs on (SQLite, or PostgreSQL with
CONSOLE_TEST_DATABASE=postgres): rows read back as the ORM would have written them."""

from datetime import UTC, datetime, timedelta

import orjson
import pytest
from django.db import IntegrityError, transaction

from engine_bridge import bulk
from tests.console import factories
from workflows_ui.models import HistoryEvent, InstanceCheck

pytestmark = pytest.mark.django_db

T = datetime(2026, 11, 23, 12, 0, 0, 123456, tzinfo=UTC)
FIELDS = ("run", "position", "event_id", "event_type", "name", "timestamp", "related_id", "details")


def _events(run, positions):
    rows = bulk.Rows(HistoryEvent, FIELDS, encoded=["details"])
    for p in positions:
        details = {"input": f'{{"n": {p}}}', "quote": 'it\'s "$1" and ?', "n": p}
        rows.add(
            run,
            p,
            p - 1,
            "taskScheduled",
            f"step-{p}",
            T + timedelta(microseconds=p),
            None if p % 2 else p - 1,
            orjson.dumps(details).decode(),
        )
    return rows


def test_rows_of_several_statements_read_back_as_written():
    run = factories.run(factories.instance())
    rows = _events(run, range(1234))  # more than one statement's worth, and a partial last one
    bulk.insert(rows)
    stored = list(HistoryEvent.objects.filter(run=run).order_by("position"))
    assert len(stored) == 1234
    last = stored[-1]
    assert (last.position, last.event_id, last.event_type, last.name) == (
        1233,
        1232,
        "taskScheduled",
        "step-1233",
    )
    assert last.timestamp == T + timedelta(microseconds=1233)
    assert last.related_id is None and stored[10].related_id == 9
    # Markers inside values stay data: "?" and "$1" are not placeholders there.
    assert last.details == {"input": '{"n": 1233}', "quote": 'it\'s "$1" and ?', "n": 1233}


def test_returning_gives_the_new_rows_keys_across_statements():
    run = factories.run(factories.instance())
    bulk.insert(_events(run, range(2)))
    back = bulk.insert(_events(run, range(2, 1200)), returning=("position", "run", "id"))
    stored = set(
        HistoryEvent.objects.filter(run=run, position__gte=2).values_list("position", "run", "id")
    )
    assert len(back) == 1198 and set(back) == stored  # the new rows only, each once
    assert bulk.insert(_events(run, [])) == []


def test_a_duplicate_raises_djangos_integrity_error_and_changes_nothing():
    run = factories.run(factories.instance())
    bulk.insert(_events(run, range(3)))
    with pytest.raises(IntegrityError), transaction.atomic():
        bulk.insert(_events(run, [3, 4, 1]))  # position 1 is taken
    assert list(HistoryEvent.objects.filter(run=run).values_list("position", flat=True)) == [
        0,
        1,
        2,
    ]


def test_upsert_updates_the_row_with_the_same_key_once():
    inst = factories.instance()
    checks = bulk.Rows(InstanceCheck, ("instance", "engine", "due_at", "interval"))
    checks.add(inst, inst.engine_id, T, 1.0)
    bulk.upsert(checks, unique=["instance"], update=["due_at", "interval"])
    again = bulk.Rows(InstanceCheck, ("instance", "engine", "due_at", "interval"))
    again.add(inst, inst.engine_id, T + timedelta(seconds=5), 2.0)
    again.add(inst, inst.engine_id, T + timedelta(seconds=9), 4.0)  # the last one counts
    bulk.upsert(again, unique=["instance"], update=["due_at", "interval"])
    check = InstanceCheck.objects.get(instance=inst)
    assert (check.due_at, check.interval) == (T + timedelta(seconds=9), 4.0)
