"""The state retention policy (daprd's spec.workflow.stateRetentionPolicy): a workflow that
ended is purged once its state's duration has passed since it ended, and not before."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager

import grpc
import pytest
from dapr.ext.workflow import WorkflowRuntime
from engine_support import (
    Engine,
    EngineProcess,
    of_kind,
    rpc_error,
    split_address,
    unique_id,
    wait_for,
)
from engine_workflows import register_all

from devengine.retention import RetentionPolicy, parse_go_duration, parse_retention

# Longer than any wait here: a state kept this long is never purged during a test.
FOR_GOOD = "1h"
# How late after its due time a purge may be seen (a busy machine, the polling).
SLACK = 3.0


@contextmanager
def engine_with_worker(process: EngineProcess) -> Iterator[Engine]:
    """The engine started, an SDK worker on it, and stubs to call it."""
    process.start()
    host, port = split_address(process.address)
    runtime = WorkflowRuntime(host=host, port=port)
    register_all(runtime)
    runtime.start()
    engine = Engine(process.address)
    try:
        yield engine
    finally:
        runtime.shutdown()
        engine.close()


def ended_at(engine: Engine, instance_id: str) -> float:
    """When the instance's run ended (its executionCompleted), in seconds since the epoch."""
    engine.wait_done(instance_id)
    (completed,) = of_kind(engine.history(instance_id), "executionCompleted")
    return completed.timestamp.ToNanoseconds() / 1e9


def watch_until_purged(engine: Engine, instance_id: str, due: float) -> None:
    """Asserts the instance is there at every look before `due` and gone soon after it."""
    deadline = due + SLACK
    while time.time() < deadline:
        exists = engine.get(instance_id, payloads=False).exists
        # Gone by the answer: purged before it came, which is early only if it came before the
        # due time (the time the call was sent is no bound: the purge may come while it runs).
        answered_at = time.time()
        if not exists:
            assert answered_at >= due, f"{instance_id} purged {due - answered_at:.4f}s early"
            return
        time.sleep(0.05)
    raise AssertionError(f"{instance_id} still there {SLACK}s after its retention ran out")


@pytest.fixture
def policy_engine(own_engine) -> Iterator[Engine]:
    """An engine keeping completed workflows 2 s, terminated ones for good, others 1 s."""
    own_engine.extra_args = [
        "--state-retention",
        "anyTerminal=1s",
        "--state-retention",
        f"completed=2s,terminated={FOR_GOOD}",
    ]
    with engine_with_worker(own_engine) as engine:
        yield engine


def test_a_completed_workflow_is_purged_once_its_retention_ran_out_and_not_before(
    policy_engine,
):
    instance_id = unique_id("kept-2s")
    policy_engine.start("hello_world", instance_id, input='"retention"')
    ended = ended_at(policy_engine, instance_id)

    watch_until_purged(policy_engine, instance_id, ended + 2)
    # History and all, as a purge by hand.
    error = rpc_error(lambda: policy_engine.history(instance_id))
    assert error.code() == grpc.StatusCode.NOT_FOUND


def test_the_duration_of_the_state_it_ended_in_wins_over_any_terminal(policy_engine):
    completed, failed, terminated = (unique_id(what) for what in ("done", "failed", "stopped"))
    policy_engine.start("hello_world", completed, input='"retention"')
    policy_engine.start("fails", failed, input=json.dumps({"id": "o", "address": "nowhere"}))
    policy_engine.start("wait_forever", terminated)
    policy_engine.terminate(terminated)
    completed_at = ended_at(policy_engine, completed)
    failed_at = ended_at(policy_engine, failed)
    ended_at(policy_engine, terminated)

    # failed has no duration of its own: anyTerminal's 1 s; completed's own 2 s.
    watch_until_purged(policy_engine, failed, failed_at + 1)
    watch_until_purged(policy_engine, completed, completed_at + 2)
    # terminated's own hour, though anyTerminal's second has long passed.
    assert policy_engine.status(terminated) == "TERMINATED"


