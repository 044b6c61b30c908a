"""REST API views: read-only, served from the console's database (never from an engine)."""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote, urlencode

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import reverse
from django.views import defaults
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    inline_serializer,
)
from drf_spectacular.views import SpectacularAPIView
from rest_framework import serializers
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from console.logfilters import database_trouble, database_unavailable
from workflows_ui import freshness, listing
from workflows_ui.api.serializers import (
    EngineSerializer,
    HistoryEventSerializer,
    HistoryFilterSerializer,
    InstanceDetailSerializer,
    InstanceFilterSerializer,
    InstanceListSerializer,
    NoParameters,
    PageFilterSerializer,
    RunSerializer,
    instance_path,
)
from workflows_ui.converters import NOT_UTF8, ApiInstanceId, EngineName, sent_as_utf8
from workflows_ui.models import Engine, HistoryEvent, Instance, InstanceCheck, Run, StatusCount


def _validated(serializer_class: type[serializers.Serializer], request: Request) -> dict[str, Any]:
    data = {
        key: (values if len(values) > 1 else values[0])
        for key, values in request.query_params.lists()
    }
    serializer = serializer_class(data=data)
    serializer.is_valid(raise_exception=True)
    return dict(serializer.validated_data)


def _page_url(request: Request, path: str, **params: Any) -> str:
    """The whole URL of ``path`` (ids re-encoded: ``request.path`` is decoded) with the query
    and ``params``: scheme and host as the request came, as the root's links and DRF's own
    pagination write them."""
    query = request.query_params.copy()
    for key, value in params.items():
        query[key] = str(value)
    return request.build_absolute_uri(f"{path}?{urlencode(list(query.lists()), doseq=True)}")


def _cursor_url(request: Request, cursor: str | None) -> str | None:
    """The whole URL of the instance page at ``cursor`` (None: no such page)."""
    return _page_url(request, request.path, cursor=cursor) if cursor else None


def not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    """The 404 of a path no route matches (``handler404``): under /api/ the API's JSON, as its
    views answer (an engine name in capitals, a NUL in an id, a mistyped collection), elsewhere
    the console's page."""
    if request.path_info.startswith("/api/"):
        return JsonResponse({"detail": "Not found."}, status=404)
    return defaults.page_not_found(request, exception)


#: The 503's text, with what ``console.logfilters.database_trouble`` says.
DATABASE_DOWN = "The console's database {}: try again in a moment."


def server_error(request: HttpRequest) -> HttpResponse:
    """The 500 (``handler500``): under /api/ JSON, as the API's other errors, so that a client
    reading ``detail`` is not handed an HTML page. A request the database failed (down,
    restarting, full, taking no writes) is a 503 saying so, to try again: nothing is wrong with
    the request or the console (``console.logfilters.DatabaseDown`` keeps its log to a line a
    minute)."""
    api = request.path_info.startswith("/api/")
    # Django calls this while handling the exception: it is the one being handled.
    exc = sys.exc_info()[1]
    if database_unavailable(exc):
        detail = DATABASE_DOWN.format(database_trouble(exc))
        response: HttpResponse = (
            JsonResponse({"detail": detail}, status=503)
            if api
            else HttpResponse(detail, status=503, content_type="text/plain; charset=utf-8")
        )
        response["Retry-After"] = "5"
        return response
    if api:
        return JsonResponse({"detail": "Server error."}, status=500)
    return defaults.server_error(request)


def bad_request(request: HttpRequest, exception: Exception) -> HttpResponse:
    """Django's own 400 (``handler400``: a Host header not allowed, a request it can't read):
    under /api/ JSON, as the API's other errors."""
    if request.path_info.startswith("/api/"):
        return JsonResponse({"detail": "Bad request."}, status=400)
    return defaults.bad_request(request, exception)


def _get_instance(engine: str, instance_id: str) -> Instance:
    """The instance, or a 404 that says whether the engine or the instance is unknown."""
    inst = (
        Instance.objects.select_related("engine", "parent_engine", "schedule")
        .filter(engine__name=engine, instance_id=instance_id)
        .first()
    )
    if inst is not None:
        return inst
    if not Engine.objects.filter(name=engine).exists():
        raise NotFound(f"no engine {engine!r} in the console")
    raise NotFound(f"no instance {instance_id[:600]!r} indexed from engine {engine!r}")


def _instance_path(inst: Instance) -> str:
    return instance_path(inst.engine.name, inst.instance_id)


