"""Fixtures of the console's tests.

The database (SQLite, or PostgreSQL with ``CONSOLE_TEST_DATABASE=postgres``) is set up in
``tests/conftest.py``; tests needing a program the machine lacks use ``tests.needs.need``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

GOLDEN_DIR = Path(__file__).parent.parent / "golden"


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
