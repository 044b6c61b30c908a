"""Drop the index Django gives each foreign key where a unique constraint or an index already
starts with that column: one b-tree fewer to update for every row the indexer writes (a history
event paid for four).

Only the indexes go: ``AlterField`` would rebuild these tables on SQLite (slow on a big
database, and dropping the instance table would drop its full-text triggers).
"""

import django.db.models.deletion
from django.db import migrations, models

#: (model, foreign key column) whose single-column index goes.
COVERED = [
    ("changelog", "instance_id"),
    ("historyevent", "run_id"),
    ("instance", "engine_id"),
    ("instancecheck", "engine_id"),
    ("refreshrequest", "engine_id"),
    ("run", "instance_id"),
    ("statuscount", "engine_id"),
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
    for model, column in COVERED:
        table = apps.get_model("workflows_ui", model)._meta.db_table
        for name in _single_column_indexes(schema_editor, table, column):
            schema_editor.execute(f"DROP INDEX {qn(name)}")


def create_indexes(apps, schema_editor):
    qn = schema_editor.quote_name
    for model, column in COVERED:
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
            model_name="changelog",
            name="instance",
            field=models.ForeignKey(
                db_index=False,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="changes",
                to="workflows_ui.instance",
            ),
        ),
        migrations.AlterField(
            model_name="historyevent",
            name="run",
            field=models.ForeignKey(
                db_index=False,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="events",
                to="workflows_ui.run",
            ),
        ),
        migrations.AlterField(
            model_name="instance",
            name="engine",
            field=models.ForeignKey(
                db_index=False,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="instances",
                to="workflows_ui.engine",
            ),
        ),
        migrations.AlterField(
            model_name="instancecheck",
            name="engine",
            field=models.ForeignKey(
                db_index=False,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="+",
                to="workflows_ui.engine",
            ),
        ),
        migrations.AlterField(
            model_name="refreshrequest",
            name="engine",
            field=models.ForeignKey(
                db_index=False,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="+",
                to="workflows_ui.engine",
            ),
        ),
        migrations.AlterField(
            model_name="run",
            name="instance",
            field=models.ForeignKey(
                db_index=False,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="runs",
                to="workflows_ui.instance",
            ),
        ),
        migrations.AlterField(
            model_name="statuscount",
            name="engine",
            field=models.ForeignKey(
                db_index=False,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="status_counts",
                to="workflows_ui.engine",
            ),
        ),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=state_operations,
            database_operations=[migrations.RunPython(drop_indexes, create_indexes)],
        ),
    ]
