"""SQLite persistence for devengine.

Everything the engine must not lose lives here: instances, the committed history of each
instance's current run, each instance's inbox (events not yet handed to a workflow turn, including
timers that have not fired yet) and the activities waiting for a result. In-flight work (which
worker holds which turn or activity) is deliberately not stored: after a restart everything that
was pending is handed out again, which is the at-least-once contract the SDK expects.

The database runs in WAL mode with synchronous=NORMAL: a committed transaction survives the engine
process being killed (only a power loss could drop the last commits). The engine holds the file
exclusively (no other process reads it), which spares every transaction its file-lock calls.

Changes are grouped: each `transaction()` is a savepoint inside a batch that is committed a few
milliseconds later (COMMIT_DELAY), so a burst of worker results costs one commit. Nothing
acknowledged to a client is lost that way: the engine calls `flush()` before answering a
management call or a read, or telling a waiter a state, and a worker result that dies with an
uncommitted batch is simply handed out again after a restart.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import uuid
from collections import OrderedDict
from dataclasses import dataclass, fields
from operator import attrgetter
from pathlib import Path

from devengine import protos as p

# Changes made within this many seconds share one COMMIT. Management calls commit before they
# answer; what workers report and is lost in a crash in between is redelivered (at least once).
COMMIT_DELAY = 0.005

SCHEMA = """
CREATE TABLE IF NOT EXISTS instances (
    -- seq orders ListInstanceIDs pages and is the continuation token.
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    instance_id TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    status INTEGER NOT NULL,
    execution_id TEXT NOT NULL,
    created_ns INTEGER NOT NULL,
    updated_ns INTEGER NOT NULL,
    started_ns INTEGER,
    completed_ns INTEGER,
    scheduled_ns INTEGER,
    input TEXT,
    output TEXT,
    custom_status TEXT,
    failure BLOB,
    parent_instance_id TEXT,
    trace_context BLOB,
    -- 1 when a turn must run even with an empty inbox (a re-run, a stalled retry).
    needs_turn INTEGER NOT NULL DEFAULT 0,
    -- the app id of a parent that runs on another engine (NULL: this one)
    parent_app_id TEXT,
    -- when the retention policy purges the instance (NULL: never); set when a run ends
    purge_due_ns INTEGER
);
-- Recursive terminate and purge walk children by parent.
CREATE INDEX IF NOT EXISTS instances_parent ON instances(parent_instance_id);

CREATE TABLE IF NOT EXISTS history (
    instance_id TEXT NOT NULL,
    pos INTEGER NOT NULL,
    event BLOB NOT NULL,
    PRIMARY KEY (instance_id, pos)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS inbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    instance_id TEXT NOT NULL,
    -- when the event may be delivered: now for most, fireAt for timers, the start time for
    -- a scheduled start.
    visible_ns INTEGER NOT NULL,
    event BLOB NOT NULL
);
-- A turn reads an instance's visible inbox in arrival order.
CREATE INDEX IF NOT EXISTS inbox_instance ON inbox(instance_id, id);

CREATE TABLE IF NOT EXISTS activities (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    instance_id TEXT NOT NULL,
    execution_id TEXT NOT NULL,
    task_id INTEGER NOT NULL,
    request BLOB NOT NULL,
    -- for the activity's span: when it was scheduled and the workflow span it belongs to
    created_ns INTEGER NOT NULL DEFAULT 0,
    parent_span TEXT NOT NULL DEFAULT '',
    -- for an activity another app's workflow scheduled here: the taskScheduled's router, which
    -- names the app its result goes back to (NULL: a workflow of this engine)
    router BLOB
);
CREATE INDEX IF NOT EXISTS activities_instance ON activities(instance_id);

-- What this engine owes another app's engine (a child to start, an activity to run, a result,
-- a terminate): written in the transaction of the change that produced it, deleted once the
-- peer has accepted it.
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    app_id TEXT NOT NULL,
    body BLOB NOT NULL
);

-- Keys of the deliveries accepted from other engines: a sender that crashed before it could
-- forget a delivery sends it again, and the second one must change nothing. Each names its
-- sender's database (origin) and its outbox id there (seq); see `remember_received`.
CREATE TABLE IF NOT EXISTS received (
    key TEXT PRIMARY KEY
) WITHOUT ROWID;

