import base64
import json
from datetime import timedelta
from urllib.parse import parse_qs, quote, urlsplit

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.utils import timezone
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from tests.console import factories
from tests.console.support import asgi_get
from workflows_ui.models import HistoryEvent, Instance, StatusCount

pytestmark = pytest.mark.django_db

# The scheme and host of the test client's requests: the API's links are whole URLs.
HOST = "http://testserver"


@pytest.fixture
def api():
    user = User.objects.create_user("alice", password="pw-123456789")
    client = APIClient()
    client.force_login(user)
    return client


def ids(response):
    assert response.status_code == 200, response.content
    return [row["instance_id"] for row in response.json()["results"]]


@pytest.mark.parametrize(
    "url",
    ["/api/", "/api/engines/", "/api/instances/", "/api/instances/orders/x/", "/api/schema/"],
)
def test_it_refuses_anonymous_requests(client, url):
    factories.instance(instance_id="x")
    for headers in ({}, {"Authorization": "Token not-a-token"}):
        response = client.get(url, headers=headers)
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"] == "Token"
        # JSON as every error, the schema's too (whose own renderer, YAML, is the default).
        assert response.headers["Content-Type"] == "application/json"
        assert response.json()["detail"] in {
            "Authentication credentials were not provided.",
            "Invalid token.",
        }


def test_a_token_authenticates():
    user = User.objects.create_user("bot")
    token = Token.objects.create(user=user)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    assert client.get("/api/engines/").status_code == 200


def test_engines_show_health_and_counts(api):
    engine = factories.engine(reachable=True, supports_list=True, supports_history=True)
    StatusCount.objects.create(engine=engine, name="a", status="RUNNING", count=3)
    StatusCount.objects.create(engine=engine, name="b", status="RUNNING", count=2)
    StatusCount.objects.create(engine=engine, name="b", status="FAILED", count=0)
    factories.engine("old", supports_list=False)
    rows = {r["name"]: r for r in api.get("/api/engines/").json()}
    assert rows["orders"]["health"] == "ok"
    assert rows["orders"]["counts"] == {"RUNNING": 5}
    assert rows["old"]["health"] == "too-old" and rows["old"]["too_old"] is True


def test_an_engine_no_indexer_has_tried_for_minutes_is_stale(api):
    # The indexer was stopped: its last pass said ok, and would go on saying so.
    last = timezone.now() - timedelta(minutes=6)
    made = last - timedelta(hours=1)
    factories.engine(reachable=True, last_pass_at=last, created_at=made)
    # Down when the indexer stopped: its last try is as old.
    factories.engine(
        "billing",
        reachable=False,
        last_error="refused",
        last_error_at=last,
        failing_since=made,
        created_at=made,
    )
    # Passed over 4 minutes ago: one pass of a slow engine can take that long.
    factories.engine("recent", reachable=True, last_pass_at=timezone.now() - timedelta(minutes=4))
    rows = {r["name"]: r for r in api.get("/api/engines/").json()}
    assert rows["orders"]["health"] == "stale"
    assert rows["orders"]["failing_since"] == last.isoformat().replace("+00:00", "Z")
    # Since its last try, not since its failure began: the indexer stopped then.
    assert rows["billing"]["health"] == "stale"
    assert rows["billing"]["failing_since"] == rows["orders"]["failing_since"]
    assert rows["recent"]["health"] == "ok" and rows["recent"]["failing_since"] is None


def test_an_engine_with_a_heartbeat_is_stale_once_it_stops_not_while_a_pass_is_long(api):
    now = timezone.now()
    made = now - timedelta(hours=1)
    # One pass under way for 10 minutes (an engine slow to answer), its runindexer alive.
    factories.engine(
        reachable=True,
        last_pass_at=now - timedelta(minutes=10),
        indexer_seen_at=now - timedelta(seconds=5),
        created_at=made,
    )
    # Its runindexer killed 2 minutes ago, a second after its last pass went well.
    seen = now - timedelta(minutes=2)
    factories.engine(
        "billing",
        reachable=True,
        last_pass_at=seen - timedelta(seconds=1),
        indexer_seen_at=seen,
        created_at=made,
    )
    rows = {r["name"]: r for r in api.get("/api/engines/").json()}
    assert rows["orders"]["health"] == "ok" and rows["orders"]["failing_since"] is None
    assert rows["billing"]["health"] == "stale"
    assert rows["billing"]["failing_since"] == seen.isoformat().replace("+00:00", "Z")


def test_engines_say_since_when_their_current_failure_goes_on(api):
    since = timezone.now() - timedelta(hours=3)
    factories.engine(reachable=False, last_error="connection refused", failing_since=since)
    factories.engine(
        "refused",
        reachable=True,
        last_error="refused",
        last_error_at=timezone.now(),
        failing_since=since,
    )
    factories.engine("gone", configured=False, reachable=False, failing_since=since)
    factories.engine("fine", reachable=True, last_pass_at=timezone.now())
    rows = {r["name"]: r for r in api.get("/api/engines/").json()}
    assert rows["orders"]["failing_since"] == since.isoformat().replace("+00:00", "Z")
    assert rows["refused"]["health"] == "failing"
    assert rows["refused"]["failing_since"] == rows["orders"]["failing_since"]
    # Taken out of CONSOLE_ENGINES: not indexed, so not failing either.
    assert rows["gone"]["health"] == "not-indexed" and rows["gone"]["failing_since"] is None
    assert rows["fine"]["failing_since"] is None
    schema = api.get("/api/schema/", HTTP_ACCEPT="application/json").json()
    field = schema["components"]["schemas"]["Engine"]["properties"]["failing_since"]
    assert field["format"] == "date-time" and field["nullable"] is True


def test_instances_are_listed_newest_first_with_a_keyset_cursor(api):
    for i in range(7):
        factories.instance(instance_id=f"i{i}")
    seen = []
    url = "/api/instances/?limit=3"
    while url:
        response = api.get(url)
        seen += ids(response)
        url = response.json()["next"]
    assert seen == [f"i{i}" for i in reversed(range(7))]
    oldest = ids(api.get("/api/instances/?ordering=created&limit=2"))
    assert oldest == ["i0", "i1"]
    # A cursor is a place in one order: sent with another, it is refused, not read as a place
    # there (the page would start anywhere).
    cursor = parse_qs(urlsplit(api.get("/api/instances/?limit=3").json()["next"]).query)["cursor"]
    other = api.get(f"/api/instances/?limit=3&ordering=-updated&cursor={cursor[0]}")
    assert other.status_code == 400
    assert other.json() == {"cursor": ["a cursor of another ordering than -updated"]}


def test_a_list_carries_the_start_of_each_custom_status_and_the_instance_all_of_it(api):
    from django.test.utils import CaptureQueriesContext

    from workflows_ui.listing import LIST_CUSTOM_STATUS

    big = json.dumps({"log": "é" * 60_000})
    for i in range(3):
        factories.instance(instance_id=f"s{i}", custom_status=big, custom_status_size=len(big))
    with CaptureQueriesContext(connection) as queries:
        listed = api.get("/api/instances/?limit=2").json()
    # One query for the page (plus the session's, the engines' and the counts'), not one a row.
    assert len(queries.captured_queries) <= 6, [q["sql"] for q in queries.captured_queries]
    row = listed["results"][0]
    assert row["custom_status"] == big[:LIST_CUSTOM_STATUS]
    assert row["custom_status_size"] == len(big)
    whole = api.get(row["url"]).json()
    assert whole["custom_status"] == big and whole["custom_status_size"] == len(big)


