"""daprd's workflow HTTP API through plain HTTP requests, each checked against the instance's
state as the SDK client sees it; the Dapr docs' examples run as written."""

from __future__ import annotations

import json
import re
import socket
import time
import uuid

import pytest
from dapr.ext.workflow import WorkflowStatus
from surfaces_support import EngineProcess, Http

ORDER = {"orderId": "ord-2001", "amount": 59.9, "customer": "northwind"}
PREFIXES = ["/v1.0", "/v1.0-beta1", "/v1.0-alpha1"]


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def status_of(sdk, instance_id: str):
    state = sdk.get_workflow_state(instance_id)
    return None if state is None else state.runtime_status


# --- the docs' examples, as written ------------------------------------------------------------


def test_the_manage_workflows_examples_run_as_written(http_api, sdk):
    # "How to: Manage workflows" / "Workflow API reference", HTTP tab, on the test's port.
    base = "/v1.0/workflows/dapr"
    if sdk.get_workflow_state("12345678") is not None:  # a rerun on a kept database
        http_api.post(f"{base}/12345678/terminate")
        http_api.post(f"{base}/12345678/purge")

    started = http_api.post(
        f"{base}/OrderProcessingWorkflow/start?instanceID=12345678", body=json.dumps(ORDER)
    )
    assert (started.status, started.json()) == (202, {"instanceID": "12345678"})
    assert status_of(sdk, "12345678") == WorkflowStatus.RUNNING

    got = http_api.get(f"{base}/12345678")
    assert got.status == 200
    assert got.headers["content-type"] == "application/json"
    body = got.json()
    assert body["instanceID"] == "12345678"
    assert body["workflowName"] == "OrderProcessingWorkflow"
    assert body["runtimeStatus"] == "RUNNING"
    assert json.loads(body["properties"]["dapr.workflow.input"]) == ORDER
    assert body["properties"]["dapr.workflow.custom_status"] == "awaiting approval"
    assert body["createdAt"].endswith("Z") and body["lastUpdatedAt"].endswith("Z")

    paused = http_api.post(f"{base}/12345678/pause")
    assert (paused.status, paused.body) == (202, b"")
    assert status_of(sdk, "12345678") == WorkflowStatus.SUSPENDED
    assert http_api.get(f"{base}/12345678").json()["runtimeStatus"] == "SUSPENDED"

    resumed = http_api.post(f"{base}/12345678/resume")
    assert (resumed.status, resumed.body) == (202, b"")
    assert status_of(sdk, "12345678") == WorkflowStatus.RUNNING

    raised = http_api.post(f"{base}/12345678/raiseEvent/approval", body='{"by": "m.rossi"}')
    assert (raised.status, raised.body) == (202, b"")
    state = sdk.wait_for_workflow_completion("12345678", timeout_in_seconds=10)
    assert state.runtime_status == WorkflowStatus.COMPLETED
    done = http_api.get(f"{base}/12345678").json()
    assert done["runtimeStatus"] == "COMPLETED"
    assert done["properties"]["dapr.workflow.output"] == state.serialized_output
    assert json.loads(state.serialized_output)["approvedBy"] == "m.rossi"

    purged = http_api.post(f"{base}/12345678/purge")
    assert (purged.status, purged.body) == (202, b"")
    assert sdk.get_workflow_state("12345678") is None

    # Once more under the same id, to terminate it this time.
    again = http_api.post(f"{base}/OrderProcessingWorkflow/start?instanceID=12345678")
    assert again.status == 202
    terminated = http_api.post(f"{base}/12345678/terminate")
    assert (terminated.status, terminated.body) == (202, b"")
    assert status_of(sdk, "12345678") == WorkflowStatus.TERMINATED
    assert http_api.get(f"{base}/12345678").json()["runtimeStatus"] == "TERMINATED"
    assert http_api.post(f"{base}/12345678/purge").status == 202

    gone = http_api.get(f"{base}/12345678")
    assert gone.status == 404
    assert gone.json() == {
        "errorCode": "ERR_INSTANCE_ID_NOT_FOUND",
        "message": "unable to find workflow with the provided instance ID: 12345678",
    }


