"""``manage.py runindexer``: index every configured engine, pass after pass, until SIGTERM."""

from __future__ import annotations

import logging
import signal
import threading
import time
from datetime import datetime
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DatabaseError, close_old_connections, connections
from django.utils import timezone

from console.logfilters import Repeats
from console.schema import NOT_MIGRATED, missing_migrations
from engine_bridge.errors import EngineError, EngineUnavailable, Stopping
from engine_bridge.locks import EngineTaken, LockLost
from workflows_ui.models import INDEXER_SILENT, Engine
from workflows_ui.search import cannot_write_now

log = logging.getLogger("engine_bridge.indexer")
# Seconds between the lines that sum up what the passes of an engine changed.
REPORT_INTERVAL = 30.0
# Longest wait, in seconds, before trying again an engine that is down (or the database).
RETRY_MAX = 10.0
# Seconds between the lines of a failure that goes on unchanged (see _FailureLog).
REPEAT_INTERVAL = 600.0
# Seconds between two batches of a backlog of the engines not in CONSOLE_ENGINES: each holds an
# engine's lock, and a runindexer starting with that engine tries for a second (locks.TAKE_TRIES).
UNINDEXED_BACKLOG_PAUSE = 1.0
# Seconds between two looks for engines not in CONSOLE_ENGINES whose runindexer stopped (started
# with other engines): the pages say not-indexed, and forgetengine takes them, that soon after.
UNCONFIGURED_CHECK = 10.0
# Heartbeats of an engine within CONSOLE_INDEXER_STALE_AFTER (every 10 s by default): a few may
# be late or fail (a write of the console's database in the way) before the engine is stale.
HEARTBEATS_PER_LIMIT = 6
# Longest wait, in seconds, between two heartbeats whatever this process's limit: the web
# processes judge them by their own CONSOLE_INDEXER_STALE_AFTER, and one set longer here (a beat
# every 100 s for 10 minutes) made a living runindexer read stale there during a long pass.
HEARTBEAT_MAX_INTERVAL = 10.0


class NotMigrated(Exception):
    """The console's database lacks migrations of this code."""


