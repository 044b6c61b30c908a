"""The workflow RPCs of dapr.proto.runtime.v1.Dapr through the generated stubs, each checked
against the instance's state as the SDK client (TaskHubSidecarService) sees it."""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from dapr.ext.workflow import WorkflowStatus
from dapr.ext.workflow._durabletask.internal import orchestrator_service_pb2 as pb
from dapr.ext.workflow._durabletask.internal import orchestrator_service_pb2_grpc as stubs
from dapr.proto.runtime.v1 import configuration_pb2, state_pb2
from dapr.proto.runtime.v1 import workflow_pb2 as wf

TIMEOUT = 15.0


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def start(stub, name: str, instance_id: str = "", input: object = None, **options: str):
    request = wf.StartWorkflowRequest(
        workflow_component="dapr", workflow_name=name, instance_id=instance_id, options=options
    )
    if input is not None:
        request.input = json.dumps(input).encode()
    return stub.StartWorkflowBeta1(request, timeout=TIMEOUT).instance_id


def get(stub, instance_id: str) -> wf.GetWorkflowResponse:
    return stub.GetWorkflowBeta1(
        wf.GetWorkflowRequest(workflow_component="dapr", instance_id=instance_id), timeout=TIMEOUT
    )


def rpc_error(call, *args) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call(*args, timeout=TIMEOUT)
    return caught.value