# Error bodies as DRF writes them, so generated clients can read them: {"detail": "..."}, and
# for a 400 the reasons per parameter ({"status": ["unknown status X; ..."]}), or Django's
# {"detail": "Bad request."} when it refuses the request before a view reads it.
_DETAIL = inline_serializer("ErrorDetail", {"detail": serializers.CharField()})
_NOT_LOGGED_IN = {
    401: OpenApiResponse(
        _DETAIL, description="no session and no valid token (or the user is made inactive)"
    ),
}
_NOT_FOUND = {404: OpenApiResponse(_DETAIL, description="unknown engine or instance")}
_INVALID = {
    400: OpenApiResponse(
        {
            "oneOf": [
                {
                    "type": "object",
                    "additionalProperties": {"type": "array", "items": {"type": "string"}},
                },
                # Django's own (bad_request), before any view reads the request.
                {
                    "type": "object",
                    "properties": {"detail": {"type": "string"}},
                    "required": ["detail"],
                },
            ]
        },
        description="an invalid parameter, with the reasons per parameter; or, for a request "
        "refused before its parameters are read (a Host not allowed, more than 1,000 "
        'parameters), {"detail": "Bad request."}',
    )
}
_DATABASE_DOWN = {
    503: OpenApiResponse(
        _DETAIL,
        description="the console's database does not answer (restarting, down) or takes no"
        " writes (a failover under way): try again after the seconds of the Retry-After header",
    )
}
_RETRY_AFTER = OpenApiParameter(
    "Retry-After",
    OpenApiTypes.INT,
    OpenApiParameter.HEADER,
    response=[503],
    description="seconds to wait before trying again",
)
_NOT_ACCEPTABLE = {
    406: OpenApiResponse(
        _DETAIL,
        description="the Accept header takes no JSON (application/json), the only type the API "
        "answers in",
    )
}
# Every answer may also be one of these: a parameter an endpoint does not take is refused, an
# Accept without JSON too, and any read may meet a database that is restarting. (No GET is
# answered 403: signed in is allowed to read. Other methods, 405 and 403: see the schema's
# description in the settings.)
_ALWAYS = {**_INVALID, **_NOT_LOGGED_IN, **_NOT_ACCEPTABLE, **_DATABASE_DOWN}


def _next_field() -> serializers.Field:
    """The ``next`` of a page, in the schema."""
    return serializers.URLField(
        allow_null=True,
        help_text="the whole URL of the next page (this page's query, where it starts next): "
        "null on the last page",
    )


def _previous_field() -> serializers.Field:
    """The ``previous`` of an instance page, in the schema."""
    return serializers.URLField(
        allow_null=True,
        help_text="the whole URL of the previous page (this page's query, ending where this "
        "page starts): null on the first page",
    )


def _start_field() -> serializers.Field:
    """The position of an instance page, in the schema."""
    return serializers.IntegerField(
        allow_null=True,
        min_value=0,
        help_text="how many instances come before this page's first one (0 on the first page, "
        "50 on the second of 50 each): counted along the pages followed from the first; null "
        "when not known (from a cursor handed out before pages had a position, or before "
        "cursors named their filters, or when going back finds instances that came into the "
        "list before this page since)",
    )


def _documented(
    responses: dict[int, Any], parameters: tuple[Any, ...] = (), **kwargs: Any
) -> Callable[[Any], Any]:
    """``extend_schema`` with the answers every endpoint may give besides its own (``_ALWAYS``,
    with the 503's Retry-After header)."""
    return extend_schema(
        parameters=[*parameters, _RETRY_AFTER], responses={**responses, **_ALWAYS}, **kwargs
    )


class SchemaView(SpectacularAPIView):
    """The OpenAPI schema (YAML, or JSON with ``?format=json``). Its errors (401, 405) are JSON
    ``{"detail": ...}`` as every other endpoint's: rendered as the schema's YAML they read
    ``detail: {string: ..., code: ...}``, which no client expects."""

    def handle_exception(self, exc: Exception) -> Response:
        response = super().handle_exception(exc)
        self.request.accepted_renderer = JSONRenderer()
        self.request.accepted_media_type = JSONRenderer.media_type
        return response


class ApiRoot(APIView):
    @_documented(
        responses={
            200: inline_serializer(
                "ApiRoot",
                {
                    name: serializers.URLField(help_text="whole URL")
                    for name in ("engines", "instances", "schema")
                },
            ),
        },
        summary="Where the API's collections are",
        operation_id="api_root",
    )
    def get(self, request: Request) -> Response:
        _validated(NoParameters, request)
        return Response(
            {
                name: request.build_absolute_uri(reverse(f"api-{name}"))
                for name in ("engines", "instances", "schema")
            }
        )


