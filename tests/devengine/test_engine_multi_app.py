"""Multi-app workflows: two devengines serving two app ids, each the other's peer, each with a
real SDK worker. A workflow on one app runs a child workflow and an activity on the other."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from engine_support import (
    Engine,
    EngineProcess,
    WorkerProcess,
    as_dicts,
    free_port,
    kind,
    kinds,
    of_kind,
    rpc_error,
    unique_id,
    wait_for,
)
from google.protobuf import timestamp_pb2

from devengine import protos as p
from devengine.engine import delivery_body

TOKEN = "peers-share-this-token"
ORDERS, BILLING = "orders", "billing"
DELIVER = "/devengine.Peers/Deliver"
SMALL_LIMIT = 256 * 1024
# How long orders' engine keeps a completed workflow in the tests of a retention purge.
ORDERS_KEEP = 5


@dataclass
class App:
    engine: EngineProcess
    worker: WorkerProcess
    client: Engine


@dataclass
class TwoApps:
    orders: App
    billing: App
    activity_log: Path

    def start_parent(self, child: dict | None = None) -> str:
        instance_id = unique_id("parent")
        args = {
            "app": BILLING,
            "child": child or {},
            "echo": {"value": "paid", "log": str(self.activity_log)},
        }
        self.orders.client.start("cross_app_parent", instance_id, input=json.dumps(args))
        return instance_id

    def activity_calls(self) -> list[str]:
        if not self.activity_log.exists():
            return []
        return self.activity_log.read_text().splitlines()


@pytest.fixture
def two_apps(tmp_path) -> Iterator[TwoApps]:
    yield from _two_apps(tmp_path)


@pytest.fixture
def two_small_apps(tmp_path) -> Iterator[TwoApps]:
    """Two apps whose engines take messages of SMALL_LIMIT bytes at most."""
    yield from _two_apps(tmp_path, "--max-body-size", str(SMALL_LIMIT))


@pytest.fixture
def two_apps_orders_purging(tmp_path) -> Iterator[TwoApps]:
    """Two apps, orders' engine purging what completed ORDERS_KEEP seconds after it ended."""
    yield from _two_apps(tmp_path, orders_args=("--state-retention", f"completed={ORDERS_KEEP}s"))


def _two_apps(
    tmp_path: Path, *extra_args: str, orders_args: tuple[str, ...] = ()
) -> Iterator[TwoApps]:
    ports = {ORDERS: free_port(), BILLING: free_port()}
    started: list[EngineProcess | WorkerProcess] = []
    apps = {}
    try:
        for app_id, other in ((ORDERS, BILLING), (BILLING, ORDERS)):
            engine = EngineProcess(
                tmp_path / f"{app_id}.sqlite3",
                "--app-id", app_id,
                "--peer", f"{other}=127.0.0.1:{ports[other]}",
                "--api-token", TOKEN,
                *extra_args,
                *(orders_args if app_id == ORDERS else ()),
                port=ports[app_id],
            )  # fmt: skip
            started.append(engine.start())
            worker = WorkerProcess(
                engine.address, tmp_path / f"{app_id}-worker.log", env={"DAPR_API_TOKEN": TOKEN}
            )
            started.append(worker.start())
            apps[app_id] = App(engine, worker, Engine(engine.address, token=TOKEN))
        for app in apps.values():
            wait_for(lambda a=app: _worker_connected(a.client), timeout=30, what="a worker")
        yield TwoApps(apps[ORDERS], apps[BILLING], tmp_path / "activity.log")
    finally:
        for app in apps.values():
            app.client.close()
        for process in started:
            process.kill()


def _worker_connected(engine: Engine) -> bool:
    instance_id = unique_id("probe")
    try:
        engine.start("hello_world", instance_id, input='"probe"', timeout=5)
        return engine.wait_done(instance_id, timeout=5).workflowState.workflowStatus == 1
    except grpc.RpcError:
        return False


def router(event) -> dict:
    return as_dicts([event])[0].get("router", {})


