"""HTML pages: engines, the instance list, an instance's detail (summary, payloads, waiting on,
timeline, history) and the history download. Every page needs a login (the login middleware);
pages are served from the console's database only, never from an engine, and change nothing:
they answer GET and HEAD only.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import wraps
from typing import Any
from urllib.parse import quote

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.handlers.asgi import ASGIRequest
from django.db.models import Subquery
from django.db.models.fields.json import KT
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseBadRequest,
    HttpResponseRedirect,
    StreamingHttpResponse,
)
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.utils.http import content_disposition_header, urlencode
from django.views.decorators.http import require_safe

from engine_bridge.types import EVENT_TYPES
from workflows_ui import converters, freshness, history, listing, payloads, plaintext
from workflows_ui.models import (
    STATUS_COLOURS,
    Engine,
    HistoryEvent,
    Instance,
    InstanceCheck,
    Run,
    Status,
    StatusCount,
    indexer_unseen_limit,
)
from workflows_ui.timeline import Row, elapsed, human_duration, layout

#: Colour of each status, by its stored value.
COLOURS: dict[str, str] = {str(k): v for k, v in STATUS_COLOURS.items()}
HISTORY_PAGE = 50
#: Runs of an instance a page of its runs table lists, newest first.
RUNS_PAGE = 20
CHILDREN_SHOWN = 50
#: Seconds the oldest due re-read of an engine has waited before the engines page shows it, and
#: before it shows it as a problem.
BEHIND_SHOWN = 5.0
BEHIND_WARNED = 60.0
#: Events a history download reads at a time (each batch a query, serialised in the request's
#: thread).
DOWNLOAD_BATCH = 2000


@require_safe
def home(request: HttpRequest) -> HttpResponse:
    engines = list(Engine.objects.all())
    by_status = StatusCount.per_engine()
    totals = {pk: sum(counts.values()) for pk, counts in by_status.items()}
    unreadable = InstanceCheck.unreadable_by_engine()
    # An engine no longer configured is not indexed at all: nothing is due for it.
    lag = InstanceCheck.refresh_lag([e.pk for e in engines if e.configured])
    for engine in engines:
        engine.instance_total = totals.get(engine.pk, 0)  # type: ignore[attr-defined]
        counts = by_status.get(engine.pk, {})
        # Per status, in the statuses' order, each a link to the list of them.
        engine.per_status = [  # type: ignore[attr-defined]
            (status, Status(status).label, counts[status], COLOURS.get(status, "grey"))
            for status in Status.values
            if counts.get(status)
        ]
        engine.unreadable = unreadable.get(engine.pk, 0)  # type: ignore[attr-defined]
        behind = lag.get(engine.pk, 0.0)
        # A re-read due a moment ago is the normal state of a running indexer.
        engine.behind = human_duration(behind) if behind >= BEHIND_SHOWN else ""  # type: ignore[attr-defined]
        engine.far_behind = behind >= BEHIND_WARNED  # type: ignore[attr-defined]
    configured = [c.name for c in settings.CONSOLE_ENGINES]
    ctx = {
        "engines": engines,
        "configured": configured,
        "page_time": timezone.now(),
        "stale_after": indexer_unseen_limit(),
    }
    return render(request, "workflows_ui/home.html", ctx)


# --- helpers ----------------------------------------------------------------------------------


def _engine_warnings(engines: list[Engine]) -> list[Engine]:
    """Engines whose indexed data may be out of date: unreachable, failing, too old to be
    indexed, or passed over by no indexer (not those taken out of CONSOLE_ENGINES, health
    not-indexed: the engines page says so, once)."""
    return [e for e in engines if e.health() in ("unreachable", "failing", "too-old", "stale")]


def _engines_shown(request: HttpRequest, engines: list[Engine]) -> list[Engine]:
    """The engines whose instances the list may show: those of its engine filter, else all (an
    engine down says nothing about a list of the others)."""
    chosen = set(request.GET.getlist("engine"))
    return [e for e in engines if e.name in chosen] or engines


def _id_as_sent(view: Callable[..., Any]) -> Callable[..., Any]:
    """A view of one instance that first refuses (404, saying why) a path that is not UTF-8
    (``converters.sent_as_utf8``): the id the server made of it is not the one sent, and no
    engine is asked for it."""

    @wraps(view)
    def checked(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
        if not converters.sent_as_utf8(request):
            return render(request, "404.html", {"invalid_id": converters.NOT_UTF8}, status=404)
        return view(request, *args, **kwargs)

    return checked


def _find_instance(engine: str, instance_id: str) -> Instance | None:
    return (
        Instance.objects.select_related("engine", "parent_engine", "schedule")
        .filter(engine__name=engine, instance_id=instance_id)
        .first()
    )


def _get_instance(engine: str, instance_id: str) -> Instance:
    inst = _find_instance(engine, instance_id)
    if inst is None:
        raise Http404("no such instance")
    return inst


def _get_run(inst: Instance, ordinal: int | None) -> Run | None:
    """The run asked for, or the instance's current run (the newest when unknown)."""
    runs = Run.objects.filter(instance=inst)
    if ordinal is not None:
        run = runs.filter(ordinal=ordinal).first()
        if run is None:
            raise Http404("no such run of this instance")
        return run
    if inst.current_execution_id:
        run = runs.filter(execution_id=inst.current_execution_id).first()
        if run is not None:
            return run
    return runs.order_by("-ordinal").first()