def test_instances_page_by_last_update_across_statuses_and_engines(api):
    billing = factories.engine("billing")
    for i in range(12):
        factories.instance(
            billing if i % 2 else None,
            instance_id=f"u{i:02d}",
            name=("charge", "ship")[i % 3 == 0],
            status=("RUNNING", "FAILED", "COMPLETED")[i % 3],
            # Updates in another order than creation, with ties.
            last_updated_at=factories.T0 + timedelta(minutes=(i * 5) % 7),
        )
    rows = {r.instance_id: r for r in Instance.objects.all()}

    def walk(url: str) -> list[str]:
        seen: list[str] = []
        while url:
            response = api.get(url)
            seen += ids(response)
            url = response.json()["next"]
        return seen

    for query, keep in (
        ("name=charge", lambda r: r.name == "charge"),
        ("status=RUNNING,FAILED", lambda r: r.status in ("RUNNING", "FAILED")),
        ("engine=orders,billing", lambda r: True),
    ):
        for ordering in ("updated", "-updated"):
            expected = sorted(
                (r for r in rows.values() if keep(r)),
                key=lambda r: (r.last_updated_at, r.pk),
                reverse=ordering.startswith("-"),
            )
            url = f"/api/instances/?{query}&ordering={ordering}&limit=2"
            assert walk(url) == [r.instance_id for r in expected], url


def test_a_filter_value_given_twice_lists_each_instance_once(api):
    billing = factories.engine("billing")
    factories.instance(instance_id="r", status="RUNNING")
    factories.instance(instance_id="f", status="FAILED")
    factories.instance(billing, instance_id="b", status="RUNNING")
    assert ids(api.get("/api/instances/?status=RUNNING,RUNNING,FAILED")) == ["b", "f", "r"]
    assert ids(api.get("/api/instances/?engine=orders,billing,orders")) == ["b", "f", "r"]
    page = api.get("/instances/?status=FAILED&status=FAILED&engine=orders&engine=orders")
    assert page.content.decode().count('class="instance-row"') == 1


def test_instances_with_the_same_created_time_are_not_skipped(api):
    t = factories.T0
    for i in range(5):
        factories.instance(instance_id=f"same{i}", created_at=t)
    seen = []
    url = "/api/instances/?limit=2"
    while url:
        response = api.get(url)
        seen += ids(response)
        url = response.json()["next"]
    assert sorted(seen) == [f"same{i}" for i in range(5)] and len(seen) == 5


def _pages_both_ways(api, url):
    """The pages from ``url`` following ``next`` to the last, then those from the last following
    ``previous`` back to the first (in the order they were read)."""
    forward = [api.get(url).json()]
    while forward[-1]["next"]:
        forward.append(api.get(forward[-1]["next"]).json())
    backward = [forward[-1]]
    while backward[-1]["previous"]:
        backward.append(api.get(backward[-1]["previous"]).json())
    return forward, backward


