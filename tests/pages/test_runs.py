"""The runs of an instance on its page: every one reachable, page by page newest first, and any
one opened by its execution id (an eternal workflow continues as new thousands of times)."""

import re
from datetime import timedelta
from html import unescape

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from tests.console import factories
from tests.console.factories import T0
from workflows_ui import views
from workflows_ui.models import HistoryEvent, Instance, Run

pytestmark = pytest.mark.django_db

PAGE = "/instances/orders/eternal/"
HTMX_RUNS = {"HX-Request": "true", "HX-Target": "runs"}
HTMX_HISTORY = {"HX-Request": "true", "HX-Target": "history"}


def store_runs(inst: Instance, count: int) -> None:
    """``count`` runs, each continued as new but the last, the current one."""
    last = count
    Run.objects.bulk_create(
        Run(
            instance=inst,
            execution_id=f"exec-{n:05d}",
            ordinal=n,
            name="tick",
            status="RUNNING" if n == last else "CONTINUED_AS_NEW",
            input=f'{{"n": {n}}}',
        )
        for n in range(1, last + 1)
    )
    Instance.objects.filter(pk=inst.pk).update(current_execution_id=f"exec-{last:05d}")


@pytest.fixture
def eternal(db):
    inst = factories.instance(instance_id="eternal", name="tick", status="RUNNING")
    store_runs(inst, 1000)
    return inst


def _text(response) -> str:
    return response.content.decode()


def ordinals_listed(body: str) -> list[int]:
    return [
        int(n) for n in re.findall(r'<tr class="run-row[^"]*"[^>]*><td><a [^>]*>(\d+)</a>', body)
    ]


def older_link(body: str) -> str | None:
    found = re.search(r'id="runs-older" href="([^"]*)"', body)
    return unescape(found.group(1)) if found else None


def test_every_run_of_an_eternal_workflow_is_reached_page_by_page_newest_first(logged_in, eternal):
    seen: list[int] = []
    url: str | None = PAGE
    query_counts = set()
    while url is not None:
        with CaptureQueriesContext(connection) as queries:
            response = logged_in.get(url)
        assert response.status_code == 200
        body = _text(response)
        listed = ordinals_listed(body)
        assert len(listed) == views.RUNS_PAGE
        seen += listed
        query_counts.add(len(queries))
        url = older_link(body)
    assert seen == list(range(1000, 0, -1))
    # The last page costs what the first does: two queries of the runs, none reading them all.
    assert len(query_counts) == 1
    last = _text(logged_in.get(PAGE + "?runs_page=50"))
    assert ordinals_listed(last) == list(range(20, 0, -1)) and "Page 50 of 50" in last
    assert 'id="runs-older"' not in last and 'href="/instances/orders/eternal/?runs_page=1"' in last


def test_the_current_run_stays_the_default_and_its_page_comes_first(logged_in, eternal):
    body = _text(logged_in.get(PAGE))
    assert ordinals_listed(body)[:2] == [1000, 999]
    assert re.search(r'<tr class="run-row current" aria-current="page"><td><a [^>]*>1000<', body)
    assert "Page 1 of 50, newest first" in body
    assert 'id="this-run"' not in body  # the current run, not an earlier one


def test_an_earlier_run_opens_the_runs_table_at_its_own_page(logged_in, eternal):
    body = _text(logged_in.get(PAGE + "runs/537/"))
    # 1000..981 on page 1: run 537 is the 464th newest, on page 24.
    assert "Page 24 of 50" in body
    assert re.search(r'aria-current="page"><td><a href="[^"]*runs/537/"[^>]*>537<', body)
    # The other pages are linked from the run's page: the run shown stays shown.
    assert 'href="/instances/orders/eternal/runs/537/?runs_page=25"' in body
    body = _text(logged_in.get(PAGE + "runs/537/?runs_page=1"))
    assert ordinals_listed(body)[0] == 1000 and 'id="this-run">#537' in body