def test_health_checks(http_api):
    for path in ("/v1.0/healthz", "/v1.0/healthz/outbound"):
        response = http_api.get(path)
        assert (response.status, response.body) == (204, b"")


# --- every route under every prefix ----------------------------------------------------------


@pytest.mark.parametrize("prefix", PREFIXES)
def test_every_route_under_every_prefix(http_api, sdk, prefix):
    base = f"{prefix}/workflows/dapr"
    instance_id = new_id("route")

    started = http_api.post(
        f"{base}/OrderProcessingWorkflow/start?instanceID={instance_id}", body=json.dumps(ORDER)
    )
    assert (started.status, started.json()) == (202, {"instanceID": instance_id})
    assert sdk.get_workflow_state(instance_id).serialized_input == json.dumps(ORDER)

    assert http_api.post(f"{base}/{instance_id}/pause").status == 202
    assert status_of(sdk, instance_id) == WorkflowStatus.SUSPENDED
    assert http_api.post(f"{base}/{instance_id}/resume").status == 202
    assert status_of(sdk, instance_id) == WorkflowStatus.RUNNING
    assert (
        http_api.post(f"{base}/{instance_id}/raiseEvent/approval", body='{"by": "ops"}').status
        == 202
    )
    assert sdk.wait_for_workflow_completion(instance_id, timeout_in_seconds=10).runtime_status == (
        WorkflowStatus.COMPLETED
    )
    body = http_api.get(f"{base}/{instance_id}").json()
    state = sdk.get_workflow_state(instance_id)
    assert body["runtimeStatus"] == "COMPLETED"
    assert body["properties"]["dapr.workflow.output"] == state.serialized_output
    assert http_api.post(f"{base}/{instance_id}/purge").status == 202
    assert sdk.get_workflow_state(instance_id) is None


def test_start_without_an_instance_id_and_with_an_empty_body(http_api, sdk):
    started = http_api.post("/v1.0-beta1/workflows/dapr/ConfirmOrderWorkflow/start")

    assert started.status == 202
    instance_id = started.json()["instanceID"]
    assert str(uuid.UUID(instance_id)) == instance_id
    state = sdk.wait_for_workflow_completion(instance_id, timeout_in_seconds=10)
    assert state.runtime_status == WorkflowStatus.COMPLETED
    # daprd hands an empty body on as the input "" (the SDK reads "" as no input).
    body = http_api.get(f"/v1.0-beta1/workflows/dapr/{instance_id}").json()
    assert body["properties"]["dapr.workflow.input"] == ""


def test_a_failed_workflow_over_http(http_api, sdk):
    instance_id = new_id("ship")
    started = http_api.post(
        f"/v1.0/workflows/dapr/ShipOrderWorkflow/start?instanceID={instance_id}",
        body=json.dumps({"orderId": "o-3", "postcode": "00000"}),
    )
    assert started.status == 202
    state = sdk.wait_for_workflow_completion(instance_id, timeout_in_seconds=10)

    body = http_api.get(f"/v1.0/workflows/dapr/{instance_id}").json()
    assert body["runtimeStatus"] == "FAILED" == state.runtime_status.name
    assert "dapr.workflow.output" not in body["properties"]
    assert body["properties"]["dapr.workflow.failure.error_message"] == (
        state.failure_details.message
    )


def test_terminate_over_http_is_recursive(http_api, sdk):
    instance_id = new_id("batch")
    batch = {"orders": [dict(ORDER, orderId="ord-x")]}
    assert (
        http_api.post(
            f"/v1.0/workflows/dapr/OrderBatchWorkflow/start?instanceID={instance_id}",
            body=json.dumps(batch),
        ).status
        == 202
    )
    child = f"{instance_id}:0001"
    deadline = time.monotonic() + 10
    while status_of(sdk, child) != WorkflowStatus.RUNNING and time.monotonic() < deadline:
        time.sleep(0.05)

    assert http_api.post(f"/v1.0/workflows/dapr/{instance_id}/terminate").status == 202
    assert status_of(sdk, instance_id) == WorkflowStatus.TERMINATED
    deadline = time.monotonic() + 10
    while status_of(sdk, child) != WorkflowStatus.TERMINATED and time.monotonic() < deadline:
        time.sleep(0.05)
    assert status_of(sdk, child) == WorkflowStatus.TERMINATED

    assert http_api.post(f"/v1.0/workflows/dapr/{instance_id}/purge").status == 202
    assert sdk.get_workflow_state(child) is None


