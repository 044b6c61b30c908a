"""The console's indexer against a devengine: initial sync rate and the cost of a steady pass.

    python bench/indexer_sync.py [--n 10000] [--steps 6] [--repeat 3]
                                 [--steady-n 100000] [--steady-running 1000] [--passes 7]
                                 [--only initial|steady] [--database postgres] [--record]

Initial sync. A devengine database of N instances is written directly with devengine's own store
code (devengine/store.py), each with the history the engine writes for a workflow of STEPS
steps (activities and one timer; about 20 events at the default): workflowStarted per turn,
executionStarted with a trace context, taskScheduled/taskCompleted, timerCreated/timerFired,
executionCompleted; some failed, some still running. A real devengine process serves it
(`python -m devengine --port P --db FILE`). Then, REPEAT times, alternately:

- raw fetch: GetInstance (with payloads) + GetInstanceHistory for every id through the generated
  stubs on one channel, as many instances in flight as the indexer reads at once
  (CONSOLE_INDEXER_CONCURRENCY), with gRPC futures as the indexer does; and the same reads as
  blocking calls from that many threads, a second (slower) baseline;
- initial sync: `EngineIndexer.run_pass()` until nothing is left to do, into a fresh console
  database (SQLite, migrated once and copied; with --database postgres, a database made from a
  migrated template in a PostgreSQL cluster the run starts on 127.0.0.1), checked afterwards
  (instances, runs, events);
- least storing: the raw fetch plus the least any indexer could store, each instance as one row
  and its events as their protobuf bytes, with sqlite3's executemany into a bare file (no
  Django, runs, counts, change log or schedule). Not a design: a floor under the indexer.

It reports the median instances per second of each and the ratio to the raw fetch (target for the
initial sync: at least 0.8), the CPU seconds per instance of the engine and of this process in
each phase, how many CPUs the raw fetch keeps busy, and the ratio the sync and the floor would
reach if they kept every CPU of the machine busy: on a machine whose CPUs the raw fetch already
fills, that is their ceiling.

Steady state. A devengine database of STEADY_N instances of which STEADY_RUNNING are running, and
a console database with the same instances already indexed (rows, runs, counts, change log and
schedule written by bulk inserts; terminal instances due for their hourly re-read spread over
the coming hour, so the histories in either database are never read by these passes and the
console's copy holds none). Each timed pass runs with every running instance due, the worst
case (normally an unchanged instance backs off to one read per 15 s), one idle sleep of the
runindexer loop apart, so discovery sweeps (ListInstanceIDs pages) land in some of them as they
would. Target: the median pass under one second.

Generated engine databases are cached in the temp directory (keyed by their parameters); every
run copies them. With --record the figures are appended to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from benchlib import REPO_ROOT, RESULTS, append_result, cpu_seconds, free_port, machine

CACHE_DIR = Path(tempfile.gettempdir()) / "console-indexer-bench"
#: Bump when the generated databases change shape.
GENERATOR_VERSION = 1
APP_ID = "bench-app"
ENGINE_NAME = "bench"
WORKFLOW_NAMES = ("order_flow", "billing_flow", "shipping_flow", "refund_flow")
ACTIVITY_NAMES = ("reserve_stock", "charge_card", "pack", "ship", "notify", "invoice", "audit")

if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))


# --- what the engine holds -----------------------------------------------------------------------


@dataclass(frozen=True)
class Spec:
    """One instance of a generated engine database (both databases of the steady state are
    written from the same specs, so the console's copy matches the engine's)."""

    instance_id: str
    name: str
    status: str  # COMPLETED, FAILED or RUNNING
    created_ns: int
    updated_ns: int
    input: str
    output: str | None
    steps_done: int  # steps whose result is in the history


def specs(n: int, running: int, steps: int, seed: int, failed_every: int = 20) -> Iterator[Spec]:
    """Deterministic instances: `running` of them (spread evenly) still running, one in
    `failed_every` failed, the others completed; created over the last day."""
    rng = random.Random(seed)
    now_ns = time.time_ns()
    running_every = n / running if running else 0.0
    next_running = 0.0
    for i in range(n):
        is_running = bool(running) and i >= next_running
        if is_running:
            next_running += running_every
        created = now_ns - rng.randrange(60, 86_400) * 1_000_000_000 - rng.randrange(10**9)
        order = f"o-{seed}-{i:06d}"
        amount = rng.randrange(100, 99_999) / 100
        payload = f'{{"id": "{order}", "qty": {rng.randrange(1, 9)}, "amount": {amount}}}'
        if is_running:
            status, done = "RUNNING", rng.randrange(1, steps)
        elif i % failed_every == failed_every - 1:
            status, done = "FAILED", rng.randrange(1, steps)
        else:
            status, done = "COMPLETED", steps
        # Each step takes 5-40 ms of engine time, the timer 1 s.
        duration = sum(rng.randrange(5, 40) for _ in range(done + 1)) * 1_000_000 + 10**9
        output = None
        if status == "COMPLETED":
            output = f'{{"order": "{order}", "tracking": "trk-{i:06d}", "steps": {steps}}}'
        yield Spec(
            instance_id=f"bench-{seed}-{i:06d}",
            name=WORKFLOW_NAMES[i % len(WORKFLOW_NAMES)],
            status=status,
            created_ns=created,
            updated_ns=created + duration,
            input=payload,
            output=output,
            steps_done=done,
        )


def engine_status(name: str) -> int:
    from devengine import protos as p

    return {"COMPLETED": p.COMPLETED, "FAILED": p.FAILED, "RUNNING": p.RUNNING}[name]


def history_of(spec: Spec, steps: int, trace_parent: str) -> tuple[list[Any], Any]:
    """The events devengine writes for this instance (as PROTOCOL.md and the engine's turn
    commit lay them out), and the failure details of a failed one."""
    from devengine import protos as p

    rng = random.Random(spec.instance_id)
    t = spec.created_ns
    execution_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
    router = p.TaskRouter(sourceAppID=APP_ID)
    timer_step = steps // 2  # one step of the workflow is a durable timer
    events: list[Any] = []

    def event(event_id: int = -1) -> Any:
        nonlocal t
        t += rng.randrange(1, 3) * 1_000_000
        ev = p.HistoryEvent(eventId=event_id)
        ev.timestamp.FromNanoseconds(t)
        events.append(ev)
        return ev

    def turn() -> None:
        event().workflowStarted.SetInParent()

    turn()
    started = event()
    es = started.executionStarted
    es.name = spec.name
    es.input.value = spec.input
    es.workflowInstance.instanceId = spec.instance_id
    es.workflowInstance.executionId.value = execution_id
    es.parentTraceContext.traceParent = trace_parent
    failure = None
    last = spec.steps_done  # the step whose result is the last in the history
    if spec.status == "FAILED" and last == timer_step:
        last += 1  # timers don't fail: the activity after it does
    for step in range(1, steps + 1):
        action = event(step)
        action.router.CopyFrom(router)
        if step == timer_step:
            fire_ns = t + 10**9
            action.timerCreated.fireAt.FromNanoseconds(fire_ns)
            action.timerCreated.name = "cool_down"
        else:
            action.taskScheduled.name = ACTIVITY_NAMES[(step - 1) % len(ACTIVITY_NAMES)]
            action.taskScheduled.input.value = spec.input
            action.taskScheduled.taskExecutionId = str(uuid.UUID(int=rng.getrandbits(128)))
            action.taskScheduled.parentTraceContext.traceParent = trace_parent
        if step > last:
            if spec.status == "RUNNING":
                return events, None  # waiting for this step's result
            break
        turn()
        result = event()
        if step == timer_step:
            result.timerFired.timerId = step
            result.timerFired.fireAt.FromNanoseconds(fire_ns)
            continue
        result.router.CopyFrom(router)
        if spec.status == "FAILED" and step == last:
            result.taskFailed.taskScheduledId = step
            result.taskFailed.taskExecutionId = action.taskScheduled.taskExecutionId
            details = result.taskFailed.failureDetails
            details.errorType = "ValueError"
            details.errorMessage = f"{action.taskScheduled.name}: the carrier refused the parcel"
            details.stackTrace.value = '  File "activities.py", line 42, in ship\n    raise\n'
            failure = p.TaskFailureDetails(
                errorType="TaskFailedError",
                errorMessage=f"{spec.instance_id}: Activity task #{step} failed: "
                f"{details.errorMessage}",
            )
            break
        result.taskCompleted.taskScheduledId = step
        result.taskCompleted.taskExecutionId = action.taskScheduled.taskExecutionId
        result.taskCompleted.result.value = f'{{"step": {step}, "ok": true}}'
    done = event(steps + 1)
    done.router.CopyFrom(router)
    ec = done.executionCompleted
    if spec.status == "FAILED":
        ec.workflowStatus = p.FAILED
        ec.failureDetails.CopyFrom(failure)
    else:
        ec.workflowStatus = p.COMPLETED
        ec.result.value = spec.output or ""
    return events, failure


def build_engine_db(path: Path, all_specs: list[Spec], steps: int, full_history_for: str) -> int:
    """Writes the instances with devengine's Store; returns the number of history events.

    ``full_history_for``: "all" builds every history event by event; "running" builds only the
    running instances' and gives the others a copy of one generated history (same bytes for
    every terminal instance but its executionStarted), which is enough for passes that never
    read them and keeps a 100,000-instance database quick to write."""
    from devengine import protos as p
    from devengine.store import InstanceRow, Store

    tmp = path.with_suffix(".partial")
    for suffix in ("", "-wal", "-shm"):
        Path(f"{tmp}{suffix}").unlink(missing_ok=True)
    store = Store(str(tmp))
    templates: dict[str, tuple[list[bytes], Any]] = {}
    total = 0
    chunk = 2000
    for start in range(0, len(all_specs), chunk):
        with store.transaction():
            for spec in all_specs[start : start + chunk]:
                rng = random.Random(spec.instance_id + "/trace")
                trace = f"00-{rng.getrandbits(128):032x}-{rng.getrandbits(64):016x}-01"
                if full_history_for == "all" or spec.status == "RUNNING":
                    events, failure = history_of(spec, steps, trace)
                    blobs = [e.SerializeToString() for e in events]
                else:
                    if spec.status not in templates:
                        events, failure = history_of(spec, steps, trace)
                        templates[spec.status] = ([e.SerializeToString() for e in events], failure)
                    blobs, failure = templates[spec.status]
                    started = p.HistoryEvent.FromString(blobs[1])
                    started.executionStarted.workflowInstance.instanceId = spec.instance_id
                    blobs = [blobs[0], started.SerializeToString(), *blobs[2:]]
                started_event = p.HistoryEvent.FromString(blobs[1])
                row = InstanceRow(
                    seq=0,
                    instance_id=spec.instance_id,
                    name=spec.name,
                    status=engine_status(spec.status),
                    execution_id=started_event.executionStarted.workflowInstance.executionId.value,
                    created_ns=spec.created_ns,
                    updated_ns=spec.updated_ns,
                    started_ns=spec.created_ns + 1_000_000,
                    completed_ns=None if spec.status == "RUNNING" else spec.updated_ns,
                    scheduled_ns=None,
                    input=spec.input,
                    output=spec.output,
                    custom_status=None,
                    failure=failure.SerializeToString() if failure is not None else None,
                    parent_instance_id=None,
                    trace_context=started_event.executionStarted.parentTraceContext.SerializeToString(),
                    needs_turn=0,
                )
                store.insert_instance(row)
                store.append_history(spec.instance_id, 0, blobs)
                total += len(blobs)
    store.close()
    for suffix in ("-wal", "-shm"):
        Path(f"{tmp}{suffix}").unlink(missing_ok=True)
    tmp.rename(path)
    return total


def cached_engine_db(
    kind: str, n: int, running: int, steps: int, full_history_for: str
) -> tuple[Path, list[Spec], float]:
    """The generated engine database (from the cache, or written now), its specs, and the
    seconds spent writing it (0 when cached)."""
    seed = {"initial": 1, "steady": 2}[kind]
    all_specs = list(specs(n, running, steps, seed))
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    path = CACHE_DIR / f"{kind}-v{GENERATOR_VERSION}-n{n}-r{running}-s{steps}.sqlite3"
    spent = 0.0
    stamp = path.with_suffix(".json")
    if not path.exists() or not stamp.exists():
        began = time.perf_counter()
        build_engine_db(path, all_specs, steps, full_history_for)
        spent = time.perf_counter() - began
        # Times are drawn relative to "now": the specs that match the file are kept with it.
        stamp.write_text(json.dumps([dataclasses.astuple(s) for s in all_specs]))
    else:
        all_specs = [Spec(*fields) for fields in json.loads(stamp.read_text())]
    return path, all_specs, spent


# --- processes and measures ----------------------------------------------------------------------


class EngineProcess:
    """A devengine serving a copy of a generated database."""

    def __init__(self, workdir: Path, source_db: Path, label: str):
        self.workdir = workdir
        self.db = workdir / f"{label}-engine.sqlite3"
        shutil.copyfile(source_db, self.db)
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.log = workdir / f"{label}-engine.log"
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> EngineProcess:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable, "-m", "devengine", "--port", str(self.port),
                    "--db", str(self.db), "--app-id", APP_ID, "--log-level", "WARNING",
                ],
                cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        deadline = time.monotonic() + 60
        while not self.answers():
            if time.monotonic() > deadline:
                raise SystemExit(f"the engine did not answer; see {self.log}")
            time.sleep(0.1)
        return self

    def answers(self) -> bool:
        import grpc
        from google.protobuf import empty_pb2

        from engine_bridge.client import pb_grpc

        if self.process and self.process.poll() is not None:
            raise SystemExit(f"devengine exited; see {self.log}")
        with grpc.insecure_channel(self.address) as channel:
            try:
                pb_grpc.TaskHubSidecarServiceStub(channel).Hello(empty_pb2.Empty(), timeout=1)
                return True
            except grpc.RpcError:
                return False

    @property
    def cpu(self) -> float:
        assert self.process is not None
        return cpu_seconds(self.process.pid)

    def __exit__(self, *exc: object) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()


@dataclass
class Timed:
    seconds: float
    engine_cpu: float
    own_cpu: float


def timed(engine: EngineProcess, body: Callable[[], None]) -> Timed:
    engine_cpu, own_cpu = engine.cpu, time.process_time()
    began = time.perf_counter()
    body()
    seconds = time.perf_counter() - began
    return Timed(seconds, engine.cpu - engine_cpu, time.process_time() - own_cpu)


def _stub(address: str) -> tuple[Any, Any]:
    import grpc

    from engine_bridge.client import pb_grpc

    channel = grpc.insecure_channel(
        address, [("grpc.max_receive_message_length", 256 * 1024 * 1024)]
    )
    return channel, pb_grpc.TaskHubSidecarServiceStub(channel)


def raw_fetch(address: str, ids: list[str], concurrency: int) -> None:
    """GetInstance (with payloads) + GetInstanceHistory of every id through the generated stubs
    on one channel, `concurrency` instances in flight, the way the indexer reads: gRPC futures,
    each finished instance starting the next, no thread waiting on a call."""
    import threading

    from engine_bridge.client import pb

    channel, stub = _stub(address)
    todo = iter(ids)
    lock = threading.Lock()
    finished = threading.Event()
    left = [len(ids)]
    failed: list[BaseException] = []

    def start() -> None:
        with lock:
            instance_id = next(todo, None)
        if instance_id is None:
            return
        request = pb.GetInstanceRequest(instanceId=instance_id, getInputsAndOutputs=True)
        stub.GetInstance.future(request, timeout=30).add_done_callback(
            lambda f: state_read(instance_id, f)
        )

    def state_read(instance_id: str, future: Any) -> None:
        try:
            assert future.result().exists
        except BaseException as exc:  # noqa: BLE001 - reported by the caller
            failed.append(exc)
        request = pb.GetInstanceHistoryRequest(instanceId=instance_id)
        stub.GetInstanceHistory.future(request, timeout=30).add_done_callback(history_read)

    def history_read(future: Any) -> None:
        try:
            future.result()
        except BaseException as exc:  # noqa: BLE001 - reported by the caller
            failed.append(exc)
        with lock:
            left[0] -= 1
            if not left[0]:
                finished.set()
        start()

    try:
        for _ in range(min(concurrency, len(ids))):
            start()
        finished.wait()
    finally:
        channel.close()
    if failed:
        raise SystemExit(f"raw fetch: {failed[0]!r}")


def raw_fetch_threads(address: str, ids: list[str], concurrency: int) -> None:
    """The same reads as blocking calls from `concurrency` threads (how the indexer read until
    it moved to futures; about a tenth slower here)."""
    from engine_bridge.client import pb

    channel, stub = _stub(address)

    def fetch(instance_id: str) -> int:
        state = stub.GetInstance(
            pb.GetInstanceRequest(instanceId=instance_id, getInputsAndOutputs=True), timeout=30
        )
        assert state.exists
        history = stub.GetInstanceHistory(
            pb.GetInstanceHistoryRequest(instanceId=instance_id), timeout=30
        )
        return len(history.events)

    try:
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            list(pool.map(fetch, ids))
    finally:
        channel.close()


def least_storing(address: str, ids: list[str], concurrency: int, db: Path) -> None:
    """The raw fetch plus the least an indexer could store: per instance one row of its state
    and its events as their protobuf bytes (with position, type and time), written with
    sqlite3's executemany in transactions of 200 instances by this thread while gRPC's thread
    reads, into a bare file with no Django, runs, counts, change log or schedule. Not a design:
    a floor under what any indexer of events in rows costs on this machine."""
    import queue
    import sqlite3
    import threading

    from engine_bridge.client import pb

    channel, stub = _stub(address)
    todo = iter(ids)
    lock = threading.Lock()
    answers: queue.SimpleQueue[tuple[str, Any, Any] | None] = queue.SimpleQueue()

    def start() -> None:
        with lock:
            instance_id = next(todo, None)
        if instance_id is None:
            answers.put(None)
            return
        request = pb.GetInstanceRequest(instanceId=instance_id, getInputsAndOutputs=True)
        stub.GetInstance.future(request, timeout=30).add_done_callback(
            lambda f: state_read(instance_id, f)
        )

    def state_read(instance_id: str, future: Any) -> None:
        state = future.result()
        request = pb.GetInstanceHistoryRequest(instanceId=instance_id)
        stub.GetInstanceHistory.future(request, timeout=30).add_done_callback(
            lambda f: (answers.put((instance_id, state, f.result())), start())
        )

    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")  # as the console's SQLite
    conn.execute(
        "CREATE TABLE instance (id INTEGER PRIMARY KEY, instance_id TEXT UNIQUE, name TEXT,"
        " status INT, created INT, updated INT, input TEXT, output TEXT, custom_status TEXT)"
    )
    conn.execute(
        "CREATE TABLE event (instance INT, position INT, event_id INT, type TEXT, time INT,"
        " body BLOB, PRIMARY KEY (instance, position)) WITHOUT ROWID"
    )
    key = 0

    def write(batch: list[tuple[str, Any, Any]]) -> None:
        nonlocal key
        instances, events = [], []
        for instance_id, answer, history in batch:
            key += 1
            s = answer.workflowState
            instances.append(
                (key, instance_id, s.name, s.workflowStatus, s.createdTimestamp.ToNanoseconds(),
                 s.lastUpdatedTimestamp.ToNanoseconds(), s.input.value, s.output.value,
                 s.customStatus.value)
            )  # fmt: skip
            events += [
                (key, i, e.eventId, e.WhichOneof("eventType"), e.timestamp.ToNanoseconds(),
                 e.SerializeToString())
                for i, e in enumerate(history.events)
            ]  # fmt: skip
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO instance VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", instances)
        conn.executemany("INSERT INTO event VALUES (?, ?, ?, ?, ?, ?)", events)
        conn.execute("COMMIT")

    try:
        for _ in range(min(concurrency, len(ids))):
            start()
        ended, batch = 0, []
        while ended < min(concurrency, len(ids)):
            item = answers.get()
            if item is None:
                ended += 1
            else:
                batch.append(item)
            if len(batch) >= 200 or (batch and item is None):
                write(batch)
                batch = []
        if batch:
            write(batch)
        stored = conn.execute("SELECT COUNT(*) FROM instance").fetchone()[0]
        if stored != len(ids):
            raise SystemExit(f"least storing: {stored} instances stored of {len(ids)}")
    finally:
        conn.close()
        channel.close()


def _on_postgres() -> bool:
    """With --database postgres the cluster's databases stand for this module's SQLite files,
    named after their stems."""
    from django.db import connections

    return connections["default"].vendor == "postgresql"


def _pg_name(path: Path) -> str:
    return path.name.split(".")[0].replace("-", "_")


def _pg_admin(*statements: str) -> None:
    """Statements on the cluster's maintenance database (CREATE/DROP DATABASE)."""
    import psycopg
    from django.db import connections

    db = connections["default"].settings_dict
    conninfo = psycopg.conninfo.make_conninfo(
        host=db["HOST"], port=db["PORT"], user=db["USER"], dbname="postgres"
    )
    with psycopg.connect(conninfo, autocommit=True) as conn:
        for sql in statements:
            conn.execute(sql)  # type: ignore[arg-type]


