"""Server time of the instance list with 1,000,000 instances in SQLite or PostgreSQL.

    python bench/list_query.py [--instances 1000000] [--repeat 40] [--db PATH] [--record]
    python bench/list_query.py --database postgres [--instances 1000000] [--record]

Migrates a fresh SQLite database (in a temporary directory, or PATH kept for the next run with
--db), or a PostgreSQL cluster the run starts in a temporary directory on 127.0.0.1 (as the
test setup does), and fills it with bulk SQL, not through the indexer: instances over 30 days
of three engines and twenty workflow names, ids in creation order, most completed, some failed,
running, terminated or suspended, with small JSON inputs and outputs and failure messages; the
full-text index is rebuilt once afterwards and the counts table summed from the rows. SQLite
gets no ANALYZE (a console's database never does); PostgreSQL is ANALYZEd, as autovacuum does
after such a load. Then it calls the list view in-process through the test client (middleware,
login, template; no network) and the REST API the same way, and reports the
median and p95 server time of each request, all of them first pages with their status counts.

The targets of the pages issue: first page filtered by status + name, newest first, with its
counts, p95 under 50 ms; text search first page p95 under 150 ms.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import append_result, machine, p95  # noqa: E402
from detail_page import database_name, setup_django, start_postgres, timed  # noqa: E402

NAMES = 20
ENGINES = ("orders", "billing", "shipping")
# (status, share in thousandths), in the order the generator deals them out.
STATUSES = [
    ("COMPLETED", 820),
    ("FAILED", 50),
    ("RUNNING", 80),
    ("TERMINATED", 30),
    ("SUSPENDED", 10),
    ("PENDING", 10),
]
CITIES = ["lisbon", "oslo", "lagos", "lima", "osaka", "perth", "quito", "riga", "sofia", "tunis"]


INSTANCE_COLUMNS = """
  engine_id, instance_id, name, version, status, created_at, last_updated_at, started_at,
  completed_at, input, input_size, output, output_size, custom_status, custom_status_size,
  failure_type, failure_message, failure_stack_trace, parent_app_id, parent_instance_id,
  parent_execution_id, trace_id, stall_reason, stall_description, current_execution_id, purged,
  first_seen_at, indexed_at"""
#: The counts table, summed from the rows.
SUM_COUNTS = (
    "INSERT INTO workflows_ui_statuscount (engine_id, name, status, count) "
    "SELECT engine_id, name, status, count(*) FROM workflows_ui_instance "
    "WHERE NOT purged GROUP BY engine_id, name, status"
)

#: 2,000 children of one instance (a fan-out), for the parent filter.
CHILDREN = (
    "UPDATE workflows_ui_instance SET parent_engine_id = 1, parent_instance_id = 'inst-00420000' "
    "WHERE instance_id > 'inst-00420000' AND instance_id <= 'inst-00422000'"
)


def _status_case() -> str:
    """SQL dealing out STATUSES by ``n`` (``%%``: the statement is run with parameters)."""
    case = "CASE"
    acc = 0
    for status, share in STATUSES:
        acc += share
        case += f" WHEN n %% 1000 < {acc} THEN '{status}'"
    return case + " END"


def _create_engines() -> None:
    from datetime import UTC, datetime

    from workflows_ui.models import Engine

    Engine.objects.bulk_create(
        Engine(
            id=i,
            name=name,
            address=f"10.0.0.{i}:50001",
            app_id=name,
            reachable=True,
            created_at=datetime(2026, 11, 1, tzinfo=UTC),
        )
        for i, name in enumerate(ENGINES, start=1)
    )


def fill(n: int) -> None:
    """``n`` instances by INSERT ... SELECT over a recursive sequence, then the search index and
    the counts table derived from them."""
    from django.db import connection

    from workflows_ui import search

    search.drop_schema(connection)  # re-created (and rebuilt in one pass) below
    status_case = _status_case()
    cities = "'" + "','".join(CITIES) + "'"
    _create_engines()
    with connection.cursor() as cur:
        # Created 2.5 s apart over about 29 days, the newest last.
        cur.execute(
            f"""
            WITH RECURSIVE seq(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM seq WHERE n < %s),
            rows AS (
              SELECT n, {status_case} AS status,
                strftime('%%Y-%%m-%%d %%H:%%M:%%S', '2026-10-01', '+' || (n * 5 / 2) || ' seconds')
                  || printf('.%%06d', (n * 7919) %% 1000000) AS created,
                'wf_' || printf('%%02d', (n * 2654435761 / 256) %% {NAMES}) AS name,
                json_array({cities}) AS cities
              FROM seq
            )
            INSERT INTO workflows_ui_instance ({INSTANCE_COLUMNS})
            SELECT
              1 + n %% 3, printf('inst-%%08d', n), name, '', status, created, created, created,
              CASE WHEN status IN ('RUNNING', 'SUSPENDED', 'PENDING') THEN NULL ELSE created END,
              json_object('order', printf('o-%%07d', n), 'customer', printf('c-%%05d', n %% 50000),
                          'city', json_extract(cities, '$[' || (n %% 10) || ']'),
                          'amount', (n %% 9000) / 100.0),
              80,
              CASE status WHEN 'COMPLETED' THEN json_object('tracking', printf('trk-%%07d', n))
                          ELSE '' END,
              CASE status WHEN 'COMPLETED' THEN 24 ELSE 0 END,
              CASE status WHEN 'RUNNING' THEN '{{"step": "waiting for approval"}}' ELSE '' END,
              CASE status WHEN 'RUNNING' THEN 31 ELSE 0 END,
              CASE status WHEN 'FAILED' THEN 'TaskFailedError' ELSE '' END,
              CASE status WHEN 'FAILED' THEN 'no carrier serves '
                   || json_extract(cities, '$[' || (n %% 10) || ']') ELSE '' END,
              '', '', '', '', '', '', '', printf('exec-%%08d', n), 0, created, created
            FROM rows
            """,  # noqa: S608 - built from this module's constants only
            [n - 1],
        )
        cur.execute(SUM_COUNTS)
        cur.execute(CHILDREN)
    search.create_schema(connection)  # triggers were missing: rebuilds the FTS index
    # No ANALYZE: a console's database never gets one, and SQLite plans without statistics.


def fill_postgres(n: int) -> None:
    """``fill`` for PostgreSQL: the same rows from generate_series."""
    from django.db import connection

    status_case = _status_case()
    cities = "ARRAY['" + "','".join(CITIES) + "']"
    _create_engines()
    with connection.cursor() as cur:
        cur.execute(
            f"""
            WITH rows AS (
              SELECT n, {status_case} AS status,
                timestamptz '2026-10-01 00:00:00+00' + (n * 2.5) * interval '1 second'
                  + ((n * 7919) %% 1000000) * interval '1 microsecond' AS created,
                'wf_' || lpad((((n * 2654435761) / 256) %% {NAMES})::text, 2, '0') AS name,
                ({cities})[1 + n %% 10] AS city
              FROM generate_series(0::bigint, %s::bigint) AS n
            )
            INSERT INTO workflows_ui_instance ({INSTANCE_COLUMNS})
            SELECT
              1 + n %% 3, 'inst-' || lpad(n::text, 8, '0'), name, '', status, created, created,
              created,
              CASE WHEN status IN ('RUNNING', 'SUSPENDED', 'PENDING') THEN NULL ELSE created END,
              json_build_object('order', 'o-' || lpad(n::text, 7, '0'),
                                'customer', 'c-' || lpad((n %% 50000)::text, 5, '0'),
                                'city', city, 'amount', (n %% 9000) / 100.0)::text,
              80,
              CASE status WHEN 'COMPLETED'
                THEN json_build_object('tracking', 'trk-' || lpad(n::text, 7, '0'))::text
                ELSE '' END,
              CASE status WHEN 'COMPLETED' THEN 24 ELSE 0 END,
              CASE status WHEN 'RUNNING' THEN '{{"step": "waiting for approval"}}' ELSE '' END,
              CASE status WHEN 'RUNNING' THEN 31 ELSE 0 END,
              CASE status WHEN 'FAILED' THEN 'TaskFailedError' ELSE '' END,
              CASE status WHEN 'FAILED' THEN 'no carrier serves ' || city ELSE '' END,
              '', '', '', '', '', '', '', 'exec-' || lpad(n::text, 8, '0'), false, created,
              created
            FROM rows
            """,  # noqa: S608 - built from this module's constants only
            [n - 1],
        )
        cur.execute(SUM_COUNTS)
        cur.execute(CHILDREN)
        cur.execute("ANALYZE")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=40)
    parser.add_argument("--db", help="SQLite file to keep (filled once, reused after)")
    parser.add_argument("--database", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--record", action="store_true", help="append to bench/RESULTS.md")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]

    with tempfile.TemporaryDirectory(prefix="bench-list-") as tmp, ExitStack() as stack:
        if args.database == "postgres":
            setup_django(None, start_postgres(stack))
            fresh = True
        else:
            db_path = Path(args.db) if args.db else Path(tmp) / "console.sqlite3"
            fresh = not db_path.exists()
            setup_django(db_path)
        from django.contrib.auth.models import User
        from django.test import Client

        from workflows_ui.models import Instance

        if fresh:
            t0 = time.perf_counter()
            (fill_postgres if args.database == "postgres" else fill)(args.instances)
            print(f"filled {args.instances:,} instances in {time.perf_counter() - t0:.0f} s")
        total = Instance.objects.count()
        engine = database_name()
        user, _ = User.objects.get_or_create(username="bench")
        client = Client()
        client.force_login(user)

        def get(url: str) -> Callable[[], object]:
            def call() -> object:
                response = client.get(url)
                assert response.status_code == 200, (url, response.status_code)
                if url.startswith("/api/"):
                    assert response.json()["results"], url
                else:
                    assert b'class="instance-row"' in response.content, url
                return response

            return call

        prefix_10k = f"inst-{total * 42 // 100 // 10_000:04d}"
        prefix_100k = f"inst-{total // 10 // 100_000:03d}"
        cases = [
            ("status + name, newest first", "?status=RUNNING&name=wf_07", "filter"),
            ("status + name, rarer status", "?status=SUSPENDED&name=wf_13", "filter"),
            ("several statuses + name", "?status=FAILED&status=TERMINATED&name=wf_03", "filter"),
            ("status only", "?status=FAILED", "filter"),
            ("no filter", "", "filter"),
            ("last updated first", "?sort=-updated", "filter"),
            ("status, last updated first", "?status=RUNNING&sort=-updated", "filter"),
            ("name only", "?name=wf_07", "filter"),
            ("name, last updated first", "?name=wf_07&sort=-updated", "filter"),
            ("engine, last updated first", "?engine=billing&sort=-updated", "filter"),
            (
                "engine + status, last updated",
                "?engine=billing&status=RUNNING&sort=-updated",
                "filter",
            ),
            (
                "two engines, last updated first",
                "?engine=billing&engine=orders&sort=-updated",
                "filter",
            ),
            ("name + status, oldest first", "?name=wf_07&status=FAILED&sort=created", "filter"),
            # The first 4,320 created, newest update first: the update index's far end.
            (
                "created range, last updated first",
                "?created_before=2026-10-01T03:00&sort=-updated",
                "filter",
            ),
            ("text: a customer id (20 matches)", "?q=c-04242", "text"),
            ("text: a city (100,000 matches)", "?q=lisbon", "text"),
            ("text + status: a failure message", "?q=carrier+oslo&status=FAILED", "text"),
            # Ids are made in creation order: 10,000 in the middle, 100,000 weeks before the end.
            ("id prefix (10,000 made together)", f"?id_prefix={prefix_10k}", "filter"),
            ("id prefix (100,000 made weeks ago)", f"?id_prefix={prefix_100k}", "filter"),
            (
                "children of an instance (2,000)",
                f"?parent={ENGINES[0]}%2Finst-00420000&purged=include",
                "filter",
            ),
        ]
        # The REST API pages through the same code; a few of its own spellings.
        cases += [
            ("API: name only", "/api/instances/?name=wf_07", "api"),
            ("API: two statuses", "/api/instances/?status=FAILED,TERMINATED", "api"),
            ("API: two engines", "/api/instances/?engine=billing,orders", "api"),
            (
                "API: name, last updated first",
                "/api/instances/?name=wf_07&ordering=-updated",
                "api",
            ),
            ("API: text, a city", "/api/instances/?q=lisbon", "api"),
            ("API: id prefix", f"/api/instances/?id_prefix={prefix_10k}", "api"),
        ]
        rows = []
        for label, query, kind in cases:
            ms = timed(get(query if kind == "api" else "/instances/" + query), args.repeat)
            rows.append((label, query, kind, statistics.median(ms), p95(ms)))
            print(f"{label:38} median {rows[-1][3]:6.1f} ms   p95 {rows[-1][4]:6.1f} ms")

    targets = {"filter": 50.0, "text": 150.0}
    main_ok = rows[0][4] < targets["filter"]
    text_ok = all(r[4] < targets["text"] for r in rows if r[2] == "text")
    print(f"target status + name p95 < 50 ms: {main_ok}; text search p95 < 150 ms: {text_ok}")
    if args.record:
        record(args, engine, total, rows, targets, load_before)


def record(
    args: argparse.Namespace, engine: str, total: int, rows: list, targets: dict, load: float
) -> None:
    cmd = "python bench/list_query.py" + (
        f" --instances {args.instances}" if args.instances != 1_000_000 else ""
    )
    if args.database == "postgres":
        cmd += " --database postgres"
    line = f"{machine()}, {engine}, load average before the run {load:.2f}"
    lines = [
        f"{total:,} instances; first page (50 rows) with its status counts; {args.repeat} "
        "requests each, server time through the Django test client.",
        "",
        "| request | query | median | p95 | target |",
        "|---|---|---|---|---|",
    ]
    for i, (label, query, kind, med, p) in enumerate(rows):
        target = ""
        if i == 0 or kind == "text":
            limit = targets[kind]
            target = f"< {limit:.0f} ms: {'yes' if p < limit else 'no'}"
        lines.append(f"| {label} | `{query or '(none)'}` | {med:.1f} ms | {p:.1f} ms | {target} |")
    append_result("list_query", cmd, line, "\n".join(lines))


if __name__ == "__main__":
    main()
