"""Filters of the console's log, and when a line that repeats is said."""

from __future__ import annotations

import logging
import time

from django.db import DatabaseError, InterfaceError


class Repeats:
    """When to say a line that may repeat: the first of a kind at once, the same kind again at
    most once every ``interval`` seconds, with how many were left out meanwhile."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.said_at: dict[str, float] = {}
        self.unsaid: dict[str, int] = {}

    def due(self, kind: str) -> tuple[int, float] | None:
        """None: leave this one out. Else say it: (how many were left out, seconds since the
        last one said)."""
        now = time.monotonic()
        last = self.said_at.get(kind, float("-inf"))
        if now - last < self.interval:
            self.unsaid[kind] = self.unsaid.get(kind, 0) + 1
            return None
        self.said_at[kind] = now
        return self.unsaid.pop(kind, 0), now - last

    def forget(self) -> None:
        """Every kind is new again."""
        self.said_at.clear()
        self.unsaid.clear()


def database_unavailable(exc: BaseException | None) -> bool:
    """Whether a request failed because the console's database can't serve it now (down,
    restarting, full, locked for longer than its timeout, or taking no writes: a standby during
    a failover), not because of a bug."""
    # Imported here: the logging settings load this module before the apps are ready.
    from workflows_ui.search import cannot_write_now

    if isinstance(exc, InterfaceError):
        return True
    return isinstance(exc, DatabaseError) and cannot_write_now(exc)


def database_trouble(exc: BaseException | None) -> str:
    """What is wrong with the console's database, in the words of the 503 and of its log line:
    that it takes no writes (a failover under way) is not that it does not answer."""
    from workflows_ui.search import takes_no_writes

    if isinstance(exc, DatabaseError) and takes_no_writes(exc):
        return "takes no writes"
    return "does not answer"


class DatabaseDown(logging.Filter):
    """``django.request``'s error for a request the database failed (down, restarting, full,
    locked for longer than its timeout, taking no writes): one line without the traceback, and
    at most one a minute with how many were left out, instead of a traceback for every request
    while it lasts. The request is answered 503 (see ``workflows_ui.api.views.server_error``)."""

    INTERVAL = 60.0

    def __init__(self) -> None:
        super().__init__()
        self.repeats = Repeats(self.INTERVAL)

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if not database_unavailable(exc):
            return True
        trouble = database_trouble(exc)
        due = self.repeats.due(trouble)
        if due is None:
            return False
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        record.msg = "the console's database %s (%s): requests answered 503%s"
        record.args = (
            trouble,
            first_line,
            f" ({due[0]} more since the last such line)" if due[0] else "",
        )
        record.exc_info = record.exc_text = None
        return True


class OnceAMinute(logging.Filter):
    """Each kind of line (its format, not its values) at most once a minute, the next one saying
    how many were left out: psycopg's pool warns at every failed attempt to connect, two or
    three lines a second per web process while PostgreSQL is down or full."""

    INTERVAL = 60.0

    def __init__(self) -> None:
        super().__init__()
        self.repeats = Repeats(self.INTERVAL)

    def filter(self, record: logging.LogRecord) -> bool:
        due = self.repeats.due(str(record.msg))
        if due is None:
            return False
        if due[0]:
            record.msg = f"{record.msg} (and {due[0]} more like it since the last one said)"
        return True


class SuspiciousRequest(logging.Filter):
    """A request Django refused as suspicious (its ``django.security.*`` loggers: a Host header
    not in ALLOWED_HOSTS, too many form fields, a session it can't read): the one line that
    says why, without the traceback through Django's own frames it came with. Scanners send
    such requests all day, a Host of their choosing above all, and anyone can: each one wrote
    some 30 lines of traceback. (On the handler: a logger's filters don't see the records of
    the loggers below it.)"""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith("django.security.") and record.exc_info:
            record.exc_info = record.exc_text = None
        return True


class OneLine(logging.Formatter):
    """The console's log format, each record's message kept on its line: a newline in what a
    message quotes (an engine's error text, an instance id: both written by others) would
    start a line of its own, looking like one the console wrote. A traceback after the message
    keeps its lines. A line longer than ``LIMIT`` characters is cut, saying how long it was:
    anyone can ask for a path of 100,000 characters, and Django's "Not Found" line quoted it
    whole, as it would an engine's error of that length."""

    LIMIT = 4000

    def formatMessage(self, record: logging.LogRecord) -> str:
        text = super().formatMessage(record)
        if len(text) > self.LIMIT:
            text = f"{text[: self.LIMIT]}... (cut: {len(text):,} characters)"
        return text.replace("\r", "\\r").replace("\n", "\\n")
