import http.client
import json
import os
import socket
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from console.env import (
    envbool,
    envchoice,
    envfloat,
    envint,
    envlist,
    private_file,
    secret_key,
)
from engine_bridge.config import EngineConfig, parse_engines


def test_it_parses_several_engines_with_token_and_tls():
    engines = parse_engines(
        {
            "CONSOLE_ENGINES": "orders=127.0.0.1:50001, billing-eu=10.1.2.3:50002",
            "CONSOLE_ENGINE_TOKEN_BILLING_EU": "s3cret",
            "CONSOLE_ENGINE_TLS_BILLING_EU": "1",
        }
    )
    assert engines == [
        EngineConfig("orders", "127.0.0.1:50001"),
        EngineConfig("billing-eu", "10.1.2.3:50002", token="s3cret", tls=True),
    ]


def test_it_accepts_host_names_and_ipv6():
    engines = parse_engines(
        {"CONSOLE_ENGINES": "a=dapr.local:50001,b=[::1]:50001,c=orders_dapr:50001"}
    )
    assert [e.address for e in engines] == [
        "dapr.local:50001",
        "[::1]:50001",
        "orders_dapr:50001",
    ]


def test_it_reads_a_ca_file_for_tls(tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    [engine] = parse_engines(
        {
            "CONSOLE_ENGINES": "orders=h:1",
            "CONSOLE_ENGINE_TLS_ORDERS": "1",
            "CONSOLE_ENGINE_TLS_CA_ORDERS": str(ca),
        }
    )
    assert engine.tls and engine.tls_ca_file == str(ca)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        # Misspelt or lower-case: TLS would be silently off and the token sent in clear text.
        ({"CONSOLE_ENGINE_TLS_orders": "1"}, "CONSOLE_ENGINE_TLS_orders names no engine"),
        ({"CONSOLE_ENGINE_TOKEN_BILLING": "x"}, "CONSOLE_ENGINE_TOKEN_BILLING names no engine"),
        ({"CONSOLE_ENGINE_TLS_CA_ORDER": "/x"}, "CONSOLE_ENGINE_TLS_CA_ORDER names no engine"),
        (
            {"CONSOLE_ENGINE_TLS_CA_ORDERS": "/x"},
            "CONSOLE_ENGINE_TLS_CA_ORDERS is set but CONSOLE_ENGINE_TLS_ORDERS is not 1",
        ),
        (
            {"CONSOLE_ENGINE_TLS_ORDERS": "1", "CONSOLE_ENGINE_TLS_CA_ORDERS": "/no/such.pem"},
            "CONSOLE_ENGINE_TLS_CA_ORDERS='/no/such.pem' is not a readable file",
        ),
        ({"CONSOLE_ENGINE_TOKEN_ORDERS": "s3cret\n"}, "CONSOLE_ENGINE_TOKEN_ORDERS: the token"),
        ({"CONSOLE_ENGINE_TOKEN_ORDERS": " s3cret"}, "CONSOLE_ENGINE_TOKEN_ORDERS: the token"),
        ({"CONSOLE_ENGINE_TOKEN_ORDERS": "s3cr\u00e9t"}, "CONSOLE_ENGINE_TOKEN_ORDERS: the token"),
    ],
)
def test_a_per_engine_variable_that_cant_apply_stops_start_up(extra, message):
    with pytest.raises(ImproperlyConfigured) as exc:
        parse_engines({"CONSOLE_ENGINES": "orders=h:1", **extra})
    assert message in str(exc.value)
    assert "s3cr" not in str(exc.value)


def test_a_stray_token_stops_start_up_even_with_no_engines():
    with pytest.raises(ImproperlyConfigured, match="CONSOLE_ENGINE_TOKEN_A names no engine"):
        parse_engines({"CONSOLE_ENGINE_TOKEN_A": "x"})
    assert parse_engines({"CONSOLE_ENGINE_TIMEOUT": "5"}) == []


def test_a_per_engine_variable_set_empty_is_unset_even_naming_no_engine():
    # As every setting set empty: the token of an engine taken out, blanked in a template.
    blank = {"CONSOLE_ENGINE_TOKEN_BILLING": "", "CONSOLE_ENGINE_TLS_CA_ORDERS": ""}
    [engine] = parse_engines({"CONSOLE_ENGINES": "orders=h:1", **blank})
    assert (engine.token, engine.tls, engine.tls_ca_file) == ("", False, "")
    assert parse_engines({"CONSOLE_ENGINE_TLS_BILLING": ""}) == []