-- This database's own facts: its id, which names it as the origin of its deliveries.
CREATE TABLE IF NOT EXISTS meta (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
"""


@dataclass
class InstanceRow:
    """One workflow instance as stored: the metadata of its current run (``seq`` is the row id,
    0 until inserted). The fields are the columns of ``instances``, in order."""

    seq: int
    instance_id: str
    name: str
    status: int
    execution_id: str
    created_ns: int
    updated_ns: int
    started_ns: int | None = None
    completed_ns: int | None = None
    scheduled_ns: int | None = None
    input: str | None = None
    output: str | None = None
    custom_status: str | None = None
    failure: bytes | None = None
    parent_instance_id: str | None = None
    trace_context: bytes | None = None
    needs_turn: int = 0
    parent_app_id: str | None = None
    purge_due_ns: int | None = None


INSTANCE_COLUMNS = ", ".join(f.name for f in fields(InstanceRow))
_DATA = tuple(f.name for f in fields(InstanceRow))[2:]  # all but seq and instance_id
_data_of = attrgetter(*_DATA)
# Built from the dataclass's field names, never from input.
INSERT_INSTANCE = (
    f"INSERT INTO instances (instance_id, {', '.join(_DATA)}) VALUES (?{', ?' * len(_DATA)})"  # noqa: S608
)
UPDATE_INSTANCE = f"UPDATE instances SET {' = ?, '.join(_DATA)} = ? WHERE instance_id = ?"  # noqa: S608


def connect(path: str) -> sqlite3.Connection:
    if path != ":memory:":
        _private(Path(path))
    # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE ... COMMIT).
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA locking_mode=EXCLUSIVE")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA busy_timeout=5000")
    conn.executescript(SCHEMA)
    _add_missing_columns(conn)
    # Pruning the keys of one origin's deliveries older than the one just taken.
    conn.execute("CREATE INDEX IF NOT EXISTS received_origin ON received(origin, seq)")
    # The retention purges due next (`purges_due`, `next_purge_due`): only the instances that
    # have one, which are few without a policy.
    conn.execute(
        "CREATE INDEX IF NOT EXISTS instances_purge_due ON instances(purge_due_ns) "
        "WHERE purge_due_ns IS NOT NULL"
    )
    conn.execute(
        "INSERT OR IGNORE INTO meta (name, value) VALUES ('database_id', ?)", (uuid.uuid4().hex,)
    )
    return conn


# Columns added after the first release: a database file written before them gets them here.
ADDED_COLUMNS = (
    ("instances", "parent_app_id", "TEXT"),
    ("activities", "router", "BLOB"),
    ("received", "origin", "TEXT"),
    ("received", "seq", "INTEGER"),
    ("instances", "purge_due_ns", "INTEGER"),
)


def _add_missing_columns(conn: sqlite3.Connection) -> None:
    for table, column, kind in ADDED_COLUMNS:
        present = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
        if column not in present:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")


def _private(path: Path) -> None:
    """The database file (and so its -wal and -shm, which SQLite gives its mode) readable by
    its owner only: it holds every workflow's payloads."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except FileExistsError:
        for made in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
            try:
                info = made.stat()
            except FileNotFoundError:
                continue
            if info.st_mode & 0o077 and info.st_uid == os.getuid():
                made.chmod(0o600)


class Store:
    """Typed access to the tables above. Callers own the transactions (see `transaction`)."""

    # Instance rows are read on every turn and every result: recently used ones are kept in
    # memory, written through on every change.
    CACHE_SIZE = 20_000
    HISTORY_CACHE_SIZE = 2_000

    def __init__(self, path: str):
        self.conn = connect(path)
        self._rows: OrderedDict[str, InstanceRow] = OrderedDict()
        # Parsed histories of recently active instances: a turn replays the whole history, so
        # without this every turn would read and parse it again. Never mutated, only replaced.
        self._histories: OrderedDict[str, list[p.HistoryEvent]] = OrderedDict()
        self._batch_open = False
        self._flush_scheduled = False

    def _remember(self, row: InstanceRow) -> None:
        self._rows[row.instance_id] = row
        self._rows.move_to_end(row.instance_id)
        if len(self._rows) > self.CACHE_SIZE:
            self._rows.popitem(last=False)

    def forget_cached(self) -> None:
        """After a rollback the cached rows may hold changes that were never written."""
        self._rows.clear()
        self._histories.clear()

    def close(self) -> None:
        self.flush()
        self.conn.close()

    def flush(self) -> None:
        """Commits the open batch, if any."""
        self._flush_scheduled = False
        if self._batch_open:
            self._batch_open = False
            self.conn.execute("COMMIT")

    def _schedule_flush(self) -> None:
        if self._flush_scheduled:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush()  # no event loop (a tool or a unit test): commit at once
            return
        self._flush_scheduled = True
        loop.call_later(COMMIT_DELAY, self.flush)

    def transaction(self) -> _Transaction:
        return _Transaction(self)

    # -- instances -------------------------------------------------------------------------

    def get_instance(self, instance_id: str) -> InstanceRow | None:
        cached = self._rows.get(instance_id)
        if cached is not None:
            self._rows.move_to_end(instance_id)
            return cached
        row = self.conn.execute(
            f"SELECT {INSTANCE_COLUMNS} FROM instances WHERE instance_id = ?",  # noqa: S608
            (instance_id,),
        ).fetchone()
        if row is None:
            return None
        found = InstanceRow(*row)
        self._remember(found)
        return found

    def insert_instance(self, row: InstanceRow) -> None:
        cur = self.conn.execute(INSERT_INSTANCE, (row.instance_id, *_data_of(row)))
        row.seq = int(cur.lastrowid or 0)
        self._remember(row)

    def update_instance(self, row: InstanceRow) -> None:
        self._remember(row)
        self.conn.execute(UPDATE_INSTANCE, (*_data_of(row), row.instance_id))

    def delete_instance(self, instance_id: str) -> None:
        self._rows.pop(instance_id, None)
        self._histories.pop(instance_id, None)
        for table in ("instances", "history", "inbox"):
            self.conn.execute(f"DELETE FROM {table} WHERE instance_id = ?", (instance_id,))  # noqa: S608
        self.delete_own_activities(instance_id)

    def reset_run(self, instance_id: str) -> None:
        self._histories.pop(instance_id, None)
        """Drops what belongs to the instance's current run (a restart or continue-as-new)."""
        self.conn.execute("DELETE FROM history WHERE instance_id = ?", (instance_id,))
        self.delete_own_activities(instance_id)

    def delete_own_activities(self, instance_id: str) -> None:
        """Drops the activities this engine's instance scheduled. Those another app's workflow
        of the same id scheduled here stay: instance ids are each app's own, and that workflow
        waits for their results."""
        self.conn.execute(
            "DELETE FROM activities WHERE instance_id = ? AND router IS NULL", (instance_id,)
        )

    def children(self, instance_id: str) -> list[InstanceRow]:
        rows = self.conn.execute(
            f"SELECT {INSTANCE_COLUMNS} FROM instances WHERE parent_instance_id = ?",  # noqa: S608
            (instance_id,),
        ).fetchall()
        return [InstanceRow(*r) for r in rows]

    def list_ids(self, after_seq: int, limit: int | None) -> list[tuple[int, str]]:
        sql = "SELECT seq, instance_id FROM instances WHERE seq > ? ORDER BY seq"
        if limit is None:
            return self.conn.execute(sql, (after_seq,)).fetchall()
        return self.conn.execute(sql + " LIMIT ?", (after_seq, limit)).fetchall()

    def unfinished_instance_ids(self, terminal: frozenset[int]) -> list[str]:
        marks = ",".join("?" * len(terminal))
        rows = self.conn.execute(
            f"SELECT instance_id FROM instances WHERE status NOT IN ({marks})",  # noqa: S608
            tuple(terminal),
        ).fetchall()
        return [r[0] for r in rows]

    def purges_due(self, now_ns: int, limit: int) -> list[str]:
        """The instances whose retention purge is due, the earliest first."""
        rows = self.conn.execute(
            "SELECT instance_id FROM instances WHERE purge_due_ns <= ? "
            "ORDER BY purge_due_ns LIMIT ?",
            (now_ns, limit),
        ).fetchall()
        return [r[0] for r in rows]

    def next_purge_due(self) -> int | None:
        """When the next retention purge is due (None: none is)."""
        row = self.conn.execute(
            "SELECT MIN(purge_due_ns) FROM instances WHERE purge_due_ns IS NOT NULL"
        ).fetchone()
        return row[0]

    # -- history ---------------------------------------------------------------------------

    def history(self, instance_id: str) -> list[bytes]:
        rows = self.conn.execute(
            "SELECT event FROM history WHERE instance_id = ? ORDER BY pos", (instance_id,)
        ).fetchall()
        return [r[0] for r in rows]

    def last_history_event(self, instance_id: str) -> p.HistoryEvent | None:
        """The last committed event, read alone (a history can be many MiB)."""
        row = self.conn.execute(
            "SELECT event FROM history WHERE instance_id = ? ORDER BY pos DESC LIMIT 1",
            (instance_id,),
        ).fetchone()
        return p.HistoryEvent.FromString(row[0]) if row else None

    def history_length(self, instance_id: str) -> int:
        row = self.conn.execute(
            "SELECT COUNT(*) FROM history WHERE instance_id = ?", (instance_id,)
        ).fetchone()
        return int(row[0])

    def append_history(self, instance_id: str, start_pos: int, events: list[bytes]) -> None:
        self._histories.pop(instance_id, None)
        self.conn.executemany(
            "INSERT INTO history (instance_id, pos, event) VALUES (?, ?, ?)",
            [(instance_id, start_pos + i, e) for i, e in enumerate(events)],
        )

    # -- inbox -----------------------------------------------------------------------------

    def history_events(self, instance_id: str) -> list[p.HistoryEvent]:
        """The committed history, parsed (shared: callers must not modify the events)."""
        cached = self._histories.get(instance_id)
        if cached is not None:
            self._histories.move_to_end(instance_id)
            return cached
        events = [p.HistoryEvent.FromString(b) for b in self.history(instance_id)]
        self._remember_history(instance_id, events)
        return events

    def append_events(self, instance_id: str, start_pos: int, events: list[p.HistoryEvent]) -> None:
        cached = self._histories.get(instance_id)
        self.append_history(instance_id, start_pos, [e.SerializeToString() for e in events])
        if cached is not None and len(cached) == start_pos:
            self._remember_history(instance_id, cached + events)

    def _remember_history(self, instance_id: str, events: list[p.HistoryEvent]) -> None:
        self._histories[instance_id] = events
        self._histories.move_to_end(instance_id)
        if len(self._histories) > self.HISTORY_CACHE_SIZE:
            self._histories.popitem(last=False)

    def add_inbox(self, instance_id: str, event: bytes, visible_ns: int) -> int:
        cur = self.conn.execute(
            "INSERT INTO inbox (instance_id, visible_ns, event) VALUES (?, ?, ?)",
            (instance_id, visible_ns, event),
        )
        return int(cur.lastrowid or 0)

    def visible_inbox(self, instance_id: str, now_ns: int) -> list[tuple[int, bytes]]:
        return self.conn.execute(
            "SELECT id, event FROM inbox WHERE instance_id = ? AND visible_ns <= ? ORDER BY id",
            (instance_id, now_ns),
        ).fetchall()

    def all_inbox(self, instance_id: str) -> list[tuple[int, int, bytes]]:
        return self.conn.execute(
            "SELECT id, visible_ns, event FROM inbox WHERE instance_id = ? ORDER BY id",
            (instance_id,),
        ).fetchall()

    def delete_inbox(self, ids: list[int]) -> None:
        self.conn.executemany("DELETE FROM inbox WHERE id = ?", [(i,) for i in ids])

    def clear_inbox(self, instance_id: str) -> None:
        self.conn.execute("DELETE FROM inbox WHERE instance_id = ?", (instance_id,))

    def next_visible_per_instance(self) -> list[tuple[str, int]]:
        return self.conn.execute(
            "SELECT instance_id, MIN(visible_ns) FROM inbox GROUP BY instance_id"
        ).fetchall()

    # -- activities ------------------------------------------------------------------------

    def add_activity(
        self,
        instance_id: str,
        execution_id: str,
        task_id: int,
        request: bytes,
        created_ns: int = 0,
        parent_span: str = "",
        router: bytes | None = None,
    ) -> int:
        cur = self.conn.execute(
            "INSERT INTO activities "
            "(instance_id, execution_id, task_id, request, created_ns, parent_span, router) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (instance_id, execution_id, task_id, request, created_ns, parent_span, router),
        )
        return int(cur.lastrowid or 0)

    def get_activity(
        self, activity_id: int
    ) -> tuple[str, str, int, bytes, int, str, bytes | None] | None:
        return self.conn.execute(
            "SELECT instance_id, execution_id, task_id, request, created_ns, parent_span, router "
            "FROM activities WHERE id = ?",
            (activity_id,),
        ).fetchone()

    def delete_activity(self, activity_id: int) -> None:
        self.conn.execute("DELETE FROM activities WHERE id = ?", (activity_id,))

    def pending_activities(self) -> list[tuple[int, bytes]]:
        return self.conn.execute("SELECT id, request FROM activities ORDER BY id").fetchall()

    # -- deliveries between engines ----------------------------------------------------------

    def add_outgoing(self, app_id: str, body: bytes) -> None:
        self.conn.execute("INSERT INTO outbox (app_id, body) VALUES (?, ?)", (app_id, body))

    def outgoing(self) -> list[tuple[int, str]]:
        """The outbox id and app of each delivery waiting, in order. Not the bodies: up to the
        message limit each, many wait while a peer is down, and most are not sent in a round."""
        return self.conn.execute("SELECT id, app_id FROM outbox ORDER BY id").fetchall()

    def outgoing_body(self, outgoing_id: int) -> bytes:
        (body,) = self.conn.execute(
            "SELECT body FROM outbox WHERE id = ?", (outgoing_id,)
        ).fetchone()
        return bytes(body)

    def outgoing_ids(self, app_id: str) -> tuple[int, int] | None:
        """The outbox ids of the first and the last delivery to that app still waiting."""
        row = self.conn.execute("SELECT MIN(id), MAX(id) FROM outbox WHERE app_id = ?", (app_id,))
        first, last = row.fetchone()
        return None if first is None else (int(first), int(last))

    def delete_outgoing(self, outgoing_id: int) -> None:
        self.conn.execute("DELETE FROM outbox WHERE id = ?", (outgoing_id,))

    def database_id(self) -> str:
        return str(
            self.conn.execute("SELECT value FROM meta WHERE name = 'database_id'").fetchone()[0]
        )

    def remember_received(self, key: str, origin: str = "", seq: int | None = None) -> bool:
        """Records a delivery's key; False if it was received before.

        A sender sends its deliveries to an app one at a time in the order of its outbox ids
        (`seq`), and forgets each once accepted before it sends the next: the delivery `seq`
        tells that every one before it from the same database (`origin`) is forgotten and can
        never come again. So their keys go, and only the last one's is kept; one older than it
        that still arrives (an attempt that outlived its deadline) was taken before.
        """
        if origin and seq is not None:
            (last,) = self.conn.execute(
                "SELECT MAX(seq) FROM received WHERE origin = ?", (origin,)
            ).fetchone()
            if last is not None and seq < last:
                return False
        cur = self.conn.execute(
            "INSERT OR IGNORE INTO received (key, origin, seq) VALUES (?, ?, ?)",
            (key, origin or None, seq),
        )
        if cur.rowcount != 1:
            return False
        if origin and seq is not None:
            self.conn.execute("DELETE FROM received WHERE origin = ? AND seq < ?", (origin, seq))
        return True


class _Transaction:
    """`with store.transaction():` makes the block's changes all or nothing (a savepoint)."""

    def __init__(self, store: Store):
        self.store = store

    def __enter__(self) -> None:
        conn = self.store.conn
        if not self.store._batch_open:
            conn.execute("BEGIN IMMEDIATE")
            self.store._batch_open = True
        conn.execute("SAVEPOINT change")

    def __exit__(self, exc_type, exc, tb) -> None:
        conn = self.store.conn
        if exc_type is None:
            conn.execute("RELEASE change")
        else:
            conn.execute("ROLLBACK TO change")
            conn.execute("RELEASE change")
            self.store.forget_cached()
        self.store._schedule_flush()
