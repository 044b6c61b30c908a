"""The console under a path prefix (``CONSOLE_URL_PREFIX=/dapr``), through Django's ASGI test
client as daphne hands it the requests: every link a page or the API writes, every redirect and
every static file's URL carries the prefix."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.contrib.auth.models import User
from django.test import AsyncClient
from django.test.utils import override_script_prefix

from tests.console import factories

PREFIX = "/dapr"
# Attributes that hold a URL (hx-push-url="true" pushes the one of hx-get).
_LINK = re.compile(r'\b(?:href|src|action|hx-get|hx-post|hx-push-url)="([^"]*)"')


@pytest.fixture
def under_prefix(settings: Any) -> Iterator[None]:
    # What console/settings.py sets for CONSOLE_URL_PREFIX=/dapr; Django's ASGI handler sets
    # the script prefix of each request, which the test client's handler leaves as it is.
    settings.FORCE_SCRIPT_NAME = PREFIX
    settings.STATIC_URL = f"{PREFIX}/static/"
    settings.SESSION_COOKIE_PATH = settings.CSRF_COOKIE_PATH = PREFIX
    with override_script_prefix(PREFIX + "/"):
        yield


class Client:
    """Django's AsyncClient, called from a sync test (its views run in this thread, inside the
    test's transaction)."""

    def __init__(self) -> None:
        self.client = AsyncClient()

    def get(self, path: str, **kwargs: Any) -> Any:
        return async_to_sync(self.client.get)(path, **kwargs)

    def post(self, path: str, data: dict[str, str], **kwargs: Any) -> Any:
        return async_to_sync(self.client.post)(path, data, **kwargs)


def links(html: str) -> list[str]:
    return [u.replace("&amp;", "&") for u in _LINK.findall(html) if u != "true"]


def assert_prefixed(urls: list[str], where: str) -> None:
    # A link relative to the page's own path ("?status=FAILED", "#history") keeps its prefix.
    paths = [u for u in urls if u.startswith("/") or "://" in u]
    assert paths, where
    # (The admin's "View site" is the prefix itself.)
    wrong = [
        u for u in paths if not (u.removeprefix("http://testserver") + "/").startswith(PREFIX + "/")
    ]
    assert wrong == [], f"{where}: {wrong}"


@pytest.fixture
def signed_in(under_prefix: None, user: User, seeded: Any) -> Client:
    user.is_staff = user.is_superuser = True  # the admin's pages too
    user.save()
    client = Client()
    client.client.force_login(user)
    return client


def test_every_link_of_every_page_carries_the_prefix(signed_in: Client) -> None:
    base = f"{PREFIX}/instances/orders/g-fan-running/"
    pages = [
        f"{PREFIX}/",  # the engines
        f"{PREFIX}/instances/",
        f"{PREFIX}/instances/?status=COMPLETED&status=FAILED&limit=2",
        f"{PREFIX}/instances/orders/g-fan-running:0001/",  # a child: its parent's link
        base,
        f"{base}runs/1/",
        f"{base}runs/1/events/2/",
        f"{base}runs/1/history/",
        f"{PREFIX}/instances/orders/g-two-steps/payload/input/",
        f"{PREFIX}/admin/",
        f"{PREFIX}/instances/nowhere/x/",  # the 404 page
    ]
    seen: set[str] = set()
    for page in pages:
        response = signed_in.get(page)
        assert response.status_code == (404 if "nowhere" in page else 200), page
        found = links(response.content.decode())
        assert_prefixed(found, page)
        seen.update(found)
    # The fragment htmx swaps in writes its links with the prefix too.
    fragment = signed_in.get(f"{PREFIX}/instances/?status=COMPLETED", headers={"HX-Request": "1"})
    assert_prefixed(links(fragment.content.decode()), "the list's fragment")
    for expected in (
        f"{PREFIX}/static/console.css",
        f"{PREFIX}/static/console.js",
        f"{PREFIX}/static/favicon.svg",
        f"{PREFIX}/logout/",
        f"{PREFIX}/api/",
        f"{PREFIX}/instances/orders/g-fan-running/",  # the child's parent link
        f"{base}runs/1/history.json",
    ):
        assert expected in seen, expected
    favicon = signed_in.get(f"{PREFIX}/favicon.ico")
    assert favicon.status_code == 301 and favicon["Location"] == f"{PREFIX}/static/favicon.svg"


