import logging
import time

import pytest
from django.contrib.auth.models import User

pytestmark = pytest.mark.django_db


def test_it_redirects_anonymous_visitors_to_login(client):
    response = client.get("/")
    assert response.status_code == 302
    assert response["Location"].startswith("/login/")


def test_login_page_renders(client):
    response = client.get("/login/")
    assert response.status_code == 200
    assert b"Log in" in response.content


def test_a_user_logs_in_and_sees_engines(client):
    User.objects.create_user("alice", password="pw-123456789")
    response = client.post("/login/", {"username": "alice", "password": "pw-123456789"})
    assert response.status_code == 302
    response = client.get("/")
    assert response.status_code == 200
    assert b"No engine has been indexed yet" in response.content


@pytest.fixture
def fresh_counts():
    from django.core.cache import cache

    cache.clear()
    yield
    cache.clear()


def test_failed_sign_ins_are_limited_per_username_and_address(client, fresh_counts):
    from console import signin

    User.objects.create_user("alice", password="pw-123456789")
    User.objects.create_user("bob", password="pw-987654321")
    for _ in range(signin.PER_USER):
        wrong = client.post("/login/", {"username": "alice", "password": "guess"})
        assert wrong.status_code == 200 and b"correct username and password" in wrong.content
    # Refused now without the password being checked, even the right one.
    right = client.post("/login/", {"username": "Alice", "password": "pw-123456789"})
    assert right.status_code == 200 and b"Too many failed sign-ins" in right.content
    assert "_auth_user_id" not in client.session
    # The admin's login counts the same way.
    admin = client.post("/admin/login/", {"username": "alice", "password": "pw-123456789"})
    assert b"Too many failed sign-ins" in admin.content
    # Another user from the same address still signs in, and a success clears its count.
    ok = client.post("/login/", {"username": "bob", "password": "pw-987654321"})
    assert ok.status_code == 302


def test_an_attempt_with_no_password_does_not_clear_the_failures(client, fresh_counts):
    # Django's form checks no password when one is left empty, and raises nothing: that
    # attempt was taken for a success, which cleared the username's count of failures.
    from console import signin

    User.objects.create_user("dave", password="pw-123456789")
    for _ in range(signin.PER_USER - 1):
        client.post("/login/", {"username": "dave", "password": "guess"})
    empty = client.post("/login/", {"username": "dave", "password": ""})
    assert empty.status_code == 200 and "_auth_user_id" not in client.session
    client.post("/login/", {"username": "dave", "password": "guess"})
    right = client.post("/login/", {"username": "dave", "password": "pw-123456789"})
    assert b"Too many failed sign-ins" in right.content


def test_many_usernames_tried_from_one_address_are_limited_too(client, fresh_counts):
    from console import signin

    User.objects.create_user("carol", password="pw-123456789")
    for n in range(signin.PER_ADDRESS):
        client.post("/login/", {"username": f"user{n}", "password": "guess"})
    refused = client.post("/login/", {"username": "carol", "password": "pw-123456789"})
    assert b"Too many failed sign-ins" in refused.content
    elsewhere = client.post(
        "/login/", {"username": "carol", "password": "pw-123456789"}, REMOTE_ADDR="10.0.0.9"
    )
    assert elsewhere.status_code == 302