class EngineList(APIView):
    @_documented(
        responses={200: EngineSerializer(many=True)},
        summary="Engines and their health",
        operation_id="engines_list",
    )
    def get(self, request: Request) -> Response:
        _validated(NoParameters, request)
        engines = list(Engine.objects.all())
        totals = StatusCount.per_engine()
        unreadable = InstanceCheck.unreadable_by_engine()
        lag = InstanceCheck.refresh_lag([e.pk for e in engines if e.configured])
        for engine in engines:
            engine.refresh_lag = lag.get(engine.pk)  # type: ignore[attr-defined]
            engine.status_totals = totals.get(engine.pk, {})  # type: ignore[attr-defined]
            engine.unreadable = unreadable.get(engine.pk, 0)  # type: ignore[attr-defined]
        return Response(EngineSerializer(engines, many=True).data)


def _read_cursor(raw: str, f: listing.Filters) -> listing.Cursor:
    """The cursor, or a 400 saying it was made for another ordering or other filters."""
    try:
        return listing.decode_cursor(raw, f.sort, f.digest())
    except listing.CursorOfAnotherOrder:
        reason = f"a cursor of another ordering than {f.sort}"
    except listing.CursorOfOtherFilters:
        reason = "a cursor of other filters than these"
    except ValueError:
        reason = "not a cursor this API handed out"
    raise ValidationError({"cursor": [reason]})


class InstanceList(APIView):
    @_documented(
        parameters=(InstanceFilterSerializer,),
        responses={
            200: inline_serializer(
                "InstancePage",
                {
                    "results": InstanceListSerializer(many=True),
                    "next": _next_field(),
                    "previous": _previous_field(),
                    "start": _start_field(),
                },
            ),
        },
        summary="Instances, newest first (see ordering), keyset-paginated both ways",
        operation_id="instances_list",
    )
    def get(self, request: Request) -> Response:
        params = _validated(InstanceFilterSerializer, request)
        engines = {e.pk: e for e in Engine.objects.all()}
        raw_cursor = params.pop("cursor", None)
        # The list page's filters and keyset pages: the same index ranges serve both.
        params["sort"] = params["ordering"]
        f = listing.Filters.from_data(params, {e.name: pk for pk, e in engines.items()})
        if raw_cursor:
            f.cursor = _read_cursor(raw_cursor, f)
        page = listing.instance_page(f, limit=params["limit"], counts=listing.counts_for_plan(f))
        for inst in page.rows:
            inst.engine = engines[inst.engine_id]
        results = InstanceListSerializer(page.rows, many=True, context={"request": request}).data
        return Response(
            {
                "results": results,
                "next": _cursor_url(request, page.next_cursor),
                "previous": _cursor_url(request, page.previous_cursor),
                "start": page.start,
            }
        )


def _as_sent(request: HttpRequest) -> tuple[str, str, str] | None:
    """(engine, instance id, "" | "runs" | "history") as the client wrote the path, when the
    server passes it on undecoded (daphne's ``raw_path``); None when unknown.

    Django routes the decoded path, in which an id's own '%2F' is a '/' like the others: the url
    of instance 'hx/runs' would route to the runs of 'hx'. Encoded, the id is one segment."""
    scope = getattr(request, "scope", None)
    raw = scope.get("raw_path") if scope else None
    if not raw or max(raw) >= 0x80:
        return None
    sent = raw.decode("ascii").removeprefix(request.META.get("SCRIPT_NAME", ""))
    _, marker, rest = sent.partition("/api/instances/")
    parts = rest.split("/")
    if not marker or len(parts) < 3:
        return None
    route = {("",): "", ("runs", ""): "runs", ("history", ""): "history"}.get(tuple(parts[2:]))
    if route is None:
        return None
    return unquote(parts[0]), unquote(parts[1]), route


class _OneInstance(APIView):
    """A view of one instance, routed as the client wrote its id (``_as_sent``)."""

    route = ""

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)  # signed in first, as for any call
        if not sent_as_utf8(request):
            # The id made of it is not the one sent: no instance is looked up, nor asked for.
            raise NotFound(NOT_UTF8)

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
        sent = _as_sent(request)
        if sent is not None and sent != (
            kwargs.get("engine"),
            kwargs.get("instance_id"),
            self.route,
        ):
            engine, instance_id, route = sent
            # As the routes' converters take them (a NUL, or a name no engine can have: 404).
            if not re.fullmatch(EngineName.regex, engine):
                return not_found(request, Exception())
            try:
                instance_id = ApiInstanceId().to_python(instance_id)
            except ValueError:
                return not_found(request, Exception())
            return _ONE_INSTANCE[route](request, engine=engine, instance_id=instance_id)
        return super().dispatch(request, *args, **kwargs)