def instance_url(engine_name: str, instance_id: str, *rest: Any) -> str:
    """An instance page's path; reverse() percent-encodes what a path segment can't hold."""
    if not rest:
        return reverse("instance-detail", args=[engine_name, instance_id])
    names = {1: "run-detail", 2: "event-detail"}
    return reverse(names[len(rest)], args=[engine_name, instance_id, *rest])


# --- the instance list ------------------------------------------------------------------------


@require_safe
def instance_list(request: HttpRequest) -> HttpResponse:
    engines = list(Engine.objects.all())
    engine_names = {e.pk: e.name for e in engines}
    form = listing.InstanceFilterForm(request.GET, engines)
    now = timezone.now()  # of the rows' durations and of the banner's "down since"
    ctx: dict[str, Any] = {
        "form": form,
        "engines": engines,
        "warnings": _engine_warnings(_engines_shown(request, engines)),
        "page_time": now,
        "statuses": [(s.value, s.label, STATUS_COLOURS[s]) for s in Status],
        "rows": [],
        "next_url": None,
        "cap": listing.COUNT_CAP,
        "filtered": any(
            v and k not in ("sort", "cursor") and (k, v) != ("purged", "exclude")
            for k, v in request.GET.items()
        ),
        # The parent filter has no field of its own: it comes from an instance's page, is kept
        # through the other filters' changes, and is taken off by a link.
        "parent": request.GET.get("parent", ""),
        "without_parent": "?" + _without(request, "parent", "cursor"),
    }
    if form.is_valid():
        f = listing.Filters.from_form(form)
        counts = listing.status_counts(f)
        page = listing.instance_page(f, counts=counts)
        # A page link whose rows have all left the list since it was made.
        gone_page = f.cursor is not None and not page.rows
        display = [
            _list_row(inst, engine_names.get(inst.engine_id, "?"), now) for inst in page.rows
        ]
        query = request.GET.copy()
        query.pop("cursor", None)

        def page_url(cursor: str | None) -> str | None:
            if cursor is None:
                return None
            return "?" + urlencode([*query.lists(), ("cursor", [cursor])], doseq=True)

        ctx.update(
            rows=display,
            counts=counts,
            chips=_status_chips(request, counts, f.statuses),
            selected_total=(
                sum(counts.by_status.get(s, 0) for s in f.statuses) if f.statuses else counts.total
            ),
            next_url=page_url(page.next_cursor),
            previous_url=page_url(page.previous_cursor),
            first_url="?" + query.urlencode() if page.start != 0 or gone_page else None,
            gone_page=gone_page,
            position=(
                (page.start + 1, page.start + len(page.rows)) if page.start is not None else None
            ),
            sort_links=_sort_links(request, f.sort),
        )
    results_only = request.htmx and request.htmx.target == "results"  # type: ignore[attr-defined]
    ctx["results_only"] = results_only
    if not results_only:
        ctx["names"], ctx["more_names"] = listing.known_names([e.pk for e in engines])
    template = (
        "workflows_ui/_instance_results.html" if results_only else "workflows_ui/instance_list.html"
    )
    # (Vary: HX-Request, which keeps the browser from showing the results alone on Back, is
    # the response headers middleware's.)
    return render(request, template, ctx)


@require_safe
def workflow_names(request: HttpRequest) -> HttpResponse:
    """The workflow names that start with what was typed in the name filter, as the options of
    its list: the page holds the first ``NAMES_OFFERED`` only."""
    prefix = request.GET.get("name", "")
    if len(prefix) > Instance._meta.get_field("name").max_length:  # type: ignore[operator]
        return HttpResponseBadRequest(
            "name: longer than any workflow name", content_type="text/plain"
        )
    if "\x00" in prefix:
        # PostgreSQL refuses a query holding one (a 500), and no name has one.
        return HttpResponseBadRequest(
            "name: no workflow name holds a NUL character", content_type="text/plain"
        )
    engine_ids = list(Engine.objects.values_list("pk", flat=True))
    names, more = listing.known_names(engine_ids, prefix)
    return render(request, "workflows_ui/_name_options.html", {"names": names, "more": more})


_STATUS_LABELS = dict(Status.choices)


