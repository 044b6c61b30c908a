"""The Django admin shows the indexed data read-only: the indexer owns it, and a row changed by
hand would disagree with the engine, the counts and the change log until the next read (or for
good, for a count). Users and tokens are the admin's to manage."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from django.contrib import admin
from django.db import models
from django.http import HttpRequest

from workflows_ui.models import ChangeLog, Engine, HistoryEvent, Instance, Run, StatusCount
from workflows_ui.plaintext import visible, visible_name


def written_out(field: str, shown: Callable[[str], str] = visible_name) -> Any:
    """A column or a detail page's field showing a text from workflow code or an engine as the
    pages do, the characters that would hide or reorder it written out: ``visible_name`` for
    an id or a name, ``visible`` for a payload or a message (``plaintext``)."""

    @admin.display(description=field.replace("_", " "), ordering=field)
    def column(obj: Any) -> str:
        return shown(getattr(obj, field))

    column.__name__ = field  # the detail page finds the model field's help text by it
    return column


def visible_json(value: Any) -> str:
    """A JSON value as the admin writes one out (not as ASCII), then ``visible``."""
    return visible(json.dumps(value, ensure_ascii=False))


def shown_field(field: models.Field[Any, Any]) -> Any:
    """How a detail page shows this field: a text as ``written_out``, the rest (numbers, times,
    links, choices) as the admin does."""
    if field.choices:
        return field.name
    if isinstance(field, models.JSONField):
        return written_out(field.name, visible_json)
    if isinstance(field, models.TextField):
        return written_out(field.name, visible)
    if isinstance(field, models.CharField):
        return written_out(field.name, visible_name)
    return field.name


class IndexedAdmin(admin.ModelAdmin):
    """Look, never add, change or delete. The detail page shows each field read-only, its
    text written out (``shown_field``): the admin would show it raw."""

    def __init__(self, model: type[models.Model], admin_site: admin.AdminSite) -> None:
        super().__init__(model, admin_site)
        # The same objects at each call: the admin matches the fields with the read-only ones.
        self.shown_fields = [
            shown_field(f) for f in model._meta.fields if f.editable and not f.auto_created
        ]

    def get_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return self.shown_fields

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return self.shown_fields

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Engine)
class EngineAdmin(IndexedAdmin):
    list_display = [
        "name",
        "address",
        written_out("app_id"),
        "reachable",
        "last_pass_at",
        "supports_list",
        written_out("last_error", visible),
    ]


@admin.register(Instance)
class InstanceAdmin(IndexedAdmin):
    list_display = [
        written_out("instance_id"),
        "engine",
        written_out("name"),
        "status",
        "created_at",
        "last_updated_at",
        "purged",
    ]
    list_filter = ["engine", "status", "purged"]
    # Range scan on the unique (engine, instance_id) index, not a LIKE '%...%' over millions.
    search_fields = ["=instance_id"]
    show_full_result_count = False


@admin.register(Run)
class RunAdmin(IndexedAdmin):
    list_display = ["instance", "ordinal", written_out("execution_id"), "status", "event_count"]
    raw_id_fields = ["instance"]
    show_full_result_count = False


@admin.register(HistoryEvent)
class HistoryEventAdmin(IndexedAdmin):
    list_display = [
        "run",
        "position",
        "event_id",
        "event_type",
        written_out("name"),
        "timestamp",
    ]
    raw_id_fields = ["run"]
    show_full_result_count = False


@admin.register(StatusCount)
class StatusCountAdmin(IndexedAdmin):
    list_display = ["engine", written_out("name"), "status", "count"]
    list_filter = ["engine", "status"]


@admin.register(ChangeLog)
class ChangeLogAdmin(IndexedAdmin):
    list_display = ["id", "created_at", "kind", "engine", "instance", "status", "old_status"]
    raw_id_fields = ["instance", "run"]
    show_full_result_count = False