def use_database(path: Path) -> None:
    from django.db import connections

    connections.close_all()
    name = _pg_name(path) if _on_postgres() else str(path)
    connections["default"].settings_dict["NAME"] = name


_held: list[Any] = []  # the engine lock of the indexer made last


def make_indexer(address: str, concurrency: int) -> Any:
    """An indexer as runindexer runs it: holding the engine's lock, each write checking its
    token."""
    from django.conf import settings

    from engine_bridge.client import EngineClient
    from engine_bridge.config import EngineConfig
    from engine_bridge.indexer import EngineIndexer, Limits, sync_engines
    from engine_bridge.locks import EngineLock

    config = EngineConfig(name=ENGINE_NAME, address=address)
    (engine,) = sync_engines([config])
    client = EngineClient(
        config,
        timeout=settings.CONSOLE_ENGINE_TIMEOUT,
        payload_limit=settings.CONSOLE_PAYLOAD_LIMIT,
    )
    limits = Limits.from_settings()
    limits.concurrency = concurrency
    indexer = EngineIndexer(engine, client, limits)
    while _held:
        _held.pop().release()
    lock = EngineLock(engine.pk, engine.name)
    lock.acquire()
    _held.append(lock)
    indexer.holder_token = lock.token
    return indexer


def initial_sync(address: str, concurrency: int, expected: int) -> int:
    """run_pass() until the indexer has nothing left to do; returns the passes it took."""
    from workflows_ui.models import Instance

    indexer = make_indexer(address, concurrency)
    passes = 0
    try:
        while True:
            passes += 1
            result = indexer.run_pass()
            if result.errors:
                raise SystemExit(f"indexer pass reported {result.errors} errors")
            if not result.busy and Instance.objects.count() >= expected:
                return passes
    finally:
        indexer.client.close()


