import logging
import re
import threading
import time
from datetime import timedelta
from io import StringIO

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command

from tests.console.support import wait_for

pytestmark = pytest.mark.django_db


def test_a_demo_admin_is_created_only_when_no_user_exists(settings, tmp_path):
    settings.VAR_DIR = tmp_path
    out = StringIO()
    call_command("ensure_demo_admin", stdout=out)
    assert "Log in as: admin / " in out.getvalue()
    password = out.getvalue().strip().rsplit(" ", 1)[-1]
    assert User.objects.get().check_password(password)
    assert (tmp_path / "demo-admin.txt").stat().st_mode & 0o777 == 0o600
    again = StringIO()
    call_command("ensure_demo_admin", stdout=again)
    assert User.objects.count() == 1
    assert password in again.getvalue()


def test_no_demo_admin_beside_existing_users(settings, tmp_path):
    settings.VAR_DIR = tmp_path
    User.objects.create_user("alice")
    out = StringIO()
    call_command("ensure_demo_admin", stdout=out)
    assert User.objects.count() == 1
    assert "Users exist already" in out.getvalue()


def test_runindexer_needs_engines(settings):
    settings.CONSOLE_ENGINES = []
    with pytest.raises(CommandError, match="CONSOLE_ENGINES"):
        call_command("runindexer", "--once")


def test_runindexer_refuses_an_unknown_engine_name(settings):
    from engine_bridge.config import EngineConfig

    settings.CONSOLE_ENGINES = [EngineConfig("a", "127.0.0.1:1")]
    with pytest.raises(CommandError, match="not in CONSOLE_ENGINES: b"):
        call_command("runindexer", "--once", "--engine", "b")


@pytest.mark.django_db(transaction=True)
def test_runindexer_keeps_going_when_an_engine_is_down(settings):
    from engine_bridge.config import EngineConfig
    from workflows_ui.models import Engine

    settings.CONSOLE_ENGINE_TIMEOUT = 0.5
    settings.CONSOLE_ENGINES = [EngineConfig("down", "127.0.0.1:1"), EngineConfig("other", "h:1")]
    # One process per engine (--engine): the others stay configured for their own processes.
    # --once tells a script that the pass failed.
    with pytest.raises(CommandError, match="the pass failed for down"):
        call_command("runindexer", "--once", "--engine", "down", stdout=StringIO())
    engine = Engine.objects.get(name="down")
    assert engine.reachable is False and engine.last_error
    assert Engine.objects.get(name="other").configured is True


@pytest.mark.django_db(transaction=True)
def test_runindexer_outlives_a_database_error_and_reports_it(settings, monkeypatch, caplog):
    from django.db import OperationalError

    from engine_bridge.config import EngineConfig
    from engine_bridge.indexer import EngineIndexer

    def locked(self):
        raise OperationalError("database is locked")

    monkeypatch.setattr(EngineIndexer, "run_pass", locked)
    settings.CONSOLE_ENGINES = [EngineConfig("a", "127.0.0.1:1")]
    with pytest.raises(CommandError, match="the pass failed for a"):
        call_command("runindexer", "--once", stdout=StringIO())
    assert "engine a: database error (database is locked)" in caplog.text
    assert "retry" not in caplog.text  # --once tries no more


@pytest.mark.django_db(transaction=True)
def test_runindexer_outlives_a_database_that_takes_no_writes(settings, monkeypatch, caplog):
    # A PostgreSQL standby that a failover has not promoted yet (DATABASE_URL moved to it
    # early), or a database set read-only: PostgreSQL's error is not an OperationalError, and
    # the process died with a traceback.
    from django.db import connection, transaction

    from engine_bridge.config import EngineConfig
    from engine_bridge.indexer import EngineIndexer

    def read_only(self):
        with transaction.atomic(), connection.cursor() as cur:
            if connection.vendor == "postgresql":
                cur.execute("SET TRANSACTION READ ONLY")
            else:
                cur.execute("PRAGMA query_only = 1")
            try:
                cur.execute("UPDATE workflows_ui_engine SET address = address")
            finally:
                if connection.vendor == "sqlite":
                    cur.execute("PRAGMA query_only = 0")

    monkeypatch.setattr(EngineIndexer, "run_pass", read_only)
    settings.CONSOLE_ENGINES = [EngineConfig("a", "127.0.0.1:1")]
    with pytest.raises(CommandError, match="the pass failed for a"):
        call_command("runindexer", "--once", stdout=StringIO())
    assert "engine a: database error (" in caplog.text
    assert "read-only" in caplog.text or "readonly" in caplog.text


def test_a_write_refused_as_read_only_is_one_to_wait_out_on_both_databases():
    # SQLite says it with an OperationalError; PostgreSQL's InternalError says it with its
    # SQLSTATE only (the tests above meet it on the database they run on).
    import psycopg
    from django.db import IntegrityError, InternalError, OperationalError

    from workflows_ui.search import cannot_write_now

    def wrapped(exc_class, cause):
        exc = exc_class(str(cause))
        exc.__cause__ = cause
        return exc

    assert cannot_write_now(OperationalError("attempt to write a readonly database"))
    read_only = psycopg.errors.ReadOnlySqlTransaction("cannot execute INSERT in a read-only")
    assert cannot_write_now(wrapped(InternalError, read_only))
    assert not cannot_write_now(wrapped(InternalError, psycopg.errors.InFailedSqlTransaction()))
    assert not cannot_write_now(wrapped(IntegrityError, psycopg.errors.UniqueViolation()))


