"""Bulk inserts for the indexer, cheaper than ``QuerySet.bulk_create``.

``bulk_create`` prepares every field of every row through several layers of calls: on the
indexer's hot path (an instance row, its run, its change-log rows and schedule, and twenty-odd
history events per instance) that costs more than the database spends writing them. Here each
model gets one INSERT statement and one converter per column, built once, and the rows go to the
database with ``executemany``. Values are adapted as the model fields would adapt them: times
and JSON per database (``connection.ops``), foreign keys from the related object when it was
saved after being assigned; every other column of these models is passed as it is.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
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
    adapt = connection.ops.adapt_datetimefield_value
    if connection.vendor != "sqlite" or not settings.USE_TZ or connection.timezone_name != "UTC":
        return adapt

    def utc_text(value: datetime | None) -> Any:
        # What the SQLite backend stores for an aware time: naive UTC, as str() writes it.
        if value is None:
            return None
        if value.tzinfo is UTC:
            return str(value.replace(tzinfo=None))
        return adapt(value)

    return utc_text


def _column_adapter(field: models.Field) -> _Adapt | None:
    if isinstance(field, models.ForeignKey):
        attname, cache_name = field.attname, field.name

        def key(obj: models.Model) -> Any:
            value = getattr(obj, attname)
            if value is None and field.is_cached(obj):
                related = getattr(obj, cache_name)
                value = related.pk if related is not None else None
            return value

        return key
    attname = field.attname
    if isinstance(field, models.DateTimeField):
        adapt_time = time_adapter()
        return lambda obj: adapt_time(getattr(obj, attname))
    if isinstance(field, models.JSONField):
        adapt_json, encoder = connection.ops.adapt_json_value, field.encoder
        return lambda obj: adapt_json(getattr(obj, attname), encoder)
    if isinstance(field, _PLAIN):
        return lambda obj: getattr(obj, attname)
    return None


class _Statement:
    def __init__(self, model: type[models.Model], on_conflict: str) -> None:
        meta = model._meta
        fields = [
            f
            for f in meta.concrete_fields
            if not (f.primary_key and isinstance(f, models.AutoField | models.BigAutoField))
        ]
        adapters = [_column_adapter(f) for f in fields]
        self.supported = all(a is not None for a in adapters)
        self.adapters: list[_Adapt] = [a for a in adapters if a is not None]
        qn = connection.ops.quote_name
        columns = ", ".join(qn(f.column or f.name) for f in fields)
        marks = ", ".join(["%s"] * len(fields))
        self.sql = f"INSERT INTO {qn(meta.db_table)} ({columns}) VALUES ({marks}){on_conflict}"  # noqa: S608


_statements: dict[tuple[str, type[models.Model], str], _Statement] = {}


def _statement(model: type[models.Model], on_conflict: str = "") -> _Statement:
    key = (connection.alias + connection.vendor, model, on_conflict)
    if key not in _statements:
        _statements[key] = _Statement(model, on_conflict)
    return _statements[key]


def insert(objs: Sequence[models.Model], on_conflict: str = "") -> None:
    """INSERT the objects (of one model) with one executemany; primary keys are not set.
    ``on_conflict``: an ``ON CONFLICT ...`` clause (same text on SQLite and PostgreSQL)."""
    if not objs:
        return
    model = type(objs[0])
    stmt = _statement(model, on_conflict)
    if not stmt.supported:
        raise TypeError(f"{model.__name__} has a column type engine_bridge.bulk does not adapt")
    adapters = stmt.adapters
    rows = [tuple(adapt(obj) for adapt in adapters) for obj in objs]
    with connection.cursor() as cur:
        cur.executemany(stmt.sql, rows)


def upsert(objs: Sequence[models.Model], unique: Iterable[str], update: Iterable[str]) -> None:
    """INSERT, or UPDATE the ``update`` columns of the row with the same ``unique`` columns."""
    if not objs:
        return
    meta = type(objs[0])._meta
    qn = connection.ops.quote_name
    target = ", ".join(qn(meta.get_field(f).column or f) for f in unique)  # type: ignore[union-attr]
    sets = ", ".join(
        f"{qn(c)} = excluded.{qn(c)}"
        for c in (meta.get_field(f).column or f for f in update)  # type: ignore[union-attr]
    )
    insert(objs, f" ON CONFLICT ({target}) DO UPDATE SET {sets}")
