from django.apps import AppConfig
from django.db.models.signals import post_migrate


class WorkflowsUiConfig(AppConfig):
    name = "workflows_ui"
    verbose_name = "Workflows"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from workflows_ui import search

        # SQLite remakes a table when some migrations alter it, dropping its triggers: put the
        # search triggers back (and rebuild the index if they were missing) after every migrate.
        post_migrate.connect(search.on_post_migrate, sender=self)