@pytest.mark.django_db(transaction=True)
def test_runindexer_started_before_its_database_answers_waits_for_it(settings, monkeypatch, caplog):
    # A deployment starting the database and the indexer together: it died at once.
    from django.db import OperationalError

    from engine_bridge import indexer
    from engine_bridge.config import EngineConfig
    from engine_bridge.management.commands import runindexer

    real_sync = indexer.sync_engines
    tries = []

    def not_yet(configs):
        tries.append(1)
        if len(tries) < 3:
            raise OperationalError("connection refused")
        return real_sync(configs)

    indexed = []
    monkeypatch.setattr(indexer, "sync_engines", not_yet)
    monkeypatch.setattr(runindexer, "_back_off", lambda failures: 0.01)
    monkeypatch.setattr(
        runindexer.Command,
        "_index",
        lambda self, configs, engines, locks, stop, once: indexed.append(engines),
    )
    settings.CONSOLE_ENGINES = [EngineConfig("a", "127.0.0.1:1")]
    out = StringIO()
    call_command("runindexer", stdout=out)
    assert len(tries) == 3 and list(indexed[0]) == ["a"]
    assert caplog.text.count("the console's database: connection refused; retry in 0s") == 2
    assert "indexer stopped" in out.getvalue()

    tries.clear()
    with pytest.raises(CommandError, match="the console's database: connection refused"):
        call_command("runindexer", "--once", stdout=StringIO())
    assert len(tries) == 1


@pytest.mark.django_db(transaction=True)
def test_runindexer_refuses_an_engine_another_indexer_holds(settings, monkeypatch):
    from engine_bridge.config import EngineConfig
    from engine_bridge.indexer import EngineIndexer, PassResult, sync_engines
    from engine_bridge.locks import EngineLock
    from workflows_ui.models import Engine

    monkeypatch.setattr(EngineIndexer, "run_pass", lambda self: PassResult())  # no engine
    settings.CONSOLE_ENGINES = [EngineConfig("a", "127.0.0.1:1"), EngineConfig("b", "h:1")]
    [a, b] = sync_engines(settings.CONSOLE_ENGINES)
    other = EngineLock(a.pk, "a")  # as another process would: its own file or connection
    other.acquire()
    try:
        with pytest.raises(CommandError, match="engine 'a' is being indexed by another"):
            call_command("runindexer", "--once", stdout=StringIO())
        # Refused, a process started with other engines changes nothing of the running one's.
        settings.CONSOLE_ENGINES = [EngineConfig("a", "elsewhere:1")]
        with pytest.raises(CommandError, match="engine 'a' is being indexed by another"):
            call_command("runindexer", "--once", stdout=StringIO())
        assert Engine.objects.get(name="b").configured
        assert Engine.objects.get(name="a").address == "127.0.0.1:1"
        settings.CONSOLE_ENGINES = [EngineConfig("a", "127.0.0.1:1"), EngineConfig("b", "h:1")]
        # An engine nobody holds can be indexed by a process of its own.
        out = StringIO()
        call_command("runindexer", "--once", "--engine", "b", stdout=out)
        assert "indexer stopped" in out.getvalue()
    finally:
        other.release()
    out = StringIO()
    call_command("runindexer", "--once", "--engine", "a", stdout=out)
    assert "indexer stopped" in out.getvalue()


@pytest.mark.django_db(transaction=True)
def test_runindexer_refused_writes_no_row_for_an_engine_new_to_the_database(settings):
    from engine_bridge.config import EngineConfig
    from engine_bridge.indexer import sync_engines
    from engine_bridge.locks import EngineLock
    from workflows_ui.models import Engine

    [a] = sync_engines([EngineConfig("a", "h:1")])
    other = EngineLock(a.pk, "a")  # another runindexer indexes a
    other.acquire()
    try:
        settings.CONSOLE_ENGINES = [EngineConfig("new", "h:2"), EngineConfig("a", "h:1")]
        for only in ([], ["--engine", "a"]):
            with pytest.raises(CommandError, match="engine 'a' is being indexed by another"):
                call_command("runindexer", "--once", *only, stdout=StringIO())
            # Else it showed on the engines page as not-indexed.
            assert list(Engine.objects.values_list("name", flat=True)) == ["a"]
    finally:
        other.release()


@pytest.mark.django_db(transaction=True)
def test_an_engine_another_runindexer_holds_stays_indexed_on_the_engines_page(
    settings, monkeypatch
):
    # Two runindexers started with different CONSOLE_ENGINES ("a" and "b"): the second one
    # marked "a" not configured while the first indexed it, and the pages said not-indexed.
    from engine_bridge.config import EngineConfig
    from engine_bridge.indexer import EngineIndexer, PassResult, sync_engines
    from engine_bridge.locks import EngineLock
    from workflows_ui.models import Engine

    monkeypatch.setattr(EngineIndexer, "run_pass", lambda self: PassResult())  # no engine
    [a, _] = sync_engines([EngineConfig("a", "h:1"), EngineConfig("b", "h:2")])
    Engine.objects.filter(pk=a.pk).update(sweep_listed=7)  # a's listing, in the middle
    settings.CONSOLE_ENGINES = [EngineConfig("b", "h:2")]
    other = EngineLock(a.pk, "a")  # the first runindexer, indexing a
    other.acquire()
    try:
        call_command("runindexer", "--once", stdout=StringIO())  # its retention looks too
        a.refresh_from_db()
        assert (a.configured, a.sweep_listed, a.health()) == (True, 7, "unknown")
    finally:
        other.release()
    # The first one stopped: a start of the second one says not-indexed...
    call_command("runindexer", "--once", stdout=StringIO())
    a.refresh_from_db()
    assert (a.configured, a.sweep_listed, a.health()) == (False, 0, "not-indexed")


