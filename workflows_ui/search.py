"""Everything that differs between SQLite and PostgreSQL, in one place.

Full-text search over an instance's input, output, custom status and failure message:

- SQLite: an FTS5 table with external content (the instance table itself, so payloads are not
  stored twice), kept in step by triggers on the instance table.
- PostgreSQL: a generated ``tsvector`` column on the instance table with a GIN index.

Both use a language-neutral tokenizer (payloads are JSON, not prose) and split text the same way:
a run of letters and digits is a word, anything else separates (SQLite's ``unicode61``).
PostgreSQL's own parser would keep an email, a host, a URL, a path, a version or a decimal whole,
so its documents and searches are first split by ``PG_SEPARATORS``. A query matches instances
containing every word of it; letters and digits joined by an underscore (``order_42``) match as
adjacent words on both. Also here: the id-prefix filter and the typed workflow name's look-up,
which must match case and stay index range scans on both databases, the sort key that makes
either database sort the few rows such a filter matches instead of walking the time index, how
long a page's own small write waits for SQLite's one writer, and which database errors say the
database can't be written now.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterable, Iterator
from datetime import timedelta
from typing import Any

from django.db import DatabaseError, OperationalError, connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import (
    BooleanField,
    DateTimeField,
    ExpressionWrapper,
    F,
    Func,
    QuerySet,
    Value,
)
from django.db.models.expressions import RawSQL

log = logging.getLogger(__name__)

TABLE = "workflows_ui_instance"
FTS_TABLE = "workflows_ui_instance_fts"
COLUMNS = ("input", "output", "custom_status", "failure_message")
#: Only this much of each payload is indexed for search (PostgreSQL caps a tsvector at 1 MB).
PG_INDEXED_CHARS = 100_000

_SQLITE_SCHEMA = [
    f"CREATE VIRTUAL TABLE IF NOT EXISTS {FTS_TABLE} USING fts5("
    f"{', '.join(COLUMNS)}, content='{TABLE}', content_rowid='id', tokenize='unicode61')",
    f"CREATE TRIGGER IF NOT EXISTS {FTS_TABLE}_ai AFTER INSERT ON {TABLE} BEGIN "
    f"INSERT INTO {FTS_TABLE}(rowid, {', '.join(COLUMNS)}) "
    f"VALUES (new.id, {', '.join('new.' + c for c in COLUMNS)}); END",
    f"CREATE TRIGGER IF NOT EXISTS {FTS_TABLE}_ad AFTER DELETE ON {TABLE} BEGIN "
    f"INSERT INTO {FTS_TABLE}({FTS_TABLE}, rowid, {', '.join(COLUMNS)}) "
    f"VALUES ('delete', old.id, {', '.join('old.' + c for c in COLUMNS)}); END",
    # Only when a searched column is assigned: schedule or status updates don't re-index.
    f"CREATE TRIGGER IF NOT EXISTS {FTS_TABLE}_au AFTER UPDATE OF {', '.join(COLUMNS)} "
    f"ON {TABLE} BEGIN "
    f"INSERT INTO {FTS_TABLE}({FTS_TABLE}, rowid, {', '.join(COLUMNS)}) "
    f"VALUES ('delete', old.id, {', '.join('old.' + c for c in COLUMNS)}); "
    f"INSERT INTO {FTS_TABLE}(rowid, {', '.join(COLUMNS)}) "
    f"VALUES (new.id, {', '.join('new.' + c for c in COLUMNS)}); END",
]
_SQLITE_DROP = [
    f"DROP TRIGGER IF EXISTS {FTS_TABLE}_ai",
    f"DROP TRIGGER IF EXISTS {FTS_TABLE}_ad",
    f"DROP TRIGGER IF EXISTS {FTS_TABLE}_au",
    f"DROP TABLE IF EXISTS {FTS_TABLE}",
]

#: Code points that separate words on PostgreSQL, as SQLite's ``unicode61`` tokenizer takes
#: anything but a letter or a digit: ASCII and Latin-1 exactly, and the blocks of punctuation,
#: spaces, currency signs, arrows, mathematical and technical signs, box drawing, shapes,
#: dingbats, CJK and full-width punctuation, variation selectors and emoji. Every other character
#: stays in a word, so letters of any script do. Spelled by code point, so neither the database's
#: locale nor its version changes it. Changing it needs a migration that rebuilds the column
#: (as 0009 did).
PG_SEPARATOR_RANGES = (
    (0x0001, 0x002F),
    (0x003A, 0x0040),
    (0x005B, 0x0060),
    (0x007B, 0x00A9),
    (0x00AB, 0x00B1),
    (0x00B4, 0x00B4),
    (0x00B6, 0x00B8),
    (0x00BB, 0x00BB),
    (0x00BF, 0x00BF),
    (0x00D7, 0x00D7),
    (0x00F7, 0x00F7),
    (0x2000, 0x206F),
    (0x20A0, 0x20CF),
    (0x2190, 0x245F),
    (0x2500, 0x2775),
    (0x2794, 0x2BFF),
    (0x2E00, 0x2E2E),
    (0x2E30, 0x2E7F),
    (0x3000, 0x3004),
    (0x3008, 0x3020),
    (0x3030, 0x3030),
    (0x303D, 0x303F),
    (0xFE00, 0xFE19),
    (0xFE30, 0xFE6F),
    (0xFEFF, 0xFEFF),
    (0xFF01, 0xFF0F),
    (0xFF1A, 0xFF20),
    (0xFF3B, 0xFF40),
    (0xFF5B, 0xFF65),
    (0xFFE0, 0xFFEF),
    (0xFFF9, 0xFFFD),
    (0x1F000, 0x1F0FF),
    (0x1F10D, 0x1FAFF),
    (0xE0000, 0xE007F),
)


def _escape(cp: int) -> str:
    return f"\\u{cp:04x}" if cp <= 0xFFFF else f"\\U{cp:08x}"


#: ``PG_SEPARATOR_RANGES`` as a bracket expression that Python's ``re`` and PostgreSQL's regular
#: expressions read alike (code point escapes only, no classes that depend on a locale).
PG_SEPARATORS = (
    "["
    + "".join(
        _escape(lo) if lo == hi else f"{_escape(lo)}-{_escape(hi)}"
        for lo, hi in PG_SEPARATOR_RANGES
    )
    + "]"
)
_PG_SEPARATORS_RE = re.compile(PG_SEPARATORS + "+")

_PG_TEXT = " || ' ' || ".join(f"coalesce(left({c}, {PG_INDEXED_CHARS}), '')" for c in COLUMNS)
#: The indexed document: the searched columns, split into words as SQLite splits them.
PG_DOCUMENT = (
    f"to_tsvector('simple'::regconfig, regexp_replace({_PG_TEXT}, '{PG_SEPARATORS}+', ' ', 'g'))"
)
_PG_SCHEMA = [
    f"ALTER TABLE {TABLE} ADD COLUMN IF NOT EXISTS search_document tsvector "
    f"GENERATED ALWAYS AS ({PG_DOCUMENT}) STORED",
    # Text search on the instance list.
    f"CREATE INDEX IF NOT EXISTS wf_inst_search ON {TABLE} USING gin (search_document)",
    # Id prefix on PostgreSQL (LIKE 'x%' under any collation).
    f"CREATE INDEX IF NOT EXISTS wf_inst_id_pattern ON {TABLE} (instance_id text_pattern_ops)",
]
_PG_DROP = [
    "DROP INDEX IF EXISTS wf_inst_id_pattern",
    "DROP INDEX IF EXISTS wf_inst_search",
    f"ALTER TABLE {TABLE} DROP COLUMN IF EXISTS search_document",
]


def _sqlite_triggers_present(conn: BaseDatabaseWrapper) -> bool:
    with conn.cursor() as cur:
        cur.execute(
            "SELECT count(*) FROM sqlite_master WHERE type='trigger' AND name LIKE %s",
            [f"{FTS_TABLE}_a_"],
        )
        row = cur.fetchone()
    return bool(row and row[0] == 3)


def create_schema(conn: BaseDatabaseWrapper) -> None:
    """Create the search table/column, triggers and indexes if missing (idempotent)."""
    if conn.vendor == "sqlite":
        rebuild = not _sqlite_triggers_present(conn)
        with conn.cursor() as cur:
            for sql in _SQLITE_SCHEMA:
                cur.execute(sql)
            if rebuild:
                # Triggers were missing (new schema, or dropped by a table remake): re-derive the
                # index from the instance table.
                cur.execute(f"INSERT INTO {FTS_TABLE}({FTS_TABLE}) VALUES ('rebuild')")
    elif conn.vendor == "postgresql":
        with conn.cursor() as cur:
            for sql in _PG_SCHEMA:
                cur.execute(sql)
    else:  # pragma: no cover - other databases are not supported
        log.warning("no full-text search for database vendor %s", conn.vendor)


def drop_schema(conn: BaseDatabaseWrapper) -> None:
    statements = {"sqlite": _SQLITE_DROP, "postgresql": _PG_DROP}.get(conn.vendor, [])
    with conn.cursor() as cur:
        for sql in statements:
            cur.execute(sql)


def on_post_migrate(using: str = "default", **kwargs: Any) -> None:
    from django.db import connections

    conn = connections[using]
    if TABLE in conn.introspection.table_names():
        create_schema(conn)


_WORD_RE = re.compile(r"\w+", re.UNICODE)
#: The words of a search that are looked for; a search with more is refused (``check_words``),
#: not cut short (the words left out would match instances without them).
MAX_WORDS = 32


def words(text: str) -> list[str]:
    """The words of a search: what both databases' tokenizers would split it into."""
    return _WORD_RE.findall(text.lower())[:MAX_WORDS]


