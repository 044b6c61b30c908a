"""A run too big to read whole: its timeline summarized in SQL agrees with the one built from
every event, and its detail page reads neither every event nor every turn."""

import re
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from tests.pages import longrun
from workflows_ui import history
from workflows_ui.models import Engine
from workflows_ui.timeline import groups_of

pytestmark = pytest.mark.django_db


@pytest.fixture
def run(db):
    engine = Engine.objects.create(name="orders", address="127.0.0.1:1", reachable=True)
    return longrun.store(engine, "crawl-1", 1200)


def test_the_summary_of_a_big_run_agrees_with_the_timeline_built_from_every_event(run):
    full = history.build_timeline(history.load_rows(run.pk), "RUNNING")
    summary, waits = history.summarize(run.pk, run.event_count, "RUNNING")

    def key(groups):
        return sorted((g.kind, g.label, g.count, g.failed, g.open, g.first) for g in groups)

    assert key(summary.groups) == key(groups_of(full.bars))
    assert summary.bar_total == len(full.bars)
    assert summary.turn_total == len(full.turns)
    assert summary.start == full.start
    assert waits == history.waiting_on(full)
    assert [(w.kind, w.until is not None) for w in waits] == [("activity", False), ("event", True)]
    assert waits[1].label == "approval"


def test_a_finished_big_run_waits_on_nothing_and_its_open_bars_are_not_counted(run):
    summary, waits = history.summarize(run.pk, run.event_count, "TERMINATED")
    assert waits == []
    assert summary.finished
    assert all(g.open == 0 for g in summary.groups)


def test_the_detail_page_of_a_big_run_summarizes_instead_of_reading_every_event(
    run, logged_in, monkeypatch
):
    monkeypatch.setattr(history, "FULL_TIMELINE_EVENTS", 500)
    read_whole = []
    real_load_rows = history.load_rows

    def spy(run_pk, types=None, limit=None):
        if types is None:
            read_whole.append(run_pk)
        return real_load_rows(run_pk, types, limit)

    monkeypatch.setattr(history, "load_rows", spy)
    with CaptureQueriesContext(connection) as queries:
        response = logged_in.get("/instances/orders/crawl-1/")
    assert response.status_code == 200
    # The page's nine, plus the summary's: two aggregates, open activities, open timers, the
    # open event wait, the last suspend and the last resume, turn buckets and markers.
    assert len(queries.captured_queries) <= 9 + 9
    assert read_whole == []
    body = response.content.decode()
    assert body.count('class="event-row') == 50
    assert "so grouped by kind and name" in body
    assert re.search(r'data-kind="activity" data-outcome="\w+" data-failed="\d+"', body)
    assert "Activity <strong>" in body and "Event <strong>approval</strong>" in body
    # Every query on the events is bounded (LIMIT) or aggregated (GROUP BY / COUNT).
    for q in queries.captured_queries:
        sql = q["sql"]
        if "workflows_ui_historyevent" in sql.split(" WHERE ")[0]:
            assert "LIMIT" in sql or "GROUP BY" in sql, sql


def test_an_end_event_without_a_time_is_not_an_error(run):
    from workflows_ui.models import HistoryEvent

    HistoryEvent.objects.create(
        run=run, position=run.event_count, event_id=-1, event_type="executionCompleted"
    )
    summary, waits = history.summarize(run.pk, run.event_count + 1, "COMPLETED")
    assert summary.finished and waits == []


def test_waits_on_many_event_names_are_read_in_a_bounded_number_of_queries(run):
    # A turn that waits on 60 events by different names, 20 of them raised since: the summary
    # reads the open waits of every name at once, not in a query per name.
    from workflows_ui.models import HistoryEvent

    t = longrun.T0 + timedelta(days=1)
    added = [HistoryEvent(event_id=-1, event_type="workflowStarted", timestamp=t)]
    added += [_event_wait(10_000 + i, f"approval-{i:02d}", t) for i in range(60)]
    added.append(HistoryEvent(event_id=-1, event_type="workflowStarted", timestamp=t))
    added += [
        HistoryEvent(event_id=-1, event_type="eventRaised", name=f"APPROVAL-{i:02d}", timestamp=t)
        for i in range(0, 60, 3)
    ]
    _append(run, added)

    full = history.build_timeline(history.load_rows(run.pk), "RUNNING")
    with CaptureQueriesContext(connection) as queries:
        summary, waits = history.summarize(run.pk, run.event_count, "RUNNING")
    assert len(queries.captured_queries) <= 9
    assert waits == history.waiting_on(full)
    assert sorted(w.label for w in waits if w.kind == "event" and w.until is None) == [
        f"approval-{i:02d}" for i in range(60) if i % 3
    ]