def test_escaped_path_segments_are_unescaped(http_api, sdk):
    instance_id = new_id("esc")
    assert (
        http_api.post(
            f"/v1.0/workflows/dapr/OrderProcessingWorkflow/start?instanceID={instance_id}"
        ).status
        == 202
    )

    # A child's id holds ':' (%3A); '+' reads as a space, as in daprd's router.
    assert http_api.get(f"/v1.0/workflows/dapr/{instance_id}%3A0001").status == 404
    raised = http_api.post(
        f"/v1.0/workflows/dapr/{instance_id}/raiseEvent/approval", body='{"by": "a b"}'
    )
    assert raised.status == 202
    assert sdk.wait_for_workflow_completion(instance_id, timeout_in_seconds=10)
    # Double and trailing slashes are cleaned like daprd's router does.
    assert http_api.get(f"/v1.0//workflows/dapr/{instance_id}/").status == 200


# --- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "status", "error_code", "message"),
    [
        (
            "/v1.0/workflows/dapr/ConfirmOrderWorkflow/start?instanceID=bad.id",
            400,
            "ERR_INSTANCE_ID_INVALID",
            "workflow instance ID 'bad.id' is invalid: only alphanumeric and underscore "
            "characters are allowed",
        ),
        (
            "/v1.0/workflows/dapr/ConfirmOrderWorkflow/start?instanceID=" + "a" * 65,
            400,
            "ERR_INSTANCE_ID_TOO_LONG",
            "workflow instance ID exceeds the max length of 64 characters",
        ),
        (
            "/v1.0/workflows/dapr/ghost-order/terminate",
            404,
            "ERR_INSTANCE_ID_NOT_FOUND",
            "unable to find workflow with the provided instance ID: ghost-order",
        ),
        (
            "/v1.0/workflows/dapr/ghost-order/purge",
            404,
            "ERR_INSTANCE_ID_NOT_FOUND",
            "unable to find workflow with the provided instance ID: ghost-order",
        ),
        (
            "/v1.0/workflows/dapr/ghost-order/pause",
            500,
            "ERR_PAUSE_WORKFLOW",
            "error pausing workflow ghost-order: no such instance exists",
        ),
        (
            "/v1.0/workflows/dapr/ghost-order/resume",
            500,
            "ERR_RESUME_WORKFLOW",
            "error resuming workflow ghost-order: no such instance exists",
        ),
        (
            "/v1.0/workflows/dapr/ghost-order/raiseEvent/approval",
            500,
            "ERR_RAISE_EVENT_WORKFLOW",
            "error raising event on workflow 'ghost-order': no such instance exists",
        ),
    ],
)
def test_workflow_errors(http_api, path, status, error_code, message):
    response = http_api.post(path)

    assert response.status == status
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"errorCode": error_code, "message": message}


def test_starting_an_active_id_again_is_a_500(http_api, sdk):
    instance_id = new_id("dup")
    path = f"/v1.0/workflows/dapr/OrderProcessingWorkflow/start?instanceID={instance_id}"
    assert http_api.post(path).status == 202

    response = http_api.post(path)

    assert response.status == 500
    assert response.json()["errorCode"] == "ERR_START_WORKFLOW"
    assert response.json()["message"].startswith(
        "error starting workflow 'OrderProcessingWorkflow': "
    )
    assert http_api.post(f"/v1.0/workflows/dapr/{instance_id}/terminate").status == 202


