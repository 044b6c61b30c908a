"""Fixtures of the console's tests.

The database (SQLite, or PostgreSQL with ``CONSOLE_TEST_DATABASE=postgres``) is set up in
``tests/conftest.py``. A test needing a program the machine lacks skips with the
reason, except under ``CI=true``, where it fails.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

GOLDEN_DIR = Path(__file__).parent / "golden"
IN_CI = os.environ.get("CI", "").lower() == "true"


def need(condition: bool, reason: str) -> None:
    """Skip (or, under CI=true, fail) when a program the test needs is missing."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: missing programs fail instead of skipping)")
    pytest.skip(reason)


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
