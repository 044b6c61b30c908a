"""Drop the index Django gives each foreign key where a unique constraint or an index already
starts with that column: one b-tree fewer to update for every row the indexer writes (a history
event paid for four).

Only the indexes go: ``AlterField`` would rebuild these tables on SQLite (slow on a big
database, and dropping the instance table would drop its full-text triggers).
"""

import django.db.models.deletion
from django.db import migrations, models

CASCADE = django.db.models.deletion.CASCADE
PROTECT = django.db.models.deletion.PROTECT
#: (model, foreign key, its column, on_delete, related_name, target) whose own index goes.
COVERED = [
    ("changelog", "instance", "instance_id", CASCADE, "changes", "workflows_ui.instance"),
    ("historyevent", "run", "run_id", CASCADE, "events", "workflows_ui.run"),
    ("instance", "engine", "engine_id", PROTECT, "instances", "workflows_ui.engine"),
    ("instancecheck", "engine", "engine_id", CASCADE, "+", "workflows_ui.engine"),
    ("refreshrequest", "engine", "engine_id", CASCADE, "+", "workflows_ui.engine"),
    ("run", "instance", "instance_id", CASCADE, "runs", "workflows_ui.instance"),
    ("statuscount", "engine", "engine_id", CASCADE, "status_counts", "workflows_ui.engine"),
]


def _single_column_indexes(schema_editor, table, column):
    with schema_editor.connection.cursor() as cursor:
        found = schema_editor.connection.introspection.get_constraints(cursor, table)
    return [
        name
        for name, c in found.items()
        if c["index"] and not c["unique"] and not c["primary_key"] and c["columns"] == [column]
    ]


def drop_indexes(apps, schema_editor):
    qn = schema_editor.quote_name
    for model, _, column, *_ in COVERED:
        table = apps.get_model("workflows_ui", model)._meta.db_table
        for name in _single_column_indexes(schema_editor, table, column):
            schema_editor.execute(f"DROP INDEX {qn(name)}")


def create_indexes(apps, schema_editor):
    qn = schema_editor.quote_name
    for model, _, column, *_ in COVERED:
        table = apps.get_model("workflows_ui", model)._meta.db_table
        if _single_column_indexes(schema_editor, table, column):
            continue
        name = schema_editor._create_index_name(table, [column])
        schema_editor.execute(f"CREATE INDEX {qn(name)} ON {qn(table)} ({qn(column)})")


class Migration(migrations.Migration):
    dependencies = [
        ("workflows_ui", "0004_instance_sorted_by_update"),
    ]

    state_operations = [
        migrations.AlterField(
            model_name=model,
            name=name,
            field=models.ForeignKey(
                db_index=False, on_delete=on_delete, related_name=related_name, to=to
            ),
        )
        for model, name, _, on_delete, related_name, to in COVERED
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=state_operations,
            database_operations=[migrations.RunPython(drop_indexes, create_indexes)],
        ),
    ]