def check_words(text: str) -> str | None:
    """Why a search can't be run as given, or None. Underscores alone are no word: both
    tokenizers drop them, and the search would match nothing."""
    if not any(ch.isalnum() for ch in text):
        return "has no word to search for (letters or digits)"
    # As each database's search splits it (``words``, ``_pg_phrases``).
    pg_words = [w for w in _PG_WORD_SEPARATORS_RE.split(text) if w]
    if max(len(_WORD_RE.findall(text)), len(pg_words)) > MAX_WORDS:
        return f"has more than {MAX_WORDS} words: search for fewer"
    return None


_PG_WORD_SEPARATORS_RE = re.compile(f"(?:(?!_){PG_SEPARATORS})+")


def _pg_phrases(text: str) -> list[str]:
    """The words of a search as PostgreSQL's documents are split (``PG_SEPARATORS``), each as
    its parts joined by spaces: ``order_42`` is "order 42", to match as adjacent words. Words are
    found as ``words`` finds them, a run of letters, digits and underscores; a word of
    underscores only has no parts ("")."""
    found = [w for w in _PG_WORD_SEPARATORS_RE.split(text) if w][:MAX_WORDS]
    return [" ".join(p for p in _PG_SEPARATORS_RE.split(w) if p) for w in found]


def filter_text(qs: QuerySet[Any], text: str, common: bool = False) -> QuerySet[Any]:
    """Instances whose input, output, custom status or failure message contain every word.

    ``common``: the caller knows the words match many of the rows it will walk in its sort
    order (a list page). On SQLite the matches are then only tested for membership while the
    sort index is walked, instead of each match being fetched and all of them sorted (which is
    what SQLite's planner picks otherwise, and right for rare words). On PostgreSQL the
    caller steers rare words with ``sort_key_after_filter`` instead."""
    terms = words(text)
    if not terms:
        return qs
    conn = connections[qs.db]
    if conn.vendor == "postgresql":
        # Each word a phrase of its parts (one part unless joined by underscores), all of them
        # required: what the FTS5 query below asks. `simple` config: no stemming or stop words.
        phrases = [p for p in _pg_phrases(text) if p]
        tsquery = " && ".join("phraseto_tsquery('simple'::regconfig, %s)" for _ in phrases)
        condition = RawSQL(
            # Only underscores: no word to look for, and FTS5 then matches nothing either (a
            # condition, not ``qs.none()``, so that callers can still take the query's SQL).
            f"{TABLE}.search_document @@ ({tsquery})" if phrases else "false",
            phrases,
            output_field=BooleanField(),
        )
    else:
        # Each word quoted, so FTS5 operators typed by a user are taken literally.
        query = " ".join('"' + t.replace('"', '""') + '"' for t in terms)
        # A unary + keeps SQLite from driving the query by the id list (see ``common``).
        plus = "+" if common else ""
        condition = RawSQL(
            f"{plus}{TABLE}.id IN (SELECT rowid FROM {FTS_TABLE} WHERE {FTS_TABLE} MATCH %s)",
            [query],
            output_field=BooleanField(),
        )
    return qs.filter(condition)