def test_engine_names_whose_ca_variable_would_collide_are_refused():
    with pytest.raises(ImproperlyConfigured, match="'ca_orders' and 'orders' can't both"):
        parse_engines({"CONSOLE_ENGINES": "orders=h:1,ca_orders=h:2"})
    [engine] = parse_engines(
        {"CONSOLE_ENGINES": "ca_orders=h:2", "CONSOLE_ENGINE_TLS_CA_ORDERS": "1"}
    )
    assert engine.tls


def test_it_returns_no_engines_when_unset():
    assert parse_engines({}) == []
    assert parse_engines({"CONSOLE_ENGINES": "  "}) == []


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("orders", "'orders' has no '='"),
        ("orders=127.0.0.1:50001,,b=h:1", "empty entry"),
        ("orders=", "engine 'orders' has no address"),
        ("orders=127.0.0.1", "'127.0.0.1' is not host:port"),
        ("orders=127.0.0.1:http", "port 'http'"),
        ("orders=http://127.0.0.1:50001", "'http://127.0.0.1:50001' has a scheme: give host:port"),
        (
            "b-eu=https://h:443",
            "has a scheme: give host:port (for TLS, set CONSOLE_ENGINE_TLS_B_EU=1)",
        ),
        ("orders=dns:///h:1", "'dns:///h:1' has a scheme"),
        ("orders=dns:h:1", "'dns:h:1' has a scheme"),
        ("orders=127.0.0.1:70000", "port '70000'"),
        ("Orders=127.0.0.1:1", "engine name 'Orders'"),
        ("a=h:1,a=h:2", "'a' is given twice"),
        ("a-b=h:1,a_b=h:2", "share the settings suffix 'A_B'"),
        ("a=h:1,b=H:1", "engines 'a' and 'b' have the same address 'H:1'"),
        ("a=ho st:1", "host 'ho st'"),
        ("a=-:1", "host '-'"),
        ("a=...:1", "host '...'"),
        ("a=1.2.3.4.5:1", "host '1.2.3.4.5'"),
        ("a=300.1.1.1:1", "host '300.1.1.1'"),
        ("a=h-.x:1", "host 'h-.x'"),
        ("a=[::1]50001", "is not [IPv6]:port"),
        ("a=[zz]:1", "'zz' is not an IPv6 address"),
        ("a=h:\uff11", "port '\uff11'"),  # a full-width digit, which str.isdigit() takes
    ],
)
def test_it_names_the_bad_part(value, message):
    with pytest.raises(ImproperlyConfigured) as exc:
        parse_engines({"CONSOLE_ENGINES": value})
    assert message in str(exc.value)


def test_a_bad_tls_flag_names_its_variable():
    with pytest.raises(ImproperlyConfigured, match="CONSOLE_ENGINE_TLS_A"):
        parse_engines({"CONSOLE_ENGINES": "a=h:1", "CONSOLE_ENGINE_TLS_A": "maybe"})


def test_the_token_never_shows_in_repr():
    assert "s3cret" not in repr(EngineConfig("a", "h:1", token="s3cret"))


