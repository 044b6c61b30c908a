"""Durability with real processes: kill -9 the engine or a worker with work in flight."""

from __future__ import annotations

import json
import time
from collections import Counter
from datetime import UTC

import pytest
from engine_support import (
    STATUS,
    Engine,
    WorkerProcess,
    as_dicts,
    kind,
    of_kind,
    turn_start,
    unique_id,
    wait_for,
)

pytestmark = pytest.mark.slow


def assert_nothing_doubled(events) -> None:
    action_ids = [e.eventId for e in events if e.eventId != -1]
    assert len(action_ids) == len(set(action_ids)), (
        f"an action event was written twice: {action_ids}"
    )
    answered = Counter(
        e.taskCompleted.taskScheduledId
        if kind(e) == "taskCompleted"
        else e.taskFailed.taskScheduledId
        for e in events
        if kind(e) in ("taskCompleted", "taskFailed")
    )
    assert all(n == 1 for n in answered.values()), (
        f"an activity result was recorded twice: {answered}"
    )
    fired = Counter(e.timerFired.timerId for e in of_kind(events, "timerFired"))
    assert all(n == 1 for n in fired.values()), f"a timer fired twice: {fired}"
    assert len(of_kind(events, "executionStarted")) == 1
    assert len(of_kind(events, "executionCompleted")) <= 1


def test_a_killed_engine_restarts_on_the_same_file_and_finishes_every_workflow(
    own_engine, worker_processes, tmp_path
):
    own_engine.start()
    worker_processes.append(WorkerProcess(own_engine.address, tmp_path / "worker.log").start())
    engine = Engine(own_engine.address)
    wait_for(lambda: _worker_connected(engine), timeout=30, what="the worker to connect")

    chains = [unique_id("kill-chain") for _ in range(4)]
    timers = [unique_id("kill-timer") for _ in range(2)]
    waiter = unique_id("kill-waiter")
    for instance_id in chains:
        engine.start("slow_steps", instance_id, input=json.dumps({"steps": 3, "seconds": 0.4}))
    for instance_id in timers:
        engine.start("sleep_then_return", instance_id, input="3")
    engine.start("wait_forever", waiter)
    everything = [*chains, *timers, waiter]

    # Let some activities finish and others be in flight, then pull the plug.
    for instance_id in chains:
        engine.wait_history(instance_id, lambda events: of_kind(events, "taskCompleted"))
    before = {instance_id: engine.history(instance_id) for instance_id in everything}
    timer_due = {
        i: of_kind(before[i], "timerCreated")[0].timerCreated.fireAt.ToDatetime(tzinfo=UTC)
        for i in timers
    }
    engine.close()
    own_engine.kill()

    own_engine.start()
    engine = Engine(own_engine.address)
    try:
        engine.raise_event(waiter, "go", '"after restart"')
        deadline = time.monotonic() + 60
        finals = {}
        for instance_id in everything:
            remaining = max(1.0, deadline - time.monotonic())
            finals[instance_id] = engine.wait_done(instance_id, timeout=remaining)

        for instance_id in everything:
            state = finals[instance_id].workflowState
            assert state.workflowStatus == STATUS["COMPLETED"], instance_id
            after = engine.history(instance_id)
            # Every event committed before the kill is still there, unchanged and in place.
            assert as_dicts(after[: len(before[instance_id])]) == as_dicts(before[instance_id])
            assert_nothing_doubled(after)
        for instance_id in chains:
            output = json.loads(finals[instance_id].workflowState.output.value)
            assert [step["value"] for step in output] == [0, 1, 2]
        for instance_id in timers:
            events = engine.history(instance_id)
            assert [f.timerFired.timerId for f in of_kind(events, "timerFired")] == [1]
            fired_at = turn_start(events, [kind(e) for e in events].index("timerFired"))
            assert fired_at >= timer_due[instance_id], "a timer fired before it was due"
        assert finals[waiter].workflowState.output.value == '"after restart"'
    finally:
        engine.close()