@pytest.mark.parametrize("ordering", ["-created", "created", "-updated", "updated"])
@pytest.mark.parametrize("query", ["", "status=RUNNING,FAILED,COMPLETED", "engine=orders,billing"])
def test_previous_links_walk_back_over_the_pages_next_links_walked(api, ordering, query):
    # Equal sort values run across the pages' edges (pages of 3, runs of 4 and 3 equal times);
    # the splits per status and per engine merge their pages going back too.
    billing = factories.engine("billing")
    for i in range(11):
        factories.instance(
            billing if i % 2 else None,
            instance_id=f"e{i:02d}",
            status=("RUNNING", "FAILED", "COMPLETED")[i % 3],
            created_at=factories.T0 + timedelta(minutes=i // 4),
            last_updated_at=factories.T0 + timedelta(minutes=(i * 2) // 3 % 3),
        )
    column = "created_at" if ordering.endswith("created") else "last_updated_at"
    expected = [
        r.instance_id
        for r in sorted(
            Instance.objects.all(),
            key=lambda r: (getattr(r, column), r.pk),
            reverse=ordering.startswith("-"),
        )
    ]
    forward, backward = _pages_both_ways(
        api, f"/api/instances/?{query}&ordering={ordering}&limit=3"
    )
    walked = [[row["instance_id"] for row in page["results"]] for page in forward]
    assert sum(walked, []) == expected
    assert [[row["instance_id"] for row in page["results"]] for page in backward] == walked[::-1]
    assert [page["start"] for page in forward] == [0, 3, 6, 9]
    assert [page["start"] for page in backward] == [9, 6, 3, 0]
    assert forward[0]["previous"] is None and backward[-1]["previous"] is None
    # A previous link keeps the page's query: only the cursor changes.
    back = parse_qs(urlsplit(forward[1]["previous"]).query)
    assert back["limit"] == ["3"] and back["ordering"] == [ordering]
    assert forward[1]["previous"].startswith(f"{HOST}/api/instances/?")


def test_a_next_cursor_handed_out_before_previous_pages_still_starts_its_page(api):
    rows = [factories.instance(instance_id=f"o{i}", created_at=factories.T0) for i in range(5)]
    after = rows[3]  # newest first, equal times: o4, o3 | o2, o1, o0
    when = after.created_at.isoformat()
    # Cursors without their ordering (the first ones), and with it but without side or count.
    for old in (_cursor(when, after.pk), _cursor(when, after.pk, "-created")):
        page = api.get(f"/api/instances/?limit=2&cursor={old}").json()
        assert [row["instance_id"] for row in page["results"]] == ["o2", "o1"]
        assert page["start"] is None  # the cursor does not say how many came before
        back = api.get(page["previous"]).json()
        assert [row["instance_id"] for row in back["results"]] == ["o4", "o3"]
        assert (back["start"], back["previous"]) == (0, None)


def test_filters_combine(api):
    other = factories.engine("billing")
    factories.instance(instance_id="order-1", status="RUNNING", name="process_order")
    factories.instance(
        instance_id="order-2",
        status="FAILED",
        name="process_order",
        failure_message="card declined",
    )
    factories.instance(instance_id="order-3", status="COMPLETED", name="ship_order")
    factories.instance(
        other,
        instance_id="inv-1",
        status="RUNNING",
        name="settle_invoice",
        input='{"customer": "acme"}',
    )
    factories.instance(instance_id="gone", status="COMPLETED", purged=True)
    assert ids(api.get("/api/instances/?status=RUNNING,failed")) == ["inv-1", "order-2", "order-1"]
    assert ids(api.get("/api/instances/?status=RUNNING&status=FAILED&engine=orders")) == [
        "order-2",
        "order-1",
    ]
    assert ids(api.get("/api/instances/?name=ship_order")) == ["order-3"]
    assert ids(api.get("/api/instances/?id_prefix=order-")) == ["order-3", "order-2", "order-1"]
    assert ids(api.get("/api/instances/?q=declined")) == ["order-2"]
    assert ids(api.get("/api/instances/?q=acme&engine=billing")) == ["inv-1"]
    assert ids(api.get("/api/instances/?purged=only")) == ["gone"]


def test_created_range_filters(api):
    a = factories.instance(instance_id="a")
    factories.instance(instance_id="b", created_at=a.created_at + timedelta(hours=1))
    after = (a.created_at + timedelta(minutes=1)).isoformat()
    assert ids(api.get("/api/instances/", {"created_after": after})) == ["b"]
    assert ids(api.get("/api/instances/", {"created_before": after})) == ["a"]


def _cursor(*parts: object) -> str:
    raw = json.dumps(list(parts)).encode()  # 1e400 is written as Infinity
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize(
    ("query", "field", "reason"),
    [
        ("status=DONE", "status", "unknown status DONE"),
        ("engine=nope", "engine", "unknown engine nope"),
        ("created_after=yesterday", "created_after", "Datetime has wrong format"),
        ("limit=0", "limit", "greater than or equal to 1"),
        ("cursor=%%%", "cursor", "not a cursor"),
        # base64 of ["2026-01-01T00:00:00", 5]: a time without its offset
        ("cursor=WyIyMDI2LTAxLTAxVDAwOjAwOjAwIiwgNV0", "cursor", "not a cursor"),
        # Tampered cursors: ids that are not a row's id, times outside the calendar in UTC.
        ("cursor=" + _cursor("2026-01-01T00:00:00+00:00", 1e400), "cursor", "not a cursor"),
        ("cursor=" + _cursor("2026-01-01T00:00:00+00:00", 10**30), "cursor", "not a cursor"),
        ("cursor=" + _cursor("2026-01-01T00:00:00+00:00", True), "cursor", "not a cursor"),
        ("cursor=" + _cursor("2026-01-01T00:00:00+00:00", 5.7), "cursor", "not a cursor"),
        ("cursor=" + _cursor("0001-01-01T00:00:00+05:00", 5), "cursor", "not a cursor"),
        ("cursor=" + _cursor("9999-12-31T23:59:59-05:00", 5), "cursor", "not a cursor"),
        ("created_after=0001-01-01T00:00%2B05:00", "created_after", "out of range"),
        # The offset's '+' not url-encoded: the reason says so, not "use +HH:MM".
        ("created_after=2026-01-02T10:00:00+01:00", "created_after", "send the offset as %2B"),
        ("created_before=2026-01-02T10:00+0100", "created_before", "send the offset as %2B"),
        ("ordering=name", "ordering", "not a valid choice"),
        ("limit=50&limit=60", "limit", "given more than once"),
        ("cursor=a&cursor=b", "cursor", "given more than once"),
        (
            "created_after=2026-01-02T00:00:00Z&created_before=2026-01-01T00:00:00Z",
            "created_before",
            "later than",
        ),
    ],
)
def test_invalid_filters_answer_400_with_the_reason(api, query, field, reason):
    factories.engine()
    response = api.get(f"/api/instances/?{query}")
    assert response.status_code == 400
    assert reason in str(response.json()[field])


@pytest.mark.parametrize("engine", ["x" * 41, "ord%00ers", "orders,x%00"])
def test_an_invalid_engine_name_is_refused_with_a_list_of_reasons(api, engine):
    # The reasons of one name of the list were keyed by its index ({"engine": {"0": [...]}}),
    # not the list of reasons per parameter the schema promises.
    factories.engine()
    response = api.get(f"/api/instances/?engine={engine}")
    assert response.status_code == 400
    ((name, reasons),) = response.json().items()
    assert name == "engine"
    assert isinstance(reasons, list) and reasons, reasons
    assert all(isinstance(reason, str) for reason in reasons), reasons


def test_an_instance_with_a_colon_in_its_id_is_found_url_encoded(api):
    parent = factories.instance(instance_id="order-7", name="fan_out")
    child = factories.instance(
        instance_id="order-7:0001",
        parent_engine=parent.engine,
        parent_instance_id="order-7",
        parent_execution_id="e1",
        failure_type="ValueError",
        failure_message="boom",
    )
    data = api.get(f"/api/instances/orders/{quote(child.instance_id, safe='')}/").json()
    assert data["instance_id"] == "order-7:0001"
    assert data["parent"]["url"] == f"{HOST}/api/instances/orders/order-7/"
    assert data["failure"] == {"type": "ValueError", "message": "boom", "stack_trace": ""}
    assert data["url"] == f"{HOST}/api/instances/orders/order-7%3A0001/"
    assert api.get(data["url"]).status_code == 200
    assert api.get(data["history_url"]).json() == {"run": None, "results": [], "next": None}


def test_an_instances_children_are_listed_whatever_their_ids(api):
    # The SDK's default child ids are "<parent>:000N", but a workflow may name its children:
    # the parent link finds them all, and no grandchild or namesake.
    parent = factories.instance(instance_id="a/b", name="fan_out")
    other = factories.instance(instance_id="a/b:0009")  # not a child: an id alike
    kids = ["a/b:0001", "named-child", "a/b:0002"]
    for kid in kids:
        factories.instance(
            instance_id=kid,
            parent_engine=parent.engine,
            parent_instance_id="a/b",
            purged=kid == "a/b:0002",
        )
    factories.instance(parent_engine=parent.engine, parent_instance_id="named-child")
    children_url = api.get(f"/api/instances/orders/{quote('a/b', safe='')}/").json()["children_url"]
    assert children_url == f"{HOST}/api/instances/?parent=orders%2Fa%2Fb&purged=include"
    assert ids(api.get(children_url)) == list(reversed(kids))
    assert ids(api.get("/api/instances/?parent=orders%2Fa%2Fb&ordering=created&limit=1")) == [
        kids[0]
    ]
    assert other.instance_id not in ids(api.get(children_url))
    for bad, reason in (("orders", "expected engine/instance id"), ("nope/x", "unknown engine")):
        response = api.get(f"/api/instances/?parent={quote(bad, safe='')}")
        assert response.status_code == 400
        assert reason in response.json()["parent"][0]


def test_an_id_with_a_slash_still_resolves(api):
    factories.instance(instance_id="a/b")
    assert api.get("/api/instances/orders/a%2Fb/").json()["instance_id"] == "a/b"


def test_unknown_instances_and_engines_are_404(api):
    factories.instance(instance_id="x")
    assert api.get("/api/instances/orders/nope/").status_code == 404
    assert api.get("/api/instances/billing/x/").status_code == 404
    assert api.get("/api/instances/orders/nope/history/").status_code == 404
    # Which of the two is unknown, said (not the model's "No Instance matches the given query").
    assert api.get("/api/instances/orders/nope/runs/").json() == {
        "detail": "no instance 'nope' indexed from engine 'orders'"
    }
    assert api.get("/api/instances/billing/x/").json() == {
        "detail": "no engine 'billing' in the console"
    }


def _strings(params):
    values = params.values() if isinstance(params, dict) else params or ()
    for value in values:
        if isinstance(value, (list, tuple, dict)):
            yield from _strings(value)
        elif isinstance(value, str):
            yield value


@pytest.mark.parametrize(
    "url",
    [
        "/api/instances/orders/m%00/",
        "/api/instances/orders/m%00/history/",
        "/api/instances/orders/m%00/runs/",
        "/api/instances/or%00ders/m/",
        "/api/instances/or%00ders/m/history/",
        "/instances/orders/m%00/",
        "/instances/or%00ders/m/",
        "/instances/orders/m%00/runs/1/",
        "/instances/orders/m%00/runs/1/events/0/",
        "/instances/orders/m%00/runs/1/history/",
        "/instances/orders/m%00/runs/1/history.json",
        "/instances/orders/m%00/payload/input/",
    ],
)
def test_an_id_or_engine_with_a_nul_is_404_without_asking_the_database(api, url):
    # No stored id can hold a NUL, and PostgreSQL refuses a query holding one (an error, a 500).
    inst = factories.instance(instance_id="m", input='{"a": 1}')
    factories.run(inst, execution_id="r1")
    sent = []

    def record(execute, sql, params, many, context):
        sent.extend(_strings(params))
        return execute(sql, params, many, context)

    with connection.execute_wrapper(record):
        response = api.get(url, headers={"HX-Request": "true"} if "/history/" in url else {})
    assert response.status_code == 404
    assert not [value for value in sent if "\x00" in value]


def test_runs_and_paged_history_filtered_by_type(api):
    inst = factories.instance(instance_id="m", name="monitor")
    old = factories.run(inst, execution_id="r1", status="CONTINUED_AS_NEW")
    new = factories.run(inst, execution_id="r2", status="RUNNING")
    inst.current_execution_id = "r2"
    inst.save()
    types = ["workflowStarted", "executionStarted", "timerCreated", "workflowStarted", "timerFired"]
    for run in (old, new):
        HistoryEvent.objects.bulk_create(
            HistoryEvent(run=run, position=i, event_id=-1, event_type=t)
            for i, t in enumerate(types)
        )
    runs = api.get("/api/instances/orders/m/runs/").json()["results"]
    assert [(r["execution_id"], r["current"]) for r in runs] == [("r1", False), ("r2", True)]
    page = api.get("/api/instances/orders/m/history/?limit=2").json()
    assert page["run"] == "r2"
    assert [e["position"] for e in page["results"]] == [0, 1]
    page2 = api.get(page["next"]).json()
    assert [e["position"] for e in page2["results"]] == [2, 3]
    typed = api.get("/api/instances/orders/m/history/?type=workflowStarted&run=r1").json()
    assert [e["position"] for e in typed["results"]] == [0, 3]
    assert typed["run"] == "r1"
    bad = api.get("/api/instances/orders/m/history/?run=zzz")
    assert bad.status_code == 400 and "no run" in str(bad.json()["run"])
    both = api.get("/api/instances/orders/m/history/?type=timerFired,timerCreated&type=timerFired")
    assert [e["position"] for e in both.json()["results"]] == [2, 4]
    bad = api.get("/api/instances/orders/m/history/?type=timerFired,timerFried")
    assert bad.status_code == 400 and "unknown event type timerFried" in str(bad.json()["type"])
    assert "expected some of executionStarted, " in str(bad.json()["type"])


def test_the_next_history_page_stays_in_its_run_when_a_new_run_starts(api):
    inst = factories.instance(instance_id="loop", name="monitor")
    first = factories.run(inst, execution_id="r1", status="RUNNING")
    inst.current_execution_id = "r1"
    inst.save()
    HistoryEvent.objects.bulk_create(
        HistoryEvent(run=first, position=i, event_id=-1, event_type="timerFired") for i in range(4)
    )
    page = api.get("/api/instances/orders/loop/history/?limit=2").json()
    # The workflow continues as new between two pages.
    second = factories.run(inst, execution_id="r2", status="RUNNING")
    inst.current_execution_id = "r2"
    inst.save()
    HistoryEvent.objects.bulk_create(
        HistoryEvent(run=second, position=i, event_id=-1, event_type="executionStarted")
        for i in range(4)
    )
    page2 = api.get(page["next"]).json()
    assert page2["run"] == "r1"
    assert [e["event_type"] for e in page2["results"]] == ["timerFired", "timerFired"]


def test_the_openapi_schema_describes_the_api(api):
    response = api.get("/api/schema/", HTTP_ACCEPT="application/json")
    assert response.status_code == 200
    text = response.content.decode()
    assert "/api/instances/{engine}/{instance_id}/history/" in text
    assert "id_prefix" in text


def test_the_schema_lists_every_field_of_an_answer_as_required(api):
    # Every answer holds every field (null when it has no value): a field the schema leaves
    # out of "required" is typed by generated clients as possibly missing (name, completed_at,
    # input, ... were).
    schemas = api.get("/api/schema/", HTTP_ACCEPT="application/json").json()["components"]
    for name, schema in schemas["schemas"].items():
        if "properties" in schema:
            assert set(schema.get("required", [])) == set(schema["properties"]), name


def test_the_schema_says_how_a_cut_payload_is_told(api):
    # Payloads over CONSOLE_PAYLOAD_LIMIT are stored cut: a client can only tell by the sizes
    # and by the event's _truncated, which the schema did not describe.
    schemas = api.get("/api/schema/", HTTP_ACCEPT="application/json").json()["components"]
    fields = {
        ("InstanceDetail", "input_size"): "characters",
        ("InstanceDetail", "output_size"): "characters",
        ("InstanceDetail", "custom_status_size"): "characters",
        ("Run", "input_size"): "characters",
        ("HistoryEvent", "details"): "_truncated",
    }
    for (component, field), words in fields.items():
        described = schemas["schemas"][component]["properties"][field].get("description", "")
        assert words in described, (component, field)


def _walk(api, url, data=None):
    """Every page from ``url`` on, following ``next``."""
    pages = []
    while url:
        response = api.get(url, data)
        assert response.status_code == 200, (url, response.content)
        pages.append(response.json())
        url, data = pages[-1]["next"], None
    return pages


@pytest.mark.parametrize("instance_id", ["a%41", "a?b", "a#b", "a/b", "x y", "ü:1", "a%2Fb"])
def test_next_links_page_through_the_same_instance_whatever_its_id(api, instance_id):
    for iid in {instance_id, "aA", "a", "x"}:
        inst = factories.instance(instance_id=iid)
        runs = [factories.run(inst, execution_id=f"{iid}|r{n}") for n in range(3)]
        inst.current_execution_id = runs[-1].execution_id
        inst.save()
        for run in runs:
            HistoryEvent.objects.bulk_create(
                HistoryEvent(run=run, position=i, event_id=i, event_type="taskCompleted", name=iid)
                for i in range(5)
            )
    base = f"/api/instances/orders/{quote(instance_id, safe='')}/"

    runs = _walk(api, f"{base}runs/?limit=1")
    assert runs[0]["next"].startswith(f"{HOST}{base}runs/?")
    assert [r["execution_id"] for page in runs for r in page["results"]] == [
        f"{instance_id}|r{n}" for n in range(3)
    ]
    for run, query in (
        (f"{instance_id}|r2", {}),
        (f"{instance_id}|r0", {"run": f"{instance_id}|r0"}),
    ):
        pages = _walk(api, f"{base}history/", {"limit": 2, "type": "taskCompleted", **query})
        assert [p["run"] for p in pages] == [run] * 3
        events = [e for page in pages for e in page["results"]]
        assert [(e["position"], e["name"]) for e in events] == [(i, instance_id) for i in range(5)]
        # The id as the instance's url has it (re-encoded), the query kept.
        assert pages[0]["next"].startswith(f"{HOST}{base}history/?")
        assert "type=taskCompleted" in pages[0]["next"]


def _listed(api, query):
    response = api.get(f"/api/instances/?{query}")
    assert response.status_code == 200, (query, response.content)
    return ids(response)


@pytest.mark.parametrize(
    "param",
    [
        "engine",
        "status",
        "name",
        "id_prefix",
        "q",
        "created_after",
        "created_before",
        "purged",
        "unreadable",
        "ordering",
        "cursor",
        "limit",
    ],
)
def test_an_empty_instance_filter_is_no_filter(api, param):
    for i in range(3):
        factories.instance(instance_id=f"i{i}")
    factories.instance(instance_id="gone", purged=True)
    assert _listed(api, f"{param}=") == ["i2", "i1", "i0"]
    assert _listed(api, f"{param}=%20") == ["i2", "i1", "i0"]


def test_a_form_sending_every_instance_filter_empty_lists_everything(api):
    for i in range(3):
        factories.instance(instance_id=f"i{i}")
    every = "engine=&status=&name=&id_prefix=&q=&created_after=&created_before=&purged="
    every += "&unreadable=&ordering=&cursor=&limit="
    assert _listed(api, every) == ["i2", "i1", "i0"]
    assert _listed(api, "limit=&limit=2&name=&name=two_steps") == ["i2", "i1"]
    assert _listed(api, "name=&id_prefix=i1&q=") == ["i1"]
    bad = api.get("/api/instances/?name=&limit=x")
    assert bad.status_code == 400 and "valid integer" in str(bad.json()["limit"])
    assert "name" not in bad.json()
    bad = api.get("/api/instances/?limit=2&limit=3&name=")
    assert bad.status_code == 400 and "given more than once" in str(bad.json()["limit"])


def test_empty_run_and_history_parameters_take_their_defaults(api):
    inst = factories.instance(instance_id="m")
    factories.run(inst, execution_id="r1")
    current = factories.run(inst, execution_id="r2")
    inst.current_execution_id = "r2"
    inst.save()
    HistoryEvent.objects.bulk_create(
        HistoryEvent(run=current, position=i, event_id=-1, event_type="timerFired")
        for i in range(3)
    )
    history = api.get("/api/instances/orders/m/history/?run=&type=&after=&limit=")
    assert history.status_code == 200, history.content
    assert history.json()["run"] == "r2"
    assert [e["position"] for e in history.json()["results"]] == [0, 1, 2]
    runs = api.get("/api/instances/orders/m/runs/?after=&limit=")
    assert runs.status_code == 200, runs.content
    assert [r["execution_id"] for r in runs.json()["results"]] == ["r1", "r2"]
    for url, field, reason in (
        ("/api/instances/orders/m/history/?run=&after=x", "after", "valid integer"),
        ("/api/instances/orders/m/history/?limit=0&type=", "limit", "greater than or equal"),
        ("/api/instances/orders/m/runs/?after=&limit=-1", "limit", "greater than or equal"),
    ):
        bad = api.get(url)
        assert bad.status_code == 400 and reason in str(bad.json()[field]), url


def test_history_event_types_are_taken_in_any_case(api):
    inst = factories.instance(instance_id="m")
    run = factories.run(inst, execution_id="r1")
    inst.current_execution_id = "r1"
    inst.save()
    types = ["executionStarted", "taskScheduled", "taskCompleted", "timerFired"]
    HistoryEvent.objects.bulk_create(
        HistoryEvent(run=run, position=i, event_id=-1, event_type=t) for i, t in enumerate(types)
    )
    url = "/api/instances/orders/m/history/"
    for query in ("TaskCompleted,TIMERFIRED", "taskcompleted&type=timerFired,TimerFired"):
        page = api.get(f"{url}?type={query}").json()
        assert [e["event_type"] for e in page["results"]] == ["taskCompleted", "timerFired"]
    bad = api.get(f"{url}?type=TaskCompleted,TaskDone")
    assert bad.status_code == 400
    assert "unknown event type TaskDone; expected some of executionStarted" in str(bad.json())


def test_the_schema_enumerates_statuses_and_event_types_and_the_errors_of_runs_and_history(api):
    schema = api.get("/api/schema/", HTTP_ACCEPT="application/json").json()
    paths = schema["paths"]

    def param(path, name):
        found = [p for p in paths[path]["get"]["parameters"] if p["name"] == name]
        assert len(found) == 1, (path, name)
        return found[0]["schema"]

    status = param("/api/instances/", "status")
    assert status["type"] == "array" and "FAILED" in status["items"]["enum"]
    history = "/api/instances/{engine}/{instance_id}/history/"
    types = param(history, "type")
    assert types["type"] == "array" and "taskCompleted" in types["items"]["enum"]
    for path in (history, "/api/instances/{engine}/{instance_id}/runs/"):
        assert {"200", "400", "404"} <= set(paths[path]["get"]["responses"]), path
    # An engine's health is one of a few words, and says which (a client can switch on it).
    health = schema["components"]["schemas"]["Engine"]["properties"]["health"]
    ref = health["allOf"][0]["$ref"].rsplit("/", 1)[1]
    assert set(schema["components"]["schemas"][ref]["enum"]) == {
        "ok", "failing", "unreachable", "too-old", "unknown", "not-indexed", "stale"
    }  # fmt: skip


def test_the_schema_lists_the_errors_every_endpoint_answers(api):
    """A parameter an endpoint does not take is a 400 and a database that does not answer a 503
    on every endpoint: each operation of the schema says so, so a generated client knows them."""
    inst = factories.instance(instance_id="m")
    factories.run(inst, execution_id="r1")
    schema = api.get("/api/schema/", HTTP_ACCEPT="application/json").json()
    for path, operations in schema["paths"].items():
        responses = operations["get"]["responses"]
        url = path.replace("{engine}", "orders").replace("{instance_id}", "m")
        answered = api.get(url + "?no_such_parameter=1", HTTP_ACCEPT="application/json")
        assert answered.status_code == 400, url
        assert {"400", "401", "503"} <= set(responses), path
        assert "Retry-After" in responses["503"]["headers"], path


def test_the_schema_says_what_a_wrong_method_accept_or_user_is_answered(api):
    """Checked against real answers: an Accept without JSON is a 406 on every operation (with
    the body the schema gives), an empty one is as if not sent; no GET is a 403, even for a
    user with no permission; a method other than GET is a 405 with Allow (a 403 for a session
    without CSRF token), which no GET operation can say: the schema's description says it, and
    has no operation for them."""
    inst = factories.instance(instance_id="m")
    factories.run(inst, execution_id="r1")
    spec = api.get("/api/schema/", HTTP_ACCEPT="application/json").json()
    described = spec["info"]["description"]
    user = User.objects.get(username="alice")
    assert not user.user_permissions.exists() and not user.is_staff
    token = Token.objects.create(user=user).key
    by_token = APIClient()
    by_token.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    by_session = APIClient(enforce_csrf_checks=True)
    by_session.force_login(user)
    for path, item in spec["paths"].items():
        url = path.replace("{engine}", "orders").replace("{instance_id}", "m")
        assert set(item) - {"parameters"} == {"get"}, path
        responses = item["get"]["responses"]
        answered = api.get(url)
        assert answered.status_code == 200, path
        assert answered["Allow"] == "GET, HEAD, OPTIONS", path
        for accept in ("text/html", "application/xml"):
            assert "406" in responses, path
            _conforms(api, spec, path, url, status=406, HTTP_ACCEPT=accept)
        for empty in ("", " ", ", "):
            # An Accept sent with nothing in it asks for nothing in particular.
            answered = api.get(url, HTTP_ACCEPT=empty)
            assert answered.status_code == 200, (path, empty)
            assert answered["Content-Type"] == "application/json", (path, empty)
        for method in ("post", "put", "patch", "delete"):
            response = getattr(by_token, method)(url)
            assert response.status_code == 405, (path, method)
            assert response["Allow"] == "GET, HEAD, OPTIONS"
            assert set(response.json()) == {"detail"}
            refused = getattr(by_session, method)(url)
            assert refused.status_code == 403, (path, method)
            assert refused.json()["detail"].startswith("CSRF Failed: ")
        assert "403" not in responses, path
    assert "answered 405, with an Allow header" in described
    assert '403 {"detail": "CSRF Failed: ..."}' in described
    # An inactive user is refused as one not signed in, by token or session: a 401.
    user.is_active = False
    user.save()
    for client in (by_token, api):
        _conforms(client, spec, "/api/instances/", "/api/instances/", status=401)


def test_a_search_with_no_word_is_refused_not_taken_for_everything(api):
    response = api.get("/api/instances/?q=%2A%22%F0%9F%91%8D")
    assert response.status_code == 400
    assert response.json()["q"] == ["has no word to search for (letters or digits)"]


def test_the_api_root_links_its_collections(api):
    response = api.get("/api/")
    assert response.status_code == 200
    links = response.json()
    assert links == {
        "engines": "http://testserver/api/engines/",
        "instances": "http://testserver/api/instances/",
        "schema": "http://testserver/api/schema/",
    }
    for url in links.values():
        assert api.get(url).status_code == 200


def test_a_run_that_ended_unseen_has_an_empty_status_the_schema_allows(api):
    inst = factories.instance(instance_id="m")
    factories.run(inst, execution_id="r1", status="")
    runs = api.get("/api/instances/orders/m/runs/").json()["results"]
    assert [r["status"] for r in runs] == [""]
    schema = api.get("/api/schema/", HTTP_ACCEPT="application/json").json()["components"]
    status = schema["schemas"]["Run"]["properties"]["status"]
    allowed = [
        value
        for choice in status.get("oneOf", [status])
        for value in schema["schemas"][choice["$ref"].rsplit("/", 1)[1]]["enum"]
    ]
    assert "" in allowed and "COMPLETED" in allowed


@pytest.mark.parametrize("instance_id", [".", ".."])
def test_an_id_that_is_a_dot_segment_has_urls_clients_send_as_they_are(api, instance_id):
    # HTTP libraries and browsers resolve "/./" and "/../" before sending: "/orders/../" would
    # be the list of instances.
    inst = factories.instance(instance_id=instance_id)
    factories.run(inst, execution_id="r1")
    (row,) = api.get("/api/instances/").json()["results"]
    escaped = instance_id.replace(".", "%2E")
    assert row["url"] == f"{HOST}/api/instances/orders/{escaped}/"
    detail = api.get(row["url"]).json()
    assert detail["instance_id"] == instance_id
    assert detail["runs_url"] == f"{HOST}/api/instances/orders/{escaped}/runs/"
    assert api.get(detail["runs_url"]).json()["results"][0]["execution_id"] == "r1"


def test_an_id_prefix_keeps_its_spaces(api):
    for iid in (" hxlead", "hx", "hx-2"):
        factories.instance(instance_id=iid)
    assert _listed(api, "id_prefix=%20hx") == [" hxlead"]
    assert _listed(api, "id_prefix=hx%20") == []


@pytest.mark.parametrize(
    ("q", "reason"),
    [
        ("___", "has no word to search for"),
        ("+".join(["gold"] * 33), "has more than 32 words"),
        # Split as PostgreSQL's search splits it (at the dots), too many words there as well.
        (".".join(["gold"] * 33), "has more than 32 words"),
    ],
)
def test_a_search_that_cant_be_run_as_given_is_refused(api, q, reason):
    # Cut to its first 32 words, the search would list instances without the words left out.
    response = api.get(f"/api/instances/?q={q}")
    assert response.status_code == 400
    assert reason in response.json()["q"][0]


def test_a_search_of_32_words_is_run(api):
    factories.instance(instance_id="i", input='"gold"')
    assert _listed(api, "q=" + "+".join(["gold"] * 32)) == ["i"]


@pytest.mark.parametrize(
    "url", ["/api/nope/", "/api/instances/ORDERS/x/", "/api/instances/orders/m%00/"]
)
def test_a_path_under_api_that_matches_nothing_answers_json(api, url):
    factories.instance(instance_id="m")
    response = api.get(url)
    assert response.status_code == 404
    assert response.json() == {"detail": "Not found."}
    page = api.get("/no-such-page/")
    assert page.status_code == 404 and "text/html" in page["Content-Type"]


def _engines_failing_with(monkeypatch, exc: Exception) -> APIClient:
    """A signed-in client whose requests meet ``exc`` when they read the engines (every page's
    banner and ``/api/engines/`` do), answered as a browser or a script would see it."""
    from workflows_ui.models import Engine

    def failing(*args, **kwargs):
        raise exc

    monkeypatch.setattr(Engine.objects, "all", failing)
    client = APIClient(raise_request_exception=False)
    client.force_login(User.objects.get_or_create(username="carol")[0])
    return client


DOWN = "connection failed: Connection refused\nIs the server running?"


def test_a_server_error_under_api_answers_json(monkeypatch):
    # Django's own 500 and 400 pages were HTML under /api/ too: a client reading "detail" got
    # a page (a database that is locked or down; a Host header not allowed).
    from django.db import OperationalError

    client = _engines_failing_with(monkeypatch, RuntimeError("a bug"))
    response = client.get("/api/engines/")
    assert response.status_code == 500
    assert response.json() == {"detail": "Server error."}
    response = client.get("/api/engines/", HTTP_HOST="elsewhere.example")
    assert response.status_code == 400
    assert response.json() == {"detail": "Bad request."}
    page = client.get("/")
    assert page.status_code == 500 and "text/html" in page["Content-Type"]

    # The database down (restarting, full, locked): a 503 to try again, not a 500.
    client = _engines_failing_with(monkeypatch, OperationalError(DOWN))
    response = client.get("/api/engines/")
    assert response.status_code == 503 and response["Retry-After"] == "5"
    assert response.json() == {
        "detail": "The console's database does not answer: try again in a moment."
    }
    page = client.get("/")
    assert page.status_code == 503 and b"does not answer" in page.content


@pytest.mark.django_db(transaction=True)
def test_a_database_that_takes_no_writes_answers_503_not_500(caplog):
    # A PostgreSQL standby a failover has not promoted yet: a sign-in's write failed with an
    # InternalError, a 500 with a traceback for every request.
    from django.db import connection
    from django.test import Client

    User.objects.create_user("alice", password="pw-123456789")
    client = Client(raise_request_exception=False)
    read_only, read_write = (
        (
            "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY",
            "SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE",
        )
        if connection.vendor == "postgresql"
        else ("PRAGMA query_only = 1", "PRAGMA query_only = 0")
    )
    from django.db.backends.signals import connection_created

    def standby(connection, **kwargs):  # every connection to a standby takes no writes
        with connection.cursor() as cur:
            cur.execute(read_only)

    with connection.cursor() as cur:
        cur.execute(read_only)
    # The sign-in hands its connection back while the password is hashed, and takes another.
    connection_created.connect(standby)
    try:
        response = client.post("/login/", {"username": "alice", "password": "pw-123456789"})
    finally:
        connection_created.disconnect(standby)
        with connection.cursor() as cur:
            cur.execute(read_write)
    assert response.status_code == 503 and response["Retry-After"] == "5"
    assert response.content == b"The console's database takes no writes: try again in a moment."
    assert "Traceback" not in caplog.text
    assert "the console's database takes no writes (" in caplog.text


def test_a_database_down_is_logged_a_line_a_minute_not_a_traceback_a_request(monkeypatch):
    import logging

    from django.db import OperationalError

    from console.logfilters import DatabaseDown

    client = _engines_failing_with(monkeypatch, OperationalError(DOWN))
    lines: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record):
            lines.append(record)

    # Through the logger's own filter, as configured in the settings.
    logger = logging.getLogger("django.request")
    assert any(isinstance(f, DatabaseDown) for f in logger.filters)
    keep = Keep()
    logger.addHandler(keep)
    clock = [1000.0]
    monkeypatch.setattr("console.logfilters.time.monotonic", lambda: clock[0])
    for f in logger.filters:
        if isinstance(f, DatabaseDown):
            f.repeats.forget()
    try:
        for _ in range(5):
            assert client.get("/api/engines/").status_code == 503
        clock[0] += 61
        assert client.get("/api/engines/").status_code == 503
    finally:
        logger.removeHandler(keep)
    assert [r.getMessage() for r in lines] == [
        "the console's database does not answer (connection failed: Connection refused): "
        "requests answered 503",
        "the console's database does not answer (connection failed: Connection refused): "
        "requests answered 503 (4 more since the last such line)",
    ]
    assert all(r.exc_info is None for r in lines)


def _response_validator(spec, path, status):
    """A JSON Schema validator of the OpenAPI schema's response to GET ``path``."""
    from jsonschema import Draft202012Validator
    from referencing import Registry, Resource

    def as_json_schema(node):
        # OpenAPI 3.0's "nullable" is a type list in JSON Schema; refs point into the spec.
        if isinstance(node, list):
            return [as_json_schema(n) for n in node]
        if not isinstance(node, dict):
            return node
        out = {k: as_json_schema(v) for k, v in node.items() if k != "nullable"}
        if "$ref" in out:
            out["$ref"] = "spec.json" + out["$ref"]
        return {"anyOf": [out, {"type": "null"}]} if node.get("nullable") else out

    converted = as_json_schema(spec)
    registry = Registry().with_resource("spec.json", Resource.opaque(converted))
    schema = converted["paths"][path]["get"]["responses"][str(status)]
    return Draft202012Validator(schema["content"]["application/json"]["schema"], registry=registry)


def _conforms(api, spec, path, url, status=200, **headers):
    response = api.get(url, **headers)
    assert response.status_code == status, response.content
    errors = list(_response_validator(spec, path, status).iter_errors(response.json()))
    assert not errors, [f"{list(e.absolute_path)}: {e.message}" for e in errors]
    return response.json()


def test_responses_conform_to_the_served_schema(api):
    """Every field a generated client reads, checked against what the API answers: a run that
    ended unseen, a child with its parent, a failure, an instance the indexer can't read."""
    from workflows_ui.models import InstanceCheck

    parent = factories.instance(instance_id="p", status="RUNNING")
    factories.run(parent, execution_id="pr")
    child = factories.instance(
        instance_id="p:0001",
        status="FAILED",
        parent_engine=parent.engine,
        parent_instance_id="p",
        parent_execution_id="pr",
        failure_type="ValueError",
        failure_message="boom",
        input='{"a": 1}',
    )
    unseen = factories.run(child, execution_id="c1", status="")
    current = factories.run(child, execution_id="c2", status="FAILED")
    child.current_execution_id = "c2"
    child.save()
    HistoryEvent.objects.bulk_create(
        HistoryEvent(run=r, position=i, event_id=-1, event_type="executionStarted", details={})
        for r in (unseen, current)
        for i in range(2)
    )
    InstanceCheck.objects.create(
        instance=child,
        engine=child.engine,
        due_at=factories.T0,
        read_error="GetInstance: deadline exceeded",
        read_failing_since=factories.T0,
    )
    one = "/api/instances/{engine}/{instance_id}/"
    spec = api.get("/api/schema/", HTTP_ACCEPT="application/json").json()
    _conforms(api, spec, "/api/engines/", "/api/engines/")
    listed = _conforms(api, spec, "/api/instances/", "/api/instances/?limit=1")
    assert listed["next"] and listed["start"] == 0
    second = _conforms(api, spec, "/api/instances/", listed["next"])
    assert second["previous"] and second["start"] == 1
    detail = _conforms(api, spec, one, "/api/instances/orders/p%3A0001/")
    assert detail["parent"]["url"] and detail["failure"]["message"] == "boom"
    assert detail["read_problem"]["history_only"] is False
    assert _conforms(api, spec, one, "/api/instances/orders/p/")["parent"] is None
    runs = _conforms(api, spec, one + "runs/", "/api/instances/orders/p%3A0001/runs/")
    assert [r["status"] for r in runs["results"]] == ["", "FAILED"]
    _conforms(api, spec, one + "history/", "/api/instances/orders/p%3A0001/history/?run=c1&limit=1")
    _conforms(api, spec, "/api/instances/", "/api/instances/?status=NOPE", status=400)
    _conforms(api, spec, one, "/api/instances/orders/nope/", status=404)
    api.logout()
    _conforms(api, spec, "/api/instances/", "/api/instances/", status=401)


def _asgi_get(raw_path: bytes, token: str):
    status, body = asgi_get(raw_path, (b"authorization", f"Token {token}".encode()))
    return status, json.loads(body)


@pytest.mark.django_db(transaction=True)  # the ASGI handler reads in a thread of its own
def test_an_id_ending_like_a_route_is_routed_as_the_client_encoded_it():
    # Django routes the decoded path: without the path as sent, the url of "hx/runs" answered
    # the runs of "hx".
    token = Token.objects.create(user=User.objects.create_user("bob")).key
    for iid in ("hx", "hx/runs"):
        inst = factories.instance(instance_id=iid, current_execution_id=f"{iid}|r1")
        factories.run(inst, execution_id=f"{iid}|r1")
    status, detail = _asgi_get(b"/api/instances/orders/hx%2Fruns/", token)
    assert (status, detail["instance_id"]) == (200, "hx/runs")
    assert detail["url"] == "http://127.0.0.1/api/instances/orders/hx%2Fruns/"
    runs_path = detail["runs_url"].removeprefix("http://127.0.0.1")
    status, runs = _asgi_get(runs_path.encode(), token)
    assert [r["execution_id"] for r in runs["results"]] == ["hx/runs|r1"]
    status, runs = _asgi_get(b"/api/instances/orders/hx/runs/", token)
    assert [r["execution_id"] for r in runs["results"]] == ["hx|r1"]
    status, history = _asgi_get(b"/api/instances/orders/hx%2Fruns/history/", token)
    assert (status, history["run"]) == (200, "hx/runs|r1")
    status, missing = _asgi_get(b"/api/instances/orders/hx%2Fhistory/", token)
    assert status == 404
    assert missing["detail"].startswith("no instance 'hx/history' indexed from engine 'orders'")
    assert _asgi_get(b"/api/instances/orders/hx%00%2Fruns/", token)[0] == 404


@pytest.mark.django_db(transaction=True)  # the ASGI handler reads in a thread of its own
def test_a_request_through_the_asgi_application_leaves_no_database_connection_open():
    # asgi_get returned with the last part of the body, and its event loop then cancelled
    # Django's handler before it ended the request: the connection of the request's thread
    # stayed open until the garbage collector came by, at worst to the end of the session, and
    # the test database could not be dropped ("being accessed by other users").
    import gc

    from tests.console.support import wait_for

    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL's sessions (SQLite has none to count)")

    def others() -> int:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND backend_type = 'client backend' AND pid <> pg_backend_pid()"
            )
            return int(cursor.fetchone()[0])

    token = Token.objects.create(user=User.objects.create_user("bob")).key
    gc.collect()  # what an earlier test left to it
    before = others()
    gc.disable()  # the collector would close the connection left open, some time later
    try:
        for _ in range(3):
            assert _asgi_get(b"/api/engines/", token)[0] == 200
        wait_for(lambda: others() <= before, timeout=5)  # a backend ends just after its client
    finally:
        gc.enable()


