"""Locks of the indexer's processes.

One indexer per engine: a lock each ``runindexer`` takes on the engines it indexes.

Two indexers writing one engine's instances would each apply the same status change to the
counts (on PostgreSQL, where their transactions run side by side, counts went negative) and ask
the engine everything twice. The lock is the operating system's or the database's, so a process
killed outright releases it with its file descriptors or its connection:

- SQLite: ``flock`` on a file beside the database;
- PostgreSQL: a session advisory lock, held on a connection of its own (the indexer's own
  connection is closed and opened again as Django sees fit, which would release it).

A lock can be lost unseen: a PostgreSQL restart or failover, or a killed backend, ends its
session; a second path to a SQLite file (a link) is another lock file. So the lock is also a
fence: taking it writes a token of this process in the engine's row, each write transaction of
the indexer checks it (``check_holder``), and a process whose token was replaced stops writing
that engine. ``ensure`` takes a lost PostgreSQL lock again between passes when it is free.
"""

from __future__ import annotations

import fcntl
import os
import time
import uuid
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from django.db import connections, transaction

from workflows_ui.models import Engine

#: The first key of the PostgreSQL advisory locks; the second is the engine's row id.
_PG_LOCK_CLASS = 0x57464958  # "WFIX"
#: The key of the lock that keeps the change log's ids in commit order.
PG_CHANGE_LOG_LOCK = 0x5746434C  # "WFCL"
#: The key of the lock that deleters of instances take one at a time.
PG_DELETERS_LOCK = 0x57464445  # "WFDE"
#: The key of the lock that puts an engine learning its app id before or after the indexers
#: looking up that app's engine for a child.
PG_APP_IDS_LOCK = 0x57464150  # "WFAP"
#: Tries, and seconds between them, to take an engine's lock before saying another process has
#: it: another runindexer's retention may hold the lock of an engine it does not index, for one
#: short batch (engine_bridge.retention.forget_unindexed).
TAKE_TRIES = 5
TAKE_WAIT = 0.25


def _transaction_lock(key: int, using: str, shared: bool = False) -> None:
    """A PostgreSQL advisory lock held until the transaction ends; nothing on SQLite, which
    has one writer at a time."""
    conn = connections[using]
    if conn.vendor == "postgresql":
        kind = "pg_advisory_xact_lock_shared" if shared else "pg_advisory_xact_lock"
        with conn.cursor() as cur:
            cur.execute(f"SELECT {kind}(%s)", [key])


def change_log_in_commit_order(using: str = "default") -> None:
    """Call in a transaction just before inserting change-log rows; held until it ends.

    Live pages catch up with "changes after id N". On PostgreSQL ids come from a sequence when a
    row is inserted, not when it commits: with two engines indexed at once (the threads of one
    ``runindexer``, or two processes), a transaction could take id 10 and commit after another
    took 11 and committed, and a page that had read 11 would never see 10. Holding this lock
    from the insert to the commit puts the ids in commit order. (SQLite has one writer at a
    time: nothing to do.)
    """
    _transaction_lock(PG_CHANGE_LOG_LOCK, using)


def app_ids_in_order(learning: bool, using: str = "default") -> None:
    """Call at the start of a transaction that learns an engine's app id, or deletes an engine
    (``learning``), or looks up the engine of a parent on another app; held until it ends.

    The learner links the children already indexed under its app id; the others link a child
    to the engine they find for its parent's app. On PostgreSQL, run side by side, each would
    miss the other's uncommitted write (the learner does not see the child, the child's indexer
    does not see the app id) and the child would stay unlinked. Learners take the lock alone,
    lookers-up together: each reads after the other's commit. Taken before any instance is
    locked (the indexer's fence has locked its own engine's row, which no holder of this lock
    waits for), it can't close a circle of waits. (SQLite has one writer at a time: nothing
    to do.)"""
    _transaction_lock(PG_APP_IDS_LOCK, using, shared=not learning)


