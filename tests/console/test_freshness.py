"""Looking at an instance asks the indexer to read it again (workflows_ui.freshness)."""

import sqlite3
import time
from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.utils import timezone
from rest_framework.test import APIClient

from tests.console import factories
from workflows_ui.models import Engine, InstanceCheck, RefreshRequest

pytestmark = pytest.mark.django_db


@pytest.fixture
def user():
    return User.objects.create_user("alice", password="pw-123456789")


@pytest.fixture
def page(client, user):
    client.force_login(user)
    return client


@pytest.fixture
def api(user):
    client = APIClient()
    client.force_login(user)
    return client


def finished(read_ago: float | None = 3600, due_in: float = 3600, **kwargs):
    """A finished instance the indexer read ``read_ago`` seconds ago (None: not recorded) and
    reads again in ``due_in`` seconds."""
    inst = factories.instance(instance_id=kwargs.pop("instance_id", "order-7"), **kwargs)
    now = timezone.now()
    InstanceCheck.objects.create(
        instance=inst,
        engine=inst.engine,
        due_at=now + timedelta(seconds=due_in),
        interval=3600,
        read_at=None if read_ago is None else now - timedelta(seconds=read_ago),
    )
    return inst


def hints():
    return sorted(RefreshRequest.objects.values_list("engine__name", "instance_id"))


def test_a_finished_instance_read_long_ago_is_read_again_when_its_page_is_opened(page):
    finished()
    response = page.get("/instances/orders/order-7/")
    assert response.status_code == 200
    assert hints() == [("orders", "order-7")]
    assert b"it reads it again now: reload in a second or two" in response.content
    # A reload while the hint waits writes nothing more, and says the same.
    first = RefreshRequest.objects.get()
    again = page.get("/instances/orders/order-7/")
    assert b"it reads it again now" in again.content
    assert list(RefreshRequest.objects.values_list("pk", "requested_at")) == [
        (first.pk, first.requested_at)
    ]


@pytest.mark.parametrize("read_ago", [3600, None])
def test_the_api_asks_for_a_read_as_the_page_does(api, read_ago):
    finished(read_ago=read_ago)
    response = api.get("/api/instances/orders/order-7/")
    assert response.status_code == 200
    assert hints() == [("orders", "order-7")]
    read_at = response.json()["read_at"]
    assert (read_at is None) == (read_ago is None)


def test_an_instance_read_a_moment_ago_is_not_read_again(page, api):
    changed = timezone.now() - timedelta(hours=5)
    inst = finished(read_ago=1, indexed_at=changed)
    response = page.get("/instances/orders/order-7/")
    assert b"(reload for newer)" in response.content
    assert b"reads it again now" not in response.content
    assert api.get("/api/instances/orders/order-7/").status_code == 200
    assert hints() == []
    # The page says when it was read, not when it last changed.
    as_of = response.content.decode().split('id="as-of"')[1].split("</p>")[0]
    assert inst.schedule.read_at.strftime("%H:%M:%S") in as_of
    assert changed.strftime("%H:%M:%S") not in as_of


def test_an_instance_due_for_a_read_anyway_gets_no_hint(page):
    finished(due_in=1)
    response = page.get("/instances/orders/order-7/")
    assert b"it reads it again now" in response.content
    assert hints() == []


def test_no_hint_for_a_tombstone_an_unreadable_instance_or_an_engine_unindexed_or_down(page):
    factories.instance(instance_id="gone", purged=True, purged_at=timezone.now())
    failing = finished(instance_id="stuck")
    InstanceCheck.objects.filter(pk=failing.pk).update(
        read_error="deadline exceeded", read_failing_since=timezone.now()
    )
    other = factories.engine("billing", configured=False)
    finished(instance_id="elsewhere", eng=other)
    down = factories.engine("shipping", reachable=False, last_error="connection refused")
    finished(instance_id="waiting", eng=down)
    refused = factories.engine(
        "stock",
        reachable=True,
        last_error="authentication error: api token mismatch",
        last_error_at=timezone.now(),
        last_pass_at=timezone.now() - timedelta(minutes=1),
    )
    assert refused.failing
    finished(instance_id="refused", eng=refused)
    paths = (
        "orders/gone",
        "orders/stuck",
        "billing/elsewhere",
        "shipping/waiting",
        "stock/refused",
    )
    for path in paths:
        response = page.get(f"/instances/{path}/")
        assert response.status_code == 200
        assert b"reads it again now" not in response.content
    assert hints() == []