def test_a_page_of_runs_alone_is_swapped_in_by_htmx(logged_in, eternal):
    headers = {"HX-Request": "true", "HX-Target": "runs"}
    with CaptureQueriesContext(connection) as queries:
        response = logged_in.get(PAGE + "?runs_page=3", headers=headers)
    body = _text(response)
    assert "<html" not in body and 'id="timeline"' not in body
    assert ordinals_listed(body)[0] == 960
    assert "data-announce>Runs 960 to 941, page 3 of 50." in body
    # Session, user, instance, run, the ends of its runs, the page of runs.
    assert len(queries) == 6


def test_a_run_is_opened_by_its_execution_id_from_a_link_or_the_form(logged_in, eternal):
    response = logged_in.get(PAGE + "?run=exec-00042")
    assert response.status_code == 302 and response["Location"] == PAGE + "runs/42/"
    # Pasted with a newline and spaces around it, from the lookup form.
    response = logged_in.get(PAGE, {"run": " exec-00042\n"})
    assert response["Location"] == PAGE + "runs/42/"
    body = _text(logged_in.get(PAGE + "runs/42/"))
    assert 'id="run-link" href="/instances/orders/eternal/?run=exec-00042"' in body
    assert (
        '<form class="inline" method="get" action="/instances/orders/eternal/" id="run-lookup">'
        in body
    )
    # The current run's link names it too, not the instance (which moves on to the next run).
    body = _text(logged_in.get(PAGE))
    assert 'id="run-link" href="/instances/orders/eternal/?run=exec-01000"' in body
    # Login first, as everywhere.
    logged_in.logout()
    assert logged_in.get(PAGE + "?run=exec-00042")["Location"].startswith("/login/")


def test_an_execution_id_of_any_characters_is_linked_and_shown_escaped(logged_in, eternal):
    odd = '<b>"x"</b>&/runs/1?#'
    Run.objects.create(instance=eternal, execution_id=odd, ordinal=1001, name="tick")
    body = _text(logged_in.get(PAGE + "runs/1001/"))
    assert "<b>" not in body
    link = re.search(r'id="run-link" href="([^"]*)"', body).group(1)
    assert link == "/instances/orders/eternal/?run=%3Cb%3E%22x%22%3C%2Fb%3E%26%2Fruns%2F1%3F%23"
    assert logged_in.get(unescape(link))["Location"] == PAGE + "runs/1001/"


@pytest.mark.parametrize(
    "execution_id",
    ["exec-99999", "<script>alert(1)</script>", "exec-00001\x00", "x" * 5000, "exec-00001 x"],
    ids=["unknown", "markup", "nul", "long", "two-words"],
)
def test_an_unknown_execution_id_is_a_404_that_says_so(logged_in, eternal, execution_id):
    response = logged_in.get(PAGE, {"run": execution_id})
    assert response.status_code == 404
    body = _text(response)
    said = re.search(r'<p id="no-such-run">(.*?)</p>', body, re.S).group(1)
    assert "has no run with execution id" in said and "<script>" not in body
    assert 'id="back" href="/instances/orders/eternal/"' in body


@pytest.mark.parametrize("asked", ["0", "51", "-1", "abc", "1e3", "99999999999999999999", "٣"])
def test_a_page_of_runs_that_does_not_exist_is_a_404_that_says_which_do(logged_in, eternal, asked):
    response = logged_in.get(PAGE, {"runs_page": asked})
    assert response.status_code == 404
    body = _text(response)
    said = re.search(r'<p id="no-such-runs-page">(.*?)</p>', body, re.S).group(1)
    assert "pages go from 1 to 50 (20 runs a page, newest first)" in said
    assert 'id="last-page" href="/instances/orders/eternal/?runs_page=50"' in body


def test_an_empty_page_number_is_as_if_not_given(logged_in, eternal):
    response = logged_in.get(PAGE + "runs/537/?runs_page=")
    assert response.status_code == 200 and "Page 24 of 50" in _text(response)
    response = logged_in.get(PAGE + "?run=")
    assert response.status_code == 200 and "Page 1 of 50" in _text(response)


# --- the runs table and the history, each paged in place, keep each other's state -------------


def store_history(inst: Instance, count: int) -> None:
    """``count`` events in the current run, activities scheduled between turns."""
    run = Run.objects.filter(instance=inst).order_by("-ordinal").first()
    HistoryEvent.objects.bulk_create(
        HistoryEvent(
            run=run,
            position=n,
            event_id=n,
            event_type="taskScheduled" if n % 2 else "workflowStarted",
            name="step" if n % 2 else "",
            timestamp=T0 + timedelta(seconds=n),
            details={},
        )
        for n in range(count)
    )
    Run.objects.filter(pk=run.pk).update(event_count=count)