def keep_from_deletion(pks: Callable[[], Collection[int]], using: str = "default") -> None:
    """Keeps these instances (``pks()``, asked for on PostgreSQL only) from being deleted until
    the transaction ends: a ``FOR KEY SHARE`` lock, which leaves them free to be updated. For
    the instances of other engines that change-log rows are about to name, before taking the
    change log's lock: PostgreSQL checks at the commit that a row's instance is still there,
    and that check waits for a transaction deleting it (retention, forgetengine), which may
    itself be waiting for the change log's lock. Taken first, the two wait for each other in
    one order only. (SQLite has one writer at a time: nothing to do.)"""
    conn = connections[using]
    if conn.vendor != "postgresql":
        return
    chosen = sorted(pks())
    if not chosen:
        return
    with conn.cursor() as cur:
        cur.execute(
            "SELECT id FROM workflows_ui_instance WHERE id = ANY(%s) ORDER BY id FOR KEY SHARE",
            [chosen],
        )


def one_deleter_at_a_time(using: str = "default") -> None:
    """Call in a transaction that deletes instances, before it locks any; held until it ends.
    A deleter keeps the kin of what it deletes from deletion (``keep_from_deletion``): two
    deleting a parent and its child on two engines (their retention, or forgetengine) would
    each hold one and wait for the other. The indexers never take this lock."""
    _transaction_lock(PG_DELETERS_LOCK, using)


class EngineTaken(Exception):
    """Another indexer holds the engine."""


class LockLost(Exception):
    """Another indexer took the engine over: this one's lock had been lost."""


def check_holder(engine_pk: int, token: str) -> None:
    """In a write transaction, first: the engine is still this process's. On PostgreSQL the
    engine's row stays locked until the commit, so another process taking the engine over waits
    for it, and every write of this one lands before the takeover or not at all."""
    holder = (
        # NO KEY UPDATE, not UPDATE: another engine's indexer writing change-log rows on this
        # engine's log checks at its commit that the engine is there (a KEY SHARE lock), and
        # may hold the change log's lock this one waits for. A takeover still waits for it.
        Engine.objects.select_for_update(no_key=True)
        .filter(pk=engine_pk)
        .values_list("indexer_token", flat=True)
        .first()
    )
    if holder != token:
        raise LockLost(
            "another runindexer took this engine over (this one's lock was lost, with its "
            "database connection or through another path to the database)"
        )


@contextmanager
def fenced(engine_pk: int, token: str) -> Iterator[None]:
    """A transaction that writes only while this process holds the engine (``check_holder``
    first; no check without a token: tests, benchmarks). Every write of the indexer and of the
    retention goes through one, so a process that lost the engine writes nothing more there."""
    with transaction.atomic():
        if token:
            check_holder(engine_pk, token)
        yield


def write_heartbeat(engine_pk: int, token: str, at: datetime | None) -> bool:
    """The engine's heartbeat (``Engine.indexer_seen_at``), written only while this process holds
    the engine (``at`` None ends it). One UPDATE whose condition is the fence: no transaction
    kept open and no lock held past the statement, so it never holds up the indexer's writes
    (it waits, at most, for one of them to commit). False once the token was replaced: another
    process holds the engine."""
    return Engine.objects.filter(pk=engine_pk, indexer_token=token).update(indexer_seen_at=at) == 1


