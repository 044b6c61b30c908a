"""The instance list: its filters (a form read from the URL), keyset pages and status counts.

Sized for millions of instances: every page is an index range scan with a LIMIT (no OFFSET), or,
for a text search, an id prefix or a created range sorted by update matching at most
``COUNT_CAP`` rows, those rows sorted; counts come from ``StatusCount`` when the filter allows
it, otherwise from a count capped at ``COUNT_CAP`` rows.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import heapq
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple

from django import forms
from django.db import connections
from django.db.models import F, Q, QuerySet, Sum
from django.db.models.functions import Substr

from workflows_ui import search
from workflows_ui.models import STATUS_COLOURS, Engine, Instance, Status, StatusCount

PAGE_SIZE = 50
COUNT_CAP = 10_000
SORTS = {
    "-created": ("created_at", True),
    "created": ("created_at", False),
    "-updated": ("last_updated_at", True),
    "updated": ("last_updated_at", False),
}


def _iso(utc: datetime, fraction: str) -> str:
    """``utc`` written as briefly as it is exact: minutes, seconds, or ``fraction``."""
    spec = fraction if utc.microsecond else "seconds" if utc.second else "minutes"
    return utc.isoformat(timespec=spec)


class _DateTimeField(forms.DateTimeField):
    """A time with an offset that takes it outside the calendar in UTC (``0001-01-01T00:00+05:00``)
    is refused here, not by the database."""

    def to_python(self, value: Any) -> datetime | None:
        result = super().to_python(value)
        if result is not None:
            try:
                result.astimezone(UTC)
            except OverflowError:
                raise forms.ValidationError("Out of range.", code="invalid") from None
        return result

    def _utc(self, value: Any) -> datetime | None:
        """``value`` (given, or read) in UTC without offset; None when it is no time."""
        try:
            when = self.to_python(value) if isinstance(value, str) else value
        except forms.ValidationError:
            return None
        return when.astimezone(UTC).replace(tzinfo=None) if isinstance(when, datetime) else None

    def prepare_value(self, value: Any) -> Any:
        """The value as the page's ``datetime-local`` input takes it: in UTC, without offset, to
        the millisecond. A link may give a time as the API takes it (``2026-11-23``, ``...Z``,
        an offset, microseconds): the input would show none of these and stay empty, while the
        list is filtered, and the next change of another filter would drop the time."""
        utc = self._utc(value)
        if utc is None:
            return value  # shown as given, beside the reason it is refused
        return _iso(utc, "milliseconds")

    def exact_value(self, value: Any) -> str:
        """The value in UTC, without offset, to the microsecond ("" when it is no time). The
        input holds milliseconds at most (and none once moved to the browser's zone): the page
        sends this instead while the input still shows the value, or the next change of another
        filter would move the bound, and drop (or add) the instances created in between."""
        utc = self._utc(value)
        return "" if utc is None else _iso(utc, "microseconds")


class _ListField(forms.MultipleChoiceField):
    """Repeated values or comma-separated ones (``status=RUNNING,FAILED``), as the REST API takes
    them; empty ones dropped; ``upper``: any case."""

    def __init__(self, *args: Any, upper: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.upper = upper

    def to_python(self, value: Any) -> list[str]:
        parts = [p.strip() for v in super().to_python(value) for p in v.split(",")]
        return [p.upper() if self.upper else p for p in parts if p]

    def prepare_value(self, value: Any) -> Any:
        # What the form shows as checked: the values as read (``failed,running`` checks two).
        return self.to_python(value) if isinstance(value, list | tuple) else value


class InstanceFilterForm(forms.Form):
    engine = _ListField(required=False)
    status = _ListField(required=False, choices=Status.choices, upper=True)
    name = forms.CharField(required=False, max_length=255, label="Workflow name")
    # Not stripped: ids may start or end with a space (a prefix stripped matches other ids).
    id_prefix = forms.CharField(required=False, max_length=512, strip=False, label="Id starts with")
    q = forms.CharField(
        required=False,
        max_length=500,
        label="Text",
        help_text="words in input, output, custom status or failure message",
    )
    # "engine/instance id": the children of that instance (ids may hold "/", names may not).
    parent = forms.CharField(required=False, max_length=600, strip=False, label="Children of")
    created_after = _DateTimeField(required=False, label="Created from")
    created_before = _DateTimeField(required=False, label="Created before")
    purged = forms.ChoiceField(
        required=False,
        choices=[("exclude", "hidden"), ("include", "shown"), ("only", "only")],
        label="Purged",
    )
    unreadable = forms.BooleanField(required=False, label="Unreadable only")
    sort = forms.ChoiceField(
        required=False,
        choices=[
            ("-created", "Newest first"),
            ("created", "Oldest first"),
            ("-updated", "Last updated first"),
            ("updated", "Least recently updated first"),
        ],
    )
    cursor = forms.CharField(required=False, max_length=200)

    def __init__(self, data: Any, engines: list[Engine]) -> None:
        super().__init__(data)
        self.engines = {e.name: e for e in engines}
        self.fields["engine"].choices = [(e.name, e.name) for e in engines]  # type: ignore[attr-defined]

    def clean_q(self) -> str:
        q: str = self.cleaned_data.get("q") or ""
        # Searching nothing would list everything, as if the search had matched it all; more
        # words than are looked for would list instances without the words left out.
        problem = search.check_words(q) if q.strip() else None
        if problem:
            raise forms.ValidationError(problem)
        return q

    def clean_parent(self) -> tuple[int, str] | None:
        value: str = self.cleaned_data.get("parent") or ""
        if not value:
            return None
        try:
            return parse_parent(value, {n: e.pk for n, e in self.engines.items()})
        except ValueError as exc:
            raise forms.ValidationError(str(exc)) from None

    def clean_id_prefix(self) -> str:
        # Only blanks: no filter, as in the REST API.
        value: str = self.cleaned_data.get("id_prefix") or ""
        return value if value.strip() else ""

    def exact_times(self) -> dict[str, str]:
        """The created times as given, to the microsecond (``_DateTimeField.exact_value``)."""
        return {
            name: field.exact_value(self[name].data)
            for name, field in self.fields.items()
            if isinstance(field, _DateTimeField)
        }

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        after, before = data.get("created_after"), data.get("created_before")
        if after and before and after >= before:
            self.add_error("created_before", "Must be later than “Created from”.")
        data["purged"] = data.get("purged") or "exclude"
        data["sort"] = data.get("sort") or "-created"
        raw = data.pop("cursor", None) or ""
        data["cursor"] = None
        if raw:
            chosen = Filters.from_data(data, {n: e.pk for n, e in self.engines.items()})
            try:
                data["cursor"] = decode_cursor(raw, data["sort"], chosen.digest())
            except CursorOfOtherFilters:
                # The page's own form and links never send one (they drop the cursor): a link
                # edited by hand asks for these filters, whose first page is shown.
                pass
            except ValueError:
                self.add_error("cursor", "This page link is not valid any more.")
        return data


def parse_parent(value: str, engine_ids: dict[str, int]) -> tuple[int, str]:
    """``engine/instance id`` (the parent filter) as (engine id, instance id); ValueError
    saying what is wrong. Split at the first "/": engine names have none, ids may."""
    engine, slash, instance_id = value.partition("/")
    if not slash or not instance_id:
        raise ValueError("expected engine/instance id")
    if engine not in engine_ids:
        raise ValueError(f"unknown engine {engine[:40]}")
    return engine_ids[engine], instance_id


class CursorOfAnotherOrder(ValueError):
    """A cursor handed out for another sort order than the one asked for."""


class CursorOfOtherFilters(ValueError):
    """A cursor handed out for other filters than the ones asked for."""


class Cursor(NamedTuple):
    """A place in the list: the sort value and id of a row, and which side of it a page is
    read from. ``backward``: the page before that row (a previous page), read from the row
    towards the start of the order; else the page after it. ``rows_before``: how many rows
    come before the place (the position a page shows, "51-100"), None when not known."""

    when: datetime
    pk: int
    backward: bool = False
    rows_before: int | None = None


def encode_cursor(
    value: datetime,
    pk: int,
    sort: str,
    filters: str,
    backward: bool = False,
    rows_before: int | None = None,
) -> str:
    """A page link's cursor: the sort value and id of the row it starts next to, the order
    they are a place in, the side of the row the page is on, the rows before it and the
    ``Filters.digest`` of the filters they were counted in. Not signed: a changed cursor can
    only start a page elsewhere, or show a wrong position."""
    raw = json.dumps(
        [value.isoformat(), pk, sort, "before" if backward else "after", rows_before, filters]
    ).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _is_count(value: Any) -> bool:
    return type(value) is int and 0 <= value < 2**63


def decode_cursor(raw: str, sort: str, filters: str) -> Cursor:
    """``encode_cursor`` undone; ValueError for anything it did not write, or wrote for another
    order than ``sort`` (a place among the newest created is no place among the last updated:
    the page would silently start elsewhere), or for other filters than those of digest
    ``filters`` (the rows before it were counted among other rows: a wrong position). A cursor
    without its order (handed out before they had one), or without its side (before pages
    could go back), is a next page's; one without its filters (before they were named) has no
    position, as its rows before can't be checked."""
    try:
        value, pk, *rest = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
        when = datetime.fromisoformat(value)
        # Every cursor handed out carries its offset, and a time the database can store.
        when.astimezone(UTC)
    except (ValueError, TypeError, OverflowError, binascii.Error) as exc:
        raise ValueError("not a cursor") from exc
    if when.tzinfo is None or not _is_count(pk) or len(rest) not in (0, 1, 3, 4):
        raise ValueError("not a cursor")
    side, rows_before, made_for = "after", None, None
    if len(rest) >= 3:
        side, rows_before = rest[1:3]
    if len(rest) == 4:
        made_for = rest[3]
    if side not in ("before", "after") or not (rows_before is None or _is_count(rows_before)):
        raise ValueError("not a cursor")
    if not (made_for is None or isinstance(made_for, str)):
        raise ValueError("not a cursor")
    if rest and rest[0] != sort:
        raise CursorOfAnotherOrder(rest[0])
    if made_for is None:
        rows_before = None
    elif made_for != filters:
        raise CursorOfOtherFilters(made_for)
    return Cursor(when, pk, side == "before", rows_before)


@dataclass
class Filters:
    engine_ids: list[int] = field(default_factory=list)
    statuses: list[str] = field(default_factory=list)
    name: str = ""
    id_prefix: str = ""
    #: (engine id, instance id): the children of that instance.
    parent: tuple[int, str] | None = None
    q: str = ""
    created_after: datetime | None = None
    created_before: datetime | None = None
    purged: str = "exclude"
    #: Only the instances the indexer can't read now (few: found through their checks).
    unreadable: bool = False
    sort: str = "-created"
    cursor: Cursor | None = None

    def __post_init__(self) -> None:
        # A value given twice (?status=FAILED&status=FAILED) would read its range twice.
        self.engine_ids = list(dict.fromkeys(self.engine_ids))
        self.statuses = list(dict.fromkeys(self.statuses))

    @classmethod
    def from_form(cls, form: InstanceFilterForm) -> Filters:
        return cls.from_data(form.cleaned_data, {n: e.pk for n, e in form.engines.items()})

    @classmethod
    def from_data(cls, d: dict[str, Any], engine_ids: dict[str, int]) -> Filters:
        """From validated filter values (the page's form, the API's serializer); engines by
        name, ``engine_ids`` maps the names to ids."""
        return cls(
            engine_ids=[engine_ids[n] for n in d.get("engine") or []],
            statuses=d.get("status") or [],
            name=d.get("name") or "",
            id_prefix=d.get("id_prefix") or "",
            parent=d.get("parent"),
            q=(d.get("q") or "").strip(),
            created_after=d.get("created_after"),
            created_before=d.get("created_before"),
            purged=d.get("purged") or "exclude",
            unreadable=bool(d.get("unreadable")),
            sort=d.get("sort") or "-created",
            cursor=d.get("cursor"),
        )

    def digest(self) -> str:
        """A short name of what the filters select, whatever their order and spelling in the
        query (engines and statuses as a set, times in UTC): a cursor carries it, and is
        refused with other filters, among which its rows before are no position."""
        chosen = [
            sorted(self.engine_ids),
            sorted(self.statuses),
            self.name,
            self.id_prefix,
            self.parent,
            self.q,
            *(
                t and t.astimezone(UTC).isoformat()
                for t in (self.created_after, self.created_before)
            ),
            self.purged,
            self.unreadable,
        ]
        hashed = hashlib.blake2s(json.dumps(chosen).encode(), digest_size=6).digest()
        return base64.urlsafe_b64encode(hashed).decode()

    @property
    def own_index(self) -> bool:
        """A text search, an id prefix, a parent or the unreadable filter: its matches are
        found through an index of their own (words, ids, parent links, checks), counted up to
        the cap, and when few, fetched and sorted (``_few_matches``)."""
        return bool(search.words(self.q) or self.id_prefix or self.parent or self.unreadable)

    @property
    def created_range_by_update(self) -> bool:
        """A created range sorted by update time, bounded on the side the update index is walked
        away from: no index serves both columns, and the walk reads every row outside the range
        that comes first in that order (a recent ``created_after`` sorted oldest-update first,
        an old ``created_before`` newest first: 0.2-0.3 s on a million instances). Few matches
        are fetched and sorted (``_few_matches``). Bounded on the other side only, the walk
        meets the matches at its start."""
        if not self.sort.endswith("updated") or self.own_index:
            return False
        far_bound = self.created_before if self.sort.startswith("-") else self.created_after
        return far_bound is not None

    @property
    def counts_are_exact(self) -> bool:
        """StatusCount holds live instances per engine x name x status: nothing else filtered."""
        return (
            self.purged == "exclude"
            and not self.own_index
            and self.created_after is None
            and self.created_before is None
        )


def base_queryset(
    f: Filters, with_status: bool = True, common_text: bool = False
) -> QuerySet[Instance]:
    qs, col = _filter_columns(Instance.objects.all(), f)
    if f.engine_ids:
        qs = qs.filter(**{f"{col['engine_id']}__in": f.engine_ids})
    if with_status and f.statuses:
        qs = qs.filter(**{f"{col['status']}__in": f.statuses})
    if f.name:
        qs = qs.filter(**{col["name"]: f.name})
    if f.created_after:
        qs = qs.filter(**{f"{col['created_at']}__gte": f.created_after})
    if f.created_before:
        qs = qs.filter(**{f"{col['created_at']}__lt": f.created_before})
    if f.purged == "exclude":
        qs = qs.filter(**{col["purged"]: False})
    elif f.purged == "only":
        qs = qs.filter(**{col["purged"]: True})
    if f.id_prefix:
        qs = search.filter_id_prefix(qs, f.id_prefix, column=col["instance_id"])
    if f.parent is not None:
        # Through the parent link's index (wf_inst_parent, its condition spelt out for SQLite:
        # see Instance.children_of); the children are then sorted.
        qs = qs.filter(parent_engine_id=f.parent[0], parent_instance_id=f.parent[1]).exclude(
            parent_instance_id=""
        )
    if f.q:
        qs = search.filter_text(qs, f.q, common=common_text)
    if f.unreadable:
        qs = qs.filter(schedule__read_failing_since__isnull=False)
    return qs


_PLAIN_COLUMNS = ("engine_id", "status", "name", "created_at", "purged", "instance_id")


def _filter_columns(
    qs: QuerySet[Instance], f: Filters
) -> tuple[QuerySet[Instance], dict[str, str]]:
    """The names base_queryset filters on: the columns, or for the unreadable filter names no
    index of the instances serves. The unreadable instances are few, found through the
    checks' partial index; an index range of engine, status, name or id prefix would be
    walked instead, each row's check tested (0.2-0.5 s for 300,000 instances on SQLite).

    By update time, engines and a name: the engine alone too. Without statistics SQLite takes
    the (engine, last update) index for the order, testing each row's name and status, not the
    (name, status, last update) range each per-status query asks for: 85 ms for 200,000
    instances, a status rare under that name reading most of the engine's rows."""
    if f.unreadable:
        return search.off_index(qs, _PLAIN_COLUMNS)
    columns = {c: c for c in _PLAIN_COLUMNS}
    if f.engine_ids and f.name and f.sort.endswith("updated"):
        qs, engine = search.off_index(qs, ["engine_id"])
        columns.update(engine)
    return qs, columns


_LIST_FIELDS = [
    "id",
    "engine_id",
    "instance_id",
    "name",
    "status",
    "created_at",
    "last_updated_at",
    "completed_at",
    "custom_status_size",
    "purged",
    "version",
]

#: Characters of custom status a list row carries (``custom_status_head``): a custom status may
#: hold up to the payload limit (64 KB), and fifty or two hundred of them in full made a page
#: read megabytes to show eighty characters each. The instance's own page and API answer it whole.
LIST_CUSTOM_STATUS = 1000


def _page_of(
    qs: QuerySet[Instance], f: Filters, limit: int, fetch_and_sort: bool = False
) -> list[Instance]:
    """``fetch_and_sort``: the filter matches few rows; have the database find them by the
    filter's own index and sort them, not walk the sort column's index testing every row."""
    column, desc = _read_order(f)
    if f.cursor is not None:
        value, pk = f.cursor.when, f.cursor.pk
        # A range on the sort column (index-friendly on both databases), minus the rows of the
        # cursor's own value that were already shown. For the unreadable filter, a range no
        # index serves (``_filter_columns``): else SQLite walks the time index from the
        # cursor, testing each row's check (45 ms for 200,000 instances).
        at = column
        if f.unreadable:
            qs, names = search.off_index(qs, [column])
            at = names[column]
        if desc:
            qs = qs.filter(**{f"{at}__lte": value}).exclude(Q(**{at: value}) & Q(pk__gte=pk))
        else:
            qs = qs.filter(**{f"{at}__gte": value}).exclude(Q(**{at: value}) & Q(pk__lte=pk))
    key = (
        search.sort_key_after_filter(
            qs.db, column, joined=f.unreadable or f.created_range_by_update
        )
        if fetch_and_sort
        else F(column)
    )
    order = [key.desc(), F("id").desc()] if desc else [key.asc(), F("id").asc()]
    # Payload columns are left out: a page needs custom status only (cut for display).
    rows = (
        qs.only(*_LIST_FIELDS)
        .annotate(custom_status_head=Substr("custom_status", 1, LIST_CUSTOM_STATUS))
        .order_by(*order)[:limit]
    )
    return list(rows)


def _read_order(f: Filters) -> tuple[str, bool]:
    """The column and direction rows are read in: the sort's, or for a previous page its
    reverse, from the cursor towards the start (the same index range, walked the other way:
    as cheap as a next page however far the list goes)."""
    column, desc = SORTS[f.sort]
    backward = f.cursor is not None and f.cursor.backward
    return column, desc != backward


def _split_values(f: Filters) -> tuple[str, list[Any]] | None:
    """When the filter is an IN list on an index's leading column followed by the sort column
    (status under a name, several statuses, several engines), one query per value keeps each an
    index range scan with a LIMIT; the pages are merged here. Text search and id prefix are left
    whole: their matches are counted, and few matches are fetched and sorted (``_few_matches``).
    """
    if f.own_index:
        return None
    by_update = f.sort.endswith("updated")
    if f.name and len(f.statuses) != 1:
        return ("status", f.statuses or list(Status.values))
    if len(f.statuses) > 1 and not (by_update and f.engine_ids):
        # By update time there is no (engine, status, ...) index to split along.
        return ("status", f.statuses)
    if len(f.engine_ids) > 1 and not f.name and not f.statuses:
        return ("engine_id", f.engine_ids)
    return None


@dataclass
class Page:
    """A page of instances, the cursors of the pages next to it (None: no such page) and the
    position of its first row in the list (0 for the first page; None when not known: a link
    without it, or rows come into the list before it since)."""

    rows: list[Instance]
    next_cursor: str | None
    previous_cursor: str | None
    start: int | None


def instance_page(f: Filters, limit: int | None = None, counts: Counts | None = None) -> Page:
    """A page of instances, after the cursor or (for a previous page) before it. Exact
    ``counts`` let a per-status split skip the statuses that have no instance."""
    limit = limit or PAGE_SIZE
    rows, more = _read_rows(f, limit, counts)
    cursor = f.cursor
    if cursor is None or not cursor.backward:
        start = 0 if cursor is None else cursor.rows_before
        after = more
        before = cursor is not None
    else:
        rows.reverse()
        if not more and len(rows) < limit:
            # Back at the start, with fewer rows than a page (some were taken out of the list
            # since): the first page, whole.
            return instance_page(_with(f, cursor=None), limit, counts)
        start = None if cursor.rows_before is None else cursor.rows_before - len(rows)
        if not more:
            start = 0
        elif start is not None and start <= 0:
            start = None  # rows came into the list before this place since: position unknown
        after = True  # the row the cursor names, at least
        before = more
    column = SORTS[f.sort][0]
    filters = f.digest()

    def place(inst: Instance, backward: bool, rows_before: int | None) -> str:
        return encode_cursor(getattr(inst, column), inst.pk, f.sort, filters, backward, rows_before)

    following = None if start is None else start + len(rows)
    return Page(
        rows=rows,
        next_cursor=place(rows[-1], False, following) if after and rows else None,
        previous_cursor=place(rows[0], True, start) if before and rows else None,
        start=start,
    )


def _read_rows(f: Filters, limit: int, counts: Counts | None) -> tuple[list[Instance], bool]:
    """Up to ``limit`` rows in reading order (``_read_order``), and whether more follow."""
    column, desc = _read_order(f)
    split = _split_values(f)
    if split is not None and split[0] == "status" and counts is not None and counts.exact:
        split = ("status", [v for v in split[1] if counts.by_status.get(v)])
    if split is None:
        few = _few_matches(f, counts) if counts is not None else None
        common_text = few is False and bool(search.words(f.q))
        qs = base_queryset(f, common_text=common_text)
        rows = _page_of(qs, f, limit + 1, fetch_and_sort=bool(few))
    else:
        key, values = split
        if key == "engine_id":
            parts = [
                _page_of(base_queryset(_with(f, engine_ids=[v])), f, limit + 1) for v in values
            ]
        else:
            qs = base_queryset(f, with_status=False)
            parts = [_page_of(qs.filter(status=v), f, limit + 1) for v in values]

        def sort_key(inst: Instance) -> tuple[datetime, int]:
            return (getattr(inst, column), inst.pk)

        rows = list(heapq.merge(*parts, key=sort_key, reverse=desc))[: limit + 1]
    return rows[:limit], len(rows) > limit


def _few_matches(f: Filters, counts: Counts) -> bool | None:
    """Whether a text search, an id prefix, a parent or the unreadable filter (or a created
    range sorted by update time) matches few enough rows to fetch them all and sort them,
    rather than walk the sort column's index testing each row. None: the filter has none of
    them.

    Up to the count's cap (``COUNT_CAP``, counted anyway for the page) fetching and sorting
    is bounded. Walking reads about PAGE_SIZE x scope / matches rows only when the matches are
    spread evenly over the sort order; bunched at its far end (ids made in time order, a
    customer's month) it reads the whole scope: 0.3-0.8 s on a million instances. Beyond the
    cap, matches are common and walking finds a page soon; but for a created range, the rows
    outside it that come first in update order are read first all the same."""
    if not (f.own_index or f.created_range_by_update):
        return None
    return not counts.capped


def _with(f: Filters, **changes: Any) -> Filters:
    data = dict(f.__dict__)
    data.update(changes)
    return Filters(**data)


@dataclass
class Counts:
    """Instances per status for the current filter (the status filter itself left out, so each
    status shows what choosing it would give)."""

    by_status: dict[str, int]
    exact: bool
    capped: bool = False

    @property
    def total(self) -> int:
        return sum(self.by_status.values())

    def chips(self, selected: list[str]) -> list[dict[str, Any]]:
        return [
            {
                "status": s.value,
                "label": s.label,
                "colour": STATUS_COLOURS[s],
                "count": self.by_status.get(s.value, 0),
                "selected": s.value in selected,
            }
            for s in Status
            if self.by_status.get(s.value) or s.value in selected
        ]


def counts_for_plan(f: Filters) -> Counts | None:
    """The counts ``instance_page`` chooses its plan by (statuses with no instance skipped;
    few or many matches of a word or an id prefix), for a caller that shows none: None when
    they would not change the plan and would only cost a capped count."""
    if f.counts_are_exact or f.own_index or f.created_range_by_update:
        return status_counts(f)
    return None


def status_counts(f: Filters) -> Counts:
    if f.counts_are_exact:
        qs = StatusCount.objects.all()
        if f.engine_ids:
            qs = qs.filter(engine_id__in=f.engine_ids)
        if f.name:
            qs = qs.filter(name=f.name)
        rows = qs.values("status").annotate(n=Sum("count")).order_by()
        return Counts({r["status"]: int(r["n"]) for r in rows if r["n"]}, exact=True)
    # Count at most COUNT_CAP + 1 matching rows: beyond that the page says "10,000+".
    inner = base_queryset(f, with_status=False).values_list("status").order_by()
    # A created range read from its index, unless a name's or an own index finds fewer rows
    # (ordered, those would all be read and sorted before the cap applies).
    if (f.created_after or f.created_before) and not (f.name or f.own_index):
        inner = search.count_in_created_order(inner)
    inner = inner[: COUNT_CAP + 1]
    sql, params = inner.query.sql_with_params()
    conn = connections[inner.db]
    with conn.cursor() as cur:
        cur.execute(f"SELECT status, COUNT(*) FROM ({sql}) AS capped GROUP BY status", params)  # noqa: S608
        by_status = {status: int(n) for status, n in cur.fetchall()}
    capped = sum(by_status.values()) > COUNT_CAP
    return Counts(by_status, exact=not capped, capped=capped)


#: Workflow names the list's name filter offers at a time.
NAMES_OFFERED = 200


def known_names(
    engine_ids: list[int], prefix: str = "", limit: int | None = None
) -> tuple[list[str], bool]:
    """The first ``limit`` names of the engines' live instances (that start with ``prefix``),
    in order, and whether there are more. From the counts table, never the instances: per
    engine, its range of the (engine, name, status) index, in name order, read no further
    than the limit."""
    limit = limit or NAMES_OFFERED
    found: list[list[str]] = []
    for engine_id in engine_ids:
        names = (
            StatusCount.objects.filter(engine_id=engine_id, count__gt=0)
            .order_by("name")
            .values_list("name", flat=True)
            .distinct()
        )
        # Exactly as the name filter matches: "Ship" is not "ship".
        names = search.filter_prefix(names, "name", prefix)
        found.append([n for n in names[: limit + 1] if n])
    merged = sorted({n for names in found for n in names})
    return merged[:limit], len(merged) > limit