@pytest.mark.django_db(transaction=True)
def test_an_engine_whose_runindexer_stopped_is_said_not_indexed_within_seconds(monkeypatch):
    # By the runindexer left running with other CONSOLE_ENGINES: its look at the engines it
    # does not index (once every 10 minutes, with its retention) left it "indexed", and
    # forgetengine refused it, for up to 10 minutes.
    import threading
    import time

    from django.db import connections

    from engine_bridge import retention
    from engine_bridge.config import EngineConfig
    from engine_bridge.indexer import sync_engines
    from engine_bridge.locks import EngineLock
    from engine_bridge.management.commands import runindexer
    from tests.console.support import wait_for
    from workflows_ui.models import Engine

    [a, _] = sync_engines([EngineConfig("a", "h:1"), EngineConfig("b", "h:2")])
    other = EngineLock(a.pk, "a")  # the runindexer of "a"
    other.acquire()
    monkeypatch.setattr(runindexer, "UNCONFIGURED_CHECK", 0.05)
    forgets = []
    real_forget = retention.forget_unindexed
    monkeypatch.setattr(
        retention, "forget_unindexed", lambda *args: forgets.append(1) or real_forget(*args)
    )
    stop = threading.Event()

    def look() -> None:
        try:
            runindexer._forget_unindexed({"b"}, stop, False)
        finally:
            connections.close_all()  # this thread's (see _beating)

    looks = threading.Thread(target=look)
    looks.start()
    try:
        time.sleep(0.5)  # ten looks: "a" is held
        assert Engine.objects.get(pk=a.pk).configured
        other.release()
        wait_for(lambda: not Engine.objects.get(pk=a.pk).configured, timeout=5)
    finally:
        other.release()
        stop.set()
        looks.join()
    assert len(forgets) == 1  # the retention's calls keep their own interval


@pytest.mark.django_db(transaction=True)
def test_the_look_for_engines_no_process_holds_keeps_no_lock_while_its_write_waits():
    # Its write waited for another one (a batch of an indexer or of a retention: seconds on
    # SQLite) while it held the engine's lock: a runindexer starting with the engine then tried
    # for a second and was refused, though no process indexed it.
    import sqlite3
    import threading
    import time

    from django.db import connection, connections

    from engine_bridge.config import EngineConfig
    from engine_bridge.indexer import sync_engines, unconfigure_free
    from engine_bridge.locks import EngineLock
    from workflows_ui.models import Engine

    [a, _] = sync_engines([EngineConfig("a", "h:1"), EngineConfig("b", "h:2")])
    db = connection.settings_dict
    if connection.vendor == "sqlite":
        writer = sqlite3.connect(db["NAME"], isolation_level=None)
        writer.execute("BEGIN IMMEDIATE")  # the database's write lock
    else:
        import psycopg

        writer = psycopg.connect(
            host=db["HOST"], port=db["PORT"], user=db["USER"], dbname=db["NAME"]
        )
        writer.execute("SELECT 1 FROM workflows_ui_engine WHERE id = %s FOR UPDATE", [a.pk])

    def look() -> None:
        try:
            unconfigure_free({"b"})
        finally:
            connections.close_all()

    looking = threading.Thread(target=look)
    looking.start()
    try:
        time.sleep(0.5)  # the look found "a" free and waits to write
        starting = EngineLock(a.pk, "a")
        assert starting.take_once()
        starting.release()
    finally:
        writer.rollback()
        writer.close()
        looking.join()
    assert not Engine.objects.get(pk=a.pk).configured


@pytest.mark.django_db(transaction=True)
def test_the_look_opens_no_connection_for_an_engine_postgresql_shows_held(monkeypatch):
    # Taking a PostgreSQL lock once opens a connection: every 10 s, in every runindexer, for
    # each engine another one indexes. pg_locks says it is held without one.
    from django.db import connection

    from engine_bridge.config import EngineConfig
    from engine_bridge.indexer import sync_engines, unconfigure_free
    from engine_bridge.locks import EngineLock
    from workflows_ui.models import Engine

    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL's advisory locks")
    [a, b] = sync_engines([EngineConfig("a", "h:1"), EngineConfig("b", "h:2")])
    other = EngineLock(a.pk, "a")
    other.acquire()
    tried: list[str] = []
    with monkeypatch.context() as m:
        m.setattr(EngineLock, "take_once", lambda self: tried.append(self.engine_name) or True)
        unconfigure_free({"b"})
        assert tried == [] and Engine.objects.get(pk=a.pk).configured
        other.release()  # the indexer of "a" stopped
        unconfigure_free({"b"})
        assert tried == ["a"]
    unconfigure_free({"b"})
    assert not Engine.objects.get(pk=a.pk).configured


@pytest.mark.django_db(transaction=True)
def test_runindexer_forgets_what_is_past_the_retention_of_engines_taken_out(settings, monkeypatch):
    from datetime import timedelta

    from django.utils import timezone

    from engine_bridge.config import EngineConfig
    from engine_bridge.indexer import EngineIndexer, PassResult
    from engine_bridge.locks import EngineLock
    from tests.console import factories
    from workflows_ui.models import ChangeLog, Engine, Instance, Run

    monkeypatch.setattr(EngineIndexer, "run_pass", lambda self: PassResult())  # no engine
    long_ago = timezone.now() - timedelta(days=40)

    def expired_and_kept(engine):
        tombstone = factories.instance(engine, purged=True, purged_at=long_ago)
        recent = factories.instance(engine, purged=True, purged_at=timezone.now())
        live = factories.instance(engine)
        earlier = factories.run(live, superseded_at=long_ago)
        current = factories.run(live)
        old_change = ChangeLog.objects.create(engine=engine, instance=live, kind="new")
        ChangeLog.objects.filter(pk=old_change.pk).update(created_at=long_ago)
        ChangeLog.objects.create(engine=engine, instance=live, kind="status")
        return tombstone.pk, earlier.pk, old_change.pk, {recent.pk, live.pk}, current.pk

    # Taken out of CONSOLE_ENGINES, not forgotten; and one another runindexer indexes (started
    # with other engines): its lock is held.
    gone, other = factories.engine("gone"), factories.engine("other")
    Engine.objects.update(configured=False, indexer_token="t" * 32)
    expired = expired_and_kept(gone)
    held = expired_and_kept(other)
    other_lock = EngineLock(other.pk, "other")
    other_lock.acquire()
    try:
        settings.CONSOLE_ENGINES = [EngineConfig("a", "h:1")]
        call_command("runindexer", "--once", stdout=StringIO())
        tombstone, earlier, old_change, kept, current = expired
        assert not Instance.objects.filter(pk=tombstone).exists()
        assert not Run.objects.filter(pk=earlier).exists()
        assert not ChangeLog.objects.filter(pk=old_change).exists()
        assert set(Instance.objects.filter(engine=gone).values_list("pk", flat=True)) == kept
        assert Run.objects.filter(instance__engine=gone).get().pk == current
        # The recent row stays, and one more says the earlier run of ``live`` went.
        changes = ChangeLog.objects.filter(engine=gone).order_by("id")
        assert list(changes.values_list("kind", flat=True)) == ["status", "updated"]
        # The engine's token is kept: an indexer whose lock was lost unseen goes on.
        assert Engine.objects.get(pk=gone.pk).indexer_token == "t" * 32
        # Held by another process: left to it, its token untouched.
        assert Instance.objects.filter(pk=held[0]).exists() and Run.objects.filter(pk=held[1])
        assert Engine.objects.get(pk=other.pk).indexer_token == other_lock.token
    finally:
        other_lock.release()