def check_initial(all_specs: list[Spec], events: int) -> None:
    from workflows_ui.models import HistoryEvent, Instance, Run, StatusCount

    counts = {
        "instances": (Instance.objects.count(), len(all_specs)),
        "runs": (Run.objects.count(), len(all_specs)),
        "events": (HistoryEvent.objects.count(), events),
        "counted": (sum(StatusCount.objects.values_list("count", flat=True)), len(all_specs)),
    }
    wrong = {k: v for k, v in counts.items() if v[0] != v[1]}
    if wrong:
        raise SystemExit(f"the initial sync stored the wrong numbers (got, expected): {wrong}")


def migrated_template(workdir: Path) -> Path:
    """An empty, migrated console database to copy for each run."""
    from django.core.management import call_command

    path = workdir / "console-template.sqlite3"
    if _on_postgres():
        _pg_admin(f"CREATE DATABASE {_pg_name(path)}")
    use_database(path)
    call_command("migrate", verbosity=0)
    from django.db import connection

    if connection.vendor == "sqlite":
        with connection.cursor() as cur:
            cur.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    use_database(workdir / "unused.sqlite3")
    return path


def fresh_console_db(template: Path, target: Path) -> Path:
    if _on_postgres():
        use_database(template.parent / "unused.sqlite3")  # no connection to either left open
        name = _pg_name(target)
        _pg_admin(
            f"DROP DATABASE IF EXISTS {name} WITH (FORCE)",
            f"CREATE DATABASE {name} TEMPLATE {_pg_name(template)}",
        )
        use_database(target)
        return target
    for suffix in ("", "-wal", "-shm"):
        Path(f"{target}{suffix}").unlink(missing_ok=True)
    shutil.copyfile(template, target)
    use_database(target)
    return target


