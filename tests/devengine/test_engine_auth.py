"""API token enforcement: an engine started with --api-token behaves like daprd with
DAPR_API_TOKEN set."""

from __future__ import annotations

import grpc
import pytest
from dapr.ext.workflow import DaprWorkflowClient, WorkflowRuntime, WorkflowStatus
from dapr.ext.workflow._durabletask.internal import protos as pb
from engine_support import Engine, far_future, rpc_error, split_address, unique_id
from engine_workflows import register_all

TOKEN = "s3cret-token"


@pytest.fixture
def token_engine(own_engine):
    own_engine.extra_args = ["--api-token", TOKEN]
    return own_engine.start()


@pytest.mark.parametrize("token", ["", "wrong-token"], ids=["no-token", "wrong-token"])
def test_calls_without_the_right_token_are_unauthenticated(token_engine, token):
    engine = Engine(token_engine.address, token=token)
    calls = {
        "Hello": engine.hello,
        "GetInstance": lambda: engine.get("any"),
        "StartInstance": lambda: engine.start("hello_world", "x", start_at=far_future()),
        "ListInstanceIDs": lambda: engine.call("ListInstanceIDs", pb.ListInstanceIDsRequest()),
        "GetWorkItems": lambda: next(
            engine.stub.GetWorkItems(pb.GetWorkItemsRequest(), timeout=5, metadata=engine.metadata)
        ),
    }
    try:
        codes = {name: rpc_error(call).code() for name, call in calls.items()}
    finally:
        engine.close()

    assert codes == {name: grpc.StatusCode.UNAUTHENTICATED for name in calls}


def test_calls_with_the_token_succeed_and_refused_calls_changed_nothing(token_engine):
    anonymous = Engine(token_engine.address, token="")
    authorised = Engine(token_engine.address, token=TOKEN)
    instance_id = unique_id("auth")
    try:
        rpc_error(lambda: anonymous.start("hello_world", instance_id, start_at=far_future()))
        assert authorised.get(instance_id).exists is False

        authorised.start("hello_world", instance_id, start_at=far_future())
        assert authorised.status(instance_id) == "PENDING"
    finally:
        anonymous.close()
        authorised.close()


def test_the_sdk_sends_the_token_from_its_environment(token_engine, monkeypatch):
    # The SDK reads DAPR_API_TOKEN when a client or runtime is constructed.
    monkeypatch.setenv("DAPR_API_TOKEN", TOKEN)
    host, port = split_address(token_engine.address)
    runtime = WorkflowRuntime(host=host, port=port)
    register_all(runtime)
    runtime.start()
    client = DaprWorkflowClient(host=host, port=port)
    try:
        instance_id = client.schedule_new_workflow("hello_world", input="token")
        state = client.wait_for_workflow_completion(instance_id, timeout_in_seconds=20)
    finally:
        client.close()
        runtime.shutdown()

    assert state.runtime_status == WorkflowStatus.COMPLETED
    assert state.serialized_output == '"hello token"'