def _list_row(inst: Instance, engine_name: str, now: datetime) -> dict[str, Any]:
    """A row of the list as plain text: the template engine resolves dict keys first and
    formats dates slowly, and a page has fifty rows of eight columns."""
    return {
        "engine": engine_name,
        "instance_id": inst.instance_id,
        "url": instance_url(engine_name, inst.instance_id),
        "name": inst.name,
        "status": _STATUS_LABELS.get(inst.status, inst.status),
        "colour": COLOURS.get(inst.status, "grey"),
        "created": inst.created_at.strftime("%Y-%m-%d %H:%M:%S"),
        "created_iso": inst.created_at.isoformat(),
        "updated": inst.last_updated_at.strftime("%Y-%m-%d %H:%M:%S"),
        "updated_iso": inst.last_updated_at.isoformat(),
        "duration": _duration(inst, now),
        "custom_status": _cut(plaintext.visible(inst.custom_status_head), 80),  # type: ignore[attr-defined]
        "purged": inst.purged,
    }


def _status_chips(
    request: HttpRequest, counts: listing.Counts, chosen: list[str]
) -> list[dict[str, Any]]:
    """The counts' status chips, as toggles: one not chosen lists that status alone, one
    chosen is taken off the filter (the last one taken off lists every status)."""
    base = _without(request, "status", "cursor")
    chips = counts.chips(chosen)
    for chip in chips:
        status = chip["status"]
        keep = [s for s in chosen if s != status] if chip["selected"] else [status]
        query = "&".join(filter(None, [base, urlencode([("status", s) for s in keep])]))
        chip["url"] = f"?{query}"
    return chips


def _sort_links(request: HttpRequest, current: str) -> dict[str, dict[str, str]]:
    """Column headers that sort: newest first on the first click, then the other way."""
    base = _without(request, "sort", "cursor")
    out = {}
    for column in ("created", "updated"):
        desc = f"-{column}"
        target = column if current == desc else desc
        arrow = {desc: " ↓", column: " ↑"}.get(current, "")
        out[column] = {
            "url": f"?{base}&sort={target}" if base else f"?sort={target}",
            "arrow": arrow,
            # aria-sort of the column's header, for screen readers (the arrow is drawn).
            "aria": {desc: "descending", column: "ascending"}.get(current, "none"),
        }
    return out


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _without(request: HttpRequest, *keys: str) -> str:
    query = request.GET.copy()
    for key in keys:
        query.pop(key, None)
    return query.urlencode()


# --- an instance ------------------------------------------------------------------------------


