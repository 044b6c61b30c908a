"""Fixtures shared by every test directory that uses the console's database.

``CONSOLE_TEST_DATABASE=postgres`` runs those tests on a PostgreSQL cluster started here (see
``tests/console/pgcluster.py``); otherwise on SQLite. Defined once, here, so that one session
makes one database whichever directory runs first.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import pytest

from tests.console import pgcluster
from tests.needs import need


@pytest.fixture(scope="session")
def django_db_modify_db_settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    from django.conf import settings

    db = settings.DATABASES["default"]
    if os.environ.get("CONSOLE_TEST_DATABASE", "") == "postgres":
        need(pgcluster.find_bin_dir() is not None, "PostgreSQL (initdb) is not installed")
        cluster = pgcluster.start()
        db.update(
            {
                "ENGINE": "django.db.backends.postgresql",
                "NAME": "console",
                "USER": "postgres",
                "PASSWORD": "",
                "HOST": "127.0.0.1",
                "PORT": str(cluster.port),
                "OPTIONS": {},
                "CONN_MAX_AGE": 0,
            }
        )
        db["TEST"]["NAME"] = "test_console"
        # The tests' own connections are not pooled: console.asgi, imported by tests that call
        # the ASGI application in this process, would otherwise switch them to the web
        # processes' pool mid-session. The pool is tested through daphne processes.
        settings.CONSOLE_DB_POOL_MAX = 0
        # Django made its connection from the settings before this fixture ran: drop it, so the
        # next use opens one to PostgreSQL (the settings dict is shared, so the switch shows).
        from django.db import connections

        with contextlib.suppress(AttributeError):  # none made yet
            del connections["default"]
        assert connections["default"].vendor == "postgresql", connections["default"].vendor
        try:
            yield
        finally:
            connections.close_all()
            cluster.stop()
    else:
        # A file, not :memory:, so processes started by a test (the indexer) see the same data.
        db["TEST"]["NAME"] = str(tmp_path_factory.mktemp("db") / "test_console.sqlite3")
        yield


@pytest.fixture(scope="session", autouse=True)
def _database_known_migrated() -> None:
    """The test database is made by the migrations: the web's check of them (done at a
    process's first request, see console/middleware.py) is skipped, so a test counting a
    request's queries counts the same whichever test runs first."""
    from console.middleware import MigratedDatabaseMiddleware

    MigratedDatabaseMiddleware.migrated = True