def _sign_in_at_once(monkeypatch, attempts):
    """Posts each (username, password, address) of ``attempts`` to the login page at the same
    moment, each from a thread (a client) of its own, as a web process's requests run; every
    password check takes half a second, as a slow hash does, so that all arrive while the first
    are being checked. Gives the responses, in order, and the passwords checked."""
    import threading

    from django.contrib.auth import forms
    from django.db import connection
    from django.test import Client

    checked = []
    real_authenticate = forms.authenticate

    def slow_authenticate(request=None, **credentials):
        checked.append(credentials["password"])
        time.sleep(0.5)
        return real_authenticate(request, **credentials)

    monkeypatch.setattr(forms, "authenticate", slow_authenticate)
    ready = threading.Barrier(len(attempts))
    responses = [None] * len(attempts)

    def sign_in(n, username, password, address):
        try:
            ready.wait(timeout=30)
            responses[n] = Client(REMOTE_ADDR=address).post(
                "/login/", {"username": username, "password": password}
            )
        finally:
            connection.close()  # this thread's own

    threads = [threading.Thread(target=sign_in, args=(n, *a)) for n, a in enumerate(attempts)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return responses, checked


def _signed_in(response):
    return response is not None and response.status_code == 302


@pytest.mark.django_db(transaction=True)
def test_correct_sign_ins_sent_at_once_all_sign_in(monkeypatch, fresh_counts):
    # They were counted as failures until checked: the sixth for one username was refused.
    from console import signin

    User.objects.create_user("alice", password="pw-123456789")
    at_once = [("alice", "pw-123456789", "10.0.0.1")] * (signin.PER_USER + 1)
    responses, checked = _sign_in_at_once(monkeypatch, at_once)
    assert [_signed_in(r) for r in responses] == [True] * len(at_once)
    assert len(checked) == len(at_once)


@pytest.mark.django_db(transaction=True)
def test_correct_sign_ins_from_one_address_at_once_all_sign_in(monkeypatch, fresh_counts):
    # Behind a proxy without --proxy-headers everyone has its address: the 31st was refused.
    from console import signin

    users = [f"user{n}" for n in range(signin.PER_ADDRESS + 1)]
    for name in users:
        User.objects.create_user(name, password="pw-123456789")
    responses, _ = _sign_in_at_once(
        monkeypatch, [(name, "pw-123456789", "10.0.0.1") for name in users]
    )
    assert [_signed_in(r) for r in responses] == [True] * len(users)


@pytest.mark.django_db(transaction=True)
def test_a_double_click_after_typos_signs_in(client, monkeypatch, fresh_counts):
    # After four typos the first click took the last place, and the second was refused.
    from console import signin

    User.objects.create_user("bob", password="pw-123456789")
    for _ in range(signin.PER_USER - 1):
        client.post("/login/", {"username": "bob", "password": "typo"}, REMOTE_ADDR="10.0.0.2")
    double_click = [("bob", "pw-123456789", "10.0.0.2")] * 2
    responses, _ = _sign_in_at_once(monkeypatch, double_click)
    assert [_signed_in(r) for r in responses] == [True, True]


@pytest.mark.django_db(transaction=True)
def test_guesses_sent_at_once_get_only_the_limit_checked(monkeypatch, fresh_counts):
    # A script sends its guesses together: each one arrives while the others' passwords are
    # still being hashed. Counted only once checked, they were all checked (80 sent at once).
    from console import signin

    User.objects.create_user("carol", password="pw-123456789")
    guesses = [("carol", f"guess{n}", "10.0.0.3") for n in range(80)]
    responses, checked = _sign_in_at_once(monkeypatch, guesses)
    assert len(checked) == signin.PER_USER
    refused = [r for r in responses if r is not None and b"Too many failed sign-ins" in r.content]
    assert len(refused) == len(guesses) - signin.PER_USER
    # And the right password too, now that the failures reached the limit.
    responses, checked = _sign_in_at_once(monkeypatch, [("carol", "pw-123456789", "10.0.0.3")])
    assert b"Too many failed sign-ins" in responses[0].content and checked == []


def test_sessions_signed_in_before_the_consoles_backend_stay_signed_in(client):
    # Sessions name the backend that signed them in; Django signs out any whose backend is no
    # longer in AUTHENTICATION_BACKENDS: upgrading signed everyone out.
    user = User.objects.create_user("alice", password="pw-123456789")
    client.force_login(user, backend="django.contrib.auth.backends.ModelBackend")
    assert client.get("/").status_code == 200


def test_a_password_is_hashed_once_per_sign_in(client, monkeypatch, fresh_counts):
    # Django's backend, listed after the console's for those sessions, must not hash it again.
    from django.contrib.auth import base_user

    User.objects.create_user("alice", password="pw-123456789")
    hashed = []

    def counting(hash_function):
        def hashing(*args, **kwargs):
            hashed.append(args[0])
            return hash_function(*args, **kwargs)

        return hashing

    monkeypatch.setattr(base_user, "check_password", counting(base_user.check_password))
    monkeypatch.setattr(base_user, "make_password", counting(base_user.make_password))
    for username, password in [("alice", "wrong"), ("nobody", "wrong2"), ("alice", "pw-123456789")]:
        client.post("/login/", {"username": username, "password": password})
    assert hashed == ["wrong", "wrong2", "pw-123456789"]
    assert client.get("/").status_code == 200


def test_sign_ins_that_succeed_never_refuse_the_address(client, fresh_counts):
    # Behind a proxy without --proxy-headers, every user signs in from the proxy's address.
    from console import signin

    User.objects.create_user("erin", password="pw-123456789")
    for _ in range(signin.PER_ADDRESS + 1):
        ok = client.post("/login/", {"username": "erin", "password": "pw-123456789"})
        assert ok.status_code == 302
    client.post("/login/", {"username": "erin", "password": "guess"})
    assert (
        client.post("/login/", {"username": "erin", "password": "pw-123456789"}).status_code == 302
    )


def test_an_address_of_any_length_is_counted_under_a_short_key(fresh_counts):
    # Behind a proxy that passes a client's X-Forwarded-For on, the address is any text
    # (daphne takes its first value): each attempt must not store kilobytes in the cache.
    from django.test import RequestFactory

    from console import signin

    request = RequestFactory().post("/login/", REMOTE_ADDR="a" * 10_000)
    keys = [key for key, _ in signin._keys(request, "x" * 10_000)]
    assert all(len(key) < 100 for key in keys)
    for _ in range(signin.PER_USER):
        assert signin.attempt(request, "alice") is signin.Verdict.CHECK
        signin.failed(request, "alice")
    assert signin.attempt(request, "alice") is signin.Verdict.TOO_MANY_FAILURES
    elsewhere = RequestFactory().post("/login/", REMOTE_ADDR="10.0.0.9")
    assert signin.attempt(elsewhere, "alice") is signin.Verdict.CHECK


def test_admin_needs_login(client):
    assert client.get("/admin/").status_code == 302


@pytest.mark.parametrize(
    "model", ["engine", "instance", "run", "historyevent", "statuscount", "changelog"]
)
def test_the_admin_shows_indexed_data_read_only(client, model):
    from django.apps import apps

    from tests.console import factories
    from workflows_ui.models import ChangeLog, HistoryEvent

    inst = factories.instance()
    run = factories.run(inst)
    HistoryEvent.objects.create(run=run, position=0, event_id=-1, event_type="workflowStarted")
    ChangeLog.objects.create(engine=inst.engine, instance=inst, kind="new", status=inst.status)
    client.force_login(User.objects.create_superuser("root", "", "pw-123456789"))
    base = f"/admin/workflows_ui/{model}/"
    assert client.get(base).status_code == 200  # it can be looked at
    assert client.get(base + "add/").status_code == 403
    row = apps.get_model("workflows_ui", model).objects.first()
    page = client.get(f"{base}{row.pk}/change/")
    assert page.status_code == 200 and b'name="_save"' not in page.content
    assert client.post(f"{base}{row.pk}/delete/", {"post": "yes"}).status_code == 403
    assert apps.get_model("workflows_ui", model).objects.filter(pk=row.pk).exists()


def test_the_admin_writes_out_what_hides_or_reorders_an_id_or_a_name(client):
    from tests.console import factories

    rlo = "\u202e"
    inst = factories.instance(instance_id=f"a{rlo}1", name="flow\u200b")
    factories.run(inst, execution_id=f"e{rlo}1")
    client.force_login(User.objects.create_superuser("root", "", "pw-123456789"))
    for model, written in (
        ("instance", ["a\\u202e1", "flow\\u200b"]),
        ("run", ["a\\u202e1", "e\\u202e1"]),
        ("statuscount", ["flow\\u200b"]),
    ):
        body = client.get(f"/admin/workflows_ui/{model}/").content.decode()
        assert rlo not in body and "\u200b" not in body, model
        for text in written:
            assert text in body, (model, text)


def test_the_admin_writes_out_hidden_characters_on_its_detail_pages_and_an_engines_error(
    client,
):
    from tests.console import factories
    from workflows_ui.models import Engine, HistoryEvent

    rlo, bell = "\u202e", "\x07"
    engine = factories.engine(last_error=f"refused{rlo}: see{bell}")
    inst = factories.instance(
        engine,
        instance_id=f"a{rlo}1",
        name="flow\u200b",
        input=f'{{"to": "b{rlo}c"}}',
        failure_stack_trace="line one\nline two",
    )
    run = factories.run(inst, execution_id=f"e{rlo}1")
    event = HistoryEvent.objects.create(
        run=run,
        position=0,
        event_id=-1,
        event_type="taskScheduled",
        name=f"pay{rlo}",
        details={"input": f"x{rlo}y"},
    )
    client.force_login(User.objects.create_superuser("root", "", "pw-123456789"))
    for url, written in (
        ("engine/", ["refused\\u202e: see\\u0007"]),
        (f"engine/{engine.pk}/change/", ["refused\\u202e: see\\u0007"]),
        (
            f"instance/{inst.pk}/change/",
            ["a\\u202e1", "flow\\u200b", "b\\u202ec", "line one<br>line two"],
        ),
        (f"run/{run.pk}/change/", ["e\\u202e1"]),
        (f"historyevent/{event.pk}/change/", ["pay\\u202e", "x\\u202ey"]),
    ):
        page = client.get(f"/admin/workflows_ui/{url}")
        body = page.content.decode()
        assert page.status_code == 200, url
        assert rlo not in body and bell not in body and "\u200b" not in body, url
        for text in written:
            assert text in body, (url, text)
    # Only shown so: what is stored is as it was.
    assert Engine.objects.get().last_error == f"refused{rlo}: see{bell}"


def test_the_favicon_is_found_without_a_login(client):
    response = client.get("/favicon.ico")
    assert response.status_code == 301
    assert response["Location"].endswith("favicon.svg")


def test_daphne_serves_the_static_files_as_started_without_a_login():
    # As README starts it (`daphne console.asgi:application`): no web server in front, no
    # collectstatic; pages without their CSS and htmx would be all there is otherwise.
    from tests.console.support import asgi_get

    for path in ("/static/console.css", "/static/console.js"):
        status, body = asgi_get(path.encode())
        assert status == 200 and len(body) > 100, path


def test_static_files_are_asked_for_again_after_an_upgrade():
    # With Last-Modified alone a browser may keep a file unasked for a while (a tenth of its
    # age, by the usual heuristic): new pages with the old script after an upgrade. Each use
    # revalidates instead, answered 304 when unchanged.
    from tests.console.support import asgi_get_with_headers

    status, headers, _ = asgi_get_with_headers(b"/static/console.js")
    assert status == 200 and headers[b"cache-control"] == b"no-cache"
    modified = headers[b"last-modified"]
    again, _, body = asgi_get_with_headers(b"/static/console.js", (b"if-modified-since", modified))
    assert again == 304 and body == b""


@pytest.mark.parametrize(
    "path", [b"/static/..%2fconsole%2fsettings.py", b"/static/../console/settings.py"]
)
def test_a_static_path_leading_out_of_the_static_files_is_not_found(path, caplog):
    from tests.console.support import asgi_get

    status, body = asgi_get(path)
    assert status == 404 and b"SECRET_KEY" not in body
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_a_websocket_handshake_is_refused_without_an_error_logged(caplog):
    # No page opens a websocket yet: a scanner's handshake on any path was a 500, with a
    # traceback logged at ERROR for each ("No application configured for scope type").
    from asgiref.sync import async_to_sync
    from channels.testing import WebsocketCommunicator

    from console.asgi import application

    async def connect() -> tuple[bool, object]:
        client = WebsocketCommunicator(application, "/ws/anything/")
        try:
            return await client.connect(timeout=5)
        finally:
            await client.wait(timeout=5)

    connected, _ = async_to_sync(connect)()
    assert connected is False
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_error_reports_hide_the_password_of_a_redis_or_database_url(settings, rf):
    # Django's debug page lists the settings, hiding them by name only: REDIS_URL, the
    # cache's LOCATION and the channel layer's hosts showed the Redis password.
    import sys

    from django.views.debug import ExceptionReporter

    password = "-".join(["s3cr3t", "pass"])  # not in this file as one string: pages show code
    url = f"redis://:{password}@redis.internal:6379/0"
    settings.REDIS_URL = url
    settings.CACHES = {"default": {**settings.CACHES["default"], "LOCATION": url}}
    settings.CHANNEL_LAYERS = {"default": {"CONFIG": {"hosts": [url]}}}
    settings._DATABASE_URL = f"postgres://console:{password}@db.internal/console"
    settings.DEBUG = True

    def failing_view():  # a frame of its own: the page shows a frame's variables too
        try:
            raise RuntimeError("a view failed")
        except RuntimeError:
            return sys.exc_info()

    html = ExceptionReporter(rf.get("/"), *failing_view()).get_traceback_html()
    assert "a view failed" in html and "redis.internal:6379" in html
    assert password not in html


def test_error_reports_hide_an_engine_token_held_in_a_frame(settings, rf):
    # gRPC's frames hold a call's metadata as plain tuples: a debug page (or a mail to
    # ADMINS) of a failed engine call would show the token.
    import sys

    from django.views.debug import ExceptionReporter

    from engine_bridge.config import EngineConfig

    token = "-".join(["s3cr3t", "t0ken"])  # not in this file as one string: pages show code
    settings.CONSOLE_ENGINES = [EngineConfig("orders", "127.0.0.1:1", token=token)]
    settings.DEBUG = True

    def call_engine():
        metadata = (("dapr-api-token", token),)
        raise RuntimeError(f"engine call failed ({len(metadata)} header)")

    try:
        call_engine()
    except RuntimeError:
        info = sys.exc_info()
    html = ExceptionReporter(rf.get("/"), *info).get_traceback_html()
    assert "engine call failed" in html and "metadata" in html
    assert token not in html
    mail = ExceptionReporter(rf.get("/"), *info, is_email=True).get_traceback_text()
    assert token not in mail


def test_the_timelines_bars_and_markers_stand_out_from_the_drawing_in_both_themes():
    # WCAG asks 3:1 of graphics a reader needs: the lighter fills were 1.7 to 2.7 on white.
    import re
    from pathlib import Path

    css = (Path(__file__).resolve().parents[2] / "static" / "console.css").read_text()
    # The colour each bar and marker is filled with: svg[.timeline] .bar-child { fill: var(--x) }
    fills = dict(
        re.findall(r"svg(?:\.timeline)? \.([\w-]+)(?:, [^{]*)? \{ fill: var\(--([\w-]+)\)", css)
    )
    assert {"bar", "bar-timer", "bar-child", "bar-event", "outcome-failed", "marker-event"} <= set(
        fills
    )
    dark_at = css.index("@media (prefers-color-scheme: dark)")

    def colours(block: str) -> dict[str, str]:
        found = re.findall(r"--([\w-]+): #([0-9a-f]{6}|[0-9a-f]{3});", block)
        return {name: hex if len(hex) == 6 else "".join(c * 2 for c in hex) for name, hex in found}

    def luminance(hex_colour: str) -> float:
        def channel(c: float) -> float:
            return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4

        r, g, b = (int(hex_colour[i : i + 2], 16) / 255 for i in (0, 2, 4))
        return 0.2126 * channel(r) + 0.7152 * channel(g) + 0.0722 * channel(b)

    light = colours(css[:dark_at])
    dark = light | colours(css[dark_at : css.index("}", dark_at)])
    # A retry delay's light fill relies on its dashed outline; the label is text, tested apart;
    # a suspended period is a faint shade behind the bars.
    graphics = {fills[k] for k in fills if k not in ("bar-retry", "bar-label", "suspended-span")}
    for theme, palette in (("light", light), ("dark", dark)):
        for name in sorted(graphics | {"bar-retry-line", "bar-open"}):
            low, high = sorted((luminance(palette[name]), luminance(palette["surface"])))
            ratio = (high + 0.05) / (low + 0.05)
            assert ratio >= 3, f"{theme}: --{name} #{palette[name]}: {ratio:.2f}:1"


@pytest.fixture
def redis_url(tmp_path):
    """A real Redis on 127.0.0.1, for this test only."""
    import shutil
    import socket
    import subprocess
    import time

    from tests.needs import need

    need(shutil.which("redis-server") is not None, "redis-server is not installed")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--dir",
            tmp_path,
        ],
        stdout=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        server.terminate()
        server.wait(timeout=10)