@require_safe
@_id_as_sent
def instance_detail(
    request: HttpRequest,
    engine: str,
    instance_id: str,
    ordinal: int | None = None,
    position: int | None = None,
) -> HttpResponse:
    inst = _find_instance(engine, instance_id)
    if inst is None:
        return _not_indexed(request, engine, instance_id)
    wanted = request.GET.get("run", "").strip()
    if wanted:
        return _open_run(request, inst, wanted)
    run = _get_run(inst, ordinal)
    if position is not None and (run is None or not 0 <= position < max(run.event_count, 1)):
        raise Http404("no such event in this run")
    if request.htmx and request.htmx.target == "history" and run is not None:  # type: ignore[attr-defined]
        return render(request, "workflows_ui/_history.html", _history_context(request, inst, run))
    # The runs table links its pages from the page it is on: the run shown stays shown.
    page_url = instance_url(engine, instance_id, *([] if ordinal is None else [ordinal]))
    try:
        runs = _runs_page(
            inst,
            run,
            request.GET.get("runs_page", "").strip(),
            page_url,
            _history_state(request, position),
        )
    except NoSuchRunsPage as exc:
        return _no_such_runs_page(request, inst, exc, page_url)
    if request.htmx and request.htmx.target == "runs":  # type: ignore[attr-defined]
        return render(request, "workflows_ui/_runs.html", {"inst": inst, "run": run, **runs})

    children = list(
        inst.children()
        .select_related("engine")
        .only("engine__name", "instance_id", "name", "status", "created_at", "purged")
        .order_by("created_at", "id")[: CHILDREN_SHOWN + 1]
    )
    for child in children:
        child.url = instance_url(child.engine.name, child.instance_id)  # type: ignore[attr-defined]
        child.colour = COLOURS.get(child.status, "grey")  # type: ignore[attr-defined]
    parent = inst.parent()
    is_current = run is not None and (
        run.execution_id == inst.current_execution_id or not inst.current_execution_id
    )
    # One time for the whole page: durations so far, the timeline's open bars and how far
    # timers are all said as of it.
    now = timezone.now()
    ctx: dict[str, Any] = {
        "page_time": now,
        "inst": inst,
        "last_read": _last_read(inst),
        "reading_again": freshness.read_again(inst),
        "colour": COLOURS.get(inst.status, "grey"),
        "run": run,
        "is_current": is_current,
        **runs,
        "kept_until": (
            inst.purged_at + timedelta(days=settings.CONSOLE_RETENTION_DAYS)
            if inst.purged and inst.purged_at and settings.CONSOLE_RETENTION_DAYS
            else None
        ),
        "children": children[:CHILDREN_SHOWN],
        "more_children": len(children) > CHILDREN_SHOWN,
        "parent": parent,
        "parent_url": (
            instance_url(inst.parent_engine.name, inst.parent_instance_id)
            if inst.parent_instance_id and inst.parent_engine
            else None
        ),
        "warnings": _engine_warnings([inst.engine, *_related_engines(inst, children)]),
        "read_problem": inst.read_problem(),
        "duration": (_duration(inst, now) if is_current or run is None else _run_duration(run)),
        "payloads": payloads.instance_payloads(inst, base=instance_url(engine, instance_id)),
        # A terminated instance's output is the reason given for it.
        "termination_reason": plaintext.visible(inst.output),
        # An earlier run: its own input (the instance's output, custom status and failure are
        # its current run's, and the engine keeps no others).
        "run_input": (
            payloads.pretty(run.input, payloads.DISPLAY_LIMIT)
            if run is not None and not is_current and run.input
            else None
        ),
    }
    if run is not None:
        tl, waits = history.load_timeline(run, _run_status(inst, run))
        ctx["timeline"] = layout(tl, now)
        _link_children(inst, run, ctx["timeline"].rows, waits)
        ctx["end_unread"] = tl.end_unread
        ctx["waits"] = waits
        ctx["waits_unlisted"] = tl.unlisted
        ctx["waits_listed_per_kind"] = history.OPEN_LIMIT
        ctx["suspended"] = tl.suspended and inst.status == Status.SUSPENDED
        ctx["suspend_reason"] = plaintext.visible(tl.suspend_reason)
        ctx["suspended_since"] = tl.suspended_by
        ctx["run_url"] = instance_url(engine, instance_id, run.ordinal)
        if is_current and inst.status == Status.FAILED:
            ctx["last_failed"] = _last_failed(run, ctx["run_url"])
        ctx["run_link"] = _run_link(inst, run)
        ctx.update(_history_context(request, inst, run, position, tl.start, now))
    return render(request, "workflows_ui/instance_detail.html", ctx)


def _related_engines(inst: Instance, children: list[Instance]) -> list[Engine]:
    """The other engines of the children and the parent an instance's page shows: what it says
    of them is as of their engine's last pass, so an engine down or not indexed gets its banner
    there too (an order's invoice on billing, billing down)."""
    others: set[int] = {c.engine_id for c in children}
    if inst.parent_engine_id is not None:
        others.add(inst.parent_engine_id)
    others.discard(inst.engine_id)
    return list(Engine.objects.filter(pk__in=others)) if others else []


def _link_children(inst: Instance, run: Run, rows: list[Row], waits: list[history.Wait]) -> None:
    """Point the timeline's child bars and the waits on children at each child's page, on the
    engine that runs it: a child handed to another app (``router.targetAppID``) runs on that
    app's engine, not its parent's. A child indexed is found by its parent link; one not
    indexed yet (its engine down, say), or indexed on two engines, by the app it was handed to.
    A child of an app no engine of the console serves has no page: its bar leads to its event,
    its wait has no link."""
    wanted = {r.child_id for r in rows if r.child_id} | {w.child_id for w in waits if w.child_id}
    if not wanted:
        return
    indexed: dict[str, set[str]] = {}
    for child_id, name in (
        inst.children().filter(instance_id__in=wanted).values_list("instance_id", "engine__name")
    ):
        indexed.setdefault(child_id, set()).add(name)
    # A child id on two engines (runs that continued as new name their children alike, and
    # one handed its child to another app): this run's history says which is its own.
    engines = {child_id: names.pop() for child_id, names in indexed.items() if len(names) == 1}
    unindexed = wanted - engines.keys()
    if unindexed:
        handed_to = dict(
            HistoryEvent.objects.filter(
                run=run,
                event_type="childWorkflowInstanceCreated",
                details__instanceId__in=list(unindexed),
            ).values_list(KT("details__instanceId"), KT("details__router__targetAppID"))
        )
        apps = _engines_by_app({app for app in handed_to.values() if app})
        for child_id in unindexed:
            app = handed_to.get(child_id) or ""
            if not app or app == inst.engine.app_id:
                engines[child_id] = inst.engine.name
            elif app in apps:
                engines[child_id] = apps[app]
    for row in rows:
        if row.child_id in engines:
            row.child_url = instance_url(engines[row.child_id], row.child_id)
    for wait in waits:
        if wait.child_id in engines:
            wait.child_url = instance_url(engines[wait.child_id], wait.child_id)
            wait.child_engine = engines[wait.child_id]


