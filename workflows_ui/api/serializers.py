"""Serializers of the REST API: query-string filters (validated, 400 with the reason) and the
read-only representations of engines, instances, runs and history events."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.settings import api_settings

from engine_bridge.types import EVENT_TYPES
from workflows_ui import listing, search
from workflows_ui.models import Engine, HistoryEvent, Instance, Run, Status


def instance_path(engine_name: str, instance_id: str) -> str:
    """The API path of an instance; ids are url-encoded (child ids contain ':'). An id that is
    a whole '.' or '..' is sent as '%2E' / '%2E%2E': clients resolve a plain dot segment before
    sending ('/local/../' is requested as '/api/instances/'), the server decodes it back. Under
    the console's path prefix, so is the path."""
    encoded = quote(instance_id, safe="")
    if encoded in (".", ".."):
        encoded = encoded.replace(".", "%2E")
    return f"{reverse('api-instances')}{quote(engine_name, safe='')}/{encoded}/"


def whole_url(serializer: serializers.BaseSerializer[Any], path: str) -> str:
    """``path`` as a whole URL, with the scheme and host the request came with (its
    ``request`` in the context), as ``GET /api/`` and DRF's own links answer: a client follows
    it as it is, without joining it to the host itself."""
    return str(serializer.context["request"].build_absolute_uri(path))


def _blank(value: Any) -> bool:
    return isinstance(value, str) and not value.strip()