def test_a_child_and_an_activity_run_on_the_other_app_and_answer_the_parent(two_apps):
    parent_id = two_apps.start_parent()
    done = two_apps.orders.client.wait_done(parent_id, timeout=30).workflowState
    assert json.loads(done.output.value) == {
        "child": {"child": f"{parent_id}:0001"},
        "echo": "paid",
    }
    assert two_apps.activity_calls() == [f"{parent_id} 2"]

    parent = two_apps.orders.client.history(parent_id)
    assert [(kind(e), e.eventId) for e in parent] == [
        ("workflowStarted", -1),
        ("executionStarted", -1),
        ("childWorkflowInstanceCreated", 1),
        ("workflowStarted", -1),
        ("childWorkflowInstanceCompleted", -1),
        ("taskScheduled", 2),
        ("workflowStarted", -1),
        ("taskCompleted", -1),
        ("executionCompleted", 3),
    ]
    outward = {"sourceAppID": ORDERS, "targetAppID": BILLING}
    assert router(parent[2]) == outward
    assert parent[2].childWorkflowInstanceCreated.instanceId == f"{parent_id}:0001"
    # The child's result comes from billing, to orders.
    assert router(parent[4]) == {"sourceAppID": BILLING, "targetAppID": ORDERS}
    assert parent[4].childWorkflowInstanceCompleted.taskScheduledId == 1
    assert router(parent[5]) == outward
    # An activity's result carries its taskScheduled's router, as daprd's executor answers.
    assert router(parent[7]) == outward
    assert parent[7].taskCompleted.taskScheduledId == 2
    assert router(parent[8]) == {"sourceAppID": ORDERS}
    parent_execution = parent[1].executionStarted.workflowInstance.executionId.value

    child_id = f"{parent_id}:0001"
    assert two_apps.orders.client.status(child_id) is None  # not on the parent's engine
    child = two_apps.billing.client.history(child_id)
    assert [(kind(e), e.eventId) for e in child] == [
        ("workflowStarted", -1),
        ("executionStarted", -1),
        ("executionCompleted", 1),
    ]
    assert router(child[1]) == outward
    assert as_dicts([child[1]])[0]["executionStarted"]["parentInstance"] == {
        "taskScheduledId": 1,
        "name": "cross_app_parent",
        "workflowInstance": {"instanceId": parent_id, "executionId": parent_execution},
        "appID": ORDERS,
    }
    assert router(child[2]) == {"sourceAppID": BILLING}
    state = two_apps.billing.client.get(child_id).workflowState
    assert (state.parentInstanceId.value, state.parentAppId.value) == (parent_id, ORDERS)


def test_a_child_that_fails_on_the_other_app_fails_the_parents_task(two_apps):
    parent_id = two_apps.start_parent(child={"fail": True})
    done = two_apps.orders.client.wait_done(parent_id, timeout=30).workflowState
    assert done.workflowStatus == p.FAILED
    failed = of_kind(two_apps.orders.client.history(parent_id), "childWorkflowInstanceFailed")
    assert len(failed) == 1
    assert failed[0].childWorkflowInstanceFailed.taskScheduledId == 1
    assert "asked to fail" in failed[0].childWorkflowInstanceFailed.failureDetails.errorMessage
    assert router(failed[0]) == {"sourceAppID": BILLING, "targetAppID": ORDERS}
    assert two_apps.billing.client.status(f"{parent_id}:0001") == "FAILED"
    assert two_apps.activity_calls() == []


def test_a_child_for_an_app_that_is_down_waits_for_it_and_then_runs(two_apps):
    billing = two_apps.billing
    billing.engine.kill()
    parent_id = two_apps.start_parent()
    wait_for(
        lambda: "deliveries to app 'billing' wait" in two_apps.orders.engine.log_tail(200),
        timeout=15,
        what="the outbox to say it waits for billing",
    )
    assert two_apps.orders.client.status(parent_id) == "RUNNING"

    billing.engine.start()
    done = two_apps.orders.client.wait_done(parent_id, timeout=60).workflowState
    assert done.workflowStatus == p.COMPLETED
    assert two_apps.activity_calls() == [f"{parent_id} 2"]