@pytest.mark.parametrize(
    "url",
    [
        "/api/instances/?stauts=FAILED",
        "/api/instances/orders/m/runs/?limt=1",
        "/api/instances/orders/m/history/?types=taskCompleted",
        # Those that take none: a filter sent to the wrong one seemed applied.
        "/api/instances/orders/m/?status=FAILED",
        "/api/engines/?name=orders",
        "/api/?limit=1",
    ],
)
def test_a_parameter_the_endpoint_doesnt_take_is_refused_not_ignored(api, url):
    # Ignored, a misspelt filter lists everything, as if everything matched it.
    inst = factories.instance(instance_id="m", status="COMPLETED")
    factories.run(inst, execution_id="r1")
    response = api.get(url)
    assert response.status_code == 400
    ((name, (reason,)),) = response.json().items()
    assert name == url.split("?")[1].split("=")[0]
    assert reason.startswith(
        ("unknown parameter; expected some of ", "unknown parameter; this endpoint takes none")
    )
    assert api.get(url.split("?")[0] + "?format=json").status_code == 200  # DRF's own


@pytest.mark.parametrize("url", ["/api/instances/", "/api/engines/", "/api/instances/orders/m/"])
def test_an_unknown_format_is_refused_as_a_parameter_not_a_missing_endpoint(api, url):
    # DRF answered 404 "Not found.": a client read it as an endpoint or instance not there.
    factories.instance(instance_id="m")
    response = api.get(url + "?format=xml")
    assert response.status_code == 400
    assert response.json() == {"format": ["unknown format; expected json"]}
    assert api.get(url + "?format=json").status_code == 200


