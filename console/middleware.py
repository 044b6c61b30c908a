"""Response headers Django 5.2 does not set itself, and the answer of a web process whose
database lacks migrations."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils.cache import add_never_cache_headers, patch_vary_headers

from console.schema import NOT_MIGRATED, missing_migrations

log = logging.getLogger(__name__)


class SyncAndAsyncMiddleware:
    """A middleware that runs in the mode of the handler it wraps, as Django's own do: async
    under daphne, so that no request's thread waits on the event loop.

    A sync-only middleware in an async chain makes Django run the middleware above it in the
    request's thread and call the rest back on the event loop (``async_to_sync``), the thread
    blocked until the loop answers. On SIGTERM daphne cancels the requests in flight and stops
    its loop, but Django's ASGI handler, cancelled, leaves the request's own task running: those
    threads then waited for a loop that no longer ran, and daphne never exited (the interpreter
    joins them at exit) until it was killed. Subclasses write ``call`` and ``acall``. (Not
    Django's ``MiddlewareMixin``: in async mode it runs each ``process_*`` hook in a thread, a
    hop per request for a header or a check that is over once the database is migrated.)"""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)  # how Django tells which mode a middleware runs in

    def __call__(self, request: HttpRequest) -> HttpResponse | Awaitable[HttpResponse]:
        if self.is_async:
            return self.acall(request)
        return self.call(request)

    def call(self, request: HttpRequest) -> HttpResponse:
        raise NotImplementedError

    async def acall(self, request: HttpRequest) -> HttpResponse:
        raise NotImplementedError


class ResponseHeadersMiddleware(SyncAndAsyncMiddleware):
    """Headers every response gets.

    - ``settings.CONSOLE_CSP`` as the Content-Security-Policy of a response that has none: the
      console's pages load scripts, styles and images from the console only and run no inline
      script, so a payload that got past escaping still could not run.
    - ``Vary: HX-Request``: a list's or a history's address answers the whole page, or to htmx
      the part it swaps in, and htmx pushes that address. Without it the browser kept the part
      for the address, and Back to it showed the part alone, without page or style.
    - Not to be stored (as Django's admin pages): the pages and answers hold workflows'
      payloads, which a shared machine's browser cache would keep after the sign-out. A
      response that says how it may be cached keeps its own say."""

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        super().__init__(get_response)
        self.policy = settings.CONSOLE_CSP

    def call(self, request: HttpRequest) -> HttpResponse:
        return self._with_headers(self.get_response(request))

    async def acall(self, request: HttpRequest) -> HttpResponse:
        return self._with_headers(await self.get_response(request))

    def _with_headers(self, response: HttpResponse) -> HttpResponse:
        if self.policy:
            response.headers.setdefault("Content-Security-Policy", self.policy)
        patch_vary_headers(response, ["HX-Request"])
        if not response.has_header("Cache-Control"):
            add_never_cache_headers(response)
        return response


class MigratedDatabaseMiddleware(SyncAndAsyncMiddleware):
    """While the database lacks migrations this code needs (the code upgraded, ``migrate`` not
    run yet), every request is answered 503 saying so, and the log says it, instead of a 500
    with a "no such column" traceback on each page. Checked until the database is found
    migrated (at most every few seconds), then never again in this process. A database that
    can't be asked is let through: the request then meets what it meets."""

    RECHECK = 5.0
    #: Once found migrated, for the whole process (it has one database).
    migrated = False

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        super().__init__(get_response)
        self.missing = 0
        self.checked_at = float("-inf")

    def call(self, request: HttpRequest) -> HttpResponse:
        if not self.migrated and self._missing():
            return self._refusal(request)
        return self.get_response(request)

    async def acall(self, request: HttpRequest) -> HttpResponse:
        # The check queries the database: in the request's thread, as the sync code's queries.
        if not self.migrated and await sync_to_async(self._missing)():
            return self._refusal(request)
        return await self.get_response(request)

    def _refusal(self, request: HttpRequest) -> HttpResponse:
        text = NOT_MIGRATED.format(n=self.missing)
        message = text[:1].upper() + text[1:] + "."
        if request.path_info.startswith("/api/"):
            return JsonResponse({"detail": message}, status=503)
        return HttpResponse(message, status=503, content_type="text/plain; charset=utf-8")

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