@pytest.mark.slow
def test_killing_either_engine_in_the_middle_loses_nothing_and_doubles_nothing(two_apps):
    orders, billing = two_apps.orders, two_apps.billing
    parent_id = two_apps.start_parent(child={"wait": True})
    child_id = f"{parent_id}:0001"
    wait_for(lambda: billing.client.status(child_id) == "RUNNING", timeout=30, what="the child")

    # The parent's engine dies: the child's result can only wait in billing's outbox...
    orders.engine.kill()
    billing.client.raise_event(child_id, "go")
    billing.client.wait_status(child_id, "COMPLETED")
    # ...and billing dies with it there.
    billing.engine.kill()
    orders.engine.start()
    billing.engine.start()

    done = orders.client.wait_done(parent_id, timeout=60).workflowState
    assert done.workflowStatus == p.COMPLETED
    assert json.loads(done.output.value)["echo"] == "paid"
    assert two_apps.activity_calls() == [f"{parent_id} 2"]
    parent = orders.client.history(parent_id)
    counts = Counter(kinds(parent))
    assert counts["childWorkflowInstanceCompleted"] == counts["taskCompleted"] == 1
    assert counts["executionCompleted"] == 1
    assert Counter(kinds(billing.client.history(child_id)))["executionCompleted"] == 1


def _delivery(
    app_id: str, instance_id: str, key: str, event: p.HistoryEvent, **sender: str | int
) -> bytes:
    """A delivery as a courier sends it; `sender` adds the origin and seq it stamps on it."""
    header = {"app": app_id, "kind": "event", "instance": instance_id, "key": key, **sender}
    return delivery_body(header, event.SerializeToString())


def _raised(name: str, value: str) -> p.HistoryEvent:
    event = p.HistoryEvent(eventId=-1)
    event.timestamp.CopyFrom(timestamp_pb2.Timestamp(seconds=1))
    event.eventRaised.name = name
    event.eventRaised.input.value = value
    return event


def test_a_delivery_sent_again_changes_nothing_and_a_wrong_app_or_token_is_refused(two_apps):
    billing = two_apps.billing
    instance_id = unique_id("collector")
    billing.client.start("collect_events", instance_id, input="2")
    deliver = billing.client.channel.unary_unary(DELIVER)
    metadata = (("dapr-api-token", TOKEN),)
    first = _delivery(BILLING, instance_id, "k-1", _raised("item", '"one"'))
    for _ in range(2):  # a sender that crashed before forgetting it sends it again
        deliver(first, timeout=10, metadata=metadata)
    deliver(_delivery(BILLING, instance_id, "k-2", _raised("item", '"two"')), metadata=metadata)
    done = billing.client.wait_done(instance_id, timeout=30).workflowState
    assert json.loads(done.output.value) == ["one", "two"]
    assert len(of_kind(billing.client.history(instance_id), "eventRaised")) == 2

    wrong_app = _delivery(ORDERS, instance_id, "k-3", _raised("item", '"three"'))
    with pytest.raises(grpc.RpcError) as refused:
        deliver(wrong_app, timeout=10, metadata=metadata)
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "serves app id 'billing', not 'orders'" in refused.value.details()
    with pytest.raises(grpc.RpcError) as no_token:
        deliver(first, timeout=10)
    assert no_token.value.code() == grpc.StatusCode.UNAUTHENTICATED


def _rerun(client: Engine, source: str, event_id: int) -> str:
    request = p.pb.RerunWorkflowFromEventRequest(sourceInstanceID=source, eventID=event_id)
    request.newInstanceID = unique_id("rerun")
    return client.call("RerunWorkflowFromEvent", request).newInstanceID