def test_typed_helpers_read_and_validate():
    assert envbool("X", False, {"X": "yes"}) is True
    # Empty is unset, as for numbers: `CONSOLE_SERVE_STATIC=` turned static files off.
    assert envbool("X", True, {"X": ""}) is True and envbool("X", True, {"X": " "}) is True
    assert envbool("X", True, {"X": "0"}) is False
    assert envlist("X", "a,b", {"X": ""}) == ["a", "b"] == envlist("X", "", {"X": " a , b,"})
    assert envlist("X", "", {}) == []
    # Only commas: every request was answered 400 (no host allowed), the reason only in the log.
    with pytest.raises(ImproperlyConfigured, match="X=' , ' names nothing"):
        envlist("X", "a", {"X": " , "})
    assert envint("X", 3, {}) == 3
    with pytest.raises(ImproperlyConfigured, match="X='ten' is not an integer"):
        envint("X", 3, {"X": "ten"})
    with pytest.raises(ImproperlyConfigured, match="at least 1"):
        envint("X", 3, {"X": "0"}, minimum=1)

    with pytest.raises(ImproperlyConfigured, match="X='nan' is not a finite number"):
        envfloat("X", 1.0, {"X": "nan"})
    with pytest.raises(ImproperlyConfigured, match="is not a finite number"):
        envfloat("X", 1.0, {"X": "inf"})
    assert envchoice("X", "INFO", ["INFO", "DEBUG"], {"X": "debug"}) == "DEBUG"
    with pytest.raises(ImproperlyConfigured, match="X='LOUD' is not one of INFO, DEBUG"):
        envchoice("X", "INFO", ["INFO", "DEBUG"], {"X": "LOUD"})


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        (
            "CONSOLE_ENGINES",
            "a=h:1,a=h:2",
            "CONSOLE_ENGINES: 'a=h:2': engine name 'a' is given twice",
        ),
        ("DATABASE_URL", "mysql://u:p@h/db", "DATABASE_URL: 'mysql' is not a database the"),
        ("DATABASE_URL", "u:secret@h/db", "DATABASE_URL has no scheme (sqlite:///path or"),
        # What comes before "://" is no scheme when it could not be one (quoted, it was the
        # user and password): here the "://" is a certificate's URL in the query.
        (
            "DATABASE_URL",
            "u:secret@h/db?sslrootcert=file:///ca.pem",
            "DATABASE_URL has no scheme (sqlite:///path or",
        ),
        ("CONSOLE_LOG_LEVEL", "LOUD", "CONSOLE_LOG_LEVEL='LOUD' is not one of"),
        ("REDIS_URL", "notaurl", "REDIS_URL: expected redis://"),
        (
            "CONSOLE_CSRF_TRUSTED_ORIGINS",
            "https://a.example.com,b.example.com",
            "CONSOLE_CSRF_TRUSTED_ORIGINS: 'b.example.com' has no scheme",
        ),
        ("CONSOLE_ALLOWED_HOSTS", ",", "CONSOLE_ALLOWED_HOSTS=',' names nothing"),
        ("CONSOLE_URL_PREFIX", "/dapr/../x", "CONSOLE_URL_PREFIX='/dapr/../x': each segment"),
        (
            "CONSOLE_INDEXER_ACTIVE_INTERVAL",
            "20",
            "CONSOLE_INDEXER_ACTIVE_INTERVAL must not be more than "
            "CONSOLE_INDEXER_ACTIVE_MAX_INTERVAL",
        ),
        (
            "CONSOLE_RETENTION_DAYS",
            "1000000",
            "CONSOLE_RETENTION_DAYS must not be more than 36500",
        ),
    ],
)
@pytest.mark.parametrize(
    "command",
    [
        ["manage.py", "runindexer", "--once"],
        # As README starts the web server: not a traceback of daphne's around the line.
        ["-m", "daphne", "-b", "127.0.0.1", "-p", "0", "console.asgi:application"],
    ],
)
def test_a_bad_setting_stops_start_up_with_one_line_naming_it(command, variable, value, message):
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    done = subprocess.run(
        [sys.executable, *command],
        cwd=Path(__file__).parents[2],
        env={**env, variable: value},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert done.stderr.startswith("configuration error: " + message), done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert "secret" not in done.stderr  # a password in a URL without its scheme


def test_without_a_secret_key_set_the_installation_makes_its_own(tmp_path):
    var = tmp_path / "var"
    key = secret_key(var, {})
    assert len(key) >= 50 and key == secret_key(var, {})
    assert (var / "secret-key").stat().st_mode & 0o077 == 0  # readable by its owner only
    assert [p.name for p in var.iterdir()] == ["secret-key"]
    assert secret_key(var, {"CONSOLE_SECRET_KEY": "given"}) == "given"
    assert secret_key(tmp_path / "other", {}) != key


def test_the_database_file_is_made_private_and_an_old_one_narrowed(tmp_path):
    # Sessions, API tokens and password hashes: not for the machine's other accounts.
    made = tmp_path / "var" / "console.sqlite3"
    old = os.umask(0o022)
    try:
        private_file(made)
        assert made.stat().st_mode & 0o777 == 0o600 and made.read_bytes() == b""
        older = tmp_path / "older.sqlite3"
        for path in (older, tmp_path / "older.sqlite3-wal"):
            path.write_bytes(b"kept")
            path.chmod(0o644)
        private_file(older)
    finally:
        os.umask(old)
    for path in (older, tmp_path / "older.sqlite3-wal"):
        assert path.stat().st_mode & 0o777 == 0o600 and path.read_bytes() == b"kept"
    assert (tmp_path / "var").stat().st_mode & 0o755 == 0o755  # the directory is left alone


def test_migrate_makes_the_console_database_readable_by_its_owner_only(tmp_path):
    env = {**os.environ, "CONSOLE_VAR_DIR": str(tmp_path)}
    env.pop("DATABASE_URL", None)
    done = subprocess.run(
        ["sh", "-c", f"umask 022 && {sys.executable} manage.py migrate -v 0"],
        cwd=Path(__file__).resolve().parents[2], env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "console.sqlite3").stat().st_mode & 0o777 == 0o600


def test_a_secret_key_that_cant_be_kept_stops_start_up(tmp_path):
    not_a_dir = tmp_path / "var"
    not_a_dir.write_text("")
    with pytest.raises(ImproperlyConfigured, match="CONSOLE_SECRET_KEY is not set and"):
        secret_key(not_a_dir, {})
    var = tmp_path / "var2"
    var.mkdir()
    (var / "secret-key").write_text("short\n")
    with pytest.raises(ImproperlyConfigured, match="too short"):
        secret_key(var, {})


def _database_settings(env: dict[str, str], code: str) -> dict:
    """DATABASES["default"] as a web process (``console.asgi`` imported) or a ``manage.py``
    command sees it under ``env`` (values that are not JSON, the pool's callback, as their repr)."""
    show = (
        "import json; from django.conf import settings; "
        "print(json.dumps(settings.DATABASES['default'], default=repr))"
    )
    cwd = Path(__file__).parents[2]
    args = ["-c", f"import console.asgi; {show}"]
    if code == "command":
        args = ["manage.py", "shell", "-v", "0", "-c", show]
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"} | env
    done = subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip())