def test_the_retention_of_engines_taken_out_sums_up_its_lines(monkeypatch, caplog):
    import logging
    import threading

    from engine_bridge import indexer, retention
    from engine_bridge.management.commands import runindexer

    stop = threading.Event()
    calls = []
    monkeypatch.setattr(indexer, "unconfigure_free", lambda indexed: None)  # no database

    def backlog(indexed, retention_days, now):
        calls.append(now)
        if len(calls) == 5:
            stop.set()
        return retention.Forgotten(instances=200, more=True)

    monkeypatch.setattr(retention, "forget_unindexed", backlog)
    monkeypatch.setattr(retention, "forget_expired_sessions", lambda: None)  # no database
    monkeypatch.setattr(runindexer, "UNINDEXED_BACKLOG_PAUSE", 0.0)
    with caplog.at_level(logging.INFO, logger="engine_bridge.indexer"):
        runindexer._forget_unindexed({"a"}, stop, once=False)
    # A backlog is a call a second: a line each was 3,600 lines an hour.
    lines = [r for r in caplog.records if "forgotten past the retention" in r.getMessage()]
    assert len(calls) == 5 and len(lines) == 1


@pytest.mark.django_db(transaction=True)
def test_an_engine_lock_held_for_a_moment_is_waited_for(settings):
    import threading

    from engine_bridge.locks import EngineLock, EngineTaken
    from workflows_ui.models import Engine

    engine = Engine.objects.create(name="a", address="h:1")
    # Another runindexer's retention holds it for one batch: a start then is not refused.
    brief = EngineLock(engine.pk, "a")
    brief.acquire_unfenced()
    threading.Timer(0.3, brief.release).start()
    mine = EngineLock(engine.pk, "a")
    mine.acquire()
    try:
        with pytest.raises(EngineTaken):  # held for good: refused
            EngineLock(engine.pk, "a").acquire_unfenced()
        # A retention batch can hold it for longer than the wait (one tombstone with a history
        # of 800,000 events: 2.5 s): the refusal says that it may be that, not only an indexer.
        with pytest.raises(EngineTaken, match="for one batch by another runindexer's retention"):
            EngineLock(engine.pk, "a").acquire()
    finally:
        mine.release()


@pytest.mark.django_db(transaction=True)
def test_runindexer_deletes_the_sign_in_sessions_past_their_expiry():
    # Django leaves them to `clearsessions`, a cron job an operator may not know of: a row
    # stayed for every sign-in.
    from django.contrib.sessions.models import Session
    from django.utils import timezone

    from engine_bridge.management.commands import runindexer

    now = timezone.now()
    Session.objects.create(session_key="gone", session_data="", expire_date=now - timedelta(1))
    Session.objects.create(session_key="live", session_data="", expire_date=now + timedelta(1))
    assert runindexer._forget_unindexed(set(), threading.Event(), once=True)
    assert list(Session.objects.values_list("session_key", flat=True)) == ["live"]


def test_an_engine_down_is_tried_again_within_ten_seconds_however_long_it_was_down():
    from engine_bridge.management.commands.runindexer import _back_off

    waits = [_back_off(n) for n in range(1, 30)]
    assert waits[:4] == [1.0, 2.0, 4.0, 8.0]  # a blip costs a second or two
    assert max(waits) == 10.0


def _passes_every_ten_seconds_for_five_minutes(monkeypatch, caplog, run_pass) -> list[str]:
    """runindexer's passes over an engine whose pass is ``run_pass``, a try every 10 s for 5
    minutes of a fake clock; the lines the indexer logged."""
    from types import SimpleNamespace

    from engine_bridge.management.commands import runindexer

    clock = [0.0]
    monkeypatch.setattr(runindexer.time, "monotonic", lambda: clock[0])

    class Stop(threading.Event):
        def wait(self, timeout=None):
            clock[0] += 10.0
            if clock[0] >= 300:
                self.set()
            return self.is_set()

    ix = SimpleNamespace(engine=SimpleNamespace(name="a"), run_pass=run_pass)
    with caplog.at_level("INFO", logger="engine_bridge.indexer"):
        runindexer._passes(ix, None, Stop(), once=False)
    return [r.getMessage() for r in caplog.records]