def test_a_rerun_sends_its_child_and_its_activity_to_the_app_they_were_routed_to(two_apps):
    orders, billing = two_apps.orders, two_apps.billing
    parent_id = two_apps.start_parent()
    assert orders.client.wait_done(parent_id, timeout=30).workflowState.workflowStatus == (
        p.COMPLETED
    )

    # From the child (event 1): the new child starts on billing, as the first one did.
    from_child = _rerun(orders.client, parent_id, 1)
    assert orders.client.wait_done(from_child, timeout=30).workflowState.workflowStatus == (
        p.COMPLETED
    )
    new_child = f"{from_child}:0001"
    assert orders.client.status(new_child) is None
    assert billing.client.status(new_child) == "COMPLETED"
    started = of_kind(billing.client.history(new_child), "executionStarted")[0]
    assert router(started) == {"sourceAppID": ORDERS, "targetAppID": BILLING}
    assert started.executionStarted.parentInstance.workflowInstance.instanceId == from_child

    # From the activity (event 2): billing runs it again, and its result says so.
    from_activity = _rerun(orders.client, parent_id, 2)
    assert orders.client.wait_done(from_activity, timeout=30).workflowState.workflowStatus == (
        p.COMPLETED
    )
    history = orders.client.history(from_activity)
    scheduled = of_kind(history, "taskScheduled")
    assert [(e.eventId, router(e)) for e in scheduled] == [
        (2, {"sourceAppID": ORDERS, "targetAppID": BILLING})
    ]
    completed = of_kind(history, "taskCompleted")
    assert [router(e) for e in completed] == [{"sourceAppID": ORDERS, "targetAppID": BILLING}]
    assert sorted(two_apps.activity_calls()) == sorted(
        [f"{parent_id} 2", f"{from_child} 2", f"{from_activity} 2"]
    )


def test_a_recursive_purge_purges_the_child_on_the_other_app_too(two_apps):
    orders, billing = two_apps.orders, two_apps.billing
    parent_id = two_apps.start_parent()
    orders.client.wait_done(parent_id, timeout=30)
    child_id = f"{parent_id}:0001"
    assert billing.client.status(child_id) == "COMPLETED"

    assert orders.client.purge(parent_id, recursive=True).deletedInstanceCount == 2
    assert orders.client.status(parent_id) is None
    assert billing.client.status(child_id) is None


def test_a_recursive_purge_fails_while_the_child_on_the_other_app_runs_or_is_down(two_apps):
    orders, billing = two_apps.orders, two_apps.billing
    parent_id = two_apps.start_parent(child={"wait": True})
    child_id = f"{parent_id}:0001"
    wait_for(lambda: billing.client.status(child_id) == "RUNNING", timeout=30, what="the child")
    orders.client.terminate(parent_id, recursive=False)
    orders.client.wait_status(parent_id, "TERMINATED")

    # As daprd: a child that has not finished stops the purge, and the parent stays.
    running = rpc_error(lambda: orders.client.purge(parent_id, recursive=True))
    assert running.details() == (
        "failed to purge workflow state: failed to purge child workflow: "
        "orchestration has not yet completed"
    )
    assert orders.client.status(parent_id) == "TERMINATED"
    assert billing.client.status(child_id) == "RUNNING"

    billing.client.terminate(child_id)
    billing.client.wait_status(child_id, "TERMINATED")
    billing.engine.kill()
    # The child's engine is down: the purge fails now rather than waiting, as daprd's does.
    down = rpc_error(lambda: orders.client.purge(parent_id, recursive=True))
    assert "failed to purge child workflow: app 'billing'" in down.details()
    assert orders.client.status(parent_id) == "TERMINATED"

    billing.engine.start()
    # orders' channel to billing reconnects within its short backoff.
    purged = wait_for(
        lambda: _purged(orders.client, parent_id), timeout=10, what="the purge once billing is up"
    )
    assert purged.deletedInstanceCount == 2
    assert billing.client.status(child_id) is None
    # Purged once, the parent is gone; a child already gone is skipped, not an error.
    assert orders.client.status(parent_id) is None