class QuerySerializer(serializers.Serializer):
    """Query-string parameters: each a string, or a list of them when given more than once. A
    value given empty or blank (HTML forms, and clients that send every parameter, do) is as if
    not given: no filter, or the default. A parameter that takes one value, given more than
    once, is refused, and so is a parameter this endpoint doesn't take: a misspelt filter
    (``stauts=FAILED``) would list everything, as if it matched."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Blank values never reach the fields (see to_internal_value); saying so lets the schema
        # allow them, or clients that validate requests refuse to send what works.
        for field in self.fields.values():
            if isinstance(field, serializers.CharField | serializers.ChoiceField):
                field.allow_blank = True

    def to_internal_value(self, data: Any) -> Any:
        given: dict[str, Any] = {}
        repeated: dict[str, list[str]] = {}
        unknown: dict[str, list[str]] = {}
        for key, value in data.items():
            field = self.fields.get(key)
            if field is None and key != api_settings.URL_FORMAT_OVERRIDE:
                expected = (
                    f"expected some of {', '.join(self.fields)}"
                    if self.fields
                    else ("this endpoint takes none")
                )
                unknown[key] = [f"unknown parameter; {expected}"]
                continue
            if field is None or isinstance(field, serializers.ListField):
                given[key] = value
                continue
            values = [v for v in (value if isinstance(value, list) else [value]) if not _blank(v)]
            if len(values) > 1:
                repeated[key] = ["given more than once: give it once"]
            elif values:
                given[key] = values[0]
        if repeated or unknown:
            raise serializers.ValidationError({**unknown, **repeated})
        return super().to_internal_value(given)


class CommaListField(serializers.ListField):
    """A list given as repeated parameters or comma-separated (``status=RUNNING,FAILED``)."""

    @staticmethod
    def split(data: Any) -> list[str]:
        if isinstance(data, str):
            data = [data]
        return [part.strip() for value in data for part in str(value).split(",") if part.strip()]

    def to_internal_value(self, data: Any) -> list[Any]:
        try:
            return super().to_internal_value(self.split(data))
        except serializers.ValidationError as exc:
            # ListField keys its items' reasons by index ({"engine": {"0": [...]}}): the API's
            # 400 is a list of reasons per parameter, as its schema says and clients read it.
            if isinstance(exc.detail, dict):
                reasons = [r for item in exc.detail.values() for r in item]
                raise serializers.ValidationError(reasons) from None
            raise


class QueryDateTimeField(serializers.DateTimeField):
    """A time in the query string: ISO 8601, with an offset or ``Z``; without one (or a date
    alone, its midnight) it is UTC. A ``+`` left as it is in a query string is read as a space
    (``...T10:00+01:00`` arrives as ``...T10:00 01:00``): the reason says so, as the generic one
    would ask for the ``+HH:MM`` that was sent."""

    _PLUS_READ_AS_SPACE = re.compile(r"\d{2}:\d{2}(:\d{2}([.,]\d+)?)? \d{2}(:?\d{2})?$")

    def to_internal_value(self, value: Any) -> Any:
        if isinstance(value, str) and self._PLUS_READ_AS_SPACE.search(value):
            raise serializers.ValidationError(
                "a '+' in a query string is read as a space: send the offset as %2B (%2B01:00)"
            )
        return super().to_internal_value(value)


class ChoiceListField(CommaListField):
    """Some of ``choices``, in any case (each taken as the choice it names); an unknown one is
    refused with the valid ones. Each is given once (the first time)."""

    def __init__(self, *, choices: Sequence[str], noun: str, **kwargs: Any) -> None:
        self.noun = noun
        self.canonical = {choice.lower(): choice for choice in choices}
        super().__init__(child=serializers.ChoiceField(choices=list(choices)), **kwargs)

    def to_internal_value(self, data: Any) -> list[Any]:
        items = self.split(data)
        bad = [item[:40] for item in items if item.lower() not in self.canonical]
        if bad:
            raise serializers.ValidationError(
                f"unknown {self.noun} {', '.join(bad)}; "
                f"expected some of {', '.join(self.canonical.values())}"
            )
        canonical = list(dict.fromkeys(self.canonical[item.lower()] for item in items))
        return serializers.ListField.to_internal_value(self, canonical)


class NoParameters(QuerySerializer):
    """For the endpoints that take no parameter: one given is refused, as by the others (a
    filter given to the wrong endpoint would seem to have been applied)."""


class InstanceFilterSerializer(QuerySerializer):
    engine = CommaListField(
        child=serializers.CharField(max_length=40),
        required=False,
        help_text="engine names, repeated or comma-separated",
    )
    status = ChoiceListField(
        choices=Status.values,
        noun="status",
        required=False,
        help_text="statuses, in any case; repeated or comma-separated",
    )
    name = serializers.CharField(max_length=255, required=False)
    # Not trimmed: ids may start or end with a space, and a prefix trimmed matches other ids.
    id_prefix = serializers.CharField(max_length=512, required=False, trim_whitespace=False)
    parent = serializers.CharField(
        max_length=600,
        required=False,
        trim_whitespace=False,
        help_text="engine/instance id: the children of that instance (the id as it is, "
        "url-encoded in the query like any value)",
    )
    created_after = QueryDateTimeField(
        required=False,
        help_text="inclusive; ISO 8601, without offset (or a date alone) in UTC; a '+' of an "
        "offset url-encoded (%2B)",
    )
    created_before = QueryDateTimeField(
        required=False, help_text="exclusive; written as created_after"
    )
    q = serializers.CharField(
        max_length=500, required=False, help_text="words in input, output, custom status, failure"
    )
    purged = serializers.ChoiceField(
        choices=["exclude", "include", "only"], default="exclude", required=False
    )
    unreadable = serializers.BooleanField(
        default=False,
        required=False,
        help_text="true: only the instances the indexer can't read now (see read_problem)",
    )
    ordering = serializers.ChoiceField(
        choices=["-created", "created", "-updated", "updated"],
        default="-created",
        help_text="by creation or last update time; '-': newest first. By update time, an "
        "instance that changes while the pages are read moves: it may be skipped or repeated",
    )
    cursor = serializers.CharField(
        max_length=200,
        required=False,
        help_text="where the page starts (or, for a previous page, ends), as a page's next "
        "or previous link gives it; valid only with the ordering and filters it was handed out "
        "for",
    )
    limit = serializers.IntegerField(min_value=1, max_value=200, default=50)

    def validate_q(self, value: str) -> str:
        problem = search.check_words(value)
        if problem:
            raise serializers.ValidationError(problem)
        return value

    def validate_parent(self, value: str) -> tuple[int, str] | None:
        if not value:
            return None
        engine = value.partition("/")[0]
        known = dict(Engine.objects.filter(name=engine).values_list("name", "pk"))
        try:
            return listing.parse_parent(value, known)
        except ValueError as exc:
            raise serializers.ValidationError(str(exc)) from None

    def validate_engine(self, value: list[str]) -> list[str]:
        known = set(Engine.objects.filter(name__in=value).values_list("name", flat=True))
        bad = [v for v in value if v not in known]
        if bad:
            raise serializers.ValidationError(f"unknown engine {', '.join(bad)}")
        return value

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        after, before = attrs.get("created_after"), attrs.get("created_before")
        if after and before and after >= before:
            raise serializers.ValidationError(
                {"created_before": "must be later than created_after"}
            )
        return attrs


class HistoryFilterSerializer(QuerySerializer):
    run = serializers.CharField(
        max_length=100, required=False, help_text="executionId; default: the current run"
    )
    type = ChoiceListField(
        choices=EVENT_TYPES,
        noun="event type",
        required=False,
        help_text="event types (protocol names, such as taskCompleted; in any case); repeated or "
        "comma-separated",
    )
    after = serializers.IntegerField(min_value=-1, default=-1, help_text="position cursor")
    limit = serializers.IntegerField(min_value=1, max_value=1000, default=200)


class PageFilterSerializer(QuerySerializer):
    after = serializers.IntegerField(min_value=0, default=0, help_text="ordinal cursor")
    limit = serializers.IntegerField(min_value=1, max_value=500, default=100)


class EngineSerializer(serializers.ModelSerializer):
    health = serializers.ChoiceField(
        choices=["ok", "failing", "unreachable", "too-old", "unknown", "not-indexed", "stale"],
        read_only=True,
        help_text="ok, failing (answers, but its last pass failed: see last_error), "
        "unreachable, too-old (needs Dapr 1.17), unknown (not contacted yet), not-indexed "
        "(taken out of CONSOLE_ENGINES, no runindexer has it: what was indexed stays), stale "
        "(configured, but no runindexer has been seen at work on it for "
        "CONSOLE_INDEXER_STALE_AFTER, a minute by default, or, indexed "
        "by runindexer --once, not passed over for 5 minutes: is it running? What was indexed "
        "stays; failing_since says when a runindexer was last seen)",
    )
    failing_since = serializers.DateTimeField(
        source="down_since",
        read_only=True,
        allow_null=True,
        help_text="when its current failure began, for an engine failing or unreachable: the "
        "first of the passes that failed since one succeeded; for a stale one, when a "
        "runindexer was last seen at work on it (null for the other healths)",
    )
    too_old = serializers.BooleanField()
    counts = serializers.SerializerMethodField()
    unreadable_instances = serializers.SerializerMethodField(
        help_text="instances the indexer can't read from this engine now (see each instance's "
        "read_problem)"
    )
    refresh_lag_seconds = serializers.SerializerMethodField(
        help_text="how long the oldest re-read that is due has waited (0: none is overdue; "
        "null: nothing indexed, or the engine is no longer configured): it grows when the "
        "indexer can't keep up, or is not running"
    )

    class Meta:
        model = Engine
        fields = [
            "name",
            "address",
            "tls",
            "configured",
            "app_id",
            "health",
            "reachable",
            "last_contact_at",
            "last_pass_at",
            "last_error",
            "last_error_at",
            "failing_since",
            "supports_list",
            "supports_history",
            "supports_rerun",
            "too_old",
            "counts",
            "unreadable_instances",
            "refresh_lag_seconds",
            "sweep_started_at",
            "sweep_listed",
            "last_sweep_at",
            "last_sweep_listed",
        ]
        # Read-only: the schema then lists every field as required, as every answer has them.
        read_only_fields = fields
        extra_kwargs = {
            "sweep_started_at": {
                "help_text": "when the listing of all the engine's ids in progress began (null: "
                "none is)"
            },
            "sweep_listed": {"help_text": "ids that listing has given so far"},
            "last_sweep_at": {"help_text": "when the last listing that went to its end ended"},
            "last_sweep_listed": {"help_text": "ids that listing gave"},
        }

    def get_counts(self, obj: Engine) -> dict[str, int]:
        """Live instances per status (from the counts table)."""
        return dict(getattr(obj, "status_totals", {}))

    def get_unreadable_instances(self, obj: Engine) -> int:
        return int(getattr(obj, "unreadable", 0))

    @extend_schema_field(serializers.FloatField(allow_null=True))
    def get_refresh_lag_seconds(self, obj: Engine) -> float | None:
        lag = getattr(obj, "refresh_lag", None)
        return None if lag is None else round(lag, 3)


class InstanceListSerializer(serializers.ModelSerializer):
    engine = serializers.CharField(source="engine.name")
    duration_seconds = serializers.FloatField(allow_null=True)
    custom_status = serializers.CharField(
        source="custom_status_head",
        read_only=True,
        help_text=f"its first {listing.LIST_CUSTOM_STATUS:,} characters in a list (shorter than "
        "custom_status_size when there is more); the instance's url answers it whole",
    )
    url = serializers.SerializerMethodField(help_text="the instance's whole URL in this API")

    class Meta:
        model = Instance
        fields = [
            "engine",
            "instance_id",
            "name",
            "version",
            "status",
            "created_at",
            "last_updated_at",
            "completed_at",
            "duration_seconds",
            "custom_status",
            "custom_status_size",
            "purged",
            "url",
        ]
        # Read-only: the schema then lists every field as required, as every answer has them
        # (else generated clients type name, completed_at, ... as possibly missing).
        read_only_fields = fields
        extra_kwargs = {
            "custom_status_size": {
                "help_text": "characters of the whole custom status (more than the console "
                "keeps when it is over CONSOLE_PAYLOAD_LIMIT)"
            }
        }

    @extend_schema_field(OpenApiTypes.URI)
    def get_url(self, obj: Instance) -> str:
        return whole_url(self, instance_path(obj.engine.name, obj.instance_id))


class ParentSerializer(serializers.Serializer):
    engine = serializers.CharField(
        allow_null=True, help_text="null when no configured engine has the parent's app id"
    )
    app_id = serializers.CharField()
    instance_id = serializers.CharField()
    execution_id = serializers.CharField()
    url = serializers.URLField(
        allow_null=True, help_text="the parent's whole URL in this API (null: engine unknown)"
    )


class FailureSerializer(serializers.Serializer):
    type = serializers.CharField(help_text="the error's type, as the SDK reported it")
    message = serializers.CharField()
    stack_trace = serializers.CharField()


class ReadProblemSerializer(serializers.Serializer):
    error = serializers.CharField(help_text="the engine call that failed and why")
    since = serializers.DateTimeField(help_text="when its reads started failing")
    next_try_at = serializers.DateTimeField(help_text="when the indexer tries again")
    history_only = serializers.BooleanField(
        help_text="true when only the history can't be read: the instance's fields are as of "
        "its last read, its runs and history as of their last successful read; false: the "
        "state could not be read whole either (its payloads may be older or missing)"
    )


class InstanceDetailSerializer(InstanceListSerializer):
    custom_status = serializers.CharField(
        read_only=True,
        help_text="whole, as the console stored it: its first CONSOLE_PAYLOAD_LIMIT characters "
        "when custom_status_size is more",
    )
    failure = serializers.SerializerMethodField()
    read_problem = serializers.SerializerMethodField(
        help_text="null when the indexer reads this instance; else why it can't (the fields "
        "above are as of its last successful read, or of its last read when history_only)"
    )
    read_at = serializers.SerializerMethodField(
        help_text="when the indexer last asked the engine for this instance; null for a "
        "tombstone (no longer read) or before the console recorded it"
    )
    parent = serializers.SerializerMethodField()
    runs_url = serializers.SerializerMethodField(help_text="whole URL of its runs")
    history_url = serializers.SerializerMethodField(
        help_text="whole URL of its current run's history"
    )
    children_url = serializers.SerializerMethodField(
        help_text="whole URL of the list of its child workflows (purged ones included)"
    )

    class Meta(InstanceListSerializer.Meta):
        fields = [
            *InstanceListSerializer.Meta.fields,
            "started_at",
            "scheduled_start_at",
            "input",
            "input_size",
            "output",
            "output_size",
            "failure",
            "read_problem",
            "parent",
            "trace_id",
            "stall_reason",
            "stall_description",
            "current_execution_id",
            "purged_at",
            "first_seen_at",
            "indexed_at",
            "read_at",
            "runs_url",
            "history_url",
            "children_url",
        ]
        read_only_fields = fields
        extra_kwargs = {
            f"{name}_size": {
                "help_text": f"characters of the whole {name.replace('_', ' ')}: more than the "
                f"length of {name} when the console stored only the start of it "
                "(CONSOLE_PAYLOAD_LIMIT)"
            }
            for name in ("input", "output", "custom_status")
        }

    @extend_schema_field(FailureSerializer(allow_null=True))
    def get_failure(self, obj: Instance) -> dict[str, str] | None:
        if not (obj.failure_type or obj.failure_message):
            return None
        return {
            "type": obj.failure_type,
            "message": obj.failure_message,
            "stack_trace": obj.failure_stack_trace,
        }

    @extend_schema_field(ReadProblemSerializer(allow_null=True))
    def get_read_problem(self, obj: Instance) -> dict[str, Any] | None:
        check = obj.read_problem()
        if check is None:
            return None
        return ReadProblemSerializer(
            {
                "error": check.read_error,
                "since": check.read_failing_since,
                "next_try_at": check.due_at,
                "history_only": check.history_only(),
            }
        ).data

    @extend_schema_field(serializers.DateTimeField(allow_null=True))
    def get_read_at(self, obj: Instance) -> str | None:
        check = obj.read_schedule()
        if check is None or check.read_at is None:
            return None
        return serializers.DateTimeField().to_representation(check.read_at)

    @extend_schema_field(ParentSerializer(allow_null=True))
    def get_parent(self, obj: Instance) -> dict[str, Any] | None:
        if not obj.parent_instance_id:
            return None
        engine = obj.parent_engine
        return {
            "engine": engine.name if engine else None,
            "app_id": obj.parent_app_id,
            "instance_id": obj.parent_instance_id,
            "execution_id": obj.parent_execution_id,
            "url": (
                whole_url(self, instance_path(engine.name, obj.parent_instance_id))
                if engine
                else None
            ),
        }

    @extend_schema_field(OpenApiTypes.URI)
    def get_runs_url(self, obj: Instance) -> str:
        return whole_url(self, instance_path(obj.engine.name, obj.instance_id) + "runs/")

    @extend_schema_field(OpenApiTypes.URI)
    def get_history_url(self, obj: Instance) -> str:
        return whole_url(self, instance_path(obj.engine.name, obj.instance_id) + "history/")

    @extend_schema_field(OpenApiTypes.URI)
    def get_children_url(self, obj: Instance) -> str:
        parent = quote(f"{obj.engine.name}/{obj.instance_id}", safe="")
        return whole_url(self, f"{reverse('api-instances')}?parent={parent}&purged=include")


class RunSerializer(serializers.ModelSerializer):
    # Not the model field's choices alone: the indexer stores "" for a run that ended unseen, and
    # the schema must allow it (a StatusEnum without "" fails every client that validates).
    status = serializers.ChoiceField(
        choices=Status.choices,
        allow_blank=True,
        help_text="empty for a run that ended unseen: the id was started again (as another "
        "workflow, or as the same one) before the indexer read this run's end",
    )
    current = serializers.SerializerMethodField()

    class Meta:
        model = Run
        fields = [
            "ordinal",
            "execution_id",
            "name",
            "status",
            "started_at",
            "completed_at",
            "input",
            "input_size",
            "trace_id",
            "event_count",
            "current",
        ]
        read_only_fields = fields
        extra_kwargs = {
            "input_size": {
                "help_text": "characters of the whole input: more than the length of input when "
                "the console stored only the start of it (CONSOLE_PAYLOAD_LIMIT)"
            }
        }

    def get_current(self, obj: Run) -> bool:
        return obj.execution_id == self.context.get("current_execution_id")


class HistoryEventSerializer(serializers.ModelSerializer):
    class Meta:
        model = HistoryEvent
        fields = [
            "position",
            "event_id",
            "event_type",
            "name",
            "timestamp",
            "related_id",
            "details",
        ]
        read_only_fields = fields
        extra_kwargs = {
            "details": {
                "help_text": "the event as the engine sent it (protobuf's JSON mapping: camelCase "
                "names). A string longer than CONSOLE_PAYLOAD_LIMIT is cut to it, and the paths "
                'of the cut strings are listed in _truncated (such as ["input"])'
            }
        }