class Command(BaseCommand):
    help = "Index the workflow instances of the engines in CONSOLE_ENGINES (runs until stopped)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--engine",
            action="append",
            default=[],
            metavar="NAME",
            help="only this engine of CONSOLE_ENGINES (repeat it for several)",
        )
        parser.add_argument("--once", action="store_true", help="one pass per engine, then exit")

    def handle(self, *args: Any, **options: Any) -> None:
        from engine_bridge.indexer import engine_rows, sync_engines, tune_gc, unconfigure_free
        from engine_bridge.locks import EngineLock

        all_configs = configs = settings.CONSOLE_ENGINES
        if options["engine"]:
            unknown = set(options["engine"]) - {c.name for c in configs}
            if unknown:
                raise CommandError(f"not in CONSOLE_ENGINES: {', '.join(sorted(unknown))}")
            configs = [c for c in configs if c.name in options["engine"]]
        if not all_configs:
            # The last engine taken out: the engines no process holds are no longer indexed
            # (forgetengine refuses an engine the last runindexer had until one restarts
            # without it, and this is that restart).
            try:
                if not missing_migrations():
                    unconfigure_free([])
            except DatabaseError:
                pass  # nothing to mark on a database that can't be read: the message is enough
        if not configs:
            raise CommandError("no engine to index: set CONSOLE_ENGINES=name=host:port,...")

        stop = threading.Event()

        def on_signal(signum: int, frame: Any) -> None:
            log.info("signal %s: stopping once the reads in flight are written", signum)
            stop.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)

        tune_gc()
        failures = 0
        while True:
            locks: list[EngineLock] = []
            try:
                missing = missing_migrations()
                if missing:
                    # The code upgraded before `migrate` ran (or a deployment running both at
                    # once): wait for it rather than fail on a missing column every pass.
                    raise NotMigrated(NOT_MIGRATED.format(n=missing))
                # The engines already in the database first: a process refused by one of
                # their locks leaves no row for an engine new to the database (it would show as
                # not-indexed until another runindexer started with it).
                known = set(
                    Engine.objects.filter(name__in=[c.name for c in configs]).values_list(
                        "name", flat=True
                    )
                )
                for group in (
                    [c for c in configs if c.name in known],
                    [c for c in configs if c.name not in known],
                ):
                    for row in engine_rows(group):
                        locks.append(EngineLock(row.pk, row.name))
                        locks[-1].acquire()
                # Only once its engines are this process's: one refused by a lock (started
                # with another CONSOLE_ENGINES) changes nothing of the running one's. Every
                # configured engine stays configured: other processes may index the others
                # (one indexer per engine with --engine).
                engines = {e.name: e for e in sync_engines(all_configs)}
                break
            except EngineTaken as exc:
                for lock in locks:
                    lock.release()
                raise CommandError(str(exc)) from None
            except (DatabaseError, NotMigrated) as exc:
                if isinstance(exc, DatabaseError) and not cannot_write_now(exc):
                    raise
                # Started beside its database (a deployment starting both): wait for it, as
                # the passes do once running.
                for lock in locks:
                    lock.release()
                connections.close_all()
                problem = (
                    str(exc) if isinstance(exc, NotMigrated) else f"the console's database: {exc}"
                )
                if options["once"]:
                    raise CommandError(problem) from None
                failures += 1
                delay = _back_off(failures)
                log.error("%s; retry in %.0fs", problem, delay)
                if stop.wait(delay):
                    return
        try:
            self._index(
                configs, engines, {lock.engine_name: lock for lock in locks}, stop, options["once"]
            )
        finally:
            for lock in locks:
                lock.release()
        self.stdout.write("indexer stopped")
        self.stdout.flush()

    def _index(
        self,
        configs: list[Any],
        engines: dict[str, Any],
        locks: dict[str, Any],
        stop: threading.Event,
        once: bool,
    ) -> None:
        """A thread per engine: an engine that hangs (each read waits for its deadline) holds
        back its own passes, not the others'. And one for the retention of the engines of the
        database that are not in CONSOLE_ENGINES (with --engine, the others are another
        process's)."""
        from engine_bridge.client import EngineClient
        from engine_bridge.indexer import EngineIndexer

        indexers = []
        for c in configs:
            client = EngineClient(
                c,
                timeout=settings.CONSOLE_ENGINE_TIMEOUT,
                payload_limit=settings.CONSOLE_PAYLOAD_LIMIT,
            )
            client.stopping = stop.is_set  # a call pending when the stop comes is given up
            indexers.append(EngineIndexer(engines[c.name], client))
        failed: list[str] = []
        forget_failed: list[bool] = []  # the retention of the engines not configured
        lost: list[str] = []
        crashed: list[BaseException] = []

        def run(ix: Any) -> None:
            try:
                if not _passes(ix, locks.get(ix.engine.name), stop, once):
                    failed.append(ix.engine.name)
            except (EngineTaken, LockLost) as exc:
                # Another process indexes it now: this one goes on with its other engines.
                log.error("engine %s: %s; no longer indexing it here", ix.engine.name, exc)
                lost.append(ix.engine.name)
            except BaseException as exc:  # a bug: stop everything, as one thread would
                crashed.append(exc)
                stop.set()
            finally:
                ix.client.close()
                connections.close_all()  # this thread's

        for ix in indexers:
            ix.stopping = stop.is_set
            lock = locks.get(ix.engine.name)
            ix.holder_token = lock.token if lock else ""
        threads = [
            threading.Thread(target=run, args=(ix,), name=f"index {ix.engine.name}", daemon=True)
            for ix in indexers
        ]

        def forget() -> None:
            try:
                if not _forget_unindexed({c.name for c in settings.CONSOLE_ENGINES}, stop, once):
                    forget_failed.append(True)
            except BaseException as exc:  # a bug, as in an engine's thread
                crashed.append(exc)
                stop.set()
            finally:
                connections.close_all()  # this thread's

        def beat() -> None:
            try:
                _heartbeats(list(zip(indexers, threads, strict=True)), stop, once)
            except BaseException as exc:  # a bug, as in an engine's thread
                crashed.append(exc)
                stop.set()
            finally:
                connections.close_all()  # this thread's

        forgetter = threading.Thread(target=forget, name="retention", daemon=True)
        heart = threading.Thread(target=beat, name="heartbeat", daemon=True)
        self.stdout.write(f"indexing {', '.join(c.name for c in configs)}")
        self.stdout.flush()  # in order with the log's lines when the output is a file
        for thread in [*threads, forgetter, heart]:
            thread.start()
        for thread in threads:
            while thread.is_alive():
                thread.join(0.5)  # signals are handled between the waits
        stop.set()  # no engine left to index (taken over by others): the retention's too
        for thread in (forgetter, heart):
            while thread.is_alive():
                thread.join(0.5)
        if crashed:
            raise crashed[0]
        if lost:
            raise CommandError(
                f"no longer indexing {', '.join(sorted(lost))}: another runindexer took it over"
            )
        if once and (failed or forget_failed):
            said = [f"the pass failed for {', '.join(sorted(failed))}"] if failed else []
            if forget_failed:
                said.append("the retention of the engines not in CONSOLE_ENGINES failed")
            raise CommandError("; ".join(said))