def test_a_recursive_purge_waits_for_the_child_still_in_the_outbox(two_apps):
    orders, billing = two_apps.orders, two_apps.billing
    billing.engine.kill()
    parent_id = two_apps.start_parent()
    child_id = f"{parent_id}:0001"
    orders.client.wait_status(parent_id, "RUNNING")
    orders.client.terminate(parent_id)
    orders.client.wait_status(parent_id, "TERMINATED")

    # The child and its terminate wait in orders' outbox. Once billing is back, the purge must
    # not find billing without the child and purge the parent alone: the child would come
    # after it, its parent gone.
    billing.engine.start()
    purged = wait_for(
        lambda: _purged(orders.client, parent_id, "orchestration has not yet completed"),
        timeout=20,
        what="the purge once billing is up",
    )
    assert purged.deletedInstanceCount == 2
    assert billing.client.status(child_id) is None
    assert orders.client.status(parent_id) is None
    orders.engine.stop()  # the database is the engine's alone while it runs
    assert _outbox(orders.engine.db_path) == 0  # nothing left to make the child again


def test_an_instance_started_again_while_its_purge_waits_for_the_other_app_is_not_purged(
    two_apps,
):
    orders, billing = two_apps.orders, two_apps.billing
    parent_id = two_apps.start_parent()
    orders.client.wait_done(parent_id, timeout=30)
    # The purge waits on billing for the child, its parent found finished; meanwhile the id is
    # started again: a run the purge was never asked about.
    refused = _purge_while_billing_is_frozen(two_apps, parent_id, started_again=parent_id)
    # Refused as a purge of a running instance is (or, had the walk passed it already, as one
    # of an instance started again).
    assert any(
        reason in str(refused.details())
        for reason in ("not yet completed", "started again while it was being purged")
    )
    assert orders.client.status(parent_id) == "RUNNING"
    started = of_kind(orders.client.history(parent_id), "executionStarted")
    assert [e.executionStarted.name for e in started] == ["wait_forever"]
    assert billing.client.status(f"{parent_id}:0001") is None  # the first run's child went


def test_a_child_started_again_while_the_purge_waits_for_a_sibling_on_the_other_app_stays(
    two_apps,
):
    orders, billing = two_apps.orders, two_apps.billing
    parent_id = unique_id("parent")
    orders.client.start("home_then_cross_app_child", parent_id, input=json.dumps(BILLING))
    orders.client.wait_done(parent_id, timeout=30)
    home_child = f"{parent_id}:0001"  # walked, found finished, before the one on billing
    assert orders.client.status(home_child) == "COMPLETED"
    refused = _purge_while_billing_is_frozen(two_apps, parent_id, started_again=home_child)
    assert f"{home_child} was started again while it was being purged" in str(refused.details())
    assert orders.client.status(home_child) == "RUNNING"
    # The walk stops there, as at an error: the parent, walked after its children, stays; what
    # was purged before stays purged, as daprd's walk leaves it.
    assert orders.client.status(parent_id) == "COMPLETED"
    assert billing.client.status(f"{parent_id}:0002") is None


def test_a_recursive_purge_the_retention_overtakes_while_it_waits_for_the_other_app_succeeds(
    two_apps_orders_purging,
):
    """As daprd, where the retention reminder waits for the purge the workflow actor is running:
    what the retention purged while the purge waited on billing is gone, as asked, not an
    instance started again, nor a reason to leave the parent."""
    apps = two_apps_orders_purging
    orders, billing = apps.orders, apps.billing
    parent_id = unique_id("parent")
    orders.client.start("home_then_cross_app_child", parent_id, input=json.dumps(BILLING))
    orders.client.wait_done(parent_id, timeout=30)
    home_child, away_child = f"{parent_id}:0001", f"{parent_id}:0002"
    (home_end,) = of_kind(orders.client.history(home_child), "executionCompleted")
    (parent_end,) = of_kind(orders.client.history(parent_id), "executionCompleted")
    home_due = home_end.timestamp.ToNanoseconds() / 1e9 + ORDERS_KEEP
    parent_due = parent_end.timestamp.ToNanoseconds() / 1e9 + ORDERS_KEEP
    time.sleep(max(0.0, home_due - 2 - time.time()))
    os.kill(billing.engine.pid, signal.SIGSTOP)
    try:
        with ThreadPoolExecutor(1) as pool:
            # The walk finds the home child finished, then waits on billing for the other one;
            # meanwhile orders' retention purges the home child and the parent.
            purge = pool.submit(orders.client.purge, parent_id, True)
            time.sleep(max(0.0, parent_due + 1 - time.time()))
            assert orders.client.status(parent_id) is None
            os.kill(billing.engine.pid, signal.SIGCONT)
            purge.result(timeout=30)
    finally:
        os.kill(billing.engine.pid, signal.SIGCONT)
    assert billing.client.status(away_child) is None
    assert orders.client.status(home_child) is None


