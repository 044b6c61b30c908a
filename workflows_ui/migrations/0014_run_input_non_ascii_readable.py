"""Runs' inputs stored before the indexer wrote their non-ASCII characters as themselves, as it
does the instances' (0010): rewrite their ``\\uXXXX`` escapes, so that a run's input (the runs
API) reads as its instance's. ``input_size`` follows, counted as 0010 counts it.

Like 0010: each batch commits on its own, so the indexer and the console wait for one batch at
most, and a migration stopped half-way goes on where it was when run again (rewriting is
idempotent). The indexer writes a run's input once, when it stores the run, and a row is only
written if its input is still the one that was read. The run table has no search column, so
this is one read of it and a write of the rows with escapes.

The rewrite is 0010's, not engine_bridge.mappers' (which may change): this step stays what it
was.
"""

import importlib

from django.db import migrations, transaction

#: Runs read at a time: an input of up to CONSOLE_PAYLOAD_LIMIT characters each.
BATCH = 500

# 0010's rewrite, which stays as it is: this step does the same to the runs.
readable_json = importlib.import_module(
    "workflows_ui.migrations.0010_payloads_non_ascii_readable"
).readable_json


def forwards(apps, schema_editor):
    Run = apps.get_model("workflows_ui", "Run")  # noqa: N806
    db = schema_editor.connection.alias
    last = 0
    while True:
        rows = list(
            Run.objects.using(db)
            .filter(input__contains="\\u", pk__gt=last)
            .order_by("pk")
            .values_list("pk", "input", "input_size")[:BATCH]
        )
        if not rows:
            return
        updates = []
        for pk, old, size in rows:
            new = readable_json(old)
            if new != old:
                # The characters saved come off the original length as well.
                updates.append((pk, old, new, max(len(new), size - (len(old) - len(new)))))
        # Written in a short transaction of its own, once the batch is worked out.
        with transaction.atomic(using=db):
            for pk, old, new, size in updates:
                Run.objects.using(db).filter(pk=pk, input=old).update(input=new, input_size=size)
        last = rows[-1][0]


class Migration(migrations.Migration):
    # Each batch commits on its own (see above).
    atomic = False

    dependencies = [("workflows_ui", "0013_earlier_runs_and_tombstones_expire")]

    # Forwards only: the escaped and the readable text are the same JSON.
    operations = [migrations.RunPython(forwards, migrations.RunPython.noop)]