def _forget_unindexed(indexed: set[str], stop: threading.Event, once: bool) -> bool:
    """The engines not in CONSOLE_ENGINES that no process holds: said not indexed (a look every
    UNCONFIGURED_CHECK), and what is past their retention period forgotten
    (engine_bridge.retention.forget_unindexed: a call every RETENTION_CHECK_INTERVAL, or every
    UNINDEXED_BACKLOG_PAUSE while there is more), with the expired sign-in sessions. Returns
    whether the last call succeeded (``--once`` says so in its exit status)."""
    from engine_bridge import retention
    from engine_bridge.indexer import RETENTION_CHECK_INTERVAL, unconfigure_free

    said = _FailureLog()
    forgotten = 0
    report_at = 0.0
    forget_at = 0.0
    ok = True
    while True:  # one call at least: with --once, the engines' passes may be over already
        close_old_connections()
        now = time.monotonic()
        try:
            unconfigure_free(indexed)
            if now >= forget_at:
                done = retention.forget_unindexed(
                    indexed, settings.CONSOLE_RETENTION_DAYS, timezone.now()
                )
                retention.forget_expired_sessions()
                ok = True
                forgotten += done.instances + done.runs
                # A line per call would be one a second through a backlog: sum them up.
                if forgotten and now >= report_at:
                    log.info(
                        "engines not in CONSOLE_ENGINES: %d forgotten past the retention period",
                        forgotten,
                    )
                    forgotten = 0
                    report_at = now + REPORT_INTERVAL
                forget_at = now + (
                    UNINDEXED_BACKLOG_PAUSE if done.more else RETENTION_CHECK_INTERVAL
                )
            said.clear()
        except DatabaseError as exc:
            if not cannot_write_now(exc):
                raise
            said.say(logging.ERROR, str(exc), "engines not indexed: database error (%s)", exc)
            connections.close_all()
            forget_at = now + RETRY_MAX
            ok = False
        delay = min(UNCONFIGURED_CHECK, max(0.0, forget_at - time.monotonic()))
        if once or stop.wait(delay):
            return ok


def _heartbeats(
    held: list[tuple[Any, threading.Thread]], stop: threading.Event, once: bool
) -> None:
    """Says that this process is alive for each engine it holds (``Engine.indexer_seen_at``),
    every HEARTBEATS_PER_LIMIT-th of CONSOLE_INDEXER_STALE_AFTER (HEARTBEAT_MAX_INTERVAL at
    most) until ``stop``: the pages name an engine with no runindexer within that time, and not
    one whose pass takes minutes. A thread of its own, since an engine's thread may wait for the
    deadline of one read after another.

    With ``once``, an engine's heartbeat is ended when its pass is over: ``--once`` is run by a
    scheduler (every minute, say), and between two runs no process is there, rightly; the
    engine is then judged by its last pass, as before heartbeats (models.INDEXER_SILENT). Ended
    at once, not when the last engine's pass is: one slow engine would else leave the others
    stale for as long as its pass takes."""
    interval = min(
        HEARTBEAT_MAX_INTERVAL, settings.CONSOLE_INDEXER_STALE_AFTER / HEARTBEATS_PER_LIMIT
    )
    beats = _Heartbeats(held, once)
    while not stop.is_set():
        beats.write(timezone.now())
        stop.wait(interval)
    if once:
        beats.write(None)


