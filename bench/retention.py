"""How fast the indexer forgets what is past the retention period, and what it adds to a pass.

    python bench/retention.py [--expired 20000] [--live 100000] [--events 20] [--record]
    python bench/retention.py --database postgres [...] [--record]
    python bench/retention.py --taken-out [...] [--record]

Migrates a fresh SQLite database in a temporary directory (or, with --database postgres, a
PostgreSQL cluster started in one on 127.0.0.1, ANALYZEd after the load as autovacuum would) and
fills it with bulk SQL for one engine: ``--live`` instances the engine still has (a run each),
``--expired`` tombstones purged 40 days ago and as many earlier runs superseded 40 days ago (of
other live instances), each run with ``--events`` events, and a change-log row per run, the
older half of them two days old. Then calls ``engine_bridge.retention.forget_expired`` (30 days, as
``CONSOLE_RETENTION_DAYS`` by default), as the indexer does once a pass while a backlog lasts,
until nothing is left, and reports: the time of each call (what it adds to that pass: median and
max), the rows deleted per second, and the time of a call with nothing to do (the look the
indexer takes every 10 minutes afterwards). Checks that what is kept is all there.

With --taken-out the engine is one taken out of ``CONSOLE_ENGINES`` (not forgotten) beside a
configured engine with nothing to forget: the calls are ``forget_unindexed``, as each
``runindexer``'s retention thread makes them (taking and releasing the engine's lock each
time), and it reports too the configured engine's look before and after (its look at earlier
runs walks past the backlog of the other engine).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import append_result, machine  # noqa: E402
from detail_page import database_name, setup_database  # noqa: E402


def fill(live: int, expired: int, events: int) -> None:
    """The rows, in bulk SQL (the indexer is not what is measured)."""
    from django.db import connection, transaction

    from workflows_ui.models import Engine

    engine = Engine.objects.create(name="bench", address="127.0.0.1:1", reachable=True)
    now = datetime.now(UTC)
    old = now - timedelta(days=40)
    with transaction.atomic(), connection.cursor() as cur:
        rows = []
        for n in range(live + expired):
            purged = n >= live
            rows.append(
                (engine.pk, f"inst-{n:08d}", "wf", "COMPLETED", old, old, f"exec-{n}", purged,
                 old if purged else None, old, old)
            )  # fmt: skip
        cur.executemany(
            "INSERT INTO workflows_ui_instance (engine_id, instance_id, name, version, status,"
            " created_at, last_updated_at, input, input_size, output, output_size, custom_status,"
            " custom_status_size, failure_type, failure_message, failure_stack_trace,"
            " parent_app_id, parent_instance_id, parent_execution_id, trace_id, stall_reason,"
            " stall_description, current_execution_id, purged, purged_at, first_seen_at,"
            " indexed_at) VALUES (%s, %s, %s, '', %s, %s, %s, '', 0, '', 0, '', 0, '', '', '',"
            " '', '', '', '', '', '', %s, %s, %s, %s, %s)",
            rows,
        )
        cur.execute("SELECT id, instance_id FROM workflows_ui_instance ORDER BY id")
        pks = [pk for pk, _ in cur.fetchall()]
        runs = []
        for n, pk in enumerate(pks):
            runs.append((pk, f"exec-{n}", 1, None))
            if n < expired:  # an earlier run of a live instance, superseded 40 days ago
                runs.append((pk, f"earlier-{n}", 0, old))
        cur.executemany(
            "INSERT INTO workflows_ui_run (instance_id, execution_id, ordinal, name, status,"
            " input, input_size, trace_id, event_count, superseded_at)"
            " VALUES (%s, %s, %s, 'wf', 'COMPLETED', '', 0, '', %s, %s)",
            [(pk, execution_id, ordinal, events, at) for pk, execution_id, ordinal, at in runs],
        )
        cur.execute("SELECT id, instance_id FROM workflows_ui_run ORDER BY id")
        run_rows = cur.fetchall()
        for start in range(0, len(run_rows), 2000):
            chunk = run_rows[start : start + 2000]
            cur.executemany(
                "INSERT INTO workflows_ui_historyevent (run_id, position, event_id, event_type,"
                " name, timestamp, related_id, details) VALUES (%s, %s, %s, 'taskCompleted',"
                " 'step', %s, %s, '{}')",
                [(run_pk, p, p, old, p) for run_pk, _ in chunk for p in range(events)],
            )
        cur.executemany(
            "INSERT INTO workflows_ui_changelog (created_at, engine_id, instance_id, kind, status,"
            " old_status, run_id) VALUES (%s, %s, %s, 'events', 'COMPLETED', '', %s)",
            [
                (
                    now - timedelta(days=2) if i < len(run_rows) // 2 else now,
                    engine.pk,
                    inst_pk,
                    run_pk,
                )
                for i, (run_pk, inst_pk) in enumerate(run_rows)
            ],
        )
    if connection.vendor == "postgresql":
        with connection.cursor() as cur:
            cur.execute("ANALYZE")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--expired", type=int, default=20_000)
    parser.add_argument("--live", type=int, default=100_000)
    parser.add_argument("--events", type=int, default=20)
    parser.add_argument("--database", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument(
        "--taken-out", action="store_true", help="the backlog of an engine not configured"
    )
    parser.add_argument("--record", action="store_true", help="append to bench/RESULTS.md")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]

    with tempfile.TemporaryDirectory(prefix="bench-retention-") as tmp, ExitStack() as stack:
        setup_database(args.database, tmp, stack)
        from django.utils import timezone

        from engine_bridge import retention
        from workflows_ui.models import ChangeLog, Engine, HistoryEvent, Instance, Run

        t0 = time.perf_counter()
        fill(args.live, args.expired, args.events)
        events_before = HistoryEvent.objects.count()
        print(f"filled {events_before:,} events in {time.perf_counter() - t0:.1f} s")
        engine = Engine.objects.get(name="bench")
        db = database_name()
        configured = Engine.objects.create(name="configured", address="127.0.0.1:2")

        def configured_look() -> float:
            """The median ms of the configured engine's look, with nothing of its own."""
            times = []
            for _ in range(20):
                c0 = time.perf_counter()
                retention.forget_expired(configured.pk, 30, timezone.now())
                times.append((time.perf_counter() - c0) * 1000)
            return statistics.median(times)

        def forget() -> retention.Forgotten:
            if args.taken_out:
                return retention.forget_unindexed({configured.name}, 30, timezone.now())
            return retention.forget_expired(engine.pk, 30, timezone.now())

        look_before = configured_look() if args.taken_out else 0.0
        calls: list[float] = []
        forgotten = [0, 0, 0]
        started = time.perf_counter()
        while True:
            c0 = time.perf_counter()
            done = forget()
            calls.append((time.perf_counter() - c0) * 1000)
            forgotten[0] += done.instances
            forgotten[1] += done.runs
            forgotten[2] += done.changes
            if not done.more:
                break
        total = time.perf_counter() - started
        idle = []
        for _ in range(20):
            c0 = time.perf_counter()
            forget()
            idle.append((time.perf_counter() - c0) * 1000)
        look_after = configured_look() if args.taken_out else 0.0

        kept_events = HistoryEvent.objects.count()
        assert forgotten[:2] == [args.expired, args.expired], forgotten
        assert Instance.objects.filter(purged=True).count() == 0
        assert Instance.objects.count() == args.live
        assert Run.objects.count() == args.live
        assert kept_events == args.live * args.events, kept_events
        day_ago = timezone.now() - retention.CHANGES_KEPT
        assert not ChangeLog.objects.filter(created_at__lt=day_ago).exists()

    deleted_events = events_before - kept_events
    rows = [
        ("calls until nothing was left", f"{len(calls)}"),
        ("time of a call (a pass's extra time): median", f"{statistics.median(calls):.1f} ms"),
        ("time of a call: max", f"{max(calls):.1f} ms"),
        ("all of it", f"{total:.1f} s"),
        (
            "deleted",
            f"{forgotten[0]:,} tombstones, {forgotten[1]:,} earlier runs, "
            f"{deleted_events:,} events, {forgotten[2]:,} change-log rows older than a day",
        ),
        ("tombstones and runs a second", f"{(forgotten[0] + forgotten[1]) / total:,.0f}"),
        ("events a second", f"{deleted_events / total:,.0f}"),
        ("a call with nothing to do: median", f"{statistics.median(idle):.2f} ms"),
    ]
    if args.taken_out:
        rows += [
            ("configured engine's look, backlog there: median", f"{look_before:.2f} ms"),
            ("configured engine's look, backlog gone: median", f"{look_after:.2f} ms"),
        ]
    for label, value in rows:
        print(f"{label:50} {value}")
    if args.record:
        command = (
            "python bench/retention.py"
            + (" --database postgres" if args.database == "postgres" else "")
            + (" --taken-out" if args.taken_out else "")
        )
        whose = "of an engine taken out of CONSOLE_ENGINES, " if args.taken_out else ""
        body = (
            f"{args.live:,} live instances, {args.expired:,} tombstones and {args.expired:,}"
            f" earlier runs {whose}past the period, {args.events} events a run; {db}; load average"
            f" before the run {load_before:.2f}.\n\n| measure | figure |\n|---|---|\n"
            + "\n".join(f"| {label} | {value} |" for label, value in rows)
            + "\n"
        )
        append_result("retention", command, f"{machine()}, {db}", body)


if __name__ == "__main__":
    main()