def measure_initial(args: argparse.Namespace, workdir: Path, template: Path) -> dict[str, Any]:
    source, all_specs, built = cached_engine_db(
        "initial", args.n, args.running, args.steps, full_history_for="all"
    )
    ids = [s.instance_id for s in all_specs]
    raw: list[Timed] = []
    threaded: list[Timed] = []
    synced: list[Timed] = []
    least: list[Timed] = []
    passes: list[int] = []
    with EngineProcess(workdir, source, "initial") as engine:
        # Warm the engine's file and row caches once so both measures see the same engine.
        raw_fetch(engine.address, ids, args.concurrency)
        events = engine_event_count(source)
        for round_ in range(args.repeat):
            raw.append(timed(engine, lambda: raw_fetch(engine.address, ids, args.concurrency)))
            threaded.append(
                timed(engine, lambda: raw_fetch_threads(engine.address, ids, args.concurrency))
            )
            fresh_console_db(template, workdir / f"console-initial-{round_}.sqlite3")

            def sync() -> None:
                passes.append(initial_sync(engine.address, args.concurrency, len(ids)))

            synced.append(timed(engine, sync))
            check_initial(all_specs, events)
            use_database(workdir / "unused.sqlite3")
            for suffix in ("", "-wal", "-shm"):
                Path(f"{workdir}/console-initial-{round_}.sqlite3{suffix}").unlink(missing_ok=True)
            floor_db = workdir / f"least-{round_}.sqlite3"
            body = functools.partial(least_storing, engine.address, ids, args.concurrency, floor_db)
            least.append(timed(engine, body))
            for suffix in ("", "-wal", "-shm"):
                Path(f"{floor_db}{suffix}").unlink(missing_ok=True)
            print(
                f"  round {round_ + 1}: raw fetch {len(ids) / raw[-1].seconds:.0f}/s "
                f"(threads {len(ids) / threaded[-1].seconds:.0f}/s), "
                f"initial sync {len(ids) / synced[-1].seconds:.0f}/s, "
                f"least storing {len(ids) / least[-1].seconds:.0f}/s",
                flush=True,
            )
    n = len(ids)
    raw_rate = statistics.median(n / t.seconds for t in raw)
    sync_rate = statistics.median(n / t.seconds for t in synced)
    return {
        "n": n,
        "running": args.running,
        "events": events,
        "concurrency": args.concurrency,
        "repeat": args.repeat,
        "generated_s": built,
        "raw_rate": raw_rate,
        "threaded_rate": statistics.median(n / t.seconds for t in threaded),
        "sync_rate": sync_rate,
        "ratio": sync_rate / raw_rate,
        "ratios": [(n / s.seconds) / (n / r.seconds) for r, s in zip(raw, synced, strict=True)],
        "raw_engine_ms": statistics.median(t.engine_cpu for t in raw) / n * 1000,
        "raw_own_ms": statistics.median(t.own_cpu for t in raw) / n * 1000,
        "threaded_own_ms": statistics.median(t.own_cpu for t in threaded) / n * 1000,
        "sync_engine_ms": statistics.median(t.engine_cpu for t in synced) / n * 1000,
        "sync_own_ms": statistics.median(t.own_cpu for t in synced) / n * 1000,
        "least_rate": statistics.median(n / t.seconds for t in least),
        "least_ratios": [
            (n / f.seconds) / (n / r.seconds) for r, f in zip(raw, least, strict=True)
        ],
        "least_engine_ms": statistics.median(t.engine_cpu for t in least) / n * 1000,
        "least_own_ms": statistics.median(t.own_cpu for t in least) / n * 1000,
        "cpus": os.cpu_count() or 1,
        "passes": passes,
    }