def link(body: str, link_id: str) -> tuple[str, str]:
    """The ``href`` and ``hx-get`` of a link, unescaped."""
    found = re.search(rf'<a id="{link_id}"[^>]* href="([^"]*)" hx-get="([^"]*)"', body)
    assert found, link_id
    return unescape(found.group(1)), unescape(found.group(2))


def test_a_page_of_runs_and_a_filtered_page_of_history_both_stay_in_the_address(logged_in, eternal):
    store_history(eternal, 240)
    history = PAGE + "runs/1000/history/"
    both = "runs_page=3&type=taskScheduled&after=99"
    # The address the runs pager pushes: the runs page and the history as it was.
    body = _text(logged_in.get(f"{PAGE}?{both}"))
    assert "Page 3 of 50" in body
    assert re.search(r'<tr id="event-101" class="event-row type-taskScheduled', body)
    # A reload keeps both: each pager's links carry the other's state as the address had it...
    assert link(body, "runs-older") == (
        f"{PAGE}?runs_page=4&type=taskScheduled&after=99",
        f"{PAGE}?runs_page=4",
    )
    assert link(body, "history-next") == (
        f"{history}?type=taskScheduled&after=199&runs_page=3",
        f"{history}?type=taskScheduled&after=199",
    )
    # ... and, followed in place, add the other's as it is then, from the page.
    assert 'hx-include="#history-state"' in body and 'hx-include="#runs-state"' in body
    state = re.search(r'<div id="history-state" hidden>(.*?)</div>', body).group(1)
    assert re.findall(r'name="(\w+)" value="(\w+)"', state) == [
        ("type", "taskScheduled"),
        ("after", "99"),
    ]
    # The type filter submits the runs page too (the input names the form).
    assert re.search(r'<form class="inline" id="history-filter"', body)
    assert (
        '<input type="hidden" id="runs-state" name="runs_page" value="3" form="history-filter">'
        in body
    )

    # The address the history pager pushes, reloaded: the whole page, with both as they were.
    body = _text(logged_in.get(f"{history}?type=taskScheduled&after=99&runs_page=3"))
    assert "Page 3 of 50" in body and 'id="event-101"' in body and "<html" in body
    assert (
        link(body, "runs-newer")[0] == f"{PAGE}runs/1000/?runs_page=2&type=taskScheduled&after=99"
    )

    # Each swapped in alone (htmx), with the other's state the page added.
    runs = _text(
        logged_in.get(f"{PAGE}?runs_page=5&type=taskScheduled&after=99", headers=HTMX_RUNS)
    )
    assert link(runs, "runs-older")[0] == f"{PAGE}?runs_page=6&type=taskScheduled&after=99"
    assert 'id="runs-state" name="runs_page" value="5"' in runs
    rows = _text(
        logged_in.get(f"{history}?type=taskScheduled&after=199&runs_page=5", headers=HTMX_HISTORY)
    )
    assert link(rows, "history-prev")[0] == f"{history}?type=taskScheduled&before=201&runs_page=5"
    assert link(rows, "history-first")[0] == f"{history}?type=taskScheduled&runs_page=5"


def test_without_a_page_of_runs_asked_the_links_stay_as_they_were(logged_in, eternal):
    store_history(eternal, 120)
    body = _text(logged_in.get(PAGE))
    assert link(body, "runs-older") == (f"{PAGE}?runs_page=2", f"{PAGE}?runs_page=2")
    history = PAGE + "runs/1000/history/"
    assert link(body, "history-next") == (f"{history}?after=49", f"{history}?after=49")
    assert 'id="runs-state"' not in body
    assert '<div id="history-state" hidden></div>' in body
    # An event's page keeps the history page holding it when the runs are paged.
    body = _text(logged_in.get(PAGE + "runs/1000/events/77/"))
    assert link(body, "runs-older")[0] == f"{PAGE}runs/1000/?runs_page=2&after=49"