class _Heartbeats:
    """The heartbeats of the engines of one process (``_heartbeats``)."""

    def __init__(self, held: list[tuple[Any, threading.Thread]], once: bool = False) -> None:
        self.held = [(ix, thread) for ix, thread in held if ix.holder_token]
        self.once = once
        self.lost: set[int] = set()  # engines whose token was replaced: no more heartbeats here
        self.ended: set[int] = set()  # engines whose one pass (--once) is over: heartbeat ended
        self.stuck: set[int] = set()  # engines whose thread shows no progress: none for them
        self.said = _FailureLog()

    def write(self, at: datetime | None) -> None:
        """One UPDATE per engine whose thread runs (``at`` None: ends them, the threads over;
        with ``once``, an engine's ends as soon as its thread is over). A write that fails is
        tried again at the next beat, a late beat or two being within the limit."""
        from engine_bridge.locks import write_heartbeat

        close_old_connections()
        try:
            for ix, thread in self.held:
                pk = ix.engine.pk
                if pk in self.lost or pk in self.ended:
                    continue
                if at is not None and not thread.is_alive():
                    if not self.once:
                        continue  # an engine's thread ends when another process took it over
                    # Its one pass is over: judged by it from now on, whatever the others do.
                    write_heartbeat(pk, ix.holder_token, None)
                    self.ended.add(pk)
                    continue
                if at is not None and self._stuck(ix):
                    continue
                if not write_heartbeat(pk, ix.holder_token, at):
                    self.lost.add(pk)
            self.said.clear()
        except DatabaseError as exc:
            self.said.say(logging.WARNING, str(exc), "heartbeat: database error (%s)", exc)
            connections.close_all()

    def _stuck(self, ix: Any) -> bool:
        """Whether the engine's thread has shown no progress (``EngineIndexer.progressed_at``:
        a turn of ``_passes``, a listing page or a read answered) for longer than any of its
        calls may take: a thread stuck (a bug, a database call that never returns) would else
        be beaten for, and its engine said to be indexed, for ever. Said once in the log."""
        quiet = time.monotonic() - ix.progressed_at
        limit = max(
            INDEXER_SILENT.total_seconds(),
            3 * settings.CONSOLE_ENGINE_TIMEOUT,
            3 * settings.CONSOLE_INDEXER_IDLE_SLEEP,  # a thread idles that long between passes
        )
        pk = ix.engine.pk
        if quiet <= limit:
            self.stuck.discard(pk)
            return False
        if pk not in self.stuck:
            self.stuck.add(pk)
            log.error(
                "engine %s: its indexing thread has shown no progress for %.0f s; no more"
                " heartbeats for it (the pages will say it is not being indexed)",
                ix.engine.name,
                quiet,
            )
        return True