def test_work_handed_to_a_killed_worker_is_handed_out_again(own_engine, worker_processes, tmp_path):
    own_engine.start()
    markers = tmp_path / "markers"
    markers.mkdir()
    first = WorkerProcess(own_engine.address, tmp_path / "first.log").start()
    worker_processes.append(first)
    engine = Engine(own_engine.address)
    try:
        wait_for(lambda: _worker_connected(engine), timeout=30, what="the worker to connect")
        instance_id = unique_id("orphan")
        args = {"steps": 1, "seconds": 60, "marker_dir": str(markers)}
        engine.start("slow_steps", instance_id, input=json.dumps(args))

        wait_for(
            lambda: list(markers.glob(f"*-{first.pid}")), timeout=20, what="the activity to start"
        )
        first.kill()
        # The replacement runs the same activity without the long sleep.
        second = WorkerProcess(
            own_engine.address, tmp_path / "second.log", env={"SLOW_ECHO_SECONDS": "0"}
        ).start()
        worker_processes.append(second)

        done = engine.wait_done(instance_id, timeout=45)

        assert done.workflowState.workflowStatus == STATUS["COMPLETED"]
        (result,) = json.loads(done.workflowState.output.value)
        assert result["pid"] == second.pid
        events = engine.history(instance_id)
        assert_nothing_doubled(events)
        assert [c.taskCompleted.taskScheduledId for c in of_kind(events, "taskCompleted")] == [1]
    finally:
        engine.close()


def _worker_connected(engine: Engine) -> bool:
    """True once a workflow runs to completion, which needs a connected worker."""
    instance_id = unique_id("probe")
    try:
        engine.start("hello_world", instance_id, input='"probe"', timeout=5)
        return (
            engine.wait_done(instance_id, timeout=5).workflowState.workflowStatus
            == STATUS["COMPLETED"]
        )
    except Exception:
        return False


def test_reads_answer_committed_state_only(tmp_path):
    """Worker results are committed in batches a few milliseconds later. A read (GetInstance,
    GetInstanceHistory, ListInstanceIDs) commits the open batch before answering, as daprd only
    ever answers committed state: a kill right after cannot take back what a client was told."""
    import asyncio

    from devengine.engine import Engine as Core
    from devengine.store import InstanceRow, Store

    async def scenario() -> None:
        store = Store(str(tmp_path / "reads.sqlite3"))
        core = Core(store)
        reads = [
            lambda: core.get_instance("i-0", True),
            lambda: core.history("i-0"),
            lambda: core.list_ids(10, ""),
        ]
        try:
            for n, read in enumerate(reads):
                with store.transaction():
                    store.insert_instance(
                        InstanceRow(0, f"i-{n}", "w", 0, f"e-{n}", created_ns=1, updated_ns=1)
                    )
                assert store.conn.in_transaction  # the batch waits for its commit
                read()
                assert not store.conn.in_transaction, read
        finally:
            store.close()

    asyncio.run(scenario())


def test_the_state_file_is_readable_by_its_owner_only(tmp_path):
    """Every workflow's payloads are in it: not for the machine's other accounts (the -wal and
    -shm files SQLite makes take the database's mode)."""
    import os

    from devengine.store import Store

    old = os.umask(0o022)
    try:
        store = Store(str(tmp_path / "engine.sqlite3"))
        with store.transaction():
            store.conn.execute("CREATE TABLE probe (x)")
        made = sorted(p.name for p in tmp_path.iterdir())
        modes = {p.name: p.stat().st_mode & 0o777 for p in tmp_path.iterdir()}
        store.conn.close()
    finally:
        os.umask(old)
    assert "engine.sqlite3-wal" in made
    assert set(modes.values()) == {0o600}, modes


def test_a_stopped_engine_has_ended_its_timer_and_purge_loops_before_its_store_closes(tmp_path):
    """The store is closed right after the engine stops: a loop still running then (its cancel
    pending, or lost as a wakeup fired with it) would fire a timer or purge on a closed file."""
    import asyncio

    from devengine.engine import Engine as Core
    from devengine.engine import now_ns
    from devengine.store import Store

    async def scenario() -> None:
        store = Store(str(tmp_path / "engine.sqlite3"))
        core = Core(store)
        await core.start()
        assert core._purge_wakeup is not None
        # Both loops wait for a due time an hour away...
        hour = 3600 * 10**9
        core._add_timer(now_ns() + hour, "later")
        core._next_purge_ns = now_ns() + hour
        core._purge_wakeup.set()
        await asyncio.sleep(0.05)
        # ...and are woken in the same moment as they are cancelled.
        core._add_timer(now_ns(), "sleeper")
        core._purge_wakeup.set()
        async with asyncio.timeout(5):
            await core.stop()
        loops = [core._timer_task, core._purge_task]
        store.close()
        assert all(task is not None and task.done() for task in loops), loops

    asyncio.run(scenario())
