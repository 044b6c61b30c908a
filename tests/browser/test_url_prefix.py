"""The console under a path prefix, in chromium: daphne started as README says with
``CONSOLE_URL_PREFIX=/dapr``, reached as through a proxy that passes the path on as it is, and
as through one that takes the prefix off."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import connection

from tests.console import factories
from tests.console.support import free_port
from tests.pages import seed

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

PASSWORD = "pw-123456789"
REPO = Path(__file__).resolve().parents[2]


def _database_url() -> str:
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    return f"postgres://{db['USER']}:{db['PASSWORD']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"


@pytest.fixture
def console(tmp_path: Path) -> Iterator[str]:
    """daphne on the test's database under /dapr; yields its root URL (without the prefix)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    env |= {
        "CONSOLE_URL_PREFIX": "/dapr",
        "DATABASE_URL": _database_url(),
        "CONSOLE_VAR_DIR": str(tmp_path),
    }
    log = open(tmp_path / "daphne.log", "wb")  # noqa: SIM115 - owned by the process
    process = subprocess.Popen(
        [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port)]
        + ["console.asgi:application"],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    log.close()
    root = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, (tmp_path / "daphne.log").read_text()
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, (tmp_path / "daphne.log").read_text()
                time.sleep(0.1)
        yield root
    finally:
        process.terminate()
        process.wait(10)


def listed_ids(page: Any) -> list[str]:
    return page.locator("tr.instance-row td.mono a").all_inner_texts()


def styled_and_scripted(page: Any) -> None:
    """The style sheet applied, htmx and the console's script run (it shows the Times switch)."""
    page.wait_for_function(
        """() => [...document.styleSheets].some(
            s => s.href && s.href.includes('/dapr/static/console.css') && s.cssRules.length > 0)"""
    )
    page.wait_for_function("() => window.htmx !== undefined")
    page.wait_for_function("() => !document.getElementById('tz-toggle').hidden")


def test_a_person_uses_the_console_under_a_path_prefix(page: Any, console: str) -> None:
    seeded = seed.seed_all()
    for n in range(60):  # more than a page
        factories.instance(seeded.engine, instance_id=f"p-{n:03d}", status="RUNNING")
    User.objects.create_user("alice", password=PASSWORD)
    base = f"{console}/dapr"

    page.goto(f"{base}/instances/?status=RUNNING")
    assert page.url.startswith(f"{base}/login/?next=")
    page.fill("input[name=username]", "alice")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/instances/?status=RUNNING")
    styled_and_scripted(page)
    assert [c["path"] for c in page.context.cookies() if c["name"] == "sessionid"] == ["/dapr"]
    first = listed_ids(page)
    assert len(first) == 50

    # Paging, through htmx: the next page, and the address keeps the prefix.
    page.click("#results-next")
    page.wait_for_function("() => document.querySelectorAll('tr.instance-row').length < 50")
    page.wait_for_function("() => !document.querySelector('.htmx-request')")
    assert page.url.startswith(f"{base}/instances/?") and "cursor=" in page.url
    assert set(listed_ids(page)).isdisjoint(first)

    # A filter change, through htmx.
    page.goto(f"{base}/instances/")
    styled_and_scripted(page)
    page.check("input[name=status][value=FAILED]")
    page.wait_for_function(
        """() => !document.querySelector('.htmx-request')
            && [...document.querySelectorAll('tr.instance-row td.instance-status')]
                .every(td => td.textContent.includes('Failed'))"""
    )
    assert page.url.startswith(f"{base}/instances/?") and "status=FAILED" in page.url
    failed = listed_ids(page)
    assert failed

    # An instance's page, its timeline and history loaded with their scripts.
    page.click(f"tr.instance-row td.mono a >> text={failed[0]}")
    page.wait_for_url(f"{base}/instances/orders/{failed[0]}/")
    styled_and_scripted(page)
    page.locator("#history-type").select_option(index=1)
    page.wait_for_function("() => location.search.includes('type=')")
    assert page.url.startswith(f"{base}/instances/orders/{failed[0]}/")

    # The API and its schema, with the session.
    answer = page.request.get(f"{base}/api/instances/?limit=1").json()
    # Its links are whole URLs, with the prefix.
    assert answer["results"][0]["url"].startswith(f"{base}/api/instances/orders/")
    assert answer["next"].startswith(f"{base}/api/instances/?")
    detail = page.request.get(answer["results"][0]["url"]).json()
    assert detail["history_url"].startswith(f"{base}/api/instances/orders/")
    schema = page.request.get(f"{base}/api/schema/?format=json").json()
    assert schema["servers"] == [{"url": "/dapr"}] and "/api/instances/" in schema["paths"]

    # Through a proxy that takes the prefix off: the same pages, links with the prefix.
    from playwright.sync_api import Error as PlaywrightError

    stripped: list[str] = []

    def strip(route: Any) -> None:
        # (The browser sends the cookies of the address it asked for, as behind a proxy.)
        url = route.request.url
        stripped.append(url)
        cookies = "; ".join(f"{c['name']}={c['value']}" for c in page.context.cookies(url))
        headers = {**route.request.headers, "cookie": cookies}
        answer = route.fetch(url=url.replace("/dapr/", "/", 1), headers=headers, max_redirects=0)
        try:
            route.fulfill(response=answer)
        except PlaywrightError as exc:
            # A request the page gave up meanwhile (htmx replaces a request in flight when the
            # filter changes again; a navigation cancels the last one's).
            if "already handled" not in str(exc):
                raise

    page.route(f"{base}/**", strip)
    page.goto(f"{base}/instances/")
    styled_and_scripted(page)
    page.check("input[name=status][value=FAILED]")
    page.wait_for_function(
        "() => !document.querySelector('.htmx-request') "
        "&& document.querySelectorAll('tr.instance-row').length === 1"
    )
    assert sorted(listed_ids(page)) == sorted(failed)
    assert page.url.startswith(f"{base}/instances/?") and "status=FAILED" in page.url
    href = page.get_attribute("tr.instance-row td.mono a", "href")
    assert href is not None and href.startswith("/dapr/instances/orders/")
    assert f"{base}/static/console.css" in stripped and len(stripped) > 4
    # The API's links too (a fetch of the page goes through the proxy; page.request does not).
    fetched = page.evaluate("async url => (await fetch(url)).json()", f"{base}/api/instances/")
    assert fetched["next"].startswith(f"{base}/api/instances/?")
    assert f"{base}/api/instances/" in stripped
    page.unroute(f"{base}/**")

    # Signing out lands on the login page, under the prefix.
    page.goto(f"{base}/")
    page.click("nav form button[type=submit]")
    page.wait_for_url(f"{base}/login/")
    page.wait_for_function("() => [...document.styleSheets].some(s => s.cssRules.length > 0)")