def _passes(ix: Any, lock: Any, stop: threading.Event, once: bool) -> bool:
    """Pass after pass over one engine until ``stop`` (one pass with ``once``); returns
    whether the last pass succeeded. EngineTaken or LockLost when another process took the
    engine."""

    name = ix.engine.name
    said = _FailureLog()
    failures = 0
    failing = ""  # what failed last: the engine or the database
    retry = "" if once else "; retry in {:.0f}s"
    totals = [0, 0, 0, 0, 0]  # new, changed, purged, read, forgotten (past the retention)
    report_at = 0.0
    while not stop.is_set():
        # A turn of this loop is progress (the pass's own reads mark more), also one whose pass
        # never begins: while the console's database is down, ensure() fails first, and an
        # outage of minutes is not a stuck thread.
        ix.progressed_at = time.monotonic()
        close_old_connections()
        try:
            if lock is not None:
                lock.ensure()
            result = ix.run_pass()
        except Stopping:
            break  # a call the engine did not answer was given up: nothing to write
        except EngineUnavailable as exc:
            failures += 1
            failing = "engine"
            delay = _back_off(failures)
            # The same failure, whatever its text: an engine that hangs is said to take
            # connections at one try and not at the next (its listen queue full), and each
            # change of words was said at once, a line every try.
            said.say(
                logging.WARNING,
                f"unreachable {exc.operation} {exc.code}",
                "engine %s unreachable (%s)%s",
                name,
                exc,
                retry.format(delay),
            )
        except EngineError as exc:
            # Answered but refused (an api token): a fixed retry, not a step up the back-off
            # of an unreachable engine (minutes of refusals made a later blip wait 30 s).
            failures = max(failures, 1)
            failing = "engine"
            delay = 5.0
            said.say(logging.WARNING, str(exc), "engine %s: pass failed: %s", name, exc)
        except DatabaseError as exc:
            if not cannot_write_now(exc):
                raise
            # The console's database (locked for longer than its timeout, restarting, out of
            # disk, a standby during a failover): nothing of the chunk was committed; try again
            # later.
            failures += 1
            failing = "database"
            delay = _back_off(failures)
            said.say(
                logging.ERROR,
                str(exc),
                "engine %s: database error (%s)%s",
                name,
                exc,
                retry.format(delay),
            )
            connections.close_all()
        else:
            said.clear()
            if failing == "engine":
                log.info("engine %s reachable again", name)
            elif failing == "database":
                log.info("engine %s: the console's database answers again", name)
            failures, failing = 0, ""
            totals[0] += result.discovered
            totals[1] += result.changed
            totals[2] += result.purged
            totals[3] += result.refreshed + result.hinted
            totals[4] += result.forgotten
            # A line per pass would be one a second on a busy engine: sum them up.
            if time.monotonic() >= report_at and (any(totals[:3]) or totals[4]):
                log.info(
                    "engine %s: %d new, %d changed, %d purged, %d read, %d forgotten", name, *totals
                )
                totals = [0, 0, 0, 0, 0]
                report_at = time.monotonic() + REPORT_INTERVAL
            delay = 0.0 if result.busy else settings.CONSOLE_INDEXER_IDLE_SLEEP
        if once:
            return failures == 0
        stop.wait(delay)
    return failures == 0


class _FailureLog:
    """The lines of failed passes. A new failure is said at once; the same one again only once
    every REPEAT_INTERVAL, with how often it happened meanwhile: an engine refusing the api token
    was said every 5 s (17,000 lines a day), one down every 10 s. Each failure of the outage is
    kept until a pass works: an engine failing by turns at two calls (its listing times out, then
    a read is refused) was said at every try, each failure being new after the other."""

    #: Failures kept at most: a text that changes at every try (a number in it) would else grow
    #: the map for as long as the outage lasts.
    KINDS = 20

    def __init__(self) -> None:
        self.repeats = Repeats(REPEAT_INTERVAL)

    def say(self, level: int, key: str, message: str, *args: Any) -> None:
        if key not in self.repeats.said_at and len(self.repeats.said_at) >= self.KINDS:
            self.repeats.forget()
        due = self.repeats.due(key)
        if due is None:
            return
        left_out, since = due
        if since == float("inf"):
            log.log(level, message, *args)
        else:  # this one and those left out since the last said
            log.log(level, message + " (%d times in %.0f min)", *args, left_out + 1, since / 60)

    def clear(self) -> None:
        """A pass worked: every failure is new again."""
        self.repeats.forget()


def _back_off(failures: int) -> float:
    """Seconds until the next try after this many failed passes in a row: doubling, capped at
    RETRY_MAX so that an engine back up is caught up with within seconds (a try on an engine
    that is down costs one short Hello)."""
    return min(RETRY_MAX, 0.5 * 2 ** min(failures, 6))