def test_an_engine_down_whose_error_words_change_is_still_said_once(monkeypatch, caplog):
    # A hung engine's Hello was said to take connections at one try and not at the next: each
    # new text was said at once, a line every try.
    from engine_bridge.errors import EngineUnavailable

    words = ["though the address takes connections", "not even to a connection"]
    tries = [0]

    def run_pass():
        tries[0] += 1
        text = f"no answer within 10s, {words[tries[0] % 2]}"
        raise EngineUnavailable(text, code="DEADLINE_EXCEEDED", operation="Hello")

    lines = _passes_every_ten_seconds_for_five_minutes(monkeypatch, caplog, run_pass)
    said = [line for line in lines if "unreachable" in line]
    assert tries[0] == 30
    assert len(said) == 1, said


def test_an_engine_failing_by_turns_at_two_calls_says_each_failure_once(monkeypatch, caplog):
    # Each failure was new after the other: a line at every try for as long as it went on.
    from engine_bridge.errors import EngineRejected, EngineUnavailable

    tries = [0]

    def run_pass():
        tries[0] += 1
        if tries[0] % 2:
            raise EngineUnavailable(
                "no answer within 10s", code="DEADLINE_EXCEEDED", operation="ListInstanceIDs"
            )
        raise EngineRejected("GetInstance refused: too many requests")

    lines = _passes_every_ten_seconds_for_five_minutes(monkeypatch, caplog, run_pass)
    said = [line for line in lines if line.startswith("engine a")]
    assert tries[0] == 30
    assert len(said) == 2, said
    assert "unreachable" in said[0] and "too many requests" in said[1]


def test_a_failure_log_keeps_a_bounded_number_of_failures():
    from engine_bridge.management.commands.runindexer import _FailureLog

    said = _FailureLog()
    for n in range(1000):  # a text that changes at every try
        said.say(logging.WARNING, f"refused #{n}", "refused #%d", n)
    assert len(said.repeats.said_at) <= _FailureLog.KINDS


def test_a_failure_that_goes_on_is_logged_once_then_every_ten_minutes(monkeypatch, caplog):
    import threading
    from types import SimpleNamespace

    from engine_bridge.errors import EngineRejected
    from engine_bridge.indexer import PassResult
    from engine_bridge.management.commands import runindexer

    clock = [0.0]
    monkeypatch.setattr(runindexer.time, "monotonic", lambda: clock[0])
    answers = iter([*(["refused"] * 300), "ok", *(["refused"] * 2)])

    def run_pass():
        if next(answers, "end") == "ok":
            return PassResult()
        raise EngineRejected("api token mismatch")

    class Stop(threading.Event):
        waits = 0

        def wait(self, timeout=None):
            # A pass every 5 s (the refused token's retry), for 303 passes.
            clock[0] += 5.0
            self.waits += 1
            if self.waits >= 303:
                self.set()
            return self.is_set()

    ix = SimpleNamespace(engine=SimpleNamespace(name="a"), run_pass=run_pass)
    with caplog.at_level("INFO", logger="engine_bridge.indexer"):
        runindexer._passes(ix, None, Stop(), once=False)
    lines = [r.getMessage() for r in caplog.records]
    refused = [line for line in lines if "api token mismatch" in line]
    # 300 refusals in 25 minutes: said at once, then at 10 and 20 minutes with their counts;
    # after a pass that worked, the same refusal is new again.
    assert refused[:3] == [
        "engine a: pass failed: api token mismatch",
        "engine a: pass failed: api token mismatch (120 times in 10 min)",
        "engine a: pass failed: api token mismatch (120 times in 10 min)",
    ]
    assert refused[3:] == ["engine a: pass failed: api token mismatch"]
    assert "engine a reachable again" in lines


@pytest.mark.django_db(transaction=True)
def test_runindexer_stops_indexing_an_engine_another_took_over(settings, monkeypatch, caplog):
    from engine_bridge.config import EngineConfig
    from engine_bridge.indexer import EngineIndexer
    from engine_bridge.locks import LockLost

    def taken_over(self):
        raise LockLost("another runindexer took this engine over")

    monkeypatch.setattr(EngineIndexer, "run_pass", taken_over)
    settings.CONSOLE_ENGINES = [EngineConfig("a", "127.0.0.1:1")]
    with pytest.raises(CommandError, match="no longer indexing a: another runindexer took it"):
        call_command("runindexer", stdout=StringIO())  # not --once: it stops by itself
    assert "engine a: another runindexer took this engine over; no longer indexing it here" in (
        caplog.text
    )


def _held_engines(*names: str) -> tuple[list, list, list]:
    """Engines held by this process (their locks acquired: release them), each with an indexer
    carrying its lock's token and no client, as runindexer's heartbeat sees them."""
    from engine_bridge.indexer import EngineIndexer
    from engine_bridge.locks import EngineLock
    from workflows_ui.models import Engine

    engines = [Engine.objects.create(name=name, address="h:1") for name in names]
    locks = [EngineLock(e.pk, e.name) for e in engines]
    indexers = []
    for engine, lock in zip(engines, locks, strict=True):
        lock.acquire()
        indexers.append(EngineIndexer(engine, client=None))  # type: ignore[arg-type]
        indexers[-1].holder_token = lock.token
    return engines, locks, indexers


def _beating(indexers: list, threads: list, once: bool) -> tuple[threading.Event, threading.Thread]:
    """Starts the engines' threads (stand-ins) and runindexer's heartbeat over them; set the
    event and join the thread to stop it."""
    from django.db import connections

    from engine_bridge.management.commands import runindexer

    for thread in threads:
        thread.start()
    stop = threading.Event()
    held = list(zip(indexers, threads, strict=True))

    def beat() -> None:
        # As runindexer's own thread does: a connection left open by a thread that ended is
        # closed only by the garbage collector, at worst after the test database's drop.
        try:
            runindexer._heartbeats(held, stop, once)
        finally:
            connections.close_all()  # this thread's

    heart = threading.Thread(target=beat)
    heart.start()
    return stop, heart