def wait_status(sdk, instance_id: str, status: WorkflowStatus, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    state = None
    while time.monotonic() < deadline:
        state = sdk.get_workflow_state(instance_id)
        if state is not None and state.runtime_status == status:
            return state
        time.sleep(0.05)
    raise AssertionError(f"{instance_id} did not reach {status}; last {state}")


ORDER = {"orderId": "ord-1001", "amount": 129.5, "customer": "acme-retail"}


def test_start_and_get_a_completed_workflow(dapr_stub, sdk):
    instance_id = start(dapr_stub, "ConfirmOrderWorkflow", new_id("confirm"), ORDER)

    state = sdk.wait_for_workflow_completion(instance_id, timeout_in_seconds=10)
    response = get(dapr_stub, instance_id)

    assert state.runtime_status == WorkflowStatus.COMPLETED
    assert response.instance_id == instance_id
    assert response.workflow_name == "ConfirmOrderWorkflow" == state.name
    assert response.runtime_status == "COMPLETED"
    assert dict(response.properties) == {
        "dapr.workflow.input": state.serialized_input,
        "dapr.workflow.output": state.serialized_output,
    }
    assert json.loads(response.properties["dapr.workflow.output"]) == {
        "orderId": "ord-1001",
        "status": "confirmed",
    }
    assert response.created_at.ToDatetime(UTC) == state.created_at.astimezone(UTC)
    assert response.last_updated_at.ToDatetime(UTC) == state.last_updated_at.astimezone(UTC)


def test_start_without_an_instance_id_makes_a_uuid(dapr_stub, sdk):
    instance_id = start(dapr_stub, "ConfirmOrderWorkflow", "", ORDER)

    assert str(uuid.UUID(instance_id)) == instance_id
    assert sdk.wait_for_workflow_completion(instance_id, timeout_in_seconds=10).runtime_status == (
        WorkflowStatus.COMPLETED
    )


def test_input_bytes_are_passed_as_the_raw_string_and_empty_input_is_kept(dapr_stub, sdk):
    instance_id = new_id("raw")
    dapr_stub.StartWorkflowBeta1(
        wf.StartWorkflowRequest(
            workflow_component="dapr",
            workflow_name="OrderProcessingWorkflow",
            instance_id=instance_id,
            input=b'{"orderId": "ord-7", "amount": 3}',
        ),
        timeout=TIMEOUT,
    )
    empty_id = new_id("raw-empty")
    dapr_stub.StartWorkflowBeta1(
        wf.StartWorkflowRequest(
            workflow_component="dapr", workflow_name="ConfirmOrderWorkflow", instance_id=empty_id
        ),
        timeout=TIMEOUT,
    )

    assert sdk.get_workflow_state(instance_id).serialized_input == (
        '{"orderId": "ord-7", "amount": 3}'
    )
    assert get(dapr_stub, instance_id).properties["dapr.workflow.input"] == (
        '{"orderId": "ord-7", "amount": 3}'
    )
    # daprd always hands the body on as the input, an empty one as "".
    assert get(dapr_stub, empty_id).properties["dapr.workflow.input"] == ""
    dapr_stub.TerminateWorkflowBeta1(
        wf.TerminateWorkflowRequest(instance_id=instance_id), timeout=TIMEOUT
    )


def test_pause_resume_and_raise_event_drive_an_order(dapr_stub, sdk):
    instance_id = start(dapr_stub, "OrderProcessingWorkflow", new_id("order"), ORDER)
    assert get(dapr_stub, instance_id).runtime_status == "RUNNING"
    custom_status = get(dapr_stub, instance_id).properties["dapr.workflow.custom_status"]
    assert custom_status == sdk.get_workflow_state(instance_id).serialized_custom_status
    assert custom_status == "awaiting approval"

    dapr_stub.PauseWorkflowBeta1(wf.PauseWorkflowRequest(instance_id=instance_id), timeout=TIMEOUT)
    assert sdk.get_workflow_state(instance_id).runtime_status == WorkflowStatus.SUSPENDED
    assert get(dapr_stub, instance_id).runtime_status == "SUSPENDED"

    dapr_stub.ResumeWorkflowBeta1(
        wf.ResumeWorkflowRequest(instance_id=instance_id), timeout=TIMEOUT
    )
    assert sdk.get_workflow_state(instance_id).runtime_status == WorkflowStatus.RUNNING
    assert get(dapr_stub, instance_id).runtime_status == "RUNNING"

    dapr_stub.RaiseEventWorkflowBeta1(
        wf.RaiseEventWorkflowRequest(
            instance_id=instance_id, event_name="approval", event_data=b'{"by": "j.doe"}'
        ),
        timeout=TIMEOUT,
    )
    state = sdk.wait_for_workflow_completion(instance_id, timeout_in_seconds=10)
    assert state.runtime_status == WorkflowStatus.COMPLETED
    output = json.loads(get(dapr_stub, instance_id).properties["dapr.workflow.output"])
    assert output["approvedBy"] == "j.doe"
    assert output["payment"] == {"paymentId": "pay-ord-1001", "charged": 129.5}
    assert get(dapr_stub, instance_id).properties["dapr.workflow.custom_status"] == "charging"


def test_a_failed_workflow_reports_its_failure_and_no_output(dapr_stub, sdk):
    instance_id = start(
        dapr_stub, "ShipOrderWorkflow", new_id("ship"), {"orderId": "o-9", "postcode": "99999"}
    )
    state = sdk.wait_for_workflow_completion(instance_id, timeout_in_seconds=10)
    response = get(dapr_stub, instance_id)

    assert state.runtime_status == WorkflowStatus.FAILED
    assert response.runtime_status == "FAILED"
    properties = dict(response.properties)
    assert "dapr.workflow.output" not in properties
    assert properties["dapr.workflow.failure.error_type"] == state.failure_details.error_type
    assert properties["dapr.workflow.failure.error_message"] == state.failure_details.message
    assert "no carrier serves postcode 99999" in properties["dapr.workflow.failure.error_message"]
    if state.failure_details.stack_trace is not None:
        assert properties["dapr.workflow.failure.stack_trace"] == state.failure_details.stack_trace


def test_a_scheduled_start_time_leaves_the_instance_pending(dapr_stub, sdk):
    start_at = (datetime.now(UTC) + timedelta(days=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    instance_id = start(
        dapr_stub,
        "OrderProcessingWorkflow",
        new_id("later"),
        ORDER,
        **{"dapr.workflow.start_time": start_at},
    )

    state = sdk.get_workflow_state(instance_id)
    assert state.runtime_status == WorkflowStatus.PENDING
    assert get(dapr_stub, instance_id).runtime_status == "PENDING"
    dapr_stub.TerminateWorkflowBeta1(
        wf.TerminateWorkflowRequest(instance_id=instance_id), timeout=TIMEOUT
    )
    assert get(dapr_stub, instance_id).runtime_status == "TERMINATED"


def test_terminate_and_purge_are_recursive(dapr_stub, sdk):
    instance_id = new_id("batch")
    batch = {"orders": [dict(ORDER, orderId="ord-a"), dict(ORDER, orderId="ord-b")]}
    start(dapr_stub, "OrderBatchWorkflow", instance_id, batch)
    children = [f"{instance_id}:0001", f"{instance_id}:0002"]
    for child in children:
        wait_status(sdk, child, WorkflowStatus.RUNNING)

    dapr_stub.TerminateWorkflowBeta1(
        wf.TerminateWorkflowRequest(workflow_component="dapr", instance_id=instance_id),
        timeout=TIMEOUT,
    )
    assert sdk.get_workflow_state(instance_id).runtime_status == WorkflowStatus.TERMINATED
    for child in children:
        wait_status(sdk, child, WorkflowStatus.TERMINATED)
        assert get(dapr_stub, child).runtime_status == "TERMINATED"

    dapr_stub.PurgeWorkflowBeta1(
        wf.PurgeWorkflowRequest(workflow_component="dapr", instance_id=instance_id),
        timeout=TIMEOUT,
    )
    for gone in [instance_id, *children]:
        assert sdk.get_workflow_state(gone) is None
        assert get(dapr_stub, gone) == wf.GetWorkflowResponse(instance_id=gone)


def test_an_unknown_instance_reads_as_ok_with_only_its_id(dapr_stub):
    response = get(dapr_stub, "no-such-order")

    assert response == wf.GetWorkflowResponse(instance_id="no-such-order")


def test_alpha1_names_are_served_too(dapr_stub, sdk):
    instance_id = new_id("alpha")
    dapr_stub.StartWorkflowAlpha1(
        wf.StartWorkflowRequest(
            workflow_name="ConfirmOrderWorkflow", instance_id=instance_id, input=b'{"orderId": 1}'
        ),
        timeout=TIMEOUT,
    )
    sdk.wait_for_workflow_completion(instance_id, timeout_in_seconds=10)

    response = dapr_stub.GetWorkflowAlpha1(
        wf.GetWorkflowRequest(instance_id=instance_id), timeout=TIMEOUT
    )
    assert response.runtime_status == "COMPLETED"


# --- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("instance_id", "name", "options", "code", "message"),
    [
        ("ok-id", "", {}, grpc.StatusCode.INVALID_ARGUMENT, "workflow name is not configured"),
        (
            "bad.id",
            "ConfirmOrderWorkflow",
            {},
            grpc.StatusCode.INVALID_ARGUMENT,
            "workflow instance ID 'bad.id' is invalid: only alphanumeric and underscore "
            "characters are allowed",
        ),
        (
            "a" * 65,
            "ConfirmOrderWorkflow",
            {},
            grpc.StatusCode.INVALID_ARGUMENT,
            "workflow instance ID exceeds the max length of 64 characters",
        ),
        (
            "é" * 33,  # 66 bytes: daprd counts bytes
            "ConfirmOrderWorkflow",
            {},
            grpc.StatusCode.INVALID_ARGUMENT,
            "workflow instance ID exceeds the max length of 64 characters",
        ),
        (
            "parent:0001",
            "ConfirmOrderWorkflow",
            {},
            grpc.StatusCode.INVALID_ARGUMENT,
            "workflow instance ID 'parent:0001' is invalid: only alphanumeric and underscore "
            "characters are allowed",
        ),
        (
            "bad-time",
            "ConfirmOrderWorkflow",
            {"dapr.workflow.start_time": "tomorrow at noon"},
            grpc.StatusCode.INTERNAL,
            "error starting workflow 'ConfirmOrderWorkflow': start times must be in RFC3339 "
            'format (e.g. "2009-11-10T23:00:00Z")',
        ),
        (
            "bad-time-2",
            "ConfirmOrderWorkflow",
            {"dapr.workflow.start_time": "2009-11-10 23:00:00"},
            grpc.StatusCode.INTERNAL,
            "error starting workflow 'ConfirmOrderWorkflow': start times must be in RFC3339 "
            'format (e.g. "2009-11-10T23:00:00Z")',
        ),
    ],
)
def test_start_validation(dapr_stub, sdk, instance_id, name, options, code, message):
    request = wf.StartWorkflowRequest(workflow_name=name, instance_id=instance_id, options=options)
    error = rpc_error(dapr_stub.StartWorkflowBeta1, request)

    assert error.code() == code
    assert error.details() == message
    assert sdk.get_workflow_state(instance_id) is None


def test_an_id_of_64_characters_and_unicode_letters_are_accepted(dapr_stub, sdk):
    long_id = "x" * 54 + uuid.uuid4().hex[:10]
    unicode_id = f"commande-é-{uuid.uuid4().hex[:8]}"
    for instance_id in (long_id, unicode_id):
        assert start(dapr_stub, "ConfirmOrderWorkflow", instance_id, ORDER) == instance_id
        assert sdk.wait_for_workflow_completion(instance_id, timeout_in_seconds=10)


def test_starting_an_active_id_again_is_a_start_error(dapr_stub):
    instance_id = start(dapr_stub, "OrderProcessingWorkflow", new_id("dup"), ORDER)

    error = rpc_error(
        dapr_stub.StartWorkflowBeta1,
        wf.StartWorkflowRequest(workflow_name="OrderProcessingWorkflow", instance_id=instance_id),
    )

    assert error.code() == grpc.StatusCode.INTERNAL
    assert error.details().startswith("error starting workflow 'OrderProcessingWorkflow': ")
    assert instance_id in error.details()
    dapr_stub.TerminateWorkflowBeta1(
        wf.TerminateWorkflowRequest(instance_id=instance_id), timeout=TIMEOUT
    )


@pytest.mark.parametrize(
    ("method", "request_type"),
    [
        ("GetWorkflowBeta1", wf.GetWorkflowRequest),
        ("TerminateWorkflowBeta1", wf.TerminateWorkflowRequest),
        ("PauseWorkflowBeta1", wf.PauseWorkflowRequest),
        ("ResumeWorkflowBeta1", wf.ResumeWorkflowRequest),
        ("PurgeWorkflowBeta1", wf.PurgeWorkflowRequest),
        ("RaiseEventWorkflowBeta1", wf.RaiseEventWorkflowRequest),
    ],
)
def test_every_operation_needs_an_instance_id(dapr_stub, method, request_type):
    error = rpc_error(getattr(dapr_stub, method), request_type(workflow_component="dapr"))

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == "no instance ID was provided"


@pytest.mark.parametrize(
    ("method", "request_type"),
    [
        ("TerminateWorkflowBeta1", wf.TerminateWorkflowRequest),
        ("PurgeWorkflowBeta1", wf.PurgeWorkflowRequest),
    ],
)
def test_terminate_and_purge_of_an_unknown_instance_are_not_found(dapr_stub, method, request_type):
    error = rpc_error(getattr(dapr_stub, method), request_type(instance_id="ghost-order"))

    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert error.details() == "unable to find workflow with the provided instance ID: ghost-order"


@pytest.mark.parametrize(
    ("method", "request_type", "message"),
    [
        (
            "RaiseEventWorkflowBeta1",
            lambda: wf.RaiseEventWorkflowRequest(instance_id="ghost-order", event_name="approval"),
            "error raising event on workflow 'ghost-order': no such instance exists",
        ),
        (
            "PauseWorkflowBeta1",
            lambda: wf.PauseWorkflowRequest(instance_id="ghost-order"),
            "error pausing workflow ghost-order: no such instance exists",
        ),
        (
            "ResumeWorkflowBeta1",
            lambda: wf.ResumeWorkflowRequest(instance_id="ghost-order"),
            "error resuming workflow ghost-order: no such instance exists",
        ),
    ],
)
def test_other_operations_on_an_unknown_instance_are_internal_errors(
    dapr_stub, method, request_type, message
):
    error = rpc_error(getattr(dapr_stub, method), request_type())

    assert error.code() == grpc.StatusCode.INTERNAL
    assert error.details() == message


def test_raise_event_needs_an_event_name(dapr_stub):
    error = rpc_error(
        dapr_stub.RaiseEventWorkflowBeta1, wf.RaiseEventWorkflowRequest(instance_id="any-order")
    )

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == "missing workflow event name"


def test_purge_of_a_running_instance_is_a_purge_error(dapr_stub, sdk):
    instance_id = start(dapr_stub, "OrderProcessingWorkflow", new_id("busy"), ORDER)

    error = rpc_error(
        dapr_stub.PurgeWorkflowBeta1, wf.PurgeWorkflowRequest(instance_id=instance_id)
    )

    assert error.code() == grpc.StatusCode.INTERNAL
    assert error.details().startswith(f"error purging workflow {instance_id}: ")
    assert sdk.get_workflow_state(instance_id).runtime_status == WorkflowStatus.RUNNING
    dapr_stub.TerminateWorkflowBeta1(
        wf.TerminateWorkflowRequest(instance_id=instance_id), timeout=TIMEOUT
    )


def test_other_dapr_rpcs_are_unimplemented(dapr_stub, surface_engine):
    unary = rpc_error(dapr_stub.GetState, state_pb2.GetStateRequest(store_name="orders", key="k"))
    assert unary.code() == grpc.StatusCode.UNIMPLEMENTED

    with pytest.raises(grpc.RpcError) as streamed:
        list(
            dapr_stub.SubscribeConfiguration(
                configuration_pb2.SubscribeConfigurationRequest(store_name="config"),
                timeout=TIMEOUT,
            )
        )
    assert streamed.value.code() == grpc.StatusCode.UNIMPLEMENTED

    # Answered cleanly: nothing logged as a servicer failure.
    assert "Traceback" not in surface_engine.log()


def test_event_data_absent_over_grpc_and_empty_over_http(dapr_stub, http_api, surface_engine):
    instance_id = start(dapr_stub, "OrderProcessingWorkflow", new_id("events"), ORDER)
    dapr_stub.RaiseEventWorkflowBeta1(
        wf.RaiseEventWorkflowRequest(instance_id=instance_id, event_name="note"), timeout=TIMEOUT
    )
    assert http_api.post(f"/v1.0/workflows/dapr/{instance_id}/raiseEvent/memo").status == 202

    with grpc.insecure_channel(surface_engine.address) as channel:
        taskhub = stubs.TaskHubSidecarServiceStub(channel)
        deadline = time.monotonic() + 10
        raised: dict[str, object] = {}
        while len(raised) < 2 and time.monotonic() < deadline:
            history = taskhub.GetInstanceHistory(
                pb.GetInstanceHistoryRequest(instanceId=instance_id), timeout=TIMEOUT
            )
            raised = {
                e.eventRaised.name: e.eventRaised
                for e in history.events
                if e.WhichOneof("eventType") == "eventRaised"
            }
            time.sleep(0.05)
    assert not raised["note"].HasField("input")
    assert raised["memo"].HasField("input") and raised["memo"].input.value == ""
    dapr_stub.TerminateWorkflowBeta1(
        wf.TerminateWorkflowRequest(instance_id=instance_id), timeout=TIMEOUT
    )