def test_a_big_run_waiting_on_more_than_it_lists_counts_them_all(run, logged_in, monkeypatch):
    # 250 timers and 230 waits for "tick" still open (and the run's own): the timeline counts
    # every one of them open, and "waiting on" says how many it leaves out.
    from workflows_ui.models import HistoryEvent

    t = longrun.T0 + timedelta(days=1)
    added = [HistoryEvent(event_id=-1, event_type="workflowStarted", timestamp=t)]
    added += [
        HistoryEvent(
            event_id=20_000 + i,
            event_type="timerCreated",
            timestamp=t,
            details={"fireAt": "2027-01-01T00:00:00Z", "createTimer": {}},
        )
        for i in range(250)
    ]
    added += [_event_wait(30_000 + i, "tick", t) for i in range(230)]
    _append(run, added)

    full = history.build_timeline(history.load_rows(run.pk), "RUNNING")
    open_in_full = {(g.kind, g.label): g.open for g in groups_of(full.bars)}
    summary, waits = history.summarize(run.pk, run.event_count, "RUNNING")
    assert {(g.kind, g.label): g.open for g in summary.groups} == open_in_full
    assert open_in_full[("timer", "timer")] == 251 and open_in_full[("event", "tick")] == 230
    # Not listed: the 51 oldest open timers (the approval's timeout among them, which "waiting
    # on" shows as the wait's timeout, not on its own) and the 30 oldest waits for "tick".
    assert summary.unlisted == 51 + 30
    assert len(history.waiting_on(full)) - len(waits) == 51 + 30 - 1

    monkeypatch.setattr(history, "FULL_TIMELINE_EVENTS", 500)
    body = logged_in.get("/instances/orders/crawl-1/").content.decode()
    assert "And 81 more not listed" in body

    # A run read whole lists as many of each kind, the latest (all of them were listed: 4,900
    # timers made a page of 1.5 MB, its timeline and history 4,900 lines below).
    monkeypatch.setattr(history, "FULL_TIMELINE_EVENTS", 10**6)
    tl, listed = history.load_timeline(run, "RUNNING")
    every = history.waiting_on(full)
    assert len(listed) + tl.unlisted == len(every) and tl.unlisted > 0
    for kind, label in (("timer", "timer"), ("event", "tick")):
        mine = [w for w in listed if (w.kind, w.label) == (kind, label)]
        assert len(mine) == history.OPEN_LIMIT, kind
        assert min(w.position for w in mine) > max(
            w.position for w in every if (w.kind, w.label) == (kind, label) and w not in listed
        )
    body = logged_in.get("/instances/orders/crawl-1/").content.decode()
    assert f"And {tl.unlisted} more not listed" in body


def _event_wait(event_id, name, at):
    """The timer an SDK creates to wait for an event by ``name``, without a timeout."""
    from workflows_ui.models import HistoryEvent

    return HistoryEvent(
        event_id=event_id,
        event_type="timerCreated",
        name=name,
        timestamp=at,
        details={"fireAt": "9999-12-31T23:59:59.999999999Z", "externalEvent": {}},
    )


def _append(run, events):
    """``events`` stored at the end of ``run``'s history."""
    from workflows_ui.models import HistoryEvent

    for i, event in enumerate(events):
        event.run, event.position = run, run.event_count + i
    HistoryEvent.objects.bulk_create(events)
    run.event_count += len(events)
    run.save(update_fields=["event_count"])


def test_the_last_failure_of_a_run_is_read_from_the_end_of_each_type_not_sorted_from_all(run):
    # A run may fail activities by the thousand (retries, a fan-out): read in one query, every
    # failure of the run was sorted to keep the last (0.15 s on PostgreSQL, 0.5 s on SQLite
    # for 100,000), and walked in position order the run was read whole when it had none.
    from workflows_ui.models import HistoryEvent

    t = longrun.T0 + timedelta(days=1)
    _append(
        run,
        [
            HistoryEvent(
                event_id=-1,
                event_type="childWorkflowInstanceFailed",
                name="crawl_site",
                timestamp=t,
                details={"failureDetails": {"errorMessage": "site down"}},
            ),
            HistoryEvent(event_id=-1, event_type="workflowStarted", timestamp=t),
        ],
    )
    failures = ("taskFailed", "childWorkflowInstanceFailed")
    assert HistoryEvent.objects.filter(run=run, event_type="taskFailed").count() > 1
    with CaptureQueriesContext(connection) as queries:
        (last,) = history.load_rows_last(run.pk, failures)
    assert (last.position, last.name, last.info) == (run.event_count - 2, "crawl_site", "site down")
    with CaptureQueriesContext(connection) as queries_of_none:
        assert history.load_rows_last(run.pk, ("executionSuspended", "executionResumed")) == []
    if connection.vendor != "sqlite":
        return
    for q in [*queries.captured_queries, *queries_of_none.captured_queries]:
        with connection.cursor() as cursor:
            cursor.execute("EXPLAIN QUERY PLAN " + q["sql"])
            plan = " | ".join(row[-1] for row in cursor.fetchall())
        assert "wf_event_run_type_pos (run_id=? AND event_type=?)" in plan, plan
        assert "TEMP B-TREE" not in plan, plan