def test_every_parameter_the_api_takes_empty_the_schema_allows_empty(api):
    """Forms and clients that send every parameter send empty ones, taken as not given; a
    schema saying ``minLength: 1``, or a number, boolean or time without ``allowEmptyValue``,
    makes validating clients (and schema-driven test tools) refuse to send what works."""
    from jsonschema import Draft202012Validator

    inst = factories.instance(instance_id="m")
    factories.run(inst, execution_id="r1")
    spec = api.get("/api/schema/", HTTP_ACCEPT="application/json").json()
    checked = []
    for path, item in spec["paths"].items():
        url = path.replace("{engine}", "orders").replace("{instance_id}", "m")
        for param in item["get"].get("parameters", []):
            if param["in"] != "query":
                continue
            assert api.get(f"{url}?{param['name']}=").status_code == 200, (path, param["name"])
            assert param.get("allowEmptyValue") is True, (path, param["name"])
            checked.append(param["name"])
            if param["schema"].get("type") == "string" and "format" not in param["schema"]:
                errors = list(Draft202012Validator(param["schema"]).iter_errors(""))
                assert not errors, (path, param["name"], [e.message for e in errors])
    assert {"created_after", "limit", "unreadable", "after", "status", "q", "ordering"} <= set(
        checked
    )


def test_a_request_django_refuses_before_the_api_reads_it_is_a_400_the_schema_describes(api):
    """A Host not allowed, or more than 1,000 query parameters (Django's limit), is answered
    ``{"detail": "Bad request."}`` before any view runs: the schema's 400 held only the reasons
    per parameter, whose values are lists, so a validating client failed to read it."""
    spec = api.get("/api/schema/", HTTP_ACCEPT="application/json").json()
    too_many = "/api/instances/?" + "&".join(["status=FAILED"] * 1001)
    assert _conforms(api, spec, "/api/instances/", too_many, status=400) == {
        "detail": "Bad request."
    }
    _conforms(api, spec, "/api/engines/", "/api/engines/", status=400, HTTP_HOST="evil.example")
    # The reasons per parameter are still what a refused parameter is answered.
    assert _conforms(api, spec, "/api/instances/", "/api/instances/?status=NOPE", status=400)[
        "status"
    ]