def _engines_by_app(app_ids: set[str]) -> dict[str, str]:
    """The name of the engine serving each of these Dapr app ids (one configured first)."""
    found: dict[str, str] = {}
    rows = Engine.objects.filter(app_id__in=app_ids).order_by("-configured", "name")
    for app_id, name in rows.values_list("app_id", "name"):
        found.setdefault(app_id, name)
    return found


@dataclass
class PageLink:
    """A link of the runs table's pager or the history's, each paging its part of the page in
    place at an address it pushes. ``href`` (a reload, no script) carries this pager's
    parameters and the other's as the page had them; ``get`` this pager's only: htmx adds the
    other's as they are when the link is followed (``hx-include``), as they may have changed
    since the link was drawn."""

    path: str
    own: list[tuple[str, Any]]
    kept: list[tuple[str, Any]]

    @property
    def href(self) -> str:
        return _with_query(self.path, [*self.own, *self.kept])

    @property
    def get(self) -> str:
        return _with_query(self.path, self.own)


def _with_query(path: str, params: list[tuple[str, Any]]) -> str:
    return f"{path}?{urlencode(params)}" if params else path


class NoSuchRunsPage(Exception):
    """A page of runs the instance doesn't have: past the last, or not a page number."""

    def __init__(self, asked: str, pages: int) -> None:
        super().__init__(asked)
        self.asked = asked
        self.pages = pages


def _runs_page(
    inst: Instance, run: Run | None, asked: str, page_url: str, kept: list[tuple[str, Any]]
) -> dict[str, Any]:
    """A page of the instance's runs, newest first: the one asked for (``runs_page``, from 1),
    else the one holding the run shown. ``kept``: the history's state, which the links keep.

    Pages are ranges of ordinals down from the newest: the indexer numbers the runs it stores
    one after the other, and retention forgets the oldest first. So a page costs two look-ups
    in the (instance, ordinal) index however many runs there are (an eternal workflow continues
    as new thousands of times), where counting the runs or skipping an offset reads them all
    (measured with 100,000 runs: 60 to 120 ms each). Were runs forgotten out of order, pages
    would overlap by as many, none left out."""
    ends = _run_ends(inst)
    newest, oldest = ends if ends is not None else (0, 0)
    pages = (newest - oldest) // RUNS_PAGE + 1
    if asked:
        page = _page_number(asked)
        if page is None or page > pages:
            raise NoSuchRunsPage(asked, pages)
    else:
        page = (newest - run.ordinal) // RUNS_PAGE + 1 if run is not None else 1
    top = newest - (page - 1) * RUNS_PAGE
    # Not the inputs: the table doesn't show them, and each may be large.
    rows = (
        list(
            Run.objects.filter(instance=inst, ordinal__lte=top)
            .defer("input")
            .order_by("-ordinal")[:RUNS_PAGE]
        )
        if ends is not None
        else []
    )
    for r in rows:
        r.url = instance_url(inst.engine.name, inst.instance_id, r.ordinal)  # type: ignore[attr-defined]
        r.is_latest = r.execution_id == inst.current_execution_id  # type: ignore[attr-defined]

    def link(n: int) -> PageLink | None:
        if not 1 <= n <= pages or n == page:
            return None
        return PageLink(page_url, [("runs_page", n)], kept)

    return {
        "runs": rows,
        "runs_page": page,
        # The page asked for, which the history's links and filter keep (none when the table
        # shows the page of the run shown, as it does by default).
        "runs_page_asked": page if asked else None,
        "runs_pages": pages,
        "runs_newest": link(1),
        "runs_newer": link(page - 1),
        "runs_older": link(page + 1),
        "runs_oldest": link(pages),
        # Ordinals count the runs the indexer saw: the first kept is above 1 when earlier ones
        # were forgotten past the retention period.
        "runs_forgotten": max(0, oldest - 1) if ends is not None else 0,
        "retention_days": settings.CONSOLE_RETENTION_DAYS,
        "instance_page_url": instance_url(inst.engine.name, inst.instance_id),
    }


def _run_ends(inst: Instance) -> tuple[int, int] | None:
    """The ordinals of the instance's newest and oldest runs kept (None when it has none), in
    one query: each an end of the (instance, ordinal) index."""
    ordinals = Run.objects.filter(instance=inst).values_list("ordinal", flat=True)
    ends = (
        Instance.objects.filter(pk=inst.pk)
        .values_list(
            Subquery(ordinals.order_by("-ordinal")[:1]), Subquery(ordinals.order_by("ordinal")[:1])
        )
        .first()
    )
    return None if ends is None or ends[0] is None else (ends[0], ends[1])


