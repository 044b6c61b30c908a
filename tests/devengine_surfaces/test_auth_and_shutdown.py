"""The api-token rule on both surfaces, and a clean stop with an HTTP request still in flight.

These tests start their own devengine (with --api-token and no worker)."""

from __future__ import annotations

import http.client
import signal
import subprocess
import sys
import threading
import time

import grpc
import pytest
from dapr.proto.runtime.v1 import dapr_pb2_grpc, state_pb2
from dapr.proto.runtime.v1 import workflow_pb2 as wf
from surfaces_support import REPO_ROOT, EngineProcess, Http, free_port

TOKEN = "s3cr3t-token"


@pytest.fixture
def token_engine(tmp_path):
    process = EngineProcess(tmp_path / "token.sqlite3", "--api-token", TOKEN).start()
    try:
        yield process
    finally:
        process.stop()


def test_the_beta1_rpcs_need_the_token(token_engine):
    with grpc.insecure_channel(token_engine.address) as channel:
        stub = dapr_pb2_grpc.DaprStub(channel)
        request = wf.GetWorkflowRequest(instance_id="order-1")

        with pytest.raises(grpc.RpcError) as missing:
            stub.GetWorkflowBeta1(request, timeout=5)
        with pytest.raises(grpc.RpcError) as wrong:
            stub.GetWorkflowBeta1(request, timeout=5, metadata=(("dapr-api-token", "nope"),))
        allowed = stub.GetWorkflowBeta1(request, timeout=5, metadata=(("dapr-api-token", TOKEN),))
        with pytest.raises(grpc.RpcError) as unimplemented:
            stub.GetState(
                state_pb2.GetStateRequest(store_name="s", key="k"),
                timeout=5,
                metadata=(("dapr-api-token", TOKEN),),
            )

    assert missing.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert wrong.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert allowed == wf.GetWorkflowResponse(instance_id="order-1")
    assert unimplemented.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_the_http_api_needs_the_token_except_for_health_checks(token_engine):
    anonymous = Http(token_engine.http_port)
    wrong = Http(token_engine.http_port, token="nope")
    authorized = Http(token_engine.http_port, token=TOKEN)

    for client in (anonymous, wrong):
        response = client.get("/v1.0/workflows/dapr/order-1")
        assert response.status == 401
        assert response.body == b"invalid api token\n"
        assert client.post("/v1.0/workflows/dapr/OrderProcessingWorkflow/start").status == 401
        assert client.get("/v1.0/no/such/route").status == 401
    assert anonymous.get("/v1.0/healthz").status == 204
    assert anonymous.get("/v1.0/healthz/outbound").status == 204
    assert authorized.get("/v1.0/workflows/dapr/order-1").status == 404
    assert authorized.get("/v1.0/healthz").status == 204


def test_stopping_the_engine_ends_an_http_request_in_flight(token_engine):
    # No worker is connected: a start waits for its first turn until the engine stops.
    outcome: dict[str, object] = {}

    def call():
        connection = http.client.HTTPConnection("127.0.0.1", token_engine.http_port, timeout=20)
        try:
            connection.request(
                "POST",
                "/v1.0/workflows/dapr/OrderProcessingWorkflow/start?instanceID=waiting-1",
                body=b"{}",
                headers={"dapr-api-token": TOKEN},
            )
            outcome["status"] = connection.getresponse().status
        except (OSError, http.client.HTTPException) as e:
            outcome["error"] = e
        finally:
            connection.close()

    caller = threading.Thread(target=call)
    caller.start()
    time.sleep(0.5)
    assert caller.is_alive()  # still waiting on the engine

    assert token_engine.process is not None
    token_engine.process.send_signal(signal.SIGTERM)
    assert token_engine.process.wait(timeout=10) == 0
    caller.join(timeout=10)

    assert not caller.is_alive()
    assert "error" in outcome  # the connection was closed, without an answer
    assert "Traceback" not in token_engine.log()


def _start_fails(*args: str) -> str:
    """Runs devengine with ``args``; it must exit at once with status 1. Returns its stderr."""
    done = subprocess.run(
        [sys.executable, "-m", "devengine", *args],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert done.returncode == 1, done
    assert "Traceback" not in done.stderr and "Event loop is closed" not in done.stderr
    assert "listening" not in done.stdout
    return done.stderr


def test_start_up_problems_are_one_line_each_not_tracebacks(token_engine, tmp_path):
    # The database another devengine runs on (a second `make run` in the same checkout).
    taken = _start_fails("--port", str(free_port()), "--db", str(token_engine.db_path))
    assert f"devengine: {token_engine.db_path} is in use by another devengine" in taken
    # Its gRPC port, then its HTTP port: said before anything claims to listen.
    grpc_port = _start_fails("--port", str(token_engine.grpc_port), "--db", str(tmp_path / "a"))
    assert f"devengine: cannot listen on 127.0.0.1:{token_engine.grpc_port}" in grpc_port
    assert len(grpc_port.strip().splitlines()) == 1, grpc_port  # not gRPC's own line first
    http_port = _start_fails(
        "--port", str(free_port()), "--http-port", str(token_engine.http_port),
        "--db", str(tmp_path / "b"),
    )  # fmt: skip
    assert f"devengine: cannot listen on 127.0.0.1:{token_engine.http_port}" in http_port


def test_log_lines_name_the_app(tmp_path):
    # Two apps' engines in one terminal (make run): each line says whose it is.
    engine = EngineProcess(tmp_path / "billing.sqlite3", "--app-id", "bill%ing").start()
    try:
        Http(engine.http_port).get("/v1.0/healthz")
    finally:
        engine.stop()
    lines = [line for line in engine.log().splitlines() if " INFO " in line]
    assert any("listening" in line for line in lines), engine.log()
    assert all(" INFO bill%ing devengine" in line for line in lines), engine.log()