@pytest.mark.django_db(transaction=True)
def test_the_heartbeat_is_written_only_for_engines_still_held_by_a_running_thread(settings):
    import threading

    from workflows_ui.models import Engine

    settings.CONSOLE_INDEXER_STALE_AFTER = 1.2  # a beat every 0.2 s
    engines, locks, indexers = _held_engines("held", "lost")
    # Another runindexer took "lost" over (this one's lock lost unseen): a new token.
    Engine.objects.filter(name="lost").update(indexer_token="another")
    running = threading.Event()
    threads = [threading.Thread(target=running.wait) for _ in engines]  # the engines' threads
    stop, heart = _beating(indexers, threads, once=False)

    def seen(name):
        return Engine.objects.get(name=name).indexer_seen_at

    try:
        wait_for(lambda: seen("held"), timeout=5)
        first = seen("held")
        wait_for(lambda: seen("held") > first, timeout=5)  # renewed
        assert seen("lost") is None
        # Its thread over (the engine taken over, found at its next write): no more beats.
        running.set()
        for thread in threads:
            thread.join()
        # A beat that saw the thread alive just before may still write: let it land first.
        time.sleep(0.5)
        Engine.objects.filter(name="held").update(indexer_seen_at=None)
        time.sleep(0.6)
        assert seen("held") is None and seen("lost") is None
    finally:
        running.set()
        stop.set()
        heart.join()
        for lock in locks:
            lock.release()


@pytest.mark.django_db(transaction=True)
def test_a_longer_limit_for_runindexer_does_not_space_its_heartbeats_beyond_the_pages_limit(
    settings, monkeypatch
):
    # runindexer started with CONSOLE_INDEXER_STALE_AFTER=600 (a beat every 100 s) beside web
    # processes left at a minute: during a pass longer than a minute, they said stale.
    import threading

    from engine_bridge.management.commands import runindexer
    from workflows_ui.models import Engine

    settings.CONSOLE_INDEXER_STALE_AFTER = 600.0
    # The longest wait between beats, shortened (10 s) for the test.
    monkeypatch.setattr(runindexer, "HEARTBEAT_MAX_INTERVAL", 0.2, raising=False)
    [engine], [lock], [ix] = _held_engines("slow")
    running = threading.Event()
    thread = threading.Thread(target=running.wait)  # the engine's thread, in a long pass
    stop, heart = _beating([ix], [thread], once=False)

    def seen():
        return Engine.objects.get(pk=engine.pk).indexer_seen_at

    try:
        wait_for(seen, timeout=5)
        first = seen()
        wait_for(lambda: seen() > first, timeout=5)  # renewed at the shorter interval
    finally:
        running.set()
        stop.set()
        heart.join()
        thread.join()
        lock.release()


@pytest.mark.django_db(transaction=True)
def test_no_heartbeat_for_an_engine_whose_thread_shows_no_progress(settings, caplog):
    # A thread alive but stuck (a bug, a database call that never returns) was beaten for,
    # its engine said to be indexed for ever.
    import threading

    from django.utils import timezone

    from engine_bridge.management.commands import runindexer
    from workflows_ui.models import Engine

    settings.CONSOLE_ENGINE_TIMEOUT = 10.0  # the limit is then INDEXER_SILENT's 5 minutes
    [engine], [lock], [ix] = _held_engines("stuck")
    running = threading.Event()
    thread = threading.Thread(target=running.wait)  # the engine's thread: alive
    thread.start()
    beats = runindexer._Heartbeats([(ix, thread)])
    try:
        ix.progressed_at = time.monotonic() - 301
        beats.write(timezone.now())
        assert Engine.objects.get(pk=engine.pk).indexer_seen_at is None
        assert re.search(r"its indexing thread has shown no progress for 30\d s", caplog.text)
        ix.progressed_at = time.monotonic()  # it moves again: beaten for again
        beats.write(timezone.now())
        assert Engine.objects.get(pk=engine.pk).indexer_seen_at is not None
    finally:
        running.set()
        thread.join()
        lock.release()


@pytest.mark.django_db(transaction=True)
def test_once_ends_an_engines_heartbeat_when_its_pass_is_over_not_when_the_slowest_is(settings):
    # --once over two engines, one slow: the heartbeat of the one done early stayed until the
    # slow one's pass was over, and it read stale meanwhile (a heartbeat older than a minute).
    import threading

    from workflows_ui.models import Engine

    settings.CONSOLE_INDEXER_STALE_AFTER = 1.2  # a beat every 0.2 s
    engines, locks, indexers = _held_engines("quick", "slow")
    passes = {name: threading.Event() for name in ("quick", "slow")}  # set: the pass is over
    threads = [threading.Thread(target=passes[e.name].wait) for e in engines]
    stop, heart = _beating(indexers, threads, once=True)

    def seen(name):
        return Engine.objects.get(name=name).indexer_seen_at

    try:
        wait_for(lambda: seen("quick") and seen("slow"), timeout=5)
        passes["quick"].set()
        wait_for(lambda: seen("quick") is None, timeout=5)
        first = seen("slow")
        wait_for(lambda: seen("slow") > first, timeout=5)  # the slow one's pass goes on
        assert seen("quick") is None
    finally:
        for over in passes.values():
            over.set()
        for thread in threads:
            thread.join()
        stop.set()
        heart.join()
        for lock in locks:
            lock.release()
    assert seen("quick") is None and seen("slow") is None  # --once over: both ended