def test_the_schema_says_the_lists_are_taken_comma_separated_too(api):
    """An array parameter's schema says repeated parameters (form, exploded); the API also
    takes ``status=RUNNING,FAILED``, as README shows it: the description says so."""
    inst = factories.instance(instance_id="m", status="FAILED")
    factories.run(inst, execution_id="r1")
    spec = api.get("/api/schema/", HTTP_ACCEPT="application/json").json()
    arrays = [
        (path, param)
        for path, item in spec["paths"].items()
        for param in item["get"].get("parameters", [])
        if param["schema"].get("type") == "array"
    ]
    assert {param["name"] for _, param in arrays} == {"engine", "status", "type"}
    for path, param in arrays:
        assert "comma-separated" in param.get("description", ""), (path, param["name"])
    assert ids(api.get("/api/instances/?status=running,failed&engine=orders,orders")) == ["m"]


def _bounds(schema):
    """(accepted, refused) query values of a parameter's schema: its bounds and choices, and a
    step past them. Free strings are left out: which of them match depends on the data."""
    if schema.get("type") == "array":
        return _bounds(schema["items"])
    if "enum" in schema:
        return [v for v in schema["enum"] if v], ["nope"]
    if schema.get("type") == "integer":
        low, high = schema.get("minimum"), schema.get("maximum")
        accepted = [v for v in (low, high) if v is not None]
        refused = [
            "1.5",
            *([] if low is None else [low - 1]),
            *([] if high is None else [high + 1]),
        ]
        return accepted, refused
    if schema.get("type") == "boolean":
        return ["true", "false"], ["maybe"]
    if schema.get("format") == "date-time":
        return ["2026-01-01T10:00:00Z"], ["yesterday"]
    if "maxLength" in schema:
        return [], ["x" * (schema["maxLength"] + 1)]
    return [], []


