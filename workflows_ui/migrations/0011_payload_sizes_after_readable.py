"""Sizes of the payloads that 0010, as first released, made readable without counting again.

That version rewrote ``\\uXXXX`` escapes as characters but kept ``*_size`` at the escaped text's
length, and a size above the stored length means a payload the console cut: the pages said "the
console stored the first 8 of 13 characters" of a whole payload, for good on finished instances.
0010 now writes the sizes itself; this step mends the rows the first version wrote.

A row is mended when its size is exactly what that rewrite leaves: the stored text's length plus
5 characters for each non-ASCII character (a ``\\u00fc`` escape is 6) and 11 for each beyond the
Basic Multilingual Plane (a pair of escapes is 12). A payload the indexer cut keeps its size: a cut
text was never rewritten, and its size is the whole payload's.

Committed in batches, like 0010; running it again finds nothing left to do.
"""

from django.db import migrations, transaction
from django.db.models import Q
from django.db.models.functions import Length

FIELDS = ("input", "output", "custom_status")
BATCH = 200


def _escaped_extra(text):
    """Characters that the ``\\uXXXX`` escapes of ``text``'s non-ASCII characters add."""
    return sum(5 if ord(ch) < 0x10000 else 11 for ch in text if ord(ch) >= 0x80)


def forwards(apps, schema_editor):
    Instance = apps.get_model("workflows_ui", "Instance")  # noqa: N806
    db = schema_editor.connection.alias
    over = Q()
    for field in FIELDS:
        over |= Q(**{f"{field}_size__gt": Length(field)})
    last = 0
    while True:
        rows = list(
            Instance.objects.using(db)
            .filter(over, pk__gt=last)
            .order_by("pk")
            .values_list("pk", *FIELDS, *(f"{field}_size" for field in FIELDS))[:BATCH]
        )
        if not rows:
            return
        with transaction.atomic(using=db):
            for pk, *rest in rows:
                texts, sizes = rest[: len(FIELDS)], rest[len(FIELDS) :]
                mended = {
                    f"{field}_size": len(text)
                    for field, text, size in zip(FIELDS, texts, sizes, strict=True)
                    if size > len(text) and size == len(text) + _escaped_extra(text)
                }
                if mended:
                    # Only if the indexer hasn't stored another payload since it was read.
                    same = {field: text for field, text in zip(FIELDS, texts, strict=True)}
                    Instance.objects.using(db).filter(pk=pk, **same).update(**mended)
        last = rows[-1][0]


class Migration(migrations.Migration):
    atomic = False

    dependencies = [("workflows_ui", "0010_payloads_non_ascii_readable")]

    operations = [migrations.RunPython(forwards, migrations.RunPython.noop)]