def engine_event_count(db: Path) -> int:
    import sqlite3

    # The engine holds its own copy exclusively: count in the generated file.
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return int(conn.execute("SELECT COUNT(*) FROM history").fetchone()[0])
    finally:
        conn.close()


# --- steady state --------------------------------------------------------------------------------


def dt(ns: int) -> datetime:
    """Engine nanoseconds as the console stores them (microseconds, like mappers.timestamp)."""
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=ns // 1000)


def build_console_db(template: Path, target: Path, all_specs: list[Spec], engine_db: Path) -> None:
    """The console's copy of an engine's instances, written in bulk as the indexer would
    have left it (rows, one run each, counts, one change-log row each, the schedule)."""
    import sqlite3
    from collections import Counter

    from django.db import transaction
    from django.utils import timezone

    from engine_bridge.config import EngineConfig
    from engine_bridge.indexer import sync_engines
    from workflows_ui.models import ChangeKind, ChangeLog, Instance, InstanceCheck, Run, StatusCount

    fresh_console_db(template, target)
    (engine,) = sync_engines([EngineConfig(name=ENGINE_NAME, address="127.0.0.1:1")])
    engine.app_id = APP_ID
    engine.supports_list = engine.supports_history = engine.supports_rerun = True
    engine.save()
    source = sqlite3.connect(f"file:{engine_db}?mode=ro", uri=True)
    execution = dict(source.execute("SELECT instance_id, execution_id FROM instances"))
    source.close()
    now = timezone.now()
    rng = random.Random(3)
    chunk = 5000
    for start in range(0, len(all_specs), chunk):
        part = all_specs[start : start + chunk]
        with transaction.atomic():
            rows = Instance.objects.bulk_create(
                [
                    Instance(
                        engine=engine,
                        instance_id=s.instance_id,
                        name=s.name,
                        status=s.status,
                        created_at=dt(s.created_ns),
                        last_updated_at=dt(s.updated_ns),
                        started_at=dt(s.created_ns + 1_000_000),
                        completed_at=None if s.status == "RUNNING" else dt(s.updated_ns),
                        input=s.input,
                        input_size=len(s.input),
                        output=s.output or "",
                        output_size=len(s.output or ""),
                        current_execution_id=execution[s.instance_id],
                        first_seen_at=now - timedelta(hours=1),
                        indexed_at=now - timedelta(minutes=1),
                    )
                    for s in part
                ]
            )
            if rows[0].pk is None:  # backends that don't return ids
                by_id = dict(
                    Instance.objects.filter(
                        engine=engine, instance_id__in=[s.instance_id for s in part]
                    ).values_list("instance_id", "pk")
                )
                for row in rows:
                    row.pk = by_id[row.instance_id]
            Run.objects.bulk_create(
                [
                    Run(
                        instance=row,
                        execution_id=row.current_execution_id,
                        ordinal=1,
                        name=row.name,
                        status=row.status,
                        started_at=row.started_at,
                        completed_at=row.completed_at,
                        input=row.input,
                        input_size=row.input_size,
                    )
                    for row in rows
                ]
            )
            ChangeLog.objects.bulk_create(
                [
                    ChangeLog(engine=engine, instance=row, kind=ChangeKind.NEW, status=row.status)
                    for row in rows
                ]
            )
            InstanceCheck.objects.bulk_create(
                [
                    InstanceCheck(
                        instance=row,
                        engine=engine,
                        # Running: read again soon; terminal: hourly, spread over the hour.
                        due_at=now
                        + timedelta(
                            seconds=rng.uniform(1, 15)
                            if row.status == "RUNNING"
                            else rng.uniform(60, 3600)
                        ),
                        interval=15.0 if row.status == "RUNNING" else 3600.0,
                    )
                    for row in rows
                ]
            )
    counts = Counter((s.name, s.status) for s in all_specs)
    StatusCount.objects.bulk_create(
        [StatusCount(engine=engine, name=k[0], status=k[1], count=v) for k, v in counts.items()]
    )
    from django.db import connection

    with connection.cursor() as cur:
        if connection.vendor == "sqlite":
            # No ANALYZE: the indexer's own database never gets one.
            cur.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        else:
            cur.execute("ANALYZE")  # as autovacuum does after such a load


