"""The PostgreSQL connection pool of the web processes (daphne), set up by ``console.asgi``."""

from __future__ import annotations

from typing import Any

from dj_database_url import DBConfig

#: Seconds a request waits for a free connection, all being in use, before it fails (500).
POOL_TIMEOUT = 10.0
#: Seconds a connection beyond the first may stay idle before the pool closes it (one such
#: connection per period), so that a process gives back what a burst of requests opened.
POOL_MAX_IDLE = 60.0
#: Seconds a failing attempt to open a connection goes on retrying (psycopg_pool doubles the
#: delay between tries from 1 s) before it gives up: see ``_retry_while_waited_for``.
POOL_RECONNECT_TIMEOUT = 2.0


def use_pool(db: DBConfig, max_size: int) -> None:
    """Makes the connections of ``db`` (a ``DATABASES`` entry, CONN_MAX_AGE 0) come from a pool
    of at most ``max_size`` connections shared by the process's threads, on PostgreSQL and when
    ``max_size`` is not 0.

    Under ASGI each request's sync code runs in a thread of its own (asgiref gives each request
    a single-thread executor: no bounded pool of threads is shared), so every request in flight
    would hold a connection: the pool's maximum is the bound, and requests beyond it wait for a
    connection to be given back. A connection is checked (an empty query) when taken, so that
    those a PostgreSQL restart or failover broke are replaced, not handed to requests that would
    fail with them.

    While PostgreSQL is down the pool's attempts to connect back off (1 s, 2 s, 4 s... up to
    5 minutes by default), so once it was back requests kept failing for as long as the next
    attempt was due (8 s after a 20 s outage, longer after a longer one). An attempt now gives up
    after ``POOL_RECONNECT_TIMEOUT`` and a new one starts at once if requests are waiting: the
    pool tries about once a second while it is needed, and not at all while it is not.
    """
    if db["ENGINE"] != "django.db.backends.postgresql" or max_size == 0:
        return
    pool: dict[str, Any] = {
        "min_size": 1,
        "max_size": max_size,
        "timeout": POOL_TIMEOUT,
        "max_idle": POOL_MAX_IDLE,
        "name": "console-web",
        "reconnect_timeout": POOL_RECONNECT_TIMEOUT,
        "reconnect_failed": _retry_while_waited_for,
    }
    db["OPTIONS"] = {**db.get("OPTIONS", {}), "pool": pool}
    db["CONN_HEALTH_CHECKS"] = True


def _retry_while_waited_for(pool: Any) -> None:
    """Called by the pool when an attempt to open a connection gave up: if requests are waiting
    for a connection, a new attempt (``check`` grows a pool lacking connections), without the
    growing delays of the one given up."""
    if pool.get_stats().get("requests_waiting", 0):
        pool.check()