def test_the_api_takes_what_its_schema_says_and_refuses_the_rest(api):
    """A cheap check of the served schema against the running API (a schema-driven fuzzer does
    more): it is a valid OpenAPI 3.0 document, and each query parameter's bounds and choices
    are the ones the API applies: one inside is answered 200, one past them 400."""
    from drf_spectacular.validation import validate_schema

    inst = factories.instance(instance_id="m")
    factories.run(inst, execution_id="r1")
    spec = api.get("/api/schema/", HTTP_ACCEPT="application/json").json()
    validate_schema(spec)
    tried = 0
    for path, item in spec["paths"].items():
        url = path.replace("{engine}", "orders").replace("{instance_id}", "m")
        for param in item["get"].get("parameters", []):
            if param["in"] != "query":
                continue
            accepted, refused = _bounds(param["schema"])
            for value, status in [(v, 200) for v in accepted] + [(v, 400) for v in refused]:
                response = api.get(url, {param["name"]: value})
                assert response.status_code == status, (path, param["name"], value)
                tried += 1
    assert tried > 40


def test_a_cursor_is_refused_with_other_filters_than_it_was_made_for(api):
    for i in range(6):
        factories.instance(instance_id=f"r{i}", status="RUNNING")
    for i in range(2):
        factories.instance(instance_id=f"f{i}", status="FAILED")
    second = api.get(api.get("/api/instances/?status=RUNNING&limit=2").json()["next"])
    assert second.json()["start"] == 2
    # The next page's link, its filter edited by hand: the place it names is a place among
    # the running instances, and "2 before it" is no position among the failed ones.
    edited = second.json()["next"].replace("status=RUNNING", "status=FAILED")
    response = api.get(edited)
    assert response.status_code == 400
    assert response.json() == {"cursor": ["a cursor of other filters than these"]}
    # The same filters written otherwise (another case, a value given twice) are the same.
    same = second.json()["next"].replace("status=RUNNING", "status=running&status=RUNNING")
    assert ids(api.get(same)) == ["r1", "r0"]
    assert api.get(same).json()["start"] == 4


def test_a_cursor_handed_out_before_cursors_named_their_filters_works_without_a_position(api):
    rows = [factories.instance(instance_id=f"o{i}", created_at=factories.T0) for i in range(5)]
    when = rows[3].created_at.isoformat()
    # ["time", pk, "-created", "after", 2]: a position, but no filters to check it against.
    page = api.get(
        f"/api/instances/?limit=2&cursor={_cursor(when, rows[3].pk, '-created', 'after', 2)}"
    )
    assert ids(page) == ["o2", "o1"]
    assert page.json()["start"] is None
    assert api.get(page.json()["next"]).json()["start"] is None
