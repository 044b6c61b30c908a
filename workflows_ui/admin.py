"""The Django admin shows the indexed data read-only: the indexer owns it, and a row changed by
hand would disagree with the engine, the counts and the change log until the next read (or for
good, for a count). Users and tokens are the admin's to manage."""

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from workflows_ui.models import ChangeLog, Engine, HistoryEvent, Instance, Run, StatusCount
from workflows_ui.plaintext import visible_name


class IndexedAdmin(admin.ModelAdmin):
    """Look, never add, change or delete."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


def written_out(field: str) -> Any:
    """A column showing an id or a name from workflow code or an engine as the pages do, the
    characters that would hide or reorder it written out (``plaintext.visible_name``)."""

    @admin.display(description=field.replace("_", " "), ordering=field)
    def column(obj: Any) -> str:
        return visible_name(getattr(obj, field))

    column.__name__ = field
    return column


@admin.register(Engine)
class EngineAdmin(IndexedAdmin):
    list_display = [
        "name",
        "address",
        written_out("app_id"),
        "reachable",
        "last_pass_at",
        "supports_list",
        "last_error",
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