def _purge_while_billing_is_frozen(
    two_apps: TwoApps, parent_id: str, started_again: str
) -> grpc.RpcError:
    """A recursive purge of orders' `parent_id` while billing is stopped (SIGSTOP), so that it
    waits on billing; meanwhile `started_again` is started again on orders. Then billing goes
    on; the purge must be refused: its error."""
    orders, billing = two_apps.orders, two_apps.billing
    os.kill(billing.engine.pid, signal.SIGSTOP)
    try:
        with ThreadPoolExecutor(1) as pool:
            purge = pool.submit(orders.client.purge, parent_id, True)
            time.sleep(1.0)
            orders.client.start("wait_forever", started_again)
            orders.client.wait_status(started_again, "RUNNING")
            os.kill(billing.engine.pid, signal.SIGCONT)
            with pytest.raises(grpc.RpcError) as refused:
                purge.result(timeout=30)
    finally:
        os.kill(billing.engine.pid, signal.SIGCONT)
    return refused.value


def _outbox(db_path: Path) -> int:
    with closing(sqlite3.connect(db_path)) as db:
        return int(db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])


def _purged(
    client: Engine, instance_id: str, *also_expected: str
) -> p.pb.PurgeInstancesResponse | None:
    try:
        return client.purge(instance_id, recursive=True)
    except grpc.RpcError as e:
        # billing not reached yet (or the child not finished there yet), nothing else
        assert any(text in str(e.details()) for text in ("UNAVAILABLE", *also_expected))
        return None


def _received(db_path: Path) -> list[tuple]:
    """(origin, seq) of each delivery key an engine keeps."""
    with closing(sqlite3.connect(db_path)) as db:
        cursor = db.execute("SELECT * FROM received")
        names = [column[0] for column in cursor.description]
        rows = [dict(zip(names, row, strict=True)) for row in cursor]
    return [(row.get("origin"), row.get("seq")) for row in rows]


def _database_id(db_path: Path) -> str:
    with closing(sqlite3.connect(db_path)) as db:
        return db.execute("SELECT value FROM meta WHERE name = 'database_id'").fetchone()[0]


def test_each_engine_keeps_only_the_last_delivery_key_of_each_sender(two_apps):
    orders, billing = two_apps.orders, two_apps.billing
    for _ in range(3):
        parent_id = two_apps.start_parent()
        orders.client.wait_done(parent_id, timeout=30)
    orders.engine.stop()
    billing.engine.stop()  # the database is the engine's alone while it runs
    # Six deliveries each way (a child and an activity, and their results): one key is left.
    for app, sender in ((orders, billing), (billing, orders)):
        assert [origin for origin, _ in _received(app.engine.db_path)] == [
            _database_id(sender.engine.db_path)
        ]


def test_a_delivery_older_than_the_last_taken_from_its_sender_changes_nothing(two_apps):
    billing = two_apps.billing
    instance_id = unique_id("collector")
    billing.client.start("collect_events", instance_id, input="3")
    deliver = billing.client.channel.unary_unary(DELIVER)
    metadata = (("dapr-api-token", TOKEN),)

    def send(seq: int, value: str) -> None:
        event = _raised("item", json.dumps(value))
        body = _delivery(BILLING, instance_id, f"k-{seq}", event, origin="db-1", seq=seq)
        deliver(body, timeout=10, metadata=metadata)

    send(1, "one")
    send(2, "two")  # its sender forgot 1: the key of 1 goes...
    send(1, "one")  # ...and an attempt of 1 that arrives late is still known as taken
    send(3, "three")
    done = billing.client.wait_done(instance_id, timeout=30).workflowState
    assert json.loads(done.output.value) == ["one", "two", "three"]
    billing.engine.stop()
    assert _received(billing.engine.db_path) == [("db-1", 3)]