def measure_steady(args: argparse.Namespace, workdir: Path, template: Path) -> dict[str, Any]:
    from django.conf import settings
    from django.utils import timezone

    from workflows_ui.models import Engine, Instance, InstanceCheck

    source, all_specs, built = cached_engine_db(
        "steady", args.steady_n, args.steady_running, args.steps, full_history_for="running"
    )
    console_db = workdir / "console-steady.sqlite3"
    began = time.perf_counter()
    build_console_db(template, console_db, all_specs, source)
    console_built = time.perf_counter() - began
    times: list[float] = []
    refreshed: list[int] = []
    listed: list[int] = []
    with EngineProcess(workdir, source, "steady") as engine:
        Engine.objects.filter(name=ENGINE_NAME).update(address=engine.address)
        indexer = make_indexer(engine.address, args.concurrency)
        pages = [0]
        list_instance_ids = indexer.client.list_instance_ids

        def counted(*a: Any, **k: Any) -> Any:
            pages[0] += 1
            return list_instance_ids(*a, **k)

        indexer.client.list_instance_ids = counted
        running = list(
            Instance.objects.filter(engine=indexer.engine, status="RUNNING").values_list(
                "pk", flat=True
            )
        )
        try:
            indexer.run_pass()  # probes the engine, starts a sweep: not timed
            engine_cpu, own_cpu = engine.cpu, 0.0
            for _ in range(args.passes):
                time.sleep(settings.CONSOLE_INDEXER_IDLE_SLEEP)
                # Every running instance due at once (the worst case).
                InstanceCheck.objects.filter(pk__in=running).update(due_at=timezone.now())
                pages[0] = 0
                started, cpu_started = time.perf_counter(), time.process_time()
                result = indexer.run_pass()
                own_cpu += time.process_time() - cpu_started  # the pass only, not the UPDATE
                times.append(time.perf_counter() - started)
                refreshed.append(result.refreshed)
                listed.append(pages[0])
                if result.errors or result.discovered or result.purged or result.changed:
                    raise SystemExit(f"steady pass changed something: {result}")
            engine_cpu = engine.cpu - engine_cpu
        finally:
            indexer.client.close()
    use_database(workdir / "unused.sqlite3")
    return {
        "n": args.steady_n,
        "running": args.steady_running,
        "concurrency": args.concurrency,
        "passes": args.passes,
        "generated_s": built,
        "console_built_s": console_built,
        "median_s": statistics.median(times),
        "max_s": max(times),
        "times": times,
        "refreshed": statistics.median(refreshed),
        "with_listing": sum(1 for n in listed if n),
        "pages": statistics.median(listed),
        "engine_cpu_s": engine_cpu / args.passes,
        "own_cpu_s": own_cpu / args.passes,
    }


