"""Fixtures of the browser tests: Debian's chromium driven by Playwright against a live Django
server, over instances a real devengine ran with real Dapr SDK workers and the indexer stored.

Playwright is never allowed to download a browser: without ``chromium`` on the PATH the tests
skip with the reason, except under ``CI=true``, where they fail.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from typing import Any

import pytest

from tests.needs import need


@pytest.fixture(scope="module")
def allow_sync_orm_beside_playwright() -> Iterator[None]:
    # Playwright's sync API keeps an asyncio loop running in this thread; Django would take
    # every ORM call of the test for one made from async code and refuse it.
    old = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    yield
    if old is None:
        os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
    else:
        os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = old


@pytest.fixture(scope="module")
def browser(allow_sync_orm_beside_playwright: None) -> Iterator[Any]:
    executable = shutil.which("chromium")
    need(executable is not None, "Debian's chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=executable,
            # As root in a container, chromium's sandbox can't start.
            args=["--no-sandbox", "--disable-dev-shm-usage"],
        )
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(10_000)
    page = context.new_page()
    # Anything the Content-Security-Policy blocks (or any other script error) fails the test.
    errors: list[str] = []
    # (htmx reports a request it aborted for a newer one, hx-sync "replace", as an error.)
    benign = ("htmx:afterRequest", "htmx:sendAbort")
    page.on(
        "console",
        lambda m: (
            errors.append(m.text) if m.type == "error" and not m.text.startswith(benign) else None
        ),
    )
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield page
    context.close()
    assert errors == [], "\n".join(errors)