def test_a_running_or_suspended_workflow_is_never_purged(policy_engine):
    running, suspended, completed = (unique_id(w) for w in ("running", "suspended", "done"))
    policy_engine.start("wait_forever", running)
    policy_engine.start("wait_forever", suspended)
    policy_engine.suspend(suspended)
    policy_engine.start("hello_world", completed, input='"retention"')
    watch_until_purged(policy_engine, completed, ended_at(policy_engine, completed) + 2)

    # Past every duration of the policy, the two that have not ended are still there.
    assert policy_engine.status(running) == "RUNNING"
    assert policy_engine.status(suspended) == "SUSPENDED"


def test_a_workflow_started_again_is_purged_by_its_new_run_end_not_the_first(policy_engine):
    instance_id = unique_id("again")
    policy_engine.start("hello_world", instance_id, input='"first"')
    first_ended = ended_at(policy_engine, instance_id)
    # The same id again, while the first run's two seconds run: still waiting when they are
    # up, it is left alone (daprd's reminder, firing on a workflow not finished, is dropped;
    # the devengine's new run has no due time until it ends).
    policy_engine.start("wait_forever", instance_id)
    time.sleep(max(0.0, first_ended + 2 + 0.5 - time.time()))
    assert policy_engine.status(instance_id) == "RUNNING"

    policy_engine.raise_event(instance_id, "go", '"second"')
    second_ended = ended_at(policy_engine, instance_id)
    watch_until_purged(policy_engine, instance_id, second_ended + 2)


def test_a_run_that_ended_later_is_kept_its_own_full_duration(policy_engine):
    instance_id = unique_id("later")
    policy_engine.start("hello_world", instance_id, input='"first"')
    ended_at(policy_engine, instance_id)
    time.sleep(1)
    policy_engine.start("hello_world", instance_id, input='"second"')
    second_ended = ended_at(policy_engine, instance_id)

    # Still there when the first run's time is up: the second run's end counts.
    watch_until_purged(policy_engine, instance_id, second_ended + 2)


@pytest.mark.parametrize("restarted_with", [["--state-retention", "completed=1s"], []])
def test_an_engine_restarted_after_the_due_time_purges_what_expired_while_it_was_down(
    own_engine, restarted_with
):
    """The due time is stored with the instance: purged after the restart, even by an engine
    started again without the option (as daprd's reminders, once scheduled, still fire)."""
    own_engine.extra_args = ["--state-retention", "completed=1s"]
    instance_id = unique_id("expired-while-down")
    with engine_with_worker(own_engine) as engine:
        engine.start("hello_world", instance_id, input='"retention"')
        ended = ended_at(engine, instance_id)
        own_engine.kill()
    time.sleep(max(0.0, ended + 1.5 - time.time()))

    own_engine.extra_args = restarted_with
    own_engine.start()
    engine = Engine(own_engine.address)
    try:
        wait_for(
            lambda: not engine.get(instance_id, payloads=False).exists,
            timeout=SLACK,
            what=f"{instance_id} to be purged after the restart",
        )
    finally:
        engine.close()


def test_a_backlog_of_due_purges_does_not_hold_up_a_timer_that_comes_due(tmp_path):
    """daprd's retention reminders are apart from workflow timers: an engine back after a long
    stop, with thousands of purges due, fires a workflow's timer while it is still purging."""
    import asyncio

    from devengine import protos as p
    from devengine.engine import Engine as Core
    from devengine.engine import now_ns
    from devengine.store import InstanceRow, Store

    backlog = 3000

    def still_due(store: Store) -> int:
        query = "SELECT count(*) FROM instances WHERE purge_due_ns IS NOT NULL"
        return store.conn.execute(query).fetchone()[0]

    async def scenario() -> None:
        store = Store(str(tmp_path / "engine.sqlite3"))
        with store.transaction():
            for n in range(backlog):
                store.insert_instance(
                    InstanceRow(0, f"done-{n}", "w", p.COMPLETED, f"e-{n}", 1, 1, purge_due_ns=1)
                )
        core = Core(store)
        await core.start()
        try:
            while still_due(store) == backlog:
                await asyncio.sleep(0)
            core._add_timer(now_ns(), "sleeper")
            while "sleeper" not in core.ready:
                await asyncio.sleep(0)
            assert still_due(store) > 0, "the timer waited for the whole backlog"
            while still_due(store):
                await asyncio.sleep(0.01)
        finally:
            await core.stop()
            store.close()

    asyncio.run(scenario())


