"""Filters of the console's log."""

from __future__ import annotations

import logging
import time

from django.db import InterfaceError, OperationalError


class DatabaseDown(logging.Filter):
    """``django.request``'s error for a request the database failed (down, restarting, full,
    locked for longer than its timeout): one line without the traceback, and at most one a
    minute with how many were left out, instead of a traceback for every request while it
    lasts. The request is answered 503 (see ``workflows_ui.api.views.server_error``)."""

    INTERVAL = 60.0

    def __init__(self) -> None:
        super().__init__()
        self.said_at = float("-inf")
        self.unsaid = 0

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, OperationalError | InterfaceError):
            return True
        now = time.monotonic()
        if now - self.said_at < self.INTERVAL:
            self.unsaid += 1
            return False
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        record.msg = "the console's database does not answer (%s): requests answered 503%s"
        record.args = (
            first_line,
            f" ({self.unsaid} more since the last such line)" if self.unsaid else "",
        )
        record.exc_info = record.exc_text = None
        self.said_at, self.unsaid = now, 0
        return True


class OnceAMinute(logging.Filter):
    """Each kind of line (its format, not its values) at most once a minute, the next one saying
    how many were left out: psycopg's pool warns at every failed attempt to connect, two or
    three lines a second per web process while PostgreSQL is down or full."""

    INTERVAL = 60.0

    def __init__(self) -> None:
        super().__init__()
        self.said_at: dict[str, float] = {}
        self.unsaid: dict[str, int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        kind = str(record.msg)
        now = time.monotonic()
        if now - self.said_at.get(kind, float("-inf")) < self.INTERVAL:
            self.unsaid[kind] = self.unsaid.get(kind, 0) + 1
            return False
        left_out = self.unsaid.pop(kind, 0)
        if left_out:
            record.msg = f"{record.msg} (and {left_out} more like it since the last one said)"
        self.said_at[kind] = now
        return True
