"""``CONSOLE_URL_PREFIX``: the setting, and requests as a proxy passes them on (the prefix kept
or taken off). Pages and the API under a prefix: tests/pages/test_url_prefix.py and the
browser tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.core.exceptions import ImproperlyConfigured
from django.urls import URLResolver, get_resolver

from console.env import envurlprefix
from console.prefix import UnderPrefix

TOP = ("admin", "api", "static")


@pytest.mark.parametrize(
    ("value", "prefix"),
    [
        ("", ""),
        ("/", ""),
        ("/dapr", "/dapr"),
        ("/dapr/", "/dapr"),
        (" /tools/dapr/ ", "/tools/dapr"),
        ("/v1.2/dapr-console_A~b", "/v1.2/dapr-console_A~b"),
        ("/apis", "/apis"),  # a segment of its own, not a console path's start
    ],
)
def test_a_prefix_is_read_without_its_trailing_slash(value, prefix):
    assert envurlprefix("P", TOP, {"P": value}) == prefix
    assert envurlprefix("P", TOP, {}) == ""


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("dapr", "P='dapr' must start with / (like /dapr)"),
        ("http://x/dapr", "must start with /"),
        ("//dapr", "P='//dapr': each segment is letters, digits and -._~"),
        ("/dapr//x", "each segment"),
        ("/dapr/../x", "each segment"),
        ("/./dapr", "each segment"),
        ("/..", "each segment"),
        ("/da pr", "each segment"),
        ("/dapr%2Fx", "each segment"),
        ("/dapr?x=1", "each segment"),
        ("/d\u00e4pr", "each segment"),
        ("/api", "P='/api' starts with one of the console's own paths (admin, api, static)"),
        ("/static/dapr", "starts with one of the console's own paths"),
    ],
)
def test_a_malformed_prefix_is_refused_naming_the_variable(value, message):
    with pytest.raises(ImproperlyConfigured) as exc:
        envurlprefix("P", TOP, {"P": value})
    assert message in str(exc.value)


def test_the_reserved_paths_are_every_first_segment_the_console_routes():
    # A prefix that is one of them could not be told from a path a proxy took the prefix off.
    from django.conf import settings

    first = set()
    for pattern in get_resolver().url_patterns:
        route = str(pattern.pattern).split("/")[0]
        if route:
            first.add(route)
        elif isinstance(pattern, URLResolver):  # the pages, included at the root
            first |= {str(p.pattern).split("/")[0] for p in pattern.url_patterns} - {""}
    first.add(settings.STATIC_URL.strip("/").split("/")[-1])
    assert first == set(settings.CONSOLE_TOP_PATHS)


def _settings_of(env: dict[str, str]) -> dict[str, Any]:
    names = [
        "FORCE_SCRIPT_NAME",
        "STATIC_URL",
        "SESSION_COOKIE_PATH",
        "CSRF_COOKIE_PATH",
        "CONSOLE_URL_PREFIX",
    ]
    code = (
        "import json, console.asgi; from django.conf import settings; "
        f"print(json.dumps({{n: getattr(settings, n) for n in {names!r}}} | "
        "{'SERVERS': settings.SPECTACULAR_SETTINGS['SERVERS']}))"
    )
    base = {k: v for k, v in os.environ.items() if k not in ("DJANGO_SETTINGS_MODULE",)}
    base.pop("CONSOLE_URL_PREFIX", None)
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=Path(__file__).parents[2], env={**base, **env}, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


def test_the_prefix_sets_the_script_name_static_url_cookie_paths_and_api_server():
    assert _settings_of({"CONSOLE_URL_PREFIX": "/tools/dapr/"}) == {
        "FORCE_SCRIPT_NAME": "/tools/dapr",
        "STATIC_URL": "/tools/dapr/static/",
        "SESSION_COOKIE_PATH": "/tools/dapr",
        "CSRF_COOKIE_PATH": "/tools/dapr",
        "CONSOLE_URL_PREFIX": "/tools/dapr",
        "SERVERS": [{"url": "/tools/dapr"}],
    }
    # Without it, Django's defaults as before.
    assert _settings_of({}) == {
        "FORCE_SCRIPT_NAME": None,
        "STATIC_URL": "/static/",
        "SESSION_COOKIE_PATH": "/",
        "CSRF_COOKIE_PATH": "/",
        "CONSOLE_URL_PREFIX": "",
        "SERVERS": [],
    }


def _as_handed_on(path: str, raw: bytes | None, kind: str = "http") -> dict[str, Any]:
    seen: list[dict[str, Any]] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen.append(scope)

    scope = {"type": kind, "path": path, "query_string": b"q=1"}
    if raw is not None:
        scope["raw_path"] = raw
    async_to_sync(UnderPrefix(app, "/dapr"))(scope, None, None)
    return seen[0]


@pytest.mark.parametrize(
    ("path", "raw", "handed_on", "raw_handed_on"),
    [
        # Passed on as it is (most ingresses, nginx's proxy_pass without a URI).
        ("/dapr/instances/", b"/dapr/instances/", "/dapr/instances/", b"/dapr/instances/"),
        ("/dapr/api/instances/l/a/b/", b"/dapr/api/instances/l/a%2Fb/", None, None),
        # The proxy took the prefix off (nginx's proxy_pass http://console/;), or a request
        # straight to daphne.
        ("/instances/", b"/instances/", "/dapr/instances/", b"/dapr/instances/"),
        ("/api/instances/l/a/b/", b"/api/instances/l/a%2Fb/", None, None),
        ("/", b"/", "/dapr/", b"/dapr/"),
        ("/daprx/", b"/daprx/", "/dapr/daprx/", b"/dapr/daprx/"),
        # The prefix alone is the home page.
        ("/dapr", b"/dapr", "/dapr/", b"/dapr/"),
        ("/instances/", None, "/dapr/instances/", None),
    ],
)
def test_a_request_reaches_the_console_with_the_prefix_however_the_proxy_passed_it(
    path, raw, handed_on, raw_handed_on
):
    if handed_on is None:  # the id's encoded '/' stays as sent
        handed_on = "/dapr/api/instances/l/a/b/"
        raw_handed_on = b"/dapr/api/instances/l/a%2Fb/"
    for kind in ("http", "websocket"):
        scope = _as_handed_on(path, raw, kind)
        assert scope["path"] == handed_on and scope.get("raw_path") == raw_handed_on
        assert scope["root_path"] == "/dapr" and scope["query_string"] == b"q=1"


def test_a_lifespan_event_is_handed_on_as_it_came():
    seen: list[dict[str, Any]] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen.append(scope)

    async_to_sync(UnderPrefix(app, "/dapr"))({"type": "lifespan"}, None, None)
    assert seen == [{"type": "lifespan"}]