class InstanceDetail(_OneInstance):
    @_documented(
        responses={200: InstanceDetailSerializer, **_NOT_FOUND},
        summary="One instance (ids url-encoded)",
        description=(
            "What the console has of the instance. Asking for it also asks the indexer to read "
            "it again at its next pass (about a second later) when its last read (`read_at`) "
            "is more than 5 seconds old and no read is due sooner, and to look for an id the "
            "console has not indexed (the 404 says so): ask again for the new read."
        ),
        operation_id="instance_retrieve",
    )
    def get(self, request: Request, engine: str, instance_id: str) -> Response:
        _validated(NoParameters, request)
        try:
            inst = _get_instance(engine, instance_id)
        except NotFound as exc:
            if freshness.look_for(engine, instance_id):
                raise NotFound(
                    f"{exc.detail}: the indexer now asks the engine for it (an instance started "
                    "a moment ago is here within seconds)"
                ) from None
            raise
        freshness.read_again(inst)
        return Response(InstanceDetailSerializer(inst, context={"request": request}).data)


class RunList(_OneInstance):
    route = "runs"

    @_documented(
        parameters=(PageFilterSerializer,),
        responses={
            200: inline_serializer(
                "RunPage",
                {
                    "results": RunSerializer(many=True),
                    "next": _next_field(),
                },
            ),
            **_NOT_FOUND,
        },
        summary="The runs of an instance the indexer saw, oldest first",
        operation_id="instance_runs_list",
    )
    def get(self, request: Request, engine: str, instance_id: str) -> Response:
        inst = _get_instance(engine, instance_id)
        params = _validated(PageFilterSerializer, request)
        limit = params["limit"]
        rows = list(
            Run.objects.filter(instance=inst, ordinal__gt=params["after"]).order_by("ordinal")[
                : limit + 1
            ]
        )
        more = len(rows) > limit
        rows = rows[:limit]
        context = {"current_execution_id": inst.current_execution_id}
        return Response(
            {
                "results": RunSerializer(rows, many=True, context=context).data,
                "next": (
                    _page_url(request, _instance_path(inst) + "runs/", after=rows[-1].ordinal)
                    if more
                    else None
                ),
            }
        )


class HistoryList(_OneInstance):
    route = "history"

    @_documented(
        parameters=(HistoryFilterSerializer,),
        responses={
            200: inline_serializer(
                "HistoryPage",
                {
                    "run": serializers.CharField(allow_null=True),
                    "results": HistoryEventSerializer(many=True),
                    "next": _next_field(),
                },
            ),
            **_NOT_FOUND,
        },
        summary="A run's history events in order, paged by position",
        operation_id="instance_history_list",
    )
    def get(self, request: Request, engine: str, instance_id: str) -> Response:
        inst = _get_instance(engine, instance_id)
        params = _validated(HistoryFilterSerializer, request)
        execution_id = params.get("run") or inst.current_execution_id
        run = Run.objects.filter(instance=inst, execution_id=execution_id).first()
        if run is None:
            if params.get("run"):
                raise ValidationError({"run": [f"no run {execution_id!r} of this instance"]})
            return Response({"run": None, "results": [], "next": None})
        qs = HistoryEvent.objects.filter(run=run, position__gt=params["after"])
        if params.get("type"):
            qs = qs.filter(event_type__in=params["type"])
        limit = params["limit"]
        rows = list(qs.order_by("position")[: limit + 1])
        more = len(rows) > limit
        rows = rows[:limit]
        return Response(
            {
                "run": run.execution_id,
                "results": HistoryEventSerializer(rows, many=True).data,
                # The next page names the run: should the instance continue as new (or be
                # re-run) meanwhile, it still comes from this run, not from the new one.
                "next": (
                    _page_url(
                        request,
                        _instance_path(inst) + "history/",
                        run=run.execution_id,
                        after=rows[-1].position,
                    )
                    if more
                    else None
                ),
            }
        )


_ONE_INSTANCE = {
    "": InstanceDetail.as_view(),
    "runs": RunList.as_view(),
    "history": HistoryList.as_view(),
}
