"""Fixtures of the console's tests.

``CONSOLE_TEST_DATABASE=postgres`` runs them on a PostgreSQL cluster started here (see
``pgcluster``); otherwise on SQLite. A test needing a program the machine lacks skips with the
reason, except under ``CI=true``, where it fails.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.console import pgcluster

GOLDEN_DIR = Path(__file__).parent / "golden"
IN_CI = os.environ.get("CI", "").lower() == "true"


def need(condition: bool, reason: str) -> None:
    """Skip (or, under CI=true, fail) when a program the test needs is missing."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: missing programs fail instead of skipping)")
    pytest.skip(reason)


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
        try:
            yield
        finally:
            from django.db import connections

            connections.close_all()
            cluster.stop()
    else:
        # A file, not :memory:, so processes started by a test (the indexer) see the same data.
        db["TEST"]["NAME"] = str(tmp_path_factory.mktemp("db") / "test_console.sqlite3")
        yield


def load_golden(name: str) -> dict[str, Any]:
    with open(GOLDEN_DIR / f"{name}.json") as f:
        return json.load(f)


@pytest.fixture
def golden() -> Any:
    return load_golden


@pytest.fixture(autouse=True)
def fast_password_hashing(settings: Any) -> None:
    # Django's default hasher costs about a second per password on a small CI machine.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
