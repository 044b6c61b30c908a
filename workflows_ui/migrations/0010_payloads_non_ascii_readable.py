"""Payloads stored before the indexer wrote non-ASCII characters as themselves: rewrite their
``\\uXXXX`` escapes, so that text search finds "Müller" in them (the search index follows).

``*_size`` follows: the indexer now stores the length of the readable text, and a size above the
stored length means a payload the console cut (the pages say so).

Not one transaction: each batch commits on its own, so the indexer and the console wait for one
batch at most (not for the whole table), and a migration stopped half-way keeps what it did (run
again, it goes over the rows left; rewriting is idempotent). A row is only written if its payloads
are still those that were read, so a payload the indexer stores meanwhile is never overwritten.

The rewrite is spelled out here, not imported from engine_bridge.mappers, so that this step stays
what it was when that module changes.
"""

import json
import re

from django.db import migrations, transaction
from django.db.models import Q

FIELDS = ("input", "output", "custom_status")
SIZES = tuple(f"{field}_size" for field in FIELDS)
#: Rows read at a time: up to three payloads of CONSOLE_PAYLOAD_LIMIT characters each.
BATCH = 200

# A \uXXXX escape (an odd run of backslashes before the u), or a surrogate pair of them.
_U_ESCAPE = re.compile(
    r"(\\+)u([dD][89abAB][0-9a-fA-F]{2})\\u([dD][c-fC-F][0-9a-fA-F]{2})|(\\+)u([0-9a-fA-F]{4})"
)


def _unescape(m):
    slashes = m.group(1) or m.group(4)
    if len(slashes) % 2 == 0:  # an escaped backslash followed by a plain "u"
        return m.group(0)
    if m.group(2):
        high, low = int(m.group(2), 16), int(m.group(3), 16)
        code = 0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00)
    else:
        code = int(m.group(5), 16)
        if code < 0x80 or 0xD800 <= code <= 0xDFFF:
            return m.group(0)  # quotes, backslashes, control characters and lone surrogates
    return slashes[:-1] + chr(code)


def readable_json(text):
    """The JSON ``text`` with its non-ASCII escapes written as themselves (a text that isn't
    JSON is left as it is)."""
    if not text or "\\u" not in text:
        return text
    try:
        value = json.loads(text)
        readable = _U_ESCAPE.sub(_unescape, text)
        return readable if json.loads(readable) == value else text
    except (ValueError, RecursionError):
        return text


def forwards(apps, schema_editor):
    Instance = apps.get_model("workflows_ui", "Instance")  # noqa: N806
    db = schema_editor.connection.alias
    escaped = Q()
    for field in FIELDS:
        escaped |= Q(**{f"{field}__contains": "\\u"})
    last = 0
    while True:
        rows = list(
            Instance.objects.using(db)
            .filter(escaped, pk__gt=last)
            .order_by("pk")
            .values_list("pk", *FIELDS, *SIZES)[:BATCH]
        )
        if not rows:
            return
        updates = []
        for pk, *rest in rows:
            values, sizes = rest[: len(FIELDS)], rest[len(FIELDS) :]
            changed = {}
            for field, old, size in zip(FIELDS, values, sizes, strict=True):
                new = readable_json(old)
                if new != old:
                    changed[field] = new
                    # The characters saved come off the original length as well.
                    changed[f"{field}_size"] = max(len(new), size - (len(old) - len(new)))
            if changed:
                updates.append((pk, dict(zip(FIELDS, values, strict=True)), changed))
        # Written in a short transaction of its own, once the batch is worked out.
        with transaction.atomic(using=db):
            for pk, read, changed in updates:
                # Only if the indexer hasn't stored other payloads since they were read.
                Instance.objects.using(db).filter(pk=pk, **read).update(**changed)
        last = rows[-1][0]


class Migration(migrations.Migration):
    # Each batch commits on its own (see above).
    atomic = False

    dependencies = [("workflows_ui", "0009_search_splits_words_as_sqlite_does")]

    # Forwards only: the escaped and the readable text are the same JSON.
    operations = [migrations.RunPython(forwards, migrations.RunPython.noop)]