# --- report --------------------------------------------------------------------------------------


def table(rows: list[tuple[str, str, str]]) -> str:
    lines = ["| measure | value | target |", "|---|---|---|"]
    lines += [f"| {name} | {value} | {target} |" for name, value, target in rows]
    return "\n".join(lines)


def busy(rate: float, engine_ms: float, own_ms: float) -> float:
    """CPUs kept busy by the engine and this process at ``rate`` instances a second."""
    return rate * (engine_ms + own_ms) / 1000


def bound(r: dict[str, Any], engine_ms: float, own_ms: float) -> float:
    """The ratio to the raw fetch rate a phase costing ``engine_ms + own_ms`` of CPU per instance
    would reach if it kept every CPU of the machine busy (its ceiling on this machine)."""
    return r["cpus"] * 1000 / (engine_ms + own_ms) / r["raw_rate"]


def initial_table(r: dict[str, Any]) -> str:
    ok = "yes" if r["ratio"] >= 0.8 else "no"
    return table(
        [
            ("instances (running)", f"{r['n']} ({r['running']})", ""),
            ("history events", f"{r['events']} ({r['events'] / r['n']:.1f} per instance)", ""),
            ("instances in flight", f"{r['concurrency']}", ""),
            ("rounds", f"{r['repeat']}", ""),
            ("raw fetch (futures, as the indexer), median", f"{r['raw_rate']:.0f}/s", ""),
            ("raw fetch (blocking calls in threads), median", f"{r['threaded_rate']:.0f}/s", ""),
            ("initial sync, median", f"{r['sync_rate']:.0f} instances/s", ""),
            ("sync / raw", f"{r['ratio']:.2f}", f">= 0.8: {ok}"),
            ("sync / raw per round", ", ".join(f"{x:.2f}" for x in r["ratios"]), ""),
            ("sync / raw in threads", f"{r['sync_rate'] / r['threaded_rate']:.2f}", ""),
            ("engine CPU / instance, raw", f"{r['raw_engine_ms']:.2f} ms", ""),
            ("engine CPU / instance, sync", f"{r['sync_engine_ms']:.2f} ms", ""),
            ("client CPU / instance, raw (futures)", f"{r['raw_own_ms']:.2f} ms", ""),
            ("client CPU / instance, raw (threads)", f"{r['threaded_own_ms']:.2f} ms", ""),
            ("indexer CPU / instance, sync", f"{r['sync_own_ms']:.2f} ms", ""),
            ("least storing, median", f"{r['least_rate']:.0f} instances/s", ""),
            ("least storing / raw", f"{r['least_rate'] / r['raw_rate']:.2f}", ""),
            ("least storing / raw per round", ", ".join(f"{x:.2f}" for x in r["least_ratios"]), ""),
            ("engine CPU / instance, least storing", f"{r['least_engine_ms']:.2f} ms", ""),
            ("own CPU / instance, least storing", f"{r['least_own_ms']:.2f} ms", ""),
            (
                "raw fetch: CPUs busy",
                f"{busy(r['raw_rate'], r['raw_engine_ms'], r['raw_own_ms']):.2f} of {r['cpus']}",
                "",
            ),
            (
                "sync / raw, every CPU busy",
                f"{bound(r, r['sync_engine_ms'], r['sync_own_ms']):.2f}",
                "",
            ),
            (
                "least storing / raw, every CPU busy",
                f"{bound(r, r['least_engine_ms'], r['least_own_ms']):.2f}",
                "",
            ),
        ]
    )


