"""Search on PostgreSQL splits words as SQLite's does (see workflows_ui.search).

Its parser kept an email, a host, a URL, a path, a version or a decimal as one word, so a search
for a part of one found nothing there. A generated column's expression can't be changed in
place: the column is dropped and added again, which computes it for every existing instance (the
table is rewritten, and locked meanwhile), and its GIN index is made again. Nothing to do on
SQLite.

The SQL is spelled out here, not taken from workflows_ui.search, so that this step stays what it
was when that module changes again.
"""

from django.db import migrations

TABLE = "workflows_ui_instance"
TEXT = (
    "coalesce(left(input, 100000), '') || ' ' || coalesce(left(output, 100000), '') || ' ' || "
    "coalesce(left(custom_status, 100000), '') || ' ' || coalesce(left(failure_message, 100000), '')"
)
# Anything but a letter or a digit, by code point (workflows_ui.search.PG_SEPARATOR_RANGES).
SEPARATORS = (
    "["
    r"\u0001-\u002f\u003a-\u0040\u005b-\u0060\u007b-\u00a9\u00ab-\u00b1\u00b4"
    r"\u00b6-\u00b8\u00bb\u00bf\u00d7\u00f7\u2000-\u206f\u20a0-\u20cf\u2190-\u245f"
    r"\u2500-\u2775\u2794-\u2bff\u2e00-\u2e2e\u2e30-\u2e7f\u3000-\u3004\u3008-\u3020"
    r"\u3030\u303d-\u303f\ufe00-\ufe19\ufe30-\ufe6f\ufeff\uff01-\uff0f\uff1a-\uff20"
    r"\uff3b-\uff40\uff5b-\uff65\uffe0-\uffef\ufff9-\ufffd\U0001f000-\U0001f0ff"
    r"\U0001f10d-\U0001faff\U000e0000-\U000e007f"
    "]"
)
SPLIT_DOCUMENT = (
    f"to_tsvector('simple'::regconfig, regexp_replace({TEXT}, '{SEPARATORS}+', ' ', 'g'))"
)
PARSED_DOCUMENT = f"to_tsvector('simple'::regconfig, {TEXT})"


def rebuild(document):
    return [
        "DROP INDEX IF EXISTS wf_inst_search",
        f"ALTER TABLE {TABLE} DROP COLUMN IF EXISTS search_document",
        f"ALTER TABLE {TABLE} ADD COLUMN search_document tsvector "
        f"GENERATED ALWAYS AS ({document}) STORED",
        f"CREATE INDEX wf_inst_search ON {TABLE} USING gin (search_document)",
    ]


def run_on_postgresql(statements):
    def run(apps, schema_editor):
        if schema_editor.connection.vendor != "postgresql":
            return
        for sql in statements:
            schema_editor.execute(sql, params=None)

    return run


class Migration(migrations.Migration):
    dependencies = [
        ("workflows_ui", "0008_engine_listing_progress"),
    ]

    operations = [
        migrations.RunPython(
            run_on_postgresql(rebuild(SPLIT_DOCUMENT)),
            run_on_postgresql(rebuild(PARSED_DOCUMENT)),
        ),
    ]
