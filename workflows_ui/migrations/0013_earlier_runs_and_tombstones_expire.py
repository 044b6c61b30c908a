"""Earlier runs and tombstones expire after ``CONSOLE_RETENTION_DAYS``
(``engine_bridge.retention``): a run records when a later one superseded it. The earlier runs
of a database being upgraded count from the upgrade, so none is forgotten at once."""

from django.db import migrations, models
from django.db.models import Exists, OuterRef
from django.utils import timezone


def supersede_earlier_runs(apps, schema_editor):
    Instance = apps.get_model("workflows_ui", "Instance")  # noqa: N806
    Run = apps.get_model("workflows_ui", "Run")  # noqa: N806
    latest = Instance.objects.filter(
        pk=OuterRef("instance_id"), current_execution_id=OuterRef("execution_id")
    )
    Run.objects.filter(~Exists(latest)).update(superseded_at=timezone.now())


class Migration(migrations.Migration):
    dependencies = [
        ("workflows_ui", "0012_engine_indexer_token"),
    ]

    operations = [
        migrations.AddField(
            model_name="run",
            name="superseded_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.RunPython(supersede_earlier_runs, migrations.RunPython.noop, elidable=True),
        migrations.AddIndex(
            model_name="instance",
            index=models.Index(
                condition=models.Q(("purged", True)),
                fields=["engine", "purged_at"],
                name="wf_inst_purged",
            ),
        ),
        migrations.AddIndex(
            model_name="run",
            index=models.Index(
                condition=models.Q(("superseded_at__isnull", False)),
                fields=["superseded_at"],
                name="wf_run_superseded",
            ),
        ),
    ]