def steady_table(r: dict[str, Any]) -> str:
    ok = "yes" if r["median_s"] < 1.0 else "no"
    return table(
        [
            ("indexed instances (running)", f"{r['n']} ({r['running']})", ""),
            ("instances in flight", f"{r['concurrency']}", ""),
            ("instances read per pass, median", f"{r['refreshed']:.0f}", ""),
            ("passes (with ListInstanceIDs pages)", f"{r['passes']} ({r['with_listing']})", ""),
            ("ListInstanceIDs pages per pass, median", f"{r['pages']:.0f}", ""),
            ("pass, median", f"{r['median_s'] * 1000:.0f} ms", f"< 1 s: {ok}"),
            ("pass, max", f"{r['max_s'] * 1000:.0f} ms", ""),
            ("engine CPU / pass", f"{r['engine_cpu_s'] * 1000:.0f} ms", ""),
            ("indexer CPU / pass", f"{r['own_cpu_s'] * 1000:.0f} ms", ""),
        ]
    )


def record(text: str, command: str, load: tuple[float, float]) -> None:
    line = f"{machine()}, load average {load[0]:.2f} before the run, {load[1]:.2f} after"
    append_result("indexer_sync", command, line, text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=10_000, help="instances to sync (10000)")
    parser.add_argument("--running", type=int, default=500, help="of which still running (500)")
    parser.add_argument(
        "--steps", type=int, default=6, help="steps per workflow (6: 21 events when complete)"
    )
    parser.add_argument("--repeat", type=int, default=3, help="rounds of raw fetch + sync (3)")
    parser.add_argument("--steady-n", type=int, default=100_000, help="indexed instances")
    parser.add_argument("--steady-running", type=int, default=1000, help="of which running")
    parser.add_argument("--passes", type=int, default=7, help="timed steady passes (7)")
    parser.add_argument(
        "--concurrency",
        type=int,
        default=None,
        help="instances in flight (default: CONSOLE_INDEXER_CONCURRENCY, as the indexer)",
    )
    parser.add_argument("--only", choices=["initial", "steady"], help="run one of the two")
    parser.add_argument("--database", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--record", action="store_true", help="append to bench/RESULTS.md")
    args = parser.parse_args()

    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="indexer-bench-") as tmp, ExitStack() as stack:
        workdir = Path(tmp)
        os.environ["DJANGO_SETTINGS_MODULE"] = "console.settings"
        os.environ["DATABASE_URL"] = f"sqlite:///{workdir / 'unused.sqlite3'}"
        if args.database == "postgres":
            from detail_page import start_postgres

            os.environ["DATABASE_URL"] = start_postgres(stack)
        os.environ.setdefault("CONSOLE_LOG_LEVEL", "WARNING")
        import django

        django.setup()
        from django.conf import settings

        from engine_bridge.indexer import tune_gc

        tune_gc()  # as manage.py runindexer does (the raw fetch runs with it too)
        if args.concurrency is None:
            args.concurrency = settings.CONSOLE_INDEXER_CONCURRENCY
        template = migrated_template(workdir)
        from detail_page import database_name

        use_database(template)
        parts = [f"Console database: {database_name()}"]
        use_database(workdir / "unused.sqlite3")
        if args.only in (None, "initial"):
            print(f"initial sync of {args.n} instances", flush=True)
            initial = measure_initial(args, workdir, template)
            parts.append("Initial sync\n\n" + initial_table(initial))
            print(parts[-1] + "\n", flush=True)
        if args.only in (None, "steady"):
            print(f"steady passes over {args.steady_n} instances", flush=True)
            steady = measure_steady(args, workdir, template)
            parts.append("Steady state\n\n" + steady_table(steady))
            print(parts[-1], flush=True)
            print("pass times (ms): " + ", ".join(f"{t * 1000:.0f}" for t in steady["times"]))
    load_after = os.getloadavg()[0]
    print(
        f"\nload average {load_before:.2f} before, {load_after:.2f} after, on {os.cpu_count()} CPUs"
    )
    if args.record:
        command = "python bench/indexer_sync.py " + " ".join(
            a for a in sys.argv[1:] if a != "--record"
        )
        record("\n\n".join(parts), command.strip(), (load_before, load_after))
        print(f"appended to {RESULTS.relative_to(REPO_ROOT)}")


if __name__ == "__main__":
    main()