def test_web_processes_keep_no_database_connection_for_the_next_request():
    # Under daphne each request's sync code runs in a thread of its own: a connection kept for
    # that thread's next request was never closed, and each web process held more PostgreSQL
    # connections as requests came, until PostgreSQL refused new clients (Django: persistent
    # connections should be disabled under ASGI). A web process gives its connection back to a
    # bounded pool after each request instead; the indexer keeps its connection age, unpooled.
    env = {
        "DATABASE_URL": "postgres://u:p@127.0.0.1:1/db",
        "CONSOLE_DB_CONN_MAX_AGE": "60",
        "CONSOLE_DB_POOL_MAX": "7",
    }
    web = _database_settings(env, "web")
    assert web["CONN_MAX_AGE"] == 0 and web["CONN_HEALTH_CHECKS"] is True
    assert web["OPTIONS"]["pool"]["min_size"] == 1 and web["OPTIONS"]["pool"]["max_size"] == 7
    command = _database_settings(env, "command")
    assert command["CONN_MAX_AGE"] == 60 and "pool" not in command.get("OPTIONS", {})
    # Kept from a pass to the next: checked before each (a restart may have broken it).
    assert command["CONN_HEALTH_CHECKS"] is True
    # No pool: a connection per request, closed after it.
    web = _database_settings(env | {"CONSOLE_DB_POOL_MAX": "0"}, "web")
    assert web["CONN_MAX_AGE"] == 0 and "pool" not in web.get("OPTIONS", {})
    # SQLite has no pool (Django's is PostgreSQL's only).
    web = _database_settings(env | {"DATABASE_URL": "sqlite:///:memory:"}, "web")
    assert web["CONN_MAX_AGE"] == 0 and "pool" not in web["OPTIONS"]


