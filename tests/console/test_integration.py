"""The indexer against a real devengine with a real Dapr SDK worker (and one fake old sidecar)."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent import futures
from contextlib import ExitStack, contextmanager
from datetime import timedelta
from urllib.parse import quote

import grpc
import pytest
from dapr.ext.workflow import DaprWorkflowClient, WorkflowRuntime
from django.contrib.auth.models import User
from django.db import connection
from django.db.models import Count, Q
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from engine_bridge.client import EngineClient, pb, pb_grpc
from engine_bridge.config import EngineConfig
from engine_bridge.errors import EngineRejected, EngineUnavailable
from engine_bridge.indexer import EngineIndexer, Limits, request_refresh, sync_engines
from tests.console import factories, wf_kinds
from tests.console.support import REPO_ROOT, DevEngine, free_port, start_runindexer, wait_for
from workflows_ui.models import (
    ChangeLog,
    Engine,
    HistoryEvent,
    Instance,
    InstanceCheck,
    Run,
    StatusCount,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

ORDER = {"id": "o-1001", "qty": 2, "amount": 59.9}


@pytest.fixture
def devengine(tmp_path):
    engine = DevEngine(tmp_path / "engine.sqlite3", "--app-id", "shop").start()
    yield engine
    engine.stop()


@pytest.fixture
def worker(devengine):
    runtime = WorkflowRuntime(host="127.0.0.1", port=str(devengine.port))
    wf_kinds.register_all(runtime)
    runtime.start()
    yield runtime
    runtime.shutdown()


@pytest.fixture
def wf(devengine, worker):
    client = DaprWorkflowClient(host="127.0.0.1", port=str(devengine.port))
    yield client
    client.close()


@pytest.fixture
def make_indexer():
    made = []

    def make(config: EngineConfig, **limits):
        (engine,) = sync_engines([config])
        defaults = {
            "concurrency": 4,
            "active_interval": 0.0,
            "sweep_interval": 0.0,
            "sweep_pause_factor": 0.0,
        }
        client = EngineClient(config, timeout=5.0)
        ix = EngineIndexer(engine, client, Limits(**{**defaults, **limits}))
        made.append(ix)
        return ix

    yield make
    for ix in made:
        ix.client.close()


def mismatches(ix: EngineIndexer) -> list[str]:
    """Differences between the console's database and the engine (empty when converged)."""
    client = ix.client
    ids, token = [], ""
    while True:
        page = client.list_instance_ids(500, token)
        ids += page.instance_ids
        token = page.continuation_token
        if not token:
            break
    diffs = []
    for iid in ids:
        state = client.get_instance(iid)
        events = client.get_history(iid)
        inst = Instance.objects.filter(engine=ix.engine, instance_id=iid).first()
        if inst is None:
            diffs.append(f"{iid}: not indexed")
            continue
        run = Run.objects.filter(instance=inst, execution_id=inst.current_execution_id).first()
        stored = (
            list(run.events.order_by("position").values_list("event_type", flat=True))
            if run
            else []
        )
        if inst.status != state.status or inst.purged:
            diffs.append(f"{iid}: status {inst.status} purged={inst.purged}, engine {state.status}")
        if stored != [e.event_type for e in events]:
            diffs.append(f"{iid}: {len(stored)} events stored, engine has {len(events)}")
        if run and run.event_count != len(stored):
            diffs.append(f"{iid}: event_count {run.event_count} != {len(stored)} rows")
    live = Instance.objects.filter(engine=ix.engine, purged=False)
    if live.count() != len(set(ids)):
        diffs.append(f"{live.count()} live instances indexed, engine lists {len(set(ids))}")
    real = {
        (r["name"], r["status"]): r["n"]
        for r in live.values("name", "status").annotate(n=Count("id"))
    }
    kept = {
        (c.name, c.status): c.count for c in StatusCount.objects.filter(engine=ix.engine) if c.count
    }
    if real != kept:
        diffs.append(f"counts {kept} != {real}")
    return diffs


def change_log_mismatches() -> list[str]:
    """Differences between the database and what a follower rebuilds from the change log alone
    (a live page catching up from its cursor): each instance's status, purge and current run,
    and each run's event positions, with every addition starting where the follower is."""
    status: dict[int, str] = {}
    purged: dict[int, bool] = {}
    current: dict[int, int] = {}
    positions: dict[int, set[int]] = {}
    diffs = []
    for ch in ChangeLog.objects.order_by("id"):
        if ch.kind not in ("new", "purged") and ch.instance_id not in status:
            diffs.append(f"#{ch.id} {ch.kind} of instance {ch.instance_id} before its 'new'")
        if ch.kind == "status" and status.get(ch.instance_id) != ch.old_status:
            diffs.append(
                f"#{ch.id} from {ch.old_status}, the follower has {status.get(ch.instance_id)}"
            )
        status[ch.instance_id] = ch.status
        purged[ch.instance_id] = ch.kind == "purged" or (
            purged.get(ch.instance_id, False) and ch.kind != "new"
        )
        if ch.kind == "run" and ch.run_id is not None:
            current[ch.instance_id] = ch.run_id
        if ch.kind in ("events", "dropped") and ch.run_id is not None:
            assert ch.first_position is not None and ch.last_position is not None
            span = set(range(ch.first_position, ch.last_position + 1))
            seen = positions.setdefault(ch.run_id, set())
            if ch.kind == "events" and ch.first_position != len(seen):
                diffs.append(
                    f"#{ch.id} adds from {ch.first_position}, the follower has {len(seen)}"
                )
            positions[ch.run_id] = seen | span if ch.kind == "events" else seen - span
    for inst in Instance.objects.all():
        run = Run.objects.filter(instance=inst, execution_id=inst.current_execution_id).first()
        rebuilt = (status.get(inst.pk), purged.get(inst.pk), current.get(inst.pk))
        if rebuilt != (inst.status, inst.purged, run.pk if run else None):
            diffs.append(f"{inst.instance_id}: the log gives {rebuilt}")
    for run in Run.objects.all():
        if positions.get(run.pk, set()) != set(range(run.event_count)):
            diffs.append(f"run {run.pk}: the log adds {len(positions.get(run.pk, ()))} events")
    return diffs