def _page_number(text: str) -> int | None:
    """A page number as a link writes it (digits, from 1), else None."""
    if not (text.isascii() and text.isdigit()) or len(text) > 9:
        return None
    return int(text) or None


def _run_link(inst: Instance, run: Run) -> str:
    """A link to one run by its execution id: the engine's id of the run, the same in every
    console and after a re-index, where the ordinal in the run's page path is this console's."""
    return (
        instance_url(inst.engine.name, inst.instance_id)
        + "?"
        + urlencode({"run": run.execution_id})
    )


def _open_run(request: HttpRequest, inst: Instance, execution_id: str) -> HttpResponse:
    """The page of the run with this execution id (a shared link, the lookup form), or a 404
    saying the instance has no such run."""
    # PostgreSQL refuses a query holding a NUL (a 500), and no execution id has one.
    ordinal = (
        Run.objects.filter(instance=inst, execution_id=execution_id)
        .values_list("ordinal", flat=True)
        .first()
        if "\x00" not in execution_id
        else None
    )
    if ordinal is not None:
        return HttpResponseRedirect(instance_url(inst.engine.name, inst.instance_id, ordinal))
    ctx = {
        "inst": inst,
        "missing_run": execution_id,
        "retention_days": settings.CONSOLE_RETENTION_DAYS,
        "back_url": instance_url(inst.engine.name, inst.instance_id),
    }
    return render(request, "404.html", ctx, status=404)


def _no_such_runs_page(
    request: HttpRequest, inst: Instance, exc: NoSuchRunsPage, page_url: str
) -> HttpResponse:
    ctx = {
        "inst": inst,
        "missing_page": exc.asked,
        "pages": exc.pages,
        "runs_page_size": RUNS_PAGE,
        "back_url": f"{page_url}?runs_page=1",
        "last_url": f"{page_url}?runs_page={exc.pages}",
    }
    return render(request, "404.html", ctx, status=404)


def _not_indexed(request: HttpRequest, engine: str, instance_id: str) -> HttpResponse:
    """The 404 of an instance the console has not indexed, the indexer asked to look for it:
    a link to an instance started a moment ago works after a reload."""
    ctx = {
        "request_path": quote(request.path),  # as Django's own 404 shows it
        "engine": engine,
        "instance_id": instance_id,
        "looking_for": freshness.look_for(engine, instance_id),
        # A link to a child on an engine that is down (from its parent's page, say) lands
        # here: why the console may not have it is that engine's state.
        "warnings": _engine_warnings(list(Engine.objects.filter(name=engine))),
        "page_time": timezone.now(),
    }
    return render(request, "404.html", ctx, status=404)


def _last_read(inst: Instance) -> datetime:
    """When the indexer last read the instance from its engine (a tombstone: when it was
    stored)."""
    check = inst.read_schedule()
    return (check.read_at if check is not None else None) or inst.indexed_at


def _duration(inst: Instance, now: datetime) -> str:
    end = inst.completed_at if inst.is_terminal else now
    if end is None:
        return ""
    text = human_duration(max((end - inst.created_at).total_seconds(), 0.0))
    return text if inst.is_terminal else f"{text} so far"


def _last_failed(run: Run, run_url: str) -> dict[str, Any] | None:
    """The run's last failed activity or child workflow, most often what failed the workflow
    (its message names only a task number), with a link to its event."""
    rows = history.load_rows_last(run.pk, ("taskFailed", "childWorkflowInstanceFailed"))
    if not rows:
        return None
    ev = rows[0]
    return {
        "kind": "activity" if ev.event_type == "taskFailed" else "child workflow",
        "name": ev.name,
        "message": plaintext.visible(ev.info),
        "position": ev.position,
        "url": event_url(run_url, ev.position),
    }


def _run_duration(run: Run) -> str:
    """How long an earlier run lasted (empty when the indexer did not see it start or end)."""
    if run.started_at is None or run.completed_at is None:
        return ""
    return human_duration(max((run.completed_at - run.started_at).total_seconds(), 0.0))


def _run_status(inst: Instance, run: Run) -> str:
    """The run's status: the instance's for its current run, else the run's own (ended, how
    not seen, when the indexer missed its end)."""
    if run.execution_id == inst.current_execution_id or not inst.current_execution_id:
        return inst.status
    return run.status or history.ENDED_UNSEEN


def _timers_outlived(
    inst: Instance, run: Run, rows: list[HistoryEvent], to_the_end: bool
) -> dict[int, str]:
    """For a run that has ended, its timers among ``rows`` (``to_the_end``: every event from
    the first row on) that never fired, by position: how ``payloads.event_summary`` says so
    ("ended", or "unread" when its last turn is in no history). Empty while the run goes on
    (suspended and stalled runs too: they resume)."""
    status = _run_status(inst, run)
    if status not in history.TERMINAL:
        return {}
    unfired = history.unfired_timers(run.pk, rows, to_the_end)
    if not unfired:
        return {}
    how = "unread" if history.end_unread(run.pk, status) else "ended"
    return dict.fromkeys(unfired, how)


