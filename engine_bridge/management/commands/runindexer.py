"""``manage.py runindexer``: index every configured engine, pass after pass, until SIGTERM."""

from __future__ import annotations

import logging
import signal
import threading
import time
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import OperationalError, close_old_connections, connections

from engine_bridge.errors import EngineError, EngineUnavailable

log = logging.getLogger("engine_bridge.indexer")
# Seconds between the lines that sum up what the passes of an engine changed.
REPORT_INTERVAL = 30.0


class Command(BaseCommand):
    help = "Index the workflow instances of the engines in CONSOLE_ENGINES (runs until stopped)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--engine", action="append", default=[], help="only this engine")
        parser.add_argument("--once", action="store_true", help="one pass per engine, then exit")

    def handle(self, *args: Any, **options: Any) -> None:
        from engine_bridge.indexer import sync_engines, tune_gc
        from engine_bridge.locks import EngineLock, EngineTaken

        all_configs = configs = settings.CONSOLE_ENGINES
        if options["engine"]:
            unknown = set(options["engine"]) - {c.name for c in configs}
            if unknown:
                raise CommandError(f"not in CONSOLE_ENGINES: {', '.join(sorted(unknown))}")
            configs = [c for c in configs if c.name in options["engine"]]
        if not configs:
            raise CommandError("no engine to index: set CONSOLE_ENGINES=name=host:port,...")

        stop = threading.Event()

        def on_signal(signum: int, frame: Any) -> None:
            log.info("signal %s: stopping once the reads in flight are written", signum)
            stop.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)

        tune_gc()
        # Every configured engine stays configured: other processes may index the others
        # (one indexer per engine with --engine).
        engines = {e.name: e for e in sync_engines(all_configs)}
        locks = [EngineLock(engines[c.name].pk, c.name) for c in configs]
        try:
            for lock in locks:
                lock.acquire()
        except EngineTaken as exc:
            for lock in locks:
                lock.release()
            raise CommandError(str(exc)) from None
        try:
            self._index(configs, engines, stop, options["once"])
        finally:
            for lock in locks:
                lock.release()
        self.stdout.write("indexer stopped")

    def _index(
        self, configs: list[Any], engines: dict[str, Any], stop: threading.Event, once: bool
    ) -> None:
        from engine_bridge.client import EngineClient
        from engine_bridge.indexer import EngineIndexer

        indexers = [
            EngineIndexer(
                engines[c.name],
                EngineClient(
                    c,
                    timeout=settings.CONSOLE_ENGINE_TIMEOUT,
                    payload_limit=settings.CONSOLE_PAYLOAD_LIMIT,
                ),
            )
            for c in configs
        ]
        for ix in indexers:
            ix.stopping = stop.is_set
        # Per engine: when to try next after a failure (exponential back-off, capped).
        retry_at = {ix.engine.name: 0.0 for ix in indexers}
        failures = {ix.engine.name: 0 for ix in indexers}
        totals = {ix.engine.name: [0, 0, 0, 0] for ix in indexers}  # new, changed, purged, read
        report_at = {ix.engine.name: 0.0 for ix in indexers}

        def back_off(name: str) -> float:
            """One more failure of this engine's passes: seconds until the next try."""
            failures[name] += 1
            delay = min(30.0, 0.5 * 2 ** min(failures[name], 6))
            retry_at[name] = time.monotonic() + delay
            return delay

        self.stdout.write(f"indexing {', '.join(engines)}")
        try:
            while not stop.is_set():
                busy = False
                for ix in indexers:
                    name = ix.engine.name
                    if stop.is_set() or time.monotonic() < retry_at[name]:
                        continue
                    close_old_connections()
                    try:
                        result = ix.run_pass()
                    except EngineUnavailable as exc:
                        delay = back_off(name)
                        log.warning("engine %s unreachable (%s); retry in %.0fs", name, exc, delay)
                        continue
                    except EngineError as exc:
                        failures[name] += 1
                        retry_at[name] = time.monotonic() + 5.0
                        log.warning("engine %s: pass failed: %s", name, exc)
                        continue
                    except OperationalError as exc:
                        # The console's database (locked for longer than its timeout, restarting,
                        # out of disk): nothing of the chunk was committed; try again later.
                        delay = back_off(name)
                        log.error(
                            "engine %s: database error (%s); retry in %.0fs", name, exc, delay
                        )
                        connections.close_all()
                        continue
                    if failures[name]:
                        log.info("engine %s reachable again", name)
                    failures[name] = 0
                    busy = busy or result.busy
                    done = totals[name]
                    done[0] += result.discovered
                    done[1] += result.changed
                    done[2] += result.purged
                    done[3] += result.refreshed + result.hinted
                    # A line per pass would be one a second on a busy engine: sum them up.
                    if time.monotonic() >= report_at[name] and any(done[:3]):
                        log.info("engine %s: %d new, %d changed, %d purged, %d read", name, *done)
                        totals[name] = [0, 0, 0, 0]
                        report_at[name] = time.monotonic() + REPORT_INTERVAL
                if once:
                    failed = sorted(n for n, count in failures.items() if count)
                    if failed:
                        raise CommandError(f"the pass failed for {', '.join(failed)}")
                    break
                if not busy:
                    stop.wait(settings.CONSOLE_INDEXER_IDLE_SLEEP)
        finally:
            for ix in indexers:
                ix.client.close()  # type: ignore[attr-defined]
