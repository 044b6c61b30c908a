from django.contrib import admin

from workflows_ui.models import ChangeLog, Engine, HistoryEvent, Instance, Run, StatusCount


@admin.register(Engine)
class EngineAdmin(admin.ModelAdmin):
    list_display = ["name", "address", "reachable", "last_pass_at", "supports_list", "last_error"]
    readonly_fields = [f.name for f in Engine._meta.fields]


@admin.register(Instance)
class InstanceAdmin(admin.ModelAdmin):
    list_display = [
        "instance_id",
        "engine",
        "name",
        "status",
        "created_at",
        "last_updated_at",
        "purged",
    ]
    list_filter = ["engine", "status", "purged"]
    # Range scan on the unique (engine, instance_id) index, not a LIKE '%...%' over millions.
    search_fields = ["=instance_id"]
    show_full_result_count = False
    readonly_fields = [f.name for f in Instance._meta.fields]


@admin.register(Run)
class RunAdmin(admin.ModelAdmin):
    list_display = ["instance", "ordinal", "execution_id", "status", "event_count"]
    raw_id_fields = ["instance"]
    show_full_result_count = False


@admin.register(HistoryEvent)
class HistoryEventAdmin(admin.ModelAdmin):
    list_display = ["run", "position", "event_id", "event_type", "name", "timestamp"]
    raw_id_fields = ["run"]
    show_full_result_count = False


@admin.register(StatusCount)
class StatusCountAdmin(admin.ModelAdmin):
    list_display = ["engine", "name", "status", "count"]
    list_filter = ["engine", "status"]


@admin.register(ChangeLog)
class ChangeLogAdmin(admin.ModelAdmin):
    list_display = ["id", "created_at", "kind", "engine", "instance", "status", "old_status"]
    raw_id_fields = ["instance", "run"]
    show_full_result_count = False