def _in_another_process(tmp_path, redis_url, code):
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    env.update(REDIS_URL=redis_url, CONSOLE_VAR_DIR=str(tmp_path / "var"))
    done = subprocess.run(
        [sys.executable, "manage.py", "shell", "--no-imports", "-c", code],
        cwd=Path(__file__).parents[2],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_with_redis_every_web_process_counts_the_same_failed_sign_ins(tmp_path, redis_url):
    # Two processes set up from REDIS_URL alone, as two web processes are: the failures one
    # saw refuse the next attempt in the other.
    fail = (
        "from console import signin\n"
        "for _ in range(signin.PER_USER):\n"
        "    signin.attempt(None, 'alice')\n"
        "    signin.failed(None, 'alice')"
    )
    assert _in_another_process(tmp_path, redis_url, fail) == ""
    ask = (
        "from console import signin\n"
        "print(signin.attempt(None, 'alice').name, signin.attempt(None, 'bob').name)"
    )
    assert _in_another_process(tmp_path, redis_url, ask) == "TOO_MANY_FAILURES CHECK"


def test_a_cache_that_fails_lifts_the_limit_but_not_the_sign_in(client, settings, caplog):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]  # nothing listens there once the socket is closed
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": f"redis://127.0.0.1:{closed}/0",
        }
    }
    User.objects.create_user("dave", password="pw-123456789")
    wrong = client.post("/login/", {"username": "dave", "password": "guess"})
    assert wrong.status_code == 200 and b"correct username and password" in wrong.content
    with caplog.at_level(logging.WARNING, logger="console.signin"):
        right = client.post("/login/", {"username": "dave", "password": "pw-123456789"})
    assert right.status_code == 302
    assert "sign-in limits not applied: the cache failed" in caplog.text