def test_the_runs_pages_and_a_run_by_its_execution_id_keep_the_prefix(signed_in: Client) -> None:
    inst = factories.instance(instance_id="eternal", status="RUNNING")
    for n in range(1, 26):
        factories.run(inst, execution_id=f"exec-{n}", ordinal=n)
    base = f"{PREFIX}/instances/orders/eternal/"
    for page in (base, f"{base}?runs_page=2", f"{base}runs/3/"):
        found = links(signed_in.get(page).content.decode())
        assert_prefixed(found, page)
    assert f"{base}runs/3/?runs_page=1" in found and f"{base}?run=exec-3" in found
    fragment = signed_in.get(
        f"{base}?runs_page=2", headers={"HX-Request": "1", "HX-Target": "runs"}
    )
    assert_prefixed(links(fragment.content.decode()), "the runs' fragment")
    assert signed_in.get(f"{base}?run=exec-3")["Location"] == f"{base}runs/3/"
    for missing in (f"{base}?run=nope", f"{base}?runs_page=9"):
        response = signed_in.get(missing)
        assert response.status_code == 404
        assert_prefixed(links(response.content.decode()), missing)


@pytest.mark.parametrize(
    ("proxied", "origin"),
    [(False, "http://testserver"), (True, "https://testserver")],
)
def test_every_link_of_the_api_is_a_whole_url_with_the_prefix(
    signed_in: Client, seeded: Any, settings: Any, proxied: bool, origin: str
) -> None:
    # A client follows them as they are, as the root's links and DRF's own pagination: not
    # paths it has to join to the host itself.
    headers: dict[str, str] = {}
    if proxied:  # behind a TLS proxy (CONSOLE_TRUST_X_FORWARDED_PROTO=1)
        settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
        headers = {"X-Forwarded-Proto": "https"}

    def get(url: str) -> Any:
        response = signed_in.get(url.removeprefix(origin), headers=headers)
        assert response.status_code == 200, (url, response.content)
        return response

    def answer(url: str) -> Any:
        return get(url).json()

    urls: list[str] = list(answer(f"{PREFIX}/api/").values())
    page = answer(f"{PREFIX}/api/instances/?limit=2")
    urls += [page["next"], *(row["url"] for row in page["results"])]
    child = answer(answer(f"{PREFIX}/api/instances/?id_prefix=g-fan-running:")["results"][0]["url"])
    urls += [child["url"], child["runs_url"], child["history_url"], child["parent"]["url"]]
    urls.append(child["children_url"])
    history = answer(f"{PREFIX}/api/instances/orders/g-two-steps/history/?limit=2")
    urls.append(history["next"])
    factories.run(seeded.instances["two_steps"])  # a second run: a next page of runs
    runs = answer(f"{PREFIX}/api/instances/orders/g-two-steps/runs/?limit=1")
    urls.append(runs["next"])
    assert [u for u in urls if not u.startswith(f"{origin}{PREFIX}/api/")] == []
    # Each of them answers, through the prefix.
    for url in urls:
        get(url)


def test_a_sign_in_through_the_prefix_lands_on_the_page_asked_for(
    under_prefix: None, user: User, seeded: Any
) -> None:
    client = Client()
    asked = f"{PREFIX}/instances/?status=FAILED"
    to_login = client.get(asked)
    assert to_login.status_code == 302
    login = to_login["Location"]
    assert login == f"{PREFIX}/login/?next={PREFIX}/instances/%3Fstatus%3DFAILED"
    form = client.get(login)
    assert form.status_code == 200
    assert_prefixed(links(form.content.decode()), "the login page")
    signed = client.post(login, {"username": "alice", "password": "pw-123456789", "next": asked})
    assert signed.status_code == 302 and signed["Location"] == asked
    assert signed.cookies["sessionid"]["path"] == PREFIX
    assert client.get(asked).status_code == 200
    # Signed in without a page asked for: the engines page; signed out: the login page.
    assert client.post(f"{PREFIX}/logout/", {})["Location"] == f"{PREFIX}/login/"
    home = client.post(f"{PREFIX}/login/", {"username": "alice", "password": "pw-123456789"})
    assert home["Location"] == f"{PREFIX}/"
    # The admin's sign-in too.
    client.post(f"{PREFIX}/logout/", {})
    admin = client.get(f"{PREFIX}/admin/")
    assert admin["Location"] == f"{PREFIX}/admin/login/?next={PREFIX}/admin/"
