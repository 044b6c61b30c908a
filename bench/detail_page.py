"""Server time of an instance's detail page when its run holds 50,000 events.

    python bench/detail_page.py [--events 50000] [--repeat 30] [--database postgres] [--record]

Migrates a fresh SQLite database in a temporary directory (or, with --database postgres, a
PostgreSQL cluster started in one on 127.0.0.1, ANALYZEd after the load as autovacuum would),
stores one running instance whose run
holds about 50,000 events (``tests/pages/longrun.py``: thousands of activities, retries, timers,
children, an activity in flight and an event wait with a timeout), then calls the Django views
in-process through the test client (middleware, login, templates; no network) and reports the
median and p95 of: the detail page (summary, payloads, waiting on, timeline, first history
page), the history table alone (the htmx request of its pager), a history page deep in the run,
and an event's link. With --record it appends the figures to bench/RESULTS.md.

The target of the pages issue: detail page and first history page under 300 ms server time.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

from benchlib import REPO_ROOT, append_result, machine, p95

TARGET_MS = 300.0


def setup_django(db_path: Path | None, database_url: str = "") -> None:
    """Django on the SQLite file ``db_path`` (or on ``database_url``), migrated."""
    sys.path.insert(0, str(REPO_ROOT))
    os.environ["DATABASE_URL"] = database_url or f"sqlite:///{db_path}"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "console.settings")
    os.environ.setdefault("CONSOLE_LOG_LEVEL", "WARNING")
    os.environ["CONSOLE_ALLOWED_HOSTS"] = "testserver"  # the test client's host
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def setup_database(kind: str, tmp: str, stack: ExitStack) -> None:
    """Django migrated on a fresh SQLite file in ``tmp``, or (``kind`` "postgres") on a
    PostgreSQL cluster started for the run and stopped when ``stack`` closes."""
    if kind == "postgres":
        setup_django(None, start_postgres(stack))
    else:
        setup_django(Path(tmp) / "console.sqlite3")


def start_postgres(stack: ExitStack) -> str:
    """A PostgreSQL cluster in a temporary directory on 127.0.0.1, as the test setup starts one
    (stopped when ``stack`` closes); its URL."""
    sys.path.insert(0, str(REPO_ROOT))
    from tests.console import pgcluster

    cluster = pgcluster.start()
    stack.callback(cluster.stop)
    stack.callback(close_connections)
    return f"postgres://postgres@127.0.0.1:{cluster.port}/postgres"


def database_name() -> str:
    from django.db import connection

    if connection.vendor == "postgresql":
        with connection.cursor() as cur:
            version = cur.connection.info.server_version
        return f"PostgreSQL {version // 10000}.{version % 10000}"
    return f"SQLite {sqlite3.sqlite_version}"


def close_connections() -> None:
    from django.db import connections

    connections.close_all()


def timed(fn: Callable[[], object], repeat: int) -> list[float]:
    fn()  # warm: templates compiled, SQLite pages cached
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1000)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--database", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--record", action="store_true", help="append to bench/RESULTS.md")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]

    with tempfile.TemporaryDirectory(prefix="bench-detail-") as tmp, ExitStack() as stack:
        setup_database(args.database, tmp, stack)
        from django.contrib.auth.models import User
        from django.test import Client

        from tests.pages import longrun
        from workflows_ui.models import Engine

        t0 = time.perf_counter()
        engine = Engine.objects.create(name="bench", address="127.0.0.1:1", reachable=True)
        run = longrun.store(engine, "crawl-1", args.events)
        print(f"stored {run.event_count} events in {time.perf_counter() - t0:.1f} s")
        if args.database == "postgres":
            from django.db import connection

            with connection.cursor() as cur:
                cur.execute("ANALYZE")  # as autovacuum does after such a load
        engine_name = database_name()

        user = User.objects.create_user("bench")
        client = Client()
        client.force_login(user)
        base = "/instances/bench/crawl-1/"
        deep = run.event_count - run.event_count % 50 - 50

        def get(url: str, **headers: str) -> Callable[[], object]:
            def call() -> object:
                response = client.get(url, headers=headers)
                assert response.status_code == 200, (url, response.status_code)
                return response

            return call

        htmx = {"HX-Request": "true", "HX-Target": "history"}
        cases = [
            ("detail page (with the first history page)", get(base)),
            ("first history page alone (htmx)", get(f"{base}runs/1/history/", **htmx)),
            (
                f"history page after event {deep} (htmx)",
                get(f"{base}runs/1/history/?after={deep}", **htmx),
            ),
            (
                "history filtered by type (htmx)",
                get(f"{base}runs/1/history/?type=taskFailed", **htmx),
            ),
            (f"an event's link (event {deep + 10})", get(f"{base}runs/1/events/{deep + 10}/")),
        ]
        rows = []
        for label, fn in cases:
            ms = timed(fn, args.repeat)
            rows.append((label, statistics.median(ms), p95(ms)))
            print(f"{label:48} median {rows[-1][1]:7.1f} ms   p95 {rows[-1][2]:7.1f} ms")

    ok = all(p <= TARGET_MS for _, _, p in rows[:2])
    print(f"target: detail page and first history page p95 < {TARGET_MS:.0f} ms: {ok}")
    if args.record:
        record(args, engine_name, run.event_count, rows, load_before)


def record(args: argparse.Namespace, engine: str, n_events: int, rows: list, load: float) -> None:
    cmd = "python bench/detail_page.py" + (
        f" --events {args.events}" if args.events != 50_000 else ""
    )
    if args.database == "postgres":
        cmd += " --database postgres"
    line = f"{machine()}, {engine}, load average before the run {load:.2f}"
    lines = [
        f"One running instance whose run holds {n_events:,} events; {args.repeat} requests each, "
        "server time through the Django test client.",
        "",
        "| request | median | p95 | target |",
        "|---|---|---|---|",
    ]
    for i, (label, med, p) in enumerate(rows):
        target = f"< {TARGET_MS:.0f} ms: {'yes' if p < TARGET_MS else 'no'}" if i < 2 else ""
        lines.append(f"| {label} | {med:.1f} ms | {p:.1f} ms | {target} |")
    append_result("detail_page", cmd, line, "\n".join(lines))


if __name__ == "__main__":
    main()