def test_a_database_down_for_minutes_is_not_taken_for_a_stuck_thread(monkeypatch, caplog):
    # PostgreSQL down: the lock's ensure() fails before each pass, so no pass began for the
    # whole outage, and after 5 minutes the heartbeat logged the thread as stuck and stopped.
    import threading
    from types import SimpleNamespace

    from django.db import OperationalError

    from engine_bridge.management.commands import runindexer

    clock = [1000.0]
    monkeypatch.setattr(runindexer.time, "monotonic", lambda: clock[0])

    class DatabaseDown:
        def ensure(self):
            raise OperationalError("connection refused")

    class Stop(threading.Event):
        def wait(self, timeout=None):
            clock[0] += 10.0  # a try every 10 s, for 7 minutes
            if clock[0] >= 1000.0 + 420:
                self.set()
            return self.is_set()

    def run_pass():
        raise AssertionError("no pass while the database is down")

    ix = SimpleNamespace(
        engine=SimpleNamespace(name="a", pk=1), run_pass=run_pass, progressed_at=clock[0]
    )
    with caplog.at_level("INFO", logger="engine_bridge.indexer"):
        runindexer._passes(ix, DatabaseDown(), Stop(), once=False)
        stuck = runindexer._Heartbeats([])._stuck(ix)
    assert "database error (connection refused)" in caplog.text
    assert not stuck, caplog.text
    assert "no progress" not in caplog.text


@pytest.mark.django_db(transaction=True)
def test_once_ends_the_heartbeat_so_an_engine_indexed_by_a_scheduler_is_not_stale_between_runs(
    settings,
):
    from datetime import timedelta

    from django.utils import timezone

    from engine_bridge.config import EngineConfig
    from workflows_ui.models import Engine

    settings.CONSOLE_ENGINE_TIMEOUT = 0.5
    settings.CONSOLE_ENGINES = [EngineConfig("down", "127.0.0.1:1")]
    # A runindexer that ran for good was killed 10 minutes ago; a scheduler runs --once now.
    long_ago = timezone.now() - timedelta(minutes=10)
    Engine.objects.create(name="down", address="127.0.0.1:1", indexer_seen_at=long_ago)
    with pytest.raises(CommandError, match="the pass failed for down"):
        call_command("runindexer", "--once", stdout=StringIO())
    engine = Engine.objects.get(name="down")
    assert engine.indexer_seen_at is None and engine.health() == "unreachable"
    # A minute and a half later, before the next run: its last try is recent enough (a
    # heartbeat left behind would say stale by now).
    for field in ("created_at", "last_contact_at", "last_error_at", "indexer_seen_at"):
        if getattr(engine, field) is not None:
            setattr(engine, field, getattr(engine, field) - timedelta(seconds=90))
    assert engine.health() == "unreachable"


@pytest.mark.django_db(transaction=True)
def test_a_second_path_to_the_sqlite_file_is_the_same_lock(settings, tmp_path):
    from django.db import connection

    from engine_bridge.locks import EngineLock, EngineTaken
    from workflows_ui.models import Engine

    if connection.vendor != "sqlite":
        pytest.skip("SQLite's lock file")
    engine = Engine.objects.create(name="a", address="h:1")
    mine = EngineLock(engine.pk, "a")
    mine.acquire()
    real = connection.settings_dict["NAME"]
    alias = tmp_path / "alias.sqlite3"
    alias.symlink_to(real)
    connection.settings_dict["NAME"] = str(alias)
    try:
        with pytest.raises(EngineTaken):
            EngineLock(engine.pk, "a").acquire()
    finally:
        connection.settings_dict["NAME"] = real
        mine.release()


@pytest.mark.django_db(transaction=True)
def test_forgetengine_takes_the_last_engine_once_runindexer_is_restarted_without_it(settings):
    # Its only engine taken out, runindexer has nothing to index and says so; it still marks
    # the engines no process holds as not indexed, else forgetengine would refuse them for good.
    from engine_bridge.locks import EngineLock
    from tests.console import factories
    from workflows_ui.models import Engine

    settings.CONSOLE_ENGINES = []
    factories.engine("only")
    held = factories.engine("held")
    with pytest.raises(CommandError, match="'only' is in the CONSOLE_ENGINES of a runindexer"):
        call_command("forgetengine", "only", "--yes")
    other = EngineLock(held.pk, "held")  # another runindexer indexes it
    other.acquire()
    try:
        with pytest.raises(CommandError, match="no engine to index"):
            call_command("runindexer", "--once", stdout=StringIO())
    finally:
        other.release()
    assert dict(Engine.objects.values_list("name", "configured")) == {"only": False, "held": True}
    out = StringIO()
    call_command("forgetengine", "only", "--yes", stdout=out)
    assert "engine 'only' deleted" in out.getvalue()