def test_purges_a_database_refused_are_done_once_it_takes_writes_again(tmp_path, caplog):
    """A failed pass of purges (the database refused the write: full, say) is tried again: the
    purges wait, and are not stopped for good until the engine restarts."""
    import asyncio

    from devengine import protos as p
    from devengine.engine import PURGE_RETRY_SECONDS
    from devengine.engine import Engine as Core
    from devengine.store import InstanceRow, Store

    async def scenario() -> None:
        store = Store(str(tmp_path / "engine.sqlite3"))
        with store.transaction():
            store.insert_instance(
                InstanceRow(0, "expired", "w", p.COMPLETED, "e-1", 1, 1, purge_due_ns=1)
            )
        store.conn.execute(
            "CREATE TRIGGER refuse BEFORE DELETE ON instances "
            "BEGIN SELECT RAISE(ABORT, 'disk full'); END"
        )
        core = Core(store)
        await core.start()
        try:
            await asyncio.sleep(0.3)
            assert store.get_instance("expired") is not None
            store.conn.execute("DROP TRIGGER refuse")
            deadline = time.monotonic() + PURGE_RETRY_SECONDS + SLACK
            while store.get_instance("expired") is not None:
                assert time.monotonic() < deadline, "the purge was not tried again"
                await asyncio.sleep(0.05)
        finally:
            await core.stop()
            store.close()

    asyncio.run(scenario())
    assert "retention purges failed" in caplog.text


def test_go_durations_are_read_as_daprd_reads_them():
    assert parse_go_duration("72h") == 72 * 3600 * 10**9
    assert parse_go_duration("1h30m") == 90 * 60 * 10**9
    assert parse_go_duration("1.5s") == 1_500_000_000
    assert parse_go_duration("300ms") == 300_000_000
    assert parse_go_duration("0") == 0
    assert parse_go_duration("0s") == 0
    assert parse_go_duration(".5s") == 500_000_000
    assert parse_go_duration("+5m") == 300 * 10**9
    assert parse_go_duration("-0s") == 0
    # Go reads ASCII digits only: an Arabic-Indic three is no number to it.
    for bad in ("", "1", "1d", "1 h", "h", "1hh", "-1s", "3000000h", "1e3s", "1h-5m", "\u0663h"):
        with pytest.raises(ValueError):
            parse_go_duration(bad)


def test_the_policy_takes_the_four_states_in_any_case():
    policy = parse_retention(["anyterminal=1m,Completed=2h", "failed=24h"])
    assert policy == RetentionPolicy(
        any_terminal=60 * 10**9, completed=7200 * 10**9, failed=86400 * 10**9
    )
    assert parse_retention([]) is None
    assert parse_retention([""]) is None


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("completed=1 hour", "--state-retention: completed: '1 hour' is not a Go duration"),
        ("done=1h", "--state-retention: 'done' is not a terminal state of the retention policy"),
        ("completed", "--state-retention: 'completed' is not STATE=DURATION"),
        ("failed=1h,failed=2h", "--state-retention: failed is given twice"),
        ("terminated=-5m", "--state-retention: terminated: '-5m' is negative"),
    ],
)
def test_a_bad_retention_stops_the_start_naming_the_bad_part(capsys, value, message):
    from devengine.__main__ import main

    with pytest.raises(SystemExit):
        main(["--db", "unused.sqlite3", "--state-retention", value])
    assert message in capsys.readouterr().err


def test_a_bad_retention_in_the_environment_is_named_too(capsys, monkeypatch):
    from devengine.__main__ import main

    monkeypatch.setenv("DEVENGINE_STATE_RETENTION", "completed=2h,failed=1x")
    with pytest.raises(SystemExit):
        main(["--db", "unused.sqlite3"])
    assert "DEVENGINE_STATE_RETENTION: failed: '1x' is not a Go duration" in (
        capsys.readouterr().err
    )