@pytest.mark.django_db(transaction=True)  # daphne reads the token the test wrote
def test_daphne_reuses_a_bounded_pool_of_connections_under_concurrent_requests(tmp_path):
    # Concurrent requests each run in a thread of their own: they share at most
    # CONSOLE_DB_POOL_MAX connections (the others wait for one), which outlive the requests
    # instead of being opened for each one, and are given back idle when the requests end.
    from django.contrib.auth.models import User
    from django.db import connection
    from rest_framework.authtoken.models import Token

    from tests.console.support import free_port, wait_for

    if connection.vendor != "postgresql":
        pytest.skip("Django's pool is PostgreSQL's (CONSOLE_TEST_DATABASE=postgres)")
    import psycopg

    token = Token.objects.create(user=User.objects.create_user("bob")).key
    db, port = connection.settings_dict, free_port()
    url = f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"} | {
        "DATABASE_URL": f"{url}?application_name=pooled-daphne",
        "CONSOLE_DB_POOL_MAX": "3",
        "CONSOLE_ALLOWED_HOSTS": "127.0.0.1",
        "CONSOLE_VAR_DIR": str(tmp_path),
    }
    daphne = subprocess.Popen(
        [sys.executable, "-m", "daphne", "-v", "0", "-b", "127.0.0.1", "-p", str(port),
         "console.asgi:application"],
        cwd=Path(__file__).parents[2], env=env,
    )  # fmt: skip
    watcher = psycopg.connect(url.replace("postgres://", "postgresql://"), autocommit=True)
    seen: list[list[tuple[int, str]]] = []
    done = threading.Event()

    def backends() -> list[tuple[int, str]]:
        query = "SELECT pid, state FROM pg_stat_activity WHERE application_name = 'pooled-daphne'"
        return [(int(pid), str(state)) for pid, state in watcher.execute(query).fetchall()]

    def watch() -> None:
        while not done.wait(0.005):
            seen.append(backends())

    def get(statuses: list[int]) -> None:
        client = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        for _ in range(5):
            client.request("GET", "/api/instances/", headers={"Authorization": f"Token {token}"})
            response = client.getresponse()
            response.read()
            statuses.append(response.status)
        client.close()

    try:
        wait_for(lambda: _answers(port), timeout=30)
        statuses: list[int] = []
        watching = threading.Thread(target=watch)
        watching.start()
        clients = [threading.Thread(target=get, args=(statuses,)) for _ in range(12)]
        for t in clients:
            t.start()
        for t in clients:
            t.join()
        done.set()
        watching.join()
        after = backends()
    finally:
        daphne.terminate()
        daphne.wait(30)
        watcher.close()
    assert statuses == [200] * 60
    assert max(len(s) for s in seen) <= 3
    assert 1 <= len({pid for s in seen for pid, _ in s}) <= 3  # the same few, not one a request
    assert 1 <= len(after) <= 3 and {state for _, state in after} == {"idle"}


@pytest.mark.django_db(transaction=True)  # daphne reads the token the test wrote
def test_daphne_stopped_with_requests_in_flight_exits_at_once_and_cleanly(tmp_path):
    # SIGTERM with requests in flight: daphne hung until killed (requests' threads waiting on
    # its stopped event loop), or crashed at exit (a segmentation fault as Python 3.11 destroyed
    # the tasks that loop left pending).
    from django.contrib.auth.models import User
    from rest_framework.authtoken.models import Token

    token = Token.objects.create(user=User.objects.create_user("bob")).key
    answered, code, took, errors = _stopped_under_load(
        tmp_path, "/api/instances/", {"Authorization": f"Token {token}"}, clients=8, before=40
    )
    assert set(answered) == {200}
    assert code == 0 and took < 5, (code, took, errors[-3000:])


@pytest.mark.django_db(transaction=True)  # daphne reads the run and the session the test wrote
def test_daphne_stopped_with_history_downloads_in_flight_exits_at_once(tmp_path):
    # A download was read whole in one thread before its first byte, and daphne, stopped, waited
    # for each one in flight (seconds each); on PostgreSQL a download cut off then took a new
    # connection from a pool held by the requests cut off, and waited out the pool's timeout.
    from django.contrib.auth.models import User
    from django.test import Client

    from tests.pages import longrun
    from workflows_ui.models import Engine

    engine = Engine.objects.create(name="local", address="127.0.0.1:1", reachable=True)
    # Seconds a download: long enough that waiting for those in flight shows in the stop's
    # time, short enough that a request waiting for one of the 4 connections gets one within
    # the pool's 10 s (50,000 events took about that long, 4 at once on 2 CPUs: answered 503).
    longrun.store(engine, "crawl-1", 25_000)
    browser = Client()
    browser.force_login(User.objects.create_user("bob"))
    session = browser.cookies["sessionid"].value
    answered, code, took, errors = _stopped_under_load(
        tmp_path,
        "/instances/local/crawl-1/runs/1/history.json",
        {"Cookie": f"sessionid={session}"},
        clients=6,
        before=6,
        env={
            "CONSOLE_SECRET_KEY": settings.SECRET_KEY,  # the session is signed with it
            # Fewer connections than downloads in flight: a request cut off that took a new one
            # waited for the pool (10 s), which a pool as big as the clients never showed.
            "CONSOLE_DB_POOL_MAX": "4",
        },
    )
    assert set(answered) == {200}
    assert code == 0 and took < 2.5, (code, took, errors[-3000:])