@pytest.mark.django_db(transaction=True)
def test_forgetengine_deletes_an_engine_taken_out_and_all_it_indexed(settings, monkeypatch):
    from pathlib import Path

    from django.db import connection
    from django.db.models import Sum

    from engine_bridge import retention
    from engine_bridge.config import EngineConfig
    from engine_bridge.locks import EngineLock
    from tests.console import factories
    from workflows_ui.models import ChangeLog, Engine, HistoryEvent, Instance, Run, StatusCount

    settings.CONSOLE_ENGINES = [EngineConfig("kept", "h:1")]
    gone, kept = factories.engine("gone"), factories.engine("kept")
    with pytest.raises(CommandError, match="'gone' is in the CONSOLE_ENGINES of a runindexer"):
        call_command("forgetengine", "gone", "--yes")
    Engine.objects.filter(pk=gone.pk).update(configured=False)  # as runindexer restarted
    for n in range(5):
        inst = factories.instance(gone, instance_id=f"g-{n}", status="COMPLETED")
        run = factories.run(inst)
        HistoryEvent.objects.create(run=run, position=0, event_id=-1, event_type="workflowStarted")
        ChangeLog.objects.create(engine=gone, instance=inst, kind="new", run=run)
    factories.instance(gone, instance_id="g-purged", purged=True)
    child = factories.instance(
        kept, instance_id="g-0:0001", parent_engine=gone, parent_instance_id="g-0"
    )

    def counted(engine):
        return StatusCount.objects.filter(engine=engine).aggregate(n=Sum("count"))["n"]

    # Refused: still configured, unknown, held by an indexer, not confirmed.
    with pytest.raises(CommandError, match="'kept' is in CONSOLE_ENGINES"):
        call_command("forgetengine", "kept", "--yes")
    with pytest.raises(CommandError, match="no engine 'nope'"):
        call_command("forgetengine", "nope", "--yes")
    indexer = EngineLock(gone.pk, "gone")
    indexer.acquire()
    try:
        with pytest.raises(CommandError, match="being indexed by a runindexer"):
            call_command("forgetengine", "gone", "--yes")
    finally:
        indexer.release()
    with pytest.raises(CommandError, match="confirm with --yes"):
        call_command("forgetengine", "gone")  # stdin is no terminal here
    assert Instance.objects.filter(engine=gone).count() == 6

    # A batch at a time, the counts exact after each.
    monkeypatch.setattr(retention, "INSTANCES_PER_BATCH", 2)
    lock = EngineLock(gone.pk, "gone")
    lock.acquire()
    try:
        assert retention.forget_engine_batch(gone.pk, lock.token) == 2
    finally:
        lock.release()
    assert counted(gone) == Instance.objects.filter(engine=gone, purged=False).count() == 3
    database = Path(connection.settings_dict["NAME"]).resolve()
    lock_file = database.with_name(f"{database.name}.indexer-{gone.pk}.lock")
    assert lock_file.exists() or connection.vendor != "sqlite"

    out = StringIO()
    call_command("forgetengine", "gone", "--yes", stdout=out)
    assert "engine 'gone' deleted (4 instances deleted by this run)" in out.getvalue()
    if connection.vendor == "sqlite":  # held by nobody now: it goes with the engine
        assert not lock_file.exists()
    assert not Engine.objects.filter(name="gone").exists()
    assert list(Instance.objects.values_list("instance_id", flat=True)) == ["g-0:0001"]
    assert not Run.objects.filter(instance__engine__name="gone").exists()
    assert HistoryEvent.objects.count() == 0
    child.refresh_from_db()
    assert child.parent_engine_id is None and child.parent_instance_id == "g-0"
    # The child's page is told on kept's log: its parent deleted, then the link to it gone.
    told = ChangeLog.objects.values_list("engine__name", "instance__instance_id", "kind")
    assert list(told) == [("kept", "g-0:0001", "updated")] * 2
    assert counted(kept) == 1


@pytest.mark.django_db(transaction=True)
def test_forgetengine_asked_for_the_name_deletes_only_once_it_is_typed(monkeypatch):
    import builtins
    import sys

    from tests.console import factories
    from workflows_ui.models import Engine

    gone = factories.engine("gone")
    Engine.objects.filter(pk=gone.pk).update(configured=False)
    factories.instance(gone, instance_id="g-0")
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True)
    answers = iter(["other", EOFError, KeyboardInterrupt])

    def typed(prompt):
        answer = next(answers)
        if isinstance(answer, type):
            raise answer
        return answer

    monkeypatch.setattr(builtins, "input", typed)
    # A wrong name, the end of input (Ctrl-D) and Ctrl-C at the prompt all delete nothing.
    for _ in range(3):
        with pytest.raises(CommandError, match="nothing deleted"):
            call_command("forgetengine", "gone", stdout=StringIO())
    assert Engine.objects.filter(name="gone").exists()
    monkeypatch.setattr(builtins, "input", lambda prompt: " gone\n")
    call_command("forgetengine", "gone", stdout=StringIO())
    assert not Engine.objects.filter(name="gone").exists()


@pytest.mark.django_db(transaction=True)
def test_once_says_in_its_exit_status_that_the_retention_of_engines_taken_out_failed(
    settings, monkeypatch
):
    from django.db import OperationalError

    from engine_bridge import retention
    from engine_bridge.config import EngineConfig
    from engine_bridge.indexer import EngineIndexer, PassResult

    monkeypatch.setattr(EngineIndexer, "run_pass", lambda self: PassResult())  # no engine

    def locked(indexed, retention_days, now):
        raise OperationalError("database is locked")

    monkeypatch.setattr(retention, "forget_unindexed", locked)
    settings.CONSOLE_ENGINES = [EngineConfig("a", "h:1")]
    # The engine's pass succeeded; the retention call did not: a script must be told.
    with pytest.raises(CommandError, match="^the retention of the engines not in CONSOLE_ENG"):
        call_command("runindexer", "--once", stdout=StringIO())


@pytest.mark.django_db(transaction=True)
def test_a_kept_connection_that_a_postgresql_restart_broke_is_replaced_before_the_next_pass(
    monkeypatch,
):
    # runindexer keeps its connection between passes; a restart or failover ends its session
    # as this does. Its next pass (after close_old_connections, as runindexer's loop calls it)
    # must not fail with a "database error".
    import time

    from django.db import close_old_connections, connection, connections

    from workflows_ui.models import Engine

    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL's kept connections (SQLite opens one for each use)")
    # Kept and checked as runindexer's are with PostgreSQL's settings (see
    # test_web_processes_keep_no_database_connection_for_the_next_request); the tests' own
    # settings open one for each test.
    monkeypatch.setitem(connection.settings_dict, "CONN_MAX_AGE", 60)
    monkeypatch.setitem(connection.settings_dict, "CONN_HEALTH_CHECKS", True)
    connection.close()
    Engine.objects.count()
    with connection.cursor() as cur:
        cur.execute("SELECT pg_backend_pid()")
        (pid,) = cur.fetchone()
    other = connections.create_connection("default")
    try:
        with other.cursor() as cur:
            cur.execute("SELECT pg_terminate_backend(%s)", [pid])
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                cur.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", [pid])
                if cur.fetchone()[0] == 0:
                    break
                time.sleep(0.05)
    finally:
        other.close()
    close_old_connections()
    assert Engine.objects.count() == 0
