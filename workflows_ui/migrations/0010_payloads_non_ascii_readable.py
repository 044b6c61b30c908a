"""Payloads stored before the indexer wrote non-ASCII characters as themselves: rewrite their
``\\uXXXX`` escapes, so that text search finds "Müller" in them (the search index follows)."""

from django.db import migrations
from django.db.models import Q

from engine_bridge.mappers import readable_json

FIELDS = ("input", "output", "custom_status")
BATCH = 2000


def forwards(apps, schema_editor):
    Instance = apps.get_model("workflows_ui", "Instance")  # noqa: N806
    escaped = Q()
    for field in FIELDS:
        escaped |= Q(**{f"{field}__contains": "\\u"})
    last = 0
    while True:
        rows = list(
            Instance.objects.filter(escaped, pk__gt=last)
            .order_by("pk")
            .values_list("pk", *FIELDS)[:BATCH]
        )
        if not rows:
            return
        for pk, *values in rows:
            readable = [readable_json(value) for value in values]
            changed = {
                field: new
                for field, old, new in zip(FIELDS, values, readable, strict=True)
                if new != old
            }
            if changed:
                Instance.objects.filter(pk=pk).update(**changed)
        last = rows[-1][0]


class Migration(migrations.Migration):
    dependencies = [("workflows_ui", "0009_search_splits_words_as_sqlite_does")]

    # Forwards only: the escaped and the readable text are the same JSON.
    operations = [migrations.RunPython(forwards, migrations.RunPython.noop)]
