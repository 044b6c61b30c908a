"""ASGI entry point (daphne): HTTP now; websocket routes join the router when pages need them
(until then every websocket handshake is refused)."""

import asyncio
import atexit
import os
import sys
import threading

from django.core.asgi import get_asgi_application
from django.core.exceptions import ImproperlyConfigured

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "console.settings")

try:
    django_asgi_app = get_asgi_application()
except ImproperlyConfigured as exc:
    # A bad setting: its one line (naming it) instead of a server's traceback around it.
    raise SystemExit(f"configuration error: {exc}") from None

from channels.routing import ProtocolTypeRouter  # noqa: E402  (needs Django set up first)
from django.conf import settings  # noqa: E402

from console.dbpool import use_pool  # noqa: E402

# No persistent database connections in web processes, as Django advises under ASGI: the sync
# code of each request runs in a thread of its own, and a connection kept for that thread's next
# request is never closed once the thread is gone. Under load each daphne held dozens of
# PostgreSQL connections, never given back, until PostgreSQL refused new clients. On PostgreSQL
# the requests share a bounded pool instead: a request takes a connection when it first queries
# and gives it back when it ends (Django's "closing" it), so a request needs no new connection
# and a process holds at most CONSOLE_DB_POOL_MAX. (Set before any connection is made;
# runindexer keeps its own connection, CONSOLE_DB_CONN_MAX_AGE.)
settings.DATABASES["default"]["CONN_MAX_AGE"] = 0
use_pool(settings.DATABASES["default"], settings.CONSOLE_DB_POOL_MAX)

http_app = django_asgi_app
if settings.CONSOLE_SERVE_STATIC:
    from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler
    from django.core.exceptions import SuspiciousFileOperation
    from django.http import Http404

    class StaticFiles(ASGIStaticFilesHandler):
        """Django's static handler, but a path leading out of the static directories
        (``/static/../settings.py``) is a file it doesn't have: a 404, not a 500 with a
        traceback in the log for every such probe."""

        def serve(self, request):
            try:
                response = super().serve(request)
            except SuspiciousFileOperation:
                raise Http404("no such static file") from None
            # Asked for again at each use (a 304 when unchanged): with Last-Modified alone a
            # browser may keep the old script and style sheet for a while after an upgrade.
            response.headers.setdefault("Cache-Control", "no-cache")
            return response

    http_app = StaticFiles(django_asgi_app)


def end_tasks_left_by_daphne() -> None:
    """At exit, cancels the tasks daphne's stopped event loop left pending, and runs the loop
    until they end (5 s at most).

    On SIGTERM daphne cancels the requests in flight, then stops its loop; but Django's ASGI
    handler, cancelled, leaves its own tasks pending (the request's, and the one waiting for the
    client to disconnect), and so do requests that arrived meanwhile. The interpreter then
    destroyed them as it cleaned up at exit, and Python 3.11 before 3.11.8 crashed doing so
    (a segmentation fault in asyncio, CPython issue 113566): most stops under load ended so.
    Ended here, while the interpreter is whole, they leave nothing to destroy."""
    reactor = sys.modules.get("twisted.internet.reactor")
    loop = getattr(reactor, "_asyncioEventloop", None)  # daphne's loop, as daphne reaches it
    if loop is None or loop.is_running() or loop.is_closed():
        return
    tasks = asyncio.all_tasks(loop)
    if not tasks:
        return
    for task in tasks:
        task.cancel()
    loop.run_until_complete(asyncio.wait(tasks, timeout=5))


atexit.register(end_tasks_left_by_daphne)


def close_pool_before_threads_are_joined() -> None:
    """At exit, before the interpreter waits for the threads of the requests cut off: closes the
    PostgreSQL connection pool, so that a request thread waiting for a connection fails at once.

    daphne stopped by SIGTERM with every connection of the pool in use (downloads in flight)
    left a request that was waiting for one in its thread (one that had just arrived, or one cut
    off whose next sync step took a new thread and a new connection): the interpreter waited for
    that thread, and so the stop for the pool's timeout (10 s, 1 stop in 4 under load).
    Connections still in use are closed when given back."""
    backend = sys.modules.get("django.db.backends.postgresql.base")  # only if PostgreSQL's
    pools = backend.DatabaseWrapper._connection_pools if backend else {}
    for pool in list(pools.values()):
        pool.close(timeout=1.0)


# threading's own exit hooks run before it joins the threads (atexit's run after): the one
# concurrent.futures uses to wait for its workers. Not in the documented API.
threading._register_atexit(close_pool_before_threads_are_joined)  # type: ignore[attr-defined]


async def no_websockets(scope, receive, send):
    """No page opens a websocket yet: a handshake (a scanner's, a stray client's) is refused,
    as daphne answers a closed handshake (403), not a 500 with a traceback logged for each."""
    if (await receive())["type"] == "websocket.connect":
        await send({"type": "websocket.close"})


application = ProtocolTypeRouter({"http": http_app, "websocket": no_websockets})
if settings.CONSOLE_URL_PREFIX:
    from console.prefix import UnderPrefix

    application = UnderPrefix(application, settings.CONSOLE_URL_PREFIX)