def test_an_activity_for_the_other_app_is_measured_by_the_workflows_engine(two_small_apps):
    orders, billing = two_small_apps.orders, two_small_apps.billing
    log = str(two_small_apps.activity_log)

    # Within 95% of the limit: it reaches billing, though base64 would have made it too big.
    fits = unique_id("fits")
    args = {"app": BILLING, "size": SMALL_LIMIT * 80 // 100, "log": log}
    orders.client.start("cross_app_big_activity", fits, input=json.dumps(args))
    assert json.loads(orders.client.wait_done(fits, timeout=30).workflowState.output.value) == "ok"
    assert two_small_apps.activity_calls() == [f"{fits} 1"]

    # Beyond it: as daprd, the workflow's own engine stalls the workflow before sending it.
    too_big = unique_id("too-big")
    args["size"] = SMALL_LIMIT * 97 // 100  # the turn that schedules it still fits
    orders.client.start("cross_app_big_activity", too_big, input=json.dumps(args))
    orders.client.wait_status(too_big, "STALLED", timeout=30)
    stalled = of_kind(orders.client.history(too_big), "executionStalled")
    assert [e.executionStalled.reason for e in stalled] == [p.PAYLOAD_SIZE_EXCEEDED]
    assert "activity 'logged_echo::1' payload" in stalled[0].executionStalled.description
    assert of_kind(orders.client.history(too_big), "taskScheduled") == []
    assert two_small_apps.activity_calls() == [f"{fits} 1"]
    assert billing.client.status(too_big) is None


def test_an_activity_for_the_other_app_outlives_an_instance_of_the_same_id_there(
    two_apps, tmp_path
):
    orders, billing = two_apps.orders, two_apps.billing
    instance_id = unique_id("same-id")
    markers = tmp_path / "markers"
    markers.mkdir()
    args = {"app": BILLING, "value": "paid", "seconds": 3, "marker_dir": str(markers)}
    orders.client.start("cross_app_slow_activity", instance_id, input=json.dumps(args))
    wait_for(lambda: any(markers.iterdir()), timeout=30, what="the activity to start on billing")

    # Instance ids are each app's own: billing's workflow of that id starts and finishes while
    # it runs orders' activity, which must still answer orders.
    billing.client.start("hello_world", instance_id, input='"billing"')
    billing.client.wait_status(instance_id, "COMPLETED")
    billing.client.purge(instance_id)

    done = orders.client.wait_done(instance_id, timeout=30).workflowState
    assert done.workflowStatus == p.COMPLETED
    assert json.loads(done.output.value)["value"] == "paid"


def test_a_round_of_the_outbox_reads_no_more_than_it_sends(tmp_path):
    """A peer down for long leaves many deliveries waiting, each up to the message limit: a
    round that tries them again must not read them all each time (memory, and the event loop
    held while it reads)."""
    import asyncio
    import tracemalloc

    from devengine.engine import Engine as Core
    from devengine.peers import Courier
    from devengine.store import Store

    waiting, size = 40, 1024 * 1024

    async def scenario() -> None:
        store = Store(str(tmp_path / "orders.sqlite3"))
        courier = Courier(Core(store, ORDERS), {BILLING: f"127.0.0.1:{free_port()}"}, None)
        header = {"app": BILLING, "kind": "event", "instance": "i", "key": "", "execution": ""}
        try:
            with store.transaction():
                for n in range(waiting):
                    event = _raised("item", "x" * size).SerializeToString()
                    store.add_outgoing(BILLING, delivery_body({**header, "key": f"k-{n}"}, event))
            store.flush()
            tracemalloc.start()
            try:
                assert await courier.deliver_outbox()  # billing is down: all of them wait
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
            assert len(store.outgoing()) == waiting
            assert peak < 8 * size, f"a round held {peak / size:.0f} MiB"
        finally:
            await courier.stop()
            store.close()

    asyncio.run(scenario())