def converge(ix: EngineIndexer, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    diffs: list[str] = []
    while time.monotonic() < deadline:
        ix.run_pass()
        diffs = mismatches(ix)
        if not diffs:
            return
        time.sleep(0.1)
    raise AssertionError("not converged: " + "; ".join(diffs[:10]))


def test_each_kind_of_workflow_is_indexed_with_its_status_payloads_runs_and_links(
    devengine, wf, make_indexer
):
    start = wf.schedule_new_workflow
    start(wf_kinds.two_steps, input=ORDER, instance_id="k-two")
    start(wf_kinds.fails, input={"id": "o-1003", "address": "nowhere"}, instance_id="k-fails")
    start(wf_kinds.with_retry, input=ORDER, instance_id="k-retry")
    start(wf_kinds.approval, input={"timeout": 30}, instance_id="k-approve")
    start(wf_kinds.approval, input={"timeout": 0.3}, instance_id="k-timeout")
    start(wf_kinds.fan_out, input={"id": "o-1002", "qtys": [1, 2]}, instance_id="k-fan")
    start(wf_kinds.monitor, input=1, instance_id="k-monitor")
    start(wf_kinds.status_steps, input=ORDER, instance_id="k-status")
    start(wf_kinds.wait_forever, instance_id="k-suspend")
    start(wf_kinds.wait_forever, instance_id="k-term")
    start(wf_kinds.wait_forever, instance_id="k-wait")
    wf.raise_workflow_event("k-approve", "approval", data="alice")
    wf.wait_for_workflow_start("k-suspend", timeout_in_seconds=10)
    wf.pause_workflow("k-suspend")
    wf.raise_workflow_event("k-suspend", "go", data=42)
    wf.resume_workflow("k-suspend")
    wf.terminate_workflow("k-term", output="cancelled by operator")
    for iid in [
        "k-two",
        "k-fails",
        "k-retry",
        "k-approve",
        "k-timeout",
        "k-fan",
        "k-monitor",
        "k-status",
        "k-suspend",
        "k-term",
    ]:
        wf.wait_for_workflow_completion(iid, timeout_in_seconds=30)

    ix = make_indexer(devengine.config())
    converge(ix)

    def get(iid):
        return Instance.objects.get(engine=ix.engine, instance_id=iid)

    statuses = dict(Instance.objects.values_list("instance_id", "status"))
    assert statuses == {
        "k-two": "COMPLETED",
        "k-fails": "FAILED",
        "k-retry": "COMPLETED",
        "k-approve": "COMPLETED",
        "k-timeout": "COMPLETED",
        "k-fan": "COMPLETED",
        "k-fan:0001": "COMPLETED",
        "k-fan:0002": "COMPLETED",
        "k-monitor": "COMPLETED",
        "k-status": "COMPLETED",
        "k-suspend": "COMPLETED",
        "k-term": "TERMINATED",
        "k-wait": "RUNNING",
    }
    two = get("k-two")
    assert two.name == "two_steps"
    assert '"o-1001"' in two.input and "trk-o-1001" in two.output
    assert two.completed_at is not None and two.duration_seconds is not None
    assert two.runs.get().event_count == 9
    assert "no carrier serves this address" in get("k-fails").failure_message
    assert get("k-fails").failure_type == "TaskFailedError"
    retry_events = list(
        get("k-retry").runs.get().events.order_by("position").values_list("event_type", flat=True)
    )
    assert retry_events.count("taskFailed") == 2 and retry_events.count("timerFired") == 2
    assert "alice" in get("k-approve").output
    assert get("k-timeout").output == '"timed out"'
    assert get("k-status").custom_status == '{"step": "done"}'
    assert get("k-term").output == '"cancelled by operator"'
    suspend_types = set(get("k-suspend").runs.get().events.values_list("event_type", flat=True))
    assert {"executionSuspended", "eventRaised", "executionResumed"} <= suspend_types
    child = get("k-fan:0001")
    assert child.parent_instance_id == "k-fan" and child.parent_engine_id == ix.engine.pk
    assert child.parent() == get("k-fan")
    assert set(get("k-fan").children().values_list("instance_id", flat=True)) == {
        "k-fan:0001",
        "k-fan:0002",
    }
    monitor = get("k-monitor")
    assert monitor.output == '"checked"'
    assert monitor.runs.filter(execution_id=monitor.current_execution_id).get().input == "0"
    waiting = get("k-wait").runs.get().events.filter(event_type="timerCreated").get()
    assert waiting.name == "go"
    assert Engine.objects.get(pk=ix.engine.pk).app_id == "shop"
    assert ChangeLog.objects.filter(kind="new").count() == 13
    assert change_log_mismatches() == []

    # And through the REST API, child ids url-encoded.
    api = APIClient()
    api.force_login(User.objects.create_user("alice"))
    data = api.get(f"/api/instances/local/{quote('k-fan:0002', safe='')}/").json()
    assert data["parent"]["url"] == "http://testserver/api/instances/local/k-fan/"
    history = api.get(data["history_url"] + "?type=taskScheduled").json()["results"]
    assert [e["name"] for e in history] == ["reserve_stock"]


def test_continue_as_new_runs_seen_by_the_indexer_stay_readable(devengine, wf, make_indexer):
    ix = make_indexer(devengine.config())
    wf.schedule_new_workflow(wf_kinds.monitor, input=3, instance_id="mon")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        ix.run_pass()
        state = wf.get_workflow_state("mon", fetch_payloads=False)
        if state and state.runtime_status.name == "COMPLETED":
            break
        time.sleep(0.05)
    converge(ix)
    runs = list(Run.objects.filter(instance__instance_id="mon").order_by("ordinal"))
    assert len(runs) >= 2, "the indexer polled often enough to see several generations"
    assert [r.ordinal for r in runs] == list(range(1, len(runs) + 1))
    assert all(r.status == "CONTINUED_AS_NEW" for r in runs[:-1])
    assert runs[-1].status == "COMPLETED" and runs[-1].input == "0"
    assert len({r.execution_id for r in runs}) == len(runs)
    for run in runs:
        types = list(run.events.order_by("position").values_list("event_type", flat=True))
        assert types[:2] == ["workflowStarted", "executionStarted"]
    assert ChangeLog.objects.filter(kind="run").count() == len(runs)


def test_a_parent_and_its_children_are_indexed_with_the_trace_of_their_own_start(
    devengine, wf, make_indexer
):
    # A traced caller (an auto-instrumented channel) sends its traceparent: the engine records
    # the caller's trace in executionStarted. The SDK's client here sends none: the engine
    # starts a trace. Either way the children's starts carry their parent's trace.
    caller_trace = "0af7651916cd43dd8448eb211c80319c"
    request = pb.CreateInstanceRequest(name="fan_out", instanceId="traced")
    request.input.value = json.dumps({"id": "o-7", "qtys": [1, 2]})
    with grpc.insecure_channel(devengine.address) as channel:
        pb_grpc.TaskHubSidecarServiceStub(channel).StartInstance(
            request,
            timeout=10,
            metadata=(("traceparent", f"00-{caller_trace}-b7ad6b7169203331-01"),),
        )
    wf.schedule_new_workflow(wf_kinds.fan_out, input={"id": "o-8", "qtys": [3]}, instance_id="new")
    for parent in ("traced", "new"):
        wf.wait_for_workflow_completion(parent, timeout_in_seconds=30)
    ix = make_indexer(devengine.config())
    converge(ix)

    def engine_trace(instance_id: str) -> str:
        """The trace id in the traceparent of the instance's executionStarted, as read now."""
        history = ix.client.get_history(instance_id)
        started = next(e for e in history if e.event_type == "executionStarted")
        assert started.trace_parent, f"{instance_id}: its executionStarted names no trace"
        return started.trace_parent.split("-")[1]

    traces = {}
    for parent, family_size in (("traced", 3), ("new", 2)):
        family = Instance.objects.filter(Q(instance_id=parent) | Q(parent_instance_id=parent))
        assert family.count() == family_size
        for inst in family:
            traces[inst.instance_id] = engine_trace(inst.instance_id)
            run = Run.objects.get(instance=inst)
            assert (inst.trace_id, run.trace_id) == (traces[inst.instance_id],) * 2
        assert {traces[inst.instance_id] for inst in family} == {traces[parent]}
    assert traces["traced"] == caller_trace
    assert traces["new"] not in ("", caller_trace)


def test_a_finished_id_started_again_gets_a_new_run(devengine, wf, make_indexer):
    ix = make_indexer(devengine.config())
    wf.schedule_new_workflow(wf_kinds.two_steps, input=ORDER, instance_id="again")
    wf.wait_for_workflow_completion("again", timeout_in_seconds=20)
    converge(ix)
    wf.schedule_new_workflow(
        wf_kinds.fails, input={"id": "x", "address": "nowhere"}, instance_id="again"
    )
    wf.wait_for_workflow_completion("again", timeout_in_seconds=20)
    # Terminal instances are re-read rarely: the actions service hints after a (re)start.
    request_refresh(ix.engine, "again")
    converge(ix)
    inst = Instance.objects.get(instance_id="again")
    assert inst.status == "FAILED" and inst.name == "fails"
    runs = list(inst.runs.order_by("ordinal").values_list("name", "status"))
    assert runs == [("two_steps", "COMPLETED"), ("fails", "FAILED")]
    assert StatusCount.objects.get(name="two_steps", status="COMPLETED").count == 0
    assert change_log_mismatches() == []


def test_a_follower_of_the_change_log_rebuilds_each_step_of_an_instance(
    devengine, wf, make_indexer
):
    # A live page knows only the log: each status, new run, added event and purge must be in
    # it, in order, for what it rebuilds to be what the pages load.
    ix = make_indexer(devengine.config())

    def step() -> None:
        request_refresh(ix.engine, "w")  # a finished instance is re-read rarely
        converge(ix)
        assert change_log_mismatches() == []

    wf.schedule_new_workflow(wf_kinds.wait_forever, instance_id="w")
    wf.wait_for_workflow_start("w", timeout_in_seconds=10)
    step()
    wf.pause_workflow("w")
    step()
    wf.resume_workflow("w")
    wf.raise_workflow_event("w", "go", data=1)
    wf.wait_for_workflow_completion("w", timeout_in_seconds=20)
    step()
    wf.schedule_new_workflow(wf_kinds.monitor, input=1, instance_id="w")
    wf.wait_for_workflow_completion("w", timeout_in_seconds=20)
    step()
    wf.purge_workflow("w")
    step()
    wf.schedule_new_workflow(wf_kinds.wait_forever, instance_id="w")
    wf.wait_for_workflow_start("w", timeout_in_seconds=10)
    step()
    kinds = list(ChangeLog.objects.order_by("id").values_list("kind", flat=True))
    assert kinds.count("status") == 2 and kinds.count("purged") == 1
    assert Run.objects.filter(instance__instance_id="w").count() >= 3


def test_opening_an_instance_shows_what_the_engine_has_after_a_reload(
    devengine, wf, make_indexer, client
):
    # A finished id started again, and an id not indexed yet: looking at them is what makes
    # the indexer read them (workflows_ui.freshness), no hint from anything else.
    client.force_login(User.objects.create_user("alice"))
    ix = make_indexer(devengine.config(), list_pages_per_pass=0)
    wf.schedule_new_workflow(wf_kinds.two_steps, input=ORDER, instance_id="again")
    wf.wait_for_workflow_completion("again", timeout_in_seconds=20)
    request_refresh(ix.engine, "again")  # the one id the indexer knows: no listing here
    ix.run_pass()
    assert Instance.objects.get(instance_id="again").status == "COMPLETED"
    wf.schedule_new_workflow(
        wf_kinds.fails, input={"id": "x", "address": "nowhere"}, instance_id="again"
    )
    wf.wait_for_workflow_completion("again", timeout_in_seconds=20)
    wf.schedule_new_workflow(wf_kinds.two_steps, input=ORDER, instance_id="new-one")
    wf.wait_for_workflow_completion("new-one", timeout_in_seconds=20)
    # As if read a while ago: the next read of a finished instance is a minute away.
    read_at = timezone.now() - timedelta(seconds=30)
    InstanceCheck.objects.update(read_at=read_at)
    ix.run_pass()
    assert Instance.objects.get(instance_id="again").status == "COMPLETED"
    page = client.get("/instances/local/again/")
    assert b"it reads it again now" in page.content
    missing = client.get("/instances/local/new-one/")
    assert missing.status_code == 404 and b'id="looking-for"' in missing.content
    ix.run_pass()
    page = client.get("/instances/local/again/")
    assert b"Failed" in page.content and b"it reads it again now" not in page.content
    inst = Instance.objects.get(instance_id="again")
    assert list(inst.runs.order_by("ordinal").values_list("name", "status")) == [
        ("two_steps", "COMPLETED"),
        ("fails", "FAILED"),
    ]
    assert inst.schedule.read_at > read_at
    page = client.get("/instances/local/new-one/")
    assert page.status_code == 200 and b"Completed" in page.content
    assert mismatches(ix) == []


def test_a_stalled_instance_is_indexed_with_its_reason_then_as_picked_up_again(
    devengine, make_indexer
):
    # The SDK's versioned workflows: an instance written by v2, and a deployment that leaves
    # only workers with v1 when it needs its next turn.
    ix = make_indexer(devengine.config("shop"))
    client = DaprWorkflowClient(host="127.0.0.1", port=str(devengine.port))

    def worker(*versions: str) -> WorkflowRuntime:
        runtime = WorkflowRuntime(host="127.0.0.1", port=str(devengine.port))
        wf_kinds.register_versions(runtime, versions)
        runtime.start()
        return runtime

    def indexed() -> Instance:
        converge(ix)
        return Instance.objects.get(instance_id="plan-1")

    try:
        newer = worker("v1", "v2")
        try:
            client.schedule_new_workflow(wf_kinds.VERSIONED, instance_id="plan-1")
            client.wait_for_workflow_start("plan-1", timeout_in_seconds=20)
            inst = indexed()
            assert (inst.status, inst.version, inst.stall_reason) == ("RUNNING", "v2", "")
        finally:
            newer.shutdown()

        older = worker("v1")
        try:
            client.raise_workflow_event("plan-1", "go", data="x")
            wait_for(lambda: client.get_workflow_state("plan-1").runtime_status.name == "STALLED")
            inst = indexed()
        finally:
            older.shutdown()
        assert (inst.status, inst.stall_reason) == ("STALLED", "VERSION_NOT_AVAILABLE")
        assert "v2" in inst.stall_description
        api = APIClient()
        api.force_authenticate(User.objects.create_user("reader"))
        shown = api.get("/api/instances/shop/plan-1/").json()
        assert (shown["status"], shown["stall_reason"]) == ("STALLED", "VERSION_NOT_AVAILABLE")

        newer = worker("v1", "v2")  # the deployment rolled back: picked up where it stopped
        try:
            client.wait_for_workflow_completion("plan-1", timeout_in_seconds=20)
            inst = indexed()
        finally:
            newer.shutdown()
        assert (inst.status, inst.output, inst.stall_reason) == ("COMPLETED", '"v2 x"', "")
        assert inst.stall_description == ""
        kinds = list(
            Run.objects.get(instance=inst)
            .events.order_by("position")
            .values_list("event_type", flat=True)
        )
        assert kinds.count("executionStalled") == 1
        assert kinds.index("executionStalled") < kinds.index("executionCompleted")
    finally:
        client.close()


def test_an_instance_stalled_on_its_payload_size_is_indexed_with_the_reason(tmp_path, make_indexer):
    # A limit of 64 KiB, and an event that fits in a message but not in 95% of one.
    engine = DevEngine(tmp_path / "small.sqlite3", "--max-body-size", "64Ki").start()
    runtime = WorkflowRuntime(host="127.0.0.1", port=str(engine.port))
    wf_kinds.register_all(runtime)
    runtime.start()
    client = DaprWorkflowClient(host="127.0.0.1", port=str(engine.port))
    try:
        client.schedule_new_workflow(wf_kinds.wait_forever, instance_id="big")
        client.wait_for_workflow_start("big", timeout_in_seconds=20)
        client.raise_workflow_event("big", "go", data="x" * 63_000)
        wait_for(lambda: client.get_workflow_state("big").runtime_status.name == "STALLED")
        ix = make_indexer(engine.config())
        converge(ix)
        inst = Instance.objects.get(instance_id="big")
        assert (inst.status, inst.stall_reason) == ("STALLED", "PAYLOAD_SIZE_EXCEEDED")
        assert inst.stall_description.startswith("Workflow payload size ")
        assert "exceeds 95% of max gRPC body size 65536 bytes" in inst.stall_description
    finally:
        client.close()
        runtime.shutdown()
        engine.stop()


def test_a_scheduled_start_is_listed_pending_with_times_of_its_own_then_its_run(
    devengine, wf, make_indexer
):
    # Until its first turn commits, the engine (like daprd) has no created or last-updated
    # time for it: Go's zero time on the wire, which must not reach the console as year 1.
    ix = make_indexer(devengine.config())
    before = timezone.now()
    start_at = before + timedelta(seconds=8)  # time enough to index it while pending
    wf.schedule_new_workflow(
        wf_kinds.two_steps, input=ORDER, instance_id="later", start_at=start_at
    )
    assert ix.client.get_instance("later").created_at is None
    converge(ix)
    inst = Instance.objects.get(instance_id="later")
    assert inst.status == "PENDING" and inst.name == "two_steps"
    assert before <= inst.created_at <= timezone.now()
    assert before <= inst.last_updated_at <= timezone.now()
    listed = APIClient()
    listed.force_authenticate(User.objects.create_user("viewer"))
    (row,) = listed.get("/api/instances/?status=PENDING").json()["results"]
    assert row["instance_id"] == "later" and row["created_at"].startswith(str(before.year))

    wf.wait_for_workflow_completion("later", timeout_in_seconds=20)
    request_refresh(ix.engine, "later")
    converge(ix)
    inst.refresh_from_db()
    engine_state = ix.client.get_instance("later")
    assert inst.status == "COMPLETED" and inst.created_at == engine_state.created_at
    assert json.loads(inst.runs.get().input) == ORDER


def test_purge_leaves_a_tombstone_with_its_history(devengine, wf, make_indexer):
    ix = make_indexer(devengine.config())
    wf.schedule_new_workflow(wf_kinds.two_steps, input=ORDER, instance_id="p1")
    wf.schedule_new_workflow(wf_kinds.two_steps, input=ORDER, instance_id="p2")
    wf.wait_for_workflow_completion("p1", timeout_in_seconds=20)
    wf.wait_for_workflow_completion("p2", timeout_in_seconds=20)
    converge(ix)
    wf.purge_workflow("p1")
    wait_for(lambda: (ix.run_pass(), Instance.objects.get(instance_id="p1").purged)[1])
    gone = Instance.objects.get(instance_id="p1")
    assert gone.purged_at is not None
    assert gone.runs.get().events.count() == 9
    assert not Instance.objects.get(instance_id="p2").purged
    assert ChangeLog.objects.filter(kind="purged").count() == 1
    assert mismatches(ix) == []
    assert change_log_mismatches() == []


def test_an_instance_the_engine_purged_by_retention_reads_as_a_tombstone(
    devengine, wf, make_indexer
):
    from workflows_ui.views import instance_url

    devengine.stop()
    devengine.args += ["--state-retention", "completed=1s"]
    devengine.start()
    ix = make_indexer(devengine.config())
    wf.schedule_new_workflow(wf_kinds.two_steps, input=ORDER, instance_id="kept-1s")
    wf.wait_for_workflow_completion("kept-1s", timeout_in_seconds=20)
    converge(ix)
    # The engine purges it a second after it ended; the sweep finds it gone.
    wait_for(lambda: (ix.run_pass(), Instance.objects.get(instance_id="kept-1s").purged)[1])

    gone = Instance.objects.get(instance_id="kept-1s")
    assert gone.status == "COMPLETED" and gone.runs.get().events.count() == 9
    pages = Client()
    pages.force_login(User.objects.create_user("viewer"))
    listed = pages.get("/instances/?purged=include")
    assert listed.status_code == 200 and "kept-1s" in listed.content.decode()
    shown = pages.get(instance_url(ix.engine.name, "kept-1s"))
    assert shown.status_code == 200
    assert "kept as a tombstone" in shown.content.decode()


def test_an_engine_stopped_and_restarted_is_reported_then_caught_up(devengine, wf, make_indexer):
    ix = make_indexer(devengine.config(), concurrency=2)
    wf.schedule_new_workflow(wf_kinds.wait_forever, instance_id="w1")
    wf.wait_for_workflow_start("w1", timeout_in_seconds=10)
    converge(ix)
    devengine.stop()
    with pytest.raises(EngineUnavailable):
        ix.run_pass()
    engine = Engine.objects.get(pk=ix.engine.pk)
    assert engine.reachable is False and engine.last_error
    assert Instance.objects.get(instance_id="w1").status == "RUNNING"  # indexed data stays
    devengine.start()
    wf.raise_workflow_event("w1", "go", data="back")
    wf.wait_for_workflow_completion("w1", timeout_in_seconds=60)
    wf.schedule_new_workflow(wf_kinds.two_steps, input=ORDER, instance_id="after")
    wf.wait_for_workflow_completion("after", timeout_in_seconds=30)
    converge(ix)
    assert Engine.objects.get(pk=ix.engine.pk).reachable is True
    assert Instance.objects.get(instance_id="w1").output == '"back"'


def test_an_engine_down_keeps_the_time_its_failure_began_until_a_pass_succeeds(
    devengine, make_indexer
):
    ix = make_indexer(devengine.config())
    converge(ix)
    assert Engine.objects.get(pk=ix.engine.pk).failing_since is None
    devengine.stop()
    before = timezone.now()
    with pytest.raises(EngineUnavailable):
        ix.run_pass()
    first = Engine.objects.get(pk=ix.engine.pk)
    assert first.failing_since is not None and first.failing_since >= before
    assert first.down_since() == first.failing_since  # unreachable, since then
    with pytest.raises(EngineUnavailable):
        ix.run_pass()
    second = Engine.objects.get(pk=ix.engine.pk)
    assert second.last_error_at is not None and second.last_error_at > first.last_error_at
    assert second.failing_since == first.failing_since
    # Back, but refusing the console (no api token): another error, the same failure going on.
    devengine.args = ["--api-token", "s3cret"]
    devengine.start()
    with pytest.raises(EngineRejected):
        ix.run_pass()
    refused = Engine.objects.get(pk=ix.engine.pk)
    assert refused.health() == "failing" and "UNAUTHENTICATED" in refused.last_error
    assert refused.last_error != second.last_error
    assert refused.failing_since == first.failing_since
    devengine.stop()
    devengine.args = []
    devengine.start()
    converge(ix)
    back = Engine.objects.get(pk=ix.engine.pk)
    assert back.health() == "ok" and back.failing_since is None and back.down_since() is None


def test_an_instance_too_big_to_read_is_reported_and_indexed_without_its_payloads(devengine, wf):
    # A history or payload over the client's receive limit fails with RESOURCE_EXHAUSTED, a
    # code that used to end the pass as if the engine were down: the instance blocked the
    # engine's indexing for good. (The limit is lowered here; the console's is 256 MiB.)
    wf.schedule_new_workflow(wf_kinds.wait_forever, input="x" * 200_000, instance_id="huge")
    wf.schedule_new_workflow(wf_kinds.two_steps, input=ORDER, instance_id="small")
    wf.wait_for_workflow_start("huge", timeout_in_seconds=10)
    wf.wait_for_workflow_completion("small", timeout_in_seconds=20)
    config = devengine.config()
    (engine,) = sync_engines([config])
    channel = grpc.insecure_channel(config.address, [("grpc.max_receive_message_length", 100_000)])
    client = EngineClient(config, timeout=5.0, channel=channel)
    roomy = EngineClient(config, timeout=5.0)
    try:
        ix = EngineIndexer(engine, client, Limits(concurrency=4, sweep_interval=0.0))
        assert ix.run_pass().errors == 1
        assert Instance.objects.get(instance_id="small").status == "COMPLETED"
        row = Engine.objects.get(pk=engine.pk)
        assert row.reachable is True and row.health() == "failing"
        assert "'huge'" in row.last_error and "RESOURCE_EXHAUSTED" in row.last_error
        # Read again without its payloads: listed and counted, its input not (yet) stored.
        huge = Instance.objects.get(instance_id="huge")
        assert (huge.status, huge.input, huge.runs.count()) == ("RUNNING", "", 0)
        problem = huge.read_problem()
        assert problem is not None and problem.read_error.startswith("GetInstance: ")
        assert not problem.history_only()
        InstanceCheck.objects.update(due_at=timezone.now())
        ix = EngineIndexer(engine, roomy, Limits(concurrency=4, sweep_interval=0.0))
        assert ix.run_pass().errors == 0
        huge = Instance.objects.get(instance_id="huge")
        assert huge.input_size == len('"' + "x" * 200_000 + '"') and huge.read_problem() is None
        assert huge.runs.get().event_count > 0
    finally:
        client.close()
        roomy.close()


def test_an_instance_whose_history_is_too_big_to_read_is_indexed_from_its_state(devengine, wf):
    # A sidecar sends no message over its size limit (daprd's --max-body-size, 4 MiB by
    # default): a long history can't be read while the instance's state still can. The
    # instance is listed and counted from its state, and its history is asked for again until
    # it comes. (The limit is the client's here, lowered.)
    wf.schedule_new_workflow(wf_kinds.wait_forever, instance_id="long")
    wf.wait_for_workflow_start("long", timeout_in_seconds=10)
    wf.raise_workflow_event("long", "noise", data="x" * 150_000)  # not waited for: kept
    config = devengine.config()
    (engine,) = sync_engines([config])
    roomy = EngineClient(config, timeout=5.0)
    wait_for(lambda: any(e.event_type == "eventRaised" for e in roomy.get_history("long")))
    channel = grpc.insecure_channel(config.address, [("grpc.max_receive_message_length", 100_000)])
    tight = EngineClient(config, timeout=5.0, channel=channel)
    try:
        ix = EngineIndexer(engine, tight, Limits(concurrency=4, sweep_interval=0.0))
        assert ix.run_pass().errors == 1
        inst = Instance.objects.get(instance_id="long")
        assert (inst.status, inst.runs.count()) == ("RUNNING", 0)
        problem = inst.read_problem()
        assert problem is not None and problem.history_only()
        assert "RESOURCE_EXHAUSTED" in problem.read_error
        assert StatusCount.objects.get(engine=engine, status="RUNNING").count == 1
        InstanceCheck.objects.update(due_at=timezone.now())
        ix = EngineIndexer(engine, roomy, Limits(concurrency=4, sweep_interval=0.0))
        assert ix.run_pass().errors == 0
        inst = Instance.objects.get(instance_id="long")
        assert inst.read_problem() is None
        types = list(inst.runs.get().events.values_list("event_type", flat=True))
        assert "eventRaised" in types and types.count("executionStarted") == 1
    finally:
        tight.close()
        roomy.close()


def test_an_engine_that_hangs_is_reported_after_one_deadline_not_one_per_instance(devengine, wf):
    for n in range(40):
        wf.schedule_new_workflow(wf_kinds.two_steps, input=ORDER, instance_id=f"h-{n:02}")
    for n in range(40):
        wf.wait_for_workflow_completion(f"h-{n:02}", timeout_in_seconds=30)
    config = devengine.config()
    (engine,) = sync_engines([config])
    client = EngineClient(config, timeout=1.0)
    assert devengine.process is not None
    try:
        ix = EngineIndexer(engine, client, Limits(concurrency=2, sweep_interval=3600.0))
        ix.run_pass()
        assert Instance.objects.count() == 40
        InstanceCheck.objects.update(due_at=timezone.now())  # all 40 to be read again
        devengine.process.send_signal(signal.SIGSTOP)  # it accepts connections, answers nothing
        try:
            began = time.monotonic()
            with pytest.raises(EngineUnavailable, match="Hello"):
                ix.run_pass()
            # The reads in flight time out, Hello does too, and the pass ends: 40 reads two at a
            # time would take 20 deadlines one by one.
            assert time.monotonic() - began < 10
            assert Engine.objects.get(pk=engine.pk).reachable is False
        finally:
            devengine.process.send_signal(signal.SIGCONT)
        ix.run_pass()
        assert Engine.objects.get(pk=engine.pk).health() == "ok"
    finally:
        client.close()


def test_a_wrong_api_token_is_reported_with_the_engines_reason(tmp_path, make_indexer):
    engine = DevEngine(tmp_path / "auth.sqlite3", "--api-token", "s3cret").start()
    try:
        ix = make_indexer(engine.config(token="wrong"))
        with pytest.raises(EngineRejected):
            ix.run_pass()
        row = Engine.objects.get(pk=ix.engine.pk)
        assert "UNAUTHENTICATED" in row.last_error
        assert row.reachable is True and row.health() == "failing"
        good = make_indexer(engine.config(token="s3cret"))
        good.run_pass()
        row = Engine.objects.get(pk=ix.engine.pk)
        assert row.supports_list is True and row.health() == "ok"
    finally:
        engine.stop()


def test_an_api_token_missing_or_refused_names_the_setting_and_never_shows_the_token(
    tmp_path, make_indexer
):
    engine = DevEngine(tmp_path / "auth.sqlite3", "--api-token", "right-Token-41").start()
    try:
        for name, token, hint in [
            ("billing", "", "the engine wants an api token: set CONSOLE_ENGINE_TOKEN_BILLING "),
            ("orders-eu", "wrong-Token-42", "the engine refused the api token of "
             "CONSOLE_ENGINE_TOKEN_ORDERS_EU: "),
        ]:  # fmt: skip
            ix = make_indexer(EngineConfig(name, engine.address, token=token))
            with pytest.raises(EngineRejected) as caught:
                ix.run_pass()
            # First: the engines page shows an error's first 200 characters.
            assert Engine.objects.get(name=name).last_error.startswith(f"Hello: {hint}")
            assert str(caught.value).startswith(f"Hello: {hint}")
    finally:
        engine.stop()
    api = APIClient()
    api.force_login(User.objects.create_user("alice"))
    for url in ["/api/engines/", "/"]:
        body = api.get(url).content.decode()
        assert "CONSOLE_ENGINE_TOKEN_ORDERS_EU" in body
        assert "Token-4" not in body


@contextmanager
def _listening(answer: bytes | None):
    """A port that takes each connection and answers ``answer`` to what it is sent (a web
    server), or nothing ever (None: an engine that hangs); its address."""
    listener = socket.create_server(("127.0.0.1", 0))
    taken: list[socket.socket] = []

    def serve():
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return  # closed: the block ended
            taken.append(conn)
            if answer is not None:
                conn.recv(1024)
                conn.sendall(answer)

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield f"127.0.0.1:{listener.getsockname()[1]}"
    finally:
        listener.close()
        for conn in taken:
            conn.close()


def test_an_address_with_no_grpc_server_or_one_that_never_answers_is_said_so():
    assert _hello_error(EngineConfig("a", f"127.0.0.1:{free_port()}")).startswith(
        "Hello: nothing listens at the address (an engine that is stopped, or another port?); "
    )
    web = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n"
    with _listening(web) as web_port, _listening(None) as silent:
        error = _hello_error(EngineConfig("a", web_port))
        assert error.startswith("Hello: the address answers, but not in gRPC (a web server?")
        with (
            EngineClient(EngineConfig("a", silent), timeout=1.0) as client,
            pytest.raises(EngineUnavailable) as caught,
        ):
            client.hello()
        assert str(caught.value).startswith(
            "Hello: no answer within 1s, though the address takes connections"
        )
        # Once gRPC's own attempt to connect has timed out (20 s by default, less here).
        fast = grpc.insecure_channel(silent, [("grpc.min_reconnect_backoff_ms", 300)])
        with (
            EngineClient(EngineConfig("a", silent), channel=fast) as client,
            pytest.raises(EngineUnavailable) as caught,
        ):
            client.hello()
        assert "SETTINGS frame" in str(caught.value)
        assert str(caught.value).startswith("Hello: the address takes connections but answers")


def subprocess_env(config: EngineConfig) -> dict[str, str]:
    db = connection.settings_dict
    if connection.vendor == "postgresql":
        url = f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"
    else:
        url = f"sqlite:///{db['NAME']}"
    return {
        **os.environ,
        "DATABASE_URL": url,
        "CONSOLE_ENGINES": f"{config.name}={config.address}",
        "CONSOLE_INDEXER_ACTIVE_INTERVAL": "0",
        "CONSOLE_INDEXER_IDLE_SLEEP": "0.05",
        "CONSOLE_INDEXER_BATCH": "40",
        "CONSOLE_INDEXER_LIST_PAGE_SIZE": "25",
        "CONSOLE_INDEXER_LIST_PAGES_PER_PASS": "1",
        "PYTHONPATH": str(REPO_ROOT),
    }


def test_an_indexer_killed_at_any_moment_converges_without_duplicates(
    devengine, wf, make_indexer, tmp_path
):
    config = devengine.config()
    sync_engines([config])
    for i in range(60):
        kind = [wf_kinds.two_steps, wf_kinds.fan_out, wf_kinds.with_retry][i % 3]
        arg = {"id": f"o-{i}", "qtys": [1, 2], **ORDER} if kind is wf_kinds.fan_out else ORDER
        wf.schedule_new_workflow(kind, input=arg, instance_id=f"kill-{i:03d}")
    log = open(tmp_path / "indexer.log", "ab")  # noqa: SIM115
    cmd = [sys.executable, "manage.py", "runindexer"]
    rng = random.Random(4)
    for _ in range(4):
        proc = subprocess.Popen(
            cmd, cwd=REPO_ROOT, env=subprocess_env(config), stdout=log, stderr=subprocess.STDOUT
        )
        # Kill it while it writes: once it has committed something, at a random moment.
        written, t0 = ChangeLog.objects.count(), timezone.now()

        def progressed(w=written, t=t0, p=proc):
            contact = Engine.objects.get(name="local").last_contact_at
            return (
                ChangeLog.objects.count() > w or (contact and contact > t) or p.poll() is not None
            )

        wait_for(progressed)
        time.sleep(rng.uniform(0.0, 0.3))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    for i in range(60):
        wf.wait_for_workflow_completion(f"kill-{i:03d}", timeout_in_seconds=60)
    # A last indexer, stopped cleanly by SIGTERM once the database matches the engine.
    proc = subprocess.Popen(
        cmd, cwd=REPO_ROOT, env=subprocess_env(config), stdout=log, stderr=subprocess.STDOUT
    )
    ix = make_indexer(config)
    started = timezone.now()
    try:
        # It is running its loop (so SIGTERM reaches its handler) once it has finished a pass.
        wait_for(lambda: (Engine.objects.get(name="local").last_contact_at or started) > started)
        deadline = time.monotonic() + 60
        diffs = mismatches(ix)
        while diffs and time.monotonic() < deadline:
            time.sleep(0.3)
            diffs = mismatches(ix)
        assert diffs == []
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
        log.close()
    assert Instance.objects.count() == 60 + 20 * 2  # fan_out has two children
    dupes = HistoryEvent.objects.values("run", "position").annotate(n=Count("id")).filter(n__gt=1)
    assert not dupes.exists()
    assert ChangeLog.objects.filter(kind="new").count() == Instance.objects.count()
    assert change_log_mismatches() == []
    assert b"indexer stopped" in (tmp_path / "indexer.log").read_bytes()


def _two_engines_with_workers(
    stack: ExitStack, tmp_path, names, peers: bool = False
) -> tuple[list, list]:
    """Two devengines, each with an SDK worker and client; all stopped when ``stack`` closes.
    With ``peers``, each is the other's peer (a workflow may run children on the other's app)."""
    engines, clients = [], []
    ports = {name: free_port() for name in names}
    for name in names:
        args = ["--app-id", name]
        if peers:
            for other in names:
                if other != name:
                    args += ["--peer", f"{other}=127.0.0.1:{ports[other]}"]
        dev = DevEngine(tmp_path / f"{name}.sqlite3", *args, port=ports[name])
        stack.callback(dev.stop)
        dev.start()
        runtime = WorkflowRuntime(host="127.0.0.1", port=str(dev.port))
        wf_kinds.register_all(runtime)
        runtime.start()
        stack.callback(runtime.shutdown)
        client = DaprWorkflowClient(host="127.0.0.1", port=str(dev.port))
        stack.callback(client.close)
        engines.append(dev)
        clients.append(client)
    return engines, clients


def test_a_child_run_on_another_apps_engine_links_to_its_parent_on_the_first(tmp_path):
    with ExitStack() as stack:
        (orders, billing), clients = _two_engines_with_workers(
            stack, tmp_path, ("orders", "billing"), peers=True
        )
        clients[0].schedule_new_workflow(
            wf_kinds.cross_app_order, input={"app": "billing", "order": ORDER}, instance_id="xo"
        )
        state = clients[0].wait_for_workflow_completion("xo", timeout_in_seconds=60)
        assert state is not None and state.runtime_status.name == "COMPLETED"
        env = {
            **subprocess_env(orders.config("orders")),
            "CONSOLE_ENGINES": f"orders={orders.address},billing={billing.address}",
        }
        proc = start_runindexer(stack, tmp_path / "indexer.log", env)

        def linked_child() -> Instance | None:
            child = Instance.objects.filter(instance_id="xo:0001").first()
            return child if child is not None and child.parent_engine_id is not None else None

        child = wait_for(linked_child, timeout=30)
        assert isinstance(child, Instance)
        parent = Instance.objects.get(engine__name="orders", instance_id="xo")
        assert child.engine.name == "billing"
        assert (child.parent_engine.name, child.parent_app_id) == ("orders", "orders")
        assert child.parent() == parent
        assert list(parent.children().values_list("instance_id", flat=True)) == ["xo:0001"]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0


def test_a_parents_page_links_its_children_on_another_apps_engine_there(
    tmp_path, make_indexer, client
):
    # A child handed to billing runs on billing's engine: the order's timeline and its "waiting
    # on" lead there, for a child indexed and for one billing (down) has not received yet.
    client.force_login(User.objects.create_user("alice"))
    with ExitStack() as stack:
        (orders, billing), clients = _two_engines_with_workers(
            stack, tmp_path, ("orders", "billing"), peers=True
        )
        order = {"app": "billing", "order": ORDER}
        clients[0].schedule_new_workflow(wf_kinds.cross_app_order, input=order, instance_id="xo")
        clients[0].wait_for_workflow_completion("xo", timeout_in_seconds=60)
        indexers = [make_indexer(orders.config("orders")), make_indexer(billing.config("billing"))]
        for ix in indexers:
            converge(ix)
        billing.stop()
        clients[0].schedule_new_workflow(wf_kinds.cross_app_order, input=order, instance_id="xw")

        def waiting_on_its_child() -> bool:
            indexers[0].run_pass()
            return HistoryEvent.objects.filter(
                run__instance__instance_id="xw", event_type="childWorkflowInstanceCreated"
            ).exists()

        wait_for(waiting_on_its_child, timeout=30)
    done = client.get("/instances/orders/xo/").content.decode()
    start = done.index('<svg class="timeline"')
    timeline = done[start : done.index("</svg>", start)]
    assert 'href="/instances/billing/xo:0001/"' in timeline
    assert "/instances/orders/xo:0001/" not in done
    waiting = client.get("/instances/orders/xw/").content.decode()
    waits = waiting[waiting.index('id="waiting"') : waiting.index('id="timeline"')]
    assert 'class="mono child-wait" href="/instances/billing/xw:0001/"' in waits
    assert "on billing" in waits
    assert "/instances/orders/xw:0001/" not in waiting


def test_runindexer_outlives_its_engine_down_and_catches_up_once_it_is_back(
    devengine, wf, tmp_path
):
    api = APIClient()
    api.force_login(User.objects.create_user("alice"))
    log_path = tmp_path / "indexer.log"

    def health() -> str:
        rows = {row["name"]: row for row in api.get("/api/engines/").json()}
        return rows["local"]["health"]

    def indexed(instance_id: str) -> bool:
        return Instance.objects.filter(instance_id=instance_id, status="COMPLETED").exists()

    def failed_since(at) -> bool:
        """Whether a pass failed after ``at``."""
        return Engine.objects.get(name="local").last_error_at > at

    wf.schedule_new_workflow(wf_kinds.two_steps, input=ORDER, instance_id="before")
    wf.wait_for_workflow_completion("before", timeout_in_seconds=20)
    with ExitStack() as stack:
        proc = start_runindexer(stack, log_path, subprocess_env(devengine.config()))

        def running(check):
            """``check``, waited for while the one runindexer process goes on running."""

            def step() -> object:
                assert proc.poll() is None, log_path.read_text()[-3000:]
                return check()

            return step

        wait_for(running(lambda: indexed("before")), timeout=20)
        assert health() == "ok"
        devengine.stop()
        wait_for(running(lambda: health() == "unreachable"), timeout=15)
        # It goes on trying: a later pass fails too.
        first_failure = Engine.objects.get(name="local").last_error_at
        wait_for(running(lambda: failed_since(first_failure)), timeout=15)
        devengine.start()  # the same port and SQLite file
        wf.schedule_new_workflow(wf_kinds.two_steps, input=ORDER, instance_id="after")
        wf.wait_for_workflow_completion("after", timeout_in_seconds=20)
        wait_for(running(lambda: indexed("after")), timeout=20)
        assert health() == "ok"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    log = log_path.read_text()
    assert "engine local unreachable" in log and "engine local reachable again" in log


def test_an_engine_that_hangs_holds_back_neither_the_other_engines_nor_a_stop(tmp_path):
    with ExitStack() as stack:
        (hung, other), clients = _two_engines_with_workers(stack, tmp_path, ("hung", "other"))
        for client, name in zip(clients, ("hung", "other"), strict=True):
            client.schedule_new_workflow(wf_kinds.wait_forever, instance_id=f"{name}-1")
        env = {
            **subprocess_env(hung.config("hung")),
            "CONSOLE_ENGINES": f"hung={hung.address},other={other.address}",
            # Each read of the stopped engine waits this long: far more than the waits below.
            "CONSOLE_ENGINE_TIMEOUT": "60",
        }
        proc = start_runindexer(stack, tmp_path / "indexer.log", env)
        wait_for(
            lambda: Instance.objects.filter(instance_id__in=["hung-1", "other-1"]).count() == 2
        )
        assert hung.process is not None
        pid = hung.process.pid
        os.kill(pid, signal.SIGSTOP)  # answers nothing, refuses nothing
        stack.callback(os.kill, pid, signal.SIGCONT)
        time.sleep(1.0)  # the pending instance is re-read every pass: reads now wait
        clients[1].schedule_new_workflow(wf_kinds.wait_forever, instance_id="other-2")
        wait_for(lambda: Instance.objects.filter(instance_id="other-2").exists(), timeout=20)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0  # not after the hung reads' deadline
    assert b"indexer stopped" in (tmp_path / "indexer.log").read_bytes()


@contextmanager
def _served(servicer, workers=2, credentials=None):
    """``servicer`` as an engine on a free port of 127.0.0.1 (TLS with ``credentials``), for
    the block; its address."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers))
    pb_grpc.add_TaskHubSidecarServiceServicer_to_server(servicer, server)
    port = free_port()
    if credentials is not None:
        server.add_secure_port(f"127.0.0.1:{port}", credentials)
    else:
        server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(0)


def test_tls_to_an_engine_without_it_is_said_in_the_log_not_in_grpcs_own_lines(tmp_path):
    # gRPC's core wrote a line of its own to stderr at each attempt to connect (every few
    # seconds, for as long as the setting was wrong), past the log's limits on repeated lines.
    with _served(OldSidecar()) as address:
        env = {
            **subprocess_env(EngineConfig("plain", address)),
            "CONSOLE_ENGINE_TLS_PLAIN": "1",
        }
        env.pop("GRPC_VERBOSITY", None)
        done = subprocess.run(
            [sys.executable, "manage.py", "runindexer", "--once"],
            cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert done.returncode == 1
    assert "engine plain unreachable" in done.stderr and "handshake failed" in done.stderr.lower()
    assert "ssl_transport_security" not in done.stderr, done.stderr


def _self_signed_certificate() -> tuple[bytes, bytes]:
    """A key and a certificate for 127.0.0.1 (PEM), valid for a day."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = timezone.now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return key_pem, cert.public_bytes(serialization.Encoding.PEM)


@contextmanager
def _closing_every_connection():
    """A port that takes each connection and closes it at once (a proxy in front of an engine
    that is down, as Docker's published ports); its address."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve():
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return  # closed: the block ended
            conn.close()

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield f"127.0.0.1:{listener.getsockname()[1]}"
    finally:
        listener.close()


def _hello_error(config: EngineConfig) -> str:
    with EngineClient(config, timeout=5.0) as client, pytest.raises(EngineUnavailable) as caught:
        client.hello()
    return str(caught.value)


def test_a_tls_mismatch_names_the_setting_to_change(tmp_path, make_indexer):
    # gRPC says only "Socket closed" (no TLS to an engine that wants it) or "Tls handshake
    # failed ... WRONG_VERSION_NUMBER" (TLS to one without it).
    key, cert = _self_signed_certificate()
    ca = tmp_path / "ca.pem"
    ca.write_bytes(cert)
    tls = grpc.ssl_server_credentials([(key, cert)])
    with _served(OldSidecar(), credentials=tls) as tls_address, _served(OldSidecar()) as address:
        # What the engines page shows: the error stored by the indexer.
        ix = make_indexer(EngineConfig("orders-eu", tls_address))
        with pytest.raises(EngineUnavailable):
            ix.run_pass()
        # First: the engines page shows the first 200 characters.
        stored = Engine.objects.get(name="orders-eu").last_error
        assert stored.startswith(
            "Hello: the engine answers in TLS: set CONSOLE_ENGINE_TLS_ORDERS_EU=1;"
        )
        assert "Socket closed" in stored
        error = _hello_error(EngineConfig("a", address, tls=True, tls_ca_file=str(ca)))
        assert error.startswith(
            "Hello: the engine does not answer in TLS: unset CONSOLE_ENGINE_TLS_A;"
        )
        assert "handshake failed" in error.lower()
        with EngineClient(EngineConfig("a", tls_address, tls=True, tls_ca_file=str(ca))) as ok:
            ok.hello()
        # TLS both ways, but a certificate not trusted: not a mismatch.
        assert "CONSOLE_ENGINE_TLS" not in _hello_error(EngineConfig("a", tls_address, tls=True))


@pytest.mark.parametrize("tls", [False, True])
def test_an_engine_down_gets_no_tls_hint(tls):
    with _closing_every_connection() as closing:
        errors = [
            _hello_error(EngineConfig("a", f"127.0.0.1:{free_port()}", tls=tls)),  # refused
            _hello_error(EngineConfig("a", closing, tls=tls)),  # "Socket closed" too
        ]
    assert "Connection refused" in errors[0]
    assert not [e for e in errors if "CONSOLE_ENGINE_TLS" in e], errors


class FrozenListing(pb_grpc.TaskHubSidecarServiceServicer):
    """An engine that answers Hello and then never answers ListInstanceIDs (a sidecar frozen
    mid-call, or a link that stopped passing bytes)."""

    def __init__(self) -> None:
        self.listing = threading.Event()  # a ListInstanceIDs call is waiting
        self.released = threading.Event()

    def Hello(self, request, context):  # noqa: N802 - gRPC method name
        from google.protobuf import empty_pb2

        return empty_pb2.Empty()

    def ListInstanceIDs(self, request, context):  # noqa: N802
        self.listing.set()
        self.released.wait(120)
        return pb.ListInstanceIDsResponse()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_does_not_wait_for_a_call_the_engine_does_not_answer(tmp_path, signum):
    # The indexer's own calls (Hello, ListInstanceIDs) waited for their deadline: a stop while
    # one was pending took CONSOLE_ENGINE_TIMEOUT and more (a minute here), not a second or two.
    frozen = FrozenListing()
    with _served(frozen, workers=4) as address:
        try:
            with ExitStack() as stack:
                env = {
                    **subprocess_env(EngineConfig("frozen", address)),
                    "CONSOLE_ENGINE_TIMEOUT": "60",
                }
                proc = start_runindexer(stack, tmp_path / "indexer.log", env)
                assert frozen.listing.wait(30)
                started = time.monotonic()
                proc.send_signal(signum)
                assert proc.wait(20) == 0
                assert time.monotonic() - started < 5
        finally:
            frozen.released.set()
    text = (tmp_path / "indexer.log").read_text()
    assert "indexer stopped" in text and "Traceback" not in text, text
    # Given up by the stop: the engine's health says nothing of it.
    engine = Engine.objects.get(name="frozen")
    assert engine.reachable is not False and engine.last_error == ""


def test_two_busy_engines_indexed_at_once_by_one_indexer_converge(tmp_path, make_indexer):
    # Each engine has a thread of its own: their chunks commit side by side into one database
    # (SQLite's single writer, PostgreSQL's change-log lock), counts and events kept exact.
    with ExitStack() as stack:
        engines, clients = _two_engines_with_workers(stack, tmp_path, ("a", "b"))
        env = {
            **subprocess_env(engines[0].config("a")),
            "CONSOLE_ENGINES": f"a={engines[0].address},b={engines[1].address}",
        }
        proc = start_runindexer(stack, tmp_path / "indexer.log", env)
        for i in range(40):  # started while the indexer works on both
            for client in clients:
                client.schedule_new_workflow(
                    wf_kinds.two_steps, input=ORDER, instance_id=f"w-{i:02}"
                )
        for client in clients:
            for i in range(40):
                client.wait_for_workflow_completion(f"w-{i:02}", timeout_in_seconds=60)
        indexers = [make_indexer(dev.config(name)) for dev, name in zip(engines, "ab", strict=True)]
        deadline = time.monotonic() + 60
        diffs = [mismatches(ix) for ix in indexers]
        while any(diffs) and time.monotonic() < deadline:
            time.sleep(0.3)
            diffs = [mismatches(ix) for ix in indexers]
        assert diffs == [[], []]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    text = (tmp_path / "indexer.log").read_bytes()
    assert b"Traceback" not in text and b"database error" not in text, text[-2000:]
    dupes = HistoryEvent.objects.values("run", "position").annotate(n=Count("id")).filter(n__gt=1)
    assert not dupes.exists()
    assert ChangeLog.objects.filter(kind="new").count() == Instance.objects.count() == 80


class OldSidecar(pb_grpc.TaskHubSidecarServiceServicer):
    """A sidecar from before Dapr 1.17: Hello and GetInstance only (the rest: UNIMPLEMENTED)."""

    def Hello(self, request, context):  # noqa: N802 - gRPC method name
        from google.protobuf import empty_pb2

        return empty_pb2.Empty()

    def GetInstance(self, request, context):  # noqa: N802
        response = pb.GetInstanceResponse(exists=request.instanceId == "legacy-1")
        if response.exists:
            st = response.workflowState
            st.instanceId = "legacy-1"
            st.name = "old_flow"
            st.workflowStatus = 0
            st.createdTimestamp.FromSeconds(1_700_000_000)
            st.lastUpdatedTimestamp.FromSeconds(1_700_000_100)
        return response


def test_an_engine_answering_unimplemented_is_reported_too_old_not_crashed(make_indexer, caplog):
    with _served(OldSidecar()) as address:
        ix = make_indexer(EngineConfig("old", address))
        result = ix.run_pass()
        assert result.errors == 0
        engine = Engine.objects.get(name="old")
        assert (engine.supports_list, engine.supports_history, engine.supports_rerun) == (
            False,
            False,
            False,
        )
        assert engine.health() == "too-old"
        assert "ListInstanceIDs and GetInstanceHistory" in engine.last_error
        request_refresh(engine, "legacy-1")
        ix.run_pass()
        legacy = Instance.objects.get(instance_id="legacy-1")
        assert legacy.status == "RUNNING" and legacy.name == "old_flow"
        # Said once in the indexer's log too (a terminal showed nothing).
        assert caplog.text.count("engine old is too old") == 1
        api = APIClient()
        api.force_login(User.objects.create_user("alice"))
        row = api.get("/api/engines/").json()[0]
        assert row["health"] == "too-old" and row["too_old"] is True


def test_non_ascii_payloads_are_stored_readable_and_found_by_search(devengine, wf, make_indexer):
    from workflows_ui import search

    ix = make_indexer(devengine.config())
    # The SDK sends JSON with every non-ASCII character escaped ("J\u00fcrgen").
    customer = {"customer": "Jürgen Müller", "note": "注文 😀", "quote": 'say "hi" \\u00fc'}
    wf.schedule_new_workflow(wf_kinds.two_steps, input=customer, instance_id="intl")
    wf.wait_for_workflow_completion("intl", timeout_in_seconds=20)
    converge(ix)
    inst = Instance.objects.get(instance_id="intl")
    assert "Jürgen Müller" in inst.input and "注文 😀" in inst.input
    assert json.loads(inst.input) == customer  # the same JSON value
    run = inst.runs.get()  # its copy of the input, shown by the runs API
    assert (run.input, run.input_size) == (inst.input, inst.input_size)
    started = run.events.get(event_type="executionStarted")  # and the history's
    assert started.details["input"] == inst.input
    qs = Instance.objects.all()
    for word in ("Jürgen", "müller", "注文"):
        assert list(search.filter_text(qs, word).values_list("instance_id", flat=True)) == [
            "intl"
        ], word


def test_payloads_stored_escaped_before_are_made_readable_by_the_migration(make_indexer):
    from workflows_ui import search
    from workflows_ui.payloads import instance_payload

    engine = Engine.objects.create(name="old", address="h:1")
    now = timezone.now()
    Instance.objects.create(
        engine=engine,
        instance_id="before",
        name="wf",
        status="COMPLETED",
        created_at=now,
        last_updated_at=now,
        input='{"city": "Z\\u00fcrich"}',
        input_size=23,
        output='"plain"',
        output_size=7,
    )
    qs = Instance.objects.all()
    assert not search.filter_text(qs, "Zürich").exists()
    _migrate_forwards("0010_payloads_non_ascii_readable")
    inst = Instance.objects.get(instance_id="before")
    assert (inst.input, inst.output) == ('{"city": "Zürich"}', '"plain"')
    # The sizes are those of the readable text: the page doesn't call the payload cut.
    assert (inst.input_size, inst.output_size) == (18, 7)
    payload = instance_payload(inst, "input")
    assert payload is not None and not payload.stored_cut
    assert search.filter_text(qs, "Zürich").exists()


def test_payload_sizes_left_by_the_first_readable_rewrite_are_mended(make_indexer):
    from workflows_ui.payloads import instance_payload

    engine = Engine.objects.create(name="old", address="h:1")
    now = timezone.now()

    def stored(instance_id, **payloads):
        Instance.objects.create(
            engine=engine,
            instance_id=instance_id,
            name="wf",
            status="COMPLETED",
            created_at=now,
            last_updated_at=now,
            **payloads,
        )

    # As 0010's first version left them: readable text, the escaped text's size.
    stored(
        "rewritten",
        input='{"city": "Zürich"}',  # was {"city": "Z\u00fcrich"}: 23 characters
        input_size=23,
        output='"日本 😀"',  # was "\u65e5\u672c \ud83d\ude00": 27
        output_size=27,
        custom_status='"plain"',
        custom_status_size=7,
    )
    # Cut by the indexer (the size is the whole payload's), and one never rewritten.
    stored("cut", input='{"city": "Zü', input_size=70_000, output='"ü"', output_size=3)
    _migrate_forwards("0011_payload_sizes_after_readable")
    sizes = {
        i.instance_id: (i.input_size, i.output_size, i.custom_status_size)
        for i in Instance.objects.all()
    }
    assert sizes == {"rewritten": (18, 6, 7), "cut": (70_000, 3, 0)}
    rewritten = Instance.objects.get(instance_id="rewritten")
    for field in ("input", "output"):
        payload = instance_payload(rewritten, field)
        assert payload is not None and not payload.stored_cut
    cut = instance_payload(Instance.objects.get(instance_id="cut"), "input")
    assert cut is not None and cut.stored_cut


def test_run_inputs_stored_escaped_before_are_made_readable_by_the_migration(make_indexer):
    inst = factories.instance(input='{"city": "Zürich"}', input_size=18)
    factories.run(inst, input='{"city": "Z\\u00fcrich"}', input_size=23)
    # An emoji, then an escaped backslash.
    factories.run(inst, input='{"note": "\\ud83d\\ude00 \\\\u00fc"}', input_size=32)
    # Cut by the indexer: not JSON, left as it is.
    factories.run(inst, input='{"city": "Z\\u00fcr', input_size=70_000)
    _migrate_forwards("0014_run_input_non_ascii_readable")
    runs = list(Run.objects.order_by("ordinal").values_list("input", "input_size"))
    assert runs == [
        ('{"city": "Zürich"}', 18),
        ('{"note": "😀 \\\\u00fc"}', 21),
        ('{"city": "Z\\u00fcr', 70_000),
    ]
    assert runs[0] == (inst.input, inst.input_size)  # as its instance's


def _migrate_forwards(name: str) -> None:
    """Runs a data migration's step on the test's database, as ``migrate`` would."""
    from importlib import import_module
    from types import SimpleNamespace

    from django.apps import apps

    migration = import_module(f"workflows_ui.migrations.{name}")
    migration.forwards(apps, SimpleNamespace(connection=connection))


def test_a_child_id_started_again_on_its_own_is_no_longer_its_parents_child(
    devengine, wf, make_indexer
):
    ix = make_indexer(devengine.config())
    wf.schedule_new_workflow(wf_kinds.fan_out, input={"id": "o", "qtys": [1]}, instance_id="fo")
    wf.wait_for_workflow_completion("fo", timeout_in_seconds=20)
    converge(ix)
    (child,) = Instance.objects.filter(instance_id__startswith="fo:")
    assert child.parent_instance_id == "fo"
    # The same workflow started under the child's id, by hand: a run of its own, no parent.
    wf.schedule_new_workflow(
        wf_kinds.line_item, input={"qty": 5, "id": "x"}, instance_id=child.instance_id
    )
    wf.wait_for_workflow_completion(child.instance_id, timeout_in_seconds=20)
    request_refresh(ix.engine, child.instance_id)
    converge(ix)
    inst = Instance.objects.get(pk=child.pk)
    assert inst.runs.count() == 2
    assert (inst.parent_instance_id, inst.parent_engine_id) == ("", None)
    assert not Instance.objects.get(instance_id="fo").children().exists()


def test_a_run_ended_unseen_and_started_again_as_the_same_workflow_is_not_continued_as_new(
    devengine, wf, make_indexer
):
    ix = make_indexer(devengine.config())
    wf.schedule_new_workflow(wf_kinds.wait_forever, instance_id="w")
    wait_for(lambda: (ix.run_pass(), Instance.objects.filter(status="RUNNING").exists())[1])
    # Ended and started again between two reads: the indexer never sees the first run end.
    wf.terminate_workflow("w")
    wf.wait_for_workflow_completion("w", timeout_in_seconds=20)
    wf.schedule_new_workflow(wf_kinds.wait_forever, instance_id="w")
    converge(ix)
    first, second = Run.objects.order_by("ordinal")
    assert (first.name, first.status, first.completed_at) == ("wait_forever", "", None)
    assert (second.name, second.status) == ("wait_forever", "RUNNING")


def test_a_rerun_of_a_later_generation_under_an_id_seen_running_is_not_continue_as_new(
    devengine, wf, make_indexer
):
    # A re-run keeps its source's first events: those of a generation that continue-as-new
    # started look like continue-as-new. Under an id whose run the indexer saw running, then
    # terminated and purged unseen, that run is not continued as new (how it ended: unseen).
    ix = make_indexer(devengine.config())
    wf.schedule_new_workflow(wf_kinds.monitor, input=100, instance_id="m")
    wait_for(lambda: (ix.run_pass(), Instance.objects.filter(instance_id="m", status="RUNNING"))[1])
    seen = Instance.objects.get(instance_id="m").current_execution_id
    wf.schedule_new_workflow(wf_kinds.monitor, input=1, instance_id="src")  # continues once
    wf.wait_for_workflow_completion("src", timeout_in_seconds=20)
    wf.terminate_workflow("m")
    wf.wait_for_workflow_completion("m", timeout_in_seconds=20)
    wf.purge_workflow("m")
    timer = next(e for e in ix.client.get_history("src") if e.event_type == "timerCreated")
    request = pb.RerunWorkflowFromEventRequest(sourceInstanceID="src", eventID=timer.event_id)
    request.newInstanceID = "m"
    with grpc.insecure_channel(devengine.address) as channel:
        pb_grpc.TaskHubSidecarServiceStub(channel).RerunWorkflowFromEvent(request, timeout=5)
    wf.wait_for_workflow_completion("m", timeout_in_seconds=20)
    request_refresh(ix.engine, "m")
    converge(ix)
    old = Run.objects.get(instance__instance_id="m", execution_id=seen)
    assert (old.status, old.completed_at) == ("", None)