def _stopped_under_load(
    tmp_path: Path,
    path: str,
    headers: dict[str, str],
    clients: int,
    before: int,
    env: dict[str, str] | None = None,
) -> tuple[list[int], int | None, float, str]:
    """daphne on the test's database, ``clients`` clients asking ``path`` again and again, and
    SIGTERM once ``before`` answers came: the statuses answered, daphne's exit status (None:
    still running 20 s later), how long it took to stop, and its stderr."""
    import contextlib
    import signal
    import time

    from django.db import connection

    from tests.console.support import free_port, wait_for

    db, port = connection.settings_dict, free_port()
    if connection.vendor == "postgresql":
        url = f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"
    else:
        url = f"sqlite:///{db['NAME']}"
    environ = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"} | {
        "DATABASE_URL": url,
        "CONSOLE_ALLOWED_HOSTS": "127.0.0.1",
        "CONSOLE_VAR_DIR": str(tmp_path),
        "PYTHONFAULTHANDLER": "1",
        **(env or {}),
    }
    daphne = subprocess.Popen(
        [sys.executable, "-m", "daphne", "-v", "0", "-b", "127.0.0.1", "-p", str(port),
         "console.asgi:application"],
        cwd=Path(__file__).parents[2], env=environ, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    stop = threading.Event()
    answered: list[int] = []

    def ask() -> None:
        while not stop.is_set():
            try:
                client = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                client.request("GET", path, headers=headers)
                response = client.getresponse()
                response.read()
                answered.append(response.status)
                client.close()
            except (OSError, http.client.HTTPException):
                time.sleep(0.05)

    threads = [threading.Thread(target=ask) for _ in range(clients)]
    code, took = None, 0.0
    try:
        wait_for(lambda: _answers(port), timeout=30)
        for t in threads:
            t.start()
        wait_for(lambda: len(answered) >= before, timeout=60)
        started = time.monotonic()
        daphne.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):  # still running: None
            code = daphne.wait(20)
        took = time.monotonic() - started
    finally:
        stop.set()
        daphne.kill()
        _, errors = daphne.communicate()
        for t in threads:
            t.join()
    return answered, code, took, errors


@pytest.mark.django_db
def test_the_pool_connects_again_within_a_second_or_two_of_postgresql_coming_back():
    # While PostgreSQL is down, a request waiting for a connection makes the pool try to open
    # one, with growing delays between tries: with psycopg_pool's defaults the next try came
    # seconds after PostgreSQL was back (8 s after a 20 s outage), and requests kept failing.
    import time

    from django.db import connection
    from psycopg_pool import ConnectionPool, PoolTimeout

    from console.dbpool import use_pool
    from tests.console.support import free_port

    if connection.vendor != "postgresql":
        pytest.skip("Django's pool is PostgreSQL's (CONSOLE_TEST_DATABASE=postgres)")
    db = connection.settings_dict
    params = {"host": db["HOST"], "user": db["USER"], "dbname": db["NAME"], "autocommit": True}
    nothing_there, down = free_port(), threading.Event()
    down.set()

    def kwargs() -> dict:  # PostgreSQL "down": a port nobody listens on
        return {**params, "port": nothing_there if down.is_set() else db["PORT"]}

    settings = {"ENGINE": "django.db.backends.postgresql", "OPTIONS": {}}
    use_pool(settings, 3)  # type: ignore[arg-type]
    pool = ConnectionPool(kwargs=kwargs, open=False, **settings["OPTIONS"]["pool"])
    try:
        pool.open()
        with pytest.raises(PoolTimeout):  # a request waiting while PostgreSQL is down
            pool.getconn(timeout=4.5)
        down.clear()
        back = time.monotonic()
        with pool.connection(timeout=10) as conn:
            conn.execute("SELECT 1")
        assert time.monotonic() - back < 1.5
    finally:
        pool.close()