class EngineLock:
    """Held from ``acquire`` until ``release`` or the end of the process."""

    def __init__(self, engine_pk: int, engine_name: str) -> None:
        self.engine_pk = engine_pk
        self.engine_name = engine_name
        #: This process's fence token for the engine (see check_holder), set by acquire.
        self.token = ""
        self._file: Any = None
        self._connection: Any = None
        self._postgres = False

    def acquire(self) -> None:
        self._take()
        self._write_token()

    def acquire_unfenced(self) -> None:
        """Takes the lock at once or not at all (EngineTaken), keeping the engine's token: for
        the retention of an engine no process indexes (engine_bridge.retention). A token of its
        own would stop an indexer whose lock was lost unseen (LockLost), one that indexes the
        engine all the same; the writes are fenced on the token read here instead."""
        self._lock()
        holder = (
            Engine.objects.filter(pk=self.engine_pk).values_list("indexer_token", flat=True).first()
        )
        if holder is None:  # deleted meanwhile (forgetengine): nobody needs its lock file
            self.remove_file()
            raise LockLost("the engine was deleted")
        if holder:
            self.token = holder
        else:  # never indexed: no holder to keep
            self._write_token()

    def seen_held(self) -> bool:
        """Whether PostgreSQL shows the lock held (by any session): a look that takes no
        connection of its own, as ``take_once`` does. Always False on SQLite, where taking a
        lock once costs no more."""
        default = connections["default"]
        if default.vendor != "postgresql":
            return False
        with default.cursor() as cur:
            cur.execute(
                "SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted"
                " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
                " AND classid::bigint = %s AND objid::bigint = %s AND objsubid = 2",
                [_PG_LOCK_CLASS, self.engine_pk],
            )
            return cur.fetchone() is not None

    def take_once(self) -> bool:
        """Takes the lock if no process holds it (True), at once, writing no token: for a short
        look at an engine no process may index (release it after)."""
        try:
            self._lock()
        except EngineTaken:
            return False
        return True

    def _write_token(self) -> None:
        self.token = uuid.uuid4().hex
        # On PostgreSQL this waits for a write transaction of a former holder still in flight.
        Engine.objects.filter(pk=self.engine_pk).update(indexer_token=self.token)

    def ensure(self) -> None:
        """Between passes: a PostgreSQL lock whose session ended is taken again if free
        (EngineTaken if another process has it now)."""
        if not self._postgres:
            return
        if self._connection is not None:
            try:
                with self._connection.cursor() as cur:
                    cur.execute("SELECT 1")
                return
            except Exception:  # noqa: BLE001 - any failure: the session, and the lock, are gone
                self._connection.close()
                self._connection = None
        self._take()  # a database still down raises, and the next pass tries again

    def _take(self) -> None:
        """``_lock``, tried again for a second before EngineTaken (see TAKE_TRIES)."""
        for left in range(TAKE_TRIES - 1, -1, -1):
            try:
                self._lock()
                return
            except EngineTaken:
                if not left:
                    raise
                time.sleep(TAKE_WAIT)

    def _lock(self) -> None:
        default = connections["default"]
        if default.vendor == "postgresql":
            self._postgres = True
            conn = connections.create_connection("default")
            # Taken by runindexer's main thread, checked by the engine's thread (ensure).
            conn.inc_thread_sharing()
            with conn.cursor() as cur:
                cur.execute("SELECT pg_try_advisory_lock(%s, %s)", [_PG_LOCK_CLASS, self.engine_pk])
                (taken,) = cur.fetchone()
            if not taken:
                conn.close()
                raise EngineTaken(self._message())
            self._connection = conn
            return
        name = str(default.settings_dict["NAME"])
        if name == ":memory:" or "mode=memory" in name:
            return  # a database no other process can open
        database = Path(name).resolve()  # one lock file for every link to the database
        path = database.with_name(f"{database.name}.indexer-{self.engine_pk}.lock")
        f = open(path, "a+")  # noqa: SIM115 - held open for the process's life
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.close()
            raise EngineTaken(self._message()) from None
        # Who holds it, for whoever looks at the file.
        f.truncate(0)
        f.write(f"{os.getpid()} {self.engine_name}\n")
        f.flush()
        self._file = f

    def remove_file(self) -> None:
        """While held, deletes the SQLite lock file: for an engine deleted from the database
        (``forgetengine``), whose lock no process needs again (SQLite never gives a deleted row's
        id to another). A process that opened the file before finds it held, and is refused."""
        if self._file is not None:
            Path(self._file.name).unlink(missing_ok=True)

    def release(self) -> None:
        self._postgres = False  # nothing for ensure to take again
        if self._connection is not None:
            self._connection.close()  # ends the session, and its advisory locks with it
            self._connection = None
        if self._file is not None:
            self._file.close()
            self._file = None

    def _message(self) -> str:
        return (
            f"engine {self.engine_name!r} is being indexed by another runindexer: stop it, or "
            "give each process its own engines with --engine (or it is held by forgetengine, or "
            "for one batch by another runindexer's retention: start again)"
        )