def _history_context(
    request: HttpRequest,
    inst: Instance,
    run: Run,
    position: int | None = None,
    start: Any = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """One page of a run's history (keyset on position), filtered by event type. ``now``: the
    page's time, which timers are said relative to."""
    now = now or timezone.now()
    asked, types, after, before = _history_asked(request, position)
    # A type no engine writes (a tampered or mistyped link) is named, and matches nothing.
    unknown_types = [t[:40] for t in asked if t not in EVENT_TYPES]
    qs = HistoryEvent.objects.filter(run=run)
    if unknown_types:
        qs = qs.none()
    elif types:
        qs = qs.filter(event_type__in=types)
    if before is not None:
        rows = list(qs.filter(position__lt=before).order_by("-position")[: HISTORY_PAGE + 1])
        has_prev = len(rows) > HISTORY_PAGE
        rows = list(reversed(rows[:HISTORY_PAGE]))
        has_next = True
    else:
        after = -1 if after is None else after
        rows = list(qs.filter(position__gt=after).order_by("position")[: HISTORY_PAGE + 1])
        has_next = len(rows) > HISTORY_PAGE
        rows = rows[:HISTORY_PAGE]
        has_prev = after >= 0 and bool(rows) and rows[0].position > 0
    if start is None:
        start = run.started_at
    run_url = instance_url(inst.engine.name, inst.instance_id, run.ordinal)
    answered = history.answered_positions(run.pk, rows)
    outlived = _timers_outlived(inst, run, rows, to_the_end=not has_next and not asked)
    events: list[dict[str, Any]] = []
    for ev in rows:
        shown = payloads.event_details(ev.details, payloads.EVENT_LIMIT)
        when = history.happened_at(ev.event_type, ev.details or {}, ev.timestamp)
        events.append(
            {
                "ev": ev,
                "when": when,
                "recorded": ev.timestamp if when != ev.timestamp else None,
                "elapsed": elapsed(start, when),
                # The time of day alone, unless the run began on another day (a wait of days).
                "dated": bool(when and start and when.date() != start.date()),
                "summary": payloads.event_summary(
                    ev.event_type, ev.details, now, outlived.get(ev.position, "")
                ),
                "other_app": payloads.other_app(ev.event_type, ev.details),
                "details": shown,
                "url": event_url(run_url, ev.position),
                # The event this one answers (the "→2" of a completion), wherever it is.
                "answered": answered.get(ev.position),
                "answered_url": (
                    event_url(run_url, answered[ev.position]) if ev.position in answered else None
                ),
                "selected": ev.position == position,
            }
        )
    type_query = [("type", t) for t in types]
    history_url = f"{run_url}history/"
    runs_state = _runs_state(request)

    def link(own: list[tuple[str, Any]]) -> PageLink:
        return PageLink(history_url, own, runs_state)

    selected_event = next((e for e in events if e["selected"]), None)
    if selected_event is not None:
        selected_event["full"] = payloads.event_details(selected_event["ev"].details, None)
    return {
        "events": events,
        "run_start": start,
        "event_types": EVENT_TYPES,
        "types": types,
        "unknown_types": unknown_types,
        "history_url": history_url,
        "download_url": f"{run_url}history.json",
        "next_history": (
            link([*type_query, ("after", rows[-1].position)]) if has_next and rows else None
        ),
        "prev_history": (
            link([*type_query, ("before", rows[0].position)]) if has_prev and rows else None
        ),
        "first_history": (
            link(type_query) if (after is not None and after >= 0) or before is not None else None
        ),
        # The table's state, which the runs table's links add to theirs when followed.
        "history_state": _history_state(request, position),
        "selected_event": selected_event,
        "position": position,
        "page_time": now,
    }


def _history_asked(
    request: HttpRequest, position: int | None
) -> tuple[list[str], list[str], int | None, int | None]:
    """What the request asks of the history: the types (as given, and those that are event
    types) and its page, after or before a position (an event's page: the page holding it)."""
    asked = list(dict.fromkeys(t for t in request.GET.getlist("type") if t))
    types = [t for t in asked if t in EVENT_TYPES]
    after, before = _int(request.GET.get("after")), _int(request.GET.get("before"))
    if position is not None:
        after = (position // HISTORY_PAGE) * HISTORY_PAGE - 1
        before = None
    return asked, types, after, before


def _history_state(request: HttpRequest, position: int | None) -> list[tuple[str, Any]]:
    """The history's type filter and page as the query of a URL: the runs table's links keep
    them, so a reload after paging the runs shows the history as it was (an event's page as
    the history page holding it)."""
    _, types, after, before = _history_asked(request, position)
    state: list[tuple[str, Any]] = [("type", t) for t in types]
    if before is not None:
        state.append(("before", before))
    elif after is not None and after >= 0:
        state.append(("after", after))
    return state


def _runs_state(request: HttpRequest) -> list[tuple[str, Any]]:
    """The runs table's page, when one was asked for, as the query of a URL: the history's
    links keep it, so a reload after paging the history shows the runs as they were."""
    asked = request.GET.get("runs_page", "").strip()
    return [("runs_page", asked)] if _page_number(asked) is not None else []


def event_url(run_url: str, position: int) -> str:
    """An event's permalink: the run's page with the history paged to the event."""
    return f"{run_url}events/{position}/#event-{position}"


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value not in (None, "") else None
    except ValueError:
        return None


@require_safe
@_id_as_sent
def run_history(request: HttpRequest, engine: str, instance_id: str, ordinal: int) -> HttpResponse:
    """The history table alone (htmx), or the whole page at that history page."""
    if not request.htmx:  # type: ignore[attr-defined]
        return instance_detail(request, engine, instance_id, ordinal)
    inst = _get_instance(engine, instance_id)
    run = _get_run(inst, ordinal)
    assert run is not None
    return render(request, "workflows_ui/_history.html", _history_context(request, inst, run))


@require_safe
@_id_as_sent
def history_download(
    request: HttpRequest, engine: str, instance_id: str, ordinal: int
) -> StreamingHttpResponse:
    """The run's whole history as a JSON document, streamed in chunks (runs can be huge)."""
    inst = _get_instance(engine, instance_id)
    run = _get_run(inst, ordinal)
    assert run is not None
    head = {
        "engine": inst.engine.name,
        "instance_id": inst.instance_id,
        "execution_id": run.execution_id,
        "run": run.ordinal,
        "name": run.name,
        "status": run.status,
    }
    start = json.dumps(head)[:-1] + ', "events": ['

    def chunks() -> Iterator[str]:
        yield start
        after = -1
        while batch := _history_batch(run, after):
            text, after = batch
            yield text
        yield "]}\n"

    async def achunks() -> AsyncIterator[str]:
        yield start
        after = -1
        while batch := await sync_to_async(_history_batch)(run, after):
            text, after = batch
            yield text
        yield "]}\n"

    filename = f"{inst.instance_id}-run{run.ordinal}-history.json"
    # What no file system takes, and control characters, out; other characters stay (RFC
    # 6266's filename* carries them, so an id in any script keeps its name).
    safe = "".join(c if c.isprintable() and c not in '<>:"/\\|?*' else "_" for c in filename)
    # Under daphne, content Django must iterate in sync code is read whole in one thread before
    # the first byte is sent: a run of 50,000 events took 1.4 s and 60 MB, a download cut off went
    # on to its end, and daphne stopped by SIGTERM waited for every download in flight (seconds
    # each, as long as the run is). Read a batch at a time, a download streams, and one cancelled
    # (the client gone, daphne stopping) ends after the batch being read.
    content = achunks() if isinstance(request, ASGIRequest) else chunks()
    response = StreamingHttpResponse(content, content_type="application/json")
    response["Content-Disposition"] = content_disposition_header(True, safe)
    return response


def _history_batch(run: Run, after: int) -> tuple[str, int] | None:
    """The run's events after position ``after`` (``DOWNLOAD_BATCH`` of them at most) as a piece
    of the download's list (after a comma unless it is the first, ``after`` -1), and the last
    one's position; None when there are no more."""
    events = HistoryEvent.objects.filter(run=run, position__gt=after).order_by("position")
    items = [
        {
            "position": ev.position,
            "eventId": ev.event_id,
            "type": ev.event_type,
            "name": ev.name,
            "timestamp": ev.timestamp.isoformat() if ev.timestamp else None,
            "relatedId": ev.related_id,
            "details": ev.details,
        }
        for ev in events[:DOWNLOAD_BATCH]
    ]
    if not items:
        return None
    text = ",\n".join(json.dumps(item, ensure_ascii=False) for item in items)
    return ("" if after < 0 else ",\n") + text, items[-1]["position"]


@require_safe
@_id_as_sent
def payload_view(request: HttpRequest, engine: str, instance_id: str, field: str) -> HttpResponse:
    """One payload of an instance in full (the detail page shows big ones cut): input, output,
    custom status, stack trace, failure message or stall description."""
    inst = _get_instance(engine, instance_id)
    item = payloads.instance_payload(inst, field)
    if item is None:
        raise Http404("no such payload")
    return render(
        request,
        "workflows_ui/payload.html",
        {
            "inst": inst,
            "item": item,
            "back_url": instance_url(engine, instance_id),
        },
    )