def test_unknown_routes_are_404_and_wrong_methods_405(http_api):
    for path in (
        "/",
        "/v1.0",
        "/v1.0/state/orders",
        "/v2.0/workflows/dapr/x",
        "/v1.0/workflows/dapr/x/y/z/w/v",
    ):
        response = http_api.get(path)
        assert response.status == 404, path
        assert response.json()["errorCode"] == "ERR_NOT_FOUND"

    wrong = [
        ("POST", "/v1.0/workflows/dapr/some-id"),
        ("GET", "/v1.0/workflows/dapr/ConfirmOrderWorkflow/start"),
        ("DELETE", "/v1.0/workflows/dapr/some-id/terminate"),
        ("PUT", "/v1.0/workflows/dapr/some-id/raiseEvent/approval"),
        ("POST", "/v1.0/healthz"),
    ]
    for method, path in wrong:
        response = http_api.request(method, path)
        assert response.status == 405, (method, path)
        assert response.json()["errorCode"] == "ERR_METHOD_NOT_ALLOWED"
        assert "allow" in response.headers


BODY_READ_ERROR = {
    "errorCode": "ERR_BODY_READ",
    "message": "failed to read request body: stream too large",
}


def test_bodies_over_the_default_4_mib_are_refused_as_daprd_refuses_them(http_api, sdk):
    instance_id = new_id("big")
    path = f"/v1.0/workflows/dapr/ConfirmOrderWorkflow/start?instanceID={instance_id}"

    response = http_api.post(path, body=b"x" * (4 * 1024 * 1024 + 1))

    # daprd's limit is a reader the route fails to read the body through, not a 413.
    assert (response.status, response.json()) == (400, BODY_READ_ERROR)
    assert response.headers["connection"] == "close"
    assert sdk.get_workflow_state(instance_id) is None
    # A route that does not exist is still a 404: the body is only read by a route.
    unknown = http_api.post("/v1.0/state/orders", body=b"x" * (4 * 1024 * 1024 + 1))
    assert unknown.status == 404
    # Exactly 4 MiB is accepted (as event data dropped by a finished instance).
    done = http_api.post(path.replace("big-", "small-"), body=b'{"orderId": "x"}')
    assert done.status == 202
    small_id = done.json()["instanceID"]
    sdk.wait_for_workflow_completion(small_id, timeout_in_seconds=10)
    accepted = http_api.post(
        f"/v1.0/workflows/dapr/{small_id}/raiseEvent/late", body=b"y" * (4 * 1024 * 1024)
    )
    assert accepted.status == 202


@pytest.mark.parametrize(("size", "limit"), [("64Ki", 64 * 1024), ("0", None)])
def test_the_http_api_takes_the_engines_max_body_size(tmp_path, size, limit):
    engine = EngineProcess(tmp_path / "engine.sqlite3", "--max-body-size", size).start()
    try:
        http = Http(engine.http_port)
        raise_path = "/v1.0/workflows/dapr/nobody/raiseEvent/go"
        chunked = (
            f"POST {raise_path} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        ).encode()
        if limit is None:  # 0: no limit, as daprd has none then
            big = http.post(raise_path, body=b"z" * (5 * 1024 * 1024))
            assert big.json()["errorCode"] == "ERR_RAISE_EVENT_WORKFLOW"
            return
        over = http.post(raise_path, body=b"z" * (limit + 1))
        assert (over.status, over.json()) == (400, BODY_READ_ERROR)
        # Within the limit the body is read: the unknown instance is what is refused.
        within = http.post(raise_path, body=b"z" * limit)
        assert within.json()["errorCode"] == "ERR_RAISE_EVENT_WORKFLOW"
        # A chunked body is cut off once it passes the limit.
        half = limit // 2 + 1
        chunk = f"{half:x}\r\n".encode() + b"z" * half + b"\r\n"
        answer = http.raw(chunked + chunk + chunk + b"0\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 400 ")
        assert b"ERR_BODY_READ" in answer
        assert http.get("/v1.0/healthz").status == 204
    finally:
        engine.stop()


# --- the HTTP layer itself -------------------------------------------------------------------


def _status_line(answer: bytes) -> bytes:
    return answer.split(b"\r\n", 1)[0]


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"GARBAGE\r\n\r\n", b"400"),
        (b"GET /v1.0/healthz\r\n\r\n", b"400"),
        (b"GET  /v1.0/healthz HTTP/1.1\r\nHost: x\r\n\r\n", b"400"),
        (b"GET /v1.0/healthz HTTP/2.0\r\nHost: x\r\n\r\n", b"505"),
        (b"GET /v1.0/healthz HTTP/1.1\r\n\r\n", b"400"),  # no Host
        (b"G\xc3\xa9T /v1.0/healthz HTTP/1.1\r\nHost: x\r\n\r\n", b"400"),
        (b"GET /v1.0/healthz HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n", b"400"),
        (b"POST /v1.0/healthz HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", b"400"),
        (b"POST /v1.0/healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 1x\r\n\r\n", b"400"),
        (
            b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
            b"400",
        ),
        (
            b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            b"400",
        ),
        (b"POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", b"501"),
        (b"POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", b"400"),
        (b"GET /v1.0/workflows/dapr/%zz HTTP/1.1\r\nHost: x\r\n\r\n", b"400"),
        (b"GET /v1.0/healthz HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 40000 + b"\r\n\r\n", b"431"),
        (b"GET /v1.0/healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc", b""),
    ],
)
def test_malformed_requests_are_answered_and_the_server_stays_up(http_api, raw, status):
    answer = http_api.raw(raw, timeout=12)

    if status:
        assert _status_line(answer).split(b" ")[1] == status, answer[:200]
        assert b"Connection: close" in answer
    else:
        assert answer == b""  # a truncated body: nothing to answer, the connection just ends
    assert http_api.get("/v1.0/healthz").status == 204


