"""Response headers Django 5.2 does not set itself, and the answer of a web process whose
database lacks migrations."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse

from console.schema import NOT_MIGRATED, missing_migrations

log = logging.getLogger(__name__)


class ContentSecurityPolicyMiddleware:
    """Sends ``settings.CONSOLE_CSP`` as the Content-Security-Policy of every response that has
    none: the console's pages load scripts, styles and images from the console only and run no
    inline script, so a payload that got past escaping still could not run."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response
        self.policy = settings.CONSOLE_CSP

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if self.policy:
            response.headers.setdefault("Content-Security-Policy", self.policy)
        return response


class MigratedDatabaseMiddleware:
    """While the database lacks migrations this code needs (the code upgraded, ``migrate`` not
    run yet), every request is answered 503 saying so, and the log says it, instead of a 500
    with a "no such column" traceback on each page. Checked until the database is found
    migrated (at most every few seconds), then never again in this process. A database that
    can't be asked is let through: the request then meets what it meets."""

    RECHECK = 5.0
    #: Once found migrated, for the whole process (it has one database).
    migrated = False

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response
        self.missing = 0
        self.checked_at = float("-inf")

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if not self.migrated and self._missing():
            text = NOT_MIGRATED.format(n=self.missing)
            message = text[:1].upper() + text[1:] + "."
            if request.path_info.startswith("/api/"):
                return JsonResponse({"detail": message}, status=503)
            return HttpResponse(message, status=503, content_type="text/plain; charset=utf-8")
        return self.get_response(request)

    def _missing(self) -> int:
        now = time.monotonic()
        if now - self.checked_at < self.RECHECK:
            return self.missing
        self.checked_at = now
        try:
            self.missing = missing_migrations()
        except Exception:  # a database down, or not reachable from here: not ours to answer
            return 0
        MigratedDatabaseMiddleware.migrated = not self.missing
        if self.missing:
            log.error(NOT_MIGRATED.format(n=self.missing))
        return self.missing