def _answers(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def test_a_database_lacking_migrations_is_answered_503_naming_migrate(tmp_path):
    # The code upgraded and `migrate` not run yet: each page was a 500 ("no such column").
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    env |= {
        "DATABASE_URL": f"sqlite:///{tmp_path / 'console.sqlite3'}",
        "CONSOLE_VAR_DIR": str(tmp_path / "var"),
    }
    cwd = Path(__file__).parents[2]

    def manage(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=cwd, env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    ask = (
        "from django.test import Client\n"
        "for path in ('/api/engines/', '/instances/'):\n"
        "    r = Client().get(path, HTTP_HOST='127.0.0.1')\n"
        "    print(r.status_code, r.content.decode()[:200])\n"
    )
    manage("migrate", "-v", "0")
    # As a database of the version before the last migration.
    before_last = sorted(p.stem for p in (cwd / "workflows_ui" / "migrations").glob("0*.py"))[-2]
    manage("migrate", "-v", "0", "workflows_ui", before_last)
    answers = manage("shell", "--no-imports", "-c", ask).splitlines()
    assert answers[0].startswith('503 {"detail": "The console\'s database lacks 1 migration(s)')
    assert answers[1].startswith("503 The console's database lacks 1 migration(s)")
    assert "run `python manage.py migrate`" in answers[1]
    # The indexer waits for it (a pass failed on the missing column, again and again); once:
    indexer = subprocess.run(
        [sys.executable, "manage.py", "runindexer", "--once"],
        cwd=cwd, env=env | {"CONSOLE_ENGINES": "a=127.0.0.1:1"},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert indexer.returncode == 1
    assert indexer.stderr.strip() == (
        "CommandError: the console's database lacks 1 migration(s) of this version of the "
        "console: run `python manage.py migrate`"
    )
    manage("migrate", "-v", "0")
    answers = manage("shell", "--no-imports", "-c", ask).splitlines()
    assert answers[0].startswith("401") and answers[1].startswith("302"), answers


def test_the_pools_warnings_are_said_once_a_minute_with_a_count(monkeypatch):
    # While PostgreSQL was down each web process logged two or three of psycopg's pool warnings
    # a second.
    import logging

    from console.logfilters import OnceAMinute

    logger = logging.getLogger("psycopg.pool")
    # As the settings have it (once per logging set-up: a test importing console.asgi sets
    # Django up again in this process, and adds another).
    limits = [f for f in logger.filters if isinstance(f, OnceAMinute)]
    assert limits
    for limit in limits:
        limit.repeats.forget()
    clock = [500.0]
    monkeypatch.setattr("console.logfilters.time.monotonic", lambda: clock[0])
    said: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            said.append(record.getMessage())

    keep = Keep()
    logger.addHandler(keep)
    try:
        for n in range(5):
            logger.warning("error connecting in %r: attempt %d", "console-web", n)
            clock[0] += 1
        logger.warning("reconnection attempt in pool %r failed", "console-web")
        clock[0] += 60
        logger.warning("error connecting in %r: attempt %d", "console-web", 99)
    finally:
        logger.removeHandler(keep)
    assert said == [
        "error connecting in 'console-web': attempt 0",
        "reconnection attempt in pool 'console-web' failed",
        "error connecting in 'console-web': attempt 99"
        " (and 4 more like it since the last one said)",
    ]


@pytest.mark.django_db
def test_a_request_refused_as_suspicious_is_logged_in_a_line_not_a_traceback(client):
    # Anyone can send a Host header of their choosing, and scanners do all day: each such
    # request wrote some 30 lines of traceback through Django's own frames.
    import io
    import logging

    # The settings' handler (not pytest's own, subclasses of it).
    handlers = [h for h in logging.getLogger().handlers if type(h) is logging.StreamHandler]
    assert handlers
    written = io.StringIO()
    streams = [h.setStream(written) for h in handlers]
    try:
        assert client.get("/", HTTP_HOST="evil.example").status_code == 400
    finally:
        for h, stream in zip(handlers, streams, strict=True):
            h.setStream(stream)
    assert "Invalid HTTP_HOST header: 'evil.example'" in written.getvalue()
    assert "Traceback" not in written.getvalue()


def test_no_middleware_makes_a_request_wait_in_its_thread_for_the_event_loop(caplog, settings):
    # A sync-only middleware made Django run the chain above it in the request's thread and call
    # the rest back on the event loop, the thread waiting: daphne, stopped by SIGTERM with
    # requests in flight, stopped its loop under those threads and never exited.
    import logging

    from django.core.handlers.asgi import ASGIHandler

    settings.DEBUG = True  # Django logs each middleware it adapts only then
    caplog.set_level(logging.DEBUG, logger="django.request")
    ASGIHandler()
    assert [r.getMessage() for r in caplog.records if "adapted" in r.getMessage()] == []


def test_the_console_middleware_answers_in_async_mode_as_in_sync_mode(monkeypatch):
    from asgiref.sync import async_to_sync, iscoroutinefunction
    from django.http import HttpResponse
    from django.test import RequestFactory

    from console import middleware

    async def view(request):
        return HttpResponse("ok")

    request = RequestFactory().get("/api/engines/")
    headers = middleware.ResponseHeadersMiddleware(view)
    assert iscoroutinefunction(headers)
    response = async_to_sync(headers)(request)
    assert response.content == b"ok" and "default-src" in response["Content-Security-Policy"]
    assert response["Vary"] == "HX-Request"
    monkeypatch.setattr(middleware.MigratedDatabaseMiddleware, "migrated", False)
    monkeypatch.setattr(middleware, "missing_migrations", lambda: 2)
    refused = async_to_sync(middleware.MigratedDatabaseMiddleware(view))(request)
    assert refused.status_code == 503 and b"lacks 2 migration(s)" in refused.content
    monkeypatch.setattr(middleware, "missing_migrations", lambda: 0)
    assert async_to_sync(middleware.MigratedDatabaseMiddleware(view))(request).content == b"ok"


def test_sqlites_wal_file_is_cut_back_after_a_big_transaction(tmp_path):
    # A retention batch or a long history grew the WAL file to its size, and SQLite kept it at
    # that size for as long as the stack ran: the journal size limit cuts it back.
    path = tmp_path / "console.sqlite3"
    options = _database_settings({"DATABASE_URL": f"sqlite:///{path}"}, "command")["OPTIONS"]
    con = sqlite3.connect(path, isolation_level=None)
    con.executescript(options["init_command"])
    con.execute("CREATE TABLE t (v BLOB)")
    con.execute("BEGIN")
    for _ in range(400):
        con.execute("INSERT INTO t VALUES (randomblob(65536))")  # 25 MB in one transaction
    con.execute("COMMIT")
    wal = tmp_path / "console.sqlite3-wal"
    assert wal.stat().st_size > 20 * 1024 * 1024
    for _ in range(3):  # a checkpoint, then the next writes start the WAL again from its start
        con.execute("PRAGMA wal_checkpoint(PASSIVE)")
        con.execute("INSERT INTO t VALUES (1)")
    assert wal.stat().st_size <= settings.SQLITE_WAL_LIMIT
    con.close()


def test_a_newline_in_what_a_log_line_quotes_starts_no_line_of_its_own():
    # An engine's error text and an instance id are written by others: a newline in one made
    # the rest look like a line of the console's own ("... ERROR console: all engines purged").
    import logging

    from tests.console.support import captured_log

    log = logging.getLogger("engine_bridge.indexer")
    with captured_log() as written:
        log.warning("engine %s: %s", "a", "refused\n2026-12-06 00:00:00,000 ERROR forged\r")
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            log.exception("reading %s", "id\nwith a newline")
    lines = written.getvalue().splitlines()
    assert lines[0].endswith(
        "WARNING engine_bridge.indexer: engine a: refused\\n2026-12-06 00:00:00,000 ERROR forged\\r"
    )
    assert lines[1].endswith("ERROR engine_bridge.indexer: reading id\\nwith a newline")
    assert lines[2] == "Traceback (most recent call last):"  # a traceback keeps its lines
    assert lines[-1] == "RuntimeError: boom"


def test_a_host_named_dns_is_an_address_not_a_scheme():
    [engine] = parse_engines({"CONSOLE_ENGINES": "orders=dns:50001"})
    assert engine.address == "dns:50001"