def test_an_id_not_indexed_yet_is_looked_for_and_the_404_says_so(page, api):
    factories.engine()
    response = page.get("/instances/orders/started-just-now/")
    assert response.status_code == 404
    assert b'id="looking-for"' in response.content
    assert b"started-just-now" in response.content
    response = api.get("/api/instances/orders/and-another/")
    assert response.status_code == 404
    assert "the indexer now asks the engine for it" in response.json()["detail"]
    assert hints() == [("orders", "and-another"), ("orders", "started-just-now")]


def test_no_look_for_an_id_too_long_or_on_an_engine_unknown_unindexed_or_down(page, api):
    factories.engine()
    factories.engine("billing", configured=False)
    factories.engine("shipping", reachable=False)
    for path in ("nosuch/x", "billing/x", "shipping/x", "orders/" + "x" * 513):
        response = page.get(f"/instances/{path}/")
        assert response.status_code == 404
        assert b"looking-for" not in response.content
        response = api.get(f"/api/instances/{path}/")
        assert response.status_code == 404
        assert "asks the engine" not in response.json()["detail"]
    assert hints() == []
    # An id's text is the page's, escaped.
    response = page.get("/instances/orders/%3Cscript%3Ex/")
    assert b'id="looking-for"' in response.content
    assert b"&lt;script&gt;x" in response.content and b"<script>x" not in response.content


@pytest.mark.django_db(transaction=True)
def test_a_busy_sqlite_does_not_hold_the_page_up(page):
    if connection.vendor != "sqlite":
        pytest.skip("PostgreSQL locks rows: a hint waits for no other writer")
    finished()
    engine_pk = Engine.objects.get(name="orders").pk
    # Another process (the indexer's batch) holds SQLite's one write lock.
    other = sqlite3.connect(connection.settings_dict["NAME"], isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        started = time.monotonic()
        response = page.get("/instances/orders/order-7/")
        waited = time.monotonic() - started
        other.execute("ROLLBACK")
    finally:
        other.close()
    assert response.status_code == 200
    assert b"(reload for newer)" in response.content
    assert waited < 10, "the page waited for the write lock (the connection's timeout is 30 s)"
    assert not RefreshRequest.objects.filter(engine=engine_pk).exists()
    # The connection waits as long as before for its other writes.
    with connection.cursor() as cur:
        cur.execute("PRAGMA busy_timeout")
        assert cur.fetchone()[0] == int(connection.settings_dict["OPTIONS"]["timeout"] * 1000)


@pytest.mark.django_db(transaction=True)
def test_a_database_that_takes_no_writes_still_answers_the_page_and_the_api(page, api):
    # A PostgreSQL standby after a failover refuses the hint's write with an error that is no
    # OperationalError; the page and the API only read, and answer as before.
    finished()
    finished(instance_id="order-8")
    read_only = {
        "sqlite": ("PRAGMA query_only = ON", "PRAGMA query_only = OFF"),
        "postgresql": (
            "SET default_transaction_read_only = on",
            "SET default_transaction_read_only = off",
        ),
    }[connection.vendor]
    with connection.cursor() as cur:
        cur.execute(read_only[0])
    try:
        response = page.get("/instances/orders/order-7/")
        from_api = api.get("/api/instances/orders/order-8/")
        missing = page.get("/instances/orders/started-just-now/")
    finally:
        with connection.cursor() as cur:
            cur.execute(read_only[1])
    assert response.status_code == 200
    assert b"(reload for newer)" in response.content
    assert from_api.status_code == 200
    assert missing.status_code == 404 and b"looking-for" not in missing.content
    assert hints() == []


def test_an_engine_no_indexer_runs_is_not_said_to_be_read_again_nor_looked_in(page, api):
    # No runindexer has passed over it for 20 minutes (stale): a hint would wait for one, and
    # the page saying "reload in a second or two" would contradict its own banner.
    last = timezone.now() - timedelta(minutes=20)
    stale = factories.engine(reachable=True, last_pass_at=last)
    Engine.objects.filter(pk=stale.pk).update(created_at=last - timedelta(days=1))
    finished(due_in=-60)
    response = page.get("/instances/orders/order-7/")
    assert b"is not being indexed" in response.content
    assert b"reads it again now" not in response.content
    missing = page.get("/instances/orders/started-just-now/")
    assert missing.status_code == 404 and b"is not being indexed" in missing.content
    assert b"looking-for" not in missing.content
    detail = api.get("/api/instances/orders/and-another/").json()["detail"]
    assert "asks the engine" not in detail
    assert hints() == []
