"""Whether the console's database has every migration of this version of the code: the web
processes and ``runindexer`` say so plainly when it hasn't (the code upgraded, ``migrate`` not
run yet) instead of failing on a missing column."""

from __future__ import annotations

from django.db import DEFAULT_DB_ALIAS, connections
from django.db.migrations.executor import MigrationExecutor

NOT_MIGRATED = (
    "the console's database lacks {n} migration(s) of this version of the console: "
    "run `python manage.py migrate`"
)


def missing_migrations(alias: str = DEFAULT_DB_ALIAS) -> int:
    """How many migrations the database lacks (OperationalError when it can't be asked)."""
    executor = MigrationExecutor(connections[alias])
    return len(executor.migration_plan(executor.loader.graph.leaf_nodes()))
