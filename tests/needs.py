"""A test needing a program the machine lacks skips with the reason, except under ``CI=true``,
where it fails (CI installs everything the suite needs, so a skip there would hide a gap)."""

from __future__ import annotations

import os

import pytest

IN_CI = os.environ.get("CI", "").lower() == "true"


def need(condition: bool, reason: str) -> None:
    """Skip (or, under CI=true, fail) when a program the test needs is missing."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: missing programs fail instead of skipping)")
    pytest.skip(reason)
