"""The SDK's own client (DaprWorkflowClient) against the engine, call by call."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from dapr.ext.workflow import WorkflowStatus
from engine_support import unique_id


def test_schedule_wait_and_read_a_workflow(client):
    instance_id = client.schedule_new_workflow(
        "hello_world", input="sdk", instance_id=unique_id("sdk")
    )

    started = client.wait_for_workflow_start(instance_id, timeout_in_seconds=10)
    done = client.wait_for_workflow_completion(instance_id, timeout_in_seconds=10)

    assert started.runtime_status in (WorkflowStatus.RUNNING, WorkflowStatus.COMPLETED)
    assert done.runtime_status == WorkflowStatus.COMPLETED
    assert done.serialized_input == '"sdk"'
    assert done.serialized_output == '"hello sdk"'
    assert done.name == "hello_world"
    assert client.get_workflow_state(instance_id, fetch_payloads=False).serialized_output is None


def test_pause_raise_resume_through_the_sdk(client):
    instance_id = client.schedule_new_workflow("wait_forever", instance_id=unique_id("sdk-pause"))

    client.pause_workflow(instance_id)
    assert client.get_workflow_state(instance_id).runtime_status == WorkflowStatus.SUSPENDED
    client.raise_workflow_event(instance_id, "go", data={"ok": True})
    client.resume_workflow(instance_id)
    done = client.wait_for_workflow_completion(instance_id, timeout_in_seconds=10)

    assert done.runtime_status == WorkflowStatus.COMPLETED
    assert done.serialized_output == '{"ok": true}'


def test_terminate_and_purge_through_the_sdk(client):
    instance_id = client.schedule_new_workflow("wait_forever", instance_id=unique_id("sdk-term"))

    client.terminate_workflow(instance_id, output="enough")
    state = client.wait_for_workflow_completion(instance_id, timeout_in_seconds=10)
    assert state.runtime_status == WorkflowStatus.TERMINATED
    assert state.serialized_output == '"enough"'

    client.purge_workflow(instance_id)
    assert client.get_workflow_state(instance_id) is None


def test_a_scheduled_start_through_the_sdk_reports_pending(client):
    start_at = datetime.now(UTC) + timedelta(days=1)
    instance_id = client.schedule_new_workflow(
        "hello_world", input="later", instance_id=unique_id("sdk-later"), start_at=start_at
    )

    state = client.get_workflow_state(instance_id)

    assert state.runtime_status == WorkflowStatus.PENDING
    with pytest.raises(TimeoutError):
        client.wait_for_workflow_start(instance_id, timeout_in_seconds=1)


def test_list_and_history_through_the_sdk(client):
    instance_id = client.schedule_new_workflow(
        "hello_world", input="x", instance_id=unique_id("sdk-ls")
    )
    client.wait_for_workflow_completion(instance_id, timeout_in_seconds=10)

    page = client.list_workflow_instance_ids(page_size=1)
    history = client.get_workflow_history(instance_id)

    assert len(page.instance_ids) == 1
    assert page.continuation_token
    assert [event.event_id for event in history if event.is_rerunnable] == [1]


def test_the_sdks_keepalive_pings_are_accepted_while_idle(engine_address):
    """The SDKs' channels ping every 30 s whether or not a call is in flight. gRPC's default
    (a ping in 5 minutes without data) answered with GOAWAY "too_many_pings", and a call in
    flight at that moment failed with UNAVAILABLE. A channel pinging every 6 s stays up."""
    import time

    import grpc
    from dapr.ext.workflow._durabletask.internal import orchestrator_service_pb2_grpc as stubs
    from dapr.ext.workflow._durabletask.internal.shared import DEFAULT_GRPC_KEEPALIVE_OPTIONS
    from google.protobuf import empty_pb2

    options = {**dict(DEFAULT_GRPC_KEEPALIVE_OPTIONS), "grpc.keepalive_time_ms": 6_000}
    channel = grpc.insecure_channel(engine_address, options=list(options.items()))
    states: list[grpc.ChannelConnectivity] = []
    try:
        stub = stubs.TaskHubSidecarServiceStub(channel)
        stub.Hello(empty_pb2.Empty(), timeout=10)
        channel.subscribe(states.append)
        time.sleep(30)  # four pings at least, no call
        assert states and set(states) == {grpc.ChannelConnectivity.READY}, states
        stub.Hello(empty_pb2.Empty(), timeout=10)
    finally:
        channel.close()