def sort_key_after_filter(using: str, column: str, joined: bool = False) -> Any:
    """An ORDER BY key on a time column that no index serves, for a page whose filter (a rare
    word, an id prefix, a joined table's few rows) matches few rows: the database then finds
    them by that filter's index and sorts them. PostgreSQL otherwise walks the time index
    testing each row whenever its estimates say matches are common enough, and they can't see
    that matches are bunched at one end (ids made in time order; a word whose parts are common,
    like "c-04242" in "c" & "-04242"): 0.8 s on a million instances. SQLite starts from a word
    or an id prefix by itself, but from a ``joined`` table's filter (or a created range, for
    an order by update) only when told."""
    vendor = connections[using].vendor
    if vendor == "postgresql":
        return ExpressionWrapper(F(column) + Value(timedelta(0)), output_field=DateTimeField())
    if joined and vendor == "sqlite":
        # Without it the instances' time index is walked, each row's check tested: 0.27 s for
        # 300,000 instances.
        return _unindexed(column, DateTimeField())
    return F(column)


def count_in_created_order(qs: QuerySet[Any]) -> QuerySet[Any]:
    """``qs`` (a created range, counted up to a cap) read in creation order on PostgreSQL, so
    that it walks the created index from the range's start. Unordered, with a LIMIT, it takes
    a sequential scan for as cheap, and one starts where the last scan of the table stopped
    (synchronized scans) or at its beginning: on rows stored in creation order it then passes
    up to the whole table before the range (0.1 s on a million instances). SQLite takes the
    created index for the range by itself."""
    if connections[qs.db].vendor == "postgresql":
        return qs.order_by("created_at")
    return qs