@pytest.mark.django_db(transaction=True)
def test_the_database_connection_is_handed_back_while_a_password_is_hashed(
    client, monkeypatch, fresh_counts
):
    # Sign-ins at once each held a connection of the web process's pool through the slow hash,
    # and the requests behind them waited for one until they failed.
    from django.contrib.auth import base_user
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("the connection pool is PostgreSQL's; SQLite's test database stays open")
    User.objects.create_user("alice", password="pw-123456789")
    held_while_hashing = []

    def noting(hash_function):
        def hashing(*args, **kwargs):
            held_while_hashing.append(connection.connection is not None)
            return hash_function(*args, **kwargs)

        return hashing

    # Where the user model calls them (a wrong password, and an unknown username's decoy hash).
    monkeypatch.setattr(base_user, "check_password", noting(base_user.check_password))
    monkeypatch.setattr(base_user, "make_password", noting(base_user.make_password))
    assert (
        client.post("/login/", {"username": "alice", "password": "pw-123456789"}).status_code == 302
    )
    assert client.post("/login/", {"username": "alice", "password": "wrong"}).status_code == 200
    assert client.post("/login/", {"username": "nobody", "password": "wrong"}).status_code == 200
    assert held_while_hashing == [False, False, False]


def test_an_address_refused_adds_no_count_for_each_new_username(fresh_counts):
    # Each new username an address refused tried added a count: in a web process's memory,
    # enough of them pushed out older counts, among them those refusing guessers.
    from django.core.cache import cache
    from django.test import RequestFactory

    from console import signin

    request = RequestFactory().post("/login/", REMOTE_ADDR="10.0.0.9")
    for n in range(signin.PER_ADDRESS):
        assert signin.attempt(request, f"user{n}") is signin.Verdict.CHECK
        signin.failed(request, f"user{n}")
    assert signin.attempt(request, "newcomer") is signin.Verdict.TOO_MANY_FAILURES
    (user_key,) = [k for k, _ in signin._keys(request, "newcomer") if k.startswith("signin:user:")]
    assert cache.get(signin._checking(user_key)) is None
    assert cache.get(signin._failures(user_key)) is None
    if hasattr(cache, "_max_entries"):  # the process's own memory, when REDIS_URL is not set
        assert cache._max_entries >= 100_000


def test_a_count_that_lapses_as_redis_counts_it_still_lapses(redis_url, monkeypatch):
    # Django looks that the key exists, then Redis counts: a key that lapsed in between was made
    # anew with no expiry, and a count of failures that never lapsed refused for good.
    import redis
    from django.core.cache.backends.redis import RedisCache

    from console import signin

    cache = RedisCache(redis_url, {"KEY_PREFIX": "t"})
    monkeypatch.setattr(signin, "cache", cache)
    raw = redis.Redis.from_url(redis_url)
    real_exists = redis.Redis.exists

    def exists_then_lapses(self, *keys):
        found = real_exists(self, *keys)
        self.delete(*keys)
        return found

    monkeypatch.setattr(redis.Redis, "exists", exists_then_lapses)
    assert signin._count("failures", 60) == 1
    assert 0 < raw.ttl(cache.make_key("failures")) <= 60
    cache.set("checking", 1, timeout=60)
    signin._give_back("checking")
    assert not raw.exists(cache.make_key("checking"))  # not -1 for good
