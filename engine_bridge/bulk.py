"""Bulk inserts for the indexer, cheaper than ``QuerySet.bulk_create``.

``bulk_create`` prepares every field of every row through several layers of calls: on the
indexer's hot path (an instance row, its run, its change-log rows and schedule, and twenty-odd
history events per instance) that costs more than the database spends writing them. Here each
model gets one INSERT statement and one converter per column, built once, and the rows go to the
database with ``executemany``. Values are adapted as the model fields would adapt them: times
and JSON per database (``connection.ops``), foreign keys from the related object when it was
saved after being assigned; every other column of these models is passed as it is. A JSON
column named in ``Rows(encoded=...)`` takes text already encoded (the mappers encode history
events on gRPC's thread, off the writer's).

The statements go to the driver's own cursor, written with the driver's own markers: ``?`` on
SQLite, ``$1, $2, ...`` on PostgreSQL (psycopg's raw cursor, parameters bound by the server).
Through Django's cursor every ``%s`` of a statement is found again on each execution, by a regular
expression on SQLite and by psycopg's query parser on PostgreSQL (which caches short statements
only): for a few hundred rows of eight columns that cost as much as SQLite's own work, and six
times the rest of the indexer's writing on PostgreSQL. (They are therefore missing from Django's
query log in DEBUG.)
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Sequence
from contextlib import ExitStack
from datetime import UTC, datetime
from typing import Any

from django.conf import settings
from django.db import connection, models

_Adapt = Callable[[Any], Any]
#: Fields whose Python value is already what the database driver takes.
_PLAIN = (
    models.CharField,
    models.TextField,
    models.IntegerField,
    models.BigIntegerField,
    models.PositiveIntegerField,
    models.BooleanField,
    models.FloatField,
    models.AutoField,
    models.BigAutoField,
)


def time_adapter() -> _Adapt:
    """Aware datetime -> what the database takes for a DateTimeField (``connection.ops``)."""
    adapt = connection.ops.adapt_datetimefield_value
    if connection.vendor != "sqlite" or not settings.USE_TZ or connection.timezone_name != "UTC":
        return adapt

    def utc_text(value: datetime | None) -> Any:
        # What the SQLite backend stores for an aware time: naive UTC, as str() writes it.
        if value is not None and value.tzinfo is UTC:
            return value.isoformat(" ")[:-6]  # less "+00:00"
        return adapt(value)

    return utc_text


def _pk_of(value: Any) -> Any:
    # A foreign key given as the related object, saved (or inserted) since it was assigned.
    return value.pk if isinstance(value, models.Model) else value


def _encoded_json() -> _Adapt | None:
    """JSON text -> what the database takes for a JSON column."""
    if connection.vendor == "postgresql":
        from psycopg.types.json import Jsonb

        return lambda text: Jsonb(text, dumps=str)  # sent as jsonb, not encoded again
    return None  # SQLite stores JSON as text


def _column_adapter(field: models.Field, encoded: bool = False) -> _Adapt | None:
    if isinstance(field, models.ForeignKey):
        return _pk_of
    if isinstance(field, models.DateTimeField):
        return time_adapter()
    if isinstance(field, models.JSONField):
        if encoded:
            return _encoded_json()
        adapt_json, encoder = connection.ops.adapt_json_value, field.encoder
        return lambda value: adapt_json(value, encoder)
    if isinstance(field, _PLAIN):
        return None  # as it is
    raise TypeError(f"{field}: a column type engine_bridge.bulk does not adapt")


class Rows:
    """Rows of one model to insert: ``fields`` names them (foreign keys by field name, their
    values an id or the related object), ``add`` takes one tuple of Python values per row."""

    def __init__(
        self, model: type[models.Model], fields: Sequence[str], encoded: Sequence[str] = ()
    ) -> None:
        self.model = model
        self.fields = tuple(fields)
        #: JSON columns whose values are JSON text already.
        self.encoded = tuple(encoded)
        self.rows: list[tuple[Any, ...]] = []

    def add(self, *values: Any) -> None:
        self.rows.append(values)

    def __len__(self) -> int:
        return len(self.rows)


class _Statement:
    """``INSERT ... VALUES (...), (...), ...`` for up to ``per_statement`` rows: one statement
    (and one step of the database) for many rows. Besides saving round trips, this matters in a
    threaded process: SQLite's driver lets go of the GIL around every step, and getting it back
    from a busy gRPC thread can take a switch interval each time."""

    def __init__(
        self,
        model: type[models.Model],
        names: tuple[str, ...],
        on_conflict: str,
        encoded: tuple[str, ...] = (),
        returning: tuple[str, ...] = (),
    ):
        meta = model._meta
        fields = [meta.get_field(name) for name in names]
        qn = connection.ops.quote_name
        columns = ", ".join(qn(f.column or f.name) for f in fields)  # type: ignore[union-attr]
        self.head = f"INSERT INTO {qn(meta.db_table)} ({columns}) VALUES "  # noqa: S608
        self.vendor = connection.vendor
        self.width = len(fields)
        self.row = "(" + ", ".join(["?"] * len(fields)) + ")"  # SQLite's markers
        self.tail = on_conflict
        if returning:
            back = (meta.get_field(name) for name in returning)
            self.tail += " RETURNING " + ", ".join(qn(f.column or f.name) for f in back)  # type: ignore[union-attr]
        limit = connection.features.max_query_params or 10_000
        self.per_statement = max(1, min(500, limit // len(fields)))
        self._sql: dict[int, str] = {}
        self.adapters = [
            (i, adapt)
            for i, f in enumerate(fields)
            if (adapt := _column_adapter(f, f.name in encoded)) is not None  # type: ignore[arg-type]
        ]

    def sql(self, rows: int) -> str:
        if rows not in self._sql:
            if self.vendor == "postgresql":
                # Numbered markers: $1 .. $n of the first row, $n+1 .. of the second...
                w = self.width
                values = ", ".join(
                    "(" + ", ".join(f"${r * w + c + 1}" for c in range(w)) + ")"
                    for r in range(rows)
                )
            else:
                values = ", ".join([self.row] * rows)
            self._sql[rows] = self.head + values + self.tail
        return self._sql[rows]


_statements: dict[tuple[Any, ...], _Statement] = {}


def insert(
    rows: Rows, on_conflict: str = "", returning: Sequence[str] = ()
) -> list[tuple[Any, ...]]:
    """INSERT the rows, many per statement. ``on_conflict``: an ``ON CONFLICT ...`` clause
    (the same text on SQLite and PostgreSQL). Returns the ``returning`` fields (column values,
    such as the new primary keys) of the inserted rows, in no particular order."""
    out: list[tuple[Any, ...]] = []
    if not rows.rows:
        return out
    returning = tuple(returning)
    key = (
        connection.alias,
        connection.vendor,
        rows.model,
        rows.fields,
        on_conflict,
        rows.encoded,
        returning,
    )
    stmt = _statements.get(key)
    if stmt is None:
        stmt = _Statement(rows.model, rows.fields, on_conflict, rows.encoded, returning)
        _statements[key] = stmt
    adapters = stmt.adapters
    size = stmt.per_statement
    with connection.cursor() as wrapper, connection.wrap_database_errors, ExitStack() as stack:
        # The driver's cursor; Django's errors (IntegrityError...) all the same.
        execute: Callable[[str, list[Any]], Any]
        cursor: Any
        if stmt.vendor == "sqlite":
            cursor = wrapper.cursor
            execute = lambda sql, params: sqlite3.Cursor.execute(cursor, sql, params)  # noqa: E731
        elif stmt.vendor == "postgresql":
            import psycopg

            cursor = stack.enter_context(psycopg.RawCursor(connection.connection))
            # Not prepared: a pooler in transaction mode may hand the next one another session.
            execute = lambda sql, params: cursor.execute(sql, params, prepare=False)  # noqa: E731
        else:  # pragma: no cover - other databases are not supported
            raise NotImplementedError(connection.vendor)
        for start in range(0, len(rows.rows), size):
            batch = rows.rows[start : start + size]
            params: list[Any] = []
            for row in batch:
                if adapters:
                    values = list(row)
                    for i, adapt in adapters:
                        values[i] = adapt(values[i])
                    params += values
                else:
                    params += row
            execute(stmt.sql(len(batch)), params)
            if returning:
                out += cursor.fetchall()
    return out


def upsert(rows: Rows, unique: Iterable[str], update: Iterable[str]) -> None:
    """INSERT, or UPDATE the ``update`` columns of the row with the same ``unique`` columns."""
    meta = rows.model._meta
    qn = connection.ops.quote_name
    target = ", ".join(qn(meta.get_field(f).column or f) for f in unique)  # type: ignore[union-attr]
    sets = ", ".join(
        f"{qn(c)} = excluded.{qn(c)}"
        for c in (meta.get_field(f).column or f for f in update)  # type: ignore[union-attr]
    )
    # One row per key, the last (PostgreSQL refuses to update a row twice in one statement).
    where = [rows.fields.index(f) for f in unique]
    last = {tuple(_pk_of(row[i]) for i in where): row for row in rows.rows}
    if len(last) < len(rows.rows):
        deduped = Rows(rows.model, rows.fields)
        deduped.rows = list(last.values())
        rows = deduped
    insert(rows, f" ON CONFLICT ({target}) DO UPDATE SET {sets}")


def model_rows(objs: Sequence[models.Model]) -> Rows:
    """Rows of saved-to-be model objects (every concrete field but an automatic primary key)."""
    model = type(objs[0])
    fields = [
        f
        for f in model._meta.concrete_fields
        if not (f.primary_key and isinstance(f, models.AutoField | models.BigAutoField))
    ]
    # A foreign key assigned before its object was saved has no id yet: take the object.
    keys = [(i, f) for i, f in enumerate(fields) if isinstance(f, models.ForeignKey)]
    rows = Rows(model, [f.name for f in fields])
    for obj in objs:
        values = [getattr(obj, f.attname) for f in fields]
        for i, key in keys:
            if values[i] is None and key.is_cached(obj):
                values[i] = key.get_cached_value(obj)
        rows.add(*values)
    return rows
