"""The instance list and detail pages, rendered by the views from seeded rows."""

import base64
import json
import re
from collections import Counter
from datetime import UTC, timedelta

import pytest
from django.db import connection
from django.db.models import Sum
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from tests.console import factories
from tests.pages import golden_rows, seed
from workflows_ui import history, listing, views
from workflows_ui.models import Engine, HistoryEvent, Instance, InstanceCheck, Run, StatusCount

pytestmark = pytest.mark.django_db

#: Session, user, engines, counts, the workflow names offered (one engine); then one page
#: query, or one per status holding instances when the page is merged from one index range per
#: status.
LIST_QUERIES = 5
#: Session, user, instance, run, the ends of its runs, a page of runs, children, parent, the
#: timeline, the history page, the events its completions answer.
DETAIL_QUERIES = 11


def ids_in(response) -> list[str]:
    return re.findall(
        r'<tr class="instance-row">.*?<a href="[^"]*">([^<]*)</a>', _text(response), re.S
    )


def _text(response) -> str:
    return response.content.decode()


def _timeline(body: str) -> str:
    """The timeline's drawing in a page (the legend before it has small drawings of its own)."""
    start = body.index('<svg class="timeline"')
    return body[start : body.index("</svg>", start)]


# --- login ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/instances/",
        "/instances/orders/g-two-steps/",
        "/instances/orders/g-two-steps/runs/1/events/3/",
        "/instances/orders/g-two-steps/runs/1/history/",
        "/instances/orders/g-two-steps/runs/1/history.json",
        "/instances/orders/g-two-steps/payload/input/",
    ],
)
def test_every_page_redirects_anonymous_visitors_to_login(client, seeded, path):
    response = client.get(path)
    assert response.status_code == 302
    assert response["Location"].startswith("/login/")


# --- the list -------------------------------------------------------------------------------------


def test_the_list_shows_every_column_newest_first(logged_in, seeded):
    response = logged_in.get("/instances/")
    body = _text(response)
    for header in ("Engine", "Instance id", "Workflow", "Status", "Created", "Last updated"):
        assert f">{header}" in body
    assert "Duration" in body and "Custom status" in body
    ids = ids_in(response)
    assert len(ids) == len(seeded.instances)
    created = {i.instance_id: i.created_at for i in Instance.objects.all()}
    assert [created[i] for i in ids] == sorted(created.values(), reverse=True)
    assert "status-red" in body  # the failed instance, in its colour
    assert "&quot;waiting for go&quot;" in body  # a custom status
    running = Instance.objects.filter(status="RUNNING").count()
    assert running and body.count(" so far</td>") == running  # durations still growing


def test_the_engine_column_is_shown_only_with_several_engines(logged_in, seeded):
    body = _text(logged_in.get("/instances/"))
    assert ">Engine<" not in body and 'class="engine"' not in body
    Engine.objects.create(name="billing", address="127.0.0.1:2")
    body = _text(logged_in.get("/instances/"))
    assert "<th>Engine</th>" in body
    assert body.count('<td class="engine">orders</td>') == len(seeded.instances)


def test_several_statuses_filter_together_and_the_counts_come_from_the_counts_table(
    logged_in, seeded
):
    with CaptureQueriesContext(connection) as queries:
        response = logged_in.get("/instances/?status=FAILED&status=TERMINATED")
    assert sorted(ids_in(response)) == ["g-fails", "g-terminated"]
    body = _text(response)
    assert "2 instances" in body
    assert re.search(r'data-status="RUNNING"[^>]*>Running 4<', body)
    assert re.search(r'data-status="COMPLETED"[^>]*>Completed 9<', body)
    sqls = [q["sql"] for q in queries.captured_queries]
    assert any("workflows_ui_statuscount" in sql for sql in sqls)
    assert not any("COUNT(" in sql.upper() for sql in sqls)


def test_text_search_finds_words_of_inputs_outputs_and_failures(logged_in, seeded):
    assert sorted(ids_in(logged_in.get("/instances/?q=nowhere"))) == ["g-fails"]
    assert sorted(ids_in(logged_in.get("/instances/?q=carrier+serves"))) == ["g-fails"]
    found = ids_in(logged_in.get("/instances/?q=o-1001&status=COMPLETED"))
    assert sorted(found) == ["g-status", "g-two-steps", "g-with-retry"]
    assert ids_in(logged_in.get("/instances/?q=no-such-word-anywhere")) == []


def test_name_id_prefix_and_created_range_filter(logged_in, seeded):
    assert sorted(ids_in(logged_in.get("/instances/?name=line_item"))) == [
        "g-fan-out:0001",
        "g-fan-out:0002",
        "g-fan-running:0001",
    ]
    assert sorted(ids_in(logged_in.get("/instances/?id_prefix=g-fan-out"))) == [
        "g-fan-out",
        "g-fan-out:0001",
        "g-fan-out:0002",
    ]
    assert ids_in(logged_in.get("/instances/?id_prefix=%20g-fan-out")) == []  # spaces kept
    newest = Instance.objects.order_by("-created_at")[:3]
    start = newest[2].created_at.strftime("%Y-%m-%dT%H:%M:%S")
    found = ids_in(logged_in.get(f"/instances/?created_after={start}"))
    assert found == [i.instance_id for i in newest]
    end = newest[0].created_at.strftime("%Y-%m-%dT%H:%M:%S")
    found = ids_in(logged_in.get(f"/instances/?created_after={start}&created_before={end}"))
    assert found == [i.instance_id for i in newest[1:]]


@pytest.mark.parametrize(
    ("given", "shown"),
    [
        ("2026-11-23", "2026-11-23T00:00"),
        ("2026-11-23T08:30:15Z", "2026-11-23T08:30:15"),
        ("2026-11-23T14:00%2B05:30", "2026-11-23T08:30"),
        ("2026-11-23T08:30:15.123456", "2026-11-23T08:30:15.123"),
        ("2026-11-23T08:30", "2026-11-23T08:30"),
        ("yesterday", "yesterday"),  # refused: shown as given, beside the reason
    ],
)
def test_a_created_time_of_a_link_is_shown_in_the_filter_as_its_input_takes_it(
    logged_in, seeded, given, shown
):
    # A datetime-local input takes none of the API's other forms: it would stay empty while the
    # list is filtered, and the next change of another filter would drop the time.
    body = logged_in.get(f"/instances/?created_after={given}").content.decode()
    assert f'name="created_after" value="{shown}"' in body


@pytest.mark.parametrize(
    ("given", "exact"),
    [
        ("2026-11-23T08:30:15.123456", "2026-11-23T08:30:15.123456"),
        ("2026-11-23T14:00:00.000001%2B05:30", "2026-11-23T08:30:00.000001"),
        ("2026-11-23", "2026-11-23T00:00"),
        ("yesterday", ""),  # refused: sent as the input has it
    ],
)
def test_a_created_time_of_a_link_is_kept_to_the_microsecond_beside_its_input(
    logged_in, seeded, given, exact
):
    # The input holds milliseconds at most: the page sends this while the input still shows
    # the link's time, or an instance created within the microseconds cut off would be dropped.
    body = logged_in.get(f"/instances/?created_before={given}").content.decode()
    assert f'data-exact="{exact}"' in body.split('name="created_before"')[1].split(">")[0]


def test_an_invalid_filter_says_what_is_wrong(logged_in, seeded):
    response = logged_in.get("/instances/?created_after=yesterday&status=NOPE")
    body = _text(response)
    assert response.status_code == 200
    assert "Created from:" in body and "Fix the filters" in body
    assert ids_in(response) == []


def test_pages_follow_each_other_by_keyset_without_offset_and_keep_the_filters(
    logged_in, seeded, monkeypatch
):
    monkeypatch.setattr(listing, "PAGE_SIZE", 4)
    seen: list[str] = []
    url = "/instances/?status=COMPLETED&sort=created"
    with CaptureQueriesContext(connection) as queries:
        while url:
            response = logged_in.get(url)
            seen += ids_in(response)
            match = re.search(r'class="next" href="([^"]*)"', _text(response))
            url = "/instances/" + match.group(1).replace("&amp;", "&") if match else ""
            assert "status=COMPLETED" in url or not url
    assert len(seen) == len(set(seen)) == 9
    created = dict(Instance.objects.values_list("instance_id", "created_at"))
    assert [created[i] for i in seen] == sorted(created[i] for i in seen)
    assert not any("OFFSET" in q["sql"].upper() for q in queries.captured_queries)


def test_a_bad_page_link_is_reported_not_a_crash(logged_in, seeded):
    response = logged_in.get("/instances/?cursor=not-a-cursor")
    assert response.status_code == 200
    assert "This page link is not valid any more." in _text(response)


def test_a_page_link_of_one_order_is_refused_in_another(logged_in, seeded, monkeypatch):
    monkeypatch.setattr(listing, "PAGE_SIZE", 4)
    first = _text(logged_in.get("/instances/?sort=created"))
    cursor = re.search(r'class="next" href="[^"]*cursor=([^"&]*)', first).group(1)
    assert ids_in(logged_in.get(f"/instances/?sort=created&cursor={cursor}"))
    response = logged_in.get(f"/instances/?sort=-updated&cursor={cursor}")
    assert "This page link is not valid any more." in _text(response)
    assert ids_in(response) == []


def test_a_page_link_whose_filters_were_edited_shows_the_first_page_of_the_new_ones(
    logged_in, seeded, monkeypatch
):
    monkeypatch.setattr(listing, "PAGE_SIZE", 4)
    first = _text(logged_in.get("/instances/?status=COMPLETED&sort=created"))
    next_url = re.search(r'class="next" href="([^"]*)"', first).group(1).replace("&amp;", "&")
    second = logged_in.get("/instances/" + next_url)
    assert "5–8 of" in _text(second)
    # The filter form sends its fields only, never the page's cursor.
    assert 'name="cursor"' not in _text(second)
    edited = logged_in.get("/instances/" + next_url.replace("COMPLETED", "FAILED"))
    failed = ids_in(logged_in.get("/instances/?status=FAILED&sort=created"))
    assert ids_in(edited) == failed
    # The first page: no link back, no position counted among the completed ones ("5–5 of 1").
    assert "not valid any more" not in _text(edited) and "5–" not in _text(edited)
    assert 'id="results-previous"' not in _text(edited)