def _unindexed(column: str, output_field: Any = None) -> Func:
    """``column`` as SQLite's unary + of it: a no-op that keeps the term from using an index
    (SQLite's documented way of guiding its planner)."""
    return Func(F(column), template="+%(expressions)s", output_field=output_field)


def off_index(qs: QuerySet[Any], columns: Iterable[str]) -> tuple[QuerySet[Any], dict[str, str]]:
    """``qs`` with names for ``columns`` that filter without their indexes, so the database
    starts from another, more selective one (a joined table's). SQLite, with no statistics
    here, takes an equality on an indexed column for a rare one. PostgreSQL chooses by the
    statistics it keeps."""
    if connections[qs.db].vendor != "sqlite":
        return qs, {c: c for c in columns}
    names = {c: f"plain_{c}" for c in columns}
    return qs.alias(**{names[c]: _unindexed(c) for c in columns}), names


def filter_id_prefix(qs: QuerySet[Any], prefix: str, column: str = "instance_id") -> QuerySet[Any]:
    """Instances whose id starts with ``prefix`` (case-sensitive), as an index range scan
    (``column``: an alias of the id on SQLite, for a range no index serves). On PostgreSQL
    through the text_pattern_ops index wf_inst_id_pattern."""
    return filter_prefix(qs, "instance_id", prefix, column)


