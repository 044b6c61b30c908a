"""The sample workloads against a real devengine: a minute of load reaches every status.

Both run as subprocesses the way ``make run`` starts them. The engine's state is read through
the stubs (ListInstanceIDs, GetInstanceHistory) and the SDK client (GetInstance); the samples'
stderr is checked for anything the SDK worker or the generator logged beyond the failures the
samples cause on purpose.
"""

from __future__ import annotations

import contextlib
import json
import re
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from dapr.ext.workflow import DaprWorkflowClient, WorkflowState, WorkflowStatus
from dapr.ext.workflow._durabletask.internal import (
    orchestrator_service_pb2 as pb,
)
from dapr.ext.workflow._durabletask.internal import (
    orchestrator_service_pb2_grpc as stubs,
)

from devengine.samples import workflows
from devengine.samples.__main__ import parse_args

pytestmark = pytest.mark.slow

RUN_SECONDS = 60
RPC_TIMEOUT = 10

LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (?P<level>[A-Z]+) (?P<rest>.*)$")
# Failures the samples cause on purpose: the flaky ledger's first two attempts and declined
# cards. The SDK logs each failed activity as a warning.
EXPECTED_WARNINGS = (
    re.compile(
        r"WorkflowRuntime: Activity execution failed - task_id: \d+, error: "
        rf"ledger {workflows.FLAKY_LEDGER} reset the connection while booking invoice-\S+ "
        r"\(attempt [12]\)$"
    ),
    re.compile(
        r"WorkflowRuntime: Activity execution failed - task_id: \d+, error: issuer declined "
        rf"\w+ ending {workflows.DECLINED_CARD_LAST4} for .*: insufficient funds \(code 51\)$"
    ),
)
# After SIGTERM the worker disconnects; a result finished after that is re-dispatched by the
# engine, and the SDK says so.
EXPECTED_AFTER_STOP = re.compile(
    r"durabletask-worker: Could not deliver .*: not connected to the sidecar\. "
    r"The sidecar will re-dispatch this work item\.$"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def running_engine(tmp_path: Path, name: str, port: int, *args: str) -> Iterator[int]:
    """A devengine on ``port`` with its database and log in ``tmp_path`` under ``name``."""
    with open(tmp_path / f"{name}.log", "wb") as log:
        engine = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "devengine",
                "--port",
                str(port),
                "--db",
                str(tmp_path / f"{name}.sqlite3"),
                *args,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            grpc.channel_ready_future(channel).result(timeout=30)
        yield port
    finally:
        engine.terminate()
        try:
            engine.wait(timeout=15)
        except subprocess.TimeoutExpired:
            engine.kill()
            engine.wait()


@pytest.fixture
def engine_port(tmp_path: Path) -> Iterator[int]:
    with running_engine(tmp_path, "engine", free_port()) as port:
        yield port


@pytest.fixture
def two_apps(tmp_path: Path) -> Iterator[tuple[int, int]]:
    """The ports of two peered devengines serving the apps "orders" and "billing", as make run
    starts them."""
    orders, billing = free_port(), free_port()
    with (
        running_engine(
            tmp_path, "orders", orders, "--app-id", "orders", f"--peer=billing=127.0.0.1:{billing}"
        ),
        running_engine(
            tmp_path, "billing", billing, "--app-id", "billing", f"--peer=orders=127.0.0.1:{orders}"
        ),
    ):
        yield orders, billing


def start_samples(stderr_path: Path, *args: str) -> subprocess.Popen[bytes]:
    with open(stderr_path, "wb") as stderr:
        return subprocess.Popen(
            [sys.executable, "-m", "devengine.samples", *args],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )


def stop_samples(samples: subprocess.Popen[bytes]) -> int:
    samples.send_signal(signal.SIGTERM)
    try:
        return samples.wait(timeout=30)
    except subprocess.TimeoutExpired:
        samples.kill()
        raise


def states_on(port: int) -> dict[str, WorkflowState]:
    client = DaprWorkflowClient(host="127.0.0.1", port=str(port))
    try:
        states: dict[str, WorkflowState] = {}
        for instance_id in list_instance_ids(port):
            state = client.get_workflow_state(instance_id, fetch_payloads=True)
            assert state is not None, instance_id
            states[instance_id] = state
        return states
    finally:
        client.close()


def started_by(port: int, instance_id: str) -> pb.ExecutionStartedEvent:
    [started] = [e for e in history(port, instance_id) if e.HasField("executionStarted")]
    return started.executionStarted


def confirmed_orders(states: dict[str, WorkflowState]) -> list[WorkflowState]:
    return [
        s
        for s in states.values()
        if s.name == "process_order"
        and s.runtime_status is WorkflowStatus.COMPLETED
        and json.loads(s.serialized_output)["status"] == "confirmed"
    ]


def invoice_child(port: int, order_id: str) -> pb.HistoryEvent:
    """The order's childWorkflowInstanceCreated (its router says on which app)."""
    [created] = [e for e in history(port, order_id) if e.HasField("childWorkflowInstanceCreated")]
    return created


def list_instance_ids(port: int) -> list[str]:
    ids: list[str] = []
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = stubs.TaskHubSidecarServiceStub(channel)
        token = None
        while True:
            request = pb.ListInstanceIDsRequest(pageSize=200)
            if token:
                request.continuationToken = token
            page = stub.ListInstanceIDs(request, timeout=RPC_TIMEOUT)
            ids.extend(page.instanceIds)
            token = page.continuationToken if page.HasField("continuationToken") else None
            if not token:
                return ids


def history(port: int, instance_id: str) -> list[pb.HistoryEvent]:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = stubs.TaskHubSidecarServiceStub(channel)
        request = pb.GetInstanceHistoryRequest(instanceId=instance_id)
        return list(stub.GetInstanceHistory(request, timeout=RPC_TIMEOUT).events)


def unexpected_log_lines(stderr: str) -> list[str]:
    """Warnings, errors, tracebacks and stray output the samples should not produce."""
    unexpected = []
    stopping = False
    for line in stderr.splitlines():
        match = LOG_LINE.match(line)
        if not match:
            unexpected.append(line)  # tracebacks and anything printed outside logging
            continue
        if "SIGTERM received" in line:
            stopping = True
        if match["level"] in ("INFO", "DEBUG"):
            continue
        rest = match["rest"]
        if any(p.match(rest) for p in EXPECTED_WARNINGS):
            continue
        if stopping and EXPECTED_AFTER_STOP.match(rest):
            continue
        unexpected.append(line)
    return unexpected


def test_a_minute_of_samples_reaches_every_status_without_worker_errors(engine_port, tmp_path):
    stderr_path = tmp_path / "samples.err"
    samples = start_samples(
        stderr_path, "--engine", f"127.0.0.1:{engine_port}", "--seed", "20261123"
    )
    started = time.monotonic()
    try:
        while time.monotonic() - started < RUN_SECONDS:
            assert samples.poll() is None, stderr_path.read_text()
            time.sleep(2)
        states = states_on(engine_port)
    finally:
        exit_code = stop_samples(samples)
    stderr_text = stderr_path.read_text()

    # Shut down cleanly, and logged nothing the samples don't cause on purpose.
    assert exit_code == 0, stderr_text
    assert unexpected_log_lines(stderr_text) == []

    by_status = Counter(s.runtime_status for s in states.values())
    assert {
        WorkflowStatus.RUNNING,
        WorkflowStatus.COMPLETED,
        WorkflowStatus.FAILED,
        WorkflowStatus.TERMINATED,
        WorkflowStatus.SUSPENDED,
    } <= set(by_status), by_status
    assert {s.name for s in states.values()} == {w.__name__ for w in workflows.WORKFLOWS}

    # Suspended by the generator's pause: the history says so.
    for instance_id, state in states.items():
        if state.runtime_status is WorkflowStatus.SUSPENDED:
            assert state.name == "renew_subscription"
            kinds = [e.WhichOneof("eventType") for e in history(engine_port, instance_id)]
            assert "executionSuspended" in kinds

    # Only declined payments fail, with the workflow's stack trace. In particular a resume never
    # reached a workflow that was not suspended (the SDK would fail it).
    failed = [s for s in states.values() if s.runtime_status is WorkflowStatus.FAILED]
    for state in failed:
        assert state.name == "authorize_payment"
        assert state.failure_details.error_type == "PaymentDeclinedError"
        assert "insufficient funds" in state.failure_details.message
        assert "authorize_payment" in state.failure_details.stack_trace

    # Support closes accounts (renewals, some while paused) and customers cancel shipments (the
    # terminate is recursive: the packages' workflows end with their shipment).
    terminated = [s for s in states.values() if s.runtime_status is WorkflowStatus.TERMINATED]
    reasons = {
        "renew_subscription": "account closed by support",
        "ship_order": "order cancelled by customer before delivery",
        "track_package": "order cancelled by customer before delivery",
    }
    for state in terminated:
        assert reasons[state.name] in state.serialized_output, state.instance_id
    for state in terminated:
        if state.name == "ship_order":
            children = [s for i, s in states.items() if i.startswith(f"{state.instance_id}:")]
            assert children
            assert all(
                c.runtime_status in (WorkflowStatus.TERMINATED, WorkflowStatus.COMPLETED)
                for c in children
            )

    def completed(name: str) -> list[WorkflowState]:
        return [
            s
            for s in states.values()
            if s.name == name and s.runtime_status is WorkflowStatus.COMPLETED
        ]

    # The flaky ledger's invoices got through on retry.
    assert any(workflows.FLAKY_LEDGER in s.serialized_output for s in completed("settle_invoice"))
    # Approvals, rejections and timeouts all happened.
    order_outcomes = {
        s.serialized_output.split('"status": "')[1].split('"')[0]
        for s in completed("process_order")
    }
    assert {"confirmed", "rejected", "expired"} <= order_outcomes
    # One app: a confirmed order is invoiced by a settle_invoice child on the same engine.
    client = DaprWorkflowClient(host="127.0.0.1", port=str(engine_port))
    try:
        for order in confirmed_orders(states):
            created = invoice_child(engine_port, order.instance_id)
            assert created.childWorkflowInstanceCreated.name == "settle_invoice"
            assert not created.router.targetAppID
            child_id = created.childWorkflowInstanceCreated.instanceId
            child = client.get_workflow_state(child_id, fetch_payloads=True)
            assert child is not None
            assert child.runtime_status is WorkflowStatus.COMPLETED
            assert (
                json.loads(child.serialized_output)["invoice_id"]
                == json.loads(order.serialized_output)["invoice_id"]
            )
    finally:
        client.close()
    # Packages publish their tracking stage; children carry the SDK's "<parent>:<n>" ids.
    packages = [s for s in states.values() if s.name == "track_package"]
    assert all(":" in s.instance_id for s in packages)
    assert {s.serialized_custom_status for s in packages} & {
        *workflows.TRACKING_STAGES,
        "delivered",
    }
    # The gateway monitors have continued as new at least once.
    monitors = [s for s in states.values() if s.name == "monitor_payment_gateway"]
    assert any(
        s.serialized_custom_status and not s.serialized_custom_status.startswith("run 1 ")
        for s in monitors
    ), [s.serialized_custom_status for s in monitors]


def test_as_two_apps_billing_runs_on_its_own_engine_and_invoices_the_orders(two_apps, tmp_path):
    orders_port, billing_port = two_apps
    stderr_path = tmp_path / "samples.err"
    samples = start_samples(
        stderr_path,
        "--engine",
        f"127.0.0.1:{orders_port}",
        "--billing",
        f"127.0.0.1:{billing_port}",
        "--seed",
        "20261123",
    )
    try:
        deadline = time.monotonic() + 90
        while not confirmed_orders(states_on(orders_port)):
            assert samples.poll() is None, stderr_path.read_text()
            assert time.monotonic() < deadline, "no order confirmed within 90 s"
            time.sleep(2)
        orders, billing = states_on(orders_port), states_on(billing_port)
    finally:
        exit_code = stop_samples(samples)
    stderr_text = stderr_path.read_text()
    assert exit_code == 0, stderr_text
    assert unexpected_log_lines(stderr_text) == []

    # Each engine runs its own app's workflows only.
    assert {s.name for s in orders.values()} <= {w.__name__ for w in workflows.ORDERS.workflows}
    assert {s.name for s in billing.values()} <= {w.__name__ for w in workflows.BILLING.workflows}
    assert "monitor_payment_gateway" in {s.name for s in billing.values()}

    # A confirmed order's invoice is a child on billing's engine, whose parent is on orders'.
    client = DaprWorkflowClient(host="127.0.0.1", port=str(billing_port))
    try:
        for order in confirmed_orders(orders):
            created = invoice_child(orders_port, order.instance_id)
            assert created.router.targetAppID == "billing"
            child_id = created.childWorkflowInstanceCreated.instanceId
            assert child_id not in orders
            child = client.get_workflow_state(child_id, fetch_payloads=True)
            assert child is not None
            assert child.name == "settle_invoice"
            assert child.runtime_status is WorkflowStatus.COMPLETED
            parent = started_by(billing_port, child_id).parentInstance
            assert parent.appID == "orders"
            assert parent.workflowInstance.instanceId == order.instance_id
    finally:
        client.close()


def test_billing_on_the_engine_of_orders_is_refused(capsys):
    with pytest.raises(SystemExit) as stopped:
        parse_args(["--engine", "127.0.0.1:50001", "--billing", "127.0.0.1:50001"])
    assert stopped.value.code == 2
    assert "--billing names the engine of --engine" in capsys.readouterr().err
    # Another port is another engine.
    args = parse_args(["--engine", "127.0.0.1:50001", "--billing", "127.0.0.1:50002"])
    assert (args.billing_host, args.billing_port) == ("127.0.0.1", 50002)