def _cursor(*rest: object) -> str:
    """A cursor of the row 5 at a fixed time, with ``rest`` after them."""
    raw = json.dumps(["2026-01-01T00:00:00+00:00", 5, *rest]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize(
    ("query", "message"),
    [
        # base64 of ["2026-01-01T00:00:00+00:00", Infinity]: an id no row has
        ("cursor=WyIyMDI2LTAxLTAxVDAwOjAwOjAwKzAwOjAwIiwgSW5maW5pdHld", "not valid any more"),
        # base64 of ["0001-01-01T00:00:00+05:00", 5]: before the calendar's start in UTC
        ("cursor=WyIwMDAxLTAxLTAxVDAwOjAwOjAwKzA1OjAwIiwgNV0", "not valid any more"),
        # A previous page's cursor with a side or a position it can't have.
        ("cursor=" + _cursor("-created", "sideways", 4), "not valid any more"),
        ("cursor=" + _cursor("-created", "before", -1), "not valid any more"),
        ("cursor=" + _cursor("-created", "before", True), "not valid any more"),
        ("created_after=0001-01-01T00:00%2B05:00", "Created from: Out of range."),
        ("created_before=9999-12-31T23:59:59-05:00", "Created before: Out of range."),
        # Nothing to search for: not a list of everything as if all matched.
        ("q=%2A%22", "Text: has no word to search for"),
        ("q=___", "Text: has no word to search for"),
        ("q=" + "+".join(["gold"] * 33), "Text: has more than 32 words"),
    ],
)
def test_values_outside_the_calendar_are_reported_not_a_crash(logged_in, seeded, query, message):
    response = logged_in.get(f"/instances/?{query}")
    assert response.status_code == 200
    assert message in _text(response)


# One of each page of the seeded data.
PAGES = [
    "/",
    "/instances/",
    "/instances/orders/g-two-steps/",
    "/instances/orders/g-two-steps/runs/1/history/",
    "/instances/orders/g-two-steps/runs/1/history.json",
    "/instances/orders/g-two-steps/payload/input/",
]


@pytest.mark.parametrize("url", PAGES)
def test_pages_answer_get_and_head_only(logged_in, seeded, url):
    assert logged_in.get(url).status_code == 200
    assert logged_in.head(url).status_code == 200
    for method in (logged_in.post, logged_in.put, logged_in.delete):
        assert method(url).status_code == 405


def test_pages_and_the_api_forbid_inline_scripts(logged_in, seeded):
    for url in ("/instances/", "/instances/orders/g-two-steps/", "/api/engines/", "/login/"):
        policy = logged_in.get(url)["Content-Security-Policy"]
        assert "script-src 'self';" in policy and "style-src 'self';" in policy, url


def test_pages_and_the_api_answers_are_not_kept_in_the_browsers_cache(logged_in, seeded):
    """They hold payloads: not for a shared machine's cache, to read after the sign-out."""
    for url in [*PAGES, "/api/instances/", "/api/instances/orders/g-two-steps/history/"]:
        cache_control = logged_in.get(url)["Cache-Control"]
        assert "no-store" in cache_control and "private" in cache_control, url


def test_column_headers_sort_both_ways(logged_in, seeded):
    body = _text(logged_in.get("/instances/?status=RUNNING"))
    assert 'href="?status=RUNNING&amp;sort=-updated"' in body
    body = _text(logged_in.get("/instances/?status=RUNNING&sort=-updated"))
    assert 'href="?status=RUNNING&amp;sort=updated"' in body
    updated = dict(Instance.objects.values_list("instance_id", "last_updated_at"))
    found = ids_in(logged_in.get("/instances/?sort=updated"))
    assert [updated[i] for i in found] == sorted(updated.values())
    # Several statuses: one index range per status, merged.
    found = ids_in(logged_in.get("/instances/?sort=-updated&status=RUNNING&status=COMPLETED"))
    assert len(found) == 13
    assert [updated[i] for i in found] == sorted((updated[i] for i in found), reverse=True)


def _pages(client, url: str) -> list[str]:
    """The ids of every page from ``url`` on, by the next links; then the same pages are walked
    back by the previous links, each with the ids and the position it had going forward."""
    pages: list[tuple[list[str], str]] = []
    while url:
        response = client.get(url)
        assert response.status_code == 200
        pages.append((ids_in(response), _position(response)))
        url = _link(response, "next")
    url = _link(response, "previous")
    for ids, position in reversed(pages[:-1]):
        response = client.get(url)
        assert (ids_in(response), _position(response)) == (ids, position), url
        url = _link(response, "previous")
    assert url == "", "a previous page before the first"
    return [i for ids, _ in pages for i in ids]


def _link(response, kind: str) -> str:
    """The url of the pager's ``kind`` link ("next", "previous"); "" when there is none."""
    match = re.search(rf'class="{kind}" href="([^"]*)"', _text(response))
    return "/instances/" + match.group(1).replace("&amp;", "&") if match else ""


def _position(response) -> str:
    """The pager's "5–8 of 36"; "" when not shown."""
    match = re.search(r'<span class="position"[^>]*>([^<]*)</span>', _text(response))
    return match.group(1) if match else ""


def test_name_and_engine_filters_page_in_either_order_from_merged_ranges(
    logged_in, db, monkeypatch
):
    monkeypatch.setattr(listing, "PAGE_SIZE", 4)
    orders = Engine.objects.create(name="orders", address="127.0.0.1:1")
    billing = Engine.objects.create(name="billing", address="127.0.0.1:2")
    start = timezone.now() - timedelta(hours=1)
    for n in range(36):
        Instance.objects.create(
            engine=(orders, billing)[n % 2],
            instance_id=f"i-{n:02d}",
            name=("charge", "ship", "refund")[n % 3],
            status=("RUNNING", "COMPLETED", "FAILED", "SUSPENDED")[n % 4],
            created_at=start + timedelta(seconds=n),
            # Ties in the update time: the cursor must break them by id across pages.
            last_updated_at=start + timedelta(minutes=(n * 7) % 5),
        )
    rows = list(Instance.objects.values("instance_id", "pk", "name", "status", "engine_id"))
    counted = Counter((r["engine_id"], r["name"], r["status"]) for r in rows)  # as the indexer
    StatusCount.objects.bulk_create(
        StatusCount(engine_id=e, name=n, status=s, count=c) for (e, n, s), c in counted.items()
    )
    stamps = dict(Instance.objects.values_list("pk", "created_at"))
    updated = dict(Instance.objects.values_list("pk", "last_updated_at"))
    filters = {
        "name=charge": lambda r: r["name"] == "charge",
        "name=ship&status=RUNNING&status=FAILED": (
            lambda r: r["name"] == "ship" and r["status"] in ("RUNNING", "FAILED")
        ),
        "engine=orders&engine=billing": lambda r: True,
        "status=RUNNING&status=COMPLETED": lambda r: r["status"] in ("RUNNING", "COMPLETED"),
        # Few matches: by update time fetched and sorted (``Filters.created_range_by_update``).
        f"created_after={_utc(start, 10)}&created_before={_utc(start, 30)}": (
            lambda r: (
                start + timedelta(seconds=10) <= stamps[r["pk"]] < start + timedelta(seconds=30)
            )
        ),
    }
    for query, keep in filters.items():
        for sort, column in (("created", stamps), ("updated", updated)):
            for desc in (False, True):
                expected = sorted(
                    (r for r in rows if keep(r)),
                    key=lambda r: (column[r["pk"]], r["pk"]),
                    reverse=desc,
                )
                url = f"/instances/?{query}&sort={'-' if desc else ''}{sort}"
                found = _pages(logged_in, url)
                assert found == [r["instance_id"] for r in expected], url
                assert _position(logged_in.get(url)) == f"1–4 of {len(expected)}", url


def _numbered(count: int, engine: Engine | None = None) -> list[str]:
    """``count`` completed instances created a second apart (and counted, as by the indexer);
    their ids, newest first."""
    engine = engine or Engine.objects.create(name="orders", address="127.0.0.1:1")
    start = timezone.now() - timedelta(hours=1)
    Instance.objects.bulk_create(
        Instance(
            engine=engine,
            instance_id=f"n-{n:03d}",
            name="charge",
            status="COMPLETED",
            created_at=start + timedelta(seconds=n),
            last_updated_at=start + timedelta(seconds=n),
        )
        for n in range(count)
    )
    StatusCount.objects.create(engine=engine, name="charge", status="COMPLETED", count=count)
    return [f"n-{n:03d}" for n in reversed(range(count))]


def test_a_previous_page_reads_back_from_its_first_row_and_says_where_it_is(
    logged_in, db, monkeypatch
):
    monkeypatch.setattr(listing, "PAGE_SIZE", 4)
    ids = _numbered(10)
    first = logged_in.get("/instances/")
    assert _position(first) == "1–4 of 10" and _link(first, "previous") == ""
    second = logged_in.get(_link(first, "next"))
    third = logged_in.get(_link(second, "next"))
    assert (ids_in(third), _position(third)) == (ids[8:], "9–10 of 10")
    assert _link(third, "next") == ""
    back = logged_in.get(_link(third, "previous"))
    assert (ids_in(back), _position(back)) == (ids[4:8], "5–8 of 10")
    assert 'id="results-first"' in _text(back)
    # Two instances started since: the page before is the four before its first row, with
    # more before them, and where it falls in the list is no longer known.
    for n in (100, 101):
        Instance.objects.create(
            engine=Engine.objects.get(),
            instance_id=f"n-{n}",
            name="charge",
            status="COMPLETED",
            created_at=timezone.now() + timedelta(seconds=n),
            last_updated_at=timezone.now(),
        )
    earlier = logged_in.get(_link(back, "previous"))
    assert (ids_in(earlier), _position(earlier)) == (ids[:4], "")
    assert ids_in(logged_in.get(_link(earlier, "next"))) == ids[4:8]
    start = logged_in.get(_link(earlier, "previous"))
    assert ids_in(start) == ["n-101", "n-100", *ids[:2]] and _position(start).startswith("1–4")
    assert _link(start, "previous") == ""


def test_a_previous_page_back_at_the_start_with_rows_gone_is_the_first_page_whole(
    logged_in, db, monkeypatch
):
    monkeypatch.setattr(listing, "PAGE_SIZE", 4)
    ids = _numbered(10)
    second = logged_in.get(_link(logged_in.get("/instances/"), "next"))
    Instance.objects.filter(instance_id=ids[0]).delete()
    back = logged_in.get(_link(second, "previous"))
    assert (ids_in(back), _position(back)) == (ids[1:5], "1–4 of 10")
    assert _link(back, "previous") == "" and 'id="results-first"' not in _text(back)


@pytest.mark.parametrize("query", ["", "status=COMPLETED&"])
def test_a_page_whose_instances_are_all_gone_says_so_and_links_the_first_page(
    logged_in, db, monkeypatch, query
):
    # Its rows purged since (the page reloaded, or reached by Back or a Next link shown
    # before): "no instance indexed yet" or "none matches" would contradict the counts above.
    monkeypatch.setattr(listing, "PAGE_SIZE", 4)
    ids = _numbered(10)
    second = logged_in.get(_link(logged_in.get(f"/instances/?{query}"), "next"))
    last_url = _link(second, "next")
    Instance.objects.filter(instance_id__in=ids[8:]).update(purged=True)
    body = _text(gone := logged_in.get(last_url))
    assert ids_in(gone) == []
    assert "No instance is on this page any more" in body, body
    assert "has been indexed yet" not in body and "No instance matches" not in body
    first = re.search(r'<a id="results-first" href="([^"]*)"', body).group(1)
    assert ids_in(logged_in.get("/instances/" + first.replace("&amp;", "&"))) == ids[:4]


@pytest.mark.parametrize("sort", ["-created", "created", "-updated", "updated"])
def test_a_previous_page_is_an_index_range_read_backward_without_offset(
    logged_in, db, monkeypatch, sort
):
    monkeypatch.setattr(listing, "PAGE_SIZE", 4)
    _numbered(10)
    second = logged_in.get(_link(logged_in.get(f"/instances/?sort={sort}"), "next"))
    url = _link(second, "previous")
    page = _page_query(logged_in, url)
    assert "OFFSET" not in page.upper() and "LIMIT 5" in page.upper(), page
    if connection.vendor == "sqlite":
        (plan,) = _page_query_plans(logged_in, url)
        assert "TEMP B-TREE" not in plan and "USING INDEX" in plan, plan


def _utc(start, seconds: int) -> str:
    """``start`` moved by ``seconds``, as the list's created filters take it (UTC, no offset)."""
    return (start + timedelta(seconds=seconds)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")


def test_a_created_range_sorted_by_update_fetches_its_few_matches_and_sorts_them(logged_in, seeded):
    # Walking the update index read every row outside the range that came first in that order
    # (a recent range oldest-update first, an old one newest first): 0.3 s on a million.
    far = "2000-01-01T00:00"
    later = (timezone.now() + timedelta(days=1)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M")
    for url in (
        f"/instances/?created_after={far}&sort=updated",
        f"/instances/?created_before={later}&sort=-updated",
        f"/api/instances/?created_after={far}&created_before={later}&ordering=-updated",
    ):
        page = _page_query(logged_in, url)
        order = page.rsplit("ORDER BY", 1)[1]
        # An order by update time that no index serves: the rows come from the created range.
        assert not order.lstrip().startswith('"workflows_ui_instance"."last_updated_at"'), page
        if connection.vendor == "sqlite":
            with connection.cursor() as cur:
                cur.execute("EXPLAIN QUERY PLAN " + page)
                plan = " / ".join(str(row[-1]) for row in cur.fetchall())
            assert "wf_inst_created" in plan and "TEMP B-TREE" in plan, (url, plan)
    # Bounded on the side the walk starts from only, the walk meets the matches first.
    page = _page_query(logged_in, f"/api/instances/?created_after={far}&ordering=-updated")
    assert page.rsplit("ORDER BY", 1)[1].lstrip().startswith('"workflows_ui_instance"."last'), page


def _page_query(client, url: str) -> str:
    """The SQL of the one page query ``url`` runs (not the capped count, ordered on
    PostgreSQL)."""
    with CaptureQueriesContext(connection) as queries:
        assert client.get(url).status_code == 200
    (page,) = [
        q["sql"]
        for q in queries.captured_queries
        if 'FROM "workflows_ui_instance"' in q["sql"]
        and "ORDER BY" in q["sql"]
        and "COUNT(*)" not in q["sql"]
    ]
    return page


def test_a_capped_count_of_a_created_range_reads_it_in_creation_order(logged_in, seeded):
    if connection.vendor != "postgresql":
        pytest.skip("SQLite takes the created index for the range by itself")
    # Unordered, PostgreSQL counted up to the cap by a sequential scan, which passes every row
    # stored before the range (or after it, from where the last scan stopped): 0.1 s on a
    # million instances.
    with CaptureQueriesContext(connection) as queries:
        assert logged_in.get("/instances/?created_after=2000-01-01T00:00").status_code == 200
    (count,) = [q["sql"] for q in queries.captured_queries if "COUNT(*) FROM (" in q["sql"]]
    assert 'ORDER BY "workflows_ui_instance"."created_at"' in count, count


@pytest.mark.parametrize(
    ("urls", "planned"),
    [
        # What a fresh console database does (no ANALYZE has run): every page query walks an
        # index in the order asked for instead of sorting the matching rows.
        (
            [
                "/instances/?name=wait_forever&sort=-updated",
                "/instances/?name=wait_forever&status=TERMINATED&status=COMPLETED&sort=updated",
                "/instances/?engine=orders&sort=-updated",
                "/instances/?engine=orders&engine=billing&sort=-updated",
                "/instances/?name=wait_forever",
            ],
            lambda plan: "TEMP B-TREE" not in plan,
        ),
        # Engines and a name: SQLite took the (engine, last update) index for the order and
        # tested each row's name and status, a status rare under the name reading most of the
        # engine's rows; each per-status query reads the name's range.
        (
            [
                "/instances/?engine=orders&name=wait_forever&sort=-updated",
                "/instances/?engine=orders&engine=billing&name=wait_forever&sort=updated",
                "/instances/?engine=orders&name=wait_forever&status=COMPLETED&status=FAILED"
                "&sort=updated",
            ],
            lambda plan: "wf_inst_name_status_updated (name=? AND status=?)" in plan,
        ),
    ],
    ids=["index order", "names range"],
)
def test_a_name_or_engine_sorted_by_update_reads_an_index_range(logged_in, seeded, urls, planned):
    if connection.vendor != "sqlite":
        pytest.skip("SQLite's query plans (PostgreSQL plans with the statistics it keeps)")
    Engine.objects.create(name="billing", address="127.0.0.1:2")
    for url in urls:
        plans = _page_query_plans(logged_in, url)
        assert plans, url
        for plan in plans:
            assert planned(plan), (url, plan)


def _page_query_plans(client, url: str) -> list[str]:
    """SQLite's plans of the page queries (those of the instances, ordered) ``url`` runs."""
    with CaptureQueriesContext(connection) as queries:
        assert client.get(url).status_code == 200
    pages = [
        q["sql"]
        for q in queries.captured_queries
        if 'FROM "workflows_ui_instance"' in q["sql"] and "ORDER BY" in q["sql"]
    ]
    plans = []
    with connection.cursor() as cur:
        for sql in pages:
            cur.execute("EXPLAIN QUERY PLAN " + sql)
            plans.append(" / ".join(str(row[-1]) for row in cur.fetchall()))
    return plans


def test_the_engines_page_follows_the_listing_of_an_engines_ids(logged_in, seeded):
    def listing_cell() -> str:
        (cell,) = re.findall(r'<td class="listing">(.*?)</td>', _text(logged_in.get("/")))
        return cell

    assert listing_cell() == "not yet"
    Engine.objects.update(sweep_started_at=timezone.now(), sweep_listed=24000)
    assert listing_cell() == "first listing in progress: 24000 ids so far"
    (engine,) = logged_in.get("/api/engines/").json()
    assert engine["sweep_listed"] == 24000 and engine["last_sweep_at"] is None
    Engine.objects.update(last_sweep_at=timezone.now(), last_sweep_listed=31000, sweep_listed=5)
    assert "31000 ids at " in listing_cell()  # the next listings go on behind it
    Engine.objects.update(supports_list=False)
    assert listing_cell() == "not supported"


def test_the_engines_page_counts_instances_per_status_with_links_and_shows_the_app_id(
    logged_in, seeded
):
    Engine.objects.filter(name="orders").update(app_id="shop-app")
    body = _text(logged_in.get("/"))
    (cell,) = re.findall(r'<td class="status-counts">(.*?)</td>', body)
    counts = {
        row["status"]: row["n"]
        for row in StatusCount.objects.filter(count__gt=0).values("status").annotate(n=Sum("count"))
    }
    links = re.findall(r'href="/instances/\?engine=orders&amp;status=(\w+)">[^<]* (\d+)</a>', cell)
    assert {status: int(n) for status, n in links} == counts and len(counts) > 2
    assert cell.startswith(str(sum(counts.values())))
    assert '<td class="mono">shop-app</td>' in body


def test_the_engines_page_says_how_far_behind_the_indexer_is(logged_in, seeded):
    def behind():
        (cell,) = re.findall(r'<td class="behind( error)?">([^<]*)</td>', _text(logged_in.get("/")))
        (engine,) = logged_in.get("/api/engines/").json()
        return cell[1], (cell[0], engine["refresh_lag_seconds"])

    assert behind() == ("—", ("", None))  # nothing read yet, nothing due
    now = timezone.now()
    for n, inst in enumerate(Instance.objects.all()):
        InstanceCheck.objects.create(
            instance=inst, engine=inst.engine, due_at=now + timedelta(seconds=30 + n)
        )
    assert behind() == ("—", ("", 0.0))  # no re-read overdue
    # An indexer that stopped ten minutes ago (or can't keep up) leaves reads overdue.
    InstanceCheck.objects.filter(pk=InstanceCheck.objects.first().pk).update(
        due_at=now - timedelta(minutes=10)
    )
    shown, (warned, lag) = behind()
    assert shown.startswith("10 min") and warned == " error" and 600 <= lag < 660
    assert shown.endswith("(far behind)")  # said in words too, not by the red alone
    # What the columns mean, for a keyboard or a touch screen too (not in hover titles only).
    assert "About these columns</summary>" in _text(logged_in.get("/"))
    # Taken out of CONSOLE_ENGINES: no longer indexed, so not behind either.
    Engine.objects.update(configured=False)
    assert behind() == ("—", ("", None))


def test_the_unreadable_filter_starts_from_the_few_unreadable_checks(logged_in, seeded):
    if connection.vendor != "sqlite":
        pytest.skip("SQLite's query plans (PostgreSQL plans with the statistics it keeps)")
    # With no statistics SQLite takes an equality on engine, status or name, or the time index
    # for the order, for the rarer set, and tests each row's check: 0.2-0.5 s on 300,000.
    _checks_with_one_unreadable("g-fails")
    for url in (
        "/instances/?unreadable=1",
        "/instances/?unreadable=1&engine=orders&status=FAILED&name=fails",
        "/instances/?unreadable=1&id_prefix=g-&sort=-updated",
    ):
        with CaptureQueriesContext(connection) as queries:
            body = _text(logged_in.get(url))
        assert "/instances/orders/g-fails/" in body, url
        assert "/instances/orders/g-two-steps/" not in body, url
        reads = [
            q["sql"]
            for q in queries.captured_queries
            if 'FROM "workflows_ui_instance"' in q["sql"] and "instancecheck" in q["sql"]
        ]
        assert len(reads) == 2, url  # the counts and the page
        with connection.cursor() as cur:
            for sql in reads:
                cur.execute("EXPLAIN QUERY PLAN " + sql)
                plan = [str(row[-1]) for row in cur.fetchall()]
                first = next(p for p in plan if p.startswith(("SCAN", "SEARCH")))
                assert "wf_check_unreadable" in first, (url, plan)


def test_the_unreadable_filters_next_pages_start_from_the_few_unreadable_checks(logged_in, seeded):
    if connection.vendor != "sqlite":
        pytest.skip("SQLite's query plans (PostgreSQL plans with the statistics it keeps)")
    # A next page's cursor is a range on the time column: SQLite took that column's index and
    # tested each row's check from the cursor on (45 ms for 200,000 instances).
    _checks_with_one_unreadable("g-fails")
    later = timezone.now() + timedelta(days=1)
    for sort in ("-created", "created", "-updated", "updated"):
        start = later if sort.startswith("-") else later - timedelta(days=3650)
        digest = listing.Filters(unreadable=True, sort=sort).digest()
        cursor = listing.encode_cursor(start, 1, sort, digest)
        url = f"/instances/?unreadable=1&sort={sort}&cursor={cursor}"
        with CaptureQueriesContext(connection) as queries:
            body = _text(logged_in.get(url))
        assert "/instances/orders/g-fails/" in body, url
        (page,) = [
            q["sql"]
            for q in queries.captured_queries
            if 'FROM "workflows_ui_instance"' in q["sql"] and "ORDER BY" in q["sql"]
        ]
        with connection.cursor() as cur:
            cur.execute("EXPLAIN QUERY PLAN " + page)
            plan = [str(row[-1]) for row in cur.fetchall()]
        first = next(p for p in plan if p.startswith(("SCAN", "SEARCH")))
        assert "wf_check_unreadable" in first, (url, plan)


def _checks_with_one_unreadable(instance_id: str) -> None:
    """A check for every instance, the one of ``instance_id`` failing its reads."""
    for inst in Instance.objects.all():
        failing = inst.instance_id == instance_id
        InstanceCheck.objects.create(
            instance=inst,
            engine=inst.engine,
            due_at=timezone.now(),
            read_error="GetInstanceHistory: x" if failing else "",
            read_failing_since=timezone.now() if failing else None,
        )


def test_counts_beyond_the_cap_are_shown_as_at_least(logged_in, seeded, monkeypatch):
    monkeypatch.setattr(listing, "COUNT_CAP", 5)
    # A text filter: the counts table can't answer, so rows are counted up to the cap.
    body = _text(logged_in.get("/instances/?id_prefix=g-"))
    assert "5+ instances" in body
    body = _text(logged_in.get("/instances/?id_prefix=g-fan-out"))
    assert "3 instances" in body


def test_the_list_says_when_nothing_is_indexed_and_when_nothing_matches(logged_in, db):
    assert "No workflow instance has been indexed yet" in _text(logged_in.get("/instances/"))
    # The form sent whole, with nothing chosen, is no filter.
    empty_form = "/instances/?name=&id_prefix=&q=&purged=exclude&sort=-created"
    assert "No workflow instance has been indexed yet" in _text(logged_in.get(empty_form))
    body = _text(logged_in.get("/instances/?status=FAILED"))
    assert "No instance matches these filters" in body


def test_an_unreachable_engine_is_announced_while_its_data_is_still_listed(logged_in, seeded):
    Engine.objects.filter(pk=seeded.engine.pk).update(
        reachable=False, last_error="connection refused", last_pass_at=timezone.now()
    )
    response = logged_in.get("/instances/")
    body = _text(response)
    assert 'role="alert"' in body and "is unreachable: <bdi>connection refused</bdi>" in body
    assert len(ids_in(response)) == len(seeded.instances)
    detail = _text(logged_in.get("/instances/orders/g-two-steps/"))
    assert "is unreachable" in detail


def test_the_list_warns_of_the_engines_it_shows_and_of_many_in_one_line(logged_in, seeded):
    for name in ["billing", "ledger", "audit", "hangs"]:
        Engine.objects.create(
            name=name, address=f"{name}:50001", reachable=False, last_error=f"{name} is down"
        )
    # Filtered to a healthy engine: the others being down says nothing about its instances.
    shown = logged_in.get("/instances/?engine=orders")
    assert 'role="alert"' not in _text(shown)
    assert len(ids_in(shown)) == len(seeded.instances)
    one = _text(logged_in.get("/instances/?engine=orders&engine=ledger"))
    assert one.count('role="alert"') == 1 and "<bdi>ledger is down</bdi>" in one
    # Four at once: one line naming them, not four paragraphs above the list.
    body = _text(logged_in.get("/instances/"))
    assert body.count('role="alert"') == 1
    assert "4 engines are not indexed up to date: <strong>audit</strong> (unreachable), " in body
    assert "is down" not in body and 'the <a href="/">engines page</a> says why' in body


def test_the_lists_warnings_follow_an_engine_filter_changed_in_place(logged_in, seeded):
    Engine.objects.create(name="billing", address="billing:50001", reachable=True)
    Engine.objects.filter(pk=seeded.engine.pk).update(reachable=False, last_error="orders is down")
    first = _text(logged_in.get("/instances/?engine=billing"))
    assert re.search(r'<div id="engine-warnings">\s*</div>', first)
    # Ticking "orders" swaps the results alone: the warnings outside them come beside them.
    swap = _text(
        logged_in.get("/instances/?engine=orders", HTTP_HX_REQUEST="true", HTTP_HX_TARGET="results")
    )
    oob = re.search(r'<div id="engine-warnings" hx-swap-oob="true">(.*?)</div>', swap, re.S)
    assert oob is not None and "<bdi>orders is down</bdi>" in oob.group(1)
    # And back to billing alone: the warning goes.
    back = _text(
        logged_in.get(
            "/instances/?engine=billing", HTTP_HX_REQUEST="true", HTTP_HX_TARGET="results"
        )
    )
    assert re.search(r'<div id="engine-warnings" hx-swap-oob="true">\s*</div>', back)


def test_an_engine_taken_out_of_the_settings_is_shown_as_not_indexed_without_alerts(
    logged_in, seeded, settings
):
    # Its last health (ok, or unreachable) went on looking current, with banners on every page.
    Engine.objects.filter(pk=seeded.engine.pk).update(
        configured=False, reachable=False, last_error="connection refused"
    )
    settings.CONSOLE_ENGINES = []
    home = _text(logged_in.get("/"))
    assert "health-not-indexed" in home and ">not-indexed<" in home
    listed = logged_in.get("/instances/")
    assert 'role="alert"' not in _text(listed)
    assert len(ids_in(listed)) == len(seeded.instances)  # what was indexed stays readable


def test_the_engines_page_names_the_configured_engines_no_indexer_has_seen(logged_in, settings):
    from engine_bridge.config import EngineConfig

    settings.CONSOLE_ENGINES = [EngineConfig("orders", "127.0.0.1:50001")]
    body = _text(logged_in.get("/"))
    assert "names <strong>orders</strong>, and no indexer has started" in body


def test_an_engine_failing_its_passes_is_announced_until_one_succeeds(logged_in, seeded):
    passed = timezone.now() - timedelta(minutes=5)
    Engine.objects.filter(pk=seeded.engine.pk).update(
        reachable=True,
        last_pass_at=passed,
        last_error="Hello: api token mismatch (UNAUTHENTICATED)",
        last_error_at=passed + timedelta(minutes=1),
    )
    body = _text(logged_in.get("/instances/"))
    assert (
        "answers, but its last pass failed: <bdi>Hello: api token mismatch (UNAUTHENTICATED)</bdi>"
        in body
    )
    engines = _text(logged_in.get("/"))
    assert "health-failing" in engines
    # The error's time is said, and once passes succeed again, that it is over.
    at = (passed + timedelta(minutes=1)).strftime("%Y-%m-%d %H:%M:%S")
    cell = re.search(r'<td class="last-error">(.*?)</td>', engines).group(1)
    assert 'UNAUTHENTICATED)</bdi> <span class="muted">at <time' in cell and at in cell
    assert "passes succeed since" not in cell
    Engine.objects.filter(pk=seeded.engine.pk).update(last_pass_at=timezone.now())
    assert 'role="alert"' not in _text(logged_in.get("/instances/"))
    engines = _text(logged_in.get("/"))
    assert "health-ok" in engines
    cell = re.search(r'<td class="last-error">(.*?)</td>', engines).group(1)
    assert cell.startswith('<span class="muted">') and "passes succeed since" in cell


def test_an_engine_down_or_failing_says_since_when_on_the_engines_page_and_in_the_banner(
    logged_in, seeded
):
    since = timezone.now() - timedelta(hours=3, minutes=5)
    at = since.strftime("%Y-%m-%d %H:%M:%S")
    Engine.objects.filter(pk=seeded.engine.pk).update(
        reachable=False,
        last_error="connection refused",
        last_error_at=timezone.now(),
        failing_since=since,
    )
    home = _text(logged_in.get("/"))
    health = re.search(
        r'<span class="health health-unreachable">unreachable</span>(.*?)</td>', home
    )
    assert health is not None and health.group(1).startswith(
        ' <span class="down-since">since <time'
    )
    assert at in health.group(1) and "(3 h 5 min)" in health.group(1)
    banner = f"is unreachable since {at} UTC (3 h 5 min): <bdi>connection refused</bdi>."
    assert banner in _text(logged_in.get("/instances/"))
    assert banner in _text(logged_in.get("/instances/orders/g-two-steps/"))
    # Answering again, but its passes still fail: the same failure, since the same time.
    Engine.objects.filter(pk=seeded.engine.pk).update(reachable=True)
    body = _text(logged_in.get("/instances/"))
    assert f"answers, but its passes have failed since {at} UTC (3 h 5 min): <bdi>" in body
    assert "(3 h 5 min)" in _text(logged_in.get("/"))


def test_an_engine_no_indexer_has_tried_for_minutes_says_so_instead_of_ok(logged_in, seeded):
    # The indexer was stopped 20 minutes ago; its last pass had gone well.
    last = timezone.now() - timedelta(minutes=20)
    Engine.objects.filter(pk=seeded.engine.pk).update(
        reachable=True, last_pass_at=last, created_at=last - timedelta(days=1)
    )
    at = last.strftime("%Y-%m-%d %H:%M:%S")
    home = _text(logged_in.get("/"))
    assert "health-ok" not in home
    health = re.search(r'<span class="health health-stale"[^>]*>stale</span>(.*?)</td>', home)
    assert health is not None and at in health.group(1) and "(20 min" in health.group(1)
    banner = f"is not being indexed: no <code>runindexer</code> has been seen since {at} UTC"
    assert banner in _text(logged_in.get("/instances/"))
    assert banner in _text(logged_in.get("/instances/orders/g-two-steps/"))
    # A pass again: ok, and no banner.
    Engine.objects.filter(pk=seeded.engine.pk).update(last_pass_at=timezone.now())
    assert 'role="alert"' not in _text(logged_in.get("/instances/"))
    assert "health-ok" in _text(logged_in.get("/"))


def test_an_engine_whose_runindexer_was_killed_says_when_one_was_last_seen(logged_in, seeded):
    # Its heartbeat stopped 3 minutes ago, two seconds after its last pass went well.
    seen = timezone.now() - timedelta(minutes=3)
    Engine.objects.filter(pk=seeded.engine.pk).update(
        reachable=True,
        last_pass_at=seen - timedelta(seconds=2),
        indexer_seen_at=seen,
        created_at=seen - timedelta(days=1),
    )
    at = seen.strftime("%Y-%m-%d %H:%M:%S")
    banner = f"no <code>runindexer</code> has been seen since {at} UTC (3 min"
    assert banner in _text(logged_in.get("/instances/"))
    assert "health-stale" in _text(logged_in.get("/"))


def test_a_stale_engine_says_how_long_without_a_runindexer_made_it_so(logged_in, seeded, settings):
    # The engines page said "for a minute" whatever the limit: 5 minutes for an engine indexed
    # by runindexer --once (no heartbeat), CONSOLE_INDEXER_STALE_AFTER for the others.
    def stale_title() -> str:
        found = re.search(r'class="health health-stale" title="([^"]*)"', _text(logged_in.get("/")))
        assert found is not None
        return found.group(1)

    last = timezone.now() - timedelta(minutes=20)
    Engine.objects.filter(pk=seeded.engine.pk).update(
        reachable=True, last_pass_at=last, created_at=last - timedelta(days=1)
    )
    assert "no runindexer has been seen at work on it for 5 min 0 s:" in stale_title()
    settings.CONSOLE_INDEXER_STALE_AFTER = 120.0
    Engine.objects.filter(pk=seeded.engine.pk).update(indexer_seen_at=last)
    assert "no runindexer has been seen at work on it for 2 min 0 s:" in stale_title()
    # And the page's notes on the columns, which said "a minute" too.
    notes = "stale: configured, but no runindexer has been seen at work on it for 2 min 0 s (its"
    assert notes in _text(logged_in.get("/"))


def test_an_engine_taken_out_of_the_settings_does_not_say_since_when_it_fails(
    logged_in, seeded, settings
):
    Engine.objects.filter(pk=seeded.engine.pk).update(
        configured=False,
        reachable=False,
        last_error="connection refused",
        failing_since=timezone.now() - timedelta(hours=1),
    )
    settings.CONSOLE_ENGINES = []
    home = _text(logged_in.get("/"))
    assert ">not-indexed<" in home and "down-since" not in home and "1 h 0 min" not in home


def test_an_engines_error_and_an_instance_read_error_show_control_characters_written_out(
    logged_in, seeded
):
    # An engine's text may carry terminal colours, or a mark that reverses what follows it.
    Engine.objects.filter(pk=seeded.engine.pk).update(
        reachable=False, last_error="refused \x1b[31mred\u202etxt.exe", last_error_at=timezone.now()
    )
    InstanceCheck.objects.create(
        instance=Instance.objects.get(instance_id="g-fails"),
        engine=seeded.engine,
        due_at=timezone.now(),
        read_error="GetInstance: bad\x07bell\u2066",
        read_failing_since=timezone.now(),
    )
    written_out = "<bdi>refused \\u001b[31mred\\u202etxt.exe</bdi>"
    for url in ["/", "/instances/", "/instances/orders/g-two-steps/"]:
        body = _text(logged_in.get(url))
        assert written_out in body, url
        assert "\x1b" not in body and "\u202e" not in body, url
    detail = _text(logged_in.get("/instances/orders/g-fails/"))
    assert "<bdi>GetInstance: bad\\u0007bell\\u2066</bdi>" in detail
    assert "\x07" not in detail and "\u2066" not in detail


def test_an_instance_the_indexer_cant_read_is_named_on_its_page_the_engines_and_the_api(
    logged_in, seeded
):
    inst = Instance.objects.get(instance_id="g-fails")
    since = timezone.now() - timedelta(minutes=3)
    InstanceCheck.objects.create(
        instance=inst,
        engine=seeded.engine,
        due_at=timezone.now() + timedelta(minutes=2),
        interval=120.0,
        read_error="GetInstanceHistory: <b>Deadline</b> Exceeded (DEADLINE_EXCEEDED)",
        read_failing_since=since,
    )
    InstanceCheck.objects.create(
        instance=Instance.objects.get(instance_id="g-two-steps"),
        engine=seeded.engine,
        due_at=timezone.now(),
    )
    body = _text(logged_in.get("/instances/orders/g-fails/"))
    assert 'id="read-problem"' in body
    assert "read this instance's history from engine <strong>orders</strong> since" in body
    assert "its runs and history as of their last successful read" in body
    assert "GetInstanceHistory: &lt;b&gt;Deadline&lt;/b&gt; Exceeded" in body  # escaped
    assert 'id="read-problem"' not in _text(logged_in.get("/instances/orders/g-two-steps/"))
    home = _text(logged_in.get("/"))
    link = re.search(
        r'<td class="error" title="instances the indexer[^"]*"><a href="([^"]*)">1</a>', home
    )
    assert link is not None  # to the list of them
    listed = _text(logged_in.get(link.group(1).replace("&amp;", "&")))
    assert "/instances/orders/g-fails/" in listed and "/instances/orders/g-two-steps/" not in listed
    assert 'name="unreadable" value="1" checked' in listed
    api = logged_in.get("/api/instances/?unreadable=true").json()
    assert [i["instance_id"] for i in api["results"]] == ["g-fails"]
    assert len(logged_in.get("/api/instances/?unreadable=false").json()["results"]) > 1
    detail = logged_in.get("/api/instances/orders/g-fails/").json()
    assert detail["read_problem"]["error"].startswith("GetInstanceHistory: <b>Deadline</b>")
    assert detail["read_problem"]["since"].startswith(since.strftime("%Y-%m-%dT%H:%M:%S"))
    assert detail["read_problem"]["history_only"] is True
    inst.runs.all().delete()  # as when its history failed from the first read on
    body = _text(logged_in.get("/instances/orders/g-fails/"))
    assert "no history has been read yet" in body and 'id="history"' not in body
    assert logged_in.get("/api/instances/orders/g-two-steps/").json()["read_problem"] is None
    (engine,) = logged_in.get("/api/engines/").json()
    assert engine["unreadable_instances"] == 1
    # Its state could not be read either: the whole page is as of the last read.
    InstanceCheck.objects.filter(instance=inst).update(read_error="GetInstance: too big")
    body = _text(logged_in.get("/instances/orders/g-fails/"))
    assert "read this instance from engine <strong>orders</strong> since" in body
    assert "What this page shows comes from the reads of it that succeeded" in body
    detail = logged_in.get("/api/instances/orders/g-fails/").json()
    assert detail["read_problem"]["history_only"] is False


def test_an_engine_too_old_to_be_indexed_is_announced(logged_in, seeded):
    Engine.objects.filter(pk=seeded.engine.pk).update(supports_list=False)
    body = _text(logged_in.get("/instances/"))
    assert "is too old to be indexed" in body


def test_htmx_gets_the_results_alone(logged_in, seeded):
    response = logged_in.get(
        "/instances/?status=FAILED", headers={"HX-Request": "true", "HX-Target": "results"}
    )
    body = _text(response)
    assert "<html" not in body and ids_in(response) == ["g-fails"]


def test_the_list_takes_statuses_and_engines_as_the_api_does(logged_in, seeded):
    # Any case, comma-separated or repeated, empty values ignored.
    expected = ids_in(logged_in.get("/instances/?status=FAILED&status=RUNNING"))
    assert "g-fails" in expected and len(expected) > 1
    for query in ("status=failed,Running", "status=FAILED,&status=running&status=&engine="):
        response = logged_in.get(f"/instances/?{query}")
        assert ids_in(response) == expected, query
    assert ids_in(logged_in.get("/instances/?engine=orders,orders&status=FAILED")) == ["g-fails"]
    body = _text(logged_in.get("/instances/?status=failed,Running"))
    checked = re.findall(r'name="status" value="(\w+)" checked', body)
    assert sorted(checked) == ["FAILED", "RUNNING"]


def test_htmx_results_carry_the_reasons_a_filter_is_refused(logged_in, seeded):
    # The form is not re-rendered by htmx: the reasons must come with the results.
    response = logged_in.get(
        "/instances/?status=BOGUS&created_after=2026-01-02T00:00&created_before=2026-01-01T00:00",
        headers={"HX-Request": "true", "HX-Target": "results"},
    )
    body = _text(response)
    assert "<html" not in body and ids_in(response) == []
    assert "Status: Select a valid choice. BOGUS is not one of the available choices." in body
    assert "Created before: Must be later than “Created from”." in body


def test_htmx_results_offer_to_clear_the_filters_they_were_asked_with(logged_in, seeded):
    # The form is not re-rendered by htmx: a link shown by the form would stay as the page was
    # first rendered (none after the first filter chosen, one left after the last taken off).
    htmx = {"HX-Request": "true", "HX-Target": "results"}
    clear = re.compile(r'<a [^>]*href="/instances/"[^>]*>Clear filters</a>')
    assert ids_in(filtered := logged_in.get("/instances/?status=FAILED", headers=htmx))
    assert clear.search(_text(filtered))
    assert not clear.search(_text(logged_in.get("/instances/?sort=created", headers=htmx)))
    refused = logged_in.get("/instances/?status=BOGUS", headers=htmx)
    assert clear.search(_text(refused))
    # The whole page shows it once.
    assert len(clear.findall(_text(logged_in.get("/instances/?status=FAILED")))) == 1


def chip_links(response) -> dict[str, str]:
    found = re.findall(
        r'<a class="chip[^"]*" data-status="(\w+)"[^>]*href="([^"]*)"', _text(response)
    )
    return {status: href.replace("&amp;", "&") for status, href in found}


def test_a_status_chip_shows_that_status_only_and_a_chosen_one_takes_it_off(logged_in, seeded):
    chips = chip_links(logged_in.get("/instances/?sort=created"))
    assert chips["FAILED"] == "?sort=created&status=FAILED"

    chips = chip_links(logged_in.get("/instances/?status=failed,running&sort=created"))
    assert chips["FAILED"] == "?sort=created&status=RUNNING"  # chosen: taken off
    assert chips["RUNNING"] == "?sort=created&status=FAILED"
    assert chips["COMPLETED"] == "?sort=created&status=COMPLETED"  # not chosen: it alone

    chips = chip_links(logged_in.get("/instances/?status=FAILED"))
    assert chips["FAILED"] == "?"  # the last one taken off: every status
    assert ids_in(logged_in.get("/instances/" + chips["FAILED"]))


def _offered(body: str) -> list[str]:
    """The workflow names the name filter's list offers."""
    (options,) = re.findall(r'<datalist id="workflow-names">(.*?)</datalist>', body, re.S)
    return re.findall(r'<option value="([^"]*)">', options)


def test_the_name_filter_offers_the_names_counted_not_read_from_the_instances(logged_in, seeded):
    billing = Engine.objects.create(name="billing", address="127.0.0.1:2")
    StatusCount.objects.create(engine=billing, name="charge", status="FAILED", count=2)
    # A name whose instances were all purged (or deleted) is counted 0: not offered.
    StatusCount.objects.create(engine=billing, name="gone", status="COMPLETED", count=0)
    names = sorted(set(Instance.objects.exclude(name="").values_list("name", flat=True)))
    with CaptureQueriesContext(connection) as queries:
        body = _text(logged_in.get("/instances/"))
    assert _offered(body) == sorted([*names, "charge"])
    assert 'list="workflow-names"' in body and 'hx-get="/instances/names/"' not in body
    # The names come from the counts table: only the page reads the instances.
    assert sum('FROM "workflows_ui_instance"' in q["sql"] for q in queries.captured_queries) == 1


def test_more_names_than_the_page_holds_are_offered_as_they_are_typed(
    logged_in, db, client, monkeypatch
):
    monkeypatch.setattr(listing, "NAMES_OFFERED", 3)
    engine = Engine.objects.create(name="orders", address="127.0.0.1:1")
    names = ["charge", "charge_card", "refund", "ship", "ship_back", 'ship "express"']
    StatusCount.objects.bulk_create(
        StatusCount(engine=engine, name=n, status="RUNNING", count=1) for n in names
    )
    body = _text(logged_in.get("/instances/"))
    assert _offered(body) == ["charge", "charge_card", "refund"]
    assert 'hx-get="/instances/names/"' in body
    typed = _text(logged_in.get("/instances/names/?name=ship"))
    assert re.findall(r'<option value="([^"]*)">', typed) == [
        "ship",
        "ship &quot;express&quot;",
        "ship_back",
    ]
    assert logged_in.get("/instances/names/?name=" + "x" * 256).status_code == 400
    assert client.logout() is None
    response = client.get("/instances/names/?name=ship")
    assert response.status_code == 302 and response["Location"].startswith("/login/")


def test_a_typed_name_is_looked_up_with_its_case_as_the_name_filter_matches(logged_in, db):
    # The name filter matches a name exactly: SQLite's LIKE offered "Ship_it" for "ship".
    engine = Engine.objects.create(name="orders", address="127.0.0.1:1")
    names = ["SHIP", "Ship_it", "ship", "shipping", "ship%", "shiq"]
    StatusCount.objects.bulk_create(
        StatusCount(engine=engine, name=n, status="RUNNING", count=1) for n in names
    )

    def typed(prefix: str) -> list[str]:
        body = _text(logged_in.get("/instances/names/", {"name": prefix}))
        return re.findall(r'<option value="([^"]*)">', body)

    assert typed("ship") == ["ship", "ship%", "shipping"]
    assert typed("Ship") == ["Ship_it"]
    assert typed("ship%") == ["ship%"]
    assert typed("s") == ["ship", "ship%", "shipping", "shiq"]


def test_a_typed_name_is_looked_up_in_a_range_of_the_counts_index(db):
    if connection.vendor != "sqlite":
        pytest.skip("PostgreSQL's LIKE matches case")
    engine = Engine.objects.create(name="orders", address="127.0.0.1:1")
    with CaptureQueriesContext(connection) as queries:
        listing.known_names([engine.pk], "ship")
    (sql,) = [q["sql"] for q in queries.captured_queries]
    with connection.cursor() as cur:
        cur.execute("EXPLAIN QUERY PLAN " + sql)
        plan = " ".join(str(row[-1]) for row in cur.fetchall())
    # Not a walk of the engine's names testing each: a range of them.
    assert "(engine_id=? AND name>? AND name<?)" in plan, plan


def test_a_typed_name_holding_a_nul_is_refused_not_an_error(logged_in, seeded):
    # PostgreSQL refuses a query holding a NUL: the look-up failed with a 500 there.
    response = logged_in.get("/instances/names/?name=ch%00")
    assert response.status_code == 400
    assert response.content.decode() == "name: no workflow name holds a NUL character"


def test_the_list_stays_within_its_query_budget(logged_in, seeded, django_assert_max_num_queries):
    for url, pages in (
        ("/instances/", 1),
        ("/instances/?status=RUNNING&status=FAILED&status=COMPLETED", 3),
        ("/instances/?status=RUNNING&status=CANCELED&status=PENDING", 1),  # two have none
        ("/instances/?name=line_item", 2),  # completed and running ones
        ("/instances/?id_prefix=g-", 1),  # counted, capped, from the rows
        ("/instances/?q=o-1001&status=COMPLETED", 1),  # counted the same way
    ):
        with django_assert_max_num_queries(LIST_QUERIES + pages):
            assert logged_in.get(url).status_code == 200


# --- the detail page --------------------------------------------------------------------------


def test_the_detail_page_sums_up_an_instance(logged_in, seeded):
    Instance.objects.filter(instance_id="g-fails").update(
        trace_id="4bf92f3577b34da6a3ce929d0e0e4736",
        stall_reason="PATCH_MISMATCH",
        stall_description="the worker lacks patch v2",
        version="v1",
    )
    body = _text(logged_in.get("/instances/orders/g-fails/"))
    for text in (
        "g-fails",
        "Failed",
        "version <bdi>v1</bdi>",
        "4bf92f3577b34da6a3ce929d0e0e4736",
        "PATCH_MISMATCH: the worker lacks patch v2",
        "TaskFailedError",
        "no carrier serves this address",
        "Stack trace",
    ):
        assert text in body, text


def test_parent_and_children_link_to_each_other(logged_in, seeded):
    body = _text(logged_in.get("/instances/orders/g-fan-out/"))
    assert 'href="/instances/orders/g-fan-out:0001/"' in body
    assert 'href="/instances/orders/g-fan-out:0002/"' in body
    svg = _timeline(body)
    assert 'href="/instances/orders/g-fan-out:0002/"' in svg  # a child's bar leads to it
    child = _text(logged_in.get("/instances/orders/g-fan-out:0001/"))
    assert 'id="parent-link" href="/instances/orders/g-fan-out/"' in child


def test_work_handed_to_another_app_says_which_on_the_parent_page(logged_in):
    # A multi-app workflow: a child and an activity routed to billing, an activity run at home.
    orders, billing = factories.engine("orders"), factories.engine("billing")
    parent = factories.instance(orders, instance_id="checkout-1")
    run = factories.run(parent, event_count=4, started_at=parent.created_at)
    Instance.objects.filter(pk=parent.pk).update(current_execution_id=run.execution_id)
    home = {"sourceAppID": "orders"}
    routed = {"sourceAppID": "orders", "targetAppID": "billing"}
    back = {"sourceAppID": "billing", "targetAppID": "orders"}
    rows = [
        ("childWorkflowInstanceCreated", "settle", {"instanceId": "x:0001", "router": routed}),
        ("taskScheduled", "charge", {"router": routed}),
        ("taskScheduled", "log_order", {"router": home}),
        # A result coming back names the app it went to as its target: not work handed out.
        ("childWorkflowInstanceCompleted", "settle", {"router": back}),
    ]  # fmt: skip
    for position, (event_type, name, details) in enumerate(rows):
        HistoryEvent.objects.create(
            run=run, position=position, event_id=position, event_type=event_type, name=name,
            timestamp=parent.created_at, details=details,
        )  # fmt: skip
    factories.instance(
        billing, instance_id="checkout-1:0001", name="settle", parent_instance_id="checkout-1",
        parent_app_id="orders", parent_engine=orders,
    )  # fmt: skip
    home_child = factories.instance(
        orders, instance_id="checkout-1:0002", parent_instance_id="checkout-1",
        parent_engine=orders,
    )  # fmt: skip
    body = _text(logged_in.get("/instances/orders/checkout-1/"))
    tagged = re.findall(r'<tr id="event-(\d+)".*?</tr>', body, re.S)
    assert tagged == ["0", "1", "2", "3"]
    on_billing = {
        m.group(1)
        for m in re.finditer(r'<tr id="event-(\d+)"(?:(?!</tr>).)*on billing</span>', body, re.S)
    }
    assert on_billing == {"0", "1"}
    children = body[
        body.index("<h2>Child workflows</h2>") : body.index(
            "</ul>", body.index("<h2>Child workflows</h2>")
        )
    ]
    billing_child = children[
        children.index("checkout-1:0001") : children.index(
            "</li>", children.index("checkout-1:0001")
        )
    ]
    assert 'class="tag other-engine"' in billing_child and "on billing" in billing_child
    own_child = children[children.index(home_child.instance_id) :]
    assert "other-engine" not in own_child.split("</li>")[0]


def test_a_child_handed_to_an_app_no_engine_serves_has_no_page_link(logged_in):
    # billing forgotten (forgetengine): the order's wait and bar name the child, and link no
    # page of it on orders, where it never ran.
    orders = factories.engine("orders")
    Engine.objects.filter(pk=orders.pk).update(app_id="orders")
    parent = factories.instance(orders, instance_id="checkout-2", status="RUNNING")
    run = factories.run(parent, event_count=1, started_at=parent.created_at)
    Instance.objects.filter(pk=parent.pk).update(current_execution_id=run.execution_id)
    routed = {"sourceAppID": "orders", "targetAppID": "billing"}
    HistoryEvent.objects.create(
        run=run, position=0, event_id=1, event_type="childWorkflowInstanceCreated",
        name="settle", timestamp=parent.created_at,
        details={"instanceId": "checkout-2:0001", "router": routed},
    )  # fmt: skip
    body = _text(logged_in.get("/instances/orders/checkout-2/"))
    assert "checkout-2:0001" in body[body.index('id="waiting"') : body.index('id="timeline"')]
    assert "/instances/orders/checkout-2:0001/" not in body
    svg = _timeline(body)
    assert 'href="/instances/orders/checkout-2/runs/1/events/0/#event-0"' in svg


def test_an_instance_not_indexed_of_an_engine_down_says_the_engine_is_down(logged_in):
    billing = factories.engine("billing")
    Engine.objects.filter(pk=billing.pk).update(
        reachable=False, last_error="Hello: nothing listens at the address"
    )
    page = logged_in.get("/instances/billing/order-1:0006/")
    body = _text(page)
    assert page.status_code == 404
    assert "Engine <strong>billing</strong> is unreachable" in body
    assert "nothing listens at the address" in body


def test_more_children_than_shown_are_listed_by_their_parent_link(logged_in, seeded, monkeypatch):

    monkeypatch.setattr(views, "CHILDREN_SHOWN", 1)
    parent = Instance.objects.get(instance_id="g-fan-out")
    named = Instance.objects.create(
        engine=parent.engine,
        instance_id="a-named-child",  # not "<parent>:000N": an id prefix would miss it
        name="child",
        status="COMPLETED",
        created_at=parent.created_at,
        last_updated_at=parent.created_at,
        parent_engine=parent.engine,
        parent_instance_id="g-fan-out",
        purged=True,
    )
    body = _text(logged_in.get("/instances/orders/g-fan-out/"))
    link = re.search(r'More children: <a href="([^"]*)">list them all</a>', body).group(1)
    assert link == "/instances/?parent=orders%2Fg-fan-out&amp;purged=include"
    listed = logged_in.get(link.replace("&amp;", "&"))
    assert sorted(ids_in(listed)) == sorted(["g-fan-out:0001", "g-fan-out:0002", named.instance_id])
    page = _text(listed)
    assert 'Children of <bdi class="mono">orders/g-fan-out</bdi> only.' in page
    # Kept through the other filters' changes (the form holds it), taken off by a link.
    assert '<input type="hidden" name="parent" value="orders/g-fan-out">' in page
    assert 'href="/instances/?purged=include">Show all instances</a>' in page
    bad = _text(logged_in.get("/instances/?parent=nope%2Fx"))
    assert "Children of: unknown engine nope" in bad
    # A purged child is said to be purged on its parent's page.
    monkeypatch.setattr(views, "CHILDREN_SHOWN", 5)
    body = _text(logged_in.get("/instances/orders/g-fan-out/"))
    row = re.search(r"a-named-child</a>.*?</li>", body).group(0)
    assert '<span class="tag">purged</span>' in row


def test_children_are_read_through_the_parent_links_index(logged_in, seeded):
    """On a fresh console database (SQLite, no ANALYZE), the parent's page and the list of its
    children take the partial index of parent links, not every child of the engine from the
    plain one of parent engines (30 ms a page with 200,000 instances)."""
    if connection.vendor != "sqlite":
        pytest.skip("SQLite's query plans (PostgreSQL plans with the statistics it keeps)")
    with CaptureQueriesContext(connection) as queries:
        logged_in.get("/instances/orders/g-fan-out/")
        logged_in.get("/instances/?parent=orders%2Fg-fan-out&purged=include")
    by_parent = [
        q["sql"]
        for q in queries.captured_queries
        if re.search(r'WHERE .*"parent_instance_id"', q["sql"])
    ]
    assert len(by_parent) >= 2
    with connection.cursor() as cur:
        for sql in by_parent:
            cur.execute("EXPLAIN QUERY PLAN " + sql)
            plan = " / ".join(str(row[-1]) for row in cur.fetchall())
            assert "USING INDEX wf_inst_parent" in plan, (plan, sql)


def test_other_runs_of_the_same_id_are_listed_and_readable(logged_in, seeded):
    inst = seeded.instances["continue_as_new"]
    old = Run.objects.create(
        instance=inst, execution_id="older-run", ordinal=0, name="monitor", status="COMPLETED"
    )
    HistoryEvent.objects.create(run=old, position=0, event_id=-1, event_type="workflowStarted")
    body = _text(logged_in.get("/instances/orders/g-monitor/"))
    assert "older-run" in body and 'href="/instances/orders/g-monitor/runs/0/"' in body
    body = _text(logged_in.get("/instances/orders/g-monitor/runs/0/"))
    assert 'class="event-row' in body and "this run has finished" in body


def test_an_earlier_runs_page_shows_that_runs_status_and_input_not_the_current_ones(
    logged_in, seeded
):
    inst = seeded.instances["continue_as_new"]
    assert "checked 3 times" in inst.output
    Run.objects.create(
        instance=inst,
        execution_id="older-run",
        ordinal=0,
        name="monitor",
        status="CONTINUED_AS_NEW",
        input='{"checks": 0}',
        input_size=13,
    )
    body = _text(logged_in.get("/instances/orders/g-monitor/runs/0/"))
    assert 'id="this-run">#0, <bdi>monitor</bdi>: Continued as new' in body
    assert "&quot;checks&quot;: 0" in body
    assert "checked 3 times" not in body
    assert "kept for the" in body
    assert "continued as new is in no history" in body
    current = _text(logged_in.get("/instances/orders/g-monitor/"))
    assert "checked 3 times" in current and 'id="this-run"' not in current
    assert 'id="end-unread"' not in current


def test_an_earlier_runs_summary_gives_that_runs_times_duration_and_trace_not_the_current_ones(
    logged_in, seeded
):
    inst = seeded.instances["continue_as_new"]
    Instance.objects.filter(pk=inst.pk).update(trace_id="c" * 32)
    started = inst.created_at - timedelta(minutes=10)
    Run.objects.create(
        instance=inst,
        execution_id="older-run",
        ordinal=0,
        name="monitor",
        status="CONTINUED_AS_NEW",
        started_at=started,
        completed_at=started + timedelta(seconds=90),
        trace_id="a" * 32,
    )
    body = _text(logged_in.get("/instances/orders/g-monitor/runs/0/"))
    facts = re.search(r'<dl class="facts">.*?</dl>', body, re.S).group(0)
    assert 'id="run-duration">1 min 30 s<' in facts
    assert started.strftime("%Y-%m-%d %H:%M:%S") in facts
    assert "a" * 32 in facts and "c" * 32 not in facts
    assert inst.created_at.strftime("%H:%M:%S.%f") not in facts  # the current run's start
    current = _text(logged_in.get("/instances/orders/g-monitor/"))
    assert "c" * 32 in current and 'id="run-duration"' not in current


def test_runs_forgotten_past_the_retention_are_said_and_the_others_listed(
    logged_in, seeded, monkeypatch, settings
):
    settings.CONSOLE_RETENTION_DAYS = 30
    inst = seeded.instances["continue_as_new"]
    Run.objects.filter(instance=inst).update(ordinal=27)
    # Ids with a hyphen: the page's CSRF token, letters and digits, may hold "r25".
    for n in (25, 26):  # 1-24 forgotten
        Run.objects.create(
            instance=inst, execution_id=f"run-{n}", ordinal=n, name="monitor", status="COMPLETED"
        )
    body = _text(logged_in.get("/instances/orders/g-monitor/"))
    assert "run-25" in body and "run-26" in body
    assert 'id="runs-position"' not in body  # all three kept are on one page
    forgotten = re.search(r'id="runs-forgotten">(.*?)</p>', body).group(1)
    assert forgotten.startswith("24 earlier runs are no longer kept")
    assert "30 days after the next one started" in forgotten
    monkeypatch.setattr(views, "RUNS_PAGE", 2)
    body = _text(logged_in.get("/instances/orders/g-monitor/"))
    assert "Page 1 of 2" in body and "run-25" not in body
    assert 'id="runs-forgotten">24 earlier runs' in body
    # Kept for good from now on (0): the runs forgotten before are said, not a period of 0 days.
    settings.CONSOLE_RETENTION_DAYS = 0
    body = _text(logged_in.get("/instances/orders/g-monitor/"))
    forgotten = re.search(r'id="runs-forgotten">(.*?)</p>', body).group(1)
    assert forgotten.startswith("24 earlier runs are no longer kept") and "0 day" not in forgotten


def test_a_tombstone_says_until_when_it_is_kept(logged_in, seeded, settings):
    purged_at = timezone.now() - timedelta(days=1)
    Instance.objects.filter(instance_id="g-two-steps").update(purged=True, purged_at=purged_at)
    settings.CONSOLE_RETENTION_DAYS = 30
    body = _text(logged_in.get("/instances/orders/g-two-steps/"))
    until = (purged_at + timedelta(days=30)).strftime("%Y-%m-%d %H:%M:%S")
    assert re.search(r"kept as a tombstone until <time[^>]*>" + until, body)
    settings.CONSOLE_RETENTION_DAYS = 0
    body = _text(logged_in.get("/instances/orders/g-two-steps/"))
    assert "kept as a tombstone</dd>" in body


def test_an_earlier_run_that_ended_unseen_says_so(logged_in, seeded):
    inst = seeded.instances["continue_as_new"]
    old = Run.objects.create(
        instance=inst, execution_id="older-run", ordinal=0, name="other_flow", status=""
    )
    HistoryEvent.objects.create(run=old, position=0, event_id=-1, event_type="workflowStarted")
    body = _text(logged_in.get("/instances/orders/g-monitor/"))
    assert "ended, not seen how" in body
    body = _text(logged_in.get("/instances/orders/g-monitor/runs/0/"))
    assert "this run has finished" in body


def test_payloads_are_pretty_printed_and_big_ones_cut_with_a_link_to_all(logged_in, seeded):
    big = json.dumps({"rows": [{"n": i, "text": "x" * 40} for i in range(400)]})
    Instance.objects.filter(instance_id="g-two-steps").update(input=big, input_size=len(big))
    body = _text(logged_in.get("/instances/orders/g-two-steps/"))
    assert "{\n  &quot;rows&quot;: [\n    {\n      &quot;n&quot;: 0," in body
    assert '<details class="payload" id="payload-input"' in body
    assert 'href="/instances/orders/g-two-steps/payload/input/">See all</a>' in body
    assert "&quot;n&quot;: 399" not in body
    # Its size is counted in characters, and said so (in bytes it depends on the encoding).
    assert f'Input <span class="muted">{len(big):,} characters</span>' in body
    full = _text(logged_in.get("/instances/orders/g-two-steps/payload/input/"))
    assert "&quot;n&quot;: 399" in full
    # The heading only: a random CSRF token elsewhere on the page may hold "KB" (it did).
    assert f'<h1>Input <span class="muted">{len(big):,} characters</span></h1>' in full


def test_waiting_on_shows_an_event_with_its_timeout_and_a_running_child(logged_in, seeded):
    body = _text(logged_in.get("/instances/orders/g-approval-waiting/"))
    waiting = body[body.index('id="waiting"') : body.index('id="timeline"')]
    assert "Event <strong>approval</strong>" in waiting and "timeout at" in waiting
    body = _text(logged_in.get("/instances/orders/g-fan-running/"))
    waiting = body[body.index('id="waiting"') : body.index('id="timeline"')]
    assert waiting.count("Child workflow") == 2
    assert 'href="/instances/orders/g-fan-running:0001/"' in waiting
    body = _text(logged_in.get("/instances/orders/g-waits-forever/"))
    assert "Event <strong>go</strong>" in body and "no timeout" in body


def test_a_timeout_and_a_timer_say_how_far_they_are_from_the_pages_load(logged_in, seeded):
    # The approval's timeout is the timer at position 3: due in 4 min 10 s, as the page is made.
    due = timezone.now() + timedelta(minutes=4, seconds=10)
    timer = HistoryEvent.objects.get(run__instance__instance_id="g-approval-waiting", position=3)
    timer.details = {**timer.details, "fireAt": due.isoformat().replace("+00:00", "Z")}
    timer.save()
    body = _text(logged_in.get("/instances/orders/g-approval-waiting/"))
    waiting = body[body.index('id="waiting"') : body.index('id="timeline"')]
    assert re.search(
        r'timeout at <strong>.*?</strong> <span class="muted">'
        r"\(in 4 min (9|10) s at page load\)</span>",
        waiting,
    )
    row = re.search(r'<tr id="event-3".*?</tr>', body, re.S).group(0)
    assert re.search(r"fires at \S+ \(in 4 min (9|10) s at page load\)", row)
    # A timer of a finished run: how long ago it fired.
    body = _text(logged_in.get("/instances/orders/g-with-retry/"))
    row = re.search(r'<tr id="event-5".*?</tr>', body, re.S).group(0)
    assert re.search(
        r"fires at 2026-11-22T03:26:24.792954Z \(\d+ (d|h|min) \d+ (h|min|s) ago\)", row
    )


def test_the_timeline_draws_a_bar_per_attempt_with_failures_and_turns(logged_in, seeded):
    body = _text(logged_in.get("/instances/orders/g-with-retry/"))
    svg = _timeline(body)
    assert svg.count('data-kind="activity"') == 3
    assert svg.count('data-outcome="failed"') == 2
    assert svg.count('data-kind="retry"') == 2
    assert 'class="turn"' in svg
    running = _text(logged_in.get("/instances/orders/g-fan-running/"))
    assert 'class="open-end"' in running


def test_the_history_is_paged_and_filtered_by_type(logged_in, seeded, monkeypatch):

    monkeypatch.setattr(views, "HISTORY_PAGE", 5)
    base = "/instances/orders/g-with-retry/runs/1/history/"
    positions: list[int] = []
    url = base
    while url:
        body = _text(logged_in.get(url, headers={"HX-Request": "true", "HX-Target": "history"}))
        positions += [int(p) for p in re.findall(r'id="event-(\d+)"', body)]
        match = re.search(r'class="next" href="([^"]*)"', body)
        url = match.group(1).replace("&amp;", "&") if match else ""
    assert positions == list(range(18))
    second = _text(logged_in.get(base + "?after=0", headers={"HX-Request": "true"}))
    assert re.findall(r'id="event-(\d+)"', second)[0] == "1"
    assert "« First" in second and "‹ Previous" in second
    body = _text(logged_in.get(base + "?type=taskFailed", headers={"HX-Request": "true"}))
    assert body.count('class="event-row type-taskFailed') == 2
    assert 'class="event-row type-taskScheduled' not in body
    # A type no engine writes is named, not ignored (which would show every event).
    body = _text(logged_in.get(base + "?type=taskfailed", headers={"HX-Request": "true"}))
    assert "Not an event type: taskfailed." in body and 'class="event-row' not in body
    # The filter and the pages go into the address bar (hx-push-url), and that address opens the
    # whole page filtered: it can be reloaded and shared.
    assert body.count('hx-push-url="true"') == 1  # the filter (no paging for no rows)
    page = _text(logged_in.get(base + "?type=taskFailed"))
    assert "<html" in page and page.count('class="event-row type-taskFailed') == 2


def test_a_fired_timer_is_shown_at_its_fire_time_not_its_creation_stamp(logged_in, seeded):
    # The engine stamps timerFired when it creates the timer (recorded: 03:26:24.500963);
    # it fired at fireAt (03:26:24.792954).
    body = _text(logged_in.get("/instances/orders/g-with-retry/runs/1/history/?type=timerFired"))
    row = re.search(r'class="event-row type-timerFired.*?</tr>', body, re.S).group(0)
    assert ">03:26:24.792954<" in row and "recorded the event at 2026-11-22T03:26:24.500963" in row
    # Said in the cell too, not only in its hover title (no keyboard, touch or screen reader
    # reaches that): the time shown is not the engine's stamp.
    cell = re.sub(r'title="[^"]*"', "", row)
    assert ">fireAt<" in cell and "recorded the event at 2026-11-22T03:26:24.500963" in cell


def test_an_event_link_opens_the_page_at_that_event(logged_in, seeded, monkeypatch):

    monkeypatch.setattr(views, "HISTORY_PAGE", 5)
    body = _text(logged_in.get("/instances/orders/g-with-retry/runs/1/events/12/"))
    assert re.findall(r'id="event-(\d+)"', body) == ["10", "11", "12", "13", "14"]
    assert 'id="event-12" class="event-row type-' in body and "selected" in body
    assert 'id="selected-event"' in body
    assert 'href="/instances/orders/g-with-retry/runs/1/events/12/#event-12"' in body
    assert logged_in.get("/instances/orders/g-with-retry/runs/1/events/99/").status_code == 404


def test_a_completions_related_id_links_the_event_it_answers_even_off_the_page(
    logged_in, seeded, monkeypatch
):
    monkeypatch.setattr(views, "HISTORY_PAGE", 5)
    base = "/instances/orders/g-with-retry/runs/1/"

    def answered(body: str) -> dict[str, tuple[str, str]]:
        # event row position -> (related id shown, the link under it)
        links = {}
        for pos, row in re.findall(r'<tr id="event-(\d+)"(.*?)</tr>', body, re.S):
            link = re.search(r'→<a class="answered" href="([^"]*)"[^>]*>(\d+)</a>', row)
            if link:
                links[pos] = (link.group(2), link.group(1))
        return links

    # Positions 5-9: the timer fired at 7 was created at 5 (eventId 2) on this page; the
    # activity scheduled at 8 fails at 10, on the next page, which links back to 8.
    page = answered(_text(logged_in.get(base + "history/?after=4", headers={"HX-Request": "1"})))
    assert page == {"7": ("2", base + "events/5/#event-5")}
    page = answered(_text(logged_in.get(base + "history/?after=9", headers={"HX-Request": "1"})))
    assert page["10"] == ("3", base + "events/8/#event-8")
    assert page["13"] == ("4", base + "events/11/#event-11")
    # Filtered to failures, none of the events they answer is on the page.
    body = _text(logged_in.get(base + "history/?type=taskFailed", headers={"HX-Request": "1"}))
    assert answered(body) == {
        "4": ("1", base + "events/2/#event-2"),
        "10": ("3", base + "events/8/#event-8"),
    }
    # A completion whose event is not stored keeps its id, with no link.
    HistoryEvent.objects.filter(run__instance__instance_id="g-with-retry", position=8).update(
        event_type="eventSent"
    )
    body = _text(logged_in.get(base + "history/?type=taskFailed", headers={"HX-Request": "1"}))
    assert list(answered(body)) == ["4"]
    assert re.search(r'id="event-10".*?<span class="muted">→3</span>', body, re.S)


def test_an_event_with_no_details_offers_nothing_to_open(logged_in, seeded):
    body = _text(logged_in.get("/instances/orders/g-with-retry/runs/1/events/0/"))
    rows = dict(re.findall(r'<tr id="event-(\d+)"(.*?)</tr>', body, re.S))
    # workflowStarted is stored with {} as its details: no "details" that opens an empty {}.
    assert "type-workflowStarted" in rows["0"] and "<details" not in rows["0"]
    assert "<details" in rows["1"] and "<details" in rows["2"]
    selected = re.search(r'id="selected-event">(.*?)</div>', body, re.S).group(1)
    assert "No details." in selected and "{}" not in selected


def test_a_failed_workflow_names_the_activity_that_failed_and_links_its_event(logged_in, seeded):
    body = _text(logged_in.get("/instances/orders/g-fails/"))
    said = re.search(r'<p id="last-failed">(.*?)</p>', body, re.S).group(1)
    assert "activity that failed in this run: <strong><bdi>ship</bdi></strong>" in said
    assert "no carrier serves this address" in said
    assert 'href="/instances/orders/g-fails/runs/1/events/4/#event-4"' in said
    # The failed bar of the timeline opens that failure too, not the activity's scheduling.
    bar = re.search(r'<a href="([^"]*)">\s*<rect class="bar bar-activity outcome-failed', body)
    assert bar.group(1) == "/instances/orders/g-fails/runs/1/events/4/#event-4"
    assert 'id="last-failed"' not in _text(logged_in.get("/instances/orders/g-two/"))


def test_a_failed_activitys_event_shows_its_stack_trace_as_lines_and_its_input_as_json(
    logged_in, seeded
):
    from html import unescape

    body = unescape(_text(logged_in.get("/instances/orders/g-fails/runs/1/events/4/")))
    selected = re.search(r'id="selected-event">(.*?)</div>', body, re.S).group(1)
    trace = re.search(r'class="json stack-trace">(.*?)</pre>', selected, re.S).group(1)
    assert 'File "' in trace and "\n" in trace and "\\n" not in trace
    assert '"errorMessage": "no carrier serves this address"' in selected
    assert "stackTrace" not in selected
    # In the table too: the scheduled activity's input is JSON, not a string of escaped quotes.
    row = re.search(r'id="event-2".*?</tr>', body, re.S).group(0)
    assert '"input": {\n    "id": "o-1003"' in row and '\\"' not in row
    # The download keeps the details as the engine sent them.
    doc = json.loads(
        b"".join(logged_in.get("/instances/orders/g-fails/runs/1/history.json").streaming_content)
    )
    failed = doc["events"][4]["details"]["failureDetails"]
    assert "File" in failed["stackTrace"]


def test_the_history_downloads_whole_as_json(logged_in, seeded):
    response = logged_in.get("/instances/orders/g-with-retry/runs/1/history.json")
    assert response["Content-Disposition"] == (
        'attachment; filename="g-with-retry-run1-history.json"'
    )
    doc = json.loads(b"".join(response.streaming_content))
    assert doc["instance_id"] == "g-with-retry" and len(doc["events"]) == 18
    assert [e["position"] for e in doc["events"]] == list(range(18))


@pytest.mark.parametrize("batch", [5, 18])  # the last batch short, or exactly one batch
def test_the_history_downloads_the_same_under_asgi_in_batches(
    logged_in, user, seeded, monkeypatch, batch
):
    # Under daphne the events are read a batch at a time through an async iterator: the file is
    # the one the WSGI handler writes, byte for byte (the commas between batches, the end).
    from asgiref.sync import async_to_sync
    from django.test import AsyncClient

    monkeypatch.setattr(views, "DOWNLOAD_BATCH", batch)
    url = "/instances/orders/g-with-retry/runs/1/history.json"
    whole = b"".join(logged_in.get(url).streaming_content)
    client = AsyncClient()
    client.force_login(user)

    async def download() -> bytes:
        response = await client.get(url)
        assert response.status_code == 200
        return b"".join([part async for part in response.streaming_content])

    assert async_to_sync(download)() == whole
    assert len(json.loads(whole)["events"]) == 18


def test_the_detail_page_stays_within_its_query_budget(
    logged_in, seeded, django_assert_max_num_queries
):
    for iid in ("g-fan-out", "g-fan-out:0001", "g-approval-waiting", "g-with-retry"):
        with django_assert_max_num_queries(DETAIL_QUERIES):
            assert logged_in.get(f"/instances/orders/{iid}/").status_code == 200
    base = "/instances/orders/g-with-retry/runs/1/"
    for url in (base + "events/4/", base + "history/?after=5"):
        with django_assert_max_num_queries(DETAIL_QUERIES):
            assert logged_in.get(url).status_code == 200
    # The history table alone: session, user, instance, run, the page of events, the events
    # its completions answer.
    with django_assert_max_num_queries(6):
        logged_in.get(base + "history/?after=5", headers={"HX-Request": "true"})


def test_unknown_instances_and_runs_are_404(logged_in, seeded):
    assert logged_in.get("/instances/orders/nope/").status_code == 404
    assert logged_in.get("/instances/orders/g-two-steps/runs/7/").status_code == 404
    assert logged_in.get("/instances/other/g-two-steps/").status_code == 404


def test_a_404_page_keeps_the_console_around_it(logged_in, seeded, settings):
    settings.DEBUG = False
    response = logged_in.get("/instances/orders/%3Cb%3Enope/")
    assert response.status_code == 404
    body = _text(response)
    assert "<h1>Not found</h1>" in body and 'href="/instances/">All instances</a>' in body
    assert "<code>/instances/orders/%3Cb%3Enope/</code>" in body  # the path as asked for
    assert 'class="topbar"' in body


# --- untrusted payloads -------------------------------------------------------------------------

HOSTILE = '<script>alert("x")</script>'


def test_hostile_payloads_names_and_ids_are_escaped_everywhere(logged_in, db):
    engine = Engine.objects.create(name="orders", address="127.0.0.1:1", reachable=True)
    rec = seed.golden_rows.load("activity_fails")
    history = json.loads(json.dumps(rec["history"]).replace("ship", HOSTILE.replace('"', "'")))
    inst = seed.store(
        engine,
        rec,
        instance_id=f"evil-{HOSTILE}",
        history=history,
        input=json.dumps({"note": HOSTILE}),
        output=json.dumps(HOSTILE),
        custom_status=HOSTILE,
        failure_message=HOSTILE,
        failure_type=HOSTILE,
        failure_stack_trace=HOSTILE,
        name=HOSTILE,
    )
    run = inst.runs.get()
    HistoryEvent.objects.create(
        run=run,
        position=run.event_count,
        event_id=-1,
        event_type="eventRaised",
        name=HOSTILE,
        timestamp=inst.created_at + timedelta(seconds=1),
        details={"name": HOSTILE, "input": HOSTILE},
    )
    Run.objects.filter(pk=run.pk).update(event_count=run.event_count + 1)
    StatusCount.objects.create(engine=engine, name=HOSTILE, status="RUNNING", count=1)

    from workflows_ui.views import instance_url

    url = instance_url("orders", inst.instance_id)
    pages = [
        "/instances/",
        f"/instances/?q=alert&name={HOSTILE}",
        "/instances/names/?name=%3Cscr",
        url,
        url + "runs/1/events/2/",
        url + "payload/input/",
        url + "payload/custom_status/",
        url + "payload/stack_trace/",
    ]
    for page in pages:
        response = logged_in.get(page)
        assert response.status_code == 200, page
        body = _text(response)
        assert "<script>alert" not in body, page
        assert "&lt;script&gt;alert" in body, page
    download = logged_in.get(url + "runs/1/history.json")
    assert download["Content-Type"] == "application/json"
    assert "evil-" in download["Content-Disposition"] and "<" not in download["Content-Disposition"]


@pytest.mark.parametrize("query", ["q=qty", "id_prefix=g-", "id_prefix=g-&status=COMPLETED&q=qty"])
def test_few_or_many_matches_are_read_in_their_own_way_with_the_same_results(
    logged_in, seeded, monkeypatch, query
):
    url = f"/instances/?{query}&sort=created"
    monkeypatch.setattr(listing, "_few_matches", lambda f, counts: True)
    with CaptureQueriesContext(connection) as few_queries:
        few = ids_in(logged_in.get(url))
    monkeypatch.setattr(listing, "_few_matches", lambda f, counts: False)
    with CaptureQueriesContext(connection) as many_queries:
        many = ids_in(logged_in.get(url))
    assert many == few and len(few) >= 3
    created = dict(Instance.objects.values_list("instance_id", "created_at"))
    assert [created[i] for i in few] == sorted(created[i] for i in few)
    few_sql = " ".join(q["sql"] for q in few_queries.captured_queries)
    many_sql = " ".join(q["sql"] for q in many_queries.captured_queries)
    if connection.vendor == "sqlite":
        # Many matches of a word: tested for membership while the sort order is walked.
        assert ("+workflows_ui_instance.id IN" in many_sql) == ("q=" in query)
        assert "+workflows_ui_instance.id IN" not in few_sql
    else:
        # Few matches: sorted by a key no index serves, so they are found by their own index.
        assert "interval" in few_sql.lower() and "interval" not in many_sql.lower()


def test_matches_are_few_up_to_the_count_cap():
    for f in (listing.Filters(q="anything"), listing.Filters(id_prefix="g-", statuses=["FAILED"])):
        assert listing._few_matches(f, listing.Counts({"COMPLETED": 10_000}, exact=True))
        assert listing._few_matches(f, listing.Counts({}, exact=True))
        assert not listing._few_matches(
            f, listing.Counts({"COMPLETED": 10_001}, exact=False, capped=True)
        )
    # Other filters are index ranges in the sort order already.
    assert listing._few_matches(listing.Filters(name="x"), listing.Counts({}, exact=True)) is None


def test_a_terminated_instance_shows_its_reason_and_every_page_says_when_it_was_read(
    logged_in, seeded
):
    inst = seeded.instances["terminated"]
    Instance.objects.filter(pk=inst.pk).update(output='"cancelled by the customer"')
    body = _text(logged_in.get(f"/instances/orders/{inst.instance_id}/"))
    assert 'id="termination-reason">reason: <bdi>&quot;cancelled by the customer&quot;' in body
    assert 'id="as-of">As the indexer last read it, at ' in body
    assert 'Times are in <span class="tz-name">UTC</span>.' in body


def test_history_times_carry_their_date_once_the_run_is_past_its_first_day(logged_in, seeded):
    from datetime import timedelta

    inst = seeded.instances["approval_timeout"]
    run = inst.runs.get()
    last = run.events.order_by("-position").first()
    HistoryEvent.objects.filter(pk=last.pk).update(timestamp=last.timestamp + timedelta(days=7))
    body = _text(logged_in.get(f"/instances/orders/{inst.instance_id}/runs/{run.ordinal}/history/"))
    later = (last.timestamp + timedelta(days=7)).strftime("%Y-%m-%d %H:%M:%S")
    first_day = run.events.order_by("position").first().timestamp.strftime("%H:%M:%S")
    assert f">{later}." in body  # the date, a week on
    assert f">{first_day}." in body  # the time alone, on the run's first day


def test_a_suspended_period_is_shaded_on_the_timeline(logged_in, seeded):
    inst = seeded.instances["suspend_event_resume"]
    body = _text(logged_in.get(f"/instances/orders/{inst.instance_id}/"))
    spans = re.findall(r'<rect class="suspended-span" x="([\d.]+)" y="14" width="([\d.]+)"', body)
    assert len(spans) == 1 and float(spans[0][1]) > 1
    assert re.search(r"<title>suspended for [\d.]+ (ms|s)</title>", body)
    assert re.search(r'<rect class="suspended-span"[^>]*/></svg>time suspended', body)  # its key
    plain = _text(logged_in.get("/instances/orders/g-two-steps/"))
    assert "suspended-span" not in plain


def test_a_suspended_instance_says_since_when_from_its_latest_suspension(logged_in, seeded):
    from tests.pages import golden_rows

    recorded = golden_rows.load("suspend_event_resume")
    now = timezone.now()

    def at(seconds_ago: int) -> str:
        return (now - timedelta(seconds=seconds_ago)).isoformat().replace("+00:00", "Z")

    # Suspended (event 4), resumed, then suspended again with a reason (event 6).
    history = [
        *recorded["history"][:5],
        {"eventId": -1, "timestamp": at(300), "executionResumed": {}},
        {"eventId": -1, "timestamp": at(125), "executionSuspended": {"input": '"disk full"'}},
    ]
    seed.store(seeded.engine, recorded, "g-suspended-twice", "SUSPENDED", cut=7, history=history)
    body = _text(logged_in.get("/instances/orders/g-suspended-twice/"))
    banner = re.search(r"<p class=\"banner\"[^>]*>(Suspended.*?)</p>", body, re.S).group(1)
    since = (now - timedelta(seconds=125)).strftime("%Y-%m-%d %H:%M:%S")
    assert "Suspended since <time " in banner and f">{since}</time>" in banner
    assert re.search(r"\(2 min \d+ s ago, <a href=\"[^\"]*/runs/1/events/6/#event-6\">", banner)
    assert "&quot;disk full&quot;. Work resumes" in banner


def _row(body: str, position: int) -> str:
    return re.search(rf'<tr id="event-{position}".*?</tr>', body, re.S).group(0)


def _early_approval(status: str, cut: int | None = None) -> Instance:
    """The approval received before its 30 s timeout, the timeout moved to a week after now
    (a timer that fires in days, as a subscription's renewal)."""
    inst = seed.store(
        Engine.objects.get(name="orders"),
        golden_rows.load("approval_event_before_wait"),
        status=status,
        cut=cut,
    )
    timer = HistoryEvent.objects.get(run__instance=inst, position=3)
    due = timezone.now() + timedelta(days=7)
    timer.details = {**timer.details, "fireAt": due.isoformat().replace("+00:00", "Z")}
    timer.save()
    return inst


def _ticks(body: str) -> list[str]:
    return re.findall(r'class="tick-label"[^>]*>([^<]*)<', body)


def test_a_timer_of_a_run_that_ended_before_it_fired_says_it_never_fired(
    logged_in, seeded, monkeypatch
):
    _early_approval("COMPLETED")
    body = _text(logged_in.get("/instances/orders/g-approval-early/"))
    row = _row(body, 3)
    assert "at page load" not in row
    assert "was to fire at" in row and "it did not fire: the run ended first" in row
    assert "Nothing: this run has finished." in body
    # The timers alone (a type filter): whether they fired is read from the rest of the run.
    only = _text(logged_in.get("/instances/orders/g-approval-early/?type=timerCreated"))
    assert "it did not fire: the run ended first" in _row(only, 3)
    retries = _text(logged_in.get("/instances/orders/g-with-retry/?type=timerCreated"))
    assert "did not fire" not in retries and retries.count("fires at 2026-") == 2
    # Drawn up to the run's end, abandoned, and said so: not a bar going on for a week.
    bar = re.search(r'<rect class="bar bar-timer outcome-abandoned".*?</rect>', body).group(0)
    assert "open-end" not in body and "· was to fire 20" in bar
    assert _ticks(body)[-1].endswith(" ms")
    # A big run's timeline, summarized: its timers span their fire time, which must not
    # stretch the drawing to a week after the run.
    monkeypatch.setattr(history, "FULL_TIMELINE_EVENTS", 3)
    summarized = _text(logged_in.get("/instances/orders/g-approval-early/"))
    assert 'class="bar bar-timer outcome-completed"' in summarized
    assert _ticks(summarized)[-1].endswith(" ms")


def test_a_timer_of_an_earlier_run_that_continued_as_new_is_not_said_to_fire_from_now(
    logged_in, seeded
):
    inst = _early_approval("RUNNING", cut=4)
    run = inst.runs.get()
    run.status = "CONTINUED_AS_NEW"
    run.save()
    later = Run.objects.create(instance=inst, execution_id="next", ordinal=2, status="RUNNING")
    inst.current_execution_id = later.execution_id
    inst.save()
    body = _text(logged_in.get("/instances/orders/g-approval-early/runs/1/"))
    # Its fire time is still to come: it can't have fired in the turn the run ended in.
    assert "did not fire: the run ended first" in _row(body, 3)
    assert "at page load" not in _row(body, 3)
    # A fire time past: it may have fired in that turn, which no history keeps.
    timer = HistoryEvent.objects.get(run=run, position=3)
    timer.details = {**timer.details, "fireAt": "2026-11-22T03:26:55.410332Z"}
    timer.save()
    row = _row(_text(logged_in.get("/instances/orders/g-approval-early/runs/1/")), 3)
    assert "whether it fired is not known" in row and " ago)" not in row


def test_a_timer_of_a_finished_run_whose_end_is_not_indexed_is_not_said_never_to_have_fired(
    logged_in, seeded
):
    # Completed, as the engine's state says, but its history indexed as of an earlier read (the
    # last read's history was too big to be sent, say): no executionCompleted, no timerFired.
    inst = _early_approval("COMPLETED", cut=4)
    assert not HistoryEvent.objects.filter(run__instance=inst, event_type="timerFired").exists()
    timer = HistoryEvent.objects.get(run__instance=inst, position=3)
    timer.details = {**timer.details, "fireAt": "2026-11-22T03:26:55.410332Z"}
    timer.save()
    row = _row(_text(logged_in.get("/instances/orders/g-approval-early/")), 3)
    # It may have fired in the events the console has not read.
    assert "it did not fire" not in row
    assert "whether it fired is not known" in row


@pytest.mark.parametrize("billing_first", [True, False])
def test_a_child_id_on_two_engines_is_linked_where_this_run_handed_it(logged_in, billing_first):
    # A workflow that continues as new names its children alike in each run (checkout-2:0001):
    # an earlier run handed its child to billing, this one kept it on orders. Both are indexed
    # as children of checkout-2; this run's child is the one on orders.
    orders = factories.engine("orders")
    billing = factories.engine("billing", address="127.0.0.1:50002")
    Engine.objects.filter(pk=orders.pk).update(app_id="orders")
    Engine.objects.filter(pk=billing.pk).update(app_id="billing")
    parent = factories.instance(orders, instance_id="checkout-2", status="RUNNING")
    run = factories.run(parent, event_count=1, started_at=parent.created_at)
    Instance.objects.filter(pk=parent.pk).update(current_execution_id=run.execution_id)
    HistoryEvent.objects.create(
        run=run, position=0, event_id=1, event_type="childWorkflowInstanceCreated",
        name="settle", timestamp=parent.created_at, details={"instanceId": "checkout-2:0001"},
    )  # fmt: skip
    for eng in (billing, orders) if billing_first else (orders, billing):
        factories.instance(
            eng, instance_id="checkout-2:0001", status="RUNNING",
            parent_engine=orders, parent_instance_id="checkout-2",
        )  # fmt: skip
    body = _text(logged_in.get("/instances/orders/checkout-2/"))
    # (The list of children names both: each is a child of checkout-2.)
    waits = body[body.index('id="waiting"') : body.index('id="timeline"')]
    svg = _timeline(body)
    for part in (waits, svg):
        assert 'href="/instances/orders/checkout-2:0001/"' in part
        assert "/instances/billing/checkout-2:0001/" not in part


def test_an_instance_page_warns_of_the_engine_down_of_its_child_or_parent(logged_in):
    # The invoice is on billing, down: the order's page shows its status as billing last said.
    orders = factories.engine("orders", reachable=True, last_pass_at=timezone.now())
    since = timezone.now() - timedelta(minutes=7)
    billing = factories.engine(
        "billing", reachable=False, last_error="connection refused",
        last_error_at=timezone.now(), failing_since=since,
    )  # fmt: skip
    factories.instance(orders, instance_id="order-1", status="RUNNING")
    factories.instance(
        billing, instance_id="order-1:0001", name="settle_invoice", status="RUNNING",
        parent_instance_id="order-1", parent_engine=orders,
    )  # fmt: skip
    factories.instance(orders, instance_id="order-2")
    banner = "Engine <strong>billing</strong> is unreachable since"
    order = _text(logged_in.get("/instances/orders/order-1/"))
    assert banner in order and "Engine <strong>orders</strong>" not in order
    # An order whose children are all on its own engine: no banner of billing.
    assert 'role="alert"' not in _text(logged_in.get("/instances/orders/order-2/"))
    # And the other way round: a child on orders whose parent is on billing.
    factories.instance(
        orders, instance_id="refund-1", parent_instance_id="payment-1", parent_engine=billing
    )
    assert banner in _text(logged_in.get("/instances/orders/refund-1/"))
