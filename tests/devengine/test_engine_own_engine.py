"""Behaviour that needs an engine of its own: no worker connected, and the --app-id flag."""

from __future__ import annotations

import grpc
from dapr.ext.workflow import WorkflowRuntime
from dapr.ext.workflow._durabletask.internal import protos as pb
from engine_support import Engine, far_future, of_kind, rpc_error, split_address, unique_id
from engine_workflows import register_all


def test_reads_answer_with_no_worker_connected(own_engine):
    own_engine.start()
    engine = Engine(own_engine.address)
    instance_id = unique_id("no-worker")
    try:
        engine.start("hello_world", instance_id, start_at=far_future())

        assert engine.get(instance_id).exists
        assert engine.status(instance_id) == "PENDING"
        listed = engine.call("ListInstanceIDs", pb.ListInstanceIDsRequest(pageSize=10))
        assert list(listed.instanceIds) == [instance_id]
        assert isinstance(engine.history(instance_id), list)
    finally:
        engine.close()


def test_a_start_without_a_worker_runs_once_a_worker_connects(own_engine):
    own_engine.start()
    engine = Engine(own_engine.address)
    instance_id = unique_id("queued")
    runtime = None
    try:
        # The start waits for the first turn, which needs a worker: it runs into its deadline.
        error = rpc_error(lambda: engine.start("hello_world", instance_id, '"later"', timeout=1))
        assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert engine.status(instance_id) == "PENDING"

        host, port = split_address(own_engine.address)
        runtime = WorkflowRuntime(host=host, port=port)
        register_all(runtime)
        runtime.start()

        done = engine.wait_done(instance_id, timeout=20)
        assert done.workflowState.output.value == '"hello later"'
    finally:
        if runtime:
            runtime.shutdown()
        engine.close()


def test_the_app_id_names_the_source_app_of_action_events(own_engine):
    own_engine.extra_args = ["--app-id", "shop"]
    own_engine.start()
    engine = Engine(own_engine.address)
    host, port = split_address(own_engine.address)
    runtime = WorkflowRuntime(host=host, port=port)
    register_all(runtime)
    runtime.start()
    instance_id = unique_id("app-id")
    try:
        engine.start("fan_out", instance_id, input='{"id": "o", "qtys": [1]}')
        engine.wait_done(instance_id)

        events = engine.history(instance_id)
        child_events = engine.history(f"{instance_id}:0001")
    finally:
        runtime.shutdown()
        engine.close()

    (created,) = of_kind(events, "childWorkflowInstanceCreated")
    assert created.router.sourceAppID == "shop"
    assert of_kind(events, "executionCompleted")[0].router.sourceAppID == "shop"
    (child_start,) = of_kind(child_events, "executionStarted")
    assert child_start.executionStarted.parentInstance.appID == "shop"
    assert of_kind(child_events, "taskScheduled")[0].router.sourceAppID == "shop"