def test_keep_alive_serves_several_requests_on_one_connection(http_api, sdk):
    instance_id = new_id("keep")
    start = (
        f"POST /v1.0/workflows/dapr/ConfirmOrderWorkflow/start?instanceID={instance_id} HTTP/1.1"
        '\r\nHost: localhost\r\nContent-Length: 19\r\n\r\n{"orderId": "k-1"}\n'
    ).encode()
    health = b"GET /v1.0/healthz HTTP/1.1\r\nHost: localhost\r\n\r\n"
    last = b"GET /v1.0/healthz/outbound HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"

    answer = http_api.raw(start + health + last)

    assert re.findall(rb"HTTP/1\.1 (\d{3}) ", answer) == [b"202", b"204", b"204"]
    assert f'{{"instanceID":"{instance_id}"}}HTTP/1.1 204'.encode() in answer
    assert sdk.wait_for_workflow_completion(instance_id, timeout_in_seconds=10)


def test_chunked_bodies_and_expect_continue(http_api, sdk):
    instance_id = new_id("chunk")
    body = b'{"orderId": "c-1", "amount": 5}'
    chunked = (
        b"".join(
            [f"{len(part):x}\r\n".encode() + part + b"\r\n" for part in (body[:10], body[10:])]
        )
        + b"0\r\n\r\n"
    )
    request = (
        f"POST /v1.0/workflows/dapr/ConfirmOrderWorkflow/start?instanceID={instance_id} HTTP/1.1"
        "\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n"
        "Connection: close\r\n\r\n"
    ).encode()

    answer = http_api.raw(request + chunked)

    assert answer.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 202 Accepted\r\n")
    state = sdk.wait_for_workflow_completion(instance_id, timeout_in_seconds=10)
    assert state.serialized_input == body.decode()


def test_a_client_that_goes_away_mid_request_does_no_harm(http_api, surface_engine):
    for partial in (
        b"POST /v1.0/workflows/dapr/ConfirmOrderWorkflow/start HTTP/1.1\r\nHost: x\r\n",
        b"POST /v1.0/workflows/dapr/x/raiseEvent/e HTTP/1.1\r\nHost: x\r\n"
        b"Content-Length: 100\r\n\r\nab",
        b"GET /v1.0/heal",
    ):
        with socket.create_connection(("127.0.0.1", surface_engine.http_port), timeout=5) as s:
            s.sendall(partial)
    assert http_api.get("/v1.0/healthz").status == 204
    assert "Traceback" not in surface_engine.log()