def filter_prefix(
    qs: QuerySet[Any], field: str, prefix: str, column: str | None = None
) -> QuerySet[Any]:
    """Rows whose ``field`` starts with ``prefix``, matched exactly (case too) on both
    databases; on SQLite as a range of an index that starts with the field (``column``: an
    alias of it instead, for a range no index serves)."""
    if not prefix:
        return qs
    conn = connections[qs.db]
    if conn.vendor == "postgresql":
        # LIKE, which matches case; Django escapes % and _.
        return qs.filter(**{f"{field}__startswith": prefix})
    # SQLite's LIKE ignores the case of ASCII letters and can't use an index: compare as a
    # range instead (the default BINARY collation orders by code point).
    column = column or field
    qs = qs.filter(**{f"{column}__gte": prefix})
    upper = _after_prefix(prefix)
    return qs if upper is None else qs.filter(**{f"{column}__lt": upper})


def _after_prefix(prefix: str) -> str | None:
    """The least string greater than every string starting with ``prefix`` (its last code
    point moved up by one; ``prefix + max code point`` would leave out "a" + U+10FFFF + "z");
    None when there is none."""
    while prefix:
        last = ord(prefix[-1]) + 1
        prefix = prefix[:-1]
        if last <= 0x10FFFF:
            if 0xD800 <= last <= 0xDFFF:  # surrogates can't be stored: the next code point
                last = 0xE000
            return prefix + chr(last)
    return None


@contextlib.contextmanager
def brief_write_wait(using: str = "default", milliseconds: int = 250) -> Iterator[None]:
    """Writes in this block wait at most ``milliseconds`` for the database's write lock, then
    fail with ``OperationalError``: for a write a page makes on the side (``freshness``), which
    must not hold the page up. SQLite has one writer at a time, and the indexer's batch can
    hold it for a while (the connection otherwise waits up to its ``timeout``); PostgreSQL
    locks rows, not the database, so nothing changes there."""
    conn = connections[using]
    if conn.vendor != "sqlite":
        yield
        return
    usual = int(float(conn.settings_dict["OPTIONS"].get("timeout", 5)) * 1000)
    with conn.cursor() as cur:
        cur.execute(f"PRAGMA busy_timeout = {int(milliseconds)}")
    try:
        yield
    finally:
        with conn.cursor() as cur:
            cur.execute(f"PRAGMA busy_timeout = {usual}")


#: PostgreSQL's read_only_sql_transaction: a write on a standby, or a database set read-only.
_PG_READ_ONLY = "25006"


def cannot_write_now(exc: DatabaseError) -> bool:
    """Whether this error says the database can't take the write now (to wait out, not a bug):
    it does not answer, is locked past the connection's timeout, or takes no writes. SQLite says
    all of these with ``OperationalError``; PostgreSQL with ``OperationalError`` but for the
    last, an ``InternalError`` (a standby a failover has not promoted yet, say)."""
    if isinstance(exc, OperationalError):
        return True
    return takes_no_writes(exc)


def takes_no_writes(exc: DatabaseError) -> bool:
    """Whether this error says the database takes no writes (a PostgreSQL standby, a database
    or a SQLite file set read-only), rather than that it does not answer."""
    if getattr(exc.__cause__, "sqlstate", None) == _PG_READ_ONLY:
        return True
    # SQLite's words for a read-only file, and for ``PRAGMA query_only``.
    return isinstance(exc, OperationalError) and "readonly database" in str(exc)
