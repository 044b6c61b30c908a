"""Fixtures of the page tests: a logged-in client and instances seeded from recorded histories.

The database is set up in ``tests/conftest.py`` (SQLite, or PostgreSQL with
``CONSOLE_TEST_DATABASE=postgres``)."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import User

from tests.pages import seed


@pytest.fixture(autouse=True)
def fast_password_hashing(settings: Any) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def user(db: Any) -> User:
    return User.objects.create_user("alice", password="pw-123456789")


@pytest.fixture
def logged_in(client: Any, user: User) -> Any:
    client.force_login(user)
    return client


@pytest.fixture
def seeded(db: Any) -> seed.Seeded:
    return seed.seed_all()
